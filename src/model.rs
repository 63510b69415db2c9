//! The shared domain types, at the bottom of the module graph (see the crate docs): what the data
//! layer hands the engine (a [`BarRow`]), what the engine, the risk rules, the fill model, the
//! metrics and the live runner exchange about trades ([`Fill`], [`FillReason`], [`RoundTrip`],
//! [`Side`]) and the router's [`Regime`].
//! Plain data: this module uses no other module of the crate.

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
