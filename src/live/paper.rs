//! `paper`: live public market data from Bybit, simulated fills as in `replay` (live.md §1).
//!
//! Market data calls go to the REST client unchanged (no keys needed). Orders rest in a simulated
//! book: a post-only limit fills when a bar closed after the order was placed trades through its
//! price (checked whenever closed bars of its symbol are fetched), a market order fills at once at
//! the last trade plus slippage; fees and funding as in backtest.md.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::exchange::Exchange;
use super::types::{
    ExchangeError, ExchangeResult, FundingRate, Instrument, Kline, Order, OrderRequest, OrderStatus, OrderType,
    Position, Quote, Side,
};
use crate::config::CostsConfig;
use crate::timeframe::Timeframe;

pub struct PaperExchange<E: Exchange> {
    market: E,
    costs: CostsConfig,
    account: Mutex<Account>,
}

#[derive(Default)]
struct Account {
    cash: f64,
    positions: BTreeMap<String, f64>,
    marks: BTreeMap<String, f64>,
    orders: Vec<Order>,
    used_ids: Vec<String>,
    next_id: u64,
}

impl Account {
    fn fill(&mut self, costs: &CostsConfig, symbol: &str, side: Side, qty: f64, price: f64, maker: bool) {
        let fee_bps = if maker { costs.maker_fee_bps } else { costs.taker_fee_bps };
        self.cash -= side.sign() * qty * price + qty * price * fee_bps / 1e4;
        let position = self.positions.entry(symbol.to_string()).or_insert(0.0);
        *position += side.sign() * qty;
        if position.abs() < 1e-12 {
            *position = 0.0;
        }
    }
}

impl<E: Exchange> PaperExchange<E> {
    pub fn new(market: E, costs: CostsConfig, capital: f64) -> Self {
        Self { market, costs, account: Mutex::new(Account { cash: capital, ..Default::default() }) }
    }

    fn account(&self) -> std::sync::MutexGuard<'_, Account> {
        self.account.lock().expect("paper account poisoned")
    }

    /// Fill resting limit orders of `symbol` that a bar after their placement traded through.
    fn match_bars(&self, symbol: &str, bars: &[Kline], interval: Timeframe) {
        let mut account = self.account();
        let mut orders = std::mem::take(&mut account.orders);
        for order in orders.iter_mut().filter(|o| o.symbol == symbol && o.status.is_open()) {
            let Some(price) = order.price else { continue };
            let traded = bars.iter().filter(|b| b.ts > order.created_ms - interval.ms).find(|b| match order.side {
                Side::Buy => b.low < price,
                Side::Sell => b.high > price,
            });
            if traded.is_some() {
                let mut qty = order.qty - order.filled_qty;
                if order.reduce_only {
                    let position = account.positions.get(symbol).copied().unwrap_or(0.0);
                    qty = if position * order.side.sign() < 0.0 { qty.min(position.abs()) } else { 0.0 };
                }
                if qty > 0.0 {
                    account.fill(&self.costs, symbol, order.side, qty, price, true);
                }
                order.filled_qty += qty;
                order.status = OrderStatus::Filled;
            }
        }
        orders.retain(|o| o.status.is_open());
        account.orders = orders;
        if let Some(last) = bars.last() {
            account.marks.insert(symbol.to_string(), last.close);
        }
    }
}

impl<E: Exchange> Exchange for PaperExchange<E> {
    async fn server_time_ms(&self) -> ExchangeResult<i64> {
        self.market.server_time_ms().await
    }

    async fn instruments(&self, symbols: &[String]) -> ExchangeResult<Vec<Instrument>> {
        self.market.instruments(symbols).await
    }

    async fn closed_klines(
        &self,
        symbol: &str,
        interval: Timeframe,
        start_ms: i64,
        end_ms: i64,
    ) -> ExchangeResult<Vec<Kline>> {
        let bars = self.market.closed_klines(symbol, interval, start_ms, end_ms).await?;
        self.match_bars(symbol, &bars, interval);
        Ok(bars)
    }

    async fn funding_history(&self, symbol: &str, start_ms: i64, end_ms: i64) -> ExchangeResult<Vec<FundingRate>> {
        let events = self.market.funding_history(symbol, start_ms, end_ms).await?;
        let now = self.market.server_time_ms().await?;
        let mut account = self.account();
        let position = account.positions.get(symbol).copied().unwrap_or(0.0);
        let mark = account.marks.get(symbol).copied().unwrap_or(f64::NAN);
        // Only events of the last hour are charged: older ones were charged when they happened.
        if position != 0.0 && mark.is_finite() {
            let paid: f64 = events.iter().filter(|e| now - e.ts < 3_600_000).map(|e| position * mark * e.rate).sum();
            account.cash -= paid;
        }
        Ok(events)
    }

    async fn quote(&self, symbol: &str) -> ExchangeResult<Quote> {
        let quote = self.market.quote(symbol).await?;
        self.account().marks.insert(symbol.to_string(), quote.last);
        Ok(quote)
    }

    async fn positions(&self) -> ExchangeResult<Vec<Position>> {
        let account = self.account();
        Ok(account
            .positions
            .iter()
            .filter(|(_, q)| **q != 0.0)
            .map(|(s, q)| Position {
                symbol: s.clone(),
                qty: *q,
                avg_price: account.marks.get(s).copied().unwrap_or(0.0),
            })
            .collect())
    }

    async fn open_orders(&self) -> ExchangeResult<Vec<Order>> {
        Ok(self.account().orders.clone())
    }

    async fn equity(&self) -> ExchangeResult<f64> {
        let account = self.account();
        let marked: f64 = account.positions.iter().map(|(s, q)| q * account.marks.get(s).copied().unwrap_or(0.0)).sum();
        Ok(account.cash + marked)
    }

    async fn place_order(&self, request: &OrderRequest) -> ExchangeResult<Order> {
        let now = self.market.server_time_ms().await?;
        let last = match request.order_type {
            OrderType::Market => Some(self.quote(&request.symbol).await?.last),
            OrderType::Limit => None,
        };
        let mut account = self.account();
        if account.used_ids.contains(&request.client_order_id) {
            return Err(ExchangeError::DuplicateOrder { client_order_id: request.client_order_id.clone() });
        }
        account.used_ids.push(request.client_order_id.clone());
        account.next_id += 1;
        let mut order = Order {
            order_id: format!("paper-{}", account.next_id),
            client_order_id: request.client_order_id.clone(),
            symbol: request.symbol.clone(),
            side: request.side,
            qty: request.qty,
            filled_qty: 0.0,
            price: request.price,
            status: OrderStatus::New,
            reduce_only: request.reduce_only,
            created_ms: now,
        };
        if let Some(last) = last {
            let price = last * (1.0 + request.side.sign() * self.costs.slippage_bps / 1e4);
            let mut qty = request.qty;
            if request.reduce_only {
                let position = account.positions.get(&request.symbol).copied().unwrap_or(0.0);
                qty = if position * request.side.sign() < 0.0 { qty.min(position.abs()) } else { 0.0 };
            }
            account.fill(&self.costs, &request.symbol, request.side, qty, price, false);
            order.filled_qty = qty;
            order.status = OrderStatus::Filled;
        } else {
            account.orders.push(order.clone());
        }
        Ok(order)
    }

    async fn cancel_order(&self, symbol: &str, client_order_id: &str) -> ExchangeResult<()> {
        let mut account = self.account();
        let before = account.orders.len();
        account.orders.retain(|o| !(o.symbol == symbol && o.client_order_id == client_order_id));
        if account.orders.len() == before {
            return Err(ExchangeError::NotFound { what: format!("order {client_order_id}") });
        }
        Ok(())
    }

    async fn cancel_all(&self, symbol: Option<&str>) -> ExchangeResult<()> {
        self.account().orders.retain(|o| symbol.is_some_and(|s| s != o.symbol));
        Ok(())
    }
}
