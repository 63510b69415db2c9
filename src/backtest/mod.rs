//! The one-pass backtest engine (backtest.md).
//!
//! [`Engine::step`] consumes one bar: it advances the streaming causal indicators of
//! [`IndicatorState`] (no `T × N` matrices), then does the path-dependent part in the order of
//! backtest.md's per-bar sequence. The engine is split by responsibility:
//! - `strategy` — signals to the admitted target (eligibility, cross-section, regime, selection,
//!   sizing, carry, admission, meta-labeler);
//! - `account` — the accounting mode as an enum (`units.rs`: units bought at fill prices, with
//!   stops, the kill-switch and resting orders; constant weights);
//! - `cadence` — when the engine decides (first decision bar, `rebalance_every`, warm windows);
//! - `recorder` — the outputs, appended bar by bar.
//!
//! The backtester feeds the engine the panel's rows; the live runner feeds it bars as they close.

mod account;
mod cadence;
mod diagnose;
mod indicators;
pub mod ledger;
pub mod output;
mod recorder;
mod strategy;
mod units;
pub use diagnose::diagnose;

use std::sync::Arc;

use ndarray::Array2;

use self::account::Account;
use self::cadence::Cadence;
use self::recorder::{with_base_bar, Recorder};
use self::strategy::Strategy;
use crate::bitset::SymbolSet;
use crate::config::Config;
use crate::data::{FundingGrid, Panel, StreamPace, TileBuffer};
use crate::error::{Error, Result};
use crate::meta_label::{MetaLabeler, MetaSkip};
use crate::metrics::{self, Metrics};
use crate::model::{BarRow, Fill, RoundTrip};
use crate::risk::RiskEngine;
use crate::signal::finite;
use crate::timeframe::Timeframe;

pub use account::{BarOrder, RestingOrder};
pub use indicators::{IndicatorChunk, IndicatorKernels, IndicatorState};
pub use ledger::Ledger;
pub use recorder::{BarSeries, BookHistory, OutputBuffers, SignalRecord};

/// Everything a backtest produces.
#[derive(Debug, Clone)]
pub struct BacktestResult {
    pub symbols: Vec<String>,
    pub ts: Vec<i64>,
    pub bars: BarSeries,
    pub book: BookHistory,
    /// `listed[t, i]`: the symbol had a close at t (rows of the long weights output).
    pub listed: Array2<bool>,
    pub fills: Vec<Fill>,
    pub round_trips: Vec<RoundTrip>,
    pub metrics: Metrics,
    /// First bar that could trade; metrics are measured from here on.
    pub first_decision: Option<usize>,
    pub warnings: Vec<String>,
    pub signals: Option<SignalRecord>,
    /// Entries the meta-labeler skipped (empty when `strategy.meta_label` is off).
    pub meta_skipped: Vec<MetaSkip>,
}

impl BacktestResult {
    /// Admitted target weights as a dense `T × N` matrix.
    pub fn target_weights(&self) -> Array2<f64> {
        self.book.dense(&self.book.target_weight, self.symbols.len())
    }
    /// The strategy's target weights before admission, as a dense `T × N` matrix.
    pub fn model_weights(&self) -> Array2<f64> {
        self.book.dense(&self.book.model_weight, self.symbols.len())
    }
    /// Weights held after each bar's trades, marked at the close, as a dense `T × N` matrix.
    pub fn weights(&self) -> Array2<f64> {
        self.book.dense(&self.book.weight, self.symbols.len())
    }
    /// Positions in units after each bar, as a dense `T × N` matrix.
    pub fn units(&self) -> Array2<f64> {
        self.book.dense(&self.book.units, self.symbols.len())
    }
}

/// Run a backtest over the whole panel.
pub fn run(panel: &Panel, funding: &FundingGrid, cfg: &Config) -> Result<BacktestResult> {
    run_with(panel, funding, cfg, false)
}

/// Run a backtest, optionally recording z-scores, signals and eligibility per bar.
pub fn run_with(panel: &Panel, funding: &FundingGrid, cfg: &Config, record_signals: bool) -> Result<BacktestResult> {
    run_in(panel, funding, cfg, record_signals, OutputBuffers::default())
}

/// [`run_with`] writing its outputs into `buffers` (see [`OutputBuffers::recycle`]).
pub fn run_in(
    panel: &Panel,
    funding: &FundingGrid,
    cfg: &Config,
    record_signals: bool,
    buffers: OutputBuffers,
) -> Result<BacktestResult> {
    run_window_in(panel, funding, cfg, 0..panel.n_bars(), record_signals, buffers)
}

/// A warm backtest over the window `[trade_from, trade_to)` of the panel (research.md §1): the bars
/// before `trade_from` only advance the causal indicators (history is not leakage), trading,
/// equity (from `initial_capital`), outputs and metrics start at `trade_from`, and no bar at or
/// after `trade_to` is read. Path-dependent state (stops, kill-switch, scoring) starts fresh at
/// `trade_from`; the rebalance cadence keeps the phase it would have in a run over the whole panel.
pub fn run_window(
    panel: &Panel,
    funding: &FundingGrid,
    cfg: &Config,
    trade_from: usize,
    trade_to: usize,
    record_signals: bool,
) -> Result<BacktestResult> {
    run_window_in(panel, funding, cfg, trade_from..trade_to, record_signals, OutputBuffers::default())
}

/// [`run_window`] over `window` writing its outputs into `buffers` (see [`OutputBuffers::recycle`]).
/// A window of the whole panel is a plain run.
pub fn run_window_in(
    panel: &Panel,
    funding: &FundingGrid,
    cfg: &Config,
    window: std::ops::Range<usize>,
    record_signals: bool,
    buffers: OutputBuffers,
) -> Result<BacktestResult> {
    let (trade_from, trade_to) = (window.start, window.end);
    let (n_bars, n_symbols) = (panel.n_bars(), panel.n_symbols());
    if n_symbols == 0 || n_bars == 0 {
        return Err(Error::invalid(EMPTY_UNIVERSE));
    }
    if funding.dim() != (n_bars, n_symbols) {
        return Err(Error::invalid(FUNDING_MISMATCH));
    }
    if trade_from >= trade_to || trade_to > n_bars {
        return Err(Error::invalid(format!(
            "window [{trade_from}, {trade_to}) is empty or outside the panel's {n_bars} bars"
        )));
    }
    let mut engine = Engine::new(&panel.symbols, panel.timeframe, &funding.has_data, cfg, record_signals)?;
    engine.use_buffers(buffers);
    engine.reserve(trade_to - trade_from);
    let threaded = trade_to >= MIN_BARS_FOR_INDICATOR_THREAD
        && crate::threads::spare_core()
        && drive_with_indicator_thread(&mut engine, panel, funding, window);
    if !threaded {
        for t in 0..trade_from {
            engine.warm(&panel.bar_row(t, funding));
        }
        for t in trade_from..trade_to {
            engine.step(&panel.bar_row(t, funding));
        }
    }
    Ok(engine.finish())
}

/// Where a bar's indicators come from.
enum Indicators {
    Compute,
    /// Row k of the chunk the indicator state holds ([`IndicatorState::hold_rows`]), which kernels
    /// on another thread computed over the same bars.
    Replay(usize),
}

/// Below this many bars a run computes its indicators itself: starting a thread and handing
/// chunks over would cost more than it saves.
const MIN_BARS_FOR_INDICATOR_THREAD: usize = 1024;
/// Chunks of indicator rows in flight (the indicator thread computes at most this many ahead of
/// the engine), and the size of the largest chunk. Chunks start small, so the engine starts soon,
/// and grow, so that a handover is rare. The engine's side never waits on the other thread unless
/// it has caught up with it, and neither side has to wake the other: both poll ([`next_chunk`],
/// [`compute_chunks`]), since a system call and a wake-up of the other core cost tens of
/// microseconds on a VM, more than a chunk of small handovers is worth.
const CHUNKS_IN_FLIGHT: usize = 8;
const CHUNK_BYTES: usize = 512 << 10;

/// Bars `0..window.end` of the panel through `engine` (warm before `window.start`), the indicator
/// kernels running on a second thread, up to [`CHUNKS_IN_FLIGHT`] chunks ahead; false, with no bar
/// stepped, when no thread could be started. The kernels depend on the bars alone, not on anything
/// the engine decides, so the values are the ones the engine would compute
/// (`tests/indicator_thread.rs` compares every output with a run on one thread); the engine keeps
/// the windows it looks back into itself.
///
/// A new thread began running 180–330 µs after its spawn on this VM: until it has started, the
/// engine computes the bars itself, then hands its kernels, advanced through those bars, over to
/// the thread, which goes on from there (the early bars are the cheap ones of the warm-up, so the
/// engine got through 89–307 of them in that time instead of waiting).
fn drive_with_indicator_thread(
    engine: &mut Engine,
    panel: &Panel,
    funding: &FundingGrid,
    window: std::ops::Range<usize>,
) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    let fresh = IndicatorKernels::new(&panel.symbols, panel.timeframe, &engine.cfg);
    let max_rows = (CHUNK_BYTES / fresh.row_bytes()).clamp(64, 4096);
    let (full_tx, full_rx) = mpsc::channel::<IndicatorChunk>();
    let (spare_tx, spare_rx) = mpsc::channel::<IndicatorChunk>();
    let (handover_tx, handover_rx) = mpsc::channel::<(IndicatorKernels, usize)>();
    let started = AtomicBool::new(false);
    // The chunks of this thread's last run, if any: memory already faulted in. Freed and allocated
    // again, it came back as fresh pages (zeroed by the kernel) in about one run in two.
    let mut kept = SPARE_CHUNKS.with_borrow_mut(std::mem::take);
    for _ in 0..CHUNKS_IN_FLIGHT {
        let chunk = kept.pop().unwrap_or_default().reused_for(&fresh, max_rows);
        spare_tx.send(chunk).expect("the receiver is here");
    }
    std::thread::scope(|scope| {
        // The engine's ends of the channels belong to this closure, so that a panic on its side
        // drops them: the indicator thread then stops (its channels disconnect) rather than wait
        // for chunks or kernels forever while the scope waits for it.
        let (full_rx, spare_tx, handover_tx) = (full_rx, spare_tx, handover_tx);
        let indicators = std::thread::Builder::new().name("xsmom-indicators".into());
        let started = &started;
        let indicator_thread = indicators.spawn_scoped(scope, move || {
            started.store(true, Ordering::Release);
            // The engine sends its kernels at its next bar (none when it had no bar left for this thread).
            let Some((kernels, from)) = poll(&handover_rx, std::thread::yield_now) else { return Vec::new() };
            compute_chunks(kernels, panel, funding, from..window.end, max_rows, &spare_rx, &full_tx);
            spare_rx.try_iter().collect()
        });
        let Ok(indicator_thread) = indicator_thread else {
            return false; // no thread to be had: the engine computes its indicators itself
        };
        let step = |engine: &mut Engine, t: usize, indicators: Indicators| {
            let bar = panel.bar_row(t, funding);
            if t < window.start {
                engine.warm_with(&bar, indicators);
            } else {
                engine.step_with(&bar, indicators);
            }
        };
        let mut t = 0;
        while t < window.end && !started.load(Ordering::Acquire) {
            step(engine, t, Indicators::Compute);
            t += 1;
        }
        if t < window.end {
            let advanced = engine.ind.exchange_kernels(fresh);
            handover_tx.send((advanced, t)).expect("the indicator thread waits for the kernels");
        }
        drop(handover_tx);
        while t < window.end {
            let chunk = next_chunk(&full_rx);
            let rows = chunk.len();
            let replayed = engine.ind.hold_rows(chunk);
            for k in 0..rows {
                step(engine, t, Indicators::Replay(k));
                t += 1;
            }
            // The state's own one-row chunk is none of the thread's. Sending fails once the thread
            // has finished: the chunk is then kept here.
            if replayed.len() > 1 {
                if let Err(mpsc::SendError(chunk)) = spare_tx.send(replayed) {
                    kept.push(chunk);
                }
            }
        }
        kept.extend(indicator_thread.join().expect("the indicator thread panicked"));
        kept.push(engine.ind.release_rows());
        kept.truncate(CHUNKS_IN_FLIGHT);
        SPARE_CHUNKS.with_borrow_mut(|spare| *spare = kept);
        true
    })
}

/// The next message of `channel`, polled with `idle` between tries (so that the sender never has
/// to wake this thread); `None` once the sender is gone (nothing left to send, or it panicked).
fn poll<T>(channel: &std::sync::mpsc::Receiver<T>, idle: impl Fn()) -> Option<T> {
    loop {
        match channel.try_recv() {
            Ok(message) => return Some(message),
            Err(std::sync::mpsc::TryRecvError::Empty) => idle(),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
        }
    }
}

/// The next chunk from the indicator thread. Polled for up to [`POLL_BEFORE_BLOCKING`] before
/// the engine blocks: a blocked receiver is woken by the sender's system call, and the wake-up of
/// an idle core took 50–100 µs on this VM, several times the 16 rows of a first chunk.
fn next_chunk(full: &std::sync::mpsc::Receiver<IndicatorChunk>) -> IndicatorChunk {
    let polling_since = std::time::Instant::now();
    loop {
        match full.try_recv() {
            Ok(chunk) => return chunk,
            // Yielding, not spinning: should both threads share a core, the indicator thread runs.
            Err(std::sync::mpsc::TryRecvError::Empty) if polling_since.elapsed() < POLL_BEFORE_BLOCKING => {
                std::thread::yield_now()
            }
            Err(_) => return full.recv().expect("the indicator thread stopped early"),
        }
    }
}

/// How long the engine polls for a chunk before it blocks ([`next_chunk`]).
const POLL_BEFORE_BLOCKING: std::time::Duration = std::time::Duration::from_millis(1);

/// The indicator thread's work: the kernels' outputs of the bars in `bars`, in chunks taken from
/// `spare` (16 rows first, then twice as many each time up to `max_rows`) and sent to `full`.
fn compute_chunks(
    mut kernels: IndicatorKernels,
    panel: &Panel,
    funding: &FundingGrid,
    bars: std::ops::Range<usize>,
    max_rows: usize,
    spare: &std::sync::mpsc::Receiver<IndicatorChunk>,
    full: &std::sync::mpsc::Sender<IndicatorChunk>,
) {
    let (mut start, mut rows) = (bars.start, 16);
    while start < bars.end {
        // Wait for the engine to give a chunk back, without asking it to wake this thread.
        let idle = || std::thread::sleep(std::time::Duration::from_micros(50));
        let Some(mut chunk) = poll(spare, idle) else { return }; // the engine's side panicked
        let end = (start + rows).min(bars.end);
        chunk.reset_for(&kernels, end - start);
        for (k, t) in (start..end).enumerate() {
            kernels.advance_into(&panel.bar_row(t, funding), &mut chunk, k);
        }
        if full.send(chunk).is_err() {
            return;
        }
        (start, rows) = (end, (2 * rows).min(max_rows));
    }
}

thread_local! {
    /// The indicator chunks of the last run with an indicator thread that this thread drove, for
    /// its next one (a sweep's runs on a worker thread, a benchmark's repeats): at most
    /// [`CHUNKS_IN_FLIGHT`] chunks of about [`CHUNK_BYTES`] each stay allocated per thread.
    static SPARE_CHUNKS: std::cell::RefCell<Vec<IndicatorChunk>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What the streamed pivot's thread derives for a tile of bars ([`derive_indicators`]): the
/// tile's indicator rows, or nothing once it has handed the kernels to the engine — with the first
/// tile it did not compute, so that the engine computes that tile and every later one itself.
#[derive(Debug, Default)]
pub struct TileIndicators {
    chunk: IndicatorChunk,
    computed: bool,
    /// The kernels, advanced through every bar before this tile.
    handed_over: Option<Box<IndicatorKernels>>,
}

/// The indicator kernels of `cfg` as the streamed pivot's derived work
/// ([`crate::data::Panel`]'s `stream_canonical`): each tile's bars through the kernels, in time
/// order, into its rows, for [`Engine::step_derived`] on the engine's thread — until
/// `hand_over(pace)` says the engine keeps waiting for tiles (the pivot's thread has more to do than
/// the engine: many symbols), when the kernels go to the engine with the next tile, for good.
pub fn derive_indicators(
    symbols: &[String],
    timeframe: Timeframe,
    cfg: &Config,
    mut hand_over: impl FnMut(StreamPace) -> bool + Send,
) -> impl FnMut(&TileBuffer<TileIndicators>, &mut TileIndicators, StreamPace) + Send {
    let mut kernels = Some(Box::new(IndicatorKernels::new(symbols, timeframe, cfg)));
    // The kernels read prices and volumes only: funding is left out of their bars.
    let (no_rates, no_events) = (vec![0.0; symbols.len()], vec![false; symbols.len()]);
    move |tile, derived, pace| {
        derived.computed = false;
        if kernels.is_some() && hand_over(pace) {
            derived.handed_over = kernels.take();
        }
        let Some(kernels) = kernels.as_mut() else { return };
        derived.chunk.reset_for(kernels, tile.bars.len());
        for (k, t) in tile.bars.clone().enumerate() {
            kernels.advance_into(&tile.bar_row_with(t, 0, &no_rates, &no_events), &mut derived.chunk, k);
        }
        derived.computed = true;
    }
}

/// Where the streamed pivot's kernels run best, measured as the run goes: they move to the engine
/// once the engine has waited for tiles longer than the pivot's thread spent on the kernels. The
/// pivot's thread is then the slower one and would still be without the kernels (its other work
/// takes longer than the engine's), so the run ends sooner with them on the engine. Measured from
/// the first tile past `warm_up_bars`, over [`PACE_WINDOW`] at least: before its first decisions the
/// engine has little to do and outruns any pivot.
pub fn kernels_where_faster(warm_up_bars: usize) -> impl FnMut(StreamPace) -> bool + Send {
    let mut from: Option<(std::time::Instant, StreamPace)> = None;
    move |pace| {
        if pace.bars_sent < warm_up_bars {
            return false;
        }
        let now = std::time::Instant::now();
        let (since, start) = *from.get_or_insert((now, pace));
        now - since >= PACE_WINDOW
            && pace.consumer_waited - start.consumer_waited > pace.derived_for - start.derived_for
    }
}

/// The shortest span [`kernels_where_faster`] measures: a few full tiles of a small panel (a
/// 256-bar tile of 32 symbols fills in ~0.25 ms).
const PACE_WINDOW: std::time::Duration = std::time::Duration::from_millis(1);

const EMPTY_UNIVERSE: &str = "empty universe: the panel has no symbols or no bars";
const FUNDING_MISMATCH: &str = "funding grid does not match the panel";

/// Path-dependent state of one backtest, advanced bar by bar with [`Engine::step`].
pub struct Engine {
    cfg: Arc<Config>,
    symbols: Vec<String>,
    timeframe: Timeframe,
    bars_per_year: f64,
    ind: IndicatorState,
    /// Index of the next bar to step (bars are counted from the first one fed).
    t: usize,
    /// Open time of the bar being stepped.
    bar_ts: i64,
    /// Signals to the admitted target.
    strategy: Strategy,
    /// Positions, cash and the fills that made them (both accounting modes keep it).
    ledger: Ledger,
    /// The accounting mode's own state; `None` only while [`Engine::step`] steps it. Boxed, so that
    /// taking it out and putting it back each bar moves a pointer: moving the book itself stored
    /// its fields one word at a time and then loaded them as wider vectors, which stalls.
    account: Option<Box<Account>>,
    risk: RiskEngine,
    cadence: Cadence,
    recorder: Recorder,
    /// Last valid close per symbol (valuation of positions over missing bars).
    last_price: Vec<f64>,
    /// What this bar did besides rebalancing, for the live runner ([`Engine::bar_orders`]).
    bar_orders: Vec<BarOrder>,
    /// This bar was a decision bar: the account is steered to the target (at this close, at the
    /// next open, or with resting limits, by the fill model).
    decided: bool,
    /// Scratch set: symbols with a target or a position (the only ones a rebalance or the book
    /// record can touch).
    active: SymbolSet,
    warnings: Vec<String>,
}

impl Engine {
    /// An engine for `symbols` (the panel's columns, in order) on `timeframe`; `funding_has_data[i]`
    /// tells whether symbol i has any funding data (a warning otherwise).
    pub fn new(
        symbols: &[String],
        timeframe: Timeframe,
        funding_has_data: &[bool],
        cfg: &Config,
        record_signals: bool,
    ) -> Result<Self> {
        let n_symbols = symbols.len();
        if n_symbols == 0 {
            return Err(Error::invalid(EMPTY_UNIVERSE));
        }
        if funding_has_data.len() != n_symbols {
            return Err(Error::invalid(FUNDING_MISMATCH));
        }
        // An empty universe is a configuration error; a panel too short for any symbol to qualify
        // yet is not (the live runner steps through such bars at the start).
        let u = &cfg.universe;
        if !symbols.iter().any(|s| (u.include.is_empty() || u.include.contains(s)) && !u.exclude.contains(s)) {
            return Err(Error::invalid(format!(
                "empty universe: none of the {n_symbols} symbols of the data ({}) is left by universe.include {:?} \
                 and universe.exclude {:?}",
                abbreviate(symbols),
                u.include,
                u.exclude
            )));
        }
        let cfg = Arc::new(cfg.clone());
        let capital = cfg.backtest.initial_capital;
        let bars_per_year = timeframe.bars_per_year();
        Ok(Self {
            symbols: symbols.to_vec(),
            timeframe,
            bars_per_year,
            ind: IndicatorState::new(symbols, timeframe, &cfg),
            t: 0,
            bar_ts: 0,
            strategy: Strategy::new(&cfg, symbols, timeframe.ms, bars_per_year),
            ledger: Ledger::new(capital, n_symbols),
            account: Some(Box::new(Account::new(cfg.backtest.accounting, n_symbols, capital))),
            risk: RiskEngine::new(&cfg, n_symbols, timeframe),
            cadence: Cadence::new(&cfg),
            recorder: Recorder::new(record_signals),
            last_price: vec![f64::NAN; n_symbols],
            bar_orders: Vec::new(),
            decided: false,
            active: SymbolSet::new(n_symbols),
            warnings: startup_warnings(symbols, funding_has_data, &cfg),
            cfg,
        })
    }

    /// Write the outputs into `buffers` (emptied, their capacity kept) instead of fresh vectors.
    /// Only before the first bar.
    pub fn use_buffers(&mut self, buffers: OutputBuffers) {
        assert_eq!(self.t + self.cadence.warm_bars(), 0, "buffers are given before the first bar");
        let (fills, round_trips) = self.recorder.use_buffers(buffers);
        self.ledger.fills = fills;
        self.ledger.round_trips = round_trips;
    }

    /// Room for `n_bars` bars of outputs, so that they are allocated once instead of growing by
    /// doubling (each growth copies and faults in fresh pages). Book entries and fills are sized by
    /// the book the strategy can hold; a run that trades more grows them as usual.
    pub fn reserve(&mut self, n_bars: usize) {
        let n_symbols = self.symbols.len();
        let book_size = n_symbols.min(2 * self.cfg.strategy.k_max + 2);
        self.recorder.reserve(n_bars, n_symbols, book_size);
        self.ledger.fills.reserve(n_bars * book_size / 2);
        self.ledger.round_trips.reserve(n_bars * book_size / 4);
        if let Some(meta) = self.strategy.meta.as_mut() {
            // A skipped entry is proposed again at the next decision: up to a book's worth per bar.
            meta.reserve_skipped(n_bars * book_size / 2);
        }
    }

    /// Bars stepped so far.
    pub fn bars(&self) -> usize {
        self.t
    }

    /// Admitted target weights of the last decision (0 = flat): what the engine trades toward.
    pub fn target_weights(&self) -> &[f64] {
        &self.strategy.target
    }

    /// The strategy's target weights of the last decision, before admission.
    pub fn model_weights(&self) -> &[f64] {
        &self.strategy.model_target
    }

    /// Whether the last bar stepped was a decision bar (the book is steered to [`Engine::target_weights`]).
    pub fn decided(&self) -> bool {
        self.decided
    }

    /// Exits and expired limits of the last bar stepped, in the order they happened.
    pub fn bar_orders(&self) -> &[BarOrder] {
        &self.bar_orders
    }

    /// The resting `limit_touch` order of symbol i after the last bar.
    pub fn resting_order(&self, symbol: usize) -> Option<&RestingOrder> {
        match self.account.as_deref() {
            Some(Account::Units(book)) => book.resting[symbol].as_ref(),
            Some(Account::Weights(_)) | None => None,
        }
    }

    /// Units held by the engine's own book after the last bar (`accounting: units`).
    pub fn units(&self) -> &[f64] {
        &self.ledger.units
    }

    /// ATR per symbol at the last bar (`None` when stops are off).
    pub fn atr(&self) -> Option<&[f64]> {
        self.ind.atr()
    }

    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    pub fn timeframe(&self) -> Timeframe {
        self.timeframe
    }

    /// The model's risk state machines (stops, cooldowns, scoring) after the last bar.
    pub fn risk(&self) -> &RiskEngine {
        &self.risk
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The meta-labeler's state (`None` when `strategy.meta_label` is off).
    pub fn meta_label(&self) -> Option<&MetaLabeler> {
        self.strategy.meta.as_ref()
    }

    /// Advance one bar (the next one after the last stepped), in the order of backtest.md's
    /// per-bar sequence: indicators, then the accounting mode's steps (fills due, funding, marks,
    /// stops, kill-switch, the decision and its trades), then the record. Every slice of `bar` has
    /// one entry per symbol, in the order given to [`Engine::new`].
    pub fn step(&mut self, bar: &BarRow<'_>) {
        self.step_with(bar, Indicators::Compute);
    }

    /// [`Engine::step`] of bar `k` of a streamed tile with what [`derive_indicators`] (made for
    /// this engine's symbols, timeframe and config) derived for the tile: its indicators replayed,
    /// or computed here, with the kernels handed over at the tile's first bar.
    pub fn step_derived(&mut self, bar: &BarRow<'_>, derived: &mut TileIndicators, k: usize) {
        if let Some(kernels) = derived.handed_over.take() {
            debug_assert_eq!(k, 0, "kernels come with a tile's first bar");
            self.ind.adopt_kernels(*kernels);
        }
        if derived.computed {
            if k == 0 {
                // The tile's rows are held, the ones held so far go back with the tile.
                derived.chunk = self.ind.hold_rows(std::mem::take(&mut derived.chunk));
            }
            self.step_with(bar, Indicators::Replay(k));
        } else {
            self.step(bar);
        }
    }

    /// [`Engine::step`] with the indicators either computed here or replayed from rows a
    /// second thread recorded ([`IndicatorState::replay`]).
    fn step_with(&mut self, bar: &BarRow<'_>, indicators: Indicators) {
        let t = self.t;
        self.observe(bar, indicators);
        self.recorder.start_bar(bar.ts, bar.close);
        self.bar_orders.clear();
        self.decided = false;
        let mut account = self.account.take().expect("the account is in place between bars");
        match account.as_mut() {
            Account::Units(book) => self.step_units(t, bar, book),
            Account::Weights(book) => self.step_weights(t, bar, book),
        }
        self.account = Some(account);
        self.t += 1;
    }

    /// Advance the data-driven state only (indicators, last prices, funding history, dispersion,
    /// regime) by one bar before trading starts: no decisions, fills or outputs. Only valid before
    /// the first [`Engine::step`].
    pub fn warm(&mut self, bar: &BarRow<'_>) {
        self.warm_with(bar, Indicators::Compute);
    }

    fn warm_with(&mut self, bar: &BarRow<'_>, indicators: Indicators) {
        assert_eq!(self.t, 0, "warm-up bars come before the first traded bar");
        self.observe(bar, indicators);
        self.mark_closes(bar.close);
        let cross = self.strategy.cross_section(self.cadence.warm_bars(), &self.ind, &self.risk, None);
        self.strategy.update_regime(&self.ind);
        self.cadence.warm(cross.map_or(0, |c| c.count));
    }

    /// Step 1 of a bar, shared by [`Engine::step`] and [`Engine::warm`]: the indicators and what
    /// the sleeves keep of the bar's data.
    fn observe(&mut self, bar: &BarRow<'_>, indicators: Indicators) {
        self.bar_ts = bar.ts;
        match indicators {
            Indicators::Compute => self.ind.update(bar),
            Indicators::Replay(k) => self.ind.replay(k),
        }
        self.strategy.observe(bar);
    }

    /// The last valid close per symbol, after bar `close`.
    fn mark_closes(&mut self, close: &[f64]) {
        for (last, c) in self.last_price.iter_mut().zip(close) {
            *last = if finite(*c) { *c } else { *last };
        }
    }

    /// Collect outputs and metrics.
    pub fn finish(self) -> BacktestResult {
        let first_decision = self.cadence.first_decision();
        let recorder = self.recorder;
        let metrics = if self.cadence.warm_bars() > 0 {
            // A warm window: the base E_0 is the initial capital just before its first bar.
            let based = with_base_bar(&recorder.out, self.cfg.backtest.initial_capital);
            metrics::compute(based.equity_path(), &self.ledger.round_trips, 0, self.bars_per_year)
        } else {
            let start = first_decision.map(|f| f.saturating_sub(1)).unwrap_or(0);
            metrics::compute(recorder.out.equity_path(), &self.ledger.round_trips, start, self.bars_per_year)
        };
        let (n_bars, n_symbols) = (recorder.ts.len(), self.symbols.len());
        let mut warnings = self.warnings;
        warnings.extend(self.strategy.carry.as_ref().and_then(|sleeve| sleeve.mark_warning(&self.symbols)));
        BacktestResult {
            listed: Array2::from_shape_vec((n_bars, n_symbols), recorder.listed).expect("one row per bar"),
            signals: recorder.signals.map(|mut record| {
                record.score(self.cfg.strategy.signal_power);
                record
            }),
            symbols: self.symbols,
            ts: recorder.ts,
            bars: recorder.out,
            book: recorder.book,
            fills: self.ledger.fills,
            round_trips: self.ledger.round_trips,
            metrics,
            first_decision,
            warnings,
            meta_skipped: self.strategy.meta.map(MetaLabeler::into_skipped).unwrap_or_default(),
        }
    }
}

/// The warnings a run starts with: missing funding data, unsupported risk features, a carry sleeve
/// or router that the data leaves empty.
fn startup_warnings(symbols: &[String], funding_has_data: &[bool], cfg: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    let missing: Vec<&str> =
        symbols.iter().zip(funding_has_data).filter(|(_, has)| !**has).map(|(s, _)| s.as_str()).collect();
    if !missing.is_empty() {
        warnings.push(if missing.len() == symbols.len() {
            "no funding data: funding cash flows are 0 for every symbol".to_string()
        } else {
            format!("no funding data for {}: their funding cash flows are 0", missing.join(", "))
        });
    }
    warnings.extend(crate::risk::unsupported_features(cfg));
    let carry = &cfg.strategy.carry;
    if carry.enabled && !funding_has_data.iter().any(|h| *h) {
        warnings.push("strategy.carry is enabled but there is no funding data: the carry sleeve stays empty".into());
    }
    if carry.enabled && carry.hedge && !symbols.contains(&carry.hedge_symbol) {
        warnings.push(format!(
            "strategy.carry.hedge_symbol {} is not in the data: the hedged carry sleeve stays empty",
            carry.hedge_symbol
        ));
    }
    let router = &cfg.strategy.router;
    if router.enabled && !router.majors.iter().any(|m| symbols.contains(m)) {
        warnings.push(format!(
            "strategy.router.majors ({}) are not in the data: the router sees no majors trend and runs TSMOM",
            router.majors.join(", ")
        ));
    }
    warnings
}

/// At most five names, then "… and N more".
fn abbreviate(names: &[String]) -> String {
    match names.len() {
        0..=5 => names.join(", "),
        n => format!("{}, … and {} more", names[..5].join(", "), n - 5),
    }
}
