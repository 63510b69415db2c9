//! xsmom: cross-sectional momentum research and backtesting for crypto perpetual futures.
//!
//! A plain Rust library (`data`, `config`, `signal`, `sizing`, `backtest`, `metrics`) with a thin
//! pyo3 layer (`python`, behind the `python` feature) and the `xsmom-live` binary on top.

pub mod config;
pub mod data;
pub mod error;
pub mod timeframe;

pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use timeframe::Timeframe;
