//! What delivery has done so far, for the heartbeat, `/metrics` and the replay summary.

/// Delivery counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Delivered {
    /// Records the collector acknowledged.
    pub records: u64,
    /// Of which the collector already had (retried deliveries).
    pub duplicates: u64,
    /// Batches acknowledged.
    pub batches: u64,
    /// Attempts that failed (each is retried).
    pub failures: u64,
    /// Records the collector refused as malformed and that were set aside.
    pub rejected: u64,
    /// Heartbeats acknowledged.
    pub heartbeats: u64,
    /// Whether the last attempt reached the collector.
    pub connected: bool,
    /// The collector now delivered to: its index in the configured list (0, the first, is
    /// the preferred one).
    pub collector: usize,
}
