//! The perpetual's premium over its mark price, smoothed per symbol (the basis term of the carry
//! sleeve, risk.md §8 as extended in decisions.md "Basis carry").
//!
//! `premium_t = close_t / mark_close_t − 1` uses the closes of bar t only; its EMA over
//! `span` bars (α = 2 / (span + 1)) is seeded with the first premium and reported once `span`
//! premiums have been seen. A bar without a finite positive close or mark close leaves the EMA as
//! it was (it neither decays nor counts).

/// The premium of one bar, `None` when either close is missing or not positive.
pub fn premium(close: f64, mark_close: f64) -> Option<f64> {
    (close.is_finite() && mark_close.is_finite() && close > 0.0 && mark_close > 0.0).then(|| close / mark_close - 1.0)
}

/// Per-symbol EMA of the premium, fed bar by bar.
#[derive(Debug, Clone)]
pub struct PremiumEma {
    alpha: f64,
    span: usize,
    ema: Vec<f64>,
    /// Premiums seen per symbol (saturating at `span`).
    seen: Vec<usize>,
}

impl PremiumEma {
    pub fn new(span: usize, n_symbols: usize) -> Self {
        let span = span.max(1);
        Self { alpha: 2.0 / (span as f64 + 1.0), span, ema: vec![0.0; n_symbols], seen: vec![0; n_symbols] }
    }

    /// Feed the closes of one bar (`mark_close` is `None` when the bar has no mark data at all).
    pub fn observe(&mut self, close: &[f64], mark_close: Option<&[f64]>) {
        let Some(mark_close) = mark_close else { return };
        for i in 0..self.ema.len() {
            if let Some(p) = premium(close[i], mark_close[i]) {
                self.ema[i] = if self.seen[i] == 0 { p } else { self.ema[i] + self.alpha * (p - self.ema[i]) };
                self.seen[i] = (self.seen[i] + 1).min(self.span);
            }
        }
    }

    /// The smoothed premium of symbol i once `span` premiums have been seen.
    pub fn value(&self, symbol: usize) -> Option<f64> {
        (self.seen[symbol] >= self.span).then_some(self.ema[symbol])
    }

    /// Whether symbol i has had any premium at all.
    pub fn has_data(&self, symbol: usize) -> bool {
        self.seen[symbol] > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn premium_and_ema_by_hand() {
        assert_eq!(premium(101.0, 100.0).map(|p| (p * 1e6).round()), Some(10_000.0));
        assert_eq!(premium(f64::NAN, 100.0), None);
        assert_eq!(premium(100.0, 0.0), None);
        // span 3: α = 0.5; premiums 0.01, 0.03, (missing), −0.01.
        let mut ema = PremiumEma::new(3, 2);
        ema.observe(&[101.0, 50.0], Some(&[100.0, f64::NAN]));
        assert_eq!(ema.value(0), None);
        ema.observe(&[103.0, 50.0], Some(&[100.0, f64::NAN]));
        ema.observe(&[103.0, 50.0], None);
        assert_eq!(ema.value(0), None, "a bar without mark data does not count");
        ema.observe(&[99.0, 50.0], Some(&[100.0, f64::NAN]));
        // 0.01 → 0.01 + 0.5 (0.03 − 0.01) = 0.02 → 0.02 + 0.5 (−0.01 − 0.02) = 0.005.
        assert!((ema.value(0).unwrap() - 0.005).abs() < 1e-12);
        assert!(!ema.has_data(1));
        assert_eq!(ema.value(1), None);
    }
}
