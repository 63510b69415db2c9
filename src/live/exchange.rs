//! The one interface the runner trades through (live.md §1): Bybit (mainnet / testnet), `replay`
//! (a bar store played as if live, with a simulated matching engine) and `paper`.

use super::types::{ExchangeResult, Execution, FundingRate, Instrument, Kline, Order, OrderRequest, Position, Quote};
use crate::timeframe::Timeframe;

#[allow(async_fn_in_trait)]
pub trait Exchange {
    /// Current exchange time (epoch ms); the replay exchange's simulated clock.
    async fn server_time_ms(&self) -> ExchangeResult<i64>;
    async fn instruments(&self, symbols: &[String]) -> ExchangeResult<Vec<Instrument>>;
    /// Closed bars with `start_ms ≤ ts < end_ms`, ascending, without the forming bar.
    async fn closed_klines(
        &self,
        symbol: &str,
        interval: Timeframe,
        start_ms: i64,
        end_ms: i64,
    ) -> ExchangeResult<Vec<Kline>>;
    async fn funding_history(&self, symbol: &str, start_ms: i64, end_ms: i64) -> ExchangeResult<Vec<FundingRate>>;
    /// Closed mark-price bars as [`Exchange::closed_klines`] (no volume: NaN), for the basis term of the
    /// carry sleeve; an exchange without mark prices serves none.
    async fn closed_mark_klines(
        &self,
        symbol: &str,
        interval: Timeframe,
        start_ms: i64,
        end_ms: i64,
    ) -> ExchangeResult<Vec<Kline>> {
        let _ = (symbol, interval, start_ms, end_ms);
        Ok(Vec::new())
    }
    async fn quote(&self, symbol: &str) -> ExchangeResult<Quote>;
    async fn positions(&self) -> ExchangeResult<Vec<Position>>;
    async fn open_orders(&self) -> ExchangeResult<Vec<Order>>;
    /// Account equity in USDT (wallet balance plus unrealised PnL).
    async fn equity(&self) -> ExchangeResult<f64>;
    async fn place_order(&self, request: &OrderRequest) -> ExchangeResult<Order>;
    async fn cancel_order(&self, symbol: &str, client_order_id: &str) -> ExchangeResult<()>;
    async fn cancel_all(&self, symbol: Option<&str>) -> ExchangeResult<()>;
    /// One order by its client id, open or recently closed (`None`: the exchange does not know it).
    /// The simulated exchanges keep no closed orders: an order that is not open is not known.
    async fn order_status(&self, symbol: &str, client_order_id: &str) -> ExchangeResult<Option<Order>> {
        let _ = symbol;
        Ok(self.open_orders().await?.into_iter().find(|o| o.client_order_id == client_order_id))
    }
    /// The account's fills since `since_ms` (every page), newest first or in any order. The
    /// simulated exchanges report none here (their fills are read from the account directly).
    async fn executions(&self, since_ms: i64) -> ExchangeResult<Vec<Execution>> {
        let _ = since_ms;
        Ok(Vec::new())
    }
    /// Whether the exchange matches resting stop (trigger) orders against the bars it simulates
    /// (`replay`): then the runner keeps the engine's stop levels resting there, and they fill inside
    /// the bar as the backtest's stops do. Elsewhere the risk loop watches the stops.
    fn resting_stops(&self) -> bool {
        false
    }
}
