//! Time the streaming indicator kernels one by one and the default backtest with some features off
//! (fastest of repeated runs), on the synthetic 36 × 8 760 panel of the benchmarks:
//! `cargo run --release --example profile_parts`.
#[path = "../tests/common/mod.rs"]
mod common;
use std::time::Instant;
use xsmom::backtest::IndicatorState;

fn main() {
    let panel = common::random_panel(8_760, 36, 7, true);
    let funding = common::no_funding(&panel);
    let cfg = xsmom::Config::default();
    let mut best = f64::INFINITY;
    for _ in 0..40 {
        let mut state = IndicatorState::new(&panel.symbols, panel.timeframe, &cfg);
        let started = Instant::now();
        for t in 0..panel.n_bars() {
            state.update(&panel.bar_row(t, &funding));
        }
        best = best.min(started.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(&state);
    }
    println!("indicators only: {best:.2} ms");
    let n = panel.n_symbols();
    let rows: Vec<_> = (0..panel.n_bars()).map(|t| panel.bar_row(t, &funding)).collect();
    let time = |name: &str, f: &mut dyn FnMut()| {
        let mut best = f64::INFINITY;
        for _ in 0..40 {
            let started = Instant::now();
            f();
            best = best.min(started.elapsed().as_secs_f64() * 1e3);
        }
        println!("{name:>12}: {best:.2} ms");
    };
    let mut out = vec![0.0; n];
    time("returns", &mut || {
        let mut k = xsmom::signal::LookbackReturns::new(n, 1);
        for r in &rows {
            k.update(r.close, &mut out);
        }
    });
    time("momentum", &mut || {
        let mut k = xsmom::signal::Momentum::new(n, &[12, 24, 48, 96], &[0.4, 0.3, 0.2, 0.1], true);
        for r in &rows {
            k.update(r.close, &mut out);
        }
    });
    let returns = xsmom::signal::simple_returns(panel.close.view());
    time("rolling_std", &mut || {
        let mut k = xsmom::signal::RollingStd::new(n, 96, 48);
        for t in 0..rows.len() {
            k.update(returns.row(t).to_slice().unwrap(), &mut out);
        }
    });
    time("ema_slope", &mut || {
        let mut k = xsmom::signal::EmaSlope::new(n, 200, 24);
        for r in &rows {
            k.update(r.close, &mut out);
        }
    });
    time("atr", &mut || {
        let mut k = xsmom::signal::WilderAtr::new(n, 14);
        for r in &rows {
            k.update(r.high, r.low, r.close, &mut out);
        }
    });
    let mut member = vec![false; n];
    time("universe", &mut || {
        let mut k = xsmom::universe::UniverseFilter::new(&panel.symbols, 24, 97, &cfg.universe);
        for r in &rows {
            k.update(r.close, r.quote_volume, &mut member);
        }
    });
    time("colwindow", &mut || {
        let mut k = xsmom::signal::ColumnWindow::new(n, 72);
        for t in 0..rows.len() {
            k.push(returns.row(t).to_slice().unwrap());
        }
    });
    let mut best = f64::INFINITY;
    for _ in 0..40 {
        let started = Instant::now();
        for t in 0..panel.n_bars() {
            std::hint::black_box(panel.bar_row(t, &funding));
        }
        best = best.min(started.elapsed().as_secs_f64() * 1e3);
    }
    println!("bar_row only: {best:.2} ms");
    let mut best = f64::INFINITY;
    for _ in 0..40 {
        let started = Instant::now();
        std::hint::black_box(xsmom::backtest::run(&panel, &funding, &cfg).unwrap());
        best = best.min(started.elapsed().as_secs_f64() * 1e3);
    }
    println!("full run: {best:.2} ms");
    for (name, overrides) in [
        ("no stops", vec!["risk.stops.enabled=false"]),
        ("no regime filter", vec!["strategy.regime_filter.enabled=false"]),
        ("no vol target", vec!["sizing.vol_target.enabled=false"]),
        (
            "plain run",
            vec![
                "risk.stops.enabled=false",
                "risk.kill_switch.enabled=false",
                "risk.anti_churn.enabled=false",
                "risk.scoring.enabled=false",
            ],
        ),
    ] {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let cfg = cfg.with_override_strings(&overrides).unwrap();
        let mut best = f64::INFINITY;
        let mut fills = 0;
        for _ in 0..30 {
            let started = Instant::now();
            fills = std::hint::black_box(xsmom::backtest::run(&panel, &funding, &cfg).unwrap()).fills.len();
            best = best.min(started.elapsed().as_secs_f64() * 1e3);
        }
        println!("{name}: {best:.2} ms ({fills} fills)");
    }
}
