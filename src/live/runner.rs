//! The main cycle and the risk loop (live.md §2–3) over any [`Exchange`].
//!
//! The model is the backtester's [`Engine`], stepped once per closed bar with exactly the bars the
//! backtest would see; its target weights are what the account is steered to. The model keeps its
//! own book (as in a backtest, filled at the close), so its path-dependent state (stops, cooldowns,
//! scoring, its kill-switch) is a function of the bars and the config alone: a restart rebuilds it
//! by stepping the stored history again. The account side is reconciled every cycle: the exchange
//! is the source of truth for positions and orders.
//!
//! Orders (issue 15): every create attempt takes a fresh id `xs-<bar>-<symbol>-<n>` saved before it
//! is sent; the status of this bar's orders is read every cycle (open orders, the execution list,
//! the order by id), and a post-only order the exchange cancelled is re-priced under the next id up
//! to `live.max_reprices`, then `execution.limit_fallback` (exits: reduce-only market); a resting
//! order is replaced only after its cancel is confirmed, and no order may take position plus open
//! orders past the target by more than a lot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use super::desk::{exchange_error, order_request, Exits, RiskDesk, Shared};
use super::exchange::Exchange;
use super::gate::Gate;
use super::heartbeat::Heartbeat;
use super::plan::{self, PlannedOrder, Skip};
use super::state::{LiveState, StopSnapshot, SymbolState, WorkingOrder};
use super::types::{ExchangeError, Instrument, Order, OrderRequest};
use crate::backtest::{BacktestResult, BarOrder, Engine};
use crate::config::{Config, FillPrice, LimitFallback, OnInvalid};
use crate::data::{self, Bars, Funding, FundingGrid, Panel};
use crate::error::{Error, Result};
use crate::execution;
use crate::model::{client_order_id, FillReason, Side, BPS};
use crate::risk::{KillState, KillSwitch};
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
    /// Orders the exchange accepted and kept (an order it cancelled at once is in `orders_ended`).
    pub orders_placed: Vec<String>,
    pub orders_cancelled: Vec<String>,
    /// Orders the exchange cancelled (a post-only that would have taken liquidity, …).
    pub orders_ended: Vec<String>,
    pub skipped: Vec<(String, plan::Skip)>,
    pub equity: Option<f64>,
    pub kill_switch: bool,
    pub breaker_open: bool,
}

/// How long a create a killed process sent may still reach the exchange: the recv-window the client
/// signs with (5 s; Bybit refuses a request that arrives later than that after its timestamp) and a
/// margin for the clock.
const IN_FLIGHT_MS: i64 = 6_000;

/// API circuit breaker (live.md §3): `max_errors` in `window_secs` pause new risk for `cooldown_secs`.
fn breaker_open(state: &LiveState, now_ms: i64) -> bool {
    state.breaker_paused_until_ms.is_some_and(|until| now_ms < until)
}

/// The account as one reconciliation sees it: positions and the open orders (signed units left).
struct AccountView {
    positions: BTreeMap<String, f64>,
    open: Vec<Order>,
}

impl AccountView {
    /// Signed units still to fill of `symbol`'s open orders (resting stops excluded).
    fn open_units(&self, symbol: &str) -> f64 {
        self.open
            .iter()
            .filter(|o| o.symbol == symbol && !client_order_id::is_resting_stop(&o.client_order_id))
            .map(|o| o.side.sign() * (o.qty - o.filled_qty).max(0.0))
            .sum()
    }
}

pub struct Runner<E: Exchange> {
    exchange: Arc<Gate<E>>,
    desk: RiskDesk<E>,
    shared: Arc<Mutex<Shared>>,
    cfg: Config,
    config_version: String,
    symbols: Vec<String>,
    timeframe: Timeframe,
    engine: Engine,
    instruments: BTreeMap<String, Instrument>,
    opts: RunnerOptions,
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
    /// After a restart: the last rebalance id the previous process reserved per symbol in its last
    /// bar, until the exchange shows it or it can no longer arrive (it may have been in flight at
    /// the kill; sending the next attempt meanwhile could fill the symbol twice).
    inherited: BTreeMap<String, String>,
    /// The exchange clock at the first cycle of this process.
    started_ms: Option<i64>,
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
        let kill = match loaded.as_ref().and_then(|s| s.kill_switch.as_ref()) {
            Some(snapshot) => KillSwitch::restore(&cfg.risk.kill_switch, snapshot),
            None => KillSwitch::new(&cfg.risk.kill_switch),
        };
        let exchange = Arc::new(Gate::new(exchange));
        let instruments = exchange
            .instruments(&symbols)
            .await
            .map_err(|err| exchange_error("instruments", err))?
            .into_iter()
            .map(|i| (i.symbol.clone(), i))
            .collect();
        let inherited = inherited_order_ids(loaded.as_ref(), &symbols);
        let state = loaded.clone().unwrap_or_else(|| LiveState::new(&config_version, &opts.mode));
        let shared = Arc::new(Mutex::new(Shared {
            state,
            kill,
            stops: vec![None; symbols.len()],
            stop_timeframe: None,
            breaker: cfg.live.breaker.clone(),
            fast_check_secs: cfg.live.fast_check_secs,
            last_now_ms: 0,
        }));
        let desk = RiskDesk {
            exchange: Arc::clone(&exchange),
            shared: Arc::clone(&shared),
            symbols: symbols.clone(),
            timeframe,
            state_path: opts.state_path.clone(),
        };
        let mut runner = Runner {
            exchange,
            desk,
            shared,
            cfg,
            config_version,
            symbols,
            timeframe,
            engine,
            instruments,
            opts,
            equity_history: Vec::new(),
            rebuilt_matches: None,
            reconcile_pending: false,
            last_close: Vec::new(),
            pending_bar_orders: Vec::new(),
            pending_decision: false,
            inherited,
            started_ms: None,
        };
        if let Some(previous) = loaded {
            runner.rebuild_model(&previous).await?;
        }
        runner.publish()?;
        Ok(runner)
    }

    fn with<R>(&self, f: impl FnOnce(&mut Shared) -> R) -> R {
        f(&mut self.shared.lock().expect("runner state poisoned"))
    }

    /// What the risk loop reads of the model and the config: the stop states after the last bar.
    fn publish(&mut self) -> Result<()> {
        let stops = (0..self.symbols.len()).map(|i| self.engine.risk().stop_state(i).cloned()).collect();
        let stop_timeframe = self.cfg.live.stop_timeframe.as_deref().map(Timeframe::parse).transpose()?;
        let (breaker, fast) = (self.cfg.live.breaker.clone(), self.cfg.live.fast_check_secs);
        self.with(|s| {
            s.stops = stops;
            s.stop_timeframe = stop_timeframe;
            s.breaker = breaker;
            s.fast_check_secs = fast;
        });
        Ok(())
    }

    pub fn exchange(&self) -> &E {
        self.exchange.inner()
    }

    /// Give the exchange back (a test "crashes" a runner and starts another on the same account).
    pub fn into_exchange(self) -> E {
        let Runner { exchange, desk, .. } = self;
        drop(desk);
        match Arc::try_unwrap(exchange) {
            Ok(gate) => gate.into_inner(),
            Err(_) => panic!("into_exchange: a risk task still holds the exchange"),
        }
    }

    /// The risk loop's handle on this runner's exchange and state (the service runs it as a task).
    pub fn risk_desk(&self) -> RiskDesk<E> {
        self.desk.clone()
    }

    /// Share the service's stop flag: once set (SIGTERM), no new request is sent.
    pub fn set_stop_flag(&self, flag: Arc<AtomicBool>) {
        self.exchange.set_stop_flag(flag);
    }

    /// The auth or permission refusal that stopped trading, if any.
    pub fn fatal(&self) -> Option<ExchangeError> {
        self.exchange.fatal()
    }

    /// Requests sent to the exchange so far.
    pub fn requests_sent(&self) -> u64 {
        self.exchange.requests_sent()
    }

    /// After a restart: did the model rebuilt from the bars match the saved state? (`None`: fresh start.)
    pub fn rebuilt_matches_state(&self) -> Option<bool> {
        self.rebuilt_matches
    }

    /// A copy of the state as it would be saved now.
    pub fn state(&self) -> LiveState {
        self.with(|s| s.state.clone())
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
            // The exchange is the source of truth: the last bar's decision is steered to again
            // (what is already on the book or filled is not sent twice).
            self.pending_decision = self.engine.decided();
            self.last_close = panel.close.row(panel.n_bars() - 1).to_vec();
            self.reconcile_pending = true;
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
        let meta = self.engine.meta_label().map(|m| m.snapshot());
        if previous.meta_label.is_some() && meta != previous.meta_label {
            self.rebuilt_matches = Some(false);
            tracing::warn!(
                saved = %serde_json::to_string(&previous.meta_label).unwrap_or_default(),
                rebuilt = %serde_json::to_string(&meta).unwrap_or_default(),
                "the rebuilt meta-labeler differs from the saved state (bars revised?); the rebuilt one is used"
            );
        }
        Ok(())
    }

    /// One line per decision: how many symbols the strategy wants and how many the engine's
    /// admission rules (anti-churn, scoring, cooldowns, bans, time of day, kill-switch and drawdown
    /// pauses) let through, naming the ones held back — so "nothing traded" reads as the engine's
    /// decision, the same one the backtest makes, not as a live-only failure.
    fn log_decision(&self) {
        let (model, admitted) = (self.engine.model_weights(), self.engine.target_weights());
        let wanted = model.iter().filter(|w| **w != 0.0).count();
        let held_back: Vec<&str> = (0..self.symbols.len())
            .filter(|&i| model[i] != 0.0 && admitted[i] == 0.0)
            .map(|i| self.symbols[i].as_str())
            .collect();
        tracing::info!(
            wanted,
            admitted = admitted.iter().filter(|w| **w != 0.0).count(),
            held_back = %held_back.join(","),
            "decision"
        );
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
        let mut mark = crate::run::wants_mark(&self.cfg).then(Bars::default);
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
            if let Some(mark) = mark.as_mut() {
                self.fetch_mark(symbol, start, end, mark).await?;
            }
        }
        let drop_invalid = self.cfg.data.on_invalid == OnInvalid::Drop;
        let (bars, findings) = data::clean_bars(bars, self.timeframe, self.cfg.data.spike_rule(), drop_invalid)
            .map_err(|err| err.context("live klines"))?;
        // Warnings (spikes, zero volume) are the backtest's too; errors were dropped or refused above.
        for finding in findings.iter().filter(|f| f.severity == data::Severity::Error).take(20) {
            tracing::warn!(symbol = %finding.symbol, ts = finding.ts, kind = finding.kind, "kline finding");
        }
        let mut panel = Panel::on_grid(&bars, self.timeframe, &self.symbols, start, n_bars)?;
        if let Some(mark) = mark {
            // The backtest's path: mark bars validated on their prices, then put on the grid.
            let (mark, _) = data::clean_bars_of_kind(
                mark,
                self.timeframe,
                data::BarKind::Mark,
                self.cfg.data.spike_rule(),
                drop_invalid,
            )
            .map_err(|err| err.context("live mark klines"))?;
            panel.attach_mark(mark.view());
        }
        let grid = panel.align_funding(&funding);
        Ok(Some((panel, grid)))
    }

    /// The closed mark-price bars of `symbol` in `[start, end)` into `mark` (the basis term of the
    /// carry sleeve reads their closes).
    async fn fetch_mark(&self, symbol: &str, start: i64, end: i64, mark: &mut Bars) -> Result<()> {
        let klines = self
            .exchange
            .closed_mark_klines(symbol, self.timeframe, start, end)
            .await
            .map_err(|err| exchange_error(&format!("mark klines {symbol}"), err))?;
        for bar in klines.into_iter().filter(|b| b.ts >= start && b.ts < end) {
            mark.push(symbol, bar.ts, bar.open, bar.high, bar.low, bar.close, f64::NAN, f64::NAN);
        }
        Ok(())
    }

    /// One main cycle: step the model over every newly closed bar, then steer the account to the
    /// targets of the newest one, persist the state and write the heartbeat. Between bars: read the
    /// status of this bar's orders (re-price what the exchange cancelled), send exits that waited
    /// longer than `live.exit_patience_secs` at market, and replace stale orders.
    pub async fn cycle(&mut self) -> Result<CycleReport> {
        let mut report = CycleReport::default();
        let now = self.exchange.server_time_ms().await.map_err(|err| exchange_error("server time", err))?;
        self.with(|s| s.last_now_ms = now);
        self.started_ms.get_or_insert(now);
        let step = self.timeframe.ms;
        // Newest bar whose close time is ≤ now − rebalance delay: never the forming bar, and the
        // exchange has had a moment to publish the closed one.
        let delay = self.cfg.live.rebalance_delay_secs as i64 * 1000;
        let newest_open = (now - delay).div_euclid(step) * step - step;
        let (last_bar, model_start) = self.with(|s| (s.state.last_bar_ts, s.state.model_start_ts));
        let start = match last_bar {
            Some(last) => last + step,
            None => {
                let start = self.opts.start_ts.unwrap_or(newest_open - (self.cfg.live.warmup_bars as i64 - 1) * step);
                if model_start.is_none() {
                    self.with(|s| s.state.model_start_ts = Some(start));
                }
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
                if self.pending_decision {
                    self.log_decision();
                }
                self.last_close = panel.close.row(panel.n_bars() - 1).to_vec();
                report.bars_stepped = panel.n_bars();
            }
            self.publish()?;
            self.with(|s| {
                s.state.last_bar_ts = Some(newest_open);
                s.state.start_bar();
            });
            self.reconcile_pending = true;
        }
        let bar = self.with(|s| s.state.last_bar_ts);
        report.last_bar_ts = bar;
        if let (false, Some(bar_ts)) = (self.reconcile_pending, bar) {
            match self.between_bars(bar_ts, now, &mut report).await {
                Ok(again) => self.reconcile_pending = again,
                Err(err) => {
                    self.record_error(now, &err);
                    tracing::error!(error = %err, "order check failed; retried next cycle");
                }
            }
        }
        if let (true, Some(bar_ts)) = (self.reconcile_pending, bar) {
            match self.reconcile(bar_ts, now, &mut report).await {
                Ok(done) => self.reconcile_pending = !done,
                Err(err) => {
                    self.record_error(now, &err);
                    tracing::error!(error = %err, "reconciliation failed; retried next cycle");
                }
            }
        }
        report.breaker_open = self.with(|s| breaker_open(&s.state, now));
        self.persist(now)?;
        Ok(report)
    }

    /// Between two bars: whether this bar's reconciliation must run again (an order ended or
    /// was cancelled, an exit is due at market).
    async fn between_bars(&mut self, bar_ts: i64, now: i64, report: &mut CycleReport) -> Result<bool> {
        let ended = self.check_orders(bar_ts, report).await?;
        let cancelled = self.cancel_stale_orders(bar_ts, now, report).await?;
        let due = self.cancel_impatient_exits(now, report).await?;
        Ok(!ended.is_empty() || cancelled > 0 || due)
    }

    /// Count a failure outside a reconciliation (a failed fetch, a failed risk check) for the
    /// circuit breaker, and persist that.
    pub async fn record_failure(&mut self, err: &Error) {
        let now = match self.exchange.server_time_ms().await {
            Ok(now) => now,
            Err(_) => match self.with(|s| s.last_now_ms) {
                0 => host_now_ms(),
                last => last,
            },
        };
        self.record_error(now, err);
        if let Err(err) = self.persist(now) {
            tracing::error!(error = %err, "cannot save the state");
        }
    }

    /// Write the state and the heartbeat now (the service calls it on its way out).
    pub fn save_state(&mut self) -> Result<()> {
        let now = self.with(|s| s.state.updated_ms).max(0);
        self.persist(now)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    fn record_error(&mut self, now: i64, err: &Error) {
        // Not an exchange failure: the runner is stopping or the key was refused (handled apart).
        if self.exchange.stopping() || self.exchange.fatal().is_some() {
            return;
        }
        let unknown = self.exchange.take_unknown();
        self.with(|s| s.record_error(now, err, unknown));
    }

    /// The positions and open orders, each read whole (every page) or an error: a reconciliation
    /// that cannot see the whole account does not trade.
    async fn account_view(&self) -> Result<AccountView> {
        let positions = self.positions().await?;
        let open = self.exchange.open_orders().await.map_err(|err| exchange_error("open orders", err))?;
        Ok(AccountView { positions, open })
    }

    /// Steer the account to the engine's admitted targets for the bar that opened at `bar_ts`, in
    /// the engine's order: its exits at the close, its expired limits, then (on a decision bar) the
    /// rebalance, sized on the account after those exits with the engine's own trade rule
    /// ([`execution::rebalance_delta`]); last, the engine's stop levels as resting orders where the
    /// exchange simulates bars. False when the circuit breaker held new orders back (retried next cycle).
    async fn reconcile(&mut self, bar_ts: i64, now: i64, report: &mut CycleReport) -> Result<bool> {
        let kill = self.check_kill_switch(bar_ts, report).await?;
        let view = self.account_view().await?;
        let positions = view.positions.clone();
        // A decision holds for its whole bar: a re-run of this bar's reconciliation (stale orders, a
        // failure) steers to it again; the exits are sent once.
        let decided = self.pending_decision;
        // Kept until this reconciliation succeeds: a retry re-reads the position before each exit.
        let bar_orders = self.pending_bar_orders.clone();
        let (mut cancelled, mut held) = self.cancel_replaced_orders(view.open, bar_ts, now, decided, report).await?;
        if !self.cfg.live.trading {
            // A `stand aside` deploy: flat and staying flat, the model still stepping.
            report.skipped = self.symbols.iter().map(|s| (s.clone(), Skip::NotTrading)).collect();
            return self.flatten_all(bar_ts, &positions, FillReason::Flatten, report).await;
        }
        if kill.active && (kill.flatten || kill.paused) {
            report.kill_switch = true;
            return self.flatten_all(bar_ts, &positions, FillReason::KillSwitch, report).await;
        }
        if self.with(|s| breaker_open(&s.state, now)) {
            report.breaker_open = true;
            return Ok(false);
        }
        for order in &bar_orders {
            self.send_bar_order(order, &mut cancelled, bar_ts, now, report).await?;
        }
        let in_doubt = self.inherited_in_doubt(bar_ts, now).await?;
        held.extend(in_doubt.iter().cloned());
        if decided {
            self.rebalance_passes(bar_ts, now, &held, report).await?;
        }
        if self.exchange.resting_stops() {
            let positions = self.positions().await?;
            self.place_resting_stops(bar_ts, &positions, report).await?;
        }
        let equity = self.exchange.equity().await.map_err(|err| exchange_error("equity", err))?;
        self.equity_history.push((bar_ts, equity));
        self.pending_bar_orders.clear();
        // A symbol held back for an order in doubt is steered by a later cycle of this bar.
        Ok(in_doubt.is_empty())
    }

    /// The account's equity now (into the report and the state) and the account kill-switch's
    /// verdict on it for the bar `bar_ts` (its snapshot saved).
    async fn check_kill_switch(&mut self, bar_ts: i64, report: &mut CycleReport) -> Result<KillState> {
        let equity = self.exchange.equity().await.map_err(|err| exchange_error("equity", err))?;
        report.equity = Some(equity);
        let timeframe = self.timeframe;
        Ok(self.with(|s| {
            s.state.equity = Some(equity);
            let kill = s.kill.check(bar_ts, equity, timeframe);
            s.state.kill_switch = Some(s.kill.snapshot());
            kill
        }))
    }

    /// Cancel the open orders this reconciliation replaces. Rebalance orders of earlier bars are
    /// replaced at a decision bar (the engine replaces its resting limits then), orders older than
    /// `live.max_order_age_secs` and every order of a `stand aside` deploy at any bar; resting stops
    /// are placed anew every bar. A replacement waits until the cancel is confirmed: then the fills
    /// of the cancelled order are known. Returns the cancelled rebalance orders by symbol with their
    /// fills, and the symbols whose cancel is not confirmed yet (no new order for them this cycle).
    async fn cancel_replaced_orders(
        &mut self,
        open: Vec<Order>,
        bar_ts: i64,
        now: i64,
        decided: bool,
        report: &mut CycleReport,
    ) -> Result<(BTreeMap<String, (Order, f64)>, BTreeSet<String>)> {
        let prefix = client_order_id::bar_prefix(bar_ts);
        let mut cancelled: BTreeMap<String, (Order, f64)> = BTreeMap::new();
        let mut held: BTreeSet<String> = BTreeSet::new();
        for order in open {
            let this_bar = order.client_order_id.starts_with(&prefix);
            let stop_order = client_order_id::is_resting_stop(&order.client_order_id);
            let too_old = now - order.created_ms >= self.cfg.live.max_order_age_secs as i64 * 1000;
            if this_bar && !stop_order && !too_old {
                continue;
            }
            if !(stop_order || decided || too_old || !self.cfg.live.trading) {
                continue;
            }
            match self.cancel_confirmed(&order, bar_ts, report).await? {
                Some(filled) if !stop_order => {
                    cancelled.insert(order.symbol.clone(), (order, filled));
                }
                Some(_) => {}
                None => {
                    held.insert(order.symbol.clone());
                }
            }
        }
        Ok((cancelled, held))
    }

    /// Close every position with `reason` (a `stand aside` deploy, the account kill-switch); the
    /// engine's orders of this bar are done with. True: this bar's reconciliation is complete.
    async fn flatten_all(
        &mut self,
        bar_ts: i64,
        positions: &BTreeMap<String, f64>,
        reason: FillReason,
        report: &mut CycleReport,
    ) -> Result<bool> {
        let mut exits = Exits::default();
        let flattened = self.desk.flatten(bar_ts, positions, reason, &mut exits).await;
        report.orders_placed.extend(exits.placed);
        flattened?;
        self.pending_bar_orders.clear();
        Ok(true)
    }

    /// One of the engine's orders of the bar besides the rebalance: an exit at the close, or an
    /// expired limit (its resting order cancelled, unless `cancelled` already has it, and with a
    /// taker fallback what it left sent at market). A stop the engine filled inside the bar needs
    /// nothing here.
    async fn send_bar_order(
        &mut self,
        order: &BarOrder,
        cancelled: &mut BTreeMap<String, (Order, f64)>,
        bar_ts: i64,
        now: i64,
        report: &mut CycleReport,
    ) -> Result<()> {
        match *order {
            BarOrder::ExitAtClose { symbol, reason } => self.exit_at_close(symbol, reason, bar_ts, report).await,
            BarOrder::Expired { symbol, taker } => {
                let symbol = self.symbols[symbol].clone();
                let resting = match cancelled.remove(&symbol) {
                    Some(order) => Some(order),
                    None => self.cancel_rebalance_orders(&symbol, bar_ts, report).await?,
                };
                match (taker, resting) {
                    (true, Some((order, filled))) => {
                        self.send_what_is_left(symbol, &order, filled, bar_ts, now, report).await
                    }
                    _ => Ok(()),
                }
            }
            BarOrder::Exited { .. } => Ok(()),
        }
    }

    /// The engine's exit at the close of the symbol in column `column`: a reduce-only market order
    /// of the whole position under a fresh exit id.
    async fn exit_at_close(
        &mut self,
        column: usize,
        reason: FillReason,
        bar_ts: i64,
        report: &mut CycleReport,
    ) -> Result<()> {
        let symbol = self.symbols[column].clone();
        // Read again: a retry of this reconciliation must not exit twice.
        let qty = self.positions().await?.get(&symbol).copied().unwrap_or(0.0);
        if qty != 0.0 {
            let key = format!("{symbol}-{}", reason.as_str());
            let attempt = self.desk.reserve(&[key])?[0];
            let id = client_order_id::exit(bar_ts, &symbol, reason.as_str(), attempt);
            let mut exits = Exits::default();
            let sent = self.desk.exit(&symbol, qty, reason, id, &mut exits).await;
            report.orders_placed.extend(exits.placed);
            sent?;
        }
        Ok(())
    }

    /// An expired limit's taker fallback: what the cancelled `order` of `symbol` left after every fill the
    /// exchange reported (`filled`), sent at market when it stays within the target.
    async fn send_what_is_left(
        &mut self,
        symbol: String,
        order: &Order,
        filled: f64,
        bar_ts: i64,
        now: i64,
        report: &mut CycleReport,
    ) -> Result<()> {
        let left = order.qty - filled;
        if left > 1e-12 {
            let request = order_request(&symbol, order.side.sign() * left, None, FillReason::Rebalance);
            let view = self.account_view().await?;
            let position = view.positions.get(&symbol).copied().unwrap_or(0.0);
            let signed = order.side.sign() * left;
            let lot = self.instruments[&symbol].lot_size;
            if plan::within_target(position, view.open_units(&symbol), signed, position + signed, lot) {
                self.send_tracked(vec![request], bar_ts, now, report).await?;
            } else {
                report.skipped.push((symbol, Skip::BeyondTarget));
            }
        }
        Ok(())
    }

    /// A decision bar's rebalance, in passes: each re-reads the account, places what is missing, then
    /// reads the status of this bar's orders; an order the exchange cancelled is re-priced by the
    /// next pass. The symbols in `held` get no new order.
    async fn rebalance_passes(
        &mut self,
        bar_ts: i64,
        now: i64,
        held: &BTreeSet<String>,
        report: &mut CycleReport,
    ) -> Result<()> {
        let prefix = client_order_id::bar_prefix(bar_ts);
        let passes = self.cfg.live.max_reprices + 2;
        for _ in 0..passes {
            let view = self.account_view().await?;
            let equity = self.exchange.equity().await.map_err(|err| exchange_error("equity", err))?;
            let mut current: BTreeSet<String> = view
                .open
                .iter()
                .filter(|o| {
                    o.client_order_id.starts_with(&prefix) && !client_order_id::is_resting_stop(&o.client_order_id)
                })
                .map(|o| o.symbol.clone())
                .collect();
            current.extend(held.iter().cloned());
            let again = self.rebalance(bar_ts, now, equity, &view, &current, report).await?;
            let ended = self.check_orders(bar_ts, report).await?;
            if !again && ended.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// Symbols whose last rebalance id of the previous process (killed in this bar) the exchange
    /// does not show yet while it may still arrive: they get no new order until it is seen (then the
    /// account view has it) or [`IN_FLIGHT_MS`] passed since this process started.
    async fn inherited_in_doubt(&mut self, bar_ts: i64, now: i64) -> Result<BTreeSet<String>> {
        let prefix = client_order_id::bar_prefix(bar_ts);
        self.inherited.retain(|_, id| id.starts_with(&prefix));
        let patient = self.started_ms.is_some_and(|start| now - start < IN_FLIGHT_MS);
        let mut doubt = BTreeSet::new();
        for (symbol, id) in self.inherited.clone() {
            let status = self
                .exchange
                .order_status(&symbol, &id)
                .await
                .map_err(|err| exchange_error(&format!("order status {id}"), err))?;
            if status.is_some() || !patient {
                self.inherited.remove(&symbol);
            } else {
                tracing::warn!(%symbol, %id, "an order of the previous run may still be in flight; no new order yet");
                doubt.insert(symbol);
            }
        }
        Ok(doubt)
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

    /// Cancel `order`, then confirm it ended: `Some(filled)` with every fill the exchange reported
    /// for it (the larger of its own count and the execution list's), `None` while it still works.
    async fn cancel_confirmed(&self, order: &Order, bar_ts: i64, report: &mut CycleReport) -> Result<Option<f64>> {
        match self.exchange.cancel_order(&order.symbol, &order.client_order_id).await {
            Ok(()) | Err(ExchangeError::NotFound { .. }) => {}
            Err(err) => return Err(exchange_error(&format!("cancel {}", order.client_order_id), err)),
        }
        let status = self
            .exchange
            .order_status(&order.symbol, &order.client_order_id)
            .await
            .map_err(|err| exchange_error(&format!("order status {}", order.client_order_id), err))?;
        let mut filled = match status {
            Some(now) if now.status.is_open() => {
                tracing::warn!(id = %order.client_order_id, "cancel not confirmed yet; no replacement this cycle");
                return Ok(None);
            }
            Some(now) => now.filled_qty.max(order.filled_qty),
            None => order.filled_qty,
        };
        // Orders of this bar and the one before: the execution list since the earlier bar's end.
        let since = bar_ts - self.timeframe.ms;
        let executions = self.exchange.executions(since).await.map_err(|err| exchange_error("executions", err))?;
        let listed: f64 = executions.iter().filter(|e| e.client_order_id == order.client_order_id).map(|e| e.qty).sum();
        filled = filled.max(listed);
        if filled > order.filled_qty + 1e-12 {
            tracing::info!(id = %order.client_order_id, filled, "the cancelled order filled (more) before the cancel");
        }
        report.orders_cancelled.push(order.client_order_id.clone());
        self.with(|s| s.state.working.retain(|w| w.client_order_id != order.client_order_id));
        Ok(Some(filled))
    }

    /// Cancel `symbol`'s resting rebalance orders; returns the last one cancelled with its fills.
    async fn cancel_rebalance_orders(
        &mut self,
        symbol: &str,
        bar_ts: i64,
        report: &mut CycleReport,
    ) -> Result<Option<(Order, f64)>> {
        let open = self.exchange.open_orders().await.map_err(|err| exchange_error("open orders", err))?;
        let mut last = None;
        for order in
            open.into_iter().filter(|o| o.symbol == symbol && !client_order_id::is_resting_stop(&o.client_order_id))
        {
            if let Some(filled) = self.cancel_confirmed(&order, bar_ts, report).await? {
                last = Some((order, filled));
            }
        }
        Ok(last)
    }

    /// The rebalance of a decision bar: every symbol with an admitted target or a position, sized on
    /// the account with the engine's trade rule, rounded to the lot; the order style follows the fill
    /// model (`close`, `next_open`: market orders; `limit_touch`: post-only limits at the close ± the
    /// offset, one tick farther per re-price). Every order is checked against the target first.
    /// Returns whether another pass is due (an id was refused, a post-only was rejected).
    async fn rebalance(
        &mut self,
        bar_ts: i64,
        now: i64,
        equity: f64,
        view: &AccountView,
        current: &BTreeSet<String>,
        report: &mut CycleReport,
    ) -> Result<bool> {
        let mut requests = Vec::new();
        for column in 0..self.symbols.len() {
            if let Some(request) = self.rebalance_order(column, equity, view, current, now, report).await? {
                requests.push(request);
            }
        }
        self.send_tracked(requests, bar_ts, now, report).await
    }

    /// The rebalance order of the symbol in column `column`, checked against the target, or `None`:
    /// nothing to do (flat at a zero target, or an order of this bar still working: in `current`),
    /// or a reason in `report.skipped`.
    async fn rebalance_order(
        &mut self,
        column: usize,
        equity: f64,
        view: &AccountView,
        current: &BTreeSet<String>,
        now: i64,
        report: &mut CycleReport,
    ) -> Result<Option<OrderRequest>> {
        let target = self.engine.target_weights()[column];
        let symbol = self.symbols[column].clone();
        let position = view.positions.get(&symbol).copied().unwrap_or(0.0);
        if (target == 0.0 && position == 0.0) || current.contains(&symbol) {
            return Ok(None);
        }
        // The risk loop stopped this symbol out during this bar: the engine has not seen that bar
        // yet, so its target still holds the position; no re-entry before the next bar's decision
        // (where the engine's own stop and cooldown apply).
        if self.with(|s| s.stopped_this_bar(&symbol)) {
            report.skipped.push((symbol, Skip::StoppedThisBar));
            return Ok(None);
        }
        let price = self.sizing_price(column, &symbol).await?;
        let delta = execution::rebalance_delta(target, equity, price, position, self.cfg.backtest.min_rebalance_delta);
        if delta == 0.0 {
            report.skipped.push((symbol, if price > 0.0 { Skip::AtTarget } else { Skip::NoQuote }));
            return Ok(None);
        }
        let style = match self.plan_symbol(&symbol, delta, position).await? {
            Ok(planned) => self.order_style(&symbol, &planned, target == 0.0, now).map(|style| (planned, style)),
            Err(skip) => Err(skip),
        };
        let (planned, (limit, reduce_only)) = match style {
            Ok(planned) => planned,
            Err(skip) => {
                report.skipped.push((symbol, skip));
                return Ok(None);
            }
        };
        let signed = planned.side.sign() * planned.qty;
        let lot = self.instruments[&symbol].lot_size;
        // Never past the target: position + open orders + this order, one lot of slack.
        if !plan::within_target(position, view.open_units(&symbol), signed, position + delta, lot) {
            tracing::warn!(%symbol, position, open = view.open_units(&symbol), order = signed, target = position + delta, "order would go past the target; skipped");
            report.skipped.push((symbol, Skip::BeyondTarget));
            return Ok(None);
        }
        let mut request = order_request(&symbol, signed, limit, FillReason::Rebalance);
        request.reduce_only = reduce_only;
        Ok(Some(request))
    }

    /// The price the fill model sizes at: this bar's close, or the market now for `next_open`.
    async fn sizing_price(&self, column: usize, symbol: &str) -> Result<f64> {
        Ok(match self.cfg.execution.fill {
            FillPrice::Close | FillPrice::LimitTouch => self.last_close.get(column).copied().unwrap_or(f64::NAN),
            FillPrice::NextOpen => self.exchange.quote(symbol).await.map_err(|err| exchange_error("quote", err))?.last,
        })
    }

    /// The exchange order for a trade of `delta` units of `symbol` at its quote now, rounded to the
    /// instrument's rules ([`plan::plan_order`]), or why there is none.
    async fn plan_symbol(
        &self,
        symbol: &str,
        delta: f64,
        position: f64,
    ) -> Result<std::result::Result<PlannedOrder, Skip>> {
        let quote = self.exchange.quote(symbol).await.map_err(|err| exchange_error("quote", err))?;
        let instrument = &self.instruments[symbol];
        let book = plan::SymbolBook {
            symbol: symbol.to_string(),
            delta,
            position,
            bid: quote.bid,
            ask: quote.ask,
            qty_step: instrument.lot_size,
            min_qty: instrument.min_qty,
            tick_size: instrument.tick_size,
            min_notional: instrument.min_notional,
        };
        let inputs = plan::PlanInputs {
            price_offset_bps: self.cfg.execution.limit_offset_bps + self.cfg.live.price_offset_bps,
            dynamic_offset: self.cfg.live.dynamic_offset,
            max_spread_bps: self.cfg.live.max_spread_bps,
        };
        Ok(plan::plan_order(&book, &inputs).and_then(|planned| planned.ok_or(Skip::AtTarget)))
    }

    /// How `planned` goes out: its limit price (`limit_touch`: post-only, one tick farther from the
    /// market per re-price; `None`: a market order) and whether it is reduce-only. An exit (a zero
    /// target, `closing`) that waited `live.exit_patience_secs` or was re-priced more than
    /// `live.max_reprices` times goes at market, reduce-only; another order past its re-prices
    /// follows `execution.limit_fallback` (at market, or skipped).
    fn order_style(
        &self,
        symbol: &str,
        planned: &PlannedOrder,
        closing: bool,
        now: i64,
    ) -> std::result::Result<(Option<f64>, bool), Skip> {
        let max_reprices = self.cfg.live.max_reprices as u32;
        let patience_ms = self.cfg.live.exit_patience_secs as i64 * 1000;
        let (reprices, exit_since) = self
            .with(|s| (s.state.reprices.get(symbol).copied().unwrap_or(0), s.state.exit_since_ms.get(symbol).copied()));
        let mut limit = (self.cfg.execution.fill == FillPrice::LimitTouch).then(|| {
            // One tick farther from the market per re-price.
            let tick = self.instruments[symbol].tick_size;
            let away = reprices as f64 * tick;
            match planned.side {
                Side::Buy => plan::floor_to_step(planned.price - away, tick),
                Side::Sell => plan::ceil_to_step(planned.price + away, tick),
            }
        });
        let mut reduce_only = planned.reduce_only;
        if limit.is_some() && closing {
            let patience_over = patience_ms == 0 || exit_since.is_some_and(|t| now - t >= patience_ms);
            if patience_over || reprices > max_reprices {
                // An exit that waited long enough (or was cancelled too often) goes at market.
                limit = None;
                reduce_only = true;
            }
        } else if limit.is_some() && reprices > max_reprices {
            match self.cfg.execution.limit_fallback {
                LimitFallback::Taker => limit = None,
                LimitFallback::Cancel => return Err(Skip::RepriceLimit),
            }
        }
        Ok((limit, reduce_only))
    }

    /// Send rebalance orders: their ids are taken and saved first (one write for the batch), then
    /// each is sent and followed until it ends. One symbol's rejection never stops the others; a
    /// transient failure is returned after every order was tried. Returns whether another pass is
    /// due (an id was refused, a post-only was rejected at once).
    async fn send_tracked(
        &mut self,
        requests: Vec<super::types::OrderRequest>,
        bar_ts: i64,
        now: i64,
        report: &mut CycleReport,
    ) -> Result<bool> {
        let keys: Vec<String> = requests.iter().map(|r| r.symbol.clone()).collect();
        let attempts = self.desk.reserve(&keys)?;
        let targets = self.engine.target_weights().to_vec();
        let mut again = false;
        let mut first_error = None;
        for (mut request, attempt) in requests.into_iter().zip(attempts) {
            let symbol = request.symbol.clone();
            // The risk loop may have stopped the symbol out while this pass planned.
            if self.with(|s| s.stopped_this_bar(&symbol)) {
                report.skipped.push((symbol, Skip::StoppedThisBar));
                continue;
            }
            request.client_order_id = client_order_id::rebalance(bar_ts, &symbol, attempt);
            let exit_limit = request.price.is_some()
                && self.symbols.iter().position(|s| *s == symbol).is_some_and(|i| targets[i] == 0.0);
            match self.exchange.place_order(&request).await {
                Ok(order) => {
                    let id = request.client_order_id.clone();
                    self.with(|s| {
                        s.state.working.push(WorkingOrder {
                            client_order_id: id.clone(),
                            symbol: symbol.clone(),
                            qty: request.qty,
                        });
                        if exit_limit {
                            s.state.exit_since_ms.entry(symbol.clone()).or_insert(now);
                        }
                    });
                    if order.cancelled_by_exchange() {
                        // Adopted after a 110072 and already ended: the next status read handles it.
                        tracing::info!(%id, "adopted order was cancelled by the exchange");
                    }
                    report.orders_placed.push(id);
                }
                Err(ExchangeError::DuplicateOrder { client_order_id }) => {
                    // Taken and not to be found: the id is burned; the next pass uses the next one.
                    tracing::warn!(%symbol, id = %client_order_id, "order id refused as a duplicate; next id");
                    again = true;
                }
                Err(ExchangeError::OrderRejected { post_only: true, .. }) => {
                    // Refused at once as taking liquidity: re-priced by the next pass, one tick farther.
                    self.with(|s| *s.state.reprices.entry(symbol.clone()).or_insert(0) += 1);
                    report.orders_ended.push(request.client_order_id);
                    again = true;
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
        first_error.map_or(Ok(again), Err)
    }

    /// Read the status of this bar's working orders: open (still working), filled (the execution
    /// list has it all), or ended otherwise (looked up by its id). The symbols of orders the
    /// exchange cancelled (a post-only that would have taken liquidity) are returned and count as a
    /// re-price.
    async fn check_orders(&mut self, bar_ts: i64, report: &mut CycleReport) -> Result<Vec<String>> {
        let working = self.with(|s| s.state.working.clone());
        if working.is_empty() {
            return Ok(Vec::new());
        }
        let open = self.exchange.open_orders().await.map_err(|err| exchange_error("open orders", err))?;
        let open: BTreeSet<String> = open.into_iter().map(|o| o.client_order_id).collect();
        let executions = self
            .exchange
            .executions(bar_ts + self.timeframe.ms)
            .await
            .map_err(|err| exchange_error("executions", err))?;
        let mut filled: BTreeMap<&str, f64> = BTreeMap::new();
        for execution in &executions {
            *filled.entry(execution.client_order_id.as_str()).or_insert(0.0) += execution.qty;
        }
        let mut keep = Vec::new();
        let mut ended = Vec::new();
        for order in working {
            if open.contains(&order.client_order_id) {
                keep.push(order);
                continue;
            }
            if filled.get(order.client_order_id.as_str()).copied().unwrap_or(0.0) >= order.qty - 1e-9 {
                continue;
            }
            let status = self
                .exchange
                .order_status(&order.symbol, &order.client_order_id)
                .await
                .map_err(|err| exchange_error(&format!("order status {}", order.client_order_id), err))?;
            match status {
                Some(now) if now.status.is_open() => keep.push(order),
                Some(now) if now.cancelled_by_exchange() => {
                    tracing::info!(
                        id = %order.client_order_id,
                        reason = now.reject_reason.as_deref().unwrap_or(""),
                        "the exchange cancelled the order; re-priced under the next id"
                    );
                    self.with(|s| *s.state.reprices.entry(order.symbol.clone()).or_insert(0) += 1);
                    report.orders_placed.retain(|id| *id != order.client_order_id);
                    report.orders_ended.push(order.client_order_id.clone());
                    ended.push(order.symbol.clone());
                }
                _ => {}
            }
        }
        self.with(|s| {
            // Orders sent meanwhile (none: one cycle at a time) are kept.
            s.state.working = keep;
        });
        Ok(ended)
    }

    /// Exits (target 0) that rested longer than `live.exit_patience_secs`: their limits are
    /// cancelled (confirmed) so that the reconciliation sends them reduce-only at market.
    async fn cancel_impatient_exits(&mut self, now: i64, report: &mut CycleReport) -> Result<bool> {
        let patience_ms = self.cfg.live.exit_patience_secs as i64 * 1000;
        let due: Vec<String> = self.with(|s| {
            s.state.exit_since_ms.iter().filter(|(_, t)| now - **t >= patience_ms).map(|(s, _)| s.clone()).collect()
        });
        if due.is_empty() {
            return Ok(false);
        }
        let bar_ts = self.with(|s| s.state.last_bar_ts).unwrap_or(0);
        let mut any = false;
        for symbol in due {
            let i = self.symbols.iter().position(|s| *s == symbol);
            if i.is_none_or(|i| self.engine.target_weights()[i] != 0.0) {
                continue;
            }
            if self.cancel_rebalance_orders(&symbol, bar_ts, report).await?.is_some() {
                tracing::info!(%symbol, "exit waited longer than live.exit_patience_secs: reduce-only at market");
                any = true;
            }
        }
        Ok(any)
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
            let [cat, sl, tp] = client_order_id::RESTING_STOP_TAGS;
            let mut levels =
                vec![(cat, stop.catastrophic, FillReason::Stop, 1.0), (sl, stop.stop, stop.stop_reason, 1.0)];
            if !stop.partial_done && stops_cfg.partial_tp_frac > 0.0 {
                levels.push((
                    tp,
                    stop.take_profit_level(&stops_cfg),
                    FillReason::TakeProfit,
                    stops_cfg.partial_tp_frac,
                ));
            }
            for (suffix, level, reason, fraction) in levels {
                let mut request = order_request(&symbol, -position * fraction, None, reason);
                request.reduce_only = true;
                request.trigger_price = Some(level);
                request.close_fraction = Some(fraction);
                request.client_order_id = client_order_id::new(bar_ts, &symbol, suffix);
                match self.exchange.place_order(&request).await {
                    Ok(_) => report.orders_placed.push(request.client_order_id),
                    // Placed by an earlier run of this bar's reconciliation.
                    Err(ExchangeError::DuplicateOrder { .. }) => {}
                    Err(err) => return Err(exchange_error(&format!("stop order {symbol}"), err)),
                }
            }
        }
        Ok(())
    }

    /// Cancel this bar's resting orders that are older than `max_order_age_secs` or farther than
    /// `reprice_bps` from the touch (live.md §2.5), each confirmed; the next reconciliation
    /// re-places them under the next attempt id. Returns how many were cancelled.
    async fn cancel_stale_orders(&mut self, bar_ts: i64, now: i64, report: &mut CycleReport) -> Result<usize> {
        let max_age_ms = self.cfg.live.max_order_age_secs as i64 * 1000;
        let reprice_bps = self.cfg.live.reprice_bps;
        let open = self.exchange.open_orders().await.map_err(|err| exchange_error("open orders", err))?;
        let prefix = client_order_id::bar_prefix(bar_ts);
        let mut cancelled = 0;
        for order in open.into_iter().filter(|o| o.client_order_id.starts_with(&prefix)) {
            if client_order_id::is_resting_stop(&order.client_order_id) {
                continue;
            }
            let too_old = now - order.created_ms >= max_age_ms;
            let too_far = match order.price {
                Some(price) if !too_old => {
                    let quote = self.exchange.quote(&order.symbol).await.map_err(|err| exchange_error("quote", err))?;
                    let touch = if order.side == Side::Buy { quote.bid } else { quote.ask };
                    touch > 0.0 && (price - touch).abs() / touch * BPS > reprice_bps
                }
                _ => false,
            };
            if !(too_old || too_far) {
                continue;
            }
            if self.cancel_confirmed(&order, bar_ts, report).await?.is_some() {
                tracing::info!(symbol = %order.symbol, id = %order.client_order_id, too_old, too_far, "stale order cancelled");
                cancelled += 1;
            }
        }
        Ok(cancelled)
    }

    /// The risk loop's check (live.md §3), run every `live.fast_check_secs` — by the service as a
    /// task of its own ([`Runner::risk_desk`]); here for a caller that steps it by hand. Returns the
    /// exit order ids.
    pub async fn risk_check(&mut self) -> Result<Vec<String>> {
        self.desk.check().await
    }

    /// Swap in a new config between cycles: validated first (an invalid one is rejected and the
    /// old one keeps running), then the model is rebuilt from its first bar with the new config.
    pub async fn reload(&mut self, cfg: Config, config_text: &str) -> Result<()> {
        cfg.validate()?;
        if cfg.timeframe() != self.timeframe {
            return Err(Error::config("live reload: data.timeframe cannot change while running; restart instead"));
        }
        let mut engine = Engine::new(&self.symbols, self.timeframe, &vec![true; self.symbols.len()], &cfg, false)?;
        let (model_start, last_bar) = self.with(|s| (s.state.model_start_ts, s.state.last_bar_ts));
        if let (Some(start), Some(last)) = (model_start, last_bar) {
            if let Some((panel, funding)) = self.fetch_panel(start, last + self.timeframe.ms).await? {
                for t in 0..panel.n_bars() {
                    engine.step(&panel.bar_row(t, &funding));
                }
            }
        }
        self.engine = engine;
        self.with(|s| s.kill = KillSwitch::restore(&cfg.risk.kill_switch, &s.kill.snapshot()));
        self.cfg = cfg;
        self.config_version = config_version(config_text);
        self.publish()?;
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
        let symbols = self.symbol_states();
        let meta = self.engine.meta_label().map(|m| m.snapshot());
        let version = self.config_version.clone();
        let last_bar = self.with(|s| {
            s.state.symbols = symbols;
            s.state.meta_label = meta;
            s.state.config_version = version;
            s.state.updated_ms = now;
            s.state.save(&self.opts.state_path).map(|_| s.state.last_bar_ts)
        })?;
        let heartbeat = Heartbeat {
            last_bar_ts: last_bar,
            mode: self.opts.mode.clone(),
            timeframe_ms: self.timeframe.ms,
            ts_ms: now,
        };
        heartbeat.write(&self.opts.heartbeat_path)
    }
}

/// Resting stop and take-profit orders of [`Runner::place_resting_stops`].
fn host_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Version of a config: the first 8 hex digits of the SHA-256 of its text.
pub fn config_version(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// The client order ids the previous run may still have in flight: per symbol, the id of its last
/// rebalance attempt at the saved bar (none without a saved state or bar).
fn inherited_order_ids(loaded: Option<&LiveState>, symbols: &[String]) -> BTreeMap<String, String> {
    let Some((saved, bar)) = loaded.and_then(|s| s.last_bar_ts.map(|bar| (s, bar))) else {
        return BTreeMap::new();
    };
    symbols
        .iter()
        .filter_map(|symbol| {
            let attempt = *saved.order_attempts.get(symbol)?;
            Some((symbol.clone(), client_order_id::rebalance(bar, symbol, attempt)))
        })
        .collect()
}
