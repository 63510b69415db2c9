//! Long-format bars and funding to and from Arrow record batches.
//!
//! Input columns are found by name and cast to what the data model needs, so polars frames
//! (`Datetime` ts, string views, categoricals), Parquet files and CSV files all arrive the same way.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringBuilder, TimestampMillisecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, TimeUnit, TimestampMillisecondType, UInt32Type,
};
use arrow::record_batch::RecordBatch;

use super::panel::{Bars, BarsView, Funding};
use crate::error::{Error, Result};

fn column<'a>(batch: &'a RecordBatch, name: &str, source: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        let found: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
        Error::format(format!("{source}: missing column '{name}' (found: {})", found.join(", ")))
    })
}

/// `ts` as epoch milliseconds: Int64 is taken as ms, timestamps of any unit are converted.
/// `ts` as an array of epoch milliseconds (Int64 or Timestamp(ms)): Int64 is taken as ms,
/// timestamps of any unit are converted; no nulls.
fn ts_ms(array: &ArrayRef, source: &str) -> Result<ArrayRef> {
    let as_ms = match array.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Int64 => array.clone(),
        DataType::Timestamp(_, tz) => cast(array, &DataType::Timestamp(TimeUnit::Millisecond, tz.clone()))
            .map_err(|err| Error::format_from(format!("{source}: column 'ts'"), err))?,
        DataType::Int32 | DataType::UInt32 | DataType::UInt64 => {
            cast(array, &DataType::Int64).map_err(|err| Error::format_from(format!("{source}: column 'ts'"), err))?
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
    Ok(as_ms)
}

/// The i64 values of an array made by [`ts_ms`].
fn ts_slice(array: &ArrayRef) -> &[i64] {
    match array.data_type() {
        DataType::Int64 => array.as_primitive::<Int64Type>().values(),
        _ => array.as_primitive::<TimestampMillisecondType>().values(),
    }
}

fn ts_values(array: &ArrayRef, source: &str, out: &mut Vec<i64>) -> Result<()> {
    out.extend_from_slice(ts_slice(&ts_ms(array, source)?));
    Ok(())
}

/// Intern a text column into `codes` / `names` (see [`Bars`]). String views, large strings and
/// dictionaries (polars categoricals) are read as they are; consecutive equal values, the usual
/// case of data grouped by symbol, cost one comparison.
fn intern_values(
    array: &ArrayRef,
    name: &str,
    source: &str,
    codes: &mut Vec<u32>,
    names: &mut Vec<String>,
) -> Result<()> {
    let null_at = |row: usize| Error::format(format!("{source}: column '{name}' is null at row {row}"));
    if array.null_count() > 0 {
        return Err(null_at((0..array.len()).find(|&r| array.is_null(r)).unwrap_or(0)));
    }
    let mut lookup: HashMap<String, u32> = names.iter().enumerate().map(|(i, n)| (n.clone(), i as u32)).collect();
    let mut code_of = |value: &str| -> u32 {
        if let Some(&code) = lookup.get(value) {
            return code;
        }
        names.push(value.to_string());
        let code = (names.len() - 1) as u32;
        lookup.insert(value.to_string(), code);
        code
    };
    fn run_intern<'a>(
        values: impl Iterator<Item = &'a str>,
        codes: &mut Vec<u32>,
        code_of: &mut impl FnMut(&str) -> u32,
    ) {
        let mut last: Option<(&str, u32)> = None;
        for value in values {
            let code = match last {
                Some((previous, code)) if previous == value => code,
                _ => code_of(value),
            };
            last = Some((value, code));
            codes.push(code);
        }
    }
    codes.reserve(array.len());
    // Nulls were refused above, so values are read without their Option.
    match array.data_type() {
        DataType::Utf8 => {
            let strings = array.as_string::<i32>();
            run_intern((0..strings.len()).map(|r| strings.value(r)), codes, &mut code_of);
        }
        DataType::LargeUtf8 => {
            let strings = array.as_string::<i64>();
            run_intern((0..strings.len()).map(|r| strings.value(r)), codes, &mut code_of);
        }
        DataType::Utf8View => {
            // Equal 16-byte views are equal strings (inline bytes, or the same buffer range), so a
            // row like the previous one costs one integer comparison.
            // A run of equal views (a symbol's rows) is found by one scan and its codes written at
            // once.
            let strings = array.as_string_view();
            let views = strings.views();
            let mut row = 0;
            while row < views.len() {
                let view = views[row];
                let run = run_length(&views[row..], view);
                let code = code_of(strings.value(row));
                codes.extend(std::iter::repeat_n(code, run));
                row += run;
            }
        }
        DataType::Dictionary(_, _) => {
            // Codes of the dictionary's values once, then one lookup per key.
            let keys = cast(array, &DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8)))
                .map_err(|err| Error::format_from(format!("{source}: column '{name}' is not text"), err))?;
            let dictionary = keys.as_dictionary::<UInt32Type>();
            let values = dictionary.values().as_string::<i32>();
            let value_codes: Vec<u32> = (0..values.len()).map(|v| code_of(values.value(v))).collect();
            codes.extend(dictionary.keys().values().iter().map(|&key| value_codes[key as usize]));
        }
        _ => {
            let strings = cast(array, &DataType::Utf8)
                .map_err(|err| Error::format_from(format!("{source}: column '{name}' is not text"), err))?;
            run_intern(strings.as_string::<i32>().iter().flatten(), codes, &mut code_of);
        }
    }
    Ok(())
}

/// How many of `views` from the first are equal to `view`: 16 at a time while all are (a
/// comparison that vectorises), then one at a time.
fn run_length(views: &[u128], view: u128) -> usize {
    let equal_blocks =
        views.chunks_exact(16).take_while(|block| block.iter().fold(true, |all, &v| all & (v == view))).count();
    let from = equal_blocks * 16;
    from + views[from..].iter().take_while(|&&other| other == view).count()
}

/// Numbers as f64; nulls become NaN (validation reports them as non-finite).
fn f64_values(array: &ArrayRef, name: &str, source: &str, out: &mut Vec<f64>) -> Result<()> {
    let numbers = cast(array, &DataType::Float64)
        .map_err(|err| Error::format_from(format!("{source}: column '{name}' is not numeric"), err))?;
    let numbers = numbers.as_primitive::<Float64Type>();
    if numbers.null_count() == 0 {
        out.extend_from_slice(numbers.values());
    } else {
        out.extend(numbers.iter().map(|v| v.unwrap_or(f64::NAN)));
    }
    Ok(())
}

/// Long bars over the buffers of one record batch, without copying the numbers: `ts` and the
/// f64 columns are the arrays' own values (cast first only when of another type, or when nulls
/// must become NaN); symbols are interned as in [`Bars`].
pub struct ArrowBars {
    ts: ArrayRef,
    symbol: Vec<u32>,
    names: Vec<String>,
    /// open, high, low, close, volume, turnover
    numbers: Vec<Float64Array>,
}

impl ArrowBars {
    /// From record batches with columns `ts, symbol, open, high, low, close, volume[, turnover]`;
    /// several batches are concatenated first (a copy).
    pub fn from_batches(batches: &[RecordBatch], source: &str) -> Result<ArrowBars> {
        let batch = match batches {
            [one] => one.clone(),
            [] => return Err(Error::format(format!("{source}: no rows"))),
            many => arrow::compute::concat_batches(&many[0].schema(), many)
                .map_err(|err| Error::format_from(source, err))?,
        };
        let ts = ts_ms(column(&batch, "ts", source)?, source)?;
        let mut symbol = Vec::new();
        let mut names = Vec::new();
        intern_values(column(&batch, "symbol", source)?, "symbol", source, &mut symbol, &mut names)?;
        let mut numbers = Vec::with_capacity(6);
        let with_turnover = batch.column_by_name("turnover").is_some();
        for name in ["open", "high", "low", "close", "volume", "turnover"] {
            if name == "turnover" && !with_turnover {
                break;
            }
            let array = f64_column(&batch, name, source)?;
            let array = array.as_primitive::<Float64Type>().clone();
            // Nulls become NaN (validation reports them as non-finite); the values under a null are undefined.
            let array = if array.null_count() == 0 {
                array
            } else {
                Float64Array::from_iter_values(array.iter().map(|v| v.unwrap_or(f64::NAN)))
            };
            numbers.push(array);
        }
        Ok(ArrowBars { ts, symbol, names, numbers })
    }

    /// From the batches of several sources (the files of a store, or one long file): each batch
    /// with its partition symbol, or `None` when it has a `symbol` column. Each column is
    /// concatenated once (no copy for a single batch); then only the rows of `keep_symbol` symbols
    /// with `keep_ts` times stay.
    pub fn from_parts(
        parts: &[(Option<&str>, RecordBatch)],
        source: &str,
        keep_symbol: impl Fn(&str) -> bool,
        keep_ts: impl Fn(i64) -> bool,
    ) -> Result<ArrowBars> {
        let mut symbol = Vec::new();
        let mut names = Vec::new();
        let mut ts_parts = Vec::with_capacity(parts.len());
        for (partition, batch) in parts {
            let ts = ts_ms(column(batch, "ts", source)?, source)?;
            ts_parts
                .push(cast(&ts, &DataType::Int64).map_err(|err| Error::format_from(format!("{source}: 'ts'"), err))?);
            match partition {
                Some(name) => {
                    let code = super::panel::intern(&mut names, None, name);
                    symbol.extend(std::iter::repeat_n(code, batch.num_rows()));
                }
                None => intern_values(column(batch, "symbol", source)?, "symbol", source, &mut symbol, &mut names)?,
            }
        }
        let concat = |arrays: Vec<ArrayRef>| -> Result<ArrayRef> {
            match arrays.len() {
                1 => Ok(arrays.into_iter().next().expect("one")),
                _ => {
                    let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
                    arrow::compute::concat(&refs).map_err(|err| Error::format_from(source, err))
                }
            }
        };
        let mut ts = if parts.is_empty() {
            Arc::new(Int64Array::from(Vec::<i64>::new())) as ArrayRef
        } else {
            concat(ts_parts)?
        };
        let with_turnover = !parts.is_empty() && parts.iter().all(|(_, b)| b.column_by_name("turnover").is_some());
        let mut numbers = Vec::with_capacity(6);
        for name in ["open", "high", "low", "close", "volume", "turnover"] {
            if name == "turnover" && !with_turnover {
                break;
            }
            let mut arrays = Vec::with_capacity(parts.len());
            for (_, batch) in parts {
                arrays.push(f64_column(batch, name, source)?);
            }
            let array = if arrays.is_empty() {
                Arc::new(Float64Array::from(Vec::<f64>::new())) as ArrayRef
            } else {
                concat(arrays)?
            };
            numbers.push(array.as_primitive::<Float64Type>().clone());
        }
        // Rows outside the selection (row groups are pruned by statistics, not row by row).
        let wanted: Vec<bool> = names.iter().map(|name| keep_symbol(name)).collect();
        let ts_values = ts.as_primitive::<Int64Type>().values();
        let mask: Vec<bool> =
            (0..symbol.len()).map(|row| wanted[symbol[row] as usize] && keep_ts(ts_values[row])).collect();
        if mask.iter().any(|k| !k) {
            let predicate = BooleanArray::from(mask.clone());
            let filter = |array: &dyn Array| {
                arrow::compute::filter(array, &predicate).map_err(|err| Error::format_from(source, err))
            };
            ts = filter(ts.as_ref())?;
            for number in numbers.iter_mut() {
                *number = filter(number)?.as_primitive::<Float64Type>().clone();
            }
            symbol = symbol.iter().zip(&mask).filter(|(_, k)| **k).map(|(c, _)| *c).collect();
        }
        Ok(ArrowBars { ts, symbol, names, numbers })
    }

    /// As one record batch (`ts` as a UTC millisecond timestamp), the numbers without a copy.
    pub fn to_batch(&self) -> RecordBatch {
        let ts = cast(&self.ts, &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())))
            .expect("epoch ms cast to a timestamp");
        let mut fields = vec![ts_field(), Field::new("symbol", DataType::Utf8, false)];
        let mut columns: Vec<ArrayRef> = vec![ts, symbol_array(&self.symbol, &self.names)];
        for (name, values) in ["open", "high", "low", "close", "volume", "turnover"].iter().zip(&self.numbers) {
            fields.push(Field::new(*name, DataType::Float64, false));
            columns.push(Arc::new(values.clone()));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("columns match the schema")
    }

    pub fn view(&self) -> BarsView<'_> {
        let values = |k: usize| -> &[f64] { self.numbers[k].values() };
        BarsView {
            ts: ts_slice(&self.ts),
            symbol: &self.symbol,
            names: &self.names,
            open: values(0),
            high: values(1),
            low: values(2),
            close: values(3),
            volume: values(4),
            turnover: self.numbers.get(5).map(|array| &array.values()[..]),
        }
    }
}

/// A numeric column as Float64 without nulls (a null becomes NaN: validation reports it). A missing
/// `volume` column (mark and index bars) is all NaN.
fn f64_column(batch: &RecordBatch, name: &str, source: &str) -> Result<ArrayRef> {
    if name == "volume" && batch.column_by_name(name).is_none() {
        return Ok(Arc::new(Float64Array::from(vec![f64::NAN; batch.num_rows()])));
    }
    let array = cast(column(batch, name, source)?, &DataType::Float64)
        .map_err(|err| Error::format_from(format!("{source}: column '{name}' is not numeric"), err))?;
    if array.null_count() == 0 {
        return Ok(array);
    }
    let values = array.as_primitive::<Float64Type>();
    Ok(Arc::new(Float64Array::from_iter_values(values.iter().map(|v| v.unwrap_or(f64::NAN)))))
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
            Some(symbol) => {
                let code = super::panel::intern(&mut bars.names, None, symbol);
                bars.symbol.extend(std::iter::repeat_n(code, batch.num_rows()));
            }
            None => {
                intern_values(column(batch, "symbol", source)?, "symbol", source, &mut bars.symbol, &mut bars.names)?
            }
        }
        f64_values(column(batch, "open", source)?, "open", source, &mut bars.open)?;
        f64_values(column(batch, "high", source)?, "high", source, &mut bars.high)?;
        f64_values(column(batch, "low", source)?, "low", source, &mut bars.low)?;
        f64_values(column(batch, "close", source)?, "close", source, &mut bars.close)?;
        match batch.column_by_name("volume") {
            // Mark and index bars have no volume (NaN; validation refuses it for traded bars).
            None => bars.volume.extend(std::iter::repeat_n(f64::NAN, batch.num_rows())),
            Some(volume) => f64_values(volume, "volume", source, &mut bars.volume)?,
        }
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

/// Interned symbols as a plain text column.
fn symbol_array(codes: &[u32], names: &[String]) -> ArrayRef {
    let bytes = codes.iter().map(|&c| names[c as usize].len()).sum();
    let mut builder = StringBuilder::with_capacity(codes.len(), bytes);
    for &code in codes {
        builder.append_value(&names[code as usize]);
    }
    Arc::new(builder.finish())
}

/// Bars as one record batch (`ts` as a UTC millisecond timestamp).
pub fn bars_to_batch(bars: &Bars) -> RecordBatch {
    let mut fields = vec![ts_field(), Field::new("symbol", DataType::Utf8, false)];
    let mut columns: Vec<ArrayRef> = vec![ts_array(&bars.ts), symbol_array(&bars.symbol, &bars.names)];
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
            Some(symbol) => {
                let code = super::panel::intern(&mut funding.names, None, symbol);
                funding.symbol.extend(std::iter::repeat_n(code, batch.num_rows()));
            }
            None => intern_values(
                column(batch, "symbol", source)?,
                "symbol",
                source,
                &mut funding.symbol,
                &mut funding.names,
            )?,
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
        vec![ts_array(&funding.ts), symbol_array(&funding.symbol, &funding.names), f64_array(&funding.rate)],
    )
    .expect("columns match the schema")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringViewArray};

    proptest::proptest! {
        /// Interning string views by runs gives every row the code of its text, codes in order of
        /// first appearance: runs shorter and longer than a block, texts inline (≤ 12 bytes) and
        /// not, a text coming back after another.
        #[test]
        fn string_views_are_interned_row_by_row(
            runs in proptest::collection::vec((0usize..4, 1usize..40), 1..12),
        ) {
            let texts = ["AUSDT", "BUSDT", "A_LONGER_SYMBOL_USDT", "B_LONGER_SYMBOL_USDT"];
            let rows: Vec<&str> = runs.iter().flat_map(|&(text, len)| std::iter::repeat_n(texts[text], len)).collect();
            let array: ArrayRef = Arc::new(StringViewArray::from_iter_values(rows.iter().copied()));
            let (mut codes, mut names) = (Vec::new(), Vec::new());
            super::intern_values(&array, "symbol", "test", &mut codes, &mut names).unwrap();
            proptest::prop_assert_eq!(codes.len(), rows.len());
            for (code, text) in codes.iter().zip(&rows) {
                proptest::prop_assert_eq!(names[*code as usize].as_str(), *text);
            }
            let mut first_seen: Vec<&str> = Vec::new();
            for text in &rows {
                if !first_seen.contains(text) {
                    first_seen.push(text);
                }
            }
            proptest::prop_assert_eq!(names, first_seen.iter().map(|t| t.to_string()).collect::<Vec<_>>());
        }
    }
}
