//! Validation of long-format bars (strategy.md §1): every finding names its symbol and ts.
//!
//! Errors (`load` refuses them unless told to drop the rows): duplicate `(symbol, ts)`, a ts off the
//! timeframe grid, `high < max(open, close)`, `low > min(open, close)`, a non-positive price, a
//! negative volume, a missing or non-finite value. Warnings (reported, never dropped): unsorted
//! input, gaps inside a symbol's range, spikes (|log return| above 8 rolling MADs of the previous
//! 500 returns; the MAD is refreshed every 16 bars, which is plenty for a window of 500) and
//! zero-volume bars.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;

use super::panel::Bars;
use super::store::{sort_bars, take_rows};
use crate::error::{Error, Result};
use crate::timeframe::Timeframe;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub symbol: String,
    pub ts: i64,
    pub kind: &'static str,
    pub severity: Severity,
    pub detail: String,
    /// Row of the (sorted) bars the finding is about; errors drop this row with `on_invalid: drop`.
    pub row: Option<usize>,
}

/// Window and threshold of the spike detector.
const SPIKE_WINDOW: usize = 500;
const SPIKE_MIN_HISTORY: usize = 100;
const SPIKE_MADS: f64 = 8.0;
const SPIKE_MAD_REFRESH: usize = 16;

/// All findings for `bars`, which are examined in (symbol, ts) order; rows in findings refer to
/// that sorted order (see [`clean_bars`]).
pub fn validate_bars(bars: &Bars, timeframe: Timeframe) -> Vec<Finding> {
    let mut findings = unsorted_findings(bars);
    findings.extend(validate_sorted(&sort_bars(bars), timeframe));
    findings.sort_by(|a, b| a.symbol.cmp(&b.symbol).then(a.ts.cmp(&b.ts)));
    findings
}

/// One "unsorted" warning per symbol whose ts go backwards in the input order.
fn unsorted_findings(bars: &Bars) -> Vec<Finding> {
    let mut findings = Vec::new();
    let sorted = (1..bars.len()).all(|r| (&bars.symbol[r - 1], bars.ts[r - 1]) <= (&bars.symbol[r], bars.ts[r]));
    if sorted {
        return findings;
    }
    // Input order: one "unsorted" warning per symbol whose ts go backwards.
    let mut last_seen: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    let mut reported: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for row in 0..bars.len() {
        let symbol = bars.symbol[row].as_str();
        let ts = bars.ts[row];
        if let Some(prev) = last_seen.insert(symbol, ts) {
            if ts < prev && reported.insert(symbol) {
                findings.push(finding(
                    symbol,
                    ts,
                    "unsorted",
                    Severity::Warning,
                    format!("ts {ts} comes after {prev}"),
                    None,
                ));
            }
        }
    }
    findings
}

fn finding(
    symbol: &str,
    ts: i64,
    kind: &'static str,
    severity: Severity,
    detail: String,
    row: Option<usize>,
) -> Finding {
    Finding { symbol: symbol.to_string(), ts, kind, severity, detail, row }
}

fn validate_sorted(bars: &Bars, timeframe: Timeframe) -> Vec<Finding> {
    let step = timeframe.ms;
    let mut findings = Vec::new();
    let mut window: std::collections::VecDeque<f64> = std::collections::VecDeque::with_capacity(SPIKE_WINDOW);
    let mut scratch: Vec<f64> = Vec::with_capacity(SPIKE_WINDOW);
    let mut start = 0;
    while start < bars.len() {
        let symbol = bars.symbol[start].as_str();
        let mut end = start;
        while end < bars.len() && bars.symbol[end] == bars.symbol[start] {
            end += 1;
        }
        window.clear();
        let mut mad = f64::NAN;
        let mut since_refresh = SPIKE_MAD_REFRESH;
        let mut prev_valid: Option<usize> = None;
        for row in start..end {
            let ts = bars.ts[row];
            let (o, h, l, c, v) = (bars.open[row], bars.high[row], bars.low[row], bars.close[row], bars.volume[row]);
            let mut error = |kind: &'static str, detail: String| {
                findings.push(finding(symbol, ts, kind, Severity::Error, detail, Some(row)));
            };
            if row > start && bars.ts[row - 1] == ts {
                error("duplicate", format!("second row for ts {ts}"));
                continue;
            }
            if ts.rem_euclid(step) != 0 {
                error("non_grid_ts", format!("ts {ts} is not a multiple of {} ms ({})", step, timeframe.label()));
                continue;
            }
            if ![o, h, l, c, v].iter().all(|x| x.is_finite()) {
                error("non_finite", format!("open {o}, high {h}, low {l}, close {c}, volume {v}"));
                continue;
            }
            if o <= 0.0 || h <= 0.0 || l <= 0.0 || c <= 0.0 {
                error("non_positive_price", format!("open {o}, high {h}, low {l}, close {c}"));
                continue;
            }
            if v < 0.0 {
                error("negative_volume", format!("volume {v}"));
                continue;
            }
            if h < o.max(c) {
                error("high_below_open_close", format!("high {h} < max(open {o}, close {c})"));
                continue;
            }
            if l > o.min(c) {
                error("low_above_open_close", format!("low {l} > min(open {o}, close {c})"));
                continue;
            }
            if v == 0.0 {
                findings.push(finding(symbol, ts, "zero_volume", Severity::Warning, "volume 0".into(), Some(row)));
            }
            if let Some(prev) = prev_valid {
                let missing = (ts - bars.ts[prev]) / step - 1;
                if missing > 0 {
                    findings.push(finding(
                        symbol,
                        bars.ts[prev] + step,
                        "gap",
                        Severity::Warning,
                        format!("{missing} missing bar(s) before ts {ts}"),
                        None,
                    ));
                }
                let log_return = (c / bars.close[prev]).ln();
                if window.len() >= SPIKE_MIN_HISTORY {
                    if since_refresh >= SPIKE_MAD_REFRESH || mad.is_nan() {
                        mad = median_abs_deviation(window.make_contiguous(), &mut scratch);
                        since_refresh = 0;
                    }
                    since_refresh += 1;
                    if log_return.abs() > SPIKE_MADS * mad && log_return != 0.0 {
                        findings.push(finding(
                            symbol,
                            ts,
                            "spike",
                            Severity::Warning,
                            format!("|log return| {:.4} > {SPIKE_MADS} × MAD {:.6}", log_return.abs(), mad),
                            Some(row),
                        ));
                    }
                }
                if window.len() == SPIKE_WINDOW {
                    window.pop_front();
                }
                window.push_back(log_return);
            }
            prev_valid = Some(row);
        }
        start = end;
    }
    findings
}

/// `median(|x − median(x)|)` with linear-time selection.
fn median_abs_deviation(values: &[f64], scratch: &mut Vec<f64>) -> f64 {
    scratch.clear();
    scratch.extend_from_slice(values);
    let median = median_in_place(scratch);
    for x in scratch.iter_mut() {
        *x = (*x - median).abs();
    }
    median_in_place(scratch)
}

fn median_in_place(values: &mut [f64]) -> f64 {
    let n = values.len();
    let mid = n / 2;
    let (_, upper, _) = values.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    let upper = *upper;
    if n % 2 == 1 {
        upper
    } else {
        let lower = values[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        0.5 * (lower + upper)
    }
}

/// Sort bars by (symbol, ts) and apply the validation policy: with errors, refuse (default) or
/// drop the offending rows (`drop_invalid`; the first of duplicate rows is kept).
pub fn clean_bars(bars: &Bars, timeframe: Timeframe, drop_invalid: bool) -> Result<(Bars, Vec<Finding>)> {
    let sorted = sort_bars(bars);
    let mut findings = unsorted_findings(bars);
    findings.extend(validate_sorted(&sorted, timeframe));
    findings.sort_by(|a, b| a.symbol.cmp(&b.symbol).then(a.ts.cmp(&b.ts)));
    let errors: Vec<&Finding> = findings.iter().filter(|f| f.severity == Severity::Error).collect();
    if errors.is_empty() {
        return Ok((sorted, findings));
    }
    if !drop_invalid {
        let first = errors[0];
        return Err(Error::data(format!(
            "{} validation error(s) in the bars; first: {} at ts {}: {} ({}); pass on_invalid=drop to drop the offending rows",
            errors.len(),
            first.symbol,
            first.ts,
            first.kind,
            first.detail
        )));
    }
    let mut keep = vec![true; sorted.len()];
    for error in errors {
        if let Some(row) = error.row {
            keep[row] = false;
        }
    }
    let rows: Vec<usize> = (0..sorted.len()).filter(|&r| keep[r]).collect();
    Ok((take_rows(&sorted, &rows), findings))
}

/// Findings as a record batch: `symbol, ts, kind, severity, detail`.
pub fn findings_to_batch(findings: &[Finding]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(findings.iter().map(|f| f.symbol.as_str()))),
        Arc::new(TimestampMillisecondArray::from_iter_values(findings.iter().map(|f| f.ts)).with_timezone("UTC")),
        Arc::new(StringArray::from_iter_values(findings.iter().map(|f| f.kind))),
        Arc::new(StringArray::from_iter_values(findings.iter().map(|f| f.severity.as_str()))),
        Arc::new(StringArray::from_iter_values(findings.iter().map(|f| f.detail.as_str()))),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("columns match the schema")
}
