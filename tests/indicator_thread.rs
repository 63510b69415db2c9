//! A backtest runs its indicator kernels on a second thread when it has a spare core
//! (`backtest::run_window_in`): every output must equal a run whose engine computes them itself,
//! bar by bar on one thread ([`Engine::step`], as the live runner does), for every combination of
//! kernels (slope, ADX with its rising history, ATR and the previous bar's ATR, the router's
//! window), gaps in the closes, warm windows and chunk boundaries.

mod common;

use xsmom::backtest::{self, Engine};
use xsmom::data::{FundingGrid, Panel};
use xsmom::Config;

/// A random panel with holes: besides ragged listings, single closes and runs of a few bars are
/// missing in the middle of the series (the kernels' gap paths).
fn gappy_panel(n_bars: usize, n_symbols: usize, seed: u64) -> Panel {
    let base = common::random_panel(n_bars, n_symbols, seed, true);
    let mut rng = common::Rng::new(seed ^ 0x9e37);
    let mut closes: Vec<Vec<f64>> = (0..n_bars).map(|t| base.close.row(t).to_vec()).collect();
    for _ in 0..n_bars / 40 {
        let (t, i) = ((rng.uniform() * n_bars as f64) as usize, (rng.uniform() * n_symbols as f64) as usize);
        let run = 1 + (rng.uniform() * 4.0) as usize;
        for row in closes.iter_mut().skip(t).take(run) {
            row[i] = f64::NAN;
        }
    }
    common::panel_from_closes(&closes, "1h")
}

/// The same window stepped on this thread, the engine computing its own indicators.
fn one_thread(panel: &Panel, funding: &FundingGrid, cfg: &Config, window: std::ops::Range<usize>) -> String {
    let mut engine = Engine::new(&panel.symbols, panel.timeframe, &funding.has_data, cfg, true).expect("engine");
    for t in 0..window.start {
        engine.warm(&panel.bar_row(t, funding));
    }
    for t in window {
        engine.step(&panel.bar_row(t, funding));
    }
    format!("{:?}", engine.finish())
}

fn threaded(panel: &Panel, funding: &FundingGrid, cfg: &Config, window: std::ops::Range<usize>) -> String {
    let result = backtest::run_window(panel, funding, cfg, window.start, window.end, true).expect("backtest");
    format!("{result:?}")
}

const CONFIGS: &[&[&str]] = &[
    &[],
    &["risk.stops.enabled=false", "strategy.regime_filter.enabled=false"],
    &["strategy.adx_filter.enabled=true", "strategy.adx_filter.require_rising=true", "strategy.adx_filter.min_adx=10"],
    &["execution.fill=next_open"],
    &["strategy.router.enabled=true"],
    &["strategy.bands.enabled=true", "sizing.weighting=signal_inverse_vol"],
];

#[test]
fn threaded_indicators_give_every_output_of_a_one_thread_run() {
    assert!(
        xsmom::threads::spare_core() || std::thread::available_parallelism().map_or(1, |n| n.get()) < 2,
        "a test thread with two cores must be allowed an indicator thread"
    );
    // 5 000 bars: past the size that starts a thread, over many chunks and a partial last one.
    let panel = gappy_panel(5_000, 23, 11);
    let funding = common::no_funding(&panel);
    for overrides in CONFIGS {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let cfg = Config::default().with_override_strings(&overrides).expect("override");
        for window in [0..5_000, 1_500..4_321] {
            let want = one_thread(&panel, &funding, &cfg, window.clone());
            let got = threaded(&panel, &funding, &cfg, window.clone());
            assert!(want.contains("Fill {"), "{overrides:?}: the run trades, so the comparison means something");
            assert!(want == got, "{overrides:?} over {window:?}: the threaded run differs");
        }
    }
}

#[test]
fn chunks_kept_from_a_run_of_other_symbols_and_kernels_serve_the_next() {
    // A thread keeps its indicator chunks for its next run (`SPARE_CHUNKS`): each run below gets
    // the memory of the one before, wider or narrower rows, more or fewer outputs.
    let runs: [(usize, &[&str]); 4] = [
        (31, &["strategy.adx_filter.enabled=true", "strategy.adx_filter.min_adx=10"]),
        (9, &["risk.stops.enabled=false", "strategy.regime_filter.enabled=false"]),
        (31, &[]),
        (17, &["strategy.router.enabled=true"]),
    ];
    for (n_symbols, overrides) in runs {
        let panel = gappy_panel(3_000, n_symbols, n_symbols as u64);
        let funding = common::no_funding(&panel);
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let cfg = Config::default().with_override_strings(&overrides).expect("override");
        let want = one_thread(&panel, &funding, &cfg, 0..3_000);
        assert!(want.contains("Fill {"), "{overrides:?}: the run trades");
        assert!(want == threaded(&panel, &funding, &cfg, 0..3_000), "{n_symbols} symbols, {overrides:?}");
    }
}

#[test]
fn a_run_inside_a_parallel_map_keeps_its_indicators_on_its_own_thread() {
    // Each worker of a sweep already has a core: it must not start another thread per backtest.
    let flags = xsmom::threads::map_with_state(&[0, 1, 2, 3], Some(2), || (), |_, _| xsmom::threads::spare_core());
    assert_eq!(flags, vec![false; 4]);
    if xsmom::threads::cores() >= 2 {
        // Enough work that the data path's map runs on both cores: its threads are as busy.
        let data_flags = xsmom::threads::map_ordered(&[0, 1, 2, 3], 1_000_000, |_| xsmom::threads::spare_core());
        assert_eq!(data_flags, vec![false; 4]);
    }
    assert_eq!(xsmom::threads::spare_core(), xsmom::threads::cores() >= 2, "the flag is cleared after a map");
    let alone = xsmom::threads::map_with_state(&[0, 1], Some(1), || (), |_, _| xsmom::threads::spare_core());
    assert_eq!(alone, vec![xsmom::threads::cores() >= 2; 2], "one worker on the calling thread leaves the core spare");
}

#[test]
fn a_streamed_run_replays_the_kernels_of_the_pivot_thread_with_every_output_of_a_one_thread_run() {
    // The streamed pivot (a DataFrame, a file, a store) computes the kernels on its filling thread,
    // a tile at a time, beside its validation: the engine must see the very numbers it would compute.
    let panel = gappy_panel(3_000, 17, 12);
    let funding = common::no_funding(&panel);
    let bars = xsmom::data::ArrowBars::from_batches(&[xsmom::data::bars_to_batch(&panel.to_bars())], "bars")
        .expect("arrow bars");
    let without_warnings = |mut result: backtest::BacktestResult| {
        result.warnings.clear(); // the streamed run adds the bars' own
        format!("{result:?}")
    };
    for overrides in CONFIGS {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let cfg = Config::default().with_override_strings(&overrides).expect("override");
        let mut engine = Engine::new(&panel.symbols, panel.timeframe, &funding.has_data, &cfg, true).expect("engine");
        (0..panel.n_bars()).for_each(|t| engine.step(&panel.bar_row(t, &funding)));
        let want = without_warnings(engine.finish());
        assert!(want.contains("Fill {"), "{overrides:?}: the run trades, so the comparison means something");
        // The kernels stay on the pivot's thread, or go to the engine with the first tile, a later
        // one, or when the engine keeps waiting (the default).
        for hand_over_at in [None, Some(0), Some(5), Some(usize::MAX)] {
            let policy = |pace: xsmom::data::StreamPace| hand_over_at.is_some_and(|tile| pace.tiles_sent >= tile);
            let run = |hand_over: &mut (dyn FnMut(xsmom::data::StreamPace) -> bool + Send)| {
                xsmom::run::backtest_streamed_with(&bars, &xsmom::run::FundingSource::None, &cfg, true, hand_over)
                    .expect("backtest")
                    .expect("streamable bars")
                    .1
            };
            let streamed = match hand_over_at {
                Some(usize::MAX) => run(&mut backtest::kernels_where_faster(cfg.strategy.min_history())),
                _ => run(&mut { policy }),
            };
            assert!(
                want == without_warnings(streamed),
                "{overrides:?}, hand-over at {hand_over_at:?}: the run differs"
            );
        }
    }
}
