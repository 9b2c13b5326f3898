//! The otwatch collector: ingest, storage, posture, the alert feed and the dashboard.
//!
//! The storage engine ([`kv`]) is a crate of its own, `otwatch-kv` (`collector/kv/`), which the
//! agent's outbox uses too: the agent never links the collector.

pub mod attack;
pub mod audit;
pub mod auth;
pub mod config;
pub mod engine;
pub mod export;
pub mod feed;
#[cfg(test)]
mod fixtures;
pub use otwatch_kv as kv;
pub mod listener;
pub mod metrics;
pub mod owner;
pub mod pki;
pub mod posture;
pub mod server;
pub mod store;
