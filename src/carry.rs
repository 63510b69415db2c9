//! The funding-carry sleeve (risk.md §8): short persistent positive funding, long persistent
//! negative funding, hedged to zero net exposure with one symbol.

use std::collections::VecDeque;

use ndarray::ArrayView1;

use crate::config::CarryConfig;
use crate::timeframe::MS_PER_YEAR;

/// Recent funding events per symbol, fed bar by bar (causal: only events up to the current bar).
#[derive(Debug, Clone)]
pub struct CarrySleeve {
    cfg: CarryConfig,
    /// (bar ts, rate) of the last `funding_lookback` events per symbol.
    recent: Vec<VecDeque<(i64, f64)>>,
}

impl CarrySleeve {
    pub fn new(cfg: &CarryConfig, n_symbols: usize) -> Self {
        Self { cfg: cfg.clone(), recent: vec![VecDeque::new(); n_symbols] }
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

    /// Direction of the carry position (+1 long, −1 short) when symbol i is a candidate:
    /// `|annualised| ≥ min_funding_ann` and the last `sign_stability_k` rates share its sign.
    pub fn direction(&self, symbol: usize) -> Option<f64> {
        let annualised = self.annualised(symbol)?;
        if annualised.abs() < self.cfg.min_funding_ann || annualised == 0.0 {
            return None;
        }
        let sign = annualised.signum();
        let stable = self.recent[symbol]
            .iter()
            .rev()
            .take(self.cfg.sign_stability_k)
            .all(|(_, r)| r.signum() == sign && *r != 0.0);
        // Positive funding is received by shorts.
        stable.then_some(-sign)
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
}
