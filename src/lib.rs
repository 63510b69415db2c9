//! xsmom: cross-sectional momentum research and backtesting for crypto perpetual futures.
//!
//! A plain Rust library — `data` (bar store, validation, panel), `config`, `signal` and `sizing`
//! (causal kernels), `universe`, `risk` (stop and kill-switch state machines), `backtest` (the
//! one-pass engine) and `metrics` — with a thin pyo3 layer (`python`, behind the `python` feature).
//!
//! # Layers
//!
//! The top-level modules from the top of the dependency graph to its bottom, one layer per item.
//! A module uses only modules of the layers below its own, never one of its own layer or above, so
//! there are no import cycles (`tests/layering.rs` checks this list against the `crate::` paths of
//! every file under `src/`).
//!
//! 1. `bin`, `python` — entry points: the `xsmom-live` binary (`src/bin`) and the pyo3 layer
//!    (`src/python/`: `mod.rs` with its children `fetch.rs` and `research.rs`): conversion only.
//! 2. `live`, `research` — the live runner (exchanges, state, the store fetcher); research
//!    windows, Monte Carlo, PSR/DSR/PBO.
//! 3. `run` — prepared inputs, one backtest, sweeps.
//! 4. `backtest` — the engine: the per-bar step, ledger, output, diagnose.
//! 5. `risk`, `execution`, `meta_label`, `carry`, `regime`, `sizing`, `universe`, `metrics` — the
//!    engine's state machines and rules, and the metrics of an equity path.
//! 6. `config` — the run configuration.
//! 7. `data` — the bar store, Arrow/Parquet IO, validation, resampling, the panel, fetch planning.
//! 8. `signal`, `timeframe`, `fsutil`, `threads`, `basis`, `logistic` — causal kernels, the
//!    meta-labeler's logistic regression, and utilities.
//! 9. `bitset`, `error` — foundations.
//! 10. `model` — the shared domain types: bar row, fill, round trip, side, regime, order ids.

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
pub mod logistic;
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
pub mod run;

/// mimalloc as the global allocator (as polars does): backtests allocate and free panel-sized
/// matrices, which glibc returns to the OS and faults back in on every run.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use timeframe::Timeframe;
