//! What `signals` costs beyond the engine on the bundled fixture: the run with the signal rows
//! recorded, the run and its table, and the other tables: `cargo run --release --example profile_signals`.
//! The three runs alternate round by round (this host's speed drifts), each reported as median and
//! fastest of the rounds. `-- 200 43800` runs a synthetic panel of that many symbols and bars
//! instead of the fixture.
#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;
use xsmom::backtest::{self, output};
use xsmom::run::{self, BarsSource, FundingSource};

fn ms(f: &mut dyn FnMut()) -> f64 {
    let started = Instant::now();
    f();
    started.elapsed().as_secs_f64() * 1e3
}

fn report(label: &str, mut times: Vec<f64>) {
    times.sort_by(f64::total_cmp);
    println!("{label}: median {:.2} ms, fastest {:.2} ms", times[times.len() / 2], times[0]);
}

fn main() {
    let cfg = xsmom::Config::default();
    let size: Vec<usize> = std::env::args().skip(1).filter_map(|arg| arg.parse().ok()).collect();
    let inputs = match size[..] {
        [n_symbols, n_bars] => {
            let panel = common::random_panel(n_bars, n_symbols, 7, true);
            let funding = common::no_funding(&panel);
            run::Inputs { panel, funding, findings: Vec::new(), warnings: Vec::new() }
        }
        _ => run::prepare(BarsSource::Path(PathBuf::from("data")), FundingSource::FromBarsStore, &cfg).unwrap(),
    };
    let rounds = if inputs.panel.n_bars() * inputs.panel.n_symbols() > 1_000_000 { 9 } else { 61 };
    let run = |signals| backtest::run_with(&inputs.panel, &inputs.funding, &cfg, signals).unwrap();
    let mut engine = || drop(std::hint::black_box(run(false)));
    let mut recorded = || drop(std::hint::black_box(run(true)));
    let mut with_table = || {
        let result = run(true);
        let record = result.signals.expect("recorded");
        drop(std::hint::black_box(output::signals_batch(&result.symbols, record)))
    };
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..rounds {
        times[0].push(ms(&mut engine));
        times[1].push(ms(&mut recorded));
        times[2].push(ms(&mut with_table));
    }
    let [engine, recorded, with_table] = times;
    report("engine", engine);
    report("engine + signal rows", recorded);
    report("engine + signals table", with_table);
    let result = run(false);
    let table_ms = |f: &dyn Fn() -> usize| {
        let times: Vec<f64> = (0..41)
            .map(|_| {
                ms(&mut || {
                    std::hint::black_box(f());
                })
            })
            .collect();
        times
    };
    report("equity table", table_ms(&|| output::equity_batch(&result).num_rows()));
    report("fills table", table_ms(&|| output::fills_batch(&result).num_rows()));
    report("trades table", table_ms(&|| output::trades_batch(&result).num_rows()));
}
