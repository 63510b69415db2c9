//! The runner as a service: the main cycle and the risk loop every `live.fast_check_secs`, config
//! reload on SIGHUP or when the config file changes, and a clean stop on SIGTERM (live.md §2–5).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::desk::RiskDesk;
use super::exchange::Exchange;
use super::notify::Notifier;
use super::runner::Runner;
use crate::config::Config;
use crate::error::{Error, Result};

/// Flags set by signal handlers and read between steps.
#[derive(Debug, Clone, Default)]
pub struct Control {
    pub stop: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
}

impl Control {
    /// SIGTERM / SIGINT request a stop, SIGHUP a reload. Must be called inside a tokio runtime.
    pub fn from_signals() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let control = Control::default();
        let (stop, reload) = (Arc::clone(&control.stop), Arc::clone(&control.reload));
        // Registered here, before the first step: a signal that arrives before the task is first
        // polled is queued, not fatal.
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
        else {
            tracing::error!("cannot install the signal handlers");
            return control;
        };
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => stop.store(true, Ordering::SeqCst),
                    _ = int.recv() => stop.store(true, Ordering::SeqCst),
                    _ = hup.recv() => reload.store(true, Ordering::SeqCst),
                }
            }
        });
        control
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load_config(path: &Path) -> Result<(Config, String)> {
    let text = std::fs::read_to_string(path).map_err(|err| Error::io(path.display(), err))?;
    let cfg = Config::from_yaml(&text, &path.display().to_string())?;
    Ok((cfg, text))
}

/// How [`serve`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// SIGTERM / SIGINT: the step under way finished, the state was written.
    Stopped,
    /// The exchange refused the API key or its permissions: trading stopped, one alert went out;
    /// the binary exits with [`super::types::EXIT_AUTH`] so that systemd does not restart it.
    AuthRefused(String),
}

/// Run until a stop is requested or the exchange refuses the key. The risk loop runs as a task of
/// its own on the same thread, so an order request of the cycle that hangs never holds a stop or
/// the kill-switch back. Errors of one step are logged, counted by the circuit breaker and retried
/// (after a growing pause while they last); they do not end the service.
pub async fn serve<E: Exchange + 'static>(
    runner: &mut Runner<E>,
    control: &Control,
    config_path: &Path,
    notifier: &Notifier,
) -> Result<Outcome> {
    tokio::task::LocalSet::new().run_until(serve_here(runner, control, config_path, notifier)).await
}

/// Reload the config when SIGHUP asked for it or the file changed; a rejected config leaves the
/// running one in place (and says so).
async fn reload_when_asked<E: Exchange + 'static>(
    runner: &mut Runner<E>,
    control: &Control,
    config_path: &Path,
    config_stamp: &mut Option<std::time::SystemTime>,
    notifier: &Notifier,
) {
    let stamp = modified(config_path);
    if control.reload.swap(false, Ordering::SeqCst) || stamp != *config_stamp {
        *config_stamp = stamp;
        let reloaded = match load_config(config_path) {
            Ok((cfg, text)) => runner.reload(cfg, &text).await,
            Err(err) => Err(err),
        };
        match reloaded {
            Ok(()) => notifier.send(format!("config reloaded: version {}", runner.config_version())),
            Err(err) => {
                tracing::error!(error = %err, "config rejected; the previous config keeps running");
                notifier.send(format!("config rejected, previous config kept: {err}"));
            }
        }
    }
}

/// The pause before the next cycle: `fast_check_secs`, doubled per consecutive failure (at most a
/// minute); cut short by a stop, a reload request or a fatal error. The risk loop keeps its own pace.
async fn pause_between_cycles<E: Exchange + 'static>(runner: &Runner<E>, control: &Control, failures: u32) {
    let fast = runner.config().live.fast_check_secs as u64;
    let pause = match failures {
        0 => Duration::from_secs(fast),
        n => Duration::from_secs((fast << n.min(6)).min(60)),
    };
    let deadline = tokio::time::Instant::now() + pause;
    while tokio::time::Instant::now() < deadline && !control.stop.load(Ordering::SeqCst) {
        if control.reload.load(Ordering::SeqCst) || runner.fatal().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn serve_here<E: Exchange + 'static>(
    runner: &mut Runner<E>,
    control: &Control,
    config_path: &Path,
    notifier: &Notifier,
) -> Result<Outcome> {
    runner.set_stop_flag(Arc::clone(&control.stop));
    let mut config_stamp = modified(config_path);
    notifier.send(format!("xsmom-live started ({}, config {})", runner.state().mode, runner.config_version()));
    let risk = tokio::task::spawn_local(risk_loop(runner.risk_desk(), Arc::clone(&control.stop), notifier.clone()));
    let mut breaker_was_open = false;
    // Errors are notified once per streak (the breaker counts every one of them).
    let mut failures = 0u32;
    while !control.stop.load(Ordering::SeqCst) && runner.fatal().is_none() {
        reload_when_asked(runner, control, config_path, &mut config_stamp, notifier).await;
        match runner.cycle().await {
            Ok(report) => {
                if report.kill_switch {
                    notifier.send("daily kill-switch: orders cancelled, positions flattened, paused for the day");
                }
                if report.breaker_open && !breaker_was_open {
                    notifier.send("API circuit breaker open: no new risk during the cooldown");
                }
                breaker_was_open = report.breaker_open;
                if failures > 0 {
                    notifier.send("cycles succeed again");
                }
                failures = 0;
            }
            Err(_) if control.stop.load(Ordering::SeqCst) || runner.fatal().is_some() => break,
            Err(err) => {
                tracing::error!(error = %err, "cycle failed; retried at the next step");
                if failures == 0 {
                    notifier.send(format!("cycle failed (retried every step until it succeeds): {err}"));
                }
                failures += 1;
                runner.record_failure(&err).await;
            }
        }
        pause_between_cycles(runner, control, failures).await;
    }
    // The risk task ends at its next check; an exit under way is awaited with it.
    let _ = risk.await;
    runner.save_state()?;
    if let Some(err) = runner.fatal() {
        let message = format!(
            "trading stopped: the exchange refused the API key or its permissions ({err}); xsmom-live exits \
             with status {} and is not restarted until the key is fixed",
            super::types::EXIT_AUTH
        );
        tracing::error!("{message}");
        notifier.send(message);
        notifier.flush(Duration::from_secs(10)).await;
        return Ok(Outcome::AuthRefused(err.to_string()));
    }
    tracing::info!("stop requested: state saved, exiting");
    notifier.send("xsmom-live stopped");
    // Give the notifier a moment to flush, never long.
    notifier.flush(Duration::from_secs(3)).await;
    Ok(Outcome::Stopped)
}

/// The risk loop as a task: a check every `live.fast_check_secs`, each bounded by a timeout (a
/// request that hangs is abandoned and the next check starts on time); a failed exit is tried
/// again at every check until the account is flat. Ends on SIGTERM or an auth refusal.
async fn risk_loop<E: Exchange>(desk: RiskDesk<E>, stop: Arc<AtomicBool>, notifier: Notifier) {
    let done = || stop.load(Ordering::SeqCst) || desk.gate().fatal().is_some();
    while !done() {
        let fast = desk.with(|s| s.fast_check_secs) as u64;
        let limit = Duration::from_secs((2 * fast).max(5));
        match tokio::time::timeout(limit, desk.check()).await {
            Ok(Ok(exits)) if !exits.is_empty() => notifier.send(format!("risk exits: {}", exits.join(", "))),
            Ok(Ok(_)) => {}
            Ok(Err(_)) if done() => break,
            Ok(Err(err)) => {
                tracing::error!(error = %err, "risk check failed; again at the next check");
                desk.record_failure(&err);
            }
            Err(_) => {
                tracing::error!("risk check timed out after {} s; again at the next check", limit.as_secs());
                let err = Error::invalid(format!("risk check: no answer within {} s", limit.as_secs()));
                desk.record_failure(&err);
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(fast);
        while tokio::time::Instant::now() < deadline && !done() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
