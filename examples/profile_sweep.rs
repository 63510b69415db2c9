//! A sweep of 8 configs on a synthetic 36 × 8 760 panel, with each worker's output buffers reused
//! (`run::sweep`) or fresh per backtest (`fresh`): backtests per second and minor page faults.
//! `cargo run --release --example profile_sweep -- [THREADS] [ROUNDS] [reused|fresh]`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use xsmom::{backtest, run, Config};

/// Minor page faults of this process so far (field 10 of /proc/self/stat).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    after_name.split_whitespace().nth(7).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let fresh = args.get(3).is_some_and(|a| a == "fresh");
    let panel = common::random_panel(8_760, 36, 7, true);
    let funding = common::no_funding(&panel);
    let inputs = run::Inputs { panel, funding, findings: Vec::new(), warnings: Vec::new() };
    let sets: Vec<Vec<String>> = (3..=6)
        .flat_map(|k| {
            [1, 2].map(|every| vec![format!("strategy.k_max={k}"), format!("backtest.rebalance_every={every}")])
        })
        .collect();
    let base = Config::default();
    let configs: Vec<Config> = sets.iter().map(|set| base.with_override_strings(set).unwrap()).collect();
    let (faults_before, started) = (minor_faults(), Instant::now());
    let mut checksum = 0.0;
    for _ in 0..rounds {
        let metrics = if fresh {
            xsmom::threads::map_with_state(
                &configs,
                Some(threads),
                || (),
                |_, cfg| backtest::run(&inputs.panel, &inputs.funding, cfg).unwrap().metrics,
            )
        } else {
            run::sweep(&inputs, &base, &sets, Some(threads)).unwrap()
        };
        checksum += metrics.iter().map(|m| m.final_equity).sum::<f64>();
    }
    let seconds = started.elapsed().as_secs_f64();
    let backtests = (rounds * configs.len()) as f64;
    println!(
        "{} buffers, {threads} thread(s): {:.1} backtests/s, {:.0} minor faults per backtest (checksum {checksum:.3})",
        if fresh { "fresh" } else { "reused" },
        backtests / seconds,
        (minor_faults() - faults_before) as f64 / backtests
    );
}
