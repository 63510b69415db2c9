//! Criterion benchmarks: the default-config backtest on 36 × 8 760 and 200 × 43 800 hourly bars
//! (synthetic random walks), and the kernels alone. Results: docs/performance.md.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use xsmom::backtest::{self, IndicatorState};
use xsmom::{signal, Config};

#[path = "../tests/common/mod.rs"]
mod common;

fn backtests(c: &mut Criterion) {
    let cfg = Config::default();
    let mut group = c.benchmark_group("backtest_default");
    group.sample_size(10).measurement_time(Duration::from_secs(8));
    for (n_symbols, n_bars) in [(36usize, 8_760usize), (200, 43_800)] {
        let panel = common::random_panel(n_bars, n_symbols, 7, true);
        let funding = common::no_funding(&panel);
        group.throughput(Throughput::Elements((n_bars * n_symbols) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(format!("{n_symbols}x{n_bars}")), &panel, |b, panel| {
            b.iter(|| backtest::run(panel, &funding, &cfg).unwrap())
        });
    }
    group.finish();
    // As a sweep's worker runs it: each run writes into the output vectors of the one before
    // (`OutputBuffers::recycle`), so no run allocates or page-faults panel-sized buffers.
    let mut group = c.benchmark_group("backtest_default_reused");
    group.sample_size(10).measurement_time(Duration::from_secs(8));
    let panel = common::random_panel(8_760, 36, 7, true);
    let funding = common::no_funding(&panel);
    group.throughput(Throughput::Elements((panel.n_bars() * panel.n_symbols()) as u64));
    let mut buffers = Some(backtest::OutputBuffers::default());
    group.bench_function("36x8760", |b| {
        b.iter(|| {
            let result = backtest::run_in(&panel, &funding, &cfg, false, buffers.take().unwrap_or_default()).unwrap();
            let fills = result.fills.len();
            buffers = Some(backtest::OutputBuffers::recycle(result));
            fills
        })
    });
    group.finish();
}

/// Plain (every risk rule off) against every risk rule on, at 36 × 8 760 (issue: within 1.5×).
fn risk_overhead(c: &mut Criterion) {
    let panel = common::random_panel(8_760, 36, 7, true);
    let funding = common::no_funding(&panel);
    let plain = Config::default()
        .with_override_strings(&[
            "risk.stops.enabled=false".into(),
            "risk.kill_switch.enabled=false".into(),
            "risk.anti_churn.enabled=false".into(),
            "risk.scoring.enabled=false".into(),
        ])
        .unwrap();
    let all_on = Config::default()
        .with_override_strings(&[
            "risk.drawdown.enabled=true".into(),
            "risk.time_of_day.enabled=true".into(),
            "sizing.kelly.enabled=true".into(),
            "strategy.adx_filter.enabled=true".into(),
            "strategy.adx_filter.min_adx=15".into(),
        ])
        .unwrap();
    let with_router = all_on
        .with_override_strings(&[
            "strategy.router.enabled=true".into(),
            "strategy.router.majors=[S000USDT, S001USDT]".into(),
        ])
        .unwrap();
    let mut group = c.benchmark_group("risk_36x8760");
    group.sample_size(10).measurement_time(Duration::from_secs(6));
    group.bench_function("plain", |b| b.iter(|| backtest::run(&panel, &funding, &plain).unwrap()));
    group.bench_function("all_risk_on", |b| b.iter(|| backtest::run(&panel, &funding, &all_on).unwrap()));
    group.bench_function("all_risk_on_with_router", |b| {
        b.iter(|| backtest::run(&panel, &funding, &with_router).unwrap())
    });
    group.finish();
}

fn parts(c: &mut Criterion) {
    let cfg = Config::default();
    let panel = common::random_panel(8_760, 36, 7, true);
    let close = panel.close.view();
    let mut group = c.benchmark_group("kernels_36x8760");
    group.sample_size(20);
    // The indicators as the engine advances them: one `IndicatorState::update` per bar row.
    let funding = common::no_funding(&panel);
    group.bench_function("indicators_all", |b| {
        b.iter(|| {
            let mut state = IndicatorState::new(&panel.symbols, panel.timeframe, &cfg);
            for t in 0..panel.n_bars() {
                state.update(&panel.bar_row(t, &funding));
            }
            state
        })
    });
    group.bench_function("momentum", |b| {
        b.iter(|| signal::momentum(close, &[12, 24, 48, 96], &[0.4, 0.3, 0.2, 0.1], true))
    });
    group.bench_function("rolling_vol", |b| b.iter(|| signal::rolling_vol(close, 96)));
    group.bench_function("ema_slope", |b| b.iter(|| signal::ema_slope_bps_per_day(close, 200, 24)));
    group.bench_function("wilder_atr", |b| {
        b.iter(|| signal::wilder_atr(panel.high.view(), panel.low.view(), close, 14))
    });
    group.bench_function("wilder_adx", |b| {
        b.iter(|| signal::wilder_adx(panel.high.view(), panel.low.view(), close, 14))
    });
    group.finish();
}

/// The default config under each fill model at 36 × 8 760 (issue: `limit_touch` within 1.2× of `close`).
fn fill_models(c: &mut Criterion) {
    let panel = common::random_panel(8_760, 36, 7, true);
    let funding = common::no_funding(&panel);
    let mut group = c.benchmark_group("fill_model_36x8760");
    group.sample_size(10).measurement_time(Duration::from_secs(8));
    for fill in ["close", "next_open", "limit_touch"] {
        let cfg = Config::default().with_override_strings(&[format!("execution.fill={fill}")]).unwrap();
        group.bench_function(fill, |b| b.iter(|| backtest::run(&panel, &funding, &cfg).unwrap()));
    }
    group.finish();
}

/// A sweep of 8 configs (k_max 3..=6 × rebalance every 1 or 2 bars) on 36 × 8 760, on one and on
/// two threads: throughput in backtests per second (each worker keeps its output buffers).
fn sweep_throughput(c: &mut Criterion) {
    let panel = common::random_panel(8_760, 36, 7, true);
    let funding = common::no_funding(&panel);
    let inputs = xsmom::run::Inputs { panel, funding, findings: Vec::new(), warnings: Vec::new() };
    let sets: Vec<Vec<String>> = (3..=6)
        .flat_map(|k| {
            [1, 2].map(|every| vec![format!("strategy.k_max={k}"), format!("backtest.rebalance_every={every}")])
        })
        .collect();
    let cfg = Config::default();
    let mut group = c.benchmark_group("sweep_8x36x8760");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(sets.len() as u64));
    for threads in [1, 2] {
        group.bench_function(format!("{threads}_threads"), |b| {
            b.iter(|| xsmom::run::sweep(&inputs, &cfg, &sets, Some(threads)).unwrap())
        });
    }
    group.finish();
}

/// The default config with the meta-labeler off and on (filter, refit every 168 bars, active after
/// 200 closed round trips) at 36 × 8 760 (issue 16: on within 1.3× of off).
fn meta_label(c: &mut Criterion) {
    let panel = common::random_panel(8_760, 36, 7, true);
    let funding = common::no_funding(&panel);
    let off = Config::default();
    let on = off.with_override_strings(&["strategy.meta_label.enabled=true".into()]).unwrap();
    let mut group = c.benchmark_group("meta_label_36x8760");
    group.sample_size(10).measurement_time(Duration::from_secs(8));
    group.bench_function("off", |b| b.iter(|| backtest::run(&panel, &funding, &off).unwrap()));
    group.bench_function("on", |b| b.iter(|| backtest::run(&panel, &funding, &on).unwrap()));
    group.finish();
}

criterion_group!(benches, backtests, risk_overhead, fill_models, sweep_throughput, meta_label, parts);
criterion_main!(benches);
