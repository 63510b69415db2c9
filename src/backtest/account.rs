//! How the engine holds positions (`backtest.accounting`, backtest.md §3): an enum over the two
//! accounting modes, each with the state only it needs. Units accounting's per-bar sequence is in
//! `units.rs`; constant-weight accounting is short enough to live here.

use super::recorder::BarRecord;
use super::strategy::DecisionInputs;
use super::Engine;
use crate::config::Accounting;
use crate::model::{BarRow, FillReason, BPS};
use crate::risk::StopExit;

/// The account of a run, by accounting mode.
#[derive(Debug)]
pub(super) enum Account {
    Units(UnitsBook),
    Weights(WeightsBook),
}

impl Account {
    pub fn new(mode: Accounting, n_symbols: usize, initial_capital: f64) -> Self {
        match mode {
            Accounting::Units => Account::Units(UnitsBook {
                resting: vec![None; n_symbols],
                n_resting: 0,
                pending: None,
                exits: Vec::new(),
            }),
            Accounting::Weights => {
                Account::Weights(WeightsBook { equity: initial_capital, held: vec![0.0; n_symbols], pending_cost: 0.0 })
            }
        }
    }
}

/// Units accounting's own state: orders not filled yet (the ledger holds the positions).
#[derive(Debug)]
pub(super) struct UnitsBook {
    /// Resting `limit_touch` orders per symbol.
    pub resting: Vec<Option<RestingOrder>>,
    pub n_resting: usize,
    /// `fill: next_open`: the target decided at the last bar, filled at this bar's open.
    pub pending: Option<PendingOrders>,
    /// Scratch: the stop exits of the bar.
    pub exits: Vec<StopExit>,
}

impl UnitsBook {
    pub fn cancel(&mut self, symbol: usize) {
        if self.resting[symbol].take().is_some() {
            self.n_resting -= 1;
        }
    }

    pub fn cancel_all(&mut self) {
        self.resting.fill(None);
        self.n_resting = 0;
    }
}

/// Constant-weight accounting's state: equity, the weights held and the turnover still to charge.
#[derive(Debug)]
pub(super) struct WeightsBook {
    pub equity: f64,
    pub held: Vec<f64>,
    pub pending_cost: f64,
}

/// Targets decided at t and filled at the open of t + 1 (`fill: next_open`).
#[derive(Debug)]
pub(super) struct PendingOrders {
    pub equity: f64,
    pub target: Vec<f64>,
}

/// A resting `limit_touch` order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestingOrder {
    /// Signed units to trade.
    pub units: f64,
    pub price: f64,
    /// Bar the order was placed at (it may fill from the next bar on).
    pub placed_bar: usize,
    /// First bar of the symbol's consecutive same-side orders: the TTL counts from here.
    pub since_bar: usize,
    /// ATR of the placement bar (the stop distance of an entry it fills).
    pub atr: f64,
}

/// What a bar did besides the rebalance toward the admitted target, in the order it happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BarOrder {
    /// A stop or take-profit exit filled inside this bar at its level (or the open on a gap).
    Exited { symbol: usize, reason: FillReason },
    /// An exit decided at this bar's close and filled at it (time, kill-switch, drawdown flatten).
    ExitAtClose { symbol: usize, reason: FillReason },
    /// A `limit_touch` order reached its TTL unfilled: sent as a taker order at this close, or cancelled.
    Expired { symbol: usize, taker: bool },
}

impl Engine {
    /// Constant-weight accounting (backtest.md §3):
    /// `E_{t+1} = E_t (1 + Σ w_t r_{t+1}) − E_t · cost · Σ|w_t − w_{t−1}|`, plus funding on `w_t`.
    pub(super) fn step_weights(&mut self, t: usize, bar: &BarRow<'_>, book: &mut WeightsBook) {
        self.mark_closes(bar.close);
        let returns = self.ind.returns();
        let prev_equity = book.equity;
        let mut growth = 0.0;
        let mut funding = 0.0;
        for i in 0..self.symbols.len() {
            let w = book.held[i];
            if w != 0.0 {
                let r = returns[i];
                if r.is_finite() {
                    growth += w * r;
                }
                funding -= w * bar.funding_rate[i];
            }
        }
        let fees = book.pending_cost * prev_equity;
        let equity = prev_equity * (1.0 + growth + funding) - fees;
        book.equity = equity;

        let cross = self.strategy.cross_section(t, &self.ind, &self.risk, self.recorder.signal_sink());
        self.strategy.update_regime(&self.ind);
        let decision = self.cadence.is_decision_bar(t, cross.map_or(0, |c| c.count));
        let (k, vol_scale) = if decision {
            let inputs = DecisionInputs { ind: &self.ind, risk: &self.risk, positions: &book.held };
            self.strategy.decide(t, equity, cross, &inputs)
        } else {
            (0, 1.0)
        };
        self.decided = decision;
        if decision {
            self.strategy.model_target.copy_from_slice(&self.strategy.target);
        }
        let target = if decision { self.strategy.target.clone() } else { book.held.clone() };
        let (turnover, row) = self.trade_weights(t, bar.ts, &target, equity, book);
        book.held.copy_from_slice(&target);
        let costs = &self.cfg.costs;
        book.pending_cost = (costs.rebalance_fee_bps() + costs.slippage_bps) / BPS * turnover;
        self.recorder.end_bar(BarRecord {
            equity,
            cash: equity * (1.0 - row.net),
            traded_notional: turnover * equity,
            turnover,
            fees,
            funding: funding * prev_equity,
            regime: self.strategy.regime.as_str(),
            k: k as u32,
            vol_scale,
            ..row
        });
    }

    /// The weight changes to `target`, mirrored in the ledger so that fills and round trips exist
    /// in this mode too, and the book record; returns the turnover and the row's book columns.
    fn trade_weights(
        &mut self,
        t: usize,
        ts: i64,
        target: &[f64],
        equity: f64,
        book: &WeightsBook,
    ) -> (f64, BarRecord) {
        let costs = &self.cfg.costs;
        let mut turnover = 0.0;
        let (mut gross, mut net, mut n_long, mut n_short) = (0.0, 0.0, 0, 0);
        for i in 0..self.symbols.len() {
            let change = target[i] - book.held[i];
            let price = self.last_price[i];
            if change != 0.0 {
                turnover += change.abs();
                let units_now = target[i] * equity / price;
                let units_before = self.ledger.units[i];
                let (fee_bps, slippage_bps) = (costs.rebalance_fee_bps(), costs.slippage_bps);
                let delta = units_now - units_before;
                self.ledger.trade(t, ts, i, delta, price, fee_bps, slippage_bps, FillReason::Rebalance);
            }
            let w = target[i];
            let units = if w != 0.0 { w * equity / price } else { 0.0 };
            self.recorder.book.push(i, w, w, w, units);
            gross += w.abs();
            net += w;
            n_long += (w > 0.0) as u32;
            n_short += (w < 0.0) as u32;
        }
        let row = BarRecord {
            equity,
            cash: 0.0,
            gross,
            net,
            turnover,
            traded_notional: 0.0,
            fees: 0.0,
            funding: 0.0,
            n_long,
            n_short,
            regime: "",
            k: 0,
            vol_scale: 1.0,
            kill_switch: false,
        };
        (turnover, row)
    }
}
