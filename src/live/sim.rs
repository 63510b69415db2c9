//! The simulated account and matching engine shared by `replay` and `paper` (live.md §1): one set of
//! fill rules, fees and funding, whether the bars come from a store or from Bybit's public data.
//!
//! Fill rules, bar by bar: an order is matched against the bars that close after it was placed
//! (the bar that was forming when it was placed, and later ones), each bar once. A post-only limit
//! fills at its price — or at the open when the bar opens through it — when the bar trades through
//! it (a buy when the low is below the price, a sell when the high is above), with the maker fee; a
//! market order fills at the open of the bar plus slippage, with the taker fee, unless the caller
//! fills it at once from a live last trade ([`SimAccount::fill_market_now`]). Reduce-only orders
//! never open or flip a position. Funding events are paid once each, on the position held then.

use std::collections::BTreeMap;

use super::types::{ExchangeError, ExchangeResult, Execution, Kline, Order, OrderRequest, OrderStatus, OrderType};
use super::types::{Position, Side, TimeInForce};
use crate::config::CostsConfig;

/// Half the simulated bid/ask spread around the last trade, in bps (post-only check of `replay`).
pub const HALF_SPREAD_BPS: f64 = 1.0;

#[derive(Debug, Clone)]
pub struct SimAccount {
    costs: CostsConfig,
    /// Prefix of the exchange order ids (`replay-1`, `paper-1`, …).
    id_prefix: &'static str,
    cash: f64,
    positions: BTreeMap<String, f64>,
    avg_price: BTreeMap<String, f64>,
    /// Last known price per symbol, for valuation.
    marks: BTreeMap<String, f64>,
    orders: Vec<Order>,
    executions: Vec<Execution>,
    next_order_id: u64,
    /// Open time of the newest bar matched per symbol (each bar is matched once).
    matched_through: BTreeMap<String, i64>,
    /// Time of the newest funding event paid per symbol (each event is paid once).
    funding_through: BTreeMap<String, i64>,
}

impl SimAccount {
    pub fn new(costs: CostsConfig, capital: f64, id_prefix: &'static str) -> Self {
        Self {
            costs,
            id_prefix,
            cash: capital,
            positions: BTreeMap::new(),
            avg_price: BTreeMap::new(),
            marks: BTreeMap::new(),
            orders: Vec::new(),
            executions: Vec::new(),
            next_order_id: 1,
            matched_through: BTreeMap::new(),
            funding_through: BTreeMap::new(),
        }
    }

    /// Accept an order placed at `now` (its `created_ms`). `last` is the last trade, against which a
    /// post-only limit that would take liquidity (at or through the simulated touch) is rejected.
    pub fn place(&mut self, request: &OrderRequest, now: i64, last: f64) -> ExchangeResult<Order> {
        let id = &request.client_order_id;
        if self.orders.iter().any(|o| &o.client_order_id == id)
            || self.executions.iter().any(|e| &e.client_order_id == id)
        {
            return Err(ExchangeError::DuplicateOrder { client_order_id: id.clone() });
        }
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
        if let (Some(price), TimeInForce::PostOnly) = (price, request.tif) {
            let crosses = match request.side {
                Side::Buy => price >= last * (1.0 + HALF_SPREAD_BPS / 1e4),
                Side::Sell => price <= last * (1.0 - HALF_SPREAD_BPS / 1e4),
            };
            if crosses {
                return Err(ExchangeError::OrderRejected {
                    code: 110007,
                    message: "post-only order would take liquidity".into(),
                    post_only: true,
                });
            }
        }
        let order = Order {
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
        };
        self.next_order_id += 1;
        self.orders.push(order.clone());
        Ok(order)
    }

    /// Fill a resting market order at once at `last` plus slippage (paper trading has a live last
    /// trade); returns the filled order.
    pub fn fill_market_now(&mut self, client_order_id: &str, last: f64, ts: i64) -> Option<Order> {
        let k = self.orders.iter().position(|o| o.client_order_id == client_order_id && o.price.is_none())?;
        let mut order = self.orders.remove(k);
        let price = last * (1.0 + order.side.sign() * self.costs.slippage_bps / 1e4);
        self.execute(&mut order, price, ts);
        Some(order)
    }

    pub fn cancel(&mut self, symbol: &str, client_order_id: &str) -> ExchangeResult<()> {
        let before = self.orders.len();
        self.orders.retain(|o| !(o.symbol == symbol && o.client_order_id == client_order_id));
        if self.orders.len() == before {
            return Err(ExchangeError::NotFound { what: format!("order {client_order_id}") });
        }
        Ok(())
    }

    pub fn cancel_all(&mut self, symbol: Option<&str>) {
        self.orders.retain(|o| symbol.is_some_and(|s| s != o.symbol));
    }

    /// Match `symbol`'s open orders against a bar of length `bar_ms` (skipped when it was matched
    /// before), then mark the symbol at the bar's close.
    pub fn match_bar(&mut self, symbol: &str, bar: &Kline, bar_ms: i64) {
        if self.matched_through.get(symbol).is_some_and(|&ts| bar.ts <= ts) {
            return;
        }
        self.matched_through.insert(symbol.to_string(), bar.ts);
        if bar.close.is_finite() {
            self.marks.insert(symbol.to_string(), bar.close);
        }
        let (open, high, low) = (bar.open, bar.high, bar.low);
        if !(open.is_finite() && high.is_finite() && low.is_finite()) {
            return;
        }
        let mut orders = std::mem::take(&mut self.orders);
        for order in orders.iter_mut().filter(|o| o.symbol == symbol && o.created_ms < bar.ts + bar_ms) {
            let fill_price = match (order.price, order.side) {
                (None, side) => Some(open * (1.0 + side.sign() * self.costs.slippage_bps / 1e4)),
                (Some(price), Side::Buy) if low < price => Some(price.min(open)),
                (Some(price), Side::Sell) if high > price => Some(price.max(open)),
                _ => None,
            };
            if let Some(price) = fill_price {
                self.execute(order, price, bar.ts);
            }
        }
        orders.retain(|o| o.status.is_open());
        self.orders = orders;
    }

    /// Pay a funding event at `ts` (once): a long pays `rate × notional` at `price`.
    pub fn pay_funding(&mut self, symbol: &str, ts: i64, rate: f64, price: f64) {
        if self.funding_through.get(symbol).is_some_and(|&paid| ts <= paid) {
            return;
        }
        self.funding_through.insert(symbol.to_string(), ts);
        let position = self.position(symbol);
        if position != 0.0 && rate.is_finite() && price.is_finite() {
            self.cash -= position * price * rate;
        }
    }

    /// Record that funding before `ts` is not this account's (it did not exist yet).
    pub fn skip_funding_before(&mut self, symbol: &str, ts: i64) {
        self.funding_through.entry(symbol.to_string()).or_insert(ts - 1);
    }

    pub fn mark(&mut self, symbol: &str, price: f64) {
        if price.is_finite() {
            self.marks.insert(symbol.to_string(), price);
        }
    }

    /// Last known price of `symbol` (NaN before any).
    pub fn last_price(&self, symbol: &str) -> f64 {
        self.marks.get(symbol).copied().unwrap_or(f64::NAN)
    }

    pub fn position(&self, symbol: &str) -> f64 {
        self.positions.get(symbol).copied().unwrap_or(0.0)
    }

    /// Cash plus positions marked at their last known prices.
    pub fn equity(&self) -> f64 {
        let marked: f64 = self
            .positions
            .iter()
            .filter(|(_, q)| **q != 0.0)
            .map(|(s, q)| q * self.marks.get(s).copied().unwrap_or(f64::NAN))
            .filter(|v| v.is_finite())
            .sum();
        self.cash + marked
    }

    pub fn positions(&self) -> Vec<Position> {
        self.positions
            .iter()
            .filter(|(_, q)| **q != 0.0)
            .map(|(s, q)| Position {
                symbol: s.clone(),
                qty: *q,
                avg_price: self.avg_price.get(s).copied().unwrap_or(0.0),
            })
            .collect()
    }

    pub fn open_orders(&self) -> Vec<Order> {
        self.orders.iter().filter(|o| o.status.is_open()).cloned().collect()
    }

    pub fn executions(&self) -> &[Execution] {
        &self.executions
    }

    /// Fill what is left of `order` at `price` (limits are makers, market orders takers); a
    /// reduce-only order is capped at the position it reduces and cancelled when there is none.
    fn execute(&mut self, order: &mut Order, price: f64, ts: i64) {
        let mut qty = order.qty - order.filled_qty;
        let position = self.position(&order.symbol);
        if order.reduce_only {
            let reducing = position != 0.0 && position.signum() != order.side.sign();
            qty = if reducing { qty.min(position.abs()) } else { 0.0 };
            if qty == 0.0 {
                order.status = OrderStatus::Cancelled;
                return;
            }
        }
        let maker = order.price.is_some();
        let fee_bps = if maker { self.costs.maker_fee_bps } else { self.costs.taker_fee_bps };
        let signed = order.side.sign() * qty;
        let fee = qty * price * fee_bps / 1e4;
        self.cash -= signed * price + fee;
        let after = position + signed;
        let avg = self.avg_price.entry(order.symbol.clone()).or_insert(price);
        if position == 0.0 || position.signum() != after.signum() {
            *avg = price;
        } else if after.abs() > position.abs() {
            *avg = (*avg * position.abs() + price * qty) / after.abs();
        }
        self.positions.insert(order.symbol.clone(), if after.abs() < 1e-12 { 0.0 } else { after });
        self.executions.push(Execution {
            ts,
            symbol: order.symbol.clone(),
            side: order.side,
            qty,
            price,
            fee,
            maker,
            client_order_id: order.client_order_id.clone(),
        });
        order.filled_qty += qty;
        order.status = OrderStatus::Filled;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    fn bar(ts: i64, open: f64, high: f64, low: f64, close: f64) -> Kline {
        Kline { ts, open, high, low, close, volume: 1.0, turnover: close }
    }

    #[test]
    fn limits_fill_when_a_later_bar_trades_through_and_each_bar_counts_once() {
        let costs = CostsConfig::default();
        let mut account = SimAccount::new(costs.clone(), 10_000.0, "sim");
        // Placed 5 s after the bar at 0 closed (bar length 1 000 ms).
        account.place(&request("a", Side::Buy, 2.0, Some(99.0), false), 1_005, 100.0).unwrap();
        assert!(matches!(
            account.place(&request("a", Side::Buy, 1.0, Some(99.0), false), 1_005, 100.0),
            Err(ExchangeError::DuplicateOrder { .. })
        ));
        assert!(matches!(
            account.place(&request("b", Side::Buy, 1.0, Some(100.5), false), 1_005, 100.0),
            Err(ExchangeError::OrderRejected { post_only: true, .. })
        ));
        account.match_bar("BTCUSDT", &bar(0, 100.0, 101.0, 98.0, 100.0), 1_000); // closed before placement
        assert_eq!(account.position("BTCUSDT"), 0.0);
        account.match_bar("BTCUSDT", &bar(1_000, 100.0, 100.5, 99.5, 100.0), 1_000); // low 99.5 > 99
        assert_eq!(account.position("BTCUSDT"), 0.0);
        account.match_bar("BTCUSDT", &bar(2_000, 100.0, 100.0, 98.5, 99.0), 1_000);
        assert_eq!(account.position("BTCUSDT"), 2.0);
        let maker_fee = 2.0 * 99.0 * costs.maker_fee_bps / 1e4;
        assert!((account.equity() - (10_000.0 - maker_fee)).abs() < 1e-9);
        // The same bar again (a re-fetch) changes nothing.
        account.place(&request("c", Side::Sell, 1.0, Some(99.5), false), 2_900, 99.0).unwrap();
        account.match_bar("BTCUSDT", &bar(2_000, 100.0, 100.0, 98.5, 99.0), 1_000);
        assert_eq!(account.open_orders().len(), 1);
    }

    #[test]
    fn market_orders_pay_taker_and_slippage_and_reduce_only_never_flips() {
        let costs = CostsConfig::default();
        let mut account = SimAccount::new(costs.clone(), 10_000.0, "sim");
        account.place(&request("long", Side::Buy, 1.0, None, false), 0, 100.0).unwrap();
        let filled = account.fill_market_now("long", 100.0, 0).unwrap();
        let price = 100.0 * (1.0 + costs.slippage_bps / 1e4);
        assert_eq!(filled.status, OrderStatus::Filled);
        assert_eq!(account.executions()[0].price, price);
        assert!((account.executions()[0].fee - price * costs.taker_fee_bps / 1e4).abs() < 1e-12);
        // Reduce-only sell of 3 closes the 1 held, no more; a second one is cancelled.
        account.place(&request("exit", Side::Sell, 3.0, None, true), 10, 100.0).unwrap();
        account.match_bar("BTCUSDT", &bar(0, 100.0, 100.0, 100.0, 100.0), 1_000);
        assert_eq!(account.position("BTCUSDT"), 0.0);
        account.place(&request("again", Side::Sell, 1.0, None, true), 1_010, 100.0).unwrap();
        account.match_bar("BTCUSDT", &bar(1_000, 100.0, 100.0, 100.0, 100.0), 1_000);
        assert_eq!(account.position("BTCUSDT"), 0.0);
        assert!(account.open_orders().is_empty());
    }

    #[test]
    fn funding_is_paid_once_per_event_and_only_from_the_accounts_start() {
        let mut account = SimAccount::new(CostsConfig::default(), 10_000.0, "sim");
        account.skip_funding_before("BTCUSDT", 5_000);
        account.place(&request("long", Side::Buy, 2.0, None, false), 0, 100.0).unwrap();
        account.fill_market_now("long", 100.0, 0);
        account.mark("BTCUSDT", 100.0);
        let before = account.equity();
        account.pay_funding("BTCUSDT", 4_000, 0.001, 100.0); // before the account existed
        account.pay_funding("BTCUSDT", 8_000, 0.001, 100.0);
        account.pay_funding("BTCUSDT", 8_000, 0.001, 100.0); // fetched again
        assert!((account.equity() - (before - 2.0 * 100.0 * 0.001)).abs() < 1e-9);
    }
}
