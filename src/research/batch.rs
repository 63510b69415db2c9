//! Batch evaluation for the optimizer (research.md §2): many (override set, window) jobs over one
//! prepared panel in one call, in parallel. An invalid override set is a per-job error, so the
//! caller can prune that trial; it never fails the batch.

use crate::backtest::{self, BacktestResult, OutputBuffers};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::run::Inputs;

/// One backtest to run: `overrides` (`key.path=value`) on the base config, traded warm over the
/// panel's bars `[trade_from, trade_to)`.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowJob {
    pub overrides: Vec<String>,
    pub trade_from: usize,
    pub trade_to: usize,
}

/// What a job produced: metrics always; per-bar returns (from the initial capital, one per bar of
/// the window) and round-trip returns (PnL over the equity at the bar the trip was entered) when asked.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowResult {
    pub metrics: Metrics,
    pub returns: Option<Vec<f64>>,
    pub equity: Option<Vec<f64>>,
    pub trade_returns: Option<Vec<f64>>,
}

/// Per-bar returns of a window result, the first one from `initial_capital`.
pub fn bar_returns(result: &BacktestResult, initial_capital: f64) -> Vec<f64> {
    let mut previous = initial_capital;
    result
        .bars
        .equity
        .iter()
        .map(|&e| {
            let r = e / previous - 1.0;
            previous = e;
            r
        })
        .collect()
}

fn evaluate_one(
    inputs: &Inputs,
    base: &Config,
    job: &WindowJob,
    series: bool,
    buffers: &mut OutputBuffers,
) -> Result<WindowResult> {
    let cfg = base.with_override_strings(&job.overrides)?;
    if cfg.data.timeframe != base.data.timeframe {
        return Err(Error::config(format!(
            "data.timeframe {} differs from the prepared panel's {}",
            cfg.data.timeframe, base.data.timeframe
        )));
    }
    let window = job.trade_from..job.trade_to;
    let result = backtest::run_window_in(&inputs.panel, &inputs.funding, &cfg, window, false, std::mem::take(buffers))?;
    let capital = cfg.backtest.initial_capital;
    let (returns, equity, trade_returns) = if series {
        let trades = super::montecarlo::trade_returns(&result, capital);
        (Some(bar_returns(&result, capital)), Some(result.bars.equity.clone()), Some(trades))
    } else {
        (None, None, None)
    };
    let metrics = result.metrics.clone();
    *buffers = OutputBuffers::recycle(result);
    Ok(WindowResult { metrics, returns, equity, trade_returns })
}

/// Run every job on `threads` threads (all cores when `None`); the i-th result belongs to the i-th
/// job, an `Err` names the job's override set. Each worker keeps its output buffers from one job
/// to the next.
pub fn evaluate_windows(
    inputs: &Inputs,
    base: &Config,
    jobs: &[WindowJob],
    series: bool,
    threads: Option<usize>,
) -> Result<Vec<Result<WindowResult>>> {
    Ok(crate::threads::map_with_state(jobs, threads, OutputBuffers::default, |buffers, job| {
        evaluate_one(inputs, base, job, series, buffers)
            .map_err(|err| err.context(format!("override set [{}]", job.overrides.join(", "))))
    }))
}
