//! Bar timeframes ("5m", "1h", "1d") and the calendar constants derived from them.
//! Nothing else in the crate may assume hourly bars.

use crate::error::{Error, Result};

pub const MS_PER_DAY: i64 = 86_400_000;
pub const MS_PER_YEAR: i64 = 365 * MS_PER_DAY;

/// A bar length in milliseconds, parsed from strings such as `"1m"`, `"5m"`, `"1h"`, `"4h"`, `"1d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timeframe {
    pub ms: i64,
}

impl Timeframe {
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let bad = || {
            Error::config(format!(
                "timeframe '{text}' is not valid: expected <n><unit> with unit s, m, h or d (e.g. 5m, 1h, 1d) dividing a day"
            ))
        };
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = text.split_at(split);
        let n: i64 = number.parse().map_err(|_| bad())?;
        let unit_ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => MS_PER_DAY,
            _ => return Err(bad()),
        };
        let ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
        if ms <= 0 || MS_PER_DAY % ms != 0 && ms % MS_PER_DAY != 0 {
            return Err(bad());
        }
        Ok(Self { ms })
    }

    pub fn from_ms(ms: i64) -> Self {
        Self { ms }
    }

    /// Bars in one UTC day (at least 1 for timeframes of a day or longer).
    pub fn bars_per_day(&self) -> usize {
        ((MS_PER_DAY / self.ms).max(1)) as usize
    }

    /// Bars in a 365-day year: 8760 for 1h, 105 120 for 5m.
    pub fn bars_per_year(&self) -> f64 {
        MS_PER_YEAR as f64 / self.ms as f64
    }

    /// Canonical text form ("1h", "5m", "1d").
    pub fn label(&self) -> String {
        let ms = self.ms;
        if ms % MS_PER_DAY == 0 {
            format!("{}d", ms / MS_PER_DAY)
        } else if ms % 3_600_000 == 0 {
            format!("{}h", ms / 3_600_000)
        } else if ms % 60_000 == 0 {
            format!("{}m", ms / 60_000)
        } else {
            format!("{}s", ms / 1_000)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_timeframes() {
        assert_eq!(Timeframe::parse("1h").unwrap().ms, 3_600_000);
        assert_eq!(Timeframe::parse("5m").unwrap().bars_per_year(), 105_120.0);
        assert_eq!(Timeframe::parse("1h").unwrap().bars_per_day(), 24);
        assert_eq!(Timeframe::parse("5m").unwrap().bars_per_day(), 288);
        assert_eq!(Timeframe::parse("4h").unwrap().label(), "4h");
        assert!(Timeframe::parse("7m").is_err());
        assert!(Timeframe::parse("1x").is_err());
        assert!(Timeframe::parse("h").is_err());
    }
}

/// `epoch_ms` as `YYYY-MM-DD HH:MM UTC` (civil date from days, Howard Hinnant's algorithm), for
/// messages a person reads.
pub fn utc_label(epoch_ms: i64) -> String {
    let days = epoch_ms.div_euclid(86_400_000);
    let minutes = epoch_ms.rem_euclid(86_400_000) / 60_000;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod utc_tests {
    use super::utc_label;

    #[test]
    fn utc_labels_of_known_instants() {
        assert_eq!(utc_label(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_label(1_748_736_000_000), "2025-06-01 00:00 UTC");
        assert_eq!(utc_label(1_709_164_800_000 + 13 * 3_600_000 + 5 * 60_000), "2024-02-29 13:05 UTC");
        assert_eq!(utc_label(-86_400_000), "1969-12-31 00:00 UTC");
    }
}
