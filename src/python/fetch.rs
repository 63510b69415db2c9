//! `xsmom data fetch` for Python (`xsmom._core.fetch_store`): argument checks and the conversion of
//! [`crate::live::fetch`]'s results; the planning is [`crate::data::fetch`]'s.

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::data::fetch::missing_bar_ranges;
use crate::data::BarKind;
use crate::error::Error;
use crate::live::bybit::BybitClient;
use crate::live::fetch::{self, FetchError, SymbolFetch};
use crate::timeframe::Timeframe;

fn to_py(failure: FetchError) -> PyErr {
    match failure {
        FetchError::Core(err) => super::to_py(err),
        FetchError::Exchange { .. } => {
            let class = if failure.unreachable() { "ExchangeUnreachableError" } else { "ExchangeError" };
            super::exception(class, format!("exchange: {failure}"), true)
        }
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
    let url = fetch::base_url(base_url.as_deref());
    let results = py.detach(|| -> std::result::Result<Vec<SymbolFetch>, FetchError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| FetchError::Core(Error::invalid(format!("fetch: cannot start the async runtime: {err}"))))?;
        runtime.block_on(async {
            let client = BybitClient::new(&url, None)
                .map_err(|error| FetchError::Exchange { context: "client".into(), error })?
                .with_timeout(std::time::Duration::from_secs_f64(timeout_secs))
                .with_retries(retries);
            fetch::fetch_store(&client, &store, &symbols, timeframe, (start_ms, end_ms), (kind, funding)).await
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
