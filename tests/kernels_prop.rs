//! Every kernel against a naive implementation written here from the formulas of strategy.md,
//! on random panels with holes and ragged starts; plus causality (prefix invariance) per kernel.

use ndarray::Array2;
use proptest::prelude::*;
use xsmom::signal::{self, RollingMedian};
use xsmom::sizing;

/// Random-walk closes (T × N) with NaN holes and ragged starts, plus high/low around them.
fn panel_strategy() -> impl Strategy<Value = (Array2<f64>, Array2<f64>, Array2<f64>)> {
    (20usize..220, 1usize..6, any::<u64>()).prop_map(|(n_bars, n_symbols, seed)| {
        let mut state = seed | 1;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut close = Array2::from_elem((n_bars, n_symbols), f64::NAN);
        let mut high = close.clone();
        let mut low = close.clone();
        for i in 0..n_symbols {
            let start = (uniform() * n_bars as f64 * 0.3) as usize;
            let mut price = 10.0 + 90.0 * uniform();
            for t in start..n_bars {
                price *= 1.0 + (uniform() - 0.5) * 0.04;
                if uniform() < 0.05 {
                    continue; // a hole
                }
                close[[t, i]] = price;
                high[[t, i]] = price * (1.0 + 0.01 * uniform());
                low[[t, i]] = price * (1.0 - 0.01 * uniform());
            }
        }
        (close, high, low)
    })
}

fn close_enough(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-12
}

fn assert_matrix(name: &str, got: &Array2<f64>, want: &Array2<f64>) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.dim(), want.dim());
    for ((t, i), g) in got.indexed_iter() {
        let w = want[[t, i]];
        prop_assert!(close_enough(*g, w), "{} at [{}, {}]: kernel {} vs naive {}", name, t, i, g, w);
    }
    Ok(())
}

fn naive_returns(close: &Array2<f64>, lookback: usize) -> Array2<f64> {
    let mut out = Array2::from_elem(close.dim(), f64::NAN);
    for ((t, i), o) in out.indexed_iter_mut() {
        if t >= lookback {
            *o = close[[t, i]] / close[[t - lookback, i]] - 1.0;
        }
    }
    out
}

fn naive_sample_std(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

fn naive_rolling_std(values: &Array2<f64>, window: usize, min_periods: usize) -> Array2<f64> {
    let mut out = Array2::from_elem(values.dim(), f64::NAN);
    for ((t, i), o) in out.indexed_iter_mut() {
        let lo = (t + 1).saturating_sub(window);
        let valid: Vec<f64> = (lo..=t).map(|s| values[[s, i]]).filter(|v| v.is_finite()).collect();
        if valid.len() >= min_periods.max(2) {
            *o = naive_sample_std(&valid);
        }
    }
    out
}

/// EMA per symbol over its valid closes; NaN at missing bars.
fn naive_ema_values(close: &Array2<f64>, len: usize) -> (Array2<f64>, Vec<Vec<(usize, f64)>>) {
    let alpha = 2.0 / (len as f64 + 1.0);
    let mut out = Array2::from_elem(close.dim(), f64::NAN);
    let mut history = vec![vec![]; close.ncols()];
    for i in 0..close.ncols() {
        let mut ema: Option<f64> = None;
        for t in 0..close.nrows() {
            let c = close[[t, i]];
            if c.is_nan() {
                continue;
            }
            let next = match ema {
                None => c,
                Some(e) => e + alpha * (c - e),
            };
            ema = Some(next);
            out[[t, i]] = next;
            history[i].push((t, next));
        }
    }
    (out, history)
}

/// Wilder's RMA over a sequence, seeded with the SMA of the first n values.
fn naive_rma(values: &[f64], n: usize) -> Vec<Option<f64>> {
    let mut out = vec![None; values.len()];
    if values.len() < n {
        return out;
    }
    let mut rma = values[..n].iter().sum::<f64>() / n as f64;
    out[n - 1] = Some(rma);
    for k in n..values.len() {
        rma = (rma * (n as f64 - 1.0) + values[k]) / n as f64;
        out[k] = Some(rma);
    }
    out
}

fn valid_rows(close: &Array2<f64>, high: &Array2<f64>, low: &Array2<f64>, i: usize) -> Vec<usize> {
    (0..close.nrows())
        .filter(|&t| close[[t, i]].is_finite() && high[[t, i]].is_finite() && low[[t, i]].is_finite())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn lookback_returns_and_momentum((close, _, _) in panel_strategy(), l1 in 1usize..30, l2 in 1usize..30, w in 0.1f64..0.9) {
        assert_matrix("R", &signal::lookback_returns(close.view(), l1), &naive_returns(&close, l1))?;
        let (r1, r2) = (naive_returns(&close, l1), naive_returns(&close, l2));
        let plain = &r1 * w + &r2 * (1.0 - w) * 2.0;
        assert_matrix("S plain", &signal::momentum(close.view(), &[l1, l2], &[w, 2.0 * (1.0 - w)], false), &plain)?;
        let normalised = plain.mapv(|s| s / (w + 2.0 * (1.0 - w)));
        assert_matrix("S", &signal::momentum(close.view(), &[l1, l2], &[w, 2.0 * (1.0 - w)], true), &normalised)?;
    }

    #[test]
    fn rolling_std_and_vol((close, _, _) in panel_strategy(), window in 2usize..40, min_periods in 0usize..40) {
        let returns = signal::simple_returns(close.view());
        assert_matrix("r", &returns, &naive_returns(&close, 1))?;
        assert_matrix("std", &signal::rolling_std(returns.view(), window, min_periods), &naive_rolling_std(&returns, window, min_periods))?;
        assert_matrix("vol", &signal::rolling_vol(close.view(), window), &naive_rolling_std(&returns, window, window / 2))?;
    }

    #[test]
    fn ema_and_slope((close, _, _) in panel_strategy(), len in 2usize..60, bars_per_day in 1usize..300) {
        let (ema, history) = naive_ema_values(&close, len);
        assert_matrix("ema", &signal::ema(close.view(), len), &ema)?;
        let m = (len / 4).max(1);
        let mut slope = Array2::from_elem(close.dim(), f64::NAN);
        for (i, values) in history.iter().enumerate() {
            for k in m..values.len() {
                let (t, now) = values[k];
                let deltas: Vec<f64> = (k + 1 - m..=k).map(|j| values[j].1 - values[j - 1].1).collect();
                let mean_delta = deltas.iter().sum::<f64>() / m as f64;
                slope[[t, i]] = mean_delta / close[[t, i]] * 1e4 * bars_per_day as f64;
                let _ = now;
            }
        }
        assert_matrix("slope", &signal::ema_slope_bps_per_day(close.view(), len, bars_per_day), &slope)?;
    }

    #[test]
    fn wilder_atr_and_adx((close, high, low) in panel_strategy(), n in 2usize..20) {
        let mut atr = Array2::from_elem(close.dim(), f64::NAN);
        let mut adx = Array2::from_elem(close.dim(), f64::NAN);
        for i in 0..close.ncols() {
            let rows = valid_rows(&close, &high, &low, i);
            let tr: Vec<f64> = rows.iter().enumerate().map(|(k, &t)| {
                let (h, l) = (high[[t, i]], low[[t, i]]);
                if k == 0 { h - l } else {
                    let pc = close[[rows[k - 1], i]];
                    (h - l).max((h - pc).abs()).max((l - pc).abs())
                }
            }).collect();
            for (k, v) in naive_rma(&tr, n).into_iter().enumerate() {
                if let Some(v) = v { atr[[rows[k], i]] = v; }
            }
            // ADX from the second valid bar on.
            let (mut plus, mut minus, mut trs) = (vec![], vec![], vec![]);
            for k in 1..rows.len() {
                let (t, p) = (rows[k], rows[k - 1]);
                let up = high[[t, i]] - high[[p, i]];
                let down = low[[p, i]] - low[[t, i]];
                plus.push(if up > down && up > 0.0 { up } else { 0.0 });
                minus.push(if down > up && down > 0.0 { down } else { 0.0 });
                trs.push(tr[k]);
            }
            let (sp, sm, st) = (naive_rma(&plus, n), naive_rma(&minus, n), naive_rma(&trs, n));
            let mut dx = vec![];
            let mut dx_rows = vec![];
            for k in 0..plus.len() {
                if let (Some(p), Some(m), Some(t)) = (sp[k], sm[k], st[k]) {
                    let (pdi, mdi) = if t > 0.0 { (100.0 * p / t, 100.0 * m / t) } else { (0.0, 0.0) };
                    dx.push(if pdi + mdi > 0.0 { 100.0 * (pdi - mdi).abs() / (pdi + mdi) } else { 0.0 });
                    dx_rows.push(rows[k + 1]);
                }
            }
            for (k, v) in naive_rma(&dx, n).into_iter().enumerate() {
                if let Some(v) = v { adx[[dx_rows[k], i]] = v; }
            }
        }
        assert_matrix("atr", &signal::wilder_atr(high.view(), low.view(), close.view(), n), &atr)?;
        assert_matrix("adx", &signal::wilder_adx(high.view(), low.view(), close.view(), n), &adx)?;
    }

    #[test]
    fn kernels_are_causal((close, high, low) in panel_strategy(), cut in 0.1f64..1.0) {
        let t = ((close.nrows() as f64 * cut) as usize).max(1);
        let head = close.slice(ndarray::s![..t, ..]).to_owned();
        let (h_high, h_low) = (high.slice(ndarray::s![..t, ..]).to_owned(), low.slice(ndarray::s![..t, ..]).to_owned());
        let prefix = |m: Array2<f64>| m.slice(ndarray::s![..t, ..]).to_owned();
        assert_matrix("momentum", &signal::momentum(head.view(), &[3, 7], &[0.5, 0.5], true), &prefix(signal::momentum(close.view(), &[3, 7], &[0.5, 0.5], true)))?;
        assert_matrix("vol", &signal::rolling_vol(head.view(), 9), &prefix(signal::rolling_vol(close.view(), 9)))?;
        assert_matrix("slope", &signal::ema_slope_bps_per_day(head.view(), 12, 24), &prefix(signal::ema_slope_bps_per_day(close.view(), 12, 24)))?;
        assert_matrix("atr", &signal::wilder_atr(h_high.view(), h_low.view(), head.view(), 5), &prefix(signal::wilder_atr(high.view(), low.view(), close.view(), 5)))?;
        assert_matrix("adx", &signal::wilder_adx(h_high.view(), h_low.view(), head.view(), 5), &prefix(signal::wilder_adx(high.view(), low.view(), close.view(), 5)))?;
    }

    #[test]
    fn cross_sectional_z_matches_definition(values in prop::collection::vec(-1.0f64..1.0, 1..20), mask in prop::collection::vec(any::<bool>(), 20)) {
        let eligible = &mask[..values.len()];
        let mut z = vec![0.0; values.len()];
        let picked: Vec<f64> = values.iter().zip(eligible).filter(|(_, e)| **e).map(|(v, _)| *v).collect();
        let result = signal::cross_sectional_z(&values, eligible, &mut z);
        if picked.len() < 2 {
            prop_assert!(result.is_none());
        } else {
            let n = picked.len() as f64;
            let mean = picked.iter().sum::<f64>() / n;
            let std = (picked.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            if std > 0.0 {
                let cs = result.unwrap();
                prop_assert!(close_enough(cs.std, std));
                for (k, e) in eligible.iter().enumerate() {
                    if *e { prop_assert!(close_enough(z[k], (values[k] - mean) / std)); } else { prop_assert!(z[k].is_nan()); }
                }
            }
        }
    }

    #[test]
    fn amplify_and_dynamic_k(z in -5.0f64..5.0, p in 0.2f64..3.0, d in -1.0f64..4.0, k_min in 1usize..4, extra in 0usize..6) {
        prop_assert!(close_enough(signal::amplify(z, p), z.signum() * z.abs().powf(p)));
        let k_max = k_min + extra;
        let x = ((d - 0.8) / 0.7).clamp(0.0, 1.0);
        prop_assert_eq!(signal::dynamic_k(d, k_min, k_max, 0.8, 1.5), (k_min as f64 + extra as f64 * x).round() as usize);
    }

    #[test]
    fn rolling_median_matches_sorting(values in prop::collection::vec(prop_oneof![Just(f64::NAN), -10.0f64..10.0], 1..120), window in 1usize..30) {
        let mut rolling = RollingMedian::new(window);
        for t in 0..values.len() {
            rolling.push(values[t]);
            let mut w: Vec<f64> = values[(t + 1).saturating_sub(window)..=t].iter().copied().filter(|v| !v.is_nan()).collect();
            w.sort_by(f64::total_cmp);
            let want = match w.len() { 0 => None, n if n % 2 == 1 => Some(w[n / 2]), n => Some(0.5 * (w[n / 2 - 1] + w[n / 2])) };
            prop_assert_eq!(rolling.median(), want);
        }
    }

    #[test]
    fn water_fill_matches_naive(weights in prop::collection::vec(0.0f64..1.0, 1..12), cap in 0.01f64..0.5) {
        let mut got = weights.clone();
        let caps = vec![cap; weights.len()];
        let total: f64 = weights.iter().sum();
        let sum = sizing::water_fill(&mut got, &caps);
        // Naive: names at the cap are fixed, the rest share what is left in proportion to their weights.
        let mut want = weights.clone();
        loop {
            let fixed: Vec<bool> = want.iter().map(|w| *w >= cap - 1e-15).collect();
            let free_raw: f64 = weights.iter().zip(&fixed).filter(|(_, f)| !**f).map(|(w, _)| w).sum();
            let left = total - cap * fixed.iter().filter(|f| **f).count() as f64;
            let next: Vec<f64> = weights.iter().zip(&fixed).map(|(w, f)| if *f { cap } else if free_raw > 0.0 { w * left / free_raw } else { 0.0 }).collect();
            let over = next.iter().any(|w| *w > cap + 1e-15);
            want = next.iter().map(|w| w.min(cap)).collect();
            if !over { break; }
        }
        for (g, w) in got.iter().zip(&want) {
            prop_assert!(*g <= cap + 1e-12);
            prop_assert!((g - w).abs() <= 1e-9, "{:?} vs {:?}", got, want);
        }
        let all_capped = total >= cap * weights.len() as f64;
        if !all_capped { prop_assert!((sum - total).abs() <= 1e-9); }
    }
}
