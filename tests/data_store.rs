//! The bar store and long files against the real fixture in `data/` and small hand-made files.

use std::fs;
use std::path::{Path, PathBuf};

use xsmom::data::{self, Bars, Funding, Panel, Selection, Severity, SpikeRule};
use xsmom::Timeframe;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

fn hour() -> Timeframe {
    Timeframe::parse("1h").unwrap()
}

const JUNE_1: i64 = 1_748_736_000_000; // 2025-06-01 00:00 UTC
const H: i64 = 3_600_000;

fn small_bars(symbols: &[&str], n: usize, start: i64) -> Bars {
    let mut bars = Bars::default();
    for (k, symbol) in symbols.iter().enumerate() {
        for t in 0..n {
            let price = 100.0 + k as f64 * 10.0 + t as f64;
            let code = bars.intern(symbol);
            bars.ts.push(start + t as i64 * H);
            bars.symbol.push(code);
            bars.open.push(price);
            bars.high.push(price + 1.0);
            bars.low.push(price - 1.0);
            bars.close.push(price + 0.5);
            bars.volume.push(10.0 + t as f64);
        }
    }
    bars
}

#[test]
fn reads_the_fixture_store() {
    let (bars, stats) = data::read_bars(&fixture(), &Selection::all(hour())).unwrap();
    assert_eq!(bars.len(), 32 * 3672);
    assert_eq!(stats.files_opened, 32);
    let panel = Panel::from_bars(&bars, hour()).unwrap();
    assert_eq!((panel.n_bars(), panel.n_symbols()), (3672, 32));
    assert_eq!(panel.ts[0], JUNE_1);
    assert_eq!(panel.symbols[0], "1000PEPEUSDT");
    assert!(panel.close.iter().all(|c| c.is_finite()));
    // Sorted by (symbol, ts).
    assert!((1..bars.len()).all(|r| (bars.symbol_of(r - 1), bars.ts[r - 1]) < (bars.symbol_of(r), bars.ts[r])));
    // Canonical: names sorted, codes in name order.
    assert!(bars.names.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn selection_is_pushed_down_to_files_and_row_groups() {
    let selection = Selection {
        symbols: Some(vec!["ETHUSDT".into()]),
        start: Some(JUNE_1 + 40 * 24 * H),
        end: Some(JUNE_1 + 47 * 24 * H),
        timeframe: hour(),
    };
    let (bars, stats) = data::read_bars(&fixture(), &selection).unwrap();
    assert_eq!(bars.len(), 7 * 24);
    assert!((0..bars.len()).all(|r| bars.symbol_of(r) == "ETHUSDT"));
    assert_eq!(bars.ts[0], JUNE_1 + 40 * 24 * H);
    assert_eq!(stats.files_opened, 1, "only ETHUSDT's file is opened");
    assert!(stats.row_groups_read <= 2 && stats.row_groups_total >= 5, "{stats:?}");
    // A time range in another year opens nothing.
    let other_year = Selection { start: Some(0), end: Some(1_000), ..selection };
    let (none, stats) = data::read_bars(&fixture(), &other_year).unwrap();
    assert!(none.is_empty());
    assert_eq!(stats.files_opened, 0);
}

#[test]
fn store_write_append_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let bars = small_bars(&["AAAUSDT", "BBBUSDT"], 50, JUNE_1);
    let stats = data::write_store(dir.path(), hour(), &bars).unwrap();
    assert_eq!((stats.files_written, stats.rows_added, stats.rows_replaced), (2, 100, 0));
    let (back, _) = data::read_bars(dir.path(), &Selection::all(hour())).unwrap();
    assert_eq!(back, bars);

    // Append an overlapping, unsorted batch: the new rows win, the result stays sorted.
    let mut update = small_bars(&["AAAUSDT"], 10, JUNE_1 + 45 * H);
    update.close.iter_mut().for_each(|c| *c += 0.25);
    update.ts.reverse();
    update.close.reverse();
    update.open.reverse();
    update.high.reverse();
    update.low.reverse();
    update.volume.reverse();
    let stats = data::write_store(dir.path(), hour(), &update).unwrap();
    assert_eq!((stats.rows_added, stats.rows_replaced), (5, 5));
    let (back, _) = data::read_bars(dir.path(), &Selection::all(hour())).unwrap();
    assert_eq!(back.len(), 105);
    let aaa: Vec<usize> = (0..back.len()).filter(|&r| back.symbol_of(r) == "AAAUSDT").collect();
    assert_eq!(aaa.len(), 55);
    assert!(aaa.windows(2).all(|w| back.ts[w[0]] < back.ts[w[1]]));
    let at_47 = aaa.iter().find(|&&r| back.ts[r] == JUNE_1 + 47 * H).unwrap();
    assert_eq!(back.close[*at_47], 100.0 + 2.0 + 0.5 + 0.25);
    // No temp files are left behind.
    let leftovers: Vec<_> = walk(dir.path()).into_iter().filter(|p| p.to_string_lossy().contains(".tmp-")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(data::store_timeframes(dir.path()).unwrap(), vec![hour()]);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn single_long_parquet_and_csv_files() {
    let dir = tempfile::tempdir().unwrap();
    let bars = small_bars(&["AAAUSDT", "BBBUSDT", "CCCUSDT"], 30, JUNE_1);
    let path = dir.path().join("long.parquet");
    data::store::write_parquet_atomically(&path, &data::bars_to_batch(&bars), 10).unwrap();
    let selection = Selection {
        symbols: Some(vec!["BBBUSDT".into()]),
        start: Some(JUNE_1 + 5 * H),
        end: Some(JUNE_1 + 8 * H),
        timeframe: hour(),
    };
    let (picked, stats) = data::read_bars(&path, &selection).unwrap();
    assert_eq!(picked.ts, vec![JUNE_1 + 5 * H, JUNE_1 + 6 * H, JUNE_1 + 7 * H]);
    assert!((0..picked.len()).all(|r| picked.symbol_of(r) == "BBBUSDT"));
    assert_eq!(stats.row_groups_read, 1, "{stats:?}");

    let csv = dir.path().join("bars.csv");
    let mut text = String::from("ts,symbol,open,high,low,close,volume\n");
    for r in 0..bars.len() {
        text += &format!(
            "{},{},{},{},{},{},{}\n",
            bars.ts[r],
            bars.symbol_of(r),
            bars.open[r],
            bars.high[r],
            bars.low[r],
            bars.close[r],
            bars.volume[r]
        );
    }
    fs::write(&csv, text).unwrap();
    let (from_csv, _) = data::read_bars(&csv, &Selection::all(hour())).unwrap();
    assert_eq!(from_csv, bars);
}

#[test]
fn bad_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.parquet");
    fs::write(&corrupt, b"this is not parquet at all").unwrap();
    let err = data::read_bars(&corrupt, &Selection::all(hour())).unwrap_err();
    assert_eq!(err.kind(), xsmom::ErrorKind::Format);
    assert_eq!(
        err.to_string(),
        format!("{}: not a valid Parquet file: Parquet error: Invalid Parquet file. Corrupt footer", corrupt.display())
    );
    let cause = std::error::Error::source(&err).expect("the Parquet error is the source");
    assert!(cause.downcast_ref::<parquet::errors::ParquetError>().is_some(), "{cause:?}");

    let csv = dir.path().join("no_close.csv");
    fs::write(&csv, "ts,symbol,open,high,low,volume\n0,AUSDT,1,1,1,1\n").unwrap();
    let err = data::read_bars(&csv, &Selection::all(hour())).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: missing column 'close' (found: ts, symbol, open, high, low, volume)", csv.display())
    );

    let missing = dir.path().join("nope.parquet");
    let err = data::read_bars(&missing, &Selection::all(hour())).unwrap_err();
    assert_eq!(err.kind(), xsmom::ErrorKind::Io);
    assert_eq!(err.to_string(), format!("{}: no such file or directory", missing.display()));
    let cause = std::error::Error::source(&err).and_then(|cause| cause.downcast_ref::<std::io::Error>());
    assert_eq!(cause.map(std::io::Error::kind), Some(std::io::ErrorKind::NotFound));

    let err = data::read_bars(&fixture(), &Selection::all(Timeframe::parse("4h").unwrap())).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: the store has no bars for timeframe 4h (found: 5m, 1h)", fixture().display())
    );
}

#[test]
fn validation_findings_and_policy() {
    let mut bars = small_bars(&["AAAUSDT", "BBBUSDT"], 20, JUNE_1);
    // Duplicate of AAA row 3, a non-grid ts, bad OHLC, negative volume, a gap (BBB row 10 removed).
    bars.ts.push(JUNE_1 + 3 * H);
    bars.symbol.push(0);
    for col in [&mut bars.open, &mut bars.high, &mut bars.low, &mut bars.close, &mut bars.volume] {
        let v = col[3];
        col.push(v);
    }
    bars.ts[5] += 1;
    bars.high[7] = bars.open[7] - 0.5;
    bars.volume[9] = -1.0;
    bars.volume[8] = 0.0;
    let keep: Vec<bool> = (0..bars.len()).map(|r| r != 30).collect();
    let bars = bars.filter_rows(&keep);
    let findings = data::validate_bars(bars.clone(), hour(), SpikeRule::default());
    let kinds: Vec<(&str, &str, i64)> = findings.iter().map(|f| (f.symbol.as_str(), f.kind, f.ts)).collect();
    assert!(kinds.contains(&("AAAUSDT", "duplicate", JUNE_1 + 3 * H)), "{kinds:?}");
    assert!(kinds.contains(&("AAAUSDT", "non_grid_ts", JUNE_1 + 5 * H + 1)));
    assert!(kinds.contains(&("AAAUSDT", "high_below_open_close", JUNE_1 + 7 * H)));
    assert!(kinds.contains(&("AAAUSDT", "negative_volume", JUNE_1 + 9 * H)));
    assert!(kinds.contains(&("AAAUSDT", "zero_volume", JUNE_1 + 8 * H)));
    assert!(kinds.contains(&("BBBUSDT", "gap", JUNE_1 + 10 * H)));
    assert!(kinds.contains(&("AAAUSDT", "unsorted", JUNE_1 + 3 * H)));
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    assert_eq!(errors, 4);

    let err = data::clean_bars(bars.clone(), hour(), SpikeRule::default(), false).unwrap_err();
    assert_eq!(err.kind(), xsmom::ErrorKind::Data);
    assert_eq!(
        err.to_string(),
        "4 validation error(s) in the bars; first: AAAUSDT at ts 1748746800000: duplicate (second row for ts \
         1748746800000); pass on_invalid=drop to drop the offending rows"
    );
    let (clean, _) = data::clean_bars(bars.clone(), hour(), SpikeRule::default(), true).unwrap();
    assert_eq!(clean.len(), bars.len() - 4);
    assert!(data::validate_bars(clean.clone(), hour(), SpikeRule::default())
        .iter()
        .all(|f| f.severity == Severity::Warning));
    // The grid of the remaining rows is valid.
    Panel::from_bars(&clean, hour()).unwrap();
}

#[test]
fn spikes_are_reported() {
    let mut bars = small_bars(&["AAAUSDT"], 400, JUNE_1);
    // A gentle zig-zag, then a 30 % jump.
    for t in 0..400 {
        let c = 100.0 * (1.0 + 0.002 * if t % 2 == 0 { 1.0 } else { -1.0 });
        bars.close[t] = if t == 300 { c * 1.3 } else { c };
        bars.open[t] = bars.close[t];
        bars.high[t] = bars.close[t] * 1.001;
        bars.low[t] = bars.close[t] * 0.999;
    }
    let spikes = |rule: SpikeRule| -> Vec<i64> {
        data::validate_bars(bars.clone(), hour(), rule).iter().filter(|f| f.kind == "spike").map(|f| f.ts).collect()
    };
    assert_eq!(spikes(SpikeRule::default()), vec![JUNE_1 + 300 * H, JUNE_1 + 301 * H]);
    // |log 1.3| ≈ 0.262 (and back) against a median |log return| of ≈ 0.004: 65 ×, so 60 flags the
    // jump and 70 does not (the median's bin edge is at most 3 % above the median); a fractional
    // multiple works the same.
    assert_eq!(spikes(SpikeRule { mads: 60.0, window: 500 }), vec![JUNE_1 + 300 * H, JUNE_1 + 301 * H]);
    assert_eq!(spikes(SpikeRule { mads: 62.5, window: 500 }), vec![JUNE_1 + 300 * H, JUNE_1 + 301 * H]);
    assert_eq!(spikes(SpikeRule { mads: 70.0, window: 500 }), Vec::<i64>::new());
    // The test starts after min(100, window) returns: a window of 20 tests from the 21st bar on.
    // A 30 % level shift at bar 50.
    let mut early = bars.clone();
    for t in 50..400 {
        for column in [&mut early.open, &mut early.high, &mut early.low, &mut early.close] {
            column[t] *= 1.3;
        }
    }
    let early_spikes = |rule: SpikeRule| -> Vec<i64> {
        data::validate_bars(early.clone(), hour(), rule).iter().filter(|f| f.kind == "spike").map(|f| f.ts).collect()
    };
    assert!(!early_spikes(SpikeRule::default()).contains(&(JUNE_1 + 50 * H)));
    assert!(early_spikes(SpikeRule { mads: 8.0, window: 20 }).contains(&(JUNE_1 + 50 * H)));
}

#[test]
fn resampling_real_5m_bars_reproduces_the_real_1h_bars() {
    let five = Timeframe::parse("5m").unwrap();
    let (fine, _) = data::read_bars(&fixture(), &Selection::all(five)).unwrap();
    let resampled = data::resample(&fine, five, hour()).unwrap();
    let june = Selection {
        symbols: Some(vec!["DOGEUSDT".into(), "SOLUSDT".into()]),
        start: Some(JUNE_1),
        end: Some(JUNE_1 + 30 * 24 * H),
        timeframe: hour(),
    };
    let (hourly, _) = data::read_bars(&fixture(), &june).unwrap();
    assert_eq!(resampled.len(), 2 * 30 * 24);
    assert_eq!(resampled.ts, hourly.ts);
    assert_eq!(resampled.symbol, hourly.symbol);
    assert_eq!(resampled.open, hourly.open);
    assert_eq!(resampled.high, hourly.high);
    assert_eq!(resampled.low, hourly.low);
    assert_eq!(resampled.close, hourly.close);
    for (a, b) in resampled.volume.iter().zip(&hourly.volume) {
        assert!((a - b).abs() <= 1e-9 * b.abs(), "{a} vs {b}");
    }
}

#[test]
fn resampling_drops_incomplete_buckets() {
    let five = Timeframe::parse("5m").unwrap();
    let mut bars = Bars::default();
    for k in 0..23 {
        // 23 five-minute bars: the first hour is complete, the second misses one bar.
        let code = bars.intern("AAAUSDT");
        bars.ts.push(JUNE_1 + k * 300_000);
        bars.symbol.push(code);
        bars.open.push(1.0 + k as f64);
        bars.high.push(2.0 + k as f64);
        bars.low.push(0.5 + k as f64);
        bars.close.push(1.5 + k as f64);
        bars.volume.push(1.0);
    }
    let hourly = data::resample(&bars, five, hour()).unwrap();
    assert_eq!(hourly.ts, vec![JUNE_1]);
    assert_eq!(
        (hourly.open[0], hourly.high[0], hourly.low[0], hourly.close[0], hourly.volume[0]),
        (1.0, 13.0, 0.5, 12.5, 12.0)
    );
    let err = data::resample(&bars, hour(), five).unwrap_err();
    assert_eq!(err.to_string(), "cannot resample 1h bars to 5m: the target must be a multiple of the source timeframe");
}

#[test]
fn funding_is_read_and_aligned_to_the_bar_that_contains_it() {
    let funding = data::read_funding(&fixture(), Some(&["BTCUSDT".to_string()]), Some(JUNE_1), None).unwrap();
    assert!(funding.ts.len() > 400 && (0..funding.len()).all(|r| funding.symbol_of(r) == "BTCUSDT"));
    let bars = small_bars(&["AAAUSDT"], 24, JUNE_1);
    let panel = Panel::from_bars(&bars, hour()).unwrap();
    let events = Funding {
        ts: vec![JUNE_1 + 8 * H - 1, JUNE_1 + 8 * H, JUNE_1 + 16 * H + 1],
        symbol: vec![0; 3],
        names: vec!["AAAUSDT".into()],
        rate: vec![0.001, 0.002, 0.003],
    };
    let grid = panel.align_funding(&events);
    assert_eq!(grid.rate(7, 0), 0.001);
    assert_eq!(grid.rate(8, 0), 0.002);
    assert_eq!(grid.rate(16, 0), 0.003);
    assert_eq!((0..24).map(|t| grid.rate(t, 0)).sum::<f64>(), 0.006);
    assert_eq!((0..24).filter(|&t| grid.event(t, 0)).count(), 3);
    assert_eq!(grid.has_data, vec![true]);
    // Round trip through the funding store.
    let dir = tempfile::tempdir().unwrap();
    data::write_funding_store(dir.path(), &events).unwrap();
    assert_eq!(data::read_funding(dir.path(), None, None, None).unwrap(), events);
}

proptest::proptest! {
    /// `sort_bars` gives the canonical form whatever the input order and dictionary: names sorted
    /// and all used, rows in (name, ts) order, stable, the same rows as a naive sort.
    #[test]
    fn sorting_gives_the_canonical_form(
        rows in proptest::collection::vec((0usize..5, 0i64..40), 0..200),
        unused in proptest::bool::ANY,
    ) {
        let pool = ["EEE", "BBB", "DDD", "AAA", "CCC"];
        let mut bars = Bars::default();
        if unused {
            bars.intern("ZZZ");
        }
        for (k, &(name, ts)) in rows.iter().enumerate() {
            bars.push(pool[name], ts * H, k as f64, k as f64, k as f64, k as f64, k as f64, k as f64);
        }
        let mut naive: Vec<(String, i64, f64)> =
            (0..bars.len()).map(|r| (bars.symbol_of(r).to_string(), bars.ts[r], bars.open[r])).collect();
        naive.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let sorted = xsmom::data::store::sort_bars(bars);
        let got: Vec<(String, i64, f64)> =
            (0..sorted.len()).map(|r| (sorted.symbol_of(r).to_string(), sorted.ts[r], sorted.open[r])).collect();
        proptest::prop_assert_eq!(got, naive);
        proptest::prop_assert!(sorted.names.windows(2).all(|w| w[0] < w[1]));
        let mut used = vec![false; sorted.names.len()];
        for &code in &sorted.symbol {
            used[code as usize] = true;
        }
        proptest::prop_assert!(used.iter().all(|u| *u));
        // Canonical bars come back as they are.
        let again = xsmom::data::store::sort_bars(sorted.clone());
        proptest::prop_assert_eq!(again, sorted);
    }
}

#[test]
fn a_large_long_file_is_decoded_on_several_threads_in_order() {
    // 250 000 rows in row groups of 40 000: above the threshold where row groups are split across threads.
    let symbols: Vec<String> = (0..25).map(|i| format!("S{i:02}USDT")).collect();
    let names: Vec<&str> = symbols.iter().map(String::as_str).collect();
    let bars = small_bars(&names, 10_000, JUNE_1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.parquet");
    data::store::write_parquet_atomically(&path, &data::bars_to_batch(&bars), 40_000).unwrap();
    let (back, stats) = data::read_bars(&path, &Selection::all(hour())).unwrap();
    assert_eq!(stats.row_groups_read, 7);
    assert_eq!(back, bars);
    // A time selection prunes row groups and then rows; the result is the same rows in the same order.
    let selection = Selection { start: Some(JUNE_1 + 9_000 * H), ..Selection::all(hour()) };
    let (tail, _) = data::read_bars(&path, &selection).unwrap();
    assert_eq!(tail.len(), 25 * 1_000);
    assert!((0..tail.len()).all(|r| tail.ts[r] >= JUNE_1 + 9_000 * H));
}

// --- mark-price bars (issue 16) ----------------------------------------------------------------------

/// Mark bars of `symbols`: `small_bars` prices with no volume (NaN).
fn small_mark_bars(symbols: &[&str], n: usize, start: i64) -> Bars {
    let mut bars = small_bars(symbols, n, start);
    bars.close.iter_mut().for_each(|c| *c -= 0.25);
    bars.volume.iter_mut().for_each(|v| *v = f64::NAN);
    bars
}

#[test]
fn mark_bars_round_trip_beside_the_traded_ones() {
    use xsmom::data::BarKind;
    let dir = tempfile::tempdir().unwrap();
    let traded = small_bars(&["BTCUSDT", "ETHUSDT"], 30, JUNE_1);
    data::write_store(dir.path(), hour(), &traded).unwrap();
    let before = data::read_bars(dir.path(), &Selection::all(hour())).unwrap().0;
    let mark = small_mark_bars(&["BTCUSDT"], 20, JUNE_1);
    let (mark, findings) = data::clean_bars_of_kind(mark, hour(), BarKind::Mark, SpikeRule::default(), false).unwrap();
    assert!(findings.is_empty(), "mark bars without volume validate: {findings:?}");
    data::write_store_of_kind(dir.path(), hour(), &mark, BarKind::Mark).unwrap();
    let file = dir.path().join("bars/timeframe=1h/kind=mark/symbol=BTCUSDT/2025.parquet");
    assert!(file.is_file());
    // The traded kind reads as before; the mark kind reads back its closes with a NaN volume.
    let (after, stats) = data::read_bars(dir.path(), &Selection::all(hour())).unwrap();
    assert_eq!(after, before);
    assert_eq!(stats.files_opened, 2);
    let back = data::read_bars_of_kind(dir.path(), &Selection::all(hour()), BarKind::Mark).unwrap().0;
    assert_eq!((back.names.clone(), back.ts.clone(), back.close.clone()), (mark.names, mark.ts, mark.close));
    assert!(back.volume.iter().all(|v| v.is_nan()) && back.turnover.is_none());
    // A store without index bars says so; a traded file without volume is still refused.
    let err = data::read_bars_of_kind(dir.path(), &Selection::all(hour()), BarKind::Index).unwrap_err();
    assert!(err.to_string().contains("no index bars"), "{err}");
    let err = data::clean_bars(back, hour(), SpikeRule::default(), false).unwrap_err();
    assert!(err.to_string().contains("non_finite"), "{err}");
    // Appending merges on ts as for traded bars.
    let later = small_mark_bars(&["BTCUSDT"], 25, JUNE_1 + 10 * H);
    let stats = data::write_store_of_kind(dir.path(), hour(), &later, BarKind::Mark).unwrap();
    assert_eq!((stats.rows_added, stats.rows_replaced), (15, 10));
    assert_eq!(data::read_bars_of_kind(dir.path(), &Selection::all(hour()), BarKind::Mark).unwrap().0.len(), 35);
}

#[test]
fn the_fixture_has_mark_bars_for_the_symbols_with_a_mark_file() {
    use xsmom::data::BarKind;
    let (mark, _) = data::read_bars_of_kind(&fixture(), &Selection::all(hour()), BarKind::Mark).unwrap();
    assert_eq!(mark.names.len(), 25);
    assert!(!mark.names.iter().any(|s| ["SOLUSDT", "DOGEUSDT", "1000PEPEUSDT"].contains(&s.as_str())));
    let (mark, findings) = data::clean_bars_of_kind(mark, hour(), BarKind::Mark, SpikeRule::default(), false).unwrap();
    assert!(findings.iter().all(|f| f.severity != Severity::Error));
    let (bars, _) = data::read_bars(&fixture(), &Selection::all(hour())).unwrap();
    let mut panel = Panel::from_bars(&bars, hour()).unwrap();
    let missing = panel.attach_mark(mark.view());
    assert_eq!(missing.len(), 7, "{missing:?}");
    // Perpetual and mark closes of the same hour are within 2 % of each other.
    let marks = panel.mark_close.as_ref().unwrap();
    let btc = panel.symbols.iter().position(|s| s == "BTCUSDT").unwrap();
    for t in 0..panel.n_bars() {
        let premium = panel.close[[t, btc]] / marks[[t, btc]] - 1.0;
        assert!(premium.abs() < 0.02, "bar {t}: premium {premium}");
    }
}

#[test]
fn resampling_a_store_resamples_its_mark_bars_too() {
    use xsmom::data::BarKind;
    let dir = tempfile::tempdir().unwrap();
    data::write_store(dir.path(), hour(), &small_bars(&["BTCUSDT", "ETHUSDT"], 48, JUNE_1)).unwrap();
    data::write_store_of_kind(dir.path(), hour(), &small_mark_bars(&["BTCUSDT"], 48, JUNE_1), BarKind::Mark).unwrap();
    let four = Timeframe::parse("4h").unwrap();
    let stats = xsmom::run::resample_store(dir.path(), four, None).unwrap();
    // 2 × 12 traded bars and 12 mark bars.
    assert_eq!(stats.rows_added, 36, "{stats:?}");
    let mark = data::read_bars_of_kind(dir.path(), &Selection::all(four), BarKind::Mark).unwrap().0;
    assert_eq!(mark.len(), 12);
    let hourly = small_mark_bars(&["BTCUSDT"], 48, JUNE_1);
    for (bucket, (ts, close)) in mark.ts.iter().zip(&mark.close).enumerate() {
        assert_eq!(*ts, JUNE_1 + bucket as i64 * 4 * H);
        assert_eq!(*close, hourly.close[bucket * 4 + 3], "a bucket's close is its last hour's close");
    }
    assert!(mark.volume.iter().all(|v| v.is_nan()));
    // The store had no index bars: none are made up.
    assert!(!data::store::store_has_kind(dir.path(), four, BarKind::Index));
}

/// The pivot against a naive one (a map from (symbol, ts) to the row): every cell, NaN where a
/// symbol has no bar — symbols listed late, delisted early, with gaps, the five fields and the quote
/// volume from turnover or `close × volume`.
fn naive_pivot_cell(bars: &Bars, panel: &Panel, t: usize, i: usize) -> [f64; 5] {
    let ts = panel.ts[t];
    let row = (0..bars.len()).find(|&r| bars.ts[r] == ts && bars.symbol_of(r) == panel.symbols[i]);
    row.map_or([f64::NAN; 5], |r| {
        let turnover = bars.turnover.as_ref().map_or(f64::NAN, |v| v[r]);
        let quote = if turnover.is_finite() { turnover } else { bars.close[r] * bars.volume[r] };
        [bars.open[r], bars.high[r], bars.low[r], bars.close[r], quote]
    })
}

proptest::proptest! {
    #[test]
    fn the_pivot_puts_every_bar_in_its_cell(
        present in proptest::collection::vec(proptest::collection::vec(proptest::bool::weighted(0.8), 0..30), 1..5),
        nan_turnover in proptest::bool::ANY,
    ) {
        let mut bars = Bars::default();
        let mut any = false;
        for (s, bars_of_symbol) in present.iter().enumerate() {
            for (t, &here) in bars_of_symbol.iter().enumerate() {
                if here {
                    let base = 100.0 * (s + 1) as f64 + t as f64;
                    let turnover = if nan_turnover && t % 3 == 0 { f64::NAN } else { base * 7.0 };
                    bars.push(&format!("S{s}USDT"), JUNE_1 + t as i64 * H, base, base + 2.0, base - 1.0, base + 0.5, 3.0, turnover);
                    any = true;
                }
            }
        }
        proptest::prop_assume!(any);
        // The same rows with the symbols pushed last first: not canonical (names out of order),
        // so pivoted by the general path rather than the canonical one.
        let mut reversed = Bars::default();
        for name in bars.names.iter().rev() {
            for r in (0..bars.len()).filter(|&r| bars.symbol_of(r) == name) {
                let turnover = bars.turnover.as_ref().map_or(f64::NAN, |v| v[r]);
                reversed.push(name, bars.ts[r], bars.open[r], bars.high[r], bars.low[r], bars.close[r], bars.volume[r], turnover);
            }
        }
        proptest::prop_assert!(bars.view().is_canonical());
        proptest::prop_assert!(bars.names.len() == 1 || !reversed.view().is_canonical());
        let (first, last) = (*bars.ts.iter().min().unwrap(), *bars.ts.iter().max().unwrap());
        for panel in [Panel::from_bars(&bars, hour()).unwrap(), Panel::from_bars(&reversed, hour()).unwrap()] {
        proptest::prop_assert_eq!(&panel.symbols, &bars.names);
        proptest::prop_assert_eq!(panel.ts.clone(), (0..=(last - first) / H).map(|t| first + t * H).collect::<Vec<_>>());
        for t in 0..panel.n_bars() {
            for i in 0..panel.n_symbols() {
                let want = naive_pivot_cell(&bars, &panel, t, i);
                let got = [panel.open[[t, i]], panel.high[[t, i]], panel.low[[t, i]], panel.close[[t, i]], panel.quote_volume[[t, i]]];
                for (g, w) in got.iter().zip(&want) {
                    proptest::prop_assert!(g.to_bits() == w.to_bits(), "bar {t} symbol {i}: {got:?} vs {want:?}");
                }
            }
        }
        }
    }
}

#[test]
fn the_pivot_names_a_duplicate_and_a_bar_off_the_grid() {
    let mut bars = small_bars(&["AAAUSDT", "BBBUSDT"], 6, JUNE_1);
    let grid = |bars: &Bars| Panel::on_grid(bars, hour(), &["AAAUSDT".into(), "BBBUSDT".into()], JUNE_1, 6);
    assert!(grid(&bars).is_ok());
    // A second row for BBBUSDT's third bar.
    let row = 6 + 2;
    let dup = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.insert(row + 1, v[row]);
        v
    };
    let mut duplicated = bars.clone();
    duplicated.ts.insert(row + 1, bars.ts[row]);
    duplicated.symbol.insert(row + 1, bars.symbol[row]);
    (duplicated.open, duplicated.high, duplicated.low) = (dup(&bars.open), dup(&bars.high), dup(&bars.low));
    (duplicated.close, duplicated.volume) = (dup(&bars.close), dup(&bars.volume));
    duplicated.turnover = bars.turnover.as_ref().map(dup);
    let err = grid(&duplicated).unwrap_err().to_string();
    assert!(err.contains(&format!("duplicate bar for BBBUSDT at ts {}", JUNE_1 + 2 * H)), "{err}");
    // Half an hour off, and a bar after the grid's end.
    bars.ts[3] += H / 2;
    let err = grid(&bars).unwrap_err().to_string();
    assert!(
        err.contains(&format!("bar AAAUSDT at ts {} is not on the 1h grid of 6 bars", JUNE_1 + 3 * H + H / 2)),
        "{err}"
    );
    bars.ts[3] -= H / 2;
    let short =
        Panel::on_grid(&bars, hour(), &["AAAUSDT".into(), "BBBUSDT".into()], JUNE_1, 5).unwrap_err().to_string();
    assert!(
        short.contains(&format!("bar AAAUSDT at ts {} is not on the 1h grid of 5 bars", JUNE_1 + 5 * H)),
        "{short}"
    );
}

proptest::proptest! {
    /// The canonical-form test against its definition: names strictly sorted and all used, rows
    /// ordered by (code, ts).
    #[test]
    fn the_canonical_test_is_its_definition(
        rows in proptest::collection::vec((0usize..3, 0i64..4), 0..12),
        sort in proptest::bool::weighted(0.6),
    ) {
        let names = ["AUSDT", "BUSDT", "CUSDT"];
        let mut rows = rows;
        if sort {
            rows.sort();
        }
        let mut bars = Bars::default();
        for &(s, t) in &rows {
            bars.push(names[s], JUNE_1 + t * H, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0);
        }
        let keys: Vec<(u32, i64)> = bars.symbol.iter().copied().zip(bars.ts.iter().copied()).collect();
        let all_used = (0..bars.names.len() as u32).all(|code| bars.symbol.contains(&code));
        let names_sorted = bars.names.windows(2).all(|w| w[0] < w[1]);
        let want = names_sorted && all_used && keys.windows(2).all(|w| w[0] <= w[1]);
        proptest::prop_assert_eq!(bars.view().is_canonical(), want, "{:?}", rows);
        // Its symbol half: the same with the codes alone sorted.
        let codes_want = names_sorted && all_used && bars.symbol.windows(2).all(|w| w[0] <= w[1]);
        proptest::prop_assert_eq!(bars.view().codes_are_canonical(), codes_want, "{:?}", rows);
    }
}
