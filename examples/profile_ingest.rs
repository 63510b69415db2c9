//! Where the time of a backtest from long bars goes before the engine: Arrow import, validation
//! (sort check, findings, spike scale), pivot, funding alignment. Reads one long Parquet file:
//! `cargo run --release --example profile_ingest -- FILE [RUNS] [view|read]` (`view`: only the
//! zero-copy path, `read`: only `read_bars` of the file or store, for a profiler; `overlap`: a whole
//! default backtest from the buffers, validation first or beside the engine, interleaved).

use std::path::PathBuf;
use std::time::Instant;

use xsmom::data::{self, Panel, Selection};
use xsmom::Timeframe;

fn main() {
    let path = PathBuf::from(std::env::args().nth(1).expect("a long-format Parquet file"));
    let runs: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    let hour = Timeframe::parse("1h").expect("1h");
    let mode = std::env::args().nth(3);
    let batches: Vec<_> = if mode.as_deref() == Some("read") {
        Vec::new()
    } else {
        let file = std::fs::File::open(&path).expect("open");
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet");
        let rows = builder.metadata().file_metadata().num_rows() as usize;
        builder.with_batch_size(rows).build().expect("reader").collect::<Result<_, _>>().expect("batches")
    };
    if mode.as_deref() == Some("overlap") {
        overlap(&batches, runs);
        return;
    }
    let only_view = mode.as_deref() == Some("view");
    let mut best = [f64::INFINITY; 8];
    for _ in 0..runs {
        let mut lap = Instant::now();
        let mut split = |k: usize, best: &mut [f64; 8]| {
            best[k] = best[k].min(lap.elapsed().as_secs_f64() * 1e3);
            lap = Instant::now();
        };
        if mode.as_deref() == Some("read") {
            let (read, _) = data::read_bars(&path, &Selection::all(hour)).expect("read");
            split(4, &mut best);
            std::hint::black_box(read);
            continue;
        }
        if only_view {
            let arrow = data::ArrowBars::from_batches(&batches, "file").expect("arrow");
            split(5, &mut best);
            let view = arrow.view();
            let canonical = data::validate_canonical(view, hour, data::SpikeRule::default());
            split(6, &mut best);
            let direct = Panel::from_view(view, hour).expect("panel");
            split(7, &mut best);
            std::hint::black_box((canonical, direct));
            continue;
        }
        let bars = data::bars_from_batches(&batches, "file").expect("bars");
        split(0, &mut best);
        let (bars, findings) = data::clean_bars(bars, hour, data::SpikeRule::default(), false).expect("clean");
        split(1, &mut best);
        let panel = Panel::from_bars(&bars, hour).expect("panel");
        split(2, &mut best);
        drop(bars);
        split(3, &mut best);
        let (read, _) = data::read_bars(&path, &Selection::all(hour)).expect("read");
        split(4, &mut best);
        // The zero-copy path of a DataFrame: intern symbols, validate and pivot from the buffers.
        let arrow = data::ArrowBars::from_batches(&batches, "file").expect("arrow");
        split(5, &mut best);
        let view = arrow.view();
        assert!(view.is_canonical());
        let canonical = data::validate_canonical(view, hour, data::SpikeRule::default());
        split(6, &mut best);
        let direct = Panel::from_view(view, hour).expect("panel");
        split(7, &mut best);
        std::hint::black_box((panel, findings, read, canonical, direct));
    }
    let names = [
        "arrow import (copy)",
        "clean (sort+validate)",
        "pivot",
        "drop bars",
        "read_bars(file)",
        "arrow view (interning)",
        "validate view",
        "pivot view",
    ];
    for (name, ms) in names.iter().zip(best) {
        println!("{name:>24}: {ms:8.2} ms");
    }
}

/// A default backtest from Arrow buffers, validated before the engine (`run::prepare`) and with the
/// warnings found beside it (`run::prepare_deferred`), interleaved: medians of `runs` each.
fn overlap(batches: &[arrow::record_batch::RecordBatch], runs: usize) {
    use xsmom::run::{self, BarsSource, FundingSource};
    let cfg = xsmom::Config::default();
    let (mut before, mut beside, mut engine) = (Vec::new(), Vec::new(), Vec::new());
    let source = || BarsSource::Arrow(data::ArrowBars::from_batches(batches, "file").expect("arrow"));
    for _ in 0..runs {
        let started = Instant::now();
        let inputs = run::prepare(source(), FundingSource::None, &cfg).expect("prepare");
        let result = run::backtest(&inputs, &cfg, false).expect("backtest");
        before.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        let (inputs, pending) = run::prepare_deferred(source(), FundingSource::None, &cfg).expect("prepare");
        let prepared = started.elapsed().as_secs_f64() * 1e3;
        let mut deferred = run::backtest(&inputs, &cfg, false).expect("backtest");
        let ran = started.elapsed().as_secs_f64() * 1e3;
        let (_, lines) = pending.expect("error-free bars").finish().expect("findings");
        if std::env::var_os("XSMOM_PROFILE_VERBOSE").is_some() {
            let done = started.elapsed().as_secs_f64() * 1e3;
            eprintln!("prepared {prepared:.2} ran {ran:.2} finished {done:.2}");
        }
        deferred.warnings.splice(0..0, lines);
        beside.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(deferred.warnings, result.warnings);
        let started = Instant::now();
        std::hint::black_box(run::backtest(&inputs, &cfg, false).expect("backtest"));
        engine.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let median = |times: &mut Vec<f64>| {
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let engine_times = engine.clone();
    let engine = median(&mut engine);
    let fastest = |times: &[f64]| times.iter().copied().fold(f64::INFINITY, f64::min);
    let engine_fastest = fastest(&engine_times);
    for (name, times) in [("validation first", &mut before), ("validation beside", &mut beside)] {
        let best = fastest(times);
        let ms = median(times);
        println!(
            "{name:>18}: median {ms:8.2} ms ({:.2}x the engine run's {engine:.2} ms), fastest {best:.2} ms ({:.2}x {engine_fastest:.2} ms)",
            ms / engine,
            best / engine_fastest
        );
    }
}
