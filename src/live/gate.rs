//! Every request of the runner passes this gate (issue 15): after SIGTERM or after the exchange
//! refused our key, nothing new is sent (a request already under way is awaited by its caller);
//! and the gate remembers what kind of failure it saw, so the service can stop on an auth error
//! and the circuit breaker can open on an unknown one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::exchange::Exchange;
use super::types::{
    ErrorClass, ExchangeError, ExchangeResult, Execution, FundingRate, Instrument, Kline, Order, OrderRequest,
    Position, Quote,
};
use crate::timeframe::Timeframe;

pub struct Gate<E> {
    inner: E,
    /// Set by SIGTERM: no new request.
    stop: RwLock<Arc<AtomicBool>>,
    /// The first auth / permission refusal: trading stops, nothing more is sent.
    fatal: Mutex<Option<ExchangeError>>,
    /// An error of no known kind was returned since the last [`Gate::take_unknown`].
    unknown: AtomicBool,
    /// Requests sent through the gate (for reports and tests).
    sent: std::sync::atomic::AtomicU64,
}

impl<E> Gate<E> {
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            stop: RwLock::new(Arc::new(AtomicBool::new(false))),
            fatal: Mutex::new(None),
            unknown: AtomicBool::new(false),
            sent: Default::default(),
        }
    }

    pub fn inner(&self) -> &E {
        &self.inner
    }

    pub fn into_inner(self) -> E {
        self.inner
    }

    /// Share the service's stop flag (SIGTERM): once it is set, no request leaves.
    pub fn set_stop_flag(&self, flag: Arc<AtomicBool>) {
        *self.stop.write().expect("gate poisoned") = flag;
    }

    pub fn stopping(&self) -> bool {
        self.stop.read().expect("gate poisoned").load(Ordering::SeqCst)
    }

    /// The auth or permission error that stopped trading, if any.
    pub fn fatal(&self) -> Option<ExchangeError> {
        self.fatal.lock().expect("gate poisoned").clone()
    }

    /// Whether an error of unknown kind was seen since the last call.
    pub fn take_unknown(&self) -> bool {
        self.unknown.swap(false, Ordering::SeqCst)
    }

    pub fn requests_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn open(&self, endpoint: &str) -> ExchangeResult<()> {
        if self.stopping() || self.fatal.lock().expect("gate poisoned").is_some() {
            return Err(ExchangeError::Stopped { endpoint: endpoint.into() });
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn note<T>(&self, result: ExchangeResult<T>) -> ExchangeResult<T> {
        if let Err(err) = &result {
            match err.class() {
                ErrorClass::Fatal => {
                    let mut fatal = self.fatal.lock().expect("gate poisoned");
                    if fatal.is_none() {
                        tracing::error!(error = %err, "the exchange refused the API key or its permissions: trading stops");
                        *fatal = Some(err.clone());
                    }
                }
                ErrorClass::Unknown => self.unknown.store(true, Ordering::SeqCst),
                _ => {}
            }
        }
        result
    }
}

impl<E: Exchange> Exchange for Gate<E> {
    async fn server_time_ms(&self) -> ExchangeResult<i64> {
        self.open("server time")?;
        self.note(self.inner.server_time_ms().await)
    }
    async fn instruments(&self, symbols: &[String]) -> ExchangeResult<Vec<Instrument>> {
        self.open("instruments")?;
        self.note(self.inner.instruments(symbols).await)
    }
    async fn closed_klines(
        &self,
        symbol: &str,
        interval: Timeframe,
        start_ms: i64,
        end_ms: i64,
    ) -> ExchangeResult<Vec<Kline>> {
        self.open("klines")?;
        self.note(self.inner.closed_klines(symbol, interval, start_ms, end_ms).await)
    }
    async fn closed_mark_klines(
        &self,
        symbol: &str,
        interval: Timeframe,
        start_ms: i64,
        end_ms: i64,
    ) -> ExchangeResult<Vec<Kline>> {
        self.open("mark klines")?;
        self.note(self.inner.closed_mark_klines(symbol, interval, start_ms, end_ms).await)
    }
    async fn funding_history(&self, symbol: &str, start_ms: i64, end_ms: i64) -> ExchangeResult<Vec<FundingRate>> {
        self.open("funding")?;
        self.note(self.inner.funding_history(symbol, start_ms, end_ms).await)
    }
    async fn quote(&self, symbol: &str) -> ExchangeResult<Quote> {
        self.open("quote")?;
        self.note(self.inner.quote(symbol).await)
    }
    async fn positions(&self) -> ExchangeResult<Vec<Position>> {
        self.open("positions")?;
        self.note(self.inner.positions().await)
    }
    async fn open_orders(&self) -> ExchangeResult<Vec<Order>> {
        self.open("open orders")?;
        self.note(self.inner.open_orders().await)
    }
    async fn equity(&self) -> ExchangeResult<f64> {
        self.open("equity")?;
        self.note(self.inner.equity().await)
    }
    async fn place_order(&self, request: &OrderRequest) -> ExchangeResult<Order> {
        self.open("order create")?;
        self.note(self.inner.place_order(request).await)
    }
    async fn cancel_order(&self, symbol: &str, client_order_id: &str) -> ExchangeResult<()> {
        self.open("order cancel")?;
        self.note(self.inner.cancel_order(symbol, client_order_id).await)
    }
    async fn cancel_all(&self, symbol: Option<&str>) -> ExchangeResult<()> {
        self.open("cancel all")?;
        self.note(self.inner.cancel_all(symbol).await)
    }
    async fn order_status(&self, symbol: &str, client_order_id: &str) -> ExchangeResult<Option<Order>> {
        self.open("order status")?;
        self.note(self.inner.order_status(symbol, client_order_id).await)
    }
    async fn executions(&self, since_ms: i64) -> ExchangeResult<Vec<Execution>> {
        self.open("executions")?;
        self.note(self.inner.executions(since_ms).await)
    }
    fn resting_stops(&self) -> bool {
        self.inner.resting_stops()
    }
}
