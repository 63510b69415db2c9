//! The risk loop's side of the runner (live.md §3): what the main cycle and the risk loop share,
//! and the exits the risk loop sends. It runs as a task of its own (see [`super::service`]) on a
//! handle to the same exchange, so an order request of the main cycle that hangs never holds a
//! stop or the kill-switch back; both sides lock the shared part only between awaits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::exchange::Exchange;
use super::gate::Gate;
use super::state::LiveState;
use super::types::{ExchangeError, OrderRequest, OrderType, TimeInForce};
use crate::config::BreakerConfig;
use crate::error::{Error, Result};
use crate::model::{client_order_id, FillReason, Side};
use crate::risk::{KillSwitch, StopState};
use crate::timeframe::Timeframe;

/// What the main cycle and the risk loop share.
pub struct Shared {
    pub state: LiveState,
    pub kill: KillSwitch,
    /// The model's stop state per symbol after the last bar stepped.
    pub stops: Vec<Option<StopState>>,
    pub stop_timeframe: Option<Timeframe>,
    pub breaker: BreakerConfig,
    pub fast_check_secs: usize,
    /// The exchange clock at the last check or cycle (errors are stamped on the exchange's clock).
    pub last_now_ms: i64,
}

impl Shared {
    /// Count an API failure for the circuit breaker (live.md §3); `open_now` (an error of no known
    /// kind) opens it at once.
    pub fn record_error(&mut self, now: i64, err: &dyn std::fmt::Display, open_now: bool) {
        let window = self.breaker.window_secs as i64 * 1000;
        self.state.breaker_errors_ms.retain(|t| now - t < window);
        self.state.breaker_errors_ms.push(now);
        if self.state.breaker_errors_ms.len() >= self.breaker.max_errors || open_now {
            self.state.breaker_paused_until_ms = Some(now + self.breaker.cooldown_secs as i64 * 1000);
            self.state.breaker_errors_ms.clear();
            tracing::error!(
                error = %err,
                unknown = open_now,
                "API circuit breaker open: no new risk for {} s",
                self.breaker.cooldown_secs
            );
        }
    }

    /// Whether the risk loop sent (or tried) a stop exit of `symbol` in this bar.
    pub fn stopped_this_bar(&self, symbol: &str) -> bool {
        self.state.order_attempts.contains_key(&format!("{symbol}-stop"))
    }
}

/// The risk loop: the stop machine on last-trade prices and the account kill-switch, with its
/// exits (reduce-only market orders, each attempt under a fresh id saved before it is sent).
pub struct RiskDesk<E> {
    pub(crate) exchange: Arc<Gate<E>>,
    pub(crate) shared: Arc<Mutex<Shared>>,
    pub(crate) symbols: Vec<String>,
    pub(crate) timeframe: Timeframe,
    pub(crate) state_path: PathBuf,
}

impl<E> Clone for RiskDesk<E> {
    fn clone(&self) -> Self {
        Self {
            exchange: Arc::clone(&self.exchange),
            shared: Arc::clone(&self.shared),
            symbols: self.symbols.clone(),
            timeframe: self.timeframe,
            state_path: self.state_path.clone(),
        }
    }
}

/// A market order for `delta` units (a limit when `limit` is set); the id is set by the caller.
pub fn order_request(symbol: &str, delta: f64, limit: Option<f64>, reason: FillReason) -> OrderRequest {
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

pub fn exchange_error(what: &str, err: ExchangeError) -> Error {
    Error::invalid(format!("exchange: {what}: {err}"))
}

/// What a risk check or an exit did.
#[derive(Debug, Default)]
pub struct Exits {
    pub placed: Vec<String>,
}

impl<E: Exchange> RiskDesk<E> {
    pub fn with<R>(&self, f: impl FnOnce(&mut Shared) -> R) -> R {
        f(&mut self.shared.lock().expect("runner state poisoned"))
    }

    pub fn gate(&self) -> &Gate<E> {
        &self.exchange
    }

    /// Write the state file (atomically).
    pub fn save(&self) -> Result<()> {
        self.with(|s| s.state.save(&self.state_path))
    }

    /// The next attempt number of each key, written to the state file before it returns: an id is
    /// never sent before it is saved, so a restart never sends it again.
    pub fn reserve(&self, keys: &[String]) -> Result<Vec<u32>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.with(|s| {
            let attempts = keys.iter().map(|k| s.state.next_attempt(k)).collect();
            s.state.save(&self.state_path)?;
            Ok(attempts)
        })
    }

    /// A failure of the risk loop, for the circuit breaker.
    pub fn record_failure(&self, err: &Error) {
        if self.exchange.stopping() || self.exchange.fatal().is_some() {
            return;
        }
        let unknown = self.exchange.take_unknown();
        self.with(|s| {
            let now = s.last_now_ms;
            s.record_error(now, err, unknown)
        });
        if let Err(err) = self.save() {
            tracing::error!(error = %err, "cannot save the state");
        }
    }

    /// One check of the risk loop (every `live.fast_check_secs`): the account kill-switch on the
    /// current equity (flatten, and again at every check until flat), then the model's stop levels
    /// on the last trade of every open position (a hit cancels the symbol's resting orders and
    /// closes it with a reduce-only market order, again at every check until flat). One symbol's
    /// failed exit never stops the others; the first error is returned after all were tried.
    pub async fn check(&self) -> Result<Vec<String>> {
        let Some(bar_ts) = self.with(|s| s.state.last_bar_ts) else { return Ok(Vec::new()) };
        let now = self.exchange.server_time_ms().await.map_err(|err| exchange_error("server time", err))?;
        self.with(|s| s.last_now_ms = now);
        let positions = self.exchange.positions().await.map_err(|err| exchange_error("positions", err))?;
        let equity = self.exchange.equity().await.map_err(|err| exchange_error("equity", err))?;
        let timeframe = self.timeframe;
        let kill = self.with(|s| {
            let kill = s.kill.check(bar_ts, equity, timeframe);
            s.state.kill_switch = Some(s.kill.snapshot());
            kill
        });
        let mut exits = Exits::default();
        if kill.active && (kill.flatten || kill.paused) && !positions.is_empty() {
            let book: BTreeMap<String, f64> = positions.iter().map(|p| (p.symbol.clone(), p.qty)).collect();
            tracing::error!(equity, "daily kill-switch: cancelling orders and flattening");
            let flattened = self.flatten(bar_ts, &book, FillReason::KillSwitch, &mut exits).await;
            self.save()?;
            flattened?;
            return Ok(exits.placed);
        }
        let stop_timeframe = self.with(|s| s.stop_timeframe);
        let mut first_error = None;
        for position in positions {
            let Some(i) = self.symbols.iter().position(|s| *s == position.symbol) else { continue };
            let Some(stop) = self.with(|s| s.stops.get(i).cloned().flatten()) else { continue };
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
                Some(fine) => {
                    let since = bar_ts + self.timeframe.ms;
                    let bars = self
                        .exchange
                        .closed_klines(&position.symbol, fine, since, now)
                        .await
                        .map_err(|err| exchange_error(&format!("stop bars {}", position.symbol), err))?;
                    bars.iter().find_map(|b| stop.test(b.open, b.high, b.low))
                }
            };
            let Some((price, reason)) = hit else { continue };
            tracing::warn!(symbol = %position.symbol, price, reason = reason.as_str(), "stop hit: reduce-only exit");
            if let Err(err) = self.stop_exit(bar_ts, &position.symbol, position.qty, reason, &mut exits).await {
                tracing::error!(symbol = %position.symbol, error = %err, "stop exit failed; retried at the next check");
                first_error.get_or_insert(err);
            }
        }
        if !exits.placed.is_empty() {
            self.save()?;
        }
        first_error.map_or(Ok(exits.placed), Err)
    }

    /// A stop exit: the symbol's resting orders are cancelled (no re-entry from a resting buy),
    /// then the position is closed at market, reduce-only, under `xs-<bar>-<symbol>-stop` (later
    /// attempts `-stop-<n>`).
    async fn stop_exit(
        &self,
        bar_ts: i64,
        symbol: &str,
        qty: f64,
        reason: FillReason,
        exits: &mut Exits,
    ) -> Result<()> {
        let open = self.exchange.open_orders().await.map_err(|err| exchange_error("open orders", err))?;
        for order in open.iter().filter(|o| o.symbol == symbol && !o.reduce_only) {
            match self.exchange.cancel_order(symbol, &order.client_order_id).await {
                Ok(()) | Err(ExchangeError::NotFound { .. }) => {}
                Err(err) => return Err(exchange_error(&format!("cancel {}", order.client_order_id), err)),
            }
        }
        let attempt = self.reserve(&[format!("{symbol}-stop")])?[0];
        let id = client_order_id::exit(bar_ts, symbol, "stop", attempt);
        self.exit(symbol, qty, reason, id.clone(), exits).await?;
        self.with(|s| s.state.stop_exits.push(id));
        Ok(())
    }

    /// Kill-switch or stand-aside: cancel everything and close every position with reduce-only
    /// market orders, each under a fresh id (`xs-<bar>-<symbol>-kill-<n>` / `-flat-<n>`).
    pub async fn flatten(
        &self,
        bar_ts: i64,
        positions: &BTreeMap<String, f64>,
        reason: FillReason,
        exits: &mut Exits,
    ) -> Result<()> {
        self.exchange.cancel_all(None).await.map_err(|err| exchange_error("cancel all", err))?;
        let kind = if reason == FillReason::KillSwitch { "kill" } else { "flat" };
        let held: Vec<(&String, f64)> = positions.iter().filter(|(_, q)| **q != 0.0).map(|(s, q)| (s, *q)).collect();
        let keys: Vec<String> = held.iter().map(|(symbol, _)| format!("{symbol}-{kind}")).collect();
        let attempts = self.reserve(&keys)?;
        let mut first_error = None;
        for ((symbol, qty), attempt) in held.into_iter().zip(attempts) {
            let id = client_order_id::numbered(bar_ts, symbol, kind, attempt);
            if let Err(err) = self.exit(symbol, qty, reason, id, exits).await {
                tracing::error!(%symbol, error = %err, "exit failed; retried at the next check");
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// A reduce-only market exit of the whole `position` under `id` (already saved).
    pub async fn exit(
        &self,
        symbol: &str,
        position: f64,
        reason: FillReason,
        id: String,
        exits: &mut Exits,
    ) -> Result<()> {
        let mut request = order_request(symbol, -position, None, reason);
        request.reduce_only = true;
        request.client_order_id = id;
        match self.exchange.place_order(&request).await {
            Ok(_) => {
                exits.placed.push(request.client_order_id);
                Ok(())
            }
            Err(err) => Err(exchange_error(&format!("exit {}", request.client_order_id), err)),
        }
    }
}
