//! Incremental fetch planning (interfaces.md `xsmom data fetch`): which bars and funding events of
//! `[start, end)` a store still lacks, as the `[from, to)` windows to request. Plain functions of
//! the store and the clock, independent of the exchange; `live::fetch` runs the plan against Bybit.
//!
//! Bars: only closed ones, on the timeframe grid; per symbol, the grid points the store lacks, with
//! runs of missing bars closer than a page merged into one request (a gap that the exchange itself
//! has costs one request per run). Funding events are not on a fixed grid: only the ranges before
//! the first and after the last stored event are requested.

use std::path::Path;

use super::layout::StoreLayout;
use super::store::{read_bars_of_kind, read_funding, BarKind, Selection};
use crate::error::Result;
use crate::timeframe::Timeframe;

/// The time range of a fetch, `[start, end)` in epoch ms, as of the exchange's clock `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchWindow {
    pub start: i64,
    pub end: i64,
    pub now: i64,
}

impl FetchWindow {
    /// The closed bars of the window on the `timeframe` grid, as `[first, end)` bar open times: the
    /// first grid point at or after `start`, up to the bar forming at `now` (excluded).
    pub fn closed_bars(&self, timeframe: Timeframe) -> (i64, i64) {
        let ms = timeframe.ms;
        let bar_end = self.end.min(self.now.div_euclid(ms) * ms);
        let first_bar = self.start.div_euclid(ms) * ms + if self.start % ms == 0 { 0 } else { ms };
        (first_bar, bar_end)
    }

    /// The end of the funding events to ask for: nothing after `now`.
    pub fn funding_end(&self) -> i64 {
        self.end.min(self.now + 1)
    }
}

/// The parts of `[start, end)` outside the stored `[first, last]` (inclusive) range; `step` is the
/// spacing of stored rows (1 ms for funding events, which are not on a fixed grid).
pub fn missing_ranges(stored: Option<(i64, i64)>, start: i64, end: i64, step: i64) -> Vec<(i64, i64)> {
    if start >= end {
        return Vec::new();
    }
    match stored {
        None => vec![(start, end)],
        Some((first, last)) => {
            let mut ranges = Vec::new();
            if start < first {
                ranges.push((start, first.min(end)));
            }
            let tail = (last + step).max(start);
            if tail < end {
                ranges.push((tail, end));
            }
            ranges
        }
    }
}

/// The grid points of `[start, end)` (step `step`) that `stored` (ascending) lacks, as `[from, to)` runs;
/// runs closer than one kline page are merged so that each request fills a page (re-fetched bars
/// replace themselves with the same values).
pub fn missing_bar_ranges(stored: &[i64], start: i64, end: i64, step: i64, page: usize) -> Vec<(i64, i64)> {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    let mut cursor = start;
    for &ts in stored {
        if ts >= end {
            break;
        }
        if ts < cursor {
            continue;
        }
        if ts > cursor {
            runs.push((cursor, ts));
        }
        cursor = ts + step;
    }
    if cursor < end {
        runs.push((cursor, end));
    }
    let span = step.saturating_mul(page as i64);
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for run in runs {
        match merged.last_mut() {
            Some(last) if run.1 - last.0 <= span => last.1 = run.1,
            _ => merged.push(run),
        }
    }
    merged
}

/// The stored bar timestamps of `symbol` (bars of `kind`) inside `[start, end)`.
pub fn stored_bar_ts(
    root: &Path,
    symbol: &str,
    timeframe: Timeframe,
    kind: BarKind,
    start: i64,
    end: i64,
) -> Result<Vec<i64>> {
    if !StoreLayout::new(root).bar_symbol(timeframe, kind, symbol).is_dir() || start >= end {
        return Ok(Vec::new());
    }
    let selection =
        Selection { symbols: Some(vec![symbol.to_string()]), start: Some(start), end: Some(end), timeframe };
    Ok(read_bars_of_kind(root, &selection, kind)?.0.ts)
}

/// The first and last stored funding event of `symbol`, when it has any.
pub fn stored_funding_span(root: &Path, symbol: &str) -> Result<Option<(i64, i64)>> {
    if !StoreLayout::new(root).funding_symbol(symbol).is_dir() {
        return Ok(None);
    }
    let funding = read_funding(root, Some(&[symbol.to_string()]), None, None)?;
    let first = funding.ts.iter().copied().min();
    Ok(first.zip(funding.ts.iter().copied().max()))
}

/// The bar requests for `symbol`: the closed bars of `window` that the store lacks, merged into
/// runs of at most about `page` bars.
pub fn plan_bars(
    root: &Path,
    symbol: &str,
    timeframe: Timeframe,
    kind: BarKind,
    window: FetchWindow,
    page: usize,
) -> Result<Vec<(i64, i64)>> {
    let (first_bar, bar_end) = window.closed_bars(timeframe);
    let stored = stored_bar_ts(root, symbol, timeframe, kind, first_bar, bar_end)?;
    Ok(missing_bar_ranges(&stored, first_bar, bar_end, timeframe.ms, page))
}

/// The funding requests for `symbol`: the parts of `window` before its first and after its last
/// stored event.
pub fn plan_funding(root: &Path, symbol: &str, window: FetchWindow) -> Result<Vec<(i64, i64)>> {
    Ok(missing_ranges(stored_funding_span(root, symbol)?, window.start, window.funding_end(), 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{write_funding_store, write_store_of_kind, Bars, Funding};

    const H: i64 = 3_600_000;

    fn hourly() -> Timeframe {
        Timeframe::parse("1h").unwrap()
    }

    #[test]
    fn ranges_outside_the_stored_span() {
        assert_eq!(missing_ranges(None, 0, 10, 1), [(0, 10)]);
        assert_eq!(missing_ranges(None, 10, 10, 1), []);
        assert_eq!(missing_ranges(Some((3, 6)), 0, 10, 1), [(0, 3), (7, 10)]);
        assert_eq!(missing_ranges(Some((3, 6)), 4, 6, 1), []);
        assert_eq!(missing_ranges(Some((3, 6)), 0, 2, 1), [(0, 2)]);
        assert_eq!(missing_ranges(Some((3, 6)), 8, 10, 1), [(8, 10)]);
        assert_eq!(missing_ranges(Some((0, 2 * H)), 0, 5 * H, H), [(3 * H, 5 * H)]);
    }

    #[test]
    fn missing_bars_are_merged_per_page() {
        // Stored 0, 1, 4, 5 of 0..10: the gaps 2..4 and 6..10.
        let stored = [0, 1, 4, 5];
        assert_eq!(missing_bar_ranges(&stored, 0, 10, 1, 1), [(2, 4), (6, 10)]);
        // A page of 8 spans both gaps: one request from 2 to 10.
        assert_eq!(missing_bar_ranges(&stored, 0, 10, 1, 8), [(2, 10)]);
        // Stored rows outside the range are ignored; nothing stored is one run.
        assert_eq!(missing_bar_ranges(&[-5, 0, 1, 2, 20], 0, 3, 1, 1000), []);
        assert_eq!(missing_bar_ranges(&[], 0, 3 * H, H, 1000), [(0, 3 * H)]);
    }

    #[test]
    fn only_closed_bars_on_the_grid() {
        let window = FetchWindow { start: H / 2, end: 10 * H, now: 5 * H + 1 };
        // The first grid point after start; the bar opening at 5h is still forming.
        assert_eq!(window.closed_bars(hourly()), (H, 5 * H));
        assert_eq!(FetchWindow { start: 2 * H, end: 4 * H, now: 9 * H }.closed_bars(hourly()), (2 * H, 4 * H));
        assert_eq!(window.funding_end(), 5 * H + 2);
        assert_eq!(FetchWindow { start: 0, end: H, now: 9 * H }.funding_end(), H);
    }

    #[test]
    fn plans_against_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let window = FetchWindow { start: 0, end: 10 * H, now: 20 * H };
        // An empty store: everything, bars and funding.
        assert_eq!(plan_bars(root, "BTCUSDT", hourly(), BarKind::Trade, window, 1000).unwrap(), [(0, 10 * H)]);
        assert_eq!(plan_funding(root, "BTCUSDT", window).unwrap(), [(0, 10 * H)]);

        let mut bars = Bars::default();
        for t in [0, 1, 2, 6, 7] {
            bars.push("BTCUSDT", t * H, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0);
        }
        write_store_of_kind(root, hourly(), &bars, BarKind::Trade).unwrap();
        let mut funding = Funding::default();
        funding.push("BTCUSDT", 2 * H, 1e-4);
        funding.push("BTCUSDT", 4 * H, 1e-4);
        write_funding_store(root, &funding).unwrap();

        assert_eq!(
            plan_bars(root, "BTCUSDT", hourly(), BarKind::Trade, window, 1).unwrap(),
            [(3 * H, 6 * H), (8 * H, 10 * H)]
        );
        assert_eq!(plan_bars(root, "BTCUSDT", hourly(), BarKind::Trade, window, 1000).unwrap(), [(3 * H, 10 * H)]);
        // Other symbols and other kinds have their own partitions.
        assert_eq!(plan_bars(root, "ETHUSDT", hourly(), BarKind::Trade, window, 1000).unwrap(), [(0, 10 * H)]);
        assert_eq!(plan_bars(root, "BTCUSDT", hourly(), BarKind::Mark, window, 1000).unwrap(), [(0, 10 * H)]);
        assert_eq!(plan_funding(root, "BTCUSDT", window).unwrap(), [(0, 2 * H), (4 * H + 1, 10 * H)]);
        assert_eq!(stored_funding_span(root, "ETHUSDT").unwrap(), None);
    }
}
