//! `xsmom-live`: the production runner (live.md). The same engine, risk state machines and config
//! as the backtester, stepped once per closed bar; an [`exchange::Exchange`] to trade through.

pub mod bybit;
pub mod desk;
pub mod exchange;
pub mod fetch;
pub mod gate;
pub mod heartbeat;
pub mod notify;
pub mod output;
pub mod paper;
pub mod plan;
pub mod replay;
pub mod runner;
pub mod service;
pub mod sim;
pub mod state;
pub mod types;
