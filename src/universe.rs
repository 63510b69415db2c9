//! Point-in-time universe (strategy.md §1b): who may trade at bar t, decided from data up to t.

use ndarray::{Array2, ArrayView2};

use crate::config::UniverseConfig;

/// `member[t, i]`: symbol i is in the universe at bar t and may trade there.
///
/// Every bar: a valid close ≥ `min_price`, 24h quote volume ≥ `min_quote_volume_24h`, at least
/// `min_history` valid closes so far, included and not excluded. Every `universe_refresh_bars`
/// bars (counted from the first bar) the `max_symbols` most liquid of those by 24h quote volume at
/// that bar are chosen and kept until the next refresh.
pub fn universe_membership(
    symbols: &[String],
    close: ArrayView2<f64>,
    quote_volume: ArrayView2<f64>,
    bars_per_day: usize,
    min_history: usize,
    cfg: &UniverseConfig,
) -> Array2<bool> {
    let (n_bars, n_symbols) = close.dim();
    let listed: Vec<bool> = symbols
        .iter()
        .map(|s| (cfg.include.is_empty() || cfg.include.contains(s)) && !cfg.exclude.contains(s))
        .collect();
    let window = bars_per_day.max(1);
    let mut member = Array2::from_elem((n_bars, n_symbols), false);
    let mut volume_24h = vec![0.0; n_symbols];
    let mut history = vec![0usize; n_symbols];
    let mut passes = vec![false; n_symbols];
    let mut ranked_in = vec![true; n_symbols];
    let mut order: Vec<usize> = Vec::with_capacity(n_symbols);
    let finite_or_zero = |v: f64| if v.is_finite() { v } else { 0.0 };
    for t in 0..n_bars {
        let close_row = close.row(t);
        let close_row = close_row.as_slice().expect("standard layout");
        if t % window == 0 {
            // Rebuild the rolling 24h sums now and then so that rounding cannot accumulate.
            volume_24h.fill(0.0);
            for s in (t + 1).saturating_sub(window)..t {
                for (sum, v) in volume_24h.iter_mut().zip(quote_volume.row(s)) {
                    *sum += finite_or_zero(*v);
                }
            }
        } else if t >= window {
            for (sum, v) in volume_24h.iter_mut().zip(quote_volume.row(t - window)) {
                *sum -= finite_or_zero(*v);
            }
        }
        for (sum, v) in volume_24h.iter_mut().zip(quote_volume.row(t)) {
            *sum += finite_or_zero(*v);
        }
        for i in 0..n_symbols {
            let c = close_row[i];
            history[i] += c.is_finite() as usize;
            passes[i] = listed[i]
                && c.is_finite()
                && c >= cfg.min_price
                && volume_24h[i] >= cfg.min_quote_volume_24h
                && history[i] >= min_history;
        }
        if cfg.max_symbols > 0 && cfg.max_symbols < n_symbols && t % cfg.universe_refresh_bars.max(1) == 0 {
            order.clear();
            order.extend((0..n_symbols).filter(|&i| passes[i]));
            // Most liquid first; ties broken by symbol order so the choice is deterministic.
            order.sort_by(|&a, &b| volume_24h[b].total_cmp(&volume_24h[a]).then(a.cmp(&b)));
            ranked_in.fill(false);
            for &i in order.iter().take(cfg.max_symbols) {
                ranked_in[i] = true;
            }
        }
        let mut row = member.row_mut(t);
        for i in 0..n_symbols {
            row[i] = ranked_in[i] && passes[i];
        }
    }
    member
}
