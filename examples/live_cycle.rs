//! Cost of one live cycle (live.md performance goal): 36 symbols with the bars in memory (the
//! `replay` exchange over a synthetic random-walk panel), from the bar close to the orders handed
//! to the exchange, state and heartbeat written. Prints CPU time per cycle (user + system, from
//! /proc/self/stat) and the peak resident set size (VmHWM).
//!
//!     cargo run --release --example live_cycle
//!
//! `LIVE_CYCLE_WARMUP=N` / `LIVE_CYCLE_MEASURED=N` change the 1 000 warm-up and 2 000 measured cycles.

use std::time::Instant;

use xsmom::live::replay::ReplayExchange;
use xsmom::live::runner::{Runner, RunnerOptions};
use xsmom::Config;

#[path = "../tests/common/mod.rs"]
mod common;

/// User + system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    // Fields 14 and 15 of proc(5) (utime, stime) are the 12th and 13th after the command name.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

fn main() {
    // LIVE_CYCLE_WARMUP / LIVE_CYCLE_MEASURED shorten the run (the operations test runs it).
    let env_or = |name: &str, default: usize| std::env::var(name).ok().and_then(|n| n.parse().ok()).unwrap_or(default);
    let (warmup, measured) = (env_or("LIVE_CYCLE_WARMUP", 1_000), env_or("LIVE_CYCLE_MEASURED", 2_000));
    let panel = common::random_panel(warmup + measured, 36, 11, false);
    let funding = common::no_funding(&panel);
    let cfg = Config::default();
    let dir = tempfile::tempdir().unwrap();
    let exchange = ReplayExchange::new(panel, funding, &cfg);
    let symbols = exchange.symbols();
    let opts = RunnerOptions {
        mode: "replay".into(),
        state_path: dir.path().join("state.json"),
        heartbeat_path: dir.path().join("heartbeat.json"),
        start_ts: Some(exchange.first_bar_ts()),
        reset_state: false,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let mut runner = Runner::start(exchange, cfg, "", symbols, opts).await.unwrap();
        // Warm-up: the model's windows fill, the first positions are opened.
        for _ in 0..warmup {
            runner.cycle().await.unwrap();
            runner.exchange().advance();
        }
        let (cpu0, wall0) = (cpu_seconds(), Instant::now());
        let mut orders = 0usize;
        for _ in 0..measured - 1 {
            orders += runner.cycle().await.unwrap().orders_placed.len();
            runner.exchange().advance();
        }
        let cycles = (measured - 1) as f64;
        let cpu_ms = (cpu_seconds() - cpu0) * 1e3 / cycles;
        let wall_ms = wall0.elapsed().as_secs_f64() * 1e3 / cycles;
        println!("36 symbols, {cycles} cycles after {warmup} warm-up bars, {orders} orders placed");
        println!("CPU per cycle: {cpu_ms:.3} ms (wall {wall_ms:.3} ms incl. fsync of state and heartbeat)");
        println!("peak RSS: {:.1} MB", peak_rss_mb());
    });
}
