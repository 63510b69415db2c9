//! The live runner on the `replay` exchange over the bundled fixture (live.md §6): bar-by-bar parity
//! of target weights with the backtester, restarts that rebuild the model and never duplicate an
//! order, the account kill-switch, and the binary end to end (SIGTERM, `kill -9`, health, state).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use xsmom::backtest::BacktestResult;
use xsmom::live::exchange::Exchange;
use xsmom::live::replay::ReplayExchange;
use xsmom::live::runner::{Runner, RunnerOptions};
use xsmom::live::state::LiveState;
use xsmom::live::types::{ExchangeResult, FundingRate, Instrument, Kline, Order, OrderRequest, Position, Quote};
use xsmom::model::Fill;
use xsmom::run::{self, BarsSource, FundingSource, Inputs};
use xsmom::timeframe::Timeframe;
use xsmom::Config;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

fn inputs(cfg: &Config) -> Inputs {
    let mut inputs = run::prepare(BarsSource::Path(fixture()), FundingSource::FromBarsStore, cfg).unwrap();
    // The store's mark bars when the basis term of the carry sleeve is on (as `xsmom-live` replay does).
    run::attach_store_mark(&mut inputs, &fixture(), cfg).unwrap();
    inputs
}

fn replay(cfg: &Config) -> ReplayExchange {
    let inputs = inputs(cfg);
    ReplayExchange::new(inputs.panel, inputs.funding, cfg)
}

fn options(dir: &Path, start_ts: i64) -> RunnerOptions {
    RunnerOptions {
        mode: "replay".into(),
        state_path: dir.join("state.json"),
        heartbeat_path: dir.join("heartbeat.json"),
        start_ts: Some(start_ts),
        reset_state: false,
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// Run the replay to the end; `crash_after` cycles, drop the runner and start a new one on the same
/// account from the saved state (optionally restoring an older state file first, as if the crash
/// came after the orders were sent but before the state was written).
/// The model's outputs, the order ids sent, and the account equity `(bar ts, equity)` per bar.
/// The simulated account's fills (backtest schema) and its equity path per bar.
type Replayed = (BacktestResult, Vec<String>, Vec<(i64, f64)>, Vec<Fill>);

fn run_replay(cfg: &Config, dir: &Path, crash_after: Option<(usize, bool)>) -> Replayed {
    block_on(async {
        let exchange = replay(cfg);
        let start = exchange.first_bar_ts();
        let symbols = exchange.symbols();
        let mut runner = Runner::start(exchange, cfg.clone(), "", symbols.clone(), options(dir, start)).await.unwrap();
        let mut placed = Vec::new();
        let mut cycles = 0;
        loop {
            let state_before = std::fs::read(dir.join("state.json")).ok();
            let report = runner.cycle().await.unwrap();
            placed.extend(report.orders_placed);
            cycles += 1;
            if let Some((at, lose_state)) = crash_after {
                if cycles == at {
                    if lose_state {
                        std::fs::write(dir.join("state.json"), state_before.expect("a state after the first cycle"))
                            .unwrap();
                    }
                    let exchange = runner.into_exchange();
                    runner =
                        Runner::start(exchange, cfg.clone(), "", symbols.clone(), options(dir, start)).await.unwrap();
                    assert_eq!(runner.rebuilt_matches_state(), Some(true), "the rebuilt model equals the saved state");
                    let report = runner.cycle().await.unwrap();
                    placed.extend(report.orders_placed);
                }
            }
            if !runner.exchange().advance() {
                break;
            }
        }
        let equity = runner.exchange().equity_path();
        let fills = runner.exchange().fills();
        (runner.finish(), placed, equity, fills)
    })
}

fn assert_same_targets(live: &BacktestResult, backtest: &BacktestResult) {
    assert_eq!(live.ts, backtest.ts, "the runner stepped every bar of the fixture");
    let (live, backtest) = (live.target_weights(), backtest.target_weights());
    assert_eq!(live.dim(), backtest.dim());
    for ((t, i), want) in backtest.indexed_iter() {
        assert_eq!(live[[t, i]].to_bits(), want.to_bits(), "target weight at bar {t}, symbol {i}");
    }
}

/// Relative difference, 0 when both are 0.
fn relative(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / a.abs().max(b.abs())
    }
}

/// The simulated account filled what the backtest filled: same bars, symbols, sides and reasons,
/// quantities, prices and fees within 1e-9 relative.
/// Within a bar the account sees intrabar exits before the runner's exits at the close, where the
/// engine decides both in one pass over the symbols: fills are compared in (bar, symbol) order.
fn assert_same_fills(account: &[Fill], backtest: &BacktestResult, label: &str) {
    let by_bar_and_symbol = |fills: &[Fill]| {
        let mut sorted = fills.to_vec();
        sorted.sort_by_key(|f| (f.ts, f.symbol));
        sorted
    };
    let (account, expected) = (by_bar_and_symbol(account), by_bar_and_symbol(&backtest.fills));
    for (k, (live, want)) in account.iter().zip(&expected).enumerate() {
        let same =
            live.ts == want.ts && live.symbol == want.symbol && live.side == want.side && live.reason == want.reason;
        assert!(same, "{label}: fill {k} differs: account {live:?}, backtest {want:?}");
        for (what, a, b) in
            [("qty", live.qty, want.qty), ("price", live.price, want.price), ("fee", live.fee, want.fee)]
        {
            assert!(relative(a, b) <= 1e-9, "{label}: fill {k} {what}: account {a}, backtest {b} ({live:?})");
        }
    }
    assert_eq!(account.len(), backtest.fills.len(), "{label}: number of fills");
}

/// The account's equity at every bar close equals the backtest's within 1e-9 relative.
fn assert_same_equity(account: &[(i64, f64)], backtest: &BacktestResult, label: &str) {
    assert_eq!(account.len(), backtest.ts.len(), "{label}: one equity per bar");
    for (t, ((ts, live), want)) in account.iter().zip(&backtest.bars.equity).enumerate() {
        assert_eq!(*ts, backtest.ts[t]);
        assert!(relative(*live, *want) <= 1e-9, "{label}: equity at bar {t}: account {live}, backtest {want}");
    }
}

/// Every risk feature that can be on at once.
fn all_risk_on() -> Config {
    let overrides = [
        "risk.stops.max_bars_in_trade=6",
        "risk.kill_switch.max_daily_loss_pct=2.0",
        "risk.kill_switch.trailing=true",
        "risk.anti_churn.max_entries_per_day_per_symbol=2",
        "risk.anti_churn.min_bars_between_entries=3",
        "risk.time_of_day.enabled=true",
        "risk.time_of_day.blackout_hours_utc=[3, 4]",
        "risk.drawdown.enabled=true",
        "risk.drawdown.max_portfolio_drawdown_pct=8",
        "sizing.kelly.enabled=true",
        "strategy.bands.enabled=true",
    ];
    Config::default().with_override_strings(&overrides.map(String::from)).unwrap()
}

fn with(cfg: &Config, overrides: &[&str]) -> Config {
    cfg.with_override_strings(&overrides.iter().map(|o| o.to_string()).collect::<Vec<_>>()).unwrap()
}

/// `xsmom-live` replay is the backtest bar by bar: the same admitted targets, fills and equity.
fn assert_replay_is_the_backtest(cfg: &Config, label: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (live, placed, equity, fills) = run_replay(cfg, dir.path(), None);
    let backtest = run::backtest(&inputs(cfg), cfg, false).unwrap();
    assert_same_targets(&live, &backtest);
    assert!(backtest.fills.len() > 50, "{label}: the backtest traded ({} fills)", backtest.fills.len());
    assert_same_fills(&fills, &backtest, label);
    assert_same_equity(&equity, &backtest, label);
    assert!(!placed.is_empty());
    eprintln!("{label}: {} fills, final equity {:.2}", fills.len(), equity.last().unwrap().1);
}

#[test]
fn replay_is_the_backtest_with_the_default_config() {
    assert_replay_is_the_backtest(&Config::default(), "default");
}

#[test]
fn replay_is_the_backtest_with_every_risk_feature_on() {
    let cfg = all_risk_on();
    assert_replay_is_the_backtest(&cfg, "all risk on");
    let reasons: std::collections::BTreeSet<&str> =
        run::backtest(&inputs(&cfg), &cfg, false).unwrap().fills.iter().map(|f| f.reason.as_str()).collect();
    eprintln!("all-risk exit reasons: {reasons:?}");
    for reason in ["rebalance", "stop", "take_profit", "time"] {
        assert!(reasons.contains(reason), "the all-risk config exercises {reason} exits: {reasons:?}");
    }
}

#[test]
fn replay_is_the_backtest_with_the_v1_profile_on_units() {
    // An exchange account holds units: the profile is replayed with `accounting: units`.
    let cfg = with(&Config::profile("xsmom-bot-v1").unwrap(), &["backtest.accounting=units"]);
    assert_replay_is_the_backtest(&cfg, "xsmom-bot-v1 (units)");
}

#[test]
fn replay_is_the_backtest_for_every_fill_model() {
    let base = Config::default();
    assert_replay_is_the_backtest(&with(&base, &["execution.fill=next_open"]), "next_open");
    let limit = with(&base, &["execution.fill=limit_touch", "execution.limit_offset_bps=2"]);
    assert_replay_is_the_backtest(&limit, "limit_touch, taker fallback");
    let cancel = with(&limit, &["execution.limit_fallback=cancel", "execution.limit_ttl_bars=2"]);
    assert_replay_is_the_backtest(&cancel, "limit_touch, cancel after 2 bars");
    assert_replay_is_the_backtest(&with(&all_risk_on(), &["execution.fill=limit_touch"]), "limit_touch, all risk on");
}

#[test]
fn replay_is_the_backtest_with_basis_carry_on() {
    // The runner fetches mark klines each cycle alongside the klines: its model sees the mark closes
    // the backtest reads from the store, and steps to the same targets, fills and equity.
    let basis = with(
        &Config::default(),
        &["strategy.carry.enabled=true", "strategy.carry.budget=0.4", "strategy.carry.basis_weight=1095"],
    );
    assert!(inputs(&basis).panel.mark_close.is_some(), "the fixture has mark bars");
    assert_replay_is_the_backtest(&basis, "basis carry");
    let funding_only = with(&basis, &["strategy.carry.basis_weight=0"]);
    let (on, off) = (
        run::backtest(&inputs(&basis), &basis, false).unwrap(),
        run::backtest(&inputs(&funding_only), &funding_only, false).unwrap(),
    );
    assert_ne!(on.target_weights(), off.target_weights(), "the basis term changes the book");
    // A restart rebuilds the model with the mark closes too.
    let dir = tempfile::tempdir().unwrap();
    let (live, placed, _, _) = run_replay(&basis, dir.path(), Some((1500, false)));
    assert_same_targets(&live, &on);
    let unique: std::collections::BTreeSet<&String> = placed.iter().collect();
    assert_eq!(unique.len(), placed.len(), "no order id sent twice");
}

#[test]
fn a_restart_rebuilds_the_model_and_never_sends_an_order_twice() {
    let cfg = Config::default();
    let backtest = run::backtest(&inputs(&cfg), &cfg, false).unwrap();
    for lose_state in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (live, placed, _, _) = run_replay(&cfg, dir.path(), Some((1500, lose_state)));
        assert_same_targets(&live, &backtest);
        let mut unique = placed.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), placed.len(), "an order id was sent twice (lost state: {lose_state})");
        let state = LiveState::load(&dir.path().join("state.json")).unwrap().unwrap();
        assert_eq!(state.last_bar_ts, live.ts.last().copied());
    }
}

/// The meta-labeler active within the fixture (first fit after 30 closed round trips).
fn meta_label_on() -> Config {
    let overrides = [
        "strategy.meta_label.enabled=true",
        "strategy.meta_label.min_train_trades=30",
        "strategy.meta_label.refit_bars=48",
        "strategy.meta_label.threshold=0.5",
    ];
    Config::default().with_override_strings(&overrides.map(String::from)).unwrap()
}

#[test]
fn replay_is_the_backtest_with_the_meta_labeler_on() {
    let cfg = meta_label_on();
    let backtest = run::backtest(&inputs(&cfg), &cfg, false).unwrap();
    assert!(!backtest.meta_skipped.is_empty(), "the labeler is active and skips entries in the fixture");
    assert!(backtest.fills.iter().any(|f| !f.meta_p.is_nan()));
    assert_replay_is_the_backtest(&cfg, "meta_label on");
    let size = with(&cfg, &["strategy.meta_label.mode=size"]);
    assert_replay_is_the_backtest(&size, "meta_label on, size mode");
}

#[test]
fn a_restart_rebuilds_the_meta_labeler_and_checks_it_against_the_saved_one() {
    let cfg = meta_label_on();
    let backtest = run::backtest(&inputs(&cfg), &cfg, false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The restart after cycle 1500 asserts that the rebuilt model (meta-labeler included) matches.
    let (live, _, _, _) = run_replay(&cfg, dir.path(), Some((1500, false)));
    assert_same_targets(&live, &backtest);
    assert_eq!(live.meta_skipped, backtest.meta_skipped);
    let state_path = dir.path().join("state.json");
    let mut state = LiveState::load(&state_path).unwrap().unwrap();
    let saved = state.meta_label.clone().expect("the state file keeps the meta-labeler");
    assert_eq!(saved.coef.len(), xsmom::meta_label::N_FEATURES);
    assert!(saved.n_train >= 30);

    // A saved model that the bars do not rebuild is reported (and the rebuilt one used).
    state.meta_label.as_mut().unwrap().coef[0] += 1e-9;
    state.save(&state_path).unwrap();
    block_on(async {
        let exchange = replay(&cfg);
        let (start, symbols) = (exchange.first_bar_ts(), exchange.symbols());
        let runner = Runner::start(exchange, cfg.clone(), "", symbols, options(dir.path(), start)).await.unwrap();
        assert_eq!(runner.rebuilt_matches_state(), Some(false));
    });
}

#[test]
fn the_account_kill_switch_flattens_with_reduce_only_market_orders() {
    // A 0.5 % daily loss limit fires within days on the fixture.
    let cfg = Config::default().with_override_strings(&["risk.kill_switch.max_daily_loss_pct=0.5".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_, placed, _, _) = run_replay(&cfg, dir.path(), None);
    let kills: Vec<&String> = placed.iter().filter(|id| id.contains("-kill-")).collect();
    assert!(!kills.is_empty(), "the kill-switch closed positions");
    // While paused (the rest of the UTC day) no new limit orders are placed for that day.
    let first = kills[0];
    // The kill-switch's day is the UTC day of the bar's close (open + 1h).
    let day = |id: &str| (id.split('-').nth(1).unwrap().parse::<i64>().unwrap() + 3_600_000) / 86_400_000;
    let kill_day = day(first);
    let after_kill = placed.iter().skip_while(|id| id != &first).skip(1);
    assert!(after_kill.filter(|id| !id.contains("-kill-")).all(|id| day(id) > kill_day));
}

#[test]
fn replay_clock_never_shows_the_forming_bar() {
    let cfg = Config::default();
    block_on(async {
        let exchange = replay(&cfg);
        exchange.advance_to(exchange.first_bar_ts() + 10 * 3_600_000);
        let now = exchange.server_time_ms().await.unwrap();
        let bars = exchange.closed_klines("BTCUSDT", cfg.timeframe(), 0, i64::MAX).await.unwrap();
        assert!(bars.iter().all(|b| b.ts + 3_600_000 <= now), "a forming bar was served");
        assert_eq!(bars.len(), 11);
    });
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xsmom-live"))
}

#[test]
fn binary_survives_kill_9_and_sigterm_and_ends_with_the_backtest_weights() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "").unwrap();
    let out = dir.path().join("out");
    let args = |cmd: &mut Command| {
        cmd.args(["run", "--config"])
            .arg(&config)
            .args(["--mode", "replay", "--bars"])
            .arg(fixture())
            .arg("--state")
            .arg(dir.path().join("state.json"))
            .arg("--heartbeat")
            .arg(dir.path().join("heartbeat.json"))
            .arg("--out")
            .arg(&out)
            .env("XSMOM_LOG", "warn");
    };
    // kill -9 at arbitrary moments, also while the state is being written: it must always load.
    for wait_ms in [700u64, 1_100, 900] {
        let mut cmd = binary();
        args(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let state = LiveState::load(&dir.path().join("state.json")).expect("a kill -9 never leaves a corrupt state");
        assert!(state.is_some());
    }
    // SIGTERM: finish the step, persist, exit 0.
    let mut cmd = binary();
    args(&mut cmd);
    let child = cmd.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    let before_finish = LiveState::load(&dir.path().join("state.json")).unwrap().unwrap().last_bar_ts;

    // The last run resumes and finishes; its model weights equal the backtester's.
    let mut cmd = binary();
    args(&mut cmd);
    let output = cmd.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let state = LiveState::load(&dir.path().join("state.json")).unwrap().unwrap();
    assert!(state.last_bar_ts > before_finish);
    for file in ["weights.parquet", "fills.parquet", "equity.parquet"] {
        assert!(out.join(file).exists(), "{file}");
    }
    let status = binary().arg("health").arg("--heartbeat").arg(dir.path().join("heartbeat.json")).status().unwrap();
    assert!(status.success(), "a fresh heartbeat is healthy");
    let status = binary()
        .args(["health", "--max-age-secs", "0", "--heartbeat"])
        .arg(dir.path().join("heartbeat.json"))
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1), "an old heartbeat is stale");
    let shown =
        binary().args(["state", "show", "--json", "--state"]).arg(dir.path().join("state.json")).output().unwrap();
    assert!(String::from_utf8_lossy(&shown.stdout).contains("\"schema_version\": 1"));
    // For a person: dates and the account, no raw JSON.
    let shown = binary().args(["state", "show", "--state"]).arg(dir.path().join("state.json")).output().unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.starts_with("mode replay, config "), "{text}");
    assert!(
        text.contains("last bar 2025-10-31 23:00 UTC") && text.contains("equity ") && !text.contains('{'),
        "{text}"
    );
}

#[test]
fn binary_reports_a_corrupt_state_file_instead_of_resetting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "").unwrap();
    std::fs::write(dir.path().join("state.json"), "{\"schema_version\": 1, \"mode\": ").unwrap();
    let output = binary()
        .args(["run", "--mode", "replay", "--config"])
        .arg(&config)
        .arg("--bars")
        .arg(fixture())
        .arg("--state")
        .arg(dir.path().join("state.json"))
        .arg("--heartbeat")
        .arg(dir.path().join("hb.json"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("state.json: corrupt state file"), "{stderr}");
    assert!(stderr.contains("--reset-state"), "{stderr}");
    let output = binary().args(["run", "--config"]).arg(&config).args(["--frobnicate", "1"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown option --frobnicate"));
}

/// The replay exchange with hand-made bars of a finer timeframe for the risk loop's stops.
struct WithStopBars {
    inner: ReplayExchange,
    stop_bars: std::sync::Mutex<Vec<(String, Kline)>>,
}

impl Exchange for WithStopBars {
    async fn server_time_ms(&self) -> ExchangeResult<i64> {
        self.inner.server_time_ms().await
    }
    async fn instruments(&self, symbols: &[String]) -> ExchangeResult<Vec<Instrument>> {
        self.inner.instruments(symbols).await
    }
    async fn closed_klines(
        &self,
        symbol: &str,
        interval: Timeframe,
        start: i64,
        end: i64,
    ) -> ExchangeResult<Vec<Kline>> {
        if interval.ms == 3_600_000 {
            return self.inner.closed_klines(symbol, interval, start, end).await;
        }
        // The replay clock stands still inside a bar: the test's finer bars count as closed already.
        let _ = end;
        let bars = self.stop_bars.lock().unwrap();
        Ok(bars.iter().filter(|(s, k)| s == symbol && k.ts >= start).map(|(_, k)| *k).collect())
    }
    async fn funding_history(&self, symbol: &str, start: i64, end: i64) -> ExchangeResult<Vec<FundingRate>> {
        self.inner.funding_history(symbol, start, end).await
    }
    async fn quote(&self, symbol: &str) -> ExchangeResult<Quote> {
        self.inner.quote(symbol).await
    }
    async fn positions(&self) -> ExchangeResult<Vec<Position>> {
        self.inner.positions().await
    }
    async fn open_orders(&self) -> ExchangeResult<Vec<Order>> {
        self.inner.open_orders().await
    }
    async fn equity(&self) -> ExchangeResult<f64> {
        self.inner.equity().await
    }
    async fn place_order(&self, request: &OrderRequest) -> ExchangeResult<Order> {
        self.inner.place_order(request).await
    }
    async fn cancel_order(&self, symbol: &str, id: &str) -> ExchangeResult<()> {
        self.inner.cancel_order(symbol, id).await
    }
    async fn cancel_all(&self, symbol: Option<&str>) -> ExchangeResult<()> {
        self.inner.cancel_all(symbol).await
    }
}

#[test]
fn stop_timeframe_tests_the_stops_on_finer_bars_in_order() {
    for (text, needle) in [
        ("2h", "must be finer than data.timeframe (1h) and divide it"),
        ("40m", "must be finer than data.timeframe (1h) and divide it"),
        ("fast", "live.stop_timeframe: timeframe 'fast' is not valid"),
    ] {
        let err = Config::default().with_override_strings(&[format!("live.stop_timeframe={text}")]).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    let cfg = Config::default().with_override_strings(&["live.stop_timeframe=5m".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let exchange = WithStopBars { inner: replay(&cfg), stop_bars: Default::default() };
        let start = exchange.inner.first_bar_ts();
        let symbols = exchange.inner.symbols();
        let mut runner =
            Runner::start(exchange, cfg.clone(), "", symbols.clone(), options(dir.path(), start)).await.unwrap();
        // Step until the account holds a position the model has a stop for.
        let (symbol, stop) = loop {
            runner.cycle().await.unwrap();
            let held = runner.exchange().positions().await.unwrap().into_iter().find_map(|p| {
                let i = symbols.iter().position(|s| *s == p.symbol)?;
                let stop = runner.engine().risk().stop_state(i)?.clone();
                (stop.side == p.qty.signum()).then_some((p.symbol, stop))
            });
            if let Some(found) = held {
                break found;
            }
            assert!(runner.exchange().inner.advance(), "no stopped position in the fixture");
        };
        let since = runner.state().last_bar_ts.unwrap() + 3_600_000;
        let bar = |k: i64, open: f64, high: f64, low: f64| Kline {
            ts: since + k * 300_000,
            open,
            high,
            low,
            close: open,
            volume: 1.0,
            turnover: open,
        };
        let (safe, through) = (stop.stop * (1.0 + stop.side * 0.01), stop.stop * (1.0 - stop.side * 0.01));
        // A first 5m bar that stays on the safe side: no exit.
        runner.exchange().stop_bars.lock().unwrap().push((symbol.clone(), bar(0, safe, safe, safe)));
        assert!(runner.risk_check().await.unwrap().is_empty());
        // The next one trades through the level: one reduce-only market exit.
        let (high, low) = if stop.side > 0.0 { (safe, through) } else { (through, safe) };
        runner.exchange().stop_bars.lock().unwrap().push((symbol.clone(), bar(1, safe, high, low)));
        let exits = runner.risk_check().await.unwrap();
        assert_eq!(exits.len(), 1, "{exits:?}");
        assert!(exits[0].contains(&symbol) && exits[0].ends_with("-stop"));
        let executions = runner.exchange().inner.executions();
        let exit = executions.iter().find(|e| e.client_order_id == exits[0]).expect("the exit filled at once");
        assert_eq!(exit.reason, xsmom::model::FillReason::Stop);
        assert!(runner.exchange().positions().await.unwrap().iter().all(|p| p.symbol != symbol), "closed");
    });
}

#[test]
fn binary_replay_starts_from_a_clean_account_unless_a_state_file_is_given() {
    // Two runs in the same folder without --state: both replay the whole fixture from 10 000.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "").unwrap();
    let run = || {
        let output = binary()
            .current_dir(dir.path())
            .args(["run", "--mode", "replay", "--config"])
            .arg(&config)
            .arg("--bars")
            .arg(fixture())
            .env("XSMOM_LOG", "info")
            .output()
            .unwrap();
        let logs = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{logs}");
        // Logs written to a pipe carry no ANSI colour codes.
        assert!(logs.contains("xsmom-live started") && !logs.contains('\u{1b}'), "{logs}");
        // Every decision says what the strategy wanted and what the admission rules held back (the
        // default config's anti-churn and scoring hold some entries back on this fixture).
        let decisions: Vec<&str> = logs.lines().filter(|line| line.contains(" decision ")).collect();
        assert!(decisions.len() > 100, "{} decision lines", decisions.len());
        assert!(decisions.iter().all(|line| line.contains("wanted=") && line.contains("admitted=")));
        assert!(
            decisions.iter().any(|line| line.contains("held_back=")
                && !line.contains("held_back= ")
                && !line.ends_with("held_back=")),
            "no symbol was ever held back"
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let (first, second) = (run(), run());
    assert!(first.starts_with("replay done: 3672 bars,"), "{first}");
    assert_eq!(first, second, "the second run replays again instead of resuming");
    assert!(!dir.path().join("state").exists(), "nothing written to ./state");
    // The backtest's final equity, printed by the replay.
    let cfg = Config::default();
    let backtest = run::backtest(&inputs(&cfg), &cfg, false).unwrap();
    let want = format!("equity {:.2}", backtest.bars.equity.last().unwrap());
    assert!(first.contains(&want), "{first} vs {want}");
}
