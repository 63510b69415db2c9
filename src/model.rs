//! The shared domain types, at the bottom of the module graph (see the crate docs): what the data
//! layer hands the engine (a [`BarRow`]), what the engine, the risk rules, the fill model, the
//! metrics and the live runner exchange about trades ([`Fill`], [`FillReason`], [`RoundTrip`],
//! [`Side`]), the router's [`Regime`] and the live runner's deterministic [`client_order_id`]s,
//! and the one unit constant they share ([`BPS`]).
//! Plain data: this module uses no other module of the crate.

/// Basis points per unit: a rate of `x` bps is the fraction `x / BPS`, a fraction `f` is `f * BPS`
/// bps. Every bps conversion of the crate divides or multiplies by it (never `* 1e-4`, which rounds
/// differently), so that fees, slippage, offsets and spreads agree to the bit.
pub const BPS: f64 = 1e4;

/// One bar of the panel: every slice has one entry per symbol (NaN = no bar).
#[derive(Debug, Clone, Copy)]
pub struct BarRow<'a> {
    /// Bar open time, epoch ms UTC.
    pub ts: i64,
    pub open: &'a [f64],
    pub high: &'a [f64],
    pub low: &'a [f64],
    pub close: &'a [f64],
    pub quote_volume: &'a [f64],
    /// Funding rate paid at this bar (0 without an event).
    pub funding_rate: &'a [f64],
    /// A funding event happened at this bar.
    pub funding_event: &'a [bool],
    /// Mark-price closes of this bar (NaN where a symbol has none), when the data has mark bars.
    pub mark_close: Option<&'a [f64]>,
}

/// Why a fill happened (the `reason` column of the fills and the `exit_reason` of round trips).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillReason {
    Rebalance,
    Stop,
    Trail,
    Breakeven,
    TakeProfit,
    Time,
    KillSwitch,
    Flatten,
}

impl FillReason {
    /// Every reason, each at its code (`reason as usize`): text columns are built from the codes.
    pub const ALL: [FillReason; 8] = [
        FillReason::Rebalance,
        FillReason::Stop,
        FillReason::Trail,
        FillReason::Breakeven,
        FillReason::TakeProfit,
        FillReason::Time,
        FillReason::KillSwitch,
        FillReason::Flatten,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FillReason::Rebalance => "rebalance",
            FillReason::Stop => "stop",
            FillReason::Trail => "trail",
            FillReason::Breakeven => "breakeven",
            FillReason::TakeProfit => "take_profit",
            FillReason::Time => "time",
            FillReason::KillSwitch => "kill_switch",
            FillReason::Flatten => "flatten",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Fill {
    pub ts: i64,
    pub symbol: usize,
    /// +1 buy, −1 sell.
    pub side: i8,
    pub qty: f64,
    /// Fill price after slippage.
    pub price: f64,
    pub notional: f64,
    pub fee: f64,
    pub reason: FillReason,
    /// The meta-labeler's p of the entry this fill opened (NaN when it was not consulted).
    pub meta_p: f64,
}

/// Fields compared as values; `meta_p` by its bits, so that a NaN p equals itself.
impl PartialEq for Fill {
    fn eq(&self, other: &Self) -> bool {
        (self.ts, self.symbol, self.side, self.reason) == (other.ts, other.symbol, other.side, other.reason)
            && (self.qty, self.price, self.notional, self.fee) == (other.qty, other.price, other.notional, other.fee)
            && self.meta_p.to_bits() == other.meta_p.to_bits()
    }
}

/// A position from flat (or a flip) back to flat (or the next flip).
#[derive(Debug, Clone, PartialEq)]
pub struct RoundTrip {
    pub symbol: usize,
    /// +1 long, −1 short.
    pub side: i8,
    pub entry_ts: i64,
    pub exit_ts: i64,
    /// Volume-weighted price of the fills that opened or increased the position.
    pub entry_price: f64,
    /// Volume-weighted price of the fills that reduced or closed it.
    pub exit_price: f64,
    /// Total quantity opened (= total closed).
    pub qty: f64,
    /// Price PnL minus fees, plus funding received, over the trip.
    pub pnl: f64,
    /// `pnl / (entry_price × qty)`.
    pub ret: f64,
    pub bars_held: usize,
    pub exit_reason: FillReason,
}

/// The side of an exchange order or execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "Buy",
            Side::Sell => "Sell",
        }
    }
    pub fn sign(self) -> f64 {
        match self {
            Side::Buy => 1.0,
            Side::Sell => -1.0,
        }
    }
}

/// The strategy the regime router (risk.md §7) has in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    Xsmom,
    Tsmom,
}

impl Regime {
    pub fn as_str(self) -> &'static str {
        match self {
            Regime::Xsmom => "xsmom",
            Regime::Tsmom => "tsmom",
        }
    }
}

/// The live runner's deterministic client order ids (live.md §2.4): `xs-<bar>-<symbol>-<tag>`, with
/// `<bar>` the open time of the bar the order belongs to. A restart re-derives the same id, and the
/// exchange refuses a duplicate.
pub mod client_order_id {
    use std::fmt::Display;

    /// The tags of the resting stop orders (catastrophic stop, stop-loss, partial take-profit).
    pub const RESTING_STOP_TAGS: [&str; 3] = ["cat", "sl", "tp"];

    /// `xs-<bar>-`: the start of every id of the bar `bar_ts`.
    pub fn bar_prefix(bar_ts: i64) -> String {
        format!("xs-{bar_ts}-")
    }

    /// `xs-<bar>-<symbol>-<tag>`.
    pub fn new(bar_ts: i64, symbol: &str, tag: impl Display) -> String {
        format!("xs-{bar_ts}-{symbol}-{tag}")
    }

    /// A rebalance order's id: `xs-<bar>-<symbol>-<attempt>`.
    pub fn rebalance(bar_ts: i64, symbol: &str, attempt: u32) -> String {
        new(bar_ts, symbol, attempt)
    }

    /// An exit's id: `xs-<bar>-<symbol>-<tag>` for the first attempt, `…-<tag>-<n>` for attempt n.
    pub fn exit(bar_ts: i64, symbol: &str, tag: &str, attempt: u32) -> String {
        match attempt {
            0 => new(bar_ts, symbol, tag),
            n => numbered(bar_ts, symbol, tag, n),
        }
    }

    /// `xs-<bar>-<symbol>-<tag>-<attempt>`, the attempt always written.
    pub fn numbered(bar_ts: i64, symbol: &str, tag: &str, attempt: u32) -> String {
        format!("xs-{bar_ts}-{symbol}-{tag}-{attempt}")
    }

    /// Whether `id` is a resting stop order's (it ends in `-cat`, `-sl` or `-tp`).
    pub fn is_resting_stop(id: &str) -> bool {
        RESTING_STOP_TAGS.iter().any(|tag| id.strip_suffix(tag).is_some_and(|head| head.ends_with('-')))
    }
}

#[cfg(test)]
mod tests {
    use super::client_order_id::*;

    #[test]
    fn every_fill_reason_sits_at_its_code_with_its_own_text() {
        use super::FillReason::{self, *};
        let all = FillReason::ALL;
        // Exhaustive: a new reason does not compile here until it has a place in `ALL`.
        let place = |reason: FillReason| match reason {
            Rebalance => 0,
            Stop => 1,
            Trail => 2,
            Breakeven => 3,
            TakeProfit => 4,
            Time => 5,
            KillSwitch => 6,
            Flatten => 7,
        };
        for (code, reason) in all.iter().enumerate() {
            assert_eq!(*reason as usize, code, "{reason:?}");
            assert_eq!(place(*reason), code, "{reason:?}");
        }
        let texts: std::collections::HashSet<&str> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(texts.len(), all.len(), "distinct texts");
    }

    #[test]
    fn client_order_ids() {
        let bar = 1_700_000_000_000;
        assert_eq!(bar_prefix(bar), "xs-1700000000000-");
        assert_eq!(rebalance(bar, "BTCUSDT", 0), "xs-1700000000000-BTCUSDT-0");
        assert_eq!(exit(bar, "BTCUSDT", "stop", 0), "xs-1700000000000-BTCUSDT-stop");
        assert_eq!(exit(bar, "BTCUSDT", "time", 2), "xs-1700000000000-BTCUSDT-time-2");
        assert_eq!(numbered(bar, "BTCUSDT", "kill", 0), "xs-1700000000000-BTCUSDT-kill-0");
        for tag in RESTING_STOP_TAGS {
            let id = new(bar, "BTCUSDT", tag);
            assert!(id.starts_with(&bar_prefix(bar)) && is_resting_stop(&id), "{id}");
        }
        assert!(!is_resting_stop(&rebalance(bar, "BTCUSDT", 3)));
        assert!(!is_resting_stop(&exit(bar, "BTCUSDT", "stop", 0)));
        assert!(!is_resting_stop("xs-1-ABCcat"));
    }
}
