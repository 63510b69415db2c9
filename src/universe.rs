//! Point-in-time universe (strategy.md §1b): who may trade at bar t, decided from data up to t.

use ndarray::{Array2, ArrayView2};

use crate::config::UniverseConfig;
use crate::signal::{finite, RowWindow};

/// Point-in-time universe membership, one bar at a time.
///
/// Every bar: a valid close ≥ `min_price`, 24h quote volume ≥ `min_quote_volume_24h`, at least
/// `min_history` valid closes so far, included and not excluded. Every `universe_refresh_bars`
/// bars (counted from the first bar) the `max_symbols` most liquid of those by 24h quote volume at
/// that bar are chosen and kept until the next refresh.
#[derive(Debug, Clone)]
pub struct UniverseFilter {
    cfg: UniverseConfig,
    listed: Vec<bool>,
    window: usize,
    min_history: f64,
    volumes: RowWindow,
    volume_24h: Vec<f64>,
    /// Valid closes so far (a count in f64, so that the membership pass has one element type).
    history: Vec<f64>,
    passes: Vec<bool>,
    ranked_in: Vec<bool>,
    order: Vec<usize>,
    /// Bars until the next rebuild of the 24h sums and until the next ranking (counted down
    /// instead of taking `t mod window` every bar).
    until_rebuild: usize,
    until_refresh: usize,
}

impl UniverseFilter {
    pub fn new(symbols: &[String], bars_per_day: usize, min_history: usize, cfg: &UniverseConfig) -> Self {
        let n_symbols = symbols.len();
        let listed = symbols
            .iter()
            .map(|s| (cfg.include.is_empty() || cfg.include.contains(s)) && !cfg.exclude.contains(s))
            .collect();
        let window = bars_per_day.max(1);
        Self {
            cfg: cfg.clone(),
            listed,
            window,
            min_history: min_history as f64,
            volumes: RowWindow::new(n_symbols, window),
            volume_24h: vec![0.0; n_symbols],
            history: vec![0.0; n_symbols],
            passes: vec![false; n_symbols],
            ranked_in: vec![true; n_symbols],
            order: Vec::with_capacity(n_symbols),
            until_rebuild: 0,
            until_refresh: 0,
        }
    }

    /// Whether the 24h quote volumes are needed: for the `min_quote_volume_24h` filter (0 turns it
    /// off) or for ranking by liquidity.
    fn uses_volume(&self, n_symbols: usize) -> bool {
        self.cfg.min_quote_volume_24h > 0.0 || (self.cfg.max_symbols > 0 && self.cfg.max_symbols < n_symbols)
    }

    /// Feed bar t (closes and quote volumes) and write who is a member at t into `member`.
    pub fn update(&mut self, close: &[f64], quote_volume: &[f64], member: &mut [bool]) {
        if self.uses_volume(member.len()) {
            self.update_volume(quote_volume);
        }
        let cfg = &self.cfg;
        let n_symbols = member.len();
        let refresh = self.until_refresh == 0;
        self.until_refresh = if refresh { cfg_refresh(cfg) - 1 } else { self.until_refresh - 1 };
        let (min_price, min_volume, min_history) = (cfg.min_price, cfg.min_quote_volume_24h, self.min_history);
        let symbols = close.iter().zip(&self.listed).zip(&self.volume_24h);
        for (((c, listed), volume_24h), (history, passes)) in
            symbols.zip(self.history.iter_mut().zip(self.passes.iter_mut()))
        {
            let finite = finite(*c);
            *history += if finite { 1.0 } else { 0.0 };
            *passes = *listed & finite & (*c >= min_price) & (*volume_24h >= min_volume) & (*history >= min_history);
        }
        if cfg.max_symbols > 0 && cfg.max_symbols < n_symbols && refresh {
            let passes = &self.passes;
            let volume_24h = &self.volume_24h;
            self.order.clear();
            self.order.extend((0..n_symbols).filter(|&i| passes[i]));
            // Most liquid first; ties broken by symbol order so the choice is deterministic.
            self.order.sort_by(|&a, &b| volume_24h[b].total_cmp(&volume_24h[a]).then(a.cmp(&b)));
            self.ranked_in.fill(false);
            for &i in self.order.iter().take(cfg.max_symbols) {
                self.ranked_in[i] = true;
            }
        }
        for ((m, ranked_in), passes) in member.iter_mut().zip(&self.ranked_in).zip(&self.passes) {
            *m = *ranked_in & *passes;
        }
    }

    /// Advance the rolling 24h quote volume sums by one bar.
    fn update_volume(&mut self, quote_volume: &[f64]) {
        let finite_or_zero = |v: f64| if finite(v) { v } else { 0.0 };
        let t = self.volumes.pushed();
        let window = self.window;
        let rebuild = self.until_rebuild == 0;
        self.until_rebuild = if rebuild { window - 1 } else { self.until_rebuild - 1 };
        if rebuild {
            // Rebuild the rolling 24h sums now and then so that rounding cannot accumulate.
            self.volume_24h.fill(0.0);
            for s in (t + 1).saturating_sub(window)..t {
                for (sum, v) in self.volume_24h.iter_mut().zip(self.volumes.ago(t - 1 - s)) {
                    *sum += finite_or_zero(*v);
                }
            }
            for (sum, v) in self.volume_24h.iter_mut().zip(quote_volume) {
                *sum += finite_or_zero(*v);
            }
        } else if t >= window {
            let leaving = self.volumes.ago(window - 1);
            for ((sum, old), new) in self.volume_24h.iter_mut().zip(leaving).zip(quote_volume) {
                *sum = *sum - finite_or_zero(*old) + finite_or_zero(*new);
            }
        } else {
            for (sum, v) in self.volume_24h.iter_mut().zip(quote_volume) {
                *sum += finite_or_zero(*v);
            }
        }
        self.volumes.push(quote_volume);
    }
}

/// Bars between two rankings by liquidity (at least 1).
fn cfg_refresh(cfg: &UniverseConfig) -> usize {
    cfg.universe_refresh_bars.max(1)
}

/// `member[t, i]`: symbol i is in the universe at bar t and may trade there (see [`UniverseFilter`]).
pub fn universe_membership(
    symbols: &[String],
    close: ArrayView2<f64>,
    quote_volume: ArrayView2<f64>,
    bars_per_day: usize,
    min_history: usize,
    cfg: &UniverseConfig,
) -> Array2<bool> {
    let (close, quote_volume) = (close.as_standard_layout(), quote_volume.as_standard_layout());
    let (n_bars, n_symbols) = close.dim();
    let mut filter = UniverseFilter::new(symbols, bars_per_day, min_history, cfg);
    let mut member = Array2::from_elem((n_bars, n_symbols), false);
    for t in 0..n_bars {
        filter.update(
            close.row(t).to_slice().expect("standard layout"),
            quote_volume.row(t).to_slice().expect("standard layout"),
            member.row_mut(t).into_slice().expect("standard layout"),
        );
    }
    member
}
