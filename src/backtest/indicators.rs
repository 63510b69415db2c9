//! The causal indicators the engine needs, advanced one bar at a time.
//!
//! The backtester and the live runner feed the same [`IndicatorState`] bar by bar, so a live
//! decision uses exactly the numbers the backtest used at that bar. Nothing here is `T × N`: each
//! kernel keeps a small per-symbol state and the windows it needs (returns for the vol target and
//! the router, ADX for the rising test). The kernels ([`IndicatorKernels`]) depend on the bars
//! alone, so a backtest may run them on a second thread, some bars ahead, and replay their outputs
//! ([`IndicatorChunk`], [`IndicatorState::replay`]).

use ndarray::ArrayView2;

use crate::config::{Config, RegimeMode, ShortHistory};
use crate::model::BarRow;
use crate::signal::{finite, ColumnWindow, EmaSlope, Momentum, RollingStd, RowWindow, WilderAdx, WilderAtr};
use crate::timeframe::Timeframe;
use crate::universe::UniverseFilter;

/// The kernels of [`IndicatorState`]: per-symbol state advanced by the bars alone, nothing the
/// engine decides.
#[derive(Debug, Clone)]
pub struct IndicatorKernels {
    n_symbols: usize,
    momentum: Momentum,
    sigma: RollingStd,
    slope: Option<EmaSlope>,
    adx: Option<WilderAdx>,
    atr: Option<WilderAtr>,
    universe: UniverseFilter,
    /// The regime filter's rule when it is on (strategy.md §2.3).
    regime: Option<RegimeRule>,
}

/// The regime filter of strategy.md §2.3 on a symbol's EMA slope: `slope ≥ thr` (mode `up`) or
/// `|slope| ≥ thr`; a NaN slope (short history) passes or fails as configured.
#[derive(Debug, Clone, Copy)]
struct RegimeRule {
    threshold: f64,
    up_only: bool,
    pass_short_history: bool,
}

impl RegimeRule {
    #[inline]
    fn passes(&self, slope: f64) -> bool {
        let trending = if self.up_only { slope >= self.threshold } else { slope.abs() >= self.threshold };
        if slope.is_nan() {
            self.pass_short_history
        } else {
            trending
        }
    }
}

/// One bar's kernel outputs, each written whole by [`IndicatorKernels`] (what the slices held
/// before does not matter).
struct KernelOutputs<'a> {
    returns: &'a mut [f64],
    momentum: &'a mut [f64],
    sigma: &'a mut [f64],
    slope: Option<&'a mut [f64]>,
    adx: Option<&'a mut [f64]>,
    atr: Option<&'a mut [f64]>,
    universe: &'a mut [bool],
    candidate: &'a mut [bool],
}

impl IndicatorKernels {
    pub fn new(symbols: &[String], timeframe: Timeframe, cfg: &Config) -> Self {
        let s = &cfg.strategy;
        let n = symbols.len();
        let bars_per_day = timeframe.bars_per_day();
        Self {
            n_symbols: n,
            momentum: Momentum::new(n, &s.lookbacks, &s.lookback_weights, s.normalise_momentum),
            sigma: RollingStd::new(n, s.vol_lookback, s.vol_lookback / 2),
            slope: (s.regime_filter.enabled || s.router.enabled)
                .then(|| EmaSlope::new(n, s.regime_filter.ema_len, bars_per_day)),
            adx: s.adx_filter.enabled.then(|| WilderAdx::new(n, s.adx_filter.adx_len)),
            atr: cfg.risk.stops.enabled.then(|| WilderAtr::new(n, cfg.risk.stops.atr_len)),
            universe: UniverseFilter::new(symbols, bars_per_day, s.min_history(), &cfg.universe),
            regime: s.regime_filter.enabled.then(|| RegimeRule {
                threshold: s.regime_filter.slope_min_bps_per_day,
                up_only: s.regime_filter.mode == RegimeMode::Up,
                pass_short_history: s.regime_filter.short_history == ShortHistory::Pass,
            }),
        }
    }

    /// The outputs of the next bar into row `k` of `chunk` (see [`IndicatorChunk::reset_for`]).
    pub fn advance_into(&mut self, bar: &BarRow<'_>, chunk: &mut IndicatorChunk, k: usize) {
        self.advance(bar, chunk.row_mut(k));
    }

    fn advance(&mut self, bar: &BarRow<'_>, mut out: KernelOutputs<'_>) {
        self.momentum.update_with_returns(bar.close, out.momentum, out.returns);
        self.sigma.update(out.returns, out.sigma);
        if let (Some(kernel), Some(slope)) = (self.slope.as_mut(), out.slope.as_deref_mut()) {
            kernel.update(bar.close, slope);
        }
        if let (Some(kernel), Some(adx)) = (self.adx.as_mut(), out.adx) {
            kernel.update(bar.high, bar.low, bar.close, adx);
        }
        if let (Some(kernel), Some(atr)) = (self.atr.as_mut(), out.atr) {
            kernel.update(bar.high, bar.low, bar.close, atr);
        }
        self.universe.update(bar.close, bar.quote_volume, out.universe);
        let regime = self.regime.zip(out.slope.as_deref());
        mark_candidates(out.momentum, out.sigma, out.universe, regime, out.candidate);
    }

    /// Bytes of one row of an [`IndicatorChunk`].
    pub fn row_bytes(&self) -> usize {
        let columns = 3 + self.optional().iter().filter(|on| **on).count();
        self.n_symbols * (columns * std::mem::size_of::<f64>() + FLAGS * std::mem::size_of::<bool>())
    }

    /// Which optional outputs are computed: slope, ADX, ATR.
    fn optional(&self) -> [bool; 3] {
        [self.slope.is_some(), self.adx.is_some(), self.atr.is_some()]
    }
}

/// The candidates of strategy.md §2.3 (eligible but for the risk engine's holds and the ADX
/// filter, whose rising test looks back into the engine's ADX window): in the universe, with a
/// finite momentum, a finite positive sigma and, with the regime filter on, a slope that passes it.
/// They depend on the bars alone, so the indicator thread computes them and the engine's thread
/// only applies its holds. One branch-free pass (`&`, not `&&`): this runs for every symbol and bar.
fn mark_candidates(
    momentum: &[f64],
    sigma: &[f64],
    universe: &[bool],
    regime: Option<(RegimeRule, &[f64])>,
    candidate: &mut [bool],
) {
    let columns = candidate.iter_mut().zip(momentum).zip(sigma).zip(universe);
    let usable =
        |momentum: f64, sigma: f64, universe: bool| universe & finite(momentum) & finite(sigma) & (sigma > 0.0);
    if let Some((rule, slope)) = regime {
        for ((((candidate, momentum), sigma), universe), slope) in columns.zip(slope) {
            *candidate = usable(*momentum, *sigma, *universe) & rule.passes(*slope);
        }
    } else {
        for (((candidate, momentum), sigma), universe) in columns {
            *candidate = usable(*momentum, *sigma, *universe);
        }
    }
}

/// Flags per symbol in a row of an [`IndicatorChunk`]: universe, candidate.
const FLAGS: usize = 2;

/// The kernel outputs of consecutive bars, written by [`IndicatorKernels`] on one thread and
/// replayed into the engine's [`IndicatorState`] on another. A row holds each output for every
/// symbol in turn (returns, momentum, sigma, then slope, ADX and ATR when computed); the flags
/// (universe members, then candidates) are kept apart.
#[derive(Debug, Clone, Default)]
pub struct IndicatorChunk {
    n_symbols: usize,
    /// Slope, ADX, ATR present.
    optional: [bool; 3],
    values: Vec<f64>,
    /// [`FLAGS`] flags per symbol and row.
    flags: Vec<bool>,
    len: usize,
}

impl IndicatorChunk {
    /// Rows held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// This chunk's memory (a default chunk, or one of an earlier run, perhaps of other symbols or
    /// outputs) as an empty chunk with room for `rows` rows of `kernels`' outputs.
    pub fn reused_for(mut self, kernels: &IndicatorKernels, rows: usize) -> Self {
        (self.n_symbols, self.optional, self.len) = (kernels.n_symbols, kernels.optional(), 0);
        let (values, flags) = (rows * self.width(), rows * FLAGS * self.n_symbols);
        self.values.reserve_exact(values.saturating_sub(self.values.len()));
        self.flags.reserve_exact(flags.saturating_sub(self.flags.len()));
        self
    }

    /// `rows` rows for `kernels`' outputs, each to be written whole by
    /// [`IndicatorKernels::advance_into`] before it is read; the memory is kept.
    pub fn reset_for(&mut self, kernels: &IndicatorKernels, rows: usize) {
        self.n_symbols = kernels.n_symbols;
        self.optional = kernels.optional();
        self.len = rows;
        // Only room never used before is filled: the rows are overwritten anyway, and the vectors
        // are never shortened, so a chunk kept from run to run is filled once (a fill of every
        // chunk per run was ~4 % of a fixture backtest's samples).
        let (values, flags) = (rows * self.width(), rows * FLAGS * self.n_symbols);
        if self.values.len() < values {
            self.values.resize(values, f64::NAN);
        }
        if self.flags.len() < flags {
            self.flags.resize(flags, false);
        }
    }

    /// Values per row.
    fn width(&self) -> usize {
        (3 + self.optional.iter().filter(|on| **on).count()) * self.n_symbols
    }

    fn row_mut(&mut self, k: usize) -> KernelOutputs<'_> {
        let (n, width) = (self.n_symbols, self.width());
        let [slope, adx, atr] = self.optional;
        let mut columns = self.values[k * width..(k + 1) * width].chunks_exact_mut(n);
        let (universe, candidate) = self.flags[k * FLAGS * n..(k + 1) * FLAGS * n].split_at_mut(n);
        KernelOutputs {
            returns: columns.next().expect("returns"),
            momentum: columns.next().expect("momentum"),
            sigma: columns.next().expect("sigma"),
            slope: slope.then(|| columns.next().expect("slope")),
            adx: adx.then(|| columns.next().expect("adx")),
            atr: atr.then(|| columns.next().expect("atr")),
            universe,
            candidate,
        }
    }
}

/// Indicator values of the newest bar plus the short histories the engine looks back into.
///
/// The newest bar's values are a row of an [`IndicatorChunk`] the state holds: its own one-row
/// chunk when it computes them, or a chunk a second thread computed, taken whole
/// ([`IndicatorState::hold_rows`]) so that replaying a row copies nothing.
#[derive(Debug, Clone)]
pub struct IndicatorState {
    kernels: IndicatorKernels,
    rows: IndicatorChunk,
    /// The row of `rows` holding the newest bar.
    row: usize,
    /// Where each output starts in a row of `rows`: returns, momentum, sigma, slope, ADX, ATR.
    columns: RowColumns,
    /// Wilder ATR of bar t − 1 (next-open fills open stops with the decision bar's ATR): kept
    /// here when the row before is not in `rows`.
    prev_atr: Option<Vec<f64>>,
    /// Bar returns of the last `vol_target.lookback` bars, a missing return stored as 0 (what the
    /// vol target counts it as).
    recent_returns_or_zero: ColumnWindow,
    /// Bar returns of the last `router.corr_lookback` bars with NaN for missing ones (router only).
    recent_returns: Option<ColumnWindow>,
    adx_history: Option<RowWindow>,
    bars: usize,
}

/// How many rows ahead of the one replayed [`IndicatorState::replay`] prefetches.
const PREFETCH_ROWS_AHEAD: usize = 8;

/// A hint to load the cache line at `address` (no effect on any value).
#[inline(always)]
fn prefetch(address: *const i8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads no memory that the program sees and cannot fault, whatever the
    // address; SSE, which it needs, is part of every x86-64 target.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// The values of one output (starting at `start` in a row laid out as `columns`) in row `row`
/// of `rows`.
fn column_of<'a>(rows: &'a IndicatorChunk, columns: &RowColumns, row: usize, start: usize) -> &'a [f64] {
    let offset = row * columns.width + start;
    &rows.values[offset..offset + columns.n_symbols]
}

/// Offsets of the outputs in a row of an [`IndicatorChunk`] (see [`IndicatorChunk::row_mut`]).
#[derive(Debug, Clone, Copy)]
struct RowColumns {
    n_symbols: usize,
    width: usize,
    slope: Option<usize>,
    adx: Option<usize>,
    atr: Option<usize>,
}

impl RowColumns {
    fn of(n_symbols: usize, [slope, adx, atr]: [bool; 3]) -> Self {
        let mut next = 3 * n_symbols;
        let mut place = |on: bool| {
            on.then(|| {
                next += n_symbols;
                next - n_symbols
            })
        };
        let (slope, adx, atr) = (place(slope), place(adx), place(atr));
        Self { n_symbols, width: next, slope, adx, atr }
    }
}

impl IndicatorState {
    pub fn new(symbols: &[String], timeframe: Timeframe, cfg: &Config) -> Self {
        let s = &cfg.strategy;
        let n = symbols.len();
        let kernels = IndicatorKernels::new(symbols, timeframe, cfg);
        let mut rows = IndicatorChunk::default();
        // One row of NaN and no symbol in the universe until the first bar.
        rows.reset_for(&kernels, 1);
        let columns = RowColumns::of(n, kernels.optional());
        Self {
            prev_atr: columns.atr.map(|_| vec![f64::NAN; n]),
            kernels,
            rows,
            row: 0,
            columns,
            recent_returns_or_zero: ColumnWindow::new(n, cfg.sizing.vol_target.lookback),
            recent_returns: s.router.enabled.then(|| ColumnWindow::new(n, s.router.corr_lookback)),
            adx_history: (s.adx_filter.enabled && s.adx_filter.require_rising)
                .then(|| RowWindow::new(n, s.adx_filter.rising_bars + 1)),
            bars: 0,
        }
    }

    /// Advance to the next bar.
    pub fn update(&mut self, bar: &BarRow<'_>) {
        self.keep_prev_atr();
        if self.rows.len() != 1 {
            self.rows.reset_for(&self.kernels, 1);
        }
        self.row = 0;
        self.kernels.advance_into(bar, &mut self.rows, 0);
        self.push_windows();
        self.bars += 1;
    }

    /// Hold `chunk`, whose rows [`IndicatorState::replay`] replays next, and give back the rows
    /// held so far (their memory is for the next chunk).
    pub fn hold_rows(&mut self, chunk: IndicatorChunk) -> IndicatorChunk {
        debug_assert_eq!(
            (chunk.n_symbols, chunk.optional),
            (self.columns.n_symbols, self.kernels.optional()),
            "a chunk of another run"
        );
        self.keep_prev_atr();
        self.row = usize::MAX; // no row of the new chunk is the newest bar yet
        std::mem::replace(&mut self.rows, chunk)
    }

    /// After a replay, give back the chunk held, its newest row kept in a chunk of one row of this
    /// state's own: every value (the previous bar's ATR too) reads as before, and the chunk's
    /// memory can go to another run.
    pub fn release_rows(&mut self) -> IndicatorChunk {
        assert!(self.row < self.rows.len(), "a row was replayed");
        let mut own = IndicatorChunk::default();
        own.reset_for(&self.kernels, 1);
        let (n, width) = (self.columns.n_symbols, self.columns.width);
        own.values.copy_from_slice(&self.rows.values[self.row * width..(self.row + 1) * width]);
        own.flags.copy_from_slice(&self.rows.flags[self.row * FLAGS * n..(self.row + 1) * FLAGS * n]);
        if let (Some(prev), Some(atr), true) = (self.prev_atr.as_mut(), self.columns.atr, self.row > 0) {
            prev.copy_from_slice(column_of(&self.rows, &self.columns, self.row - 1, atr));
        }
        self.row = 0;
        std::mem::replace(&mut self.rows, own)
    }

    /// Advance to the next bar with row `k` of the chunk held ([`IndicatorState::hold_rows`]):
    /// the outputs that kernels of the same panel and config computed for it, advanced over the
    /// same bars. Every value, window and history ends as [`IndicatorState::update`] would leave
    /// it; this state's own kernels stay where they were.
    pub fn replay(&mut self, k: usize) {
        assert!(k < self.rows.len(), "row {k} of a chunk of {} rows", self.rows.len());
        debug_assert!(self.row == usize::MAX && k == 0 || self.row + 1 == k, "rows replayed in order");
        self.row = k;
        self.push_windows();
        self.bars += 1;
        self.prefetch_row(k + PREFETCH_ROWS_AHEAD);
    }

    /// Ask for row `k` of the chunk held to be brought into this core's cache, if there is one.
    /// The rows were written on the indicator thread's core: read cold, the loads of a bar's
    /// momentum, sigma, universe and ATR stalled the engine (~5 % of a backtest's wall time, found by
    /// interleaved runs with 2, 8 and 16 rows ahead; 8 was the best).
    fn prefetch_row(&self, k: usize) {
        if k >= self.rows.len() {
            return;
        }
        let (n, width) = (self.columns.n_symbols, self.columns.width);
        for line in self.rows.values[k * width..(k + 1) * width].chunks(64 / std::mem::size_of::<f64>()) {
            prefetch(line.as_ptr().cast());
        }
        for line in self.rows.flags[k * FLAGS * n..(k + 1) * FLAGS * n].chunks(64) {
            prefetch(line.as_ptr().cast());
        }
    }

    /// The ATR of the newest bar as the previous bar's, when the next bar's row is not right
    /// after it in `rows`.
    fn keep_prev_atr(&mut self) {
        if let (Some(prev), Some(atr)) = (self.prev_atr.as_mut(), self.columns.atr) {
            if self.row < self.rows.len() {
                prev.copy_from_slice(column_of(&self.rows, &self.columns, self.row, atr));
            }
        }
    }

    /// This state's kernels, advanced through every bar it computed, for another thread to go on
    /// with; `kernels` (of the same symbols and config) take their place, and this state replays
    /// rows from then on ([`IndicatorState::hold_rows`]).
    pub fn exchange_kernels(&mut self, kernels: IndicatorKernels) -> IndicatorKernels {
        debug_assert_eq!(kernels.optional(), self.kernels.optional(), "kernels of another run");
        std::mem::replace(&mut self.kernels, kernels)
    }

    /// Go on with `kernels`, advanced through the same bars as the rows replayed so far (on
    /// another thread), in place of this state's own, which stayed where they were.
    pub fn adopt_kernels(&mut self, kernels: IndicatorKernels) {
        debug_assert_eq!(kernels.optional(), self.kernels.optional(), "kernels of another run");
        self.kernels = kernels;
    }

    fn column(&self, start: usize) -> &[f64] {
        column_of(&self.rows, &self.columns, self.row, start)
    }

    /// Simple returns of the newest bar.
    pub fn returns(&self) -> &[f64] {
        self.column(0)
    }

    pub fn momentum(&self) -> &[f64] {
        self.column(self.columns.n_symbols)
    }

    pub fn sigma(&self) -> &[f64] {
        self.column(2 * self.columns.n_symbols)
    }

    /// EMA slope in bps/day (regime filter / router), when either is on.
    pub fn slope(&self) -> Option<&[f64]> {
        self.columns.slope.map(|start| self.column(start))
    }

    pub fn adx(&self) -> Option<&[f64]> {
        self.columns.adx.map(|start| self.column(start))
    }

    /// Wilder ATR of the newest bar, when stops are on.
    pub fn atr(&self) -> Option<&[f64]> {
        self.columns.atr.map(|start| self.column(start))
    }

    /// Wilder ATR of the bar before the newest (NaN before the second bar).
    pub fn prev_atr(&self) -> Option<&[f64]> {
        match (self.columns.atr, self.row) {
            (Some(start), row) if row > 0 && row < self.rows.len() => {
                Some(column_of(&self.rows, &self.columns, row - 1, start))
            }
            _ => self.prev_atr.as_deref(),
        }
    }

    /// In the universe and listed for at least `min_history` bars (strategy.md §1, §1b).
    pub fn universe(&self) -> &[bool] {
        let n = self.columns.n_symbols;
        &self.rows.flags[self.row * FLAGS * n..][..n]
    }

    /// The candidates of the newest bar: eligible but for the risk engine's holds and the ADX
    /// filter ([`mark_candidates`]).
    pub fn candidates(&self) -> &[bool] {
        let n = self.columns.n_symbols;
        &self.rows.flags[(self.row * FLAGS + 1) * n..][..n]
    }

    /// The windows the engine looks back into, after this bar's outputs.
    fn push_windows(&mut self) {
        let returns = column_of(&self.rows, &self.columns, self.row, 0);
        self.recent_returns_or_zero.push_mapped(returns, |r| if finite(r) { r } else { 0.0 });
        if let Some(window) = self.recent_returns.as_mut() {
            window.push(returns);
        }
        if let (Some(history), Some(start)) = (self.adx_history.as_mut(), self.columns.adx) {
            history.push(column_of(&self.rows, &self.columns, self.row, start));
        }
    }

    /// Bars seen so far.
    pub fn bars(&self) -> usize {
        self.bars
    }

    /// Simple returns of the last `rows` bars (fewer at the start), oldest first, NaN where missing;
    /// kept for the router's correlation window (`None` with the router off).
    pub fn recent_returns(&self, rows: usize) -> Option<ArrayView2<'_, f64>> {
        self.recent_returns.as_ref().map(|window| window.recent(rows))
    }

    /// Like [`IndicatorState::recent_returns`] with missing returns as 0, for the vol target (up to
    /// `vol_target.lookback` rows).
    pub fn recent_returns_or_zero(&self, rows: usize) -> ArrayView2<'_, f64> {
        self.recent_returns_or_zero.recent(rows)
    }

    /// ADX `bars_ago` bars back, when kept (the ADX filter's rising test) and that old.
    pub fn adx_ago(&self, bars_ago: usize) -> Option<&[f64]> {
        let history = self.adx_history.as_ref()?;
        (history.pushed() > bars_ago).then(|| history.ago(bars_ago))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::ema_slope_bps_per_day;

    /// Bars of `n` symbols for `t` hours: random walks (xorshift), with missing closes, a symbol
    /// that lists late and one whose price falls flat (zero sigma).
    fn bars(n: usize, t: usize) -> Vec<[Vec<f64>; 5]> {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut price = vec![100.0; n];
        (0..t)
            .map(|bar| {
                let mut close = vec![f64::NAN; n];
                for (i, c) in close.iter_mut().enumerate() {
                    price[i] *= 1.0 + 0.03 * (uniform() - 0.5);
                    let flat = i == 1 && bar > 40;
                    let listed = i != 2 || bar >= 25;
                    *c = if flat {
                        50.0
                    } else if listed && uniform() > 0.05 {
                        price[i]
                    } else {
                        f64::NAN
                    };
                }
                [close.clone(), close.clone(), close.clone(), close, vec![1e9; n]]
            })
            .collect()
    }

    /// Every bar's candidates are the universe's members with finite momentum and a finite
    /// positive sigma whose slope passes the regime filter as strategy.md §2.3 states it, under
    /// each mode and short-history rule, and without the filter.
    #[test]
    fn candidates_are_the_members_that_pass_the_filters_of_the_bars() {
        let (n, t) = (6, 160);
        let bars = bars(n, t);
        let symbols: Vec<String> = (0..n).map(|i| format!("S{i}USDT")).collect();
        let no_funding = (vec![0.0; n], vec![false; n]);
        for (enabled, mode, short_history) in [
            (true, "up", "fail"),
            (true, "abs", "pass"),
            (true, "directional", "fail"),
            (true, "up", "pass"),
            (false, "abs", "fail"),
        ] {
            let cfg = Config::default()
                .with_override_strings(&[
                    "strategy.lookbacks=[6]".into(),
                    "strategy.lookback_weights=[1.0]".into(),
                    "strategy.vol_lookback=12".into(),
                    "strategy.min_history_bars=20".into(),
                    "strategy.regime_filter.ema_len=8".into(),
                    "strategy.regime_filter.slope_min_bps_per_day=40".into(),
                    format!("strategy.regime_filter.enabled={enabled}"),
                    format!("strategy.regime_filter.mode={mode}"),
                    format!("strategy.regime_filter.short_history={short_history}"),
                    "universe.min_quote_volume_24h=0".into(),
                ])
                .expect("a valid config");
            let mut state = IndicatorState::new(&symbols, Timeframe::parse("1h").unwrap(), &cfg);
            let closes: Vec<Vec<f64>> = bars.iter().map(|bar| bar[3].clone()).collect();
            let mut counts = [0usize; 2];
            for (k, [open, high, low, close, volume]) in bars.iter().enumerate() {
                let bar = BarRow {
                    ts: k as i64 * 3_600_000,
                    open,
                    high,
                    low,
                    close,
                    quote_volume: volume,
                    funding_rate: &no_funding.0,
                    funding_event: &no_funding.1,
                    mark_close: None,
                };
                state.update(&bar);
                for i in 0..n {
                    let (momentum, sigma) = (state.momentum()[i], state.sigma()[i]);
                    // The slope recomputed from the closes so far, not read from the state.
                    let history: Vec<f64> = closes[..=k].iter().map(|row| row[i]).collect();
                    let slope =
                        *ema_slope_bps_per_day(ndarray::ArrayView2::from_shape((k + 1, 1), &history).unwrap(), 8, 24)
                            .last()
                            .unwrap();
                    let regime_ok = !enabled
                        || if slope.is_nan() {
                            short_history == "pass"
                        } else if mode == "up" {
                            slope >= 40.0
                        } else {
                            slope.abs() >= 40.0
                        };
                    let expected =
                        state.universe()[i] && momentum.is_finite() && sigma.is_finite() && sigma > 0.0 && regime_ok;
                    assert_eq!(
                        state.candidates()[i],
                        expected,
                        "{mode}/{short_history}/{enabled}: bar {k}, symbol {i}"
                    );
                    counts[usize::from(expected)] += 1;
                }
            }
            // Both outcomes occur, so the comparison above tested something either way.
            assert!(counts[0] > 0 && counts[1] > 0, "{mode}/{short_history}/{enabled}: {counts:?}");
        }
    }
}
