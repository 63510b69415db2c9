//! Validation of long-format bars (strategy.md §1): every finding names its symbol and ts.
//!
//! Errors (`load` refuses them unless told to drop the rows): duplicate `(symbol, ts)`, a ts off the
//! timeframe grid, `high < max(open, close)`, `low > min(open, close)`, a non-positive price, a
//! negative volume, a missing or non-finite value. Warnings (reported, never dropped): unsorted
//! input, gaps inside a symbol's range, spikes and zero-volume bars.
//!
//! A spike is a |log return| above `data.spike_mads` (8) × the rolling median |log return| of the
//! symbol's previous `data.spike_window` (500) returns (the median absolute deviation about zero:
//! hourly returns have a median of ~0), tested once 100 returns (or the whole window, if shorter)
//! are known. The median is kept on a histogram of 1/32-octave bins
//! (3 % resolution; the bin's upper edge is used, so the test never fires early), updated in O(1)
//! per bar; the median itself is walked to once per 32 bars, a lower bound on it clearing the bars
//! in between (`RollingAbsMedian::scan_spikes`): validation is one linear pass.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;

use super::panel::{Bars, BarsView, Panel};
use super::store::{sort_bars, take_rows};
use crate::error::{Error, Result};
use crate::timeframe::Timeframe;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub symbol: String,
    pub ts: i64,
    pub kind: &'static str,
    pub severity: Severity,
    pub detail: Detail,
    /// Row of the (sorted) bars the finding is about; errors drop this row with `on_invalid: drop`.
    pub row: Option<usize>,
}

/// What a finding says about its bar, as text when shown ([`std::fmt::Display`]). A spike keeps its
/// numbers and is formatted only when shown: a backtest counts the findings and shows one of each
/// kind, and real data has hundreds of spikes (707 on the fixture: their formatting was ~2 % of a
/// backtest from a DataFrame).
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    Text(String),
    /// `|log return| > mads × MAD` (the median |log return| of the window, its bin's upper edge).
    Spike {
        log_return: f64,
        mads: f64,
        mad: f64,
    },
}

impl From<&str> for Detail {
    fn from(text: &str) -> Self {
        Detail::Text(text.to_string())
    }
}

impl From<String> for Detail {
    fn from(text: String) -> Self {
        Detail::Text(text)
    }
}

impl std::fmt::Display for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Detail::Text(text) => f.write_str(text),
            Detail::Spike { log_return, mads, mad } => {
                write!(f, "|log return| {log_return:.4} > {mads} × MAD {mad:.6}")
            }
        }
    }
}

/// Returns needed before the spike test starts (fewer when the window itself is shorter).
const SPIKE_MIN_HISTORY: usize = 100;

/// The spike detector's thresholds (`data.spike_mads`, `data.spike_window`; ranges checked by
/// `Config::validate`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpikeRule {
    /// A spike is a |log return| above `mads` × the rolling median |log return|.
    pub mads: f64,
    /// Returns in the rolling median.
    pub window: usize,
}

impl Default for SpikeRule {
    fn default() -> Self {
        Self { mads: 8.0, window: 500 }
    }
}

impl SpikeRule {
    fn min_history(&self) -> usize {
        SPIKE_MIN_HISTORY.min(self.window)
    }

    /// Per median bin, the largest move that is no spike: ln(1 + m) > k ln(1 + mad) ⇔
    /// m > (1 + mad)^k − 1, with mad the bin's upper edge. An integer k uses `powi`, as the fixed
    /// 8 always did (so the default findings are those of before).
    fn limits(&self) -> Vec<f64> {
        let k = self.mads;
        let power = |base: f64| if k.fract() == 0.0 && k.abs() < 1024.0 { base.powi(k as i32) } else { base.powf(k) };
        (0..BIN_COUNT).map(|bin| power(1.0 + RollingAbsMedian::upper_edge(bin)) - 1.0).collect()
    }
}

/// All findings for `bars`, examined in (symbol, ts) order; rows in findings refer to that sorted
/// order (see [`clean_bars`]).
pub fn validate_bars(bars: Bars, timeframe: Timeframe, spike: SpikeRule) -> Vec<Finding> {
    let mut findings = unsorted_findings(bars.view());
    findings.extend(validate_sorted(sort_bars(bars).view(), timeframe, spike));
    findings.sort_by(|a, b| a.symbol.cmp(&b.symbol).then(a.ts.cmp(&b.ts)));
    findings
}

/// Findings of bars in canonical form (see [`BarsView::is_canonical`]), in (symbol, ts) order.
pub fn validate_canonical(bars: BarsView<'_>, timeframe: Timeframe, spike: SpikeRule) -> Vec<Finding> {
    debug_assert!(bars.is_canonical());
    let mut findings = validate_sorted(bars, timeframe, spike);
    findings.sort_by(|a, b| a.symbol.cmp(&b.symbol).then(a.ts.cmp(&b.ts)));
    findings
}

/// [`validate_canonical`] without threads of its own: all at once on the calling thread
/// ([`CanonicalValidation::finish`], beside other work where a second thread would only take turns
/// with it), or a symbol at a time ([`CanonicalValidation::step`]) by threads that validate between
/// pieces of other work (the streamed pivot while the engine catches up, the engine while it waits
/// for the pivot): each step claims the next symbol, so two threads can take steps at once; the
/// findings come out in the same order whoever took which step.
pub struct CanonicalValidation<'v> {
    bars: BarsView<'v>,
    timeframe: Timeframe,
    rule: SpikeRule,
    limits: Vec<f64>,
    /// The first row of each symbol (codes ascend by one from 0), then the row count.
    starts: Vec<usize>,
    /// The next symbol to validate.
    next_symbol: AtomicUsize,
    /// The rows are known to pass the value rules, to lie on the grid and to hold no duplicate
    /// ([`CanonicalValidation::behind_pivot`]).
    pivot_checked: bool,
    /// Scratch buffers of the steps not running, and the findings so far.
    scratch: Mutex<Vec<SymbolScratch>>,
    findings: Mutex<Vec<Finding>>,
}

impl<'v> CanonicalValidation<'v> {
    pub fn new(bars: BarsView<'v>, timeframe: Timeframe, spike: SpikeRule) -> Self {
        debug_assert!(bars.is_canonical());
        CanonicalValidation::of(bars, timeframe, spike, false)
    }

    fn of(bars: BarsView<'v>, timeframe: Timeframe, spike: SpikeRule, pivot_checked: bool) -> Self {
        let starts = super::panel::canonical_starts(bars);
        CanonicalValidation {
            bars,
            timeframe,
            rule: spike,
            limits: spike.limits(),
            starts,
            pivot_checked,
            next_symbol: AtomicUsize::new(0),
            scratch: Mutex::default(),
            findings: Mutex::default(),
        }
    }

    /// The validation of bars that a pivot checks ([`error_free_panel`], or the streamed pivot as
    /// it goes, `Panel::stream_canonical`: every row passes the value rules, lies on a grid that
    /// starts on a multiple of the timeframe and is no duplicate, each after the one before; else
    /// these findings are dropped; so the codes only need be canonical here). Its findings are
    /// those of [`CanonicalValidation::new`] for such bars, without reading the rows again for what the
    /// pivot checks: a symbol's rows are then consecutive bars iff they span `len - 1` steps, and of
    /// such a symbol only the closes and volumes are read (of six columns and the times; at
    /// 200 × 43 800 the streamed run took 252 ms instead of 277). Meaningless for bars the pivot
    /// refuses.
    pub fn behind_pivot(bars: BarsView<'v>, timeframe: Timeframe, spike: SpikeRule) -> Self {
        debug_assert!(bars.codes_are_canonical());
        CanonicalValidation::of(bars, timeframe, spike, true)
    }

    /// Validate the next symbol's rows; false when every symbol was claimed before the call.
    pub fn step(&self) -> bool {
        let code = self.next_symbol.fetch_add(1, Ordering::Relaxed);
        if code + 1 >= self.starts.len() {
            return false;
        }
        let (rows, mut found) = (self.starts[code]..self.starts[code + 1], Vec::new());
        if rows.is_empty() {
            return true; // not canonical (every name has rows), but nothing to find either
        }
        let mut scratch = self.scratch.lock().expect("no step panicked").pop().unwrap_or_default();
        let spike_test = SpikeTest { rule: self.rule, limits: &self.limits };
        let clean = if self.pivot_checked {
            let span = self.bars.ts[rows.end - 1] - self.bars.ts[rows.start];
            span == (rows.len() as i64 - 1) * self.timeframe.ms
        } else {
            rows_are_clean(self.bars, rows.clone(), self.timeframe)
        };
        validate_symbol(self.bars, rows, self.timeframe, clean, &spike_test, &mut scratch, &mut found);
        self.findings.lock().expect("no step panicked").append(&mut found);
        self.scratch.lock().expect("no step panicked").push(scratch);
        true
    }

    /// Every finding, symbols not yet validated validated first, ordered by symbol and time.
    pub fn finish(self) -> Vec<Finding> {
        while self.step() {}
        let mut findings = self.findings.into_inner().expect("no step panicked");
        findings.sort_by(|a, b| a.symbol.cmp(&b.symbol).then(a.ts.cmp(&b.ts)));
        findings
    }
}

/// The panel of canonical bars in which [`validate_canonical`] would find no error (warnings
/// aside), or `None`: every row passes [`bar_error`]'s value rules (counted by the pivot while it
/// fills the quote volume, on the second core: [`Panel::checked_canonical_view`]), the grid starts
/// on a multiple of the timeframe and the pivot, which refuses a row off the grid or a second row
/// for a bar, succeeds. A caller can then run the engine while the warnings are still being found.
pub fn error_free_panel(bars: BarsView<'_>, timeframe: Timeframe) -> Option<Panel> {
    debug_assert!(bars.is_canonical());
    let (panel, invalid_rows) = Panel::checked_canonical_view(bars, timeframe).ok()?;
    (invalid_rows == 0 && panel.ts.first()?.rem_euclid(timeframe.ms) == 0).then_some(panel)
}

/// Whether every row in `rows` passes [`bar_error`]'s value rules.
fn bar_values_are_valid(bars: BarsView<'_>, rows: std::ops::Range<usize>) -> bool {
    invalid_rows(bars, rows) == 0
}

/// How many rows in `rows` fail [`bar_error`]'s value rules. Finite and positive prices follow from
/// `open, close, low > 0`, `low ≤ min(open, close)`, `max(open, close) ≤ high < ∞` (NaN fails
/// every comparison); the failures are counted rather than and-ed so that the loop vectorises.
pub(crate) fn invalid_rows(bars: BarsView<'_>, rows: std::ops::Range<usize>) -> usize {
    let (open, high, low, close, volume) = (
        &bars.open[rows.clone()],
        &bars.high[rows.clone()],
        &bars.low[rows.clone()],
        &bars.close[rows.clone()],
        &bars.volume[rows.clone()],
    );
    let mut invalid = 0usize;
    for row in 0..rows.len() {
        let (o, h, l, c, v) = (open[row], high[row], low[row], close[row], volume[row]);
        let valid = (o > 0.0)
            & (c > 0.0)
            & (h >= o)
            & (h >= c)
            & (h < f64::INFINITY)
            & (l > 0.0)
            & (l <= o)
            & (l <= c)
            & (0.0..f64::INFINITY).contains(&v);
        invalid += usize::from(!valid);
    }
    invalid
}

/// One "unsorted" warning per symbol whose ts go backwards in the input order.
fn unsorted_findings(bars: BarsView<'_>) -> Vec<Finding> {
    let mut rank: Vec<usize> = (0..bars.names.len()).collect();
    rank.sort_unstable_by(|&a, &b| bars.names[a].cmp(&bars.names[b]));
    let mut order = vec![0usize; rank.len()];
    for (position, &code) in rank.iter().enumerate() {
        order[code] = position;
    }
    let key = |row: usize| (order[bars.symbol[row] as usize], bars.ts[row]);
    if (1..bars.len()).all(|r| key(r - 1) <= key(r)) {
        return Vec::new();
    }
    let mut findings = Vec::new();
    let mut last_seen: Vec<Option<i64>> = vec![None; bars.names.len()];
    let mut reported = vec![false; bars.names.len()];
    for row in 0..bars.len() {
        let (code, ts) = (bars.symbol[row] as usize, bars.ts[row]);
        if let Some(prev) = last_seen[code].replace(ts) {
            if ts < prev && !reported[code] {
                reported[code] = true;
                let detail = format!("ts {ts} comes after {prev}");
                findings.push(finding(&bars.names[code], ts, "unsorted", Severity::Warning, detail, None));
            }
        }
    }
    findings
}

fn finding(
    symbol: &str,
    ts: i64,
    kind: &'static str,
    severity: Severity,
    detail: impl Into<Detail>,
    row: Option<usize>,
) -> Finding {
    Finding { symbol: symbol.to_string(), ts, kind, severity, detail: detail.into(), row }
}

/// The first error of one bar, if any: (kind, detail).
/// `follows_valid`: the row is one step after a valid row of its symbol, hence on the grid (the
/// common case, which spares a division).
fn bar_error(
    bars: BarsView<'_>,
    row: usize,
    timeframe: Timeframe,
    follows_valid: bool,
) -> Option<(&'static str, String)> {
    let ts = bars.ts[row];
    let (o, h, l, c, v) = (bars.open[row], bars.high[row], bars.low[row], bars.close[row], bars.volume[row]);
    if !follows_valid && ts.rem_euclid(timeframe.ms) != 0 {
        return Some((
            "non_grid_ts",
            format!("ts {ts} is not a multiple of {} ms ({})", timeframe.ms, timeframe.label()),
        ));
    }
    if ![o, h, l, c, v].iter().all(|x| x.is_finite()) {
        return Some(("non_finite", format!("open {o}, high {h}, low {l}, close {c}, volume {v}")));
    }
    if o <= 0.0 || h <= 0.0 || l <= 0.0 || c <= 0.0 {
        return Some(("non_positive_price", format!("open {o}, high {h}, low {l}, close {c}")));
    }
    if v < 0.0 {
        return Some(("negative_volume", format!("volume {v}")));
    }
    if h < o.max(c) {
        return Some(("high_below_open_close", format!("high {h} < max(open {o}, close {c})")));
    }
    if l > o.min(c) {
        return Some(("low_above_open_close", format!("low {l} > min(open {o}, close {c})")));
    }
    None
}

fn validate_sorted(bars: BarsView<'_>, timeframe: Timeframe, spike: SpikeRule) -> Vec<Finding> {
    let mut ranges = Vec::new();
    let mut start = 0;
    while start < bars.len() {
        let code = bars.symbol[start];
        let end = start + bars.symbol[start..].iter().take_while(|&&c| c == code).count();
        ranges.push(start..end);
        start = end;
    }
    // Symbols are independent: validated in parallel, findings kept in symbol order.
    let groups: Vec<&[std::ops::Range<usize>]> = ranges.chunks(ranges.len().div_ceil(8).max(1)).collect();
    let limits = spike.limits();
    let spike_test = SpikeTest { rule: spike, limits: &limits };
    let per_group = crate::threads::map_ordered(&groups, bars.len(), |group| {
        let mut scratch = SymbolScratch::default();
        let mut findings = Vec::new();
        for rows in group.iter() {
            let clean = rows_are_clean(bars, rows.clone(), timeframe);
            validate_symbol(bars, rows.clone(), timeframe, clean, &spike_test, &mut scratch, &mut findings);
        }
        findings
    });
    per_group.into_iter().flatten().collect()
}

/// The spike rule with its per-bin limits, computed once per validation.
struct SpikeTest<'a> {
    rule: SpikeRule,
    limits: &'a [f64],
}

/// Buffers reused from one symbol to the next.
#[derive(Default)]
struct SymbolScratch {
    valid: Vec<usize>,
    moves: Vec<f64>,
    bins: Vec<u16>,
    scale: Option<RollingAbsMedian>,
}

/// The findings of one symbol's rows, in passes: row errors, then over the valid rows gaps, then
/// the relative moves between consecutive valid closes (independent divisions, vectorised), then
/// the spike test against the rolling scale (a short chain per row: a table lookup and a push).
/// `clean`: the caller found every row valid and one step after the one before ([`rows_are_clean`]).
fn validate_symbol(
    bars: BarsView<'_>,
    rows: std::ops::Range<usize>,
    timeframe: Timeframe,
    clean: bool,
    spike: &SpikeTest<'_>,
    scratch: &mut SymbolScratch,
    findings: &mut Vec<Finding>,
) {
    let step = timeframe.ms;
    let symbol = bars.symbol_of(rows.start);
    let valid = &mut scratch.valid;
    valid.clear();
    if clean {
        // The common case, tested branch-free over the whole symbol: every row valid, one step
        // after the one before (no duplicates, no gaps); only zero volumes are left to report.
        // The valid rows are then `rows` itself, not listed (8 bytes a row written and read back).
        let volume = &bars.volume[rows.clone()];
        for row in (0..volume.len()).filter(|&k| volume[k] == 0.0).map(|k| rows.start + k) {
            findings.push(finding(symbol, bars.ts[row], "zero_volume", Severity::Warning, "volume 0", Some(row)));
        }
    } else {
        row_findings(bars, rows.clone(), timeframe, symbol, valid, findings);
    }
    for pair in valid.windows(2).filter(|_| !clean) {
        let (prev, ts) = (bars.ts[pair[0]], bars.ts[pair[1]]);
        if prev + step != ts {
            let detail = format!("{} missing bar(s) before ts {ts}", (ts - prev) / step - 1);
            findings.push(finding(symbol, prev + step, "gap", Severity::Warning, detail, None));
        }
    }
    // |log return| = ln(1 + move) with move = max/min − 1 ≥ 0: the scale is kept on the moves (same
    // order, same median), so no logarithm is taken unless a bar is a spike.
    let (moves, bins) = (&mut scratch.moves, &mut scratch.bins);
    moves.clear();
    // Every row valid: the moves of consecutive rows, and the row of move k is `rows.start + k + 1`.
    let contiguous = clean || valid.len() == rows.len();
    if contiguous {
        let close = &bars.close[rows.clone()];
        moves.extend(close.windows(2).map(|w| (w[0].max(w[1]) - w[0].min(w[1])) / w[0].min(w[1])));
    } else {
        moves.extend(valid.windows(2).map(|w| {
            let (before, after) = (bars.close[w[0]], bars.close[w[1]]);
            (before.max(after) - before.min(after)) / before.min(after)
        }));
    }
    bins.clear();
    bins.extend(moves.iter().map(|&m| RollingAbsMedian::bin(m) as u16));
    let scale = scratch.scale.get_or_insert_with(|| RollingAbsMedian::new(spike.rule.window));
    scale.clear();
    let (limits, min_history, mads) = (spike.limits, spike.rule.min_history(), spike.rule.mads);
    scale.scan_spikes(moves, bins, limits, min_history, |k, median_bin| {
        let row = if contiguous { rows.start + k + 1 } else { valid[k + 1] };
        let mad = RollingAbsMedian::upper_edge(median_bin).ln_1p();
        let detail = Detail::Spike { log_return: moves[k].ln_1p(), mads, mad };
        findings.push(finding(symbol, bars.ts[row], "spike", Severity::Warning, detail, Some(row)));
    });
}

/// The row-by-row checks of one symbol: its error findings and zero-volume warnings into
/// `findings`, its valid rows into `valid`.
fn row_findings(
    bars: BarsView<'_>,
    rows: std::ops::Range<usize>,
    timeframe: Timeframe,
    symbol: &str,
    valid: &mut Vec<usize>,
    findings: &mut Vec<Finding>,
) {
    let step = timeframe.ms;
    for row in rows.clone() {
        let ts = bars.ts[row];
        let error = if row > rows.start && bars.ts[row - 1] == ts {
            Some(("duplicate", format!("second row for ts {ts}")))
        } else {
            let follows_valid = valid.last().is_some_and(|&prev| bars.ts[prev] + step == ts);
            bar_error(bars, row, timeframe, follows_valid)
        };
        match error {
            Some((kind, detail)) => findings.push(finding(symbol, ts, kind, Severity::Error, detail, Some(row))),
            None => valid.push(row),
        }
        if bars.volume[row] == 0.0 && valid.last() == Some(&row) {
            findings.push(finding(symbol, ts, "zero_volume", Severity::Warning, "volume 0", Some(row)));
        }
    }
}

/// Whether every row of one symbol passes [`bar_error`] and follows the one before by one step (so
/// none is a duplicate or after a gap), and the first is on the grid: one branch-free pass (`&`, not
/// `&&`) that vectorises, for the common case of clean data.
fn rows_are_clean(bars: BarsView<'_>, rows: std::ops::Range<usize>, timeframe: Timeframe) -> bool {
    let step = timeframe.ms;
    let first_on_grid = bars.ts[rows.start].rem_euclid(step) == 0;
    let ts = &bars.ts[rows.clone()];
    let consecutive = ts.windows(2).fold(true, |ok, pair| ok & (pair[0] + step == pair[1]));
    first_on_grid & consecutive & bar_values_are_valid(bars, rows)
}

/// Rolling median of non-negative values over the last `window` pushes, on a histogram of
/// 1/32-octave bins: a bin is the top 16 bits of the f64 (11 exponent + 5 mantissa bits), which
/// orders like the values. O(1) per push (the median moves by a few bins per step).
struct RollingAbsMedian {
    counts: Vec<u16>,
    /// Bins of the values in the window, oldest first (ring).
    ring: Vec<u16>,
    head: usize,
    len: usize,
    /// Bin holding the value of rank `len / 2`, and the number of values in lower bins.
    median_bin: usize,
    below: usize,
}

/// Bins cover 2^-40 … 2^7 (|log return| of 1e-12 … 128); values outside go to the end bins.
const BIN_FIRST_KEY: u64 = (1023 - 40) << 5;
const BIN_COUNT: usize = 47 << 5;
/// Pushes between two walks to the median in [`RollingAbsMedian::scan_spikes`].
const SPIKE_SCAN_BLOCK: usize = 32;

impl RollingAbsMedian {
    fn new(window: usize) -> Self {
        Self { counts: vec![0; BIN_COUNT], ring: vec![0; window], head: 0, len: 0, median_bin: 0, below: 0 }
    }

    fn clear(&mut self) {
        self.counts.fill(0);
        (self.head, self.len, self.median_bin, self.below) = (0, 0, 0, 0);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    fn bin(value: f64) -> usize {
        let key = value.abs().to_bits() >> 47;
        (key.saturating_sub(BIN_FIRST_KEY) as usize).min(BIN_COUNT - 1)
    }

    #[cfg(test)]
    fn push(&mut self, value: f64) {
        self.push_bin(Self::bin(value));
    }

    #[cfg(test)]
    fn push_bin(&mut self, bin: usize) {
        self.push_unsettled(bin);
        (self.median_bin, self.below) = self.median_now();
    }

    /// Add `bin` (dropping the oldest value of a full window) without moving the median:
    /// `median_bin` stays where it was and `below` counts the values under it, so that the
    /// median can be found from there ([`RollingAbsMedian::median_now`]).
    fn push_unsettled(&mut self, bin: usize) {
        let window = self.ring.len();
        if self.len == window {
            let old = self.ring[self.head] as usize;
            self.counts[old] -= 1;
            self.below -= usize::from(old < self.median_bin);
            self.len -= 1;
        }
        self.ring[self.head] = bin as u16;
        self.head = if self.head + 1 == window { 0 } else { self.head + 1 };
        self.counts[bin] += 1;
        self.below += usize::from(bin < self.median_bin);
        self.len += 1;
    }

    /// The bin holding the value of rank `len / 2` and the number of values below it, walked to
    /// from `median_bin`.
    fn median_now(&self) -> (usize, usize) {
        self.bin_of_rank(self.len / 2)
    }

    /// The bin holding the value of rank `rank` (0 = the smallest) and the number of values in lower
    /// bins, walked to from `median_bin`.
    fn bin_of_rank(&self, rank: usize) -> (usize, usize) {
        let (mut bin, mut below) = (self.median_bin, self.below);
        if self.len == 0 {
            return (bin, below); // no value to walk to
        }
        while below > rank {
            bin -= 1;
            below -= self.counts[bin] as usize;
        }
        while below + self.counts[bin] as usize <= rank && bin + 1 < BIN_COUNT {
            below += self.counts[bin] as usize;
            bin += 1;
        }
        (bin, below)
    }

    /// Push `bins` in order and call `on_spike(k, median_bin)` for every move `moves[k]` (of bin
    /// `bins[k]`) above `limits` at the median of the values pushed before it, once `min_history`
    /// values are in the window: the spike test of [`validate_symbol`].
    ///
    /// The median is walked to once per [`SPIKE_SCAN_BLOCK`] pushes, not at every push (the walk's
    /// data-dependent loops were most of the validation's time). Within a block of B pushes the
    /// median's rank r' and the window differ from the block start's by at most B values added
    /// and as many dropped, so the median is at least the start's value of rank r − B (when r ≥ B;
    /// a shorter window has no bound, every move is tested against the exact median): a move at
    /// or below the limit of that bin is no spike, and only a move above it (rare) walks to the
    /// exact median. The findings are those of a walk at every push.
    fn scan_spikes(
        &mut self,
        moves: &[f64],
        bins: &[u16],
        limits: &[f64],
        min_history: usize,
        mut on_spike: impl FnMut(usize, usize),
    ) {
        for (block, (block_moves, block_bins)) in
            moves.chunks(SPIKE_SCAN_BLOCK).zip(bins.chunks(SPIKE_SCAN_BLOCK)).enumerate()
        {
            (self.median_bin, self.below) = self.median_now();
            // Without B values below the median, a block's pushes can replace all of them: no bound.
            let no_spike_up_to = match (self.len / 2).checked_sub(SPIKE_SCAN_BLOCK) {
                Some(floor_rank) => limits[self.bin_of_rank(floor_rank).0],
                None => f64::NEG_INFINITY,
            };
            for (j, (&relative_move, &bin)) in block_moves.iter().zip(block_bins).enumerate() {
                if relative_move > no_spike_up_to && self.len >= min_history && relative_move != 0.0 {
                    let (median_bin, _) = self.median_now();
                    if relative_move > limits[median_bin] {
                        on_spike(block * SPIKE_SCAN_BLOCK + j, median_bin);
                    }
                }
                self.push_unsettled(bin as usize);
            }
        }
        (self.median_bin, self.below) = self.median_now();
    }

    /// The upper edge of the median's bin (within 3.2 % above the median).
    #[cfg(test)]
    fn median_upper_bound(&self) -> f64 {
        Self::upper_edge(self.median_bin)
    }

    fn upper_edge(bin: usize) -> f64 {
        f64::from_bits((BIN_FIRST_KEY + bin as u64 + 1) << 47)
    }
}

/// Sort bars into canonical form and apply the validation policy: with errors, refuse (default)
/// or drop the offending rows (`drop_invalid`; the first of duplicate rows is kept).
pub fn clean_bars(
    bars: Bars,
    timeframe: Timeframe,
    spike: SpikeRule,
    drop_invalid: bool,
) -> Result<(Bars, Vec<Finding>)> {
    let mut findings = unsorted_findings(bars.view());
    let sorted = sort_bars(bars);
    findings.extend(validate_sorted(sorted.view(), timeframe, spike));
    findings.sort_by(|a, b| a.symbol.cmp(&b.symbol).then(a.ts.cmp(&b.ts)));
    let errors: Vec<&Finding> = findings.iter().filter(|f| f.severity == Severity::Error).collect();
    if errors.is_empty() {
        return Ok((sorted, findings));
    }
    if !drop_invalid {
        let first = errors[0];
        return Err(Error::data(format!(
            "{} validation error(s) in the bars; first: {} at ts {}: {} ({}); pass on_invalid=drop to drop the offending rows",
            errors.len(),
            first.symbol,
            first.ts,
            first.kind,
            first.detail
        )));
    }
    let mut keep = vec![true; sorted.len()];
    for error in errors {
        if let Some(row) = error.row {
            keep[row] = false;
        }
    }
    let rows: Vec<usize> = (0..sorted.len()).filter(|&r| keep[r]).collect();
    Ok((take_rows(&sorted, &rows), findings))
}

/// Findings as a record batch: `symbol, ts, kind, severity, detail`.
pub fn findings_to_batch(findings: &[Finding]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(findings.iter().map(|f| f.symbol.as_str()))),
        Arc::new(TimestampMillisecondArray::from_iter_values(findings.iter().map(|f| f.ts)).with_timezone("UTC")),
        Arc::new(StringArray::from_iter_values(findings.iter().map(|f| f.kind))),
        Arc::new(StringArray::from_iter_values(findings.iter().map(|f| f.severity.as_str()))),
        Arc::new(StringArray::from_iter_values(findings.iter().map(|f| f.detail.to_string()))),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("columns match the schema")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// The branch-free test of a symbol's rows agrees with the row-by-row checks: clean exactly
        /// when those find no error, every row valid and no gap.
        #[test]
        fn the_clean_fast_path_agrees_with_the_row_checks(
            defects in proptest::collection::vec((0usize..40, 0u8..9), 0..3),
            n in 1usize..40,
            off_grid_start in proptest::bool::weighted(0.1),
        ) {
            use crate::data::Bars;
            let step = 3_600_000i64;
            let start = 1_748_736_000_000 + if off_grid_start { 60_000 } else { 0 };
            let mut bars = Bars::default();
            for t in 0..n {
                let price = 100.0 + t as f64;
                bars.push("AUSDT", start + t as i64 * step, price, price + 1.0, price - 1.0, price + 0.5, 5.0, f64::NAN);
            }
            for &(row, kind) in &defects {
                let row = row % n;
                match kind {
                    0 => bars.open[row] = f64::NAN,
                    1 => bars.high[row] = f64::INFINITY,
                    2 => bars.low[row] = -1.0,
                    3 => bars.volume[row] = -2.0,
                    4 => bars.high[row] = bars.open[row] - 5.0,
                    5 => bars.low[row] = bars.close[row] + 5.0,
                    6 => bars.volume[row] = 0.0,
                    7 if row > 0 => bars.ts[row] = bars.ts[row - 1],
                    _ => bars.ts[row..].iter_mut().for_each(|ts| *ts += step),
                }
            }
            let timeframe = crate::Timeframe::parse("1h").unwrap();
            let (mut valid, mut findings) = (Vec::new(), Vec::new());
            super::row_findings(bars.view(), 0..n, timeframe, "AUSDT", &mut valid, &mut findings);
            let errors = findings.iter().any(|f| f.severity == super::Severity::Error);
            let gaps = valid.windows(2).any(|w| bars.ts[w[0]] + step != bars.ts[w[1]]);
            let clean = super::rows_are_clean(bars.view(), 0..n, timeframe);
            prop_assert_eq!(clean, !errors && valid.len() == n && !gaps, "{:?}", findings);
        }
    }

    proptest! {
        // Each defect kind is drawn rarely: enough cases that every rule's failure is seen.
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        /// The error-free test (value rules, then the pivot) says "error-free" exactly when the
        /// full validation (also when run a symbol at a time) finds no error: two symbols, each with a few defects of every kind (gaps and zero volumes are
        /// warnings, so they keep the bars error-free).
        #[test]
        fn the_error_free_test_agrees_with_the_validation(
            defects in proptest::collection::vec((0usize..80, 0u8..11), 0..4),
            lengths in (1usize..40, 1usize..40),
            offsets in (prop_oneof![Just(0i64), Just(60_000i64)], prop_oneof![Just(0i64), Just(60_000i64)]),
        ) {
            use crate::data::Bars;
            let step = 3_600_000i64;
            let mut bars = Bars::default();
            for (symbol, n, start) in [("AUSDT", lengths.0, 1_748_736_000_000 + offsets.0), ("BUSDT", lengths.1, 1_748_739_600_000 + offsets.1)] {
                for t in 0..n {
                    // Closes above and below the open, so either of high ≥ max(open, close) can fail.
                    let price = 100.0 + t as f64;
                    let close = if t % 2 == 0 { price + 0.5 } else { price - 0.5 };
                    bars.push(symbol, start + t as i64 * step, price, price + 1.0, price - 1.0, close, 5.0, f64::NAN);
                }
            }
            let n = bars.len();
            for &(row, kind) in &defects {
                let row = row % n;
                let same_symbol_before = row > 0 && bars.symbol[row - 1] == bars.symbol[row];
                let symbol_end = (row..n).find(|&r| bars.symbol[r] != bars.symbol[row]).unwrap_or(n);
                match kind {
                    0 => bars.open[row] = f64::NAN,
                    1 => bars.high[row] = f64::INFINITY,
                    2 => bars.low[row] = -1.0,
                    3 => bars.volume[row] = if row % 2 == 0 { -2.0 } else { f64::INFINITY },
                    4 => bars.high[row] = (bars.open[row] + bars.close[row]) / 2.0,
                    5 => bars.low[row] = (bars.open[row] + bars.close[row]) / 2.0,
                    6 => bars.volume[row] = 0.0,
                    7 if same_symbol_before => bars.ts[row] = bars.ts[row - 1],
                    8 => bars.ts[row..symbol_end].iter_mut().for_each(|ts| *ts += 60_000),
                    9 => bars.close[row] *= 40.0,
                    _ => bars.ts[row..symbol_end].iter_mut().for_each(|ts| *ts += 2 * step),
                }
            }
            prop_assume!(bars.view().is_canonical());
            let timeframe = crate::Timeframe::parse("1h").unwrap();
            let rule = SpikeRule { mads: 8.0, window: 10 };
            let findings = validate_canonical(bars.view(), timeframe, rule);
            // A symbol at a time (the streamed pivot's way), with the same findings in the same order.
            let stepped = CanonicalValidation::new(bars.view(), timeframe, rule);
            prop_assert!(stepped.step());
            prop_assert_eq!(&stepped.finish(), &findings);
            // Steps taken by two threads at once (the pivot's and the engine's) find the same.
            let shared = CanonicalValidation::new(bars.view(), timeframe, rule);
            std::thread::scope(|scope| {
                let helper = scope.spawn(|| while shared.step() {});
                while shared.step() {}
                helper.join().expect("the helper validated");
            });
            prop_assert_eq!(&shared.finish(), &findings);
            let errors = findings.iter().any(|f| f.severity == Severity::Error);
            let pivot_accepts = error_free_panel(bars.view(), timeframe).is_some();
            prop_assert_eq!(pivot_accepts, !errors, "{:?}", findings);
            // Behind the streamed pivot (bars it accepts), the same findings from fewer columns.
            if pivot_accepts {
                let behind = CanonicalValidation::behind_pivot(bars.view(), timeframe, rule);
                prop_assert_eq!(&behind.finish(), &findings);
            }
        }
    }

    use super::*;

    /// The value of rank `len / 2` of the window, by sorting.
    fn exact_median(window: &[f64]) -> f64 {
        let mut sorted = window.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }

    proptest! {
        /// The histogram median is the exact median rounded up to its bin: never below it, at most
        /// 1/32 above (values below the first bin count as the first bin's edge).
        #[test]
        fn rolling_median_brackets_the_exact_median(
            values in prop::collection::vec(prop_oneof![Just(0.0), 1e-6f64..0.5, 1e-14f64..1e-12], 1..700),
            window in 1usize..120,
        ) {
            let mut rolling = RollingAbsMedian::new(window);
            for (k, &value) in values.iter().enumerate() {
                rolling.push(value);
                let from = (k + 1).saturating_sub(window);
                let exact = exact_median(&values[from..=k]);
                let bound = rolling.median_upper_bound();
                let floor = f64::from_bits((BIN_FIRST_KEY + 1) << 47);
                prop_assert!(bound >= exact, "bound {bound} < exact {exact}");
                prop_assert!(bound <= (exact * (1.0 + 1.0 / 32.0)).max(floor) * (1.0 + 1e-12), "bound {bound}, exact {exact}");
                prop_assert_eq!(rolling.len(), k + 1 - from);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        /// The blocked scan finds the spikes, and reports the medians, of a walk to the median at
        /// every push; runs of calm moves with bursts make the median move and the bound matter,
        /// windows shorter than a block or two have none.
        #[test]
        fn scan_finds_the_spikes_of_a_walk_at_every_push(
            segments in prop::collection::vec((1e-5f64..0.05, 1usize..200), 1..8),
            bursts in prop::collection::vec((0usize..1_000, 0.0f64..2.0), 0..40),
            window in prop_oneof![1usize..80, 1usize..600],
            mads in 1.0f64..12.0,
        ) {
            let mut moves: Vec<f64> = Vec::new();
            for (k, &(scale, len)) in segments.iter().enumerate() {
                // Deterministic jitter around each segment's scale, with exact zeros now and then.
                moves.extend((0..len).map(|j| if (j + k) % 17 == 0 { 0.0 } else { scale * (1.0 + ((j * 7 + k) % 13) as f64 / 6.0) }));
            }
            for &(at, size) in &bursts {
                if let Some(m) = moves.get_mut(at) {
                    *m = size;
                }
            }
            let rule = SpikeRule { mads, window };
            let (limits, min_history) = (rule.limits(), rule.min_history());
            let bins: Vec<u16> = moves.iter().map(|&m| RollingAbsMedian::bin(m) as u16).collect();
            let mut walked = RollingAbsMedian::new(window);
            let mut expected = Vec::new();
            for (k, &bin) in bins.iter().enumerate() {
                let m = moves[k];
                if walked.len() >= min_history && m > limits[walked.median_bin] && m != 0.0 {
                    expected.push((k, walked.median_bin));
                }
                walked.push_bin(bin as usize);
            }
            let mut scanned = RollingAbsMedian::new(window);
            let mut found = Vec::new();
            scanned.scan_spikes(&moves, &bins, &limits, min_history, |k, median_bin| found.push((k, median_bin)));
            prop_assert_eq!(found, expected);
            prop_assert_eq!((scanned.median_bin, scanned.below, scanned.len()), (walked.median_bin, walked.below, walked.len()));
        }
    }

    #[test]
    fn a_spike_reads_as_its_numbers_when_shown() {
        let spike = Detail::Spike { log_return: 0.048_71, mads: 8.0, mad: 0.005_234_9 };
        assert_eq!(spike.to_string(), "|log return| 0.0487 > 8 × MAD 0.005235");
        let finding = finding("BTCUSDT", 3_600_000, "spike", Severity::Warning, spike, Some(7));
        let table = findings_to_batch(&[finding]);
        let detail = table.column_by_name("detail").expect("detail column");
        let detail = detail.as_any().downcast_ref::<StringArray>().expect("text");
        assert_eq!(detail.value(0), "|log return| 0.0487 > 8 × MAD 0.005235");
    }

    #[test]
    fn clearing_starts_a_new_window() {
        let mut rolling = RollingAbsMedian::new(10);
        for _ in 0..10 {
            rolling.push(0.1);
        }
        rolling.clear();
        rolling.push(0.001);
        assert_eq!(rolling.len(), 1);
        assert!(rolling.median_upper_bound() < 0.0011);
    }
}
