//! Where a backtest from the bundled store spends its time: the bars' read, the funding's read, the
//! streamed run of the bars already read, the engine alone and the validation it shares out (medians of interleaved rounds):
//! `cargo run --release --example profile_store_path [STORE]` (the bundled `data/` by default);
//! `PROFILE_STEP=<label>` times one step alone, for a profiler.
use std::path::Path;
use std::time::Instant;
use xsmom::data::store::{read_bars_arrow, Selection};
use xsmom::run::{self, BarsSource, FundingSource};

fn ms(f: &mut dyn FnMut()) -> f64 {
    let started = Instant::now();
    f();
    started.elapsed().as_secs_f64() * 1e3
}

/// A named step of the path, timed round by round.
type Step<'a> = (&'static str, Box<dyn FnMut() + 'a>);

fn main() {
    let cfg = xsmom::Config::default();
    let store_dir = std::env::args().nth(1).unwrap_or_else(|| "data".into());
    let store = Path::new(&store_dir);
    let selection = Selection::all(cfg.timeframe());
    let arrow = read_bars_arrow(store, &selection).unwrap().0;
    let funding = FundingSource::Store(store.to_path_buf());
    let loaded = FundingSource::Funding(xsmom::data::read_funding(store, None, None, None).unwrap());
    let inputs = run::prepare(BarsSource::Path(store.to_path_buf()), FundingSource::FromBarsStore, &cfg).unwrap();
    let mut steps: Vec<Step<'_>> = vec![
        ("read bars", Box::new(|| drop(std::hint::black_box(read_bars_arrow(store, &selection).unwrap())))),
        ("read funding", Box::new(|| drop(std::hint::black_box(xsmom::data::read_funding(store, None, None, None))))),
        (
            "streamed run",
            Box::new(|| drop(std::hint::black_box(run::backtest_streamed(&arrow, &funding, &cfg, false)))),
        ),
        (
            "streamed run, funding loaded",
            Box::new(|| drop(std::hint::black_box(run::backtest_streamed(&arrow, &loaded, &cfg, false)))),
        ),
        (
            "streamed run, no funding",
            Box::new(|| drop(std::hint::black_box(run::backtest_streamed(&arrow, &FundingSource::None, &cfg, false)))),
        ),
        (
            "read, then streamed run",
            Box::new(|| {
                let arrow = read_bars_arrow(store, &selection).unwrap().0;
                drop(std::hint::black_box(run::backtest_streamed(&arrow, &funding, &cfg, false)))
            }),
        ),
        ("engine", Box::new(|| drop(std::hint::black_box(run::backtest(&inputs, &cfg, false))))),
        (
            "validation behind pivot",
            Box::new(|| {
                let (timeframe, spike) = (cfg.timeframe(), cfg.data.spike_rule());
                let validation = xsmom::data::CanonicalValidation::behind_pivot(arrow.view(), timeframe, spike);
                drop(std::hint::black_box(validation.finish()))
            }),
        ),
        (
            "whole path",
            Box::new(|| {
                let path = run::backtest_streamed_path(store, FundingSource::FromBarsStore, &cfg, false);
                drop(std::hint::black_box(path))
            }),
        ),
    ];
    // PROFILE_STEP=<label> times that step alone (for a profiler).
    if let Ok(only) = std::env::var("PROFILE_STEP") {
        steps.retain(|(label, _)| *label == only);
    }
    let mut times = vec![Vec::new(); steps.len()];
    for _ in 0..41 {
        for (k, (_, step)) in steps.iter_mut().enumerate() {
            times[k].push(ms(step.as_mut()));
        }
    }
    for ((label, _), mut times) in steps.iter().zip(times) {
        times.sort_by(f64::total_cmp);
        println!("{label}: median {:.2} ms, fastest {:.2} ms", times[times.len() / 2], times[0]);
    }
}
