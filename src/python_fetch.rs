//! `xsmom data fetch` (interfaces.md, live.md §1): closed klines and funding history from Bybit v5 into
//! the bar store, through the live runner's own client ([`BybitClient`]: newest-first pages of up to
//! 1000 klines / 200 funding events, no gaps or duplicates at page edges, never the forming bar).
//!
//! Incremental: per symbol, only the bars the store lacks inside `[start, end)` are requested (runs of
//! missing bars closer than a page are merged into one request; a gap that the exchange itself has
//! costs one request per run). Funding events are not on a fixed grid: only the ranges before the
//! first and after the last stored event are requested. Each symbol is appended as soon as it is
//! fetched by the store writer, which merges on `ts` and replaces each year file atomically, so an
//! interrupted run loses nothing and the next run continues where it stopped.
//!
//! `kind` mark / index fetches mark- or index-price klines (`/v5/market/mark-price-kline`,
//! `/v5/market/index-price-kline`: no volume) into `bars/timeframe=<tf>/kind=<kind>/`.

use std::path::{Path, PathBuf};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::data::{self, BarKind, Bars, Funding, Selection};
use crate::error::{Error, Result};
use crate::live::bybit::{BybitClient, MAINNET, TESTNET};
use crate::live::exchange::Exchange;
use crate::live::types::ExchangeError;
use crate::timeframe::Timeframe;

/// Bybit's largest kline page.
const KLINE_PAGE: usize = 1000;

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

enum Failure {
    Core(Error),
    Exchange(String),
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        Failure::Core(err)
    }
}

fn exchange(symbol: &str, what: &str, err: ExchangeError) -> Failure {
    Failure::Exchange(format!("{symbol}: {what}: {err}"))
}

/// The parts of `[start, end)` outside the stored `[first, last]` (inclusive) range; `step` is the
/// spacing of stored rows (1 ms for funding events, which are not on a fixed grid).
pub fn missing_ranges(stored: Option<(i64, i64)>, start: i64, end: i64, step: i64) -> Vec<(i64, i64)> {
    if start >= end {
        return Vec::new();
    }
    match stored {
        None => vec![(start, end)],
        Some((first, last)) => {
            let mut ranges = Vec::new();
            if start < first {
                ranges.push((start, first.min(end)));
            }
            let tail = (last + step).max(start);
            if tail < end {
                ranges.push((tail, end));
            }
            ranges
        }
    }
}

/// The grid points of `[start, end)` (step `step`) that `stored` (ascending) lacks, as `[from, to)` runs;
/// runs closer than one kline page are merged so that each request fills a page (re-fetched bars
/// replace themselves with the same values).
pub fn missing_bar_ranges(stored: &[i64], start: i64, end: i64, step: i64, page: usize) -> Vec<(i64, i64)> {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    let mut cursor = start;
    for &ts in stored {
        if ts >= end {
            break;
        }
        if ts < cursor {
            continue;
        }
        if ts > cursor {
            runs.push((cursor, ts));
        }
        cursor = ts + step;
    }
    if cursor < end {
        runs.push((cursor, end));
    }
    let span = step.saturating_mul(page as i64);
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for run in runs {
        match merged.last_mut() {
            Some(last) if run.1 - last.0 <= span => last.1 = run.1,
            _ => merged.push(run),
        }
    }
    merged
}

/// The stored bar timestamps of `symbol` inside `[start, end)`.
fn stored_bars(
    root: &Path,
    symbol: &str,
    timeframe: Timeframe,
    kind: BarKind,
    start: i64,
    end: i64,
) -> Result<Vec<i64>> {
    let mut dir = root.join("bars").join(format!("timeframe={}", timeframe.label()));
    if kind != BarKind::Trade {
        dir = dir.join(format!("kind={}", kind.label()));
    }
    if !dir.join(format!("symbol={symbol}")).is_dir() || start >= end {
        return Ok(Vec::new());
    }
    let selection =
        Selection { symbols: Some(vec![symbol.to_string()]), start: Some(start), end: Some(end), timeframe };
    Ok(data::read_bars_of_kind(root, &selection, kind)?.0.ts)
}

fn stored_funding(root: &Path, symbol: &str) -> Result<Option<(i64, i64)>> {
    if !root.join("funding").join(format!("symbol={symbol}")).is_dir() {
        return Ok(None);
    }
    let funding = data::read_funding(root, Some(&[symbol.to_string()]), None, None)?;
    let first = funding.ts.iter().copied().min();
    Ok(first.zip(funding.ts.iter().copied().max()))
}

async fn fetch_symbol(
    client: &BybitClient,
    root: &Path,
    symbol: &str,
    timeframe: Timeframe,
    (start, end, now): (i64, i64, i64),
    (kind, with_funding): (BarKind, bool),
) -> std::result::Result<SymbolFetch, Failure> {
    let mut out = SymbolFetch { symbol: symbol.to_string(), ..SymbolFetch::default() };
    // Bars: only closed ones (the client also clamps to the server clock), on the timeframe grid.
    let bar_end = end.min(now.div_euclid(timeframe.ms) * timeframe.ms);
    let first_bar =
        start.div_euclid(timeframe.ms) * timeframe.ms + if start % timeframe.ms == 0 { 0 } else { timeframe.ms };
    let stored = stored_bars(root, symbol, timeframe, kind, first_bar, bar_end)?;
    out.ranges = missing_bar_ranges(&stored, first_bar, bar_end, timeframe.ms, KLINE_PAGE);
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
            let turnover = if k.turnover.is_finite() { k.turnover } else { k.close * k.volume };
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
        let funding_end = end.min(now + 1);
        out.funding_ranges = missing_ranges(stored_funding(root, symbol)?, start, funding_end, 1);
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

fn base_url(text: Option<&str>) -> String {
    match text.map(str::trim) {
        None | Some("") | Some("mainnet") => MAINNET.to_string(),
        Some("testnet") => TESTNET.to_string(),
        Some(url) => url.to_string(),
    }
}

fn to_py(failure: Failure) -> PyErr {
    match failure {
        Failure::Core(err) => super::to_py(err),
        Failure::Exchange(message) => super::exception("ExchangeError", format!("exchange: {message}"), true),
    }
}

/// Fetch `symbols` into the store at `store` (created when missing); `end_ms` defaults to now.
#[pyfunction]
#[pyo3(signature = (store, symbols, start_ms, end_ms=None, timeframe="1h", funding=false, base_url=None, timeout_secs=10.0, retries=4, kind="trade"))]
#[allow(clippy::too_many_arguments)]
fn fetch_store<'py>(
    py: Python<'py>,
    store: PathBuf,
    symbols: Vec<String>,
    start_ms: i64,
    end_ms: Option<i64>,
    timeframe: &str,
    funding: bool,
    base_url: Option<String>,
    timeout_secs: f64,
    retries: u32,
    kind: &str,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let timeframe = Timeframe::parse(timeframe).map_err(|err| to_py(err.into()))?;
    let kind = BarKind::parse(kind).map_err(|err| to_py(err.into()))?;
    if symbols.is_empty() {
        return Err(PyValueError::new_err("fetch: no symbols given"));
    }
    if let Some(bad) = symbols.iter().find(|s| s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric())) {
        return Err(PyValueError::new_err(format!("fetch: symbol {bad:?} is not of the form BTCUSDT")));
    }
    if end_ms.is_some_and(|end| end <= start_ms) {
        return Err(PyValueError::new_err(format!("fetch: end {} is not after start {start_ms}", end_ms.unwrap_or(0))));
    }
    if !(timeout_secs > 0.0 && timeout_secs.is_finite()) {
        return Err(PyValueError::new_err(format!("fetch: timeout_secs {timeout_secs} must be positive")));
    }
    let url = self::base_url(base_url.as_deref());
    let results = py.detach(|| -> std::result::Result<Vec<SymbolFetch>, Failure> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| Failure::Core(Error::invalid(format!("fetch: cannot start the async runtime: {err}"))))?;
        runtime.block_on(async {
            let client = BybitClient::new(&url, None)
                .map_err(|err| Failure::Exchange(err.to_string()))?
                .with_timeout(std::time::Duration::from_secs_f64(timeout_secs))
                .with_retries(retries);
            let now = client.server_time_ms().await.map_err(|err| exchange("server", "time", err))?;
            let end = end_ms.unwrap_or(i64::MAX);
            let mut out = Vec::with_capacity(symbols.len());
            for symbol in &symbols {
                out.push(
                    fetch_symbol(&client, &store, symbol, timeframe, (start_ms, end, now), (kind, funding)).await?,
                );
            }
            Ok(out)
        })
    });
    results
        .map_err(to_py)?
        .into_iter()
        .map(|r| {
            let dict = PyDict::new(py);
            dict.set_item("symbol", &r.symbol)?;
            dict.set_item("ranges", r.ranges)?;
            dict.set_item("bars_fetched", r.bars_fetched)?;
            dict.set_item("bars_added", r.bars_added)?;
            dict.set_item("bars_replaced", r.bars_replaced)?;
            dict.set_item("first_ts", r.first_ts)?;
            dict.set_item("last_ts", r.last_ts)?;
            dict.set_item("funding_ranges", r.funding_ranges)?;
            dict.set_item("funding_fetched", r.funding_fetched)?;
            dict.set_item("funding_added", r.funding_added)?;
            Ok(dict)
        })
        .collect()
}

/// [`missing_bar_ranges`], for the property tests.
#[pyfunction]
fn fetch_missing_ranges(stored: Vec<i64>, start: i64, end: i64, step: i64, page: usize) -> PyResult<Vec<(i64, i64)>> {
    if step <= 0 || page == 0 || stored.windows(2).any(|w| w[0] >= w[1]) {
        return Err(PyValueError::new_err("fetch_missing_ranges: step and page must be positive, stored ascending"));
    }
    Ok(missing_bar_ranges(&stored, start, end, step, page))
}

/// Add the fetch functions to `xsmom._core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(fetch_store, m)?)?;
    m.add_function(wrap_pyfunction!(fetch_missing_ranges, m)?)
}
