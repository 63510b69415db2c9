//! Warnings for results whose zeros come from construction rather than from the market: a warm-up
//! longer than the data, no decision bar, gross exposure held below the target by the caps.

use super::BacktestResult;
use crate::config::{Config, KMode};

/// The longest history the strategy needs before its first decision, and the key that sets it.
fn warm_up(cfg: &Config) -> (usize, &'static str) {
    let (s, sizing) = (&cfg.strategy, &cfg.sizing);
    let mut needs = vec![(s.max_lookback() + 1, "strategy.lookbacks"), (s.vol_lookback, "strategy.vol_lookback")];
    if s.k_mode == KMode::Dynamic {
        needs.push((s.disp_lookback, "strategy.disp_lookback"));
    }
    if s.regime_filter.enabled {
        needs.push((s.regime_filter.ema_len, "strategy.regime_filter.ema_len"));
    }
    if sizing.vol_target.enabled {
        needs.push((sizing.vol_target.lookback, "sizing.vol_target.lookback"));
    }
    if let Some(bars) = s.min_history_bars.filter(|&bars| bars > 0) {
        needs.push((bars, "strategy.min_history_bars"));
    }
    needs.into_iter().max().expect("two needs at least")
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}

/// The warnings of one finished backtest.
pub fn diagnose(result: &BacktestResult, cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let bars = &result.bars;
    let n_bars = bars.equity.len();
    let (warm, key) = warm_up(cfg);
    let decided = result.book.target_weight.iter().any(|&w| w != 0.0);
    let s = &cfg.strategy;
    if n_bars <= warm {
        out.push(format!(
            "warm-up longer than the data: {key} needs {warm} bars before the first decision, the data has \
             {n_bars}; every metric is zero"
        ));
    } else if !decided {
        let need = if s.market_neutral { 2 * s.k_min } else { s.k_min };
        let why = if result.symbols.len() < need {
            format!("strategy.k_min {} needs at least {need} symbols, the data has {}", s.k_min, result.symbols.len())
        } else {
            "no bar passed the filters (see strategy.regime_filter and universe)".to_string()
        };
        out.push(format!("no decision bar: the strategy never took a position ({why}); every metric is zero"));
    }
    let invested: Vec<usize> = (0..n_bars).filter(|&t| bars.gross[t] > 0.0).collect();
    if decided && !invested.is_empty() {
        let sz = &cfg.sizing;
        let below: Vec<usize> = invested
            .iter()
            .copied()
            .filter(|&t| bars.gross[t] < 0.9 * (bars.vol_scale[t] * sz.gross_leverage).min(sz.max_gross_leverage))
            .collect();
        let share = below.len() as f64 / invested.len() as f64;
        if share > 0.5 {
            let caps = below
                .iter()
                .filter(|&&t| {
                    let target = (bars.vol_scale[t] * sz.gross_leverage).min(sz.max_gross_leverage);
                    f64::from(bars.n_long[t] + bars.n_short[t]) * sz.max_weight_per_asset < 0.9 * target
                })
                .count();
            let cause = if caps as f64 / below.len() as f64 > 0.5 {
                format!(
                    "the caps bind (sizing.max_weight_per_asset {} × the positions held, on {:.0}% of them)",
                    sz.max_weight_per_asset,
                    100.0 * caps as f64 / below.len() as f64
                )
            } else {
                "caps or the universe limit it".to_string()
            };
            let mut gross: Vec<f64> = invested.iter().map(|&t| bars.gross[t]).collect();
            out.push(format!(
                "gross exposure below sizing.gross_leverage {} (× vol scale) on {:.0}% of invested bars (median \
                 gross {:.2}): {cause}",
                sz.gross_leverage,
                100.0 * share,
                median(&mut gross)
            ));
        }
    }
    out
}
