//! The recorder: the outputs of a run (backtest.md §4), appended bar by bar — the per-bar series,
//! the sparse book, the listed mask and, when asked for, the signal diagnostics.

use ndarray::Array2;

use super::BacktestResult;
use crate::metrics;
use crate::model::{Fill, RoundTrip};
use crate::signal::finite;

/// Per-bar output columns (backtest.md §4).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BarSeries {
    pub equity: Vec<f64>,
    pub cash: Vec<f64>,
    pub gross: Vec<f64>,
    pub net: Vec<f64>,
    /// Traded notional of the bar as a fraction of equity.
    pub turnover: Vec<f64>,
    pub traded_notional: Vec<f64>,
    pub fees: Vec<f64>,
    /// Funding cash flow of the bar (received > 0, paid < 0).
    pub funding: Vec<f64>,
    pub n_long: Vec<u32>,
    pub n_short: Vec<u32>,
    pub regime: Vec<&'static str>,
    pub k: Vec<u32>,
    pub vol_scale: Vec<f64>,
    pub kill_switch: Vec<bool>,
}

impl BarSeries {
    /// The columns the metrics read.
    pub fn equity_path(&self) -> metrics::EquityPath<'_> {
        metrics::EquityPath {
            equity: &self.equity,
            gross: &self.gross,
            traded_notional: &self.traded_notional,
            fees: &self.fees,
            funding: &self.funding,
        }
    }

    /// The `f64` columns, for clearing and reserving them together.
    fn f64_columns_mut(&mut self) -> [&mut Vec<f64>; 9] {
        [
            &mut self.equity,
            &mut self.cash,
            &mut self.gross,
            &mut self.net,
            &mut self.turnover,
            &mut self.traded_notional,
            &mut self.fees,
            &mut self.funding,
            &mut self.vol_scale,
        ]
    }
}

/// The book per bar, stored sparsely: only symbols with a non-zero target, weight or position.
/// Dense `T × N` matrices would cost more memory traffic than the whole backtest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BookHistory {
    /// Entries of bar t are `row_start[t]..row_start[t + 1]`.
    pub row_start: Vec<usize>,
    pub symbol: Vec<u32>,
    /// The admitted target: what the engine trades toward (after anti-churn, time of day,
    /// cooldowns, bans, kill-switch and drawdown pauses).
    pub target_weight: Vec<f64>,
    /// The strategy's target before admission.
    pub model_weight: Vec<f64>,
    pub weight: Vec<f64>,
    pub units: Vec<f64>,
}

impl BookHistory {
    /// An entry, unless every value is 0.
    #[inline]
    pub(super) fn push(&mut self, symbol: usize, target_weight: f64, model_weight: f64, weight: f64, units: f64) {
        if target_weight != 0.0 || model_weight != 0.0 || weight != 0.0 || units != 0.0 {
            self.push_entry(symbol, target_weight, model_weight, weight, units);
        }
    }

    /// An entry the caller knows to hold a non-zero target or position.
    #[inline]
    pub(super) fn push_entry(&mut self, symbol: usize, target_weight: f64, model_weight: f64, weight: f64, units: f64) {
        debug_assert!(target_weight != 0.0 || model_weight != 0.0 || units != 0.0, "an empty entry");
        self.symbol.push(symbol as u32);
        self.target_weight.push(target_weight);
        self.model_weight.push(model_weight);
        self.weight.push(weight);
        self.units.push(units);
    }

    fn end_bar(&mut self) {
        self.row_start.push(self.symbol.len());
    }

    /// Entry range of bar t.
    pub fn bar(&self, t: usize) -> std::ops::Range<usize> {
        let start = if t == 0 { 0 } else { self.row_start[t - 1] };
        start..self.row_start[t]
    }

    pub(super) fn dense(&self, values: &[f64], n_symbols: usize) -> Array2<f64> {
        let n_bars = self.row_start.len();
        let mut out = Array2::zeros((n_bars, n_symbols));
        for t in 0..n_bars {
            for e in self.bar(t) {
                out[[t, self.symbol[e] as usize]] = values[e];
            }
        }
        out
    }
}

/// Signal diagnostics (the `signals` API): a row per listed bar and symbol, in bar then symbol
/// order, recorded as the engine goes. Kept in the table's long form rather than as T × N matrices:
/// the table then takes these vectors as they are, and a run writes each value once instead of
/// into a matrix and again into the table's gather.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalRecord {
    pub ts: Vec<i64>,
    /// Index into the run's symbols.
    pub symbol: Vec<u32>,
    pub momentum: Vec<f64>,
    pub z: Vec<f64>,
    pub signal: Vec<f64>,
    pub eligible: Vec<bool>,
}

impl SignalRecord {
    fn reserve(&mut self, cells: usize) {
        self.ts.reserve(cells);
        self.symbol.reserve(cells);
        self.momentum.reserve(cells);
        self.z.reserve(cells);
        self.eligible.reserve(cells);
    }

    /// The amplified signals `sign(z)·|z|^p` of the eligible rows (NaN elsewhere), as the
    /// strategy computes them for `signal_inverse_vol` books: after the run rather than in it, and
    /// on two cores for a long record (one `powf` per eligible row is most of what the
    /// diagnostics cost the run).
    pub(super) fn score(&mut self, power: f64) {
        const ROWS_PER_THREAD: usize = 16_384;
        let score = |signal: &mut [f64], z: &[f64], eligible: &[bool]| {
            for ((signal, z), eligible) in signal.iter_mut().zip(z).zip(eligible) {
                *signal = if *eligible { crate::signal::amplify(*z, power) } else { f64::NAN };
            }
        };
        self.signal.clear();
        self.signal.resize(self.z.len(), f64::NAN);
        let half = self.z.len() / 2;
        let (first, second) = self.signal.split_at_mut(half);
        let (z, eligible) = (&self.z, &self.eligible);
        if half < ROWS_PER_THREAD || crate::threads::cores() < 2 {
            score(first, &z[..half], &eligible[..half]);
            score(second, &z[half..], &eligible[half..]);
        } else {
            std::thread::scope(|scope| {
                scope.spawn(|| score(second, &z[half..], &eligible[half..]));
                score(first, &z[..half], &eligible[..half]);
            });
        }
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
}

/// The current bar's signal rows being recorded: [`SignalRecord`] with the bar's time and listed
/// mask ([`Recorder::signal_sink`]).
pub(super) struct SignalSink<'a> {
    record: &'a mut SignalRecord,
    ts: i64,
    listed: &'a [bool],
}

impl SignalSink<'_> {
    /// The bar's columns, one entry per symbol; rows of symbols not listed are left out. The
    /// signals are scored once the run is done ([`SignalRecord::score`]).
    pub fn push(self, momentum: &[f64], z: &[f64], eligible: &[bool]) {
        let rec = self.record;
        let n_symbols = self.listed.len();
        rec.momentum.extend_from_slice(momentum);
        rec.z.extend_from_slice(z);
        rec.eligible.extend_from_slice(eligible);
        rec.ts.extend(std::iter::repeat_n(self.ts, n_symbols));
        rec.symbol.extend(0..n_symbols as u32);
        if self.listed.iter().all(|&listed| listed) {
            return;
        }
        compact_last(&mut rec.momentum, self.listed);
        compact_last(&mut rec.z, self.listed);
        compact_last(&mut rec.eligible, self.listed);
        compact_last(&mut rec.ts, self.listed);
        compact_last(&mut rec.symbol, self.listed);
    }
}

/// Keep of the last `listed.len()` entries of `column` those whose `listed` is set, in order:
/// branch-free, since a bar's listed set follows no pattern the predictor could learn.
fn compact_last<T: Copy>(column: &mut Vec<T>, listed: &[bool]) {
    let start = column.len() - listed.len();
    let row = &mut column[start..];
    let mut kept = 0;
    for (i, &listed) in listed.iter().enumerate() {
        row[kept] = row[i];
        kept += usize::from(listed);
    }
    column.truncate(start + kept);
}

/// The panel-sized output vectors of a run (per-bar series, book, fills, round trips), kept
/// between the runs of a sweep: a run given the buffers of the one before allocates nothing
/// panel-sized once they are large enough. Always empty; only their capacity is kept.
#[derive(Debug, Default)]
pub struct OutputBuffers {
    ts: Vec<i64>,
    listed: Vec<bool>,
    out: BarSeries,
    book: BookHistory,
    fills: Vec<Fill>,
    round_trips: Vec<RoundTrip>,
}

impl OutputBuffers {
    /// The vectors of a finished result, emptied, for the next run.
    pub fn recycle(result: BacktestResult) -> Self {
        let mut buffers = OutputBuffers {
            ts: result.ts,
            listed: result.listed.into_raw_vec_and_offset().0,
            out: result.bars,
            book: result.book,
            fills: result.fills,
            round_trips: result.round_trips,
        };
        buffers.clear();
        buffers
    }

    fn clear(&mut self) {
        self.ts.clear();
        self.listed.clear();
        self.fills.clear();
        self.round_trips.clear();
        let book = &mut self.book;
        book.row_start.clear();
        book.symbol.clear();
        for column in [&mut book.target_weight, &mut book.model_weight, &mut book.weight, &mut book.units] {
            column.clear();
        }
        let out = &mut self.out;
        for column in out.f64_columns_mut() {
            column.clear();
        }
        out.n_long.clear();
        out.n_short.clear();
        out.k.clear();
        out.regime.clear();
        out.kill_switch.clear();
    }
}

/// One bar's row of [`BarSeries`].
#[derive(Debug, Clone, Copy)]
pub(super) struct BarRecord {
    pub equity: f64,
    pub cash: f64,
    pub gross: f64,
    pub net: f64,
    pub turnover: f64,
    pub traded_notional: f64,
    pub fees: f64,
    pub funding: f64,
    pub n_long: u32,
    pub n_short: u32,
    pub regime: &'static str,
    pub k: u32,
    pub vol_scale: f64,
    pub kill_switch: bool,
}

/// The outputs of a run while it is being recorded.
#[derive(Debug, Default)]
pub(super) struct Recorder {
    pub ts: Vec<i64>,
    /// `listed[t·N + i]`: symbol i had a close at bar t.
    pub listed: Vec<bool>,
    pub out: BarSeries,
    pub book: BookHistory,
    pub signals: Option<SignalRecord>,
    /// Symbols per bar (entries per bar of `listed`).
    n_symbols: usize,
}

impl Recorder {
    pub fn new(record_signals: bool) -> Self {
        Self { signals: record_signals.then(SignalRecord::default), ..Self::default() }
    }

    /// Write into `buffers` (emptied, their capacity kept) instead of fresh vectors; returns the
    /// fills and round-trip vectors for the ledger.
    pub fn use_buffers(&mut self, mut buffers: OutputBuffers) -> (Vec<Fill>, Vec<RoundTrip>) {
        buffers.clear();
        self.ts = buffers.ts;
        self.listed = buffers.listed;
        self.out = buffers.out;
        self.book = buffers.book;
        (buffers.fills, buffers.round_trips)
    }

    /// Room for `n_bars` bars of `n_symbols` columns with up to `book_size` book entries per bar.
    pub fn reserve(&mut self, n_bars: usize, n_symbols: usize, book_size: usize) {
        self.ts.reserve(n_bars);
        self.listed.reserve(n_bars * n_symbols);
        if let Some(record) = &mut self.signals {
            // Grown bar by bar, the signal columns would be copied a dozen times on the way.
            record.reserve(n_bars * n_symbols);
        }
        let book = &mut self.book;
        book.row_start.reserve(n_bars);
        for column in [&mut book.target_weight, &mut book.model_weight, &mut book.weight, &mut book.units] {
            column.reserve(n_bars * book_size);
        }
        book.symbol.reserve(n_bars * book_size);
        let out = &mut self.out;
        for column in out.f64_columns_mut() {
            column.reserve(n_bars);
        }
        out.n_long.reserve(n_bars);
        out.n_short.reserve(n_bars);
        out.k.reserve(n_bars);
        out.regime.reserve(n_bars);
        out.kill_switch.reserve(n_bars);
    }

    /// The bar opened at `ts`, with these closes (NaN: not listed).
    pub fn start_bar(&mut self, ts: i64, close: &[f64]) {
        self.ts.push(ts);
        self.n_symbols = close.len();
        self.listed.extend(close.iter().map(|c| finite(*c)));
    }

    /// Where the current bar's signal rows go, when signals are recorded.
    pub fn signal_sink(&mut self) -> Option<SignalSink<'_>> {
        let listed = &self.listed[self.listed.len() - self.n_symbols..];
        let ts = *self.ts.last()?;
        self.signals.as_mut().map(|record| SignalSink { record, ts, listed })
    }

    /// The bar's series row; closes the bar's book entries.
    pub fn end_bar(&mut self, row: BarRecord) {
        let out = &mut self.out;
        out.equity.push(row.equity);
        out.cash.push(row.cash);
        out.gross.push(row.gross);
        out.net.push(row.net);
        out.traded_notional.push(row.traded_notional);
        out.turnover.push(row.turnover);
        out.fees.push(row.fees);
        out.funding.push(row.funding);
        out.n_long.push(row.n_long);
        out.n_short.push(row.n_short);
        out.regime.push(row.regime);
        out.k.push(row.k);
        out.vol_scale.push(row.vol_scale);
        out.kill_switch.push(row.kill_switch);
        self.book.end_bar();
    }
}

/// The series with a flat bar at `equity` in front (the columns metrics read).
pub(super) fn with_base_bar(out: &BarSeries, equity: f64) -> BarSeries {
    let prepend = |first: f64, values: &[f64]| std::iter::once(first).chain(values.iter().copied()).collect();
    BarSeries {
        equity: prepend(equity, &out.equity),
        gross: prepend(0.0, &out.gross),
        traded_notional: prepend(0.0, &out.traded_notional),
        fees: prepend(0.0, &out.fees),
        funding: prepend(0.0, &out.funding),
        ..BarSeries::default()
    }
}
