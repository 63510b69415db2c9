//! The runner's persistent state (live.md §4): JSON with a schema version, written atomically.
//!
//! The model book (indicators, stops, cooldowns, scoring, the model's kill-switch) is a pure function
//! of the closed bars and the config, so on restart the runner rebuilds it by stepping the engine
//! over the stored bars from `model_start_ts` and checks it against the snapshot kept here. What is
//! not a function of the bars — the pause of the account kill-switch, the circuit breaker, order
//! sequence numbers — lives only here.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::meta_label::MetaSnapshot;
use crate::risk::KillSwitchSnapshot;

pub const SCHEMA_VERSION: u32 = 1;

/// Everything the runner persists between cycles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveState {
    pub schema_version: u32,
    /// `sha256` prefix of the deployed config's YAML (changes on reload).
    pub config_version: String,
    pub mode: String,
    /// First bar the model stepped (its warm-up start).
    pub model_start_ts: Option<i64>,
    /// Last closed bar the model processed.
    pub last_bar_ts: Option<i64>,
    /// Account equity (USDT) at the last reconciliation (for reports; the exchange stays the source).
    #[serde(default)]
    pub equity: Option<f64>,
    /// The account kill-switch on real equity (risk.md §2): day, reference equity, fired today.
    pub kill_switch: Option<KillSwitchSnapshot>,
    /// API errors inside the breaker window (epoch ms) and the end of a breaker pause.
    pub breaker_errors_ms: Vec<i64>,
    pub breaker_paused_until_ms: Option<i64>,
    /// Per symbol: the model's risk state after the last bar (for `state show` and the restart check).
    pub symbols: BTreeMap<String, SymbolState>,
    /// The last attempt number used per symbol (and per exit kind, `<symbol>-kill`, `-stop`, …)
    /// in the bar `last_bar_ts`: the `<n>` of `xs-<bar>-<symbol>-<n>`. Every create attempt takes
    /// the next number, and it is written here (atomically) before the request is sent, so a
    /// restart never sends an id twice.
    #[serde(default)]
    pub order_attempts: BTreeMap<String, u32>,
    /// Stop exits of the risk loop the exchange accepted during the bar `last_bar_ts` (client ids).
    #[serde(default)]
    pub stop_exits: Vec<String>,
    /// Rebalance orders sent during the bar `last_bar_ts` whose end (filled, cancelled by us or
    /// by the exchange) the runner has not seen yet; read every cycle.
    #[serde(default)]
    pub working: Vec<WorkingOrder>,
    /// Post-only orders the exchange cancelled per symbol in the bar `last_bar_ts` (re-prices).
    #[serde(default)]
    pub reprices: BTreeMap<String, u32>,
    /// When the current exit (target 0) of a symbol was first placed as a limit in this bar.
    #[serde(default)]
    pub exit_since_ms: BTreeMap<String, i64>,
    /// The model's meta-labeler after the last bar (`strategy.meta_label`; `None` when off), for
    /// the restart check: the rebuilt model must have the same coefficients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_label: Option<MetaSnapshot>,
    pub updated_ms: i64,
}

/// An order the runner sent and follows until it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkingOrder {
    pub client_order_id: String,
    pub symbol: String,
    pub qty: f64,
}

/// The model's view of one symbol after the last processed bar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolState {
    pub target_weight: f64,
    /// Stop level and side when a stop is open (`side` +1 long, −1 short).
    pub stop: Option<StopSnapshot>,
    /// The model may not hold the symbol (cooldown after a stop, scoring ban).
    pub blocked: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopSnapshot {
    pub side: f64,
    pub entry_price: f64,
    pub stop: f64,
    pub catastrophic: f64,
}

impl LiveState {
    pub fn new(config_version: &str, mode: &str) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            config_version: config_version.to_string(),
            mode: mode.to_string(),
            model_start_ts: None,
            last_bar_ts: None,
            equity: None,
            kill_switch: None,
            breaker_errors_ms: Vec::new(),
            breaker_paused_until_ms: None,
            symbols: BTreeMap::new(),
            order_attempts: BTreeMap::new(),
            stop_exits: Vec::new(),
            working: Vec::new(),
            reprices: BTreeMap::new(),
            exit_since_ms: BTreeMap::new(),
            meta_label: None,
            updated_ms: 0,
        }
    }

    /// The next attempt number for `key` in this bar (0 first), recorded; the caller saves the
    /// state before it sends the request.
    pub fn next_attempt(&mut self, key: &str) -> u32 {
        let next = self.order_attempts.get(key).map_or(0, |n| n + 1);
        self.order_attempts.insert(key.to_string(), next);
        next
    }

    /// A new bar: its ids, exits, re-prices and patience start afresh.
    pub fn start_bar(&mut self) {
        self.order_attempts.clear();
        self.stop_exits.clear();
        self.working.clear();
        self.reprices.clear();
        self.exit_since_ms.clear();
    }

    /// Load the state file; `Ok(None)` when it does not exist. A file that cannot be parsed or has
    /// another schema version is an error naming the file, never a silent reset.
    pub fn load(path: &Path) -> Result<Option<LiveState>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(Error::io(path.display(), err)),
        };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|err| {
            Error::format(format!(
                "{}: corrupt state file ({err}); fix or move it, or start with --reset-state",
                path.display()
            ))
        })?;
        let version = value.get("schema_version").and_then(|v| v.as_u64());
        if version != Some(SCHEMA_VERSION as u64) {
            return Err(Error::format(format!(
                "{}: state schema_version {} is not the supported {SCHEMA_VERSION}; start with --reset-state",
                path.display(),
                version.map_or("missing".to_string(), |v| v.to_string())
            )));
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|err| Error::format(format!("{}: corrupt state file ({err})", path.display())))
    }

    /// Write the state atomically (temp file, fsync, rename, fsync of the directory).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("state serialises");
        crate::fsutil::write_atomically(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_corrupt_or_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(LiveState::load(&path).unwrap(), None);
        let mut state = LiveState::new("abcd1234", "replay");
        state.last_bar_ts = Some(1_700_000_000_000);
        state.symbols.insert(
            "BTCUSDT".into(),
            SymbolState {
                target_weight: 0.05,
                stop: Some(StopSnapshot { side: 1.0, entry_price: 100.0, stop: 95.0, catastrophic: 90.0 }),
                blocked: false,
            },
        );
        state.save(&path).unwrap();
        assert_eq!(LiveState::load(&path).unwrap(), Some(state));

        std::fs::write(&path, "{\"schema_version\": 1, \"config_version\": ").unwrap();
        let err = LiveState::load(&path).unwrap_err().to_string();
        assert!(err.contains("state.json: corrupt state file"), "{err}");

        std::fs::write(&path, "{\"schema_version\": 7}").unwrap();
        let err = LiveState::load(&path).unwrap_err().to_string();
        assert!(err.contains("state schema_version 7 is not the supported 1"), "{err}");
    }
}
