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
use super::sim::SimAccount;
use super::types::{
    ExchangeError, ExchangeResult, Execution, FundingRate, Instrument, Kline, Order, OrderRequest, Position, Quote,
};
use crate::config::{Config, FillPrice};
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
    fill: FillPrice,
    /// Account equity after everything of bar t happened and before bar t + 1, per bar.
    equity: Vec<(i64, f64)>,
    /// Bars `0..happened` have closed.
    happened: usize,
    account: SimAccount,
}

impl ReplayExchange {
    /// Start with the first bar closed and `backtest.initial_capital` USDT in an account that fills
    /// with `cfg`'s costs and fill model; the clock stands `live.rebalance_delay_secs` after a close.
    pub fn new(panel: Panel, funding: FundingGrid, cfg: &Config) -> Self {
        let column = panel.symbols.iter().enumerate().map(|(i, s)| (s.clone(), i)).collect();
        let account = SimAccount::new(
            &panel.symbols,
            cfg.costs.clone(),
            cfg.execution.clone(),
            panel.timeframe.ms,
            cfg.backtest.initial_capital,
            "replay",
        );
        Self {
            book: Mutex::new(Book {
                panel,
                funding,
                column,
                delay_ms: cfg.live.rebalance_delay_secs as i64 * 1000,
                fill: cfg.execution.fill,
                equity: Vec::new(),
                happened: 1,
                account,
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
        let snapshot = (book.panel.ts[t - 1], book.account.equity());
        book.equity.push(snapshot);
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

    /// Every simulated fill so far in the backtest's schema (symbols are the panel's columns).
    pub fn fills(&self) -> Vec<crate::model::Fill> {
        self.lock().account.fills().to_vec()
    }

    /// The account's equity at each bar that has closed (after the orders sent in its cycle; the
    /// newest bar as it stands now), as the backtest reports it.
    pub fn equity_path(&self) -> Vec<(i64, f64)> {
        let book = self.lock();
        let mut path = book.equity.clone();
        path.push((book.panel.ts[book.happened - 1], book.account.equity()));
        path
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
            volume: p.quote_volume[[t, i]] / p.close[[t, i]],
            turnover: p.quote_volume[[t, i]],
        }
    }

    /// Bar t happens: the simulated account pays its funding events and matches its orders against it.
    fn match_bar(&mut self, t: usize) {
        let n = self.panel.n_symbols();
        let bars: Vec<(usize, Kline)> = (0..n).map(|i| (i, self.kline(t, i))).collect();
        let funding: Vec<(usize, i64, f64)> = (0..n)
            .filter(|&i| self.funding.event(t, i))
            .map(|i| (i, self.panel.ts[t], self.funding.rate(t, i)))
            .collect();
        self.account.match_bars(&bars, &funding);
    }

    /// The last trade as the fill model sees it: the newest close (`close`, `limit_touch`), or the
    /// open of the bar that is forming (`next_open`, whose orders fill there); NaN when there is none.
    fn trade_price(&self, i: usize) -> f64 {
        match self.fill {
            FillPrice::NextOpen => match self.happened < self.panel.n_bars() {
                true => self.panel.open[[self.happened, i]],
                false => f64::NAN,
            },
            FillPrice::Close | FillPrice::LimitTouch => self.last_close(i),
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
                // No lot or tick rounding and no minimum: replay trades exactly the backtest's sizes.
                Ok(Instrument {
                    symbol: s.clone(),
                    lot_size: 0.0,
                    min_qty: 0.0,
                    max_qty: f64::INFINITY,
                    tick_size: 0.0,
                    min_notional: 0.0,
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

    /// The mark closes of the replayed panel (when it has them) as bars with open = high = low = close.
    async fn closed_mark_klines(
        &self,
        symbol: &str,
        interval: Timeframe,
        start_ms: i64,
        end_ms: i64,
    ) -> ExchangeResult<Vec<Kline>> {
        let book = self.lock();
        let (i, p) = (book.column(symbol)?, &book.panel);
        let Some(mark) = p.mark_close.as_ref().filter(|_| interval == book.timeframe()) else { return Ok(Vec::new()) };
        Ok((0..book.happened)
            .filter(|&t| p.ts[t] >= start_ms && p.ts[t] < end_ms && mark[[t, i]].is_finite())
            .map(|t| {
                let c = mark[[t, i]];
                Kline { ts: p.ts[t], open: c, high: c, low: c, close: c, volume: f64::NAN, turnover: f64::NAN }
            })
            .collect())
    }

    async fn funding_history(&self, symbol: &str, start_ms: i64, end_ms: i64) -> ExchangeResult<Vec<FundingRate>> {
        let book = self.lock();
        let i = book.column(symbol)?;
        let p = &book.panel;
        Ok((0..book.happened)
            .filter(|&t| book.funding.event(t, i) && p.ts[t] >= start_ms && p.ts[t] < end_ms)
            .map(|t| FundingRate { ts: p.ts[t], rate: book.funding.rate(t, i) })
            .collect())
    }

    async fn quote(&self, symbol: &str) -> ExchangeResult<Quote> {
        let book = self.lock();
        // Bars carry no book: the touch is the last trade (a zero spread).
        let last = book.trade_price(book.column(symbol)?);
        Ok(Quote { bid: last, ask: last, last, ts: book.now() })
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
        let (now, last, newest) = (book.now(), book.trade_price(i), book.panel.ts[book.happened - 1]);
        book.account.place(request, now, last, newest)
    }

    async fn cancel_order(&self, symbol: &str, client_order_id: &str) -> ExchangeResult<()> {
        self.lock().account.cancel(symbol, client_order_id)
    }

    async fn cancel_all(&self, symbol: Option<&str>) -> ExchangeResult<()> {
        self.lock().account.cancel_all(symbol);
        Ok(())
    }

    fn resting_stops(&self) -> bool {
        true
    }
}
