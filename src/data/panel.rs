//! Long-format bars and their wide `T × N` panel on a regular time grid (strategy.md §1).

use std::collections::HashMap;
use std::iter::StepBy;
use std::ops::Range;
use std::slice::IterMut;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ndarray::Array2;

use crate::error::{Error, Result};
use crate::timeframe::Timeframe;

/// Bars in long format: one row per `(symbol, ts)`; `ts` is the bar open time in epoch ms UTC.
///
/// Symbols are interned: `symbol[row]` indexes `names`, so rows carry no strings and comparing,
/// grouping and pivoting work on integers. [`crate::data::store::sort_bars`] puts bars in their
/// canonical form: `names` sorted and all used, rows in `(symbol, ts)` order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bars {
    pub ts: Vec<i64>,
    /// Index into `names` of each row's symbol.
    pub symbol: Vec<u32>,
    /// Each symbol name once.
    pub names: Vec<String>,
    pub open: Vec<f64>,
    pub high: Vec<f64>,
    pub low: Vec<f64>,
    pub close: Vec<f64>,
    pub volume: Vec<f64>,
    /// Quote volume; when absent, `close × volume` stands in for it.
    pub turnover: Option<Vec<f64>>,
}

impl Bars {
    pub fn len(&self) -> usize {
        self.ts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
    /// The symbol name of `row`.
    pub fn symbol_of(&self, row: usize) -> &str {
        &self.names[self.symbol[row] as usize]
    }
    /// The code of `name`, added to `names` when new. Rows usually arrive grouped by symbol, so the
    /// last row's symbol is tried first.
    pub fn intern(&mut self, name: &str) -> u32 {
        intern(&mut self.names, self.symbol.last().copied(), name)
    }
    /// Append one bar of `symbol` (a turnover column is created on first use).
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        symbol: &str,
        ts: i64,
        open: f64,
        high: f64,
        low: f64,
        close: f64,
        volume: f64,
        turnover: f64,
    ) {
        let code = self.intern(symbol);
        self.ts.push(ts);
        self.symbol.push(code);
        self.open.push(open);
        self.high.push(high);
        self.low.push(low);
        self.close.push(close);
        self.volume.push(volume);
        self.turnover.get_or_insert_with(Vec::new).push(turnover);
    }

    /// The columns as slices.
    pub fn view(&self) -> BarsView<'_> {
        BarsView {
            ts: &self.ts,
            symbol: &self.symbol,
            names: &self.names,
            open: &self.open,
            high: &self.high,
            low: &self.low,
            close: &self.close,
            volume: &self.volume,
            turnover: self.turnover.as_deref(),
        }
    }

    /// Keep only the rows where `keep[row]` is true (`names` stay as they are).
    pub fn filter_rows(&self, keep: &[bool]) -> Bars {
        fn pick<T: Clone>(values: &[T], keep: &[bool]) -> Vec<T> {
            values.iter().zip(keep).filter(|(_, k)| **k).map(|(v, _)| v.clone()).collect()
        }
        Bars {
            ts: pick(&self.ts, keep),
            symbol: pick(&self.symbol, keep),
            names: self.names.clone(),
            open: pick(&self.open, keep),
            high: pick(&self.high, keep),
            low: pick(&self.low, keep),
            close: pick(&self.close, keep),
            volume: pick(&self.volume, keep),
            turnover: self.turnover.as_ref().map(|t| pick(t, keep)),
        }
    }
}

/// Long bars as borrowed columns: the same layout as [`Bars`], over a `Bars` or over Arrow
/// buffers handed over from Python without a copy ([`super::arrow_io::ArrowBars`]).
#[derive(Debug, Clone, Copy)]
pub struct BarsView<'a> {
    pub ts: &'a [i64],
    pub symbol: &'a [u32],
    pub names: &'a [String],
    pub open: &'a [f64],
    pub high: &'a [f64],
    pub low: &'a [f64],
    pub close: &'a [f64],
    pub volume: &'a [f64],
    pub turnover: Option<&'a [f64]>,
}

impl BarsView<'_> {
    pub fn len(&self) -> usize {
        self.ts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
    pub fn symbol_of(&self, row: usize) -> &str {
        &self.names[self.symbol[row] as usize]
    }
    /// An owned copy.
    pub fn to_bars(&self) -> Bars {
        Bars {
            ts: self.ts.to_vec(),
            symbol: self.symbol.to_vec(),
            names: self.names.to_vec(),
            open: self.open.to_vec(),
            high: self.high.to_vec(),
            low: self.low.to_vec(),
            close: self.close.to_vec(),
            volume: self.volume.to_vec(),
            turnover: self.turnover.map(<[f64]>::to_vec),
        }
    }
    /// Canonical form: `names` sorted and all used, rows in (symbol, ts) order (see `sort_bars`):
    /// [`BarsView::codes_are_canonical`], and within a code, ts ascends. One branch-free pass over
    /// the rows.
    pub fn is_canonical(&self) -> bool {
        let ts_ascend = self
            .symbol
            .windows(2)
            .zip(self.ts.windows(2))
            .fold(true, |ok, (codes, ts)| ok & ((codes[1] != codes[0]) | (ts[1] >= ts[0])));
        self.codes_are_canonical() && ts_ascend
    }

    /// The symbol half of [`BarsView::is_canonical`], without reading the times: `names` sorted, and
    /// the codes start at 0, step by 0 or 1 from row to row and end at the last name. The streamed
    /// run checks only this up front (it runs on every backtest from a DataFrame): its pivot refuses
    /// a row whose time is not after the one before (`GridRuns::of`), which reads the times anyway.
    pub fn codes_are_canonical(&self) -> bool {
        if !self.names.windows(2).all(|w| w[0] < w[1]) {
            return false;
        }
        let (Some(&first), Some(&last)) = (self.symbol.first(), self.symbol.last()) else {
            return self.names.is_empty();
        };
        let steps = self.symbol.windows(2).fold(true, |ok, codes| ok & (codes[1].wrapping_sub(codes[0]) <= 1));
        steps & (first == 0) & (last as usize + 1 == self.names.len())
    }
}

/// Funding events in long format: `rate` is the fraction paid per interval by a long when positive.
/// Symbols are interned as in [`Bars`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Funding {
    pub ts: Vec<i64>,
    /// Index into `names` of each event's symbol.
    pub symbol: Vec<u32>,
    /// Each symbol name once.
    pub names: Vec<String>,
    pub rate: Vec<f64>,
}

impl Funding {
    pub fn len(&self) -> usize {
        self.ts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
    /// The symbol name of event `row`.
    pub fn symbol_of(&self, row: usize) -> &str {
        &self.names[self.symbol[row] as usize]
    }
    /// Append one funding event of `symbol`.
    pub fn push(&mut self, symbol: &str, ts: i64, rate: f64) {
        let code = intern(&mut self.names, self.symbol.last().copied(), symbol);
        self.ts.push(ts);
        self.symbol.push(code);
        self.rate.push(rate);
    }
    /// The events `rows`, in that order.
    pub fn take(&self, rows: &[usize]) -> Funding {
        Funding {
            ts: rows.iter().map(|&r| self.ts[r]).collect(),
            symbol: rows.iter().map(|&r| self.symbol[r]).collect(),
            names: self.names.clone(),
            rate: rows.iter().map(|&r| self.rate[r]).collect(),
        }
    }
}

/// The code of `name` in `names`, added when new; `last` (the previous row's code) is tried first
/// because rows usually arrive grouped by symbol.
pub(crate) fn intern(names: &mut Vec<String>, last: Option<u32>, name: &str) -> u32 {
    if let Some(last) = last {
        if names[last as usize] == name {
            return last;
        }
    }
    match names.iter().position(|known| known == name) {
        Some(code) => code as u32,
        None => {
            names.push(name.to_string());
            (names.len() - 1) as u32
        }
    }
}

/// Codes of `from`'s names in `into` (added when new): the remapping that merges two interned tables.
pub(crate) fn merge_names(into: &mut Vec<String>, from: &[String]) -> Vec<u32> {
    from.iter().map(|name| intern(into, None, name)).collect()
}

/// Bars pivoted to a regular grid: matrices are `T × N` (row = bar, column = symbol), NaN where a
/// symbol has no bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub timeframe: Timeframe,
    pub ts: Vec<i64>,
    pub symbols: Vec<String>,
    pub open: Array2<f64>,
    pub high: Array2<f64>,
    pub low: Array2<f64>,
    pub close: Array2<f64>,
    /// Quote volume per bar: the `turnover` column, or `close × volume` without one. (Base volume
    /// is not kept: nothing downstream reads it, and at 200 × 43 800 it is 70 MB.)
    pub quote_volume: Array2<f64>,
    /// Mark-price closes on the same grid (NaN where a symbol has no mark bar), when mark bars were
    /// attached ([`Panel::attach_mark`]); only the basis term of the carry sleeve reads them.
    pub mark_close: Option<Array2<f64>>,
}

impl Panel {
    pub fn n_bars(&self) -> usize {
        self.ts.len()
    }
    pub fn n_symbols(&self) -> usize {
        self.symbols.len()
    }

    /// Bar t with its funding, as the engine consumes it.
    pub fn bar_row<'a>(&'a self, t: usize, funding: &'a FundingGrid) -> crate::model::BarRow<'a> {
        let row = |matrix: &'a Array2<f64>| matrix.row(t).to_slice().expect("standard layout");
        crate::model::BarRow {
            ts: self.ts[t],
            open: row(&self.open),
            high: row(&self.high),
            low: row(&self.low),
            close: row(&self.close),
            quote_volume: row(&self.quote_volume),
            funding_rate: funding.rate_row(t),
            funding_event: funding.event_row(t),
            mark_close: self.mark_close.as_ref().map(row),
        }
    }

    /// Pivot long bars onto the grid `first ts, first + Δ, …, last ts`, columns in name order. Rows
    /// must already be valid (see `data::validate`): a duplicate `(symbol, ts)` or a ts off the grid
    /// is an error here.
    pub fn from_bars(bars: &Bars, timeframe: Timeframe) -> Result<Panel> {
        Panel::from_view(bars.view(), timeframe)
    }

    /// [`Panel::from_bars`] over borrowed columns.
    pub fn from_view(bars: BarsView<'_>, timeframe: Timeframe) -> Result<Panel> {
        if bars.is_empty() {
            return Err(Error::invalid("no bars: the selection is empty (check symbols, start and end)"));
        }
        if bars.is_canonical() {
            return Panel::from_canonical_view(bars, timeframe);
        }
        let (first, last) = bars.ts.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &ts| (lo.min(ts), hi.max(ts)));
        let mut used = vec![false; bars.names.len()];
        for &code in bars.symbol {
            used[code as usize] = true;
        }
        let mut symbols: Vec<String> =
            bars.names.iter().zip(&used).filter(|(_, used)| **used).map(|(name, _)| name.clone()).collect();
        symbols.sort_unstable();
        Panel::on_view_grid(bars, timeframe, &symbols, first, ((last - first) / timeframe.ms + 1) as usize)
    }

    /// [`Panel::from_view`] of bars the caller knows to be canonical ([`BarsView::is_canonical`]).
    pub fn from_canonical_view(bars: BarsView<'_>, timeframe: Timeframe) -> Result<Panel> {
        Panel::canonical_view(bars, timeframe, false).map(|(panel, _)| panel)
    }

    /// [`Panel::from_canonical_view`], and how many rows fail the validation's value rules
    /// ([`super::validate::invalid_rows`]), counted while the quote volume is filled.
    pub(crate) fn checked_canonical_view(bars: BarsView<'_>, timeframe: Timeframe) -> Result<(Panel, usize)> {
        Panel::canonical_view(bars, timeframe, true)
    }

    /// The pivot of canonical bars filled on another thread while `consume` reads it on this one,
    /// a tile of bars at a time in time order ([`PivotStream`]): a backtest's engine starts on the
    /// first bars while the later ones are still being filled, and no `T × N` matrix is built —
    /// the tiles go round a ring of a few buffers that the consumer hands back once it has read
    /// them, so a run from long bars needs the memory of the bars and its outputs only. The filling
    /// thread checks each tile's rows against the validation's value rules before handing it
    /// over; while every buffer is in use, and once every tile is filled, it does `background`
    /// work (the validation's warnings, a symbol per call; false when none is left). `None` when
    /// these bars cannot be streamed: a row fails the value rules (the tiles stop there; what
    /// `consume` returned is dropped), the pivot refuses a row (off the grid, a duplicate), or the
    /// grid's first bar is not on a multiple of the timeframe; the caller then takes the
    /// validating path, which names the problem. `derive` runs on the filling thread too, on each
    /// tile once it is filled: what it writes into the tile's [`TileBuffer::derived`] (kept from
    /// the tile's last round of the ring, to be reused) is handed over with the tile — work that
    /// depends on the bars alone, such as a backtest's indicator kernels, is so taken off the
    /// consumer's thread. It is told how well the consumer is fed ([`StreamPace`]), so that it can
    /// give work back to a consumer that keeps waiting for tiles.
    pub(crate) fn stream_canonical<'v, R, D: Default + Send>(
        bars: BarsView<'v>,
        timeframe: Timeframe,
        consume: impl for<'s> FnOnce(&PanelGrid<'v>, PivotStream<'s, D>) -> R,
        background: impl Fn() -> bool + Sync,
        derive: impl FnMut(&TileBuffer<D>, &mut D, StreamPace) + Send,
    ) -> Option<R> {
        // The times' order is checked here: `GridRuns::of` refuses a row not after the one before.
        debug_assert!(bars.codes_are_canonical());
        if bars.is_empty() {
            return None;
        }
        let (starts, first, n_bars) = canonical_grid(bars, timeframe);
        if first.rem_euclid(timeframe.ms) != 0 {
            return None;
        }
        let n_symbols = bars.names.len();
        let runs = GridRuns::of(bars, timeframe, first, n_bars, &starts[..n_symbols], &starts[1..]).ok()?;
        let grid = PanelGrid {
            timeframe,
            ts: (0..n_bars as i64).map(|t| first + t * timeframe.ms).collect(),
            symbols: bars.names,
        };
        let (runs, waited, background) = (&runs, &AtomicU64::new(0), &background);
        std::thread::scope(|scope| {
            let (sender, tiles) = std::sync::mpsc::channel();
            let (used_sender, used) = std::sync::mpsc::channel();
            let filler = std::thread::Builder::new()
                .name("xsmom-pivot".into())
                .spawn_scoped(scope, move || runs.fill_ring(bars, sender, used, background, derive, waited))
                .ok()?;
            let spent = Vec::new();
            let stream = PivotStream {
                tiles,
                used: used_sender,
                current: None,
                spent,
                waited,
                background,
                background_done: false,
            };
            let consumed = consume(&grid, stream);
            // The background work left once the consumer is done is shared with the filling thread
            // (which finishes at once when a row failed the value rules: no help is wanted then).
            while !filler.is_finished() && background() {}
            filler.join().expect("the pivot thread panicked").then_some(consumed)
        })
    }

    /// A panel of the pivot's five filled matrices (open, high, low, close, quote volume; each
    /// `ts.len() × symbols.len()`, row-major), without mark closes.
    fn of_matrices(timeframe: Timeframe, ts: Vec<i64>, symbols: &[String], matrices: [Vec<f64>; 5]) -> Panel {
        let shape = (ts.len(), symbols.len());
        let [open, high, low, close, quote_volume] =
            matrices.map(|values| Array2::from_shape_vec(shape, values).expect("T × N cells"));
        Panel { timeframe, ts, symbols: symbols.to_vec(), open, high, low, close, quote_volume, mark_close: None }
    }

    fn canonical_view(bars: BarsView<'_>, timeframe: Timeframe, check_values: bool) -> Result<(Panel, usize)> {
        debug_assert!(bars.is_canonical());
        if bars.is_empty() {
            return Err(Error::invalid("no bars: the selection is empty (check symbols, start and end)"));
        }
        let (starts, first, n_bars) = canonical_grid(bars, timeframe);
        Panel::on_canonical_grid(bars, &starts, timeframe, bars.names, first, n_bars, check_values)
    }

    /// Pivot long bars onto a given grid: `n_bars` bars from `first`, the columns `symbols` in that
    /// order (the live runner's fixed universe). Rows outside the grid or of other symbols are an error.
    pub fn on_grid(bars: &Bars, timeframe: Timeframe, symbols: &[String], first: i64, n_bars: usize) -> Result<Panel> {
        Panel::on_view_grid(bars.view(), timeframe, symbols, first, n_bars)
    }

    /// The pivot finds each symbol's runs of consecutive bars once ([`GridRuns`]), then fills each
    /// matrix in time order, row after row, reading the input as N sequential streams: no
    /// timestamp comparison per cell, no scattered writes, a division only where a run starts.
    fn on_view_grid(
        bars: BarsView<'_>,
        timeframe: Timeframe,
        symbols: &[String],
        first: i64,
        n_bars: usize,
    ) -> Result<Panel> {
        if !bars.is_canonical() {
            let sorted = super::store::sort_bars(bars.to_bars());
            return Panel::on_view_grid(sorted.view(), timeframe, symbols, first, n_bars);
        }
        Panel::on_canonical_grid(bars, &canonical_starts(bars), timeframe, symbols, first, n_bars, false)
            .map(|(panel, _)| panel)
    }

    /// [`Panel::on_view_grid`] of canonical bars whose code c has the rows `starts[c]..starts[c + 1]`;
    /// with `check_values`, also the number of rows that fail the validation's value rules (else 0).
    fn on_canonical_grid(
        bars: BarsView<'_>,
        starts: &[usize],
        timeframe: Timeframe,
        symbols: &[String],
        first: i64,
        n_bars: usize,
        check_values: bool,
    ) -> Result<(Panel, usize)> {
        let step = timeframe.ms;
        let positions: HashMap<&str, usize> = symbols.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
        let n_symbols = symbols.len();
        let (mut start_of, mut end) = (vec![0usize; n_symbols], vec![0usize; n_symbols]);
        for (code, name) in bars.names.iter().enumerate() {
            let Some(&i) = positions.get(name.as_str()) else {
                let row = starts[code];
                return Err(Error::data(format!("bar of {name} at ts {}: not a symbol of the panel", bars.ts[row])));
            };
            (start_of[i], end[i]) = (starts[code], starts[code + 1]);
        }
        let runs = GridRuns::of(bars, timeframe, first, n_bars, &start_of, &end)?;
        // One fill per matrix, the five in parallel (the calling thread takes the first three):
        // each writes every cell of its own matrix once. The runs hold every row exactly once
        // (`GridRuns::of` refuses any other row), so the quote volume's fill, which reads the
        // turnover, close and volume of every row anyway, also counts the rows that fail the value rules.
        let fields = fields_of(bars);
        let mut filled = crate::threads::map_ordered(&fields, n_bars * n_symbols, |field| {
            let mut invalid = 0usize;
            let values = runs.fill(|rows, cells| field.copy_run(bars, check_values, &mut invalid, rows, cells));
            (values, invalid)
        });
        let invalid_rows = filled[4].1;
        let matrices = std::array::from_fn::<Vec<f64>, 5, _>(|k| std::mem::take(&mut filled[k].0));
        let ts = (0..n_bars as i64).map(|t| first + t * step).collect();
        Ok((Panel::of_matrices(timeframe, ts, symbols, matrices), invalid_rows))
    }

    /// Back to long bars: one row per cell with a close, in canonical order, turnover = the
    /// quote volume, volume = quote volume / close. `Panel::from_bars` of the result gives this panel again (up to leading or
    /// trailing bars without any close).
    pub fn to_bars(&self) -> Bars {
        let n_symbols = self.n_symbols();
        let mut bars = Bars { names: self.symbols.clone(), turnover: Some(Vec::new()), ..Bars::default() };
        let turnover = bars.turnover.as_mut().expect("just set");
        for i in 0..n_symbols {
            for t in 0..self.n_bars() {
                let close = self.close[[t, i]];
                if close.is_nan() {
                    continue;
                }
                bars.ts.push(self.ts[t]);
                bars.symbol.push(i as u32);
                bars.open.push(self.open[[t, i]]);
                bars.high.push(self.high[[t, i]]);
                bars.low.push(self.low[[t, i]]);
                bars.close.push(close);
                bars.volume.push(self.quote_volume[[t, i]] / close);
                turnover.push(self.quote_volume[[t, i]]);
            }
        }
        bars
    }

    /// The attached mark-price closes as mark bars in long format (open = high = low = close, NaN
    /// volume), `None` without them: what ships a dataset's basis data to another process.
    pub fn mark_to_bars(&self) -> Option<Bars> {
        let mark = self.mark_close.as_ref()?;
        let mut bars = Bars { names: self.symbols.clone(), ..Bars::default() };
        for i in 0..self.n_symbols() {
            for t in 0..self.n_bars() {
                let close = mark[[t, i]];
                if close.is_nan() {
                    continue;
                }
                bars.ts.push(self.ts[t]);
                bars.symbol.push(i as u32);
                bars.open.push(close);
                bars.high.push(close);
                bars.low.push(close);
                bars.close.push(close);
                bars.volume.push(f64::NAN);
            }
        }
        Some(bars)
    }

    /// The first `n_bars` rows only (truncation-invariance tests and warm starts).
    pub fn head(&self, n_bars: usize) -> Panel {
        let rows = n_bars.min(self.n_bars());
        let cut = |m: &Array2<f64>| m.slice(ndarray::s![..rows, ..]).to_owned();
        Panel {
            timeframe: self.timeframe,
            ts: self.ts[..rows].to_vec(),
            symbols: self.symbols.clone(),
            open: cut(&self.open),
            high: cut(&self.high),
            low: cut(&self.low),
            close: cut(&self.close),
            quote_volume: cut(&self.quote_volume),
            mark_close: self.mark_close.as_ref().map(cut),
        }
    }

    /// Put the closes of mark-price bars on this panel's grid (`mark_close`); bars of other symbols
    /// or outside the grid are ignored. Returns the panel's symbols without any mark close.
    pub fn attach_mark(&mut self, mark: BarsView<'_>) -> Vec<String> {
        let mut grid = Array2::from_elem((self.n_bars(), self.n_symbols()), f64::NAN);
        let mut has_data = vec![false; self.n_symbols()];
        let index: HashMap<&str, usize> = self.symbols.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
        let column_of: Vec<Option<usize>> = mark.names.iter().map(|name| index.get(name.as_str()).copied()).collect();
        let (first, step) = (self.ts.first().copied().unwrap_or(0), self.timeframe.ms);
        for row in 0..mark.len() {
            let (Some(i), offset) = (column_of[mark.symbol[row] as usize], mark.ts[row] - first) else { continue };
            let t = offset.div_euclid(step);
            if offset.rem_euclid(step) == 0 && t >= 0 && (t as usize) < self.n_bars() && mark.close[row].is_finite() {
                grid[[t as usize, i]] = mark.close[row];
                has_data[i] = true;
            }
        }
        self.mark_close = Some(grid);
        self.symbols.iter().zip(&has_data).filter(|(_, has)| !**has).map(|(s, _)| s.clone()).collect()
    }

    /// Funding rates on this panel's grid: `rates[t, i]` is the sum of the events of symbol i whose
    /// time falls in bar t's interval `[ts_t, ts_t + Δ)` (an event 1 ms before the hour belongs to the
    /// earlier bar). `has_data[i]` says whether symbol i had any funding record at all.
    pub fn align_funding(&self, funding: &Funding) -> FundingGrid {
        align_funding(self.timeframe, &self.ts, &self.symbols, funding)
    }
}

/// The grid of non-empty canonical bars: the symbols' row starts ([`canonical_starts`]), the first
/// bar's open time and the number of bars. Every name is used, in order, each one's rows contiguous
/// and ascending in ts, so the grid's ends are at the symbols' first and last rows: no pass over the
/// rows is needed.
fn canonical_grid(bars: BarsView<'_>, timeframe: Timeframe) -> (Vec<usize>, i64, usize) {
    let starts = canonical_starts(bars);
    let (first, last) = span_of_runs(bars, &starts);
    (starts, first, ((last - first) / timeframe.ms + 1) as usize)
}

/// The first and the last open time of canonical bars (none when empty), found from each symbol's
/// first and last row: the span a streamed backtest reads its funding for before the pivot starts
/// (of bars whose codes only are known canonical, a span that the pivot then finds wrong).
pub(crate) fn canonical_span(bars: BarsView<'_>) -> Option<(i64, i64)> {
    debug_assert!(bars.codes_are_canonical());
    (!bars.is_empty()).then(|| span_of_runs(bars, &canonical_starts(bars)))
}

/// `(min, max)` ts of the symbols' runs `starts[c]..starts[c + 1]` (each sorted by ts).
fn span_of_runs(bars: BarsView<'_>, starts: &[usize]) -> (i64, i64) {
    let runs = || starts.windows(2).filter(|rows| rows[0] < rows[1]);
    let first = runs().map(|rows| bars.ts[rows[0]]).min().expect("a symbol");
    let last = runs().map(|rows| bars.ts[rows[1] - 1]).max().expect("a symbol");
    (first, last)
}

/// The first row of each code of canonical bars, then the row count: code c has the rows
/// `starts[c]..starts[c + 1]`. Codes ascend by one from 0, so each start is a binary search.
pub(crate) fn canonical_starts(bars: BarsView<'_>) -> Vec<usize> {
    let mut starts: Vec<usize> =
        (0..bars.names.len() as u32).map(|code| bars.symbol.partition_point(|&c| c < code)).collect();
    starts.push(bars.len());
    starts
}

/// Where the rows of each panel column land on the grid: runs of bars on consecutive grid times.
/// Found in one pass over the timestamps (a division only where a run starts), so the matrices are
/// filled without comparing a timestamp per cell.
struct GridRuns {
    n_bars: usize,
    n_symbols: usize,
    /// Runs, column after column, each column's in time order: (first bar, bar after the last,
    /// first row); column i's are `runs[column_start[i]..column_start[i + 1]]`.
    runs: Vec<(usize, usize, usize)>,
    column_start: Vec<usize>,
}

impl GridRuns {
    /// The runs of every column (`start_of[i]..end[i]`: its rows, sorted by ts); a row off the grid,
    /// outside it or a duplicate is an error naming it.
    fn of(
        bars: BarsView<'_>,
        timeframe: Timeframe,
        first: i64,
        n_bars: usize,
        start_of: &[usize],
        end: &[usize],
    ) -> Result<GridRuns> {
        let step = timeframe.ms;
        let (mut runs, mut column_start) = (Vec::new(), vec![0]);
        for (&start, &stop) in start_of.iter().zip(end) {
            let mut row = start;
            let mut next_free = 0usize;
            while row < stop {
                let ts = bars.ts[row];
                let offset = ts - first;
                let on_grid = offset >= 0 && offset % step == 0 && ((offset / step) as usize) < n_bars;
                if !on_grid {
                    return Err(Error::data(format!(
                        "bar {} at ts {ts} is not on the {} grid of {n_bars} bars starting at {first}",
                        bars.symbol_of(row),
                        timeframe.label()
                    )));
                }
                let t = (offset / step) as usize;
                if t < next_free {
                    return Err(Error::data(format!("duplicate bar for {} at ts {ts}", bars.symbol_of(row))));
                }
                // The run goes on while the next row is the next bar, up to the grid's end.
                let run_start = row;
                let longest = (stop - run_start).min(n_bars - t);
                let ts_run = &bars.ts[run_start..run_start + longest];
                let len = 1 + ts_run.windows(2).take_while(|pair| pair[0] + step == pair[1]).count();
                row = run_start + len;
                runs.push((t, t + len, run_start));
                next_free = t + len;
            }
            column_start.push(runs.len());
        }
        Ok(GridRuns { n_bars, n_symbols: start_of.len(), runs, column_start })
    }

    /// The `T × N` cells of one field, NaN where a column has no bar; `copy_run(rows, cells)` writes
    /// the field's values of the input rows `rows` into `cells` (one per row, in order). Filled a
    /// tile of bars at a time (a tile of the matrix stays in cache while every column's runs are
    /// copied into it), each run read as one sequential stream; the `rows` of all calls together
    /// are every row of the runs, each once.
    fn fill(&self, mut copy_run: impl FnMut(Range<usize>, StepBy<IterMut<'_, f64>>)) -> Vec<f64> {
        const TILE_BARS: usize = 256;
        let n = self.n_symbols;
        let mut values = Vec::with_capacity(self.n_bars * n);
        let mut next = self.cursors();
        for tile_start in (0..self.n_bars).step_by(TILE_BARS) {
            let tile_end = (tile_start + TILE_BARS).min(self.n_bars);
            // The tile starts as NaN just before its runs are copied in, while it is in cache (a
            // prefill of the whole matrix would write it twice to memory).
            values.resize(tile_end * n, f64::NAN);
            let tile = &mut values[tile_start * n..tile_end * n];
            self.fill_tile(&mut next, tile_start..tile_end, |rows, first_cell| {
                copy_run(rows, tile[first_cell..].iter_mut().step_by(n))
            });
        }
        values
    }

    /// The tiles of [`Panel::stream_canonical`] in time order, each filled into a buffer of the
    /// ring (a fresh one while there are fewer than [`RING_TILES`], else one the consumer handed
    /// back on `used`) and sent once its rows pass the value rules; `background` runs while no
    /// buffer is free and after the last tile. False when a row failed the rules (`Invalid` is
    /// sent) or the consumer has gone; true when every tile was sent and `background` is done.
    fn fill_ring<D: Default>(
        &self,
        bars: BarsView<'_>,
        sender: std::sync::mpsc::Sender<PivotTile<D>>,
        used: std::sync::mpsc::Receiver<TileBuffer<D>>,
        background: impl Fn() -> bool,
        mut derive: impl FnMut(&TileBuffer<D>, &mut D, StreamPace),
        consumer_waited: &AtomicU64,
    ) -> bool {
        let mut cursors = self.cursors();
        let (mut allocated, mut background_left) = (0, true);
        // Tiles start short, so that the consumer starts soon, and double up to TILE_BARS.
        let tile_starts = std::iter::successors(Some((0, FIRST_TILE_BARS)), |&(start, bars)| {
            Some((start + bars, (2 * bars).min(TILE_BARS)))
        });
        let no_time = Duration::ZERO;
        let mut pace = StreamPace { tiles_sent: 0, bars_sent: 0, consumer_waited: no_time, derived_for: no_time };
        for (tile_start, tile_bars) in tile_starts.take_while(|&(start, _)| start < self.n_bars) {
            let mut buffer = loop {
                match used.try_recv() {
                    Ok(buffer) => break buffer,
                    // The consumer has gone (an error, or bars it declined): nothing more to do.
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return false,
                    Err(std::sync::mpsc::TryRecvError::Empty) => {}
                }
                if allocated < RING_TILES {
                    allocated += 1;
                    break TileBuffer::default();
                }
                if background_left {
                    background_left = background();
                    continue;
                }
                match used.recv() {
                    Ok(buffer) => break buffer,
                    Err(_) => return false,
                }
            };
            buffer.bars = tile_start..(tile_start + tile_bars).min(self.n_bars);
            let cells = buffer.bars.len() * self.n_symbols;
            for tile in &mut buffer.cells {
                tile.clear();
                tile.resize(cells, f64::NAN);
            }
            let invalid = self.fill_tile_fields(&mut cursors, buffer.bars.clone(), bars, &mut buffer.cells);
            if invalid > 0 {
                let _ = sender.send(PivotTile::Invalid);
                return false;
            }
            pace.consumer_waited = Duration::from_nanos(consumer_waited.load(Relaxed));
            let derive_started = Instant::now();
            let mut derived = std::mem::take(&mut buffer.derived);
            derive(&buffer, &mut derived, pace);
            buffer.derived = derived;
            (pace.derived_for, pace.tiles_sent) = (pace.derived_for + derive_started.elapsed(), pace.tiles_sent + 1);
            pace.bars_sent = buffer.bars.end;
            if sender.send(PivotTile::Rows(buffer)).is_err() {
                return false;
            }
        }
        drop(sender);
        while background_left {
            background_left = background();
        }
        true
    }

    /// Per column, its first run: the cursors of [`GridRuns::fill_tile`] before the first tile.
    fn cursors(&self) -> Vec<usize> {
        self.column_start[..self.n_symbols].to_vec()
    }

    /// Every column's runs within the bars `tile` (tiles in time order): `copy_run(rows, first_cell)`
    /// copies the input rows `rows` into a tile's cells from `first_cell` on, one per bar (a stride
    /// of one bar's row of cells, `n_symbols`; the tile's cells of bar t, symbol i at
    /// `(t - tile.start) * n_symbols + i`); `next[i]` is column i's next run not yet copied to its end.
    fn fill_tile(&self, next: &mut [usize], tile: Range<usize>, copy_run: impl FnMut(Range<usize>, usize)) {
        self.fill_columns(next, 0..self.n_symbols, tile, copy_run);
    }

    /// [`GridRuns::fill_tile`] of the columns `columns` only.
    fn fill_columns(
        &self,
        next: &mut [usize],
        columns: Range<usize>,
        tile: Range<usize>,
        mut copy_run: impl FnMut(Range<usize>, usize),
    ) {
        let n = self.n_symbols;
        for (column, next) in next.iter_mut().enumerate().take(columns.end).skip(columns.start) {
            while *next < self.column_start[column + 1] {
                let (start, stop, row) = self.runs[*next];
                if start >= tile.end {
                    break;
                }
                let (from, to) = (start.max(tile.start), stop.min(tile.end));
                copy_run(row + (from - start)..row + (to - start), (from - tile.start) * n + column);
                if stop > tile.end {
                    break;
                }
                *next += 1;
            }
        }
    }
}

impl GridRuns {
    /// The five fields of every column's rows within the bars `tile` into a tile's `cells` (see
    /// [`copy_fields`]); the number of rows that fail the validation's value rules. Columns go in
    /// groups of [`COLUMN_GROUP`]: a group whose columns each have one run over the whole tile (in
    /// clean data, almost every group) is written a bar at a time, each bar's cells of the group one
    /// cache line, reading a stream per column; any other group run by run, column by column. A
    /// column at a time, each store went to a line of another bar, and a tile of five fields is
    /// larger than L1: most stores missed it.
    fn fill_tile_fields(
        &self,
        next: &mut [usize],
        tile: Range<usize>,
        bars: BarsView<'_>,
        cells: &mut [Vec<f64>; 5],
    ) -> usize {
        let n = self.n_symbols;
        let mut invalid = 0;
        for group_start in (0..n).step_by(COLUMN_GROUP) {
            let group = group_start..(group_start + COLUMN_GROUP).min(n);
            let first_rows = (group.len() == COLUMN_GROUP).then(|| self.whole_tile_rows(next, group_start, &tile));
            let Some(Some(first_rows)) = first_rows else {
                self.fill_columns(next, group, tile.clone(), |rows, first_cell| {
                    invalid += copy_fields(bars, rows, cells, first_cell, n)
                });
                continue;
            };
            let rows = tile.len();
            for &first_row in &first_rows {
                invalid += super::validate::invalid_rows(bars, first_row..first_row + rows);
            }
            for (field, field_cells) in fields_of(bars).iter().zip(cells.iter_mut()) {
                field.gather(bars, &first_rows, rows, &mut field_cells[group_start..], n);
            }
            for cursor in &mut next[group] {
                *cursor += usize::from(self.runs[*cursor].1 == tile.end); // that run is copied to its end
            }
        }
        invalid
    }

    /// The input row at the tile's first bar of each column of the group from `group_start`, when
    /// each of them has one run over the whole tile.
    fn whole_tile_rows(
        &self,
        next: &[usize],
        group_start: usize,
        tile: &Range<usize>,
    ) -> Option<[usize; COLUMN_GROUP]> {
        let mut first_rows = [0; COLUMN_GROUP];
        for (j, first_row) in first_rows.iter_mut().enumerate() {
            let column = group_start + j;
            let cursor = next[column];
            if cursor >= self.column_start[column + 1] {
                return None;
            }
            let (start, stop, row) = self.runs[cursor];
            if start > tile.start || stop < tile.end {
                return None;
            }
            *first_row = row + (tile.start - start);
        }
        Some(first_rows)
    }
}

/// The quote volume of a row: its turnover, else close × volume.
#[inline]
pub fn quote_volume(turnover: f64, close: f64, volume: f64) -> f64 {
    if turnover.is_finite() {
        turnover
    } else {
        close * volume
    }
}

/// Columns copied together by [`GridRuns::fill_tile_fields`]: 8 cells of a bar are a cache line.
const COLUMN_GROUP: usize = 8;

/// Copy the five fields of the input rows `rows` (open, high, low, close, quote volume) into the
/// tiles `cells`, from `first_cell` on with a stride of `n_symbols`; the number of rows that fail
/// the validation's value rules. The rows' columns are read once for both, while they are in cache
/// (against a pass over the tile per field: at 200 × 43 800 the streamed run's median went from
/// 259–268 to 258–259 ms, interleaved; kept as the simpler loop, one set of cursors for five).
fn copy_fields(
    bars: BarsView<'_>,
    rows: Range<usize>,
    cells: &mut [Vec<f64>; 5],
    first_cell: usize,
    n_symbols: usize,
) -> usize {
    let invalid = super::validate::invalid_rows(bars, rows.clone());
    for (field, tile) in fields_of(bars).iter().zip(cells.iter_mut()) {
        field.copy_run(bars, false, &mut 0, rows.clone(), tile[first_cell..].iter_mut().step_by(n_symbols));
    }
    invalid
}

/// Funding on the grid `ts` of `symbols` (see [`Panel::align_funding`]).
fn align_funding(timeframe: Timeframe, ts: &[i64], symbols: &[String], funding: &Funding) -> FundingGrid {
    let n_symbols = symbols.len();
    let mut rates = Array2::zeros((ts.len(), n_symbols));
    let mut events = Array2::from_elem((ts.len(), n_symbols), false);
    let mut has_data = vec![false; n_symbols];
    let index: HashMap<&str, usize> = symbols.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let column_of: Vec<Option<usize>> = funding.names.iter().map(|name| index.get(name.as_str()).copied()).collect();
    let first = ts.first().copied().unwrap_or(0);
    let step = timeframe.ms;
    for row in 0..funding.ts.len() {
        let Some(i) = column_of[funding.symbol[row] as usize] else {
            continue;
        };
        has_data[i] = true;
        let offset = funding.ts[row] - first;
        if offset < 0 {
            continue;
        }
        let t = (offset / step) as usize;
        if t < ts.len() && funding.rate[row].is_finite() {
            rates[[t, i]] += funding.rate[row];
            events[[t, i]] = true;
        }
    }
    FundingGrid::new(rates, events, has_data)
}

/// A matrix of the panel as its pivot fills it: a price column copied as it is, or the quote volume.
enum Field<'a> {
    Price(&'a [f64]),
    QuoteVolume,
}

/// The five matrices in the order of a panel's fields: open, high, low, close, quote volume.
fn fields_of(bars: BarsView<'_>) -> [Field<'_>; 5] {
    [
        Field::Price(bars.open),
        Field::Price(bars.high),
        Field::Price(bars.low),
        Field::Price(bars.close),
        Field::QuoteVolume,
    ]
}

impl Field<'_> {
    /// This field of `rows` input rows from each of `first_rows` (a group of columns) into `cells`:
    /// bar k's values go to `cells[k * n_symbols..][..COLUMN_GROUP]`, in the group's column order.
    fn gather(
        &self,
        bars: BarsView<'_>,
        first_rows: &[usize; COLUMN_GROUP],
        rows: usize,
        cells: &mut [f64],
        n_symbols: usize,
    ) {
        let lines = cells.chunks_mut(n_symbols).take(rows).map(|line| &mut line[..COLUMN_GROUP]);
        fn column(values: &[f64], row: usize, rows: usize) -> &[f64] {
            &values[row..row + rows]
        }
        match self {
            Field::Price(source) => {
                let sources = first_rows.map(|row| column(source, row, rows));
                for (k, line) in lines.enumerate() {
                    for (cell, source) in line.iter_mut().zip(&sources) {
                        *cell = source[k];
                    }
                }
            }
            Field::QuoteVolume => {
                let close = first_rows.map(|row| column(bars.close, row, rows));
                let volume = first_rows.map(|row| column(bars.volume, row, rows));
                match bars.turnover {
                    Some(turnover) => {
                        let turnover = first_rows.map(|row| column(turnover, row, rows));
                        for (k, line) in lines.enumerate() {
                            for (j, cell) in line.iter_mut().enumerate() {
                                *cell = quote_volume(turnover[j][k], close[j][k], volume[j][k]);
                            }
                        }
                    }
                    None => {
                        for (k, line) in lines.enumerate() {
                            for (j, cell) in line.iter_mut().enumerate() {
                                *cell = close[j][k] * volume[j][k];
                            }
                        }
                    }
                }
            }
        }
    }

    /// Write this field of the input rows `rows` into `cells`. The quote volume's copy, which reads
    /// the close and volume of each row anyway, also adds to `invalid` the rows that fail the
    /// validation's value rules when `check_values` (the runs hold every row once, so every row is
    /// counted once).
    fn copy_run(
        &self,
        bars: BarsView<'_>,
        check_values: bool,
        invalid: &mut usize,
        rows: Range<usize>,
        cells: StepBy<IterMut<'_, f64>>,
    ) {
        match self {
            Field::Price(source) => cells.zip(&source[rows]).for_each(|(cell, value)| *cell = *value),
            Field::QuoteVolume => {
                if check_values {
                    *invalid += super::validate::invalid_rows(bars, rows.clone());
                }
                let (close, volume) = (&bars.close[rows.clone()], &bars.volume[rows.clone()]);
                match bars.turnover {
                    Some(turnover) => cells.zip(&turnover[rows]).zip(close.iter().zip(volume)).for_each(
                        |((cell, &turnover), (&close, &volume))| *cell = quote_volume(turnover, close, volume),
                    ),
                    None => {
                        cells.zip(close.iter().zip(volume)).for_each(|(cell, (close, volume))| *cell = close * volume)
                    }
                }
            }
        }
    }
}

/// Bars per tile of the streamed pivot ([`Panel::stream_canonical`]): small, so that the engine
/// waits only for the first one and a tile of the five fields stays in the filling core's cache,
/// yet long enough that each column's run of input rows is read as a stream (2 KB a field): at
/// 200 × 43 800, 256 bars took the streamed run from 300 to 264 ms against 64 bars.
const TILE_BARS: usize = 256;
/// Bars of the first tile; each next one is twice as long, up to [`TILE_BARS`].
const FIRST_TILE_BARS: usize = 32;
/// Tile buffers in the ring between the pivot and the engine: enough that the pivot runs ahead of
/// the engine by more bars than the engine steps while one symbol is validated (the pivot's
/// background work comes a symbol at a time), few enough that they stay small beside the bars
/// (5 × 256 × N cells each: 16 MB in all at N = 200).
const RING_TILES: usize = 8;
/// Read tiles handed back together ([`PivotStream`]). Below [`RING_TILES`], so that whenever the
/// engine waits for a tile (none queued) the pivot holds a buffer to fill: it cannot be waiting
/// for one in turn.
const RETURN_BATCH: usize = 4;

/// Bars `bars` of the streamed pivot ([`Panel::stream_canonical`]): open, high, low, close and
/// quote volume, each row-major: symbol i of bar t at `(t - bars.start) * n_symbols + i`; and
/// what the filling thread derived from these bars (`D`, see [`Panel::stream_canonical`]).
#[derive(Debug, Default)]
pub struct TileBuffer<D = ()> {
    pub bars: Range<usize>,
    cells: [Vec<f64>; 5],
    pub derived: D,
}

impl<D> TileBuffer<D> {
    /// Bar t (in `self.bars`) with its open time and the given funding rates and events (one per
    /// symbol).
    pub fn bar_row_with<'a>(
        &'a self,
        t: usize,
        ts: i64,
        funding_rate: &'a [f64],
        funding_event: &'a [bool],
    ) -> crate::model::BarRow<'a> {
        tile_row(&self.cells, t - self.bars.start, ts, funding_rate, funding_event)
    }

    /// Bar t with its open time and funding, as the engine consumes it, beside what was derived for
    /// the tile, to take from.
    pub fn bar_row_and_derived<'a>(
        &'a mut self,
        t: usize,
        ts: i64,
        funding: &'a FundingGrid,
    ) -> (crate::model::BarRow<'a>, &'a mut D) {
        let row = tile_row(&self.cells, t - self.bars.start, ts, funding.rate_row(t), funding.event_row(t));
        (row, &mut self.derived)
    }
}

/// Row `k` of a tile's cells (open, high, low, close, quote volume) as a bar.
fn tile_row<'a>(
    cells: &'a [Vec<f64>; 5],
    k: usize,
    ts: i64,
    funding_rate: &'a [f64],
    funding_event: &'a [bool],
) -> crate::model::BarRow<'a> {
    let n = funding_rate.len();
    let row = k * n..(k + 1) * n;
    let [open, high, low, close, quote_volume] = cells;
    crate::model::BarRow {
        ts,
        open: &open[row.clone()],
        high: &high[row.clone()],
        low: &low[row.clone()],
        close: &close[row.clone()],
        quote_volume: &quote_volume[row],
        funding_rate,
        funding_event,
        mark_close: None,
    }
}

/// How well the consumer of [`Panel::stream_canonical`] is fed, as the filling thread is about to
/// derive the next tile: the tiles and bars sent before it, how long the consumer has waited for
/// tiles, and how long `derive` has taken, in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamPace {
    pub tiles_sent: usize,
    pub bars_sent: usize,
    pub consumer_waited: Duration,
    pub derived_for: Duration,
}

/// What the filling thread of [`Panel::stream_canonical`] hands over, in time order.
enum PivotTile<D> {
    Rows(TileBuffer<D>),
    /// A row of the bars failed the value rules: nothing more comes.
    Invalid,
}

/// The consumer's end of [`Panel::stream_canonical`]: the tiles in time order, each handed back
/// to the filling thread for reuse once the next one is asked for.
pub struct PivotStream<'s, D = ()> {
    tiles: std::sync::mpsc::Receiver<PivotTile<D>>,
    used: std::sync::mpsc::Sender<TileBuffer<D>>,
    current: Option<TileBuffer<D>>,
    /// Read tiles not yet handed back: they go back [`RETURN_BATCH`] at a time, so that a pivot
    /// waiting for a buffer is woken once per batch rather than once per tile.
    spent: Vec<TileBuffer<D>>,
    /// Nanoseconds this end waited for tiles ([`StreamPace::consumer_waited`]), the filling
    /// thread's background work it did meanwhile included (`background`, until it returns false):
    /// tiles were late all that time.
    waited: &'s AtomicU64,
    background: &'s (dyn Fn() -> bool + Sync),
    background_done: bool,
}

impl<D> PivotStream<'_, D> {
    /// The tile holding bar t (asked for in increasing t), or `None` when the stream stopped (a
    /// row failed the value rules, or the filling thread ended).
    pub fn tile_of(&mut self, t: usize) -> Option<&mut TileBuffer<D>> {
        if self.current.as_ref().is_none_or(|tile| !tile.bars.contains(&t)) {
            if let Some(done) = self.current.take() {
                self.spent.push(done);
                if self.spent.len() >= RETURN_BATCH {
                    // The filling thread may have finished: then the buffers are simply dropped.
                    self.spent.drain(..).for_each(|buffer| drop(self.used.send(buffer)));
                }
            }
            let next = self.tiles.try_recv().or_else(|_| self.wait_for_tile());
            match next {
                Ok(PivotTile::Rows(next)) => self.current = Some(next),
                Ok(PivotTile::Invalid) | Err(_) => return None,
            }
        }
        self.current.as_mut().filter(|tile| tile.bars.contains(&t))
    }

    /// The next tile once it is there. Until then this end does the filling thread's background
    /// work, a piece at a time: the filling thread is behind, and this thread would only wait.
    fn wait_for_tile(&mut self) -> Result<PivotTile<D>, std::sync::mpsc::RecvError> {
        let started = Instant::now();
        let next = self.help_until_tile();
        self.waited.fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
        next
    }

    fn help_until_tile(&mut self) -> Result<PivotTile<D>, std::sync::mpsc::RecvError> {
        use std::sync::mpsc::{RecvError, TryRecvError};
        while !self.background_done {
            match self.tiles.try_recv() {
                Ok(tile) => return Ok(tile),
                Err(TryRecvError::Disconnected) => return Err(RecvError),
                Err(TryRecvError::Empty) => self.background_done = !(self.background)(),
            }
        }
        self.tiles.recv()
    }
}

/// The grid a canonical pivot fills: bar open times and the symbols (the columns, in order).
pub struct PanelGrid<'a> {
    pub timeframe: Timeframe,
    pub ts: Vec<i64>,
    pub symbols: &'a [String],
}

impl PanelGrid<'_> {
    /// [`Panel::align_funding`] on this grid.
    pub fn align_funding(&self, funding: &Funding) -> FundingGrid {
        align_funding(self.timeframe, &self.ts, self.symbols, funding)
    }
}

/// Funding rates aligned to a panel (see [`Panel::align_funding`]): per bar t and symbol i, the
/// summed rate of the events that fall in bar t and whether there was one (a rate may be 0).
#[derive(Debug, Clone)]
pub struct FundingGrid {
    n_bars: usize,
    /// `T × N`, or `1 × N` when no symbol has an event: one zero row that stands for every bar, so
    /// a backtest without funding neither zeroes nor reads a `T × N` matrix.
    rates: Array2<f64>,
    events: Array2<bool>,
    pub has_data: Vec<bool>,
}

impl FundingGrid {
    /// A grid of `rates` and `events` (both `T × N`); `has_data[i]`: symbol i had a funding record.
    pub fn new(rates: Array2<f64>, events: Array2<bool>, has_data: Vec<bool>) -> Self {
        assert_eq!(rates.dim(), events.dim(), "rates and events of one grid");
        assert_eq!(rates.ncols(), has_data.len(), "one has_data per symbol");
        Self { n_bars: rates.nrows(), rates, events, has_data }
    }

    /// No funding data at all (every rate 0, every symbol reported as missing).
    pub fn empty(n_bars: usize, n_symbols: usize) -> Self {
        Self {
            n_bars,
            rates: Array2::zeros((1, n_symbols)),
            events: Array2::from_elem((1, n_symbols), false),
            has_data: vec![false; n_symbols],
        }
    }

    /// `(bars, symbols)`.
    pub fn dim(&self) -> (usize, usize) {
        (self.n_bars, self.rates.ncols())
    }

    /// The stored row that holds bar t.
    fn row_of(&self, t: usize) -> usize {
        debug_assert!(t < self.n_bars, "bar {t} of {}", self.n_bars);
        if self.rates.nrows() == self.n_bars {
            t
        } else {
            0
        }
    }

    /// Bar t's rates, one per symbol.
    pub fn rate_row(&self, t: usize) -> &[f64] {
        self.rates.row(self.row_of(t)).to_slice().expect("standard layout")
    }

    /// Bar t's events, one per symbol.
    pub fn event_row(&self, t: usize) -> &[bool] {
        self.events.row(self.row_of(t)).to_slice().expect("standard layout")
    }

    pub fn rate(&self, t: usize, i: usize) -> f64 {
        self.rates[[self.row_of(t), i]]
    }

    pub fn event(&self, t: usize, i: usize) -> bool {
        self.events[[self.row_of(t), i]]
    }

    /// Add a funding event of `rate` to symbol i in bar t (rates of one bar sum).
    pub fn add_event(&mut self, t: usize, i: usize, rate: f64) {
        assert!(t < self.n_bars, "bar {t} of {}", self.n_bars);
        if self.rates.nrows() != self.n_bars {
            let n_symbols = self.rates.ncols();
            self.rates = Array2::zeros((self.n_bars, n_symbols));
            self.events = Array2::from_elem((self.n_bars, n_symbols), false);
        }
        self.rates[[t, i]] += rate;
        self.events[[t, i]] = true;
    }

    /// The first `n_bars` bars.
    pub fn head(&self, n_bars: usize) -> FundingGrid {
        assert!(n_bars <= self.n_bars, "{n_bars} of {} bars", self.n_bars);
        let stored = if self.rates.nrows() == self.n_bars { n_bars } else { self.rates.nrows() };
        FundingGrid {
            n_bars,
            rates: self.rates.slice(ndarray::s![..stored, ..]).to_owned(),
            events: self.events.slice(ndarray::s![..stored, ..]).to_owned(),
            has_data: self.has_data.clone(),
        }
    }

    /// The aligned events as long funding (one event per bar with an event, at the bar's open,
    /// with the bar's summed rate): aligning it to `panel` again gives the same rates and events.
    pub fn to_funding(&self, panel: &Panel) -> Funding {
        let mut funding = Funding { names: panel.symbols.clone(), ..Funding::default() };
        if self.rates.nrows() != self.n_bars {
            return funding;
        }
        for i in 0..panel.n_symbols() {
            for t in 0..panel.n_bars() {
                if self.events[[t, i]] {
                    funding.ts.push(panel.ts[t]);
                    funding.symbol.push(i as u32);
                    funding.rate.push(self.rates[[t, i]]);
                }
            }
        }
        funding
    }
}

/// Grids are equal when every bar's rates and events and `has_data` are, however they are stored.
impl PartialEq for FundingGrid {
    fn eq(&self, other: &Self) -> bool {
        self.dim() == other.dim()
            && self.has_data == other.has_data
            && (0..self.n_bars)
                .all(|t| self.rate_row(t) == other.rate_row(t) && self.event_row(t) == other.event_row(t))
    }
}

#[cfg(test)]
mod tests {
    use super::{Bars, FundingGrid, Panel};
    use crate::timeframe::Timeframe;
    use ndarray::Array2;

    /// The streamed tiles hold the cells of the usual pivot, bit for bit: groups of eight columns
    /// with one run over a tile (copied a bar at a time), a column that starts inside a tile, one
    /// with a gap, a group of fewer than eight, turnover with holes (close × volume stands in).
    #[test]
    fn the_streamed_tiles_hold_the_cells_of_the_pivot() {
        let timeframe = Timeframe::parse("1h").expect("1h");
        let (n_bars, n_symbols, step) = (900usize, 19usize, timeframe.ms);
        let mut bars = Bars { turnover: Some(Vec::new()), ..Bars::default() };
        bars.names = (0..n_symbols).map(|i| format!("S{i:02}")).collect();
        for i in 0..n_symbols {
            let listed = |t: usize| match i {
                10 => t >= 300, // lists inside a tile
                12 => t != 500, // one bar missing
                17 => t < 700,  // delisted inside a tile
                _ => true,
            };
            for t in (0..n_bars).filter(|&t| listed(t)) {
                let close = 100.0 + i as f64 + (t as f64 * 0.37 + i as f64).sin();
                let open = close * (1.0 + 0.001 * ((t + i) % 5) as f64 - 0.002);
                bars.ts.push(1_700_000_000_000 - 1_700_000_000_000 % step + t as i64 * step);
                bars.symbol.push(i as u32);
                bars.open.push(open);
                bars.high.push(open.max(close) * 1.01);
                bars.low.push(open.min(close) * 0.99);
                bars.close.push(close);
                bars.volume.push(1_000.0 + ((t * 7 + i) % 13) as f64);
                let quote = if (t + i) % 7 == 0 { f64::NAN } else { 5e5 + (t * 3 + i) as f64 };
                bars.turnover.as_mut().expect("turnover").push(quote);
            }
        }
        let (panel, _) = Panel::canonical_view(bars.view(), timeframe, true).expect("the usual pivot");
        let streamed = Panel::stream_canonical(
            bars.view(),
            timeframe,
            |grid, mut stream| {
                let mut fields: [Vec<u64>; 5] = Default::default();
                for t in 0..grid.ts.len() {
                    let tile = stream.tile_of(t).expect("a tile per bar");
                    let k = t - tile.bars.start;
                    for (field, cells) in fields.iter_mut().zip(&tile.cells) {
                        field.extend(cells[k * n_symbols..(k + 1) * n_symbols].iter().map(|v| v.to_bits()));
                    }
                }
                fields
            },
            || false,
            |_, _: &mut (), _| {},
        )
        .expect("streamable bars");
        let usual = [&panel.open, &panel.high, &panel.low, &panel.close, &panel.quote_volume];
        for (name, (cells, matrix)) in
            ["open", "high", "low", "close", "quote volume"].iter().zip(streamed.iter().zip(usual))
        {
            let want: Vec<u64> = matrix.iter().map(|v| v.to_bits()).collect();
            assert_eq!(cells, &want, "{name}");
        }
        assert!(panel.close[[299, 10]].is_nan() && panel.close[[500, 12]].is_nan() && panel.close[[800, 17]].is_nan());
    }

    #[test]
    fn an_empty_funding_grid_reads_as_zeros_at_every_bar_and_fills_in_on_the_first_event() {
        let (n_bars, n_symbols) = (5, 3);
        let mut grid = FundingGrid::empty(n_bars, n_symbols);
        let zeros = FundingGrid::new(
            Array2::zeros((n_bars, n_symbols)),
            Array2::from_elem((n_bars, n_symbols), false),
            vec![false; n_symbols],
        );
        assert_eq!(grid.dim(), (n_bars, n_symbols));
        assert_eq!(grid, zeros);
        assert!((0..n_bars).all(|t| grid.rate_row(t) == [0.0; 3] && grid.event_row(t) == [false; 3]));
        assert_eq!(grid.head(2), zeros.head(2));
        assert_eq!(grid.head(2).dim(), (2, n_symbols));
        grid.add_event(4, 1, 0.001);
        grid.add_event(4, 1, 0.002);
        assert_eq!((grid.rate(4, 1), grid.event(4, 1)), (0.003, true));
        assert!((0..4).all(|t| !grid.event(t, 1) && grid.rate(t, 1) == 0.0));
        assert_ne!(grid, zeros);
        assert_eq!(grid.head(4), zeros.head(4));
    }
}
