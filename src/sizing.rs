//! Position sizing (strategy.md §5): raw leg weights, leg normalisation, water-filling caps, the
//! ex-ante portfolio volatility target, the gross cap and the minimum weight.
//!
//! Weights are signed fractions of equity, one entry per symbol of the panel (0 = not held).

use ndarray::ArrayView2;

use crate::bitset::SymbolSet;
use crate::config::{CapMode, SizingConfig, Weighting};

/// Raw weight magnitude of one selected symbol: `1`, `1/σ` or `|a|/σ`.
#[inline]
pub fn raw_weight(weighting: Weighting, signal: f64, sigma: f64) -> f64 {
    match weighting {
        Weighting::Equal => 1.0,
        Weighting::InverseVol => 1.0 / sigma,
        Weighting::SignalInverseVol => signal.abs() / sigma,
    }
}

/// Scale non-negative magnitudes so that they sum to `target` (no-op for an all-zero leg).
pub fn normalise(weights: &mut [f64], target: f64) {
    let sum: f64 = weights.iter().sum();
    if sum > 0.0 {
        let scale = target / sum;
        weights.iter_mut().for_each(|w| *w *= scale);
    }
}

/// Water-filling: clip magnitudes above their cap and hand the excess to the names still below
/// their cap, in proportion to their weights, until nothing exceeds its cap. Returns the leg sum,
/// which falls short of the input sum only when every name is capped.
pub fn water_fill(weights: &mut [f64], caps: &[f64]) -> f64 {
    debug_assert_eq!(weights.len(), caps.len());
    // Each pass caps at least one more name, so len + 1 passes always suffice.
    for _ in 0..=weights.len() {
        let mut excess = 0.0;
        let mut free_sum = 0.0;
        for (w, cap) in weights.iter_mut().zip(caps) {
            if *w > *cap {
                excess += *w - *cap;
                *w = *cap;
            } else if *w < *cap {
                free_sum += *w;
            }
        }
        if excess <= 0.0 || free_sum <= 0.0 {
            break;
        }
        let scale = 1.0 + excess / free_sum;
        for (w, cap) in weights.iter_mut().zip(caps) {
            if *w < *cap {
                *w *= scale;
            }
        }
    }
    weights.iter().sum()
}

/// Clip magnitudes to their caps without redistribution; returns the leg sum.
pub fn clip(weights: &mut [f64], caps: &[f64]) -> f64 {
    for (w, cap) in weights.iter_mut().zip(caps) {
        *w = w.min(*cap);
    }
    weights.iter().sum()
}

/// Sample std (ddof 1) of the candidate book's past returns `Σ_i w_i r[s,i]` over the rows of
/// `returns` (finite: a missing return must be given as 0), annualised with `√bars_per_year`.
/// `book` is scratch space.
pub fn ex_ante_vol(
    weights: &[f64],
    held: &[usize],
    returns: ArrayView2<f64>,
    bars_per_year: f64,
    book: &mut Vec<f64>,
) -> f64 {
    let n = returns.nrows();
    if n < 2 {
        return f64::NAN;
    }
    // Symbol-major accumulation: each row's book return still adds the symbols in `held` order
    // (the same sums as row by row), but the rows are independent chains that vectorise, and four
    // symbols go into one pass over the rows.
    book.clear();
    book.resize(n, 0.0);
    let column = |i: usize| returns.column(i).to_slice().expect("symbol-major window");
    let mut quads = held.chunks_exact(4);
    for quad in &mut quads {
        let [a, b, c, d] = [quad[0], quad[1], quad[2], quad[3]];
        let (wa, wb, wc, wd) = (weights[a], weights[b], weights[c], weights[d]);
        let rows = column(a).iter().zip(column(b)).zip(column(c)).zip(column(d));
        for (sum, (((ra, rb), rc), rd)) in book.iter_mut().zip(rows) {
            *sum = *sum + wa * ra + wb * rb + wc * rc + wd * rd;
        }
    }
    for &i in quads.remainder() {
        let w = weights[i];
        for (sum, r) in book.iter_mut().zip(column(i)) {
            *sum += w * r;
        }
    }
    // Four interleaved accumulators: a single running sum would be one chain of dependent
    // additions (latency-bound, the slowest part of this function), and lanes are no less exact.
    let (mut sums, mut sums_sq) = ([0.0f64; 4], [0.0f64; 4]);
    let mut rows = book.chunks_exact(4);
    for quad in &mut rows {
        for lane in 0..4 {
            sums[lane] += quad[lane];
            sums_sq[lane] += quad[lane] * quad[lane];
        }
    }
    for (lane, b) in rows.remainder().iter().enumerate() {
        sums[lane] += b;
        sums_sq[lane] += b * b;
    }
    let sum = (sums[0] + sums[1]) + (sums[2] + sums[3]);
    let sum_sq = (sums_sq[0] + sums_sq[1]) + (sums_sq[2] + sums_sq[3]);
    let mean = sum / n as f64;
    let var = ((sum_sq - mean * sum) / (n as f64 - 1.0)).max(0.0);
    var.sqrt() * bars_per_year.sqrt()
}

/// Scale factor of the vol target: `clamp(target / σ_p, min, max)` (σ_p = 0 gives `max`).
pub fn vol_target_scale(sigma_p: f64, target: f64, min_scale: f64, max_scale: f64) -> f64 {
    if sigma_p.is_nan() {
        return 1.0;
    }
    (target / sigma_p).clamp(min_scale, max_scale)
}

/// Inputs of [`size_book`] for one bar.
pub struct BookInputs<'a> {
    /// Long leg: symbol indices with their raw signal `a` (used by `signal_inverse_vol`).
    pub longs: &'a [usize],
    pub shorts: &'a [usize],
    pub signal: &'a [f64],
    pub sigma: &'a [f64],
    /// Per-symbol multiplier applied after caps (Kelly, downweighting); `None` = 1.
    pub multiplier: Option<&'a [f64]>,
    /// Bar returns of the last `vol_target.lookback` bars ending at t (rows, symbol-major), a missing
    /// return given as 0, for the vol target.
    pub recent_returns: ArrayView2<'a, f64>,
    pub equity: f64,
    pub bars_per_year: f64,
    pub market_neutral: bool,
    /// Raw weighting of this book (TSMOM books are always inverse-vol).
    pub weighting: Weighting,
    /// Target absolute sum of each leg before caps: `gross_leverage / 2` each for XSMOM.
    pub leg_gross: [f64; 2],
    /// The carry sleeve at full gross and its budget b: the book becomes `(1 − b)·momentum + b·carry`
    /// before the vol target (risk.md §8).
    pub carry: Option<(&'a [f64], f64)>,
}

/// What the vol target did at this bar (reported per bar).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BookStats {
    pub vol_scale: f64,
    pub ex_ante_vol: f64,
}

/// Target weights for one bar (strategy.md §5 steps 1–7), written into `weights` (length N, zeroed
/// first). `scratch` holds the per-leg magnitudes to avoid allocating per bar.
pub fn size_book(cfg: &SizingConfig, input: &BookInputs<'_>, weights: &mut [f64], scratch: &mut Scratch) -> BookStats {
    weights.fill(0.0);
    let cap = cfg.max_weight_per_asset.min(cfg.max_notional_usd / input.equity.max(f64::MIN_POSITIVE));
    let mut leg_sums = [0.0f64; 2];
    for (side, leg) in [input.longs, input.shorts].into_iter().enumerate() {
        scratch.magnitudes.clear();
        scratch.magnitudes.extend(leg.iter().map(|&i| raw_weight(input.weighting, input.signal[i], input.sigma[i])));
        normalise(&mut scratch.magnitudes, input.leg_gross[side]);
        scratch.caps.clear();
        scratch.caps.resize(leg.len(), cap);
        leg_sums[side] = match cfg.caps {
            CapMode::WaterFill => water_fill(&mut scratch.magnitudes, &scratch.caps),
            CapMode::Clip => clip(&mut scratch.magnitudes, &scratch.caps),
        };
        let sign = if side == 0 { 1.0 } else { -1.0 };
        for (&i, m) in leg.iter().zip(&scratch.magnitudes) {
            weights[i] = sign * m;
        }
    }
    if input.market_neutral {
        restore_neutrality(weights, input.longs, input.shorts);
    }
    // With a carry sleeve the legs of the rest of the pipeline are those of the combined book.
    let combined_legs: Option<(Vec<usize>, Vec<usize>)> = input.carry.map(|(carry, budget)| {
        for (w, c) in weights.iter_mut().zip(carry) {
            *w = ((1.0 - budget) * *w + budget * c).clamp(-cap, cap);
        }
        let longs = (0..weights.len()).filter(|&i| weights[i] > 0.0).collect();
        let shorts = (0..weights.len()).filter(|&i| weights[i] < 0.0).collect();
        (longs, shorts)
    });
    let (longs, shorts): (&[usize], &[usize]) = match &combined_legs {
        Some((longs, shorts)) => (longs, shorts),
        None => (input.longs, input.shorts),
    };
    if let Some(multiplier) = input.multiplier {
        for &i in longs.iter().chain(shorts) {
            weights[i] *= multiplier[i];
        }
        if input.market_neutral {
            restore_neutrality(weights, longs, shorts);
        }
    }

    let mut stats = BookStats { vol_scale: 1.0, ex_ante_vol: f64::NAN };
    let vt = &cfg.vol_target;
    if vt.enabled && input.recent_returns.nrows() >= (vt.lookback / 2).max(2) {
        scratch.held.clear();
        scratch.held.extend(longs.iter().chain(shorts).copied());
        let sigma_p = ex_ante_vol(weights, &scratch.held, input.recent_returns, input.bars_per_year, &mut scratch.book);
        let scale = vol_target_scale(sigma_p, vt.target_ann_vol, vt.min_scale, vt.max_scale);
        stats = BookStats { vol_scale: scale, ex_ante_vol: sigma_p };
        for &i in longs.iter().chain(shorts) {
            weights[i] = (weights[i] * scale).clamp(-cap, cap);
        }
        if input.market_neutral {
            restore_neutrality(weights, longs, shorts);
        }
    }

    cap_gross_and_round(cfg, weights, longs, shorts, scratch);
    stats
}

/// The last steps of [`size_book`]: the gross cap, the minimum weight and the rounding, over the
/// members of the legs (the only non-zero weights).
fn cap_gross_and_round(
    cfg: &SizingConfig,
    weights: &mut [f64],
    longs: &[usize],
    shorts: &[usize],
    scratch: &mut Scratch,
) {
    // Only the legs can be non-zero: the gross sum, its cap and the minimum weight visit them in
    // symbol order (the same sum as over every symbol, whose other terms are 0).
    // Symbol order without a sort: mark the legs in a bit set and walk it.
    scratch.member_set.reset(weights.len());
    for &i in longs.iter().chain(shorts) {
        scratch.member_set.insert(i);
    }
    scratch.members.clear();
    scratch.members.extend(scratch.member_set.iter());
    let gross: f64 = scratch.members.iter().map(|&i| weights[i].abs()).sum();
    if gross > cfg.max_gross_leverage {
        let scale = cfg.max_gross_leverage / gross;
        scratch.members.iter().for_each(|&i| weights[i] *= scale);
    }
    for &i in &scratch.members {
        if weights[i].abs() < cfg.min_weight {
            weights[i] = 0.0;
        }
    }
    if let Some(decimals) = cfg.round_decimals {
        let scale = 10f64.powi(decimals as i32);
        scratch.members.iter().for_each(|&i| weights[i] = (weights[i] * scale).round_ties_even() / scale);
    }
}

/// Shrink the larger leg so that `Σ longs = Σ |shorts|`.
pub fn restore_neutrality(weights: &mut [f64], longs: &[usize], shorts: &[usize]) {
    let long_sum: f64 = longs.iter().map(|&i| weights[i]).sum();
    let short_sum: f64 = shorts.iter().map(|&i| -weights[i]).sum();
    if long_sum > short_sum && long_sum > 0.0 {
        let scale = short_sum / long_sum;
        longs.iter().for_each(|&i| weights[i] *= scale);
    } else if short_sum > long_sum && short_sum > 0.0 {
        let scale = long_sum / short_sum;
        shorts.iter().for_each(|&i| weights[i] *= scale);
    }
}

/// Reusable buffers for [`size_book`].
#[derive(Debug, Default)]
pub struct Scratch {
    magnitudes: Vec<f64>,
    caps: Vec<f64>,
    held: Vec<usize>,
    book: Vec<f64>,
    members: Vec<usize>,
    member_set: SymbolSet,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn water_fill_redistributes_until_capped() {
        let mut w = vec![0.30, 0.10, 0.05, 0.05];
        let sum = water_fill(&mut w, &[0.2; 4]);
        assert!((sum - 0.5).abs() < 1e-12);
        assert_eq!(w[0], 0.2);
        // The excess 0.1 goes to the others in proportion 2:1:1.
        assert!((w[1] - 0.15).abs() < 1e-12 && (w[2] - 0.075).abs() < 1e-12);
        let mut all_capped = vec![0.3, 0.3];
        assert!((water_fill(&mut all_capped, &[0.1, 0.1]) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn neutrality_shrinks_the_larger_leg() {
        let mut w = vec![0.3, 0.2, -0.1, -0.15];
        restore_neutrality(&mut w, &[0, 1], &[2, 3]);
        assert!((w[0] + w[1] - 0.25).abs() < 1e-12);
        assert_eq!(w[2], -0.1);
    }
}
