//! Risk rules on constructed price paths through the whole engine: exit bar, price, reason and PnL
//! derived by hand in each test.

mod common;

use xsmom::backtest;
use xsmom::data::Panel;
use xsmom::model::FillReason;
use xsmom::signal;
use xsmom::Config;

const DAY: i64 = 86_400_000;
const MIDNIGHT: i64 = 1_748_736_000_000; // 2025-06-01 00:00 UTC

/// The hand config with ATR stops (n = 2, no trailing, no take-profit, no breakeven) and/or the
/// daily kill-switch.
fn config(stops: bool, kill_switch: bool) -> Config {
    let mut cfg = common::hand_config();
    cfg.risk.stops.enabled = stops;
    cfg.risk.stops.atr_len = 2;
    cfg.risk.stops.trailing = false;
    cfg.risk.stops.partial_tp_frac = 0.0;
    cfg.risk.stops.breakeven_after_r = 100.0;
    cfg.risk.kill_switch.enabled = kill_switch;
    cfg.validate().unwrap();
    cfg
}

/// A rises (long), B falls (short), C drifts: the book is long A / short B from bar 2 on.
fn panel(n_bars: usize) -> Panel {
    let closes: Vec<Vec<f64>> =
        (0..n_bars).map(|t| vec![100.0 + t as f64, 50.0 - 0.5 * t as f64, 20.0 + 0.01 * ((t % 3) as f64)]).collect();
    let mut panel = common::panel_from_closes(&closes, "1h");
    for (t, ts) in panel.ts.iter_mut().enumerate() {
        *ts = MIDNIGHT + t as i64 * 3_600_000;
    }
    panel
}

/// 30 bars in which A (held long at 0.5) loses 25 % during bar 4, over the 5 % daily loss limit.
fn crash_panel() -> Panel {
    let mut panel = panel(30);
    for t in 4..30 {
        for m in [&mut panel.open, &mut panel.high, &mut panel.low, &mut panel.close] {
            m[[t, 0]] *= 0.75;
        }
    }
    panel.open[[4, 0]] = panel.close[[3, 0]];
    panel.high[[4, 0]] = panel.close[[3, 0]];
    panel
}

#[test]
fn a_gap_through_the_stop_fills_at_the_open() {
    let mut panel = panel(10);
    let atr = signal::wilder_atr(panel.high.view(), panel.low.view(), panel.close.view(), 2)[[2, 0]];
    let stop = 102.0 - 2.0 * atr;
    // Bar 3 of A opens far below the stop.
    let gap_open = stop - 5.0;
    panel.open[[3, 0]] = gap_open;
    panel.low[[3, 0]] = gap_open - 1.0;
    panel.high[[3, 0]] = gap_open + 1.0;
    panel.close[[3, 0]] = gap_open + 0.5;
    let result = backtest::run(&panel, &common::no_funding(&panel), &config(true, false)).unwrap();
    let units = 0.5 * 10_000.0 / 102.0;
    let exit = result.fills.iter().find(|f| f.symbol == 0 && f.side < 0).expect("A is stopped out");
    assert_eq!(exit.ts, panel.ts[3]);
    assert_eq!(exit.reason, FillReason::Stop);
    assert_eq!(exit.price, gap_open);
    assert!((exit.qty - units).abs() < 1e-9);
    assert!((exit.fee - units * gap_open * 10.0 / 1e4).abs() < 1e-9);
    let trip = result.round_trips.iter().find(|r| r.symbol == 0).unwrap();
    let pnl = units * (gap_open - 102.0) - units * 102.0 * 1e-3 - units * gap_open * 1e-3;
    assert!((trip.pnl - pnl).abs() < 1e-9, "{} vs {pnl}", trip.pnl);
    // Cooldown of 3 bars after the stop: no re-entry in A at bars 3..=6.
    let targets = result.target_weights();
    for t in 3..=6 {
        assert_eq!(targets[[t, 0]], 0.0, "bar {t}");
    }
}

#[test]
fn a_touch_exits_at_the_stop_level() {
    let mut panel = panel(8);
    let atr = signal::wilder_atr(panel.high.view(), panel.low.view(), panel.close.view(), 2)[[2, 0]];
    let stop = 102.0 - 2.0 * atr;
    panel.open[[3, 0]] = 102.5;
    panel.high[[3, 0]] = 103.5;
    panel.low[[3, 0]] = stop - 0.25;
    panel.close[[3, 0]] = 103.0;
    let result = backtest::run(&panel, &common::no_funding(&panel), &config(true, false)).unwrap();
    let exit = result.fills.iter().find(|f| f.symbol == 0 && f.side < 0).unwrap();
    assert_eq!((exit.ts, exit.reason), (panel.ts[3], FillReason::Stop));
    assert!((exit.price - stop).abs() < 1e-12);
}

#[test]
fn kill_switch_fires_on_the_right_bar_and_trading_resumes_the_next_day() {
    let panel = crash_panel();
    let result = backtest::run(&panel, &common::no_funding(&panel), &config(false, true)).unwrap();
    let kill_fills: Vec<_> = result.fills.iter().filter(|f| f.reason == FillReason::KillSwitch).collect();
    assert_eq!(kill_fills.len(), 2, "both positions are closed");
    assert!(kill_fills.iter().all(|f| f.ts == panel.ts[4]));
    assert!(result.bars.kill_switch[4] && !result.bars.kill_switch[3]);
    // Flat and no fills for the rest of the UTC day: bars 5..=22 close on 2025-06-01.
    let units = result.units();
    for t in 4..=22 {
        assert!(units.row(t).iter().all(|u| *u == 0.0), "bar {t}");
    }
    assert!(result.fills.iter().all(|f| f.ts <= panel.ts[4] || f.ts >= MIDNIGHT + DAY - 3_600_000));
    // Bar 23 starts at 23:00 and closes at midnight: a new day, trading resumes.
    assert!(!result.bars.kill_switch[23]);
    assert!(units.row(23).iter().any(|u| *u != 0.0), "positions again on the next day");
    // The day's start equity is the first close of the day, so the drop is measured from bar 0.
    let drop = (result.bars.equity[0] - result.bars.equity[4]) / result.bars.equity[0];
    assert!(drop >= 0.05);
}

#[test]
fn a_bar_touching_stop_and_take_profit_exits_at_the_stop() {
    let mut panel = panel(8);
    let atr = signal::wilder_atr(panel.high.view(), panel.low.view(), panel.close.view(), 2)[[2, 0]];
    let stop = 102.0 - 2.0 * atr;
    let take_profit = 102.0 + 0.75 * 2.0 * atr;
    panel.open[[3, 0]] = 102.0;
    panel.high[[3, 0]] = take_profit + 1.0;
    panel.low[[3, 0]] = stop - 1.0;
    panel.close[[3, 0]] = 102.0;
    let mut cfg = config(true, false);
    cfg.risk.stops.partial_tp_frac = 0.5;
    let result = backtest::run(&panel, &common::no_funding(&panel), &cfg).unwrap();
    let exits: Vec<_> = result.fills.iter().filter(|f| f.symbol == 0 && f.side < 0).collect();
    assert_eq!(exits[0].reason, FillReason::Stop);
    assert!((exits[0].price - stop).abs() < 1e-12);
    let tp: Vec<_> = result.fills.iter().filter(|f| f.reason == FillReason::TakeProfit).collect();
    assert!(tp.iter().all(|f| !(f.symbol == 0 && f.ts == panel.ts[3])), "no take-profit after the stop: {tp:?}");
}

#[test]
fn breakeven_moves_the_stop_to_entry_and_a_later_touch_exits_flat_minus_fees() {
    let mut panel = panel(10);
    let atr = signal::wilder_atr(panel.high.view(), panel.low.view(), panel.close.view(), 2)[[2, 0]];
    let risk = 2.0 * atr;
    // Bar 3 rallies 0.7 R above the entry (breakeven after 0.6 R) without touching the stop.
    panel.open[[3, 0]] = 102.0;
    panel.high[[3, 0]] = 102.0 + 0.7 * risk;
    panel.low[[3, 0]] = 101.9;
    panel.close[[3, 0]] = 102.0 + 0.5 * risk;
    // Bar 4 falls back through the entry price: exit at 102 exactly.
    panel.open[[4, 0]] = 102.0 + 0.4 * risk;
    panel.high[[4, 0]] = 102.0 + 0.45 * risk;
    panel.low[[4, 0]] = 101.0;
    panel.close[[4, 0]] = 101.5;
    let mut cfg = config(true, false);
    cfg.risk.stops.breakeven_after_r = 0.6;
    let result = backtest::run(&panel, &common::no_funding(&panel), &cfg).unwrap();
    let exit = result.fills.iter().find(|f| f.symbol == 0 && f.side < 0).unwrap();
    assert_eq!((exit.ts, exit.reason, exit.price), (panel.ts[4], FillReason::Breakeven, 102.0));
    let trip = result.round_trips.iter().find(|r| r.symbol == 0).unwrap();
    let units = 0.5 * 10_000.0 / 102.0;
    assert!((trip.pnl - (-2.0 * units * 102.0 * 10.0 / 1e4)).abs() < 1e-9, "flat minus fees: {}", trip.pnl);
}

#[test]
fn kill_switch_in_freeze_mode_only_lets_positions_shrink_until_the_next_day() {
    let panel = crash_panel();
    let mut cfg = config(false, true);
    cfg.risk.kill_switch.action = xsmom::config::KillAction::Freeze;
    cfg.backtest.min_rebalance_delta = 0.0;
    let result = backtest::run(&panel, &common::no_funding(&panel), &cfg).unwrap();
    assert!(result.bars.kill_switch[4]);
    assert!(result.fills.iter().all(|f| f.reason != FillReason::KillSwitch), "freeze does not flatten");
    let units = result.units();
    for t in 5..=22 {
        for i in 0..panel.n_symbols() {
            let (before, now) = (units[[t - 1, i]], units[[t, i]]);
            assert!(
                now.abs() <= before.abs() + 1e-9 && (now == 0.0 || now.signum() == before.signum()),
                "bar {t} symbol {i}: {before} → {now}"
            );
        }
    }
    assert!(!result.bars.kill_switch[23]);
}
