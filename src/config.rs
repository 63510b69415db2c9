//! The configuration tree of the design pages, with their defaults (interfaces.md "Config key paths").
//!
//! YAML in and out through serde. Unknown keys are rejected with their key path; values are checked
//! against documented ranges by [`Config::validate`]; dotted overrides (`strategy.k_max=4`,
//! `strategy.lookbacks[0]=6`) edit the tree before it is validated again.

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::error::{Error, Result};
use crate::model::BPS;
use crate::timeframe::Timeframe;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data: DataConfig,
    pub universe: UniverseConfig,
    pub strategy: StrategyConfig,
    pub sizing: SizingConfig,
    pub risk: RiskConfig,
    pub costs: CostsConfig,
    pub backtest: BacktestConfig,
    pub execution: ExecutionConfig,
    pub live: LiveConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnInvalid {
    /// Refuse data with validation errors.
    Reject,
    /// Drop the offending rows (later duplicates, off-grid rows, bad OHLC rows) and go on.
    Drop,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    pub timeframe: String,
    pub on_invalid: OnInvalid,
    /// A spike is a |log return| above this multiple of the rolling median |log return|.
    pub spike_mads: f64,
    /// Returns in the spike detector's rolling median.
    pub spike_window: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        let spike = crate::data::SpikeRule::default();
        Self {
            timeframe: "1h".into(),
            on_invalid: OnInvalid::Reject,
            spike_mads: spike.mads,
            spike_window: spike.window,
        }
    }
}

impl DataConfig {
    /// The spike detector's thresholds of this config.
    pub fn spike_rule(&self) -> crate::data::SpikeRule {
        crate::data::SpikeRule { mads: self.spike_mads, window: self.spike_window }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UniverseConfig {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub min_price: f64,
    pub min_quote_volume_24h: f64,
    /// 0 = no limit.
    pub max_symbols: usize,
    pub universe_refresh_bars: usize,
}

impl Default for UniverseConfig {
    fn default() -> Self {
        Self {
            include: vec![],
            exclude: vec![],
            min_price: 0.05,
            min_quote_volume_24h: 0.0,
            max_symbols: 36,
            universe_refresh_bars: 24,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KMode {
    Static,
    Dynamic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegimeMode {
    Abs,
    Up,
    Directional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShortHistory {
    /// Too little history for the slope fails the filter (strategy.md §3).
    Fail,
    /// Too little history passes (the xsmom-bot v1 behaviour).
    Pass,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StrategyConfig {
    pub lookbacks: Vec<usize>,
    pub lookback_weights: Vec<f64>,
    /// Divide the weighted sum by `Σ w` (strategy.md §2.2). z-scores and ranks do not depend on it.
    pub normalise_momentum: bool,
    pub signal_power: f64,
    pub vol_lookback: usize,
    /// Valid closes needed before a symbol can trade; `null` = `max(lookbacks) + vol_lookback`.
    pub min_history_bars: Option<usize>,
    pub k_mode: KMode,
    pub k_min: usize,
    pub k_max: usize,
    pub disp_lookback: usize,
    pub d_lo: f64,
    pub d_hi: f64,
    pub require_sign: bool,
    pub market_neutral: bool,
    /// Flat unless at least `2·K` symbols are eligible (instead of shrinking K to `|E|/2`).
    pub strict_k: bool,
    pub bands: BandsConfig,
    pub regime_filter: RegimeFilterConfig,
    pub adx_filter: AdxFilterConfig,
    pub router: RouterConfig,
    pub carry: CarryConfig,
    pub meta_label: MetaLabelConfig,
}

impl Default for StrategyConfig {
    fn default() -> Self {
        Self {
            lookbacks: vec![12, 24, 48, 96],
            lookback_weights: vec![0.4, 0.3, 0.2, 0.1],
            normalise_momentum: true,
            signal_power: 1.35,
            vol_lookback: 96,
            min_history_bars: None,
            k_mode: KMode::Dynamic,
            k_min: 2,
            k_max: 6,
            disp_lookback: 168,
            d_lo: 0.8,
            d_hi: 1.5,
            require_sign: true,
            market_neutral: true,
            strict_k: false,
            bands: BandsConfig::default(),
            regime_filter: RegimeFilterConfig::default(),
            adx_filter: AdxFilterConfig::default(),
            router: RouterConfig::default(),
            carry: CarryConfig::default(),
            meta_label: MetaLabelConfig::default(),
        }
    }
}

impl StrategyConfig {
    pub fn max_lookback(&self) -> usize {
        self.lookbacks.iter().copied().max().unwrap_or(0)
    }
    pub fn min_history(&self) -> usize {
        self.min_history_bars.unwrap_or(self.max_lookback() + self.vol_lookback)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BandsConfig {
    pub enabled: bool,
    pub z_entry: f64,
    pub z_exit: f64,
    /// Extra ranks a held symbol may fall behind K before it leaves; `null` = K.
    pub rank_buffer: Option<usize>,
}

impl Default for BandsConfig {
    fn default() -> Self {
        Self { enabled: false, z_entry: 0.65, z_exit: 0.45, rank_buffer: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegimeFilterConfig {
    pub enabled: bool,
    pub ema_len: usize,
    pub slope_min_bps_per_day: f64,
    pub mode: RegimeMode,
    pub short_history: ShortHistory,
}

impl Default for RegimeFilterConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ema_len: 200,
            slope_min_bps_per_day: 3.5,
            mode: RegimeMode::Abs,
            short_history: ShortHistory::Fail,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdxFilterConfig {
    pub enabled: bool,
    pub adx_len: usize,
    pub min_adx: f64,
    pub require_rising: bool,
    pub rising_bars: usize,
}

impl Default for AdxFilterConfig {
    fn default() -> Self {
        Self { enabled: false, adx_len: 14, min_adx: 28.0, require_rising: false, rising_bars: 3 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    pub enabled: bool,
    pub corr_lookback: usize,
    pub corr_threshold: f64,
    pub majors: Vec<String>,
    pub majors_slope_min: f64,
    pub confirm_bars: usize,
    pub tsmom_min_abs_momentum: f64,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            corr_lookback: 48,
            corr_threshold: 0.5,
            majors: vec!["BTCUSDT".into(), "ETHUSDT".into()],
            majors_slope_min: 2.0,
            confirm_bars: 3,
            tsmom_min_abs_momentum: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CarryConfig {
    pub enabled: bool,
    pub budget: f64,
    pub funding_lookback: usize,
    pub min_funding_ann: f64,
    pub sign_stability_k: usize,
    pub hedge: bool,
    pub hedge_symbol: String,
    /// Weight of the basis term `−premium_ema` in the carry score (annualised-funding units per unit
    /// of premium; 0 = funding only, the sleeve as before).
    pub basis_weight: f64,
    /// EMA span (bars) of the premium `close / mark_close − 1`.
    pub basis_ema_bars: usize,
}

impl Default for CarryConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            budget: 0.2,
            funding_lookback: 21,
            min_funding_ann: 0.10,
            sign_stability_k: 5,
            hedge: true,
            hedge_symbol: "BTCUSDT".into(),
            basis_weight: 0.0,
            basis_ema_bars: 24,
        }
    }
}

/// The meta-labeler (`strategy.meta_label`, src/meta_label.rs): a logistic model of whether a new
/// entry of the primary model closes with net PnL > 0, refit on the round trips closed so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetaLabelConfig {
    pub enabled: bool,
    pub mode: MetaMode,
    /// `filter`: entries with `p < threshold` are skipped.
    pub threshold: f64,
    /// Bars between refits (counted from the last fit).
    pub refit_bars: usize,
    /// Closed round trips (with entry features) needed before the first fit; inactive until then.
    pub min_train_trades: usize,
    /// Inverse L2 strength, scikit-learn's `C` (the intercept is not penalised).
    pub c: f64,
    /// Closed round trips per symbol in the `hit_rate` feature.
    pub hit_rate_trips: usize,
}

impl Default for MetaLabelConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            mode: MetaMode::Filter,
            threshold: 0.5,
            refit_bars: 168,
            min_train_trades: 200,
            c: 1.0,
            hit_rate_trips: 20,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetaMode {
    /// Skip entries with `p < threshold`.
    Filter,
    /// Scale entries by `clamp(2p − 1, 0, 1)`, then renormalise the leg to its gross.
    Size,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    Equal,
    InverseVol,
    SignalInverseVol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapMode {
    /// Clip to the cap and hand the excess to the uncapped names of the leg (strategy.md §5.3).
    WaterFill,
    /// Clip only; the leg sum falls short (xsmom-bot v1).
    Clip,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SizingConfig {
    pub weighting: Weighting,
    pub gross_leverage: f64,
    pub max_weight_per_asset: f64,
    pub max_notional_usd: f64,
    pub max_gross_leverage: f64,
    pub min_weight: f64,
    /// Round every final weight to this many decimals (half to even, as numpy and pandas do);
    /// `null` = no rounding. The `xsmom-bot-v1` profile rounds to 8, as the original does.
    pub round_decimals: Option<u32>,
    pub caps: CapMode,
    pub vol_target: VolTargetConfig,
    pub kelly: KellyConfig,
}

impl Default for SizingConfig {
    fn default() -> Self {
        Self {
            weighting: Weighting::InverseVol,
            gross_leverage: 0.95,
            max_weight_per_asset: 0.09,
            max_notional_usd: 20_000.0,
            max_gross_leverage: 1.5,
            min_weight: 1e-6,
            round_decimals: None,
            caps: CapMode::WaterFill,
            vol_target: VolTargetConfig::default(),
            kelly: KellyConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VolTargetConfig {
    pub enabled: bool,
    pub target_ann_vol: f64,
    pub lookback: usize,
    pub min_scale: f64,
    pub max_scale: f64,
}

impl Default for VolTargetConfig {
    fn default() -> Self {
        Self { enabled: true, target_ann_vol: 0.24, lookback: 72, min_scale: 0.5, max_scale: 1.6 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KellyConfig {
    pub enabled: bool,
    pub kelly_window: usize,
    pub min_trades: usize,
    pub kelly_fraction: f64,
    pub f_ref: f64,
    pub kelly_min_scale: f64,
    pub kelly_max_scale: f64,
}

impl Default for KellyConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            kelly_window: 30,
            min_trades: 8,
            kelly_fraction: 0.5,
            f_ref: 0.25,
            kelly_min_scale: 0.5,
            kelly_max_scale: 1.6,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RiskConfig {
    pub stops: StopsConfig,
    pub kill_switch: KillSwitchConfig,
    pub drawdown: DrawdownConfig,
    pub anti_churn: AntiChurnConfig,
    pub scoring: ScoringConfig,
    pub time_of_day: TimeOfDayConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StopsConfig {
    pub enabled: bool,
    pub atr_len: usize,
    pub atr_mult_sl: f64,
    pub trailing: bool,
    pub trail_atr_mult: f64,
    pub breakeven_after_r: f64,
    pub partial_tp_r: f64,
    pub partial_tp_frac: f64,
    pub catastrophic_atr_mult: f64,
    pub cooldown_bars_after_stop: usize,
    /// 0 = no time exit.
    pub max_bars_in_trade: usize,
}

impl Default for StopsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            atr_len: 14,
            atr_mult_sl: 2.0,
            trailing: true,
            trail_atr_mult: 1.5,
            breakeven_after_r: 0.6,
            partial_tp_r: 0.75,
            partial_tp_frac: 0.5,
            catastrophic_atr_mult: 3.5,
            cooldown_bars_after_stop: 3,
            max_bars_in_trade: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillAction {
    Flatten,
    Freeze,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KillSwitchConfig {
    pub enabled: bool,
    pub max_daily_loss_pct: f64,
    pub trailing: bool,
    pub action: KillAction,
}

impl Default for KillSwitchConfig {
    fn default() -> Self {
        Self { enabled: true, max_daily_loss_pct: 5.0, trailing: false, action: KillAction::Flatten }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrawdownConfig {
    pub enabled: bool,
    pub max_portfolio_drawdown_pct: f64,
    pub dd_window_days: usize,
    pub resume_fraction: f64,
    pub dd_pause_bars: usize,
}

impl Default for DrawdownConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_portfolio_drawdown_pct: 20.0,
            dd_window_days: 30,
            resume_fraction: 0.5,
            dd_pause_bars: 168,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AntiChurnConfig {
    pub enabled: bool,
    pub max_entries_per_day_per_symbol: usize,
    pub min_bars_between_entries: usize,
    pub streak_pause_after_losses: usize,
    pub streak_pause_bars: usize,
}

impl Default for AntiChurnConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries_per_day_per_symbol: 6,
            min_bars_between_entries: 1,
            streak_pause_after_losses: 3,
            streak_pause_bars: 24,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreAction {
    Ban,
    Downweight,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    pub enabled: bool,
    pub score_ema_alpha: f64,
    pub min_trades: usize,
    pub win_rate_threshold: f64,
    pub pf_threshold: f64,
    pub action: ScoreAction,
    pub ban_bars: usize,
    pub downweight_factor: f64,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            score_ema_alpha: 0.2,
            min_trades: 8,
            win_rate_threshold: 0.40,
            pf_threshold: 1.2,
            action: ScoreAction::Ban,
            ban_bars: 24,
            downweight_factor: 0.5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeOfDayConfig {
    pub enabled: bool,
    pub min_trades_per_hour: usize,
    pub threshold_bps: f64,
    pub score_ema_alpha: f64,
    pub blackout_hours_utc: Vec<u32>,
}

impl Default for TimeOfDayConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            min_trades_per_hour: 5,
            threshold_bps: 0.0,
            score_ema_alpha: 0.2,
            blackout_hours_utc: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostsConfig {
    pub maker_fee_bps: f64,
    pub taker_fee_bps: f64,
    pub slippage_bps: f64,
    pub maker_fill_ratio: f64,
}

impl Default for CostsConfig {
    fn default() -> Self {
        Self { maker_fee_bps: 1.0, taker_fee_bps: 5.5, slippage_bps: 2.0, maker_fill_ratio: 0.6 }
    }
}

impl CostsConfig {
    /// Blended fee of a rebalance fill (backtest.md §3).
    pub fn rebalance_fee_bps(&self) -> f64 {
        self.maker_fill_ratio * self.maker_fee_bps + (1.0 - self.maker_fill_ratio) * self.taker_fee_bps
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accounting {
    Units,
    Weights,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FillPrice {
    /// At the close of the decision bar (blended maker/taker fee, slippage).
    Close,
    /// At the open of the next bar (blended fee, slippage).
    NextOpen,
    /// Post-only limit at the decision close ± `limit_offset_bps`, filled when a later bar trades
    /// through it (at the open when the bar gaps through), maker fee, no slippage; after
    /// `limit_ttl_bars` bars without a fill cancelled or sent as a taker order.
    LimitTouch,
}

/// What happens to a `limit_touch` order that has not filled after `limit_ttl_bars`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitFallback {
    /// Sent as a market order at that bar's close (taker fee, slippage).
    Taker,
    /// Cancelled: the position stays where it is until the next decision trades it.
    Cancel,
}

/// The fill model (backtest.md §2), shared by the backtest and the simulated account of
/// `xsmom-live` replay / paper.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutionConfig {
    pub fill: FillPrice,
    /// Distance of a `limit_touch` order from the decision close, in bps away from the market
    /// (a buy below, a sell above).
    pub limit_offset_bps: f64,
    /// Bars a `limit_touch` order may rest (counted from the first of consecutive same-side orders
    /// of a symbol) before `limit_fallback` applies.
    pub limit_ttl_bars: usize,
    pub limit_fallback: LimitFallback,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        Self { fill: FillPrice::Close, limit_offset_bps: 0.0, limit_ttl_bars: 1, limit_fallback: LimitFallback::Taker }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BacktestConfig {
    pub initial_capital: f64,
    pub accounting: Accounting,
    /// Deprecated alias of `execution.fill` (kept so that older configs load); `null` when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fill: Option<FillPrice>,
    pub rebalance_every: usize,
    pub min_rebalance_delta: f64,
    /// First bar index allowed to trade; `null` = the first bar with `2·k_min` eligible symbols.
    pub first_decision_bar: Option<usize>,
}

impl Default for BacktestConfig {
    fn default() -> Self {
        Self {
            initial_capital: 10_000.0,
            accounting: Accounting::Units,
            fill: None,
            rebalance_every: 1,
            min_rebalance_delta: 0.002,
            first_decision_bar: None,
        }
    }
}

/// The live runner (live.md): timing of the cycle and the risk loop, order placement, the API
/// circuit breaker. Ignored by backtests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// `false` (a `stand aside` deploy, research.md §5): cancel orders, close every position and
    /// stay flat, still stepping the model, reporting and heart-beating.
    pub trading: bool,
    /// Seconds after a bar closes before the cycle fetches it (the exchange needs a moment).
    pub rebalance_delay_secs: usize,
    /// Limit orders sit at the touch (best bid to buy, best ask to sell) moved by this many bps
    /// away from the spread (0 = at the touch).
    pub price_offset_bps: f64,
    /// Add half the current spread (in bps, capped at `max_spread_bps`) to the offset.
    pub dynamic_offset: bool,
    /// Skip a symbol while its spread is wider than this.
    pub max_spread_bps: f64,
    /// Orders older than this are cancelled and re-placed.
    pub max_order_age_secs: usize,
    /// Orders farther than this from the touch are cancelled and re-placed.
    pub reprice_bps: f64,
    /// Re-prices per symbol and bar of a post-only order the exchange cancelled (it would have
    /// taken liquidity), each under a fresh id and one more tick away; past this an entry follows
    /// `execution.limit_fallback` (`taker`: a market order, `cancel`: skipped until the next bar)
    /// and an exit goes reduce-only at market.
    pub max_reprices: usize,
    /// Seconds an exit (a position whose target is 0) may rest as a post-only limit before it is
    /// cancelled and sent as a reduce-only market order (0: at once).
    pub exit_patience_secs: usize,
    /// Period of the risk loop (stops on last-trade prices, the kill-switch on account equity).
    pub fast_check_secs: usize,
    /// Test the stops of the risk loop on the closed bars of this finer timeframe (e.g. `1m`) since
    /// the last model bar, in order, instead of on the last trade. `null`: the last trade.
    pub stop_timeframe: Option<String>,
    /// Closed bars fetched before the first live bar to warm the indicators and the model book.
    pub warmup_bars: usize,
    /// API circuit breaker: `max_errors` within `window_secs` pause new risk for `cooldown_secs`.
    pub breaker: BreakerConfig,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            trading: true,
            rebalance_delay_secs: 5,
            price_offset_bps: 0.0,
            dynamic_offset: false,
            max_spread_bps: 15.0,
            max_order_age_secs: 180,
            reprice_bps: 15.0,
            max_reprices: 3,
            exit_patience_secs: 300,
            fast_check_secs: 2,
            stop_timeframe: None,
            warmup_bars: 1_000,
            breaker: BreakerConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    pub max_errors: usize,
    pub window_secs: usize,
    pub cooldown_secs: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { max_errors: 5, window_secs: 300, cooldown_secs: 600 }
    }
}

/// Names accepted by [`Config::profile`].
pub const PROFILES: &[&str] = &["default", "xsmom-bot-v1"];

impl Config {
    /// Parse YAML text; `source` names the file in error messages.
    pub fn from_yaml(text: &str, source: &str) -> Result<Config> {
        let mut config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml::from_str(text).map_err(|err| {
                // serde reports `deny_unknown_fields` only in its message: classify it here, once.
                let message = format!("{source}: {err}");
                match unknown_field(&err.to_string()) {
                    Some(key) => Error::unknown_key(key, message),
                    None => Error::config(message),
                }
            })?
        };
        // `backtest.fill` is the old name of `execution.fill`.
        if let Some(fill) = config.backtest.fill.take() {
            config.execution.fill = fill;
        }
        config.validate().map_err(|err| err.context(source))?;
        Ok(config)
    }

    pub fn load(path: &std::path::Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|err| Error::io(path.display(), err))?;
        Config::from_yaml(&text, &path.display().to_string())
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("a Config always serialises")
    }

    pub fn to_value(&self) -> Value {
        serde_yaml::to_value(self).expect("a Config always serialises")
    }

    /// A named profile: `default` or `xsmom-bot-v1` (backtest.md §6).
    pub fn profile(name: &str) -> Result<Config> {
        match name {
            "default" => Ok(Config::default()),
            "xsmom-bot-v1" => Ok(Config::xsmom_bot_v1()),
            other => {
                Err(Error::config(format!("unknown profile '{other}': known profiles are {}", PROFILES.join(", "))))
            }
        }
    }

    /// Compatibility with the original xsmom-bot Python backtester (backtest.md §6).
    pub fn xsmom_bot_v1() -> Config {
        let mut config = Config::default();
        config.universe.min_price = 0.0;
        config.universe.max_symbols = 0;
        let s = &mut config.strategy;
        s.k_mode = KMode::Static;
        s.require_sign = false;
        s.strict_k = true;
        s.normalise_momentum = false;
        s.min_history_bars = Some(s.max_lookback());
        s.regime_filter.mode = RegimeMode::Abs;
        s.regime_filter.short_history = ShortHistory::Pass;
        s.bands.enabled = false;
        config.sizing.weighting = Weighting::Equal;
        config.sizing.caps = CapMode::Clip;
        config.sizing.round_decimals = Some(8);
        config.sizing.vol_target.enabled = false;
        config.risk.stops.enabled = false;
        config.risk.kill_switch.enabled = false;
        config.risk.scoring.enabled = false;
        config.risk.anti_churn.enabled = false;
        config.backtest.accounting = Accounting::Weights;
        config.execution.fill = FillPrice::Close;
        config.backtest.first_decision_bar = Some(config.strategy.max_lookback().max(config.strategy.vol_lookback) + 5);
        config
    }

    /// Apply `key.path=value` overrides (value parsed as YAML: `4`, `0.5`, `true`, `[6, 12]`, `equal`).
    /// A path that does not exist is searched for as a unique leaf under its prefix, so
    /// `risk.atr_mult_sl` finds `risk.stops.atr_mult_sl`.
    pub fn with_overrides<'a>(&self, overrides: impl IntoIterator<Item = (&'a str, Value)>) -> Result<Config> {
        let mut tree = self.to_value();
        for (path, value) in overrides {
            // `backtest.fill` is the old name of `execution.fill`.
            let path = if path == "backtest.fill" { "execution.fill" } else { path };
            set_path(&mut tree, path, value)?;
        }
        // Round trip through text so that serde reports errors with their key path.
        let text = serde_yaml::to_string(&tree).expect("a YAML value always serialises");
        Config::from_yaml(&text, "overrides")
    }

    /// Parse `key=value` strings as given on the command line.
    pub fn with_override_strings(&self, assignments: &[String]) -> Result<Config> {
        let mut parsed = Vec::with_capacity(assignments.len());
        for assignment in assignments {
            let (path, raw) = assignment
                .split_once('=')
                .ok_or_else(|| Error::config(format!("override '{assignment}' is not of the form key.path=value")))?;
            let value: Value = serde_yaml::from_str(raw)
                .map_err(|err| Error::config(format!("override {path}: value '{raw}' is not valid YAML: {err}")))?;
            parsed.push((path.trim().to_string(), value));
        }
        self.with_overrides(parsed.iter().map(|(p, v)| (p.as_str(), v.clone())))
    }

    pub fn timeframe(&self) -> Timeframe {
        Timeframe::parse(&self.data.timeframe).expect("validated")
    }

    /// Check every value against its allowed range; the message names the key path and the range.
    pub fn validate(&self) -> Result<()> {
        let mut check = Checker::default();
        Timeframe::parse(&self.data.timeframe).map_err(|err| Error::config(format!("data.timeframe: {err}")))?;
        // The rolling median's bin counts are u16: the window stays well below 65 536.
        check.real("data.spike_mads", self.data.spike_mads, 1.0, 1_000.0);
        check.int("data.spike_window", self.data.spike_window, 10, 50_000);
        let u = &self.universe;
        check.real("universe.min_price", u.min_price, 0.0, f64::INFINITY);
        check.real("universe.min_quote_volume_24h", u.min_quote_volume_24h, 0.0, f64::INFINITY);
        check.int("universe.universe_refresh_bars", u.universe_refresh_bars, 1, 100_000);
        self.check_strategy(&mut check);
        self.check_meta_label(&mut check);
        self.check_sizing(&mut check);
        self.check_risk(&mut check);
        self.check_costs_and_backtest(&mut check);
        self.check_live(&mut check)?;
        check.finish()
    }

    /// `strategy`: lookbacks, K, dispersion, bands, filters, router, carry.
    fn check_strategy(&self, check: &mut Checker) {
        let s = &self.strategy;
        if s.lookbacks.is_empty() {
            check.fail("strategy.lookbacks is empty: at least one lookback is needed".into());
        }
        for (k, lookback) in s.lookbacks.iter().enumerate() {
            check.int(&format!("strategy.lookbacks[{k}]"), *lookback, 1, 100_000);
        }
        if s.lookback_weights.len() != s.lookbacks.len() {
            check.fail(format!(
                "strategy.lookback_weights has {} entries but strategy.lookbacks has {}: they must match",
                s.lookback_weights.len(),
                s.lookbacks.len()
            ));
        }
        for (k, weight) in s.lookback_weights.iter().enumerate() {
            check.real(&format!("strategy.lookback_weights[{k}]"), *weight, 0.0, 1e6);
        }
        if s.lookback_weights.iter().sum::<f64>() <= 0.0 {
            check.fail("strategy.lookback_weights must have a positive sum".into());
        }
        check.real("strategy.signal_power", s.signal_power, 0.1, 5.0);
        check.int("strategy.vol_lookback", s.vol_lookback, 2, 100_000);
        check.int("strategy.k_min", s.k_min, 1, 1_000);
        check.int("strategy.k_max", s.k_max, 1, 1_000);
        if s.k_min > s.k_max {
            check.fail(format!("strategy.k_min = {} must not exceed strategy.k_max = {}", s.k_min, s.k_max));
        }
        check.int("strategy.disp_lookback", s.disp_lookback, 1, 100_000);
        check.real("strategy.d_lo", s.d_lo, 0.0, 100.0);
        check.real("strategy.d_hi", s.d_hi, 0.0, 100.0);
        if s.d_hi <= s.d_lo {
            check.fail(format!("strategy.d_hi = {} must be greater than strategy.d_lo = {}", s.d_hi, s.d_lo));
        }
        check.real("strategy.bands.z_entry", s.bands.z_entry, 0.0, 10.0);
        check.real("strategy.bands.z_exit", s.bands.z_exit, 0.0, 10.0);
        if s.bands.z_exit > s.bands.z_entry {
            check.fail(format!(
                "strategy.bands.z_exit = {} must not exceed strategy.bands.z_entry = {}",
                s.bands.z_exit, s.bands.z_entry
            ));
        }
        check.int("strategy.regime_filter.ema_len", s.regime_filter.ema_len, 2, 100_000);
        check.real("strategy.regime_filter.slope_min_bps_per_day", s.regime_filter.slope_min_bps_per_day, 0.0, 1e5);
        check.int("strategy.adx_filter.adx_len", s.adx_filter.adx_len, 2, 10_000);
        check.real("strategy.adx_filter.min_adx", s.adx_filter.min_adx, 0.0, 100.0);
        check.int("strategy.adx_filter.rising_bars", s.adx_filter.rising_bars, 1, 10_000);
        check.int("strategy.router.corr_lookback", s.router.corr_lookback, 2, 100_000);
        check.real("strategy.router.corr_threshold", s.router.corr_threshold, -1.0, 1.0);
        check.int("strategy.router.confirm_bars", s.router.confirm_bars, 1, 100_000);
        check.real("strategy.carry.budget", s.carry.budget, 0.0, 1.0);
        check.int("strategy.carry.funding_lookback", s.carry.funding_lookback, 1, 100_000);
        check.int("strategy.carry.sign_stability_k", s.carry.sign_stability_k, 1, 100_000);
        check.real("strategy.carry.basis_weight", s.carry.basis_weight, 0.0, 1e6);
        check.int("strategy.carry.basis_ema_bars", s.carry.basis_ema_bars, 1, 100_000);
    }

    /// `strategy.meta_label`.
    fn check_meta_label(&self, check: &mut Checker) {
        let m = &self.strategy.meta_label;
        check.real("strategy.meta_label.threshold", m.threshold, 0.0, 1.0);
        check.int("strategy.meta_label.refit_bars", m.refit_bars, 1, 1_000_000);
        check.int("strategy.meta_label.min_train_trades", m.min_train_trades, 1, 10_000_000);
        check.real("strategy.meta_label.c", m.c, 1e-6, 1e6);
        check.int("strategy.meta_label.hit_rate_trips", m.hit_rate_trips, 1, 100_000);
        if m.enabled && self.backtest.accounting == Accounting::Weights {
            check.fail(
                "strategy.meta_label needs backtest.accounting = units (it learns from the ledger's round trips \
                 and acts on entries of the units book)"
                    .into(),
            );
        }
    }

    /// `sizing`: caps, vol target, Kelly.
    fn check_sizing(&self, check: &mut Checker) {
        let z = &self.sizing;
        check.real("sizing.gross_leverage", z.gross_leverage, 0.0, 10.0);
        check.real("sizing.max_weight_per_asset", z.max_weight_per_asset, 0.0, 10.0);
        check.real("sizing.max_notional_usd", z.max_notional_usd, 0.0, f64::INFINITY);
        check.real("sizing.max_gross_leverage", z.max_gross_leverage, 0.0, 20.0);
        check.real("sizing.min_weight", z.min_weight, 0.0, 1.0);
        if let Some(decimals) = z.round_decimals {
            check.int("sizing.round_decimals", decimals as usize, 0, 15);
        }
        let v = &z.vol_target;
        check.real("sizing.vol_target.target_ann_vol", v.target_ann_vol, 1e-6, 10.0);
        check.int("sizing.vol_target.lookback", v.lookback, 2, 100_000);
        check.real("sizing.vol_target.min_scale", v.min_scale, 0.0, 100.0);
        check.real("sizing.vol_target.max_scale", v.max_scale, 0.0, 100.0);
        if v.min_scale > v.max_scale {
            check.fail(format!(
                "sizing.vol_target.min_scale = {} must not exceed sizing.vol_target.max_scale = {}",
                v.min_scale, v.max_scale
            ));
        }
        let k = &z.kelly;
        check.int("sizing.kelly.kelly_window", k.kelly_window, 1, 100_000);
        check.real("sizing.kelly.kelly_fraction", k.kelly_fraction, 0.0, 1.0);
        check.real("sizing.kelly.f_ref", k.f_ref, 1e-6, 1.0);
    }

    /// `risk`: stops, kill-switch, drawdown, scoring, time of day.
    fn check_risk(&self, check: &mut Checker) {
        let st = &self.risk.stops;
        check.int("risk.stops.atr_len", st.atr_len, 1, 10_000);
        check.real("risk.stops.atr_mult_sl", st.atr_mult_sl, 0.01, 100.0);
        check.real("risk.stops.trail_atr_mult", st.trail_atr_mult, 0.01, 100.0);
        check.real("risk.stops.breakeven_after_r", st.breakeven_after_r, 0.0, 100.0);
        check.real("risk.stops.partial_tp_r", st.partial_tp_r, 0.0, 100.0);
        check.real("risk.stops.partial_tp_frac", st.partial_tp_frac, 0.0, 1.0);
        check.real("risk.stops.catastrophic_atr_mult", st.catastrophic_atr_mult, 0.01, 100.0);
        let ks = &self.risk.kill_switch;
        check.real("risk.kill_switch.max_daily_loss_pct", ks.max_daily_loss_pct, 0.01, 100.0);
        let dd = &self.risk.drawdown;
        check.real("risk.drawdown.max_portfolio_drawdown_pct", dd.max_portfolio_drawdown_pct, 0.01, 100.0);
        check.real("risk.drawdown.resume_fraction", dd.resume_fraction, 0.0, 1.0);
        let sc = &self.risk.scoring;
        check.real("risk.scoring.score_ema_alpha", sc.score_ema_alpha, 1e-6, 1.0);
        check.real("risk.scoring.win_rate_threshold", sc.win_rate_threshold, 0.0, 1.0);
        check.real("risk.scoring.pf_threshold", sc.pf_threshold, 0.0, 100.0);
        check.real("risk.scoring.downweight_factor", sc.downweight_factor, 0.0, 1.0);
        for (h, hour) in self.risk.time_of_day.blackout_hours_utc.iter().enumerate() {
            check.int(&format!("risk.time_of_day.blackout_hours_utc[{h}]"), *hour as usize, 0, 23);
        }
    }

    /// `costs` and `backtest`.
    fn check_costs_and_backtest(&self, check: &mut Checker) {
        let c = &self.costs;
        check.real("costs.maker_fee_bps", c.maker_fee_bps, -100.0, 1_000.0);
        check.real("costs.taker_fee_bps", c.taker_fee_bps, -100.0, 1_000.0);
        check.real("costs.slippage_bps", c.slippage_bps, 0.0, 1_000.0);
        check.real("costs.maker_fill_ratio", c.maker_fill_ratio, 0.0, 1.0);

        let b = &self.backtest;
        check.real("backtest.initial_capital", b.initial_capital, 1e-6, 1e15);
        check.int("backtest.rebalance_every", b.rebalance_every, 1, 100_000);
        check.real("backtest.min_rebalance_delta", b.min_rebalance_delta, 0.0, 1.0);
    }

    /// `execution` and `live` (the stop timeframe against `data.timeframe`).
    fn check_live(&self, check: &mut Checker) -> Result<()> {
        let l = &self.live;
        let e = &self.execution;
        check.real("execution.limit_offset_bps", e.limit_offset_bps, 0.0, 1_000.0);
        check.int("execution.limit_ttl_bars", e.limit_ttl_bars, 1, 100_000);
        check.int("live.rebalance_delay_secs", l.rebalance_delay_secs, 0, 3_600);
        check.real("live.price_offset_bps", l.price_offset_bps, -100.0, 100.0);
        // A spread or a distance from the touch of at most the whole price: `BPS` bps.
        check.real("live.max_spread_bps", l.max_spread_bps, 0.0, BPS);
        check.int("live.max_order_age_secs", l.max_order_age_secs, 1, 86_400);
        check.real("live.reprice_bps", l.reprice_bps, 0.0, BPS);
        check.int("live.max_reprices", l.max_reprices, 0, 100);
        check.int("live.exit_patience_secs", l.exit_patience_secs, 0, 86_400);
        check.int("live.fast_check_secs", l.fast_check_secs, 1, 3_600);
        check.int("live.warmup_bars", l.warmup_bars, 1, 1_000_000);
        check.int("live.breaker.max_errors", l.breaker.max_errors, 1, 10_000);
        check.int("live.breaker.window_secs", l.breaker.window_secs, 1, 86_400);
        check.int("live.breaker.cooldown_secs", l.breaker.cooldown_secs, 0, 86_400 * 7);
        if let Some(text) = &l.stop_timeframe {
            let bar = Timeframe::parse(&self.data.timeframe)?;
            match Timeframe::parse(text) {
                Ok(stop) if stop.ms < bar.ms && bar.ms % stop.ms == 0 => {}
                Ok(_) => check.fail(format!(
                    "live.stop_timeframe = {text}: must be finer than data.timeframe ({}) and divide it",
                    self.data.timeframe
                )),
                Err(err) => check.fail(format!("live.stop_timeframe: {err}")),
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct Checker {
    problems: Vec<String>,
}

impl Checker {
    fn fail(&mut self, message: String) {
        self.problems.push(message);
    }
    fn real(&mut self, path: &str, value: f64, low: f64, high: f64) {
        if !(value >= low && value <= high) {
            self.fail(format!("{path} = {value} is out of range: allowed {}", range_text(low, high)));
        }
    }
    fn int(&mut self, path: &str, value: usize, low: usize, high: usize) {
        if value < low || value > high {
            self.fail(format!("{path} = {value} is out of range: allowed [{low}, {high}]"));
        }
    }
    fn finish(self) -> Result<()> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(Error::config(self.problems.join("; ")))
        }
    }
}

fn range_text(low: f64, high: f64) -> String {
    if high.is_infinite() {
        format!("[{low}, ∞)")
    } else {
        format!("[{low}, {high}]")
    }
}

/// One step of a dotted path: a mapping key, optionally indexed (`lookbacks[0]`).
fn parse_segment(segment: &str, path: &str) -> Result<(String, Option<usize>)> {
    match segment.split_once('[') {
        None => Ok((segment.to_string(), None)),
        Some((key, rest)) => {
            let index = rest
                .strip_suffix(']')
                .and_then(|i| i.parse::<usize>().ok())
                .ok_or_else(|| Error::config(format!("override {path}: bad index in '{segment}'")))?;
            Ok((key.to_string(), Some(index)))
        }
    }
}

fn set_path(tree: &mut Value, path: &str, value: Value) -> Result<()> {
    let resolved = resolve_path(tree, path)?;
    let mut node = tree;
    let segments: Vec<&str> = resolved.split('.').collect();
    for (depth, segment) in segments.iter().enumerate() {
        let (key, index) = parse_segment(segment, path)?;
        let last = depth + 1 == segments.len();
        let map = node
            .as_mapping_mut()
            .ok_or_else(|| Error::config(format!("override {path}: '{key}' is not inside a section")))?;
        let child = map
            .get_mut(Value::String(key.clone()))
            .ok_or_else(|| Error::config(format!("override {path}: unknown key '{key}'")))?;
        node = match index {
            None => child,
            Some(i) => {
                let list = child
                    .as_sequence_mut()
                    .ok_or_else(|| Error::config(format!("override {path}: '{key}' is not a list")))?;
                let len = list.len();
                list.get_mut(i).ok_or_else(|| {
                    Error::config(format!("override {path}: index {i} is out of range (the list has {len} entries)"))
                })?
            }
        };
        if last {
            *node = value;
            return Ok(());
        }
    }
    Ok(())
}

/// The key of a serde message about a field `deny_unknown_fields` refused, as a dotted path
/// ("strategy: unknown field `kmax`, expected ..." → `strategy.kmax`); `None` for any other message.
fn unknown_field(message: &str) -> Option<String> {
    const MARK: &str = "unknown field `";
    let (section, rest) = match message.find(&format!(": {MARK}")) {
        Some(at) => (Some(&message[..at]), &message[at + 2 + MARK.len()..]),
        None => (None, message.strip_prefix(MARK)?),
    };
    let field = &rest[..rest.find('`').unwrap_or(rest.len())];
    Some(match section {
        Some(section) => format!("{section}.{field}"),
        None => field.to_string(),
    })
}

/// The full path of `path` in `tree`: itself when it exists, else the unique leaf with the same
/// last key under the same prefix (`risk.atr_mult_sl` → `risk.stops.atr_mult_sl`).
fn resolve_path(tree: &Value, path: &str) -> Result<String> {
    if path.is_empty() {
        return Err(Error::config("override with an empty key path"));
    }
    if lookup(tree, path).is_some() {
        return Ok(path.to_string());
    }
    let (prefix, leaf) = match path.rsplit_once('.') {
        Some((prefix, leaf)) => (Some(prefix), leaf),
        None => (None, path),
    };
    let (leaf_key, leaf_index) = parse_segment(leaf, path)?;
    let start = match prefix {
        Some(prefix) => lookup(tree, prefix)
            .ok_or_else(|| Error::unknown_key(path, format!("unknown config key '{path}': no section '{prefix}'")))?,
        None => tree,
    };
    let mut found = Vec::new();
    find_leaves(start, prefix.unwrap_or(""), &leaf_key, &mut found);
    match found.len() {
        1 => Ok(match leaf_index {
            Some(i) => format!("{}[{i}]", found[0]),
            None => found.remove(0),
        }),
        0 => Err(Error::unknown_key(path, format!("unknown config key '{path}'"))),
        _ => Err(Error::config(format!("config key '{path}' is ambiguous: it could be {}", found.join(" or ")))),
    }
}

fn lookup<'a>(tree: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = tree;
    for segment in path.split('.') {
        let (key, index) = parse_segment(segment, path).ok()?;
        node = node.as_mapping()?.get(Value::String(key))?;
        if let Some(i) = index {
            node = node.as_sequence()?.get(i)?;
        }
    }
    Some(node)
}

fn find_leaves(node: &Value, prefix: &str, key: &str, found: &mut Vec<String>) {
    let Some(map) = node.as_mapping() else { return };
    for (name, child) in map {
        let Some(name) = name.as_str() else { continue };
        let path = if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
        if name == key {
            found.push(path.clone());
        }
        find_leaves(child, &path, key, found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_through_yaml() {
        let config = Config::default();
        let back = Config::from_yaml(&config.to_yaml(), "test").unwrap();
        assert_eq!(config, back);
        let v1 = Config::xsmom_bot_v1();
        assert_eq!(Config::from_yaml(&v1.to_yaml(), "test").unwrap(), v1);
    }

    #[test]
    fn unknown_key_names_its_path() {
        let err = Config::from_yaml("strategy:\n  kmax: 4\n", "cfg.yaml").unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::UnknownKey);
        assert!(err.to_string().starts_with("cfg.yaml: strategy: unknown field `kmax`"), "{err}");
        assert!(matches!(&err, crate::error::Error::UnknownKey { key, .. } if key == "strategy.kmax"), "{err:?}");
        let err = Config::from_yaml("risk:\n  stops:\n    atr_mult: 2\n", "cfg.yaml").unwrap_err();
        assert!(matches!(&err, crate::error::Error::UnknownKey { key, .. } if key == "risk.stops.atr_mult"), "{err:?}");
        let err = Config::from_yaml("strategyy: {}\n", "cfg.yaml").unwrap_err();
        assert!(matches!(&err, crate::error::Error::UnknownKey { key, .. } if key == "strategyy"), "{err:?}");
        let err = Config::from_yaml("strategy:\n  k_max: four\n", "cfg.yaml").unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Config, "a bad value is not an unknown key");
    }

    #[test]
    fn out_of_range_names_path_and_range() {
        let err = Config::from_yaml("sizing:\n  gross_leverage: 12\n", "cfg.yaml").unwrap_err();
        assert_eq!(err.to_string(), "cfg.yaml: sizing.gross_leverage = 12 is out of range: allowed [0, 10]");
    }

    #[test]
    fn overrides_set_leaves_indices_and_shorthands() {
        let base = Config::default();
        let config = base
            .with_override_strings(&[
                "strategy.k_max=4".into(),
                "strategy.lookbacks[0]=6".into(),
                "risk.atr_mult_sl=2.5".into(),
                "sizing.weighting=equal".into(),
            ])
            .unwrap();
        assert_eq!(config.strategy.k_max, 4);
        assert_eq!(config.strategy.lookbacks, vec![6, 24, 48, 96]);
        assert_eq!(config.risk.stops.atr_mult_sl, 2.5);
        assert_eq!(config.sizing.weighting, Weighting::Equal);
        let err = base.with_override_strings(&["strategy.kmax=4".into()]).unwrap_err();
        assert_eq!(err.to_string(), "unknown config key 'strategy.kmax'");
        assert!(matches!(&err, crate::error::Error::UnknownKey { key, .. } if key == "strategy.kmax"), "{err:?}");
        assert_eq!(err.kind(), crate::error::ErrorKind::UnknownKey);
        let err = base.with_override_strings(&["strategy.lookbacks[9]=4".into()]).unwrap_err();
        assert_eq!(err.to_string(), "override strategy.lookbacks[9]: index 9 is out of range (the list has 4 entries)");
        let err = base.with_override_strings(&["risk.enabled=false".into()]).unwrap_err();
        assert!(err.to_string().starts_with("config key 'risk.enabled' is ambiguous"), "{err}");
        let err = base.with_override_strings(&["strategy.k_max=0".into()]).unwrap_err();
        assert!(err.to_string().contains("strategy.k_max = 0 is out of range: allowed [1, 1000]"), "{err}");
    }

    #[test]
    fn profiles() {
        assert_eq!(Config::profile("default").unwrap(), Config::default());
        assert_eq!(Config::profile("xsmom-bot-v1").unwrap().backtest.first_decision_bar, Some(101));
        assert_eq!(
            Config::profile("nope").unwrap_err().to_string(),
            "unknown profile 'nope': known profiles are default, xsmom-bot-v1"
        );
    }
}
