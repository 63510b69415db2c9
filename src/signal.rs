//! Causal panel kernels (strategy.md §2–3): every output row `t` depends on input rows `0..=t` only.
//!
//! Matrices are `T × N` (row = bar, column = symbol). Kernels walk the rows in order and keep one
//! small state per symbol, which keeps memory access sequential. Missing data is NaN and is never
//! forward-filled into a signal: an output is NaN whenever its inputs at `t` are missing.

use ndarray::{Array2, ArrayView2};

use crate::bitset::SymbolSet;
use crate::model::BPS;

/// `value.is_finite()` written as a float comparison (`inf − inf` and `NaN − NaN` are NaN), which
/// LLVM turns into a vector mask; `f64::is_finite` compiles to integer bit tests that keep the hot
/// per-symbol loops scalar.
#[inline(always)]
#[allow(clippy::eq_op)]
pub(crate) fn finite(value: f64) -> bool {
    value - value == 0.0
}

/// `if cond { a } else { b }` as bit masks. A plain `if` that keeps a state's old value becomes a
/// conditional store, which does not vectorise; this stays a select.
#[inline(always)]
pub(crate) fn blend(cond: bool, a: f64, b: f64) -> f64 {
    let mask = (cond as u64).wrapping_neg();
    f64::from_bits((a.to_bits() & mask) | (b.to_bits() & !mask))
}

/// The last `capacity` rows of an `N`-wide series in a ring (each row stored once, no modulo on
/// the hot path): [`RowWindow::ago`] reads any kept row.
#[derive(Debug, Clone)]
pub struct RowWindow {
    width: usize,
    capacity: usize,
    data: Vec<f64>,
    pushed: usize,
    /// Slot the next row goes to.
    next: usize,
}

impl RowWindow {
    pub fn new(width: usize, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { width, capacity, data: vec![f64::NAN; capacity * width], pushed: 0, next: 0 }
    }

    pub fn push(&mut self, row: &[f64]) {
        debug_assert_eq!(row.len(), self.width);
        self.push_with(|slot, _| slot.copy_from_slice(row));
    }

    /// Push a row written in place by `fill(new_row, newest_row)` (`newest_row` is the row pushed
    /// last, NaN before the first push, and empty in a window of one row, whose new row replaces
    /// it): a kernel that keeps its state as the newest row computes straight into the window,
    /// without a scratch row and a copy.
    pub fn push_with(&mut self, fill: impl FnOnce(&mut [f64], &[f64])) {
        let w = self.width;
        let newest = if self.next == 0 { self.capacity - 1 } else { self.next - 1 };
        if newest == self.next {
            fill(&mut self.data[..w], &[]);
        } else {
            let (slot, previous) = if self.next < newest {
                let (head, tail) = self.data.split_at_mut(newest * w);
                (&mut head[self.next * w..(self.next + 1) * w], &tail[..w])
            } else {
                let (head, tail) = self.data.split_at_mut(self.next * w);
                (&mut tail[..w], &head[newest * w..(newest + 1) * w])
            };
            fill(slot, previous);
        }
        self.next = if self.next + 1 == self.capacity { 0 } else { self.next + 1 };
        self.pushed += 1;
    }

    /// Rows pushed so far (not only those kept).
    pub fn pushed(&self) -> usize {
        self.pushed
    }

    /// The row pushed `k` pushes ago (`k = 0`: the newest); `k` must be below the rows kept.
    pub fn ago(&self, k: usize) -> &[f64] {
        debug_assert!(k < self.pushed.min(self.capacity));
        let slot = if self.next > k { self.next - 1 - k } else { self.next + self.capacity - 1 - k };
        &self.data[slot * self.width..(slot + 1) * self.width]
    }
}

/// Like [`RowWindow`], but stored symbol-major: each symbol's recent values are contiguous (twice,
/// for the same wrap-around trick), so per-symbol loops over a window vectorise.
#[derive(Debug, Clone)]
pub struct ColumnWindow {
    width: usize,
    capacity: usize,
    data: Vec<f64>,
    pushed: usize,
    /// Slot the next row goes to (`pushed mod capacity`, kept without dividing).
    next: usize,
}

impl ColumnWindow {
    pub fn new(width: usize, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self { width, capacity, data: vec![f64::NAN; 2 * capacity * width], pushed: 0, next: 0 }
    }

    pub fn push(&mut self, row: &[f64]) {
        self.push_mapped(row, |value| value);
    }

    /// Push `map` of each value of `row`: the vol target's zero-filled returns go in without a
    /// copy of the row first (a pass of stores and reloads per bar).
    #[inline]
    pub fn push_mapped(&mut self, row: &[f64], map: impl Fn(f64) -> f64) {
        debug_assert_eq!(row.len(), self.width);
        let slot = self.next;
        for (column, value) in self.data.chunks_exact_mut(2 * self.capacity).zip(row) {
            let (first, second) = column.split_at_mut(self.capacity);
            let value = map(*value);
            first[slot] = value;
            second[slot] = value;
        }
        self.pushed += 1;
        self.next = if slot + 1 == self.capacity { 0 } else { slot + 1 };
    }

    /// The last `rows` rows (fewer when fewer were kept), oldest first, as a `rows × N` view whose
    /// columns are contiguous.
    pub fn recent(&self, rows: usize) -> ArrayView2<'_, f64> {
        use ndarray::ShapeBuilder;
        let rows = rows.min(self.pushed).min(self.capacity);
        let start = if self.next >= rows { self.next - rows } else { self.next + self.capacity - rows };
        let shape = (rows, self.width).strides((1, 2 * self.capacity));
        ArrayView2::from_shape(shape, &self.data[start..]).expect("window inside the buffer")
    }
}

/// Run a streaming kernel over every row of `T × N` inputs into a fresh `T × N` output.
fn batch<T: Clone>(n_bars: usize, n_symbols: usize, fill: T, mut update: impl FnMut(usize, &mut [T])) -> Array2<T> {
    let mut out = Array2::from_elem((n_bars, n_symbols), fill);
    for t in 0..n_bars {
        update(t, out.row_mut(t).into_slice().expect("fresh standard layout"));
    }
    out
}

fn row<'a>(matrix: &'a ArrayView2<'a, f64>, t: usize) -> &'a [f64] {
    matrix.row(t).to_slice().expect("standard layout (see as_standard_layout)")
}

/// `R[t,i] = C[t,i] / C[t−L,i] − 1` one row at a time; NaN if `t < L` or either close is missing.
#[derive(Debug, Clone)]
pub struct LookbackReturns {
    lookback: usize,
    closes: RowWindow,
}

impl LookbackReturns {
    pub fn new(n_symbols: usize, lookback: usize) -> Self {
        Self { lookback, closes: RowWindow::new(n_symbols, lookback + 1) }
    }
    pub fn update(&mut self, close: &[f64], out: &mut [f64]) {
        self.closes.push(close);
        if self.closes.pushed() <= self.lookback {
            out.fill(f64::NAN);
            return;
        }
        let then = self.closes.ago(self.lookback);
        for ((r, now), then) in out.iter_mut().zip(close).zip(then) {
            *r = now / then - 1.0;
        }
    }
}

/// Simple one-bar returns `C[t]/C[t−1] − 1` (NaN on the first bar or when either close is missing).
pub fn simple_returns(close: ArrayView2<f64>) -> Array2<f64> {
    lookback_returns(close, 1)
}

/// `R[t,i] = C[t,i] / C[t−L,i] − 1`; NaN if `t < L` or either close is missing.
pub fn lookback_returns(close: ArrayView2<f64>, lookback: usize) -> Array2<f64> {
    let close = close.as_standard_layout();
    let view = close.view();
    let (n_bars, n_symbols) = view.dim();
    let mut state = LookbackReturns::new(n_symbols, lookback);
    batch(n_bars, n_symbols, f64::NAN, |t, out| state.update(row(&view, t), out))
}

/// Weighted momentum `S = Σ_k w_k R_k / Σ_k w_k` (or the plain sum without normalising) one row at
/// a time; NaN if any term is NaN.
#[derive(Debug, Clone)]
pub struct Momentum {
    lookbacks: Vec<usize>,
    weights: Vec<f64>,
    scale: f64,
    /// Every term is NaN before this many bars.
    longest: usize,
    /// Reciprocals `1/C` of the kept closes: each close is divided once, when it arrives, and every
    /// ratio `C[t]/C[t−L]` is then a multiplication (`C[t]·(1/C[t−L])`, within an ulp of the quotient).
    inverse_closes: RowWindow,
}

impl Momentum {
    pub fn new(n_symbols: usize, lookbacks: &[usize], weights: &[f64], normalise: bool) -> Self {
        assert_eq!(lookbacks.len(), weights.len(), "one weight per lookback");
        let scale = if normalise { 1.0 / weights.iter().sum::<f64>() } else { 1.0 };
        let longest = lookbacks.iter().copied().max().unwrap_or(0);
        Self {
            lookbacks: lookbacks.to_vec(),
            weights: weights.to_vec(),
            scale,
            longest,
            // At least two rows: the window also gives one-bar returns (`update_with_returns`).
            inverse_closes: RowWindow::new(n_symbols, longest.max(1) + 1),
        }
    }
    pub fn update(&mut self, close: &[f64], out: &mut [f64]) {
        self.inverse_closes.push_with(|row, _| {
            for (inverse, c) in row.iter_mut().zip(close) {
                *inverse = 1.0 / c;
            }
        });
        let t = self.inverse_closes.pushed() - 1;
        if t < self.longest {
            out.fill(f64::NAN);
            return;
        }
        out.fill(0.0);
        for (lookback, weight) in self.lookbacks.iter().zip(&self.weights) {
            let inverse_then = self.inverse_closes.ago(*lookback);
            for ((s, now), inverse_then) in out.iter_mut().zip(close).zip(inverse_then) {
                *s += weight * (now * inverse_then - 1.0);
            }
        }
        if self.scale != 1.0 {
            out.iter_mut().for_each(|s| *s *= self.scale);
        }
    }

    /// [`Momentum::update`] plus the one-bar returns `C[t]/C[t−1] − 1` from the same window (what
    /// [`LookbackReturns`] with lookback 1 gives, to an ulp), so the closes are stored once.
    pub fn update_with_returns(&mut self, close: &[f64], out: &mut [f64], returns: &mut [f64]) {
        self.update(close, out);
        if self.inverse_closes.pushed() < 2 {
            returns.fill(f64::NAN);
            return;
        }
        let inverse_then = self.inverse_closes.ago(1);
        for ((r, now), inverse_then) in returns.iter_mut().zip(close).zip(inverse_then) {
            *r = now * inverse_then - 1.0;
        }
    }
}

/// Weighted momentum `S = Σ_k w_k R_k / Σ_k w_k` (or the plain sum with `normalise = false`);
/// NaN if any term is NaN.
pub fn momentum(close: ArrayView2<f64>, lookbacks: &[usize], weights: &[f64], normalise: bool) -> Array2<f64> {
    let close = close.as_standard_layout();
    let view = close.view();
    let (n_bars, n_symbols) = view.dim();
    let mut state = Momentum::new(n_symbols, lookbacks, weights, normalise);
    batch(n_bars, n_symbols, f64::NAN, |t, out| state.update(row(&view, t), out))
}

/// Sample standard deviation (ddof 1) of the last `window` values, one row at a time (NaN entries
/// skipped), NaN unless at least `min_periods` (≥ 2) values are valid.
///
/// Running sums make it O(N) per row; they are rebuilt from the kept rows every `window` rows so
/// that rounding cannot accumulate, and a variance that rounds below zero is 0.
#[derive(Debug, Clone)]
pub struct RollingStd {
    window: usize,
    min_periods: f64,
    rows: RowWindow,
    sum: Vec<f64>,
    sum_sq: Vec<f64>,
    /// Valid values in the window, as f64 so that the output loop has no integer conversions.
    count: Vec<f64>,
    /// Rows since the sums were last rebuilt (a rebuild happens every `window` rows).
    since_rebuild: usize,
    /// `1/n` and `1/(n − 1)` per symbol for the count `inverse_of` they were taken for: counts
    /// rarely change once the window is full, so the output pass multiplies instead of dividing.
    inverse_count: Vec<f64>,
    inverse_count_less_one: Vec<f64>,
    inverse_of: Vec<f64>,
}

impl RollingStd {
    pub fn new(n_symbols: usize, window: usize, min_periods: usize) -> Self {
        Self {
            window,
            min_periods: min_periods.max(2) as f64,
            rows: RowWindow::new(n_symbols, window),
            sum: vec![0.0; n_symbols],
            sum_sq: vec![0.0; n_symbols],
            count: vec![0.0; n_symbols],
            since_rebuild: 0,
            inverse_count: vec![f64::INFINITY; n_symbols],
            inverse_count_less_one: vec![-1.0; n_symbols],
            inverse_of: vec![0.0; n_symbols],
        }
    }
    pub fn update(&mut self, values: &[f64], out: &mut [f64]) {
        let t = self.rows.pushed();
        let window = self.window;
        let rebuilt = window > 0 && t > 0 && self.since_rebuild + 1 == window;
        if rebuilt {
            // Rebuild the sums over the rows (t − window, t − 1] to cancel rounding drift.
            self.sum.fill(0.0);
            self.sum_sq.fill(0.0);
            self.count.fill(0.0);
            for s in (t + 1).saturating_sub(window)..t {
                add_finite(self.rows.ago(t - 1 - s), &mut self.sum, &mut self.sum_sq, &mut self.count);
            }
            self.since_rebuild = 0;
        } else if t > 0 {
            self.since_rebuild += 1;
        }
        if t >= window && !rebuilt {
            // Row t enters and row t − window leaves (it was added since the last rebuild).
            replace_finite(values, self.rows.ago(window - 1), &mut self.sum, &mut self.sum_sq, &mut self.count);
        } else {
            add_finite(values, &mut self.sum, &mut self.sum_sq, &mut self.count);
        }
        self.rows.push(values);
        for (i, n) in self.count.iter().enumerate() {
            if *n != self.inverse_of[i] {
                self.inverse_of[i] = *n;
                self.inverse_count[i] = 1.0 / n;
                self.inverse_count_less_one[i] = 1.0 / (n - 1.0);
            }
        }
        let min_periods = self.min_periods;
        let inverses = self.inverse_count.iter().zip(&self.inverse_count_less_one);
        let sums = self.count.iter().zip(&self.sum).zip(&self.sum_sq);
        for ((o, ((n, sum), sum_sq)), (inverse_n, inverse_n_less_one)) in out.iter_mut().zip(sums).zip(inverses) {
            let mean = sum * inverse_n;
            let std = ((sum_sq - mean * sum) * inverse_n_less_one).max(0.0).sqrt();
            *o = if *n >= min_periods { std } else { f64::NAN };
        }
    }
}

/// Sample standard deviation (ddof 1) of the last `window` values ending at `t` (NaN entries skipped),
/// NaN unless at least `min_periods` (≥ 2) values are valid.
pub fn rolling_std(values: ArrayView2<f64>, window: usize, min_periods: usize) -> Array2<f64> {
    let values = values.as_standard_layout();
    let view = values.view();
    let (n_bars, n_symbols) = view.dim();
    let mut state = RollingStd::new(n_symbols, window, min_periods);
    batch(n_bars, n_symbols, f64::NAN, |t, out| state.update(row(&view, t), out))
}

/// Add the finite entries of `row` (a non-finite entry adds 0, which leaves the sums unchanged).
/// Not inlined: as a function of its own the four slices are known not to alias, so it vectorises.
#[inline(never)]
fn add_finite(row: &[f64], sum: &mut [f64], sum_sq: &mut [f64], count: &mut [f64]) {
    for (((value, sum), sum_sq), count) in row.iter().zip(sum).zip(sum_sq).zip(count) {
        let finite = finite(*value);
        let value = if finite { *value } else { 0.0 };
        *sum += value;
        *sum_sq += value * value;
        *count += if finite { 1.0 } else { 0.0 };
    }
}

/// Add the finite entries of `entering`, then remove those of `leaving`, in one pass: per entry
/// `(s + new) + (−old)`, the same operations as [`add_finite`] followed by a removal. Removing is
/// written as adding the negated value (`a + (−b)` is exactly `a − b`), because `a − 0` folds into
/// a branch that does not vectorise.
#[inline(never)]
fn replace_finite(entering: &[f64], leaving: &[f64], sum: &mut [f64], sum_sq: &mut [f64], count: &mut [f64]) {
    let rows = entering.iter().zip(leaving);
    for (((sum, sum_sq), count), (new, old)) in sum.iter_mut().zip(sum_sq).zip(count).zip(rows) {
        let (new_finite, old_finite) = (finite(*new), finite(*old));
        let new = if new_finite { *new } else { 0.0 };
        let (old, negated) = if old_finite { (*old, -*old) } else { (0.0, 0.0) };
        *sum = *sum + new + negated;
        *sum_sq = *sum_sq + new * new + negated * old;
        *count = *count + if new_finite { 1.0 } else { 0.0 } + if old_finite { -1.0 } else { 0.0 };
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

/// EMA slope in bps per day (strategy.md §3), one row at a time: the mean of the last
/// `m = max(1, len / 4)` EMA changes, divided by the close, × [`BPS`] × `bars_per_day`. NaN with fewer
/// than `m + 1` EMA values or a missing close at t.
///
/// The EMA `m` valid closes back is read from a time-major window of EMA rows while a symbol's
/// last `m + 1` closes are all present (then "m closes back" is "m bars back", and the pass over
/// every symbol vectorises). A symbol with a missing close moves to a per-symbol ring of its last
/// `m + 1` EMA values (seeded from the window), until it has `m + 1` consecutive closes again.
#[derive(Debug, Clone)]
pub struct EmaSlope {
    m: usize,
    alpha: f64,
    /// `BPS × bars_per_day / m`: bps per day of the mean of m EMA changes, per unit of price.
    per_day_over_m: f64,
    /// EMA rows of the last m + 1 bars (a symbol without a close keeps its previous value); the
    /// newest row is the current EMA.
    rows: RowWindow,
    /// Per symbol: consecutive closes ending at the current bar (f64 for the vector pass).
    run: Vec<f64>,
    /// Symbols followed in their own ring (a missing close within their last m + 1 bars).
    slow: SymbolSet,
    /// Per-symbol rings of the last m + 1 EMA values (symbol-major), kept for `slow` symbols.
    ring: Vec<f64>,
    /// Per symbol: the ring slot of the next EMA value (which holds the oldest kept one).
    next: Vec<usize>,
    /// Per symbol: EMA values in the ring, at most m + 1.
    seen: Vec<usize>,
}

impl EmaSlope {
    pub fn new(n_symbols: usize, ema_len: usize, bars_per_day: usize) -> Self {
        let m = (ema_len / 4).max(1);
        Self {
            m,
            alpha: 2.0 / (ema_len as f64 + 1.0),
            per_day_over_m: BPS * bars_per_day as f64 / m as f64,
            rows: RowWindow::new(n_symbols, m + 1),
            run: vec![0.0; n_symbols],
            slow: SymbolSet::new(n_symbols),
            ring: vec![0.0; (m + 1) * n_symbols],
            next: vec![0; n_symbols],
            seen: vec![0; n_symbols],
        }
    }

    pub fn update(&mut self, close: &[f64], out: &mut [f64]) {
        let slots_per_symbol = self.m + 1;
        // A missing close after the first one: follow the symbol in its own ring from now on,
        // seeded with its EMA values of the bars before this one (all were closes, or the symbol
        // is already slow).
        if self.rows.pushed() > 0 {
            let newest = self.rows.ago(0);
            for (i, c) in close.iter().enumerate() {
                if c.is_nan() && !newest[i].is_nan() && !self.slow.contains(i) {
                    let kept = (self.run[i] as usize).min(slots_per_symbol).min(self.rows.pushed());
                    let slots = &mut self.ring[i * slots_per_symbol..(i + 1) * slots_per_symbol];
                    for (slot, ago) in (0..kept).rev().enumerate() {
                        slots[slot] = self.rows.ago(ago)[i];
                    }
                    self.next[i] = kept % slots_per_symbol;
                    self.seen[i] = kept;
                    self.slow.insert(i);
                }
            }
        }
        let alpha = self.alpha;
        self.rows.push_with(|ema, previous| {
            for ((ema, previous), c) in ema.iter_mut().zip(previous).zip(close) {
                let stepped = if previous.is_nan() { *c } else { *previous + alpha * (c - *previous) };
                *ema = blend(c.is_nan(), *previous, stepped);
            }
        });
        for (run, c) in self.run.iter_mut().zip(close) {
            *run = if c.is_nan() { 0.0 } else { *run + 1.0 };
        }
        let (per_day_over_m, full) = (self.per_day_over_m, slots_per_symbol as f64);
        if self.rows.pushed() > self.m {
            let then = self.rows.ago(self.m);
            let symbols = out.iter_mut().zip(close).zip(self.rows.ago(0)).zip(&self.run);
            for ((((o, c), ema), run), then) in symbols.zip(then) {
                // Mean of m deltas = (now − then) / m, per unit of price, in bps per day.
                let slope = (ema - then) * per_day_over_m / c;
                *o = if *run >= full { slope } else { f64::NAN };
            }
        } else {
            out.fill(f64::NAN);
        }
        let mut next_slow = self.slow.next(0);
        while let Some(i) = next_slow {
            next_slow = self.slow.next(i + 1);
            let c = close[i];
            if c.is_nan() {
                continue;
            }
            let slots = &mut self.ring[i * slots_per_symbol..(i + 1) * slots_per_symbol];
            let ema = self.rows.ago(0)[i];
            slots[self.next[i]] = ema;
            self.next[i] = if self.next[i] + 1 == slots_per_symbol { 0 } else { self.next[i] + 1 };
            self.seen[i] = (self.seen[i] + 1).min(slots_per_symbol);
            out[i] = if self.seen[i] == slots_per_symbol {
                // The oldest kept value is the EMA m closes back.
                (ema - slots[self.next[i]]) * per_day_over_m / c
            } else {
                f64::NAN
            };
            if self.run[i] >= full {
                // m + 1 consecutive closes again: the time-major window gives the same value.
                self.slow.remove(i);
            }
        }
    }
}

/// EMA slope in bps per day (strategy.md §3); see [`EmaSlope`].
pub fn ema_slope_bps_per_day(close: ArrayView2<f64>, ema_len: usize, bars_per_day: usize) -> Array2<f64> {
    let close = close.as_standard_layout();
    let view = close.view();
    let (n_bars, n_symbols) = view.dim();
    let mut state = EmaSlope::new(n_symbols, ema_len, bars_per_day);
    batch(n_bars, n_symbols, f64::NAN, |t, out| state.update(row(&view, t), out))
}

/// Wilder RMA state: the SMA of the first `n` inputs seeds it, then `x ← x + (v − x)/n`.
#[derive(Debug, Clone, Copy)]
struct Rma {
    value: f64,
    seen: usize,
}

impl Rma {
    const fn new() -> Self {
        Self { value: 0.0, seen: 0 }
    }
    /// Feed one value; returns the RMA once `n` values have been seen.
    #[inline]
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

/// Wilder ATR(n) one row at a time: `TR = max(H−L, |H−C₋₁|, |L−C₋₁|)` (just `H−L` on a symbol's
/// first bar; `C₋₁` is the last valid close), smoothed by an RMA seeded with the mean of the first n TRs.
///
/// Written without branches (structure of arrays, masks): a symbol without a bar keeps its state.
/// `max` ignores a NaN operand, so `TR` of a first bar (no `C₋₁`) is `H−L` without a special case,
/// and the seeding mean `x + v/n` and the RMA step `x + (v − x)/n` share one multiplication by `1/n`.
#[derive(Debug, Clone)]
pub struct WilderAtr {
    n: f64,
    prev_close: Vec<f64>,
    /// RMA value and bars seen per symbol (a count in f64, exact far beyond any history).
    value: Vec<f64>,
    seen: Vec<f64>,
}

impl WilderAtr {
    pub fn new(n_symbols: usize, n: usize) -> Self {
        Self {
            n: n as f64,
            prev_close: vec![f64::NAN; n_symbols],
            value: vec![0.0; n_symbols],
            seen: vec![0.0; n_symbols],
        }
    }
    pub fn update(&mut self, high: &[f64], low: &[f64], close: &[f64], out: &mut [f64]) {
        let (n, inverse_n) = (self.n, 1.0 / self.n);
        let bars = high.iter().zip(low).zip(close);
        let state = self.prev_close.iter_mut().zip(self.value.iter_mut()).zip(self.seen.iter_mut());
        for ((((h, l), c), o), ((prev_close, value), seen)) in bars.zip(out.iter_mut()).zip(state) {
            let (h, l, c, pc) = (*h, *l, *c, *prev_close);
            let valid = !(h.is_nan() | l.is_nan() | c.is_nan());
            let tr = (h - l).max((h - pc).abs()).max((l - pc).abs());
            let seen_now = *seen + 1.0;
            let seeding = seen_now <= n;
            let stepped = *value + (if seeding { tr } else { tr - *value }) * inverse_n;
            *value = blend(valid, stepped, *value);
            *seen = blend(valid, seen_now, *seen);
            *prev_close = blend(valid, c, pc);
            *o = if valid & (seen_now >= n) { stepped } else { f64::NAN };
        }
    }
}

/// Wilder ATR(n) over a panel; see [`WilderAtr`].
pub fn wilder_atr(high: ArrayView2<f64>, low: ArrayView2<f64>, close: ArrayView2<f64>, n: usize) -> Array2<f64> {
    let (high, low, close) = (high.as_standard_layout(), low.as_standard_layout(), close.as_standard_layout());
    let (high, low, close) = (high.view(), low.view(), close.view());
    let (n_bars, n_symbols) = close.dim();
    let mut state = WilderAtr::new(n_symbols, n);
    batch(n_bars, n_symbols, f64::NAN, |t, out| state.update(row(&high, t), row(&low, t), row(&close, t), out))
}

#[inline]
fn true_range(high: f64, low: f64, prev_close: f64) -> f64 {
    if prev_close.is_nan() {
        high - low
    } else {
        (high - low).max((high - prev_close).abs()).max((low - prev_close).abs())
    }
}

/// Wilder ADX(n) one row at a time: `+DM/−DM` and TR from the second bar of a symbol on, each
/// smoothed by an RMA (seeded with the mean of the first n values),
/// `DX = 100·|+DI − −DI| / (+DI + −DI)` (0 when both are 0), `ADX = RMA(DX)`. The first ADX appears
/// on a symbol's bar `2n − 1`.
#[derive(Debug, Clone)]
pub struct WilderAdx {
    n: usize,
    prev: Vec<(f64, f64, f64)>,
    smooth: Vec<[Rma; 4]>,
}

impl WilderAdx {
    pub fn new(n_symbols: usize, n: usize) -> Self {
        Self { n, prev: vec![(f64::NAN, f64::NAN, f64::NAN); n_symbols], smooth: vec![[Rma::new(); 4]; n_symbols] }
    }
    pub fn update(&mut self, high: &[f64], low: &[f64], close: &[f64], out: &mut [f64]) {
        let n = self.n;
        for i in 0..out.len() {
            out[i] = f64::NAN;
            let (h, l, c) = (high[i], low[i], close[i]);
            if h.is_nan() || l.is_nan() || c.is_nan() {
                continue;
            }
            let (ph, pl, pc) = self.prev[i];
            self.prev[i] = (h, l, c);
            if pc.is_nan() {
                continue;
            }
            let up = h - ph;
            let down = pl - l;
            let plus_dm = if up > down && up > 0.0 { up } else { 0.0 };
            let minus_dm = if down > up && down > 0.0 { down } else { 0.0 };
            let tr = true_range(h, l, pc);
            let [tr_rma, plus_rma, minus_rma, dx_rma] = &mut self.smooth[i];
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
                out[i] = adx;
            }
        }
    }
}

/// Wilder ADX(n) over a panel; see [`WilderAdx`].
pub fn wilder_adx(high: ArrayView2<f64>, low: ArrayView2<f64>, close: ArrayView2<f64>, n: usize) -> Array2<f64> {
    let (high, low, close) = (high.as_standard_layout(), low.as_standard_layout(), close.as_standard_layout());
    let (high, low, close) = (high.view(), low.view(), close.view());
    let (n_bars, n_symbols) = close.dim();
    let mut state = WilderAdx::new(n_symbols, n);
    batch(n_bars, n_symbols, f64::NAN, |t, out| state.update(row(&high, t), row(&low, t), row(&close, t), out))
}

/// Cross-sectional z-score over the eligible entries (population std). Writes NaN for ineligible
/// entries; returns `None` (and writes all NaN) when fewer than 2 are eligible or the std is 0.
/// Ineligible entries are masked to 0 in the sums (adding 0 leaves a sum unchanged), which keeps
/// the passes free of branches.
pub fn cross_sectional_z(values: &[f64], eligible: &[bool], out: &mut [f64]) -> Option<CrossSection> {
    let mut count = 0usize;
    let mut sum = 0.0;
    for (v, e) in values.iter().zip(eligible) {
        count += *e as usize;
        sum += if *e { *v } else { 0.0 };
    }
    if count < 2 {
        out.fill(f64::NAN);
        return None;
    }
    let mean = sum / count as f64;
    let mut sum_sq = -0.0;
    for (v, e) in values.iter().zip(eligible) {
        sum_sq += if *e { (v - mean).powi(2) } else { 0.0 };
    }
    let std = (sum_sq / count as f64).sqrt();
    if !(std > 0.0) {
        out.fill(f64::NAN);
        return None;
    }
    for ((o, v), e) in out.iter_mut().zip(values).zip(eligible) {
        *o = if *e { (v - mean) / std } else { f64::NAN };
    }
    Some(CrossSection { count, mean, std })
}

/// [`cross_sectional_z`] with the eligible set given as its members (ascending): the same sums in
/// the same order, over the members only.
pub fn cross_sectional_z_of(values: &[f64], members: &[usize], out: &mut [f64]) -> Option<CrossSection> {
    out.fill(f64::NAN);
    let count = members.len();
    if count < 2 {
        return None;
    }
    let mut sum = 0.0;
    for &i in members {
        sum += values[i];
    }
    let mean = sum / count as f64;
    let mut sum_sq = -0.0;
    for &i in members {
        sum_sq += (values[i] - mean).powi(2);
    }
    let std = (sum_sq / count as f64).sqrt();
    if !(std > 0.0) {
        return None;
    }
    for &i in members {
        out[i] = (values[i] - mean) / std;
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
    /// When one value leaves and one enters, only the values between their two ranks move.
    pub fn push(&mut self, value: f64) {
        let leaving = if self.by_time.len() == self.window { self.by_time.pop_front() } else { None };
        self.by_time.push_back(value);
        let leaving = leaving.filter(|v| !v.is_nan());
        let entering = (!value.is_nan()).then_some(value);
        let rank = |sorted: &[f64], x: f64| sorted.partition_point(|v| *v < x);
        match (leaving, entering) {
            (Some(old), Some(new)) => {
                let (from, to) = (rank(&self.sorted, old), rank(&self.sorted, new));
                if to > from {
                    self.sorted.copy_within(from + 1..to, from);
                    self.sorted[to - 1] = new;
                } else {
                    self.sorted.copy_within(to..from, to + 1);
                    self.sorted[to] = new;
                }
            }
            (Some(old), None) => {
                let at = rank(&self.sorted, old);
                self.sorted.remove(at);
            }
            (None, Some(new)) => {
                let at = rank(&self.sorted, new);
                self.sorted.insert(at, new);
            }
            (None, None) => {}
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

    /// A small deterministic generator for the randomized tests (xorshift64).
    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    #[test]
    fn a_column_window_holds_the_last_rows_pushed_mapped_as_pushed() {
        // Against the plain record of every row pushed: capacities from 1, more pushes than slots
        // (the ring wraps), NaNs that the mapped push turns into 0, every view length.
        let mut next = xorshift(0x5eed);
        for capacity in 1..9 {
            let width = 3;
            let (mut window, mut mapped) = (ColumnWindow::new(width, capacity), ColumnWindow::new(width, capacity));
            let mut rows: Vec<Vec<f64>> = Vec::new();
            for _ in 0..3 * capacity + 5 {
                let row: Vec<f64> = (0..width)
                    .map(|_| match next() % 5 {
                        0 => f64::NAN,
                        draw => draw as f64 - 0.5 * (next() % 7) as f64,
                    })
                    .collect();
                window.push(&row);
                mapped.push_mapped(&row, |v| if v.is_nan() { 0.0 } else { v });
                rows.push(row);
                for wanted in 0..capacity + 2 {
                    let kept = wanted.min(rows.len()).min(capacity);
                    let recent = &rows[rows.len() - kept..];
                    let (view, view_mapped) = (window.recent(wanted), mapped.recent(wanted));
                    assert_eq!(view.dim(), (kept, width));
                    for (r, row) in recent.iter().enumerate() {
                        for (i, value) in row.iter().enumerate() {
                            assert_eq!(view[[r, i]].to_bits(), value.to_bits(), "capacity {capacity}");
                            let zeroed = if value.is_nan() { 0.0 } else { *value };
                            assert_eq!(view_mapped[[r, i]], zeroed, "capacity {capacity}");
                        }
                        assert!(view.column(0).as_slice().is_some(), "columns are contiguous");
                    }
                }
            }
        }
    }

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
    fn z_of_members_is_bitwise_the_masked_z() {
        let mut next = xorshift(0x2545_F491_4F6C_DD1Du64);
        for case in 0..500 {
            let n = 1 + case % 40;
            let values: Vec<f64> =
                (0..n).map(|_| if next() % 9 == 0 { f64::NAN } else { (next() % 20_001) as f64 / 1e4 - 1.0 }).collect();
            let eligible: Vec<bool> = values.iter().map(|v| v.is_finite() && next() % 3 != 0).collect();
            let members: Vec<usize> = (0..n).filter(|&i| eligible[i]).collect();
            let (mut masked, mut listed) = (vec![0.0; n], vec![0.0; n]);
            let a = cross_sectional_z(&values, &eligible, &mut masked);
            let b = cross_sectional_z_of(&values, &members, &mut listed);
            assert_eq!(
                a.map(|c| (c.count, c.mean.to_bits(), c.std.to_bits())),
                b.map(|c| (c.count, c.mean.to_bits(), c.std.to_bits()))
            );
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&masked), bits(&listed));
        }
    }

    #[test]
    fn dynamic_k_interpolates_and_clamps() {
        assert_eq!(dynamic_k(0.5, 2, 6, 0.8, 1.5), 2);
        assert_eq!(dynamic_k(2.0, 2, 6, 0.8, 1.5), 6);
        assert_eq!(dynamic_k(1.15, 2, 6, 0.8, 1.5), 4);
    }

    #[test]
    fn finite_matches_is_finite() {
        let specials = [0.0, -0.0, 1.0, -1.5, f64::MAX, f64::MIN, f64::MIN_POSITIVE, 5e-324, f64::INFINITY];
        let mut values: Vec<f64> = specials.iter().flat_map(|v| [*v, -*v]).collect();
        values.extend([f64::NAN, -f64::NAN, f64::from_bits(0x7ff0_0000_0000_0001)]);
        let mut bits = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..10_000 {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            values.push(f64::from_bits(bits));
        }
        for v in values {
            assert_eq!(finite(v), v.is_finite(), "{v:?} ({:#x})", v.to_bits());
        }
    }

    #[test]
    fn rolling_median_matches_sorting_the_window() {
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64);
        for window in [1usize, 2, 3, 7, 24] {
            let mut rolling = RollingMedian::new(window);
            let mut values = Vec::new();
            for _ in 0..400 {
                // Few distinct values, so that ties and repeats are common; some NaN.
                let value = if next() % 7 == 0 { f64::NAN } else { (next() % 9) as f64 - 4.0 };
                values.push(value);
                rolling.push(value);
                let mut kept: Vec<f64> =
                    values[values.len().saturating_sub(window)..].iter().copied().filter(|v| !v.is_nan()).collect();
                kept.sort_by(f64::total_cmp);
                let n = kept.len();
                let expected = match n {
                    0 => None,
                    _ if n % 2 == 1 => Some(kept[n / 2]),
                    _ => Some(0.5 * (kept[n / 2 - 1] + kept[n / 2])),
                };
                assert_eq!(rolling.median(), expected);
                assert_eq!(rolling.sorted, kept);
            }
        }
    }

    #[test]
    fn blend_selects_bit_for_bit() {
        for (a, b) in [(1.5, -0.0), (f64::NAN, 2.0), (-0.0, f64::INFINITY), (f64::MIN_POSITIVE, f64::NAN)] {
            assert_eq!(blend(true, a, b).to_bits(), a.to_bits());
            assert_eq!(blend(false, a, b).to_bits(), b.to_bits());
        }
    }

    /// The EMA slope kept in one ring per symbol, updated at every close (the straightforward form
    /// of the definition that [`EmaSlope`] speeds up).
    fn ema_slope_by_rings(close: &[Vec<f64>], ema_len: usize, bars_per_day: usize) -> Vec<Vec<f64>> {
        let m = (ema_len / 4).max(1);
        let alpha = 2.0 / (ema_len as f64 + 1.0);
        let n = close[0].len();
        let mut state = vec![f64::NAN; n];
        let mut rings: Vec<Vec<f64>> = vec![Vec::new(); n];
        close
            .iter()
            .map(|row| {
                (0..n)
                    .map(|i| {
                        let c = row[i];
                        if c.is_nan() {
                            return f64::NAN;
                        }
                        state[i] = if state[i].is_nan() { c } else { state[i] + alpha * (c - state[i]) };
                        rings[i].push(state[i]);
                        let k = rings[i].len();
                        if k > m {
                            (state[i] - rings[i][k - 1 - m]) * (1e4 * bars_per_day as f64 / m as f64) / c
                        } else {
                            f64::NAN
                        }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn ema_slope_is_bitwise_the_ring_definition_with_holes() {
        let mut next = xorshift(0x2545_F491_4F6C_DD1Du64);
        for case in 0..40 {
            let (n, n_bars, ema_len) = (1 + case % 5, 60 + case * 7, 2 + case % 23);
            let hole_every = [3u64, 7, 19, 1000][case % 4];
            let mut prices = vec![50.0; n];
            let close: Vec<Vec<f64>> = (0..n_bars)
                .map(|t| {
                    (0..n)
                        .map(|i| {
                            prices[i] *= 1.0 + ((next() % 2001) as f64 - 1000.0) * 2e-5;
                            let listed = t >= i * 9;
                            if !listed || next() % hole_every == 0 {
                                f64::NAN
                            } else {
                                prices[i]
                            }
                        })
                        .collect()
                })
                .collect();
            let expected = ema_slope_by_rings(&close, ema_len, 24);
            let mut kernel = EmaSlope::new(n, ema_len, 24);
            let mut out = vec![0.0; n];
            for (t, row) in close.iter().enumerate() {
                kernel.update(row, &mut out);
                for i in 0..n {
                    assert_eq!(out[i].is_nan(), expected[t][i].is_nan(), "case {case} t {t} i {i}");
                    if !out[i].is_nan() {
                        assert_eq!(out[i].to_bits(), expected[t][i].to_bits(), "case {case} t {t} i {i}");
                    }
                }
            }
        }
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
