//! What `signals` costs beyond the engine on the bundled fixture: the run with the signal matrices
//! recorded, and the table (medians of repeated runs): `cargo run --release --example profile_signals`.
use std::path::PathBuf;
use std::time::Instant;
use xsmom::backtest::{self, output};
use xsmom::run::{self, BarsSource, FundingSource};

fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..41)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let cfg = xsmom::Config::default();
    let inputs = run::prepare(BarsSource::Path(PathBuf::from("data")), FundingSource::FromBarsStore, &cfg).unwrap();
    let run = |signals| backtest::run_with(&inputs.panel, &inputs.funding, &cfg, signals).unwrap();
    let recorded = run(true);
    println!("engine: {:.2} ms", median_ms(|| drop(std::hint::black_box(run(false)))));
    println!("engine + signal matrices: {:.2} ms", median_ms(|| drop(std::hint::black_box(run(true)))));
    println!("signals table: {:.2} ms", median_ms(|| drop(std::hint::black_box(output::signals_batch(&recorded)))));
    println!("equity table: {:.2} ms", median_ms(|| drop(std::hint::black_box(output::equity_batch(&recorded)))));
    println!("fills table: {:.2} ms", median_ms(|| drop(std::hint::black_box(output::fills_batch(&recorded)))));
    println!("trades table: {:.2} ms", median_ms(|| drop(std::hint::black_box(output::trades_batch(&recorded)))));
}
