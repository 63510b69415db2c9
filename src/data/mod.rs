//! Bars and funding: the Parquet/CSV bar store, validation, resampling and the wide panel.

pub mod panel;

pub use panel::{Bars, Funding, FundingGrid, Panel};
