//! XSMOM / TSMOM regime router (risk.md §7): cross-sectional momentum while assets move together
//! and the majors trend, time-series momentum otherwise; a switch needs `confirm_bars` bars.

use ndarray::ArrayView2;

use crate::config::RouterConfig;
use crate::model::Regime;

/// The router's state machine: the regime in force and the challenger with its streak.
#[derive(Debug, Clone, PartialEq)]
pub struct RegimeRouter {
    cfg: RouterConfig,
    current: Regime,
    challenger_bars: usize,
}

impl RegimeRouter {
    pub fn new(cfg: &RouterConfig) -> Self {
        Self { cfg: cfg.clone(), current: Regime::Xsmom, challenger_bars: 0 }
    }

    pub fn current(&self) -> Regime {
        self.current
    }

    /// The regime the inputs of one bar call for: XSMOM when `ρ̄ ≥ corr_threshold` and
    /// `|majors slope| ≥ majors_slope_min`, TSMOM otherwise (also when an input is missing).
    pub fn wanted(&self, avg_correlation: f64, majors_slope: f64) -> Regime {
        if avg_correlation >= self.cfg.corr_threshold && majors_slope.abs() >= self.cfg.majors_slope_min {
            Regime::Xsmom
        } else {
            Regime::Tsmom
        }
    }

    /// Feed one bar; the regime switches once the other one has been wanted `confirm_bars` bars in a row.
    pub fn update(&mut self, avg_correlation: f64, majors_slope: f64) -> Regime {
        if self.wanted(avg_correlation, majors_slope) == self.current {
            self.challenger_bars = 0;
        } else {
            self.challenger_bars += 1;
            if self.challenger_bars >= self.cfg.confirm_bars {
                self.current = match self.current {
                    Regime::Xsmom => Regime::Tsmom,
                    Regime::Tsmom => Regime::Xsmom,
                };
                self.challenger_bars = 0;
            }
        }
        self.current
    }
}

/// Average pairwise correlation of the columns `symbols` of `returns` (rows = bars), from the
/// variance of the sum of standardised series: `Var(Σ zᵢ) = N + Σ_{i≠j} ρᵢⱼ`. Missing returns are
/// treated as the symbol's mean; symbols without variance are left out. NaN with fewer than 2 symbols.
pub fn average_pairwise_correlation(returns: ArrayView2<f64>, symbols: &[usize], scratch: &mut Vec<f64>) -> f64 {
    let n_rows = returns.nrows();
    let k = symbols.len();
    if n_rows < 2 || k < 2 {
        return f64::NAN;
    }
    // Scratch layout: per symbol [sum, sum of squares, count, mean, 1/std], then the per-row sums.
    scratch.clear();
    scratch.resize(5 * k + n_rows, 0.0);
    let (stats, row_sums) = scratch.split_at_mut(5 * k);
    for row in returns.rows() {
        for (j, &i) in symbols.iter().enumerate() {
            let r = row[i];
            if r.is_finite() {
                stats[5 * j] += r;
                stats[5 * j + 1] += r * r;
                stats[5 * j + 2] += 1.0;
            }
        }
    }
    let mut used = 0usize;
    for j in 0..k {
        let (sum, sum_sq, count) = (stats[5 * j], stats[5 * j + 1], stats[5 * j + 2]);
        stats[5 * j + 4] = 0.0;
        if count < 2.0 {
            continue;
        }
        let mean = sum / count;
        // Population variance over all rows, missing returns standing at the mean.
        let var = (sum_sq - mean * sum) / n_rows as f64;
        if var > 1e-300 {
            stats[5 * j + 3] = mean;
            stats[5 * j + 4] = 1.0 / var.sqrt();
            used += 1;
        }
    }
    if used < 2 {
        return f64::NAN;
    }
    for (row, total) in returns.rows().into_iter().zip(row_sums.iter_mut()) {
        for (j, &i) in symbols.iter().enumerate() {
            let r = row[i];
            let inv_std = stats[5 * j + 4];
            if inv_std > 0.0 && r.is_finite() {
                *total += (r - stats[5 * j + 3]) * inv_std;
            }
        }
    }
    let n = n_rows as f64;
    let mean = row_sums.iter().sum::<f64>() / n;
    let var_sum = row_sums.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let used = used as f64;
    (var_sum - used) / (used * (used - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn switches_only_after_confirm_bars() {
        let cfg = RouterConfig { enabled: true, confirm_bars: 3, ..RouterConfig::default() };
        let mut router = RegimeRouter::new(&cfg);
        let (trend, chop) = ((0.8, 5.0), (0.1, 0.0));
        assert_eq!(router.update(trend.0, trend.1), Regime::Xsmom);
        assert_eq!(router.update(chop.0, chop.1), Regime::Xsmom);
        assert_eq!(router.update(chop.0, chop.1), Regime::Xsmom);
        assert_eq!(router.update(trend.0, trend.1), Regime::Xsmom, "the streak is broken");
        assert_eq!(router.update(chop.0, chop.1), Regime::Xsmom);
        assert_eq!(router.update(chop.0, chop.1), Regime::Xsmom);
        assert_eq!(router.update(chop.0, chop.1), Regime::Tsmom, "third bar in a row: switch");
        assert_eq!(router.update(trend.0, trend.1), Regime::Tsmom);
    }

    #[test]
    fn average_correlation_matches_pairwise_definition() {
        let rows = 40;
        let mut returns = Array2::zeros((rows, 4));
        for t in 0..rows {
            let common = ((t * 7 % 11) as f64 - 5.0) / 100.0;
            for i in 0..4 {
                let own = (((t * (i + 3) * 13) % 17) as f64 - 8.0) / 100.0;
                returns[[t, i]] = common + own * (i as f64 + 1.0) / 2.0;
            }
        }
        let corr = |a: usize, b: usize| {
            let (x, y) = (returns.column(a), returns.column(b));
            let (mx, my) = (x.mean().unwrap(), y.mean().unwrap());
            let cov: f64 = x.iter().zip(y).map(|(p, q)| (p - mx) * (q - my)).sum();
            let vx: f64 = x.iter().map(|p| (p - mx).powi(2)).sum();
            let vy: f64 = y.iter().map(|q| (q - my).powi(2)).sum();
            cov / (vx * vy).sqrt()
        };
        let mut pairs = vec![];
        for a in 0..4 {
            for b in a + 1..4 {
                pairs.push(corr(a, b));
            }
        }
        let naive = pairs.iter().sum::<f64>() / pairs.len() as f64;
        let fast = average_pairwise_correlation(returns.view(), &[0, 1, 2, 3], &mut vec![]);
        assert!((fast - naive).abs() < 1e-12, "{fast} vs {naive}");
    }
}
