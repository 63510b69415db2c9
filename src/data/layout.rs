//! The directory layout of a bar store (interfaces.md "Files"), written once: every path the store
//! reads, writes or plans a fetch for is built here.
//!
//! ```text
//! <root>/bars/timeframe=<tf>/symbol=<SYM>/<year>.parquet              traded bars
//! <root>/bars/timeframe=<tf>/kind=<mark|index>/symbol=<SYM>/<year>.parquet
//! <root>/funding/symbol=<SYM>/<year>.parquet
//! ```

use std::path::{Path, PathBuf};

use super::store::BarKind;
use crate::timeframe::Timeframe;

/// The bar store rooted at a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLayout {
    root: PathBuf,
}

impl StoreLayout {
    /// The partition keys of the Hive directories (`key=value`).
    pub const TIMEFRAME_KEY: &'static str = "timeframe";
    pub const KIND_KEY: &'static str = "kind";
    pub const SYMBOL_KEY: &'static str = "symbol";
    /// The bar layout as error messages name it.
    pub const BARS_PATTERN: &'static str = "bars/timeframe=<tf>/symbol=<SYM>/<year>.parquet";

    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/bars`.
    pub fn bars(&self) -> PathBuf {
        self.root.join("bars")
    }

    /// `<root>/bars/timeframe=<tf>`: the traded bars of a timeframe.
    pub fn timeframe(&self, timeframe: Timeframe) -> PathBuf {
        self.bars().join(Self::timeframe_partition(timeframe))
    }

    /// The directory of the bars of `kind` (traded bars: the timeframe directory itself).
    pub fn bars_of_kind(&self, timeframe: Timeframe, kind: BarKind) -> PathBuf {
        Self::kind_dir(&self.timeframe(timeframe), kind)
    }

    /// The partition of one symbol's bars of `kind`.
    pub fn bar_symbol(&self, timeframe: Timeframe, kind: BarKind, symbol: &str) -> PathBuf {
        Self::symbol_dir(&self.bars_of_kind(timeframe, kind), symbol)
    }

    /// The file of one symbol's bars of `kind` in `year`.
    pub fn bar_file(&self, timeframe: Timeframe, kind: BarKind, symbol: &str, year: i32) -> PathBuf {
        Self::year_file(&self.bar_symbol(timeframe, kind, symbol), year)
    }

    /// `<root>/funding`.
    pub fn funding(&self) -> PathBuf {
        self.root.join("funding")
    }

    /// `<root>/funding/symbol=<SYM>`.
    pub fn funding_symbol(&self, symbol: &str) -> PathBuf {
        Self::symbol_dir(&self.funding(), symbol)
    }

    /// `<root>/funding/symbol=<SYM>/<year>.parquet`.
    pub fn funding_file(&self, symbol: &str, year: i32) -> PathBuf {
        Self::year_file(&self.funding_symbol(symbol), year)
    }

    /// `key=value`.
    pub fn partition(key: &str, value: &str) -> String {
        format!("{key}={value}")
    }

    /// The value of a `key=value` directory name, when it is one of `key`.
    pub fn partition_value<'a>(name: &'a str, key: &str) -> Option<&'a str> {
        name.strip_prefix(key)?.strip_prefix('=')
    }

    /// `timeframe=<tf>`.
    pub fn timeframe_partition(timeframe: Timeframe) -> String {
        Self::partition(Self::TIMEFRAME_KEY, &timeframe.label())
    }

    /// The directory of `kind` under a timeframe directory (traded bars are the directory itself,
    /// mark and index bars `kind=<kind>/`).
    pub fn kind_dir(timeframe_dir: &Path, kind: BarKind) -> PathBuf {
        match kind {
            BarKind::Trade => timeframe_dir.to_path_buf(),
            kind => timeframe_dir.join(Self::partition(Self::KIND_KEY, kind.label())),
        }
    }

    /// `<dir>/symbol=<SYM>`.
    pub fn symbol_dir(dir: &Path, symbol: &str) -> PathBuf {
        dir.join(Self::partition(Self::SYMBOL_KEY, symbol))
    }

    /// `<dir>/<year>.parquet`.
    pub fn year_file(dir: &Path, year: i32) -> PathBuf {
        dir.join(format!("{year}.parquet"))
    }

    /// The year of a `<year>.parquet` file name, when it is one.
    pub fn year_of_file(path: &Path) -> Option<i32> {
        path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_the_store() {
        let layout = StoreLayout::new("/s");
        let h1 = Timeframe::parse("1h").unwrap();
        assert_eq!(layout.timeframe(h1), Path::new("/s/bars/timeframe=1h"));
        assert_eq!(layout.bars_of_kind(h1, BarKind::Trade), Path::new("/s/bars/timeframe=1h"));
        assert_eq!(
            layout.bar_file(h1, BarKind::Mark, "BTCUSDT", 2025),
            Path::new("/s/bars/timeframe=1h/kind=mark/symbol=BTCUSDT/2025.parquet")
        );
        assert_eq!(
            layout.bar_symbol(h1, BarKind::Index, "ETHUSDT"),
            Path::new("/s/bars/timeframe=1h/kind=index/symbol=ETHUSDT")
        );
        assert_eq!(layout.funding_file("BTCUSDT", 2024), Path::new("/s/funding/symbol=BTCUSDT/2024.parquet"));
        assert_eq!(StoreLayout::partition_value("symbol=BTCUSDT", "symbol"), Some("BTCUSDT"));
        assert_eq!(StoreLayout::partition_value("symbols=X", "symbol"), None);
        assert_eq!(StoreLayout::year_of_file(Path::new("/s/funding/symbol=X/2024.parquet")), Some(2024));
        assert_eq!(StoreLayout::year_of_file(Path::new("notes.parquet")), None);
    }
}
