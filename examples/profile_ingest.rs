//! Where the time of a backtest from long bars goes before the engine: Arrow import, validation
//! (sort check, findings, spike scale), pivot, funding alignment. Reads one long Parquet file:
//! `cargo run --release --example profile_ingest -- FILE [RUNS] [view|read]` (`view`: only the
//! zero-copy path, `read`: only `read_bars` of the file or store, for a profiler).

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
