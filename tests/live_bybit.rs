//! The Bybit v5 client and the runner against the mock Bybit server (`tests/mock_bybit.py`) on
//! 127.0.0.1 (live.md §6): signing, pagination, typed errors and retries, faults after an order was
//! accepted, a full cycle placing exactly the expected orders, restarts without duplicates, and the
//! API circuit breaker tripping and recovering.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use xsmom::live::bybit::{BybitClient, Credentials};
use xsmom::live::exchange::Exchange;
use xsmom::live::runner::{Runner, RunnerOptions};
use xsmom::live::types::{ErrorClass, ExchangeError, OrderRequest, OrderStatus, OrderType, TimeInForce};
use xsmom::model::Side;
use xsmom::Config;

const HOUR: i64 = 3_600_000;
/// First bar of the fixture (2025-06-01 00:00 UTC).
const FIRST_BAR: i64 = 1_748_736_000_000;
const SYMBOLS: [&str; 6] = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT"];

struct Mock {
    child: Child,
    url: String,
}

impl Mock {
    fn start(now_ms: i64) -> Mock {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("python3")
            .arg(root.join("tests/mock_bybit.py"))
            .args(["--port", "0", "--bars"])
            .arg(root.join("data"))
            .args(["--symbols", &SYMBOLS.join(","), "--now-ms", &now_ms.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the mock");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("READY ").unwrap_or_else(|| panic!("mock said {line:?}")).to_string();
        Mock { child, url: format!("http://127.0.0.1:{port}") }
    }

    fn client(&self) -> BybitClient {
        BybitClient::new(&self.url, Some(Credentials::new("test-key", "test-secret")))
            .unwrap()
            .with_timeout(Duration::from_millis(1_500))
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn state(&self) -> Value {
        self.control("/mock/state", json!({})).await
    }

    fn control_blocking(&self, path: &str, body: Value) -> Value {
        block_on(self.control(path, body))
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

fn order(link_id: &str, price: f64) -> OrderRequest {
    OrderRequest {
        symbol: "BTCUSDT".into(),
        side: Side::Buy,
        qty: 0.01,
        price: Some(price),
        order_type: OrderType::Limit,
        tif: TimeInForce::PostOnly,
        reduce_only: false,
        client_order_id: link_id.into(),
        trigger_price: None,
        close_fraction: None,
        reason: xsmom::model::FillReason::Rebalance,
    }
}

fn requests(state: &Value, path: &str) -> Vec<Value> {
    state["log"].as_array().unwrap().iter().filter(|r| r["path"] == path).cloned().collect()
}

#[test]
fn client_signs_paginates_and_never_serves_the_forming_bar() {
    let now = FIRST_BAR + 2_600 * HOUR + 30 * 60_000; // half way through a bar
    let mock = Mock::start(now);
    block_on(async {
        let client = mock.client();
        // The exchange's clock runs on from the mock clock (the one its signatures are checked on).
        let server = client.server_time_ms().await.unwrap();
        assert!((now..now + 60_000).contains(&server), "server time {server}, mock clock {now}");
        let bars = client.closed_klines("BTCUSDT", Config::default().timeframe(), FIRST_BAR, i64::MAX).await.unwrap();
        assert_eq!(bars.len(), 2_600, "every closed bar, across pages");
        assert!(bars.windows(2).all(|w| w[1].ts - w[0].ts == HOUR), "no gaps or duplicates at page edges");
        assert_eq!(bars.last().unwrap().ts + HOUR, FIRST_BAR + 2_600 * HOUR, "the forming bar is not served");
        assert!(requests(&mock.state().await, "/v5/market/kline").len() >= 3, "three pages of ≤ 1000");
        // The same when a page is filled from the oldest bar of the window instead of the newest.
        mock.control("/mock/kline_order", json!({"fill_from": "start"})).await;
        let from_start =
            client.closed_klines("BTCUSDT", Config::default().timeframe(), FIRST_BAR, i64::MAX).await.unwrap();
        assert_eq!(from_start, bars, "pages filled from the start give the same bars");
        mock.control("/mock/kline_order", json!({"fill_from": "end"})).await;

        let instruments = client.instruments(&["BTCUSDT".into()]).await.unwrap();
        assert_eq!(instruments[0].lot_size, 0.001);
        assert!(client.equity().await.unwrap() == 10_000.0, "signed request accepted");
        let wrong = BybitClient::new(&mock.url, Some(Credentials::new("test-key", "wrong"))).unwrap();
        match wrong.equity().await {
            Err(ExchangeError::Auth { code: 10004, .. }) => {}
            other => panic!("a wrong secret is an Auth error, got {other:?}"),
        }
        let anonymous = BybitClient::new(&mock.url, None).unwrap();
        assert!(matches!(anonymous.positions().await, Err(ExchangeError::Auth { .. })));
    });
}

#[test]
fn client_errors_are_typed_and_unclear_creates_are_looked_up_not_resent() {
    let mock = Mock::start(FIRST_BAR + 200 * HOUR + 5_000);
    block_on(async {
        let client = mock.client();
        let quote = client.quote("BTCUSDT").await.unwrap();
        let bid = quote.bid;

        // 10006 once: the client waits and retries.
        mock.control("/mock/faults", json!({"path": "/v5/market/tickers", "kind": "ratelimit", "count": 1})).await;
        assert!(client.quote("BTCUSDT").await.is_ok());
        // HTTP 5xx on a GET: retried; persisting 5xx: a typed Http error.
        mock.control("/mock/faults", json!({"path": "/v5/position/list", "kind": "http500", "count": 1})).await;
        assert!(client.positions().await.is_ok());
        mock.control("/mock/faults", json!({"path": "/v5/position/list", "kind": "http500", "count": 50})).await;
        let no_retries = mock.client().with_retries(1);
        assert!(matches!(no_retries.positions().await, Err(ExchangeError::Http { status: 500, .. })));
        mock.control("/mock/faults", json!({"path": "/v5/position/list", "kind": "http500", "count": 0})).await;
        // retCode 10016 (Bybit's internal error, the service restarting): transient as HTTP 5xx, so
        // retried, and never an error of unknown kind (which opens the circuit breaker at once).
        let late = json!({"path": "/v5/market/tickers", "kind": "timeout", "count": 1, "ms": 10});
        mock.control("/mock/faults", late.clone()).await;
        assert!(client.quote("BTCUSDT").await.is_ok());
        mock.control("/mock/faults", late).await;
        let err = mock.client().with_retries(0).quote("BTCUSDT").await.unwrap_err();
        assert!(matches!(err, ExchangeError::Server { code: 10016, .. }), "{err:?}");
        assert!(matches!(err.class(), ErrorClass::Transient), "{err:?}");

        // The response of an accepted order is lost: the client finds the order by its link id.
        mock.control("/mock/faults", json!({"path": "/v5/order/create", "kind": "drop_after_accept"})).await;
        let placed = client.place_order(&order("xs-1-BTCUSDT-0", bid * 0.99)).await.unwrap();
        assert_eq!(placed.client_order_id, "xs-1-BTCUSDT-0");
        // Sending it again is refused (110072) and never taken for a success: the order is looked up
        // by its id and adopted, and the book holds it once.
        let adopted = client.place_order(&order("xs-1-BTCUSDT-0", bid * 0.99)).await.unwrap();
        assert_eq!(adopted.order_id, placed.order_id, "the existing order is adopted");
        let state = mock.state().await;
        assert_eq!(state["refused_duplicates"], 1);
        let held: Vec<_> =
            state["orders"].as_array().unwrap().iter().filter(|o| o["orderLinkId"] == "xs-1-BTCUSDT-0").collect();
        assert_eq!(held.len(), 1);

        // Post-only that would take liquidity: Bybit accepts it, then cancels it at once; its status
        // says why.
        let crossing = client.place_order(&order("xs-1-BTCUSDT-1", bid * 1.01)).await.unwrap();
        assert_eq!(crossing.client_order_id, "xs-1-BTCUSDT-1");
        let status = client.order_status("BTCUSDT", "xs-1-BTCUSDT-1").await.unwrap().expect("a closed order");
        assert_eq!(status.status, OrderStatus::Cancelled);
        assert_eq!(status.reject_reason.as_deref(), Some("EC_PostOnlyWillTakeLiquidity"));
        assert!(status.cancelled_by_exchange());
        client.cancel_order("BTCUSDT", "xs-1-BTCUSDT-0").await.unwrap();
        assert!(matches!(client.cancel_order("BTCUSDT", "xs-1-BTCUSDT-0").await, Err(ExchangeError::NotFound { .. })));
        assert!(client.open_orders().await.unwrap().is_empty());
        // Cancelled by us: no reject reason; its id stays taken (110072), the lookup adopts the
        // cancelled order, which is not open.
        let cancelled = client.order_status("BTCUSDT", "xs-1-BTCUSDT-0").await.unwrap().unwrap();
        assert!(!cancelled.cancelled_by_exchange() && !cancelled.status.is_open());
        let again = client.place_order(&order("xs-1-BTCUSDT-0", bid * 0.99)).await.unwrap();
        assert_eq!(again.status, OrderStatus::Cancelled, "the id is not reused after a cancel");
        assert!(client.open_orders().await.unwrap().is_empty());

        // The execution list, over every page (the mock pages by 20).
        for k in 0..25 {
            let mut market = order(&format!("fill-{k}"), 0.0);
            market.price = None;
            market.order_type = OrderType::Market;
            market.tif = TimeInForce::Ioc;
            market.qty = 0.001;
            client.place_order(&market).await.unwrap();
        }
        let fills = client.executions(0).await.unwrap();
        assert_eq!(fills.iter().filter(|e| e.client_order_id.starts_with("fill-")).count(), 25);
        assert!(requests(&mock.state().await, "/v5/execution/list").len() >= 2, "a second page was read");
    });
}

fn config() -> (Config, String) {
    let text = format!(
        "execution:\n  fill: limit_touch\nuniverse:\n  include: [{}]\nstrategy:\n  k_min: 1\n  k_max: 2\n  regime_filter:\n    enabled: false\nrisk:\n  kill_switch:\n    enabled: false\n",
        SYMBOLS.join(", ")
    );
    (Config::from_yaml(&text, "test").unwrap(), text)
}

fn options(dir: &Path) -> RunnerOptions {
    RunnerOptions {
        mode: "testnet".into(),
        state_path: dir.join("state.json"),
        heartbeat_path: dir.join("heartbeat.json"),
        start_ts: Some(FIRST_BAR),
        reset_state: false,
    }
}

/// A runner on the mock's testnet account with the test config, state in `dir`.
async fn start_runner(mock: &Mock, dir: &Path) -> Runner<BybitClient> {
    let (cfg, text) = config();
    Runner::start(mock.client(), cfg, &text, symbols(), options(dir)).await.unwrap()
}

fn symbols() -> Vec<String> {
    let mut symbols: Vec<String> = SYMBOLS.iter().map(|s| s.to_string()).collect();
    symbols.sort();
    symbols
}

#[test]
fn a_full_cycle_places_exactly_the_orders_the_targets_ask_for() {
    let now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let mut runner = start_runner(&mock, dir.path()).await;
        let report = runner.cycle().await.unwrap();
        assert_eq!(report.bars_stepped, 1_420);
        let targets = runner.engine().target_weights().to_vec();
        // Bar 1 419 of the fixture has a long and a short leg on these six symbols.
        assert!(targets.iter().any(|w| *w > 0.0) && targets.iter().any(|w| *w < 0.0), "{targets:?}");
        let state = mock.state().await;
        let orders = state["orders"].as_array().unwrap();
        let client = mock.client();
        for (i, symbol) in symbols().iter().enumerate() {
            let placed: Vec<&Value> = orders.iter().filter(|o| o["symbol"] == symbol.as_str()).collect();
            if targets[i] == 0.0 {
                assert!(placed.is_empty(), "{symbol}: no order for a zero target");
                continue;
            }
            assert_eq!(placed.len(), 1, "{symbol}: one order");
            let quote = client.quote(symbol).await.unwrap();
            let mid = 0.5 * (quote.bid + quote.ask);
            let want_qty = ((targets[i].abs() * 10_000.0 / mid) / 0.001 + 1e-9).floor() * 0.001;
            let qty: f64 = placed[0]["qty"].as_str().unwrap().parse().unwrap();
            assert!((qty - want_qty).abs() < 1e-9, "{symbol}: qty {qty} want {want_qty}");
            assert_eq!(placed[0]["side"], if targets[i] > 0.0 { "Buy" } else { "Sell" });
            let price: f64 = placed[0]["price"].as_str().unwrap().parse().unwrap();
            let touch = if targets[i] > 0.0 { quote.bid } else { quote.ask };
            assert!((price - touch).abs() / touch < 1e-4, "{symbol}: price {price} at the touch {touch}");
            let bar = FIRST_BAR + 1_419 * HOUR;
            assert_eq!(placed[0]["orderLinkId"], format!("xs-{bar}-{symbol}-0"));
        }
        assert_eq!(report.orders_placed.len(), orders.len());
    });
}

#[test]
fn a_crash_after_the_orders_were_sent_places_no_duplicates_on_restart() {
    let now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (cfg, text) = config();
        let mut runner =
            Runner::start(mock.client(), cfg.clone(), &text, symbols(), options(dir.path())).await.unwrap();
        runner.cycle().await.unwrap();
        let bar_two = now + HOUR;
        mock.control("/mock/clock", json!({"now_ms": bar_two})).await;
        let saved = std::fs::read(dir.path().join("state.json")).unwrap();
        // The first create's response is dropped after the exchange accepted it.
        mock.control("/mock/faults", json!({"path": "/v5/order/create", "kind": "drop_after_accept"})).await;
        runner.cycle().await.unwrap();
        // Crash before the state of that cycle was written: restore the old file, start again.
        drop(runner);
        std::fs::write(dir.path().join("state.json"), &saved).unwrap();
        let mut runner = Runner::start(mock.client(), cfg, &text, symbols(), options(dir.path())).await.unwrap();
        assert_eq!(runner.rebuilt_matches_state(), Some(true));
        runner.cycle().await.unwrap();
        let state = mock.state().await;
        let creates = requests(&state, "/v5/order/create");
        let mut ids: Vec<String> =
            creates.iter().map(|r| r["body"]["orderLinkId"].as_str().unwrap().to_string()).collect();
        let accepted: Vec<&Value> = state["orders"].as_array().unwrap().iter().collect();
        let mut accepted_ids: Vec<&str> = accepted.iter().map(|o| o["orderLinkId"].as_str().unwrap()).collect();
        accepted_ids.sort();
        let before = accepted_ids.len();
        accepted_ids.dedup();
        assert_eq!(before, accepted_ids.len(), "no order id is on the book twice");
        ids.sort();
        ids.dedup();
        assert!(accepted_ids.iter().all(|id| ids.contains(&id.to_string())));
        // After the restart no create was sent for a symbol that already had this bar's order.
        let bar = bar_two.div_euclid(HOUR) * HOUR - HOUR;
        let this_bar: Vec<&&str> = accepted_ids.iter().filter(|id| id.starts_with(&format!("xs-{bar}-"))).collect();
        let creates_this_bar = creates
            .iter()
            .filter(|r| r["body"]["orderLinkId"].as_str().unwrap().starts_with(&format!("xs-{bar}-")))
            .count();
        assert!(!this_bar.is_empty(), "the crashed cycle had placed orders");
        assert_eq!(creates_this_bar, this_bar.len(), "each of this bar's orders was sent exactly once");
    });
}

#[test]
fn the_circuit_breaker_trips_after_five_errors_and_recovers_after_the_cooldown() {
    let mut now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (cfg, text) = config();
        let client = mock.client().with_retries(0);
        let mut runner = Runner::start(client, cfg, &text, symbols(), options(dir.path())).await.unwrap();
        mock.control("/mock/faults", json!({"path": "/v5/account/wallet-balance", "kind": "http500", "count": 5}))
            .await;
        // Failed reconciliations are retried every cycle (here every 30 s of the mock clock).
        for cycle in 0..5 {
            let report = runner.cycle().await.unwrap();
            assert!(report.orders_placed.is_empty());
            assert_eq!(report.breaker_open, cycle == 4, "cycle {cycle}");
            now += 30_000;
            mock.control("/mock/clock", json!({"now_ms": now})).await;
        }
        // Open: no new risk while the cooldown (600 s) lasts, although the API works again.
        let report = runner.cycle().await.unwrap();
        assert!(report.breaker_open && report.orders_placed.is_empty());
        now += 600_000;
        mock.control("/mock/clock", json!({"now_ms": now})).await;
        let report = runner.cycle().await.unwrap();
        assert!(!report.breaker_open);
        assert!(!report.orders_placed.is_empty(), "trading resumed after the cooldown");
        assert!(runner.state().breaker_paused_until_ms.is_some());
    });
}

fn creates_with(state: &Value, link_prefix: &str) -> Vec<Value> {
    requests(state, "/v5/order/create")
        .into_iter()
        .filter(|r| r["body"]["orderLinkId"].as_str().unwrap().starts_with(link_prefix))
        .collect()
}

#[test]
fn stale_orders_are_cancelled_and_replaced_under_the_next_id() {
    let mut now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    let bar = FIRST_BAR + 1_419 * HOUR;
    block_on(async {
        let mut runner = start_runner(&mock, dir.path()).await;
        let first = runner.cycle().await.unwrap();
        assert!(!first.orders_placed.is_empty());
        // 60 s later nothing is stale yet: no cancels, no new orders.
        now += 60_000;
        mock.control("/mock/clock", json!({"now_ms": now})).await;
        let quiet = runner.cycle().await.unwrap();
        assert!(quiet.orders_cancelled.is_empty() && quiet.orders_placed.is_empty(), "{quiet:?}");
        // Past max_order_age_secs (180): every resting order of this bar is replaced under attempt 1.
        now += 130_000;
        mock.control("/mock/clock", json!({"now_ms": now})).await;
        let aged = runner.cycle().await.unwrap();
        let mut cancelled = aged.orders_cancelled.clone();
        cancelled.sort();
        let mut placed_first = first.orders_placed.clone();
        placed_first.sort();
        assert_eq!(cancelled, placed_first, "the aged orders were cancelled");
        assert_eq!(aged.orders_placed.len(), first.orders_placed.len());
        assert!(aged.orders_placed.iter().all(|id| id.ends_with("-1") && id.starts_with(&format!("xs-{bar}-"))));
        // The touch moves 1 % away from one resting buy: farther than reprice_bps (15) → attempt 2.
        let state = mock.state().await;
        let buy = state["orders"].as_array().unwrap().iter().find(|o| o["side"] == "Buy").unwrap().clone();
        let symbol = buy["symbol"].as_str().unwrap().to_string();
        let price: f64 = buy["price"].as_str().unwrap().parse().unwrap();
        mock.control("/mock/price", json!({"symbol": symbol, "last": price * 1.01})).await;
        now += 10_000;
        mock.control("/mock/clock", json!({"now_ms": now})).await;
        let moved = runner.cycle().await.unwrap();
        assert_eq!(moved.orders_cancelled, vec![format!("xs-{bar}-{symbol}-1")]);
        assert_eq!(moved.orders_placed, vec![format!("xs-{bar}-{symbol}-2")], "{moved:?}");
        let state = mock.state().await;
        let replaced = state["orders"].as_array().unwrap().iter().find(|o| o["symbol"] == symbol.as_str()).unwrap();
        let new_price: f64 = replaced["price"].as_str().unwrap().parse().unwrap();
        assert!((new_price / (price * 1.01 * (1.0 - 1e-4)) - 1.0).abs() < 1e-4, "re-placed at the new bid");
        // The attempt counter survives a restart: the same bar's next replacement is attempt 3.
        assert_eq!(runner.state().order_attempts.get(&symbol), Some(&2));
        drop(runner);
        let (cfg, text) = config();
        let runner = Runner::start(mock.client(), cfg, &text, symbols(), options(dir.path())).await.unwrap();
        assert_eq!(runner.state().order_attempts.get(&symbol), Some(&2));
    });
}

#[test]
fn post_only_rejections_are_repriced_and_partial_fills_are_topped_up_next_bar() {
    let mut now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    let bar = FIRST_BAR + 1_419 * HOUR;
    block_on(async {
        let mut runner = start_runner(&mock, dir.path()).await;
        mock.control("/mock/faults", json!({"path": "/v5/order/create", "kind": "postonly", "count": 1})).await;
        let report = runner.cycle().await.unwrap();
        let state = mock.state().await;
        let creates = creates_with(&state, &format!("xs-{bar}-"));
        // The first create was rejected as post-only and re-sent once under attempt 1, one tick away.
        assert_eq!(creates.len(), report.orders_placed.len() + 1);
        let retried: Vec<&String> = report.orders_placed.iter().filter(|id| id.ends_with("-1")).collect();
        assert_eq!(retried.len(), 1, "{:?}", report.orders_placed);
        let first_id = creates[0]["body"]["orderLinkId"].as_str().unwrap();
        assert_eq!(retried[0], &first_id.replace("-0", "-1").to_string());

        // Next bar: the first create fills half at once; the runner leaves the partial order resting
        // (it is this bar's, and fresh), and the bar after tops the position up towards the target.
        now += HOUR;
        mock.control("/mock/clock", json!({"now_ms": now})).await;
        mock.control("/mock/faults", json!({"path": "/v5/order/create", "kind": "partial", "count": 1})).await;
        let second = runner.cycle().await.unwrap();
        assert!(second.bars_stepped == 1);
        let state = mock.state().await;
        let partial: Vec<&Value> =
            state["orders"].as_array().unwrap().iter().filter(|o| o["orderStatus"] == "PartiallyFilled").collect();
        assert_eq!(partial.len(), 1, "one partially filled order rests");
        let symbol = partial[0]["symbol"].as_str().unwrap().to_string();
        assert!(state["positions"][&symbol].as_f64().unwrap().abs() > 0.0);
        now += 30_000;
        mock.control("/mock/clock", json!({"now_ms": now})).await;
        let third = runner.cycle().await.unwrap();
        assert!(
            !third.orders_placed.iter().any(|id| id.contains(&format!("-{symbol}-"))),
            "no second order while the partial one is fresh"
        );
    });
}

#[test]
fn a_timed_out_request_is_retried_and_a_persistent_one_is_a_typed_error() {
    let mock = Mock::start(FIRST_BAR + 200 * HOUR + 5_000);
    block_on(async {
        let client = mock.client().with_timeout(Duration::from_millis(800));
        mock.control("/mock/faults", json!({"path": "/v5/market/tickers", "kind": "timeout", "count": 1})).await;
        assert!(client.quote("BTCUSDT").await.is_ok(), "a GET is retried after a timeout");
        mock.control("/mock/faults", json!({"path": "/v5/market/tickers", "kind": "timeout", "count": 5})).await;
        let once = mock.client().with_timeout(Duration::from_millis(800)).with_retries(0);
        match once.quote("BTCUSDT").await {
            Err(err) => {
                assert!(err.to_string().contains("timed out") || format!("{err:?}").contains("Timeout"), "{err}")
            }
            Ok(quote) => panic!("a timeout without retries is an error, got {quote:?}"),
        }
    });
}

#[test]
fn a_stop_hit_on_the_last_trade_closes_with_a_reduce_only_market_order() {
    let now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let mut runner = start_runner(&mock, dir.path()).await;
        // Every order of the cycle fills half at once: the account holds the model's sides.
        mock.control("/mock/faults", json!({"path": "/v5/order/create", "kind": "partial", "count": 10})).await;
        runner.cycle().await.unwrap();
        let positions = runner.exchange().positions().await.unwrap();
        assert!(!positions.is_empty(), "the orders filled in part");
        assert!(runner.risk_check().await.unwrap().is_empty(), "no stop is hit at the current price");
        // A position the model also holds, with its stop level from the core's stop state machine.
        let position = positions
            .iter()
            .find(|p| {
                let i = symbols().iter().position(|s| *s == p.symbol).unwrap();
                runner.engine().risk().stop_state(i).is_some_and(|s| s.side == p.qty.signum())
            })
            .expect("a held position with a model stop")
            .clone();
        let i = symbols().iter().position(|s| *s == position.symbol).unwrap();
        let stop = runner.engine().risk().stop_state(i).unwrap().clone();
        let through = if stop.side > 0.0 { stop.stop * 0.98 } else { stop.stop * 1.02 };
        mock.control("/mock/price", json!({"symbol": position.symbol, "last": through})).await;
        let exits = runner.risk_check().await.unwrap();
        let bar = FIRST_BAR + 1_419 * HOUR;
        assert_eq!(exits, vec![format!("xs-{bar}-{}-stop", position.symbol)]);
        let state = mock.state().await;
        let exit = &creates_with(&state, &exits[0])[0]["body"];
        assert_eq!(exit["orderType"], "Market");
        assert_eq!(exit["reduceOnly"], true);
        assert_eq!(exit["side"], if position.qty > 0.0 { "Sell" } else { "Buy" });
        let qty: f64 = exit["qty"].as_str().unwrap().parse().unwrap();
        assert!((qty - position.qty.abs()).abs() < 1e-9);
        // Checked again (the loop runs every 2 s): the exit is not sent twice.
        assert!(runner.risk_check().await.unwrap().is_empty());
        assert_eq!(creates_with(&mock.state().await, &exits[0]).len(), 1);
        // The bar's other orders go stale and are re-placed; the stopped symbol is not re-entered.
        mock.control("/mock/clock", json!({"now_ms": now + 200_000})).await;
        let replaced = runner.cycle().await.unwrap();
        assert!(!replaced.orders_cancelled.is_empty(), "stale orders were replaced: {replaced:?}");
        assert!(
            replaced.orders_placed.iter().all(|id| !id.contains(&position.symbol)),
            "no re-entry after a stop: {replaced:?}"
        );
        assert!(replaced.skipped.contains(&(position.symbol.clone(), xsmom::live::plan::Skip::StoppedThisBar)));
    });
}

#[test]
fn a_config_reload_swaps_between_cycles_or_is_rejected_keeping_the_old_one() {
    let now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let mut runner = start_runner(&mock, dir.path()).await;
        runner.cycle().await.unwrap();
        let version = runner.config_version().to_string();
        let targets = runner.engine().target_weights().to_vec();
        let gross: f64 = targets.iter().map(|w| w.abs()).sum();
        // A config that fails validation is rejected; the old one keeps running.
        let mut bad = Config::default();
        bad.sizing.gross_leverage = -1.0;
        assert!(runner.reload(bad, "bad").await.is_err());
        assert_eq!(runner.config_version(), version);
        assert_eq!(runner.engine().target_weights(), &targets[..]);
        // A valid one is swapped in: the model is rebuilt over the same bars with it.
        let half = config().1 + "sizing:\n  max_weight_per_asset: 0.04\n";
        let new_cfg = Config::from_yaml(&half, "reload").unwrap();
        runner.reload(new_cfg.clone(), &half).await.unwrap();
        assert_ne!(runner.config_version(), version);
        assert_eq!(runner.config().sizing.max_weight_per_asset, 0.04);
        let new_gross: f64 = runner.engine().target_weights().iter().map(|w| w.abs()).sum();
        assert!(new_gross <= 4.0 * 0.04 + 1e-9 && new_gross < gross, "{new_gross} vs {gross}");
        // Exactly what a fresh model on the new config says for the same bar.
        let fresh_dir = tempfile::tempdir().unwrap();
        let mut fresh =
            Runner::start(mock.client(), new_cfg, &half, symbols(), options(fresh_dir.path())).await.unwrap();
        fresh.cycle().await.unwrap();
        assert_eq!(fresh.engine().target_weights(), runner.engine().target_weights());
    });
}

#[test]
fn paper_mode_trades_on_public_data_without_sending_a_signed_request() {
    use xsmom::live::paper::PaperExchange;
    let mut now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (cfg, text) = config();
        let market = BybitClient::new(&mock.url, None).unwrap();
        let paper = PaperExchange::new(market, &symbols(), &cfg);
        let mut opts = options(dir.path());
        opts.mode = "paper".into();
        let mut runner = Runner::start(paper, cfg, &text, symbols(), opts).await.unwrap();
        let first = runner.cycle().await.unwrap();
        assert!(!first.orders_placed.is_empty());
        now += HOUR;
        mock.control("/mock/clock", json!({"now_ms": now})).await;
        runner.cycle().await.unwrap();
        let positions = runner.exchange().positions().await.unwrap();
        assert!(!positions.is_empty(), "simulated fills when the next bar trades through");
        let equity = runner.exchange().equity().await.unwrap();
        assert!(equity > 9_000.0 && equity < 11_000.0 && equity != 10_000.0, "{equity}");
        let state = mock.state().await;
        assert!(requests(&state, "/v5/order/create").is_empty(), "paper never sends an order");
        assert!(requests(&state, "/v5/account/wallet-balance").is_empty());
        assert!(!requests(&state, "/v5/market/kline").is_empty());
    });
}

/// A Discord webhook stand-in on 127.0.0.1: answers the first post with 429 `Retry-After: 1`, the
/// rest with 204, and keeps every message body it received.
struct Webhook {
    url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Webhook {
    fn start() -> Webhook {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/api/webhooks/1/secret-token", listener.local_addr().unwrap());
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&bodies);
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                reader.read_exact(&mut body).unwrap();
                seen.lock().unwrap().push(String::from_utf8_lossy(&body).to_string());
                let reply = if n == 0 {
                    "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                } else {
                    "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                };
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        Webhook { url, bodies }
    }

    fn messages(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

fn wait_for(what: &str, seconds: u64, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_binary_trades_testnet_reloads_notifies_and_stops_cleanly_without_leaking_secrets() {
    let now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let hook = Webhook::start();
    let dir = tempfile::tempdir().unwrap();
    let (_, text) = config();
    let config_path = dir.path().join("live.yaml");
    std::fs::write(&config_path, text.clone() + "live:\n  fast_check_secs: 1\n  warmup_bars: 1430\n").unwrap();
    let state_path = dir.path().join("state.json");
    let heartbeat = dir.path().join("heartbeat.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_xsmom-live"))
        .args(["run", "--mode", "testnet", "--base-url", &mock.url, "--config"])
        .arg(&config_path)
        .arg("--state")
        .arg(&state_path)
        .arg("--heartbeat")
        .arg(&heartbeat)
        .env("BYBIT_API_KEY", "test-key")
        .env("BYBIT_API_SECRET", "test-secret")
        .env("DISCORD_WEBHOOK_URL", &hook.url)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let orders = || block_on(mock.state())["orders"].as_array().map_or(0, |o| o.len());
    wait_for("the first cycle's orders", 60, || orders() > 0 && heartbeat.exists());
    let health = Command::new(env!("CARGO_BIN_EXE_xsmom-live"))
        .arg("health")
        .arg("--heartbeat")
        .arg(&heartbeat)
        .output()
        .unwrap();
    assert!(health.status.success(), "{}", String::from_utf8_lossy(&health.stdout));
    // The first message met a 429 and was sent again after Retry-After.
    wait_for("the start message", 20, || {
        hook.messages().iter().filter(|m| m.contains("xsmom-live started")).count() == 2
    });

    // An invalid config is rejected (alert) and the runner keeps going on the old one.
    std::thread::sleep(Duration::from_millis(1100)); // a new modification time
    std::fs::write(&config_path, "strategy:\n  k_max: -3\n").unwrap();
    wait_for("the rejection alert", 20, || hook.messages().iter().any(|m| m.contains("config rejected")));
    assert!(child.try_wait().unwrap().is_none(), "still running");
    // A valid one is swapped in on SIGHUP.
    std::fs::write(
        &config_path,
        text.clone() + "live:\n  fast_check_secs: 1\n  warmup_bars: 1430\nsizing:\n  max_weight_per_asset: 0.04\n",
    )
    .unwrap();
    Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    wait_for("the reload message", 20, || hook.messages().iter().any(|m| m.contains("config reloaded")));

    // SIGTERM: finish the step, save the state, exit 0.
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "xsmom-live did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert!(status.success(), "exit {status:?}");
    let output = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("config rejected"), "{logs}");
    let state = std::fs::read_to_string(&state_path).unwrap();
    let saved: Value = serde_json::from_str(&state).unwrap();
    assert!(saved["equity"].as_f64().is_some_and(|e| e > 9_000.0), "the account equity is saved: {saved}");
    for secret in ["test-secret", "secret-token", hook.url.as_str()] {
        assert!(!logs.contains(secret), "a secret in the logs: {secret}");
        assert!(!state.contains(secret), "a secret in the state: {secret}");
    }
    wait_for("the stop message", 10, || hook.messages().iter().any(|m| m.contains("xsmom-live stopped")));
    let shown = Command::new(env!("CARGO_BIN_EXE_xsmom-live"))
        .args(["state", "show", "--json", "--state"])
        .arg(&state_path)
        .output()
        .unwrap();
    assert!(shown.status.success());
    assert!(String::from_utf8_lossy(&shown.stdout).contains(&format!("\"last_bar_ts\": {}", FIRST_BAR + 1_419 * HOUR)));
}

/// A config on the test symbols: `extra` YAML lines go at the top level (no key of the base set).
fn config_text(extra: &str) -> (Config, String) {
    let text = format!(
        "universe:\n  include: [{}]\nstrategy:\n  k_min: 1\n  k_max: 2\n  regime_filter:\n    enabled: false\n{extra}",
        SYMBOLS.join(", ")
    );
    (Config::from_yaml(&text, "test").unwrap(), text)
}

/// The backtest of `cfg` on the mock's bars and funding (the six test symbols of the fixture).
fn backtest_on_the_mock_data(cfg: &Config) -> xsmom::backtest::BacktestResult {
    use xsmom::run::{self, BarsSource, FundingSource};
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    let selection =
        xsmom::data::store::Selection { symbols: Some(symbols()), start: None, end: None, timeframe: cfg.timeframe() };
    let bars = xsmom::data::read_bars(&root, &selection).unwrap().0;
    let inputs = run::prepare(BarsSource::Bars(bars), FundingSource::Path(root), cfg).unwrap();
    run::backtest(&inputs, cfg, false).unwrap()
}

/// The orders of one cycle as the mock recorded them: symbol → signed quantity.
fn orders_of(state: &Value, ids: &[String]) -> std::collections::BTreeMap<String, f64> {
    let all = state["orders"].as_array().unwrap().iter().chain(state["closed_orders"].as_array().unwrap());
    all.filter(|o| ids.iter().any(|id| o["orderLinkId"] == id.as_str()))
        .map(|o| {
            let qty: f64 = o["qty"].as_str().unwrap().parse().unwrap();
            (o["symbol"].as_str().unwrap().to_string(), if o["side"] == "Buy" { qty } else { -qty })
        })
        .collect()
}

#[test]
fn the_runner_sends_bar_by_bar_the_orders_the_backtests_fills_imply() {
    // Fills at the close with the taker fee (the mock's market orders), no stops (the risk loop is
    // not run here): the mock account follows the backtest's book up to lot rounding and funding.
    let (cfg, text) = config_text(
        "costs:\n  maker_fill_ratio: 0.0\nrisk:\n  stops:\n    enabled: false\n  kill_switch:\n    enabled: false\n",
    );
    let backtest = backtest_on_the_mock_data(&cfg);
    let first = backtest.first_decision.expect("the backtest trades");
    let mut now = FIRST_BAR + first as i64 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let mut runner =
            Runner::start(mock.client(), cfg.clone(), &text, symbols(), options(dir.path())).await.unwrap();
        assert!(runner.cycle().await.unwrap().orders_placed.is_empty(), "nothing before the first decision");
        let (mut compared, mut near_threshold) = (0, 0);
        let backtest_targets = backtest.target_weights();
        for t in first..first + 200 {
            now += HOUR;
            mock.control("/mock/clock", json!({"now_ms": now})).await;
            let report = runner.cycle().await.unwrap();
            assert_eq!(
                runner.engine().target_weights(),
                backtest_targets.row(t).to_vec(),
                "admitted targets at bar {t}"
            );
            let ts = FIRST_BAR + t as i64 * HOUR;
            let live = orders_of(&mock.state().await, &report.orders_placed);
            let implied: std::collections::BTreeMap<String, f64> = backtest
                .fills
                .iter()
                .filter(|f| f.ts == ts)
                .map(|f| (backtest.symbols[f.symbol].clone(), f.side as f64 * f.qty))
                .collect();
            let equity = backtest.bars.equity[t];
            let threshold = cfg.backtest.min_rebalance_delta * equity;
            for symbol in implied.keys().chain(live.keys()).collect::<std::collections::BTreeSet<_>>() {
                let (want, got) =
                    (implied.get(symbol).copied().unwrap_or(0.0), live.get(symbol).copied().unwrap_or(0.0));
                if want == 0.0 || got == 0.0 {
                    // Only a trade at the edge of min_rebalance_delta may be on one side alone.
                    near_threshold += 1;
                    assert!(
                        near_threshold <= 3,
                        "bar {t} {symbol}: backtest {want}, runner {got} (threshold {threshold:.2})"
                    );
                    continue;
                }
                assert_eq!(want.signum(), got.signum(), "bar {t} {symbol}: side");
                let tolerance = 2.0 * 0.001 + 2e-3 * want.abs();
                assert!((want - got).abs() <= tolerance, "bar {t} {symbol}: backtest {want}, runner {got}");
                compared += 1;
            }
        }
        assert!(compared > 120, "orders compared: {compared}");
        eprintln!("orders compared: {compared}, on one side only: {near_threshold}");
    });
}

#[test]
fn an_entry_the_entry_rules_refuse_is_traded_by_neither_the_backtest_nor_the_runner() {
    // Every UTC hour blacked out: the strategy wants positions, no entry is admitted.
    let (cfg, text) = config_text(&format!(
        "risk:\n  kill_switch:\n    enabled: false\n  time_of_day:\n    enabled: true\n    blackout_hours_utc: {:?}\n",
        (0..24).collect::<Vec<u32>>()
    ));
    let backtest = backtest_on_the_mock_data(&cfg);
    assert!(backtest.model_weights().iter().any(|w| *w != 0.0), "the strategy wants positions");
    assert!(backtest.target_weights().iter().all(|w| *w == 0.0), "none is admitted");
    assert!(backtest.fills.is_empty());
    let mut now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let mut runner =
            Runner::start(mock.client(), cfg.clone(), &text, symbols(), options(dir.path())).await.unwrap();
        for _ in 0..3 {
            let report = runner.cycle().await.unwrap();
            assert!(runner.engine().model_weights().iter().any(|w| *w != 0.0));
            assert!(report.orders_placed.is_empty(), "{report:?}");
            now += HOUR;
            mock.control("/mock/clock", json!({"now_ms": now})).await;
        }
        assert!(requests(&mock.state().await, "/v5/order/create").is_empty());
    });
}

#[test]
fn a_stand_aside_config_flattens_the_account_and_keeps_it_flat() {
    let mut now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (cfg, text) = config_text("risk:\n  kill_switch:\n    enabled: false\n");
        let mut runner = Runner::start(mock.client(), cfg, &text, symbols(), options(dir.path())).await.unwrap();
        // Trade until the account holds positions (market orders fill at once).
        for _ in 0..48 {
            runner.cycle().await.unwrap();
            if !runner.exchange().positions().await.unwrap().is_empty() {
                break;
            }
            now += HOUR;
            mock.control("/mock/clock", json!({"now_ms": now})).await;
        }
        assert!(!runner.exchange().positions().await.unwrap().is_empty(), "the account holds positions");
        let last_bar = runner.state().last_bar_ts.unwrap();
        // A `stand aside` deploy: trading off.
        let (aside, aside_text) = config_text("risk:\n  kill_switch:\n    enabled: false\nlive:\n  trading: false\n");
        runner.reload(aside, &aside_text).await.unwrap();
        let report = runner.cycle().await.unwrap();
        assert!(report.orders_placed.iter().all(|id| id.contains("-flat-")), "{report:?}");
        assert!(runner.exchange().positions().await.unwrap().is_empty(), "flat");
        for _ in 0..3 {
            now += HOUR;
            mock.control("/mock/clock", json!({"now_ms": now})).await;
            let report = runner.cycle().await.unwrap();
            assert_eq!(report.bars_stepped, 1, "the model keeps stepping");
            assert!(runner.engine().target_weights().iter().any(|w| *w != 0.0), "and keeps deciding");
            assert!(report.orders_placed.is_empty(), "nothing is traded: {report:?}");
            assert!(runner.exchange().positions().await.unwrap().is_empty());
        }
        let heartbeat: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("heartbeat.json")).unwrap()).unwrap();
        assert_eq!(heartbeat["last_bar_ts"], json!(last_bar + 3 * HOUR), "and heart-beating");
    });
}

#[test]
fn one_rejected_order_never_stops_the_other_symbols() {
    let now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    // Stale temp files of an interrupted state write are removed at start.
    std::fs::write(dir.path().join(".state.json.tmp-4242"), "half a state").unwrap();
    block_on(async {
        mock.control("/mock/faults", json!({"path": "/v5/order/create", "kind": "reject", "count": 1})).await;
        let mut runner = start_runner(&mock, dir.path()).await;
        assert!(!dir.path().join(".state.json.tmp-4242").exists());
        let report = runner.cycle().await.expect("a rejection does not fail the cycle");
        let wanted = runner.engine().target_weights().iter().filter(|w| **w != 0.0).count();
        assert!(wanted >= 2, "{wanted} targets");
        assert_eq!(report.orders_placed.len(), wanted - 1, "{report:?}");
        assert_eq!(report.skipped.iter().filter(|(_, skip)| *skip == xsmom::live::plan::Skip::Rejected).count(), 1);
    });
}

#[test]
fn positions_and_open_orders_beyond_the_first_page_are_read() {
    let mock = Mock::start(FIRST_BAR + 1_420 * HOUR + 5_000);
    block_on(async {
        // 25 positions: the mock answers in pages of 20.
        let positions: serde_json::Map<String, Value> =
            (0..25).map(|k| (format!("S{k:02}USDT"), json!(if k % 2 == 0 { 1.5 } else { -2.0 }))).collect();
        mock.control("/mock/positions", Value::Object(positions)).await;
        let client = mock.client();
        let read = client.positions().await.unwrap();
        assert_eq!(read.len(), 25, "every position, not the first page only");
        assert!(read.iter().any(|p| p.symbol == "S24USDT" && p.qty == 1.5));
        // 24 resting orders: 4 far below the market on each of the six symbols.
        for symbol in SYMBOLS {
            let last = client.quote(symbol).await.unwrap().last;
            for k in 0..4 {
                let mut request = order(
                    &format!("page-{symbol}-{k}"),
                    (last * 0.5 * (1.0 + 0.01 * k as f64) * 100.0).round() / 100.0,
                );
                request.symbol = symbol.to_string();
                request.qty = 1.0;
                client.place_order(&request).await.unwrap();
            }
        }
        assert_eq!(client.open_orders().await.unwrap().len(), 24);
        let state = mock.state().await;
        assert!(requests(&state, "/v5/position/list").len() >= 2, "a second page was asked for");
        assert!(requests(&state, "/v5/order/realtime").len() >= 2);
    });
}

#[test]
fn requests_are_signed_on_the_exchange_clock_and_a_persistent_10002_is_named() {
    // The mock's clock is months behind this host's: Bybit refuses a timestamp more than 1 s ahead of
    // its own, so only signing on the measured exchange clock gets through.
    let now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let host = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(host - now > 86_400_000, "the host clock is far ahead of the mock's");
    let mock = Mock::start(now);
    block_on(async {
        let client = mock.client();
        assert!(client.positions().await.unwrap().is_empty(), "signed on the exchange clock");
        // The exchange clock jumps 3 s ahead of what its time endpoint says: every signed request is
        // refused, the client measures the clock again once, and the error says what it is.
        mock.control("/mock/skew", json!({"skew_ms": -3_000})).await;
        let err = mock.client().with_retries(0).positions().await.unwrap_err();
        assert!(matches!(err, ExchangeError::Auth { code: 10002, .. }), "{err:?}");
        assert!(err.to_string().contains("timestamp"), "{err}");
        let state = mock.state().await;
        assert!(requests(&state, "/v5/market/time").len() >= 2, "the clock was measured again");
    });
}

#[test]
fn a_failed_kill_switch_exit_is_retried_at_every_fast_check_until_flat() {
    let now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let (cfg, text) =
            config_text("risk:\n  kill_switch:\n    max_daily_loss_pct: 5\n  stops:\n    enabled: false\n");
        let mut runner = Runner::start(mock.client(), cfg, &text, symbols(), options(dir.path())).await.unwrap();
        runner.cycle().await.unwrap();
        let held = runner.exchange().positions().await.unwrap();
        assert!(!held.is_empty(), "market orders filled");
        // A 10 % loss on the account; the first exit order fails with a 502 (no retries inside the client).
        let balance = mock.state().await["balance"].as_f64().unwrap();
        mock.control("/mock/balance", json!({"balance": balance - 1_000.0})).await;
        mock.control("/mock/faults", json!({"path": "/v5/order/create", "kind": "http500", "count": 12})).await;
        assert!(runner.risk_check().await.is_err(), "the exits failed");
        assert!(!runner.exchange().positions().await.unwrap().is_empty());
        // Once the exchange answers again, the next fast check flattens under fresh ids.
        mock.control("/mock/faults", json!({"path": "/v5/order/create", "kind": "http500", "count": 0})).await;
        let mut placed = Vec::new();
        for _ in 0..5 {
            if let Ok(ids) = runner.risk_check().await {
                placed.extend(ids);
            }
            if runner.exchange().positions().await.unwrap().is_empty() {
                break;
            }
        }
        assert!(runner.exchange().positions().await.unwrap().is_empty(), "flat after the retries: {placed:?}");
        assert!(placed.iter().all(|id| id.contains("-kill-")), "{placed:?}");
        // Flat and paused: further checks send nothing.
        assert!(runner.risk_check().await.unwrap().is_empty());
    });
}

/// Every create of the mock's log for ids that start with `prefix`: `(id, body)`.
fn create_ids(state: &Value, prefix: &str) -> Vec<String> {
    creates_with(state, prefix).iter().map(|r| r["body"]["orderLinkId"].as_str().unwrap().to_string()).collect()
}

#[test]
fn the_new_live_keys_are_validated_and_named() {
    let (cfg, _) = config_text("live:\n  max_reprices: 5\n  exit_patience_secs: 0\n");
    assert_eq!((cfg.live.max_reprices, cfg.live.exit_patience_secs), (5, 0));
    let defaults = Config::default().live;
    assert_eq!((defaults.max_reprices, defaults.exit_patience_secs), (3, 300));
    let err = Config::from_yaml("live:\n  max_reprices: 1000\n", "cfg.yaml").unwrap_err();
    assert!(err.to_string().contains("live.max_reprices = 1000 is out of range"), "{err}");
    let err = Config::from_yaml("live:\n  exit_patience_secs: 100000\n", "cfg.yaml").unwrap_err();
    assert!(err.to_string().contains("live.exit_patience_secs = 100000 is out of range"), "{err}");
    let err = Config::from_yaml("live:\n  max_reprice: 1\n", "cfg.yaml").unwrap_err();
    assert!(err.to_string().contains("unknown field `max_reprice`"), "{err}");
}

#[test]
fn every_create_attempt_takes_a_fresh_id_saved_before_it_is_sent() {
    let now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    let bar = FIRST_BAR + 1_419 * HOUR;
    block_on(async {
        let mut runner = start_runner(&mock, dir.path()).await;
        // The first create hangs 2 s: while it is under way its id is already in the state file.
        mock.control("/mock/faults", json!({"path": "/v5/order/create", "kind": "delay", "ms": 1_200})).await;
        let state_path = dir.path().join("state.json");
        let watcher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            std::fs::read_to_string(state_path).unwrap()
        });
        let first = runner.cycle().await.unwrap();
        let during: Value = serde_json::from_str(&watcher.join().unwrap()).unwrap();
        assert!(!first.orders_placed.is_empty());
        let symbol = first.orders_placed[0].rsplit('-').nth(1).unwrap().to_string();
        assert_eq!(during["order_attempts"][&symbol], 0, "attempt 0 saved while its create was under way");
        // A restart in the same bar after the book was emptied (say, by hand): the orders are placed
        // again under the next ids; no id is ever sent twice (Bybit refuses one even after a cancel).
        drop(runner);
        mock.client().cancel_all(None).await.unwrap();
        let mut runner = start_runner(&mock, dir.path()).await;
        mock.control("/mock/clock", json!({"now_ms": now + 10_000})).await;
        let again = runner.cycle().await.unwrap();
        assert_eq!(again.orders_placed.len(), first.orders_placed.len(), "{again:?}");
        assert!(again.orders_placed.iter().all(|id| id.ends_with("-1")), "{again:?}");
        let state = mock.state().await;
        assert_eq!(state["refused_duplicates"], 0, "no id was refused as a duplicate");
        let mut ids = create_ids(&state, &format!("xs-{bar}-"));
        let sent = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), sent, "every create carried a new id");
    });
}

#[test]
fn post_only_orders_the_exchange_cancels_are_repriced_then_fall_back_to_taker() {
    let now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    let bar = FIRST_BAR + 1_419 * HOUR;
    block_on(async {
        let text = config().1 + "live:\n  max_reprices: 2\n";
        let cfg = Config::from_yaml(&text, "test").unwrap();
        let mut runner = Runner::start(mock.client(), cfg, &text, symbols(), options(dir.path())).await.unwrap();
        // Every post-only create is accepted and then cancelled as taking liquidity.
        mock.control("/mock/faults", json!({"path": "/v5/order/create", "kind": "postonly", "count": 1_000})).await;
        let report = runner.cycle().await.unwrap();
        let targets = runner.engine().target_weights().to_vec();
        let state = mock.state().await;
        for (i, symbol) in symbols().iter().enumerate() {
            if targets[i] == 0.0 {
                continue;
            }
            let creates = creates_with(&state, &format!("xs-{bar}-{symbol}-"));
            let kinds: Vec<(String, String)> = creates
                .iter()
                .map(|r| {
                    let body = &r["body"];
                    (body["orderLinkId"].as_str().unwrap().to_string(), body["orderType"].as_str().unwrap().to_string())
                })
                .collect();
            // Attempts 0, 1, 2 post-only (each cancelled by the exchange), then attempt 3 at market.
            let want: Vec<(String, String)> = (0..4)
                .map(|n| (format!("xs-{bar}-{symbol}-{n}"), if n < 3 { "Limit" } else { "Market" }.to_string()))
                .collect();
            assert_eq!(kinds, want, "{symbol}");
            // Each re-price one tick farther from the market.
            let prices: Vec<f64> =
                creates[..3].iter().map(|r| r["body"]["price"].as_str().unwrap().parse().unwrap()).collect();
            let away = if targets[i] > 0.0 {
                prices[0] > prices[1] && prices[1] > prices[2]
            } else {
                prices[0] < prices[1] && prices[1] < prices[2]
            };
            assert!(away, "{symbol}: {prices:?}");
            assert!(
                state["positions"][symbol.as_str()].as_f64().is_some_and(|q| q * targets[i] > 0.0),
                "{symbol} filled"
            );
        }
        assert_eq!(report.orders_ended.len(), 3 * targets.iter().filter(|w| **w != 0.0).count(), "{report:?}");
        assert_eq!(state["refused_duplicates"], 0);
    });
    // With `limit_fallback: cancel` the symbol is left alone until the next bar.
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let text = config().1.replace(
            "execution:\n  fill: limit_touch\n",
            "execution:\n  fill: limit_touch\n  limit_fallback: cancel\n",
        ) + "live:\n  max_reprices: 1\n";
        let cfg = Config::from_yaml(&text, "test").unwrap();
        let mut runner = Runner::start(mock.client(), cfg, &text, symbols(), options(dir.path())).await.unwrap();
        mock.control("/mock/faults", json!({"path": "/v5/order/create", "kind": "postonly", "count": 1_000})).await;
        let report = runner.cycle().await.unwrap();
        let wanted = runner.engine().target_weights().iter().filter(|w| **w != 0.0).count();
        let state = mock.state().await;
        assert!(requests(&state, "/v5/order/create").iter().all(|r| r["body"]["orderType"] == "Limit"));
        assert_eq!(requests(&state, "/v5/order/create").len(), 2 * wanted);
        assert_eq!(report.skipped.iter().filter(|(_, s)| *s == xsmom::live::plan::Skip::RepriceLimit).count(), wanted);
    });
}

#[test]
fn orders_that_fill_while_they_are_cancelled_never_take_the_account_past_its_target() {
    let mut now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        // A decision every second bar: resting limits are cancelled and replaced at decisions.
        let text = config().1 + "backtest:\n  rebalance_every: 2\n";
        let cfg = Config::from_yaml(&text, "test").unwrap();
        let mut runner = Runner::start(mock.client(), cfg, &text, symbols(), options(dir.path())).await.unwrap();
        runner.cycle().await.unwrap();
        // From now on every cancel arrives after the order filled completely (a fill race).
        mock.control("/mock/faults", json!({"path": "/v5/order/cancel", "kind": "fill_on_cancel", "count": 10_000}))
            .await;
        let client = mock.client();
        let mut raced_bars = 0;
        for _ in 0..24 {
            now += HOUR;
            mock.control("/mock/clock", json!({"now_ms": now})).await;
            let report = runner.cycle().await.unwrap();
            let state = mock.state().await;
            let executions = state["executions"].as_array().unwrap();
            let raced =
                report.orders_cancelled.iter().filter(|id| executions.iter().any(|e| e["orderLinkId"] == id.as_str()));
            if raced.count() == 0 {
                continue;
            }
            raced_bars += 1;
            // The fills of the cancelled orders were known before their replacements were sized:
            // position + what is still working stays between the position and the target (± a lot).
            let equity = state["equity"].as_f64().unwrap();
            let targets = runner.engine().target_weights().to_vec();
            let open = client.open_orders().await.unwrap();
            for (i, symbol) in symbols().iter().enumerate() {
                let position = state["positions"][symbol.as_str()].as_f64().unwrap_or(0.0);
                let working: f64 =
                    open.iter().filter(|o| o.symbol == *symbol).map(|o| o.side.sign() * (o.qty - o.filled_qty)).sum();
                let price = client.quote(symbol).await.unwrap().last;
                let target = targets[i] * equity / price;
                let slack = 0.001 + 0.01 * target.abs();
                let (low, high) = (position.min(target) - slack, position.max(target) + slack);
                let after = position + working;
                assert!(after >= low && after <= high, "{symbol}: {position} + {working} vs target {target}");
            }
            let bar = report.last_bar_ts.unwrap();
            let markets =
                creates_with(&state, &format!("xs-{bar}-")).into_iter().filter(|r| r["body"]["orderType"] == "Market");
            assert_eq!(markets.count(), 0, "no taker order for limits that had filled");
        }
        assert!(raced_bars >= 2, "cancels raced fills on {raced_bars} bars");
    });
}

#[test]
fn an_exit_that_waits_longer_than_its_patience_goes_reduce_only_at_market() {
    let mut now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let text = config().1 + "live:\n  exit_patience_secs: 60\n";
        let cfg = Config::from_yaml(&text, "test").unwrap();
        let mut runner = Runner::start(mock.client(), cfg, &text, symbols(), options(dir.path())).await.unwrap();
        runner.cycle().await.unwrap();
        let targets = runner.engine().target_weights().to_vec();
        let flat = symbols().into_iter().zip(&targets).find(|(_, w)| **w == 0.0).expect("a zero target").0;
        // A position the model does not want: the next cycle closes it with a reduce-only limit.
        mock.control("/mock/positions", json!({ flat.as_str(): 0.5 })).await;
        runner.reload(config_with(&text), &text).await.unwrap();
        now += 10_000;
        mock.control("/mock/clock", json!({"now_ms": now})).await;
        runner.cycle().await.unwrap();
        let bar = FIRST_BAR + 1_419 * HOUR;
        let state = mock.state().await;
        let exits = creates_with(&state, &format!("xs-{bar}-{flat}-"));
        assert_eq!(exits.len(), 1, "{exits:?}");
        assert_eq!(
            (exits[0]["body"]["orderType"].as_str(), exits[0]["body"]["reduceOnly"].as_bool()),
            (Some("Limit"), Some(true))
        );
        // 61 s later it still rests: cancelled (confirmed) and sent reduce-only at market.
        now += 61_000;
        mock.control("/mock/clock", json!({"now_ms": now})).await;
        let report = runner.cycle().await.unwrap();
        let state = mock.state().await;
        let exits = creates_with(&state, &format!("xs-{bar}-{flat}-"));
        assert_eq!(exits.len(), 2, "{report:?}");
        assert_eq!(
            (exits[1]["body"]["orderType"].as_str(), exits[1]["body"]["reduceOnly"].as_bool()),
            (Some("Market"), Some(true))
        );
        assert!(state["positions"].get(flat.as_str()).is_none(), "flat: {}", state["positions"]);
    });
}

fn config_with(text: &str) -> Config {
    Config::from_yaml(text, "test").unwrap()
}

/// A mock hook from a thread of its own (its own runtime).
fn control_from_thread(url: &str, path: &str, body: Value) -> Value {
    block_on(async {
        reqwest::Client::new().post(format!("{url}{path}")).json(&body).send().await.unwrap().json().await.unwrap()
    })
}

#[test]
fn a_hanging_create_never_holds_a_stop_exit_back() {
    use xsmom::live::notify::Notifier;
    use xsmom::live::service::{self, Control};
    let now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        // A client that waits 20 s for an answer: the hanging create really hangs.
        let client = BybitClient::new(&mock.url, Some(Credentials::new("test-key", "test-secret")))
            .unwrap()
            .with_timeout(Duration::from_secs(20));
        let (cfg, text) = config();
        let mut runner = Runner::start(client, cfg, &text, symbols(), options(dir.path())).await.unwrap();
        // Every order of the first cycle fills half at once: the account holds the model's sides.
        mock.control("/mock/faults", json!({"path": "/v5/order/create", "kind": "partial", "count": 10})).await;
        runner.cycle().await.unwrap();
        let positions = runner.exchange().positions().await.unwrap();
        let position = positions
            .iter()
            .find(|p| {
                let i = symbols().iter().position(|s| *s == p.symbol).unwrap();
                runner.engine().risk().stop_state(i).is_some_and(|s| s.side == p.qty.signum())
            })
            .expect("a held position with a model stop")
            .clone();
        let i = symbols().iter().position(|s| *s == position.symbol).unwrap();
        let stop = runner.engine().risk().stop_state(i).unwrap().clone();
        let through = if stop.side > 0.0 { stop.stop * 0.98 } else { stop.stop * 1.02 };
        let before = requests(&mock.state().await, "/v5/order/create").len();
        // The orders are stale now: the cycle replaces them, and its first create hangs 8 s.
        mock.control("/mock/faults", json!({"path": "/v5/order/create", "kind": "delay", "ms": 8_000})).await;
        mock.control("/mock/clock", json!({"now_ms": now + 200_000})).await;
        let control = Control::default();
        let config_path = dir.path().join("live.yaml");
        std::fs::write(&config_path, config().1).unwrap();
        let (stop_flag, url, symbol) = (control.stop.clone(), mock.url.clone(), position.symbol.clone());
        let watcher = std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let creates = || requests(&control_from_thread(&url, "/mock/state", json!({})), "/v5/order/create");
            // Once the hanging create is under way, the price goes through the stop.
            while creates().len() <= before {
                assert!(std::time::Instant::now() < deadline, "no create was sent");
                std::thread::sleep(Duration::from_millis(50));
            }
            let moved = std::time::Instant::now();
            control_from_thread(&url, "/mock/price", json!({"symbol": symbol, "last": through}));
            let mut exit_after = None;
            while std::time::Instant::now() < deadline {
                let stop_id = format!("-{symbol}-stop");
                if creates().iter().any(|r| r["body"]["orderLinkId"].as_str().unwrap().ends_with(&stop_id)) {
                    exit_after = Some(moved.elapsed());
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            stop_flag.store(true, std::sync::atomic::Ordering::SeqCst);
            exit_after
        });
        let outcome = service::serve(&mut runner, &control, &config_path, &Notifier::off()).await.unwrap();
        assert_eq!(outcome, service::Outcome::Stopped);
        let exit_after = watcher.join().unwrap().expect("the stop exit was sent");
        assert!(exit_after < Duration::from_secs(5), "the stop exit waited {exit_after:?} behind a hanging create");
        assert!(mock.state().await["positions"].get(position.symbol.as_str()).is_none(), "the stopped symbol is flat");
    });
}

/// `xsmom-live run --mode testnet` against the mock, state in `dir`, alerts to `hook`.
fn spawn_binary(mock: &Mock, hook: &Webhook, dir: &Path, extra_live: &str) -> Child {
    let (_, text) = config();
    let config_path = dir.join("live.yaml");
    std::fs::write(&config_path, text + "live:\n  fast_check_secs: 1\n  warmup_bars: 1430\n" + extra_live).unwrap();
    Command::new(env!("CARGO_BIN_EXE_xsmom-live"))
        .args(["run", "--mode", "testnet", "--base-url", &mock.url, "--config"])
        .arg(&config_path)
        .arg("--state")
        .arg(dir.join("state.json"))
        .arg("--heartbeat")
        .arg(dir.join("heartbeat.json"))
        .env("BYBIT_API_KEY", "test-key")
        .env("BYBIT_API_SECRET", "test-secret")
        .env("DISCORD_WEBHOOK_URL", &hook.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut Child, seconds: u64) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "xsmom-live did not exit within {seconds} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_refused_api_key_stops_trading_alerts_once_and_exits_with_its_own_code() {
    let now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let hook = Webhook::start();
    let dir = tempfile::tempdir().unwrap();
    // The key is refused (10003) on the account endpoint the cycle reads first.
    block_on(
        mock.control("/mock/faults", json!({"path": "/v5/account/wallet-balance", "kind": "auth", "count": 1_000})),
    );
    let mut child = spawn_binary(&mock, &hook, dir.path(), "");
    let status = wait_exit(&mut child, 90);
    let output = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(status.code(), Some(i32::from(xsmom::live::types::EXIT_AUTH)), "{logs}");
    let refused: Vec<String> = hook.messages().into_iter().filter(|m| m.contains("refused the API key")).collect();
    assert_eq!(refused.len(), 1, "one alert: {:?}", hook.messages());
    assert!(refused[0].contains("10003"), "{refused:?}");
    assert!(!hook.messages().iter().any(|m| m.contains("cycle failed")), "{:?}", hook.messages());
    let state = block_on(mock.state());
    assert!(requests(&state, "/v5/order/create").is_empty(), "nothing was traded");
    assert!(!logs.contains("test-secret"));
    // The same for HTTP 403 (a key without the permission).
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    block_on(mock.control("/mock/faults", json!({"path": "/v5/position/list", "kind": "forbidden", "count": 1_000})));
    let mut child = spawn_binary(&mock, &hook, dir.path(), "");
    let status = wait_exit(&mut child, 90);
    assert_eq!(status.code(), Some(i32::from(xsmom::live::types::EXIT_AUTH)));
    // And the unit does not restart on it.
    let unit =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/xsmom-live.service"))
            .unwrap();
    assert!(
        unit.lines().any(|l| l.trim() == format!("RestartPreventExitStatus={}", xsmom::live::types::EXIT_AUTH)),
        "{unit}"
    );
}

#[test]
fn after_sigterm_no_request_is_sent_the_one_under_way_is_awaited_and_the_state_written() {
    let now = FIRST_BAR + 1_420 * HOUR + 5_000;
    let mock = Mock::start(now);
    let hook = Webhook::start();
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_binary(&mock, &hook, dir.path(), "");
    let creates = || requests(&block_on(mock.state()), "/v5/order/create").len();
    wait_for("the first cycle's orders", 60, || creates() > 0 && dir.path().join("heartbeat.json").exists());
    let before = creates();
    // The orders go stale; their replacement's first create hangs 3 s.
    block_on(mock.control("/mock/faults", json!({"path": "/v5/order/create", "kind": "delay", "ms": 3_000})));
    block_on(mock.control("/mock/clock", json!({"now_ms": now + 200_000})));
    wait_for("the hanging create", 30, || creates() > before);
    let signalled = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = wait_exit(&mut child, 30);
    let exited = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(status.success(), "exit {status:?}");
    assert!(exited - signalled >= 1.0, "the create under way was awaited ({:.2} s)", exited - signalled);
    let state = block_on(mock.state());
    // Nothing reached the exchange after the signal (a request in transit at that instant has 0.2 s).
    let late: Vec<&Value> =
        state["log"].as_array().unwrap().iter().filter(|r| r["t"].as_f64().unwrap() > signalled + 0.2).collect();
    assert!(late.is_empty(), "requests after SIGTERM: {late:?}");
    assert_eq!(requests(&state, "/v5/order/create").len(), before + 1, "only the create under way");
    let written = std::fs::metadata(dir.path().join("state.json")).unwrap().modified().unwrap();
    let written = written.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(written > signalled, "the state was written after the signal");
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("state.json")).unwrap()).unwrap();
    let hung = requests(&state, "/v5/order/create")[before]["body"]["orderLinkId"].as_str().unwrap().to_string();
    let symbol = hung.rsplit('-').nth(1).unwrap();
    assert!(saved["order_attempts"][symbol].as_u64().is_some(), "its attempt is saved: {saved}");
}

/// A small seeded generator (xorshift64*): the soak's faults and kills are the same every run.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What one bar of the soak left on the account, read from the mock's log of this bar (requests
/// since its clock moved), its fills and positions, and the runner's state file.
#[derive(Debug, Default)]
struct BarCheck {
    /// Symbols whose rebalance order filled and that ended more than one lot off the target.
    gaps: Vec<String>,
    /// Symbols that ended past their target by more than a lot, or traded both ways in one bar.
    overfills: Vec<String>,
    /// Symbols whose rebalance order filled this bar.
    filled: usize,
    /// Symbols without a fill this bar, and why that is right.
    rejected: usize,
    below_minimum: usize,
    stopped: usize,
}

/// The soak's bound (issue 15): at the close of bar `bar`, a symbol whose rebalance order filled is
/// within one lot of the engine's admitted target, `target_weight × equity / close` — on the equity
/// the exchange reported during this bar before that order (the runner sizes on the equity it
/// read; the risk loop reads it too, and each fill's fee moves it, so every value served this bar
/// before the order is a candidate; they differ by fees only). A symbol without a fill this bar must
/// have a reason: its create was rejected (an injected `reject`), the risk loop stopped it out, or
/// what is left to trade is under the exchange's minimum (`minOrderQty`, `minNotionalValue`), which
/// no order can fill. Anything else is a gap.
fn check_bar(
    bar: i64,
    log: &[Value],
    executions: &[Value],
    positions: &Value,
    saved: &Value,
    closes: &std::collections::BTreeMap<String, f64>,
    instruments: &std::collections::BTreeMap<String, xsmom::live::types::Instrument>,
) -> BarCheck {
    use xsmom::live::plan::round_to_step;
    let mut check = BarCheck::default();
    let prefix = format!("xs-{bar}-");
    let equities: Vec<(usize, f64)> = log
        .iter()
        .enumerate()
        .filter(|(_, r)| r["path"] == "/v5/account/wallet-balance")
        .filter_map(|(n, r)| Some((n, r["equity"].as_f64()?)))
        .collect();
    let creates: Vec<(usize, &str, Option<&str>)> = log
        .iter()
        .enumerate()
        .filter(|(_, r)| r["path"] == "/v5/order/create")
        .filter_map(|(n, r)| Some((n, r["body"]["orderLinkId"].as_str()?, r["fault"].as_str())))
        .filter(|(_, id, _)| id.starts_with(&prefix))
        .collect();
    let mut fills: std::collections::BTreeMap<&str, (f64, bool, bool)> = Default::default();
    for e in executions.iter().filter(|e| e["orderLinkId"].as_str().is_some_and(|id| id.starts_with(&prefix))) {
        let sign = if e["side"] == "Buy" { 1.0 } else { -1.0 };
        let entry = fills.entry(e["orderLinkId"].as_str().unwrap()).or_default();
        entry.0 += sign * e["qty"].as_f64().unwrap();
        if sign > 0.0 {
            entry.1 = true;
        } else {
            entry.2 = true;
        }
    }
    for symbol in symbols() {
        let own = format!("{prefix}{symbol}-");
        let rebalance = |id: &str| id.strip_prefix(&own).is_some_and(|n| n.parse::<u32>().is_ok());
        if creates.iter().any(|(_, id, _)| id.strip_prefix(&own).is_some_and(|rest| rest.starts_with("stop"))) {
            check.stopped += 1; // stopped out this bar: flat until the next decision
            continue;
        }
        let weight = saved["symbols"][&symbol]["target_weight"].as_f64().unwrap_or(0.0);
        let position = positions[&symbol].as_f64().unwrap_or(0.0);
        let close = closes[&symbol];
        let instrument = &instruments[&symbol];
        let lot = instrument.lot_size;
        let target = |equity: f64| weight * equity / close;
        let filled: Vec<usize> = creates
            .iter()
            .filter(|(_, id, _)| rebalance(id) && fills.get(id).is_some_and(|f| f.0 != 0.0))
            .map(|(n, _, _)| *n)
            .collect();
        if let Some(&last) = filled.iter().max() {
            let before: Vec<f64> = equities.iter().filter(|(n, _)| *n < last).map(|(_, e)| *e).collect();
            let Some(distance) = before.iter().map(|e| (position - target(*e)).abs()).reduce(f64::min) else {
                check.gaps.push(format!("{symbol}: filled without an equity read this bar"));
                continue;
            };
            check.filled += 1;
            if distance > lot * (1.0 + 1e-6) {
                check
                    .gaps
                    .push(format!("{symbol}: position {position}, target {} ({distance} off)", target(before[0])));
            }
            let traded: f64 = fills.iter().filter(|(id, _)| id.starts_with(&own)).map(|(_, f)| f.0).sum();
            let start = position - traded;
            let both_ways = fills.iter().any(|(id, f)| rebalance(id) && f.1 && f.2)
                || (fills.iter().any(|(id, f)| rebalance(id) && f.1)
                    && fills.iter().any(|(id, f)| rebalance(id) && f.2));
            let past = before.iter().map(|e| (position - target(*e)) * (target(*e) - start).signum()).reduce(f64::min);
            if both_ways || past.is_some_and(|p| p > lot * (1.0 + 1e-6)) {
                check.overfills.push(format!("{symbol}: from {start} to {position}, target {}", target(before[0])));
            }
            continue;
        }
        if creates.iter().any(|(_, id, fault)| rebalance(id) && *fault == Some("reject")) {
            check.rejected += 1;
            continue;
        }
        let closing = weight == 0.0 && position != 0.0;
        let below = |equity: f64| {
            let delta = round_to_step(target(equity) - position, lot);
            delta == 0.0 || delta.abs() < instrument.min_qty || delta.abs() * close < instrument.min_notional
        };
        if !closing && equities.iter().any(|(_, e)| below(*e)) {
            check.below_minimum += 1;
        } else {
            let want = equities.first().map(|(_, e)| target(*e));
            check.gaps.push(format!("{symbol}: no fill this bar, position {position}, target {want:?}"));
        }
    }
    check
}

fn state_temp_exists(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with(".state.json.tmp-"))
}

#[test]
fn soak_a_hundred_bars_of_faults_and_kill_9_never_duplicate_overfill_or_reenter() {
    const BARS: usize = 100;
    let mut rng = Seeded(0x5eed_1515);
    let start = FIRST_BAR + 1_420 * HOUR + 6_000;
    let mock = Mock::start(start);
    let hook = Webhook::start();
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var("XSMOM_TEST_LOGS").is_ok() {
        dir.disable_cleanup(true);
        eprintln!("soak: runner logs in {}", dir.path().join("xsmom-live.log").display());
    }
    let extra =
        "  rebalance_delay_secs: 5\nbacktest:\n  min_rebalance_delta: 0.0\nrisk:\n  kill_switch:\n    enabled: false\n";
    let spawn = || spawn_binary_with(&mock, &hook, dir.path(), extra);
    let mut child = spawn();
    let heartbeat_bar = || -> Option<i64> {
        let text = std::fs::read_to_string(dir.path().join("heartbeat.json")).ok()?;
        serde_json::from_str::<Value>(&text).ok()?["last_bar_ts"].as_i64()
    };
    let instruments: std::collections::BTreeMap<String, xsmom::live::types::Instrument> =
        block_on(mock.client().instruments(&symbols())).unwrap().into_iter().map(|i| (i.symbol.clone(), i)).collect();
    let faults = [
        ("/v5/order/create", "http500"),
        ("/v5/order/create", "reject"),
        ("/v5/order/create", "drop_after_accept"),
        ("/v5/order/create", "delay"),
        ("/v5/position/list", "ratelimit"),
        ("/v5/market/tickers", "timeout"),
        ("/v5/order/realtime", "http500"),
        ("/v5/execution/list", "http500"),
    ];
    let (mut kills, mut kills_in_write, mut injected) = (0, 0, 0);
    let mut checks = Vec::new();
    let begun = std::time::Instant::now();
    for k in 0..BARS {
        let now = start + k as i64 * HOUR;
        let bar = now.div_euclid(HOUR) * HOUR - HOUR;
        let moved =
            if k > 0 { block_on(mock.control("/mock/clock", json!({"now_ms": now}))) } else { block_on(mock.state()) };
        let log_from = if k > 0 { moved["log"].as_array().unwrap().len() } else { 0 };
        // The closes the runner sizes at (the bar's), as the exchange serves them.
        let closes: std::collections::BTreeMap<String, f64> =
            symbols().into_iter().map(|s| (s.clone(), moved["closes"][&s].as_f64().unwrap())).collect();
        if rng.below(3) == 0 {
            let (path, kind) = faults[rng.below(faults.len() as u64) as usize];
            block_on(mock.control("/mock/faults", json!({"path": path, "kind": kind, "count": 1, "ms": 1_000})));
            injected += 1;
        }
        // kill -9 in a quarter of the bars: half of them at a random moment of the bar's cycle, half
        // the moment a state write starts (its temp file appears). A kill landed during the write
        // when the temp file outlives the process: the restart must remove it.
        if rng.below(4) == 0 {
            let mut stale = None;
            if rng.below(2) == 0 {
                std::thread::sleep(Duration::from_millis(rng.below(1_200)));
            } else {
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while !state_temp_exists(dir.path()) && std::time::Instant::now() < deadline {
                    std::thread::yield_now();
                }
            }
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
            if state_temp_exists(dir.path()) {
                kills_in_write += 1;
                stale = Some(dir.path().join(format!(".state.json.tmp-{}", child.id())));
            }
            child = spawn();
            if let Some(stale) = &stale {
                wait_for("the restart removes the temp file of the interrupted write", 30, || !stale.exists());
            }
        }
        wait_for(&format!("bar {k}"), 60, || heartbeat_bar() == Some(bar));
        // Until the account settled at the targets (a failed step is retried by the next cycle).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let check = loop {
            let state = block_on(mock.control("/mock/state", json!({"log_from": log_from})));
            let saved: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.path().join("state.json")).unwrap()).unwrap();
            let check = check_bar(
                bar,
                state["log"].as_array().unwrap(),
                state["executions"].as_array().unwrap(),
                &state["positions"],
                &saved,
                &closes,
                &instruments,
            );
            if (check.gaps.is_empty() && check.overfills.is_empty()) || std::time::Instant::now() > deadline {
                break check;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        checks.push(check);
    }
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(wait_exit(&mut child, 30).success());
    let state = block_on(mock.state());
    // Economic duplicates: two filled rebalance orders (`xs-<bar>-<symbol>-<n>`) of one symbol, side
    // and bar; re-entries: an opening order of a symbol after its stop exit in the same bar.
    let mut reentries = 0;
    let executions = state["executions"].as_array().unwrap();
    let mut seen: std::collections::BTreeMap<(String, String, String), std::collections::BTreeSet<String>> =
        Default::default();
    for e in executions {
        let id = e["orderLinkId"].as_str().unwrap();
        let parts: Vec<&str> = id.split('-').collect();
        if parts.len() != 4 || parts[0] != "xs" || parts[3].parse::<u32>().is_err() {
            continue; // exits (stop, kill, flat, …) are reduce-only
        }
        seen.entry((parts[1].to_string(), parts[2].to_string(), e["side"].as_str().unwrap().to_string()))
            .or_default()
            .insert(id.to_string());
    }
    let duplicates: Vec<_> = seen.values().filter(|ids| ids.len() > 1).collect();
    let log = state["log"].as_array().unwrap();
    let creates = requests(&state, "/v5/order/create");
    for (n, r) in creates.iter().enumerate() {
        let id = r["body"]["orderLinkId"].as_str().unwrap();
        if let Some(prefix) = id.strip_suffix("-stop") {
            reentries += creates[n + 1..]
                .iter()
                .filter(|later| {
                    let later = later["body"]["orderLinkId"].as_str().unwrap();
                    later.starts_with(&format!("{prefix}-")) && later[prefix.len() + 1..].parse::<u32>().is_ok()
                })
                .count();
        }
    }
    let mut taken: std::collections::BTreeMap<String, usize> = Default::default();
    for r in log.iter().filter(|r| r["fault"].is_string()) {
        *taken.entry(format!("{} {}", r["fault"].as_str().unwrap(), r["path"].as_str().unwrap())).or_default() += 1;
    }
    let refused = state["refused_duplicates"].as_u64().unwrap();
    let gaps: Vec<(usize, &String)> =
        checks.iter().enumerate().flat_map(|(k, c)| c.gaps.iter().map(move |g| (k, g))).collect();
    let overfills: Vec<(usize, &String)> =
        checks.iter().enumerate().flat_map(|(k, c)| c.overfills.iter().map(move |g| (k, g))).collect();
    let sum = |f: fn(&BarCheck) -> usize| checks.iter().map(f).sum::<usize>();
    eprintln!(
        "soak: {BARS} bars in {:.0} s, {} requests, {} creates, {kills} kill -9 ({kills_in_write} during a state \
         write), {injected} faults injected, taken: {taken:?}; refused ids {refused}, economic duplicates \
         {}, re-entries after a stop {reentries}, overfills {}; symbol-bars: {} filled, {} at the target or \
         under the exchange minimum, {} rejected, {} stopped out; gaps > 1 lot {gaps:?}",
        begun.elapsed().as_secs_f64(),
        log.len(),
        creates.len(),
        duplicates.len(),
        overfills.len(),
        sum(|c| c.filled),
        sum(|c| c.below_minimum),
        sum(|c| c.rejected),
        sum(|c| c.stopped),
    );
    assert!(kills >= 20, "{kills} kills");
    assert!(kills_in_write >= 5, "{kills_in_write} kills during a state write");
    assert_eq!(checks.len(), BARS);
    assert_eq!(refused, 0, "ids refused as duplicates");
    assert!(duplicates.is_empty(), "economic duplicates: {duplicates:?}");
    assert_eq!(reentries, 0, "re-entries after a stop");
    assert!(overfills.is_empty(), "overfills: {overfills:?}");
    assert!(gaps.is_empty(), "position gaps: {gaps:?}");
}

fn spawn_binary_with(mock: &Mock, hook: &Webhook, dir: &Path, extra: &str) -> Child {
    let (_, text) = config_text("");
    let config_path = dir.join("live.yaml");
    let live = "live:\n  fast_check_secs: 1\n  warmup_bars: 1430\n";
    std::fs::write(&config_path, text + live + extra).unwrap();
    Command::new(env!("CARGO_BIN_EXE_xsmom-live"))
        .args(["run", "--mode", "testnet", "--base-url", &mock.url, "--config"])
        .arg(&config_path)
        .arg("--state")
        .arg(dir.join("state.json"))
        .arg("--heartbeat")
        .arg(dir.join("heartbeat.json"))
        .env("BYBIT_API_KEY", "test-key")
        .env("BYBIT_API_SECRET", "test-secret")
        .env("DISCORD_WEBHOOK_URL", &hook.url)
        .stdout(Stdio::null())
        .stderr(match std::env::var("XSMOM_TEST_LOGS") {
            Ok(_) => Stdio::from(
                std::fs::OpenOptions::new().create(true).append(true).open(dir.join("xsmom-live.log")).unwrap(),
            ),
            Err(_) => Stdio::null(),
        })
        .spawn()
        .unwrap()
}

/// A create under way when the runner is killed (the exchange is slow) still executes after the
/// restart: the restarted runner must not send the next attempt of that symbol meanwhile.
#[test]
fn a_create_in_flight_at_kill_9_is_not_followed_by_a_second_order_after_the_restart() {
    let start = FIRST_BAR + 1_420 * HOUR + 6_000;
    let mock = Mock::start(start);
    let hook = Webhook::start();
    let dir = tempfile::tempdir().unwrap();
    let extra =
        "  rebalance_delay_secs: 5\nbacktest:\n  min_rebalance_delta: 0.0\nrisk:\n  kill_switch:\n    enabled: false\n";
    // The first create waits 3 s at the exchange, then goes through.
    mock.control_blocking(
        "/mock/faults",
        json!({"path": "/v5/order/create", "kind": "delay", "count": 1, "ms": 3_000}),
    );
    let mut child = spawn_binary_with(&mock, &hook, dir.path(), extra);
    let has_create = || !requests(&block_on(mock.state()), "/v5/order/create").is_empty();
    // Bar by bar until the model trades (its indicators warm up first).
    let mut k = 0;
    while !has_create() {
        wait_for("a first create", 5, || has_create() || std::fs::metadata(dir.path().join("heartbeat.json")).is_ok());
        std::thread::sleep(Duration::from_millis(1_500));
        if has_create() {
            break;
        }
        k += 1;
        assert!(k < 60, "no order in 60 bars");
        mock.control_blocking("/mock/clock", json!({"now_ms": start + k * HOUR}));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = spawn_binary_with(&mock, &hook, dir.path(), extra);
    let bar = (start + k * HOUR).div_euclid(HOUR) * HOUR - HOUR;
    let prefix = format!("xs-{bar}-");
    let fills = || -> Vec<String> {
        let state = block_on(mock.state());
        let mut ids: Vec<String> = state["executions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["orderLinkId"].as_str().unwrap().to_string())
            .filter(|id| id.starts_with(&prefix))
            .collect();
        ids.sort();
        ids
    };
    // The delayed order fills; the symbols whose ids were reserved and never sent get the next id.
    std::thread::sleep(Duration::from_secs(9));
    let filled = fills();
    let mut symbols_filled: Vec<&str> = filled.iter().map(|id| id.rsplit('-').nth(1).unwrap()).collect();
    let before = symbols_filled.len();
    symbols_filled.dedup();
    assert!(before > 0 && symbols_filled.len() == before, "one filled order per symbol: {filled:?}");
    assert!(filled.iter().any(|id| id.ends_with("-0")), "the order in flight filled: {filled:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn client_pages_mark_klines_without_volume() {
    let now = FIRST_BAR + 1_500 * HOUR + 30 * 60_000;
    let mock = Mock::start(now);
    block_on(async {
        let client = mock.client();
        let tf = Config::default().timeframe();
        let marks = client.closed_mark_klines("BTCUSDT", tf, FIRST_BAR, i64::MAX).await.unwrap();
        assert_eq!(marks.len(), 1_500, "every closed mark bar, across pages");
        assert!(marks.windows(2).all(|w| w[1].ts - w[0].ts == HOUR));
        assert!(marks.iter().all(|k| k.volume.is_nan() && k.close.is_finite()));
        assert!(requests(&mock.state().await, "/v5/market/mark-price-kline").len() >= 2);
        let traded = client.closed_klines("BTCUSDT", tf, FIRST_BAR, i64::MAX).await.unwrap();
        let premium = traded[700].close / marks[700].close - 1.0;
        assert!(premium.abs() < 0.01 && premium != 0.0, "mark closes are not the traded ones: {premium}");
        // SOLUSDT has no mark file in the fixture: no mark bars, no error.
        assert!(client.closed_mark_klines("SOLUSDT", tf, FIRST_BAR, i64::MAX).await.unwrap().is_empty());
    });
}

#[test]
fn the_runner_fetches_mark_klines_when_the_basis_term_is_on() {
    let (cfg, text) = config_text(
        "  carry:\n    enabled: true\n    budget: 0.4\n    basis_weight: 1095\nrisk:\n  stops:\n    enabled: false\n",
    );
    assert_eq!(cfg.strategy.carry.basis_weight, 1095.0);
    let backtest = {
        use xsmom::run::{self, BarsSource, FundingSource, MarkSource};
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
        let selection = xsmom::data::store::Selection {
            symbols: Some(symbols()),
            start: None,
            end: None,
            timeframe: cfg.timeframe(),
        };
        let bars = xsmom::data::read_bars(&root, &selection).unwrap().0;
        let mut inputs = run::prepare(BarsSource::Bars(bars), FundingSource::Path(root.clone()), &cfg).unwrap();
        run::attach_mark(&mut inputs, MarkSource::Path(root), xsmom::data::SpikeRule::default(), false).unwrap();
        run::backtest(&inputs, &cfg, false).unwrap()
    };
    let first = backtest.first_decision.expect("the backtest trades");
    let mut now = FIRST_BAR + first as i64 * HOUR + 5_000;
    let mock = Mock::start(now);
    let dir = tempfile::tempdir().unwrap();
    block_on(async {
        let mut runner =
            Runner::start(mock.client(), cfg.clone(), &text, symbols(), options(dir.path())).await.unwrap();
        runner.cycle().await.unwrap();
        for t in first..first + 30 {
            now += HOUR;
            mock.control("/mock/clock", json!({"now_ms": now})).await;
            runner.cycle().await.unwrap();
            assert_eq!(runner.engine().target_weights(), backtest.target_weights().row(t).to_vec(), "bar {t}");
        }
        assert!(!requests(&mock.state().await, "/v5/market/mark-price-kline").is_empty());
    });
}
