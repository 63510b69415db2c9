//! Monte Carlo of a (stitched OOS) result (research.md §4): the stationary bootstrap of bar returns
//! and the reshuffle of round-trip returns. Paths run in parallel, path p seeded by
//! [`path_rng`](super::path_rng)`(seed, p)`, so a result does not depend on the thread count.

use rand::RngExt;
use rayon::prelude::*;

use super::{path_rng, path_stats, politis_white_block_length, quantile, stationary_bootstrap, PathStats};
use crate::backtest::BacktestResult;
use crate::error::{Error, Result};

/// Quantile levels of the fan chart (per-bar equity across paths).
pub const FAN_LEVELS: [f64; 5] = [0.05, 0.25, 0.50, 0.75, 0.95];

/// Round-trip returns as fractions of equity: each trip's PnL over the equity at the close of the
/// bar before it was entered (`initial_capital` for the first bar), in the order trips closed.
pub fn trade_returns(result: &BacktestResult, initial_capital: f64) -> Vec<f64> {
    result
        .round_trips
        .iter()
        .map(|trip| {
            let entry = result.ts.partition_point(|&ts| ts < trip.entry_ts);
            let equity = if entry == 0 { initial_capital } else { result.bars.equity[entry - 1] };
            trip.pnl / equity
        })
        .collect()
}

/// Bootstrap paths with the stats of each path, the mean block length used and, when asked, the
/// per-bar fan of compounded equity (from 1) at [`FAN_LEVELS`].
#[derive(Debug, Clone, PartialEq)]
pub struct BootstrapRun {
    pub block: f64,
    pub paths: Vec<PathStats>,
    pub fan: Option<Vec<[f64; 5]>>,
}

fn check_series(series: &[f64], what: &str, n_paths: usize) -> Result<()> {
    if series.len() < 2 {
        return Err(Error::invalid(format!("Monte Carlo: {what} needs at least 2 values, got {}", series.len())));
    }
    if let Some(bad) = series.iter().find(|r| !r.is_finite() || **r <= -1.0) {
        return Err(Error::invalid(format!("Monte Carlo: {what} contains {bad}, not a return > -1")));
    }
    if n_paths == 0 {
        return Err(Error::invalid("Monte Carlo: n_paths must be at least 1"));
    }
    Ok(())
}

/// `n_paths` stationary-bootstrap resamples of per-bar `returns` with mean block length `block`
/// (Politis–White when `None`).
pub fn bootstrap_paths(
    returns: &[f64],
    block: Option<f64>,
    n_paths: usize,
    seed: u64,
    bars_per_year: f64,
    fan: bool,
) -> Result<BootstrapRun> {
    bootstrap_paths_with_progress(returns, block, n_paths, seed, bars_per_year, fan, &mut |_| Ok(()))
}

/// Paths per progress report: large enough to keep both cores busy between reports.
const PROGRESS_CHUNK: u64 = 256;

/// Paths `0..n_paths` in chunks of [`PROGRESS_CHUNK`], calling `progress(done)` after each chunk
/// (an error from it, e.g. an interrupt, stops the run). Path p depends only on `(seed, p)`, so the
/// chunking changes nothing in the result.
fn paths_in_chunks<T: Send>(
    n_paths: usize,
    progress: &mut dyn FnMut(usize) -> Result<()>,
    path: impl Fn(&mut Vec<f64>, u64) -> T + Sync,
) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(n_paths);
    let mut start = 0u64;
    while start < n_paths as u64 {
        let end = (start + PROGRESS_CHUNK).min(n_paths as u64);
        out.par_extend((start..end).into_par_iter().map_init(Vec::new, &path));
        start = end;
        progress(out.len())?;
    }
    Ok(out)
}

/// [`bootstrap_paths`] reporting the number of paths done to `progress`.
pub fn bootstrap_paths_with_progress(
    returns: &[f64],
    block: Option<f64>,
    n_paths: usize,
    seed: u64,
    bars_per_year: f64,
    fan: bool,
    progress: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<BootstrapRun> {
    check_series(returns, "returns", n_paths)?;
    let block = match block {
        Some(b) if b.is_finite() && b >= 1.0 => b,
        Some(b) => return Err(Error::invalid(format!("Monte Carlo: block length must be ≥ 1, got {b}"))),
        None => politis_white_block_length(returns),
    };
    let resampled: Vec<(PathStats, Option<Vec<f64>>)> = paths_in_chunks(n_paths, progress, |path, p| {
        stationary_bootstrap(returns, block, &mut path_rng(seed, p), path);
        let equity = fan.then(|| {
            let mut e = 1.0;
            path.iter()
                .map(|r| {
                    e *= 1.0 + r;
                    e
                })
                .collect()
        });
        (path_stats(path, bars_per_year), equity)
    })?;
    let fan = fan.then(|| {
        (0..returns.len())
            .into_par_iter()
            .map_init(Vec::new, |column: &mut Vec<f64>, t| {
                column.clear();
                column.extend(resampled.iter().map(|(_, e)| e.as_ref().expect("kept")[t]));
                column.sort_by(f64::total_cmp);
                FAN_LEVELS.map(|q| quantile(column, q))
            })
            .collect()
    });
    Ok(BootstrapRun { block, paths: resampled.into_iter().map(|(s, _)| s).collect(), fan })
}

/// `n_paths` random orders of round-trip `trade_returns` (a Fisher–Yates shuffle per path),
/// compounded in that order; `periods_per_year` is the number of trips per year of the result.
/// Total return and Sharpe do not depend on the order; drawdown and time under water do.
pub fn reshuffle_trade_paths(
    trade_returns: &[f64],
    n_paths: usize,
    seed: u64,
    periods_per_year: f64,
) -> Result<Vec<PathStats>> {
    reshuffle_trade_paths_with_progress(trade_returns, n_paths, seed, periods_per_year, &mut |_| Ok(()))
}

/// [`reshuffle_trade_paths`] reporting the number of paths done to `progress`.
pub fn reshuffle_trade_paths_with_progress(
    trade_returns: &[f64],
    n_paths: usize,
    seed: u64,
    periods_per_year: f64,
    progress: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<Vec<PathStats>> {
    check_series(trade_returns, "trade returns", n_paths)?;
    paths_in_chunks(n_paths, progress, |order, p| {
        order.clear();
        order.extend_from_slice(trade_returns);
        let mut rng = path_rng(seed, p);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        path_stats(order, periods_per_year)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::research::summarise_paths;

    fn noisy(n: usize, drift: f64, seed: u64) -> Vec<f64> {
        let mut rng = path_rng(seed, 0);
        (0..n).map(|_| drift + 0.01 * (rng.random::<f64>() - 0.5)).collect()
    }

    #[test]
    fn progress_is_reported_per_chunk_and_changes_nothing() {
        let returns = noisy(300, 0.0002, 3);
        let mut seen = Vec::new();
        let with = bootstrap_paths_with_progress(&returns, Some(5.0), 600, 1, 8760.0, true, &mut |done| {
            seen.push(done);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [256, 512, 600]);
        assert_eq!(with, bootstrap_paths(&returns, Some(5.0), 600, 1, 8760.0, true).unwrap());
        let mut seen = Vec::new();
        let trips = noisy(40, 0.001, 4);
        let shuffled = reshuffle_trade_paths_with_progress(&trips, 300, 2, 50.0, &mut |done| {
            seen.push(done);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [256, 300]);
        assert_eq!(shuffled, reshuffle_trade_paths(&trips, 300, 2, 50.0).unwrap());
        let stopped = bootstrap_paths_with_progress(&returns, None, 600, 1, 8760.0, false, &mut |done| {
            if done >= 256 {
                Err(Error::invalid("interrupted"))
            } else {
                Ok(())
            }
        });
        assert!(stopped.unwrap_err().to_string().contains("interrupted"));
    }

    #[test]
    fn bootstrap_is_seeded_and_independent_of_threads() {
        let returns = noisy(500, 0.0005, 1);
        let a = bootstrap_paths(&returns, None, 64, 7, 8760.0, true).unwrap();
        let b = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| bootstrap_paths(&returns, None, 64, 7, 8760.0, true).unwrap());
        assert_eq!(a, b);
        let c = bootstrap_paths(&returns, None, 64, 8, 8760.0, false).unwrap();
        assert_ne!(a.paths, c.paths);
        let fan = a.fan.unwrap();
        assert_eq!(fan.len(), 500);
        assert!(fan.iter().all(|q| q.windows(2).all(|w| w[0] <= w[1])));
        // Path p is exactly one stationary bootstrap with path_rng(seed, p).
        let mut path = vec![];
        stationary_bootstrap(&returns, a.block, &mut path_rng(7, 3), &mut path);
        assert_eq!(a.paths[3], path_stats(&path, 8760.0));
    }

    #[test]
    fn reshuffle_keeps_total_return_and_varies_drawdown() {
        let trades: Vec<f64> = (0..60).map(|i| if i % 3 == 0 { -0.02 } else { 0.015 }).collect();
        let paths = reshuffle_trade_paths(&trades, 200, 3, 120.0).unwrap();
        let total = path_stats(&trades, 120.0).total_return;
        assert!(paths.iter().all(|p| (p.total_return - total).abs() < 1e-12));
        let summary = summarise_paths(&paths);
        let dd = summary.quantiles.iter().find(|(n, _)| *n == "max_drawdown").unwrap().1;
        assert!(dd[4] > dd[0], "{dd:?}");
        assert!(reshuffle_trade_paths(&[0.1], 10, 0, 1.0).is_err());
        assert!(bootstrap_paths(&[0.1, f64::NAN], None, 10, 0, 1.0, false).is_err());
        assert!(bootstrap_paths(&[0.1, 0.2], Some(0.5), 10, 0, 1.0, false).is_err());
    }
}
