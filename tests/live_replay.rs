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
use xsmom::run::{self, BarsSource, FundingSource, Inputs};
use xsmom::timeframe::Timeframe;
use xsmom::Config;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data")
}

fn inputs(cfg: &Config) -> Inputs {
    run::prepare(BarsSource::Path(fixture()), FundingSource::FromBarsStore, cfg).unwrap()
}

fn replay(cfg: &Config) -> ReplayExchange {
    let inputs = inputs(cfg);
    ReplayExchange::new(inputs.panel, inputs.funding, cfg.costs.clone(), cfg.backtest.initial_capital, 5_000)
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
type Replayed = (BacktestResult, Vec<String>, Vec<(i64, f64)>);

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
        let equity = runner.equity_history.clone();
        (runner.finish(), placed, equity)
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

/// The account's equity follows the backtest's within the fill-model difference: post-only limit
/// orders filled when a later bar trades through them (some never fill) against fills at the close.
fn assert_equity_tracks_the_backtest(account: &[(i64, f64)], backtest: &BacktestResult, correlation_min: f64) {
    let by_ts: std::collections::HashMap<i64, f64> =
        backtest.ts.iter().copied().zip(backtest.bars.equity.iter().copied()).collect();
    let pairs: Vec<(f64, f64)> = account.iter().filter_map(|(ts, e)| by_ts.get(ts).map(|b| (*e, *b))).collect();
    assert!(pairs.len() > 1000, "equity compared on {} bars", pairs.len());
    let returns = |pick: fn(&(f64, f64)) -> f64| -> Vec<f64> {
        pairs.windows(2).map(|w| pick(&w[1]) / pick(&w[0]) - 1.0).collect()
    };
    let (live_r, bt_r) = (returns(|p| p.0), returns(|p| p.1));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (ml, mb) = (mean(&live_r), mean(&bt_r));
    let cov: f64 = live_r.iter().zip(&bt_r).map(|(l, b)| (l - ml) * (b - mb)).sum();
    let var_l: f64 = live_r.iter().map(|l| (l - ml).powi(2)).sum();
    let var_b: f64 = bt_r.iter().map(|b| (b - mb).powi(2)).sum();
    let correlation = cov / (var_l * var_b).sqrt();
    let (last_live, last_bt) = *pairs.last().unwrap();
    let gap = (last_live / last_bt - 1.0).abs();
    eprintln!("equity parity: return correlation {correlation:.3}, final equity {last_live:.0} vs {last_bt:.0}");
    assert!(correlation > correlation_min, "bar returns correlate {correlation:.3}");
    // Maker fills without slippage cost less than the backtest's blended fee plus slippage, so the
    // account ends higher; over five months of hourly rebalancing the gap stays below 60 %.
    assert!(gap < 0.6 && last_live > 0.5 * last_bt, "final equity {last_live:.0} vs backtest {last_bt:.0}");
}

#[test]
fn replay_parity_target_weights_equal_the_backtester_bar_by_bar() {
    // Measured: return correlation 0.54 with the default config (the model's intrabar stop exits and
    // unfilled limit orders are where the two books differ most) and 0.99 with the v1 profile.
    for (cfg, correlation_min) in [(Config::default(), 0.45), (Config::profile("xsmom-bot-v1").unwrap(), 0.95)] {
        let dir = tempfile::tempdir().unwrap();
        let (live, placed, account) = run_replay(&cfg, dir.path(), None);
        let backtest = run::backtest(&inputs(&cfg), &cfg, false).unwrap();
        assert_same_targets(&live, &backtest);
        assert_equity_tracks_the_backtest(&account, &backtest, correlation_min);
        assert!(live.target_weights().iter().any(|w| *w != 0.0), "the model traded");
        assert!(placed.len() > 100, "the runner placed orders: {}", placed.len());
    }
}

#[test]
fn a_restart_rebuilds_the_model_and_never_sends_an_order_twice() {
    let cfg = Config::default();
    let backtest = run::backtest(&inputs(&cfg), &cfg, false).unwrap();
    for lose_state in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (live, placed, _) = run_replay(&cfg, dir.path(), Some((1500, lose_state)));
        assert_same_targets(&live, &backtest);
        let mut unique = placed.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), placed.len(), "an order id was sent twice (lost state: {lose_state})");
        let state = LiveState::load(&dir.path().join("state.json")).unwrap().unwrap();
        assert_eq!(state.last_bar_ts, live.ts.last().copied());
    }
}

#[test]
fn the_account_kill_switch_flattens_with_reduce_only_market_orders() {
    // A 0.5 % daily loss limit fires within days on the fixture.
    let cfg = Config::default().with_override_strings(&["risk.kill_switch.max_daily_loss_pct=0.5".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_, placed, _) = run_replay(&cfg, dir.path(), None);
    let kills: Vec<&String> = placed.iter().filter(|id| id.ends_with("-kill")).collect();
    assert!(!kills.is_empty(), "the kill-switch closed positions");
    // While paused (the rest of the UTC day) no new limit orders are placed for that day.
    let first = kills[0];
    // The kill-switch's day is the UTC day of the bar's close (open + 1h).
    let day = |id: &str| (id.split('-').nth(1).unwrap().parse::<i64>().unwrap() + 3_600_000) / 86_400_000;
    let kill_day = day(first);
    let after_kill = placed.iter().skip_while(|id| id != &first).skip(1);
    assert!(after_kill.filter(|id| !id.ends_with("-kill")).all(|id| day(id) > kill_day));
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
    let shown = binary().args(["state", "show", "--state"]).arg(dir.path().join("state.json")).output().unwrap();
    assert!(String::from_utf8_lossy(&shown.stdout).contains("\"schema_version\": 1"));
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
        let orders = runner.exchange().open_orders().await.unwrap();
        let exit = orders.iter().find(|o| o.client_order_id == exits[0]).expect("the exit rests until the next bar");
        assert!(exit.reduce_only && exit.price.is_none());
    });
}
