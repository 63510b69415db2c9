#[path = "../tests/common/mod.rs"]
mod common;
fn main() {
    let panel = common::random_panel(8760, 36, 7, true);
    let cfg = xsmom::Config::default();
    let t0 = std::time::Instant::now();
    let r = xsmom::backtest::run(&panel, &common::no_funding(&panel), &cfg).unwrap();
    println!("{:?} fills {} trips {} first {:?}", t0.elapsed(), r.fills.len(), r.round_trips.len(), r.first_decision);
    let reasons: std::collections::BTreeMap<&str, usize> = r.fills.iter().fold(Default::default(), |mut m, f| {
        *m.entry(f.reason.as_str()).or_default() += 1;
        m
    });
    println!("{reasons:?}");
    println!("{:?}", r.metrics);
}
