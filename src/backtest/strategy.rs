//! The strategy: from the bar's indicators to the admitted target (strategy.md §2–§5, risk.md §7–§8):
//! eligibility, the cross-section, the regime, selection with bands, sizing with the carry sleeve,
//! admission and the meta-labeler. It reads the account (positions, round trips) and the risk state
//! but changes neither.

use std::sync::Arc;

use ndarray::ArrayView1;

use super::recorder::SignalSink;
use super::{IndicatorState, Ledger};
use crate::bitset::SymbolSet;
use crate::carry::CarrySleeve;
use crate::config::{Config, KMode, RegimeMode, Weighting};
use crate::meta_label::{self, MetaLabeler};
use crate::model::{BarRow, Regime};
use crate::regime::{self, RegimeRouter};
use crate::risk::RiskEngine;
use crate::signal::{self, CrossSection, RollingMedian};
use crate::sizing::{self, BookInputs, Scratch};

/// What a decision reads besides the strategy's own state.
pub(super) struct DecisionInputs<'a> {
    pub ind: &'a IndicatorState,
    pub risk: &'a RiskEngine,
    /// Held positions per symbol (units, or weights with `accounting: weights`): their signs are
    /// the held sides the bands keep.
    pub positions: &'a [f64],
}

/// The strategy's state and per-bar buffers.
pub(super) struct Strategy {
    cfg: Arc<Config>,
    bars_per_year: f64,
    /// Bar length in ms (the meta-labeler's features are known at the bar's close).
    bar_ms: i64,
    /// Admitted target of the last decision (what is traded toward).
    pub target: Vec<f64>,
    /// The strategy's target before admission.
    pub model_target: Vec<f64>,
    pub regime: Regime,
    pub carry: Option<CarrySleeve>,
    pub meta: Option<MetaLabeler>,
    dispersion: RollingMedian,
    eligible: Vec<bool>,
    /// The eligible symbols of the current bar, ascending (the members of `eligible`).
    eligible_list: Vec<usize>,
    z: Vec<f64>,
    amplified: Vec<f64>,
    longs: Vec<usize>,
    shorts: Vec<usize>,
    long_candidates: Vec<usize>,
    short_candidates: Vec<usize>,
    /// Scratch: rank keys ([`rank_key`]) of the long and short candidates for the top-K selection.
    keyed: (Vec<u128>, Vec<u128>),
    scratch: Scratch,
    /// Per-symbol Kelly multipliers of the current bar.
    multiplier: Vec<f64>,
    router: RegimeRouter,
    /// Panel columns of `strategy.router.majors`.
    majors: Vec<usize>,
    corr_scratch: Vec<f64>,
    carry_book: Vec<f64>,
    carry_tradable: Vec<bool>,
    carry_hedge: Option<usize>,
    /// Scratch set for admission: symbols with a target or a position.
    active: SymbolSet,
}

impl Strategy {
    pub fn new(cfg: &Arc<Config>, symbols: &[String], bar_ms: i64, bars_per_year: f64) -> Self {
        let n_symbols = symbols.len();
        let s = &cfg.strategy;
        Self {
            cfg: Arc::clone(cfg),
            bars_per_year,
            bar_ms,
            target: vec![0.0; n_symbols],
            model_target: vec![0.0; n_symbols],
            regime: Regime::Xsmom,
            carry: s.carry.enabled.then(|| CarrySleeve::new(&s.carry, n_symbols)),
            meta: s.meta_label.enabled.then(|| MetaLabeler::new(&s.meta_label, n_symbols)),
            dispersion: RollingMedian::new(s.disp_lookback),
            eligible: vec![false; n_symbols],
            eligible_list: Vec::with_capacity(n_symbols),
            z: vec![f64::NAN; n_symbols],
            amplified: vec![f64::NAN; n_symbols],
            longs: Vec::with_capacity(n_symbols),
            shorts: Vec::with_capacity(n_symbols),
            long_candidates: Vec::with_capacity(n_symbols),
            short_candidates: Vec::with_capacity(n_symbols),
            keyed: (vec![0; n_symbols], vec![0; n_symbols]),
            scratch: Scratch::default(),
            multiplier: vec![1.0; n_symbols],
            router: RegimeRouter::new(&s.router),
            majors: s.router.majors.iter().filter_map(|m| symbols.iter().position(|s| s == m)).collect(),
            corr_scratch: Vec::new(),
            carry_book: vec![0.0; n_symbols],
            carry_tradable: vec![false; n_symbols],
            carry_hedge: symbols.iter().position(|sym| *sym == s.carry.hedge_symbol),
            active: SymbolSet::new(n_symbols),
        }
    }

    /// Bar data the sleeves keep besides the indicators: funding events (carry, meta-labeler) and
    /// the premium of close over mark (basis carry).
    pub fn observe(&mut self, bar: &BarRow<'_>) {
        if let Some(sleeve) = self.carry.as_mut() {
            sleeve.observe(bar.ts, ArrayView1::from(bar.funding_event), ArrayView1::from(bar.funding_rate));
            sleeve.observe_marks(bar.close, bar.mark_close);
        }
        if let Some(meta) = self.meta.as_mut() {
            meta.observe_funding(bar.ts, bar.funding_event, bar.funding_rate);
        }
    }

    /// Eligibility, z-scores and amplified signals at bar t; feeds the dispersion window every bar.
    pub fn cross_section(
        &mut self,
        t: usize,
        ind: &IndicatorState,
        risk: &RiskEngine,
        signals: Option<SignalSink<'_>>,
    ) -> Option<CrossSection> {
        self.compute_eligible(t, ind, risk);
        let cross = signal::cross_sectional_z_of(ind.momentum(), &self.eligible_list, &mut self.z);
        if self.cfg.strategy.k_mode == KMode::Dynamic {
            self.dispersion.push(cross.map_or(f64::NAN, |c| c.std));
        }
        let power = self.cfg.strategy.signal_power;
        // sign(z)·|z|^p is increasing in z, so ranks and signs come from z; the amplified value itself
        // is only needed to size `signal_inverse_vol` books (the diagnostics score theirs after the
        // run: [`super::SignalRecord::score`]).
        if self.cfg.sizing.weighting == Weighting::SignalInverseVol {
            for ((a, z), e) in self.amplified.iter_mut().zip(&self.z).zip(&self.eligible) {
                *a = if *e { signal::amplify(*z, power) } else { f64::NAN };
            }
        }
        if let Some(sink) = signals {
            sink.push(ind.momentum(), &self.z, &self.eligible);
        }
        cross
    }

    /// Eligible set E_t (strategy.md §2.3) into `self.eligible`: the bar's candidates (what the
    /// bars alone decide, [`IndicatorState::candidates`]) not held out by the risk engine, then
    /// the ADX filter.
    fn compute_eligible(&mut self, t: usize, ind: &IndicatorState, risk: &RiskEngine) {
        let s = &self.cfg.strategy;
        for ((eligible, candidate), hold_from) in self.eligible.iter_mut().zip(ind.candidates()).zip(risk.hold_from()) {
            *eligible = *candidate & (t >= *hold_from);
        }
        if let Some(adx) = ind.adx() {
            let f = &s.adx_filter;
            let adx_then = if f.require_rising { ind.adx_ago(f.rising_bars) } else { None };
            for (i, eligible) in self.eligible.iter_mut().enumerate() {
                let now = adx[i];
                *eligible &= now >= f.min_adx && (!f.require_rising || adx_then.is_some_and(|then| now > then[i]));
            }
        }
        compact_members(&self.eligible, &mut self.eligible_list);
    }

    /// Regime router (risk.md §7), fed every bar: average pairwise correlation of the eligible
    /// set's last `corr_lookback` returns and the majors' mean EMA slope. Runs after
    /// [`Engine::cross_section`], which lists the eligible set.
    pub fn update_regime(&mut self, ind: &IndicatorState) {
        let router_cfg = &self.cfg.strategy.router;
        if !router_cfg.enabled {
            return;
        }
        let window = ind.recent_returns(router_cfg.corr_lookback).expect("kept when the router is on");
        let correlation = regime::average_pairwise_correlation(window, &self.eligible_list, &mut self.corr_scratch);
        let slope = ind.slope().expect("computed when the router is on");
        let slopes: Vec<f64> = self.majors.iter().map(|&i| slope[i]).filter(|v| v.is_finite()).collect();
        let majors_slope = if slopes.is_empty() { f64::NAN } else { slopes.iter().sum::<f64>() / slopes.len() as f64 };
        self.regime = self.router.update(correlation, majors_slope);
    }

    /// Selection and sizing at bar t (strategy.md §2.4–§5); sets `self.target`, returns (K, vol scale).
    pub fn decide(
        &mut self,
        t: usize,
        equity: f64,
        cross: Option<CrossSection>,
        on: &DecisionInputs<'_>,
    ) -> (usize, f64) {
        self.target.fill(0.0);
        let s = &self.cfg.strategy;
        if self.regime == Regime::Tsmom {
            return self.decide_tsmom(t, equity, on);
        }
        let Some(cross) = cross else { return (0, 1.0) };
        let n_eligible = cross.count;
        let mut k = match s.k_mode {
            KMode::Static => s.k_max,
            KMode::Dynamic => {
                let ratio = self.dispersion.median().map_or(f64::NAN, |median| cross.std / median);
                signal::dynamic_k(ratio, s.k_min, s.k_max, s.d_lo, s.d_hi)
            }
        };
        if s.strict_k && n_eligible < 2 * k {
            return (0, 1.0);
        }
        k = k.min(n_eligible / 2);
        if k < s.k_min {
            return (0, 1.0);
        }
        let market_neutral = s.market_neutral;
        self.select_legs(k, on);
        if market_neutral && (self.longs.is_empty() || self.shorts.is_empty()) {
            return (0, 1.0);
        }
        if self.longs.is_empty() && self.shorts.is_empty() {
            return (0, 1.0);
        }
        let half = self.cfg.sizing.gross_leverage / 2.0;
        let vol_scale = self.size_legs(t, equity, self.cfg.sizing.weighting, [half, half], market_neutral, on);
        (k, vol_scale)
    }

    /// TSMOM book (risk.md §7): every eligible symbol with `|S| ≥ tsmom_min_abs_momentum` in the
    /// direction of its momentum, inverse-vol weights summing to `gross_leverage`, not market neutral.
    fn decide_tsmom(&mut self, t: usize, equity: f64, on: &DecisionInputs<'_>) -> (usize, f64) {
        let min_abs = self.cfg.strategy.router.tsmom_min_abs_momentum;
        let (momentum, sigma) = (on.ind.momentum(), on.ind.sigma());
        self.longs.clear();
        self.shorts.clear();
        let (mut long_raw, mut short_raw) = (0.0, 0.0);
        for i in (0..self.eligible.len()).filter(|&i| self.eligible[i]) {
            let m = momentum[i];
            if m.abs() < min_abs || m == 0.0 {
                continue;
            }
            if m > 0.0 {
                self.longs.push(i);
                long_raw += 1.0 / sigma[i];
            } else {
                self.shorts.push(i);
                short_raw += 1.0 / sigma[i];
            }
        }
        let total = long_raw + short_raw;
        if total <= 0.0 {
            return (0, 1.0);
        }
        let gross = self.cfg.sizing.gross_leverage;
        let legs = [gross * long_raw / total, gross * short_raw / total];
        let vol_scale = self.size_legs(t, equity, Weighting::InverseVol, legs, false, on);
        (0, vol_scale)
    }

    /// Size `self.longs` / `self.shorts` into `self.target` (strategy.md §5); returns the vol scale.
    fn size_legs(
        &mut self,
        t: usize,
        equity: f64,
        weighting: Weighting,
        leg_gross: [f64; 2],
        market_neutral: bool,
        on: &DecisionInputs<'_>,
    ) -> f64 {
        let lookback = self.cfg.sizing.vol_target.lookback;
        let kelly = on.risk.kelly_multipliers(&mut self.multiplier);
        let carry = self.carry_sleeve(t, on);
        let inputs = BookInputs {
            longs: &self.longs,
            shorts: &self.shorts,
            signal: &self.amplified,
            sigma: on.ind.sigma(),
            multiplier: kelly.then_some(&self.multiplier[..]),
            recent_returns: on.ind.recent_returns_or_zero(lookback),
            equity,
            bars_per_year: self.bars_per_year,
            market_neutral,
            weighting,
            leg_gross,
            carry: carry.then_some((&self.carry_book[..], self.cfg.strategy.carry.budget)),
        };
        let stats = sizing::size_book(&self.cfg.sizing, &inputs, &mut self.target, &mut self.scratch);
        // A partial take-profit keeps the rest of that position smaller until it is closed.
        on.risk.apply_size_factors(&mut self.target);
        stats.vol_scale
    }

    /// The carry sleeve of bar t into `self.carry_book` (false when off or without candidates).
    fn carry_sleeve(&mut self, t: usize, on: &DecisionInputs<'_>) -> bool {
        let Some(sleeve) = &self.carry else { return false };
        let (sigma, universe) = (on.ind.sigma(), on.ind.universe());
        for (i, tradable) in self.carry_tradable.iter_mut().enumerate() {
            *tradable = universe[i] && sigma[i].is_finite() && sigma[i] > 0.0 && on.risk.may_hold(t, i);
        }
        sleeve.book(&self.carry_tradable, sigma, self.cfg.sizing.gross_leverage, self.carry_hedge, &mut self.carry_book)
    }

    /// Longs and shorts for this bar into `self.longs` / `self.shorts` (strategy.md §4). Ranked by z
    /// (strongest first, ties by symbol order); longs need z > 0 and shorts z < 0 with `require_sign`.
    fn select_legs(&mut self, k: usize, on: &DecisionInputs<'_>) {
        let s = &self.cfg.strategy;
        let thr = s.regime_filter.slope_min_bps_per_day;
        let (require_sign, bands) = (s.require_sign, s.bands.enabled);
        let directional_slope = match (on.ind.slope(), s.regime_filter.mode) {
            (Some(slope), RegimeMode::Directional) if s.regime_filter.enabled => Some(slope),
            _ => None,
        };
        // The side rules of a candidate with score z: (may be long, may be short).
        let sides = |i: usize, z: f64| -> (bool, bool) {
            let (mut long, mut short) = (!require_sign || z > 0.0, !require_sign || z < 0.0);
            if let Some(slope) = &directional_slope {
                let slope = slope[i];
                long &= slope.is_nan() || slope >= thr;
                short &= slope.is_nan() || slope <= -thr;
            }
            (long, short)
        };
        self.longs.clear();
        self.shorts.clear();
        if bands {
            let (z_entry, z_exit) = (s.bands.z_entry, s.bands.z_exit);
            let buffer = s.bands.rank_buffer.unwrap_or(k);
            self.select_with_bands(k, buffer, z_entry, z_exit, on.positions, sides);
        } else if directional_slope.is_none() && require_sign {
            self.select_top_k(k, |_, z| (z > 0.0, z < 0.0));
        } else {
            self.select_top_k(k, sides);
        }
        // Without require_sign the two legs could meet when few are eligible: a symbol is in one
        // leg only. With it and no bands, the top K of a side have z > 0 (longs) or z < 0 (shorts).
        if !require_sign || bands {
            let long_leg = &self.longs;
            self.shorts.retain(|i| !long_leg.contains(i));
        }
    }

    /// The top K of each side: rank keys of the candidates by a branch-free compaction (the sides of
    /// z are a coin flip for the branch predictor), then one selection pass per side on the keys
    /// (z descending for longs, ascending for shorts; ties: the lower symbol first in the long leg,
    /// the higher in the short leg, as the bands' sort orders them).
    fn select_top_k(&mut self, k: usize, sides: impl Fn(usize, f64) -> (bool, bool)) {
        // One key slot per symbol, kept from run start: the compaction writes a slot for every
        // candidate, kept or not, so the buffers need no clearing (or resizing) per decision.
        let (long_keys, short_keys) = &mut self.keyed;
        let (mut n_longs, mut n_shorts) = (0, 0);
        for &i in &self.eligible_list {
            let z = self.z[i];
            let key = total_order_key(z);
            let (long, short) = sides(i, z);
            long_keys[n_longs] = rank_key(!key, i as u32);
            n_longs += long as usize;
            short_keys[n_shorts] = rank_key(key, !(i as u32));
            n_shorts += short as usize;
        }
        let n_longs = top_k(&mut long_keys[..n_longs], k);
        let n_shorts = top_k(&mut short_keys[..n_shorts], k);
        self.longs.extend(long_keys[..n_longs].iter().map(|&key| key as u32 as usize));
        self.shorts.extend(short_keys[..n_shorts].iter().map(|&key| !(key as u32) as usize));
    }

    /// Both sides in full rank order, then the bands' rules ([`pick_with_bands`]).
    fn select_with_bands(
        &mut self,
        k: usize,
        buffer: usize,
        z_entry: f64,
        z_exit: f64,
        positions: &[f64],
        sides: impl Fn(usize, f64) -> (bool, bool),
    ) {
        let z = &self.z;
        let mut longs = std::mem::take(&mut self.long_candidates);
        let mut shorts = std::mem::take(&mut self.short_candidates);
        longs.clear();
        shorts.clear();
        for &i in &self.eligible_list {
            let (long, short) = sides(i, z[i]);
            if long {
                longs.push(i);
            }
            if short {
                shorts.push(i);
            }
        }
        longs.sort_unstable_by(|a, b| z[*b].total_cmp(&z[*a]).then(a.cmp(b)));
        shorts.sort_unstable_by(|a, b| z[*a].total_cmp(&z[*b]).then(b.cmp(a)));
        let held = held_sides(positions);
        pick_with_bands(&longs, k, buffer, 1.0, z, &held, z_entry, z_exit, &mut self.longs);
        pick_with_bands(&shorts, k, buffer, -1.0, z, &held, z_entry, z_exit, &mut self.shorts);
        self.long_candidates = longs;
        self.short_candidates = shorts;
    }

    /// With the kill-switch in `freeze` mode no new risk is added: targets may only shrink toward 0.
    pub fn freeze_targets(&mut self, equity: f64, units: &[f64], last_price: &[f64]) {
        for i in 0..self.target.len() {
            let current = if equity > 0.0 { units[i] * last_price[i] / equity } else { 0.0 };
            let current = if current.is_finite() { current } else { 0.0 };
            let target = self.target[i];
            self.target[i] = if current == 0.0 || target.signum() != current.signum() {
                0.0
            } else if target.abs() > current.abs() {
                current
            } else {
                target
            };
        }
    }

    /// Entry rules at decision bar t (its bar opened at `ts`): an entry (from flat, or a flip) that
    /// anti-churn or the time-of-day gate forbids gets a target of 0, so the position only goes to
    /// flat or stays flat. The admitted target is what every fill model trades toward.
    pub fn admit(&mut self, t: usize, ts: i64, risk: &RiskEngine, ledger: &Ledger) {
        let mut active = std::mem::take(&mut self.active);
        active.assign_nonzero_or(&self.target, ledger.held());
        for i in active.iter() {
            let wanted = self.target[i];
            if wanted != 0.0 && risk.admissible_units(t, ts, i, ledger.units[i], wanted) == 0.0 {
                self.target[i] = 0.0;
            }
        }
        self.active = active;
    }

    /// The meta-labeler at decision bar t, after admission: new entries of the admitted target are
    /// consulted (and skipped or scaled once the model is active); a no-op when it is off.
    pub fn meta_label_entries(
        &mut self,
        t: usize,
        ts: i64,
        cross: Option<CrossSection>,
        ind: &IndicatorState,
        ledger: &Ledger,
    ) {
        let Some(meta) = self.meta.as_mut() else { return };
        let inputs = meta_label::DecisionInputs {
            ts,
            close_ts: ts + self.bar_ms,
            z: &self.z,
            sigma: ind.sigma(),
            slope: ind.slope(),
            adx: ind.adx(),
            dispersion: cross.map_or(f64::NAN, |c| c.std),
            units: &ledger.units,
        };
        meta.decide(t, &inputs, &ledger.round_trips, &mut self.target);
    }
}

/// Side currently held per symbol (+1, −1, 0), from positions (units or weights).
fn held_sides(positions: &[f64]) -> Vec<i8> {
    positions.iter().map(|p| p.signum() as i8 * (*p != 0.0) as i8).collect()
}

/// The indices of the `true` entries of `mask`, ascending, into `members` (branch-free: every index
/// is written, and the length only advances past members).
fn compact_members(mask: &[bool], members: &mut Vec<usize>) {
    members.clear();
    members.resize(mask.len(), 0);
    let mut len = 0;
    for (i, member) in mask.iter().enumerate() {
        members[len] = i;
        len += *member as usize;
    }
    members.truncate(len);
}

/// An integer whose order is `f64::total_cmp`'s (the same bit transform).
#[inline]
fn total_order_key(value: f64) -> i64 {
    let bits = value.to_bits() as i64;
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

/// One integer ordered as the pair (key, tie-break), the symbol's column in its low 32 bits: a
/// single comparison per step of the selection.
#[inline]
fn rank_key(key: i64, tie_break: u32) -> u128 {
    (((key as u64) ^ (1 << 63)) as u128) << 64 | tie_break as u128
}

/// Keeps the `k` smallest of `items` in `items[..k]`, ascending, and returns how many it kept (all
/// of them, as they come, when there are no more than `k`). One pass that keeps the best `k` so far sorted:
/// an item that does not beat the k-th costs one comparison. A leg has a few names and a side a few
/// dozen candidates, so this beats sorting or a quickselect (whose partitioning was most of a
/// decision's cost with 18–36 eligible symbols); the legs come out in rank order (sizing sums
/// over them in that order).
fn top_k<T: Copy + Ord>(items: &mut [T], k: usize) -> usize {
    if items.len() <= k {
        return items.len();
    }
    let mut kept = 0;
    for next in 0..items.len() {
        let item = items[next];
        if kept == k {
            if k == 0 || item >= items[k - 1] {
                continue;
            }
            kept -= 1;
        }
        // Insertion into the kept items, from the largest end (`next ≥ kept`: nothing unread is
        // overwritten).
        let mut slot = kept;
        while slot > 0 && item < items[slot - 1] {
            items[slot] = items[slot - 1];
            slot -= 1;
        }
        items[slot] = item;
        kept += 1;
    }
    k
}

/// Bands (strategy.md §4): held names stay while their sign is unchanged, `|z| ≥ z_exit` and their rank is
/// within `K + buffer`; other names enter, in rank order, only with `|z| ≥ z_entry` and while the
/// leg has fewer than K names.
#[allow(clippy::too_many_arguments)]
fn pick_with_bands(
    candidates: &[usize],
    k: usize,
    buffer: usize,
    side: f64,
    z: &[f64],
    held_side: &[i8],
    z_entry: f64,
    z_exit: f64,
    leg: &mut Vec<usize>,
) {
    for (rank, &i) in candidates.iter().enumerate() {
        let held = held_side[i] as f64 == side;
        if held && rank < k + buffer && z[i].signum() == side && z[i].abs() >= z_exit {
            leg.push(i);
        }
    }
    for &i in candidates {
        if leg.len() >= k {
            break;
        }
        let held = held_side[i] as f64 == side;
        if !held && z[i].abs() >= z_entry {
            leg.push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{rank_key, top_k, total_order_key};
    use proptest::prelude::*;

    #[test]
    fn the_rank_key_orders_as_total_cmp() {
        let values = [f64::NEG_INFINITY, -3.5, -1e-300, -0.0, 0.0, 1e-300, 2.0, 7.25, f64::INFINITY];
        for a in values {
            for b in values {
                assert_eq!(total_order_key(a).cmp(&total_order_key(b)), a.total_cmp(&b), "{a} vs {b}");
                for (i, j) in [(0u32, 1u32), (1, 0), (3, 3)] {
                    let pair = (total_order_key(a), i).cmp(&(total_order_key(b), j));
                    assert_eq!(rank_key(total_order_key(a), i).cmp(&rank_key(total_order_key(b), j)), pair);
                }
            }
        }
    }

    proptest! {
        /// The selection is the first `k` of the items sorted ascending, in that order; all items
        /// as they come when there are no more than `k`. With (key, symbol) items this is the rank
        /// order of a leg, ties by symbol.
        #[test]
        fn top_k_is_the_head_of_the_sorted_items(
            keys in prop::collection::vec(prop::sample::select(vec![-3i64, -1, 0, 2, 5, 9]), 0..48),
            k in 0usize..9,
        ) {
            let items: Vec<(i64, usize)> = keys.iter().enumerate().rev().map(|(i, &key)| (key, i)).collect();
            let mut want = items.clone();
            if items.len() > k {
                want.sort();
                want.truncate(k);
            }
            let mut got = items.clone();
            let kept = top_k(&mut got, k);
            got.truncate(kept);
            prop_assert_eq!(got, want);
        }
    }
}
