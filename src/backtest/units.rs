//! Units accounting (backtest.md §3): the engine holds units bought and sold at fill prices, pays
//! funding on them and marks them at the last close. The per-bar sequence of [`Engine::step`] for
//! this mode, and the fills it makes: rebalances, stop exits, the kill-switch flatten and the
//! resting orders of `limit_touch`.

use super::account::{BarOrder, PendingOrders, RestingOrder, UnitsBook};
use super::recorder::BarRecord;
use super::strategy::DecisionInputs;
use super::Engine;
use crate::bitset::Bits;
use crate::config::{FillPrice, LimitFallback};
use crate::execution;
use crate::model::{BarRow, FillReason};
use crate::risk::KillState;

impl Engine {
    /// Bar t of a units run, after the indicators (backtest.md's per-bar sequence, steps 2–9).
    pub(super) fn step_units(&mut self, t: usize, bar: &BarRow<'_>, book: &mut UnitsBook) {
        self.ledger.start_bar();
        if let Some(pending) = book.pending.take() {
            self.rebalance(t, &pending.target, pending.equity, bar.open);
        }
        self.pay_funding(bar);
        self.mark_closes(bar.close);
        if book.n_resting > 0 {
            self.fill_resting(t, bar, book);
        }
        self.run_stops(t, bar, book);
        // Equity is re-marked only after something traded: the same sum over the same book.
        let mut equity = self.ledger.equity(&self.last_price);
        let kill = self.risk.check_portfolio(t, bar.ts, equity);
        if kill.flatten {
            self.flatten(t, kill, book);
            equity = self.ledger.equity(&self.last_price);
        }
        if book.n_resting > 0 {
            let fills_before = self.ledger.fills.len();
            self.expire_resting(t, bar.close, book);
            if self.ledger.fills.len() != fills_before {
                equity = self.ledger.equity(&self.last_price);
            }
        }
        let fills_before_decision = self.ledger.fills.len();
        let (k, vol_scale) = self.decide_and_trade(t, bar, equity, kill, book);
        if self.ledger.fills.len() != fills_before_decision {
            equity = self.ledger.equity(&self.last_price);
        }
        self.record_units(equity, k, vol_scale, kill.active);
    }

    /// Funding is paid on open positions only, in symbol order, priced at the last close at or
    /// before the event (backtest.md §3): this bar's close is not known yet.
    fn pay_funding(&mut self, bar: &BarRow<'_>) {
        for w in 0..self.ledger.held().word_count() {
            for bit in Bits(self.ledger.held().word(w)) {
                let i = 64 * w + bit;
                let rate = bar.funding_rate[i];
                if rate != 0.0 {
                    self.ledger.pay_funding(i, self.last_price[i], rate);
                }
            }
        }
    }

    /// Stops are tested on this bar's prices against the levels carried from the last bar, then
    /// updated with this bar (trailing, breakeven, partial take-profit, time exit).
    fn run_stops(&mut self, t: usize, bar: &BarRow<'_>, book: &mut UnitsBook) {
        self.risk.check_stops(t, bar.open, bar.high, bar.low, &self.ledger.units, &mut book.exits);
        self.execute_exits(t, book);
        let atr = self.ind.atr();
        self.risk.end_bar_exits(t, bar.high, bar.low, bar.close, &self.ledger.units, atr, &mut book.exits);
        self.execute_exits(t, book);
    }

    /// The kill-switch or drawdown limit fired: every position is closed at the last close.
    fn flatten(&mut self, t: usize, kill: KillState, book: &mut UnitsBook) {
        let (taker_fee_bps, slippage_bps) = (self.cfg.costs.taker_fee_bps, self.cfg.costs.slippage_bps);
        let reason = kill.reason.unwrap_or(FillReason::KillSwitch);
        for i in 0..self.symbols.len() {
            let units = self.ledger.units[i];
            if units != 0.0 && self.last_price[i].is_finite() {
                let price = self.last_price[i];
                self.ledger.trade(t, self.bar_ts, i, -units, price, taker_fee_bps, slippage_bps, reason);
                self.risk.on_exit(t, i, 0.0, FillReason::KillSwitch);
                self.bar_orders.push(BarOrder::ExitAtClose { symbol: i, reason });
            }
        }
        book.cancel_all();
        self.risk.absorb_round_trips(t, &self.ledger.round_trips);
        self.strategy.target.fill(0.0);
    }

    /// The cross-section of bar t and, on a decision bar outside a pause, the decision (steps 7–8):
    /// the admitted target, traded by the fill model. Returns (K, vol scale) for the record.
    fn decide_and_trade(
        &mut self,
        t: usize,
        bar: &BarRow<'_>,
        equity: f64,
        kill: KillState,
        book: &mut UnitsBook,
    ) -> (usize, f64) {
        let cross = self.strategy.cross_section(t, &self.ind, &self.risk, self.recorder.signal_sink());
        self.strategy.update_regime(&self.ind);
        if !self.cadence.is_decision_bar(t, cross.map_or(0, |c| c.count)) || kill.paused {
            if kill.paused {
                self.strategy.target.fill(0.0);
                self.strategy.model_target.fill(0.0);
            }
            return (0, 1.0);
        }
        let inputs = DecisionInputs { ind: &self.ind, risk: &self.risk, positions: &self.ledger.units };
        let decided = self.strategy.decide(t, equity, cross, &inputs);
        let strategy = &mut self.strategy;
        strategy.model_target.copy_from_slice(&strategy.target);
        strategy.admit(t, bar.ts, &self.risk, &self.ledger);
        strategy.meta_label_entries(t, bar.ts, cross, &self.ind, &self.ledger);
        if kill.freeze {
            strategy.freeze_targets(equity, &self.ledger.units, &self.last_price);
        }
        self.decided = true;
        match self.cfg.execution.fill {
            FillPrice::Close => {
                let target = std::mem::take(&mut self.strategy.target);
                self.rebalance(t, &target, equity, bar.close);
                self.strategy.target = target;
            }
            FillPrice::NextOpen => {
                book.pending = Some(PendingOrders { equity, target: self.strategy.target.clone() });
            }
            FillPrice::LimitTouch => self.place_limits(t, equity, bar.close, book),
        }
        decided
    }

    /// Step 9: the bar's series row and the book of every symbol with a target or a position.
    fn record_units(&mut self, equity: f64, k: usize, vol_scale: f64, kill_switch: bool) {
        let (mut gross, mut net, mut n_long, mut n_short) = (0.0, 0.0, 0, 0);
        // Symbols flat with no target have nothing to record, and adding their 0 changes no sum;
        // every other one has an entry.
        let (target, model_target) = (&self.strategy.target, &self.strategy.model_target);
        self.active.assign_nonzero_or(target, self.ledger.held());
        self.active.insert_nonzero(model_target);
        let inverse_equity = 1.0 / equity;
        for i in self.active.iter() {
            let (units, price) = (self.ledger.units[i], self.last_price[i]);
            let weight = if units != 0.0 { units * price * inverse_equity } else { 0.0 };
            self.recorder.book.push_entry(i, target[i], model_target[i], weight, units);
            gross += weight.abs();
            net += weight;
            n_long += (units > 0.0) as u32;
            n_short += (units < 0.0) as u32;
        }
        self.risk.end_bar(&self.ledger.units);
        let ledger = &self.ledger;
        self.recorder.end_bar(BarRecord {
            equity,
            cash: ledger.cash,
            gross,
            net,
            turnover: ledger.bar_traded_notional / equity,
            traded_notional: ledger.bar_traded_notional,
            fees: ledger.bar_fees,
            funding: ledger.bar_funding,
            n_long,
            n_short,
            regime: self.strategy.regime.as_str(),
            k: k as u32,
            vol_scale,
            kill_switch,
        });
    }

    /// The exits in `book.exits`, in order. Runs twice a bar: the costs are copied out of the config
    /// rather than the config's `Arc` cloned (an atomic increment and decrement per call).
    fn execute_exits(&mut self, t: usize, book: &mut UnitsBook) {
        let ts = self.bar_ts;
        let (taker_fee_bps, slippage_bps) = (self.cfg.costs.taker_fee_bps, self.cfg.costs.slippage_bps);
        for k in 0..book.exits.len() {
            let exit = book.exits[k];
            let delta = -self.ledger.units[exit.symbol] * exit.fraction;
            self.ledger.trade(t, ts, exit.symbol, delta, exit.price, taker_fee_bps, slippage_bps, exit.reason);
            self.risk.on_exit(t, exit.symbol, self.ledger.units[exit.symbol], exit.reason);
            let (symbol, reason) = (exit.symbol, exit.reason);
            self.bar_orders.push(if execution::exits_at_close(reason) {
                BarOrder::ExitAtClose { symbol, reason }
            } else {
                BarOrder::Exited { symbol, reason }
            });
            // An entry still resting for a symbol that was just stopped out would re-open it.
            if reason != FillReason::TakeProfit {
                book.cancel(symbol);
            }
        }
        self.risk.absorb_round_trips(t, &self.ledger.round_trips);
    }

    /// Trade from current units to `target` weights at `prices`, sized on `equity` (market fills:
    /// `close` at this bar's close, `next_open` at this bar's open).
    pub(super) fn rebalance(&mut self, t: usize, target: &[f64], equity: f64, prices: &[f64]) {
        let ts = self.bar_ts;
        let fill = self.cfg.execution.fill;
        let (fee_bps, slippage_bps) = execution::fill_costs(fill, FillReason::Rebalance, false, &self.cfg.costs);
        let min_delta = self.cfg.backtest.min_rebalance_delta;
        // Symbols flat with no target have nothing to trade: visit the others, in symbol order.
        let mut active = std::mem::take(&mut self.active);
        active.assign_nonzero_or(target, self.ledger.held());
        for i in active.iter() {
            let current = self.ledger.units[i];
            let delta = execution::rebalance_delta(target[i], equity, prices[i], current, min_delta);
            if delta == 0.0 {
                continue;
            }
            self.ledger.trade(t, ts, i, delta, prices[i], fee_bps, slippage_bps, FillReason::Rebalance);
            let decision_atr = if fill == FillPrice::NextOpen { self.ind.prev_atr() } else { self.ind.atr() };
            self.after_rebalance_fill(t, i, current, decision_atr.map_or(f64::NAN, |atr| atr[i]));
        }
        self.active = active;
        self.risk.absorb_round_trips(t, &self.ledger.round_trips);
    }

    /// Bookkeeping after a rebalance fill of symbol i at bar t: entries (re)open the stop state with
    /// `decision_atr`, armed from the bar after the fill.
    fn after_rebalance_fill(&mut self, t: usize, i: usize, before: f64, decision_atr: f64) {
        if let Some(meta) = self.strategy.meta.as_mut() {
            let p = meta.on_fill(i, before, self.ledger.units[i], &self.ledger.round_trips);
            self.ledger.fills.last_mut().expect("just traded").meta_p = p;
        }
        let fill_price = self.ledger.fills.last().expect("just traded").price;
        self.risk.on_rebalance_fill(t, self.bar_ts, i, before, self.ledger.units[i], fill_price, decision_atr, t);
    }

    /// `limit_touch`: replace the resting orders with one per symbol that the admitted target wants
    /// traded, at this close ± the offset. A symbol that keeps wanting the same side keeps its TTL clock.
    fn place_limits(&mut self, t: usize, equity: f64, close: &[f64], book: &mut UnitsBook) {
        let (min_delta, offset) = (self.cfg.backtest.min_rebalance_delta, self.cfg.execution.limit_offset_bps);
        let target = std::mem::take(&mut self.strategy.target);
        let mut active = std::mem::take(&mut self.active);
        active.assign_nonzero_or(&target, self.ledger.held());
        for i in 0..book.resting.len() {
            if book.resting[i].is_some() && !active.contains(i) {
                book.cancel(i);
            }
        }
        for i in active.iter() {
            let previous = book.resting[i].take();
            book.n_resting -= previous.is_some() as usize;
            let delta = execution::rebalance_delta(target[i], equity, close[i], self.ledger.units[i], min_delta);
            if delta == 0.0 {
                continue;
            }
            let side = delta.signum();
            let since_bar = previous.filter(|p| p.units.signum() == side).map_or(t, |p| p.since_bar);
            let atr = self.ind.atr().map_or(f64::NAN, |atr| atr[i]);
            let price = execution::limit_price(close[i], side, offset);
            book.resting[i] = Some(RestingOrder { units: delta, price, placed_bar: t, since_bar, atr });
            book.n_resting += 1;
        }
        self.active = active;
        self.strategy.target = target;
    }

    /// Resting limits that bar t trades through fill at their price (or the open on a gap): maker
    /// fills without slippage.
    fn fill_resting(&mut self, t: usize, bar: &BarRow<'_>, book: &mut UnitsBook) {
        let (fee_bps, slippage_bps) =
            execution::fill_costs(FillPrice::LimitTouch, FillReason::Rebalance, true, &self.cfg.costs);
        for i in 0..book.resting.len() {
            let Some(order) = book.resting[i] else { continue };
            if order.placed_bar >= t {
                continue;
            }
            let side = order.units.signum();
            let Some(price) = execution::limit_fill(side, order.price, bar.open[i], bar.high[i], bar.low[i]) else {
                continue;
            };
            book.resting[i] = None;
            book.n_resting -= 1;
            let before = self.ledger.units[i];
            self.ledger.trade(t, self.bar_ts, i, order.units, price, fee_bps, slippage_bps, FillReason::Rebalance);
            self.after_rebalance_fill(t, i, before, order.atr);
        }
        self.risk.absorb_round_trips(t, &self.ledger.round_trips);
    }

    /// At the close of bar t, resting limits whose TTL ran out are sent as taker orders at this close
    /// or cancelled (`execution.limit_fallback`).
    fn expire_resting(&mut self, t: usize, close: &[f64], book: &mut UnitsBook) {
        let ttl = self.cfg.execution.limit_ttl_bars;
        let taker = self.cfg.execution.limit_fallback == LimitFallback::Taker;
        let (fee_bps, slippage_bps) =
            execution::fill_costs(FillPrice::LimitTouch, FillReason::Rebalance, false, &self.cfg.costs);
        for i in 0..book.resting.len() {
            let Some(order) = book.resting[i] else { continue };
            if t < order.since_bar + ttl {
                continue;
            }
            book.resting[i] = None;
            book.n_resting -= 1;
            self.bar_orders.push(BarOrder::Expired { symbol: i, taker });
            if taker && close[i] > 0.0 {
                let before = self.ledger.units[i];
                self.ledger.trade(
                    t,
                    self.bar_ts,
                    i,
                    order.units,
                    close[i],
                    fee_bps,
                    slippage_bps,
                    FillReason::Rebalance,
                );
                let atr = self.ind.atr().map_or(f64::NAN, |atr| atr[i]);
                self.after_rebalance_fill(t, i, before, atr);
            }
        }
        self.risk.absorb_round_trips(t, &self.ledger.round_trips);
    }
}
