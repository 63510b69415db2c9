//! The fill model (backtest.md §2–3, `execution` config), written once and used by the backtest
//! engine and by the simulated account of `xsmom-live` replay / paper: whether a rebalance trades,
//! how large it is, where a resting limit fills, and which fee each kind of fill pays.

use crate::config::{CostsConfig, FillPrice};
use crate::model::{FillReason, BPS};

/// Units to trade to move `current_units` to `target_weight × equity / price`, or 0 when the trade
/// is skipped: no price, nothing to do, or smaller than `min_rebalance_delta × equity` (closing a
/// position whose target is 0 is never skipped).
#[inline]
pub fn rebalance_delta(
    target_weight: f64,
    equity: f64,
    price: f64,
    current_units: f64,
    min_rebalance_delta: f64,
) -> f64 {
    if !(price > 0.0) {
        return 0.0;
    }
    let delta = target_weight * equity / price - current_units;
    let closing = target_weight == 0.0 && current_units != 0.0;
    if delta == 0.0 || (!closing && (delta * price).abs() < min_rebalance_delta * equity) {
        return 0.0;
    }
    delta
}

/// Price of a `limit_touch` order decided at `close`: `offset_bps` away from the market (a buy
/// below the close, a sell above). `side` is +1 buy, −1 sell.
#[inline]
pub fn limit_price(close: f64, side: f64, offset_bps: f64) -> f64 {
    close * (1.0 - side * offset_bps / BPS)
}

/// Fill price of a resting limit order in a later bar: a buy fills when the bar trades below its
/// price (at the open when the bar opens below it), a sell when it trades above; `None` otherwise.
#[inline]
pub fn limit_fill(side: f64, limit: f64, open: f64, high: f64, low: f64) -> Option<f64> {
    if !(open.is_finite() && high.is_finite() && low.is_finite()) {
        return None;
    }
    if side > 0.0 && low < limit {
        Some(limit.min(open))
    } else if side < 0.0 && high > limit {
        Some(limit.max(open))
    } else {
        None
    }
}

/// Exits decided at a bar's close, filled at that close whatever the fill model (risk.md §1–3).
#[inline]
pub fn exits_at_close(reason: FillReason) -> bool {
    matches!(reason, FillReason::Time | FillReason::KillSwitch | FillReason::Flatten)
}

/// Fee (bps) and slippage (bps) of a fill. Rebalance fills of the `close` and `next_open` models pay
/// the blended maker/taker fee; a `limit_touch` limit fill is a maker fill at its own price (no
/// slippage) and its fallback a taker fill; every stop, take-profit, time or kill-switch exit is a
/// taker fill.
#[inline]
pub fn fill_costs(fill: FillPrice, reason: FillReason, resting_limit: bool, costs: &CostsConfig) -> (f64, f64) {
    match (reason, fill) {
        (FillReason::Rebalance, _) if resting_limit => (costs.maker_fee_bps, 0.0),
        (FillReason::Rebalance, FillPrice::Close | FillPrice::NextOpen) => {
            (costs.rebalance_fee_bps(), costs.slippage_bps)
        }
        _ => (costs.taker_fee_bps, costs.slippage_bps),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_trades_are_skipped_but_closing_never_is() {
        assert_eq!(rebalance_delta(0.1, 1000.0, 10.0, 0.0, 0.002), 10.0);
        // 0.001 of equity is below the 0.002 floor.
        assert_eq!(rebalance_delta(0.101, 1000.0, 10.0, 10.0, 0.002), 0.0);
        assert_eq!(rebalance_delta(0.0, 1000.0, 10.0, 0.01, 0.002), -0.01);
        assert_eq!(rebalance_delta(0.1, 1000.0, f64::NAN, 0.0, 0.002), 0.0);
    }

    #[test]
    fn limits_fill_through_the_price_or_at_a_gap_open() {
        assert_eq!(limit_price(100.0, 1.0, 10.0), 99.9);
        assert_eq!(limit_fill(1.0, 99.0, 100.0, 101.0, 99.0), None, "touching is not trading through");
        assert_eq!(limit_fill(1.0, 99.0, 100.0, 101.0, 98.5), Some(99.0));
        assert_eq!(limit_fill(1.0, 99.0, 97.0, 98.0, 96.0), Some(97.0), "gap below a buy fills at the open");
        assert_eq!(limit_fill(-1.0, 101.0, 103.0, 104.0, 102.0), Some(103.0));
        assert_eq!(limit_fill(-1.0, 101.0, 100.0, 100.5, 99.0), None);
    }

    #[test]
    fn fees_by_kind_of_fill() {
        let costs = CostsConfig::default();
        let blended = costs.rebalance_fee_bps();
        assert_eq!(fill_costs(FillPrice::Close, FillReason::Rebalance, false, &costs), (blended, 2.0));
        assert_eq!(fill_costs(FillPrice::LimitTouch, FillReason::Rebalance, true, &costs), (1.0, 0.0));
        assert_eq!(fill_costs(FillPrice::LimitTouch, FillReason::Rebalance, false, &costs), (5.5, 2.0));
        assert_eq!(fill_costs(FillPrice::Close, FillReason::Stop, false, &costs), (5.5, 2.0));
    }
}
