//! Risk state machines (risk.md), stepped bar by bar by the backtester and, later, by the live runner.
//!
//! Implemented here: ATR stops (initial, catastrophic, trailing, breakeven, partial take-profit,
//! time exit) with cooldown (§1), the daily kill-switch (§2), the portfolio drawdown limit (§3),
//! anti-churn entry limits and the loss-streak pause (§4), symbol scoring with ban / downweight and
//! the time-of-day gate (§5) and Kelly scaling (§6). The regime router (§7) lives in `regime`, the
//! carry sleeve (§8) in `carry`.

use crate::bitset::{Bits, SymbolSet};
use crate::model::{FillReason, RoundTrip, BPS};
use crate::signal::{blend, finite};
use std::collections::VecDeque;

use crate::config::{
    AntiChurnConfig, Config, DrawdownConfig, KellyConfig, KillAction, KillSwitchConfig, ScoreAction, ScoringConfig,
    StopsConfig, TimeOfDayConfig,
};
use crate::timeframe::{Timeframe, MS_PER_DAY};

/// Features of the config that this version accepts but does not apply yet: one warning each.
pub fn unsupported_features(cfg: &Config) -> Vec<String> {
    let mut names = Vec::new();
    let r = &cfg.risk;
    if cfg.backtest.accounting == crate::config::Accounting::Weights {
        // Weights accounting has no positions to stop or enter: only the strategy's targets apply.
        if r.stops.enabled || r.kill_switch.enabled || r.anti_churn.enabled || r.scoring.enabled {
            names.push("risk rules (stops, kill-switch, anti-churn, scoring) with backtest.accounting = weights");
        }
    }
    names.into_iter().map(|name| format!("{name} is enabled but not implemented in this version: ignored")).collect()
}

/// Stop state of one open position (risk.md §1); `side` +1 long, −1 short.
#[derive(Debug, Clone, PartialEq)]
pub struct StopState {
    pub side: f64,
    pub entry_price: f64,
    pub entry_bar: usize,
    pub entry_atr: f64,
    /// Initial risk `R = atr_mult_sl × entry_atr`.
    pub risk: f64,
    pub stop: f64,
    pub catastrophic: f64,
    /// Best price since entry: highest high (long) / lowest low (short).
    pub extreme: f64,
    /// Which rule set the current stop level (reported as the exit reason).
    pub stop_reason: FillReason,
    pub partial_done: bool,
}

/// An exit decided by the stop machine: close `fraction` of the position at `price`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StopExit {
    pub symbol: usize,
    pub price: f64,
    pub fraction: f64,
    pub reason: FillReason,
}

impl StopState {
    pub fn open(side: f64, entry_price: f64, entry_bar: usize, atr: f64, cfg: &StopsConfig) -> Self {
        let risk = cfg.atr_mult_sl * atr;
        Self {
            side,
            entry_price,
            entry_bar,
            entry_atr: atr,
            risk,
            stop: entry_price - side * risk,
            catastrophic: entry_price - side * cfg.catastrophic_atr_mult * atr,
            extreme: entry_price,
            stop_reason: FillReason::Stop,
            partial_done: false,
        }
    }

    /// Test the levels carried from the previous bar against this bar (gap → fill at the open).
    /// The catastrophic stop wins when both are hit.
    pub fn test(&self, open: f64, high: f64, low: f64) -> Option<(f64, FillReason)> {
        for (level, reason) in [(self.catastrophic, FillReason::Stop), (self.stop, self.stop_reason)] {
            if let Some(price) = stop_hit(self.side, level, open, high, low) {
                return Some((price, reason));
            }
        }
        None
    }

    /// Level of the partial take-profit (risk.md §1).
    pub fn take_profit_level(&self, cfg: &StopsConfig) -> f64 {
        self.entry_price + self.side * cfg.partial_tp_r * self.risk
    }

    /// Update with this bar after the test: extreme, trailing stop, breakeven. Returns the partial
    /// take-profit level when it is reached for the first time.
    pub fn update(&mut self, high: f64, low: f64, atr: f64, cfg: &StopsConfig) -> Option<f64> {
        // Selects instead of branches: whether a bar makes a new extreme or moves the trail is a
        // coin flip for the branch predictor, and this runs for every open position every bar.
        let side = self.side;
        let favourable = if side > 0.0 { high } else { low };
        self.extreme = blend(side * (favourable - self.extreme) > 0.0, favourable, self.extreme);
        let trail = self.extreme - side * cfg.trail_atr_mult * atr;
        let trails = cfg.trailing & finite(atr) & (side * (trail - self.stop) > 0.0);
        self.stop = blend(trails, trail, self.stop);
        self.stop_reason = if trails { FillReason::Trail } else { self.stop_reason };
        let breakeven = (side * (self.extreme - self.entry_price) >= cfg.breakeven_after_r * self.risk)
            & (side * (self.entry_price - self.stop) > 0.0);
        self.stop = blend(breakeven, self.entry_price, self.stop);
        self.stop_reason = if breakeven { FillReason::Breakeven } else { self.stop_reason };
        if !self.partial_done && cfg.partial_tp_frac > 0.0 {
            let level = self.take_profit_level(cfg);
            if take_profit_hit(side, level, high, low) {
                self.partial_done = true;
                return Some(level);
            }
        }
        None
    }
}

/// Where a stop at `level` protecting a position on `side` (+1 long, −1 short) exits in a bar: at
/// the open when the bar opens through it (gap), at the level when the bar trades to it, else `None`.
#[inline]
pub fn stop_hit(side: f64, level: f64, open: f64, high: f64, low: f64) -> Option<f64> {
    // "Adverse" price of the bar: the low for a long, the high for a short.
    let adverse = if side > 0.0 { low } else { high };
    if side * (level - open) >= 0.0 {
        Some(open)
    } else if side * (level - adverse) >= 0.0 {
        Some(level)
    } else {
        None
    }
}

/// Whether a bar reaches the take-profit `level` of a position on `side` (filled at the level).
#[inline]
pub fn take_profit_hit(side: f64, level: f64, high: f64, low: f64) -> bool {
    let favourable = if side > 0.0 { high } else { low };
    side * (favourable - level) >= 0.0
}

/// Portfolio-level outcome for one bar (daily kill-switch and drawdown limit).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KillState {
    /// Why positions are flattened this bar: `kill_switch` or `flatten` (drawdown limit).
    pub reason: Option<FillReason>,
    /// Flatten everything at this bar.
    pub flatten: bool,
    /// No decisions this bar (flatten mode after a trigger, until the next UTC day).
    pub paused: bool,
    /// Freeze mode after a trigger: targets may only shrink.
    pub freeze: bool,
    /// The switch has fired today.
    pub active: bool,
}

/// Daily loss kill-switch (risk.md §2).
#[derive(Debug, Clone, PartialEq)]
pub struct KillSwitch {
    cfg: KillSwitchConfig,
    day: i64,
    day_start_equity: f64,
    day_high_equity: f64,
    fired: bool,
}

/// What a [`KillSwitch`] remembers between bars, for the live runner's state file.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KillSwitchSnapshot {
    /// UTC day number (days since the epoch) the reference belongs to.
    pub day: Option<i64>,
    pub day_start_equity: Option<f64>,
    pub day_high_equity: Option<f64>,
    pub fired: bool,
}

impl KillSwitch {
    pub fn new(cfg: &KillSwitchConfig) -> Self {
        Self { cfg: cfg.clone(), day: i64::MIN, day_start_equity: f64::NAN, day_high_equity: f64::NAN, fired: false }
    }

    pub fn snapshot(&self) -> KillSwitchSnapshot {
        let finite = |v: f64| v.is_finite().then_some(v);
        KillSwitchSnapshot {
            day: (self.day != i64::MIN).then_some(self.day),
            day_start_equity: finite(self.day_start_equity),
            day_high_equity: finite(self.day_high_equity),
            fired: self.fired,
        }
    }

    pub fn restore(cfg: &KillSwitchConfig, snapshot: &KillSwitchSnapshot) -> Self {
        Self {
            cfg: cfg.clone(),
            day: snapshot.day.unwrap_or(i64::MIN),
            day_start_equity: snapshot.day_start_equity.unwrap_or(f64::NAN),
            day_high_equity: snapshot.day_high_equity.unwrap_or(f64::NAN),
            fired: snapshot.fired,
        }
    }

    /// Feed the equity at the close of the bar starting at `ts`. The day is the UTC day of the close time.
    pub fn check(&mut self, ts: i64, equity: f64, timeframe: Timeframe) -> KillState {
        if !self.cfg.enabled {
            return KillState::default();
        }
        let close = ts + timeframe.ms;
        // Same day as the last bar in most bars: compare with its bounds instead of dividing.
        let day = if self.day != i64::MIN && in_day(close, self.day) { self.day } else { close.div_euclid(MS_PER_DAY) };
        if day != self.day {
            self.day = day;
            self.day_start_equity = equity;
            self.day_high_equity = equity;
            self.fired = false;
        }
        self.day_high_equity = self.day_high_equity.max(equity);
        let reference = if self.cfg.trailing { self.day_high_equity } else { self.day_start_equity };
        let mut flatten = false;
        if !self.fired && reference > 0.0 && (reference - equity) / reference >= self.cfg.max_daily_loss_pct / 100.0 {
            self.fired = true;
            flatten = self.cfg.action == KillAction::Flatten;
        }
        KillState {
            reason: flatten.then_some(FillReason::KillSwitch),
            flatten,
            paused: self.fired && self.cfg.action == KillAction::Flatten,
            freeze: self.fired && self.cfg.action == KillAction::Freeze,
            active: self.fired,
        }
    }
}

/// Portfolio drawdown limit (risk.md §3): from the running equity peak of the last `dd_window_days`,
/// a drawdown of `max_portfolio_drawdown_pct` flattens and pauses trading until the drawdown is back
/// below `resume_fraction` of the limit or `dd_pause_bars` have passed.
#[derive(Debug, Clone, PartialEq)]
pub struct DrawdownLimit {
    cfg: DrawdownConfig,
    window_bars: usize,
    /// Monotonic queue of (bar, equity): the front is the peak of the window.
    peaks: VecDeque<(usize, f64)>,
    paused_since: Option<usize>,
}

impl DrawdownLimit {
    pub fn new(cfg: &DrawdownConfig, bars_per_day: usize) -> Self {
        Self {
            cfg: cfg.clone(),
            window_bars: (cfg.dd_window_days * bars_per_day).max(1),
            peaks: VecDeque::new(),
            paused_since: None,
        }
    }

    /// Feed the equity at bar t; returns (flatten now, paused).
    pub fn check(&mut self, t: usize, equity: f64) -> (bool, bool) {
        if !self.cfg.enabled {
            return (false, false);
        }
        while self.peaks.back().is_some_and(|(_, e)| *e <= equity) {
            self.peaks.pop_back();
        }
        self.peaks.push_back((t, equity));
        while self.peaks.front().is_some_and(|(bar, _)| bar + self.window_bars <= t) {
            self.peaks.pop_front();
        }
        let peak = self.peaks.front().map_or(equity, |(_, e)| *e);
        let drawdown = if peak > 0.0 { (peak - equity) / peak } else { 0.0 };
        let limit = self.cfg.max_portfolio_drawdown_pct / 100.0;
        if let Some(since) = self.paused_since {
            if drawdown < self.cfg.resume_fraction * limit || t - since >= self.cfg.dd_pause_bars {
                self.paused_since = None;
                return (false, false);
            }
            return (false, true);
        }
        if drawdown >= limit {
            self.paused_since = Some(t);
            return (true, true);
        }
        (false, false)
    }
}

/// All per-symbol and portfolio risk state of one strategy instance.
#[derive(Debug, Clone)]
pub struct RiskEngine {
    stops_cfg: StopsConfig,
    stops: Vec<Option<StopState>>,
    /// The symbols whose `stops` entry is `Some`: the per-bar stop passes visit these only, in
    /// symbol order.
    open_stops: SymbolSet,
    /// First bar symbol i may be held again: past both its cooldown after a stop or time exit and
    /// its scoring ban (0 = now). Both only ever move forward, so this is the max of the two.
    hold_from: Vec<usize>,
    /// Size multiplier after a partial take-profit (kept until the position is closed or flips).
    size_after_tp: Vec<f64>,
    /// Scoring multiplier per symbol: `downweight_factor` while downweighted, else 1.
    downweight: Vec<f64>,
    kill: KillSwitch,
    drawdown: DrawdownLimit,
    trips_seen: usize,
    anti_churn: AntiChurnConfig,
    time_of_day: TimeOfDayConfig,
    /// Per UTC hour of entry: (round trips, EMA of their return in bps).
    hours: [(usize, f64); 24],
    kelly: KellyConfig,
    /// Returns of the last `kelly_window` round trips per symbol.
    recent_returns: Vec<VecDeque<f64>>,
    scoring: ScoringConfig,
    timeframe: Timeframe,
    entries: Vec<EntryLog>,
    scores: Vec<SymbolScore>,
}

/// Entries of one symbol, for the anti-churn limits (risk.md §4).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntryLog {
    /// UTC day (of the bar close) the count below belongs to.
    pub day: i64,
    pub entries_today: usize,
    pub last_entry: Option<usize>,
    pub losing_streak: usize,
    /// No entries up to and including this bar after a losing streak.
    pub paused_until: Option<usize>,
}

/// Round-trip statistics of one symbol (risk.md §5).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SymbolScore {
    pub trades: usize,
    pub wins: usize,
    pub gross_profit: f64,
    pub gross_loss: f64,
    /// EMA of the win indicator (1 win, 0 loss), seeded with the first trip.
    pub ema_win_rate: f64,
    pub ema_pnl: f64,
    pub banned_until: Option<usize>,
    pub downweighted: bool,
}

impl SymbolScore {
    /// Gross profit / gross loss; ∞ without a loss (a symbol that only wins is never banned).
    pub fn profit_factor(&self) -> f64 {
        if self.gross_loss > 0.0 {
            self.gross_profit / self.gross_loss
        } else {
            f64::INFINITY
        }
    }

    /// Record a closed trip; returns true when the symbol now scores badly.
    fn record(&mut self, pnl: f64, cfg: &ScoringConfig) -> bool {
        let win = if pnl > 0.0 { 1.0 } else { 0.0 };
        if self.trades == 0 {
            self.ema_win_rate = win;
            self.ema_pnl = pnl;
        } else {
            self.ema_win_rate += cfg.score_ema_alpha * (win - self.ema_win_rate);
            self.ema_pnl += cfg.score_ema_alpha * (pnl - self.ema_pnl);
        }
        self.trades += 1;
        if pnl > 0.0 {
            self.wins += 1;
            self.gross_profit += pnl;
        } else {
            self.gross_loss -= pnl;
        }
        self.trades >= cfg.min_trades
            && (self.ema_win_rate < cfg.win_rate_threshold || self.profit_factor() < cfg.pf_threshold)
    }
}

impl RiskEngine {
    pub fn new(cfg: &Config, n_symbols: usize, timeframe: Timeframe) -> Self {
        Self {
            stops_cfg: cfg.risk.stops.clone(),
            stops: vec![None; n_symbols],
            open_stops: SymbolSet::new(n_symbols),
            hold_from: vec![0; n_symbols],
            size_after_tp: vec![1.0; n_symbols],
            downweight: vec![1.0; n_symbols],
            kill: KillSwitch::new(&cfg.risk.kill_switch),
            drawdown: DrawdownLimit::new(&cfg.risk.drawdown, timeframe.bars_per_day()),
            trips_seen: 0,
            anti_churn: cfg.risk.anti_churn.clone(),
            time_of_day: cfg.risk.time_of_day.clone(),
            hours: [(0, 0.0); 24],
            kelly: cfg.sizing.kelly.clone(),
            recent_returns: vec![VecDeque::new(); n_symbols],
            scoring: cfg.risk.scoring.clone(),
            timeframe,
            entries: vec![EntryLog::default(); n_symbols],
            scores: vec![SymbolScore::default(); n_symbols],
        }
    }

    pub fn score(&self, symbol: usize) -> &SymbolScore {
        &self.scores[symbol]
    }

    pub fn entry_log(&self, symbol: usize) -> &EntryLog {
        &self.entries[symbol]
    }

    pub fn stop_state(&self, symbol: usize) -> Option<&StopState> {
        self.stops[symbol].as_ref()
    }

    /// Whether symbol i may be held (and so be eligible) at bar t: not in a stop cooldown, not banned.
    pub fn may_hold(&self, t: usize, symbol: usize) -> bool {
        t >= self.hold_from[symbol]
    }

    /// Per symbol, the first bar it may be held again (see [`RiskEngine::may_hold`]).
    pub fn hold_from(&self) -> &[usize] {
        &self.hold_from
    }

    /// The position a rebalance may move to: `wanted`, or 0 when it would be an entry (from flat or a
    /// flip) that the anti-churn rules forbid at bar t (its bar opened at `ts`). Exits are never blocked.
    pub fn admissible_units(&self, t: usize, ts: i64, symbol: usize, current: f64, wanted: f64) -> f64 {
        let entering = wanted != 0.0 && (current == 0.0 || current.signum() != wanted.signum());
        if !entering {
            return wanted;
        }
        if self.time_of_day.enabled && !self.hour_allows_entries(ts) {
            return 0.0;
        }
        if !self.anti_churn.enabled {
            return wanted;
        }
        let log = &self.entries[symbol];
        let cfg = &self.anti_churn;
        let today = in_day(ts + self.timeframe.ms, log.day) && log.entries_today >= cfg.max_entries_per_day_per_symbol;
        let too_soon = log.last_entry.is_some_and(|last| t < last + cfg.min_bars_between_entries);
        let paused = log.paused_until.is_some_and(|until| t <= until);
        if today || too_soon || paused {
            0.0
        } else {
            wanted
        }
    }

    /// Time-of-day gate (risk.md §5): no entries in blackout hours or in hours whose round trips
    /// (at least `min_trades_per_hour`) have an EMA return below `threshold_bps`. The hour is the UTC
    /// hour of the bar's close, when the entry is filled.
    fn hour_allows_entries(&self, ts: i64) -> bool {
        let hour = self.hour_of(ts);
        let (trades, ema_bps) = self.hours[hour];
        let blackout = self.time_of_day.blackout_hours_utc.contains(&(hour as u32));
        let losing_hour = trades >= self.time_of_day.min_trades_per_hour && ema_bps < self.time_of_day.threshold_bps;
        !(blackout || losing_hour)
    }

    fn hour_of(&self, ts: i64) -> usize {
        ((ts + self.timeframe.ms).div_euclid(3_600_000)).rem_euclid(24) as usize
    }

    /// Kelly multipliers (risk.md §6) into `out`; false when Kelly is off (all 1).
    pub fn kelly_multipliers(&self, out: &mut [f64]) -> bool {
        if !self.kelly.enabled {
            return false;
        }
        for (m, returns) in out.iter_mut().zip(&self.recent_returns) {
            *m = kelly_multiplier(returns.iter().copied(), &self.kelly);
        }
        true
    }

    /// Size factor of symbol i (partial take-profit, scoring downweight), applied to its target.
    pub fn size_factor(&self, symbol: usize) -> f64 {
        self.size_after_tp[symbol] * self.downweight[symbol]
    }

    /// Multiply each target weight by its symbol's [`RiskEngine::size_factor`].
    pub fn apply_size_factors(&self, weights: &mut [f64]) {
        for ((w, after_tp), downweight) in weights.iter_mut().zip(&self.size_after_tp).zip(&self.downweight) {
            *w *= after_tp * downweight;
        }
    }

    /// Test every open stop against bar t (before the decision at its close).
    /// `open`, `high`, `low`: bar t per symbol.
    pub fn check_stops(
        &mut self,
        t: usize,
        open: &[f64],
        high: &[f64],
        low: &[f64],
        units: &[f64],
        exits: &mut Vec<StopExit>,
    ) {
        exits.clear();
        if !self.stops_cfg.enabled {
            return;
        }
        for symbol in self.open_stops.iter() {
            let Some(state) = &self.stops[symbol] else { continue };
            if units[symbol] == 0.0 || state.entry_bar >= t {
                continue;
            }
            let (open, high, low) = (open[symbol], high[symbol], low[symbol]);
            if !(finite(open) & finite(high) & finite(low)) {
                continue;
            }
            if let Some((price, reason)) = state.test(open, high, low) {
                exits.push(StopExit { symbol, price, fraction: 1.0, reason });
            }
        }
    }

    /// After bar t's close: update extremes, trailing and breakeven levels; decide partial
    /// take-profits and time exits. Returns exits to execute at this bar.
    #[allow(clippy::too_many_arguments)]
    pub fn end_bar_exits(
        &mut self,
        t: usize,
        high: &[f64],
        low: &[f64],
        close: &[f64],
        units: &[f64],
        atr: Option<&[f64]>,
        exits: &mut Vec<StopExit>,
    ) {
        exits.clear();
        if !self.stops_cfg.enabled {
            return;
        }
        let cfg = &self.stops_cfg;
        // Visits open stops only, walking a copy of each word: closing the current one is fine.
        for w in 0..self.open_stops.word_count() {
            for bit in Bits(self.open_stops.word(w)) {
                let symbol = 64 * w + bit;
                if units[symbol] == 0.0 {
                    self.stops[symbol] = None;
                    self.open_stops.remove(symbol);
                    continue;
                }
                let Some(state) = self.stops[symbol].as_mut() else {
                    continue;
                };
                if state.entry_bar >= t {
                    continue;
                }
                let (high, low, close) = (high[symbol], low[symbol], close[symbol]);
                if !(finite(high) & finite(low)) {
                    continue;
                }
                let atr_now = atr.map_or(f64::NAN, |a| a[symbol]);
                if let Some(level) = state.update(high, low, atr_now, cfg) {
                    exits.push(StopExit {
                        symbol,
                        price: level,
                        fraction: cfg.partial_tp_frac,
                        reason: FillReason::TakeProfit,
                    });
                }
                if cfg.max_bars_in_trade > 0 && t - state.entry_bar >= cfg.max_bars_in_trade && close.is_finite() {
                    exits.push(StopExit { symbol, price: close, fraction: 1.0, reason: FillReason::Time });
                }
            }
        }
    }

    /// Keep the state machines in step with the book after bar t (no exits decided here).
    pub fn end_bar(&mut self, units: &[f64]) {
        for (units, size_after_tp) in units.iter().zip(self.size_after_tp.iter_mut()) {
            *size_after_tp = if *units == 0.0 { 1.0 } else { *size_after_tp };
        }
        for w in 0..self.open_stops.word_count() {
            for bit in Bits(self.open_stops.word(w)) {
                let symbol = 64 * w + bit;
                if units[symbol] == 0.0 {
                    self.close_stop(symbol);
                }
            }
        }
    }

    /// A stop, take-profit, time or kill-switch exit was filled; `units_after` is what remains.
    pub fn on_exit(&mut self, t: usize, symbol: usize, units_after: f64, reason: FillReason) {
        if reason == FillReason::TakeProfit && units_after != 0.0 {
            self.size_after_tp[symbol] *= 1.0 - self.stops_cfg.partial_tp_frac;
            return;
        }
        self.close_stop(symbol);
        self.size_after_tp[symbol] = 1.0;
        if matches!(reason, FillReason::Stop | FillReason::Trail | FillReason::Breakeven | FillReason::Time) {
            let until = t + self.stops_cfg.cooldown_bars_after_stop;
            self.hold_from[symbol] = self.hold_from[symbol].max(until + 1);
        }
    }

    /// A rebalance fill moved symbol i from `before` to `after` units at `price`. Entries and flips
    /// (re)open the stop state with the ATR of the bar the decision was made on.
    #[allow(clippy::too_many_arguments)]
    pub fn on_rebalance_fill(
        &mut self,
        t: usize,
        ts: i64,
        symbol: usize,
        before: f64,
        after: f64,
        price: f64,
        decision_atr: f64,
        decision_bar: usize,
    ) {
        if after == 0.0 {
            self.close_stop(symbol);
            self.size_after_tp[symbol] = 1.0;
            return;
        }
        let entering = before == 0.0 || before.signum() != after.signum();
        if !entering {
            return;
        }
        let close = ts + self.timeframe.ms;
        let log = &mut self.entries[symbol];
        if !in_day(close, log.day) {
            log.day = close.div_euclid(MS_PER_DAY);
            log.entries_today = 0;
        }
        log.entries_today += 1;
        log.last_entry = Some(t);
        if !self.stops_cfg.enabled {
            return;
        }
        self.size_after_tp[symbol] = 1.0;
        let atr_value = decision_atr;
        let state = if atr_value.is_finite() && atr_value > 0.0 {
            // Stops are tested from the bar after the decision: for next-open fills that is the fill bar.
            Some(StopState::open(after.signum(), price, decision_bar, atr_value, &self.stops_cfg))
        } else {
            None
        };
        self.set_stop(symbol, state);
    }

    /// Open (or replace) the stop state of `symbol`, keeping `open_stops` in step.
    fn set_stop(&mut self, symbol: usize, state: Option<StopState>) {
        self.open_stops.assign(symbol, state.is_some());
        self.stops[symbol] = state;
    }

    fn close_stop(&mut self, symbol: usize) {
        self.set_stop(symbol, None);
    }

    /// Daily kill-switch and portfolio drawdown limit at bar t.
    pub fn check_portfolio(&mut self, t: usize, ts: i64, equity: f64) -> KillState {
        let mut state = self.kill.check(ts, equity, self.timeframe);
        let (dd_flatten, dd_paused) = self.drawdown.check(t, equity);
        if dd_flatten && !state.flatten {
            state.flatten = true;
            state.reason = Some(FillReason::Flatten);
        }
        state.paused |= dd_paused;
        state
    }

    /// Round trips closed up to bar t: loss streaks (§4) and scores (§5) of their symbols.
    pub fn absorb_round_trips(&mut self, t: usize, trips: &[RoundTrip]) {
        for trip in &trips[self.trips_seen..] {
            let symbol = trip.symbol;
            if self.time_of_day.enabled {
                let (count, ema) = &mut self.hours[self.hour_of(trip.entry_ts)];
                let bps = trip.ret * BPS;
                *ema = if *count == 0 { bps } else { *ema + self.time_of_day.score_ema_alpha * (bps - *ema) };
                *count += 1;
            }
            if self.kelly.enabled {
                let returns = &mut self.recent_returns[symbol];
                if returns.len() == self.kelly.kelly_window {
                    returns.pop_front();
                }
                returns.push_back(trip.ret);
            }
            let log = &mut self.entries[symbol];
            if trip.pnl < 0.0 {
                log.losing_streak += 1;
                if self.anti_churn.enabled && log.losing_streak >= self.anti_churn.streak_pause_after_losses {
                    log.paused_until = Some(t + self.anti_churn.streak_pause_bars);
                    log.losing_streak = 0;
                }
            } else {
                log.losing_streak = 0;
            }
            if self.scoring.enabled {
                let score = &mut self.scores[symbol];
                let bad = score.record(trip.pnl, &self.scoring);
                match self.scoring.action {
                    ScoreAction::Ban if bad => {
                        let until = t + self.scoring.ban_bars;
                        score.banned_until = Some(until);
                        self.hold_from[symbol] = self.hold_from[symbol].max(until + 1);
                    }
                    ScoreAction::Ban => {}
                    ScoreAction::Downweight => {
                        score.downweighted = bad;
                        self.downweight[symbol] = if bad { self.scoring.downweight_factor } else { 1.0 };
                    }
                }
            }
        }
        self.trips_seen = trips.len();
    }
}

/// Whether the time `ms` (epoch ms) falls on UTC day number `day` (`ms.div_euclid(MS_PER_DAY) ==
/// day`, without the division).
fn in_day(ms: i64, day: i64) -> bool {
    day.checked_mul(MS_PER_DAY)
        .and_then(|start| ms.checked_sub(start))
        .is_some_and(|into| (0..MS_PER_DAY).contains(&into))
}

/// Kelly weight multiplier from a symbol's recent round-trip returns (risk.md §6): `p` win rate,
/// `b` = average win / average loss, `f = p − (1 − p)/b` clamped to [0, 1], multiplier
/// `clamp(kelly_fraction · f / f_ref, kelly_min_scale, kelly_max_scale)`; 1 with fewer than
/// `min_trades` trips.
pub fn kelly_multiplier(returns: impl Iterator<Item = f64>, cfg: &KellyConfig) -> f64 {
    let (mut n, mut wins, mut win_sum, mut loss_sum) = (0usize, 0usize, 0.0, 0.0);
    for r in returns {
        n += 1;
        if r > 0.0 {
            wins += 1;
            win_sum += r;
        } else {
            loss_sum -= r;
        }
    }
    if n < cfg.min_trades.max(1) {
        return 1.0;
    }
    let p = wins as f64 / n as f64;
    let losses = n - wins;
    let f = if losses == 0 || loss_sum == 0.0 {
        p
    } else if wins == 0 {
        0.0
    } else {
        let b = (win_sum / wins as f64) / (loss_sum / losses as f64);
        p - (1.0 - p) / b
    };
    (cfg.kelly_fraction * f.clamp(0.0, 1.0) / cfg.f_ref).clamp(cfg.kelly_min_scale, cfg.kelly_max_scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops() -> StopsConfig {
        StopsConfig::default()
    }

    #[test]
    fn in_day_agrees_with_dividing() {
        for ms in [-MS_PER_DAY - 1, -1, 0, 1, MS_PER_DAY - 1, MS_PER_DAY, 1_700_000_000_000, 1_700_006_400_000] {
            let day = ms.div_euclid(MS_PER_DAY);
            for candidate in [day - 1, day, day + 1, i64::MIN, i64::MAX] {
                assert_eq!(in_day(ms, candidate), candidate == day, "{ms} {candidate}");
            }
        }
    }

    #[test]
    fn long_stop_gap_and_touch() {
        // Entry 100, ATR 5: R = 10, stop 90, catastrophic 82.5.
        let state = StopState::open(1.0, 100.0, 0, 5.0, &stops());
        assert_eq!(state.stop, 90.0);
        assert_eq!(state.test(95.0, 101.0, 91.0), None);
        assert_eq!(state.test(95.0, 101.0, 89.0), Some((90.0, FillReason::Stop)));
        assert_eq!(state.test(88.0, 92.0, 87.0), Some((88.0, FillReason::Stop)));
        // Both hit: the catastrophic level wins.
        assert_eq!(state.test(95.0, 96.0, 80.0), Some((82.5, FillReason::Stop)));
    }

    #[test]
    fn short_mirrors_long() {
        let state = StopState::open(-1.0, 100.0, 0, 5.0, &stops());
        assert_eq!(state.stop, 110.0);
        assert_eq!(state.test(105.0, 111.0, 99.0), Some((110.0, FillReason::Stop)));
        assert_eq!(state.test(112.0, 113.0, 111.0), Some((112.0, FillReason::Stop)));
    }

    #[test]
    fn breakeven_trailing_and_partial_take_profit() {
        let cfg = stops();
        let mut state = StopState::open(1.0, 100.0, 0, 5.0, &cfg);
        // High 108 ≥ 100 + 0.75·10: partial TP at 107.5; breakeven after 0.6 R = 106; trail 108 − 7.5.
        let tp = state.update(108.0, 101.0, 5.0, &cfg);
        assert_eq!(tp, Some(107.5));
        assert_eq!(state.stop, 100.5);
        assert_eq!(state.stop_reason, FillReason::Trail);
        assert_eq!(state.update(109.0, 104.0, 5.0, &cfg), None, "the partial take-profit happens once");
    }

    #[test]
    fn kill_switch_fires_once_and_resets_next_day() {
        let cfg = KillSwitchConfig::default();
        let mut kill = KillSwitch::new(&cfg);
        let hour = Timeframe::parse("1h").unwrap();
        let h = 3_600_000;
        assert!(!kill.check(0, 100.0, hour).active);
        assert!(!kill.check(h, 96.0, hour).active);
        let fired = kill.check(2 * h, 95.0, hour);
        assert!(fired.flatten && fired.paused);
        let after = kill.check(3 * h, 90.0, hour);
        assert!(!after.flatten && after.paused);
        // Bar starting 23:00 closes at 00:00 of the next day: a new day starts there.
        let next_day = kill.check(23 * h, 90.0, hour);
        assert!(!next_day.active);
    }
}

#[cfg(test)]
mod churn_and_scoring_tests {
    use super::*;
    use crate::model::RoundTrip;

    const H: i64 = 3_600_000;

    fn engine(cfg: &Config) -> RiskEngine {
        RiskEngine::new(cfg, 2, Timeframe::parse("1h").unwrap())
    }

    fn trip(symbol: usize, pnl: f64) -> RoundTrip {
        RoundTrip {
            symbol,
            side: 1,
            entry_ts: 0,
            exit_ts: 0,
            entry_price: 1.0,
            exit_price: 1.0,
            qty: 1.0,
            pnl,
            ret: pnl,
            bars_held: 1,
            exit_reason: FillReason::Rebalance,
        }
    }

    #[test]
    fn entries_per_day_are_capped_and_reset_next_day() {
        let mut cfg = Config::default();
        cfg.risk.anti_churn.max_entries_per_day_per_symbol = 2;
        let mut risk = engine(&cfg);
        for t in 0..2 {
            assert_eq!(risk.admissible_units(t, t as i64 * H, 0, 0.0, 5.0), 5.0);
            risk.on_rebalance_fill(t, t as i64 * H, 0, 0.0, 5.0, 1.0, f64::NAN, t);
            risk.on_rebalance_fill(t, t as i64 * H, 0, 5.0, 0.0, 1.0, f64::NAN, t);
        }
        // A third entry the same day is refused; exits and the other symbol are not affected.
        assert_eq!(risk.admissible_units(2, 2 * H, 0, 0.0, 5.0), 0.0);
        assert_eq!(risk.admissible_units(2, 2 * H, 0, 3.0, 1.0), 1.0);
        assert_eq!(risk.admissible_units(2, 2 * H, 1, 0.0, 5.0), 5.0);
        // The bar starting 23:00 closes on the next UTC day.
        assert_eq!(risk.admissible_units(23, 23 * H, 0, 0.0, 5.0), 5.0);
    }

    #[test]
    fn losing_streak_pauses_entries() {
        let cfg = Config::default();
        let mut risk = engine(&cfg);
        let trips = vec![trip(0, -1.0), trip(0, -2.0), trip(0, -0.5)];
        risk.absorb_round_trips(10, &trips);
        assert_eq!(risk.entry_log(0).paused_until, Some(34));
        assert_eq!(risk.admissible_units(34, 34 * H, 0, 0.0, 1.0), 0.0);
        assert_eq!(risk.admissible_units(35, 35 * H, 0, 0.0, 1.0), 1.0);
    }

    #[test]
    fn scoring_bans_losers_but_never_a_symbol_that_only_wins() {
        let cfg = Config::default();
        let mut risk = engine(&cfg);
        let mut trips = Vec::new();
        for k in 0..12 {
            trips.push(trip(0, 1.0 + k as f64)); // only wins
            trips.push(trip(1, if k % 4 == 0 { 1.0 } else { -1.0 })); // 25 % winners
        }
        risk.absorb_round_trips(100, &trips);
        assert!(risk.may_hold(101, 0));
        assert_eq!(risk.score(0).profit_factor(), f64::INFINITY);
        assert!(!risk.may_hold(101, 1));
        assert!(!risk.may_hold(124, 1));
        assert!(risk.may_hold(125, 1));
        // Downweighting instead of banning.
        let mut cfg = Config::default();
        cfg.risk.scoring.action = ScoreAction::Downweight;
        let mut risk = engine(&cfg);
        risk.absorb_round_trips(100, &trips);
        assert!(risk.may_hold(101, 1));
        assert_eq!(risk.size_factor(1), 0.5);
        assert_eq!(risk.size_factor(0), 1.0);
    }
}

#[cfg(test)]
mod portfolio_and_sizing_rule_tests {
    use super::*;

    #[test]
    fn drawdown_limit_flattens_pauses_and_resumes() {
        let cfg = DrawdownConfig {
            enabled: true,
            max_portfolio_drawdown_pct: 10.0,
            dd_window_days: 1,
            resume_fraction: 0.5,
            dd_pause_bars: 5,
        };
        let mut limit = DrawdownLimit::new(&cfg, 24);
        assert_eq!(limit.check(0, 100.0), (false, false));
        assert_eq!(limit.check(1, 110.0), (false, false));
        assert_eq!(limit.check(2, 99.5), (false, false)); // 9.5 % below the peak of 110
        assert_eq!(limit.check(3, 98.0), (true, true)); // 10.9 %: flatten and pause
        assert_eq!(limit.check(4, 98.0), (false, true));
        assert_eq!(limit.check(5, 105.0), (false, false), "back within 5 % of the peak: resume");
        assert_eq!(limit.check(6, 90.0), (true, true));
        for t in 7..11 {
            assert_eq!(limit.check(t, 90.0), (false, true), "bar {t}");
        }
        assert_eq!(limit.check(11, 90.0), (false, false), "dd_pause_bars passed");
        // The peak is that of the window: after a day the old peak of 110 is forgotten.
        let mut limit = DrawdownLimit::new(&cfg, 24);
        limit.check(0, 110.0);
        assert_eq!(limit.check(24, 98.0), (false, false));
    }

    #[test]
    fn kelly_multiplier_by_hand() {
        let cfg = KellyConfig { enabled: true, min_trades: 4, ..KellyConfig::default() };
        // p = 0.5, b = 0.02 / 0.01 = 2 → f = 0.5 − 0.5/2 = 0.25 → 0.5 · 0.25 / 0.25 = 0.5.
        let returns = [0.02, -0.01, 0.02, -0.01];
        assert!((kelly_multiplier(returns.into_iter(), &cfg) - 0.5).abs() < 1e-12);
        // p = 0.75, b = 1 → f = 0.5 → 1.0.
        let returns = [0.01, 0.01, 0.01, -0.01];
        assert!((kelly_multiplier(returns.into_iter(), &cfg) - 1.0).abs() < 1e-12);
        // Only wins: f = 1 → 2.0 clamped to 1.6; only losses: f = 0 → 0 clamped to 0.5.
        assert_eq!(kelly_multiplier([0.01; 5].into_iter(), &cfg), 1.6);
        assert_eq!(kelly_multiplier([-0.01; 5].into_iter(), &cfg), 0.5);
        // Too few trips: 1.
        assert_eq!(kelly_multiplier([0.01; 3].into_iter(), &cfg), 1.0);
    }

    #[test]
    fn time_of_day_gate_blocks_bad_hours_and_blackouts() {
        let mut cfg = Config::default();
        cfg.risk.time_of_day = TimeOfDayConfig {
            enabled: true,
            min_trades_per_hour: 2,
            threshold_bps: 0.0,
            score_ema_alpha: 0.5,
            blackout_hours_utc: vec![3],
        };
        let mut risk = RiskEngine::new(&cfg, 1, Timeframe::parse("1h").unwrap());
        let h = 3_600_000;
        let losing_trip = |entry_ts: i64| RoundTrip {
            symbol: 0,
            side: 1,
            entry_ts,
            exit_ts: entry_ts + h,
            entry_price: 1.0,
            exit_price: 1.0,
            qty: 1.0,
            pnl: -1.0,
            ret: -0.001,
            bars_held: 1,
            exit_reason: FillReason::Rebalance,
        };
        // Bars starting 09:00 close at 10:00: two losing entries at that hour close it for entries.
        risk.absorb_round_trips(20, &[losing_trip(9 * h), losing_trip(33 * h)]);
        assert_eq!(risk.admissible_units(40, 57 * h, 0, 0.0, 1.0), 0.0, "10:00 is gated");
        assert_eq!(risk.admissible_units(40, 57 * h, 0, 2.0, 1.0), 1.0, "exits and resizing are allowed");
        assert_eq!(risk.admissible_units(41, 58 * h, 0, 0.0, 1.0), 1.0, "11:00 is open");
        assert_eq!(risk.admissible_units(42, 2 * h, 0, 0.0, 1.0), 0.0, "03:00 is a blackout hour");
    }
}

#[cfg(test)]
mod trailing_kill_switch_tests {
    use super::*;

    #[test]
    fn trailing_reference_is_the_day_high() {
        let hour = Timeframe::parse("1h").unwrap();
        let h = 3_600_000;
        let fixed = KillSwitchConfig { trailing: false, ..KillSwitchConfig::default() };
        let trailing = KillSwitchConfig { trailing: true, ..KillSwitchConfig::default() };
        let (mut from_start, mut from_high) = (KillSwitch::new(&fixed), KillSwitch::new(&trailing));
        for (k, equity) in [100.0, 110.0, 104.0].into_iter().enumerate() {
            let a = from_start.check(k as i64 * h, equity, hour);
            let b = from_high.check(k as i64 * h, equity, hour);
            // 104 is 5.45 % below the day's high of 110 but 4 % above the start.
            assert_eq!((a.flatten, b.flatten), (false, k == 2), "bar {k}");
        }
    }
}
