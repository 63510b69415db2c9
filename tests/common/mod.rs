//! Shared helpers for the integration tests: synthetic panels with a deterministic generator.
#![allow(dead_code)]

pub mod naive_v1;

use ndarray::Array2;
use xsmom::config::{KMode, Weighting};
use xsmom::data::{FundingGrid, Panel};
use xsmom::{Config, Timeframe};

/// Small deterministic generator (xorshift64*), so tests need no RNG dependency at run time.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A panel from close prices (`closes[t][i]`, NaN = missing): open = previous close, high/low
/// around open/close, volume 1000.
pub fn panel_from_closes(closes: &[Vec<f64>], timeframe: &str) -> Panel {
    let n_bars = closes.len();
    let n_symbols = closes[0].len();
    let tf = Timeframe::parse(timeframe).unwrap();
    let mut close = Array2::from_elem((n_bars, n_symbols), f64::NAN);
    for t in 0..n_bars {
        for i in 0..n_symbols {
            close[[t, i]] = closes[t][i];
        }
    }
    let mut open = close.clone();
    for t in 1..n_bars {
        for i in 0..n_symbols {
            if close[[t - 1, i]].is_finite() && close[[t, i]].is_finite() {
                open[[t, i]] = close[[t - 1, i]];
            }
        }
    }
    let high = ndarray::Zip::from(&open).and(&close).map_collect(|o, c| o.max(*c) * 1.001);
    let low = ndarray::Zip::from(&open).and(&close).map_collect(|o, c| o.min(*c) * 0.999);
    let volume = close.mapv(|c| if c.is_finite() { 1000.0 } else { f64::NAN });
    let quote_volume = &close * &volume;
    Panel {
        timeframe: tf,
        ts: (0..n_bars as i64).map(|t| 1_700_000_000_000 - 1_700_000_000_000 % tf.ms + t * tf.ms).collect(),
        symbols: (0..n_symbols).map(|i| format!("S{i:03}USDT")).collect(),
        open,
        high,
        low,
        close,
        quote_volume,
        mark_close: None,
    }
}

/// Random-walk panel with fat-ish tails, per-symbol drift and ragged listing starts.
pub fn random_panel(n_bars: usize, n_symbols: usize, seed: u64, ragged: bool) -> Panel {
    let mut rng = Rng::new(seed);
    let mut closes = vec![vec![f64::NAN; n_symbols]; n_bars];
    for i in 0..n_symbols {
        let start = if ragged && i % 3 == 2 { (rng.uniform() * n_bars as f64 * 0.4) as usize } else { 0 };
        let drift = (rng.uniform() - 0.5) * 4e-4;
        let vol = 0.004 + rng.uniform() * 0.012;
        let mut price = 1.0 + rng.uniform() * 100.0;
        for row in closes.iter_mut().skip(start) {
            let shock = rng.normal() * vol * if rng.uniform() < 0.02 { 4.0 } else { 1.0 };
            price *= (drift + shock).exp();
            row[i] = price;
        }
    }
    panel_from_closes(&closes, "1h")
}

pub fn no_funding(panel: &Panel) -> FundingGrid {
    FundingGrid::empty(panel.n_bars(), panel.n_symbols())
}

/// A config simple enough to derive results by hand: K = 1 on 2-bar momentum, equal weights of 0.5,
/// no vol target or risk rules, 10 bps fees, no slippage, trades below 5 % of equity skipped.
pub fn hand_config() -> Config {
    let mut cfg = Config::default();
    let s = &mut cfg.strategy;
    s.lookbacks = vec![2];
    s.lookback_weights = vec![1.0];
    s.vol_lookback = 2;
    s.min_history_bars = Some(3);
    s.k_mode = KMode::Static;
    s.k_min = 1;
    s.k_max = 1;
    s.regime_filter.enabled = false;
    cfg.sizing.weighting = Weighting::Equal;
    cfg.sizing.gross_leverage = 1.0;
    cfg.sizing.max_weight_per_asset = 1.0;
    cfg.sizing.max_notional_usd = 1e12;
    cfg.sizing.vol_target.enabled = false;
    cfg.risk.stops.enabled = false;
    cfg.risk.kill_switch.enabled = false;
    cfg.risk.anti_churn.enabled = false;
    cfg.risk.scoring.enabled = false;
    cfg.costs.maker_fee_bps = 10.0;
    cfg.costs.taker_fee_bps = 10.0;
    cfg.costs.slippage_bps = 0.0;
    cfg.backtest.min_rebalance_delta = 0.05;
    cfg.validate().unwrap();
    cfg
}
