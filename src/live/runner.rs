//! The main cycle and the risk loop (live.md §2–3) over any [`Exchange`].
//!
//! The model is the backtester's [`Engine`], stepped once per closed bar with exactly the bars the
//! backtest would see; its target weights are what the account is steered to. The model keeps its
//! own book (as in a backtest, filled at the close), so its path-dependent state (stops, cooldowns,
//! scoring, its kill-switch) is a function of the bars and the config alone: a restart rebuilds it
//! by stepping the stored history again. The account side is reconciled every cycle: the exchange
//! is the source of truth for positions and orders.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::exchange::Exchange;
use super::plan::{self, PlanInputs, SymbolBook};
use super::state::{LiveState, StopSnapshot, SymbolState};
use super::types::{ExchangeError, Instrument, OrderRequest, OrderType, Side, TimeInForce};
use crate::backtest::{BacktestResult, BarRow, Engine};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::risk::{KillSwitch, KillSwitchSnapshot};
use crate::timeframe::Timeframe;

/// How a runner is started.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    pub mode: String,
    pub state_path: PathBuf,
    pub heartbeat_path: PathBuf,
    /// First bar of the model; `None`: `live.warmup_bars` before the newest closed bar.
    pub start_ts: Option<i64>,
    pub reset_state: bool,
}

/// What one cycle did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CycleReport {
    pub bars_stepped: usize,
    pub last_bar_ts: Option<i64>,
    pub orders_placed: Vec<String>,
    pub orders_cancelled: Vec<String>,
    pub skipped: Vec<(String, plan::Skip)>,
    pub equity: Option<f64>,
    pub kill_switch: bool,
    pub breaker_open: bool,
}

/// Closed bars of the universe on the runner's time grid.
struct Rows {
    ts: Vec<i64>,
    open: Vec<f64>,
    high: Vec<f64>,
    low: Vec<f64>,
    close: Vec<f64>,
    quote_volume: Vec<f64>,
    funding_rate: Vec<f64>,
    funding_event: Vec<bool>,
}

impl Rows {
    fn row(&self, k: usize, n: usize) -> BarRow<'_> {
        let r = k * n..(k + 1) * n;
        BarRow {
            ts: self.ts[k],
            open: &self.open[r.clone()],
            high: &self.high[r.clone()],
            low: &self.low[r.clone()],
            close: &self.close[r.clone()],
            quote_volume: &self.quote_volume[r.clone()],
            funding_rate: &self.funding_rate[r.clone()],
            funding_event: &self.funding_event[r],
        }
    }
}

/// API circuit breaker (live.md §3): `max_errors` in `window_secs` pause new risk for `cooldown_secs`.
fn breaker_open(state: &LiveState, now_ms: i64) -> bool {
    state.breaker_paused_until_ms.is_some_and(|until| now_ms < until)
}

pub struct Runner<E: Exchange> {
    exchange: E,
    cfg: Config,
    config_version: String,
    symbols: Vec<String>,
    timeframe: Timeframe,
    engine: Engine,
    instruments: BTreeMap<String, Instrument>,
    state: LiveState,
    opts: RunnerOptions,
    account_kill: KillSwitch,
    /// `(bar ts, account equity)` after each reconciled cycle.
    pub equity_history: Vec<(i64, f64)>,
    /// After a restart: whether the rebuilt model matched the saved per-symbol state.
    rebuilt_matches: Option<bool>,
    /// The last reconciliation failed: retry it at the next cycle, not only at the next bar.
    reconcile_pending: bool,
}

impl<E: Exchange> Runner<E> {
    /// Load (or create) the state, rebuild the model up to the last processed bar, load instruments.
    pub async fn start(
        exchange: E,
        cfg: Config,
        config_text: &str,
        symbols: Vec<String>,
        opts: RunnerOptions,
    ) -> Result<Self> {
        cfg.validate()?;
        if symbols.is_empty() {
            return Err(Error::config("live: no symbols to trade (set universe.include)"));
        }
        let timeframe = cfg.timeframe();
        let config_version = config_version(config_text);
        let loaded = if opts.reset_state { None } else { LiveState::load(&opts.state_path)? };
        let engine = Engine::new(&symbols, timeframe, &vec![true; symbols.len()], &cfg, false)?;
        let account_kill = match loaded.as_ref().and_then(|s| s.kill_switch.as_ref()) {
            Some(snapshot) => KillSwitch::restore(&cfg.risk.kill_switch, snapshot),
            None => KillSwitch::new(&cfg.risk.kill_switch),
        };
        let instruments = exchange
            .instruments(&symbols)
            .await
            .map_err(|err| exchange_error("instruments", err))?
            .into_iter()
            .map(|i| (i.symbol.clone(), i))
            .collect();
        let state = loaded.clone().unwrap_or_else(|| LiveState::new(&config_version, &opts.mode));
        let mut runner = Runner {
            exchange,
            cfg,
            config_version,
            symbols,
            timeframe,
            engine,
            instruments,
            state,
            opts,
            account_kill,
            equity_history: Vec::new(),
            rebuilt_matches: None,
            reconcile_pending: false,
        };
        if let Some(previous) = loaded {
            runner.rebuild_model(&previous).await?;
        }
        Ok(runner)
    }

    pub fn exchange(&self) -> &E {
        &self.exchange
    }

    /// Give the exchange back (a test "crashes" a runner and starts another on the same account).
    pub fn into_exchange(self) -> E {
        self.exchange
    }

    /// After a restart: did the model rebuilt from the bars match the saved state? (`None`: fresh start.)
    pub fn rebuilt_matches_state(&self) -> Option<bool> {
        self.rebuilt_matches
    }

    pub fn state(&self) -> &LiveState {
        &self.state
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The model's outputs so far (target weights per bar, as the backtester writes them).
    pub fn finish(self) -> BacktestResult {
        self.engine.finish()
    }

    /// Step the model over the bars it had processed before the restart (no orders), then check
    /// that it ends where the saved state says.
    async fn rebuild_model(&mut self, previous: &LiveState) -> Result<()> {
        let (Some(start), Some(last)) = (previous.model_start_ts, previous.last_bar_ts) else {
            return Ok(());
        };
        let rows = self.fetch_rows(start, last + self.timeframe.ms).await?;
        for k in 0..rows.ts.len() {
            self.engine.step(&rows.row(k, self.symbols.len()));
        }
        // Compared as JSON: NaN-free and exactly what was saved.
        let rebuilt = self.symbol_states();
        self.rebuilt_matches = Some(true);
        for (symbol, saved) in &previous.symbols {
            let now = rebuilt.get(symbol).map(|s| serde_json::to_value(s).expect("serialises"));
            if now.as_ref() != Some(&serde_json::to_value(saved).expect("serialises")) {
                self.rebuilt_matches = Some(false);
                tracing::warn!(
                    %symbol,
                    saved = %serde_json::to_string(saved).unwrap_or_default(),
                    rebuilt = %now.map(|v| v.to_string()).unwrap_or_default(),
                    "the rebuilt model differs from the saved state (bars revised?); the rebuilt one is used"
                );
            }
        }
        Ok(())
    }

    /// Closed bars `[start, end)` of every symbol on the grid, with funding aligned to the bar in
    /// which each event falls (as `Panel::align_funding` does).
    async fn fetch_rows(&self, start: i64, end: i64) -> Result<Rows> {
        let n = self.symbols.len();
        let step = self.timeframe.ms;
        let n_rows = ((end - start).max(0) / step) as usize;
        let mut rows = Rows {
            ts: (0..n_rows as i64).map(|k| start + k * step).collect(),
            open: vec![f64::NAN; n_rows * n],
            high: vec![f64::NAN; n_rows * n],
            low: vec![f64::NAN; n_rows * n],
            close: vec![f64::NAN; n_rows * n],
            quote_volume: vec![f64::NAN; n_rows * n],
            funding_rate: vec![0.0; n_rows * n],
            funding_event: vec![false; n_rows * n],
        };
        if n_rows == 0 {
            return Ok(rows);
        }
        for (i, symbol) in self.symbols.iter().enumerate() {
            let klines = self
                .exchange
                .closed_klines(symbol, self.timeframe, start, end)
                .await
                .map_err(|err| exchange_error(&format!("klines {symbol}"), err))?;
            for bar in klines {
                let offset = bar.ts - start;
                if offset < 0 || offset % step != 0 || bar.ts >= end {
                    continue;
                }
                let cell = (offset / step) as usize * n + i;
                rows.open[cell] = bar.open;
                rows.high[cell] = bar.high;
                rows.low[cell] = bar.low;
                rows.close[cell] = bar.close;
                rows.quote_volume[cell] = bar.turnover;
            }
            let funding = self
                .exchange
                .funding_history(symbol, start, end)
                .await
                .map_err(|err| exchange_error(&format!("funding {symbol}"), err))?;
            for event in funding {
                let offset = event.ts - start;
                if offset < 0 || event.ts >= end || !event.rate.is_finite() {
                    continue;
                }
                let cell = (offset / step) as usize * n + i;
                rows.funding_rate[cell] += event.rate;
                rows.funding_event[cell] = true;
            }
        }
        Ok(rows)
    }

    /// One main cycle: step the model over every newly closed bar, then steer the account to the
    /// targets of the newest one, persist the state and write the heartbeat.
    pub async fn cycle(&mut self) -> Result<CycleReport> {
        let mut report = CycleReport::default();
        let now = self.exchange.server_time_ms().await.map_err(|err| exchange_error("server time", err))?;
        let step = self.timeframe.ms;
        // Newest bar whose close time is ≤ now − rebalance delay: never the forming bar, and the
        // exchange has had a moment to publish the closed one.
        let delay = self.cfg.live.rebalance_delay_secs as i64 * 1000;
        let newest_open = (now - delay).div_euclid(step) * step - step;
        let start = match self.state.last_bar_ts {
            Some(last) => last + step,
            None => {
                let start = self.opts.start_ts.unwrap_or(newest_open - (self.cfg.live.warmup_bars as i64 - 1) * step);
                self.state.model_start_ts = Some(start);
                start
            }
        };
        if start <= newest_open {
            let rows = self.fetch_rows(start, newest_open + step).await?;
            for k in 0..rows.ts.len() {
                self.engine.step(&rows.row(k, self.symbols.len()));
            }
            report.bars_stepped = rows.ts.len();
            self.state.last_bar_ts = Some(newest_open);
            self.state.order_attempts.clear();
            self.state.stop_exits.clear();
            self.reconcile_pending = true;
        }
        report.last_bar_ts = self.state.last_bar_ts;
        if let (false, Some(bar_ts)) = (self.reconcile_pending, self.state.last_bar_ts) {
            // Between bars: replace this bar's orders that went stale (too old or too far from the touch).
            match self.cancel_stale_orders(bar_ts, now, &mut report).await {
                Ok(cancelled) => self.reconcile_pending = cancelled > 0,
                Err(err) => {
                    self.record_error(now, &err);
                    tracing::error!(error = %err, "stale-order check failed; retried next cycle");
                }
            }
        }
        if let (true, Some(bar_ts)) = (self.reconcile_pending, self.state.last_bar_ts) {
            match self.reconcile(bar_ts, now, &mut report).await {
                Ok(done) => self.reconcile_pending = !done,
                Err(err) => {
                    self.record_error(now, &err);
                    tracing::error!(error = %err, "reconciliation failed; retried next cycle");
                }
            }
        }
        report.breaker_open = breaker_open(&self.state, now);
        self.persist(now)?;
        Ok(report)
    }

    /// Count a failure outside a reconciliation (a failed fetch, a failed risk check) for the
    /// circuit breaker, and persist that.
    pub async fn record_failure(&mut self, err: &Error) {
        let now = match self.exchange.server_time_ms().await {
            Ok(now) => now,
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        };
        self.record_error(now, err);
        if let Err(err) = self.persist(now) {
            tracing::error!(error = %err, "cannot save the state");
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn record_error(&mut self, now: i64, err: &Error) {
        let breaker = &self.cfg.live.breaker;
        let window = breaker.window_secs as i64 * 1000;
        self.state.breaker_errors_ms.retain(|t| now - t < window);
        self.state.breaker_errors_ms.push(now);
        if self.state.breaker_errors_ms.len() >= breaker.max_errors {
            self.state.breaker_paused_until_ms = Some(now + breaker.cooldown_secs as i64 * 1000);
            self.state.breaker_errors_ms.clear();
            tracing::error!(error = %err, "API circuit breaker open: no new risk for {} s", breaker.cooldown_secs);
        }
    }

    /// Steer the account to the model's targets for the bar that opened at `bar_ts`. False when
    /// the circuit breaker held new orders back (retried next cycle).
    async fn reconcile(&mut self, bar_ts: i64, now: i64, report: &mut CycleReport) -> Result<bool> {
        let ex = &self.exchange;
        let equity = ex.equity().await.map_err(|err| exchange_error("equity", err))?;
        report.equity = Some(equity);
        self.state.equity = Some(equity);
        self.equity_history.push((bar_ts, equity));
        let kill = self.account_kill.check(bar_ts, equity, self.timeframe);
        self.state.kill_switch = Some(self.account_kill.snapshot());
        let positions: BTreeMap<String, f64> = ex
            .positions()
            .await
            .map_err(|err| exchange_error("positions", err))?
            .into_iter()
            .map(|p| (p.symbol, p.qty))
            .collect();
        let prefix = format!("xs-{bar_ts}-");
        // Orders of earlier bars are stale by definition: the targets have moved on.
        let open = ex.open_orders().await.map_err(|err| exchange_error("open orders", err))?;
        let mut current: Vec<String> = Vec::new();
        for order in open {
            let fresh = order.client_order_id.starts_with(&prefix)
                && now - order.created_ms < self.cfg.live.max_order_age_secs as i64 * 1000;
            if fresh {
                current.push(order.symbol.clone());
            } else {
                ex.cancel_order(&order.symbol, &order.client_order_id)
                    .await
                    .or_else(ignore_not_found)
                    .map_err(|err| exchange_error("cancel", err))?;
                if order.client_order_id.starts_with(&prefix) {
                    self.state.order_attempts.entry(order.symbol.clone()).and_modify(|n| *n += 1).or_insert(1);
                }
                report.orders_cancelled.push(order.client_order_id);
            }
        }
        if kill.active && (kill.flatten || kill.paused) {
            report.kill_switch = true;
            return self.flatten(bar_ts, &positions, report).await.map(|()| true);
        }
        if breaker_open(&self.state, now) {
            report.breaker_open = true;
            return Ok(false);
        }
        let targets = self.engine.target_weights().to_vec();
        let mut books = Vec::new();
        for (i, symbol) in self.symbols.iter().enumerate() {
            let position = positions.get(symbol).copied().unwrap_or(0.0);
            if (targets[i] == 0.0 && position == 0.0) || current.contains(symbol) {
                continue;
            }
            let quote = ex.quote(symbol).await.map_err(|err| exchange_error(&format!("quote {symbol}"), err))?;
            let instrument = &self.instruments[symbol];
            books.push(SymbolBook {
                symbol: symbol.clone(),
                target_weight: targets[i],
                position,
                bid: quote.bid,
                ask: quote.ask,
                qty_step: instrument.lot_size,
                min_qty: instrument.min_qty,
                tick_size: instrument.tick_size,
                min_notional: instrument.min_notional,
            });
        }
        let inputs = PlanInputs {
            equity,
            min_rebalance_delta: self.cfg.backtest.min_rebalance_delta,
            price_offset_bps: self.cfg.live.price_offset_bps,
            dynamic_offset: self.cfg.live.dynamic_offset,
            max_spread_bps: self.cfg.live.max_spread_bps,
        };
        let (orders, skipped) = plan::plan_orders(&books, &inputs);
        report.skipped = skipped;
        for order in orders {
            let attempt = self.state.order_attempts.get(&order.symbol).copied().unwrap_or(0);
            let mut request = OrderRequest {
                symbol: order.symbol.clone(),
                side: order.side,
                qty: order.qty,
                price: Some(order.price),
                order_type: OrderType::Limit,
                tif: TimeInForce::PostOnly,
                reduce_only: order.reduce_only,
                client_order_id: plan::client_order_id(bar_ts, &order.symbol, attempt),
            };
            match ex.place_order(&request).await {
                Ok(_) => report.orders_placed.push(request.client_order_id),
                Err(ExchangeError::DuplicateOrder { .. }) => {}
                Err(ExchangeError::OrderRejected { post_only: true, .. }) => {
                    // The touch moved through our price: one re-price one tick further away.
                    let quote = ex.quote(&order.symbol).await.map_err(|err| exchange_error("quote", err))?;
                    let tick = self.instruments[&order.symbol].tick_size;
                    request.price = Some(match order.side {
                        Side::Buy => plan::floor_to_step(quote.bid - tick, tick),
                        Side::Sell => plan::ceil_to_step(quote.ask + tick, tick),
                    });
                    self.state.order_attempts.insert(order.symbol.clone(), attempt + 1);
                    request.client_order_id = plan::client_order_id(bar_ts, &order.symbol, attempt + 1);
                    match ex.place_order(&request).await {
                        Ok(_) | Err(ExchangeError::DuplicateOrder { .. }) => {
                            report.orders_placed.push(request.client_order_id)
                        }
                        Err(err) => tracing::warn!(symbol = %order.symbol, error = %err, "re-priced order rejected"),
                    }
                }
                Err(err) => return Err(exchange_error(&format!("order {}", request.client_order_id), err)),
            }
        }
        Ok(true)
    }

    /// Cancel this bar's resting orders that are older than `max_order_age_secs` or farther than
    /// `reprice_bps` from the touch (live.md §2.5); the next reconciliation re-places them under
    /// the next attempt id. Returns how many were cancelled.
    async fn cancel_stale_orders(&mut self, bar_ts: i64, now: i64, report: &mut CycleReport) -> Result<usize> {
        let live = &self.cfg.live;
        let max_age_ms = live.max_order_age_secs as i64 * 1000;
        let open = self.exchange.open_orders().await.map_err(|err| exchange_error("open orders", err))?;
        let prefix = format!("xs-{bar_ts}-");
        let mut cancelled = 0;
        for order in open.into_iter().filter(|o| o.client_order_id.starts_with(&prefix)) {
            let too_old = now - order.created_ms >= max_age_ms;
            let too_far = match order.price {
                Some(price) if !too_old => {
                    let quote = self.exchange.quote(&order.symbol).await.map_err(|err| exchange_error("quote", err))?;
                    let touch = if order.side == Side::Buy { quote.bid } else { quote.ask };
                    touch > 0.0 && (price - touch).abs() / touch * 1e4 > live.reprice_bps
                }
                _ => false,
            };
            if !(too_old || too_far) {
                continue;
            }
            self.exchange
                .cancel_order(&order.symbol, &order.client_order_id)
                .await
                .or_else(ignore_not_found)
                .map_err(|err| exchange_error("cancel", err))?;
            self.state.order_attempts.entry(order.symbol.clone()).and_modify(|n| *n += 1).or_insert(1);
            tracing::info!(symbol = %order.symbol, id = %order.client_order_id, too_old, too_far, "stale order cancelled");
            report.orders_cancelled.push(order.client_order_id);
            cancelled += 1;
        }
        Ok(cancelled)
    }

    /// Kill-switch: cancel everything and close every position with reduce-only market orders.
    async fn flatten(
        &mut self,
        bar_ts: i64,
        positions: &BTreeMap<String, f64>,
        report: &mut CycleReport,
    ) -> Result<()> {
        let ex = &self.exchange;
        ex.cancel_all(None).await.map_err(|err| exchange_error("cancel all", err))?;
        for (symbol, qty) in positions.iter().filter(|(_, q)| **q != 0.0) {
            let request = OrderRequest {
                symbol: symbol.clone(),
                side: if *qty > 0.0 { Side::Sell } else { Side::Buy },
                qty: qty.abs(),
                price: None,
                order_type: OrderType::Market,
                tif: TimeInForce::Ioc,
                reduce_only: true,
                client_order_id: format!("xs-{bar_ts}-{symbol}-kill"),
            };
            match ex.place_order(&request).await {
                Ok(_) => report.orders_placed.push(request.client_order_id),
                Err(ExchangeError::DuplicateOrder { .. }) => {}
                Err(err) => return Err(exchange_error(&format!("flatten {symbol}"), err)),
            }
        }
        Ok(())
    }

    /// The risk loop (live.md §3), run every `live.fast_check_secs`: the model's stop levels tested
    /// on last-trade prices of the account's open positions (a hit closes with a reduce-only market
    /// order), and the account kill-switch on the current equity. Returns the exit order ids.
    pub async fn risk_check(&mut self) -> Result<Vec<String>> {
        let Some(bar_ts) = self.state.last_bar_ts else { return Ok(Vec::new()) };
        let now = self.exchange.server_time_ms().await.map_err(|err| exchange_error("server time", err))?;
        let mut placed = Vec::new();
        let positions = self.exchange.positions().await.map_err(|err| exchange_error("positions", err))?;
        let equity = self.exchange.equity().await.map_err(|err| exchange_error("equity", err))?;
        let kill = self.account_kill.check(bar_ts, equity, self.timeframe);
        self.state.kill_switch = Some(self.account_kill.snapshot());
        if kill.flatten {
            let book: BTreeMap<String, f64> = positions.iter().map(|p| (p.symbol.clone(), p.qty)).collect();
            let mut report = CycleReport::default();
            tracing::error!(equity, "daily kill-switch fired: cancelling orders and flattening");
            self.flatten(bar_ts, &book, &mut report).await?;
            self.persist(now)?;
            return Ok(report.orders_placed);
        }
        let stop_timeframe = self.cfg.live.stop_timeframe.as_deref().map(Timeframe::parse).transpose()?;
        for position in positions {
            let Some(i) = self.symbols.iter().position(|s| *s == position.symbol) else { continue };
            let Some(stop) = self.engine.risk().stop_state(i) else { continue };
            if stop.side != position.qty.signum() {
                continue;
            }
            let hit = match stop_timeframe {
                // The stop state machine of the core, on the last trade as a one-tick bar.
                None => {
                    let quote =
                        self.exchange.quote(&position.symbol).await.map_err(|err| exchange_error("quote", err))?;
                    stop.test(quote.last, quote.last, quote.last)
                }
                // … or on each closed finer bar since the model's last bar, in order.
                Some(timeframe) => {
                    let since = bar_ts + self.timeframe.ms;
                    let bars = self
                        .exchange
                        .closed_klines(&position.symbol, timeframe, since, now)
                        .await
                        .map_err(|err| exchange_error(&format!("stop bars {}", position.symbol), err))?;
                    bars.iter().find_map(|b| stop.test(b.open, b.high, b.low))
                }
            };
            let Some((price, reason)) = hit else { continue };
            let client_order_id = format!("xs-{bar_ts}-{}-stop", position.symbol);
            if self.state.stop_exits.contains(&client_order_id) {
                continue;
            }
            let request = OrderRequest {
                symbol: position.symbol.clone(),
                side: if position.qty > 0.0 { Side::Sell } else { Side::Buy },
                qty: position.qty.abs(),
                price: None,
                order_type: OrderType::Market,
                tif: TimeInForce::Ioc,
                reduce_only: true,
                client_order_id,
            };
            match self.exchange.place_order(&request).await {
                Ok(_) => {
                    tracing::warn!(symbol = %position.symbol, price, reason = reason.as_str(), "stop hit: reduce-only exit");
                    self.state.stop_exits.push(request.client_order_id.clone());
                    placed.push(request.client_order_id);
                }
                Err(ExchangeError::DuplicateOrder { .. }) => self.state.stop_exits.push(request.client_order_id),
                Err(err) => return Err(exchange_error(&format!("stop exit {}", position.symbol), err)),
            }
        }
        if !placed.is_empty() {
            self.persist(now)?;
        }
        Ok(placed)
    }

    /// Swap in a new config between cycles: validated first (an invalid one is rejected and the
    /// old one keeps running), then the model is rebuilt from its first bar with the new config.
    pub async fn reload(&mut self, cfg: Config, config_text: &str) -> Result<()> {
        cfg.validate()?;
        if cfg.timeframe() != self.timeframe {
            return Err(Error::config("live reload: data.timeframe cannot change while running; restart instead"));
        }
        let mut engine = Engine::new(&self.symbols, self.timeframe, &vec![true; self.symbols.len()], &cfg, false)?;
        if let (Some(start), Some(last)) = (self.state.model_start_ts, self.state.last_bar_ts) {
            let rows = self.fetch_rows(start, last + self.timeframe.ms).await?;
            for k in 0..rows.ts.len() {
                engine.step(&rows.row(k, self.symbols.len()));
            }
        }
        self.engine = engine;
        self.account_kill = KillSwitch::restore(&cfg.risk.kill_switch, &self.account_kill.snapshot());
        self.cfg = cfg;
        self.config_version = config_version(config_text);
        self.reconcile_pending = true;
        tracing::info!(version = %self.config_version, "config reloaded");
        Ok(())
    }

    pub fn config_version(&self) -> &str {
        &self.config_version
    }

    /// The model's per-symbol risk state after the last bar.
    fn symbol_states(&self) -> BTreeMap<String, SymbolState> {
        let risk = self.engine.risk();
        let t = self.engine.bars().saturating_sub(1);
        self.symbols
            .iter()
            .enumerate()
            .map(|(i, symbol)| {
                let stop = risk.stop_state(i).map(|s| StopSnapshot {
                    side: s.side,
                    entry_price: s.entry_price,
                    stop: s.stop,
                    catastrophic: s.catastrophic,
                });
                let state = SymbolState {
                    target_weight: self.engine.target_weights()[i],
                    stop,
                    blocked: !risk.may_hold(t + 1, i),
                };
                (symbol.clone(), state)
            })
            .collect()
    }

    /// Save the state atomically and touch the heartbeat.
    fn persist(&mut self, now: i64) -> Result<()> {
        self.state.symbols = self.symbol_states();
        self.state.config_version = self.config_version.clone();
        self.state.updated_ms = now;
        self.state.save(&self.opts.state_path)?;
        let heartbeat = serde_json::json!({
            "ts_ms": now,
            "last_bar_ts": self.state.last_bar_ts,
            "mode": self.opts.mode,
            "timeframe_ms": self.timeframe.ms,
        });
        crate::fsutil::write_atomically(&self.opts.heartbeat_path, heartbeat.to_string().as_bytes())
    }
}

fn ignore_not_found(err: ExchangeError) -> std::result::Result<(), ExchangeError> {
    match err {
        ExchangeError::NotFound { .. } => Ok(()),
        other => Err(other),
    }
}

fn exchange_error(what: &str, err: ExchangeError) -> Error {
    Error::invalid(format!("exchange: {what}: {err}"))
}

/// Version of a config: the first 8 hex digits of the SHA-256 of its text.
pub fn config_version(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// Re-exported for `state show`.
pub type KillSnapshot = KillSwitchSnapshot;
