//! `xsmom-live run | health | state show` (live.md §5).
//!
//! Every error is one line on stderr and exit code 2; `health` exits 1 when the heartbeat is stale;
//! `run` exits 78 when the exchange refused the API key or its permissions (systemd does not
//! restart it then: `RestartPreventExitStatus=78`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use xsmom::config::Config;
use xsmom::error::{Error, Result};
use xsmom::live::bybit::{self, BybitClient, Credentials};
use xsmom::live::heartbeat::Heartbeat;
use xsmom::live::notify::Notifier;
use xsmom::live::paper::PaperExchange;
use xsmom::live::replay::ReplayExchange;
use xsmom::live::runner::{Runner, RunnerOptions};
use xsmom::live::service::{self, Control};
use xsmom::live::state::LiveState;
use xsmom::run::{self, BarsSource, FundingSource};
use xsmom::timeframe::utc_label;

const USAGE: &str = "usage:
  xsmom-live run --config F [--mode replay|paper|testnet|bybit] [--bars PATH] [--out DIR]
                 [--symbols A,B] [--base-url URL] [--state F] [--heartbeat F] [--reset-state]
                 [--log-format text|json]
  xsmom-live health [--heartbeat F] [--max-age-secs S]
  xsmom-live state show [--state F]";

const DEFAULT_STATE: &str = "state/xsmom-live.json";
const DEFAULT_HEARTBEAT: &str = "state/heartbeat.json";

/// `--name value` options and bare flags of one command line.
struct Args {
    values: Vec<(String, String)>,
    flags: Vec<String>,
}

impl Args {
    fn parse(args: &[String], flags: &[&str]) -> Result<Args> {
        let mut parsed = Args { values: Vec::new(), flags: Vec::new() };
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let Some(name) = arg.strip_prefix("--") else {
                return Err(Error::invalid(format!("unexpected argument {arg:?}\n{USAGE}")));
            };
            if flags.contains(&name) {
                parsed.flags.push(name.to_string());
            } else {
                let value = iter.next().ok_or_else(|| Error::invalid(format!("--{name} needs a value")))?;
                parsed.values.push((name.to_string(), value.clone()));
            }
        }
        Ok(parsed)
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.values.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
    fn check_known(&self, known: &[&str]) -> Result<()> {
        match self.values.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            Some((name, _)) => Err(Error::invalid(format!("unknown option --{name}\n{USAGE}"))),
            None => Ok(()),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => cmd_run(&args[1..]),
        Some("health") => cmd_health(&args[1..]),
        Some("state") if args.get(1).map(String::as_str) == Some("show") => cmd_state_show(&args[2..]),
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => Err(Error::invalid(USAGE)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xsmom-live: {err}");
            ExitCode::from(2)
        }
    }
}

fn init_logs(format: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("XSMOM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => return Err(Error::invalid(format!("--log-format {other}: expected text or json"))),
    }
    Ok(())
}

fn cmd_run(args: &[String]) -> Result<ExitCode> {
    let args = Args::parse(args, &["reset-state"])?;
    args.check_known(&["config", "mode", "bars", "out", "state", "heartbeat", "log-format", "symbols", "base-url"])?;
    init_logs(args.get("log-format").unwrap_or("text"))?;
    let config_path = PathBuf::from(args.get("config").ok_or_else(|| Error::invalid("run needs --config F"))?);
    let config_text = std::fs::read_to_string(&config_path).map_err(|err| Error::io(config_path.display(), err))?;
    let cfg = Config::from_yaml(&config_text, &config_path.display().to_string())?;
    let mode = args.get("mode").unwrap_or("replay").to_string();
    // A replay starts from a clean simulated account: its state and heartbeat go to a folder of
    // its own unless `--state` / `--heartbeat` name files (then a second run resumes after the last bar).
    let scratch = match mode.as_str() {
        "replay" => Some(tempfile_dir()?),
        _ => None,
    };
    let default_path = |name: &str, default: &str| match &scratch {
        Some(dir) => dir.join(name),
        None => PathBuf::from(default),
    };
    let opts = RunnerOptions {
        mode: mode.clone(),
        state_path: args.get("state").map_or_else(|| default_path("state.json", DEFAULT_STATE), PathBuf::from),
        heartbeat_path: args
            .get("heartbeat")
            .map_or_else(|| default_path("heartbeat.json", DEFAULT_HEARTBEAT), PathBuf::from),
        start_ts: None,
        reset_state: args.flag("reset-state"),
    };
    let _cleanup = scratch.map(RemoveOnDrop);
    match mode.as_str() {
        "replay" => {
            let bars = args.get("bars").ok_or_else(|| Error::invalid("replay mode needs --bars PATH"))?;
            let out = args.get("out").map(PathBuf::from);
            run_replay(cfg, &config_text, Path::new(bars), out.as_deref(), opts)
        }
        "paper" | "testnet" | "bybit" => {
            let base_url = match (args.get("base-url"), mode.as_str()) {
                (Some(url), _) => url.to_string(),
                (None, "bybit") => bybit::MAINNET.to_string(),
                (None, _) => bybit::TESTNET.to_string(),
            };
            let symbols: Vec<String> = match args.get("symbols") {
                Some(list) => list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
                None => cfg.universe.include.clone(),
            };
            run_exchange(cfg, &config_text, &config_path, &base_url, symbols, opts)
        }
        other => Err(Error::invalid(format!("--mode {other}: expected replay, paper, testnet or bybit"))),
    }
}

fn run_replay(
    cfg: Config,
    config_text: &str,
    bars: &Path,
    out: Option<&Path>,
    mut opts: RunnerOptions,
) -> Result<ExitCode> {
    let capital = cfg.backtest.initial_capital;
    runtime()?.block_on(async move {
        // Signal handlers before loading the bars: a SIGTERM while they load is then a clean stop
        // after the first step, not the default action (death with no exit code).
        let stop = Control::from_signals().stop;
        let mut inputs = run::prepare(BarsSource::Path(bars.to_path_buf()), FundingSource::FromBarsStore, &cfg)?;
        run::attach_store_mark(&mut inputs, bars, &cfg)?;
        let exchange = ReplayExchange::new(inputs.panel, inputs.funding, &cfg);
        let symbols = exchange.symbols();
        opts.start_ts = Some(exchange.first_bar_ts());
        // A restarted replay resumes after the last bar it processed (with a fresh simulated account).
        if !opts.reset_state {
            if let Some(last) = LiveState::load(&opts.state_path)?.and_then(|s| s.last_bar_ts) {
                exchange.advance_to(last);
            }
        }
        let mut runner = Runner::start(exchange, cfg, config_text, symbols, opts).await?;
        tracing::info!(mode = "replay", "xsmom-live started");
        loop {
            let report = runner.cycle().await?;
            tracing::debug!(bars = report.bars_stepped, placed = report.orders_placed.len(), "cycle");
            if stop.load(Ordering::SeqCst) {
                tracing::info!("stop requested: state saved, exiting");
                return Ok(ExitCode::SUCCESS);
            }
            tokio::task::yield_now().await;
            if !runner.exchange().advance() {
                break;
            }
        }
        let executions = runner.exchange().executions();
        let equity = runner.exchange().equity_path();
        let model = runner.finish();
        if let Some(out) = out {
            xsmom::live::output::write_replay_outputs(out, &model, &executions, &equity)?;
        }
        let last_equity = equity.last().map_or(capital, |e| e.1);
        println!(
            "replay done: {} bars, {} fills, equity {:.2} (model {:.2})",
            model.ts.len(),
            executions.len(),
            last_equity,
            model.bars.equity.last().copied().unwrap_or(capital)
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// A fresh folder under the system temp dir for a replay's own state.
fn tempfile_dir() -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("xsmom-replay-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|err| Error::io(dir.display(), err))?;
    Ok(dir)
}

/// Removes a scratch folder when the run ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::invalid(format!("cannot start the async runtime: {err}")))
}

/// `bybit` / `testnet` trade through the REST client with keys from the environment; `paper`
/// uses its public market data and simulates the fills.
fn run_exchange(
    cfg: Config,
    config_text: &str,
    config_path: &Path,
    base_url: &str,
    mut symbols: Vec<String>,
    opts: RunnerOptions,
) -> Result<ExitCode> {
    symbols.sort();
    symbols.dedup();
    let mode = opts.mode.clone();
    let credentials = Credentials::from_env();
    if mode != "paper" && credentials.is_none() {
        return Err(Error::config(format!(
            "--mode {mode} needs BYBIT_API_KEY and BYBIT_API_SECRET in the environment"
        )));
    }
    let client = BybitClient::new(base_url, credentials).map_err(|err| Error::invalid(err.to_string()))?;
    let config_path = config_path.to_path_buf();
    runtime()?.block_on(async move {
        let control = Control::from_signals();
        let notifier = Notifier::from_env();
        let outcome = if mode == "paper" {
            let exchange = PaperExchange::new(client, &symbols, &cfg);
            let mut runner = Runner::start(exchange, cfg, config_text, symbols, opts).await?;
            service::serve(&mut runner, &control, &config_path, &notifier).await?
        } else {
            let mut runner = Runner::start(client, cfg, config_text, symbols, opts).await?;
            service::serve(&mut runner, &control, &config_path, &notifier).await?
        };
        match outcome {
            service::Outcome::Stopped => Ok(ExitCode::SUCCESS),
            service::Outcome::AuthRefused(err) => {
                eprintln!("xsmom-live: trading stopped, the exchange refused the API key: {err}");
                Ok(ExitCode::from(xsmom::live::types::EXIT_AUTH))
            }
        }
    })
}

fn cmd_health(args: &[String]) -> Result<ExitCode> {
    let args = Args::parse(args, &[])?;
    args.check_known(&["heartbeat", "max-age-secs"])?;
    let path = PathBuf::from(args.get("heartbeat").unwrap_or(DEFAULT_HEARTBEAT));
    let beat = Heartbeat::read(&path)?;
    let written = std::fs::metadata(&path).and_then(|m| m.modified()).map_err(|err| Error::io(path.display(), err))?;
    let age = written.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let max_age = match args.get("max-age-secs") {
        Some(v) => v.parse::<f64>().map_err(|_| Error::invalid(format!("--max-age-secs {v}: not a number")))?,
        None => beat.max_age_secs(),
    };
    let healthy = age <= max_age;
    let last_bar = beat.last_bar_ts.map_or("none".to_string(), utc_label);
    println!(
        "{}: heartbeat {:.0} s old (limit {:.0} s), last bar {last_bar}",
        if healthy { "healthy" } else { "STALE" },
        age,
        max_age,
    );
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn cmd_state_show(args: &[String]) -> Result<ExitCode> {
    let args = Args::parse(args, &["json"])?;
    args.check_known(&["state"])?;
    let path = PathBuf::from(args.get("state").unwrap_or(DEFAULT_STATE));
    let state = LiveState::load(&path)?.ok_or_else(|| Error::invalid(format!("{}: no state file", path.display())))?;
    if args.flag("json") {
        println!("{}", serde_json::to_string_pretty(&state).expect("state serialises"));
    } else {
        print!("{}", state_summary(&state));
    }
    Ok(ExitCode::SUCCESS)
}

/// `state show` for a person: the account and the symbols the model holds, targets or blocks.
fn state_summary(state: &LiveState) -> String {
    let when = |ms: Option<i64>| ms.map_or("none".to_string(), utc_label);
    let mut out = format!(
        "mode {}, config {}, last bar {}, updated {}\n",
        state.mode,
        state.config_version,
        when(state.last_bar_ts),
        when(Some(state.updated_ms))
    );
    out += &format!("equity {}\n", state.equity.map_or("unknown".to_string(), |e| format!("{e:.2} USDT")));
    if let Some(kill) = &state.kill_switch {
        let start = kill.day_start_equity.map_or("-".to_string(), |e| format!("{e:.2}"));
        out +=
            &format!("kill-switch {} (day start equity {start})\n", if kill.fired { "FIRED today" } else { "armed" });
    }
    if let Some(until) = state.breaker_paused_until_ms {
        out += &format!("API breaker paused until {}\n", utc_label(until));
    }
    let active: Vec<_> =
        state.symbols.iter().filter(|(_, s)| s.target_weight != 0.0 || s.stop.is_some() || s.blocked).collect();
    out += &format!("{} symbols, {} with a target, a stop or a block:\n", state.symbols.len(), active.len());
    for (symbol, s) in active {
        let stop = s.stop.as_ref().map_or(String::new(), |stop| {
            let side = if stop.side > 0.0 { "long" } else { "short" };
            // Eight decimals: what a price means, without binary noise.
            let price = |p: f64| (p * 1e8).round() / 1e8;
            format!(", {side} from {} stop {}", price(stop.entry_price), price(stop.stop))
        });
        let blocked = if s.blocked { ", blocked (cooldown or ban)" } else { "" };
        out += &format!("  {symbol:<14} target {:+.4}{stop}{blocked}\n", s.target_weight);
    }
    out
}
