//! Point-in-time universe (strategy.md §1b): who may trade at bar t, decided from data up to t.

use ndarray::{Array2, ArrayView2};

use crate::config::UniverseConfig;
use crate::signal::rolling_sum;

/// `member[t, i]`: symbol i is in the universe at bar t.
///
/// Every bar: a valid close ≥ `min_price`, 24h quote volume ≥ `min_quote_volume_24h`, included and
/// not excluded. Every `universe_refresh_bars` bars (counted from the first bar) the `max_symbols`
/// most liquid of those by 24h quote volume at that bar are chosen and kept until the next refresh.
pub fn universe_membership(
    symbols: &[String],
    close: ArrayView2<f64>,
    quote_volume: ArrayView2<f64>,
    bars_per_day: usize,
    cfg: &UniverseConfig,
) -> Array2<bool> {
    let (n_bars, n_symbols) = close.dim();
    let listed: Vec<bool> = symbols
        .iter()
        .map(|s| (cfg.include.is_empty() || cfg.include.contains(s)) && !cfg.exclude.contains(s))
        .collect();
    let volume_24h = rolling_sum(quote_volume, bars_per_day);
    let mut member = Array2::from_elem((n_bars, n_symbols), false);
    let mut ranked_in = vec![true; n_symbols];
    let mut order: Vec<usize> = Vec::with_capacity(n_symbols);
    for t in 0..n_bars {
        let passes = |i: usize| {
            let c = close[[t, i]];
            listed[i]
                && c.is_finite()
                && c >= cfg.min_price
                && volume_24h[[t, i]] >= cfg.min_quote_volume_24h
        };
        if cfg.max_symbols > 0 && t % cfg.universe_refresh_bars.max(1) == 0 {
            order.clear();
            order.extend((0..n_symbols).filter(|&i| passes(i)));
            // Most liquid first; ties broken by symbol order so the choice is deterministic.
            order.sort_by(|&a, &b| {
                volume_24h[[t, b]]
                    .total_cmp(&volume_24h[[t, a]])
                    .then(a.cmp(&b))
            });
            ranked_in.fill(false);
            for &i in order.iter().take(cfg.max_symbols) {
                ranked_in[i] = true;
            }
        }
        for i in 0..n_symbols {
            member[[t, i]] = ranked_in[i] && passes(i);
        }
    }
    member
}

/// `count[t, i]`: number of valid closes of symbol i in bars `0..=t` (listing age in bars).
pub fn valid_close_count(close: ArrayView2<f64>) -> Array2<u32> {
    let (n_bars, n_symbols) = close.dim();
    let mut count = Array2::zeros((n_bars, n_symbols));
    let mut running = vec![0u32; n_symbols];
    for t in 0..n_bars {
        for i in 0..n_symbols {
            if close[[t, i]].is_finite() {
                running[i] += 1;
            }
            count[[t, i]] = running[i];
        }
    }
    count
}
