//! Backtest outputs as Arrow record batches (backtest.md §4); `ts` columns are UTC millisecond
//! timestamps so that polars shows them as `Datetime("ms", "UTC")`.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, StringViewArray, TimestampMillisecondArray, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;

use super::{BacktestResult, SignalRecord};
use crate::model::FillReason;

pub(crate) fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

pub(crate) fn ts_array(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(values).with_timezone("UTC"))
}

pub(crate) fn f64_array(values: Vec<f64>) -> ArrayRef {
    Arc::new(Float64Array::from(values))
}

/// Text columns are Arrow string views: polars keeps its strings as views, so it takes them as they
/// are (a `Utf8` column would be converted on import, ~14 ns a value: most of handing `fills` over).
pub(crate) const TEXT: DataType = DataType::Utf8View;

/// A text column ([`TEXT`]) of any values (each appended to a view builder).
pub(crate) fn text_array<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringViewArray::from_iter_values(values))
}

/// A text column of a few distinct values (sides, reasons, regimes: static strings, found by
/// their address first): each value's view is made once and gathered by code, which costs a
/// fraction of appending every value to a builder.
pub(crate) fn few_text_array<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    let mut text = FewText::default();
    values.for_each(|value| text.push(value));
    text.into_array()
}

/// [`few_text_array`] a value at a time: codes in the order the values first come.
#[derive(Default)]
pub(crate) struct FewText<'a> {
    names: Vec<&'a str>,
    codes: Vec<u32>,
}

impl<'a> FewText<'a> {
    #[inline]
    fn push(&mut self, value: &'a str) {
        let names = &mut self.names;
        let known =
            names.iter().position(|name| std::ptr::eq(*name, value)).or_else(|| names.iter().position(|n| *n == value));
        let code = known.unwrap_or_else(|| {
            names.push(value);
            names.len() - 1
        });
        self.codes.push(code as u32);
    }

    fn into_array(self) -> ArrayRef {
        coded_text_array(&self.names, self.codes)
    }
}

/// The text of a position's side (+1 or −1) by its code ([`side_code`]), and of a fill's.
const SIDES: [&str; 2] = ["long", "short"];
const FILL_SIDES: [&str; 2] = ["buy", "sell"];

/// 0 for +1 (long, a buy), 1 for −1.
#[inline]
fn side_code(side: i8) -> u32 {
    u32::from(side <= 0)
}

/// A text column of fill reasons: each reason's text by its code (`reason as u32`), gathered.
fn reason_array(codes: Vec<u32>) -> ArrayRef {
    coded_text_array(&FillReason::ALL.map(FillReason::as_str), codes)
}

/// A text column of names by their codes (`names[code]` per row): the views of the names are made
/// once and gathered, so a long table (weights, signals: a row per bar and symbol) copies 16 bytes
/// a row and shares one buffer of names.
pub(crate) fn coded_text_array(names: &[impl AsRef<str>], codes: Vec<u32>) -> ArrayRef {
    let names = StringViewArray::from_iter_values(names.iter().map(AsRef::as_ref));
    arrow::compute::take(&names, &UInt32Array::from(codes), None).expect("codes index the names")
}

pub(crate) fn batch(fields: Vec<(&str, DataType)>, columns: Vec<ArrayRef>) -> RecordBatch {
    let schema =
        Schema::new(fields.into_iter().map(|(name, dtype)| Field::new(name, dtype, false)).collect::<Vec<_>>());
    RecordBatch::try_new(Arc::new(schema), columns).expect("columns match the schema")
}

/// Per bar: `ts, equity, cash, gross, net, turnover, fees, funding, n_long, n_short, regime, k,
/// vol_scale, kill_switch`.
pub fn equity_batch(result: &BacktestResult) -> RecordBatch {
    let b = &result.bars;
    batch(
        vec![
            ("ts", ts_type()),
            ("equity", DataType::Float64),
            ("cash", DataType::Float64),
            ("gross", DataType::Float64),
            ("net", DataType::Float64),
            ("turnover", DataType::Float64),
            ("fees", DataType::Float64),
            ("funding", DataType::Float64),
            ("n_long", DataType::UInt32),
            ("n_short", DataType::UInt32),
            ("regime", TEXT),
            ("k", DataType::UInt32),
            ("vol_scale", DataType::Float64),
            ("kill_switch", DataType::Boolean),
        ],
        vec![
            ts_array(result.ts.clone()),
            f64_array(b.equity.clone()),
            f64_array(b.cash.clone()),
            f64_array(b.gross.clone()),
            f64_array(b.net.clone()),
            f64_array(b.turnover.clone()),
            f64_array(b.fees.clone()),
            f64_array(b.funding.clone()),
            Arc::new(UInt32Array::from(b.n_long.clone())),
            Arc::new(UInt32Array::from(b.n_short.clone())),
            few_text_array(b.regime.iter().copied()),
            Arc::new(UInt32Array::from(b.k.clone())),
            f64_array(b.vol_scale.clone()),
            Arc::new(BooleanArray::from(b.kill_switch.clone())),
        ],
    )
}

/// Per bar and symbol, for every symbol with a close at that bar or a position: `ts, symbol,
/// target_weight, model_weight, weight, units` (`target_weight` is the admitted target,
/// `model_weight` the strategy's before admission).
pub fn weights_batch(result: &BacktestResult) -> RecordBatch {
    let book = &result.book;
    // Every column at its final size, each cell written in place at its row in one pass over the
    // bars (at the fixture's 117 504 rows 1.73 → 1.29 ms, interleaved): grown a push at a time the
    // six vectors were copied as they grew, and each push stored a length that the next row's
    // push of the same column loaded again; rows first gathered on the stack a block at a time
    // and appended were in between (1.55 ms).
    let n_rows = weights_rows(result);
    let mut ts = vec![0; n_rows];
    let mut symbol = vec![0u32; n_rows];
    let [mut target, mut model, mut weight, mut units]: [Vec<f64>; 4] = std::array::from_fn(|_| vec![0.0; n_rows]);
    let mut row = 0;
    for t in 0..result.ts.len() {
        let mut entries = book.bar(t).peekable();
        for i in 0..result.symbols.len() {
            // Book entries of a bar are in symbol order, so one cursor walks them alongside.
            let entry = entries.next_if(|&e| book.symbol[e] as usize == i);
            if result.listed[[t, i]] || entry.is_some() {
                (ts[row], symbol[row]) = (result.ts[t], i as u32);
                if let Some(e) = entry {
                    (target[row], model[row]) = (book.target_weight[e], book.model_weight[e]);
                    (weight[row], units[row]) = (book.weight[e], book.units[e]);
                }
                row += 1;
            }
        }
    }
    assert_eq!(row, n_rows, "weights_rows counts the rows written");
    batch(
        vec![
            ("ts", ts_type()),
            ("symbol", TEXT),
            ("target_weight", DataType::Float64),
            ("model_weight", DataType::Float64),
            ("weight", DataType::Float64),
            ("units", DataType::Float64),
        ],
        vec![
            ts_array(ts),
            coded_text_array(&result.symbols, symbol),
            f64_array(target),
            f64_array(model),
            f64_array(weight),
            f64_array(units),
        ],
    )
}

/// The rows of [`weights_batch`]: the listed cells, and the book's entries of cells not listed.
fn weights_rows(result: &BacktestResult) -> usize {
    let book = &result.book;
    let listed = result.listed.iter().filter(|&&listed| listed).count();
    let unlisted_entries = (0..result.ts.len())
        .map(|t| book.bar(t).filter(|&e| !result.listed[[t, book.symbol[e] as usize]]).count())
        .sum::<usize>();
    listed + unlisted_entries
}

/// One `T × N` matrix of the book (`target_weight`, `model_weight`, `weight` or `units`) as a wide
/// table: `ts`, then one column per symbol (0 where the book holds nothing).
pub fn wide_batch(result: &BacktestResult, column: &str) -> crate::error::Result<RecordBatch> {
    let matrix = match column {
        "target_weight" => result.target_weights(),
        "model_weight" => result.model_weights(),
        "weight" => result.weights(),
        "units" => result.units(),
        other => {
            return Err(crate::error::Error::invalid(format!(
                "column: expected target_weight, model_weight, weight or units, got {other:?}"
            )))
        }
    };
    let mut fields = vec![("ts", ts_type())];
    fields.extend(result.symbols.iter().map(|symbol| (symbol.as_str(), DataType::Float64)));
    let mut columns = vec![ts_array(result.ts.clone())];
    columns.extend(matrix.columns().into_iter().map(|values| f64_array(values.to_vec())));
    Ok(batch(fields, columns))
}

/// One fill as every fills table shows it (the backtest's and the live replay's).
pub(crate) struct FillRow {
    pub ts: i64,
    pub buy: bool,
    pub qty: f64,
    pub price: f64,
    pub notional: f64,
    pub fee: f64,
    pub reason: FillReason,
}

/// The one fills schema: `ts, symbol, side, qty, price, notional, fee, reason` of `rows`, as
/// fields and columns that a table extends with its own (`meta_p`; `maker, client_order_id`);
/// `symbols` is the symbol column of the rows. One pass over the rows: a pass per column read
/// every row again (42 600 fills at 36 × 8 760: 1.6 ms → 0.8 ms).
pub(crate) fn fill_columns<'a, T: 'a>(
    rows: &'a [T],
    symbols: ArrayRef,
    row: impl Fn(&'a T) -> FillRow,
) -> (Vec<(&'static str, DataType)>, Vec<ArrayRef>) {
    let n = rows.len();
    // Columns written in place at each row's index: pushes kept each vector's length in memory,
    // and the next row's pushes waited on those stores. Sides and reasons as codes into their
    // texts: a search for each row's text was a third of the table.
    let mut ts = vec![0; n];
    let (mut side, mut reason) = (vec![0u32; n], vec![0u32; n]);
    let [mut qty, mut price, mut notional, mut fee]: [Vec<f64>; 4] = std::array::from_fn(|_| vec![0.0; n]);
    for (k, item) in rows.iter().enumerate() {
        let fill = row(item);
        ts[k] = fill.ts;
        side[k] = u32::from(!fill.buy);
        qty[k] = fill.qty;
        price[k] = fill.price;
        notional[k] = fill.notional;
        fee[k] = fill.fee;
        reason[k] = fill.reason as u32;
    }
    let fields = vec![
        ("ts", ts_type()),
        ("symbol", TEXT),
        ("side", TEXT),
        ("qty", DataType::Float64),
        ("price", DataType::Float64),
        ("notional", DataType::Float64),
        ("fee", DataType::Float64),
        ("reason", TEXT),
    ];
    let columns = vec![
        ts_array(ts),
        symbols,
        coded_text_array(&FILL_SIDES, side),
        f64_array(qty),
        f64_array(price),
        f64_array(notional),
        f64_array(fee),
        reason_array(reason),
    ];
    (fields, columns)
}

/// Fills: the fills schema ([`fill_columns`]), then `meta_p` (the meta-labeler's p of the entry
/// the fill opened, NaN where it was not consulted).
pub fn fills_batch(result: &BacktestResult) -> RecordBatch {
    // Two collects of known length (`unzip` pushes a row at a time into both).
    let codes: Vec<u32> = result.fills.iter().map(|f| f.symbol as u32).collect();
    let meta_p: Vec<f64> = result.fills.iter().map(|f| f.meta_p).collect();
    let (mut fields, mut columns) =
        fill_columns(&result.fills, coded_text_array(&result.symbols, codes), |f| FillRow {
            ts: f.ts,
            buy: f.side > 0,
            qty: f.qty,
            price: f.price,
            notional: f.notional,
            fee: f.fee,
            reason: f.reason,
        });
    fields.push(("meta_p", DataType::Float64));
    columns.push(f64_array(meta_p));
    batch(fields, columns)
}

/// Entries the meta-labeler skipped: `ts, symbol, side, p` (`ts`: the decision bar's open time;
/// empty when `strategy.meta_label` is off).
pub fn meta_skipped_batch(result: &BacktestResult) -> RecordBatch {
    let skipped = &result.meta_skipped;
    batch(
        vec![("ts", ts_type()), ("symbol", TEXT), ("side", TEXT), ("p", DataType::Float64)],
        vec![
            ts_array(skipped.iter().map(|s| s.ts).collect()),
            coded_text_array(&result.symbols, skipped.iter().map(|s| s.symbol as u32).collect()),
            coded_text_array(&SIDES, skipped.iter().map(|s| side_code(s.side)).collect()),
            f64_array(skipped.iter().map(|s| s.p).collect()),
        ],
    )
}

/// Round trips: `symbol, side, entry_ts, exit_ts, entry_price, exit_price, qty, pnl, return,
/// bars_held, exit_reason`.
pub fn trades_batch(result: &BacktestResult) -> RecordBatch {
    let trips = &result.round_trips;
    batch(
        vec![
            ("symbol", TEXT),
            ("side", TEXT),
            ("entry_ts", ts_type()),
            ("exit_ts", ts_type()),
            ("entry_price", DataType::Float64),
            ("exit_price", DataType::Float64),
            ("qty", DataType::Float64),
            ("pnl", DataType::Float64),
            ("return", DataType::Float64),
            ("bars_held", DataType::Int64),
            ("exit_reason", TEXT),
        ],
        vec![
            coded_text_array(&result.symbols, trips.iter().map(|r| r.symbol as u32).collect()),
            coded_text_array(&SIDES, trips.iter().map(|r| side_code(r.side)).collect()),
            ts_array(trips.iter().map(|r| r.entry_ts).collect()),
            ts_array(trips.iter().map(|r| r.exit_ts).collect()),
            f64_array(trips.iter().map(|r| r.entry_price).collect()),
            f64_array(trips.iter().map(|r| r.exit_price).collect()),
            f64_array(trips.iter().map(|r| r.qty).collect()),
            f64_array(trips.iter().map(|r| r.pnl).collect()),
            f64_array(trips.iter().map(|r| r.ret).collect()),
            Arc::new(Int64Array::from_iter_values(trips.iter().map(|r| r.bars_held as i64))),
            reason_array(trips.iter().map(|r| r.exit_reason as u32).collect()),
        ],
    )
}

/// Per listed bar and symbol: `ts, symbol, momentum, z, signal, eligible` — the record's own
/// vectors as the table's columns (no copy but the text codes and the packed booleans).
pub fn signals_batch(symbols: &[String], record: SignalRecord) -> RecordBatch {
    let SignalRecord { ts, symbol, momentum, z, signal, eligible } = record;
    batch(
        vec![
            ("ts", ts_type()),
            ("symbol", TEXT),
            ("momentum", DataType::Float64),
            ("z", DataType::Float64),
            ("signal", DataType::Float64),
            ("eligible", DataType::Boolean),
        ],
        vec![
            ts_array(ts),
            coded_text_array(symbols, symbol),
            f64_array(momentum),
            f64_array(z),
            f64_array(signal),
            Arc::new(BooleanArray::from(eligible)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};

    use crate::model::FillReason;

    fn strings(array: &arrow::array::ArrayRef) -> Vec<String> {
        assert_eq!(array.data_type(), &super::TEXT);
        array.as_string_view().iter().map(|value| value.expect("no nulls").to_string()).collect()
    }

    #[test]
    fn text_columns_hold_their_values_in_order() {
        // Equal values at different addresses, long and short ones, and many distinct ones.
        let owned: Vec<String> = (0..40).map(|k| format!("value number {}", k % 7)).collect();
        let mut values: Vec<&str> = vec!["buy", "sell", "buy", "a much longer reason text", "", "sell"];
        values.extend(owned.iter().map(String::as_str));
        let expected: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        assert_eq!(strings(&super::few_text_array(values.iter().copied())), expected);
        assert_eq!(strings(&super::text_array(values.iter().copied())), expected);
        let names = ["BTCUSDT".to_string(), "1000PEPEUSDT_LONG_NAME".to_string()];
        let coded = super::coded_text_array(&names, vec![1, 0, 0, 1]);
        assert_eq!(strings(&coded), ["1000PEPEUSDT_LONG_NAME", "BTCUSDT", "BTCUSDT", "1000PEPEUSDT_LONG_NAME"]);
        assert!(super::few_text_array(std::iter::empty()).is_empty());
    }

    #[test]
    fn fill_columns_hold_every_row_in_order() {
        use crate::model::FillReason::{Flatten, KillSwitch, Rebalance, Stop};
        use arrow::datatypes::{Float64Type, TimestampMillisecondType};
        let reasons = [Rebalance, Stop, Rebalance, KillSwitch, Flatten];
        let rows: Vec<(i64, bool, f64, FillReason)> =
            (0..5).map(|k| (1_000 * k as i64, k % 2 == 0, 0.5 + k as f64, reasons[k])).collect();
        let seen = std::cell::Cell::new(0);
        let row = |r: &(i64, bool, f64, FillReason)| {
            seen.set(seen.get() + 1);
            super::FillRow {
                ts: r.0,
                buy: r.1,
                qty: r.2,
                price: 2.0 * r.2,
                notional: 3.0 * r.2,
                fee: -r.2,
                reason: r.3,
            }
        };
        let (fields, columns) =
            super::fill_columns(&rows, super::text_array(["A", "B", "A", "C", "B"].into_iter()), row);
        let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, ["ts", "symbol", "side", "qty", "price", "notional", "fee", "reason"]);
        assert_eq!(seen.get(), 5, "one call per row");
        let ts: Vec<i64> = columns[0].as_primitive::<TimestampMillisecondType>().values().to_vec();
        assert_eq!(ts, [0, 1_000, 2_000, 3_000, 4_000]);
        assert_eq!(strings(&columns[1]), ["A", "B", "A", "C", "B"]);
        assert_eq!(strings(&columns[2]), ["buy", "sell", "buy", "sell", "buy"]);
        let numbers = |k: usize| columns[k].as_primitive::<Float64Type>().values().to_vec();
        assert_eq!(numbers(3), [0.5, 1.5, 2.5, 3.5, 4.5]);
        assert_eq!(numbers(4), [1.0, 3.0, 5.0, 7.0, 9.0]);
        assert_eq!(numbers(5), [1.5, 4.5, 7.5, 10.5, 13.5]);
        assert_eq!(numbers(6), [-0.5, -1.5, -2.5, -3.5, -4.5]);
        assert_eq!(strings(&columns[7]), ["rebalance", "stop", "rebalance", "kill_switch", "flatten"]);
    }
}
