//! Long-format bars and funding to and from Arrow record batches.
//!
//! Input columns are found by name and cast to what the data model needs, so polars frames
//! (`Datetime` ts, string views, categoricals), Parquet files and CSV files all arrive the same way.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringArray, TimestampMillisecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;

use super::panel::{Bars, Funding};
use crate::error::{Error, Result};

fn column<'a>(batch: &'a RecordBatch, name: &str, source: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        let found: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
        Error::format(format!("{source}: missing column '{name}' (found: {})", found.join(", ")))
    })
}

/// `ts` as epoch milliseconds: Int64 is taken as ms, timestamps of any unit are converted.
fn ts_values(array: &ArrayRef, source: &str, out: &mut Vec<i64>) -> Result<()> {
    let as_ms = match array.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Int64 => array.clone(),
        DataType::Timestamp(_, tz) => cast(array, &DataType::Timestamp(TimeUnit::Millisecond, tz.clone()))
            .map_err(|err| Error::format(format!("{source}: column 'ts': {err}")))?,
        DataType::Int32 | DataType::UInt32 | DataType::UInt64 => {
            cast(array, &DataType::Int64).map_err(|err| Error::format(format!("{source}: column 'ts': {err}")))?
        }
        other => {
            return Err(Error::format(format!(
                "{source}: column 'ts' has type {other}; expected epoch milliseconds (int64) or a timestamp"
            )))
        }
    };
    if as_ms.null_count() > 0 {
        let row = (0..as_ms.len()).find(|&r| as_ms.is_null(r)).unwrap_or(0);
        return Err(Error::format(format!("{source}: column 'ts' is null at row {row}")));
    }
    match as_ms.data_type() {
        DataType::Int64 => out.extend_from_slice(as_ms.as_primitive::<Int64Type>().values()),
        _ => out.extend_from_slice(as_ms.as_primitive::<TimestampMillisecondType>().values()),
    }
    Ok(())
}

fn string_values(array: &ArrayRef, name: &str, source: &str, out: &mut Vec<String>) -> Result<()> {
    let strings = cast(array, &DataType::Utf8)
        .map_err(|err| Error::format(format!("{source}: column '{name}' is not text: {err}")))?;
    let strings = strings.as_string::<i32>();
    for row in 0..strings.len() {
        if strings.is_null(row) {
            return Err(Error::format(format!("{source}: column '{name}' is null at row {row}")));
        }
        out.push(strings.value(row).to_string());
    }
    Ok(())
}

/// Numbers as f64; nulls become NaN (validation reports them as non-finite).
fn f64_values(array: &ArrayRef, name: &str, source: &str, out: &mut Vec<f64>) -> Result<()> {
    let numbers = cast(array, &DataType::Float64)
        .map_err(|err| Error::format(format!("{source}: column '{name}' is not numeric: {err}")))?;
    let numbers = numbers.as_primitive::<Float64Type>();
    if numbers.null_count() == 0 {
        out.extend_from_slice(numbers.values());
    } else {
        out.extend(numbers.iter().map(|v| v.unwrap_or(f64::NAN)));
    }
    Ok(())
}

/// Bars from record batches with columns `ts, symbol, open, high, low, close, volume[, turnover]`.
/// `symbol_override` supplies the symbol for files of a store partition (no symbol column).
pub fn bars_from_batches_with(batches: &[RecordBatch], source: &str, symbol_override: Option<&str>) -> Result<Bars> {
    let mut bars = Bars::default();
    let has_turnover = batches.first().is_some_and(|b| b.column_by_name("turnover").is_some());
    if has_turnover {
        bars.turnover = Some(Vec::new());
    }
    for batch in batches {
        ts_values(column(batch, "ts", source)?, source, &mut bars.ts)?;
        match symbol_override {
            Some(symbol) => bars.symbol.extend(std::iter::repeat_n(symbol.to_string(), batch.num_rows())),
            None => string_values(column(batch, "symbol", source)?, "symbol", source, &mut bars.symbol)?,
        }
        f64_values(column(batch, "open", source)?, "open", source, &mut bars.open)?;
        f64_values(column(batch, "high", source)?, "high", source, &mut bars.high)?;
        f64_values(column(batch, "low", source)?, "low", source, &mut bars.low)?;
        f64_values(column(batch, "close", source)?, "close", source, &mut bars.close)?;
        f64_values(column(batch, "volume", source)?, "volume", source, &mut bars.volume)?;
        if let Some(turnover) = bars.turnover.as_mut() {
            f64_values(column(batch, "turnover", source)?, "turnover", source, turnover)?;
        }
    }
    Ok(bars)
}

/// Bars from record batches with columns `ts, symbol, open, high, low, close, volume[, turnover]`.
pub fn bars_from_batches(batches: &[RecordBatch], source: &str) -> Result<Bars> {
    bars_from_batches_with(batches, source, None)
}

fn ts_field() -> Field {
    Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false)
}

fn ts_array(values: &[i64]) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(values.to_vec()).with_timezone("UTC"))
}

fn f64_array(values: &[f64]) -> ArrayRef {
    Arc::new(Float64Array::from(values.to_vec()))
}

/// Bars as one record batch (`ts` as a UTC millisecond timestamp).
pub fn bars_to_batch(bars: &Bars) -> RecordBatch {
    let mut fields = vec![ts_field(), Field::new("symbol", DataType::Utf8, false)];
    let mut columns: Vec<ArrayRef> = vec![ts_array(&bars.ts), Arc::new(StringArray::from_iter_values(&bars.symbol))];
    for (name, values) in [
        ("open", &bars.open),
        ("high", &bars.high),
        ("low", &bars.low),
        ("close", &bars.close),
        ("volume", &bars.volume),
    ] {
        fields.push(Field::new(name, DataType::Float64, false));
        columns.push(f64_array(values));
    }
    if let Some(turnover) = &bars.turnover {
        fields.push(Field::new("turnover", DataType::Float64, false));
        columns.push(f64_array(turnover));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match the schema")
}

/// Funding events from record batches with columns `ts, symbol, rate`.
pub fn funding_from_batches_with(
    batches: &[RecordBatch],
    source: &str,
    symbol_override: Option<&str>,
) -> Result<Funding> {
    let mut funding = Funding::default();
    for batch in batches {
        ts_values(column(batch, "ts", source)?, source, &mut funding.ts)?;
        match symbol_override {
            Some(symbol) => funding.symbol.extend(std::iter::repeat_n(symbol.to_string(), batch.num_rows())),
            None => string_values(column(batch, "symbol", source)?, "symbol", source, &mut funding.symbol)?,
        }
        f64_values(column(batch, "rate", source)?, "rate", source, &mut funding.rate)?;
    }
    Ok(funding)
}

/// Funding events from record batches with columns `ts, symbol, rate`.
pub fn funding_from_batches(batches: &[RecordBatch], source: &str) -> Result<Funding> {
    funding_from_batches_with(batches, source, None)
}

/// Funding events as one record batch.
pub fn funding_to_batch(funding: &Funding) -> RecordBatch {
    let schema = Schema::new(vec![
        ts_field(),
        Field::new("symbol", DataType::Utf8, false),
        Field::new("rate", DataType::Float64, false),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![ts_array(&funding.ts), Arc::new(StringArray::from_iter_values(&funding.symbol)), f64_array(&funding.rate)],
    )
    .expect("columns match the schema")
}
