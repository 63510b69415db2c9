//! The causal indicators the engine needs, advanced one bar at a time.
//!
//! The backtester and the live runner feed the same [`IndicatorState`] bar by bar, so a live
//! decision uses exactly the numbers the backtest used at that bar. Nothing here is `T × N`: each
//! kernel keeps a small per-symbol state and the windows it needs (returns for the vol target and
//! the router, ADX for the rising test).

use ndarray::ArrayView2;

use crate::config::Config;
use crate::model::BarRow;
use crate::signal::{finite, ColumnWindow, EmaSlope, Momentum, RollingStd, RowWindow, WilderAdx, WilderAtr};
use crate::timeframe::Timeframe;
use crate::universe::UniverseFilter;

/// Indicator values of the newest bar plus the short histories the engine looks back into.
#[derive(Debug, Clone)]
pub struct IndicatorState {
    momentum_kernel: Momentum,
    sigma_kernel: RollingStd,
    slope_kernel: Option<EmaSlope>,
    adx_kernel: Option<WilderAdx>,
    atr_kernel: Option<WilderAtr>,
    universe_kernel: UniverseFilter,
    /// Simple returns of bar t.
    pub returns: Vec<f64>,
    pub momentum: Vec<f64>,
    pub sigma: Vec<f64>,
    /// EMA slope in bps/day (regime filter / router), when either is on.
    pub slope: Option<Vec<f64>>,
    pub adx: Option<Vec<f64>>,
    /// Wilder ATR of bar t and of bar t − 1 (next-open fills open stops with the decision bar's ATR).
    pub atr: Option<Vec<f64>>,
    pub prev_atr: Option<Vec<f64>>,
    /// In the universe and listed for at least `min_history` bars (strategy.md §1, §1b).
    pub universe: Vec<bool>,
    /// Bar returns of the last `vol_target.lookback` bars, a missing return stored as 0 (what the
    /// vol target counts it as).
    recent_returns_or_zero: ColumnWindow,
    /// Bar returns of the last `router.corr_lookback` bars with NaN for missing ones (router only).
    recent_returns: Option<ColumnWindow>,
    /// Scratch row for the zero-filled window.
    returns_or_zero: Vec<f64>,
    adx_history: Option<RowWindow>,
    bars: usize,
}

impl IndicatorState {
    pub fn new(symbols: &[String], timeframe: Timeframe, cfg: &Config) -> Self {
        let s = &cfg.strategy;
        let n = symbols.len();
        let bars_per_day = timeframe.bars_per_day();
        let stops = cfg.risk.stops.enabled;
        Self {
            momentum_kernel: Momentum::new(n, &s.lookbacks, &s.lookback_weights, s.normalise_momentum),
            sigma_kernel: RollingStd::new(n, s.vol_lookback, s.vol_lookback / 2),
            slope_kernel: (s.regime_filter.enabled || s.router.enabled)
                .then(|| EmaSlope::new(n, s.regime_filter.ema_len, bars_per_day)),
            adx_kernel: s.adx_filter.enabled.then(|| WilderAdx::new(n, s.adx_filter.adx_len)),
            atr_kernel: stops.then(|| WilderAtr::new(n, cfg.risk.stops.atr_len)),
            universe_kernel: UniverseFilter::new(symbols, bars_per_day, s.min_history(), &cfg.universe),
            returns: vec![f64::NAN; n],
            momentum: vec![f64::NAN; n],
            sigma: vec![f64::NAN; n],
            slope: (s.regime_filter.enabled || s.router.enabled).then(|| vec![f64::NAN; n]),
            adx: s.adx_filter.enabled.then(|| vec![f64::NAN; n]),
            atr: stops.then(|| vec![f64::NAN; n]),
            prev_atr: stops.then(|| vec![f64::NAN; n]),
            universe: vec![false; n],
            recent_returns_or_zero: ColumnWindow::new(n, cfg.sizing.vol_target.lookback),
            recent_returns: s.router.enabled.then(|| ColumnWindow::new(n, s.router.corr_lookback)),
            returns_or_zero: vec![0.0; n],
            adx_history: (s.adx_filter.enabled && s.adx_filter.require_rising)
                .then(|| RowWindow::new(n, s.adx_filter.rising_bars + 1)),
            bars: 0,
        }
    }

    /// Advance to the next bar.
    pub fn update(&mut self, bar: &BarRow<'_>) {
        self.momentum_kernel.update_with_returns(bar.close, &mut self.momentum, &mut self.returns);
        for (zeroed, r) in self.returns_or_zero.iter_mut().zip(&self.returns) {
            *zeroed = if finite(*r) { *r } else { 0.0 };
        }
        self.recent_returns_or_zero.push(&self.returns_or_zero);
        if let Some(window) = self.recent_returns.as_mut() {
            window.push(&self.returns);
        }
        self.sigma_kernel.update(&self.returns, &mut self.sigma);
        if let (Some(kernel), Some(slope)) = (self.slope_kernel.as_mut(), self.slope.as_mut()) {
            kernel.update(bar.close, slope);
        }
        if let (Some(kernel), Some(adx)) = (self.adx_kernel.as_mut(), self.adx.as_mut()) {
            kernel.update(bar.high, bar.low, bar.close, adx);
            if let Some(history) = self.adx_history.as_mut() {
                history.push(adx);
            }
        }
        if let (Some(kernel), Some(atr), Some(prev)) =
            (self.atr_kernel.as_mut(), self.atr.as_mut(), self.prev_atr.as_mut())
        {
            std::mem::swap(atr, prev);
            kernel.update(bar.high, bar.low, bar.close, atr);
        }
        self.universe_kernel.update(bar.close, bar.quote_volume, &mut self.universe);
        self.bars += 1;
    }

    /// Bars seen so far.
    pub fn bars(&self) -> usize {
        self.bars
    }

    /// Simple returns of the last `rows` bars (fewer at the start), oldest first, NaN where missing;
    /// kept for the router's correlation window (`None` with the router off).
    pub fn recent_returns(&self, rows: usize) -> Option<ArrayView2<'_, f64>> {
        self.recent_returns.as_ref().map(|window| window.recent(rows))
    }

    /// Like [`IndicatorState::recent_returns`] with missing returns as 0, for the vol target (up to
    /// `vol_target.lookback` rows).
    pub fn recent_returns_or_zero(&self, rows: usize) -> ArrayView2<'_, f64> {
        self.recent_returns_or_zero.recent(rows)
    }

    /// ADX `bars_ago` bars back, when kept (the ADX filter's rising test) and that old.
    pub fn adx_ago(&self, bars_ago: usize) -> Option<&[f64]> {
        let history = self.adx_history.as_ref()?;
        (history.pushed() > bars_ago).then(|| history.ago(bars_ago))
    }
}
