//! xsmom: cross-sectional momentum research and backtesting for crypto perpetual futures.
//!
//! A plain Rust library — `data` (bar store, validation, panel), `config`, `signal` and `sizing`
//! (causal kernels), `universe`, `risk` (stop and kill-switch state machines), `backtest` (the
//! one-pass engine) and `metrics` — with a thin pyo3 layer (`python`, behind the `python` feature).

pub mod backtest;
pub mod basis;
pub mod bitset;
pub mod carry;
pub mod config;
pub mod data;
pub mod error;
pub mod execution;
pub mod fsutil;
pub mod live;
pub mod meta_label;
pub mod metrics;
pub mod model;
pub mod regime;
pub mod research;
pub mod risk;
pub mod signal;
pub mod sizing;
pub mod threads;
pub mod timeframe;
pub mod universe;

#[cfg(feature = "python")]
mod python;
#[cfg(feature = "python")]
mod python_fetch;
pub mod run;

/// mimalloc as the global allocator (as polars does): backtests allocate and free panel-sized
/// matrices, which glibc returns to the OS and faults back in on every run.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use timeframe::Timeframe;
