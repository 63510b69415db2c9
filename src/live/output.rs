//! Files a replay run leaves in `--out DIR` (live.md §5): the model's weights in the backtester's
//! schema, the simulated fills and the account equity.

use std::path::Path;
use std::sync::Arc;

use arrow::array::BooleanArray;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;

use super::types::Execution;
use crate::backtest::output::{
    batch, f64_array, fill_columns, text_array, ts_array, ts_type, weights_batch, FillRow, TEXT,
};
use crate::backtest::BacktestResult;
use crate::data::store::write_parquet_atomically;
use crate::error::Result;
use crate::model::Side;

pub fn write_replay_outputs(
    dir: &Path,
    model: &BacktestResult,
    executions: &[Execution],
    equity: &[(i64, f64)],
) -> Result<()> {
    write_parquet_atomically(&dir.join("weights.parquet"), &weights_batch(model), 65_536)?;
    write_parquet_atomically(&dir.join("fills.parquet"), &fills_batch(executions), 65_536)?;
    let equity = batch(
        vec![("ts", ts_type()), ("equity", DataType::Float64)],
        vec![ts_array(equity.iter().map(|e| e.0).collect()), f64_array(equity.iter().map(|e| e.1).collect())],
    );
    write_parquet_atomically(&dir.join("equity.parquet"), &equity, 65_536)
}

/// The account's fills in the backtest's fills schema ([`crate::backtest::output::fills_batch`]:
/// `ts, symbol, side, qty, price, notional, fee, reason`, same names, types and order; a test
/// holds them equal), then what only an exchange fill has: `maker` (a resting limit filled) and
/// `client_order_id`. The backtest's `meta_p` is the model's, not the account's: not here.
pub fn fills_batch(executions: &[Execution]) -> RecordBatch {
    let symbols = text_array(executions.iter().map(|e| e.symbol.as_str()));
    let (mut fields, mut columns) = fill_columns(executions, symbols, |e| FillRow {
        ts: e.ts,
        buy: e.side == Side::Buy,
        qty: e.qty,
        price: e.price,
        notional: e.qty * e.price,
        fee: e.fee,
        reason: e.reason,
    });
    fields.extend([("maker", DataType::Boolean), ("client_order_id", TEXT)]);
    columns.push(Arc::new(BooleanArray::from(executions.iter().map(|e| e.maker).collect::<Vec<_>>())));
    columns.push(text_array(executions.iter().map(|e| e.client_order_id.as_str())));
    batch(fields, columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::Engine;
    use crate::config::Config;
    use crate::model::FillReason;
    use crate::timeframe::Timeframe;

    #[test]
    fn replay_fills_have_the_backtests_fill_columns_then_the_exchanges() {
        let symbols = vec!["BTCUSDT".to_string()];
        let model = Engine::new(&symbols, Timeframe::parse("1h").unwrap(), &[true], &Config::default(), false)
            .unwrap()
            .finish();
        let backtest = crate::backtest::output::fills_batch(&model).schema();
        let execution = Execution {
            ts: 3_600_000,
            symbol: "BTCUSDT".into(),
            side: Side::Sell,
            qty: 0.5,
            price: 100.0,
            fee: 0.01,
            maker: true,
            client_order_id: "xs-1-BTCUSDT-1".into(),
            reason: FillReason::Rebalance,
        };
        let replay = fills_batch(&[execution]);
        let shared: Vec<_> = backtest.fields().iter().filter(|f| f.name() != "meta_p").cloned().collect();
        let schema = replay.schema();
        let (common, own) = schema.fields().split_at(shared.len());
        assert_eq!(common, &shared[..], "names, types and order of the columns a fill has in both");
        assert_eq!(own.iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), ["maker", "client_order_id"]);
        assert_eq!(backtest.fields().len(), shared.len() + 1, "the backtest's own column is meta_p alone");
        let notional = replay.column(5).as_any().downcast_ref::<arrow::array::Float64Array>().unwrap().value(0);
        assert_eq!(notional, 50.0);
    }
}
