//! Risk state machines (risk.md), stepped bar by bar by the backtester and, later, by the live runner.
//!
//! Implemented here: ATR stops (initial, catastrophic, trailing, breakeven, partial take-profit,
//! time exit) with cooldown (§1) and the daily kill-switch (§2). The other rules of risk.md are
//! reported by [`unsupported_features`] when enabled, so that nothing is silently ignored.

use ndarray::Array2;

use crate::backtest::{FillReason, RoundTrip};
use crate::config::{Config, KillAction, KillSwitchConfig, StopsConfig};
use crate::data::Panel;
use crate::timeframe::{Timeframe, MS_PER_DAY};

/// Features of the config that this version accepts but does not apply yet: one warning each.
pub fn unsupported_features(cfg: &Config) -> Vec<String> {
    let mut names = Vec::new();
    let r = &cfg.risk;
    if r.drawdown.enabled {
        names.push("risk.drawdown");
    }
    if r.anti_churn.enabled {
        names.push("risk.anti_churn (entry limits and loss-streak pause; min_rebalance_delta does apply)");
    }
    if r.scoring.enabled {
        names.push("risk.scoring");
    }
    if r.time_of_day.enabled {
        names.push("risk.time_of_day");
    }
    if cfg.sizing.kelly.enabled {
        names.push("sizing.kelly");
    }
    if cfg.strategy.router.enabled {
        names.push("strategy.router");
    }
    if cfg.strategy.carry.enabled {
        names.push("strategy.carry");
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
        let side = self.side;
        // "Adverse" price of the bar: the low for a long, the high for a short.
        let adverse = if side > 0.0 { low } else { high };
        let crossed = |level: f64| side * (level - adverse) >= 0.0;
        let gapped = |level: f64| side * (level - open) >= 0.0;
        for (level, reason) in [(self.catastrophic, FillReason::Stop), (self.stop, self.stop_reason)] {
            if gapped(level) {
                return Some((open, reason));
            }
            if crossed(level) {
                return Some((level, reason));
            }
        }
        None
    }

    /// Update with this bar after the test: extreme, trailing stop, breakeven. Returns the partial
    /// take-profit level when it is reached for the first time.
    pub fn update(&mut self, high: f64, low: f64, atr: f64, cfg: &StopsConfig) -> Option<f64> {
        let side = self.side;
        let favourable = if side > 0.0 { high } else { low };
        if side * (favourable - self.extreme) > 0.0 {
            self.extreme = favourable;
        }
        if cfg.trailing && atr.is_finite() {
            let trail = self.extreme - side * cfg.trail_atr_mult * atr;
            if side * (trail - self.stop) > 0.0 {
                self.stop = trail;
                self.stop_reason = FillReason::Trail;
            }
        }
        if side * (self.extreme - self.entry_price) >= cfg.breakeven_after_r * self.risk
            && side * (self.entry_price - self.stop) > 0.0
        {
            self.stop = self.entry_price;
            self.stop_reason = FillReason::Breakeven;
        }
        if !self.partial_done && cfg.partial_tp_frac > 0.0 {
            let level = self.entry_price + side * cfg.partial_tp_r * self.risk;
            if side * (favourable - level) >= 0.0 {
                self.partial_done = true;
                return Some(level);
            }
        }
        None
    }
}

/// Kill-switch outcome for one bar.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KillState {
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

impl KillSwitch {
    pub fn new(cfg: &KillSwitchConfig) -> Self {
        Self { cfg: cfg.clone(), day: i64::MIN, day_start_equity: f64::NAN, day_high_equity: f64::NAN, fired: false }
    }

    /// Feed the equity at the close of the bar starting at `ts`. The day is the UTC day of the close time.
    pub fn check(&mut self, ts: i64, equity: f64, timeframe: Timeframe) -> KillState {
        if !self.cfg.enabled {
            return KillState::default();
        }
        let day = (ts + timeframe.ms).div_euclid(MS_PER_DAY);
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
            flatten,
            paused: self.fired && self.cfg.action == KillAction::Flatten,
            freeze: self.fired && self.cfg.action == KillAction::Freeze,
            active: self.fired,
        }
    }
}

/// All per-symbol and portfolio risk state of one strategy instance.
#[derive(Debug, Clone)]
pub struct RiskEngine {
    stops_cfg: StopsConfig,
    stops: Vec<Option<StopState>>,
    /// Last bar of the cooldown after a stop or time exit (no holding up to and including it).
    cooldown_until: Vec<Option<usize>>,
    /// Size multiplier after a partial take-profit (kept until the position is closed or flips).
    size_after_tp: Vec<f64>,
    kill: KillSwitch,
    trips_seen: usize,
}

impl RiskEngine {
    pub fn new(cfg: &Config, n_symbols: usize, _timeframe: Timeframe) -> Self {
        Self {
            stops_cfg: cfg.risk.stops.clone(),
            stops: vec![None; n_symbols],
            cooldown_until: vec![None; n_symbols],
            size_after_tp: vec![1.0; n_symbols],
            kill: KillSwitch::new(&cfg.risk.kill_switch),
            trips_seen: 0,
        }
    }

    pub fn stop_state(&self, symbol: usize) -> Option<&StopState> {
        self.stops[symbol].as_ref()
    }

    /// Whether symbol i may be held (and so be eligible) at bar t.
    pub fn may_hold(&self, t: usize, symbol: usize) -> bool {
        self.cooldown_until[symbol].is_none_or(|until| t > until)
    }

    /// Whether a rebalance trade from `current` to `wanted` units may happen (anti-churn hook).
    pub fn may_trade(&self, _t: usize, _symbol: usize, _current: f64, _wanted: f64) -> bool {
        true
    }

    /// Size factor of symbol i after a partial take-profit (1 otherwise), applied to its target.
    pub fn size_factor(&self, symbol: usize) -> f64 {
        self.size_after_tp[symbol]
    }

    /// Test every open stop against bar t (before the decision at its close).
    pub fn check_stops(&mut self, t: usize, panel: &Panel, units: &[f64], exits: &mut Vec<StopExit>) {
        exits.clear();
        if !self.stops_cfg.enabled {
            return;
        }
        for (symbol, state) in self.stops.iter().enumerate() {
            let Some(state) = state else { continue };
            if units[symbol] == 0.0 || state.entry_bar >= t {
                continue;
            }
            let (open, high, low) = (panel.open[[t, symbol]], panel.high[[t, symbol]], panel.low[[t, symbol]]);
            if !(open.is_finite() && high.is_finite() && low.is_finite()) {
                continue;
            }
            if let Some((price, reason)) = state.test(open, high, low) {
                exits.push(StopExit { symbol, price, fraction: 1.0, reason });
            }
        }
    }

    /// After bar t's close: update extremes, trailing and breakeven levels; decide partial
    /// take-profits and time exits. Returns exits to execute at this bar.
    pub fn end_bar_exits(
        &mut self,
        t: usize,
        panel: &Panel,
        units: &[f64],
        atr: Option<&Array2<f64>>,
        exits: &mut Vec<StopExit>,
    ) {
        exits.clear();
        if !self.stops_cfg.enabled {
            return;
        }
        let cfg = &self.stops_cfg;
        for symbol in 0..self.stops.len() {
            if units[symbol] == 0.0 {
                self.stops[symbol] = None;
                continue;
            }
            let Some(state) = self.stops[symbol].as_mut() else {
                continue;
            };
            if state.entry_bar >= t {
                continue;
            }
            let (high, low, close) = (panel.high[[t, symbol]], panel.low[[t, symbol]], panel.close[[t, symbol]]);
            if !(high.is_finite() && low.is_finite()) {
                continue;
            }
            let atr_now = atr.map_or(f64::NAN, |a| a[[t, symbol]]);
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

    /// Keep the state machines in step with the book after bar t (no exits decided here).
    pub fn end_bar(&mut self, _t: usize, _panel: &Panel, units: &[f64], _atr: Option<&Array2<f64>>) {
        for symbol in 0..self.stops.len() {
            if units[symbol] == 0.0 {
                self.stops[symbol] = None;
                self.size_after_tp[symbol] = 1.0;
            }
        }
    }

    /// A stop, take-profit, time or kill-switch exit was filled; `units_after` is what remains.
    pub fn on_exit(&mut self, t: usize, symbol: usize, units_after: f64, reason: FillReason) {
        if reason == FillReason::TakeProfit && units_after != 0.0 {
            self.size_after_tp[symbol] *= 1.0 - self.stops_cfg.partial_tp_frac;
            return;
        }
        self.stops[symbol] = None;
        self.size_after_tp[symbol] = 1.0;
        if matches!(reason, FillReason::Stop | FillReason::Trail | FillReason::Breakeven | FillReason::Time) {
            self.cooldown_until[symbol] = Some(t + self.stops_cfg.cooldown_bars_after_stop);
        }
    }

    /// A rebalance fill moved symbol i from `before` to `after` units at `price`. Entries and flips
    /// (re)open the stop state with the ATR of the bar the decision was made on.
    #[allow(clippy::too_many_arguments)]
    pub fn on_rebalance_fill(
        &mut self,
        _ts: i64,
        symbol: usize,
        before: f64,
        after: f64,
        price: f64,
        atr: Option<&Array2<f64>>,
        decision_bar: usize,
    ) {
        if after == 0.0 {
            self.stops[symbol] = None;
            self.size_after_tp[symbol] = 1.0;
            return;
        }
        let entering = before == 0.0 || before.signum() != after.signum();
        if !entering || !self.stops_cfg.enabled {
            return;
        }
        self.size_after_tp[symbol] = 1.0;
        let atr_value = atr.map_or(f64::NAN, |a| a[[decision_bar, symbol]]);
        self.stops[symbol] = if atr_value.is_finite() && atr_value > 0.0 {
            // Stops are tested from the bar after the decision: for next-open fills that is the fill bar.
            Some(StopState::open(after.signum(), price, decision_bar, atr_value, &self.stops_cfg))
        } else {
            None
        };
    }

    /// Daily kill-switch at bar t.
    pub fn check_kill_switch(&mut self, ts: i64, equity: f64, timeframe: Timeframe) -> KillState {
        self.kill.check(ts, equity, timeframe)
    }

    /// Round trips closed so far (for scoring and loss streaks in a later version).
    pub fn absorb_round_trips(&mut self, trips: &[RoundTrip]) {
        self.trips_seen = trips.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops() -> StopsConfig {
        StopsConfig::default()
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
