//! `paper`: live public market data from Bybit, simulated fills as in `replay` (live.md §1).
//!
//! Market data calls go to the REST client unchanged (no keys needed). Orders rest in the simulated
//! account shared with `replay` ([`super::sim::SimAccount`]): a post-only limit fills when a bar that
//! closed after it was placed trades through its price (checked whenever closed bars of its symbol
//! are fetched — the runner fetches every bar once a cycle), a market order fills at once at the last
//! trade plus slippage; fees and funding as in backtest.md, each funding event paid once.

use std::sync::Mutex;

use super::exchange::Exchange;
use super::sim::SimAccount;
use super::types::{ExchangeResult, FundingRate, Instrument, Kline, Order, OrderRequest, Position, Quote};
use crate::config::Config;
use crate::timeframe::Timeframe;

pub struct PaperExchange<E: Exchange> {
    market: E,
    account: Mutex<SimAccount>,
    /// Exchange time of the first call: funding before it is not this account's.
    started_ms: Mutex<Option<i64>>,
}

impl<E: Exchange> PaperExchange<E> {
    /// A paper account for `symbols` with `cfg`'s costs, fill model and initial capital.
    pub fn new(market: E, symbols: &[String], cfg: &Config) -> Self {
        let account = SimAccount::new(
            symbols,
            cfg.costs.clone(),
            cfg.execution.clone(),
            cfg.timeframe().ms,
            cfg.backtest.initial_capital,
            "paper",
        );
        Self { market, account: Mutex::new(account), started_ms: Mutex::new(None) }
    }

    fn account(&self) -> std::sync::MutexGuard<'_, SimAccount> {
        self.account.lock().expect("paper account poisoned")
    }
}

impl<E: Exchange> Exchange for PaperExchange<E> {
    async fn server_time_ms(&self) -> ExchangeResult<i64> {
        let now = self.market.server_time_ms().await?;
        self.started_ms.lock().expect("paper clock poisoned").get_or_insert(now);
        Ok(now)
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
        let mut account = self.account();
        for bar in &bars {
            account.match_bar(symbol, bar);
        }
        Ok(bars)
    }

    async fn closed_mark_klines(
        &self,
        symbol: &str,
        interval: Timeframe,
        start_ms: i64,
        end_ms: i64,
    ) -> ExchangeResult<Vec<Kline>> {
        self.market.closed_mark_klines(symbol, interval, start_ms, end_ms).await
    }

    async fn funding_history(&self, symbol: &str, start_ms: i64, end_ms: i64) -> ExchangeResult<Vec<FundingRate>> {
        let events = self.market.funding_history(symbol, start_ms, end_ms).await?;
        let started = *self.started_ms.lock().expect("paper clock poisoned");
        let mut account = self.account();
        if let Some(started) = started {
            account.skip_funding_before(symbol, started);
        }
        let mark = account.last_price(symbol);
        for event in &events {
            account.pay_funding(symbol, event.ts, event.rate, mark);
        }
        Ok(events)
    }

    async fn quote(&self, symbol: &str) -> ExchangeResult<Quote> {
        let quote = self.market.quote(symbol).await?;
        self.account().mark(symbol, quote.last);
        Ok(quote)
    }

    async fn positions(&self) -> ExchangeResult<Vec<Position>> {
        Ok(self.account().positions())
    }

    async fn open_orders(&self) -> ExchangeResult<Vec<Order>> {
        Ok(self.account().open_orders())
    }

    async fn equity(&self) -> ExchangeResult<f64> {
        Ok(self.account().equity())
    }

    async fn place_order(&self, request: &OrderRequest) -> ExchangeResult<Order> {
        let now = self.market.server_time_ms().await?;
        let last = self.quote(&request.symbol).await?.last;
        self.account().place(request, now, last, now)
    }

    async fn cancel_order(&self, symbol: &str, client_order_id: &str) -> ExchangeResult<()> {
        self.account().cancel(symbol, client_order_id)
    }

    async fn cancel_all(&self, symbol: Option<&str>) -> ExchangeResult<()> {
        self.account().cancel_all(symbol);
        Ok(())
    }
}
