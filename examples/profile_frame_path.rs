//! The streamed run of Arrow bars (the DataFrame path of `xsmom.backtest`) against the engine on the
//! panel of the same bars, on the synthetic 36 × 8 760 panel of the benchmarks (medians of
//! interleaved rounds), and the validation that the streamed run shares between its threads: `cargo run --release --example profile_frame_path [N_SYMBOLS N_BARS]`;
//! `PROFILE_STEP=<label>` times one step alone, for a profiler.
#[path = "../tests/common/mod.rs"]
mod common;
use std::time::Instant;
use xsmom::run::{self, BarsSource, FundingSource};

/// A named step, timed round by round.
type Step<'a> = (&'static str, Box<dyn FnMut() + 'a>);

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("a number")).collect();
    let (n_symbols, n_bars) = match args[..] {
        [n_symbols, n_bars] => (n_symbols, n_bars),
        _ => (36, 8_760),
    };
    let cfg = xsmom::Config::default();
    let panel = common::random_panel(n_bars, n_symbols, 7, true);
    let batch = xsmom::data::bars_to_batch(&panel.to_bars());
    let arrow = xsmom::data::ArrowBars::from_batches(std::slice::from_ref(&batch), "bars").unwrap();
    let inputs = run::prepare(
        BarsSource::Arrow(xsmom::data::ArrowBars::from_batches(std::slice::from_ref(&batch), "bars").unwrap()),
        FundingSource::None,
        &cfg,
    )
    .unwrap();
    let mut steps: Vec<Step<'_>> = vec![
        ("engine", Box::new(|| drop(std::hint::black_box(run::backtest(&inputs, &cfg, false))))),
        (
            "streamed run",
            Box::new(|| drop(std::hint::black_box(run::backtest_streamed(&arrow, &FundingSource::None, &cfg, false)))),
        ),
        (
            "import + streamed run",
            Box::new(|| {
                let arrow = xsmom::data::ArrowBars::from_batches(std::slice::from_ref(&batch), "bars").unwrap();
                drop(std::hint::black_box(run::backtest_streamed(&arrow, &FundingSource::None, &cfg, false)))
            }),
        ),
        (
            "validation behind pivot",
            Box::new(|| {
                let (timeframe, spike) = (cfg.timeframe(), cfg.data.spike_rule());
                let validation = xsmom::data::CanonicalValidation::behind_pivot(arrow.view(), timeframe, spike);
                drop(std::hint::black_box(validation.finish()))
            }),
        ),
    ];
    if let Ok(only) = std::env::var("PROFILE_STEP") {
        let (_, step) = steps.iter_mut().find(|(label, _)| *label == only).expect("a step label");
        let (started, mut runs) = (Instant::now(), 0);
        while started.elapsed().as_secs() < 10 {
            step();
            runs += 1;
        }
        println!("{runs} runs of {only}");
        return;
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); steps.len()];
    for _ in 0..30 {
        for (k, (_, step)) in steps.iter_mut().enumerate() {
            let started = Instant::now();
            step();
            times[k].push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    for ((label, _), mut times) in steps.iter().zip(times) {
        times.sort_by(f64::total_cmp);
        println!("{label:>24}: median {:7.2} ms, fastest {:7.2} ms", times[times.len() / 2], times[0]);
    }
}
