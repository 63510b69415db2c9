//! The simulated account and matching engine shared by `replay` and `paper` (live.md §1): the
//! backtest's own [`Ledger`] and fill model ([`crate::execution`]), so that an account steered by
//! the runner fills exactly as the backtest does.
//!
//! Fill rules: a market order fills when it is placed, at the price the caller gives (the last
//! trade), plus slippage; under `next_open` a rebalance market order fills at the next bar's open. Exits decided at a
//! close (time, kill-switch, flatten) fill at the last close. A post-only limit rests and fills
//! when a bar that closes after it was placed trades through its price (at the open on a gap), as
//! a maker fill without slippage. A conditional (trigger) order rests and fills like the core's stop
//! machine: a stop at the open on a gap, else at its level; a take-profit at its level; taker fee and
//! slippage. Within a bar, as in the backtest: `next_open` fills, funding (priced at the last close
//! before the bar), limits, stops, take-profits, every phase in symbol order. Reduce-only orders never
//! open or flip a position. Funding events are paid once each, on the position held then.

use std::collections::BTreeMap;

use super::types::{ExchangeError, ExchangeResult, Execution, Kline, Order, OrderRequest, OrderStatus, OrderType};
use super::types::{Position, TimeInForce};
use crate::backtest::Ledger;
use crate::config::{CostsConfig, ExecutionConfig, FillPrice};
use crate::execution;
use crate::model::{Fill, FillReason, Side};
use crate::risk::{stop_hit, take_profit_hit};

#[derive(Debug, Clone)]
struct Resting {
    order: Order,
    column: usize,
    trigger: Option<f64>,
    close_fraction: Option<f64>,
    reason: FillReason,
}

#[derive(Debug, Clone)]
pub struct SimAccount {
    costs: CostsConfig,
    execution: ExecutionConfig,
    bar_ms: i64,
    /// Prefix of the exchange order ids (`replay-1`, `paper-1`, …).
    id_prefix: &'static str,
    symbols: Vec<String>,
    column: BTreeMap<String, usize>,
    ledger: Ledger,
    avg_price: Vec<f64>,
    /// Last known price per symbol (NaN before any), for valuation.
    marks: Vec<f64>,
    orders: Vec<Resting>,
    executions: Vec<Execution>,
    next_order_id: u64,
    /// Open time of the newest bar matched per symbol (each bar is matched once).
    matched_through: Vec<Option<i64>>,
    /// Time of the newest funding event paid per symbol (each event is paid once).
    funding_through: Vec<Option<i64>>,
}

impl SimAccount {
    /// An account for `symbols` (the only ones it trades) with `capital` USDT.
    pub fn new(
        symbols: &[String],
        costs: CostsConfig,
        execution: ExecutionConfig,
        bar_ms: i64,
        capital: f64,
        id_prefix: &'static str,
    ) -> Self {
        let n = symbols.len();
        Self {
            costs,
            execution,
            bar_ms,
            id_prefix,
            symbols: symbols.to_vec(),
            column: symbols.iter().enumerate().map(|(i, s)| (s.clone(), i)).collect(),
            ledger: Ledger::new(capital, n),
            avg_price: vec![0.0; n],
            marks: vec![f64::NAN; n],
            orders: Vec::new(),
            executions: Vec::new(),
            next_order_id: 1,
            matched_through: vec![None; n],
            funding_through: vec![None; n],
        }
    }

    pub fn column(&self, symbol: &str) -> ExchangeResult<usize> {
        self.column
            .get(symbol)
            .copied()
            .ok_or_else(|| ExchangeError::InvalidParams { code: 10001, message: format!("unknown symbol {symbol}") })
    }

    /// Accept an order placed at `now` (its `created_ms`). `last` is the last trade: a market order
    /// fills at it (exits decided at a close at the last close), stamped `fill_ts` — except a
    /// rebalance under `next_open`, which fills at the open of the next bar; a post-only limit that
    /// would take liquidity (through the last trade) is rejected.
    pub fn place(&mut self, request: &OrderRequest, now: i64, last: f64, fill_ts: i64) -> ExchangeResult<Order> {
        let id = &request.client_order_id;
        if self.orders.iter().any(|o| &o.order.client_order_id == id)
            || self.executions.iter().any(|e| &e.client_order_id == id)
        {
            return Err(ExchangeError::DuplicateOrder { client_order_id: id.clone() });
        }
        let column = self.column(&request.symbol)?;
        if !(request.qty > 0.0) {
            return Err(ExchangeError::InvalidParams { code: 10001, message: format!("qty {}", request.qty) });
        }
        let price = match request.order_type {
            OrderType::Market => None,
            OrderType::Limit => Some(request.price.ok_or_else(|| ExchangeError::InvalidParams {
                code: 10001,
                message: "a limit order needs a price".into(),
            })?),
        };
        // A post-only buy above the last trade (a sell below it) would take liquidity.
        if let (Some(price), TimeInForce::PostOnly) = (price, request.tif) {
            let crosses = match request.side {
                Side::Buy => price > last,
                Side::Sell => price < last,
            };
            if crosses {
                return Err(ExchangeError::OrderRejected {
                    code: 110007,
                    message: "post-only order would take liquidity".into(),
                    post_only: true,
                });
            }
        }
        let mut order = Order {
            order_id: format!("{}-{}", self.id_prefix, self.next_order_id),
            client_order_id: id.clone(),
            symbol: request.symbol.clone(),
            side: request.side,
            qty: request.qty,
            filled_qty: 0.0,
            price,
            status: OrderStatus::New,
            reduce_only: request.reduce_only,
            created_ms: now,
            reject_reason: None,
        };
        self.next_order_id += 1;
        let at_next_open = self.execution.fill == FillPrice::NextOpen && request.reason == FillReason::Rebalance;
        if price.is_none() && request.trigger_price.is_none() && !at_next_open {
            let base = if execution::exits_at_close(request.reason) { self.marks[column] } else { last };
            if !(base > 0.0) {
                return Err(ExchangeError::OrderRejected {
                    code: 110001,
                    message: format!("no price for {}", request.symbol),
                    post_only: false,
                });
            }
            self.execute(&mut order, column, base, fill_ts, request.reason, false);
            return Ok(order);
        }
        let (trigger, close_fraction) = (request.trigger_price, request.close_fraction);
        self.orders.push(Resting { order: order.clone(), column, trigger, close_fraction, reason: request.reason });
        Ok(order)
    }

    pub fn cancel(&mut self, symbol: &str, client_order_id: &str) -> ExchangeResult<()> {
        let before = self.orders.len();
        self.orders.retain(|o| !(o.order.symbol == symbol && o.order.client_order_id == client_order_id));
        if self.orders.len() == before {
            return Err(ExchangeError::NotFound { what: format!("order {client_order_id}") });
        }
        Ok(())
    }

    pub fn cancel_all(&mut self, symbol: Option<&str>) {
        self.orders.retain(|o| symbol.is_some_and(|s| s != o.order.symbol));
    }

    /// Match one symbol's bar (`paper`, which sees bars a symbol at a time).
    pub fn match_bar(&mut self, symbol: &str, bar: &Kline) {
        if let Ok(column) = self.column(symbol) {
            self.match_bars(&[(column, *bar)], &[]);
        }
    }

    /// Let bars happen (at most one per symbol, each matched once): pay `funding` events
    /// `(column, ts, rate)`, then fill resting limits, stops and take-profits, then mark the closes.
    pub fn match_bars(&mut self, bars: &[(usize, Kline)], funding: &[(usize, i64, f64)]) {
        let mut fresh: Vec<(usize, Kline)> = Vec::with_capacity(bars.len());
        for &(column, bar) in bars {
            if self.matched_through[column].is_some_and(|ts| bar.ts <= ts) {
                continue;
            }
            self.matched_through[column] = Some(bar.ts);
            fresh.push((column, bar));
        }
        fresh.sort_by_key(|(column, _)| *column);
        let bar_ms = self.bar_ms;
        // Market orders of `next_open` at the open, then (after funding) limits, stops and
        // take-profits, each phase in symbol order.
        for phase in 0..4 {
            if phase == 1 {
                for &(column, ts, rate) in funding {
                    self.pay_funding_at(column, ts, rate, self.marks[column]);
                }
            }
            for &(column, bar) in &fresh {
                let (open, high, low) = (bar.open, bar.high, bar.low);
                if !(open.is_finite() && high.is_finite() && low.is_finite()) {
                    continue;
                }
                let mut k = 0;
                while k < self.orders.len() {
                    let resting = &self.orders[k];
                    let due = resting.column == column && resting.order.created_ms < bar.ts + bar_ms;
                    let take_profit = resting.reason == FillReason::TakeProfit;
                    let kind = match (resting.order.price, resting.trigger) {
                        (None, None) => 0,
                        (Some(_), None) => 1,
                        (None, Some(_)) if !take_profit => 2,
                        _ => 3,
                    };
                    if !due || kind != phase {
                        k += 1;
                        continue;
                    }
                    let side = resting.order.side.sign();
                    let position_side = -side;
                    let fill = match (resting.order.price, resting.trigger) {
                        (None, None) => Some(open),
                        (Some(limit), None) => execution::limit_fill(side, limit, open, high, low),
                        (None, Some(level)) if !take_profit => stop_hit(position_side, level, open, high, low),
                        (None, Some(level)) => take_profit_hit(position_side, level, high, low).then_some(level),
                        _ => None,
                    };
                    let Some(price) = fill else {
                        k += 1;
                        continue;
                    };
                    let mut resting = self.orders.remove(k);
                    let limit = resting.order.price.is_some();
                    if let Some(fraction) = resting.close_fraction {
                        // As the core's exits: `−units × fraction` of the position held now.
                        let delta = -self.ledger.units[column] * fraction;
                        if delta.signum() != resting.order.side.sign() {
                            continue;
                        }
                        resting.order.qty = delta.abs();
                    }
                    self.execute(&mut resting.order, column, price, bar.ts, resting.reason, limit);
                    // Reduce-only orders left without a position to reduce are cancelled.
                    let flat = self.ledger.units[column] == 0.0;
                    self.orders.retain(|o| !(flat && o.column == column && o.order.reduce_only));
                }
            }
        }
        for &(column, bar) in &fresh {
            if bar.close.is_finite() {
                self.marks[column] = bar.close;
            }
        }
    }

    /// Pay a funding event at `ts` (once): a long pays `rate × notional` at `price`.
    pub fn pay_funding(&mut self, symbol: &str, ts: i64, rate: f64, price: f64) {
        if let Ok(column) = self.column(symbol) {
            self.pay_funding_at(column, ts, rate, price);
        }
    }

    fn pay_funding_at(&mut self, column: usize, ts: i64, rate: f64, price: f64) {
        if self.funding_through[column].is_some_and(|paid| ts <= paid) {
            return;
        }
        self.funding_through[column] = Some(ts);
        if rate != 0.0 && rate.is_finite() && price.is_finite() {
            self.ledger.pay_funding(column, price, rate);
        }
    }

    /// Record that funding before `ts` is not this account's (it did not exist yet).
    pub fn skip_funding_before(&mut self, symbol: &str, ts: i64) {
        if let Ok(column) = self.column(symbol) {
            self.funding_through[column].get_or_insert(ts - 1);
        }
    }

    pub fn mark(&mut self, symbol: &str, price: f64) {
        if let (Ok(column), true) = (self.column(symbol), price.is_finite()) {
            self.marks[column] = price;
        }
    }

    /// Last known price of `symbol` (NaN before any).
    pub fn last_price(&self, symbol: &str) -> f64 {
        self.column(symbol).map_or(f64::NAN, |column| self.marks[column])
    }

    pub fn position(&self, symbol: &str) -> f64 {
        self.column(symbol).map_or(0.0, |column| self.ledger.units[column])
    }

    /// Cash plus positions marked at their last known prices (the backtest ledger's equity).
    pub fn equity(&self) -> f64 {
        self.ledger.equity(&self.marks)
    }

    pub fn positions(&self) -> Vec<Position> {
        (0..self.symbols.len())
            .filter(|&i| self.ledger.units[i] != 0.0)
            .map(|i| Position {
                symbol: self.symbols[i].clone(),
                qty: self.ledger.units[i],
                avg_price: self.avg_price[i],
            })
            .collect()
    }

    pub fn open_orders(&self) -> Vec<Order> {
        self.orders.iter().map(|o| o.order.clone()).collect()
    }

    pub fn executions(&self) -> &[Execution] {
        &self.executions
    }

    /// Every fill in the backtest's schema (symbol = column of [`SimAccount::symbols`]).
    pub fn fills(&self) -> &[Fill] {
        &self.ledger.fills
    }

    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    /// Fill what is left of `order` at `base_price` through the ledger, with the fee and slippage of
    /// the fill model for this kind of fill; a reduce-only order is capped at the position it reduces
    /// and cancelled when there is none.
    fn execute(&mut self, order: &mut Order, column: usize, base_price: f64, ts: i64, reason: FillReason, limit: bool) {
        let mut qty = order.qty - order.filled_qty;
        let position = self.ledger.units[column];
        if order.reduce_only {
            let reducing = position != 0.0 && position.signum() != order.side.sign();
            qty = if reducing { qty.min(position.abs()) } else { 0.0 };
            if qty == 0.0 {
                order.status = OrderStatus::Cancelled;
                return;
            }
        }
        let (fee_bps, slippage_bps) = execution::fill_costs(self.execution.fill, reason, limit, &self.costs);
        let bar = ts.div_euclid(self.bar_ms.max(1)) as usize;
        let delta = order.side.sign() * qty;
        self.ledger.trade(bar, ts, column, delta, base_price, fee_bps, slippage_bps, reason);
        let fill = self.ledger.fills.last().expect("just traded").clone();
        let after = self.ledger.units[column];
        let avg = &mut self.avg_price[column];
        if position == 0.0 || position.signum() != after.signum() {
            *avg = fill.price;
        } else if after.abs() > position.abs() {
            *avg = (*avg * position.abs() + fill.price * qty) / after.abs();
        }
        self.executions.push(Execution {
            ts,
            symbol: order.symbol.clone(),
            side: order.side,
            qty,
            price: fill.price,
            fee: fill.fee,
            maker: limit,
            client_order_id: order.client_order_id.clone(),
            reason,
        });
        order.filled_qty += qty;
        order.status = OrderStatus::Filled;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FillPrice;

    fn request(id: &str, side: Side, qty: f64, price: Option<f64>, reduce_only: bool) -> OrderRequest {
        OrderRequest {
            symbol: "BTCUSDT".into(),
            side,
            qty,
            price,
            order_type: if price.is_some() { OrderType::Limit } else { OrderType::Market },
            tif: if price.is_some() { TimeInForce::PostOnly } else { TimeInForce::Ioc },
            reduce_only,
            client_order_id: id.into(),
            trigger_price: None,
            close_fraction: None,
            reason: FillReason::Rebalance,
        }
    }

    fn bar(ts: i64, open: f64, high: f64, low: f64, close: f64) -> Kline {
        Kline { ts, open, high, low, close, volume: 1.0, turnover: close }
    }

    fn account(fill: FillPrice) -> SimAccount {
        let execution = ExecutionConfig { fill, ..ExecutionConfig::default() };
        SimAccount::new(&["BTCUSDT".to_string()], CostsConfig::default(), execution, 1_000, 10_000.0, "sim")
    }

    #[test]
    fn limits_fill_when_a_later_bar_trades_through_and_each_bar_counts_once() {
        let costs = CostsConfig::default();
        let mut account = account(FillPrice::LimitTouch);
        // Placed 5 ms after the bar at 0 closed (bar length 1 000 ms).
        account.place(&request("a", Side::Buy, 2.0, Some(99.0), false), 1_005, 100.0, 0).unwrap();
        assert!(matches!(
            account.place(&request("a", Side::Buy, 1.0, Some(99.0), false), 1_005, 100.0, 0),
            Err(ExchangeError::DuplicateOrder { .. })
        ));
        assert!(matches!(
            account.place(&request("b", Side::Buy, 1.0, Some(100.5), false), 1_005, 100.0, 0),
            Err(ExchangeError::OrderRejected { post_only: true, .. })
        ));
        account.match_bar("BTCUSDT", &bar(0, 100.0, 101.0, 98.0, 100.0)); // closed before placement
        assert_eq!(account.position("BTCUSDT"), 0.0);
        account.match_bar("BTCUSDT", &bar(1_000, 100.0, 100.5, 99.5, 100.0)); // low 99.5 > 99
        assert_eq!(account.position("BTCUSDT"), 0.0);
        account.match_bar("BTCUSDT", &bar(2_000, 100.0, 100.0, 98.5, 99.0));
        assert_eq!(account.position("BTCUSDT"), 2.0);
        let maker_fee = 2.0 * 99.0 * costs.maker_fee_bps / 1e4;
        assert!((account.equity() - (10_000.0 - maker_fee)).abs() < 1e-9);
        // The same bar again (a re-fetch) changes nothing.
        account.place(&request("c", Side::Sell, 1.0, Some(99.5), false), 2_900, 99.0, 2_000).unwrap();
        account.match_bar("BTCUSDT", &bar(2_000, 100.0, 100.0, 98.5, 99.0));
        assert_eq!(account.open_orders().len(), 1);
    }

    #[test]
    fn market_orders_fill_at_once_and_reduce_only_never_flips() {
        let costs = CostsConfig::default();
        let mut account = account(FillPrice::Close);
        account.match_bar("BTCUSDT", &bar(0, 100.0, 100.0, 100.0, 100.0));
        let filled = account.place(&request("long", Side::Buy, 1.0, None, false), 1_005, 100.0, 0).unwrap();
        let price = 100.0 * (1.0 + costs.slippage_bps / 1e4);
        assert_eq!(filled.status, OrderStatus::Filled);
        assert_eq!(account.executions()[0].price, price);
        assert!((account.executions()[0].fee - price * costs.rebalance_fee_bps() / 1e4).abs() < 1e-12);
        // A reduce-only exit of 3 closes the 1 held, no more, with the taker fee; a second one is cancelled.
        let mut exit = request("exit", Side::Sell, 3.0, None, true);
        exit.reason = FillReason::Time;
        account.place(&exit, 1_010, 100.0, 0).unwrap();
        assert_eq!(account.position("BTCUSDT"), 0.0);
        let sold = &account.executions()[1];
        assert!((sold.fee - sold.price * costs.taker_fee_bps / 1e4).abs() < 1e-12);
        exit.client_order_id = "again".into();
        let again = account.place(&exit, 1_020, 100.0, 0).unwrap();
        assert_eq!(again.status, OrderStatus::Cancelled);
        assert_eq!(account.position("BTCUSDT"), 0.0);
    }

    #[test]
    fn stops_fill_like_the_core_stop_machine_and_take_profits_at_their_level() {
        let mut account = account(FillPrice::Close);
        account.match_bar("BTCUSDT", &bar(0, 100.0, 100.0, 100.0, 100.0));
        account.place(&request("long", Side::Buy, 2.0, None, false), 1_005, 100.0, 0).unwrap();
        let mut stop = request("stop", Side::Sell, 2.0, None, true);
        (stop.trigger_price, stop.reason) = (Some(95.0), FillReason::Stop);
        account.place(&stop, 1_005, 100.0, 0).unwrap();
        let mut take = request("tp", Side::Sell, 1.0, None, true);
        (take.trigger_price, take.reason) = (Some(104.0), FillReason::TakeProfit);
        account.place(&take, 1_005, 100.0, 0).unwrap();
        // Up to the take-profit: half sold at 104 less slippage.
        account.match_bar("BTCUSDT", &bar(1_000, 101.0, 104.5, 100.5, 104.0));
        assert_eq!(account.position("BTCUSDT"), 1.0);
        assert_eq!(account.executions()[1].price, 104.0 * (1.0 - 2.0 / 1e4));
        // A gap below the stop exits at the open, and nothing is left resting.
        account.match_bar("BTCUSDT", &bar(2_000, 93.0, 94.0, 92.0, 93.5));
        assert_eq!(account.position("BTCUSDT"), 0.0);
        assert_eq!(account.executions()[2].price, 93.0 * (1.0 - 2.0 / 1e4));
        assert_eq!(account.executions()[2].reason, FillReason::Stop);
        assert!(account.open_orders().is_empty());
    }

    #[test]
    fn funding_is_paid_once_per_event_and_only_from_the_accounts_start() {
        let mut account = account(FillPrice::Close);
        account.skip_funding_before("BTCUSDT", 5_000);
        account.mark("BTCUSDT", 100.0);
        account.place(&request("long", Side::Buy, 2.0, None, false), 0, 100.0, 0).unwrap();
        let before = account.equity();
        account.pay_funding("BTCUSDT", 4_000, 0.001, 100.0); // before the account existed
        account.pay_funding("BTCUSDT", 8_000, 0.001, 100.0);
        account.pay_funding("BTCUSDT", 8_000, 0.001, 100.0); // fetched again
        assert!((account.equity() - (before - 2.0 * 100.0 * 0.001)).abs() < 1e-9);
    }
}
