//! An independent, deliberately naive xsmom-bot v1 backtester (backtest.md §6) for the tests.

use xsmom::data::Panel;
use xsmom::Config;

/// Straightforward xsmom-bot v1 backtest: equity per bar.
pub fn naive_v1(panel: &Panel, cfg: &Config) -> Vec<f64> {
    let s = &cfg.strategy;
    let (n_bars, n_symbols) = (panel.n_bars(), panel.n_symbols());
    let close = |t: usize, i: usize| panel.close[[t, i]];
    let bars_per_day = panel.timeframe.bars_per_day() as f64;
    let max_lookback = *s.lookbacks.iter().max().unwrap();
    let first_bar = max_lookback.max(s.vol_lookback) + 5;
    let k = s.k_max;
    let costs = &cfg.costs;
    let cost = (costs.maker_fill_ratio * costs.maker_fee_bps
        + (1.0 - costs.maker_fill_ratio) * costs.taker_fee_bps
        + costs.slippage_bps)
        / 1e4;

    // EMA values per symbol at the bars with a valid close.
    let alpha = 2.0 / (s.regime_filter.ema_len as f64 + 1.0);
    let m = (s.regime_filter.ema_len / 4).max(1);
    let mut ema_hist: Vec<Vec<f64>> = vec![vec![]; n_symbols];
    let mut valid_closes = vec![0usize; n_symbols];

    let mut equity = vec![cfg.backtest.initial_capital; n_bars];
    let mut w_prev = vec![0.0; n_symbols];
    let mut w_prev_prev = vec![0.0; n_symbols];
    for t in 0..n_bars {
        // Equity from the weights held since t − 1.
        if t > 0 {
            let mut growth = 0.0;
            for i in 0..n_symbols {
                let r = close(t, i) / close(t - 1, i) - 1.0;
                if w_prev[i] != 0.0 && r.is_finite() {
                    growth += w_prev[i] * r;
                }
            }
            let turnover: f64 = (0..n_symbols).map(|i| (w_prev[i] - w_prev_prev[i]).abs()).sum();
            equity[t] = equity[t - 1] * (1.0 + growth) - equity[t - 1] * cost * turnover;
        }
        let mut slope = vec![f64::NAN; n_symbols];
        for i in 0..n_symbols {
            let c = close(t, i);
            if c.is_finite() {
                valid_closes[i] += 1;
                let next = match ema_hist[i].last() {
                    None => c,
                    Some(prev) => prev + alpha * (c - prev),
                };
                ema_hist[i].push(next);
                let h = &ema_hist[i];
                if h.len() > m {
                    slope[i] = (h[h.len() - 1] - h[h.len() - 1 - m]) / m as f64 / c * 1e4 * bars_per_day;
                }
            }
        }
        let mut w = vec![0.0; n_symbols];
        if t >= first_bar {
            let mut scored: Vec<(usize, f64)> = vec![];
            for i in 0..n_symbols {
                if !close(t, i).is_finite() || valid_closes[i] < max_lookback {
                    continue;
                }
                let mut momentum = 0.0;
                for (lookback, weight) in s.lookbacks.iter().zip(&s.lookback_weights) {
                    momentum += weight * (close(t, i) / close(t.saturating_sub(*lookback), i) - 1.0);
                }
                if t < max_lookback || !momentum.is_finite() {
                    continue;
                }
                let returns: Vec<f64> = (t + 1 - s.vol_lookback..=t)
                    .filter(|&u| u >= 1)
                    .map(|u| close(u, i) / close(u - 1, i) - 1.0)
                    .filter(|r| r.is_finite())
                    .collect();
                if returns.len() < (s.vol_lookback / 2).max(2) {
                    continue;
                }
                let mean = returns.iter().sum::<f64>() / returns.len() as f64;
                let var = returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (returns.len() - 1) as f64;
                if !(var.sqrt() > 0.0) {
                    continue;
                }
                if s.regime_filter.enabled
                    && slope[i].is_finite()
                    && slope[i].abs() < s.regime_filter.slope_min_bps_per_day
                {
                    continue;
                }
                scored.push((i, momentum));
            }
            if scored.len() >= 2 * k {
                let n = scored.len() as f64;
                let mean = scored.iter().map(|x| x.1).sum::<f64>() / n;
                let std = (scored.iter().map(|x| (x.1 - mean).powi(2)).sum::<f64>() / n).sqrt();
                if std > 0.0 {
                    let mut ranked: Vec<(usize, f64)> = scored.iter().map(|&(i, v)| (i, (v - mean) / std)).collect();
                    ranked.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
                    let cap = cfg.sizing.max_weight_per_asset.min(cfg.sizing.max_notional_usd / equity[t]);
                    let each = (cfg.sizing.gross_leverage / (2 * k) as f64).min(cap);
                    // The original rounds its final weights to 8 decimals (numpy's half to even).
                    let each = (each * 1e8).round_ties_even() / 1e8;
                    for &(i, _) in ranked.iter().take(k) {
                        w[i] = each;
                    }
                    for &(i, _) in ranked.iter().rev().take(k) {
                        w[i] = -each;
                    }
                }
            }
        }
        w_prev_prev = std::mem::replace(&mut w_prev, w);
    }
    equity
}
