//! The `xsmom-bot-v1` profile (backtest.md §6) against an independent, deliberately naive
//! implementation written here from the spec: direct loops, no shared kernels.

mod common;

use common::naive_v1::naive_v1;
use xsmom::backtest;
use xsmom::data::FundingGrid;
use xsmom::Config;

fn assert_same_curve(engine: &[f64], naive: &[f64]) {
    assert_eq!(engine.len(), naive.len());
    for (t, (a, b)) in engine.iter().zip(naive).enumerate() {
        assert!((a - b).abs() <= 1e-9 * b.abs(), "bar {t}: engine {a} vs naive {b}");
    }
}

#[test]
fn v1_profile_matches_naive_implementation_on_random_panels() {
    let cfg = Config::profile("xsmom-bot-v1").unwrap();
    for seed in [1u64, 2, 3] {
        let panel = common::random_panel(900, 20, seed, true);
        let funding = FundingGrid::empty(panel.n_bars(), panel.n_symbols());
        let result = backtest::run(&panel, &funding, &cfg).unwrap();
        let naive = naive_v1(&panel, &cfg);
        assert!(naive.last().unwrap() != &cfg.backtest.initial_capital, "the naive run must trade");
        assert_same_curve(&result.bars.equity, &naive);
    }
}
