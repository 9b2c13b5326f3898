//! The otwatch collector: ingest, storage, posture, the alert feed and the dashboard.
//!
//! The storage layer ([`kv`]) is always built: the agent's outbox uses it too. Everything else
//! needs the `server` feature (on by default).

pub mod kv;
#[cfg(feature = "server")]
pub mod store;
