//! The otwatch collector: ingest, storage, posture, the alert feed and the dashboard.
//!
//! The storage layer ([`kv`]) is always built: the agent's outbox uses it too. Everything else
//! needs the `server` feature (on by default).

#[cfg(feature = "server")]
pub mod audit;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod export;
#[cfg(feature = "server")]
pub mod feed;
#[cfg(all(test, feature = "server"))]
mod fixtures;
pub mod kv;
#[cfg(feature = "server")]
pub mod listener;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod pki;
#[cfg(feature = "server")]
pub mod posture;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod store;
