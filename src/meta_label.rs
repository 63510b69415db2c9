//! The meta-labeler (`strategy.meta_label`, docs/decisions.md "Meta-labeler"): a secondary model
//! that predicts whether a new entry of the primary model will close with net PnL > 0.
//!
//! At a decision bar the engine consults it for every *new entry* (a symbol whose admitted target
//! is non-zero while its position is flat or on the other side). Each entry gets a feature vector
//! built only from what is known at that bar's close; the features are remembered with the entry
//! and, when its round trip closes in the ledger, become a training row labelled `pnl > 0` (the
//! ledger's net PnL: fees, slippage and funding included). Every `refit_bars` bars, once
//! `min_train_trades` rows exist, an L2-regularised logistic regression is refit on all of them
//! (features standardised with the training set's mean and std), by Newton steps on the
//! log-loss ([`crate::logistic`]). Before the first fit the labeler is inactive: entries pass and `p` is NaN.
//!
//! Everything here is a function of the bars fed to the engine, so a live restart that re-steps the
//! stored history rebuilds the same model bit for bit ([`MetaLabeler::snapshot`] is what the live
//! state file keeps to check that).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::{MetaLabelConfig, MetaMode};
use crate::logistic::{fit_logistic_design, sigmoid};
use crate::model::RoundTrip;

/// Names of the features, in the order of [`Features`].
pub const FEATURE_NAMES: [&str; N_FEATURES] =
    ["abs_z", "leg_rank", "sigma", "dispersion", "slope", "adx", "funding", "hour_sin", "hour_cos", "hit_rate"];
pub const N_FEATURES: usize = 10;
pub type Features = [f64; N_FEATURES];

/// What the engine knows about one entry at its decision bar (all at or before that bar's close).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EntryContext {
    /// |z| of the cross-sectional score the primary model ranks on.
    pub abs_z: f64,
    /// Rank within its leg by |z|, 0 = strongest, 1 = weakest (0 for a leg of one).
    pub leg_rank: f64,
    pub sigma: f64,
    /// Cross-sectional std of momentum at the bar.
    pub dispersion: f64,
    /// The symbol's regime EMA slope (0 when the engine does not compute it).
    pub slope: f64,
    /// The symbol's ADX (0 when the ADX filter is off).
    pub adx: f64,
    /// Annualised funding rate of the symbol's last event (0 without funding data).
    pub funding: f64,
    /// Close time of the decision bar, epoch ms UTC.
    pub close_ts: i64,
    /// Share of the symbol's recent closed round trips that won, with a Beta(1, 1) prior.
    pub hit_rate: f64,
}

/// (sin, cos) of each hour of the day on the circle: computed once, not once per entry.
static HOURS_ON_THE_CIRCLE: std::sync::OnceLock<[(f64, f64); 24]> = std::sync::OnceLock::new();

fn hours_on_the_circle() -> [(f64, f64); 24] {
    std::array::from_fn(|hour| {
        let angle = std::f64::consts::TAU * hour as f64 / 24.0;
        (angle.sin(), angle.cos())
    })
}

impl EntryContext {
    /// The feature vector: non-finite inputs become 0, the hour of the close is encoded on the circle.
    pub fn features(&self) -> Features {
        let hour = (self.close_ts.rem_euclid(86_400_000) / 3_600_000) as usize;
        let (hour_sin, hour_cos) = HOURS_ON_THE_CIRCLE.get_or_init(hours_on_the_circle)[hour];
        self.features_at(hour_sin, hour_cos)
    }

    /// [`EntryContext::features`] with the hour of `close_ts` already on the circle.
    fn features_at(&self, hour_sin: f64, hour_cos: f64) -> Features {
        let raw = [
            self.abs_z,
            self.leg_rank,
            self.sigma,
            self.dispersion,
            self.slope,
            self.adx,
            self.funding,
            hour_sin,
            hour_cos,
            self.hit_rate,
        ];
        raw.map(|v| if v.is_finite() { v } else { 0.0 })
    }
}

/// A fitted model in the original feature units: `p = σ(b + w · (x − mean) / std)`, kept also
/// as one linear predictor on the raw features (`p = σ(offset + slope · x)`) for scoring.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    coef: Features,
    intercept: f64,
    mean: Features,
    std: Features,
    slope: Features,
    offset: f64,
}

impl Model {
    fn new(coef: Features, intercept: f64, mean: Features, std: Features) -> Self {
        let slope: Features = std::array::from_fn(|k| coef[k] / std[k]);
        let offset = intercept - (0..N_FEATURES).map(|k| slope[k] * mean[k]).sum::<f64>();
        Self { coef, intercept, mean, std, slope, offset }
    }

    /// The parameters (coefficients, then the intercept) of the same linear predictor on features
    /// standardised with `mean` and `std`.
    fn restandardised(&self, mean: &Features, std: &Features) -> Vec<f64> {
        let mut p: Vec<f64> = (0..N_FEATURES).map(|k| self.coef[k] * std[k] / self.std[k]).collect();
        let shift: f64 = (0..N_FEATURES).map(|k| self.coef[k] * (mean[k] - self.mean[k]) / self.std[k]).sum();
        p.push(self.intercept + shift);
        p
    }

    fn predict(&self, x: &Features) -> f64 {
        sigmoid(self.offset + (0..N_FEATURES).map(|k| self.slope[k] * x[k]).sum::<f64>())
    }
}

/// Column means and stds (population) of row-major rows; a constant column gets std 1.
fn standardisation(rows: &[f64]) -> (Features, Features) {
    let n = (rows.len() / N_FEATURES) as f64;
    let mut mean = [0.0; N_FEATURES];
    for row in rows.chunks_exact(N_FEATURES) {
        for k in 0..N_FEATURES {
            mean[k] += row[k];
        }
    }
    mean = mean.map(|s| s / n);
    let mut var = [0.0; N_FEATURES];
    for row in rows.chunks_exact(N_FEATURES) {
        for k in 0..N_FEATURES {
            var[k] += (row[k] - mean[k]).powi(2);
        }
    }
    let std = var.map(|v| {
        let s = (v / n).sqrt();
        if s > 1e-12 {
            s
        } else {
            1.0
        }
    });
    (mean, std)
}

/// The model's state as the live state file keeps it (NaN-free).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaSnapshot {
    /// Training rows (closed round trips with entry features) so far.
    pub n_train: usize,
    /// Bar (engine step count) of the last fit.
    pub last_refit_bar: Option<usize>,
    /// Empty until the first fit.
    pub coef: Vec<f64>,
    pub intercept: f64,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

/// An entry the labeler skipped (`filter`: `p < threshold`; `size`: scaled to 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetaSkip {
    pub ts: i64,
    pub symbol: usize,
    /// +1 long, −1 short.
    pub side: i8,
    pub p: f64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    side: i8,
    features: Features,
    p: f64,
}

/// What the engine's decision knows, per symbol (slices of the panel's width).
pub struct DecisionInputs<'a> {
    pub ts: i64,
    pub close_ts: i64,
    pub z: &'a [f64],
    pub sigma: &'a [f64],
    pub slope: Option<&'a [f64]>,
    pub adx: Option<&'a [f64]>,
    pub dispersion: f64,
    /// Positions after everything this bar did before the decision.
    pub units: &'a [f64],
}

/// The meta-labeler's state: training set, model, and the features of open and decided entries.
#[derive(Debug, Clone)]
pub struct MetaLabeler {
    cfg: MetaLabelConfig,
    /// Training rows, row-major `n × N_FEATURES`, and their labels (1 = the trip won).
    rows: Vec<f64>,
    labels: Vec<f64>,
    model: Option<Model>,
    last_refit_bar: Option<usize>,
    /// Training rows the model was fitted on, and how many fits were solved.
    rows_fitted: usize,
    solves: usize,
    /// Features of the entry that opened each symbol's current position.
    open: Vec<Option<Entry>>,
    /// Features of the last decision's entry per symbol (moved to `open` when it fills).
    decided: Vec<Option<Entry>>,
    /// Outcomes of each symbol's last `hit_rate_trips` round trips, and how many of them won.
    hits: Vec<VecDeque<bool>>,
    wins: Vec<usize>,
    /// (ts, rate) of each symbol's last two funding events, and the funding feature they give.
    funding: Vec<[(i64, f64); 2]>,
    funding_feature: Vec<f64>,
    /// Each symbol's hit-rate feature, updated as its trips close.
    hit_rate: Vec<f64>,
    /// Round trips of the ledger already absorbed.
    absorbed: usize,
    skipped: Vec<MetaSkip>,
    /// Scratch: (symbol, p) of this decision's skipped entries.
    skipped_now: Vec<(usize, f64)>,
    /// Scratch: (symbol, p) of this decision's consulted entries.
    consulted: Vec<(usize, f64)>,
    /// Scratch: the members of each leg (long, short: symbols with a non-zero target) with their
    /// strength (|z|, 0 when not finite), and this decision's new entries.
    legs: [Vec<(usize, f64)>; 2],
    entries: Vec<usize>,
    /// Scratch: each leg member's rank in its leg, and the sort keys that give it.
    rank_of: Vec<f64>,
    rank_keys: Vec<u128>,
}

impl MetaLabeler {
    pub fn new(cfg: &MetaLabelConfig, n_symbols: usize) -> Self {
        Self {
            cfg: cfg.clone(),
            rows: Vec::new(),
            labels: Vec::new(),
            model: None,
            last_refit_bar: None,
            rows_fitted: 0,
            solves: 0,
            open: vec![None; n_symbols],
            decided: vec![None; n_symbols],
            hits: vec![VecDeque::new(); n_symbols],
            wins: vec![0; n_symbols],
            funding: vec![[(0, f64::NAN); 2]; n_symbols],
            funding_feature: vec![0.0; n_symbols],
            hit_rate: vec![0.5; n_symbols],
            absorbed: 0,
            skipped: Vec::new(),
            skipped_now: Vec::new(),
            consulted: Vec::new(),
            legs: [Vec::with_capacity(n_symbols), Vec::with_capacity(n_symbols)],
            entries: Vec::with_capacity(n_symbols),
            rank_of: vec![0.0; n_symbols],
            rank_keys: Vec::with_capacity(n_symbols),
        }
    }

    /// Record the funding events of the bar that opened at `ts`.
    pub fn observe_funding(&mut self, ts: i64, events: &[bool], rates: &[f64]) {
        // Most bars have no funding event: one test instead of a branch per symbol (an OR over the
        // flags, which vectorises; `contains` stops at the first and tests each flag).
        if !events.iter().fold(false, |any, &event| any | event) {
            return;
        }
        for (((recent, feature), event), rate) in
            self.funding.iter_mut().zip(&mut self.funding_feature).zip(events).zip(rates)
        {
            if *event {
                *recent = [recent[1], (ts, *rate)];
                *feature = funding_feature(recent);
            }
        }
    }

    /// Take in the round trips the ledger closed since the last call: each one updates its symbol's
    /// hit rate and, when its entry's features are known, becomes a training row.
    pub fn absorb(&mut self, trips: &[RoundTrip]) {
        for trip in &trips[self.absorbed.min(trips.len())..] {
            let won = trip.pnl > 0.0;
            let (hits, wins) = (&mut self.hits[trip.symbol], &mut self.wins[trip.symbol]);
            if hits.len() == self.cfg.hit_rate_trips {
                *wins -= hits.pop_front().is_some_and(|w| w) as usize;
            }
            hits.push_back(won);
            *wins += won as usize;
            self.hit_rate[trip.symbol] = (*wins as f64 + 1.0) / (hits.len() as f64 + 2.0);
            if let Some(entry) = self.open[trip.symbol].take().filter(|e| e.side == trip.side) {
                self.rows.extend_from_slice(&entry.features);
                self.labels.push(won as u8 as f64);
            }
        }
        self.absorbed = trips.len();
    }

    /// Refit at bar t when enough rows exist and `refit_bars` have passed since the last fit.
    fn maybe_refit(&mut self, t: usize) {
        if self.labels.len() < self.cfg.min_train_trades {
            return;
        }
        if self.last_refit_bar.is_some_and(|last| t < last + self.cfg.refit_bars) {
            return;
        }
        self.last_refit_bar = Some(t);
        // The same rows give the same problem: its optimum is the model already held (a re-solve
        // from it would only move the last bits within Newton's tolerance).
        if self.model.is_some() && self.rows_fitted == self.labels.len() {
            return;
        }
        self.rows_fitted = self.labels.len();
        self.solves += 1;
        let (mean, std) = standardisation(&self.rows);
        // The standardised design matrix, with the intercept's column of ones.
        let mut design = Vec::with_capacity(self.labels.len() * (N_FEATURES + 1));
        for raw in self.rows.chunks_exact(N_FEATURES) {
            design.extend((0..N_FEATURES).map(|k| (raw[k] - mean[k]) / std[k]));
            design.push(1.0);
        }
        // Started from the previous model, re-expressed in the new standardisation (the same linear
        // predictor): a refit adds a few rows to many, so Newton starts next to the optimum.
        let init = self.model.as_ref().map(|m| m.restandardised(&mean, &std));
        // A failed fit keeps the previous model (it cannot fail on finite rows and c > 0).
        let fit = fit_logistic_design(&design, N_FEATURES + 1, &self.labels, self.cfg.c, init.as_deref());
        if let Ok(fit) = fit {
            let coef: Features = fit.coef.try_into().expect("N_FEATURES coefficients");
            self.model = Some(Model::new(coef, fit.intercept, mean, std));
        }
    }

    /// The decision of bar t: refit if due, then consult the model for every new entry of `target`
    /// (admitted weights) and apply the mode. Entries are remembered with their features and p
    /// (NaN while inactive) until they fill; an entry `filter` skips cannot fill and is not kept.
    pub fn decide(&mut self, t: usize, inputs: &DecisionInputs<'_>, trips: &[RoundTrip], target: &mut [f64]) {
        self.absorb(trips);
        self.maybe_refit(t);
        // Only the last decision's entries were set.
        for &(i, _) in &self.consulted {
            self.decided[i] = None;
        }
        self.consulted.clear();
        // One pass over the target: the members of each leg (non-zero weights) with their strength,
        // and the new entries (members not already held on the same side).
        let [longs, shorts] = &mut self.legs;
        longs.clear();
        shorts.clear();
        let entries = &mut self.entries;
        entries.clear();
        for (i, (&weight, &units)) in target.iter().zip(inputs.units).enumerate() {
            if weight == 0.0 {
                continue;
            }
            let z = inputs.z[i];
            let member = (i, if z.is_finite() { z.abs() } else { 0.0 });
            if weight < 0.0 {
                shorts.push(member);
            } else {
                longs.push(member);
            }
            if side_of(weight) != side_of(units) {
                entries.push(i);
            }
        }
        if entries.is_empty() {
            return;
        }
        for leg in &self.legs {
            leg_ranks(leg, &mut self.rank_keys, &mut self.rank_of);
        }
        // What every entry of this decision shares: the hour of the close and the dispersion.
        let hour = (inputs.close_ts.rem_euclid(86_400_000) / 3_600_000) as usize;
        let (hour_sin, hour_cos) = HOURS_ON_THE_CIRCLE.get_or_init(hours_on_the_circle)[hour];
        let filter = (self.cfg.mode == MetaMode::Filter).then_some(self.cfg.threshold);
        for &i in self.entries.iter() {
            let side = side_of(target[i]);
            let context = EntryContext {
                abs_z: inputs.z[i].abs(),
                leg_rank: self.rank_of[i],
                sigma: inputs.sigma[i],
                dispersion: inputs.dispersion,
                slope: inputs.slope.map_or(0.0, |s| s[i]),
                adx: inputs.adx.map_or(0.0, |a| a[i]),
                funding: self.funding_feature[i],
                close_ts: inputs.close_ts,
                hit_rate: self.hit_rate[i],
            };
            let features = context.features_at(hour_sin, hour_cos);
            let p = self.model.as_ref().map_or(f64::NAN, |m| m.predict(&features));
            // `filter` applied here, as `apply_mode` would (in symbol order).
            if filter.is_some_and(|threshold| p < threshold) {
                target[i] = 0.0;
                self.skipped.push(MetaSkip { ts: inputs.ts, symbol: i, side, p });
                continue;
            }
            self.decided[i] = Some(Entry { side, features, p });
            self.consulted.push((i, p));
        }
        if filter.is_some() {
            return;
        }
        let mut skipped = std::mem::take(&mut self.skipped_now);
        apply_mode(self.cfg.mode, self.cfg.threshold, &self.consulted, target, &mut skipped);
        for &(symbol, p) in &skipped {
            let side = self.decided[symbol].map_or(0, |e| e.side);
            self.skipped.push(MetaSkip { ts: inputs.ts, symbol, side, p });
        }
        self.skipped_now = skipped;
    }

    /// A fill of `symbol` left it at `units` from `before`: when it opened a position (from flat or
    /// through zero) the decided entry's features go with it; returns the entry's p for the fill
    /// (NaN when the fill is no consulted entry). Absorbs the trips the fill closed first.
    pub fn on_fill(&mut self, symbol: usize, before: f64, units: f64, trips: &[RoundTrip]) -> f64 {
        self.absorb(trips);
        let side = side_of(units);
        if side == 0 || side == side_of(before) {
            return f64::NAN;
        }
        let entry = self.decided[symbol].filter(|e| e.side == side);
        self.open[symbol] = entry;
        entry.map_or(f64::NAN, |e| e.p)
    }

    /// Whether a model has been fitted.
    pub fn active(&self) -> bool {
        self.model.is_some()
    }

    pub fn n_train(&self) -> usize {
        self.labels.len()
    }

    /// Room for `n` more skipped entries (the engine sizes its outputs once).
    pub fn reserve_skipped(&mut self, n: usize) {
        self.skipped.reserve(n);
    }

    /// The entries skipped so far.
    pub fn skipped(&self) -> &[MetaSkip] {
        &self.skipped
    }

    pub fn into_skipped(self) -> Vec<MetaSkip> {
        self.skipped
    }

    pub fn snapshot(&self) -> MetaSnapshot {
        let (coef, intercept, mean, std) = match &self.model {
            Some(m) => (m.coef.to_vec(), m.intercept, m.mean.to_vec(), m.std.to_vec()),
            None => (Vec::new(), 0.0, Vec::new(), Vec::new()),
        };
        MetaSnapshot { n_train: self.labels.len(), last_refit_bar: self.last_refit_bar, coef, intercept, mean, std }
    }
}

/// The last event's rate annualised at the spacing of the last two events (0 before two).
fn funding_feature(recent: &[(i64, f64); 2]) -> f64 {
    let [(before, _), (last, rate)] = *recent;
    let spacing = (last - before) as f64;
    if rate.is_finite() && spacing > 0.0 && before > 0 {
        rate * crate::timeframe::MS_PER_YEAR as f64 / spacing
    } else {
        0.0
    }
}

#[inline]
fn side_of(value: f64) -> i8 {
    (value > 0.0) as i8 - (value < 0.0) as i8
}

/// Rank of each member of a leg (`leg`: the symbols whose target has its sign, with their strength
/// |z|, 0 when not finite) into `rank_of[symbol]`: strongest first, ties by symbol order,
/// normalised to 0..1 (0 for a leg of one). Sorted once per leg on integer keys (a strength is
/// finite and ≥ 0, so its bits order as it does); `keys` is scratch.
fn leg_ranks(leg: &[(usize, f64)], keys: &mut Vec<u128>, rank_of: &mut [f64]) {
    keys.clear();
    keys.extend(leg.iter().map(|&(symbol, strength)| (!strength.to_bits() as u128) << 64 | symbol as u128));
    keys.sort_unstable();
    let last = (leg.len().max(2) - 1) as f64;
    for (ahead, key) in keys.iter().enumerate() {
        rank_of[*key as u64 as usize] = ahead as f64 / last;
    }
}

/// Apply the mode to the consulted entries `(symbol, p)` of `target`; the skipped ones into `skipped`
/// (emptied first), in symbol order.
/// NaN p (inactive) passes. `filter` zeroes entries with `p < threshold`; `size` scales entries by
/// `clamp(2p − 1, 0, 1)` and then rescales each leg that had a scaled entry back to its gross.
pub fn apply_mode(
    mode: MetaMode,
    threshold: f64,
    consulted: &[(usize, f64)],
    target: &mut [f64],
    skipped: &mut Vec<(usize, f64)>,
) {
    skipped.clear();
    match mode {
        MetaMode::Filter => {
            for &(i, p) in consulted {
                if p < threshold {
                    target[i] = 0.0;
                    skipped.push((i, p));
                }
            }
        }
        MetaMode::Size => {
            for side in [1i8, -1] {
                let scaled: Vec<(usize, f64)> =
                    consulted.iter().copied().filter(|&(i, p)| !p.is_nan() && side_of(target[i]) == side).collect();
                if scaled.is_empty() {
                    continue;
                }
                let leg_gross =
                    |target: &[f64]| -> f64 { target.iter().filter(|w| side_of(**w) == side).map(|w| w.abs()).sum() };
                let before = leg_gross(target);
                let leg: Vec<usize> = (0..target.len()).filter(|&j| side_of(target[j]) == side).collect();
                for &(i, p) in &scaled {
                    target[i] *= (2.0 * p - 1.0).clamp(0.0, 1.0);
                    if target[i] == 0.0 {
                        skipped.push((i, p));
                    }
                }
                let after: f64 = leg.iter().map(|&j| target[j].abs()).sum();
                if after > 0.0 {
                    let rescale = before / after;
                    for &j in &leg {
                        target[j] *= rescale;
                    }
                }
            }
            skipped.sort_unstable_by_key(|(i, _)| *i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_encode_the_hour_on_the_circle_and_zero_non_finite() {
        let ctx = EntryContext {
            abs_z: 1.5,
            leg_rank: 0.0,
            sigma: f64::NAN,
            dispersion: 0.2,
            slope: 0.0,
            adx: 0.0,
            funding: 0.1,
            close_ts: 6 * 3_600_000,
            hit_rate: 0.5,
        };
        let f = ctx.features();
        assert_eq!(f[2], 0.0);
        assert!((f[7] - 1.0).abs() < 1e-15 && f[8].abs() < 1e-15, "06:00 is a quarter turn");
    }

    #[test]
    fn restandardised_parameters_give_the_same_predictor() {
        let model = Model::new(
            [0.5, -1.0, 0.25, 0.0, 2.0, 0.1, -0.3, 0.7, 0.2, 1.5],
            -0.4,
            [0.1; N_FEATURES],
            [2.0; N_FEATURES],
        );
        let (mean, std) = ([0.3; N_FEATURES], [0.5; N_FEATURES]);
        let p = model.restandardised(&mean, &std);
        let moved = Model::new(p[..N_FEATURES].try_into().unwrap(), p[N_FEATURES], mean, std);
        let x = [1.0, 0.5, -2.0, 0.3, 0.0, 4.0, -1.0, 0.2, 0.9, 0.6];
        assert!((model.predict(&x) - moved.predict(&x)).abs() < 1e-12);
    }

    #[test]
    fn leg_rank_orders_by_strength() {
        let ranks = |leg: &[(usize, f64)]| {
            let mut rank_of = vec![f64::NAN; 10];
            leg_ranks(leg, &mut Vec::new(), &mut rank_of);
            rank_of
        };
        // Long leg: symbols 0, 1, 3 with |z| 1, 2, 0.5; short leg: symbol 2 alone.
        let long = ranks(&[(0, 1.0), (1, 2.0), (3, 0.5)]);
        assert_eq!([long[1], long[0], long[3]], [0.0, 0.5, 1.0]);
        assert!(long[2].is_nan(), "only members are ranked");
        assert_eq!(ranks(&[(2, 1.0)])[2], 0.0);
        // Ties go by symbol order; 0 ranks below every positive strength.
        let tied = ranks(&[(4, 1.0), (7, 1.0), (9, 1.0), (5, 0.0), (8, 3.0)]);
        assert_eq!([8, 4, 7, 9, 5].map(|i| tied[i]), [0.0, 0.25, 0.5, 0.75, 1.0]);
    }

    #[test]
    fn filter_skips_low_p_and_passes_inactive() {
        let mut target = [0.25, 0.25, -0.25, -0.25];
        let mut skipped = vec![(9, 0.0)];
        apply_mode(MetaMode::Filter, 0.5, &[(0, 0.4), (1, f64::NAN), (2, 0.6)], &mut target, &mut skipped);
        assert_eq!(skipped, vec![(0, 0.4)]);
        assert_eq!(target, [0.0, 0.25, -0.25, -0.25]);
    }

    #[test]
    fn size_scales_entries_and_keeps_the_leg_gross() {
        // Long leg: entry 0 (p = 0.75 → ×0.5) and held 1; short leg: entry 2 scaled to 0 (p = 0.4).
        let mut target = [0.3, 0.2, -0.25, -0.25];
        let mut skipped = Vec::new();
        apply_mode(MetaMode::Size, 0.5, &[(0, 0.75), (2, 0.4)], &mut target, &mut skipped);
        assert_eq!(skipped, vec![(2, 0.4)]);
        assert!((target[0] + target[1] - 0.5).abs() < 1e-12);
        assert!((target[0] / target[1] - 0.15 / 0.2).abs() < 1e-12);
        assert_eq!(target[2], 0.0);
        assert!((target[3] + 0.5).abs() < 1e-12);
    }

    #[test]
    fn trips_become_rows_only_with_their_entry_features() {
        let cfg = MetaLabelConfig { min_train_trades: 1, ..MetaLabelConfig::default() };
        let mut labeler = MetaLabeler::new(&cfg, 2);
        let units = [0.0, 0.0];
        let inputs = DecisionInputs {
            ts: 0,
            close_ts: 3_600_000,
            z: &[1.0, -1.0],
            sigma: &[0.01, 0.02],
            slope: None,
            adx: None,
            dispersion: 0.5,
            units: &units,
        };
        let mut target = [0.5, -0.5];
        labeler.decide(0, &inputs, &[], &mut target);
        assert!(!labeler.active());
        assert!(labeler.on_fill(0, 0.0, 1.0, &[]).is_nan(), "inactive: p is NaN");
        let trip = |symbol: usize, side: i8, pnl: f64| RoundTrip {
            symbol,
            side,
            entry_ts: 0,
            exit_ts: 1,
            entry_price: 1.0,
            exit_price: 1.0,
            qty: 1.0,
            pnl,
            ret: pnl,
            bars_held: 1,
            exit_reason: crate::model::FillReason::Rebalance,
        };
        // Symbol 1 never filled: its trip has no features and only feeds the hit rate.
        let trips = vec![trip(0, 1, 2.0), trip(1, -1, -1.0)];
        labeler.absorb(&trips);
        assert_eq!(labeler.n_train(), 1);
        assert_eq!(labeler.hit_rate[0], 2.0 / 3.0);
        assert_eq!(labeler.hit_rate[1], 1.0 / 3.0);
    }

    #[test]
    fn a_due_refit_on_unchanged_rows_keeps_the_model() {
        // Threshold 0: nothing is skipped, every entry fills and becomes a row.
        let cfg = MetaLabelConfig { min_train_trades: 2, refit_bars: 1, threshold: 0.0, ..MetaLabelConfig::default() };
        let mut labeler = MetaLabeler::new(&cfg, 2);
        let (flat, z, sigma) = ([0.0, 0.0], [1.0, -1.0], [0.01, 0.02]);
        let inputs = |close_ts| DecisionInputs {
            ts: close_ts - 3_600_000,
            close_ts,
            z: &z,
            sigma: &sigma,
            slope: None,
            adx: None,
            dispersion: 0.5,
            units: &flat,
        };
        let trip = |symbol: usize, side: i8, pnl: f64| RoundTrip {
            symbol,
            side,
            entry_ts: 0,
            exit_ts: 1,
            entry_price: 1.0,
            exit_price: 1.0,
            qty: 1.0,
            pnl,
            ret: pnl,
            bars_held: 1,
            exit_reason: crate::model::FillReason::Rebalance,
        };
        // Each round: both symbols enter, fill and close (0 wins, 1 loses): two rows per round.
        let round = |labeler: &mut MetaLabeler, trips: &mut Vec<RoundTrip>, t: usize| {
            labeler.decide(t, &inputs(3_600_000 * (t as i64 + 1)), trips, &mut [0.5, -0.5]);
            labeler.on_fill(0, 0.0, 1.0, trips);
            labeler.on_fill(1, 0.0, -1.0, trips);
            trips.extend([trip(0, 1, 1.0), trip(1, -1, -1.0)]);
            labeler.absorb(trips);
        };
        let mut trips = Vec::new();
        round(&mut labeler, &mut trips, 0);
        round(&mut labeler, &mut trips, 1);
        // Bar 1 fitted the first round's rows; bar 2 fits all four.
        labeler.decide(2, &inputs(3 * 3_600_000), &trips, &mut [0.0, 0.0]);
        assert_eq!((labeler.n_train(), labeler.solves), (4, 2));
        let fitted = labeler.snapshot();
        // Bars 3 and 4 are due but no trip closed: the model stays, the schedule moves on.
        labeler.decide(3, &inputs(4 * 3_600_000), &trips, &mut [0.0, 0.0]);
        labeler.decide(4, &inputs(5 * 3_600_000), &trips, &mut [0.0, 0.0]);
        assert_eq!(labeler.solves, 2);
        assert_eq!(labeler.snapshot(), MetaSnapshot { last_refit_bar: Some(4), ..fitted.clone() });
        // New rows make the next due refit solve again.
        round(&mut labeler, &mut trips, 5);
        labeler.decide(6, &inputs(7 * 3_600_000), &trips, &mut [0.0, 0.0]);
        assert_eq!((labeler.n_train(), labeler.solves), (6, 3));
        assert_ne!(labeler.snapshot().coef, fitted.coef);
    }
}
