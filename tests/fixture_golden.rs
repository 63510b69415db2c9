//! Golden regression values on the bundled real-data fixture (32 Binance USDT-M perpetuals,
//! hourly, 2025-06-01 → 2025-10-31, with funding). A change in any of these numbers is a change of
//! behaviour: update them only deliberately, with the reason in the commit message.

mod common;

use std::path::PathBuf;

use xsmom::run::{self, BarsSource, FundingSource};
use xsmom::Config;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

fn run_profile(cfg: &Config) -> xsmom::backtest::BacktestResult {
    let inputs = run::prepare(BarsSource::Path(fixture()), FundingSource::FromBarsStore, cfg).unwrap();
    run::backtest(&inputs, cfg, false).unwrap()
}

fn assert_close(name: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{name}: got {got:?}, golden {want:?}");
}

#[test]
fn default_config_golden_metrics() {
    let result = run_profile(&Config::default());
    let m = &result.metrics;
    GOLDEN_DEFAULT.iter().for_each(|(name, want)| {
        let got = m.to_pairs().into_iter().find(|(n, _)| n == name).unwrap().1;
        assert_close(name, got, *want);
    });
    assert_eq!(result.fills.len(), GOLDEN_DEFAULT_FILLS);
    assert!(result.warnings.iter().all(|w| !w.contains("no funding")), "the fixture has funding for every symbol");
}

#[test]
fn v1_profile_golden_metrics_and_naive_equity_on_the_fixture() {
    let cfg = Config::profile("xsmom-bot-v1").unwrap();
    let result = run_profile(&cfg);
    GOLDEN_V1.iter().for_each(|(name, want)| {
        let got = result.metrics.to_pairs().into_iter().find(|(n, _)| n == name).unwrap().1;
        assert_close(name, got, *want);
    });
    // The v1 equity curve without funding equals the independent implementation to 1e-9.
    let inputs = run::prepare(BarsSource::Path(fixture()), FundingSource::None, &cfg).unwrap();
    let engine = run::backtest(&inputs, &cfg, false).unwrap();
    let naive = common::naive_v1::naive_v1(&inputs.panel, &cfg);
    for (t, (a, b)) in engine.bars.equity.iter().zip(&naive).enumerate() {
        assert!((a - b).abs() <= 1e-9 * b.abs(), "bar {t}: engine {a} vs naive {b}");
    }
}

const GOLDEN_DEFAULT_FILLS: usize = 10501;
const GOLDEN_DEFAULT: &[(&str, f64)] = &[
    ("total_return", -0.3866850013714287),
    ("cagr", -0.7077854276323521),
    ("vol", 0.09987840952286282),
    ("sharpe", -12.26671991752963),
    ("sortino", -14.994884370542586),
    ("max_drawdown", 0.387211031602847),
    ("calmar", -1.8279061541777315),
    ("turnover_per_year", 1781.4122932101898),
    ("exposure", 0.2736192690770531),
    ("fees", 1816.23605368733),
    ("funding", 8.626935923880632),
    ("round_trips", 4010.0),
    ("win_rate", 0.40423940149625937),
    ("profit_factor", 0.7532314870071003),
    ("avg_bars_held", 3.05785536159601),
    ("skew", -3.5759112450548884),
    ("kurtosis", 83.28249897459838),
    ("psr", 1.6638748649656007e-16),
    ("n_bars", 3481.0),
    ("final_equity", 6133.149986285714),
];
const GOLDEN_V1: &[(&str, f64)] = &[
    ("total_return", -0.5626328097570787),
    ("cagr", -0.8684890737954216),
    ("vol", 0.2522109031396472),
    ("sharpe", -7.916920840889661),
    ("sortino", -11.189104581430819),
    ("max_drawdown", 0.5701631783010724),
    ("calmar", -1.523228975226491),
    ("turnover_per_year", 2989.3249928676023),
    ("exposure", 0.9500000399999596),
    ("fees", 3903.601441227353),
    ("funding", 10.498694795739688),
    ("round_trips", 7697.0),
    ("win_rate", 0.3663765103286995),
    ("profit_factor", 0.8091407514911938),
    ("avg_bars_held", 5.545926984539431),
    ("skew", 1.9653392764191464),
    ("kurtosis", 46.6071117096896),
    ("psr", 3.1701172008308848e-6),
    ("n_bars", 3571.0),
    ("final_equity", 4373.671902429213),
];

#[test]
fn carry_sleeve_on_real_funding_is_hedged_and_causal() {
    // Budget 1: the book is the carry sleeve alone (hedged with BTCUSDT), then caps and vol target.
    // Partial take-profits (which shrink one position after sizing) are off so the book stays neutral.
    let cfg = Config::default()
        .with_override_strings(&[
            "strategy.carry.enabled=true".into(),
            "strategy.carry.budget=1.0".into(),
            "risk.stops.partial_tp_frac=0".into(),
        ])
        .unwrap();
    let inputs = run::prepare(BarsSource::Path(fixture()), FundingSource::FromBarsStore, &cfg).unwrap();
    let result = run::backtest(&inputs, &cfg, false).unwrap();
    assert!(result.warnings.iter().all(|w| !w.contains("carry")), "{:?}", result.warnings);
    // The strategy's book (before admission: anti-churn may refuse one side's entry).
    let targets = result.model_weights();
    let btc = inputs.panel.symbols.iter().position(|s| s == "BTCUSDT").unwrap();
    let mut books = 0;
    for row in targets.rows() {
        let gross: f64 = row.iter().map(|w| w.abs()).sum();
        if gross > 0.0 {
            books += 1;
            let net = row.iter().sum::<f64>();
            assert!(net.abs() <= 1e-12 * gross.max(1.0), "the carry book is market neutral (net {net}, gross {gross})");
        }
    }
    assert!(books > 1000, "carry candidates exist on the fixture ({books} books)");
    assert!(targets.column(btc).iter().any(|w| *w != 0.0), "BTCUSDT hedges the sleeve");
    // No look-ahead: the first 2000 bars alone give the same targets.
    let head = inputs.panel.head(2000);
    let funding = head.align_funding(&xsmom::data::read_funding(&fixture(), None, None, None).unwrap());
    let head_result = xsmom::backtest::run(&head, &funding, &cfg).unwrap();
    let head_targets = head_result.model_weights();
    for t in 0..2000 {
        for i in 0..head.n_symbols() {
            assert_eq!(targets[[t, i]], head_targets[[t, i]], "bar {t} symbol {i}");
        }
    }
}
