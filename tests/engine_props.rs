//! Properties of the whole engine on random panels: no look-ahead (truncation invariance),
//! determinism, neutrality and the gross cap.

mod common;

use proptest::prelude::*;
use xsmom::backtest::{self, BacktestResult};
use xsmom::data::{FundingGrid, Panel};
use xsmom::Config;

/// Config variants that exercise every path of the engine.
fn variant(index: usize) -> Config {
    let base = Config::default();
    let sets: &[&[&str]] = &[
        &[],
        &["execution.fill=next_open"],
        &["execution.fill=limit_touch", "execution.limit_ttl_bars=2"],
        &["execution.fill=limit_touch", "execution.limit_fallback=cancel", "execution.limit_offset_bps=5"],
        &["backtest.accounting=weights"],
        &["strategy.bands.enabled=true"],
        &[
            "strategy.adx_filter.enabled=true",
            "strategy.adx_filter.min_adx=15",
            "strategy.adx_filter.require_rising=true",
        ],
        &["strategy.k_mode=static", "sizing.weighting=signal_inverse_vol"],
        &["strategy.regime_filter.mode=directional", "strategy.regime_filter.slope_min_bps_per_day=1"],
        &["backtest.rebalance_every=3", "risk.kill_switch.max_daily_loss_pct=1", "risk.kill_switch.action=freeze"],
        &["risk.kill_switch.max_daily_loss_pct=0.5", "risk.stops.max_bars_in_trade=5"],
        &["strategy.market_neutral=false", "strategy.require_sign=false"],
        &[
            "strategy.bands.enabled=true",
            "strategy.adx_filter.enabled=true",
            "strategy.adx_filter.min_adx=10",
            "risk.drawdown.enabled=true",
            "risk.drawdown.max_portfolio_drawdown_pct=3",
            "risk.time_of_day.enabled=true",
            "risk.time_of_day.min_trades_per_hour=3",
            "risk.time_of_day.blackout_hours_utc=[5]",
            "sizing.kelly.enabled=true",
            "risk.kill_switch.max_daily_loss_pct=1",
            "risk.stops.max_bars_in_trade=20",
        ],
        &[
            "strategy.router.enabled=true",
            "strategy.router.majors=[S000USDT, S001USDT]",
            "strategy.router.corr_threshold=0.0",
            "strategy.router.majors_slope_min=5",
        ],
        // Active within 600 bars: the meta-labeler's first fit comes after 15 closed round trips.
        &[
            "strategy.meta_label.enabled=true",
            "strategy.meta_label.min_train_trades=15",
            "strategy.meta_label.refit_bars=24",
            "strategy.meta_label.threshold=0.55",
        ],
    ];
    let set: Vec<String> = sets[index % sets.len()].iter().map(|s| s.to_string()).collect();
    base.with_override_strings(&set).unwrap()
}

fn run(panel: &Panel, cfg: &Config) -> BacktestResult {
    backtest::run(panel, &common::no_funding(panel), cfg).unwrap()
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 30, ..ProptestConfig::default() })]

    /// Everything the engine outputs for bar t is the same whether it sees bars 0..=t or all bars.
    #[test]
    fn truncation_invariance(seed in 0u64..10_000, n_symbols in 6usize..12, cut in 0.45f64..0.98, v in 0usize..13) {
        let panel = common::random_panel(600, n_symbols, seed, true);
        // The first 12 variants, and the meta-labeler's (14).
        let cfg = variant(if v == 12 { 14 } else { v });
        let full = run(&panel, &cfg);
        let t = ((panel.n_bars() as f64) * cut) as usize;
        let head = run(&panel.head(t + 1), &cfg);
        let (b_full, b_head) = (&full.bars, &head.bars);
        for s in 0..=t {
            prop_assert!(same(b_full.equity[s], b_head.equity[s]), "equity differs at bar {s} (cut {t})");
            prop_assert!(same(b_full.cash[s], b_head.cash[s]));
            prop_assert!(same(b_full.fees[s], b_head.fees[s]));
            prop_assert_eq!(b_full.k[s], b_head.k[s]);
            prop_assert_eq!(b_full.kill_switch[s], b_head.kill_switch[s]);
        }
        let (tw_full, tw_head) = (full.target_weights(), head.target_weights());
        let (u_full, u_head) = (full.units(), head.units());
        for s in 0..=t {
            for i in 0..panel.n_symbols() {
                prop_assert!(same(tw_full[[s, i]], tw_head[[s, i]]), "target weight differs at bar {s}, symbol {i}");
                prop_assert!(same(u_full[[s, i]], u_head[[s, i]]));
            }
        }
        let cutoff = panel.ts[t];
        let fills_full: Vec<_> = full.fills.iter().filter(|f| f.ts <= cutoff).collect();
        let fills_head: Vec<_> = head.fills.iter().collect();
        prop_assert_eq!(fills_full, fills_head);
    }

    #[test]
    fn books_respect_neutrality_and_the_gross_cap(seed in 0u64..10_000, v in 0usize..9) {
        let panel = common::random_panel(500, 10, seed, true);
        let cfg = variant(v);
        let result = run(&panel, &cfg);
        let targets = result.target_weights();
        for row in targets.rows() {
            let gross: f64 = row.iter().map(|w| w.abs()).sum();
            let net: f64 = row.iter().sum();
            prop_assert!(gross <= cfg.sizing.max_gross_leverage + 1e-12);
            if cfg.strategy.market_neutral && gross > 0.0 && cfg.risk.stops.partial_tp_frac == 0.0 {
                prop_assert!(net.abs() <= 1e-9 * gross);
            }
            for w in row {
                prop_assert!(w.abs() <= cfg.sizing.max_weight_per_asset * cfg.sizing.vol_target.max_scale.max(1.0) + 1e-12);
            }
        }
        prop_assert!(result.bars.equity.iter().all(|e| e.is_finite() && *e > 0.0));
    }
}

#[test]
fn runs_are_deterministic() {
    let panel = common::random_panel(700, 12, 42, true);
    let cfg = Config::default();
    let (a, b) = (run(&panel, &cfg), run(&panel, &cfg));
    assert_eq!(a.bars, b.bars);
    assert_eq!(a.fills, b.fills);
    assert_eq!(a.book, b.book);
}

#[test]
fn market_neutral_book_without_take_profits_is_neutral() {
    // With partial take-profits off, every book the strategy decides is exactly market neutral
    // (before admission: anti-churn may refuse one leg's entry).
    let panel = common::random_panel(700, 12, 9, true);
    let cfg = Config::default().with_override_strings(&["risk.stops.partial_tp_frac=0".into()]).unwrap();
    let targets = run(&panel, &cfg).model_weights();
    let mut books = 0;
    for row in targets.rows() {
        let gross: f64 = row.iter().map(|w| w.abs()).sum();
        if gross > 0.0 {
            books += 1;
            assert!(row.iter().sum::<f64>().abs() <= 1e-12 * gross.max(1.0), "net {}", row.iter().sum::<f64>());
        }
    }
    assert!(books > 100, "the strategy traded ({books} books)");
}

#[test]
fn router_runs_both_regimes_and_tsmom_books_follow_momentum() {
    let panel = common::random_panel(900, 10, 77, false);
    let cfg = variant(13);
    let result = run(&panel, &cfg);
    let regimes: std::collections::BTreeSet<&str> = result.bars.regime.iter().copied().collect();
    assert_eq!(regimes, ["tsmom", "xsmom"].into_iter().collect(), "both regimes occur");
    // A switch needs confirm_bars (3) bars of the new regime, so the regime never flickers bar to bar.
    let switches = result.bars.regime.windows(2).filter(|w| w[0] != w[1]).count();
    let flickers = result.bars.regime.windows(3).filter(|w| w[0] == w[2] && w[0] != w[1]).count();
    assert!(switches > 0 && flickers == 0);
    // On TSMOM decision bars every held target has the sign of its momentum and gross ≤ the cap.
    let targets = result.target_weights();
    let momentum =
        xsmom::signal::momentum(panel.close.view(), &cfg.strategy.lookbacks, &cfg.strategy.lookback_weights, true);
    let mut checked = 0;
    for t in 0..panel.n_bars() {
        if result.bars.regime[t] == "tsmom" && targets.row(t).iter().any(|w| *w != 0.0) {
            for i in 0..panel.n_symbols() {
                let w = targets[[t, i]];
                if w != 0.0 {
                    assert_eq!(w.signum(), momentum[[t, i]].signum(), "bar {t} symbol {i}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 0);
}

// --- basis carry (issue 16) ------------------------------------------------------------------------

/// Funding every 8 bars with a persistent per-symbol bias, and mark closes `close / (1 + premium)`
/// with a persistent per-symbol premium plus noise; symbol 3 has no mark data, and a few mark bars
/// are missing.
fn with_funding_and_marks(mut panel: Panel, seed: u64) -> (Panel, FundingGrid) {
    let (n_bars, n_symbols) = (panel.n_bars(), panel.n_symbols());
    let mut rng = common::Rng::new(seed ^ 0x5eed);
    let mut funding = FundingGrid::empty(n_bars, n_symbols);
    let mut mark = ndarray::Array2::from_elem((n_bars, n_symbols), f64::NAN);
    for i in 0..n_symbols {
        funding.has_data[i] = true;
        let bias = (rng.uniform() - 0.5) * 3e-4;
        let premium = (rng.uniform() - 0.5) * 2e-3;
        for t in 0..n_bars {
            let close = panel.close[[t, i]];
            if t % 8 == 0 && close.is_finite() {
                funding.add_event(t, i, bias + rng.normal() * 5e-5);
            }
            if i != 3 && close.is_finite() && rng.uniform() > 0.03 {
                mark[[t, i]] = close / (1.0 + premium + rng.normal() * 3e-4);
            }
        }
    }
    panel.mark_close = Some(mark);
    (panel, funding)
}

fn head_funding(funding: &FundingGrid, rows: usize) -> FundingGrid {
    funding.head(rows)
}

fn basis_config(basis_weight: f64) -> Config {
    let set: Vec<String> = [
        "strategy.carry.enabled=true",
        "strategy.carry.budget=0.5",
        "strategy.carry.funding_lookback=3",
        "strategy.carry.sign_stability_k=2",
        "strategy.carry.hedge_symbol=S000USDT",
        "strategy.carry.basis_ema_bars=6",
        &format!("strategy.carry.basis_weight={basis_weight}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Config::default().with_override_strings(&set).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// No look-ahead with the carry sleeve and its basis term on: bars 0..=t give the same outputs
    /// for bar t as the whole panel.
    #[test]
    fn truncation_invariance_with_basis_carry(seed in 0u64..10_000, cut in 0.45f64..0.98, weight in 200.0f64..3000.0) {
        let (panel, funding) = with_funding_and_marks(common::random_panel(500, 8, seed, true), seed);
        let cfg = basis_config(weight);
        let full = backtest::run(&panel, &funding, &cfg).unwrap();
        let t = ((panel.n_bars() as f64) * cut) as usize;
        let head = backtest::run(&panel.head(t + 1), &head_funding(&funding, t + 1), &cfg).unwrap();
        let (tw_full, tw_head) = (full.target_weights(), head.target_weights());
        for s in 0..=t {
            prop_assert!(same(full.bars.equity[s], head.bars.equity[s]), "equity differs at bar {s} (cut {t})");
            for i in 0..panel.n_symbols() {
                prop_assert!(same(tw_full[[s, i]], tw_head[[s, i]]), "target weight differs at bar {s}, symbol {i}");
            }
        }
        let cutoff = panel.ts[t];
        let fills_full: Vec<_> = full.fills.iter().filter(|f| f.ts <= cutoff).collect();
        prop_assert_eq!(fills_full, head.fills.iter().collect::<Vec<_>>());
    }
}

#[test]
fn basis_weight_zero_is_the_funding_sleeve_and_a_positive_weight_changes_the_book() {
    let (panel, funding) = with_funding_and_marks(common::random_panel(600, 8, 5, false), 5);
    let mut no_mark = panel.clone();
    no_mark.mark_close = None;
    // Weight 0: the mark closes are not read at all; the result is the funding sleeve's, bit for bit.
    let off = backtest::run(&panel, &funding, &basis_config(0.0)).unwrap();
    let without = backtest::run(&no_mark, &funding, &basis_config(0.0)).unwrap();
    assert_eq!(off.bars, without.bars);
    assert_eq!(off.book, without.book);
    assert_eq!(off.warnings, without.warnings);
    // A positive weight trades the premium: the book differs, and symbol 3 (no mark data) is named.
    let on = backtest::run(&panel, &funding, &basis_config(1095.0)).unwrap();
    assert_ne!(on.target_weights(), off.target_weights());
    let warning = on.warnings.iter().find(|w| w.contains("no mark data")).expect("a warning names the symbol");
    assert!(warning.contains("S003USDT") && !warning.contains("S000USDT"), "{warning}");
    assert!(!off.warnings.iter().any(|w| w.contains("mark")));
}

/// The long weights table holds a row for each cell with a close or a book entry, once, in bar then
/// symbol order, with the book's values (0 where the book holds nothing), on panels with holes and
/// a symbol whose bars end (the engine flattens before a hole, so no entry is without a close
/// here; the table would still hold one).
fn check_weights_table(seed: u64, v: usize, hole: usize) -> Result<(), TestCaseError> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Float64Type, TimestampMillisecondType};
    let mut panel = common::random_panel(600, 8, seed, true);
    // Symbols 1 and 4 lose their bars for a while, symbol 6 for good.
    for (symbol, bars) in [(1, hole..hole + 30), (4, hole / 2..hole / 2 + 7), (6, hole + 100..600)] {
        for t in bars {
            for field in [&mut panel.open, &mut panel.high, &mut panel.low, &mut panel.close, &mut panel.quote_volume] {
                field[[t, symbol]] = f64::NAN;
            }
        }
    }
    let result = run(&panel, &variant(v));
    let dense = [result.target_weights(), result.model_weights(), result.weights(), result.units()];
    let (mut expected_ts, mut expected_symbol, mut expected_values) = (vec![], vec![], vec![vec![]; 4]);
    for t in 0..panel.n_bars() {
        for i in 0..panel.n_symbols() {
            let held = dense.iter().any(|matrix| matrix[[t, i]] != 0.0);
            if result.listed[[t, i]] || held {
                expected_ts.push(panel.ts[t]);
                expected_symbol.push(panel.symbols[i].clone());
                for (values, matrix) in expected_values.iter_mut().zip(&dense) {
                    values.push(matrix[[t, i]]);
                }
            }
        }
    }
    let table = xsmom::backtest::output::weights_batch(&result);
    prop_assert_eq!(table.num_rows(), expected_ts.len());
    prop_assert_eq!(table.column(0).as_primitive::<TimestampMillisecondType>().values().to_vec(), expected_ts);
    let symbols: Vec<String> = table.column(1).as_string_view().iter().map(|s| s.unwrap().to_string()).collect();
    prop_assert_eq!(symbols, expected_symbol);
    for (k, values) in expected_values.iter().enumerate() {
        let column = table.column(2 + k).as_primitive::<Float64Type>().values();
        prop_assert!(
            column.len() == values.len() && column.iter().zip(values).all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn the_weights_table_holds_every_listed_or_held_cell(seed in 0u64..10_000, v in 0usize..13, hole in 120usize..450) {
        check_weights_table(seed, v, hole)?;
    }
}
