//! Performance metrics of backtest.md §5, computed once in Rust for every interface.

use statrs::distribution::{ContinuousCDF, Normal};

use crate::model::RoundTrip;

/// Metrics of one backtest. Ratios are fractions (0.12 = 12 %); `max_drawdown` is positive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub total_return: f64,
    pub cagr: f64,
    pub vol: f64,
    pub sharpe: f64,
    pub sortino: f64,
    pub max_drawdown: f64,
    pub calmar: f64,
    pub turnover_per_year: f64,
    pub exposure: f64,
    pub fees: f64,
    pub funding: f64,
    pub round_trips: f64,
    pub win_rate: f64,
    pub profit_factor: f64,
    pub avg_bars_held: f64,
    pub skew: f64,
    /// Excess kurtosis (normal = 0).
    pub kurtosis: f64,
    pub psr: f64,
    pub n_bars: f64,
    pub final_equity: f64,
}

impl Metrics {
    /// `(name, value)` pairs in a stable order (the keys of the Python dict and metrics.json).
    pub fn to_pairs(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("total_return", self.total_return),
            ("cagr", self.cagr),
            ("vol", self.vol),
            ("sharpe", self.sharpe),
            ("sortino", self.sortino),
            ("max_drawdown", self.max_drawdown),
            ("calmar", self.calmar),
            ("turnover_per_year", self.turnover_per_year),
            ("exposure", self.exposure),
            ("fees", self.fees),
            ("funding", self.funding),
            ("round_trips", self.round_trips),
            ("win_rate", self.win_rate),
            ("profit_factor", self.profit_factor),
            ("avg_bars_held", self.avg_bars_held),
            ("skew", self.skew),
            ("kurtosis", self.kurtosis),
            ("psr", self.psr),
            ("n_bars", self.n_bars),
            ("final_equity", self.final_equity),
        ]
    }
}

/// Sample mean and std (ddof 1), skewness and excess kurtosis (population moments) of `values`.
pub fn moments(values: &[f64]) -> (f64, f64, f64, f64) {
    let n = values.len() as f64;
    if values.len() < 2 {
        return (values.first().copied().unwrap_or(f64::NAN), f64::NAN, f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    let (mut m2, mut m3, mut m4) = (0.0, 0.0, 0.0);
    for v in values {
        let d = v - mean;
        let d2 = d * d;
        m2 += d2;
        m3 += d2 * d;
        m4 += d2 * d2;
    }
    let std = (m2 / (n - 1.0)).sqrt();
    let (m2, m3, m4) = (m2 / n, m3 / n, m4 / n);
    let skew = if m2 > 0.0 { m3 / m2.powf(1.5) } else { f64::NAN };
    let kurt = if m2 > 0.0 { m4 / (m2 * m2) - 3.0 } else { f64::NAN };
    (mean, std, skew, kurt)
}

/// Probabilistic Sharpe ratio (Bailey & López de Prado 2012): the probability that the true
/// per-bar Sharpe exceeds `benchmark_sr`, given `n` observations with this skew and excess kurtosis:
/// `Φ((SR − SR*)·√(n−1) / √(1 − γ₃·SR + (γ₄ − 1)/4·SR²))` with γ₄ the raw kurtosis.
pub fn probabilistic_sharpe(sr: f64, benchmark_sr: f64, n: usize, skew: f64, excess_kurtosis: f64) -> f64 {
    if n < 2 || !sr.is_finite() {
        return f64::NAN;
    }
    let kurtosis = excess_kurtosis + 3.0;
    let denominator = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr;
    if !(denominator > 0.0) {
        return f64::NAN;
    }
    let z = (sr - benchmark_sr) * ((n - 1) as f64).sqrt() / denominator.sqrt();
    Normal::standard().cdf(z)
}

/// Largest peak-to-trough loss of an equity curve, as a positive fraction.
pub fn max_drawdown(equity: &[f64]) -> f64 {
    let mut peak = f64::NEG_INFINITY;
    let mut worst: f64 = 0.0;
    for &e in equity {
        peak = peak.max(e);
        if peak > 0.0 {
            worst = worst.max(1.0 - e / peak);
        }
    }
    worst
}

/// The per-bar columns the metrics read, one entry per bar: equity after the bar, and the bar's
/// gross exposure (fraction of equity), traded notional, fees and funding cash flow.
#[derive(Debug, Clone, Copy)]
pub struct EquityPath<'a> {
    pub equity: &'a [f64],
    pub gross: &'a [f64],
    pub traded_notional: &'a [f64],
    pub fees: &'a [f64],
    pub funding: &'a [f64],
}

/// Metrics of the bars `start..` of `bars` (the bar before the first decision is the base `E_0`).
pub fn compute(bars: EquityPath<'_>, trips: &[RoundTrip], start: usize, bars_per_year: f64) -> Metrics {
    let equity = &bars.equity[start.min(bars.equity.len())..];
    if equity.len() < 2 {
        return Metrics { n_bars: 0.0, final_equity: equity.last().copied().unwrap_or(f64::NAN), ..nan_metrics() };
    }
    let returns: Vec<f64> = equity.windows(2).map(|w| w[1] / w[0] - 1.0).collect();
    let n = returns.len() as f64;
    let (mean, std, skew, kurtosis) = moments(&returns);
    let first = equity[0];
    let last = *equity.last().expect("len ≥ 2");
    let total_return = last / first - 1.0;
    let cagr = if last > 0.0 { (last / first).powf(bars_per_year / n) - 1.0 } else { -1.0 };
    let downside = (returns.iter().map(|r| r.min(0.0).powi(2)).sum::<f64>() / n).sqrt();
    let mdd = max_drawdown(equity);
    let per_bar_sharpe = mean / std;
    let traded: f64 = bars.traded_notional[start + 1..].iter().sum();
    let mean_equity = equity.iter().sum::<f64>() / equity.len() as f64;
    let exposure = bars.gross[start + 1..].iter().sum::<f64>() / n;

    let wins: Vec<f64> = trips.iter().filter(|t| t.pnl > 0.0).map(|t| t.pnl).collect();
    let gross_loss: f64 = trips.iter().filter(|t| t.pnl < 0.0).map(|t| -t.pnl).sum();
    let gross_profit: f64 = wins.iter().sum();
    let n_trips = trips.len() as f64;
    Metrics {
        total_return,
        cagr,
        vol: std * bars_per_year.sqrt(),
        sharpe: per_bar_sharpe * bars_per_year.sqrt(),
        sortino: mean / downside * bars_per_year.sqrt(),
        max_drawdown: mdd,
        calmar: if mdd > 0.0 { cagr / mdd } else { f64::NAN },
        turnover_per_year: traded / mean_equity * bars_per_year / n,
        exposure,
        fees: bars.fees[start + 1..].iter().sum(),
        funding: bars.funding[start + 1..].iter().sum(),
        round_trips: n_trips,
        win_rate: if n_trips > 0.0 { wins.len() as f64 / n_trips } else { f64::NAN },
        profit_factor: if gross_loss > 0.0 {
            gross_profit / gross_loss
        } else if gross_profit > 0.0 {
            f64::INFINITY
        } else {
            f64::NAN
        },
        avg_bars_held: if n_trips > 0.0 {
            trips.iter().map(|t| t.bars_held as f64).sum::<f64>() / n_trips
        } else {
            f64::NAN
        },
        skew,
        kurtosis,
        psr: probabilistic_sharpe(per_bar_sharpe, 0.0, returns.len(), skew, kurtosis),
        n_bars: n,
        final_equity: last,
    }
}

fn nan_metrics() -> Metrics {
    let nan = f64::NAN;
    Metrics {
        total_return: nan,
        cagr: nan,
        vol: nan,
        sharpe: nan,
        sortino: nan,
        max_drawdown: nan,
        calmar: nan,
        turnover_per_year: nan,
        exposure: nan,
        fees: 0.0,
        funding: 0.0,
        round_trips: 0.0,
        win_rate: nan,
        profit_factor: nan,
        avg_bars_held: nan,
        skew: nan,
        kurtosis: nan,
        psr: nan,
        n_bars: 0.0,
        final_equity: nan,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawdown_and_moments() {
        assert!((max_drawdown(&[100.0, 120.0, 90.0, 130.0, 117.0]) - 0.25).abs() < 1e-12);
        let (mean, std, skew, kurt) = moments(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(mean, 2.5);
        assert!((std - 1.2909944487358056).abs() < 1e-12);
        assert!(skew.abs() < 1e-12);
        assert!((kurt - (-1.36)).abs() < 1e-12);
    }

    #[test]
    fn psr_matches_the_formula() {
        // SR 0.1 per bar, 100 bars, normal: Φ(0.1·√99 / √(1 + 0.5·0.01)).
        let expected = Normal::standard().cdf(0.1 * 99f64.sqrt() / (1.0f64 + 0.005).sqrt());
        assert!((probabilistic_sharpe(0.1, 0.0, 100, 0.0, 0.0) - expected).abs() < 1e-15);
        assert!((probabilistic_sharpe(0.0, 0.0, 100, 0.0, 0.0) - 0.5).abs() < 1e-15);
    }
}
