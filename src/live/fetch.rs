//! `xsmom data fetch` (interfaces.md, live.md §1): closed klines and funding history from Bybit v5
//! into the bar store, through the live runner's own client ([`BybitClient`]: newest-first pages of
//! up to 1000 klines / 200 funding events, no gaps or duplicates at page edges, never the forming bar).
//!
//! Incremental: what to request is [`crate::data::fetch`]'s plan of what the store lacks. Each
//! symbol is appended as soon as it is fetched by the store writer, which merges on `ts` and
//! replaces each year file atomically, so an interrupted run loses nothing and the next run
//! continues where it stopped.
//!
//! `kind` mark / index fetches mark- or index-price klines (`/v5/market/mark-price-kline`,
//! `/v5/market/index-price-kline`: no volume) into the store's `kind=<kind>/` bars.

use std::path::Path;

use super::bybit::{BybitClient, MAINNET, TESTNET};
use super::exchange::Exchange;
use super::types::ExchangeError;
use crate::data::fetch::{plan_bars, plan_funding, FetchWindow};
use crate::data::{self, BarKind, Bars, Funding};
use crate::error::Error;
use crate::timeframe::Timeframe;

/// Bybit's largest kline page.
pub const KLINE_PAGE: usize = 1000;

/// What one symbol's fetch did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SymbolFetch {
    pub symbol: String,
    /// The `[from, to)` windows requested from the exchange.
    pub ranges: Vec<(i64, i64)>,
    pub bars_fetched: usize,
    pub bars_added: usize,
    pub bars_replaced: usize,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
    pub funding_ranges: Vec<(i64, i64)>,
    pub funding_fetched: usize,
    pub funding_added: usize,
}

/// Why a fetch stopped: the store or the data (a core error), or the exchange.
#[derive(Debug)]
pub enum FetchError {
    Core(Error),
    /// The exchange failed or refused while fetching `context` (`<symbol>: <what>`).
    Exchange {
        context: String,
        error: ExchangeError,
    },
}

impl FetchError {
    /// The exchange could not be reached at all (a timeout or a transport failure: DNS, refused
    /// connection, TLS), as opposed to an answer that refused the request.
    pub fn unreachable(&self) -> bool {
        matches!(
            self,
            FetchError::Exchange { error: ExchangeError::Timeout { .. } | ExchangeError::Transport { .. }, .. }
        )
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Core(err) => err.fmt(f),
            FetchError::Exchange { context, error } => write!(f, "{context}: {error}"),
        }
    }
}

impl From<Error> for FetchError {
    fn from(err: Error) -> Self {
        FetchError::Core(err)
    }
}

fn exchange(symbol: &str, what: &str, err: ExchangeError) -> FetchError {
    FetchError::Exchange { context: format!("{symbol}: {what}"), error: err }
}

/// The base URL of a `--base-url` text: mainnet by default, `testnet`, or a URL as it is.
pub fn base_url(text: Option<&str>) -> String {
    match text.map(str::trim) {
        None | Some("") | Some("mainnet") => MAINNET.to_string(),
        Some("testnet") => TESTNET.to_string(),
        Some(url) => url.to_string(),
    }
}

/// Fetch `symbols` into the store at `root` (created when missing), one after the other: the bars
/// of `kind` in `[start, end)` (`end` defaults to the exchange's clock) and, with `with_funding`,
/// the funding events.
pub async fn fetch_store(
    client: &BybitClient,
    root: &Path,
    symbols: &[String],
    timeframe: Timeframe,
    (start, end): (i64, Option<i64>),
    (kind, with_funding): (BarKind, bool),
) -> Result<Vec<SymbolFetch>, FetchError> {
    let now = client.server_time_ms().await.map_err(|err| exchange("server", "time", err))?;
    let window = FetchWindow { start, end: end.unwrap_or(i64::MAX), now };
    let mut out = Vec::with_capacity(symbols.len());
    for symbol in symbols {
        out.push(fetch_symbol(client, root, symbol, timeframe, window, (kind, with_funding)).await?);
    }
    Ok(out)
}

async fn fetch_symbol(
    client: &BybitClient,
    root: &Path,
    symbol: &str,
    timeframe: Timeframe,
    window: FetchWindow,
    (kind, with_funding): (BarKind, bool),
) -> Result<SymbolFetch, FetchError> {
    let mut out = SymbolFetch { symbol: symbol.to_string(), ..SymbolFetch::default() };
    // Bars: only closed ones (the client also clamps to the server clock), on the timeframe grid.
    out.ranges = plan_bars(root, symbol, timeframe, kind, window, KLINE_PAGE)?;
    let mut bars = Bars { turnover: Some(Vec::new()), ..Bars::default() };
    for &(from, to) in &out.ranges {
        let klines = client
            .closed_price_klines(kind, symbol, timeframe, from, to)
            .await
            .map_err(|err| exchange(symbol, "klines", err))?;
        for k in klines {
            if k.ts.rem_euclid(timeframe.ms) != 0 {
                return Err(Error::data(format!(
                    "{symbol}: kline ts {} is not on the {} grid",
                    k.ts,
                    timeframe.label()
                ))
                .into());
            }
            // Mark and index klines have no volume.
            let volume = if kind.has_volume() { k.volume } else { 0.0 };
            let values = [k.open, k.high, k.low, k.close, volume];
            if values.iter().any(|v| !v.is_finite()) {
                return Err(
                    Error::data(format!("{symbol}: kline at ts {} has a missing or non-numeric field", k.ts)).into()
                );
            }
            let turnover = data::quote_volume(k.turnover, k.close, k.volume);
            bars.push(symbol, k.ts, k.open, k.high, k.low, k.close, k.volume, turnover);
        }
    }
    out.bars_fetched = bars.len();
    out.first_ts = bars.ts.iter().copied().min();
    out.last_ts = bars.ts.iter().copied().max();
    if !bars.ts.is_empty() {
        let stats = data::write_store_of_kind(root, timeframe, &bars, kind)?;
        out.bars_added = stats.rows_added;
        out.bars_replaced = stats.rows_replaced;
    }
    if with_funding {
        out.funding_ranges = plan_funding(root, symbol, window)?;
        let mut funding = Funding::default();
        for &(from, to) in &out.funding_ranges {
            let events = client
                .funding_history(symbol, from, to)
                .await
                .map_err(|err| exchange(symbol, "funding history", err))?;
            for event in events {
                if !event.rate.is_finite() {
                    return Err(Error::data(format!("{symbol}: funding event at ts {} has no rate", event.ts)).into());
                }
                funding.push(symbol, event.ts, event.rate);
            }
        }
        out.funding_fetched = funding.ts.len();
        if !funding.ts.is_empty() {
            out.funding_added = data::write_funding_store(root, &funding)?.rows_added;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(base_url(None), MAINNET);
        assert_eq!(base_url(Some(" mainnet ")), MAINNET);
        assert_eq!(base_url(Some("")), MAINNET);
        assert_eq!(base_url(Some("testnet")), TESTNET);
        assert_eq!(base_url(Some("http://127.0.0.1:9")), "http://127.0.0.1:9");
    }

    #[test]
    fn only_timeouts_and_transport_failures_are_unreachable() {
        let endpoint = "/v5/market/kline".to_string();
        let timeout = exchange("BTCUSDT", "klines", ExchangeError::Timeout { endpoint: endpoint.clone() });
        let refused = exchange("BTCUSDT", "klines", ExchangeError::Transport { endpoint, message: "refused".into() });
        let answered = exchange("BTCUSDT", "klines", ExchangeError::Http { endpoint: "/v5".into(), status: 403 });
        assert!(timeout.unreachable() && refused.unreachable());
        assert!(!answered.unreachable());
        assert!(!FetchError::Core(Error::invalid("x")).unreachable());
        assert!(refused.to_string().starts_with("BTCUSDT: klines: "), "{refused}");
    }
}
