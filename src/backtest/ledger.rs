//! Cash, positions in units, fills and round trips (backtest.md §3–4).

use crate::bitset::SymbolSet;
use crate::model::{Fill, FillReason, RoundTrip, BPS};

#[derive(Debug, Clone)]
struct OpenTrip {
    side: i8,
    entry_bar: usize,
    entry_ts: i64,
    opened_qty: f64,
    opened_notional: f64,
    closed_qty: f64,
    closed_notional: f64,
    costs: f64,
}

/// Cash and positions of the `units` accounting, with every fill and closed round trip.
#[derive(Debug, Clone)]
pub struct Ledger {
    pub cash: f64,
    pub units: Vec<f64>,
    /// The symbols with `units != 0` (only [`Ledger::trade`] changes units).
    held: SymbolSet,
    pub fills: Vec<Fill>,
    pub round_trips: Vec<RoundTrip>,
    open: Vec<Option<OpenTrip>>,
    /// Per-bar accumulators, reset by [`Ledger::start_bar`].
    pub bar_fees: f64,
    pub bar_traded_notional: f64,
    pub bar_funding: f64,
    /// The last slippage and fee rates in bps with their fractions `bps / BPS`, so that a run with
    /// one cost model divides once instead of once per fill.
    slippage: (f64, f64),
    fee: (f64, f64),
}

impl Ledger {
    pub fn new(initial_capital: f64, n_symbols: usize) -> Self {
        Self {
            cash: initial_capital,
            units: vec![0.0; n_symbols],
            held: SymbolSet::new(n_symbols),
            fills: Vec::new(),
            round_trips: Vec::new(),
            open: vec![None; n_symbols],
            bar_fees: 0.0,
            bar_traded_notional: 0.0,
            bar_funding: 0.0,
            slippage: (0.0, 0.0),
            fee: (0.0, 0.0),
        }
    }

    pub fn start_bar(&mut self) {
        self.bar_fees = 0.0;
        self.bar_traded_notional = 0.0;
        self.bar_funding = 0.0;
    }

    /// Equity marked at `prices` (last valid close per symbol).
    pub fn equity(&self, prices: &[f64]) -> f64 {
        // Summed over held symbols in symbol order from −0.0, as `Iterator::sum` over the non-zero
        // positions would: the same additions in the same order.
        let mut marked = -0.0;
        for symbol in self.held.iter() {
            marked += self.units[symbol] * prices[symbol];
        }
        self.cash + marked
    }

    /// The symbols with an open position.
    pub fn held(&self) -> &SymbolSet {
        &self.held
    }

    /// Book a funding payment: a long pays `units × price × rate` when the rate is positive.
    pub fn pay_funding(&mut self, symbol: usize, price: f64, rate: f64) {
        let flow = -self.units[symbol] * price * rate;
        if flow == 0.0 || !flow.is_finite() {
            return;
        }
        self.cash += flow;
        self.bar_funding += flow;
        if let Some(trip) = self.open[symbol].as_mut() {
            trip.costs -= flow;
        }
    }

    /// Trade `delta_units` of `symbol` at `base_price` moved against the trade by `slippage_bps`,
    /// paying `fee_bps` on the notional. A trade through zero closes one round trip and opens the next.
    #[allow(clippy::too_many_arguments)]
    pub fn trade(
        &mut self,
        bar: usize,
        ts: i64,
        symbol: usize,
        delta_units: f64,
        base_price: f64,
        fee_bps: f64,
        slippage_bps: f64,
        reason: FillReason,
    ) {
        if delta_units == 0.0 || !delta_units.is_finite() || !(base_price > 0.0) {
            return;
        }
        let side: i8 = if delta_units > 0.0 { 1 } else { -1 };
        // `±1 · (bps / BPS)` is exactly `(±bps) / BPS`: division is symmetric in sign.
        let price = base_price * (1.0 + side as f64 * bps_fraction(&mut self.slippage, slippage_bps));
        let qty = delta_units.abs();
        let notional = qty * price;
        let fee = notional * bps_fraction(&mut self.fee, fee_bps);
        let fee_per_unit = fee / qty;
        self.cash -= delta_units * price + fee;
        self.bar_fees += fee;
        self.bar_traded_notional += notional;
        self.fills.push(Fill { ts, symbol, side, qty, price, notional, fee, reason, meta_p: f64::NAN });

        let before = self.units[symbol];
        let after = before + delta_units;
        self.units[symbol] = if after.abs() < 1e-12 * qty.max(1.0) { 0.0 } else { after };
        let after = self.units[symbol];
        self.held.assign(symbol, after != 0.0);
        // Split the fill into the part that reduces the current position and the part that opens.
        let reducing = if before != 0.0 && (before > 0.0) != (delta_units > 0.0) { qty.min(before.abs()) } else { 0.0 };
        let opening = qty - reducing;
        if reducing > 0.0 {
            let trip = self.open[symbol].as_mut().expect("a position has an open trip");
            trip.closed_qty += reducing;
            trip.closed_notional += reducing * price;
            trip.costs += fee_per_unit * reducing;
            if after == 0.0 || (after > 0.0) != (before > 0.0) {
                // Read in place, then cleared: moving the trip out (`Option::take`) loaded it as wide
                // vectors right after the narrower stores above, which stalls every closing fill.
                let trip = self.open[symbol].as_ref().expect("checked above");
                let closed = closed_trip(symbol, trip, bar, ts, reason);
                self.round_trips.push(closed);
                self.open[symbol] = None;
            }
        }
        if opening > 1e-12 * qty.max(1.0) {
            let trip = self.open[symbol].get_or_insert(OpenTrip {
                side,
                entry_bar: bar,
                entry_ts: ts,
                opened_qty: 0.0,
                opened_notional: 0.0,
                closed_qty: 0.0,
                closed_notional: 0.0,
                costs: 0.0,
            });
            trip.opened_qty += opening;
            trip.opened_notional += opening * price;
            trip.costs += fee_per_unit * opening;
        }
    }

    /// Whether symbol i has an open position.
    pub fn is_open(&self, symbol: usize) -> bool {
        self.open[symbol].is_some()
    }
}

/// The round trip that `trip` of `symbol` makes when a fill at bar `bar` (opened at `ts`) closes it.
fn closed_trip(symbol: usize, trip: &OpenTrip, bar: usize, ts: i64, reason: FillReason) -> RoundTrip {
    let entry_price = trip.opened_notional / trip.opened_qty;
    let exit_price = trip.closed_notional / trip.closed_qty;
    let side = trip.side as f64;
    let pnl = side * (trip.closed_notional - trip.opened_notional * trip.closed_qty / trip.opened_qty) - trip.costs;
    RoundTrip {
        symbol,
        side: trip.side,
        entry_ts: trip.entry_ts,
        exit_ts: ts,
        entry_price,
        exit_price,
        qty: trip.closed_qty,
        pnl,
        ret: pnl / trip.opened_notional,
        bars_held: bar - trip.entry_bar,
        exit_reason: reason,
    }
}

/// `bps / BPS`, remembered in `cache` as (bps, fraction) so that one rate divides once per run.
fn bps_fraction(cache: &mut (f64, f64), bps: f64) -> f64 {
    if bps != cache.0 {
        *cache = (bps, bps / BPS);
    }
    cache.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_flip_and_fees() {
        let mut ledger = Ledger::new(1000.0, 1);
        ledger.trade(0, 0, 0, 2.0, 100.0, 10.0, 0.0, FillReason::Rebalance); // buy 2 @100, fee 0.2
        ledger.trade(1, 1, 0, -3.0, 110.0, 10.0, 0.0, FillReason::Rebalance); // sell 3 @110, fee 0.33
        assert_eq!(ledger.units[0], -1.0);
        let trip = &ledger.round_trips[0];
        assert_eq!((trip.side, trip.qty, trip.entry_price, trip.exit_price), (1, 2.0, 100.0, 110.0));
        // 20 price PnL − 0.2 entry fee − 2/3 of the 0.33 exit fee.
        assert!((trip.pnl - (20.0 - 0.2 - 0.22)).abs() < 1e-12);
        assert!((ledger.cash - (1000.0 - 200.0 - 0.2 + 330.0 - 0.33)).abs() < 1e-9);
        assert!(ledger.is_open(0));
    }

    #[test]
    fn slippage_moves_price_against_the_trade() {
        let mut ledger = Ledger::new(0.0, 1);
        ledger.trade(0, 0, 0, 1.0, 100.0, 0.0, 2.0, FillReason::Rebalance);
        ledger.trade(0, 0, 0, -1.0, 100.0, 0.0, 2.0, FillReason::Rebalance);
        assert_eq!(ledger.fills[0].price, 100.02);
        assert_eq!(ledger.fills[1].price, 99.98);
        assert!((ledger.round_trips[0].pnl + 0.04).abs() < 1e-9);
    }
}
