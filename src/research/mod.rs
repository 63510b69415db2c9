//! Overfitting statistics and resampling for the research pipeline (research.md §3–4): the deflated
//! Sharpe ratio, the probability of backtest overfitting by CSCV, and the stationary bootstrap with
//! the Politis–White block length. Pure functions; every random draw comes from a seeded generator.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use statrs::distribution::{ContinuousCDF, Normal};

use crate::metrics::{moments, probabilistic_sharpe};

pub mod batch;
pub mod montecarlo;

pub use batch::{evaluate_windows, WindowJob, WindowResult};
pub use montecarlo::{bootstrap_paths, reshuffle_trade_paths, trade_returns};

const EULER_MASCHERONI: f64 = 0.577_215_664_901_532_9;

/// Expected maximum per-period Sharpe of `n_trials` unskilled strategies whose Sharpe ratios have
/// variance `sharpe_variance` (Bailey & López de Prado 2014):
/// `√V · ((1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e)))`.
pub fn expected_max_sharpe(n_trials: usize, sharpe_variance: f64) -> f64 {
    if n_trials < 2 {
        return 0.0;
    }
    let normal = Normal::standard();
    let n = n_trials as f64;
    sharpe_variance.max(0.0).sqrt()
        * ((1.0 - EULER_MASCHERONI) * normal.inverse_cdf(1.0 - 1.0 / n)
            + EULER_MASCHERONI * normal.inverse_cdf(1.0 - 1.0 / (n * std::f64::consts::E)))
}

/// Deflated Sharpe ratio: the probabilistic Sharpe of `returns` (per-period) against the expected
/// maximum Sharpe of `n_trials` trials with per-period Sharpe variance `sharpe_variance`.
pub fn deflated_sharpe(returns: &[f64], n_trials: usize, sharpe_variance: f64) -> f64 {
    let (mean, std, skew, kurtosis) = moments(returns);
    let sharpe = mean / std;
    probabilistic_sharpe(sharpe, expected_max_sharpe(n_trials, sharpe_variance), returns.len(), skew, kurtosis)
}

/// Probability of backtest overfitting by combinatorially symmetric cross-validation (Bailey,
/// Borwein, López de Prado, Zhu 2017). `returns` is `T × N` row-major (bars × trials), cut into
/// `n_blocks` (even) contiguous blocks of `⌊T / n_blocks⌋` rows (the remainder rows at the end are
/// left out); for every half of the blocks as in-sample, the trial best in-sample is ranked
/// out-of-sample; PBO is the share of splits where it lands in the bottom half (logit of its
/// relative rank ≤ 0). Sharpe is the performance measure. The layout is checked: an even
/// `n_blocks` ≥ 2 (≤ 24), at least 2 trials, whole rows, at least 2 rows per block.
pub fn pbo(returns: &[f64], n_trials: usize, n_blocks: usize) -> crate::Result<f64> {
    use crate::Error;
    if !(2..=24).contains(&n_blocks) || n_blocks % 2 != 0 {
        return Err(Error::invalid(format!("PBO: n_blocks must be even and in 2..=24, got {n_blocks}")));
    }
    if n_trials < 2 || returns.len() % n_trials != 0 {
        return Err(Error::invalid(format!(
            "PBO: need ≥ 2 trials and a whole T × N matrix, got {} values for {n_trials} trials",
            returns.len()
        )));
    }
    let n_rows = returns.len() / n_trials;
    let block_len = n_rows / n_blocks;
    if block_len < 2 {
        return Err(Error::invalid(format!("PBO: {n_rows} rows are too few for {n_blocks} blocks")));
    }
    if returns[..block_len * n_blocks * n_trials].iter().any(|r| !r.is_finite()) {
        return Err(Error::invalid("PBO: the trial matrix has non-finite returns"));
    }
    // Sums and sums of squares per (block, trial), of returns centred on the trial's mean, so that
    // the Sharpe of any union of blocks is O(blocks) per trial.
    let used = block_len * n_blocks;
    let mut centre = vec![0.0; n_trials];
    for r in 0..used {
        for c in 0..n_trials {
            centre[c] += returns[r * n_trials + c];
        }
    }
    centre.iter_mut().for_each(|m| *m /= used as f64);
    let mut sums = vec![0.0; n_blocks * n_trials];
    let mut squares = vec![0.0; n_blocks * n_trials];
    for r in 0..used {
        let b = r / block_len;
        for c in 0..n_trials {
            let x = returns[r * n_trials + c] - centre[c];
            sums[b * n_trials + c] += x;
            squares[b * n_trials + c] += x * x;
        }
    }
    let sharpe_of = |mask: u32, inside: bool, out: &mut Vec<f64>| {
        out.clear();
        let n = (n_blocks / 2 * block_len) as f64;
        for c in 0..n_trials {
            let (mut s, mut q) = (0.0, 0.0);
            for b in 0..n_blocks {
                if (mask & (1 << b) != 0) == inside {
                    s += sums[b * n_trials + c];
                    q += squares[b * n_trials + c];
                }
            }
            let mean = s / n;
            let var = (q - s * s / n) / (n - 1.0);
            out.push(if var > 0.0 { (mean + centre[c]) / var.sqrt() } else { 0.0 });
        }
    };
    let (mut in_sample, mut out_sample) = (Vec::with_capacity(n_trials), Vec::with_capacity(n_trials));
    let mut overfit = 0usize;
    let mut splits = 0usize;
    for mask in 0u32..(1u32 << n_blocks) {
        if mask.count_ones() as usize != n_blocks / 2 {
            continue;
        }
        sharpe_of(mask, true, &mut in_sample);
        sharpe_of(mask, false, &mut out_sample);
        let best =
            (0..n_trials).max_by(|&a, &b| in_sample[a].total_cmp(&in_sample[b]).then(b.cmp(&a))).expect("≥ 2 trials");
        // Rank 1 = worst out of sample; ties count half.
        let below = out_sample.iter().filter(|v| **v < out_sample[best]).count() as f64;
        let ties = out_sample.iter().filter(|v| **v == out_sample[best]).count() as f64 - 1.0;
        let rank = below + 1.0 + ties / 2.0;
        let relative = rank / (n_trials as f64 + 1.0);
        let logit = (relative / (1.0 - relative)).ln();
        overfit += (logit <= 0.0) as usize;
        splits += 1;
    }
    Ok(overfit as f64 / splits as f64)
}

/// Politis–White (2004; Patton, Politis and White 2009 correction) automatic mean block length
/// for the stationary bootstrap of `series`, capped at `min(3√n, n/3)`.
pub fn politis_white_block_length(series: &[f64]) -> f64 {
    let n = series.len();
    if n < 8 {
        return 1.0;
    }
    let nf = n as f64;
    let mean = series.iter().sum::<f64>() / nf;
    let centred: Vec<f64> = series.iter().map(|x| x - mean).collect();
    let variance = centred.iter().map(|x| x * x).sum::<f64>() / nf;
    if !(variance > 0.0) {
        return 1.0;
    }
    let autocov = |k: usize| centred[..n - k].iter().zip(&centred[k..]).map(|(a, b)| a * b).sum::<f64>() / nf;
    let max_lag = ((nf.sqrt().ceil() as usize) + 5).min(n - 1);
    let rho: Vec<f64> = (0..=max_lag).map(|k| autocov(k) / variance).collect();
    // m̂: the first lag after which K_N consecutive autocorrelations are insignificant.
    let k_n = (5.0f64).max(nf.log10().sqrt()).ceil() as usize;
    let bound = 2.0 * (nf.log10() / nf).sqrt();
    let mut m_hat = max_lag;
    for m in 1..=max_lag {
        if (m..(m + k_n).min(max_lag + 1)).all(|k| rho[k].abs() < bound) {
            m_hat = m - 1;
            break;
        }
    }
    let big_m = (2 * m_hat.max(1)).min(max_lag);
    let flat_top = |t: f64| {
        let t = t.abs();
        if t <= 0.5 {
            1.0
        } else if t <= 1.0 {
            2.0 * (1.0 - t)
        } else {
            0.0
        }
    };
    let (mut g, mut long_run) = (0.0, autocov(0));
    for k in 1..=big_m {
        let weight = flat_top(k as f64 / big_m as f64);
        let r = autocov(k);
        g += 2.0 * weight * k as f64 * r;
        long_run += 2.0 * weight * r;
    }
    let d_sb = 2.0 * long_run * long_run;
    let cap = (3.0 * nf.sqrt()).min(nf / 3.0);
    if !(d_sb > 0.0) {
        return 1.0;
    }
    ((2.0 * g * g / d_sb).powf(1.0 / 3.0) * nf.powf(1.0 / 3.0)).clamp(1.0, cap)
}

/// One stationary-bootstrap resample (Politis & Romano 1994) of `series` into `out` (same length):
/// blocks start at uniform positions, wrap around, and have geometric lengths with mean `block`.
pub fn stationary_bootstrap(series: &[f64], block: f64, rng: &mut StdRng, out: &mut Vec<f64>) {
    out.clear();
    let n = series.len();
    if n == 0 {
        return;
    }
    let restart = 1.0 / block.max(1.0);
    let mut position = rng.random_range(0..n);
    for step in 0..n {
        if step > 0 && rng.random::<f64>() < restart {
            position = rng.random_range(0..n);
        }
        out.push(series[position]);
        position = (position + 1) % n;
    }
}

/// A seeded generator for path `path` of a run with `seed` (paths are independent and reproducible).
pub fn path_rng(seed: u64, path: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ path.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Walk-forward window layout (research.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkForwardMode {
    /// Train windows of fixed length move forward by the OOS length.
    Rolling,
    /// Train windows start at bar 0 and grow.
    Anchored,
}

/// One walk-forward segment in bar indices: train `[train_start, train_end)`, the bars of the train
/// objective after purging `[train_start, purged_end)`, and OOS `[oos_start, oos_end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub train_start: usize,
    pub train_end: usize,
    pub purged_end: usize,
    pub oos_start: usize,
    pub oos_end: usize,
}

/// Segments over `n_bars` bars: train `[a, b)`, OOS `[b + embargo, b + embargo + oos)`, the next `a`
/// moves by `oos`, so OOS windows are contiguous and never overlap. The last `purge` bars of each
/// train window (the label horizon, `max(lookbacks)`) are dropped from the train objective.
pub fn walk_forward_segments(
    n_bars: usize,
    train: usize,
    oos: usize,
    embargo: usize,
    purge: usize,
    mode: WalkForwardMode,
) -> Vec<Segment> {
    let mut segments = Vec::new();
    if train == 0 || oos == 0 {
        return segments;
    }
    let mut start = 0;
    loop {
        let train_start = match mode {
            WalkForwardMode::Rolling => start,
            WalkForwardMode::Anchored => 0,
        };
        let train_end = start + train;
        let oos_start = train_end + embargo;
        let oos_end = oos_start + oos;
        if oos_end > n_bars {
            break;
        }
        let purged_end = train_end.saturating_sub(purge).max(train_start);
        segments.push(Segment { train_start, train_end, purged_end, oos_start, oos_end });
        start += oos;
    }
    segments
}

/// Statistics of one Monte Carlo path of per-bar returns (research.md §4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathStats {
    pub total_return: f64,
    pub cagr: f64,
    pub max_drawdown: f64,
    pub sharpe: f64,
    /// Fraction of bars below the running equity peak.
    pub time_under_water: f64,
}

/// Path statistics of per-bar `returns` (compounded from 1).
pub fn path_stats(returns: &[f64], bars_per_year: f64) -> PathStats {
    let mut equity = 1.0f64;
    let mut peak = 1.0f64;
    let (mut max_drawdown, mut under_water) = (0.0f64, 0usize);
    for r in returns {
        equity *= 1.0 + r;
        peak = peak.max(equity);
        if equity < peak {
            under_water += 1;
            max_drawdown = max_drawdown.max(1.0 - equity / peak);
        }
    }
    let n = returns.len().max(1) as f64;
    let (mean, std, _, _) = moments(returns);
    PathStats {
        total_return: equity - 1.0,
        cagr: if equity > 0.0 { equity.powf(bars_per_year / n) - 1.0 } else { -1.0 },
        max_drawdown,
        sharpe: mean / std * bars_per_year.sqrt(),
        time_under_water: under_water as f64 / n,
    }
}

/// Quantile with linear interpolation between order statistics (`q` in [0, 1]).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (low, high) = (position.floor() as usize, position.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (position - low as f64)
}

/// Summary of many paths: p1/p5/p50/p95/p99 of each statistic, the probability of a loss and the
/// CVaR 5 % of total return (mean of the worst 5 % of paths). Max drawdown is a positive fraction,
/// so its upper quantiles are the worst paths.
#[derive(Debug, Clone, PartialEq)]
pub struct MonteCarloSummary {
    /// (statistic name, [p1, p5, p50, p95, p99]).
    pub quantiles: Vec<(&'static str, [f64; 5])>,
    pub probability_of_loss: f64,
    pub cvar_5_total_return: f64,
}

/// A named statistic of a path.
type PathField = (&'static str, fn(&PathStats) -> f64);

pub fn summarise_paths(paths: &[PathStats]) -> MonteCarloSummary {
    const LEVELS: [f64; 5] = [0.01, 0.05, 0.50, 0.95, 0.99];
    let fields: [PathField; 5] = [
        ("total_return", |p| p.total_return),
        ("cagr", |p| p.cagr),
        ("max_drawdown", |p| p.max_drawdown),
        ("sharpe", |p| p.sharpe),
        ("time_under_water", |p| p.time_under_water),
    ];
    let quantiles = fields
        .iter()
        .map(|(name, get)| {
            let mut values: Vec<f64> = paths.iter().map(get).filter(|v| !v.is_nan()).collect();
            values.sort_by(f64::total_cmp);
            (*name, LEVELS.map(|q| quantile(&values, q)))
        })
        .collect();
    let mut totals: Vec<f64> = paths.iter().map(|p| p.total_return).collect();
    totals.sort_by(f64::total_cmp);
    let tail = ((totals.len() as f64 * 0.05).ceil() as usize).max(1).min(totals.len());
    MonteCarloSummary {
        quantiles,
        probability_of_loss: totals.iter().filter(|r| **r < 0.0).count() as f64 / totals.len().max(1) as f64,
        cvar_5_total_return: totals[..tail].iter().sum::<f64>() / tail as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_max_sharpe_from_the_paper_formula() {
        // N = 100 trials, V = 0.25²: Φ⁻¹(0.99) = 2.32635, Φ⁻¹(1 − 1/(100e)) = 2.68022,
        // (1 − γ)·2.32635 + γ·2.68022 = 2.53060 (the paper's ≈ 2.53 for N = 100), × 0.25 = 0.63265.
        let value = expected_max_sharpe(100, 0.0625);
        let normal = Normal::standard();
        let by_hand = 0.25
            * ((1.0 - EULER_MASCHERONI) * normal.inverse_cdf(0.99)
                + EULER_MASCHERONI * normal.inverse_cdf(1.0 - 1.0 / (100.0 * std::f64::consts::E)));
        assert!((value - by_hand).abs() < 1e-12);
        assert!((value - 0.63265).abs() < 5e-5, "{value}");
        assert_eq!(expected_max_sharpe(1, 0.0625), 0.0);
    }

    #[test]
    fn deflated_sharpe_is_lower_with_more_trials() {
        let returns: Vec<f64> = (0..500).map(|t| 0.001 + 0.01 * ((t * 37 % 101) as f64 / 101.0 - 0.5)).collect();
        let one = deflated_sharpe(&returns, 1, 0.0);
        let many = deflated_sharpe(&returns, 1000, 0.01);
        assert!(one > 0.9 && many < one, "{one} {many}");
    }

    #[test]
    fn pbo_of_noise_is_near_one_half_and_of_a_real_edge_is_near_zero() {
        let (n_rows, n_trials) = (320, 16);
        let mut total = 0.0;
        let mut noise = vec![];
        for seed in 0..10 {
            let mut rng = StdRng::seed_from_u64(seed);
            noise = (0..n_rows * n_trials).map(|_| rng.random::<f64>() - 0.5).collect();
            total += pbo(&noise, n_trials, 8).unwrap();
        }
        let mean_pbo = total / 10.0;
        assert!((0.35..=0.65).contains(&mean_pbo), "{mean_pbo}");
        // Trial 0 has a strong, persistent edge: it is best in and out of sample.
        let mut edge = noise.clone();
        for r in 0..n_rows {
            edge[r * n_trials] += 0.3;
        }
        assert_eq!(pbo(&edge, n_trials, 8).unwrap(), 0.0);
    }

    /// CSCV written out directly from the paper (Sharpe of each half recomputed from the rows).
    fn pbo_by_definition(returns: &[f64], n_trials: usize, n_blocks: usize) -> f64 {
        let n_rows = returns.len() / n_trials;
        let block_len = n_rows / n_blocks;
        let sharpe = |c: usize, rows: &[usize]| {
            let n = rows.len() as f64;
            let mean = rows.iter().map(|&r| returns[r * n_trials + c]).sum::<f64>() / n;
            let var = rows.iter().map(|&r| (returns[r * n_trials + c] - mean).powi(2)).sum::<f64>() / (n - 1.0);
            mean / var.sqrt()
        };
        let (mut overfit, mut splits) = (0, 0);
        for mask in 0u32..(1 << n_blocks) {
            if mask.count_ones() as usize != n_blocks / 2 {
                continue;
            }
            let rows_of = |inside: bool| -> Vec<usize> {
                (0..n_blocks * block_len).filter(|r| (mask & (1 << (r / block_len)) != 0) == inside).collect()
            };
            let (is_rows, oos_rows) = (rows_of(true), rows_of(false));
            let is: Vec<f64> = (0..n_trials).map(|c| sharpe(c, &is_rows)).collect();
            let oos: Vec<f64> = (0..n_trials).map(|c| sharpe(c, &oos_rows)).collect();
            let best = (0..n_trials).max_by(|&a, &b| is[a].total_cmp(&is[b]).then(b.cmp(&a))).unwrap();
            let below = oos.iter().filter(|v| **v < oos[best]).count() as f64;
            let ties = oos.iter().filter(|v| **v == oos[best]).count() as f64 - 1.0;
            let omega = (below + 1.0 + ties / 2.0) / (n_trials as f64 + 1.0);
            overfit += ((omega / (1.0 - omega)).ln() <= 0.0) as usize;
            splits += 1;
        }
        overfit as f64 / splits as f64
    }

    #[test]
    fn pbo_matches_the_definition_and_checks_its_layout() {
        for seed in 0..4 {
            let mut rng = StdRng::seed_from_u64(100 + seed);
            let (n_rows, n_trials) = (203, 7);
            let mut m: Vec<f64> = (0..n_rows * n_trials).map(|_| rng.random::<f64>() - 0.5).collect();
            for r in 0..n_rows {
                m[r * n_trials + 2] += 0.02 * seed as f64;
            }
            for blocks in [2, 4, 8, 10] {
                assert_eq!(pbo(&m, n_trials, blocks).unwrap(), pbo_by_definition(&m, n_trials, blocks));
            }
        }
        // C(8, 4) = 70 splits; trial 1 has the higher Sharpe in every half: PBO = 0.
        let rows: Vec<f64> = (0..80).flat_map(|r| [0.0 + (r % 2) as f64 * 0.01, 0.5 + (r % 2) as f64 * 0.01]).collect();
        assert_eq!(pbo(&rows, 2, 8).unwrap(), 0.0);
        assert!(pbo(&rows, 2, 7).is_err());
        assert!(pbo(&rows, 1, 8).is_err());
        assert!(pbo(&rows[..10], 2, 8).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(40))]
        /// The O(blocks) CSCV equals the definition on any matrix, and PBO is a probability.
        #[test]
        fn pbo_equals_the_definition_on_random_matrices(
            seed in 0u64..10_000,
            n_trials in 2usize..6,
            half_blocks in 1usize..4,
            extra_rows in 0usize..7,
        ) {
            let n_blocks = 2 * half_blocks;
            let n_rows = n_blocks * 3 + extra_rows;
            let mut rng = StdRng::seed_from_u64(seed);
            let m: Vec<f64> = (0..n_rows * n_trials).map(|_| rng.random::<f64>() - 0.48).collect();
            let fast = pbo(&m, n_trials, n_blocks).unwrap();
            proptest::prop_assert_eq!(fast, pbo_by_definition(&m, n_trials, n_blocks));
            proptest::prop_assert!((0.0..=1.0).contains(&fast));
        }

        /// Bootstrap paths only hold values of the series, and path stats are consistent.
        #[test]
        fn bootstrap_paths_resample_the_series(seed in 0u64..10_000, n in 2usize..300, block in 1.0f64..20.0) {
            let mut rng = StdRng::seed_from_u64(seed);
            let series: Vec<f64> = (0..n).map(|_| 0.02 * (rng.random::<f64>() - 0.5)).collect();
            let mut path = vec![];
            stationary_bootstrap(&series, block, &mut path_rng(seed, 1), &mut path);
            proptest::prop_assert_eq!(path.len(), n);
            proptest::prop_assert!(path.iter().all(|x| series.contains(x)));
            let stats = path_stats(&path, 8760.0);
            proptest::prop_assert!((0.0..1.0).contains(&stats.max_drawdown));
            proptest::prop_assert!((0.0..=1.0).contains(&stats.time_under_water));
            let compounded = path.iter().fold(1.0, |e, r| e * (1.0 + r)) - 1.0;
            proptest::prop_assert!((stats.total_return - compounded).abs() < 1e-12);
        }
    }

    #[test]
    fn block_length_grows_with_persistence_and_bootstrap_is_seeded() {
        let mut rng = StdRng::seed_from_u64(3);
        let white: Vec<f64> = (0..2000).map(|_| rng.random::<f64>() - 0.5).collect();
        let mut ar = vec![0.0; 2000];
        for t in 1..2000 {
            ar[t] = 0.9 * ar[t - 1] + white[t];
        }
        let (b_white, b_ar) = (politis_white_block_length(&white), politis_white_block_length(&ar));
        assert!(b_white < 3.0 && b_ar > 10.0, "{b_white} {b_ar}");
        let (mut a, mut b) = (vec![], vec![]);
        stationary_bootstrap(&ar, b_ar, &mut path_rng(1, 5), &mut a);
        stationary_bootstrap(&ar, b_ar, &mut path_rng(1, 5), &mut b);
        assert_eq!(a, b);
        assert_eq!(a.len(), ar.len());
        assert!(a.iter().all(|x| ar.contains(x)));
    }

    #[test]
    fn path_stats_by_hand() {
        // +10 %, −20 %, +10 %: equity 1.1, 0.88, 0.968; peak 1.1; drawdown 20 %, 2 of 3 bars under water.
        let stats = path_stats(&[0.1, -0.2, 0.1], 3.0);
        assert!((stats.total_return - (-0.032)).abs() < 1e-12);
        assert!((stats.max_drawdown - 0.2).abs() < 1e-12);
        assert!((stats.time_under_water - 2.0 / 3.0).abs() < 1e-12);
        assert!((stats.cagr - (0.968f64 - 1.0)).abs() < 1e-12, "3 bars at 3 bars per year is one year");
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 1.0), 4.0);
    }

    #[test]
    fn drawdown_tails_are_the_worst_paths() {
        let mut rng = StdRng::seed_from_u64(11);
        let returns: Vec<f64> = (0..1000).map(|_| 0.0005 + 0.01 * (rng.random::<f64>() - 0.5)).collect();
        let block = politis_white_block_length(&returns);
        let mut path = vec![];
        let paths: Vec<PathStats> = (0..300)
            .map(|p| {
                stationary_bootstrap(&returns, block, &mut path_rng(42, p), &mut path);
                path_stats(&path, 8760.0)
            })
            .collect();
        let summary = summarise_paths(&paths);
        let dd = summary.quantiles.iter().find(|(n, _)| *n == "max_drawdown").unwrap().1;
        assert!(dd[3] >= dd[2] && dd[4] >= dd[3], "{dd:?}");
        assert!((0.0..=1.0).contains(&summary.probability_of_loss));
        let total = summary.quantiles.iter().find(|(n, _)| *n == "total_return").unwrap().1;
        assert!(summary.cvar_5_total_return <= total[1] + 1e-12);
    }

    #[test]
    fn walk_forward_windows_are_contiguous_and_never_overlap_their_train() {
        // 120/30/2 days of hourly bars over 300 days, purge 96 bars.
        let (day, n) = (24, 300 * 24);
        let rolling = walk_forward_segments(n, 120 * day, 30 * day, 2 * day, 96, WalkForwardMode::Rolling);
        assert_eq!(rolling.len(), 5);
        assert_eq!(
            rolling[0],
            Segment { train_start: 0, train_end: 2880, purged_end: 2784, oos_start: 2928, oos_end: 3648 }
        );
        for pair in rolling.windows(2) {
            assert_eq!(pair[1].oos_start, pair[0].oos_end, "OOS windows are contiguous");
            assert_eq!(pair[1].train_start, pair[0].train_start + 30 * day);
        }
        for s in &rolling {
            assert!(s.train_end <= s.oos_start && s.oos_end <= n && s.purged_end + 96 == s.train_end);
        }
        let anchored = walk_forward_segments(n, 120 * day, 30 * day, 2 * day, 96, WalkForwardMode::Anchored);
        assert!(anchored.iter().all(|s| s.train_start == 0));
        assert_eq!(
            anchored.iter().map(|s| s.oos_start).collect::<Vec<_>>(),
            rolling.iter().map(|s| s.oos_start).collect::<Vec<_>>()
        );
    }
}
