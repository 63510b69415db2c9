//! `xsmom._core`: the thin pyo3 layer over the library.
//!
//! Tables cross the boundary through the Arrow C stream interface (`__arrow_c_stream__`), so polars
//! DataFrames come in and go out without copies through pyarrow. Heavy work runs with the GIL
//! released. Library errors become `ValueError` (data, config, input) or `OSError` (files).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pyo3_arrow::input::AnyRecordBatch;
use pyo3_arrow::PyTable;

use crate::backtest::{output, BacktestResult};
use crate::config::Config;
use crate::data::{self, Selection, SpikeRule};
use crate::error::{Error, ErrorKind};
use crate::run::{self, BarsSource, FundingSource, Inputs, MarkSource};
use crate::timeframe::Timeframe;

mod fetch;
mod research;

/// The one mapping of core errors to Python exceptions: the classes of `xsmom.exceptions` (each
/// also a `ValueError` or `OSError`), chosen by kind — never by message text.
pub(crate) fn to_py(err: Error) -> PyErr {
    let kind = err.kind();
    let class = match kind {
        ErrorKind::Io => "FileAccessError",
        ErrorKind::Format => "DataFormatError",
        ErrorKind::Data => "DataError",
        ErrorKind::Config => "ConfigError",
        ErrorKind::UnknownKey => "UnknownKeyError",
        ErrorKind::Invalid => "InvalidArgumentError",
    };
    let py_err = exception(class, err.to_string(), kind == ErrorKind::Io);
    if let Error::UnknownKey { key, .. } = err.innermost() {
        // The key itself, so that callers (the CLI's "did you mean") never parse it out of the text.
        Python::attach(|py| py_err.value(py).setattr("key", key.as_str()).ok());
    }
    py_err
}

/// An instance of `xsmom.exceptions.<class>` with `message`; the builtin it extends
/// (`OSError` when `os_error`, else `ValueError`) if the module cannot be imported.
pub(crate) fn exception(class: &str, message: String, os_error: bool) -> PyErr {
    Python::attach(|py| {
        let typed = py
            .import("xsmom.exceptions")
            .and_then(|module| module.getattr(class))
            .and_then(|ty| ty.cast_into::<pyo3::types::PyType>().map_err(PyErr::from));
        match typed {
            Ok(ty) => PyErr::from_type(ty, message),
            Err(_) if os_error => PyOSError::new_err(message),
            Err(_) => PyValueError::new_err(message),
        }
    })
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
        None => {
            Ok(BarsSource::Arrow(data::ArrowBars::from_batches(&batches_of(bars, "bars")?, "bars").map_err(to_py)?))
        }
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

/// Mark-price bars given explicitly: a path (store root or long file) or an Arrow table.
fn mark_source(mark: Option<&Bound<'_, PyAny>>) -> PyResult<Option<MarkSource>> {
    match mark {
        None => Ok(None),
        Some(object) if object.is_none() => Ok(None),
        Some(object) => match as_path(object) {
            Some(path) => Ok(Some(MarkSource::Path(path))),
            None => Ok(Some(MarkSource::Bars(
                data::ArrowBars::from_batches(&batches_of(object, "mark")?, "mark").map_err(to_py)?.view().to_bars(),
            ))),
        },
    }
}

/// The mark bars of a run: the given ones, else the bars store's `kind=mark` when `from_store`
/// and it has them.
fn mark_or_store(
    bars: &BarsSource,
    mark: Option<MarkSource>,
    timeframe: Timeframe,
    from_store: bool,
) -> Option<MarkSource> {
    mark.or_else(|| match bars {
        BarsSource::Path(path) if from_store && data::store::store_has_kind(path, timeframe, data::BarKind::Mark) => {
            Some(MarkSource::Path(path.clone()))
        }
        _ => None,
    })
}

/// A config as parsed from its YAML, with its canonical YAML.
struct ParsedConfig {
    yaml: String,
    config: Config,
    canonical: String,
}

/// The last config parsed: a research loop passes the same YAML call after call, and parsing it
/// (with its canonical YAML for the result) costs ~0.1 ms, 1–2 % of a backtest of the fixture.
static LAST_CONFIG: std::sync::Mutex<Option<Arc<ParsedConfig>>> = std::sync::Mutex::new(None);

fn parsed_config(yaml: &str) -> PyResult<Arc<ParsedConfig>> {
    let mut last = LAST_CONFIG.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(parsed) = last.as_ref().filter(|parsed| parsed.yaml == yaml) {
        return Ok(Arc::clone(parsed));
    }
    let config = Config::from_yaml(yaml, "config").map_err(to_py)?;
    let parsed = Arc::new(ParsedConfig { yaml: yaml.to_string(), canonical: config.to_yaml(), config });
    *last = Some(Arc::clone(&parsed));
    Ok(parsed)
}

fn parse_config(yaml: &str) -> PyResult<Config> {
    Ok(parsed_config(yaml)?.config.clone())
}

fn timeframe(text: &str) -> PyResult<Timeframe> {
    Timeframe::parse(text).map_err(to_py)
}

/// Inputs of a run: a `Dataset` as it is (validated once), anything else validated now, with
/// mark-price bars: the given ones, else (when `wants_mark`: some config of the
/// call runs the basis term) the bars store's `kind=mark` when it has them.
fn prepare_marked(
    py: Python<'_>,
    bars: &Bound<'_, PyAny>,
    cfg: &Config,
    funding: Option<&Bound<'_, PyAny>>,
    mark: Option<&Bound<'_, PyAny>>,
    wants_mark: bool,
) -> PyResult<Arc<Inputs>> {
    Ok(prepare_for_one_run(py, bars, None, cfg, funding, mark, wants_mark, false)?.0)
}

/// [`prepare_marked`] for one backtest: with `defer`, the warnings of error-free bars may still be
/// being found on another thread (`run::prepare_deferred`); the caller finishes them. `sources`:
/// bars and funding already read from the Python objects ([`streamed_run`]).
#[allow(clippy::too_many_arguments)]
fn prepare_for_one_run(
    py: Python<'_>,
    bars: &Bound<'_, PyAny>,
    sources: Option<(BarsSource, FundingSource)>,
    cfg: &Config,
    funding: Option<&Bound<'_, PyAny>>,
    mark: Option<&Bound<'_, PyAny>>,
    wants_mark: bool,
    defer: bool,
) -> PyResult<(Arc<Inputs>, Option<run::PendingFindings>)> {
    if let Ok(dataset) = bars.cast::<Dataset>() {
        let dataset = dataset.get();
        for (name, given) in [("funding", funding), ("mark", mark)] {
            if given.is_some_and(|f| !f.is_none()) {
                return Err(PyValueError::new_err(format!(
                    "{name}: a Dataset carries its own {name} data; pass {name} when building the Dataset"
                )));
            }
        }
        dataset.check_timeframe(cfg)?;
        return Ok((Arc::clone(&dataset.inputs), None));
    }
    let (bars, funding) = match sources {
        Some(sources) => sources,
        None => (bars_source(bars)?, funding_source(funding)?),
    };
    let mark = mark_or_store(&bars, mark_source(mark)?, cfg.timeframe(), wants_mark);
    let drop_invalid = cfg.data.on_invalid == crate::config::OnInvalid::Drop;
    py.detach(|| {
        let (mut inputs, pending) =
            if defer { run::prepare_deferred(bars, funding, cfg)? } else { (run::prepare(bars, funding, cfg)?, None) };
        if let Some(mark) = mark {
            run::attach_mark(&mut inputs, mark, cfg.data.spike_rule(), drop_invalid)?;
        }
        Ok::<_, Error>((Arc::new(inputs), pending))
    })
    .map_err(to_py)
}

/// What [`streamed_run`] did: the run, or the sources the usual path is to take (`None`: build
/// them from the Python objects, as for a Dataset or given mark bars).
// Returned once per call and taken apart at once: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
enum OneRun {
    Ran(BacktestResult),
    Usual(Option<(BarsSource, FundingSource)>),
}

/// A run of a DataFrame's, a file's or a store's bars with the pivot streamed into the engine
/// ([`run::backtest_streamed`], [`run::backtest_streamed_path`]), or the sources for the usual path
/// (a Dataset, mark bars, bars that are not canonical or have an error): the same inputs, result
/// and warnings either way, and bars are read and imported once.
fn streamed_run(
    py: Python<'_>,
    bars: &Bound<'_, PyAny>,
    cfg: &Config,
    funding: Option<&Bound<'_, PyAny>>,
    mark: Option<&Bound<'_, PyAny>>,
    record_signals: bool,
) -> PyResult<OneRun> {
    if bars.cast::<Dataset>().is_ok() || mark.is_some_and(|m| !m.is_none()) {
        return Ok(OneRun::Usual(None));
    }
    let funding = funding_source(funding)?;
    let ran = match bars_source(bars)? {
        BarsSource::Path(path) => py.detach(|| run::backtest_streamed_path(&path, funding, cfg, record_signals)),
        BarsSource::Arrow(arrow) => py.detach(|| {
            Ok(match run::backtest_streamed(&arrow, &funding, cfg, record_signals)? {
                Some(ran) => run::StreamedRun::Ran(Box::new(ran)),
                None => run::StreamedRun::Usual(BarsSource::Arrow(arrow), funding),
            })
        }),
        bars => Ok(run::StreamedRun::Usual(bars, funding)),
    };
    Ok(match ran.map_err(to_py)? {
        run::StreamedRun::Ran(ran) => OneRun::Ran(ran.1),
        run::StreamedRun::Usual(bars, funding) => OneRun::Usual(Some((bars, funding))),
    })
}

/// Bars and funding validated and pivoted once: `backtest`, `sweep`, `signals` and the research
/// functions accept it in place of bars and reuse it as it is.
#[pyclass(frozen, module = "xsmom._core")]
pub struct Dataset {
    pub(crate) inputs: Arc<Inputs>,
    timeframe: String,
}

impl Dataset {
    pub(crate) fn new_prepared(inputs: Inputs) -> Self {
        let timeframe = inputs.panel.timeframe.label();
        Self { inputs: Arc::new(inputs), timeframe }
    }

    /// A config must run on the dataset's timeframe (its bars per year, its funding alignment).
    pub(crate) fn check_timeframe(&self, cfg: &Config) -> PyResult<()> {
        if cfg.timeframe() != self.inputs.panel.timeframe {
            return Err(PyValueError::new_err(format!(
                "config data.timeframe {} differs from the dataset's {}",
                cfg.data.timeframe, self.timeframe
            )));
        }
        Ok(())
    }
}

#[pymethods]
impl Dataset {
    #[new]
    #[pyo3(signature = (bars, funding=None, timeframe="1h", on_invalid="refuse", spike_mads=None, spike_window=None, mark=None))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        py: Python<'_>,
        bars: &Bound<'_, PyAny>,
        funding: Option<&Bound<'_, PyAny>>,
        timeframe: &str,
        on_invalid: &str,
        spike_mads: Option<f64>,
        spike_window: Option<usize>,
        mark: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let timeframe = self::timeframe(timeframe)?;
        let spike = spike_rule(spike_mads, spike_window)?;
        let drop_invalid = match on_invalid {
            "refuse" => false,
            "drop" => true,
            other => {
                return Err(PyValueError::new_err(format!("on_invalid: expected refuse or drop, got {other:?}")));
            }
        };
        let bars = bars_source(bars)?;
        let funding = funding_source(funding)?;
        let mark = mark_or_store(&bars, mark_source(mark)?, timeframe, true);
        let inputs = py
            .detach(|| {
                let mut inputs = run::prepare_with(bars, funding, timeframe, spike, drop_invalid)?;
                if let Some(mark) = mark {
                    run::attach_mark(&mut inputs, mark, spike, drop_invalid)?;
                }
                Ok::<_, Error>(inputs)
            })
            .map_err(to_py)?;
        Ok(Self::new_prepared(inputs))
    }
    #[getter]
    fn n_bars(&self) -> usize {
        self.inputs.panel.n_bars()
    }
    #[getter]
    fn n_symbols(&self) -> usize {
        self.inputs.panel.n_symbols()
    }
    #[getter]
    fn symbols(&self) -> Vec<String> {
        self.inputs.panel.symbols.clone()
    }
    /// Bar open times, epoch ms UTC.
    #[getter]
    fn ts(&self) -> Vec<i64> {
        self.inputs.panel.ts.clone()
    }
    #[getter]
    fn timeframe(&self) -> String {
        self.timeframe.clone()
    }
    #[getter]
    fn timeframe_ms(&self) -> i64 {
        self.inputs.panel.timeframe.ms
    }
    #[getter]
    fn bars_per_day(&self) -> f64 {
        self.inputs.panel.timeframe.bars_per_day() as f64
    }
    #[getter]
    fn bars_per_year(&self) -> f64 {
        self.inputs.panel.timeframe.bars_per_year()
    }
    #[getter]
    fn warnings(&self) -> Vec<String> {
        self.inputs.warnings.clone()
    }
    /// Whether any symbol has funding data.
    #[getter]
    fn has_funding(&self) -> bool {
        self.inputs.funding.has_data.iter().any(|&has| has)
    }
    /// Whether mark-price closes are attached (the basis term of the carry sleeve reads them).
    #[getter]
    fn has_mark(&self) -> bool {
        self.inputs.panel.mark_close.as_ref().is_some_and(|m| m.iter().any(|c| c.is_finite()))
    }
    /// Validation findings (`symbol, ts, kind, severity, detail`) of the bars as loaded.
    fn findings(&self) -> PyResult<PyTable> {
        table(data::findings_to_batch(&self.inputs.findings))
    }
    /// The validated bars in long format (canonical order; `turnover` is the quote volume).
    fn bars(&self, py: Python<'_>) -> PyResult<PyTable> {
        let batch = py.detach(|| data::bars_to_batch(&self.inputs.panel.to_bars()));
        table(batch)
    }
    /// The funding aligned to the bars, one event per bar with its summed rate (None without funding).
    fn funding(&self, py: Python<'_>) -> PyResult<Option<PyTable>> {
        if !self.has_funding() {
            return Ok(None);
        }
        let batch = py.detach(|| data::funding_to_batch(&self.inputs.funding.to_funding(&self.inputs.panel)));
        table(batch).map(Some)
    }
    /// The attached mark-price closes as bars (`ts, symbol, open, high, low, close`, each price the
    /// mark close; None without mark data): what `Dataset(..., mark=)` rebuilds the same panel from.
    fn mark(&self, py: Python<'_>) -> PyResult<Option<PyTable>> {
        if !self.has_mark() {
            return Ok(None);
        }
        let bars = self.inputs.panel.mark_to_bars().expect("has_mark");
        let batch = py.detach(|| data::bars_to_batch(&bars));
        table(batch).map(Some)
    }
    fn __repr__(&self) -> String {
        let panel = &self.inputs.panel;
        let day = |ts: i64| crate::timeframe::utc_label(ts);
        format!(
            "Dataset({} symbols × {} bars of {}, {} → {}, {} finding(s))",
            panel.n_symbols(),
            panel.n_bars(),
            self.timeframe,
            panel.ts.first().map_or("-".into(), |&ts| day(ts)),
            panel.ts.last().map_or("-".into(), |&ts| day(ts + panel.timeframe.ms)),
            self.inputs.findings.len()
        )
    }
}

fn metrics_dict<'py>(py: Python<'py>, metrics: &crate::metrics::Metrics) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (name, value) in metrics.to_pairs() {
        dict.set_item(name, value)?;
    }
    Ok(dict)
}

#[pyfunction]
#[pyo3(signature = (path, symbols=None, start=None, end=None, timeframe="1h", kind="trade"))]
fn read_bars(
    py: Python<'_>,
    path: PathBuf,
    symbols: Option<Vec<String>>,
    start: Option<i64>,
    end: Option<i64>,
    timeframe: &str,
    kind: &str,
) -> PyResult<PyTable> {
    let selection = Selection { symbols, start, end, timeframe: self::timeframe(timeframe)? };
    let kind = data::BarKind::parse(kind).map_err(to_py)?;
    let batch = py
        .detach(|| {
            if !kind.has_volume() {
                return Ok::<_, Error>(data::bars_to_batch(&data::read_bars_of_kind(&path, &selection, kind)?.0));
            }
            let (arrow, _) = data::store::read_bars_arrow(&path, &selection)?;
            Ok::<_, Error>(match arrow.view().is_canonical() {
                true => arrow.to_batch(),
                false => data::bars_to_batch(&data::store::sort_bars(arrow.view().to_bars())),
            })
        })
        .map_err(to_py)?;
    table(batch)
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

/// The spike rule of `data.spike_mads` / `data.spike_window` (defaults where `None`), checked
/// against the config's ranges.
fn spike_rule(mads: Option<f64>, window: Option<usize>) -> PyResult<SpikeRule> {
    let mut cfg = Config::default();
    cfg.data.spike_mads = mads.unwrap_or(cfg.data.spike_mads);
    cfg.data.spike_window = window.unwrap_or(cfg.data.spike_window);
    cfg.validate().map_err(to_py)?;
    Ok(cfg.data.spike_rule())
}

#[pyfunction]
#[pyo3(signature = (bars, timeframe="1h", spike_mads=None, spike_window=None))]
fn validate_bars(
    py: Python<'_>,
    bars: &Bound<'_, PyAny>,
    timeframe: &str,
    spike_mads: Option<f64>,
    spike_window: Option<usize>,
) -> PyResult<PyTable> {
    let timeframe = self::timeframe(timeframe)?;
    let spike = spike_rule(spike_mads, spike_window)?;
    let findings = match bars_source(bars)? {
        BarsSource::Path(path) => {
            let selection = Selection { symbols: None, start: None, end: None, timeframe };
            let bars = py.detach(|| data::read_bars(&path, &selection)).map_err(to_py)?.0;
            py.detach(|| data::validate_bars(bars, timeframe, spike))
        }
        BarsSource::Bars(bars) => py.detach(|| data::validate_bars(bars, timeframe, spike)),
        BarsSource::Arrow(arrow) => py.detach(|| {
            let view = arrow.view();
            if view.is_canonical() {
                data::validate_canonical(view, timeframe, spike)
            } else {
                data::validate_bars(view.to_bars(), timeframe, spike)
            }
        }),
    };
    table(data::findings_to_batch(&findings))
}

#[pyfunction]
#[pyo3(signature = (path, timeframe="1h", spike_mads=None, spike_window=None))]
fn validate_path(
    py: Python<'_>,
    path: PathBuf,
    timeframe: &str,
    spike_mads: Option<f64>,
    spike_window: Option<usize>,
) -> PyResult<PyTable> {
    let timeframe = self::timeframe(timeframe)?;
    let spike = spike_rule(spike_mads, spike_window)?;
    let selection = Selection { symbols: None, start: None, end: None, timeframe };
    let findings = py
        .detach(|| data::read_bars(&path, &selection).map(|(bars, _)| data::validate_bars(bars, timeframe, spike)))
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

/// Bars in a 365-day year of a timeframe (`"4h"` → 2190): what the core annualises metrics with.
#[pyfunction]
fn bars_per_year(timeframe: &str) -> PyResult<f64> {
    Ok(self::timeframe(timeframe)?.bars_per_year())
}

/// Whether a config runs the basis term of the carry sleeve (and so reads mark-price bars).
#[pyfunction]
fn config_wants_mark(yaml: &str) -> PyResult<bool> {
    Ok(run::wants_mark(&parse_config(yaml)?))
}

#[pyfunction]
fn config_to_json(yaml: &str) -> PyResult<String> {
    let config = parse_config(yaml)?;
    serde_json::to_string(&config).map_err(|err| PyValueError::new_err(err.to_string()))
}

/// The tables a backtest can build (backtest.md §4).
const TABLES: [&str; 5] = ["equity", "weights", "fills", "trades", "meta_skipped"];

fn build_table(result: &BacktestResult, name: &str) -> RecordBatch {
    match name {
        "equity" => output::equity_batch(result),
        "weights" => output::weights_batch(result),
        "fills" => output::fills_batch(result),
        "trades" => output::trades_batch(result),
        "meta_skipped" => output::meta_skipped_batch(result),
        other => unreachable!("unknown table {other}"),
    }
}

/// The tables `names` of a finished run, in that order. Each table is built on one thread, so
/// with enough rows they are built on both cores, the largest first (items are handed out one at
/// a time): `fills` beside `equity` and `trades`.
fn build_tables(result: &BacktestResult, names: &[String]) -> Vec<(String, RecordBatch)> {
    let rows = |name: &str| match name {
        "weights" => result.ts.len() * result.symbols.len(),
        "fills" => result.fills.len(),
        "trades" => result.round_trips.len(),
        "meta_skipped" => result.meta_skipped.len(),
        _ => result.ts.len(),
    };
    let mut order: Vec<usize> = (0..names.len()).collect();
    order.sort_by_key(|&k| std::cmp::Reverse(rows(&names[k])));
    let total: usize = names.iter().map(|name| rows(name)).sum();
    // Starting a thread costs tens of microseconds: small tables are built on this one.
    let threads = if total < 4_000 { Some(1) } else { None };
    let built = crate::threads::map_with_state(&order, threads, || (), |_, &k| build_table(result, &names[k]));
    let mut tables: Vec<Option<RecordBatch>> = (0..names.len()).map(|_| None).collect();
    for (k, batch) in order.into_iter().zip(built) {
        tables[k] = Some(batch);
    }
    names.iter().cloned().zip(tables.into_iter().map(|batch| batch.expect("every table built"))).collect()
}

/// A finished backtest kept on the Rust side, so that tables not built with the run (the long
/// weights table above all) are built when first asked for, and only then.
#[pyclass(frozen, module = "xsmom._core")]
pub struct BacktestRun {
    result: BacktestResult,
}

#[pymethods]
impl BacktestRun {
    /// One of `equity`, `weights`, `fills`, `trades`, `meta_skipped`.
    fn table(&self, py: Python<'_>, name: &str) -> PyResult<PyTable> {
        if !TABLES.contains(&name) {
            return Err(PyValueError::new_err(format!("table: expected one of {}, got {name:?}", TABLES.join(", "))));
        }
        table(py.detach(|| build_table(&self.result, name)))
    }
    /// A `T × N` matrix as a wide table: `ts` and one column per symbol. `column` is one of
    /// `target_weight`, `model_weight`, `weight`, `units`.
    #[pyo3(signature = (column="weight"))]
    fn wide(&self, py: Python<'_>, column: &str) -> PyResult<PyTable> {
        let batch = py.detach(|| output::wide_batch(&self.result, column)).map_err(to_py)?;
        table(batch)
    }
}

#[pyfunction]
#[pyo3(signature = (bars, config_yaml, funding=None, outputs=None, mark=None))]
fn backtest<'py>(
    py: Python<'py>,
    bars: &Bound<'py, PyAny>,
    config_yaml: &str,
    funding: Option<&Bound<'py, PyAny>>,
    outputs: Option<Vec<String>>,
    mark: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let parsed = parsed_config(config_yaml)?;
    let cfg = &parsed.config;
    let outputs = outputs.unwrap_or_else(|| ["equity", "fills", "trades"].map(String::from).to_vec());
    if let Some(unknown) = outputs.iter().find(|name| !TABLES.contains(&name.as_str())) {
        return Err(PyValueError::new_err(format!(
            "outputs: unknown table {unknown:?}; expected some of {}",
            TABLES.join(", ")
        )));
    }
    // The bar length is the streamed pivot's (the config's), or the panel's on the usual path.
    let (bar_ms, result, tables) = match streamed_run(py, bars, cfg, funding, mark, false)? {
        OneRun::Ran(result) => {
            let tables = py.detach(|| build_tables(&result, &outputs));
            (cfg.timeframe().ms, result, tables)
        }
        OneRun::Usual(sources) => {
            let wants_mark = run::wants_mark(cfg);
            let (inputs, pending) = prepare_for_one_run(py, bars, sources, cfg, funding, mark, wants_mark, true)?;
            let (result, tables) = py
                .detach(|| {
                    let mut result = run::backtest(&inputs, cfg, false)?;
                    let tables = build_tables(&result, &outputs);
                    if let Some(pending) = pending {
                        // The bars' own warnings come first, as from a validation done before the run.
                        let (_, bar_warnings) = pending.finish()?;
                        result.warnings.splice(0..0, bar_warnings);
                    }
                    Ok::<_, Error>((result, tables))
                })
                .map_err(to_py)?;
            (inputs.panel.timeframe.ms, result, tables)
        }
    };
    let out = PyDict::new(py);
    out.set_item("metrics", metrics_dict(py, &result.metrics)?)?;
    for (name, batch) in tables {
        out.set_item(name, table(batch)?)?;
    }
    out.set_item("warnings", PyList::new(py, &result.warnings)?)?;
    out.set_item("symbols", PyList::new(py, &result.symbols)?)?;
    out.set_item("start", result.ts.first().copied())?;
    out.set_item("end", result.ts.last().map(|t| t + bar_ms))?;
    out.set_item("first_decision", result.first_decision.map(|t| result.ts[t]))?;
    out.set_item("has_target", result.book.target_weight.iter().any(|&w| w != 0.0))?;
    out.set_item("config", &parsed.canonical)?;
    out.set_item("run", BacktestRun { result })?;
    Ok(out)
}

/// The meta-labeler's fit kernel (L2-regularised logistic regression by L-BFGS, intercept not
/// penalised, scikit-learn's `C`): `(coef, intercept)` for the rows `x` and 0/1 labels `y`.
#[pyfunction]
fn fit_logistic(py: Python<'_>, x: Vec<Vec<f64>>, y: Vec<f64>, c: f64) -> PyResult<(Vec<f64>, f64)> {
    let d = x.first().map_or(0, Vec::len);
    if x.iter().any(|row| row.len() != d) {
        return Err(PyValueError::new_err("fit_logistic: rows of x differ in length"));
    }
    let flat: Vec<f64> = x.into_iter().flatten().collect();
    let fit = py.detach(|| crate::logistic::fit_logistic(&flat, d, &y, c)).map_err(to_py)?;
    Ok((fit.coef, fit.intercept))
}

/// Seconds per engine run on a prepared dataset (no loading, validation or output tables): the
/// baseline the benchmark compares every entry point with.
#[pyfunction]
fn time_engine(py: Python<'_>, dataset: &Dataset, config_yaml: &str, repeats: usize) -> PyResult<Vec<f64>> {
    let cfg = parse_config(config_yaml)?;
    dataset.check_timeframe(&cfg)?;
    let inputs = Arc::clone(&dataset.inputs);
    py.detach(|| {
        (0..repeats.max(1))
            .map(|_| {
                let started = Instant::now();
                let result = crate::backtest::run(&inputs.panel, &inputs.funding, &cfg)?;
                std::hint::black_box(result);
                Ok(started.elapsed().as_secs_f64())
            })
            .collect::<Result<Vec<f64>, Error>>()
    })
    .map_err(to_py)
}

#[pyfunction]
#[pyo3(signature = (bars, config_yaml, overrides_list, funding=None, n_jobs=None, mark=None))]
fn sweep<'py>(
    py: Python<'py>,
    bars: &Bound<'py, PyAny>,
    config_yaml: &str,
    overrides_list: Vec<Vec<(String, String)>>,
    funding: Option<&Bound<'py, PyAny>>,
    n_jobs: Option<usize>,
    mark: Option<&Bound<'py, PyAny>>,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let cfg = parse_config(config_yaml)?;
    let sets: Vec<Vec<String>> = overrides_list
        .into_iter()
        .map(|set| set.into_iter().map(|(key, value)| format!("{key}={value}")).collect())
        .collect();
    // A sweep over `strategy.carry.basis_weight` from a base without the basis term still needs
    // the store's mark bars (a bad set is reported by the sweep itself).
    let wants_mark = run::wants_mark(&cfg)
        || sets.iter().any(|set| cfg.with_override_strings(set).is_ok_and(|c| run::wants_mark(&c)));
    let inputs = prepare_marked(py, bars, &cfg, funding, mark, wants_mark)?;
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
    let result = match streamed_run(py, bars, &cfg, funding, None, true)? {
        OneRun::Ran(result) => result,
        OneRun::Usual(sources) => {
            let wants_mark = run::wants_mark(&cfg);
            let (inputs, pending) = prepare_for_one_run(py, bars, sources, &cfg, funding, None, wants_mark, true)?;
            py.detach(|| {
                let result = run::backtest(&inputs, &cfg, true)?;
                // The table carries no warnings; the validation is still waited for (and its
                // error, should it find one, raised) so that nothing runs on after the call.
                pending.map(run::PendingFindings::finish).transpose()?;
                Ok::<_, Error>(result)
            })
            .map_err(to_py)?
        }
    };
    let record = result.signals.expect("signals were recorded");
    table(output::signals_batch(&result.symbols, record))
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
                let bars = data::ArrowBars::from_batches(&bar_batches, "bars")?;
                let funding = match &funding_batches {
                    Some(batches) => FundingSource::Funding(data::funding_from_batches(batches, "funding")?),
                    None => FundingSource::None,
                };
                let inputs = run::prepare(BarsSource::Arrow(bars), funding, &cfg)?;
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
#[pyo3(signature = (paths, store, timeframe="1h", kind="trade"))]
fn ingest<'py>(
    py: Python<'py>,
    paths: Vec<PathBuf>,
    store: PathBuf,
    timeframe: &str,
    kind: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let kind = data::BarKind::parse(kind).map_err(to_py)?;
    let timeframe = self::timeframe(timeframe)?;
    let stats = py.detach(|| run::ingest_of_kind(&paths, &store, timeframe, kind)).map_err(to_py)?;
    stats_dict(py, &stats)
}

/// Rewrite a store's files that are not in the store codec (`data::store::compact_store`).
#[pyfunction]
fn compact_store<'py>(py: Python<'py>, store: PathBuf) -> PyResult<Bound<'py, PyDict>> {
    let stats = py.detach(|| data::compact_store(&store)).map_err(to_py)?;
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
    m.add("BPS", crate::model::BPS)?;
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
    m.add_function(wrap_pyfunction!(config_wants_mark, m)?)?;
    m.add_function(wrap_pyfunction!(bars_per_year, m)?)?;
    m.add_function(wrap_pyfunction!(backtest, m)?)?;
    m.add_function(wrap_pyfunction!(fit_logistic, m)?)?;
    m.add_function(wrap_pyfunction!(sweep, m)?)?;
    m.add_function(wrap_pyfunction!(signals, m)?)?;
    m.add_function(wrap_pyfunction!(time_backtest, m)?)?;
    m.add_function(wrap_pyfunction!(time_engine, m)?)?;
    m.add_class::<Dataset>()?;
    m.add_class::<BacktestRun>()?;
    m.add_function(wrap_pyfunction!(ingest, m)?)?;
    m.add_function(wrap_pyfunction!(compact_store, m)?)?;
    m.add_function(wrap_pyfunction!(resample_store, m)?)?;
    research::register(m)?;
    fetch::register(m)?;
    Ok(())
}
