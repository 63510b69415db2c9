//! What the runner and the exchanges exchange: instruments, quotes, positions, orders, bars, and
//! typed errors (live.md §1).

use std::fmt;

use crate::model::{FillReason, Side};

/// Trading rules of one perpetual: quantities are multiples of `lot_size` between `min_qty` and
/// `max_qty`, prices multiples of `tick_size`, and an order's notional at least `min_notional`.
#[derive(Debug, Clone, PartialEq)]
pub struct Instrument {
    pub symbol: String,
    pub lot_size: f64,
    pub min_qty: f64,
    pub max_qty: f64,
    pub tick_size: f64,
    pub min_notional: f64,
}

/// Top of the book and the last trade.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quote {
    pub bid: f64,
    pub ask: f64,
    pub last: f64,
    pub ts: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    pub symbol: String,
    /// Signed contracts (+ long).
    pub qty: f64,
    pub avg_price: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderType {
    Limit,
    Market,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeInForce {
    PostOnly,
    Gtc,
    Ioc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderRequest {
    pub symbol: String,
    pub side: Side,
    pub qty: f64,
    pub price: Option<f64>,
    pub order_type: OrderType,
    pub tif: TimeInForce,
    pub reduce_only: bool,
    pub client_order_id: String,
    /// A conditional (stop-market) order: a market order sent when the price reaches this level
    /// (a sell when it falls to it, a buy when it rises to it; a take-profit the other way).
    pub trigger_price: Option<f64>,
    /// With a trigger: close this fraction of the position held when it triggers (a position
    /// stop-loss / take-profit, as Bybit's `tpslMode`), not a fixed quantity.
    pub close_fraction: Option<f64>,
    /// Why the order is sent (the fills' `reason`; the simulated accounts price and charge by it).
    pub reason: FillReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    New,
    PartiallyFilled,
    Filled,
    Cancelled,
    Rejected,
}

impl OrderStatus {
    pub fn is_open(self) -> bool {
        matches!(self, OrderStatus::New | OrderStatus::PartiallyFilled)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub order_id: String,
    pub client_order_id: String,
    pub symbol: String,
    pub side: Side,
    pub qty: f64,
    pub filled_qty: f64,
    pub price: Option<f64>,
    pub status: OrderStatus,
    pub reduce_only: bool,
    pub created_ms: i64,
    /// Why the exchange cancelled or rejected it (Bybit's `rejectReason`, e.g.
    /// `EC_PostOnlyWillTakeLiquidity`); `None` for an order that is working, filled, or was
    /// cancelled by us.
    pub reject_reason: Option<String>,
}

impl Order {
    /// The exchange, not we, ended this order (a post-only that would have taken liquidity, …).
    pub fn cancelled_by_exchange(&self) -> bool {
        matches!(self.status, OrderStatus::Cancelled | OrderStatus::Rejected) && self.reject_reason.is_some()
    }
}

/// One bar; `ts` is its open time (epoch ms UTC).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kline {
    pub ts: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    /// Quote volume (USDT).
    pub turnover: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FundingRate {
    pub ts: i64,
    pub rate: f64,
}

/// A fill reported by a simulated exchange (replay / paper).
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub ts: i64,
    pub symbol: String,
    pub side: Side,
    pub qty: f64,
    pub price: f64,
    pub fee: f64,
    pub maker: bool,
    pub client_order_id: String,
    pub reason: FillReason,
}

/// Exchange failures, typed so that the runner can decide: retry, re-price, pause, or stop.
/// Messages never carry credentials.
#[derive(Debug, Clone, PartialEq)]
pub enum ExchangeError {
    /// retCode 10006 or HTTP 429.
    RateLimited {
        retry_after_ms: u64,
    },
    /// retCode 10001.
    InvalidParams {
        code: i64,
        message: String,
    },
    /// retCode 110xxx; `post_only` when a post-only order would have taken liquidity.
    OrderRejected {
        code: i64,
        message: String,
        post_only: bool,
    },
    /// Bad key, signature or timestamp (10003, 10004, 10005, 10002).
    Auth {
        code: i64,
        message: String,
    },
    /// The order id is already used (a restart re-sending an order that exists).
    DuplicateOrder {
        client_order_id: String,
    },
    NotFound {
        what: String,
    },
    Timeout {
        endpoint: String,
    },
    Http {
        endpoint: String,
        status: u16,
    },
    Transport {
        endpoint: String,
        message: String,
    },
    Decode {
        endpoint: String,
        message: String,
    },
    /// The exchange failed on its side: retCode 10000 (server timeout) or 10016 (internal error, the
    /// service restarting). Transient, as HTTP 5xx: retried, and an order create is looked up first.
    Server {
        code: i64,
        message: String,
    },
    Other {
        code: i64,
        message: String,
    },
    /// Not sent: the runner is stopping (SIGTERM) or trading was stopped by an auth failure.
    Stopped {
        endpoint: String,
    },
}

/// What the runner does about an exchange error (live.md §1, issue 15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The exchange refuses our key or its permissions (retCode 10003/10004/10005/10010/33004,
    /// HTTP 401/403): stop trading, alert once, exit with [`EXIT_AUTH`].
    Fatal,
    /// Worth trying again later (rate limit, timeout, transport, HTTP 5xx, a clock outside the
    /// recv-window): back off.
    Transient,
    /// The exchange understood and refused this one request (an order rule, a duplicate id, an
    /// order that no longer exists): handled where it happened.
    Rejected,
    /// Anything else: the exchange misbehaves in a way we do not know; the circuit breaker opens.
    Unknown,
    /// The request was not sent (stopping).
    NotSent,
}

/// Exit status of `xsmom-live run` after the exchange refused the API key or its permissions;
/// the systemd unit does not restart on it (`RestartPreventExitStatus`).
pub const EXIT_AUTH: u8 = 78;

impl ExchangeError {
    pub fn class(&self) -> ErrorClass {
        match self {
            ExchangeError::Auth { code: 10003 | 10004 | 10005 | 10010 | 33004, .. }
            | ExchangeError::Http { status: 401 | 403, .. } => ErrorClass::Fatal,
            ExchangeError::Auth { .. } => ErrorClass::Transient,
            err if err.is_retryable() => ErrorClass::Transient,
            ExchangeError::InvalidParams { .. }
            | ExchangeError::OrderRejected { .. }
            | ExchangeError::DuplicateOrder { .. }
            | ExchangeError::NotFound { .. } => ErrorClass::Rejected,
            ExchangeError::Stopped { .. } => ErrorClass::NotSent,
            _ => ErrorClass::Unknown,
        }
    }

    /// Worth retrying the same request (after a pause).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ExchangeError::RateLimited { .. }
                | ExchangeError::Timeout { .. }
                | ExchangeError::Transport { .. }
                | ExchangeError::Http { status: 500..=599, .. }
                | ExchangeError::Server { .. }
        )
    }
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::RateLimited { retry_after_ms } => {
                write!(f, "rate limited (retry after {retry_after_ms} ms)")
            }
            ExchangeError::InvalidParams { code, message } => {
                write!(f, "invalid parameters (retCode {code}): {message}")
            }
            ExchangeError::OrderRejected { code, message, .. } => {
                write!(f, "order rejected (retCode {code}): {message}")
            }
            ExchangeError::Auth { code, message } => write!(f, "authentication failed (retCode {code}): {message}"),
            ExchangeError::DuplicateOrder { client_order_id } => write!(f, "duplicate order id {client_order_id}"),
            ExchangeError::NotFound { what } => write!(f, "not found: {what}"),
            ExchangeError::Timeout { endpoint } => write!(f, "{endpoint}: timed out"),
            ExchangeError::Http { endpoint, status } => write!(f, "{endpoint}: HTTP {status}"),
            ExchangeError::Transport { endpoint, message } => write!(f, "{endpoint}: {message}"),
            ExchangeError::Decode { endpoint, message } => {
                write!(f, "{endpoint}: cannot decode the response: {message}")
            }
            ExchangeError::Server { code, message } => write!(f, "exchange server error (retCode {code}): {message}"),
            ExchangeError::Other { code, message } => write!(f, "exchange error (retCode {code}): {message}"),
            ExchangeError::Stopped { endpoint } => write!(f, "{endpoint}: not sent (the runner is stopping)"),
        }
    }
}

impl std::error::Error for ExchangeError {}

pub type ExchangeResult<T> = std::result::Result<T, ExchangeError>;
