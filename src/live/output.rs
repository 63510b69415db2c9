//! Files a replay run leaves in `--out DIR` (live.md §5): the model's weights in the backtester's
//! schema, the simulated fills and the account equity.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{BooleanArray, StringArray};
use arrow::datatypes::DataType;

use super::types::Execution;
use crate::backtest::output::{batch, f64_array, ts_array, ts_type, weights_batch};
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
    let fills = batch(
        vec![
            ("ts", ts_type()),
            ("symbol", DataType::Utf8),
            ("side", DataType::Utf8),
            ("qty", DataType::Float64),
            ("price", DataType::Float64),
            ("notional", DataType::Float64),
            ("fee", DataType::Float64),
            ("reason", DataType::Utf8),
            ("maker", DataType::Boolean),
            ("client_order_id", DataType::Utf8),
        ],
        vec![
            ts_array(executions.iter().map(|e| e.ts).collect()),
            Arc::new(StringArray::from_iter_values(executions.iter().map(|e| e.symbol.as_str()))),
            Arc::new(StringArray::from_iter_values(executions.iter().map(|e| {
                if e.side == Side::Buy {
                    "buy"
                } else {
                    "sell"
                }
            }))),
            f64_array(executions.iter().map(|e| e.qty).collect()),
            f64_array(executions.iter().map(|e| e.price).collect()),
            f64_array(executions.iter().map(|e| e.qty * e.price).collect()),
            f64_array(executions.iter().map(|e| e.fee).collect()),
            Arc::new(StringArray::from_iter_values(executions.iter().map(|e| e.reason.as_str()))),
            Arc::new(BooleanArray::from(executions.iter().map(|e| e.maker).collect::<Vec<_>>())),
            Arc::new(StringArray::from_iter_values(executions.iter().map(|e| e.client_order_id.as_str()))),
        ],
    );
    write_parquet_atomically(&dir.join("fills.parquet"), &fills, 65_536)?;
    let equity = batch(
        vec![("ts", ts_type()), ("equity", DataType::Float64)],
        vec![ts_array(equity.iter().map(|e| e.0).collect()), f64_array(equity.iter().map(|e| e.1).collect())],
    );
    write_parquet_atomically(&dir.join("equity.parquet"), &equity, 65_536)
}
