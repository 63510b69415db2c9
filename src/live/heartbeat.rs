//! The heartbeat file (docs/operations.md "Logs, health, state"): the runner writes it after every
//! cycle, `xsmom-live health` reads it. One type for both sides, so that the fields the writer
//! puts in are the ones the reader looks for.
//!
//! JSON, one line: `{"last_bar_ts":…,"mode":…,"timeframe_ms":…,"ts_ms":…}` (the fields in this
//! order). `health` judges the file's age by its modification time, its limit by `timeframe_ms`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What the runner reports after each cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Open time (epoch ms UTC) of the last closed bar the model processed; `None` before the first.
    pub last_bar_ts: Option<i64>,
    /// The runner's mode (`live`, `paper`, `replay`).
    pub mode: String,
    /// The bar length of the model (ms): a heartbeat older than two bars is stale.
    pub timeframe_ms: i64,
    /// When it was written, on the runner's clock (the exchange's server time, epoch ms).
    pub ts_ms: i64,
}

impl Heartbeat {
    /// Write the heartbeat atomically ([`crate::fsutil::write_atomically`]).
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self).expect("heartbeat serialises");
        crate::fsutil::write_atomically(path, text.as_bytes())
    }

    /// Read a heartbeat; an unreadable or corrupt file is an error naming it.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|err| Error::io(path.display(), err))?;
        serde_json::from_str(&text)
            .map_err(|err| Error::format(format!("{}: corrupt heartbeat file ({err})", path.display())))
    }

    /// The age (seconds) past which `health` calls the runner stale without `--max-age-secs`: two bars.
    pub fn max_age_secs(&self) -> f64 {
        2.0 * (self.timeframe_ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_the_files_format_and_names_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("heartbeat.json");
        let beat = Heartbeat {
            last_bar_ts: Some(1_700_000_000_000),
            mode: "replay".into(),
            timeframe_ms: 3_600_000,
            ts_ms: 42,
        };
        beat.write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            r#"{"last_bar_ts":1700000000000,"mode":"replay","timeframe_ms":3600000,"ts_ms":42}"#
        );
        assert_eq!(Heartbeat::read(&path).unwrap(), beat);
        assert_eq!(beat.max_age_secs(), 7_200.0);

        let before_first_bar = Heartbeat { last_bar_ts: None, ..beat };
        before_first_bar.write(&path).unwrap();
        assert_eq!(Heartbeat::read(&path).unwrap(), before_first_bar);

        std::fs::write(&path, "{\"last_bar_ts\": 17").unwrap();
        let err = Heartbeat::read(&path).unwrap_err().to_string();
        assert!(err.contains("heartbeat.json: corrupt heartbeat file"), "{err}");
        std::fs::write(&path, "{\"ts_ms\": 1}").unwrap();
        let err = Heartbeat::read(&path).unwrap_err().to_string();
        assert!(err.contains("heartbeat.json: corrupt heartbeat file") && err.contains("mode"), "{err}");

        let missing = dir.path().join("none.json");
        assert!(Heartbeat::read(&missing).unwrap_err().to_string().contains("none.json"));
    }
}
