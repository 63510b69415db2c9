//! Discord notifications (live.md §5) that never block trading: messages go into a bounded queue
//! drained by a background task; a full queue drops the message (and says so in the log); a 429
//! is answered by waiting its `Retry-After`. The webhook URL comes from `DISCORD_WEBHOOK_URL` and is
//! never logged.

use std::time::Duration;

use tokio::sync::mpsc;

const QUEUE: usize = 64;

#[derive(Clone)]
pub struct Notifier {
    sender: Option<mpsc::Sender<String>>,
    /// Messages queued and not yet handled by the background task.
    pending: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.sender.is_some() { "Notifier(webhook)" } else { "Notifier(off)" })
    }
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn off() -> Self {
        Self { sender: None, pending: Default::default() }
    }

    /// From `DISCORD_WEBHOOK_URL` (off when unset). Must be called inside a tokio runtime.
    pub fn from_env() -> Self {
        match std::env::var("DISCORD_WEBHOOK_URL") {
            Ok(url) if !url.is_empty() => Self::webhook(url),
            _ => Self::off(),
        }
    }

    /// Post to `url` from a background task.
    pub fn webhook(url: String) -> Self {
        let (sender, mut receiver) = mpsc::channel::<String>(QUEUE);
        let pending = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handled = std::sync::Arc::clone(&pending);
        tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client builds");
            while let Some(message) = receiver.recv().await {
                for _attempt in 0..3 {
                    let sent = client.post(&url).json(&serde_json::json!({ "content": message })).send().await;
                    match sent {
                        Ok(response) if response.status().as_u16() == 429 => {
                            let wait = response
                                .headers()
                                .get("Retry-After")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<f64>().ok())
                                .unwrap_or(1.0);
                            tokio::time::sleep(Duration::from_secs_f64(wait.clamp(0.0, 60.0))).await;
                        }
                        Ok(response) if response.status().is_success() => break,
                        Ok(response) => {
                            tracing::warn!(status = response.status().as_u16(), "discord webhook refused a message");
                            break;
                        }
                        Err(_) => {
                            tracing::warn!("discord webhook unreachable");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
                handled.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Self { sender: Some(sender), pending }
    }

    /// Wait until every queued message was handled, at most `limit` (on the way out).
    pub async fn flush(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.pending.load(std::sync::atomic::Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Queue a message; returns at once whatever the webhook does.
    pub fn send(&self, message: impl Into<String>) {
        if let Some(sender) = &self.sender {
            self.pending.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if sender.try_send(message.into()).is_err() {
                self.pending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                tracing::warn!("notification queue full: message dropped");
            }
        }
    }
}
