//! A backtest whose pivot streams into the engine (`run::backtest_streamed`, the DataFrame path of
//! `xsmom.backtest` and `xsmom.signals`: tiles of bars through a ring of buffers, no panel) gives
//! the funding, findings, outputs and warnings of the usual path (validation beside the engine,
//! pivot first), and declines bars it cannot stream so that the usual path reports them.

mod common;

use xsmom::backtest::{output, BacktestResult};
use xsmom::data::{self, ArrowBars, Bars, Funding};
use xsmom::run::{self, BarsSource, FundingSource};
use xsmom::Config;

/// Canonical long bars of a random panel of `n_bars` × `n_symbols` (late listings), with gaps in
/// every symbol and the last symbol delisted early, plus funding every 8 bars for all but one.
fn bars_and_funding(n_bars: usize, n_symbols: usize, seed: u64) -> (Bars, Funding) {
    let panel = common::random_panel(n_bars, n_symbols, seed, true);
    let bars = panel.to_bars();
    let mut rng = common::Rng::new(seed ^ 0xf00d);
    let last = bars.names.len() as u32 - 1;
    let cutoff = panel.ts[n_bars * 2 / 3];
    let keep: Vec<bool> = (0..bars.len())
        .map(|row| rng.uniform() > 0.02 && !(bars.symbol[row] == last && bars.ts[row] > cutoff))
        .collect();
    let bars = bars.filter_rows(&keep);
    let mut funding = Funding { names: panel.symbols.clone(), ..Funding::default() };
    for (i, _) in panel.symbols.iter().enumerate().skip(1) {
        for t in (0..n_bars).step_by(8) {
            funding.push(&panel.symbols[i], panel.ts[t], (rng.uniform() - 0.45) * 2e-4);
        }
    }
    (bars, funding)
}

fn arrow(bars: &Bars) -> ArrowBars {
    ArrowBars::from_batches(&[data::bars_to_batch(bars)], "bars").expect("arrow bars")
}

/// Inputs and result of the usual path: validation beside the engine, its warnings first.
fn usual(
    bars: &Bars,
    funding: &Funding,
    cfg: &Config,
    signals: bool,
) -> (run::Inputs, xsmom::backtest::BacktestResult) {
    let (mut inputs, pending) =
        run::prepare_deferred(BarsSource::Arrow(arrow(bars)), FundingSource::Funding(funding.clone()), cfg).unwrap();
    let mut result = run::backtest(&inputs, cfg, signals).unwrap();
    let (findings, bar_warnings) = pending.expect("error-free bars").finish().unwrap();
    result.warnings.splice(0..0, bar_warnings.clone());
    (inputs.findings, inputs.warnings) = (findings, bar_warnings);
    (inputs, result)
}

fn streamed(
    bars: &Bars,
    funding: &Funding,
    cfg: &Config,
    signals: bool,
) -> Option<(run::StreamedInputs, xsmom::backtest::BacktestResult)> {
    run::backtest_streamed(&arrow(bars), &FundingSource::Funding(funding.clone()), cfg, signals).unwrap()
}

/// The default strategy on short lookbacks, so that these short panels trade.
fn short_lookbacks() -> Config {
    let mut cfg = Config::default();
    cfg.strategy.lookbacks = vec![12, 48];
    cfg.strategy.lookback_weights = vec![0.5, 0.5];
    cfg.strategy.vol_lookback = 24;
    cfg
}

#[test]
fn the_streamed_pivot_gives_the_usual_inputs_outputs_and_warnings() {
    let mut cfg = short_lookbacks();
    cfg.strategy.regime_filter.enabled = false;
    // One tile, a tile and a bar, and panels whose tiles go round the ring many times.
    for (n_bars, n_symbols, seed) in [(700, 9, 1), (256, 4, 2), (257, 5, 3), (1000, 13, 4), (3000, 7, 5)] {
        let (bars, funding) = bars_and_funding(n_bars, n_symbols, seed);
        for signals in [false, true] {
            let (inputs, result) = usual(&bars, &funding, &cfg, signals);
            let (s_inputs, s_result) = streamed(&bars, &funding, &cfg, signals).expect("streamable bars");
            let case = format!("{n_bars} × {n_symbols}, seed {seed}, signals {signals}");
            assert_eq!(s_inputs.funding, inputs.funding, "{case}");
            assert_eq!(s_inputs.findings, inputs.findings, "{case}");
            assert!(inputs.findings.iter().any(|f| f.kind == "gap"), "{case}: the bars have gaps");
            assert_eq!(s_inputs.warnings, inputs.warnings, "{case}");
            assert_eq!((&s_result.ts, &s_result.listed), (&result.ts, &result.listed), "{case}");
            assert_eq!(s_result.warnings, result.warnings, "{case}");
            assert!(n_bars < 700 || !result.fills.is_empty(), "{case}: a run that trades");
            assert_eq!(format!("{:?}", s_result.metrics), format!("{:?}", result.metrics), "{case}");
            assert_eq!(output::equity_batch(&s_result), output::equity_batch(&result), "{case}");
            assert_eq!(output::weights_batch(&s_result), output::weights_batch(&result), "{case}");
            assert_eq!(output::fills_batch(&s_result), output::fills_batch(&result), "{case}");
            assert_eq!(output::trades_batch(&s_result), output::trades_batch(&result), "{case}");
            let signals_table = |result: &BacktestResult| {
                result.signals.clone().map(|record| output::signals_batch(&result.symbols, record))
            };
            assert_eq!(signals_table(&s_result), signals_table(&result), "{case}");
        }
    }
}

#[test]
fn bars_with_an_error_or_out_of_order_are_left_to_the_usual_path() {
    let cfg = Config::default();
    // 47 tiles: rounds of the ring, so that a late bad row meets recycled buffers.
    let (bars, funding) = bars_and_funding(3_000, 5, 7);
    assert!(streamed(&bars, &funding, &cfg, false).is_some());
    // A bad value in the first tile, in a middle one, in the last row of the first symbol (listed
    // to the end: the last, partial tile) and in the last row (the last symbol, delisted early).
    let first_symbol_end = bars.symbol.iter().position(|&code| code == 1).expect("two symbols") - 1;
    let last_ts = *bars.ts.iter().max().expect("bars");
    assert!(last_ts - bars.ts[first_symbol_end] < 64 * 3_600_000, "in the last tile of hourly bars");
    for row in [3, bars.len() / 2, first_symbol_end, bars.len() - 1] {
        let mut bad = bars.clone();
        bad.low[row] = -1.0;
        assert!(streamed(&bad, &funding, &cfg, false).is_none(), "negative low at row {row}");
        let mut bad = bars.clone();
        bad.close[row] = f64::NAN;
        assert!(streamed(&bad, &funding, &cfg, false).is_none(), "NaN close at row {row}");
    }
    // A duplicate bar, a bar off the grid, rows out of order.
    let mut duplicate = bars.clone();
    duplicate.ts[11] = duplicate.ts[10];
    assert!(streamed(&duplicate, &funding, &cfg, false).is_none());
    let mut off_grid = bars.clone();
    off_grid.ts[20] += 60_000;
    assert!(streamed(&off_grid, &funding, &cfg, false).is_none());
    // Rows out of order within a symbol: in its middle, at its start and at its end (the first and
    // last rows give the grid's span, found before the pivot checks the order).
    let second_symbol_start = first_symbol_end + 1;
    for row in [30, second_symbol_start, first_symbol_end - 1, bars.len() - 2] {
        let mut shuffled = bars.clone();
        shuffled.ts.swap(row, row + 1);
        assert!(shuffled.view().codes_are_canonical() && !shuffled.view().is_canonical());
        assert!(streamed(&shuffled, &funding, &cfg, false).is_none(), "rows {row} and {} swapped", row + 1);
    }
    // The usual path names the error the streamed one declined.
    let mut bad = bars.clone();
    bad.low[40] = -1.0;
    let err = run::prepare(BarsSource::Arrow(arrow(&bad)), FundingSource::None, &cfg).err().expect("an error");
    assert!(err.to_string().contains("low"), "{err}");
}

/// The result as comparable values: warnings, metrics and every output table.
fn outputs(result: &xsmom::backtest::BacktestResult) -> (Vec<String>, String, Vec<arrow::array::RecordBatch>) {
    let tables = vec![
        output::equity_batch(result),
        output::weights_batch(result),
        output::fills_batch(result),
        output::trades_batch(result),
    ];
    (result.warnings.clone(), format!("{:?}", result.metrics), tables)
}

/// The usual path of a path: validation beside the engine, its warnings first.
fn usual_of(bars: BarsSource, funding: FundingSource, cfg: &Config) -> (run::Inputs, xsmom::backtest::BacktestResult) {
    let (mut inputs, pending) = run::prepare_deferred(bars, funding, cfg).unwrap();
    let mut result = run::backtest(&inputs, cfg, false).unwrap();
    if let Some(pending) = pending {
        let (findings, bar_warnings) = pending.finish().unwrap();
        result.warnings.splice(0..0, bar_warnings);
        inputs.findings = findings;
    }
    (inputs, result)
}

/// A store (its own funding) and a long file stream as a DataFrame does, with the usual path's
/// inputs and outputs; a long file out of canonical order is handed back as read (not read again)
/// and gives the same result by the usual path; a config that wants mark bars is left to it.
#[test]
fn a_store_and_a_file_stream_with_the_usual_result() {
    let store = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    let cfg = Config::default();
    let run::StreamedRun::Ran(ran) =
        run::backtest_streamed_path(&store, FundingSource::FromBarsStore, &cfg, false).unwrap()
    else {
        panic!("the fixture store streams")
    };
    let (inputs, result) = *ran;
    let (u_inputs, u_result) = usual_of(BarsSource::Path(store.clone()), FundingSource::FromBarsStore, &cfg);
    assert!(u_inputs.funding.has_data.iter().any(|&has| has), "the store's funding is read");
    assert_eq!(inputs.funding, u_inputs.funding);
    assert_eq!(inputs.findings, u_inputs.findings);
    assert_eq!((&result.ts, &result.listed), (&u_result.ts, &u_result.listed));
    assert_eq!(outputs(&result), outputs(&u_result));
    assert!(!result.fills.is_empty());

    // One long file of a random panel, in canonical order and sorted by time instead.
    let dir = std::env::temp_dir().join(format!("xsmom-streamed-path-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (bars, funding) = bars_and_funding(700, 6, 11);
    let canonical = dir.join("bars.parquet");
    data::store::write_parquet_atomically(&canonical, &data::bars_to_batch(&bars), 100_000).unwrap();
    let mut by_time: Vec<usize> = (0..bars.len()).collect();
    by_time.sort_by_key(|&row| (bars.ts[row], bars.symbol[row]));
    let by_time_file = dir.join("by_time.parquet");
    let sorted = data::store::take_rows(&bars, &by_time);
    data::store::write_parquet_atomically(&by_time_file, &data::bars_to_batch(&sorted), 100_000).unwrap();
    let funding_source = || FundingSource::Funding(funding.clone());
    let run::StreamedRun::Ran(ran) = run::backtest_streamed_path(&canonical, funding_source(), &cfg, false).unwrap()
    else {
        panic!("a canonical file streams")
    };
    let (_, u_result) = usual_of(BarsSource::Path(canonical.clone()), funding_source(), &cfg);
    assert_eq!(outputs(&ran.1), outputs(&u_result));
    match run::backtest_streamed_path(&by_time_file, funding_source(), &cfg, false).unwrap() {
        run::StreamedRun::Usual(bars @ BarsSource::Arrow(_), funding) => {
            assert_eq!(outputs(&usual_of(bars, funding, &cfg).1), outputs(&u_result), "same bars, same run");
        }
        _ => panic!("bars sorted by time are handed back as read"),
    }
    let mut marked = cfg.clone();
    marked.strategy.carry.enabled = true;
    marked.strategy.carry.basis_weight = 0.5;
    assert!(matches!(
        run::backtest_streamed_path(&store, FundingSource::FromBarsStore, &marked, false).unwrap(),
        run::StreamedRun::Usual(BarsSource::Path(_), FundingSource::Store(_))
    ));
    std::fs::remove_dir_all(&dir).ok();
}

/// The signals record and its table hold a row per listed bar and symbol, in bar then symbol
/// order; on each bar the eligible rows' z-scores are those of their momenta across the eligible
/// rows (population std), their signals `sign(z)·|z|^p`, and rows not eligible have neither.
#[test]
fn the_signals_table_holds_a_row_per_listed_cell_in_order() {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, TimestampMillisecondType};
    let cfg = short_lookbacks();
    let power = cfg.strategy.signal_power;
    // Records short and long enough (over 32 768 rows) to be scored on one thread and on two.
    for (n_bars, n_symbols) in [(200, 5), (4_000, 12)] {
        let (bars, funding) = bars_and_funding(n_bars, n_symbols, 21);
        let (_, result) = usual(&bars, &funding, &cfg, true);
        let rec = result.signals.clone().expect("recorded");
        assert!(n_bars < 1_000 || rec.len() > 2 * 16_384, "{} rows", rec.len());
        let cells: Vec<(usize, usize)> = (0..result.ts.len())
            .flat_map(|t| (0..result.symbols.len()).map(move |i| (t, i)))
            .filter(|&(t, i)| result.listed[[t, i]])
            .collect();
        assert!(cells.len() < result.listed.len(), "some cells are not listed");
        let keys: Vec<(i64, u32)> = cells.iter().map(|&(t, i)| (result.ts[t], i as u32)).collect();
        assert_eq!(rec.ts.iter().copied().zip(rec.symbol.iter().copied()).collect::<Vec<_>>(), keys);
        let mut checked_bars = 0;
        for (t, &ts) in result.ts.iter().enumerate() {
            let rows: Vec<usize> = (0..rec.len()).filter(|&row| rec.ts[row] == ts).collect();
            let eligible: Vec<usize> = rows.iter().copied().filter(|&row| rec.eligible[row]).collect();
            let mean = eligible.iter().map(|&row| rec.momentum[row]).sum::<f64>() / eligible.len() as f64;
            let var =
                eligible.iter().map(|&row| (rec.momentum[row] - mean).powi(2)).sum::<f64>() / eligible.len() as f64;
            let scored = eligible.len() >= 2 && var > 0.0;
            for &row in &rows {
                if rec.eligible[row] && scored {
                    let z = (rec.momentum[row] - mean) / var.sqrt();
                    assert!((rec.z[row] - z).abs() < 1e-9, "z at bar {t}, row {row}: {} vs {z}", rec.z[row]);
                    let signal = z.signum() * z.abs().powf(power);
                    assert!((rec.signal[row] - signal).abs() < 1e-9, "signal at bar {t}, row {row}");
                } else {
                    assert!(rec.z[row].is_nan() && rec.signal[row].is_nan(), "bar {t}, row {row} has no score");
                }
            }
            checked_bars += usize::from(scored);
        }
        assert!(checked_bars > n_bars / 4, "many bars have a cross-section ({checked_bars} of {n_bars})");
        let table = output::signals_batch(&result.symbols, rec.clone());
        assert_eq!(table.num_rows(), cells.len());
        let ts = table.column(0).as_primitive::<TimestampMillisecondType>();
        let symbol = table.column(1).as_string_view();
        let [momentum, z, signal] = [2, 3, 4].map(|k| table.column(k).as_primitive::<Float64Type>().clone());
        let eligible = table.column(5).as_boolean();
        for (row, &(t, i)) in cells.iter().enumerate() {
            assert_eq!(ts.value(row), result.ts[t]);
            assert_eq!(symbol.value(row), result.symbols[i]);
            let same = |a: f64, b: f64| a.to_bits() == b.to_bits();
            assert!(same(momentum.value(row), rec.momentum[row]), "momentum at {t}, {i}");
            assert!(same(z.value(row), rec.z[row]) && same(signal.value(row), rec.signal[row]));
            assert_eq!(eligible.value(row), rec.eligible[row]);
        }
    }
}
