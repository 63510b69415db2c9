//! Bars and funding: the Parquet/CSV bar store (its layout, incremental fetch planning),
//! validation, resampling and the wide panel.

pub mod arrow_io;
pub mod fetch;
pub mod layout;
pub mod mark;
pub mod panel;
pub mod resample;
pub mod store;
pub mod validate;

pub use arrow_io::{bars_from_batches, bars_to_batch, funding_from_batches, funding_to_batch, ArrowBars};
pub use layout::StoreLayout;
pub use mark::{clean_bars_of_kind, validate_bars_of_kind};
pub(crate) use panel::canonical_span;
pub use panel::{
    quote_volume, Bars, BarsView, Funding, FundingGrid, Panel, PanelGrid, PivotStream, StreamPace, TileBuffer,
};
pub use resample::resample;
pub use store::{
    compact_store, read_bars, read_bars_of_kind, read_funding, store_timeframes, write_funding_store, write_store,
    write_store_of_kind, BarKind, ReadStats, Selection, WriteStats,
};
pub use validate::{
    clean_bars, error_free_panel, findings_to_batch, validate_bars, validate_canonical, CanonicalValidation, Detail,
    Finding, Severity, SpikeRule,
};
