//! The one-pass backtest engine (backtest.md).
//!
//! [`Engine::step`] consumes one bar: it advances the streaming causal indicators of
//! [`IndicatorState`] (no `T × N` matrices), then does the path-dependent part: eligibility,
//! selection with bands, sizing with equity-dependent caps and the vol target, risk rules and
//! accounting. The backtester feeds it the panel's rows; the live runner feeds it bars as they close.

mod diagnose;
mod indicators;
pub mod ledger;
pub mod output;
pub use diagnose::diagnose;

use std::sync::Arc;

use ndarray::{Array2, ArrayView1};

use crate::bitset::{Bits, SymbolSet};
use crate::carry::CarrySleeve;
use crate::config::{Accounting, Config, FillPrice, KMode, LimitFallback, RegimeMode, ShortHistory, Weighting};
use crate::data::{FundingGrid, Panel};
use crate::error::{Error, Result};
use crate::execution;
use crate::meta_label::{DecisionInputs, MetaLabeler, MetaSkip};
use crate::metrics::{self, Metrics};
use crate::model::{BarRow, Fill, FillReason, Regime, RoundTrip};
use crate::regime::{self, RegimeRouter};
use crate::risk::{RiskEngine, StopExit};
use crate::signal::{self, finite, RollingMedian};
use crate::sizing::{self, BookInputs, Scratch};
use crate::timeframe::Timeframe;

pub use indicators::IndicatorState;
pub use ledger::Ledger;

use crate::signal::CrossSection;

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
    #[inline]
    fn push(&mut self, symbol: usize, target_weight: f64, model_weight: f64, weight: f64, units: f64) {
        if target_weight != 0.0 || model_weight != 0.0 || weight != 0.0 || units != 0.0 {
            self.symbol.push(symbol as u32);
            self.target_weight.push(target_weight);
            self.model_weight.push(model_weight);
            self.weight.push(weight);
            self.units.push(units);
        }
    }

    fn end_bar(&mut self) {
        self.row_start.push(self.symbol.len());
    }

    /// Entry range of bar t.
    pub fn bar(&self, t: usize) -> std::ops::Range<usize> {
        let start = if t == 0 { 0 } else { self.row_start[t - 1] };
        start..self.row_start[t]
    }

    fn dense(&self, values: &[f64], n_symbols: usize) -> Array2<f64> {
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

/// Signal diagnostics per bar and symbol (the `signals` API).
#[derive(Debug, Clone, PartialEq)]
pub struct SignalRecord {
    pub momentum: Array2<f64>,
    pub z: Array2<f64>,
    pub signal: Array2<f64>,
    pub eligible: Array2<bool>,
}

/// [`SignalRecord`] while it is being recorded: rows appended bar by bar.
#[derive(Debug, Clone, Default)]
struct SignalRows {
    momentum: Vec<f64>,
    z: Vec<f64>,
    signal: Vec<f64>,
    eligible: Vec<bool>,
}

impl SignalRows {
    fn into_record(self, n_bars: usize, n_symbols: usize) -> SignalRecord {
        let shape = (n_bars, n_symbols);
        let matrix = |values: Vec<f64>| Array2::from_shape_vec(shape, values).expect("one row per bar");
        SignalRecord {
            momentum: matrix(self.momentum),
            z: matrix(self.z),
            signal: matrix(self.signal),
            eligible: Array2::from_shape_vec(shape, self.eligible).expect("one row per bar"),
        }
    }
}

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
    let (n_bars, n_symbols) = (panel.n_bars(), panel.n_symbols());
    if n_symbols == 0 || n_bars == 0 {
        return Err(Error::invalid("empty universe: the panel has no symbols or no bars"));
    }
    if funding.rates.dim() != (n_bars, n_symbols) {
        return Err(Error::invalid("funding grid does not match the panel"));
    }
    let mut engine = Engine::new(&panel.symbols, panel.timeframe, &funding.has_data, cfg, record_signals)?;
    engine.use_buffers(buffers);
    engine.reserve(n_bars);
    for t in 0..n_bars {
        engine.step(&panel.bar_row(t, funding));
    }
    Ok(engine.finish())
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
        return Err(Error::invalid("empty universe: the panel has no symbols or no bars"));
    }
    if funding.rates.dim() != (n_bars, n_symbols) {
        return Err(Error::invalid("funding grid does not match the panel"));
    }
    if trade_from >= trade_to || trade_to > n_bars {
        return Err(Error::invalid(format!(
            "window [{trade_from}, {trade_to}) is empty or outside the panel's {n_bars} bars"
        )));
    }
    let mut engine = Engine::new(&panel.symbols, panel.timeframe, &funding.has_data, cfg, record_signals)?;
    engine.use_buffers(buffers);
    engine.reserve(trade_to - trade_from);
    for t in 0..trade_from {
        engine.warm(&panel.bar_row(t, funding));
    }
    for t in trade_from..trade_to {
        engine.step(&panel.bar_row(t, funding));
    }
    Ok(engine.finish())
}

/// Path-dependent state of one backtest, advanced bar by bar with [`Engine::step`].
pub struct Engine {
    cfg: Arc<Config>,
    symbols: Vec<String>,
    timeframe: Timeframe,
    ind: IndicatorState,
    /// Index of the next bar to step (bars are counted from the first one fed).
    t: usize,
    /// Open time of the bar being stepped.
    bar_ts: i64,
    ts: Vec<i64>,
    /// `listed[t·N + i]`: symbol i had a close at bar t.
    listed: Vec<bool>,
    bars_per_year: f64,
    ledger: Ledger,
    risk: RiskEngine,
    /// Last valid close per symbol (valuation of positions over missing bars).
    last_price: Vec<f64>,
    /// Admitted target of the last decision (what is traded toward).
    target: Vec<f64>,
    /// The strategy's target before admission.
    model_target: Vec<f64>,
    /// What this bar did besides rebalancing, for the live runner ([`Engine::bar_orders`]).
    bar_orders: Vec<BarOrder>,
    /// This bar was a decision bar: the account is steered to `target` (at this close, at the next
    /// open, or with resting limits, by the fill model).
    decided: bool,
    /// Resting `limit_touch` orders per symbol.
    resting: Vec<Option<RestingOrder>>,
    n_resting: usize,
    /// Weights accounting: equity, previous weights and the turnover still to be charged.
    weights_equity: f64,
    held_weights: Vec<f64>,
    pending_cost: f64,
    pending_orders: Option<PendingOrders>,
    first_decision: Option<usize>,
    dispersion: RollingMedian,
    // Per-bar buffers, reused.
    eligible: Vec<bool>,
    z: Vec<f64>,
    amplified: Vec<f64>,
    longs: Vec<usize>,
    shorts: Vec<usize>,
    scratch: Scratch,
    /// Per-symbol Kelly multipliers of the current bar.
    multiplier: Vec<f64>,
    router: RegimeRouter,
    regime: Regime,
    /// Panel columns of `strategy.router.majors`.
    majors: Vec<usize>,
    corr_scratch: Vec<f64>,
    /// The eligible symbols of the current bar, ascending (the members of `eligible`).
    eligible_list: Vec<usize>,
    /// Scratch set: symbols with a target or a position (the only ones a rebalance or the book
    /// record can touch).
    active: SymbolSet,
    carry: Option<CarrySleeve>,
    carry_book: Vec<f64>,
    carry_tradable: Vec<bool>,
    carry_hedge: Option<usize>,
    meta: Option<MetaLabeler>,
    exits: Vec<StopExit>,
    long_candidates: Vec<usize>,
    short_candidates: Vec<usize>,
    out: BarSeries,
    book: BookHistory,
    signals: Option<SignalRows>,
    warnings: Vec<String>,
    /// Bars fed with [`Engine::warm`] before the first traded bar.
    warm_bars: usize,
    /// The bar (counted over warm-up bars) that would have been the first decision of a full run.
    warm_first_decision: Option<usize>,
    /// Offset that keeps the rebalance cadence of a full run after a warm-up.
    cadence_phase: usize,
}

/// Targets decided at t and filled at the open of t + 1 (`fill: next_open`).
struct PendingOrders {
    equity: f64,
    target: Vec<f64>,
}

/// A resting `limit_touch` order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestingOrder {
    /// Signed units to trade.
    pub units: f64,
    pub price: f64,
    /// Bar the order was placed at (it may fill from the next bar on).
    pub placed_bar: usize,
    /// First bar of the symbol's consecutive same-side orders: the TTL counts from here.
    pub since_bar: usize,
    /// ATR of the placement bar (the stop distance of an entry it fills).
    pub atr: f64,
}

/// What a bar did besides the rebalance toward the admitted target, in the order it happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BarOrder {
    /// A stop or take-profit exit filled inside this bar at its level (or the open on a gap).
    Exited { symbol: usize, reason: FillReason },
    /// An exit decided at this bar's close and filled at it (time, kill-switch, drawdown flatten).
    ExitAtClose { symbol: usize, reason: FillReason },
    /// A `limit_touch` order reached its TTL unfilled: sent as a taker order at this close, or cancelled.
    Expired { symbol: usize, taker: bool },
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
            return Err(Error::invalid("empty universe: the panel has no symbols or no bars"));
        }
        if funding_has_data.len() != n_symbols {
            return Err(Error::invalid("funding grid does not match the panel"));
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
        let mut warnings = Vec::new();
        let missing: Vec<&str> =
            symbols.iter().zip(funding_has_data).filter(|(_, has)| !**has).map(|(s, _)| s.as_str()).collect();
        if !missing.is_empty() {
            warnings.push(if missing.len() == n_symbols {
                "no funding data: funding cash flows are 0 for every symbol".to_string()
            } else {
                format!("no funding data for {}: their funding cash flows are 0", missing.join(", "))
            });
        }
        warnings.extend(crate::risk::unsupported_features(cfg));
        let carry = &cfg.strategy.carry;
        if carry.enabled && !funding_has_data.iter().any(|h| *h) {
            warnings
                .push("strategy.carry is enabled but there is no funding data: the carry sleeve stays empty".into());
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
        let capital = cfg.backtest.initial_capital;
        Ok(Self {
            cfg: Arc::new(cfg.clone()),
            symbols: symbols.to_vec(),
            timeframe,
            ind: IndicatorState::new(symbols, timeframe, cfg),
            t: 0,
            bar_ts: 0,
            ts: Vec::new(),
            listed: Vec::new(),
            bars_per_year: timeframe.bars_per_year(),
            ledger: Ledger::new(capital, n_symbols),
            risk: RiskEngine::new(cfg, n_symbols, timeframe),
            last_price: vec![f64::NAN; n_symbols],
            target: vec![0.0; n_symbols],
            model_target: vec![0.0; n_symbols],
            bar_orders: Vec::new(),
            decided: false,
            resting: vec![None; n_symbols],
            n_resting: 0,
            weights_equity: capital,
            held_weights: vec![0.0; n_symbols],
            pending_cost: 0.0,
            pending_orders: None,
            first_decision: None,
            dispersion: RollingMedian::new(cfg.strategy.disp_lookback),
            eligible: vec![false; n_symbols],
            z: vec![f64::NAN; n_symbols],
            amplified: vec![f64::NAN; n_symbols],
            longs: Vec::with_capacity(n_symbols),
            shorts: Vec::with_capacity(n_symbols),
            scratch: Scratch::default(),
            multiplier: vec![1.0; n_symbols],
            router: RegimeRouter::new(&cfg.strategy.router),
            regime: Regime::Xsmom,
            majors: cfg.strategy.router.majors.iter().filter_map(|m| symbols.iter().position(|s| s == m)).collect(),
            corr_scratch: Vec::new(),
            eligible_list: Vec::with_capacity(n_symbols),
            active: SymbolSet::new(n_symbols),
            carry: cfg.strategy.carry.enabled.then(|| CarrySleeve::new(&cfg.strategy.carry, n_symbols)),
            carry_book: vec![0.0; n_symbols],
            carry_tradable: vec![false; n_symbols],
            carry_hedge: symbols.iter().position(|s| *s == cfg.strategy.carry.hedge_symbol),
            meta: cfg.strategy.meta_label.enabled.then(|| MetaLabeler::new(&cfg.strategy.meta_label, n_symbols)),
            exits: Vec::new(),
            long_candidates: Vec::with_capacity(n_symbols),
            short_candidates: Vec::with_capacity(n_symbols),
            out: BarSeries::default(),
            book: BookHistory::default(),
            signals: record_signals.then(SignalRows::default),
            warnings,
            warm_bars: 0,
            warm_first_decision: None,
            cadence_phase: 0,
        })
    }

    /// Write the outputs into `buffers` (emptied, their capacity kept) instead of fresh vectors.
    /// Only before the first bar.
    pub fn use_buffers(&mut self, mut buffers: OutputBuffers) {
        assert_eq!(self.t + self.warm_bars, 0, "buffers are given before the first bar");
        buffers.clear();
        self.ts = buffers.ts;
        self.listed = buffers.listed;
        self.out = buffers.out;
        self.book = buffers.book;
        self.ledger.fills = buffers.fills;
        self.ledger.round_trips = buffers.round_trips;
    }

    /// Room for `n_bars` bars of outputs, so that they are allocated once instead of growing by
    /// doubling (each growth copies and faults in fresh pages). Book entries and fills are sized by
    /// the book the strategy can hold; a run that trades more grows them as usual.
    pub fn reserve(&mut self, n_bars: usize) {
        let n_symbols = self.symbols.len();
        let book_size = n_symbols.min(2 * self.cfg.strategy.k_max + 2);
        self.ts.reserve(n_bars);
        self.listed.reserve(n_bars * n_symbols);
        self.book.row_start.reserve(n_bars);
        for column in
            [&mut self.book.target_weight, &mut self.book.model_weight, &mut self.book.weight, &mut self.book.units]
        {
            column.reserve(n_bars * book_size);
        }
        self.book.symbol.reserve(n_bars * book_size);
        self.ledger.fills.reserve(n_bars * book_size / 2);
        self.ledger.round_trips.reserve(n_bars * book_size / 4);
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

    /// Bars stepped so far.
    pub fn bars(&self) -> usize {
        self.t
    }

    /// Admitted target weights of the last decision (0 = flat): what the engine trades toward.
    pub fn target_weights(&self) -> &[f64] {
        &self.target
    }

    /// The strategy's target weights of the last decision, before admission.
    pub fn model_weights(&self) -> &[f64] {
        &self.model_target
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
        self.resting[symbol].as_ref()
    }

    /// Units held by the engine's own book after the last bar (`accounting: units`).
    pub fn units(&self) -> &[f64] {
        &self.ledger.units
    }

    /// ATR per symbol at the last bar (`None` when stops are off).
    pub fn atr(&self) -> Option<&[f64]> {
        self.ind.atr.as_deref()
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

    /// Advance one bar (the next one after the last stepped): indicators, fills due, funding,
    /// stops, kill-switch, the decision, accounting, outputs. Every slice of `bar` has one entry
    /// per symbol, in the order given to [`Engine::new`].
    pub fn step(&mut self, bar: &BarRow<'_>) {
        let t = self.t;
        self.bar_ts = bar.ts;
        self.ts.push(bar.ts);
        self.listed.extend(bar.close.iter().map(|c| finite(*c)));
        self.ind.update(bar);
        self.bar_orders.clear();
        self.decided = false;
        if let Some(sleeve) = self.carry.as_mut() {
            sleeve.observe(bar.ts, ArrayView1::from(bar.funding_event), ArrayView1::from(bar.funding_rate));
            sleeve.observe_marks(bar.close, bar.mark_close);
        }
        if let Some(meta) = self.meta.as_mut() {
            meta.observe_funding(bar.ts, bar.funding_event, bar.funding_rate);
        }
        match self.cfg.backtest.accounting {
            Accounting::Units => self.step_units(t, bar),
            Accounting::Weights => {
                self.mark_closes(bar.close);
                self.step_weights(t, bar)
            }
        }
        self.t += 1;
    }

    /// The last valid close per symbol, after bar `close`.
    fn mark_closes(&mut self, close: &[f64]) {
        for (last, c) in self.last_price.iter_mut().zip(close) {
            *last = if finite(*c) { *c } else { *last };
        }
    }

    /// Advance the data-driven state only (indicators, last prices, funding history, dispersion,
    /// regime) by one bar before trading starts: no decisions, fills or outputs. Only valid before
    /// the first [`Engine::step`].
    pub fn warm(&mut self, bar: &BarRow<'_>) {
        assert_eq!(self.t, 0, "warm-up bars come before the first traded bar");
        let g = self.warm_bars;
        self.bar_ts = bar.ts;
        self.ind.update(bar);
        for (last, c) in self.last_price.iter_mut().zip(bar.close) {
            *last = if finite(*c) { *c } else { *last };
        }
        if let Some(sleeve) = self.carry.as_mut() {
            sleeve.observe(bar.ts, ArrayView1::from(bar.funding_event), ArrayView1::from(bar.funding_rate));
            sleeve.observe_marks(bar.close, bar.mark_close);
        }
        if let Some(meta) = self.meta.as_mut() {
            meta.observe_funding(bar.ts, bar.funding_event, bar.funding_rate);
        }
        let recording = self.signals.take();
        let cross = self.cross_section(g);
        self.signals = recording;
        self.update_regime();
        if self.warm_first_decision.is_none() {
            let ready = self.cfg.backtest.first_decision_bar.is_none_or(|first| g >= first);
            if ready && cross.map_or(0, |c| c.count) >= 2 * self.cfg.strategy.k_min {
                self.warm_first_decision = Some(g);
            }
        }
        self.warm_bars += 1;
    }

    fn step_units(&mut self, t: usize, bar: &BarRow<'_>) {
        let ts = bar.ts;
        let (taker_fee_bps, slippage_bps) = (self.cfg.costs.taker_fee_bps, self.cfg.costs.slippage_bps);
        let fill = self.cfg.execution.fill;
        self.ledger.start_bar();
        if let Some(pending) = self.pending_orders.take() {
            self.rebalance(t, &pending.target, pending.equity, bar.open);
        }
        // Funding is paid on open positions only, in symbol order, priced at the last close at or
        // before the event (backtest.md §3): this bar's close is not known yet.
        for w in 0..self.ledger.held().word_count() {
            for bit in Bits(self.ledger.held().word(w)) {
                let i = 64 * w + bit;
                let rate = bar.funding_rate[i];
                if rate != 0.0 {
                    self.ledger.pay_funding(i, self.last_price[i], rate);
                }
            }
        }
        self.mark_closes(bar.close);
        if self.n_resting > 0 {
            self.fill_resting(t, bar);
        }
        // Stops are tested on this bar's prices against the levels carried from the last bar, then
        // updated with this bar (trailing, breakeven, partial take-profit, time exit).
        let mut exits = std::mem::take(&mut self.exits);
        self.risk.check_stops(t, bar.open, bar.high, bar.low, &self.ledger.units, &mut exits);
        self.execute_exits(t, &exits);
        self.risk.end_bar_exits(
            t,
            bar.high,
            bar.low,
            bar.close,
            &self.ledger.units,
            self.ind.atr.as_deref(),
            &mut exits,
        );
        self.execute_exits(t, &exits);
        self.exits = exits;
        // Equity is re-marked only after something traded: the same sum over the same book.
        let mut equity = self.ledger.equity(&self.last_price);
        let kill = self.risk.check_portfolio(t, ts, equity);
        if kill.flatten {
            for i in 0..self.symbols.len() {
                let units = self.ledger.units[i];
                if units != 0.0 && self.last_price[i].is_finite() {
                    self.ledger.trade(
                        t,
                        ts,
                        i,
                        -units,
                        self.last_price[i],
                        taker_fee_bps,
                        slippage_bps,
                        kill.reason.unwrap_or(FillReason::KillSwitch),
                    );
                    self.risk.on_exit(t, i, 0.0, FillReason::KillSwitch);
                    let reason = kill.reason.unwrap_or(FillReason::KillSwitch);
                    self.bar_orders.push(BarOrder::ExitAtClose { symbol: i, reason });
                }
            }
            self.cancel_resting();
            self.risk.absorb_round_trips(t, &self.ledger.round_trips);
            self.target.fill(0.0);
            equity = self.ledger.equity(&self.last_price);
        }
        if self.n_resting > 0 {
            let fills_before = self.ledger.fills.len();
            self.expire_resting(t, bar.close);
            if self.ledger.fills.len() != fills_before {
                equity = self.ledger.equity(&self.last_price);
            }
        }
        let fills_before_decision = self.ledger.fills.len();

        let cross = self.cross_section(t);
        self.update_regime();
        let (k, vol_scale) = if self.is_decision_bar(t, cross) && !kill.paused {
            let decided = self.decide(t, equity, cross);
            self.model_target.copy_from_slice(&self.target);
            self.admit(t, ts);
            self.meta_label_entries(t, ts, cross);
            if kill.freeze {
                self.freeze_targets(equity);
            }
            self.decided = true;
            match fill {
                FillPrice::Close => {
                    let target = std::mem::take(&mut self.target);
                    self.rebalance(t, &target, equity, bar.close);
                    self.target = target;
                }
                FillPrice::NextOpen => {
                    self.pending_orders = Some(PendingOrders { equity, target: self.target.clone() });
                }
                FillPrice::LimitTouch => self.place_limits(t, equity, bar.close),
            }
            decided
        } else {
            if kill.paused {
                self.target.fill(0.0);
                self.model_target.fill(0.0);
            }
            (0, 1.0)
        };

        if self.ledger.fills.len() != fills_before_decision {
            equity = self.ledger.equity(&self.last_price);
        }
        let (mut gross, mut net, mut n_long, mut n_short) = (0.0, 0.0, 0, 0);
        // Symbols flat with no target have nothing to record, and adding their 0 changes no sum.
        self.active.assign_nonzero_or(&self.target, self.ledger.held());
        self.active.insert_nonzero(&self.model_target);
        let inverse_equity = 1.0 / equity;
        for i in self.active.iter() {
            let (units, target, price) = (self.ledger.units[i], self.target[i], self.last_price[i]);
            let weight = if units != 0.0 { units * price * inverse_equity } else { 0.0 };
            self.book.push(i, target, self.model_target[i], weight, units);
            gross += weight.abs();
            net += weight;
            n_long += (units > 0.0) as u32;
            n_short += (units < 0.0) as u32;
        }
        self.risk.end_bar(&self.ledger.units);
        let out = &mut self.out;
        out.equity.push(equity);
        out.cash.push(self.ledger.cash);
        out.gross.push(gross);
        out.net.push(net);
        out.traded_notional.push(self.ledger.bar_traded_notional);
        out.turnover.push(self.ledger.bar_traded_notional / equity);
        out.fees.push(self.ledger.bar_fees);
        out.funding.push(self.ledger.bar_funding);
        out.n_long.push(n_long);
        out.n_short.push(n_short);
        out.regime.push(self.regime.as_str());
        out.k.push(k as u32);
        out.vol_scale.push(vol_scale);
        out.kill_switch.push(kill.active);
        self.book.end_bar();
    }

    /// Constant-weight accounting (backtest.md §3):
    /// `E_{t+1} = E_t (1 + Σ w_t r_{t+1}) − E_t · cost · Σ|w_t − w_{t−1}|`, plus funding on `w_t`.
    fn step_weights(&mut self, t: usize, bar: &BarRow<'_>) {
        let returns = &self.ind.returns;
        let prev_equity = self.weights_equity;
        let mut growth = 0.0;
        let mut funding = 0.0;
        for i in 0..self.symbols.len() {
            let w = self.held_weights[i];
            if w != 0.0 {
                let r = returns[i];
                if r.is_finite() {
                    growth += w * r;
                }
                funding -= w * bar.funding_rate[i];
            }
        }
        let fees = self.pending_cost * prev_equity;
        let equity = prev_equity * (1.0 + growth + funding) - fees;
        self.weights_equity = equity;

        let cross = self.cross_section(t);
        self.update_regime();
        let decision = self.is_decision_bar(t, cross);
        let (k, vol_scale) = if decision { self.decide(t, equity, cross) } else { (0, 1.0) };
        self.decided = decision;
        if decision {
            self.model_target.copy_from_slice(&self.target);
        }
        let target = if decision { self.target.clone() } else { self.held_weights.clone() };
        let cfg = Arc::clone(&self.cfg);
        let costs = &cfg.costs;
        let cost_rate = (costs.rebalance_fee_bps() + costs.slippage_bps) / 1e4;
        let mut turnover = 0.0;
        let (mut gross, mut net, mut n_long, mut n_short) = (0.0, 0.0, 0, 0);
        let ts = bar.ts;
        for i in 0..self.symbols.len() {
            let change = target[i] - self.held_weights[i];
            if change != 0.0 {
                turnover += change.abs();
                let price = self.last_price[i];
                let units_now = target[i] * equity / price;
                let units_before = self.ledger.units[i];
                // Mirror the weight change in the ledger so fills and round trips exist in this mode too.
                self.ledger.trade(
                    t,
                    ts,
                    i,
                    units_now - units_before,
                    price,
                    costs.rebalance_fee_bps(),
                    costs.slippage_bps,
                    FillReason::Rebalance,
                );
            }
            let w = target[i];
            let units = if w != 0.0 { w * equity / self.last_price[i] } else { 0.0 };
            self.book.push(i, w, w, w, units);
            gross += w.abs();
            net += w;
            n_long += (w > 0.0) as u32;
            n_short += (w < 0.0) as u32;
        }
        self.held_weights.copy_from_slice(&target);
        self.pending_cost = cost_rate * turnover;
        let out = &mut self.out;
        out.equity.push(equity);
        out.cash.push(equity * (1.0 - net));
        out.gross.push(gross);
        out.net.push(net);
        out.traded_notional.push(turnover * equity);
        out.turnover.push(turnover);
        out.fees.push(fees);
        out.funding.push(funding * prev_equity);
        out.n_long.push(n_long);
        out.n_short.push(n_short);
        out.regime.push(self.regime.as_str());
        out.k.push(k as u32);
        out.vol_scale.push(vol_scale);
        out.kill_switch.push(false);
        self.book.end_bar();
    }

    /// True when bar t may trade: at or after the first decision bar and on the rebalance cadence.
    fn is_decision_bar(&mut self, t: usize, cross: Option<CrossSection>) -> bool {
        if self.first_decision.is_none() {
            if let Some(first) = self.warm_first_decision {
                // After a warm-up that already passed the first decision: trade from this bar on,
                // on the cadence of the full run.
                self.first_decision = Some(t);
                self.cadence_phase = (self.warm_bars + t - first) % self.cfg.backtest.rebalance_every;
            }
        }
        if self.first_decision.is_none() {
            let ready = match self.cfg.backtest.first_decision_bar {
                Some(first) => t >= first,
                None => true,
            };
            let n_eligible = cross.map_or(0, |c| c.count);
            if !ready || n_eligible < 2 * self.cfg.strategy.k_min {
                return false;
            }
            self.first_decision = Some(t);
        }
        let first = self.first_decision.expect("set above");
        let every = self.cfg.backtest.rebalance_every;
        every == 1 || (t - first + self.cadence_phase) % every == 0
    }

    /// Eligibility, z-scores and amplified signals at bar t; feeds the dispersion window every bar.
    fn cross_section(&mut self, t: usize) -> Option<CrossSection> {
        self.compute_eligible(t);
        let cross = signal::cross_sectional_z_of(&self.ind.momentum, &self.eligible_list, &mut self.z);
        if self.cfg.strategy.k_mode == KMode::Dynamic {
            self.dispersion.push(cross.map_or(f64::NAN, |c| c.std));
        }
        let power = self.cfg.strategy.signal_power;
        // sign(z)·|z|^p is increasing in z, so ranks and signs come from z; the amplified value itself
        // is only needed to size `signal_inverse_vol` books and for the signal diagnostics.
        if self.cfg.sizing.weighting == Weighting::SignalInverseVol || self.signals.is_some() {
            for ((a, z), e) in self.amplified.iter_mut().zip(&self.z).zip(&self.eligible) {
                *a = if *e { signal::amplify(*z, power) } else { f64::NAN };
            }
        }
        if let Some(rec) = self.signals.as_mut() {
            rec.momentum.extend_from_slice(&self.ind.momentum);
            rec.z.extend_from_slice(&self.z);
            rec.signal.extend_from_slice(&self.amplified);
            rec.eligible.extend_from_slice(&self.eligible);
        }
        cross
    }

    fn execute_exits(&mut self, t: usize, exits: &[StopExit]) {
        let ts = self.bar_ts;
        let cfg = Arc::clone(&self.cfg);
        let costs = &cfg.costs;
        for exit in exits {
            let delta = -self.ledger.units[exit.symbol] * exit.fraction;
            self.ledger.trade(
                t,
                ts,
                exit.symbol,
                delta,
                exit.price,
                costs.taker_fee_bps,
                costs.slippage_bps,
                exit.reason,
            );
            self.risk.on_exit(t, exit.symbol, self.ledger.units[exit.symbol], exit.reason);
            let (symbol, reason) = (exit.symbol, exit.reason);
            self.bar_orders.push(if execution::exits_at_close(reason) {
                BarOrder::ExitAtClose { symbol, reason }
            } else {
                BarOrder::Exited { symbol, reason }
            });
            // An entry still resting for a symbol that was just stopped out would re-open it.
            if reason != FillReason::TakeProfit {
                self.cancel_resting_of(symbol);
            }
        }
        self.risk.absorb_round_trips(t, &self.ledger.round_trips);
    }

    /// Eligible set E_t (strategy.md §2.3) into `self.eligible`. One branch-free pass per filter
    /// (`&`, not `&&`): this runs for every symbol at every bar.
    fn compute_eligible(&mut self, t: usize) {
        let s = &self.cfg.strategy;
        let ind = &self.ind;
        let hold_from = self.risk.hold_from();
        let columns = ind.momentum.iter().zip(&ind.sigma).zip(&ind.universe).zip(hold_from);
        let held = |momentum: f64, sigma: f64, universe: bool, hold_from: usize| {
            universe & finite(momentum) & finite(sigma) & (sigma > 0.0) & (t >= hold_from)
        };
        if let Some(slope) = ind.slope.as_ref().filter(|_| s.regime_filter.enabled) {
            let thr = s.regime_filter.slope_min_bps_per_day;
            let pass_short_history = s.regime_filter.short_history == ShortHistory::Pass;
            let up_only = s.regime_filter.mode == RegimeMode::Up;
            for ((eligible, (((momentum, sigma), universe), hold_from)), slope) in
                self.eligible.iter_mut().zip(columns).zip(slope)
            {
                let trending = if up_only { *slope >= thr } else { slope.abs() >= thr };
                let regime_ok = if slope.is_nan() { pass_short_history } else { trending };
                *eligible = held(*momentum, *sigma, *universe, *hold_from) & regime_ok;
            }
        } else {
            for (eligible, (((momentum, sigma), universe), hold_from)) in self.eligible.iter_mut().zip(columns) {
                *eligible = held(*momentum, *sigma, *universe, *hold_from);
            }
        }
        if let Some(adx) = ind.adx.as_ref() {
            let f = &s.adx_filter;
            let adx_then = if f.require_rising { ind.adx_ago(f.rising_bars) } else { None };
            for (i, eligible) in self.eligible.iter_mut().enumerate() {
                let now = adx[i];
                *eligible &= now >= f.min_adx && (!f.require_rising || adx_then.is_some_and(|then| now > then[i]));
            }
        }
        compact_members(&self.eligible, &mut self.eligible_list);
    }

    /// Selection and sizing at bar t (strategy.md §2.4–§5); sets `self.target`, returns (K, vol scale).
    fn decide(&mut self, t: usize, equity: f64, cross: Option<CrossSection>) -> (usize, f64) {
        self.target.fill(0.0);
        let s = &self.cfg.strategy;
        if self.regime == Regime::Tsmom {
            return self.decide_tsmom(t, equity);
        }
        let Some(cross) = cross else { return (0, 1.0) };
        let n_eligible = cross.count;
        let mut k = match s.k_mode {
            KMode::Static => s.k_max,
            KMode::Dynamic => {
                let ratio = self.dispersion.median().map_or(f64::NAN, |median| cross.std / median);
                signal::dynamic_k(ratio, s.k_min, s.k_max, s.d_lo, s.d_hi)
            }
        };
        if s.strict_k && n_eligible < 2 * k {
            return (0, 1.0);
        }
        k = k.min(n_eligible / 2);
        if k < s.k_min {
            return (0, 1.0);
        }
        let market_neutral = s.market_neutral;
        self.select_legs(k);
        if market_neutral && (self.longs.is_empty() || self.shorts.is_empty()) {
            return (0, 1.0);
        }
        if self.longs.is_empty() && self.shorts.is_empty() {
            return (0, 1.0);
        }
        let half = self.cfg.sizing.gross_leverage / 2.0;
        let vol_scale = self.size_legs(t, equity, self.cfg.sizing.weighting, [half, half], market_neutral);
        (k, vol_scale)
    }

    /// TSMOM book (risk.md §7): every eligible symbol with `|S| ≥ tsmom_min_abs_momentum` in the
    /// direction of its momentum, inverse-vol weights summing to `gross_leverage`, not market neutral.
    fn decide_tsmom(&mut self, t: usize, equity: f64) -> (usize, f64) {
        let min_abs = self.cfg.strategy.router.tsmom_min_abs_momentum;
        let (momentum, sigma) = (&self.ind.momentum, &self.ind.sigma);
        self.longs.clear();
        self.shorts.clear();
        let (mut long_raw, mut short_raw) = (0.0, 0.0);
        for i in (0..self.eligible.len()).filter(|&i| self.eligible[i]) {
            let m = momentum[i];
            if m.abs() < min_abs || m == 0.0 {
                continue;
            }
            if m > 0.0 {
                self.longs.push(i);
                long_raw += 1.0 / sigma[i];
            } else {
                self.shorts.push(i);
                short_raw += 1.0 / sigma[i];
            }
        }
        let total = long_raw + short_raw;
        if total <= 0.0 {
            return (0, 1.0);
        }
        let gross = self.cfg.sizing.gross_leverage;
        let legs = [gross * long_raw / total, gross * short_raw / total];
        let vol_scale = self.size_legs(t, equity, crate::config::Weighting::InverseVol, legs, false);
        (0, vol_scale)
    }

    /// Size `self.longs` / `self.shorts` into `self.target` (strategy.md §5); returns the vol scale.
    fn size_legs(
        &mut self,
        t: usize,
        equity: f64,
        weighting: crate::config::Weighting,
        leg_gross: [f64; 2],
        market_neutral: bool,
    ) -> f64 {
        let lookback = self.cfg.sizing.vol_target.lookback;
        let kelly = self.risk.kelly_multipliers(&mut self.multiplier);
        let carry = self.carry_sleeve(t);
        let inputs = BookInputs {
            longs: &self.longs,
            shorts: &self.shorts,
            signal: &self.amplified,
            sigma: &self.ind.sigma,
            multiplier: kelly.then_some(&self.multiplier[..]),
            recent_returns: self.ind.recent_returns_or_zero(lookback),
            equity,
            bars_per_year: self.bars_per_year,
            market_neutral,
            weighting,
            leg_gross,
            carry: carry.then_some((&self.carry_book[..], self.cfg.strategy.carry.budget)),
        };
        let stats = sizing::size_book(&self.cfg.sizing, &inputs, &mut self.target, &mut self.scratch);
        // A partial take-profit keeps the rest of that position smaller until it is closed.
        self.risk.apply_size_factors(&mut self.target);
        stats.vol_scale
    }

    /// The carry sleeve of bar t into `self.carry_book` (false when off or without candidates).
    fn carry_sleeve(&mut self, t: usize) -> bool {
        let Some(sleeve) = &self.carry else { return false };
        let (sigma, universe) = (&self.ind.sigma, &self.ind.universe);
        for (i, tradable) in self.carry_tradable.iter_mut().enumerate() {
            *tradable = universe[i] && sigma[i].is_finite() && sigma[i] > 0.0 && self.risk.may_hold(t, i);
        }
        sleeve.book(&self.carry_tradable, sigma, self.cfg.sizing.gross_leverage, self.carry_hedge, &mut self.carry_book)
    }

    /// Regime router (risk.md §7), fed every bar: average pairwise correlation of the eligible
    /// set's last `corr_lookback` returns and the majors' mean EMA slope. Runs after
    /// [`Engine::cross_section`], which lists the eligible set.
    fn update_regime(&mut self) {
        let router_cfg = &self.cfg.strategy.router;
        if !router_cfg.enabled {
            return;
        }
        let window = self.ind.recent_returns(router_cfg.corr_lookback).expect("kept when the router is on");
        let correlation = regime::average_pairwise_correlation(window, &self.eligible_list, &mut self.corr_scratch);
        let slope = self.ind.slope.as_ref().expect("computed when the router is on");
        let slopes: Vec<f64> = self.majors.iter().map(|&i| slope[i]).filter(|v| v.is_finite()).collect();
        let majors_slope = if slopes.is_empty() { f64::NAN } else { slopes.iter().sum::<f64>() / slopes.len() as f64 };
        self.regime = self.router.update(correlation, majors_slope);
    }

    /// Longs and shorts for this bar into `self.longs` / `self.shorts` (strategy.md §4). Ranked by z
    /// (strongest first, ties by symbol order); longs need z > 0 and shorts z < 0 with `require_sign`.
    fn select_legs(&mut self, k: usize) {
        let s = &self.cfg.strategy;
        let z = &self.z;
        let thr = s.regime_filter.slope_min_bps_per_day;
        let directional_slope = match (&self.ind.slope, s.regime_filter.mode) {
            (Some(slope), RegimeMode::Directional) if s.regime_filter.enabled => Some(slope),
            _ => None,
        };
        let side_ok = |i: usize, long: bool| -> bool {
            let Some(slope) = &directional_slope else { return true };
            let slope = slope[i];
            slope.is_nan() || if long { slope >= thr } else { slope <= -thr }
        };
        let mut longs = std::mem::take(&mut self.long_candidates);
        let mut shorts = std::mem::take(&mut self.short_candidates);
        // Branch-free compaction (the sides of z are a coin flip for the branch predictor).
        longs.resize(self.eligible_list.len(), 0);
        shorts.resize(self.eligible_list.len(), 0);
        let (mut n_longs, mut n_shorts) = (0, 0);
        for &i in &self.eligible_list {
            longs[n_longs] = i;
            n_longs += ((!s.require_sign || z[i] > 0.0) & side_ok(i, true)) as usize;
            shorts[n_shorts] = i;
            n_shorts += ((!s.require_sign || z[i] < 0.0) & side_ok(i, false)) as usize;
        }
        longs.truncate(n_longs);
        shorts.truncate(n_shorts);
        let long_order = |a: &usize, b: &usize| z[*b].total_cmp(&z[*a]).then(a.cmp(b));
        let short_order = |a: &usize, b: &usize| z[*a].total_cmp(&z[*b]).then(b.cmp(a));
        self.longs.clear();
        self.shorts.clear();
        if s.bands.enabled {
            // Bands need the full rank order of each leg.
            longs.sort_unstable_by(long_order);
            shorts.sort_unstable_by(short_order);
            let buffer = s.bands.rank_buffer.unwrap_or(k);
            let held = self.held_sides();
            let (z_entry, z_exit) = (s.bands.z_entry, s.bands.z_exit);
            pick_with_bands(&longs, k, buffer, 1.0, z, &held, z_entry, z_exit, &mut self.longs);
            pick_with_bands(&shorts, k, buffer, -1.0, z, &held, z_entry, z_exit, &mut self.shorts);
        } else {
            // Only the top K of each leg matter: select them without sorting the rest.
            top_k(&mut longs, k, long_order, &mut self.longs);
            top_k(&mut shorts, k, short_order, &mut self.shorts);
        }
        // Without require_sign the two legs could meet when few are eligible: a symbol is in one leg only.
        let long_leg = &self.longs;
        self.shorts.retain(|i| !long_leg.contains(i));
        self.long_candidates = longs;
        self.short_candidates = shorts;
    }

    /// Side currently held per symbol (+1, −1, 0), from positions (units) or weights.
    fn held_sides(&self) -> Vec<i8> {
        match self.cfg.backtest.accounting {
            Accounting::Units => self.ledger.units.iter().map(|u| u.signum() as i8 * (*u != 0.0) as i8).collect(),
            Accounting::Weights => self.held_weights.iter().map(|w| w.signum() as i8 * (*w != 0.0) as i8).collect(),
        }
    }

    /// With the kill-switch in `freeze` mode no new risk is added: targets may only shrink toward 0.
    fn freeze_targets(&mut self, equity: f64) {
        for i in 0..self.target.len() {
            let current = if equity > 0.0 { self.ledger.units[i] * self.last_price[i] / equity } else { 0.0 };
            let current = if current.is_finite() { current } else { 0.0 };
            let target = self.target[i];
            self.target[i] = if current == 0.0 || target.signum() != current.signum() {
                0.0
            } else if target.abs() > current.abs() {
                current
            } else {
                target
            };
        }
    }

    /// Entry rules at decision bar t (its bar opened at `ts`): an entry (from flat, or a flip) that
    /// anti-churn or the time-of-day gate forbids gets a target of 0, so the position only goes to
    /// flat or stays flat. The admitted target is what every fill model trades toward.
    fn admit(&mut self, t: usize, ts: i64) {
        let mut active = std::mem::take(&mut self.active);
        active.assign_nonzero_or(&self.target, self.ledger.held());
        for i in active.iter() {
            let wanted = self.target[i];
            if wanted != 0.0 && self.risk.admissible_units(t, ts, i, self.ledger.units[i], wanted) == 0.0 {
                self.target[i] = 0.0;
            }
        }
        self.active = active;
    }

    /// The meta-labeler at decision bar t, after admission: new entries of the admitted target are
    /// consulted (and skipped or scaled once the model is active); a no-op when it is off.
    fn meta_label_entries(&mut self, t: usize, ts: i64, cross: Option<CrossSection>) {
        let Some(meta) = self.meta.as_mut() else { return };
        let inputs = DecisionInputs {
            ts,
            close_ts: ts + self.timeframe.ms,
            z: &self.z,
            sigma: &self.ind.sigma,
            slope: self.ind.slope.as_deref(),
            adx: self.ind.adx.as_deref(),
            dispersion: cross.map_or(f64::NAN, |c| c.std),
            units: &self.ledger.units,
        };
        meta.decide(t, &inputs, &self.ledger.round_trips, &mut self.target);
    }

    /// The meta-labeler's state (`None` when `strategy.meta_label` is off).
    pub fn meta_label(&self) -> Option<&MetaLabeler> {
        self.meta.as_ref()
    }

    /// Trade from current units to `target` weights at `prices`, sized on `equity` (market fills:
    /// `close` at this bar's close, `next_open` at this bar's open).
    fn rebalance(&mut self, t: usize, target: &[f64], equity: f64, prices: &[f64]) {
        let ts = self.bar_ts;
        let fill = self.cfg.execution.fill;
        let (fee_bps, slippage_bps) = execution::fill_costs(fill, FillReason::Rebalance, false, &self.cfg.costs);
        let min_delta = self.cfg.backtest.min_rebalance_delta;
        // Symbols flat with no target have nothing to trade: visit the others, in symbol order.
        let mut active = std::mem::take(&mut self.active);
        active.assign_nonzero_or(target, self.ledger.held());
        for i in active.iter() {
            let current = self.ledger.units[i];
            let delta = execution::rebalance_delta(target[i], equity, prices[i], current, min_delta);
            if delta == 0.0 {
                continue;
            }
            self.ledger.trade(t, ts, i, delta, prices[i], fee_bps, slippage_bps, FillReason::Rebalance);
            let decision_atr =
                if fill == FillPrice::NextOpen { self.ind.prev_atr.as_deref() } else { self.ind.atr.as_deref() };
            self.after_rebalance_fill(t, i, current, decision_atr.map_or(f64::NAN, |atr| atr[i]));
        }
        self.active = active;
        self.risk.absorb_round_trips(t, &self.ledger.round_trips);
    }

    /// Bookkeeping after a rebalance fill of symbol i at bar t: entries (re)open the stop state with
    /// `decision_atr`, armed from the bar after the fill.
    fn after_rebalance_fill(&mut self, t: usize, i: usize, before: f64, decision_atr: f64) {
        if let Some(meta) = self.meta.as_mut() {
            let p = meta.on_fill(i, before, self.ledger.units[i], &self.ledger.round_trips);
            self.ledger.fills.last_mut().expect("just traded").meta_p = p;
        }
        let fill_price = self.ledger.fills.last().expect("just traded").price;
        self.risk.on_rebalance_fill(t, self.bar_ts, i, before, self.ledger.units[i], fill_price, decision_atr, t);
    }

    /// `limit_touch`: replace the resting orders with one per symbol that the admitted target wants
    /// traded, at this close ± the offset. A symbol that keeps wanting the same side keeps its TTL clock.
    fn place_limits(&mut self, t: usize, equity: f64, close: &[f64]) {
        let (min_delta, offset) = (self.cfg.backtest.min_rebalance_delta, self.cfg.execution.limit_offset_bps);
        let target = std::mem::take(&mut self.target);
        let mut active = std::mem::take(&mut self.active);
        active.assign_nonzero_or(&target, self.ledger.held());
        for i in 0..self.resting.len() {
            if self.resting[i].is_some() && !active.contains(i) {
                self.cancel_resting_of(i);
            }
        }
        for i in active.iter() {
            let previous = self.resting[i].take();
            self.n_resting -= previous.is_some() as usize;
            let delta = execution::rebalance_delta(target[i], equity, close[i], self.ledger.units[i], min_delta);
            if delta == 0.0 {
                continue;
            }
            let side = delta.signum();
            let since_bar = previous.filter(|p| p.units.signum() == side).map_or(t, |p| p.since_bar);
            let atr = self.ind.atr.as_deref().map_or(f64::NAN, |atr| atr[i]);
            let price = execution::limit_price(close[i], side, offset);
            self.resting[i] = Some(RestingOrder { units: delta, price, placed_bar: t, since_bar, atr });
            self.n_resting += 1;
        }
        self.active = active;
        self.target = target;
    }

    /// Resting limits that bar t trades through fill at their price (or the open on a gap): maker
    /// fills without slippage.
    fn fill_resting(&mut self, t: usize, bar: &BarRow<'_>) {
        let (fee_bps, slippage_bps) =
            execution::fill_costs(FillPrice::LimitTouch, FillReason::Rebalance, true, &self.cfg.costs);
        for i in 0..self.resting.len() {
            let Some(order) = self.resting[i] else { continue };
            if order.placed_bar >= t {
                continue;
            }
            let side = order.units.signum();
            let Some(price) = execution::limit_fill(side, order.price, bar.open[i], bar.high[i], bar.low[i]) else {
                continue;
            };
            self.resting[i] = None;
            self.n_resting -= 1;
            let before = self.ledger.units[i];
            self.ledger.trade(t, self.bar_ts, i, order.units, price, fee_bps, slippage_bps, FillReason::Rebalance);
            self.after_rebalance_fill(t, i, before, order.atr);
        }
        self.risk.absorb_round_trips(t, &self.ledger.round_trips);
    }

    /// At the close of bar t, resting limits whose TTL ran out are sent as taker orders at this close
    /// or cancelled (`execution.limit_fallback`).
    fn expire_resting(&mut self, t: usize, close: &[f64]) {
        let ttl = self.cfg.execution.limit_ttl_bars;
        let taker = self.cfg.execution.limit_fallback == LimitFallback::Taker;
        let (fee_bps, slippage_bps) =
            execution::fill_costs(FillPrice::LimitTouch, FillReason::Rebalance, false, &self.cfg.costs);
        for i in 0..self.resting.len() {
            let Some(order) = self.resting[i] else { continue };
            if t < order.since_bar + ttl {
                continue;
            }
            self.resting[i] = None;
            self.n_resting -= 1;
            self.bar_orders.push(BarOrder::Expired { symbol: i, taker });
            if taker && close[i] > 0.0 {
                let before = self.ledger.units[i];
                self.ledger.trade(
                    t,
                    self.bar_ts,
                    i,
                    order.units,
                    close[i],
                    fee_bps,
                    slippage_bps,
                    FillReason::Rebalance,
                );
                let atr = self.ind.atr.as_deref().map_or(f64::NAN, |atr| atr[i]);
                self.after_rebalance_fill(t, i, before, atr);
            }
        }
        self.risk.absorb_round_trips(t, &self.ledger.round_trips);
    }

    fn cancel_resting_of(&mut self, symbol: usize) {
        if self.resting[symbol].take().is_some() {
            self.n_resting -= 1;
        }
    }

    fn cancel_resting(&mut self) {
        self.resting.fill(None);
        self.n_resting = 0;
    }

    /// Collect outputs and metrics.
    pub fn finish(self) -> BacktestResult {
        let metrics = if self.warm_bars > 0 {
            // A warm window: the base E_0 is the initial capital just before its first bar.
            let based = with_base_bar(&self.out, self.cfg.backtest.initial_capital);
            metrics::compute(based.equity_path(), &self.ledger.round_trips, 0, self.bars_per_year)
        } else {
            let start = self.first_decision.map(|f| f.saturating_sub(1)).unwrap_or(0);
            metrics::compute(self.out.equity_path(), &self.ledger.round_trips, start, self.bars_per_year)
        };
        let (n_bars, n_symbols) = (self.ts.len(), self.symbols.len());
        let mut warnings = self.warnings;
        warnings.extend(self.carry.as_ref().and_then(|sleeve| sleeve.mark_warning(&self.symbols)));
        BacktestResult {
            listed: Array2::from_shape_vec((n_bars, n_symbols), self.listed).expect("one row per bar"),
            signals: self.signals.map(|rows| rows.into_record(n_bars, n_symbols)),
            symbols: self.symbols,
            ts: self.ts,
            bars: self.out,
            book: self.book,
            fills: self.ledger.fills,
            round_trips: self.ledger.round_trips,
            metrics,
            first_decision: self.first_decision,
            warnings,
            meta_skipped: self.meta.map(MetaLabeler::into_skipped).unwrap_or_default(),
        }
    }
}

/// The series with a flat bar at `equity` in front (the columns metrics read).
fn with_base_bar(out: &BarSeries, equity: f64) -> BarSeries {
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

/// The indices of the `true` entries of `mask`, ascending, into `members` (branch-free: every index
/// is written, and the length only advances past members).
fn compact_members(mask: &[bool], members: &mut Vec<usize>) {
    members.clear();
    members.resize(mask.len(), 0);
    let mut len = 0;
    for (i, member) in mask.iter().enumerate() {
        members[len] = i;
        len += *member as usize;
    }
    members.truncate(len);
}

/// At most five names, then "… and N more".
fn abbreviate(names: &[String]) -> String {
    match names.len() {
        0..=5 => names.join(", "),
        n => format!("{}, … and {} more", names[..5].join(", "), n - 5),
    }
}

/// The first `k` of `candidates` in `order` (in no particular order among themselves), appended
/// to `leg`. Generic, so the comparison is inlined: this runs twice per bar.
fn top_k<F: FnMut(&usize, &usize) -> std::cmp::Ordering>(
    candidates: &mut [usize],
    k: usize,
    mut order: F,
    leg: &mut Vec<usize>,
) {
    if k == 0 {
        return;
    }
    if candidates.len() <= k {
        leg.extend_from_slice(candidates);
    } else if k >= 2 && candidates.len() <= SMALL_SELECTION {
        // A short list is sorted whole (which is what `select_nth_unstable_by` does below this
        // length too, so the legs come out in the same order), by insertion with the comparison
        // inlined.
        for i in 1..candidates.len() {
            let mut j = i;
            while j > 0 && order(&candidates[j], &candidates[j - 1]).is_lt() {
                candidates.swap(j, j - 1);
                j -= 1;
            }
        }
        leg.extend_from_slice(&candidates[..k]);
    } else {
        candidates.select_nth_unstable_by(k - 1, order);
        leg.extend_from_slice(&candidates[..k]);
    }
}

/// Candidate lists up to this length are selected by sorting them (see [`top_k`]).
const SMALL_SELECTION: usize = 16;

/// Bands (strategy.md §4): held names stay while their sign is unchanged, `|z| ≥ z_exit` and their rank is
/// within `K + buffer`; other names enter, in rank order, only with `|z| ≥ z_entry` and while the
/// leg has fewer than K names.
#[allow(clippy::too_many_arguments)]
fn pick_with_bands(
    candidates: &[usize],
    k: usize,
    buffer: usize,
    side: f64,
    z: &[f64],
    held_side: &[i8],
    z_entry: f64,
    z_exit: f64,
    leg: &mut Vec<usize>,
) {
    for (rank, &i) in candidates.iter().enumerate() {
        let held = held_side[i] as f64 == side;
        if held && rank < k + buffer && z[i].signum() == side && z[i].abs() >= z_exit {
            leg.push(i);
        }
    }
    for &i in candidates {
        if leg.len() >= k {
            break;
        }
        let held = held_side[i] as f64 == side;
        if !held && z[i].abs() >= z_entry {
            leg.push(i);
        }
    }
}
