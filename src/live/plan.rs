//! From the engine's trade to an exchange order (live.md §2.3): lot rounding, the exchange's minimums
//! and the post-only price at the touch. Whether and how much to trade is the engine's rule
//! ([`crate::execution::rebalance_delta`]); this is a pure function of that trade and the order
//! book, tested without any exchange.

/// One symbol's trade as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolBook {
    pub symbol: String,
    /// Units to trade (signed), as the engine's rule sized them on the account.
    pub delta: f64,
    /// Signed position in contracts (+ long).
    pub position: f64,
    pub bid: f64,
    pub ask: f64,
    pub qty_step: f64,
    pub min_qty: f64,
    pub tick_size: f64,
    pub min_notional: f64,
}

/// Order-placement settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanInputs {
    /// Bps away from the touch (`execution.limit_offset_bps` + `live.price_offset_bps`).
    pub price_offset_bps: f64,
    pub dynamic_offset: bool,
    pub max_spread_bps: f64,
}

use crate::model::{Side, BPS};

/// A post-only limit order the cycle wants on the book.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedOrder {
    pub symbol: String,
    pub side: Side,
    pub qty: f64,
    pub price: f64,
    /// Only reduces the position (closing to a zero target).
    pub reduce_only: bool,
}

/// Why a symbol gets no order this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Already at the target after rounding to the lot size, or the engine's rule skips the trade.
    AtTarget,
    NoQuote,
    SpreadTooWide,
    BelowMinNotional,
    /// `live.trading: false`: the account stands aside (flat).
    NotTrading,
    /// The exchange rejected the order (logged); the other symbols went on.
    Rejected,
    /// The risk loop closed the position on a stop during this bar: no re-entry before the next bar.
    StoppedThisBar,
    /// Position plus open orders plus this order would go past the target by more than a lot.
    BeyondTarget,
    /// The exchange cancelled `live.max_reprices` post-only orders this bar and
    /// `execution.limit_fallback` is `cancel`: no more orders before the next bar.
    RepriceLimit,
}

/// Whether `position + open + order` (signed units) stays between the position and the target,
/// with one lot (`lot`) of slack for rounding: an order may move the account toward its target,
/// never past it.
pub fn within_target(position: f64, open: f64, order: f64, target: f64, lot: f64) -> bool {
    let after = position + open + order;
    let slack = lot.max(0.0) + 1e-9 * (position.abs() + target.abs() + 1.0);
    after >= position.min(target) - slack && after <= position.max(target) + slack
}

/// The post-only limit order for `book.delta`: rounded toward zero to the lot (a close of the whole
/// position is exact), above the exchange's minimums, priced at the touch moved `price_offset_bps` away
/// from the market.
pub fn plan_order(book: &SymbolBook, inputs: &PlanInputs) -> Result<Option<PlannedOrder>, Skip> {
    if !(book.bid > 0.0 && book.ask >= book.bid) {
        return Err(Skip::NoQuote);
    }
    let mid = 0.5 * (book.bid + book.ask);
    let spread_bps = (book.ask - book.bid) / mid * BPS;
    if spread_bps > inputs.max_spread_bps {
        return Err(Skip::SpreadTooWide);
    }
    let closing = book.delta == -book.position && book.position != 0.0;
    let delta = if closing { book.delta } else { round_to_step(book.delta, book.qty_step) };
    if delta == 0.0 {
        return Ok(None);
    }
    if !closing && (delta.abs() < book.min_qty || delta.abs() * mid < book.min_notional) {
        return Err(Skip::BelowMinNotional);
    }
    let side = if delta > 0.0 { Side::Buy } else { Side::Sell };
    let mut offset_bps = inputs.price_offset_bps;
    if inputs.dynamic_offset {
        offset_bps += 0.5 * spread_bps.min(inputs.max_spread_bps);
    }
    // Post-only prices sit on our side of the book: the nearest tick, but never across the touch.
    let price = match side {
        Side::Buy => nearest_step(book.bid * (1.0 - offset_bps / BPS), book.tick_size)
            .min(floor_to_step(book.bid, book.tick_size)),
        Side::Sell => nearest_step(book.ask * (1.0 + offset_bps / BPS), book.tick_size)
            .max(ceil_to_step(book.ask, book.tick_size)),
    };
    Ok(Some(PlannedOrder {
        symbol: book.symbol.clone(),
        side,
        qty: delta.abs(),
        price,
        reduce_only: reduces(book.position, delta),
    }))
}

/// Whether trading `delta` only reduces `position` (never opens or flips).
pub fn reduces(position: f64, delta: f64) -> bool {
    position != 0.0 && delta.signum() != position.signum() && delta.abs() <= position.abs()
}

/// `value` rounded toward zero to a multiple of `step` (lot sizes never round up into more risk).
pub fn round_to_step(value: f64, step: f64) -> f64 {
    if !(step > 0.0) {
        return value;
    }
    let steps = (value / step + 1e-9 * value.signum()).trunc();
    clean(steps * step, step)
}

pub fn nearest_step(value: f64, step: f64) -> f64 {
    if !(step > 0.0) {
        return value;
    }
    clean((value / step).round() * step, step)
}

pub fn floor_to_step(value: f64, step: f64) -> f64 {
    if !(step > 0.0) {
        return value;
    }
    clean((value / step + 1e-9).floor() * step, step)
}

pub fn ceil_to_step(value: f64, step: f64) -> f64 {
    if !(step > 0.0) {
        return value;
    }
    clean((value / step - 1e-9).ceil() * step, step)
}

/// Remove binary noise (`0.30000000000000004`) by rounding to the step's decimals.
fn clean(value: f64, step: f64) -> f64 {
    let decimals = (-step.log10()).ceil().clamp(0.0, 12.0) as i32 + 1;
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(delta: f64, position: f64) -> SymbolBook {
        SymbolBook {
            symbol: "BTCUSDT".into(),
            delta,
            position,
            bid: 100.0,
            ask: 100.1,
            qty_step: 0.01,
            min_qty: 0.01,
            tick_size: 0.1,
            min_notional: 5.0,
        }
    }

    fn inputs() -> PlanInputs {
        PlanInputs { price_offset_bps: 0.0, dynamic_offset: false, max_spread_bps: 15.0 }
    }

    #[test]
    fn rounds_to_lot_and_prices_at_the_touch() {
        let order = plan_order(&book(4.9975, 0.0), &inputs()).unwrap().unwrap();
        assert_eq!(
            order,
            PlannedOrder { symbol: "BTCUSDT".into(), side: Side::Buy, qty: 4.99, price: 100.0, reduce_only: false }
        );
        // From +1 to short: sell 5.99 at the ask; crossing zero is not reduce-only.
        let order = plan_order(&book(-5.995, 1.0), &inputs()).unwrap().unwrap();
        assert_eq!((order.side, order.qty, order.price, order.reduce_only), (Side::Sell, 5.99, 100.1, false));
    }

    #[test]
    fn closing_is_exact_and_minimums_and_spreads_are_exchange_rules() {
        let order = plan_order(&book(-0.003, 0.003), &inputs()).unwrap().unwrap();
        assert_eq!((order.side, order.qty, order.reduce_only), (Side::Sell, 0.003, true));
        assert_eq!(plan_order(&book(0.02, 4.98), &inputs()), Err(Skip::BelowMinNotional));
        assert_eq!(plan_order(&book(0.004, 0.0), &inputs()), Ok(None), "below one lot");
        let mut wide = book(5.0, 0.0);
        wide.ask = 100.2; // 20 bps
        assert_eq!(plan_order(&wide, &inputs()), Err(Skip::SpreadTooWide));
    }

    #[test]
    fn orders_never_go_past_the_target() {
        assert!(within_target(0.0, 0.0, 4.99, 5.0, 0.01));
        assert!(within_target(1.0, 0.0, -6.0, -5.0, 0.01), "a flip to the target");
        assert!(!within_target(0.0, 4.99, 4.99, 5.0, 0.01), "an open order already covers it");
        assert!(!within_target(2.0, 0.0, 4.0, 5.0, 0.01), "past the target");
        assert!(within_target(2.0, 0.0, -2.0, 0.0, 0.001), "a close");
        assert!(!within_target(2.0, 0.0, -2.5, 0.0, 0.001), "a close that would flip");
        assert!(within_target(5.0, 0.0, 0.005, 5.0, 0.01), "one lot of slack");
    }

    #[test]
    fn offsets_move_away_from_the_spread_and_ids_are_deterministic() {
        let mut with_offset = inputs();
        with_offset.price_offset_bps = 10.0;
        assert_eq!(plan_order(&book(5.0, 0.0), &with_offset).unwrap().unwrap().price, 99.9);
        assert_eq!(plan_order(&book(-5.0, 0.0), &with_offset).unwrap().unwrap().price, 100.2);
        assert_eq!(
            crate::model::client_order_id::rebalance(1_700_000_000_000, "BTCUSDT", 0),
            "xs-1700000000000-BTCUSDT-0"
        );
    }
}
