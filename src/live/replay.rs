//! `replay`: a bar store played as if it were live, with a simulated matching engine (live.md §1).
//!
//! The clock stands `delay` after the close of the newest bar that has "happened"; [`ReplayExchange::advance`]
//! lets the next bar happen, which the simulated account ([`super::sim::SimAccount`], shared with
//! `paper`) matches: post-only limits fill when a later bar trades through them (maker fee), market
//! orders at the next bar's open plus slippage (taker fee); funding is paid at the store's events.
//! Deterministic and offline: the basis of the runner's tests and of backtest/live parity.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::exchange::Exchange;
use super::sim::{SimAccount, HALF_SPREAD_BPS};
use super::types::{
    ExchangeError, ExchangeResult, Execution, FundingRate, Instrument, Kline, Order, OrderRequest, Position, Quote,
};
use crate::config::CostsConfig;
use crate::data::{FundingGrid, Panel};
use crate::timeframe::Timeframe;

pub struct ReplayExchange {
    book: Mutex<Book>,
}

struct Book {
    panel: Panel,
    funding: FundingGrid,
    column: BTreeMap<String, usize>,
    delay_ms: i64,
    /// Bars `0..happened` have closed.
    happened: usize,
    account: SimAccount,
}

impl ReplayExchange {
    /// Start with the first bar closed and `capital` USDT in the account.
    pub fn new(panel: Panel, funding: FundingGrid, costs: CostsConfig, capital: f64, delay_ms: i64) -> Self {
        let column = panel.symbols.iter().enumerate().map(|(i, s)| (s.clone(), i)).collect();
        Self {
            book: Mutex::new(Book {
                panel,
                funding,
                column,
                delay_ms,
                happened: 1,
                account: SimAccount::new(costs, capital, "replay"),
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
        self.lock().account.executions().to_vec()
    }

    /// Equity marked at the close of the newest bar.
    pub fn equity_now(&self) -> f64 {
        self.lock().account.equity()
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

    fn kline(&self, t: usize, i: usize) -> Kline {
        let p = &self.panel;
        Kline {
            ts: p.ts[t],
            open: p.open[[t, i]],
            high: p.high[[t, i]],
            low: p.low[[t, i]],
            close: p.close[[t, i]],
            volume: p.volume[[t, i]],
            turnover: p.quote_volume[[t, i]],
        }
    }

    /// Bar t happens: the simulated account matches it, then pays its funding events.
    fn match_bar(&mut self, t: usize) {
        let bar_ms = self.timeframe().ms;
        for i in 0..self.panel.n_symbols() {
            let bar = self.kline(t, i);
            let symbol = &self.panel.symbols[i];
            self.account.match_bar(symbol, &bar, bar_ms);
            if self.funding.events[[t, i]] {
                let price = if bar.close.is_finite() { bar.close } else { self.last_close(i) };
                self.account.pay_funding(symbol, bar.ts, self.funding.rates[[t, i]], price);
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
            .map(|t| book.kline(t, i))
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
        Ok(self.lock().account.positions())
    }

    async fn open_orders(&self) -> ExchangeResult<Vec<Order>> {
        Ok(self.lock().account.open_orders())
    }

    async fn equity(&self) -> ExchangeResult<f64> {
        Ok(self.lock().account.equity())
    }

    async fn place_order(&self, request: &OrderRequest) -> ExchangeResult<Order> {
        let mut book = self.lock();
        let i = book.column(&request.symbol)?;
        let (now, last) = (book.now(), book.last_close(i));
        book.account.place(request, now, last)
    }

    async fn cancel_order(&self, symbol: &str, client_order_id: &str) -> ExchangeResult<()> {
        self.lock().account.cancel(symbol, client_order_id)
    }

    async fn cancel_all(&self, symbol: Option<&str>) -> ExchangeResult<()> {
        self.lock().account.cancel_all(symbol);
        Ok(())
    }
}
