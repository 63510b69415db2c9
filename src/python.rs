//! `xsmom._core`: the thin pyo3 layer over the library.
//!
//! Tables cross the boundary through the Arrow C stream interface (`__arrow_c_stream__`), so polars
//! DataFrames come in and go out without copies through pyarrow. Heavy work runs with the GIL
//! released. Library errors become `ValueError` (data, config, input) or `OSError` (files).

use std::path::PathBuf;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pyo3_arrow::input::AnyRecordBatch;
use pyo3_arrow::PyTable;

use crate::backtest::output;
use crate::config::Config;
use crate::data::{self, Selection};
use crate::error::{Error, ErrorKind};
use crate::run::{self, BarsSource, FundingSource, Inputs};
use crate::timeframe::Timeframe;

#[path = "python_research.rs"]
mod research;

fn to_py(err: Error) -> PyErr {
    match err.kind {
        ErrorKind::Io => PyOSError::new_err(err.message),
        _ => PyValueError::new_err(err.message),
    }
}

fn table(batch: RecordBatch) -> PyResult<PyTable> {
    let schema = batch.schema();
    PyTable::try_new(vec![batch], schema)
}

/// Read every batch of an object implementing the Arrow PyCapsule interface.
fn batches_of(object: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<RecordBatch>> {
    let input: AnyRecordBatch = object.extract().map_err(|_| {
        PyValueError::new_err(format!(
            "{what}: expected a path or a table with the Arrow PyCapsule interface (e.g. a polars DataFrame), got {}",
            object.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "an unknown type".into())
        ))
    })?;
    let reader = input.into_reader()?;
    reader.collect::<Result<Vec<_>, _>>().map_err(|err| PyValueError::new_err(format!("{what}: {err}")))
}

fn as_path(object: &Bound<'_, PyAny>) -> Option<PathBuf> {
    object.extract::<PathBuf>().ok()
}

fn bars_source(bars: &Bound<'_, PyAny>) -> PyResult<BarsSource> {
    match as_path(bars) {
        Some(path) => Ok(BarsSource::Path(path)),
        None => Ok(BarsSource::Bars(data::bars_from_batches(&batches_of(bars, "bars")?, "bars").map_err(to_py)?)),
    }
}

fn funding_source(funding: Option<&Bound<'_, PyAny>>) -> PyResult<FundingSource> {
    match funding {
        None => Ok(FundingSource::FromBarsStore),
        Some(object) if object.is_none() => Ok(FundingSource::FromBarsStore),
        Some(object) => match as_path(object) {
            Some(path) => Ok(FundingSource::Path(path)),
            None => Ok(FundingSource::Funding(
                data::funding_from_batches(&batches_of(object, "funding")?, "funding").map_err(to_py)?,
            )),
        },
    }
}

fn parse_config(yaml: &str) -> PyResult<Config> {
    Config::from_yaml(yaml, "config").map_err(to_py)
}

fn timeframe(text: &str) -> PyResult<Timeframe> {
    Timeframe::parse(text).map_err(to_py)
}

fn prepare(
    py: Python<'_>,
    bars: &Bound<'_, PyAny>,
    cfg: &Config,
    funding: Option<&Bound<'_, PyAny>>,
) -> PyResult<Inputs> {
    let bars = bars_source(bars)?;
    let funding = funding_source(funding)?;
    py.detach(|| run::prepare(bars, funding, cfg)).map_err(to_py)
}

fn metrics_dict<'py>(py: Python<'py>, metrics: &crate::metrics::Metrics) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, value) in metrics.to_pairs() {
        dict.set_item(name, value)?;
    }
    Ok(dict)
}

#[pyfunction]
#[pyo3(signature = (path, symbols=None, start=None, end=None, timeframe="1h"))]
fn read_bars(
    py: Python<'_>,
    path: PathBuf,
    symbols: Option<Vec<String>>,
    start: Option<i64>,
    end: Option<i64>,
    timeframe: &str,
) -> PyResult<PyTable> {
    let selection = Selection { symbols, start, end, timeframe: self::timeframe(timeframe)? };
    let (bars, _) = py.detach(|| data::read_bars(&path, &selection)).map_err(to_py)?;
    table(data::bars_to_batch(&bars))
}

#[pyfunction]
#[pyo3(signature = (path, symbols=None, start=None, end=None))]
fn read_funding(
    py: Python<'_>,
    path: PathBuf,
    symbols: Option<Vec<String>>,
    start: Option<i64>,
    end: Option<i64>,
) -> PyResult<PyTable> {
    let funding = py.detach(|| data::read_funding(&path, symbols.as_deref(), start, end)).map_err(to_py)?;
    table(data::funding_to_batch(&funding))
}

#[pyfunction]
#[pyo3(signature = (bars, timeframe="1h"))]
fn validate_bars(py: Python<'_>, bars: &Bound<'_, PyAny>, timeframe: &str) -> PyResult<PyTable> {
    let timeframe = self::timeframe(timeframe)?;
    let bars = match bars_source(bars)? {
        BarsSource::Path(path) => {
            let selection = Selection { symbols: None, start: None, end: None, timeframe };
            py.detach(|| data::read_bars(&path, &selection)).map_err(to_py)?.0
        }
        BarsSource::Bars(bars) => bars,
    };
    let findings = py.detach(|| data::validate_bars(&bars, timeframe));
    table(data::findings_to_batch(&findings))
}

#[pyfunction]
#[pyo3(signature = (path, timeframe="1h"))]
fn validate_path(py: Python<'_>, path: PathBuf, timeframe: &str) -> PyResult<PyTable> {
    let timeframe = self::timeframe(timeframe)?;
    let selection = Selection { symbols: None, start: None, end: None, timeframe };
    let findings = py
        .detach(|| data::read_bars(&path, &selection).map(|(bars, _)| data::validate_bars(&bars, timeframe)))
        .map_err(to_py)?;
    table(data::findings_to_batch(&findings))
}

#[pyfunction]
fn config_default() -> String {
    Config::default().to_yaml()
}

#[pyfunction]
fn config_profile(name: &str) -> PyResult<String> {
    Config::profile(name).map(|c| c.to_yaml()).map_err(to_py)
}

#[pyfunction]
fn config_load(path: PathBuf) -> PyResult<String> {
    Config::load(&path).map(|c| c.to_yaml()).map_err(to_py)
}

#[pyfunction]
#[pyo3(signature = (text, source="<string>"))]
fn config_from_yaml(text: &str, source: &str) -> PyResult<String> {
    Config::from_yaml(text, source).map(|c| c.to_yaml()).map_err(to_py)
}

#[pyfunction]
fn config_with_overrides(yaml: &str, overrides: Vec<(String, String)>) -> PyResult<String> {
    let assignments: Vec<String> = overrides.into_iter().map(|(key, value)| format!("{key}={value}")).collect();
    parse_config(yaml)?.with_override_strings(&assignments).map(|c| c.to_yaml()).map_err(to_py)
}

#[pyfunction]
fn config_to_json(yaml: &str) -> PyResult<String> {
    let config = parse_config(yaml)?;
    serde_json::to_string(&config).map_err(|err| PyValueError::new_err(err.to_string()))
}

#[pyfunction]
#[pyo3(signature = (bars, config_yaml, funding=None))]
fn backtest<'py>(
    py: Python<'py>,
    bars: &Bound<'py, PyAny>,
    config_yaml: &str,
    funding: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let cfg = parse_config(config_yaml)?;
    let inputs = prepare(py, bars, &cfg, funding)?;
    let result = py.detach(|| run::backtest(&inputs, &cfg, false)).map_err(to_py)?;
    let out = PyDict::new(py);
    out.set_item("metrics", metrics_dict(py, &result.metrics)?)?;
    out.set_item("equity", table(output::equity_batch(&result))?)?;
    out.set_item("weights", table(output::weights_batch(&result))?)?;
    out.set_item("fills", table(output::fills_batch(&result))?)?;
    out.set_item("trades", table(output::trades_batch(&result))?)?;
    out.set_item("warnings", PyList::new(py, &result.warnings)?)?;
    out.set_item("symbols", PyList::new(py, &result.symbols)?)?;
    out.set_item("start", result.ts.first().copied())?;
    out.set_item("end", result.ts.last().map(|t| t + inputs.panel.timeframe.ms))?;
    out.set_item("first_decision", result.first_decision.map(|t| result.ts[t]))?;
    out.set_item("config", cfg.to_yaml())?;
    Ok(out)
}

#[pyfunction]
#[pyo3(signature = (bars, config_yaml, overrides_list, funding=None, n_jobs=None))]
fn sweep<'py>(
    py: Python<'py>,
    bars: &Bound<'py, PyAny>,
    config_yaml: &str,
    overrides_list: Vec<Vec<(String, String)>>,
    funding: Option<&Bound<'py, PyAny>>,
    n_jobs: Option<usize>,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let cfg = parse_config(config_yaml)?;
    let inputs = prepare(py, bars, &cfg, funding)?;
    let sets: Vec<Vec<String>> = overrides_list
        .into_iter()
        .map(|set| set.into_iter().map(|(key, value)| format!("{key}={value}")).collect())
        .collect();
    let results = py.detach(|| run::sweep(&inputs, &cfg, &sets, n_jobs)).map_err(to_py)?;
    results.iter().map(|m| metrics_dict(py, m)).collect()
}

#[pyfunction]
#[pyo3(signature = (bars, config_yaml, funding=None))]
fn signals(
    py: Python<'_>,
    bars: &Bound<'_, PyAny>,
    config_yaml: &str,
    funding: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyTable> {
    let cfg = parse_config(config_yaml)?;
    let inputs = prepare(py, bars, &cfg, funding)?;
    let result = py.detach(|| run::backtest(&inputs, &cfg, true)).map_err(to_py)?;
    table(output::signals_batch(&result).expect("signals were recorded"))
}

/// Seconds per run of the pure-Rust pipeline behind `backtest` (Arrow import, validation, panel,
/// engine, output batches) on data already handed over: the baseline of `python -m xsmom.bench`.
#[pyfunction]
#[pyo3(signature = (bars, config_yaml, repeats, funding=None))]
fn time_backtest(
    py: Python<'_>,
    bars: &Bound<'_, PyAny>,
    config_yaml: &str,
    repeats: usize,
    funding: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<f64>> {
    let cfg = parse_config(config_yaml)?;
    let bar_batches = batches_of(bars, "bars")?;
    let funding_batches = match funding {
        Some(object) if !object.is_none() => Some(batches_of(object, "funding")?),
        _ => None,
    };
    py.detach(|| {
        (0..repeats.max(1))
            .map(|_| {
                let started = Instant::now();
                let bars = data::bars_from_batches(&bar_batches, "bars")?;
                let funding = match &funding_batches {
                    Some(batches) => FundingSource::Funding(data::funding_from_batches(batches, "funding")?),
                    None => FundingSource::None,
                };
                let inputs = run::prepare(BarsSource::Bars(bars), funding, &cfg)?;
                let result = run::backtest(&inputs, &cfg, false)?;
                let outputs = [
                    output::equity_batch(&result),
                    output::weights_batch(&result),
                    output::fills_batch(&result),
                    output::trades_batch(&result),
                ];
                std::hint::black_box(outputs);
                Ok(started.elapsed().as_secs_f64())
            })
            .collect::<Result<Vec<f64>, Error>>()
    })
    .map_err(to_py)
}

fn stats_dict<'py>(py: Python<'py>, stats: &data::WriteStats) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("files_written", stats.files_written)?;
    dict.set_item("rows_added", stats.rows_added)?;
    dict.set_item("rows_replaced", stats.rows_replaced)?;
    Ok(dict)
}

#[pyfunction]
#[pyo3(signature = (paths, store, timeframe="1h"))]
fn ingest<'py>(py: Python<'py>, paths: Vec<PathBuf>, store: PathBuf, timeframe: &str) -> PyResult<Bound<'py, PyDict>> {
    let timeframe = self::timeframe(timeframe)?;
    let stats = py.detach(|| run::ingest(&paths, &store, timeframe)).map_err(to_py)?;
    stats_dict(py, &stats)
}

#[pyfunction]
#[pyo3(signature = (store, to, source=None))]
fn resample_store<'py>(
    py: Python<'py>,
    store: PathBuf,
    to: &str,
    source: Option<&str>,
) -> PyResult<Bound<'py, PyDict>> {
    let to = timeframe(to)?;
    let source = source.map(timeframe).transpose()?;
    let stats = py.detach(|| run::resample_store(&store, to, source)).map_err(to_py)?;
    stats_dict(py, &stats)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(read_bars, m)?)?;
    m.add_function(wrap_pyfunction!(read_funding, m)?)?;
    m.add_function(wrap_pyfunction!(validate_bars, m)?)?;
    m.add_function(wrap_pyfunction!(validate_path, m)?)?;
    m.add_function(wrap_pyfunction!(config_default, m)?)?;
    m.add_function(wrap_pyfunction!(config_profile, m)?)?;
    m.add_function(wrap_pyfunction!(config_load, m)?)?;
    m.add_function(wrap_pyfunction!(config_from_yaml, m)?)?;
    m.add_function(wrap_pyfunction!(config_with_overrides, m)?)?;
    m.add_function(wrap_pyfunction!(config_to_json, m)?)?;
    m.add_function(wrap_pyfunction!(backtest, m)?)?;
    m.add_function(wrap_pyfunction!(sweep, m)?)?;
    m.add_function(wrap_pyfunction!(signals, m)?)?;
    m.add_function(wrap_pyfunction!(time_backtest, m)?)?;
    m.add_function(wrap_pyfunction!(ingest, m)?)?;
    m.add_function(wrap_pyfunction!(resample_store, m)?)?;
    research::register(m)?;
    crate::python_fetch::register(m)?;
    Ok(())
}
