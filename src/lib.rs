//! xsmom: cross-sectional momentum research and backtesting for crypto perpetual futures.
//!
//! A plain Rust library — `data` (bar store, validation, panel), `config`, `signal` and `sizing`
//! (causal kernels), `universe`, `risk` (stop and kill-switch state machines), `backtest` (the
//! one-pass engine) and `metrics` — with a thin pyo3 layer (`python`, behind the `python` feature).

pub mod backtest;
pub mod config;
pub mod data;
pub mod error;
pub mod metrics;
pub mod risk;
pub mod signal;
pub mod sizing;
pub mod timeframe;
pub mod universe;

// pub mod run; and #[cfg(feature = "python")] mod python; are enabled when the data store lands.

pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use timeframe::Timeframe;
