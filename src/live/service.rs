//! The runner as a service: the main cycle and the risk loop every `live.fast_check_secs`, config
//! reload on SIGHUP or when the config file changes, and a clean stop on SIGTERM (live.md §2–5).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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

/// Run until a stop is requested. Errors of one step are logged, counted by the circuit breaker
/// and retried at the next step; they do not end the service.
pub async fn serve<E: Exchange>(
    runner: &mut Runner<E>,
    control: &Control,
    config_path: &Path,
    notifier: &Notifier,
) -> Result<()> {
    let mut config_stamp = modified(config_path);
    notifier.send(format!("xsmom-live started ({}, config {})", runner.state().mode, runner.config_version()));
    let mut breaker_was_open = false;
    // Errors are notified once per streak (the breaker counts every one of them).
    let mut failing = false;
    while !control.stop.load(Ordering::SeqCst) {
        let stamp = modified(config_path);
        if control.reload.swap(false, Ordering::SeqCst) || stamp != config_stamp {
            config_stamp = stamp;
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
        match runner.cycle().await {
            Ok(report) => {
                if report.kill_switch {
                    notifier.send("daily kill-switch: orders cancelled, positions flattened, paused for the day");
                }
                if report.breaker_open && !breaker_was_open {
                    notifier.send("API circuit breaker open: no new risk during the cooldown");
                }
                breaker_was_open = report.breaker_open;
                if failing {
                    notifier.send("cycles succeed again");
                }
                failing = false;
            }
            Err(err) => {
                tracing::error!(error = %err, "cycle failed; retried at the next step");
                if !failing {
                    notifier.send(format!("cycle failed (retried every step until it succeeds): {err}"));
                }
                failing = true;
                runner.record_failure(&err).await;
            }
        }
        match runner.risk_check().await {
            Ok(exits) if !exits.is_empty() => notifier.send(format!("risk exits: {}", exits.join(", "))),
            Ok(_) => {}
            Err(err) => {
                tracing::error!(error = %err, "risk check failed");
                runner.record_failure(&err).await;
            }
        }
        let pause = Duration::from_secs(runner.config().live.fast_check_secs as u64);
        let deadline = tokio::time::Instant::now() + pause;
        while tokio::time::Instant::now() < deadline && !control.stop.load(Ordering::SeqCst) {
            if control.reload.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tracing::info!("stop requested: state saved, exiting");
    notifier.send("xsmom-live stopped");
    // Give the notifier a moment to flush without ever blocking on it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}
