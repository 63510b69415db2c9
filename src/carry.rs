//! The funding-carry sleeve (risk.md §8): short persistent positive funding, long persistent
//! negative funding, hedged to zero net exposure with one symbol. With `basis_weight > 0` the score
//! also holds the perpetual's premium over its mark price (rich perps short, cheap ones long; see
//! [`CarrySleeve::score`] and decisions.md "Basis carry").

use std::collections::VecDeque;

use ndarray::ArrayView1;

use crate::basis::PremiumEma;
use crate::config::CarryConfig;
use crate::timeframe::MS_PER_YEAR;

/// Recent funding events per symbol, fed bar by bar (causal: only events up to the current bar).
#[derive(Debug, Clone)]
pub struct CarrySleeve {
    cfg: CarryConfig,
    /// (bar ts, rate) of the last `funding_lookback` events per symbol.
    recent: Vec<VecDeque<(i64, f64)>>,
    /// The smoothed premium over the mark price, only with `basis_weight > 0`.
    basis: Option<PremiumEma>,
}

impl CarrySleeve {
    pub fn new(cfg: &CarryConfig, n_symbols: usize) -> Self {
        let basis = (cfg.basis_weight > 0.0).then(|| PremiumEma::new(cfg.basis_ema_bars, n_symbols));
        Self { cfg: cfg.clone(), recent: vec![VecDeque::new(); n_symbols], basis }
    }

    /// Record the closes and mark closes of one bar (the premium of bar t uses bar t's closes only).
    pub fn observe_marks(&mut self, close: &[f64], mark_close: Option<&[f64]>) {
        if let Some(basis) = self.basis.as_mut() {
            basis.observe(close, mark_close);
        }
    }

    /// The warning when the basis term is on and some symbols never had a mark close (they are
    /// scored on funding alone).
    pub fn mark_warning(&self, symbols: &[String]) -> Option<String> {
        let basis = self.basis.as_ref()?;
        let missing: Vec<&str> =
            symbols.iter().enumerate().filter(|(i, _)| !basis.has_data(*i)).map(|(_, s)| s.as_str()).collect();
        if missing.is_empty() {
            None
        } else if missing.len() == symbols.len() {
            Some("strategy.carry.basis_weight > 0 but there is no mark data: the carry score has no basis term".into())
        } else {
            Some(format!("no mark data for {}: their carry score has no basis term", missing.join(", ")))
        }
    }

    /// Record the funding events of the bar starting at `ts`.
    pub fn observe(&mut self, ts: i64, events: ArrayView1<bool>, rates: ArrayView1<f64>) {
        for (i, recent) in self.recent.iter_mut().enumerate() {
            if events[i] {
                if recent.len() == self.cfg.funding_lookback {
                    recent.pop_front();
                }
                recent.push_back((ts, rates[i]));
            }
        }
    }

    /// Mean funding rate of the last `funding_lookback` events, annualised with the observed event
    /// spacing (8h → ×1095). `None` until `funding_lookback` events have been seen.
    pub fn annualised(&self, symbol: usize) -> Option<f64> {
        let recent = &self.recent[symbol];
        if recent.len() < self.cfg.funding_lookback.max(2) {
            return None;
        }
        let (first, last) = (recent.front()?.0, recent.back()?.0);
        let spacing = (last - first) as f64 / (recent.len() - 1) as f64;
        if !(spacing > 0.0) {
            return None;
        }
        let mean = recent.iter().map(|(_, r)| r).sum::<f64>() / recent.len() as f64;
        Some(mean * MS_PER_YEAR as f64 / spacing)
    }

    /// The carry score of symbol i, positive = long: `funding_score + basis_weight × (−premium_ema)`
    /// with `funding_score = −annualised` (a missing term counts 0); `None` when both are missing.
    /// With `basis_weight = 0` it is `−annualised`.
    pub fn score(&self, symbol: usize) -> Option<f64> {
        let funding = self.annualised(symbol).map(|a| -a);
        let basis = self.basis.as_ref().and_then(|b| b.value(symbol)).map(|p| -self.cfg.basis_weight * p);
        match (funding, basis) {
            (None, None) => None,
            (Some(f), None) => Some(f),
            (f, Some(b)) => Some(f.unwrap_or(0.0) + b),
        }
    }

    /// Direction of the carry position (+1 long, −1 short) when symbol i is a candidate:
    /// `|score| ≥ min_funding_ann` and none of the last `sign_stability_k` rates is paid by the
    /// position (each is non-zero and received: positive rates by a short, negative by a long).
    pub fn direction(&self, symbol: usize) -> Option<f64> {
        let score = self.score(symbol)?;
        if score.abs() < self.cfg.min_funding_ann || score == 0.0 {
            return None;
        }
        let direction = score.signum();
        // Positive funding is received by shorts.
        let stable = self.recent[symbol]
            .iter()
            .rev()
            .take(self.cfg.sign_stability_k)
            .all(|(_, r)| r.signum() == -direction && *r != 0.0);
        stable.then_some(direction)
    }

    /// The sleeve at full `gross`: inverse-vol weights in the carry directions of the tradable
    /// candidates, net exposure offset with `hedge` (so Σw = 0), scaled to Σ|w| = gross. Returns false
    /// (and leaves `out` at 0) when there is no candidate.
    pub fn book(&self, tradable: &[bool], sigma: &[f64], gross: f64, hedge: Option<usize>, out: &mut [f64]) -> bool {
        out.fill(0.0);
        let mut any = false;
        for i in 0..out.len() {
            if !tradable[i] || Some(i) == hedge.filter(|_| self.cfg.hedge) {
                continue;
            }
            if let Some(direction) = self.direction(i) {
                out[i] = direction / sigma[i];
                any = true;
            }
        }
        if !any {
            return false;
        }
        if self.cfg.hedge {
            let Some(h) = hedge.filter(|&h| tradable[h]) else {
                out.fill(0.0);
                return false;
            };
            let net: f64 = out.iter().sum();
            out[h] -= net;
        }
        let total: f64 = out.iter().map(|w| w.abs()).sum();
        if total > 0.0 {
            out.iter_mut().for_each(|w| *w *= gross / total);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EIGHT_H: i64 = 8 * 3_600_000;

    fn sleeve_with(rates: &[&[f64]]) -> CarrySleeve {
        let cfg = CarryConfig { enabled: true, funding_lookback: 4, sign_stability_k: 3, ..CarryConfig::default() };
        let mut sleeve = CarrySleeve::new(&cfg, rates.len());
        for k in 0..rates[0].len() {
            let row: Vec<f64> = rates.iter().map(|r| r[k]).collect();
            let events = vec![true; rates.len()];
            sleeve.observe(k as i64 * EIGHT_H, ArrayView1::from(&events), ArrayView1::from(&row));
        }
        sleeve
    }

    #[test]
    fn annualisation_and_candidates_by_hand() {
        // 0.0001 per 8h = 0.0001 × 1095 = 10.95 % a year: a candidate (≥ 10 %), shorted.
        let sleeve = sleeve_with(&[&[0.0001; 4], &[0.00005; 4], &[-0.0002, -0.0002, 0.0001, -0.0002]]);
        assert!((sleeve.annualised(0).unwrap() - 0.1095).abs() < 1e-12);
        assert_eq!(sleeve.direction(0), Some(-1.0));
        assert_eq!(sleeve.direction(1), None, "5.5 % a year is below min_funding_ann");
        assert_eq!(sleeve.direction(2), None, "the sign flipped within the last 3 events");
        let short_history = sleeve_with(&[&[0.001; 3]]);
        assert_eq!(short_history.annualised(0), None);
    }

    #[test]
    fn hedged_book_has_zero_net_exposure() {
        let sleeve = sleeve_with(&[&[0.0003; 4], &[-0.0004; 4], &[0.0005; 4], &[0.0; 4]]);
        let mut out = vec![0.0; 4];
        let sigma = [0.01, 0.02, 0.04, 0.01];
        assert!(sleeve.book(&[true; 4], &sigma, 1.0, Some(3), &mut out));
        // Raw: −100 (short 0), +50 (long 1), −25 (short 2); hedge +75 on symbol 3.
        let raw = [-100.0, 50.0, -25.0, 75.0];
        let total: f64 = raw.iter().map(|w: &f64| w.abs()).sum();
        for (w, r) in out.iter().zip(raw) {
            assert!((w - r / total).abs() < 1e-12);
        }
        assert!(out.iter().sum::<f64>().abs() < 1e-15);
        assert!((out.iter().map(|w| w.abs()).sum::<f64>() - 1.0).abs() < 1e-12);
    }

    /// Funding of 8h events `rates` per symbol, then `bars` hourly closes 100 with mark closes
    /// `100 / (1 + premium)` (so close / mark − 1 = premium).
    fn basis_sleeve(basis_weight: f64, rates: &[f64], premiums: &[f64]) -> CarrySleeve {
        let cfg = CarryConfig {
            enabled: true,
            funding_lookback: 4,
            sign_stability_k: 3,
            basis_weight,
            basis_ema_bars: 2,
            ..CarryConfig::default()
        };
        let mut sleeve = CarrySleeve::new(&cfg, rates.len());
        for k in 0..4 {
            let events = vec![true; rates.len()];
            sleeve.observe(k * EIGHT_H, ArrayView1::from(&events), ArrayView1::from(rates));
        }
        let close = vec![100.0; premiums.len()];
        let mark: Vec<f64> = premiums.iter().map(|p| 100.0 / (1.0 + p)).collect();
        for _ in 0..2 {
            sleeve.observe_marks(&close, Some(&mark));
        }
        sleeve
    }

    #[test]
    fn basis_sleeve_weights_by_hand_on_three_symbols() {
        // Funding alone: ±0.00005 per 8h = ±5.475 % a year, below min_funding_ann (10 %); symbol 2
        // (the hedge) pays 0.0001.
        let rates = [0.00005, -0.00005, 0.0001];
        let premiums = [0.001, -0.0005, 0.0];
        let funding_only = basis_sleeve(0.0, &rates, &premiums);
        assert_eq!((funding_only.direction(0), funding_only.direction(1)), (None, None));
        let mut out = vec![0.0; 3];
        let sigma = [0.02, 0.01, 0.01];
        assert!(!funding_only.book(&[true; 3], &sigma, 1.0, Some(2), &mut out));
        // basis_weight 100: symbol 0 scores −0.05475 − 100 × 0.001 = −0.15475 (short, rich perp),
        // symbol 1 scores 0.05475 + 100 × 0.0005 = 0.10475 (long, cheap perp).
        let sleeve = basis_sleeve(100.0, &rates, &premiums);
        assert!((sleeve.score(0).unwrap() + 0.15475).abs() < 1e-9);
        assert!((sleeve.score(1).unwrap() - 0.10475).abs() < 1e-9);
        assert_eq!((sleeve.direction(0), sleeve.direction(1)), (Some(-1.0), Some(1.0)));
        assert!(sleeve.book(&[true; 3], &sigma, 1.0, Some(2), &mut out));
        // Raw: −1/0.02 = −50, +1/0.01 = +100; hedge −50 on symbol 2; Σ|w| = 200.
        let expected = [-0.25, 0.5, -0.25];
        for (w, e) in out.iter().zip(expected) {
            assert!((w - e).abs() < 1e-12, "{out:?}");
        }
        // A cheap perp whose funding a long would pay is not traded (sign stability).
        let against = basis_sleeve(100.0, &rates, &[-0.003, -0.0005, 0.0]);
        assert!(against.score(0).unwrap() > 0.1);
        assert_eq!(against.direction(0), None);
        // A symbol without mark data is scored on funding alone.
        let mut no_mark = basis_sleeve(100.0, &rates, &premiums);
        no_mark.basis = Some(PremiumEma::new(2, 3));
        assert_eq!(no_mark.score(0), funding_only.score(0));
        assert!(no_mark.mark_warning(&["A".into(), "B".into(), "C".into()]).unwrap().contains("no mark data"));
        assert_eq!(sleeve.mark_warning(&["A".into(), "B".into(), "C".into()]), None);
    }
}
