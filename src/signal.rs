//! Causal panel kernels (strategy.md §2–3): every output row `t` depends on input rows `0..=t` only.
//!
//! Matrices are `T × N` (row = bar, column = symbol). Kernels walk the rows in order and keep one
//! small state per symbol, which keeps memory access sequential. Missing data is NaN and is never
//! forward-filled into a signal: an output is NaN whenever its inputs at `t` are missing.

use ndarray::{Array2, ArrayView2};

/// Simple one-bar returns `C[t]/C[t−1] − 1` (NaN on the first bar or when either close is missing).
pub fn simple_returns(close: ArrayView2<f64>) -> Array2<f64> {
    lookback_returns(close, 1)
}

/// `R[t,i] = C[t,i] / C[t−L,i] − 1`; NaN if `t < L` or either close is missing.
pub fn lookback_returns(close: ArrayView2<f64>, lookback: usize) -> Array2<f64> {
    let (n_bars, n_symbols) = close.dim();
    let mut out = Array2::from_elem((n_bars, n_symbols), f64::NAN);
    for t in lookback..n_bars {
        let now = close.row(t);
        let then = close.row(t - lookback);
        let mut row = out.row_mut(t);
        for i in 0..n_symbols {
            row[i] = now[i] / then[i] - 1.0;
        }
    }
    out
}

/// Weighted momentum `S = Σ_k w_k R_k / Σ_k w_k` (or the plain sum with `normalise = false`);
/// NaN if any term is NaN.
pub fn momentum(close: ArrayView2<f64>, lookbacks: &[usize], weights: &[f64], normalise: bool) -> Array2<f64> {
    assert_eq!(lookbacks.len(), weights.len(), "one weight per lookback");
    let (n_bars, n_symbols) = close.dim();
    let mut out = Array2::zeros((n_bars, n_symbols));
    let scale = if normalise { 1.0 / weights.iter().sum::<f64>() } else { 1.0 };
    for t in 0..n_bars {
        let now = close.row(t);
        let mut row = out.row_mut(t);
        for (lookback, weight) in lookbacks.iter().zip(weights) {
            if t < *lookback {
                row.fill(f64::NAN);
                break;
            }
            let then = close.row(t - lookback);
            for i in 0..n_symbols {
                row[i] += weight * (now[i] / then[i] - 1.0);
            }
        }
        if scale != 1.0 {
            row.mapv_inplace(|s| s * scale);
        }
    }
    out
}

/// Sample standard deviation (ddof 1) of the last `window` values ending at `t` (NaN entries skipped),
/// NaN unless at least `min_periods` (≥ 2) values are valid.
///
/// Running sums make it O(T·N); they are rebuilt from scratch every `window` rows so that rounding
/// cannot accumulate, and a variance that rounds below zero is 0.
pub fn rolling_std(values: ArrayView2<f64>, window: usize, min_periods: usize) -> Array2<f64> {
    let (n_bars, n_symbols) = values.dim();
    let min_periods = min_periods.max(2);
    let mut out = Array2::from_elem((n_bars, n_symbols), f64::NAN);
    let mut sum = vec![0.0; n_symbols];
    let mut sum_sq = vec![0.0; n_symbols];
    let mut count = vec![0usize; n_symbols];
    for t in 0..n_bars {
        if window > 0 && t % window == 0 && t > 0 {
            // Rebuild the sums over the rows (t − window, t − 1] to cancel rounding drift.
            sum.fill(0.0);
            sum_sq.fill(0.0);
            count.fill(0);
            for s in (t + 1).saturating_sub(window)..t {
                accumulate(values.row(s).as_slice().expect("standard layout"), &mut sum, &mut sum_sq, &mut count, 1.0);
            }
        }
        accumulate(values.row(t).as_slice().expect("standard layout"), &mut sum, &mut sum_sq, &mut count, 1.0);
        if t >= window && (t % window != 0 || t == 0) {
            // Leaving the window: row t − window (only when it was added since the last rebuild).
            accumulate(
                values.row(t - window).as_slice().expect("standard layout"),
                &mut sum,
                &mut sum_sq,
                &mut count,
                -1.0,
            );
        }
        let mut row = out.row_mut(t);
        for i in 0..n_symbols {
            let n = count[i];
            if n >= min_periods {
                let mean = sum[i] / n as f64;
                let var = ((sum_sq[i] - mean * sum[i]) / (n as f64 - 1.0)).max(0.0);
                row[i] = var.sqrt();
            }
        }
    }
    out
}

fn accumulate(row: &[f64], sum: &mut [f64], sum_sq: &mut [f64], count: &mut [usize], sign: f64) {
    for i in 0..row.len() {
        let value = row[i];
        if value.is_finite() {
            sum[i] += sign * value;
            sum_sq[i] += sign * value * value;
            if sign > 0.0 {
                count[i] += 1;
            } else {
                count[i] -= 1;
            }
        }
    }
}

/// Volatility `σ` of strategy.md §5.1: sample std of the last `lookback` simple returns ending at t,
/// with at least `lookback / 2` valid returns.
pub fn rolling_vol(close: ArrayView2<f64>, lookback: usize) -> Array2<f64> {
    rolling_std(simple_returns(close).view(), lookback, lookback / 2)
}

/// One EMA step: the first valid value seeds the state (NaN until then).
#[inline]
fn ema_update(state: &mut f64, value: f64, alpha: f64) -> f64 {
    *state = if state.is_nan() { value } else { *state + alpha * (value - *state) };
    *state
}

/// EMA with `α = 2/(len+1)` seeded with the first valid close. A missing close leaves the state
/// unchanged and gives NaN at that bar.
pub fn ema(close: ArrayView2<f64>, len: usize) -> Array2<f64> {
    let alpha = 2.0 / (len as f64 + 1.0);
    let (n_bars, n_symbols) = close.dim();
    let mut out = Array2::from_elem((n_bars, n_symbols), f64::NAN);
    let mut state = vec![f64::NAN; n_symbols];
    for t in 0..n_bars {
        let now = close.row(t);
        let mut row = out.row_mut(t);
        for i in 0..n_symbols {
            let c = now[i];
            if c.is_nan() {
                continue;
            }
            row[i] = ema_update(&mut state[i], c, alpha);
        }
    }
    out
}

/// EMA slope in bps per day (strategy.md §3): the mean of the last `m = max(1, len / 4)` EMA
/// changes, divided by the close, × 1e4 × `bars_per_day`. NaN with fewer than `m + 1` EMA values or
/// a missing close at t.
pub fn ema_slope_bps_per_day(close: ArrayView2<f64>, ema_len: usize, bars_per_day: usize) -> Array2<f64> {
    let m = (ema_len / 4).max(1);
    let alpha = 2.0 / (ema_len as f64 + 1.0);
    let (n_bars, n_symbols) = close.dim();
    let mut out = Array2::from_elem((n_bars, n_symbols), f64::NAN);
    // Ring buffer of the last m + 1 EMA values per symbol, column-major by symbol.
    let mut ring = vec![0.0; (m + 1) * n_symbols];
    let mut count = vec![0usize; n_symbols];
    let mut state = vec![f64::NAN; n_symbols];
    let per_day = 1e4 * bars_per_day as f64;
    for t in 0..n_bars {
        let now = close.row(t);
        let mut row = out.row_mut(t);
        for i in 0..n_symbols {
            let c = now[i];
            if c.is_nan() {
                continue;
            }
            ema_update(&mut state[i], c, alpha);
            let slots = &mut ring[i * (m + 1)..(i + 1) * (m + 1)];
            slots[count[i] % (m + 1)] = state[i];
            count[i] += 1;
            if count[i] > m {
                // Oldest kept value is the EMA m steps back: mean of m deltas = (now − then) / m.
                let then = slots[count[i] % (m + 1)];
                row[i] = (state[i] - then) / m as f64 / c * per_day;
            }
        }
    }
    out
}

/// Wilder RMA state: the SMA of the first `n` inputs seeds it, then `x ← x + (v − x)/n`.
#[derive(Clone, Copy)]
struct Rma {
    value: f64,
    seen: usize,
}

impl Rma {
    const fn new() -> Self {
        Self { value: 0.0, seen: 0 }
    }
    /// Feed one value; returns the RMA once `n` values have been seen.
    fn update(&mut self, input: f64, n: usize) -> Option<f64> {
        self.seen += 1;
        if self.seen <= n {
            self.value += input / n as f64;
            return (self.seen == n).then_some(self.value);
        }
        self.value += (input - self.value) / n as f64;
        Some(self.value)
    }
}

/// Wilder ATR(n): `TR = max(H−L, |H−C₋₁|, |L−C₋₁|)` (just `H−L` on a symbol's first bar; `C₋₁` is
/// the last valid close), smoothed by an RMA seeded with the mean of the first n TRs.
pub fn wilder_atr(high: ArrayView2<f64>, low: ArrayView2<f64>, close: ArrayView2<f64>, n: usize) -> Array2<f64> {
    let (n_bars, n_symbols) = close.dim();
    let mut out = Array2::from_elem((n_bars, n_symbols), f64::NAN);
    let mut prev_close = vec![f64::NAN; n_symbols];
    let mut rma = vec![Rma::new(); n_symbols];
    for t in 0..n_bars {
        for i in 0..n_symbols {
            let (h, l, c) = (high[[t, i]], low[[t, i]], close[[t, i]]);
            if h.is_nan() || l.is_nan() || c.is_nan() {
                continue;
            }
            let tr = true_range(h, l, prev_close[i]);
            prev_close[i] = c;
            if let Some(atr) = rma[i].update(tr, n) {
                out[[t, i]] = atr;
            }
        }
    }
    out
}

fn true_range(high: f64, low: f64, prev_close: f64) -> f64 {
    if prev_close.is_nan() {
        high - low
    } else {
        (high - low).max((high - prev_close).abs()).max((low - prev_close).abs())
    }
}

/// Wilder ADX(n): `+DM/−DM` and TR from the second bar of a symbol on, each smoothed by an RMA
/// (seeded with the mean of the first n values), `DX = 100·|+DI − −DI| / (+DI + −DI)` (0 when both
/// are 0), `ADX = RMA(DX)`. The first ADX appears on a symbol's bar `2n − 1`.
pub fn wilder_adx(high: ArrayView2<f64>, low: ArrayView2<f64>, close: ArrayView2<f64>, n: usize) -> Array2<f64> {
    let (n_bars, n_symbols) = close.dim();
    let mut out = Array2::from_elem((n_bars, n_symbols), f64::NAN);
    let mut prev = vec![(f64::NAN, f64::NAN, f64::NAN); n_symbols];
    let mut smooth = vec![(Rma::new(), Rma::new(), Rma::new(), Rma::new()); n_symbols];
    for t in 0..n_bars {
        for i in 0..n_symbols {
            let (h, l, c) = (high[[t, i]], low[[t, i]], close[[t, i]]);
            if h.is_nan() || l.is_nan() || c.is_nan() {
                continue;
            }
            let (ph, pl, pc) = prev[i];
            prev[i] = (h, l, c);
            if pc.is_nan() {
                continue;
            }
            let up = h - ph;
            let down = pl - l;
            let plus_dm = if up > down && up > 0.0 { up } else { 0.0 };
            let minus_dm = if down > up && down > 0.0 { down } else { 0.0 };
            let tr = true_range(h, l, pc);
            let (tr_rma, plus_rma, minus_rma, dx_rma) = &mut smooth[i];
            let (Some(tr_s), Some(plus_s), Some(minus_s)) =
                (tr_rma.update(tr, n), plus_rma.update(plus_dm, n), minus_rma.update(minus_dm, n))
            else {
                continue;
            };
            let (plus_di, minus_di) =
                if tr_s > 0.0 { (100.0 * plus_s / tr_s, 100.0 * minus_s / tr_s) } else { (0.0, 0.0) };
            let di_sum = plus_di + minus_di;
            let dx = if di_sum > 0.0 { 100.0 * (plus_di - minus_di).abs() / di_sum } else { 0.0 };
            if let Some(adx) = dx_rma.update(dx, n) {
                out[[t, i]] = adx;
            }
        }
    }
    out
}

/// Rolling sum of the last `window` values ending at t; NaN inputs count as 0 (used for 24h quote
/// volume, where a missing bar traded nothing).
pub fn rolling_sum(values: ArrayView2<f64>, window: usize) -> Array2<f64> {
    let (n_bars, n_symbols) = values.dim();
    let mut out = Array2::zeros((n_bars, n_symbols));
    let mut sum = vec![0.0; n_symbols];
    for t in 0..n_bars {
        if t % window.max(1) == 0 {
            // Rebuild to keep rounding from accumulating.
            sum.fill(0.0);
            for s in (t + 1).saturating_sub(window)..t {
                for (acc, v) in sum.iter_mut().zip(values.row(s)) {
                    if v.is_finite() {
                        *acc += v;
                    }
                }
            }
        } else if t >= window {
            for (acc, v) in sum.iter_mut().zip(values.row(t - window)) {
                if v.is_finite() {
                    *acc -= v;
                }
            }
        }
        for (acc, v) in sum.iter_mut().zip(values.row(t)) {
            if v.is_finite() {
                *acc += v;
            }
        }
        out.row_mut(t).assign(&ndarray::ArrayView1::from(&sum[..]));
    }
    out
}

/// Cross-sectional z-score over the eligible entries (population std). Writes NaN for ineligible
/// entries; returns `None` (and writes all NaN) when fewer than 2 are eligible or the std is 0.
pub fn cross_sectional_z(values: &[f64], eligible: &[bool], out: &mut [f64]) -> Option<CrossSection> {
    out.fill(f64::NAN);
    let mut count = 0usize;
    let mut sum = 0.0;
    for (v, e) in values.iter().zip(eligible) {
        if *e {
            count += 1;
            sum += v;
        }
    }
    if count < 2 {
        return None;
    }
    let mean = sum / count as f64;
    let var =
        values.iter().zip(eligible).filter(|(_, e)| **e).map(|(v, _)| (v - mean).powi(2)).sum::<f64>() / count as f64;
    let std = var.sqrt();
    if !(std > 0.0) {
        return None;
    }
    for ((o, v), e) in out.iter_mut().zip(values).zip(eligible) {
        if *e {
            *o = (v - mean) / std;
        }
    }
    Some(CrossSection { count, mean, std })
}

/// Summary of one cross-section: how many were eligible, their mean and population std.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrossSection {
    pub count: usize,
    pub mean: f64,
    pub std: f64,
}

/// Amplified signal `sign(z)·|z|^p`.
#[inline]
pub fn amplify(z: f64, power: f64) -> f64 {
    z.signum() * z.abs().powf(power)
}

/// Dynamic K (strategy.md §4): `round(k_min + (k_max − k_min)·clamp((D − d_lo)/(d_hi − d_lo), 0, 1))`.
pub fn dynamic_k(dispersion_ratio: f64, k_min: usize, k_max: usize, d_lo: f64, d_hi: f64) -> usize {
    let x = ((dispersion_ratio - d_lo) / (d_hi - d_lo)).clamp(0.0, 1.0);
    let x = if x.is_nan() { 0.0 } else { x };
    (k_min as f64 + (k_max - k_min) as f64 * x).round() as usize
}

/// Median of a rolling time window of values, kept sorted so that each update is O(window).
/// Missing (NaN) values occupy their time slot but not the median.
#[derive(Debug, Clone)]
pub struct RollingMedian {
    window: usize,
    by_time: std::collections::VecDeque<f64>,
    sorted: Vec<f64>,
}

impl RollingMedian {
    pub fn new(window: usize) -> Self {
        Self { window, by_time: Default::default(), sorted: Vec::with_capacity(window) }
    }

    /// Push the value of the newest bar (NaN = no value) and drop the one that left the window.
    pub fn push(&mut self, value: f64) {
        if self.by_time.len() == self.window {
            let old = self.by_time.pop_front().expect("window is full");
            if !old.is_nan() {
                let at = self.sorted.partition_point(|v| *v < old);
                self.sorted.remove(at);
            }
        }
        self.by_time.push_back(value);
        if !value.is_nan() {
            let at = self.sorted.partition_point(|v| *v < value);
            self.sorted.insert(at, value);
        }
    }

    /// Median of the valid values in the window (mean of the middle two for an even count).
    pub fn median(&self) -> Option<f64> {
        let n = self.sorted.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(self.sorted[n / 2]),
            _ => Some(0.5 * (self.sorted[n / 2 - 1] + self.sorted[n / 2])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn lookback_returns_and_momentum_by_hand() {
        let close = array![[100.0, 10.0], [110.0, f64::NAN], [121.0, 12.0]];
        let r1 = lookback_returns(close.view(), 1);
        assert!(r1[[0, 0]].is_nan());
        assert!((r1[[1, 0]] - 0.1).abs() < 1e-12);
        assert!(r1[[1, 1]].is_nan() && r1[[2, 1]].is_nan());
        let s = momentum(close.view(), &[1, 2], &[0.5, 0.5], true);
        assert!((s[[2, 0]] - 0.5 * (0.1 + 0.21)).abs() < 1e-12);
        assert!((s[[2, 1]] - 0.5 * (f64::NAN + 0.2)).is_nan());
    }

    #[test]
    fn ema_seeds_with_first_close_and_skips_gaps() {
        let close = array![[f64::NAN], [10.0], [f64::NAN], [13.0]];
        let e = ema(close.view(), 2);
        assert!(e[[0, 0]].is_nan());
        assert_eq!(e[[1, 0]], 10.0);
        assert!(e[[2, 0]].is_nan());
        assert!((e[[3, 0]] - (10.0 + 2.0 / 3.0 * 3.0)).abs() < 1e-12);
    }

    #[test]
    fn z_needs_two_and_dispersion() {
        let mut out = [0.0; 3];
        assert!(cross_sectional_z(&[1.0, 2.0, 3.0], &[true, false, false], &mut out).is_none());
        assert!(cross_sectional_z(&[1.0, 1.0, 3.0], &[true, true, false], &mut out).is_none());
        let cs = cross_sectional_z(&[1.0, 3.0, 9.0], &[true, true, false], &mut out).unwrap();
        assert_eq!((cs.count, cs.mean, cs.std), (2, 2.0, 1.0));
        assert_eq!(&out[..2], &[-1.0, 1.0]);
        assert!(out[2].is_nan());
    }

    #[test]
    fn dynamic_k_interpolates_and_clamps() {
        assert_eq!(dynamic_k(0.5, 2, 6, 0.8, 1.5), 2);
        assert_eq!(dynamic_k(2.0, 2, 6, 0.8, 1.5), 6);
        assert_eq!(dynamic_k(1.15, 2, 6, 0.8, 1.5), 4);
    }

    #[test]
    fn rolling_median_tracks_window() {
        let mut m = RollingMedian::new(3);
        m.push(5.0);
        m.push(f64::NAN);
        assert_eq!(m.median(), Some(5.0));
        m.push(1.0);
        assert_eq!(m.median(), Some(3.0));
        m.push(2.0); // 5 leaves
        assert_eq!(m.median(), Some(1.5));
    }
}
