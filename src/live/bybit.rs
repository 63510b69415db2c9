//! Bybit v5 REST client for USDT perpetuals (category `linear`), behind the [`Exchange`] trait.
//!
//! Signing (live.md §1): `X-BAPI-SIGN` = hex HMAC-SHA256 of `timestamp + api_key + recv_window +
//! (query string | JSON body)`. Retries: rate limits (retCode 10006 / HTTP 429) wait for the reset
//! and retry; GETs are also retried after timeouts, transport errors, HTTP 5xx and the exchange's own
//! failures (retCode 10000 server timeout, 10016 internal error or restart); an order create is
//! never blindly re-sent — after an unclear failure the order is looked up by its `orderLinkId`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::exchange::Exchange;
use super::types::{
    ExchangeError, ExchangeResult, Execution, FundingRate, Instrument, Kline, Order, OrderRequest, OrderStatus,
    OrderType, Position, Quote, TimeInForce,
};
use crate::data::BarKind;
use crate::model::Side;
use crate::timeframe::Timeframe;

pub const MAINNET: &str = "https://api.bybit.com";
pub const TESTNET: &str = "https://api-testnet.bybit.com";
const KLINE_PAGE: usize = 1000;
const KLINE_PATH: &str = "/v5/market/kline";
const FUNDING_PAGE: usize = 200;
const MAX_RETRIES: u32 = 4;

/// API key and secret (from `BYBIT_API_KEY` / `BYBIT_API_SECRET`); never printed.
#[derive(Clone)]
pub struct Credentials {
    key: String,
    secret: String,
}

impl Credentials {
    pub fn new(key: impl Into<String>, secret: impl Into<String>) -> Self {
        Self { key: key.into(), secret: secret.into() }
    }

    pub fn from_env() -> Option<Self> {
        match (std::env::var("BYBIT_API_KEY"), std::env::var("BYBIT_API_SECRET")) {
            (Ok(key), Ok(secret)) if !key.is_empty() && !secret.is_empty() => Some(Self::new(key, secret)),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { key: <redacted>, secret: <redacted> }")
    }
}

/// `X-BAPI-SIGN` for a request.
pub fn sign(secret: &str, timestamp_ms: i64, api_key: &str, recv_window_ms: u64, payload: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{timestamp_ms}{api_key}{recv_window_ms}{payload}").as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Bybit's kline `interval` for a timeframe.
pub fn interval_code(timeframe: Timeframe) -> ExchangeResult<String> {
    let minutes = timeframe.ms / 60_000;
    match minutes {
        1 | 3 | 5 | 15 | 30 | 60 | 120 | 240 | 360 | 720 => Ok(minutes.to_string()),
        1440 => Ok("D".into()),
        10080 => Ok("W".into()),
        _ => Err(ExchangeError::InvalidParams {
            code: 10001,
            message: format!("Bybit has no {} klines", timeframe.label()),
        }),
    }
}

#[derive(Debug, Clone)]
pub struct BybitClient {
    http: reqwest::Client,
    base_url: String,
    credentials: Option<Credentials>,
    recv_window_ms: u64,
    max_retries: u32,
    /// Exchange clock minus the host clock (ms), from `/v5/market/time`; `None` until measured.
    /// Requests are signed on the exchange's clock: Bybit refuses a timestamp more than 1 s ahead of
    /// its own or older than the recv-window (10002), so a host clock 2 s fast would lock us out.
    clock_offset_ms: std::sync::Arc<std::sync::Mutex<Option<i64>>>,
}

enum Method {
    Get,
    Post,
}

impl BybitClient {
    pub fn new(base_url: &str, credentials: Option<Credentials>) -> ExchangeResult<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| ExchangeError::Transport { endpoint: "client".into(), message: err.to_string() })?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            credentials,
            recv_window_ms: 5_000,
            max_retries: MAX_RETRIES,
            clock_offset_ms: Default::default(),
        })
    }

    /// Retries of a request after rate limits and (for GETs) transient failures.
    pub fn with_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.http = reqwest::Client::builder().timeout(timeout).build().expect("client builds");
        self
    }

    /// The exchange clock (ms), measured now; the offset to the host clock is kept for signing.
    async fn sync_clock(&self) -> ExchangeResult<i64> {
        let before = chrono_now_ms();
        // Boxed: a signed send measures the clock through this unsigned one.
        let result = Box::pin(self.send_once(&Method::Get, "/v5/market/time", "", "", false)).await?;
        let after = chrono_now_ms();
        let seconds = result.get("timeSecond").and_then(int);
        let nanos = result.get("timeNano").and_then(int);
        let server = match (nanos, seconds) {
            (Some(nanos), _) => nanos / 1_000_000,
            (None, Some(seconds)) => seconds * 1000,
            _ => {
                return Err(ExchangeError::Decode {
                    endpoint: "/v5/market/time".into(),
                    message: "no timeSecond".into(),
                })
            }
        };
        let offset = server - (before + after) / 2;
        let previous = self.clock_offset_ms.lock().expect("clock offset poisoned").replace(offset);
        if previous.is_none_or(|p| (p - offset).abs() > 500) {
            tracing::info!(offset_ms = offset, "exchange clock offset measured");
        }
        Ok(server)
    }

    /// The host clock moved onto the exchange's (measured on first use).
    async fn exchange_now_ms(&self) -> ExchangeResult<i64> {
        let offset = *self.clock_offset_ms.lock().expect("clock offset poisoned");
        match offset {
            Some(offset) => Ok(chrono_now_ms() + offset),
            None => self.sync_clock().await,
        }
    }

    async fn get(&self, path: &str, query: &[(&str, String)], signed: bool) -> ExchangeResult<Value> {
        self.request(Method::Get, path, query, None, signed, true).await
    }

    async fn post(&self, path: &str, body: Value, retry_unclear: bool) -> ExchangeResult<Value> {
        self.request(Method::Post, path, &[], Some(body), true, retry_unclear).await
    }

    /// Send with retries; returns `result` of a `retCode: 0` response.
    async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
        signed: bool,
        retry_unclear: bool,
    ) -> ExchangeResult<Value> {
        let query_string = query.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect::<Vec<_>>().join("&");
        let body_text = body.map(|b| b.to_string()).unwrap_or_default();
        let mut attempt = 0;
        let mut resynced = false;
        loop {
            let outcome = self.send_once(&method, path, &query_string, &body_text, signed).await;
            let err = match outcome {
                Ok(result) => return Ok(result),
                Err(err) => err,
            };
            attempt += 1;
            let wait = match &err {
                ExchangeError::RateLimited { retry_after_ms } => Some(*retry_after_ms),
                // Outside the recv-window: measure the exchange clock again, then retry once (also
                // after a first attempt that waited for a rate limit).
                ExchangeError::Auth { code: 10002, .. } if !resynced => {
                    resynced = true;
                    self.sync_clock().await?;
                    Some(0)
                }
                err if retry_unclear && err.is_retryable() => Some(200 * 2u64.pow(attempt)),
                _ => None,
            };
            match wait {
                Some(wait_ms) if attempt <= self.max_retries => {
                    tracing::warn!(endpoint = path, error = %err, attempt, "retrying after {wait_ms} ms");
                    tokio::time::sleep(Duration::from_millis(wait_ms.min(30_000))).await;
                }
                _ => return Err(err),
            }
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        path: &str,
        query_string: &str,
        body_text: &str,
        signed: bool,
    ) -> ExchangeResult<Value> {
        let url = if query_string.is_empty() {
            format!("{}{path}", self.base_url)
        } else {
            format!("{}{path}?{query_string}", self.base_url)
        };
        let mut request = match method {
            Method::Get => self.http.get(&url),
            Method::Post => self.http.post(&url).header("Content-Type", "application/json").body(body_text.to_string()),
        };
        if signed {
            let credentials = self.credentials.as_ref().ok_or_else(|| ExchangeError::Auth {
                code: 10003,
                message: "no API key: set BYBIT_API_KEY and BYBIT_API_SECRET".into(),
            })?;
            let timestamp = self.exchange_now_ms().await?;
            let payload = match method {
                Method::Get => query_string,
                Method::Post => body_text,
            };
            request = request
                .header("X-BAPI-API-KEY", &credentials.key)
                .header("X-BAPI-TIMESTAMP", timestamp.to_string())
                .header("X-BAPI-RECV-WINDOW", self.recv_window_ms.to_string())
                .header(
                    "X-BAPI-SIGN",
                    sign(&credentials.secret, timestamp, &credentials.key, self.recv_window_ms, payload),
                );
        }
        let response = request.send().await.map_err(|err| transport_error(path, &err))?;
        let status = response.status().as_u16();
        let reset_ms = response
            .headers()
            .get("X-Bapi-Limit-Reset-Timestamp")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .map(|reset| (reset - chrono_now_ms()).clamp(50, 10_000) as u64);
        if status == 429 {
            return Err(ExchangeError::RateLimited { retry_after_ms: reset_ms.unwrap_or(1_000) });
        }
        if status >= 400 {
            return Err(ExchangeError::Http { endpoint: path.into(), status });
        }
        let text = response.text().await.map_err(|err| transport_error(path, &err))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|err| ExchangeError::Decode { endpoint: path.into(), message: err.to_string() })?;
        classify_response(path, value, reset_ms)
    }

    /// An order by its `orderLinkId`: first among the open orders, then among the recently closed
    /// ones (`openOnly=1`, Bybit keeps the last 500 of a unified account).
    /// Closed mark- or index-price klines (`/v5/market/mark-price-kline`, `/v5/market/index-price-kline`:
    /// rows `[startTime, open, high, low, close]`, no volume: `volume` and `turnover` are NaN), paged
    /// as [`Exchange::closed_klines`]; `BarKind::Trade` is `closed_klines`.
    pub async fn closed_price_klines(
        &self,
        kind: BarKind,
        symbol: &str,
        interval: Timeframe,
        start_ms: i64,
        end_ms: i64,
    ) -> ExchangeResult<Vec<Kline>> {
        let path = match kind {
            BarKind::Trade => KLINE_PATH,
            BarKind::Mark => "/v5/market/mark-price-kline",
            BarKind::Index => "/v5/market/index-price-kline",
        };
        self.closed_klines_at(path, symbol, interval, start_ms, end_ms).await
    }

    /// Closed klines of one of the kline endpoints, newest-first pages of a full page each.
    async fn closed_klines_at(
        &self,
        path: &str,
        symbol: &str,
        interval: Timeframe,
        start_ms: i64,
        end_ms: i64,
    ) -> ExchangeResult<Vec<Kline>> {
        let code = interval_code(interval)?;
        let now = self.server_time_ms().await?;
        // Never the forming bar: only bars whose close time has passed.
        let end_ms = end_ms.min(now.div_euclid(interval.ms) * interval.ms);
        let mut bars: Vec<Kline> = Vec::new();
        // Windows of exactly one page, newest first: whichever end of a window Bybit fills a page
        // from (its docs return the newest first; nothing may depend on it), a window never holds
        // more than a page, so no bar is skipped and none is fetched twice.
        let span = (KLINE_PAGE as i64 - 1) * interval.ms;
        let mut cursor_end = end_ms - 1;
        while cursor_end >= start_ms {
            let window_start = start_ms.max(cursor_end.div_euclid(interval.ms) * interval.ms - span);
            let query = [
                ("category", "linear".to_string()),
                ("symbol", symbol.to_string()),
                ("interval", code.clone()),
                ("start", window_start.to_string()),
                ("end", cursor_end.to_string()),
                ("limit", KLINE_PAGE.to_string()),
            ];
            let page = list(&self.get(path, &query, false).await?);
            for row in &page {
                let Some(fields) = row.as_array() else { continue };
                let field = |k: usize| fields.get(k).map_or(f64::NAN, |v| num(&json!({ "v": v }), "v"));
                let Some(ts) = fields.first().and_then(int) else { continue };
                bars.push(Kline {
                    ts,
                    open: field(1),
                    high: field(2),
                    low: field(3),
                    close: field(4),
                    volume: field(5),
                    turnover: field(6),
                });
            }
            // An empty window: the symbol has no older history (not listed yet).
            if page.is_empty() {
                break;
            }
            cursor_end = window_start - 1;
        }
        bars.retain(|b| b.ts >= start_ms && b.ts < end_ms);
        bars.sort_by_key(|b| b.ts);
        bars.dedup_by_key(|b| b.ts);
        Ok(bars)
    }

    pub async fn order_by_link_id(&self, symbol: &str, client_order_id: &str) -> ExchangeResult<Option<Order>> {
        for open_only in ["0", "1"] {
            let query = [
                ("category", "linear".to_string()),
                ("symbol", symbol.to_string()),
                ("orderLinkId", client_order_id.to_string()),
                ("openOnly", open_only.to_string()),
            ];
            let result = self.get("/v5/order/realtime", &query, true).await?;
            if let Some(order) =
                list(&result).iter().filter_map(parse_order).find(|o| o.client_order_id == client_order_id)
            {
                return Ok(Some(order));
            }
        }
        Ok(None)
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A reqwest error without its URL (query strings may hold ids, never secrets, but keep logs short).
/// A transport failure of a request to `path`: a timeout or a connection error (without the URL,
/// which may carry a signed query).
fn transport_error(path: &str, err: &reqwest::Error) -> ExchangeError {
    if err.is_timeout() {
        ExchangeError::Timeout { endpoint: path.into() }
    } else {
        ExchangeError::Transport { endpoint: path.into(), message: without_url(err) }
    }
}

/// Bybit's envelope (`retCode`, `retMsg`, `result`) as a result: the `result` on 0, else the error
/// kind its code means (rate limit, parameters, authentication, server, duplicate, rejection, …).
fn classify_response(path: &str, value: Value, reset_ms: Option<u64>) -> ExchangeResult<Value> {
    let code = value.get("retCode").and_then(Value::as_i64).unwrap_or(-1);
    let message = value.get("retMsg").and_then(Value::as_str).unwrap_or("").to_string();
    match code {
        0 => Ok(value.get("result").cloned().unwrap_or(Value::Null)),
        10006 => Err(ExchangeError::RateLimited { retry_after_ms: reset_ms.unwrap_or(1_000) }),
        10001 => Err(ExchangeError::InvalidParams { code, message: format!("{path}: {message}") }),
        10002..=10005 | 10010 | 33004 => Err(ExchangeError::Auth { code, message: format!("{path}: {message}") }),
        // Bybit's own failures ("Server Timeout", "internal server error; service is restarting").
        10000 | 10016 => Err(ExchangeError::Server { code, message: format!("{path}: {message}") }),
        110072 => Err(ExchangeError::DuplicateOrder { client_order_id: message }),
        110001 => Err(ExchangeError::NotFound { what: format!("{path}: {message}") }),
        110000..=119999 => Err(ExchangeError::OrderRejected {
            code,
            post_only: message.to_ascii_lowercase().contains("post"),
            message: format!("{path}: {message}"),
        }),
        _ => Err(ExchangeError::Other { code, message: format!("{path}: {message}") }),
    }
}

fn without_url(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl BybitClient {
    /// Every row of a signed list endpoint, following `nextPageCursor` (Bybit pages positions by up to
    /// 200 and open orders by up to 50 rows). A view that cannot be read whole is an error: the
    /// reconciliation that needs it does not trade on half an account.
    async fn all_pages(&self, path: &str, query: &[(&str, String)], limit: usize) -> ExchangeResult<Vec<Value>> {
        let mut rows = Vec::new();
        let mut cursor = String::new();
        for _ in 0..MAX_PAGES {
            let mut paged: Vec<(&str, String)> = query.to_vec();
            paged.push(("limit", limit.to_string()));
            if !cursor.is_empty() {
                paged.push(("cursor", cursor.clone()));
            }
            let result = self.get(path, &paged, true).await?;
            rows.extend(list(&result));
            let next = result.get("nextPageCursor").and_then(Value::as_str).unwrap_or("").to_string();
            if next.is_empty() {
                return Ok(rows);
            }
            if next == cursor {
                return Err(ExchangeError::Decode { endpoint: path.into(), message: format!("cursor {next} repeats") });
            }
            cursor = next;
        }
        Err(ExchangeError::Decode { endpoint: path.into(), message: format!("more than {MAX_PAGES} pages") })
    }
}

/// Pages of one account list read before giving up (10 000 rows at the smallest page).
const MAX_PAGES: usize = 200;

fn list(result: &Value) -> Vec<Value> {
    result.get("list").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn num(value: &Value, key: &str) -> f64 {
    match value.get(key) {
        Some(Value::String(s)) => s.parse().unwrap_or(f64::NAN),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn parse_side(text: &str) -> Option<Side> {
    match text {
        "Buy" => Some(Side::Buy),
        "Sell" => Some(Side::Sell),
        _ => None,
    }
}

fn parse_order(value: &Value) -> Option<Order> {
    let status = match value.get("orderStatus")?.as_str()? {
        "New" | "Untriggered" | "Created" => OrderStatus::New,
        "PartiallyFilled" => OrderStatus::PartiallyFilled,
        "Filled" => OrderStatus::Filled,
        "Rejected" => OrderStatus::Rejected,
        _ => OrderStatus::Cancelled,
    };
    let price = num(value, "price");
    Some(Order {
        order_id: value.get("orderId")?.as_str()?.to_string(),
        client_order_id: value.get("orderLinkId").and_then(Value::as_str).unwrap_or("").to_string(),
        symbol: value.get("symbol")?.as_str()?.to_string(),
        side: parse_side(value.get("side")?.as_str()?)?,
        qty: num(value, "qty"),
        filled_qty: num(value, "cumExecQty").max(0.0),
        price: (price > 0.0).then_some(price),
        status,
        reduce_only: value.get("reduceOnly").and_then(Value::as_bool).unwrap_or(false),
        created_ms: value.get("createdTime").and_then(int).unwrap_or(0),
        reject_reason: value
            .get("rejectReason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && *r != "EC_NoError")
            .map(str::to_string),
    })
}

fn parse_execution(value: &Value) -> Option<Execution> {
    Some(Execution {
        ts: value.get("execTime").and_then(int).unwrap_or(0),
        symbol: value.get("symbol")?.as_str()?.to_string(),
        side: parse_side(value.get("side")?.as_str()?)?,
        qty: num(value, "execQty"),
        price: num(value, "execPrice"),
        fee: num(value, "execFee"),
        maker: value.get("isMaker").and_then(Value::as_bool).unwrap_or(false),
        client_order_id: value.get("orderLinkId").and_then(Value::as_str).unwrap_or("").to_string(),
        reason: crate::model::FillReason::Rebalance,
    })
}

/// Decimal text of a quantity or price without binary noise.
fn decimal(value: f64) -> String {
    let text = format!("{value:.10}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

impl Exchange for BybitClient {
    async fn server_time_ms(&self) -> ExchangeResult<i64> {
        self.sync_clock().await
    }

    async fn instruments(&self, symbols: &[String]) -> ExchangeResult<Vec<Instrument>> {
        let mut out = Vec::with_capacity(symbols.len());
        for symbol in symbols {
            let query = [("category", "linear".to_string()), ("symbol", symbol.clone())];
            let result = self.get("/v5/market/instruments-info", &query, false).await?;
            let item = list(&result)
                .into_iter()
                .next()
                .ok_or_else(|| ExchangeError::NotFound { what: format!("instrument {symbol}") })?;
            let lot = item.get("lotSizeFilter").cloned().unwrap_or(Value::Null);
            let price = item.get("priceFilter").cloned().unwrap_or(Value::Null);
            let min_notional = num(&lot, "minNotionalValue");
            out.push(Instrument {
                symbol: symbol.clone(),
                lot_size: num(&lot, "qtyStep"),
                min_qty: num(&lot, "minOrderQty"),
                max_qty: num(&lot, "maxOrderQty"),
                tick_size: num(&price, "tickSize"),
                min_notional: if min_notional.is_finite() { min_notional } else { 5.0 },
            });
        }
        Ok(out)
    }

    async fn closed_klines(
        &self,
        symbol: &str,
        interval: Timeframe,
        start_ms: i64,
        end_ms: i64,
    ) -> ExchangeResult<Vec<Kline>> {
        self.closed_klines_at(KLINE_PATH, symbol, interval, start_ms, end_ms).await
    }

    async fn closed_mark_klines(
        &self,
        symbol: &str,
        interval: Timeframe,
        start_ms: i64,
        end_ms: i64,
    ) -> ExchangeResult<Vec<Kline>> {
        self.closed_price_klines(BarKind::Mark, symbol, interval, start_ms, end_ms).await
    }

    async fn funding_history(&self, symbol: &str, start_ms: i64, end_ms: i64) -> ExchangeResult<Vec<FundingRate>> {
        let mut events: Vec<FundingRate> = Vec::new();
        let mut cursor_end = end_ms - 1;
        while cursor_end >= start_ms {
            let query = [
                ("category", "linear".to_string()),
                ("symbol", symbol.to_string()),
                ("startTime", start_ms.to_string()),
                ("endTime", cursor_end.to_string()),
                ("limit", FUNDING_PAGE.to_string()),
            ];
            let page = list(&self.get("/v5/market/funding/history", &query, false).await?);
            let mut oldest = i64::MAX;
            for row in &page {
                let Some(ts) = row.get("fundingRateTimestamp").and_then(int) else { continue };
                oldest = oldest.min(ts);
                events.push(FundingRate { ts, rate: num(row, "fundingRate") });
            }
            if page.len() < FUNDING_PAGE || oldest == i64::MAX || oldest <= start_ms {
                break;
            }
            cursor_end = oldest - 1;
        }
        events.retain(|e| e.ts >= start_ms && e.ts < end_ms);
        events.sort_by_key(|e| e.ts);
        events.dedup_by_key(|e| e.ts);
        Ok(events)
    }

    async fn quote(&self, symbol: &str) -> ExchangeResult<Quote> {
        let query = [("category", "linear".to_string()), ("symbol", symbol.to_string())];
        let result = self.get("/v5/market/tickers", &query, false).await?;
        let item = list(&result)
            .into_iter()
            .next()
            .ok_or_else(|| ExchangeError::NotFound { what: format!("ticker {symbol}") })?;
        Ok(Quote {
            bid: num(&item, "bid1Price"),
            ask: num(&item, "ask1Price"),
            last: num(&item, "lastPrice"),
            ts: chrono_now_ms(),
        })
    }

    async fn positions(&self) -> ExchangeResult<Vec<Position>> {
        let query = [("category", "linear".to_string()), ("settleCoin", "USDT".to_string())];
        let rows = self.all_pages("/v5/position/list", &query, 200).await?;
        Ok(rows
            .iter()
            .filter_map(|p| {
                let size = num(p, "size");
                let sign = match p.get("side")?.as_str()? {
                    "Buy" => 1.0,
                    "Sell" => -1.0,
                    _ => return None,
                };
                let symbol = p.get("symbol")?.as_str()?.to_string();
                (size > 0.0).then(|| Position { symbol, qty: sign * size, avg_price: num(p, "avgPrice") })
            })
            .collect())
    }

    async fn open_orders(&self) -> ExchangeResult<Vec<Order>> {
        let query = [("category", "linear".to_string()), ("settleCoin", "USDT".to_string())];
        let rows = self.all_pages("/v5/order/realtime", &query, 50).await?;
        Ok(rows.iter().filter_map(parse_order).filter(|o| o.status.is_open()).collect())
    }

    async fn equity(&self) -> ExchangeResult<f64> {
        let query = [("accountType", "UNIFIED".to_string())];
        let result = self.get("/v5/account/wallet-balance", &query, true).await?;
        let account = list(&result).into_iter().next().unwrap_or(Value::Null);
        let equity = num(&account, "totalEquity");
        if equity.is_finite() {
            Ok(equity)
        } else {
            Err(ExchangeError::Decode {
                endpoint: "/v5/account/wallet-balance".into(),
                message: "no totalEquity".into(),
            })
        }
    }

    async fn place_order(&self, request: &OrderRequest) -> ExchangeResult<Order> {
        let mut body = json!({
            "category": "linear",
            "symbol": request.symbol,
            "side": request.side.as_str(),
            "orderType": match request.order_type { OrderType::Limit => "Limit", OrderType::Market => "Market" },
            "qty": decimal(request.qty),
            "timeInForce": match request.tif {
                TimeInForce::PostOnly => "PostOnly",
                TimeInForce::Gtc => "GTC",
                TimeInForce::Ioc => "IOC",
            },
            "reduceOnly": request.reduce_only,
            "orderLinkId": request.client_order_id,
        });
        if let Some(price) = request.price {
            body["price"] = json!(decimal(price));
        }
        match self.post("/v5/order/create", body, false).await {
            Ok(result) => Ok(Order {
                order_id: result.get("orderId").and_then(Value::as_str).unwrap_or("").to_string(),
                client_order_id: request.client_order_id.clone(),
                symbol: request.symbol.clone(),
                side: request.side,
                qty: request.qty,
                filled_qty: 0.0,
                price: request.price,
                status: OrderStatus::New,
                reduce_only: request.reduce_only,
                created_ms: chrono_now_ms(),
                reject_reason: None,
            }),
            // 110072: the id is taken. Never "success": the order is looked up by its id and adopted;
            // an id the exchange refuses but cannot show is burned (the caller moves to the next one).
            Err(ExchangeError::DuplicateOrder { .. }) => {
                tracing::warn!(order = %request.client_order_id, "orderLinkId already used; looking the order up");
                match self.order_by_link_id(&request.symbol, &request.client_order_id).await? {
                    Some(order) => Ok(order),
                    None => Err(ExchangeError::DuplicateOrder { client_order_id: request.client_order_id.clone() }),
                }
            }
            // The request may have reached the exchange: find out by the link id before anything else.
            Err(err) if err.is_retryable() => {
                tracing::warn!(order = %request.client_order_id, error = %err, "unclear order create; looking it up");
                tokio::time::sleep(Duration::from_millis(300)).await;
                match self.order_by_link_id(&request.symbol, &request.client_order_id).await? {
                    Some(order) => Ok(order),
                    None => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }

    async fn cancel_order(&self, symbol: &str, client_order_id: &str) -> ExchangeResult<()> {
        let body = json!({"category": "linear", "symbol": symbol, "orderLinkId": client_order_id});
        self.post("/v5/order/cancel", body, true).await.map(|_| ())
    }

    async fn cancel_all(&self, symbol: Option<&str>) -> ExchangeResult<()> {
        let body = match symbol {
            Some(symbol) => json!({"category": "linear", "symbol": symbol}),
            None => json!({"category": "linear", "settleCoin": "USDT"}),
        };
        self.post("/v5/order/cancel-all", body, true).await.map(|_| ())
    }

    async fn order_status(&self, symbol: &str, client_order_id: &str) -> ExchangeResult<Option<Order>> {
        self.order_by_link_id(symbol, client_order_id).await
    }

    /// `/v5/execution/list` from `since_ms` over every page (`nextPageCursor`, 100 a page). Bybit
    /// serves at most 7 days a query; the runner asks for the current bar only.
    async fn executions(&self, since_ms: i64) -> ExchangeResult<Vec<Execution>> {
        let query = [
            ("category", "linear".to_string()),
            ("settleCoin", "USDT".to_string()),
            ("startTime", since_ms.to_string()),
            ("execType", "Trade".to_string()),
        ];
        let rows = self.all_pages("/v5/execution/list", &query, 100).await?;
        Ok(rows.iter().filter_map(parse_execution).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_codes_map_to_error_kinds() {
        let envelope =
            |code: i64, message: &str| serde_json::json!({"retCode": code, "retMsg": message, "result": {"a": 1}});
        assert_eq!(classify_response("/x", envelope(0, "OK"), None).unwrap(), serde_json::json!({"a": 1}));
        let kind = |code: i64, message: &str| classify_response("/x", envelope(code, message), Some(250)).unwrap_err();
        assert!(matches!(kind(10006, ""), ExchangeError::RateLimited { retry_after_ms: 250 }));
        assert!(matches!(kind(10003, "invalid key"), ExchangeError::Auth { code: 10003, .. }));
        assert!(matches!(kind(33004, "expired"), ExchangeError::Auth { .. }));
        assert!(matches!(kind(10016, "restarting"), ExchangeError::Server { .. }));
        assert!(matches!(kind(110072, "xs-1"), ExchangeError::DuplicateOrder { .. }));
        assert!(matches!(kind(110001, "gone"), ExchangeError::NotFound { .. }));
        assert!(matches!(kind(110007, "PostOnly will take"), ExchangeError::OrderRejected { post_only: true, .. }));
        assert!(matches!(kind(170000, "?"), ExchangeError::Other { code: 170000, .. }));
        let missing = classify_response("/x", serde_json::json!({}), None).unwrap_err();
        assert!(matches!(missing, ExchangeError::Other { code: -1, .. }));
    }

    #[test]
    fn signature_matches_an_independent_hmac() {
        // HMAC-SHA256("secret", "1700000000000key5000category=linear") computed with Python's hmac.
        let signature = sign("secret", 1_700_000_000_000, "key", 5_000, "category=linear");
        assert_eq!(signature, "e6c3e971c517d999338172674f1c633b9016addf8f8c632372232076767b4c07");
    }

    #[test]
    fn intervals_and_decimals() {
        assert_eq!(interval_code(Timeframe::parse("1h").unwrap()).unwrap(), "60");
        assert_eq!(interval_code(Timeframe::parse("1d").unwrap()).unwrap(), "D");
        assert_eq!(decimal(0.30000000000000004), "0.3");
        assert_eq!(decimal(12.0), "12");
        assert!(format!("{:?}", Credentials::new("k", "s")).contains("redacted"));
    }
}
