//! From target weights to orders (live.md §2.3): a pure function of the model's targets, the
//! account and the order books, so that it is tested without any exchange.

/// One symbol as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolBook {
    pub symbol: String,
    pub target_weight: f64,
    /// Signed position in contracts (+ long).
    pub position: f64,
    pub bid: f64,
    pub ask: f64,
    pub qty_step: f64,
    pub min_qty: f64,
    pub tick_size: f64,
    pub min_notional: f64,
}

/// Account-wide inputs of a plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanInputs {
    pub equity: f64,
    /// Trades smaller than this fraction of equity are skipped (closing a position never is).
    pub min_rebalance_delta: f64,
    pub price_offset_bps: f64,
    pub dynamic_offset: bool,
    pub max_spread_bps: f64,
}

pub use super::types::Side;

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
    /// Already at the target after rounding to the lot size.
    AtTarget,
    NoQuote,
    SpreadTooWide,
    BelowMinNotional,
    BelowMinRebalanceDelta,
}

/// Orders that move each symbol from its position to its target, and the reasons for the others.
pub fn plan_orders(books: &[SymbolBook], inputs: &PlanInputs) -> (Vec<PlannedOrder>, Vec<(String, Skip)>) {
    let mut orders = Vec::new();
    let mut skipped = Vec::new();
    for book in books {
        match plan_one(book, inputs) {
            Ok(Some(order)) => orders.push(order),
            Ok(None) => skipped.push((book.symbol.clone(), Skip::AtTarget)),
            Err(skip) => skipped.push((book.symbol.clone(), skip)),
        }
    }
    (orders, skipped)
}

fn plan_one(book: &SymbolBook, inputs: &PlanInputs) -> Result<Option<PlannedOrder>, Skip> {
    let closing = book.target_weight == 0.0 && book.position != 0.0;
    if book.target_weight == 0.0 && book.position == 0.0 {
        return Ok(None);
    }
    if !(book.bid > 0.0 && book.ask >= book.bid) {
        return Err(Skip::NoQuote);
    }
    let mid = 0.5 * (book.bid + book.ask);
    let spread_bps = (book.ask - book.bid) / mid * 1e4;
    if spread_bps > inputs.max_spread_bps {
        return Err(Skip::SpreadTooWide);
    }
    let delta = if closing {
        -book.position
    } else {
        let wanted = book.target_weight * inputs.equity / mid;
        round_to_step(wanted, book.qty_step) - book.position
    };
    let delta = if closing { delta } else { round_to_step(delta, book.qty_step) };
    if delta == 0.0 || (!closing && delta.abs() < book.qty_step * 0.5) {
        return Ok(None);
    }
    let notional = delta.abs() * mid;
    if !closing {
        if delta.abs() < book.min_qty || notional < book.min_notional {
            return Err(Skip::BelowMinNotional);
        }
        if notional < inputs.min_rebalance_delta * inputs.equity {
            return Err(Skip::BelowMinRebalanceDelta);
        }
    }
    let side = if delta > 0.0 { Side::Buy } else { Side::Sell };
    let mut offset_bps = inputs.price_offset_bps;
    if inputs.dynamic_offset {
        offset_bps += 0.5 * spread_bps.min(inputs.max_spread_bps);
    }
    // Post-only prices sit on our side of the book: the nearest tick, but never across the touch.
    let price = match side {
        Side::Buy => nearest_step(book.bid * (1.0 - offset_bps / 1e4), book.tick_size)
            .min(floor_to_step(book.bid, book.tick_size)),
        Side::Sell => nearest_step(book.ask * (1.0 + offset_bps / 1e4), book.tick_size)
            .max(ceil_to_step(book.ask, book.tick_size)),
    };
    let reduce_only = closing
        || (book.position != 0.0 && delta.signum() != book.position.signum() && delta.abs() <= book.position.abs());
    Ok(Some(PlannedOrder { symbol: book.symbol.clone(), side, qty: delta.abs(), price, reduce_only }))
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

/// Deterministic client order id (live.md §2.4): a restart re-derives the same id, and the
/// exchange refuses a duplicate.
pub fn client_order_id(bar_ts: i64, symbol: &str, attempt: u32) -> String {
    format!("xs-{bar_ts}-{symbol}-{attempt}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(target: f64, position: f64) -> SymbolBook {
        SymbolBook {
            symbol: "BTCUSDT".into(),
            target_weight: target,
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
        PlanInputs {
            equity: 10_000.0,
            min_rebalance_delta: 0.002,
            price_offset_bps: 0.0,
            dynamic_offset: false,
            max_spread_bps: 15.0,
        }
    }

    #[test]
    fn sizes_from_equity_rounds_to_lot_and_prices_at_the_touch() {
        // 0.05 × 10 000 / 100.05 = 4.9975 → 4.99 contracts, buy at the bid.
        let (orders, _) = plan_orders(&[book(0.05, 0.0)], &inputs());
        assert_eq!(
            orders,
            vec![PlannedOrder {
                symbol: "BTCUSDT".into(),
                side: Side::Buy,
                qty: 4.99,
                price: 100.0,
                reduce_only: false
            }]
        );
        // Short 0.05 from +1: sell 5.99 at the ask; crossing zero is not reduce-only.
        let (orders, _) = plan_orders(&[book(-0.05, 1.0)], &inputs());
        assert_eq!(
            (orders[0].side, orders[0].qty, orders[0].price, orders[0].reduce_only),
            (Side::Sell, 5.99, 100.1, false)
        );
    }

    #[test]
    fn zero_targets_close_whatever_the_size_and_small_trades_are_skipped() {
        let (orders, _) = plan_orders(&[book(0.0, 0.003)], &inputs());
        assert_eq!((orders[0].side, orders[0].qty, orders[0].reduce_only), (Side::Sell, 0.003, true));
        // 0.0499 → 0.05 weight: 0.01 contracts ≈ 1 USDT < min notional.
        let (orders, skipped) = plan_orders(&[book(0.05, 4.98)], &inputs());
        assert!(orders.is_empty());
        assert_eq!(skipped[0].1, Skip::BelowMinNotional);
        let mut wide = book(0.05, 0.0);
        wide.ask = 100.2; // 20 bps
        assert_eq!(plan_orders(&[wide], &inputs()).1[0].1, Skip::SpreadTooWide);
    }

    #[test]
    fn offsets_move_away_from_the_spread_and_ids_are_deterministic() {
        let mut with_offset = inputs();
        with_offset.price_offset_bps = 10.0;
        let (orders, _) = plan_orders(&[book(0.05, 0.0)], &with_offset);
        assert_eq!(orders[0].price, 99.9);
        let (orders, _) = plan_orders(&[book(-0.05, 0.0)], &with_offset);
        assert_eq!(orders[0].price, 100.2);
        assert_eq!(client_order_id(1_700_000_000_000, "BTCUSDT", 0), "xs-1700000000000-BTCUSDT-0");
    }
}
