//! A digest of every engine output (bar series, book, fills, round trips, signals, listed, the
//! meta-labeler's p and skipped entries) over twelve configurations and two synthetic panels, one
//! line per run. For performance work: save the output before a change, compare after it — equal
//! digests mean bit-identical results.
//! `cargo run --release --example output_digest > before.txt`
#[path = "../tests/common/mod.rs"]
mod common;

use std::hash::{Hash, Hasher};
use xsmom::Config;

fn h(hasher: &mut std::collections::hash_map::DefaultHasher, values: &[f64]) {
    for v in values {
        v.to_bits().hash(hasher);
    }
}

fn synthetic_funding(panel: &xsmom::data::Panel) -> xsmom::data::FundingGrid {
    let (n_bars, n_symbols) = (panel.n_bars(), panel.n_symbols());
    let mut grid = xsmom::data::FundingGrid::empty(n_bars, n_symbols);
    let mut rng = common::Rng::new(99);
    for i in 0..n_symbols {
        grid.has_data[i] = i % 5 != 4;
        let bias = (rng.uniform() - 0.4) * 4e-4;
        for t in (0..n_bars).step_by(8) {
            if grid.has_data[i] && panel.close[[t, i]].is_finite() {
                grid.add_event(t, i, bias + rng.normal() * 1e-4);
            }
        }
    }
    grid
}

fn main() {
    let base = Config::default();
    let sets: Vec<(&str, Vec<&str>)> = vec![
        ("default", vec![]),
        (
            "plain",
            vec![
                "risk.stops.enabled=false",
                "risk.kill_switch.enabled=false",
                "risk.anti_churn.enabled=false",
                "risk.scoring.enabled=false",
            ],
        ),
        (
            "allrisk",
            vec![
                "risk.drawdown.enabled=true",
                "risk.time_of_day.enabled=true",
                "sizing.kelly.enabled=true",
                "strategy.adx_filter.enabled=true",
                "strategy.adx_filter.min_adx=15",
                "strategy.adx_filter.require_rising=true",
                "risk.stops.max_bars_in_trade=30",
            ],
        ),
        ("router", vec!["strategy.router.enabled=true", "strategy.router.majors=[S000USDT, S001USDT]"]),
        ("carry", vec!["strategy.carry.enabled=true", "strategy.carry.hedge_symbol=S000USDT"]),
        (
            "nextopen",
            vec![
                "backtest.fill=next_open",
                "risk.kill_switch.action=freeze",
                "risk.kill_switch.max_daily_loss_pct=1.0",
            ],
        ),
        ("weights", vec!["backtest.accounting=weights"]),
        (
            "bands",
            vec![
                "strategy.bands.enabled=true",
                "sizing.weighting=signal_inverse_vol",
                "strategy.regime_filter.mode=directional",
                "strategy.require_sign=false",
                "strategy.market_neutral=false",
            ],
        ),
        (
            "static",
            vec![
                "strategy.k_mode=static",
                "sizing.caps=clip",
                "universe.max_symbols=20",
                "universe.min_quote_volume_24h=10000",
                "backtest.rebalance_every=3",
                "risk.scoring.action=downweight",
                "sizing.vol_target.enabled=false",
            ],
        ),
        (
            "regup",
            vec![
                "strategy.regime_filter.mode=up",
                "strategy.regime_filter.short_history=pass",
                "sizing.weighting=equal",
                "strategy.strict_k=true",
            ],
        ),
        ("meta", vec!["strategy.meta_label.enabled=true", "strategy.meta_label.min_train_trades=100"]),
        (
            "metasize",
            vec![
                "strategy.meta_label.enabled=true",
                "strategy.meta_label.mode=size",
                "strategy.meta_label.refit_bars=48",
                "strategy.meta_label.min_train_trades=50",
            ],
        ),
    ];
    let panels = [common::random_panel(8_760, 36, 7, true), common::random_panel(3_000, 60, 11, true)];
    let mut all = std::collections::hash_map::DefaultHasher::new();
    for (name, overrides) in &sets {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let cfg = base.with_override_strings(&overrides).expect(name);
        for panel in &panels {
            let funding = synthetic_funding(panel);
            let r = xsmom::backtest::run_with(panel, &funding, &cfg, true).unwrap();
            let mut hs = std::collections::hash_map::DefaultHasher::new();
            let b = &r.bars;
            for col in [
                &b.equity,
                &b.cash,
                &b.gross,
                &b.net,
                &b.turnover,
                &b.traded_notional,
                &b.fees,
                &b.funding,
                &b.vol_scale,
            ] {
                h(&mut hs, col);
            }
            b.n_long.hash(&mut hs);
            b.n_short.hash(&mut hs);
            b.k.hash(&mut hs);
            b.kill_switch.hash(&mut hs);
            b.regime.hash(&mut hs);
            r.book.row_start.hash(&mut hs);
            r.book.symbol.hash(&mut hs);
            h(&mut hs, &r.book.target_weight);
            h(&mut hs, &r.book.weight);
            h(&mut hs, &r.book.units);
            for f in &r.fills {
                (f.ts, f.symbol, f.side, f.qty.to_bits(), f.price.to_bits(), f.fee.to_bits(), f.reason.as_str())
                    .hash(&mut hs);
                f.meta_p.to_bits().hash(&mut hs);
            }
            for t in &r.round_trips {
                (t.symbol, t.entry_ts, t.exit_ts, t.pnl.to_bits(), t.bars_held).hash(&mut hs);
            }
            for s in &r.meta_skipped {
                (s.ts, s.symbol, s.side, s.p.to_bits()).hash(&mut hs);
            }
            if let Some(s) = &r.signals {
                (&s.ts, &s.symbol, &s.eligible).hash(&mut hs);
                h(&mut hs, &s.momentum);
                h(&mut hs, &s.z);
                h(&mut hs, &s.signal);
            }
            r.listed.as_slice().unwrap().hash(&mut hs);
            r.first_decision.hash(&mut hs);
            let d = hs.finish();
            d.hash(&mut all);
            println!(
                "{name:10} {}x{}: {d:016x} fills={} eq={:.6}",
                panel.n_symbols(),
                panel.n_bars(),
                r.fills.len(),
                b.equity.last().unwrap()
            );
        }
    }
    println!("ALL {:016x}", all.finish());
}
