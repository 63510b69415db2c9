//! Warm OOS backtests and batch evaluation (research.md §1–2).

mod common;

use ndarray::s;
use xsmom::backtest::{self, BacktestResult};
use xsmom::config::Accounting;
use xsmom::data::Panel;
use xsmom::research::{self, WindowJob};
use xsmom::run::Inputs;
use xsmom::Config;

/// The default config without path-dependent state: no stops, kill-switch, anti-churn, scoring,
/// and a notional cap that never binds (it depends on equity, which a window restarts).
fn stateless_config() -> Config {
    let mut cfg = Config::default();
    cfg.risk.stops.enabled = false;
    cfg.risk.kill_switch.enabled = false;
    cfg.risk.anti_churn.enabled = false;
    cfg.risk.scoring.enabled = false;
    cfg.sizing.max_notional_usd = 1e15;
    cfg.validate().unwrap();
    cfg
}

fn rows(result: &BacktestResult, from: usize, to: usize) -> Vec<Vec<f64>> {
    let target = result.target_weights();
    (from..to).map(|t| target.row(t).to_vec()).collect()
}

fn assert_same_decisions(panel: &Panel, cfg: &Config, from: usize, to: usize) {
    let funding = common::no_funding(panel);
    let full = backtest::run(panel, &funding, cfg).unwrap();
    let window = backtest::run_window(panel, &funding, cfg, from, to, false).unwrap();
    assert_eq!(window.ts, panel.ts[from..to].to_vec());
    let every = cfg.backtest.rebalance_every;
    // Before the window's first decision bar its targets are flat; from there on they equal the
    // full run's, bar for bar (the cadence keeps its phase).
    let full_first = full.first_decision.unwrap();
    let offset = (every - (from - full_first) % every) % every;
    let (full_rows, window_rows) = (rows(&full, from + offset, to), rows(&window, offset, to - from));
    assert!(full_rows.iter().any(|r| r.iter().any(|w| *w != 0.0)), "the window trades");
    for (k, (a, b)) in full_rows.iter().zip(&window_rows).enumerate() {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-12, "bar {}: {a:?} vs {b:?}", from + offset + k);
        }
    }
    assert!(rows(&window, 0, offset).iter().flatten().all(|w| *w == 0.0));
}

#[test]
fn warm_window_decides_like_the_full_run() {
    let panel = common::random_panel(2400, 14, 5, true);
    let cfg = stateless_config();
    assert_same_decisions(&panel, &cfg, 1500, 2100);
    assert_same_decisions(&panel, &cfg, 700, 1000);
    let mut every4 = cfg.clone();
    every4.backtest.rebalance_every = 4;
    assert_same_decisions(&panel, &every4, 1501, 2100);
    let mut weights = cfg.clone();
    weights.backtest.accounting = Accounting::Weights;
    assert_same_decisions(&panel, &weights, 1203, 1900);
    let v1 = Config::profile("xsmom-bot-v1").unwrap();
    assert_same_decisions(&panel, &v1, 999, 1800);
}

#[test]
fn warm_window_starts_at_initial_capital_and_reads_nothing_after_trade_to() {
    let panel = common::random_panel(2000, 10, 9, false);
    let funding = common::no_funding(&panel);
    // The default config, path-dependent rules included.
    let cfg = Config::default();
    let (from, to) = (1200, 1700);
    let window = backtest::run_window(&panel, &funding, &cfg, from, to, false).unwrap();
    assert_eq!(window.bars.equity.len(), to - from);
    assert_eq!(window.first_decision, Some(0));
    let capital = cfg.backtest.initial_capital;
    let m = &window.metrics;
    assert_eq!(m.n_bars, (to - from) as f64, "one return per window bar, the first from the capital");
    assert!((m.total_return - (window.bars.equity.last().unwrap() / capital - 1.0)).abs() < 1e-12);
    assert!(window.fills.iter().all(|f| f.ts >= panel.ts[from] && f.ts < panel.ts[to]));
    let returns = research::batch::bar_returns(&window, capital);
    assert!((returns[0] - (window.bars.equity[0] / capital - 1.0)).abs() < 1e-15);

    // Replace every bar from trade_to on with other prices: the window's result cannot change.
    let mut other = common::random_panel(2000, 10, 77, false);
    for t in 0..to {
        for i in 0..10 {
            other.open[[t, i]] = panel.open[[t, i]];
            other.high[[t, i]] = panel.high[[t, i]];
            other.low[[t, i]] = panel.low[[t, i]];
            other.close[[t, i]] = panel.close[[t, i]];
            other.quote_volume[[t, i]] = panel.quote_volume[[t, i]];
        }
    }
    assert_ne!(other.close.row(to + 5), panel.close.row(to + 5));
    let again = backtest::run_window(&other, &funding, &cfg, from, to, false).unwrap();
    assert_eq!(again.bars, window.bars);
    assert_eq!(again.fills, window.fills);
    assert_eq!(again.metrics, window.metrics);

    // History before trade_from matters (it is not leakage): a cold run on the window alone differs.
    let cold_panel = Panel {
        timeframe: panel.timeframe,
        ts: panel.ts[from..to].to_vec(),
        symbols: panel.symbols.clone(),
        open: panel.open.slice(s![from..to, ..]).to_owned(),
        high: panel.high.slice(s![from..to, ..]).to_owned(),
        low: panel.low.slice(s![from..to, ..]).to_owned(),
        close: panel.close.slice(s![from..to, ..]).to_owned(),
        quote_volume: panel.quote_volume.slice(s![from..to, ..]).to_owned(),
        mark_close: None,
    };
    let cold = backtest::run(&cold_panel, &common::no_funding(&cold_panel), &cfg).unwrap();
    assert!(cold.first_decision.unwrap() > 50, "a cold start waits for its indicators");
    assert_ne!(cold.target_weights().row(10), window.target_weights().row(10));
    assert!(backtest::run_window(&panel, &funding, &cfg, 0, 10, false).is_ok());
    assert!(backtest::run_window(&panel, &funding, &cfg, 10, 10, false).is_err());
    assert!(backtest::run_window(&panel, &funding, &cfg, 10, 2001, false).is_err());
}

#[test]
fn batch_evaluates_every_job_and_reports_invalid_ones_per_item() {
    let panel = common::random_panel(1500, 12, 21, true);
    let funding = common::no_funding(&panel);
    let inputs = Inputs { panel, funding, findings: vec![], warnings: vec![] };
    let cfg = Config::default();
    let job = |overrides: &[&str], from, to| WindowJob {
        overrides: overrides.iter().map(|s| s.to_string()).collect(),
        trade_from: from,
        trade_to: to,
    };
    let jobs = vec![
        job(&["strategy.k_max=4"], 800, 1200),
        job(&["strategy.k_min=0"], 800, 1200),
        job(&["strategy.no_such_key=1"], 800, 1200),
        job(&[], 1000, 1500),
        job(&["strategy.signal_power=2.0", "sizing.gross_leverage=1.5"], 500, 1500),
        job(&[], 1400, 1400),
    ];
    let results = research::evaluate_windows(&inputs, &cfg, &jobs, true, Some(2)).unwrap();
    assert_eq!(results.len(), jobs.len());
    for (k, result) in results.iter().enumerate() {
        match k {
            1 | 2 | 5 => {
                let err = result.as_ref().unwrap_err();
                assert!(err.to_string().contains("override set"), "{err}");
            }
            _ => {
                let r = result.as_ref().unwrap();
                let j = &jobs[k];
                let cfg_k = cfg.with_override_strings(&j.overrides).unwrap();
                let direct =
                    backtest::run_window(&inputs.panel, &inputs.funding, &cfg_k, j.trade_from, j.trade_to, false)
                        .unwrap();
                assert_eq!(r.metrics, direct.metrics);
                assert_eq!(r.returns.as_ref().unwrap().len(), j.trade_to - j.trade_from);
                assert_eq!(r.equity.as_ref().unwrap(), &direct.bars.equity);
                assert_eq!(r.trade_returns.as_ref().unwrap().len(), direct.round_trips.len());
                // Each round trip over the equity at the close before its entry bar.
                for (ret, trip) in r.trade_returns.as_ref().unwrap().iter().zip(&direct.round_trips) {
                    let entry = direct.ts.iter().position(|&ts| ts == trip.entry_ts).unwrap();
                    let before =
                        if entry == 0 { cfg_k.backtest.initial_capital } else { direct.bars.equity[entry - 1] };
                    assert!((ret - trip.pnl / before).abs() < 1e-15);
                }
            }
        }
    }
    assert!(results[2].as_ref().unwrap_err().to_string().contains("no_such_key"));
    // The thread count does not change any number.
    let one = research::evaluate_windows(&inputs, &cfg, &jobs, false, Some(1)).unwrap();
    for (a, b) in one.iter().zip(&results) {
        if let (Ok(a), Ok(b)) = (a, b) {
            assert_eq!(a.metrics, b.metrics);
            assert!(a.returns.is_none());
        }
    }
}

/// Metrics as bits (NaN equals NaN).
fn metric_bits(metrics: &xsmom::metrics::Metrics) -> Vec<u64> {
    metrics.to_pairs().iter().map(|(_, v)| v.to_bits()).collect()
}

#[test]
fn recycled_output_buffers_give_the_same_results_in_the_same_memory() {
    let panel = common::random_panel(1500, 12, 21, true);
    let funding = common::no_funding(&panel);
    let configs: Vec<Config> =
        [vec![], vec!["strategy.k_max=3"], vec!["execution.fill=next_open", "backtest.rebalance_every=2"]]
            .iter()
            .map(|set| {
                Config::default().with_override_strings(&set.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
            })
            .collect();
    let mut buffers = backtest::OutputBuffers::recycle(backtest::run(&panel, &funding, &configs[0]).unwrap());
    for (k, cfg) in configs.iter().enumerate() {
        let fresh = backtest::run(&panel, &funding, cfg).unwrap();
        let reused = backtest::run_in(&panel, &funding, cfg, false, buffers).unwrap();
        assert_eq!(reused.bars, fresh.bars, "config {k}");
        assert_eq!(reused.book, fresh.book);
        assert_eq!(reused.fills, fresh.fills);
        assert_eq!(reused.round_trips, fresh.round_trips);
        assert_eq!(reused.listed, fresh.listed);
        assert_eq!(reused.ts, fresh.ts);
        assert_eq!(metric_bits(&reused.metrics), metric_bits(&fresh.metrics));
        let (ts, listed, equity) = (reused.ts.as_ptr(), reused.listed.as_ptr(), reused.bars.equity.as_ptr());
        buffers = backtest::OutputBuffers::recycle(reused);
        // The next run writes into the same vectors (same panel: nothing grows).
        let again = backtest::run_in(&panel, &funding, cfg, false, buffers).unwrap();
        assert_eq!((again.ts.as_ptr(), again.listed.as_ptr(), again.bars.equity.as_ptr()), (ts, listed, equity));
        buffers = backtest::OutputBuffers::recycle(again);
    }
    // A warm window into recycled buffers equals a fresh one.
    let fresh = backtest::run_window(&panel, &funding, &configs[1], 700, 1400, false).unwrap();
    let reused = backtest::run_window_in(&panel, &funding, &configs[1], 700..1400, false, buffers).unwrap();
    assert_eq!(reused.bars, fresh.bars);
    assert_eq!(reused.fills, fresh.fills);

    // The sweep, on one and on two workers, equals one fresh backtest per config.
    let inputs = Inputs { panel, funding, findings: vec![], warnings: vec![] };
    let sets: Vec<Vec<String>> = (2..=7)
        .map(|k| vec![format!("strategy.k_max={k}"), format!("backtest.rebalance_every={}", k % 3 + 1)])
        .collect();
    let direct: Vec<Vec<u64>> = sets
        .iter()
        .map(|set| {
            let cfg = Config::default().with_override_strings(set).unwrap();
            metric_bits(&backtest::run(&inputs.panel, &inputs.funding, &cfg).unwrap().metrics)
        })
        .collect();
    for threads in [Some(1), Some(2), None] {
        let swept = xsmom::run::sweep(&inputs, &Config::default(), &sets, threads).unwrap();
        assert_eq!(swept.iter().map(metric_bits).collect::<Vec<_>>(), direct, "threads {threads:?}");
    }
}
