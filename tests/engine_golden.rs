//! Hand-derived golden case: 3 symbols × 8 bars, every equity value and fill worked out in the
//! test from first principles (units accounting, fills at close, 10 bps fees, no slippage).

mod common;

use xsmom::backtest;
use xsmom::model::FillReason;

#[test]
fn three_symbols_eight_bars_by_hand() {
    let a = [100.0, 101.0, 103.0, 104.0, 105.0, 104.0, 101.0, 100.0];
    let b = [50.0, 50.0, 49.0, 48.0, 48.5, 49.0, 50.0, 51.0];
    let c = [20.0, 20.2, 20.1, 20.3, 20.4, 20.35, 20.4, 20.5];
    let closes: Vec<Vec<f64>> = (0..8).map(|t| vec![a[t], b[t], c[t]]).collect();
    let panel = common::panel_from_closes(&closes, "1h");
    let cfg = common::hand_config();
    let result = backtest::run(&panel, &common::no_funding(&panel), &cfg).unwrap();

    // 2-bar momentum: t=2 A +3.0 %, B −2.0 %, C +0.5 % → long A, short B (K = 1, equal 0.5 each).
    // t=3, t=4: same ranks; weight drift < 5 % of equity → trades skipped (min_rebalance_delta).
    // t=5: A 104/104 − 1 = 0, B 49/48 − 1 = +2.1 %, C +0.25 % → long B, short A: both positions flip.
    let fee = 10.0 / 1e4;
    let (ua, ub): (f64, f64) = (5_000.0 / 103.0, -5_000.0 / 49.0);
    let cash2 = 10_000.0 - 5_000.0 + 5_000.0 - 2.0 * 5_000.0 * fee;
    let e3 = cash2 + ua * 104.0 + ub * 48.0;
    let e4 = cash2 + ua * 105.0 + ub * 48.5;
    let e5_before = cash2 + ua * 104.0 + ub * 49.0;
    let (ua5, ub5) = (-0.5 * e5_before / 104.0, 0.5 * e5_before / 49.0);
    let traded5 = (ua5 - ua).abs() * 104.0 + (ub5 - ub).abs() * 49.0;
    let cash5 = cash2 - (ua5 - ua) * 104.0 - (ub5 - ub) * 49.0 - traded5 * fee;
    let e5 = cash5 + ua5 * 104.0 + ub5 * 49.0;
    let e6 = cash5 + ua5 * 101.0 + ub5 * 50.0;
    let e7 = cash5 + ua5 * 100.0 + ub5 * 51.0;
    let expected = [10_000.0, 10_000.0, cash2, e3, e4, e5, e6, e7];
    for (t, (got, want)) in result.bars.equity.iter().zip(expected).enumerate() {
        assert!((got - want).abs() < 1e-9, "equity at bar {t}: {got} vs {want}");
    }
    assert_eq!(result.first_decision, Some(2));
    assert!((result.bars.fees[5] - traded5 * fee).abs() < 1e-9);
    assert_eq!(result.target_weights().row(2).to_vec(), vec![0.5, -0.5, 0.0]);
    let w5 = result.target_weights().row(5).to_vec();
    assert!((w5[0] + 0.5).abs() < 1e-12 && (w5[1] - 0.5).abs() < 1e-12 && w5[2] == 0.0);

    // Fills: 2 opening fills at t=2, 2 flips at t=5.
    assert_eq!(result.fills.len(), 4);
    assert!(result.fills.iter().all(|f| f.reason == FillReason::Rebalance));
    assert_eq!((result.fills[0].symbol, result.fills[0].side), (0, 1));
    assert!((result.fills[0].qty - ua).abs() < 1e-12);
    // Round trips closed by the flips: long A 103 → 104, short B 49 → 49.
    assert_eq!(result.round_trips.len(), 2);
    let trip_a = &result.round_trips[0];
    assert_eq!((trip_a.symbol, trip_a.side, trip_a.entry_price, trip_a.exit_price), (0, 1, 103.0, 104.0));
    let exit_fee_a = ua * 104.0 * fee; // the closing part of the flip fill
    assert!((trip_a.pnl - (ua * 1.0 - 5_000.0 * fee - exit_fee_a)).abs() < 1e-9, "{}", trip_a.pnl);
    assert_eq!(trip_a.bars_held, 3);
    let trip_b = &result.round_trips[1];
    assert_eq!((trip_b.symbol, trip_b.side), (1, -1));
    assert!((trip_b.pnl - (-5_000.0 * fee - ub.abs() * 49.0 * fee)).abs() < 1e-9);

    // Metrics are measured from the bar before the first decision.
    let m = &result.metrics;
    assert!((m.total_return - (e7 / 10_000.0 - 1.0)).abs() < 1e-12);
    assert_eq!(m.n_bars, 6.0);
}

#[test]
fn weights_accounting_follows_the_formula() {
    let a = [100.0, 101.0, 103.0, 104.0, 105.0, 104.0, 101.0, 100.0];
    let b = [50.0, 50.0, 49.0, 48.0, 48.5, 49.0, 50.0, 51.0];
    let c = [20.0, 20.2, 20.1, 20.3, 20.4, 20.35, 20.4, 20.5];
    let closes: Vec<Vec<f64>> = (0..8).map(|t| vec![a[t], b[t], c[t]]).collect();
    let panel = common::panel_from_closes(&closes, "1h");
    let mut cfg = common::hand_config();
    cfg.backtest.accounting = xsmom::config::Accounting::Weights;
    cfg.costs.slippage_bps = 2.0;
    let result = backtest::run(&panel, &common::no_funding(&panel), &cfg).unwrap();
    // E_{t+1} = E_t (1 + Σ w_t r_{t+1}) − E_t · cost · Σ|w_t − w_{t−1}|, cost = 10 + 2 bps.
    let cost = 12.0 / 1e4;
    let r = |p: &[f64], t: usize| p[t] / p[t - 1] - 1.0;
    let mut e = vec![10_000.0, 10_000.0, 10_000.0];
    let mut w_prev: [f64; 2] = [0.0, 0.0];
    let mut w: [f64; 2] = [0.5, -0.5];
    for t in 3..8 {
        let turnover = (w[0] - w_prev[0]).abs() + (w[1] - w_prev[1]).abs();
        let prev = e[t - 1];
        e.push(prev * (1.0 + w[0] * r(&a, t) + w[1] * r(&b, t)) - prev * cost * turnover);
        w_prev = w;
        if t == 5 {
            w = [-0.5, 0.5];
        }
    }
    for t in 0..8 {
        assert!((result.bars.equity[t] - e[t]).abs() < 1e-9, "bar {t}: {} vs {}", result.bars.equity[t], e[t]);
    }
}

#[test]
fn empty_universe_is_an_error() {
    let panel = common::random_panel(300, 4, 5, false);
    let mut cfg = common::hand_config();
    cfg.universe.include = vec!["NOPEUSDT".into()];
    let err = backtest::run(&panel, &common::no_funding(&panel), &cfg).unwrap_err();
    assert_eq!(err.kind(), xsmom::ErrorKind::Invalid);
    assert_eq!(
        err.to_string(),
        "empty universe: none of the 4 symbols of the data (S000USDT, S001USDT, S002USDT, S003USDT) is left by \
         universe.include [\"NOPEUSDT\"] and universe.exclude []"
    );
}
