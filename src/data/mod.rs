//! Bars and funding: the Parquet/CSV bar store, validation, resampling and the wide panel.

pub mod arrow_io;
pub mod panel;
pub mod resample;
pub mod store;
pub mod validate;

use std::path::Path;

pub use arrow_io::{bars_from_batches, bars_to_batch, funding_from_batches, funding_to_batch};
pub use panel::{Bars, Funding, FundingGrid, Panel};
pub use resample::resample;
pub use store::{
    read_bars, read_funding, store_timeframes, write_funding_store, write_store, ReadStats, Selection, WriteStats,
};
pub use validate::{clean_bars, findings_to_batch, validate_bars, Finding, Severity};

use crate::error::{Error, Result};

/// Read, validate and pivot: the panel of a selection, with the validation findings.
pub fn load_panel(path: &Path, selection: &Selection, drop_invalid: bool) -> Result<(Panel, Vec<Finding>)> {
    let (bars, _) = read_bars(path, selection)?;
    if bars.is_empty() {
        return Err(Error::invalid(format!(
            "no bars in {} for the selection (symbols {}, start {}, end {}, timeframe {})",
            path.display(),
            selection.symbols.as_ref().map_or("all".to_string(), |s| s.join(",")),
            selection.start.map_or("-".to_string(), |s| s.to_string()),
            selection.end.map_or("-".to_string(), |s| s.to_string()),
            selection.timeframe.label()
        )));
    }
    let (bars, findings) = clean_bars(&bars, selection.timeframe, drop_invalid)?;
    Ok((Panel::from_bars(&bars, selection.timeframe)?, findings))
}
