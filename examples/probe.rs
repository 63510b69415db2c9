#[path = "../tests/common/mod.rs"]
mod common;
fn main() {
    let panel = common::random_panel(8760, 36, 7, true);
    let base = xsmom::Config::default();
    for (name, sets) in [
        ("default", vec![]),
        ("no stops", vec!["risk.stops.enabled=false".to_string()]),
        ("no stops, no vt", vec!["risk.stops.enabled=false".into(), "sizing.vol_target.enabled=false".into()]),
        (
            "no stops, no vt, no regime",
            vec![
                "risk.stops.enabled=false".into(),
                "sizing.vol_target.enabled=false".into(),
                "strategy.regime_filter.enabled=false".into(),
            ],
        ),
    ] {
        let cfg = base.with_override_strings(&sets).unwrap();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t0 = std::time::Instant::now();
            let r = xsmom::backtest::run(&panel, &common::no_funding(&panel), &cfg).unwrap();
            best = best.min(t0.elapsed().as_secs_f64());
            std::hint::black_box(r);
        }
        let t0 = std::time::Instant::now();
        let ind = xsmom::backtest::Indicators::compute(&panel, &cfg);
        println!("{name}: {:.1} ms (indicators {:.1} ms)", best * 1e3, t0.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(ind);
    }
}
