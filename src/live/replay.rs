//! `replay`: a bar store played as if it were live, with a simulated matching engine (live.md §1).
//!
//! The clock stands `delay` after the close of the newest bar that has "happened"; [`ReplayExchange::advance`]
//! lets the next bar happen. Matching, bar by bar: a post-only limit order fills at its price when
//! a later bar trades through it (a buy when the bar's low is below the price, a sell when its high
//! is above), with the maker fee; a market order fills at the next bar's open plus slippage, with
//! the taker fee. Funding is paid on positions at the bars where the store has a funding event.
//! Deterministic and offline: the basis of the runner's tests and of backtest/live parity.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::exchange::Exchange;
use super::types::{
    ExchangeError, ExchangeResult, Execution, FundingRate, Instrument, Kline, Order, OrderRequest, OrderStatus,
    OrderType, Position, Quote, Side, TimeInForce,
};
use crate::config::CostsConfig;
use crate::data::{FundingGrid, Panel};
use crate::timeframe::Timeframe;

/// Half the simulated bid/ask spread around the last close, in bps.
const HALF_SPREAD_BPS: f64 = 1.0;

pub struct ReplayExchange {
    book: Mutex<Book>,
}

struct Book {
    panel: Panel,
    funding: FundingGrid,
    column: BTreeMap<String, usize>,
    costs: CostsConfig,
    delay_ms: i64,
    /// Bars `0..happened` have closed.
    happened: usize,
    cash: f64,
    positions: Vec<f64>,
    avg_price: Vec<f64>,
    orders: Vec<Order>,
    executions: Vec<Execution>,
    next_order_id: u64,
}

impl ReplayExchange {
    /// Start with the first bar closed and `capital` USDT in the account.
    pub fn new(panel: Panel, funding: FundingGrid, costs: CostsConfig, capital: f64, delay_ms: i64) -> Self {
        let n = panel.n_symbols();
        let column = panel.symbols.iter().enumerate().map(|(i, s)| (s.clone(), i)).collect();
        Self {
            book: Mutex::new(Book {
                panel,
                funding,
                column,
                costs,
                delay_ms,
                happened: 1,
                cash: capital,
                positions: vec![0.0; n],
                avg_price: vec![0.0; n],
                orders: Vec::new(),
                executions: Vec::new(),
                next_order_id: 1,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().expect("replay book poisoned")
    }

    pub fn symbols(&self) -> Vec<String> {
        self.lock().panel.symbols.clone()
    }

    pub fn first_bar_ts(&self) -> i64 {
        self.lock().panel.ts[0]
    }

    /// Let the next bar happen: match open orders against it, pay funding. False when the bars
    /// are exhausted.
    pub fn advance(&self) -> bool {
        let mut book = self.lock();
        if book.happened >= book.panel.n_bars() {
            return false;
        }
        let t = book.happened;
        book.match_bar(t);
        book.happened += 1;
        true
    }

    /// Let bars happen until the newest closed bar opened at or after `ts` (a restarted replay).
    pub fn advance_to(&self, ts: i64) {
        loop {
            let newest = {
                let book = self.lock();
                book.panel.ts[book.happened - 1]
            };
            if newest >= ts || !self.advance() {
                return;
            }
        }
    }

    /// Every simulated fill so far.
    pub fn executions(&self) -> Vec<Execution> {
        self.lock().executions.clone()
    }

    /// Equity marked at the close of the newest bar.
    pub fn equity_now(&self) -> f64 {
        self.lock().equity()
    }
}

impl Book {
    fn timeframe(&self) -> Timeframe {
        self.panel.timeframe
    }

    fn now(&self) -> i64 {
        self.panel.ts[self.happened - 1] + self.timeframe().ms + self.delay_ms
    }

    fn column(&self, symbol: &str) -> ExchangeResult<usize> {
        self.column
            .get(symbol)
            .copied()
            .ok_or_else(|| ExchangeError::InvalidParams { code: 10001, message: format!("unknown symbol {symbol}") })
    }

    /// Last valid close at or before the newest closed bar.
    fn last_close(&self, i: usize) -> f64 {
        (0..self.happened).rev().map(|t| self.panel.close[[t, i]]).find(|c| c.is_finite()).unwrap_or(f64::NAN)
    }

    fn equity(&self) -> f64 {
        let marked: f64 = self
            .positions
            .iter()
            .enumerate()
            .filter(|(_, q)| **q != 0.0)
            .map(|(i, q)| q * self.last_close(i))
            .filter(|v| v.is_finite())
            .sum();
        self.cash + marked
    }

    /// Fill `qty` of `order` at `price` during bar t (limit orders are makers, market orders takers).
    fn fill(&mut self, t: usize, i: usize, order: &Order, qty: f64, price: f64) {
        let (side, maker, client_order_id) = (order.side, order.price.is_some(), &order.client_order_id);
        let fee_bps = if maker { self.costs.maker_fee_bps } else { self.costs.taker_fee_bps };
        let signed = side.sign() * qty;
        let fee = qty * price * fee_bps / 1e4;
        self.cash -= signed * price + fee;
        let before = self.positions[i];
        let after = before + signed;
        if before == 0.0 || before.signum() != after.signum() {
            self.avg_price[i] = price;
        } else if after.abs() > before.abs() {
            self.avg_price[i] = (self.avg_price[i] * before.abs() + price * qty) / after.abs();
        }
        self.positions[i] = if after.abs() < 1e-12 { 0.0 } else { after };
        self.executions.push(Execution {
            ts: self.panel.ts[t],
            symbol: self.panel.symbols[i].clone(),
            side,
            qty,
            price,
            fee,
            maker,
            client_order_id: client_order_id.to_string(),
        });
    }

    fn match_bar(&mut self, t: usize) {
        let mut orders = std::mem::take(&mut self.orders);
        for order in orders.iter_mut().filter(|o| o.status.is_open()) {
            let i = self.column[&order.symbol];
            let (open, high, low) = (self.panel.open[[t, i]], self.panel.high[[t, i]], self.panel.low[[t, i]]);
            if !(open.is_finite() && high.is_finite() && low.is_finite()) {
                continue;
            }
            let remaining = order.qty - order.filled_qty;
            let mut qty = remaining;
            if order.reduce_only {
                let position = self.positions[i];
                let reducing = position != 0.0 && position.signum() != order.side.sign();
                qty = if reducing { qty.min(position.abs()) } else { 0.0 };
                if qty == 0.0 {
                    order.status = OrderStatus::Cancelled;
                    continue;
                }
            }
            let fill_price = match (order.price, order.side) {
                (None, side) => Some(open * (1.0 + side.sign() * self.costs.slippage_bps / 1e4)),
                (Some(price), Side::Buy) if low < price => Some(price.min(open)),
                (Some(price), Side::Sell) if high > price => Some(price.max(open)),
                _ => None,
            };
            if let Some(price) = fill_price {
                self.fill(t, i, order, qty, price);
                order.filled_qty += qty;
                order.status = OrderStatus::Filled;
            }
        }
        orders.retain(|o| o.status.is_open());
        self.orders = orders;
        for i in 0..self.positions.len() {
            let rate = self.funding.rates[[t, i]];
            if rate != 0.0 && self.positions[i] != 0.0 {
                let price = self.panel.close[[t, i]];
                let price = if price.is_finite() { price } else { self.last_close(i) };
                // A long pays a positive rate on its notional.
                self.cash -= self.positions[i] * price * rate;
            }
        }
    }
}

impl Exchange for ReplayExchange {
    async fn server_time_ms(&self) -> ExchangeResult<i64> {
        Ok(self.lock().now())
    }

    async fn instruments(&self, symbols: &[String]) -> ExchangeResult<Vec<Instrument>> {
        let book = self.lock();
        symbols
            .iter()
            .map(|s| {
                book.column(s)?;
                // Fine lots so that replay sizes follow the model closely.
                Ok(Instrument {
                    symbol: s.clone(),
                    lot_size: 1e-6,
                    min_qty: 1e-6,
                    max_qty: 1e12,
                    tick_size: 1e-8,
                    min_notional: 1.0,
                })
            })
            .collect()
    }

    async fn closed_klines(
        &self,
        symbol: &str,
        interval: Timeframe,
        start_ms: i64,
        end_ms: i64,
    ) -> ExchangeResult<Vec<Kline>> {
        let book = self.lock();
        if interval != book.timeframe() {
            return Err(ExchangeError::InvalidParams {
                code: 10001,
                message: format!("replay has {} bars, not {}", book.timeframe().label(), interval.label()),
            });
        }
        let i = book.column(symbol)?;
        let p = &book.panel;
        Ok((0..book.happened)
            .filter(|&t| p.ts[t] >= start_ms && p.ts[t] < end_ms && p.close[[t, i]].is_finite())
            .map(|t| Kline {
                ts: p.ts[t],
                open: p.open[[t, i]],
                high: p.high[[t, i]],
                low: p.low[[t, i]],
                close: p.close[[t, i]],
                volume: p.volume[[t, i]],
                turnover: p.quote_volume[[t, i]],
            })
            .collect())
    }

    async fn funding_history(&self, symbol: &str, start_ms: i64, end_ms: i64) -> ExchangeResult<Vec<FundingRate>> {
        let book = self.lock();
        let i = book.column(symbol)?;
        let p = &book.panel;
        Ok((0..book.happened)
            .filter(|&t| book.funding.events[[t, i]] && p.ts[t] >= start_ms && p.ts[t] < end_ms)
            .map(|t| FundingRate { ts: p.ts[t], rate: book.funding.rates[[t, i]] })
            .collect())
    }

    async fn quote(&self, symbol: &str) -> ExchangeResult<Quote> {
        let book = self.lock();
        let last = book.last_close(book.column(symbol)?);
        let half = last * HALF_SPREAD_BPS / 1e4;
        Ok(Quote { bid: last - half, ask: last + half, last, ts: book.now() })
    }

    async fn positions(&self) -> ExchangeResult<Vec<Position>> {
        let book = self.lock();
        Ok(book
            .positions
            .iter()
            .enumerate()
            .filter(|(_, q)| **q != 0.0)
            .map(|(i, q)| Position { symbol: book.panel.symbols[i].clone(), qty: *q, avg_price: book.avg_price[i] })
            .collect())
    }

    async fn open_orders(&self) -> ExchangeResult<Vec<Order>> {
        Ok(self.lock().orders.iter().filter(|o| o.status.is_open()).cloned().collect())
    }

    async fn equity(&self) -> ExchangeResult<f64> {
        Ok(self.lock().equity())
    }

    async fn place_order(&self, request: &OrderRequest) -> ExchangeResult<Order> {
        let mut book = self.lock();
        let i = book.column(&request.symbol)?;
        if book.orders.iter().any(|o| o.client_order_id == request.client_order_id)
            || book.executions.iter().any(|e| e.client_order_id == request.client_order_id)
        {
            return Err(ExchangeError::DuplicateOrder { client_order_id: request.client_order_id.clone() });
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
            let last = book.last_close(i);
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
            order_id: format!("replay-{}", book.next_order_id),
            client_order_id: request.client_order_id.clone(),
            symbol: request.symbol.clone(),
            side: request.side,
            qty: request.qty,
            filled_qty: 0.0,
            price,
            status: OrderStatus::New,
            reduce_only: request.reduce_only,
            created_ms: book.now(),
        };
        book.next_order_id += 1;
        book.orders.push(order.clone());
        Ok(order)
    }

    async fn cancel_order(&self, symbol: &str, client_order_id: &str) -> ExchangeResult<()> {
        let mut book = self.lock();
        let before = book.orders.len();
        book.orders.retain(|o| !(o.symbol == symbol && o.client_order_id == client_order_id));
        if book.orders.len() == before {
            return Err(ExchangeError::NotFound { what: format!("order {client_order_id}") });
        }
        Ok(())
    }

    async fn cancel_all(&self, symbol: Option<&str>) -> ExchangeResult<()> {
        let mut book = self.lock();
        book.orders.retain(|o| symbol.is_some_and(|s| s != o.symbol));
        Ok(())
    }
}
