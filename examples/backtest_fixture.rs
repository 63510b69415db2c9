//! Backtest both profiles on the bundled fixture from Rust: `cargo run --release --example backtest_fixture`.
use std::path::PathBuf;
use xsmom::run::{self, BarsSource, FundingSource};
fn main() {
    for profile in ["default", "xsmom-bot-v1"] {
        let cfg = xsmom::Config::profile(profile).unwrap();
        let t0 = std::time::Instant::now();
        let inputs = run::prepare(BarsSource::Path(PathBuf::from("data")), FundingSource::FromBarsStore, &cfg).unwrap();
        let t1 = t0.elapsed();
        let r = run::backtest(&inputs, &cfg, false).unwrap();
        println!(
            "{profile}: load {:?} run {:?} panel {}x{} fills {} trips {}",
            t1,
            t0.elapsed() - t1,
            inputs.panel.n_bars(),
            inputs.panel.n_symbols(),
            r.fills.len(),
            r.round_trips.len()
        );
        for w in &r.warnings {
            println!("  warning: {w}");
        }
        println!("  {:?}", r.metrics);
    }
}
