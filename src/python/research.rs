//! The research part of `xsmom._core` (research.md): a prepared panel kept on the Rust side,
//! batch evaluation of (override set, window) jobs, Monte Carlo and the overfitting statistics.
//! Heavy work runs with the GIL released; a child module of `python` so it shares its helpers.

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::{metrics_dict, parse_config, prepare_marked, to_py, Dataset};
use crate::metrics::{moments, probabilistic_sharpe};
use crate::research::{
    self, montecarlo, summarise_paths, walk_forward_segments, MonteCarloSummary, PathStats, WalkForwardMode, WindowJob,
};

/// The dataset of a study: a `Dataset` passed in is used as it is, anything else is validated now.
/// Mark bars (given, or the store's `kind=mark` when it has them) are attached whatever the base
/// config says: a study's space may turn the basis term on.
#[pyfunction]
#[pyo3(signature = (bars, config_yaml, funding=None, mark=None))]
fn research_panel(
    py: Python<'_>,
    bars: &Bound<'_, PyAny>,
    config_yaml: &str,
    funding: Option<&Bound<'_, PyAny>>,
    mark: Option<&Bound<'_, PyAny>>,
) -> PyResult<Dataset> {
    let cfg = parse_config(config_yaml)?;
    let inputs = prepare_marked(py, bars, &cfg, funding, mark, true)?;
    Ok(Dataset { inputs, timeframe: cfg.data.timeframe.clone() })
}

type PyJob = (Vec<(String, String)>, usize, usize);

/// Evaluate `(overrides, trade_from, trade_to)` jobs in one parallel call. Each item is a dict
/// with `metrics` (and `returns`, `equity`, `trade_returns` when `series`), or `error` (a one-line
/// message) when that override set is invalid.
#[pyfunction]
#[pyo3(signature = (panel, config_yaml, jobs, series=false, n_jobs=None))]
fn evaluate_windows<'py>(
    py: Python<'py>,
    panel: &Dataset,
    config_yaml: &str,
    jobs: Vec<PyJob>,
    series: bool,
    n_jobs: Option<usize>,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let cfg = parse_config(config_yaml)?;
    panel.check_timeframe(&cfg)?;
    let jobs: Vec<WindowJob> = jobs
        .into_iter()
        .map(|(overrides, trade_from, trade_to)| WindowJob {
            overrides: overrides.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            trade_from,
            trade_to,
        })
        .collect();
    let inputs = Arc::clone(&panel.inputs);
    let results = py.detach(|| research::evaluate_windows(&inputs, &cfg, &jobs, series, n_jobs)).map_err(to_py)?;
    results
        .into_iter()
        .map(|result| {
            let out = PyDict::new(py);
            match result {
                Ok(r) => {
                    out.set_item("metrics", metrics_dict(py, &r.metrics)?)?;
                    if let Some(returns) = r.returns {
                        out.set_item("returns", returns)?;
                    }
                    if let Some(equity) = r.equity {
                        out.set_item("equity", equity)?;
                    }
                    if let Some(trades) = r.trade_returns {
                        out.set_item("trade_returns", trades)?;
                    }
                }
                Err(err) => out.set_item("error", one_line(&err.to_string()))?,
            }
            Ok(out)
        })
        .collect()
}

/// `text` on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn paths_dict<'py>(py: Python<'py>, paths: &[PathStats]) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("total_return", paths.iter().map(|p| p.total_return).collect::<Vec<_>>())?;
    out.set_item("cagr", paths.iter().map(|p| p.cagr).collect::<Vec<_>>())?;
    out.set_item("max_drawdown", paths.iter().map(|p| p.max_drawdown).collect::<Vec<_>>())?;
    out.set_item("sharpe", paths.iter().map(|p| p.sharpe).collect::<Vec<_>>())?;
    out.set_item("time_under_water", paths.iter().map(|p| p.time_under_water).collect::<Vec<_>>())?;
    Ok(out)
}

fn summary_dict<'py>(py: Python<'py>, summary: &MonteCarloSummary, n_paths: usize) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    for (name, q) in &summary.quantiles {
        let levels = PyDict::new(py);
        for (label, value) in ["p1", "p5", "p50", "p95", "p99"].iter().zip(q) {
            levels.set_item(*label, *value)?;
        }
        out.set_item(*name, levels)?;
    }
    out.set_item("probability_of_loss", summary.probability_of_loss)?;
    out.set_item("cvar_5_total_return", summary.cvar_5_total_return)?;
    out.set_item("n_paths", n_paths)?;
    Ok(out)
}

/// Runs `work` with the GIL released, handing it a progress callback that calls the Python
/// `progress(done, total)` (if any) with the GIL taken back and checks for signals; an exception
/// there (Ctrl-C included) stops the work and is raised as it is.
fn with_py_progress<T: Send>(
    py: Python<'_>,
    progress: Option<Py<PyAny>>,
    total: usize,
    work: impl FnOnce(&mut dyn FnMut(usize) -> crate::error::Result<()>) -> crate::error::Result<T> + Send,
) -> PyResult<T> {
    let mut raised: Option<PyErr> = None;
    let result = py.detach(|| {
        let mut report = |done: usize| {
            Python::attach(|py| {
                py.check_signals()?;
                match &progress {
                    Some(callback) => callback.call1(py, (done, total)).map(drop),
                    None => Ok(()),
                }
            })
            .map_err(|err| {
                raised = Some(err);
                crate::error::Error::invalid("stopped by the progress callback")
            })
        };
        work(&mut report)
    });
    match raised {
        Some(err) => Err(err),
        None => result.map_err(to_py),
    }
}

/// Stationary bootstrap of per-bar `returns`: `{block, paths: {stat: [..]}, summary, fan?}`;
/// `progress(done, total)` is called every 256 paths.
#[pyfunction]
// No default for bars_per_year: it comes from the data's timeframe, never an hourly guess.
#[pyo3(signature = (returns, n_paths, seed, block, bars_per_year, fan=false, progress=None))]
#[allow(clippy::too_many_arguments)]
fn mc_bootstrap<'py>(
    py: Python<'py>,
    returns: Vec<f64>,
    n_paths: usize,
    seed: u64,
    block: Option<f64>,
    bars_per_year: f64,
    fan: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let run = with_py_progress(py, progress, n_paths, |report| {
        montecarlo::bootstrap_paths_with_progress(&returns, block, n_paths, seed, bars_per_year, fan, report)
    })?;
    let out = PyDict::new(py);
    out.set_item("block", run.block)?;
    out.set_item("paths", paths_dict(py, &run.paths)?)?;
    out.set_item("summary", summary_dict(py, &summarise_paths(&run.paths), n_paths)?)?;
    if let Some(fan) = run.fan {
        let levels = PyDict::new(py);
        for (k, label) in ["p5", "p25", "p50", "p75", "p95"].iter().enumerate() {
            levels.set_item(*label, fan.iter().map(|q| q[k]).collect::<Vec<_>>())?;
        }
        out.set_item("fan", levels)?;
    }
    Ok(out)
}

/// Reshuffled orders of round-trip returns: `{paths: {stat: [..]}, summary}`; `progress(done,
/// total)` is called every 256 paths.
#[pyfunction]
#[pyo3(signature = (trade_returns, n_paths=1000, seed=0, periods_per_year=252.0, progress=None))]
fn mc_reshuffle<'py>(
    py: Python<'py>,
    trade_returns: Vec<f64>,
    n_paths: usize,
    seed: u64,
    periods_per_year: f64,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let paths = with_py_progress(py, progress, n_paths, |report| {
        montecarlo::reshuffle_trade_paths_with_progress(&trade_returns, n_paths, seed, periods_per_year, report)
    })?;
    let out = PyDict::new(py);
    out.set_item("paths", paths_dict(py, &paths)?)?;
    out.set_item("summary", summary_dict(py, &summarise_paths(&paths), n_paths)?)?;
    Ok(out)
}

/// Path statistics of one series of per-period returns (compounded from 1).
#[pyfunction]
#[pyo3(signature = (returns, periods_per_year))]
fn path_stats<'py>(py: Python<'py>, returns: Vec<f64>, periods_per_year: f64) -> PyResult<Bound<'py, PyDict>> {
    let s = research::path_stats(&returns, periods_per_year);
    let out = PyDict::new(py);
    out.set_item("total_return", s.total_return)?;
    out.set_item("cagr", s.cagr)?;
    out.set_item("max_drawdown", s.max_drawdown)?;
    out.set_item("sharpe", s.sharpe)?;
    out.set_item("time_under_water", s.time_under_water)?;
    Ok(out)
}

/// Probabilistic Sharpe ratio of per-period `returns` against a per-period `benchmark` Sharpe.
#[pyfunction]
#[pyo3(signature = (returns, benchmark=0.0))]
fn psr(returns: Vec<f64>, benchmark: f64) -> f64 {
    let (mean, std, skew, kurtosis) = moments(&returns);
    probabilistic_sharpe(mean / std, benchmark, returns.len(), skew, kurtosis)
}

/// Deflated Sharpe ratio of per-period `returns` after `n_trials` trials whose per-period Sharpe
/// ratios have variance `sharpe_variance`.
#[pyfunction]
fn deflated_sharpe(returns: Vec<f64>, n_trials: usize, sharpe_variance: f64) -> f64 {
    research::deflated_sharpe(&returns, n_trials, sharpe_variance)
}

#[pyfunction]
fn expected_max_sharpe(n_trials: usize, sharpe_variance: f64) -> f64 {
    research::expected_max_sharpe(n_trials, sharpe_variance)
}

/// PBO by CSCV of `trials` (one list of per-bar returns per trial, all the same length).
#[pyfunction]
#[pyo3(signature = (trials, n_blocks=16))]
fn pbo(py: Python<'_>, trials: Vec<Vec<f64>>, n_blocks: usize) -> PyResult<f64> {
    let n_trials = trials.len();
    let n_rows = trials.first().map_or(0, Vec::len);
    if let Some(bad) = trials.iter().position(|t| t.len() != n_rows) {
        return Err(PyValueError::new_err(format!(
            "PBO: trial {bad} has {} returns, trial 0 has {n_rows}",
            trials[bad].len()
        )));
    }
    let mut matrix = vec![0.0; n_rows * n_trials];
    for (c, trial) in trials.iter().enumerate() {
        for (r, value) in trial.iter().enumerate() {
            matrix[r * n_trials + c] = *value;
        }
    }
    py.detach(|| research::pbo(&matrix, n_trials, n_blocks)).map_err(to_py)
}

/// Politis–White mean block length of `series`.
#[pyfunction]
fn block_length(series: Vec<f64>) -> f64 {
    research::politis_white_block_length(&series)
}

/// Walk-forward segments in bar indices (research.md §1).
#[pyfunction]
#[pyo3(signature = (n_bars, train, oos, embargo, purge, mode="rolling"))]
fn segments<'py>(
    py: Python<'py>,
    n_bars: usize,
    train: usize,
    oos: usize,
    embargo: usize,
    purge: usize,
    mode: &str,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let mode = match mode {
        "rolling" => WalkForwardMode::Rolling,
        "anchored" => WalkForwardMode::Anchored,
        other => return Err(PyValueError::new_err(format!("wfo mode: expected rolling or anchored, got {other:?}"))),
    };
    walk_forward_segments(n_bars, train, oos, embargo, purge, mode)
        .into_iter()
        .map(|s| {
            let out = PyDict::new(py);
            out.set_item("train_start", s.train_start)?;
            out.set_item("train_end", s.train_end)?;
            out.set_item("purged_end", s.purged_end)?;
            out.set_item("oos_start", s.oos_start)?;
            out.set_item("oos_end", s.oos_end)?;
            Ok(out)
        })
        .collect()
}

/// Add the research functions to `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(research_panel, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate_windows, m)?)?;
    m.add_function(wrap_pyfunction!(mc_bootstrap, m)?)?;
    m.add_function(wrap_pyfunction!(mc_reshuffle, m)?)?;
    m.add_function(wrap_pyfunction!(path_stats, m)?)?;
    m.add_function(wrap_pyfunction!(psr, m)?)?;
    m.add_function(wrap_pyfunction!(deflated_sharpe, m)?)?;
    m.add_function(wrap_pyfunction!(expected_max_sharpe, m)?)?;
    m.add_function(wrap_pyfunction!(pbo, m)?)?;
    m.add_function(wrap_pyfunction!(block_length, m)?)?;
    m.add_function(wrap_pyfunction!(segments, m)?)?;
    Ok(())
}
