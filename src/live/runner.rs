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
use super::plan::{self, Skip};
use super::state::{LiveState, StopSnapshot, SymbolState};
use super::types::{ExchangeError, Instrument, Order, OrderRequest, OrderType, Side, TimeInForce};
use crate::backtest::{BacktestResult, BarOrder, Engine, FillReason};
use crate::config::{Config, FillPrice, OnInvalid};
use crate::data::{self, Bars, Funding, FundingGrid, Panel};
use crate::error::{Error, Result};
use crate::execution;
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
    /// Closes of the newest bar stepped (NaN where a symbol had none): the price the `close` and
    /// `limit_touch` fill models size and price at.
    last_close: Vec<f64>,
    /// The engine's exits and expired limits of the bars stepped since the last reconciliation.
    pending_bar_orders: Vec<BarOrder>,
    /// The engine decided at the newest bar stepped (the rebalance of that bar is due).
    pending_decision: bool,
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
        // Temp files of writes that a kill interrupted are never the state: remove them first.
        for path in [&opts.state_path, &opts.heartbeat_path] {
            crate::fsutil::remove_stale_temps(path);
        }
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
            last_close: Vec::new(),
            pending_bar_orders: Vec::new(),
            pending_decision: false,
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
        if let Some((panel, funding)) = self.fetch_panel(start, last + self.timeframe.ms).await? {
            for t in 0..panel.n_bars() {
                self.engine.step(&panel.bar_row(t, &funding));
            }
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

    /// Closed bars `[start, end)` of every symbol as a panel on the runner's grid and symbols, through
    /// the data module's validation (`data.on_invalid`) and panel builder, with funding aligned to the
    /// bar each event falls in. `None` when the range holds no bar.
    async fn fetch_panel(&self, start: i64, end: i64) -> Result<Option<(Panel, FundingGrid)>> {
        let step = self.timeframe.ms;
        let n_bars = ((end - start).max(0) / step) as usize;
        if n_bars == 0 {
            return Ok(None);
        }
        let mut bars = Bars::default();
        let mut funding = Funding::default();
        for symbol in &self.symbols {
            let klines = self
                .exchange
                .closed_klines(symbol, self.timeframe, start, end)
                .await
                .map_err(|err| exchange_error(&format!("klines {symbol}"), err))?;
            for bar in klines.into_iter().filter(|b| b.ts >= start && b.ts < end) {
                // A missing turnover becomes close × volume in the panel builder.
                bars.push(symbol, bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.turnover);
            }
            let events = self
                .exchange
                .funding_history(symbol, start, end)
                .await
                .map_err(|err| exchange_error(&format!("funding {symbol}"), err))?;
            for event in events.into_iter().filter(|e| e.ts >= start && e.ts < end) {
                funding.push(symbol, event.ts, event.rate);
            }
        }
        let drop_invalid = self.cfg.data.on_invalid == OnInvalid::Drop;
        let (bars, findings) =
            data::clean_bars(bars, self.timeframe, drop_invalid).map_err(|err| err.context("live klines"))?;
        // Warnings (spikes, zero volume) are the backtest's too; errors were dropped or refused above.
        for finding in findings.iter().filter(|f| f.severity == data::Severity::Error).take(20) {
            tracing::warn!(symbol = %finding.symbol, ts = finding.ts, kind = finding.kind, "kline finding");
        }
        let panel = Panel::on_grid(&bars, self.timeframe, &self.symbols, start, n_bars)?;
        let grid = panel.align_funding(&funding);
        Ok(Some((panel, grid)))
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
            if let Some((panel, funding)) = self.fetch_panel(start, newest_open + step).await? {
                for t in 0..panel.n_bars() {
                    self.engine.step(&panel.bar_row(t, &funding));
                    self.pending_bar_orders.extend_from_slice(self.engine.bar_orders());
                }
                self.pending_decision = self.engine.decided();
                self.last_close = panel.close.row(panel.n_bars() - 1).to_vec();
                report.bars_stepped = panel.n_bars();
            }
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

    /// Steer the account to the engine's admitted targets for the bar that opened at `bar_ts`, in
    /// the engine's order: its exits at the close, its expired limits, then (on a decision bar) the
    /// rebalance, sized on the account after those exits with the engine's own trade rule
    /// ([`execution::rebalance_delta`]); last, the engine's stop levels as resting orders where the
    /// exchange simulates bars. False when the circuit breaker held new orders back (retried next cycle).
    async fn reconcile(&mut self, bar_ts: i64, now: i64, report: &mut CycleReport) -> Result<bool> {
        let equity = self.exchange.equity().await.map_err(|err| exchange_error("equity", err))?;
        report.equity = Some(equity);
        self.state.equity = Some(equity);
        let kill = self.account_kill.check(bar_ts, equity, self.timeframe);
        self.state.kill_switch = Some(self.account_kill.snapshot());
        let mut positions = self.positions().await?;
        let prefix = format!("xs-{bar_ts}-");
        // A decision holds for its whole bar: a re-run of this bar's reconciliation (stale orders, a
        // failure) steers to it again; the exits are sent once.
        let decided = self.pending_decision;
        // Kept until this reconciliation succeeds: exits carry fixed ids, so a retry never doubles one.
        let bar_orders = self.pending_bar_orders.clone();
        let open = self.exchange.open_orders().await.map_err(|err| exchange_error("open orders", err))?;
        // Rebalance orders of earlier bars are replaced at a decision bar (the engine replaces its
        // resting limits then); resting stops are placed anew every bar.
        let mut current: Vec<String> = Vec::new();
        let mut cancelled: BTreeMap<String, Order> = BTreeMap::new();
        for order in open {
            let this_bar = order.client_order_id.starts_with(&prefix);
            let stop_order = is_resting_stop(&order.client_order_id);
            let too_old = now - order.created_ms >= self.cfg.live.max_order_age_secs as i64 * 1000;
            if this_bar && !stop_order && !too_old {
                current.push(order.symbol.clone());
                continue;
            }
            if !(stop_order || decided || too_old || !self.cfg.live.trading) {
                continue;
            }
            self.cancel(&order, report).await?;
            if !stop_order {
                cancelled.insert(order.symbol.clone(), order);
            }
        }
        if !self.cfg.live.trading {
            // A `stand aside` deploy: flat and staying flat, the model still stepping.
            report.skipped = self.symbols.iter().map(|s| (s.clone(), Skip::NotTrading)).collect();
            self.flatten(bar_ts, &positions, FillReason::Flatten, report).await?;
            self.pending_bar_orders.clear();
            return Ok(true);
        }
        if kill.active && (kill.flatten || kill.paused) {
            report.kill_switch = true;
            self.flatten(bar_ts, &positions, FillReason::KillSwitch, report).await?;
            self.pending_bar_orders.clear();
            return Ok(true);
        }
        if breaker_open(&self.state, now) {
            report.breaker_open = true;
            return Ok(false);
        }
        for order in &bar_orders {
            match *order {
                BarOrder::ExitAtClose { symbol, reason } => {
                    let symbol = self.symbols[symbol].clone();
                    let qty = positions.get(&symbol).copied().unwrap_or(0.0);
                    if qty != 0.0 {
                        let id = format!("{prefix}{symbol}-{}", reason.as_str());
                        self.place_exit(&symbol, qty, reason, id, report).await?;
                    }
                }
                BarOrder::Expired { symbol, taker } => {
                    let symbol = self.symbols[symbol].clone();
                    let resting = match cancelled.remove(&symbol) {
                        Some(order) => Some(order),
                        None => self.cancel_rebalance_orders(&symbol, report).await?,
                    };
                    if let (true, Some(order)) = (taker, resting) {
                        let left = order.qty - order.filled_qty;
                        let request = self.request(&symbol, order.side.sign() * left, None, FillReason::Rebalance);
                        self.send(request, report).await?;
                    }
                }
                BarOrder::Exited { .. } => {}
            }
        }
        if decided {
            positions = self.positions().await?;
            let equity = self.exchange.equity().await.map_err(|err| exchange_error("equity", err))?;
            self.rebalance(bar_ts, equity, &positions, &current, report).await?;
        }
        if self.exchange.resting_stops() {
            positions = self.positions().await?;
            self.place_resting_stops(bar_ts, &positions, report).await?;
        }
        let equity = self.exchange.equity().await.map_err(|err| exchange_error("equity", err))?;
        self.equity_history.push((bar_ts, equity));
        self.pending_bar_orders.clear();
        Ok(true)
    }

    /// The account's positions by symbol (signed).
    async fn positions(&self) -> Result<BTreeMap<String, f64>> {
        Ok(self
            .exchange
            .positions()
            .await
            .map_err(|err| exchange_error("positions", err))?
            .into_iter()
            .map(|p| (p.symbol, p.qty))
            .collect())
    }

    async fn cancel(&mut self, order: &Order, report: &mut CycleReport) -> Result<()> {
        self.exchange
            .cancel_order(&order.symbol, &order.client_order_id)
            .await
            .or_else(ignore_not_found)
            .map_err(|err| exchange_error("cancel", err))?;
        report.orders_cancelled.push(order.client_order_id.clone());
        Ok(())
    }

    /// Cancel `symbol`'s resting rebalance orders; returns the last one cancelled.
    async fn cancel_rebalance_orders(&mut self, symbol: &str, report: &mut CycleReport) -> Result<Option<Order>> {
        let open = self.exchange.open_orders().await.map_err(|err| exchange_error("open orders", err))?;
        let mut last = None;
        for order in open.into_iter().filter(|o| o.symbol == symbol && !is_resting_stop(&o.client_order_id)) {
            self.cancel(&order, report).await?;
            last = Some(order);
        }
        Ok(last)
    }

    /// The rebalance of a decision bar: every symbol with an admitted target or a position, sized on
    /// the account with the engine's trade rule, rounded to the lot; the order style follows the fill
    /// model (`close`, `next_open`: market orders; `limit_touch`: post-only limits at the close ± the
    /// offset).
    async fn rebalance(
        &mut self,
        bar_ts: i64,
        equity: f64,
        positions: &BTreeMap<String, f64>,
        current: &[String],
        report: &mut CycleReport,
    ) -> Result<()> {
        let targets = self.engine.target_weights().to_vec();
        let fill = self.cfg.execution.fill;
        let min_delta = self.cfg.backtest.min_rebalance_delta;
        let mut first_error = None;
        let inputs = plan::PlanInputs {
            price_offset_bps: self.cfg.execution.limit_offset_bps + self.cfg.live.price_offset_bps,
            dynamic_offset: self.cfg.live.dynamic_offset,
            max_spread_bps: self.cfg.live.max_spread_bps,
        };
        for i in 0..self.symbols.len() {
            let symbol = self.symbols[i].clone();
            let position = positions.get(&symbol).copied().unwrap_or(0.0);
            if (targets[i] == 0.0 && position == 0.0) || current.contains(&symbol) {
                continue;
            }
            // The risk loop stopped this symbol out during this bar: the engine has not seen that bar
            // yet, so its target still holds the position; no re-entry before the next bar's decision
            // (where the engine's own stop and cooldown apply).
            if self.state.stop_exits.contains(&format!("xs-{bar_ts}-{symbol}-stop")) {
                report.skipped.push((symbol, Skip::StoppedThisBar));
                continue;
            }
            // The price the fill model sizes at: this bar's close, or the market now for `next_open`.
            let price = match fill {
                FillPrice::Close | FillPrice::LimitTouch => self.last_close.get(i).copied().unwrap_or(f64::NAN),
                FillPrice::NextOpen => {
                    self.exchange.quote(&symbol).await.map_err(|err| exchange_error("quote", err))?.last
                }
            };
            let delta = execution::rebalance_delta(targets[i], equity, price, position, min_delta);
            if delta == 0.0 {
                report.skipped.push((symbol, if price > 0.0 { Skip::AtTarget } else { Skip::NoQuote }));
                continue;
            }
            let quote = self.exchange.quote(&symbol).await.map_err(|err| exchange_error("quote", err))?;
            let instrument = &self.instruments[&symbol];
            let book = plan::SymbolBook {
                symbol: symbol.clone(),
                delta,
                position,
                bid: quote.bid,
                ask: quote.ask,
                qty_step: instrument.lot_size,
                min_qty: instrument.min_qty,
                tick_size: instrument.tick_size,
                min_notional: instrument.min_notional,
            };
            let planned = match plan::plan_order(&book, &inputs) {
                Ok(Some(planned)) => planned,
                Ok(None) => {
                    report.skipped.push((symbol, Skip::AtTarget));
                    continue;
                }
                Err(skip) => {
                    report.skipped.push((symbol, skip));
                    continue;
                }
            };
            let limit = (fill == FillPrice::LimitTouch).then_some(planned.price);
            let mut request = self.request(&symbol, planned.side.sign() * planned.qty, limit, FillReason::Rebalance);
            request.reduce_only = planned.reduce_only;
            let attempt = self.state.order_attempts.get(&symbol).copied().unwrap_or(0);
            request.client_order_id = plan::client_order_id(bar_ts, &symbol, attempt);
            match self.exchange.place_order(&request).await {
                Ok(_) => report.orders_placed.push(request.client_order_id),
                Err(ExchangeError::DuplicateOrder { .. }) => {}
                Err(ExchangeError::OrderRejected { post_only: true, .. }) => {
                    // The touch moved through our price: one re-price one tick behind the touch.
                    let quote = self.exchange.quote(&symbol).await.map_err(|err| exchange_error("quote", err))?;
                    let tick = self.instruments[&symbol].tick_size;
                    request.price = Some(match request.side {
                        Side::Buy => plan::floor_to_step(quote.bid - tick, tick),
                        Side::Sell => plan::ceil_to_step(quote.ask + tick, tick),
                    });
                    self.state.order_attempts.insert(symbol.clone(), attempt + 1);
                    request.client_order_id = plan::client_order_id(bar_ts, &symbol, attempt + 1);
                    match self.exchange.place_order(&request).await {
                        Ok(_) | Err(ExchangeError::DuplicateOrder { .. }) => {
                            report.orders_placed.push(request.client_order_id)
                        }
                        Err(err) => tracing::warn!(%symbol, error = %err, "re-priced order rejected"),
                    }
                }
                Err(err @ (ExchangeError::OrderRejected { .. } | ExchangeError::InvalidParams { .. })) => {
                    // One symbol's rejection (a reduce-only race, a size rule) never stops the others.
                    tracing::warn!(%symbol, error = %err, "order rejected; the other symbols go on");
                    report.skipped.push((symbol, Skip::Rejected));
                }
                Err(err) => {
                    tracing::warn!(%symbol, error = %err, "order failed; the other symbols go on");
                    first_error.get_or_insert(exchange_error(&format!("order {}", request.client_order_id), err));
                }
            }
        }
        // A transient failure is retried by the next cycle (orders placed this bar are not re-sent).
        first_error.map_or(Ok(()), Err)
    }

    /// An order for `delta` units of `symbol` (market when `limit` is `None`); the id is set by the caller.
    fn request(&self, symbol: &str, delta: f64, limit: Option<f64>, reason: FillReason) -> OrderRequest {
        OrderRequest {
            symbol: symbol.to_string(),
            side: if delta > 0.0 { Side::Buy } else { Side::Sell },
            qty: delta.abs(),
            price: limit,
            order_type: if limit.is_some() { OrderType::Limit } else { OrderType::Market },
            tif: if limit.is_some() { TimeInForce::PostOnly } else { TimeInForce::Ioc },
            reduce_only: false,
            client_order_id: String::new(),
            trigger_price: None,
            close_fraction: None,
            reason,
        }
    }

    /// Send a market order under the symbol's next attempt id.
    async fn send(&mut self, mut request: OrderRequest, report: &mut CycleReport) -> Result<()> {
        let bar_ts = self.state.last_bar_ts.unwrap_or(0);
        let attempt = self.state.order_attempts.get(&request.symbol).copied().unwrap_or(0);
        self.state.order_attempts.insert(request.symbol.clone(), attempt + 1);
        request.client_order_id = plan::client_order_id(bar_ts, &request.symbol, attempt);
        match self.exchange.place_order(&request).await {
            Ok(_) => report.orders_placed.push(request.client_order_id),
            Err(ExchangeError::DuplicateOrder { .. }) => {}
            Err(err) => return Err(exchange_error(&format!("order {}", request.client_order_id), err)),
        }
        Ok(())
    }

    /// A reduce-only market exit of the whole `position`.
    async fn place_exit(
        &mut self,
        symbol: &str,
        position: f64,
        reason: FillReason,
        client_order_id: String,
        report: &mut CycleReport,
    ) -> Result<()> {
        let mut request = self.request(symbol, -position, None, reason);
        request.reduce_only = true;
        request.client_order_id = client_order_id;
        match self.exchange.place_order(&request).await {
            Ok(_) => report.orders_placed.push(request.client_order_id),
            Err(ExchangeError::DuplicateOrder { .. }) => {}
            Err(err) => return Err(exchange_error(&format!("exit {symbol}"), err)),
        }
        Ok(())
    }

    /// The engine's stop machine as resting reduce-only orders on an exchange that simulates bars
    /// (`replay`): the catastrophic stop, then the stop (the order the core tests them in), then the
    /// partial take-profit, at the levels carried into the next bar.
    async fn place_resting_stops(
        &mut self,
        bar_ts: i64,
        positions: &BTreeMap<String, f64>,
        report: &mut CycleReport,
    ) -> Result<()> {
        let stops_cfg = self.cfg.risk.stops.clone();
        for i in 0..self.symbols.len() {
            let symbol = self.symbols[i].clone();
            let position = positions.get(&symbol).copied().unwrap_or(0.0);
            let Some(stop) = self.engine.risk().stop_state(i).cloned() else { continue };
            if position == 0.0 || stop.side != position.signum() {
                continue;
            }
            let mut levels =
                vec![("cat", stop.catastrophic, FillReason::Stop, 1.0), ("sl", stop.stop, stop.stop_reason, 1.0)];
            if !stop.partial_done && stops_cfg.partial_tp_frac > 0.0 {
                levels.push((
                    "tp",
                    stop.take_profit_level(&stops_cfg),
                    FillReason::TakeProfit,
                    stops_cfg.partial_tp_frac,
                ));
            }
            for (suffix, level, reason, fraction) in levels {
                let mut request = self.request(&symbol, -position * fraction, None, reason);
                request.reduce_only = true;
                request.trigger_price = Some(level);
                request.close_fraction = Some(fraction);
                request.client_order_id = format!("xs-{bar_ts}-{symbol}-{suffix}");
                match self.exchange.place_order(&request).await {
                    Ok(_) => report.orders_placed.push(request.client_order_id),
                    Err(ExchangeError::DuplicateOrder { .. }) => {}
                    Err(err) => return Err(exchange_error(&format!("stop order {symbol}"), err)),
                }
            }
        }
        Ok(())
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

    /// Kill-switch or stand-aside: cancel everything and close every position with reduce-only
    /// market orders.
    async fn flatten(
        &mut self,
        bar_ts: i64,
        positions: &BTreeMap<String, f64>,
        reason: FillReason,
        report: &mut CycleReport,
    ) -> Result<()> {
        self.exchange.cancel_all(None).await.map_err(|err| exchange_error("cancel all", err))?;
        let kind = if reason == FillReason::KillSwitch { "kill" } else { "flat" };
        let mut first_error = None;
        for (symbol, qty) in positions.iter().filter(|(_, q)| **q != 0.0) {
            // A fresh id per attempt: a retry after a failure (or an unfilled exit) is a new order.
            let key = format!("{symbol}-{kind}");
            let attempt = self.state.order_attempts.get(&key).copied().unwrap_or(0);
            self.state.order_attempts.insert(key, attempt + 1);
            let id = format!("xs-{bar_ts}-{symbol}-{kind}-{attempt}");
            if let Err(err) = self.place_exit(symbol, *qty, reason, id, report).await {
                tracing::error!(%symbol, error = %err, "exit failed; retried at the next check");
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
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
        // Fired (or still paused after firing) with positions left: flatten, and again at every
        // check until the account is flat (a failed exit is retried under a fresh id).
        if kill.active && (kill.flatten || kill.paused) && !positions.is_empty() {
            let book: BTreeMap<String, f64> = positions.iter().map(|p| (p.symbol.clone(), p.qty)).collect();
            let mut report = CycleReport::default();
            tracing::error!(equity, "daily kill-switch: cancelling orders and flattening");
            let flattened = self.flatten(bar_ts, &book, FillReason::KillSwitch, &mut report).await;
            self.persist(now)?;
            flattened?;
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
            let mut request = self.request(&position.symbol, -position.qty, None, reason);
            request.reduce_only = true;
            request.client_order_id = client_order_id;
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
            if let Some((panel, funding)) = self.fetch_panel(start, last + self.timeframe.ms).await? {
                for t in 0..panel.n_bars() {
                    engine.step(&panel.bar_row(t, &funding));
                }
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

/// Resting stop and take-profit orders of [`Runner::place_resting_stops`].
fn is_resting_stop(client_order_id: &str) -> bool {
    ["-cat", "-sl", "-tp"].iter().any(|suffix| client_order_id.ends_with(suffix))
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
