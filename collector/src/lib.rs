//! The otwatch collector: ingest, storage, posture and the alert feed.
//!
//! Only the command skeleton exists so far; the collector is built in the "Collector and
//! durable delivery" issue.
