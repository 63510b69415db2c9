//! The decision cadence (backtest.md §2): the first decision bar, then every `rebalance_every` bars.
//! A warm window (research.md §1) keeps the phase a run over the whole panel would have.

use crate::config::Config;

/// When the engine decides.
#[derive(Debug, Clone)]
pub(super) struct Cadence {
    every: usize,
    /// `backtest.first_decision_bar`: no decision before it.
    earliest: Option<usize>,
    /// Eligible symbols needed for a first decision (two legs of `k_min`).
    min_eligible: usize,
    /// The first bar that decided (counted from the first traded bar).
    first_decision: Option<usize>,
    /// Bars fed before the first traded bar.
    warm_bars: usize,
    /// The warm-up bar that would have been the first decision of a full run.
    warm_first_decision: Option<usize>,
    /// Offset that keeps the rebalance cadence of a full run after a warm-up.
    phase: usize,
}

impl Cadence {
    pub fn new(cfg: &Config) -> Self {
        Self {
            every: cfg.backtest.rebalance_every,
            earliest: cfg.backtest.first_decision_bar,
            min_eligible: 2 * cfg.strategy.k_min,
            first_decision: None,
            warm_bars: 0,
            warm_first_decision: None,
            phase: 0,
        }
    }

    /// The first-decision test: bar `bar` (counted from the first bar fed) with `n_eligible`
    /// eligible symbols may start trading.
    fn may_start(&self, bar: usize, n_eligible: usize) -> bool {
        self.earliest.is_none_or(|first| bar >= first) && n_eligible >= self.min_eligible
    }

    /// A warm-up bar with `n_eligible` eligible symbols went by.
    pub fn warm(&mut self, n_eligible: usize) {
        if self.warm_first_decision.is_none() && self.may_start(self.warm_bars, n_eligible) {
            self.warm_first_decision = Some(self.warm_bars);
        }
        self.warm_bars += 1;
    }

    /// True when traded bar t may decide: at or after the first decision bar and on the cadence.
    pub fn is_decision_bar(&mut self, t: usize, n_eligible: usize) -> bool {
        if self.first_decision.is_none() {
            if let Some(first) = self.warm_first_decision {
                // After a warm-up that already passed the first decision: trade from this bar on,
                // on the cadence of the full run.
                self.first_decision = Some(t);
                self.phase = (self.warm_bars + t - first) % self.every;
            } else if self.may_start(t, n_eligible) {
                self.first_decision = Some(t);
            } else {
                return false;
            }
        }
        let first = self.first_decision.expect("set above");
        self.every == 1 || (t - first + self.phase) % self.every == 0
    }

    pub fn first_decision(&self) -> Option<usize> {
        self.first_decision
    }

    pub fn warm_bars(&self) -> usize {
        self.warm_bars
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cadence(every: usize, earliest: Option<usize>) -> Cadence {
        let mut cfg = Config::default();
        cfg.backtest.rebalance_every = every;
        cfg.backtest.first_decision_bar = earliest;
        cfg.strategy.k_min = 2;
        Cadence::new(&cfg)
    }

    #[test]
    fn waits_for_enough_eligible_symbols_and_the_earliest_bar() {
        let mut c = cadence(1, Some(3));
        assert!(!c.is_decision_bar(0, 10), "before first_decision_bar");
        assert!(!c.is_decision_bar(3, 3), "fewer than 2·k_min eligible");
        assert!(c.is_decision_bar(4, 4));
        assert_eq!(c.first_decision(), Some(4));
        assert!(c.is_decision_bar(5, 0), "once started, eligibility no longer gates the cadence");
    }

    #[test]
    fn a_warm_window_keeps_the_phase_of_the_full_run() {
        let every = 3;
        let mut full = cadence(every, None);
        let full_decisions: Vec<usize> =
            (0..20).filter(|&t| full.is_decision_bar(t, if t < 2 { 0 } else { 9 })).collect();
        let mut warm = cadence(every, None);
        for g in 0..7 {
            warm.warm(if g < 2 { 0 } else { 9 });
        }
        let warm_decisions: Vec<usize> = (0..13).filter(|&t| warm.is_decision_bar(t, 9)).map(|t| t + 7).collect();
        let expected: Vec<usize> = full_decisions.into_iter().filter(|&t| t >= 7).collect();
        assert_eq!(warm_decisions, expected);
    }
}
