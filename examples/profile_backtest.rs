//! Run the default-config backtest on a synthetic 36 × 8 760 panel many times, for profilers
//! (`perf record`, `perf stat`, callgrind) that should see the engine and not the benchmark harness:
//! `cargo run --release --example profile_backtest -- 200` (`PROFILE_SET=key=value,…` for overrides).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

fn main() {
    let runs: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let panel = common::random_panel(8_760, 36, 7, true);
    let funding = common::no_funding(&panel);
    // PROFILE_SET="strategy.meta_label.enabled=true,…": overrides of the default config.
    let overrides: Vec<String> = std::env::var("PROFILE_SET")
        .map(|set| set.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    let cfg = xsmom::Config::default().with_override_strings(&overrides).expect("PROFILE_SET");
    let started = Instant::now();
    let mut fills = 0;
    let mut fastest = f64::INFINITY;
    for _ in 0..runs {
        let run_started = Instant::now();
        fills += xsmom::backtest::run(&panel, &funding, &cfg).expect("backtest").fills.len();
        fastest = fastest.min(run_started.elapsed().as_secs_f64() * 1e3);
    }
    let per_run = started.elapsed().as_secs_f64() * 1e3 / runs as f64;
    println!("{runs} runs, {per_run:.2} ms per run (wall), fastest {fastest:.2} ms, {} fills per run", fills / runs);
}
