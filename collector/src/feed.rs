//! The live alert feed: every newly stored alert, to whoever listens (the SSE endpoint, the
//! exporters). Behind a small trait so several collectors can share a feed over a message bus
//! later; in one process it is a broadcast channel.

use std::ops::Deref;
use std::sync::Arc;

use otwatch_rules::alert::Alert;
use tokio::sync::broadcast;

/// A stored alert as the feed announces it: with its ingest sequence number
/// ([`crate::store::Store::ingest_sequenced`]), the live feed's event id, from which a
/// subscriber that lost its connection resumes.
#[derive(Debug, Clone, PartialEq)]
pub struct Announced {
    /// Its ingest sequence number.
    pub seq: u64,
    /// The alert.
    pub alert: Alert,
}

impl Deref for Announced {
    type Target = Alert;

    fn deref(&self) -> &Alert {
        &self.alert
    }
}

/// Where stored alerts are announced.
pub trait Feed: Send + Sync + 'static {
    /// Announces newly stored alerts with their sequence numbers, in order.
    fn publish(&self, alerts: &[(u64, Alert)]);
    /// A new listener, receiving every alert published from now on. A listener that falls
    /// more than the channel's capacity behind skips ahead (and is told how much it missed).
    fn subscribe(&self) -> broadcast::Receiver<Arc<Announced>>;
}

/// An in-process feed.
#[derive(Debug, Clone)]
pub struct BroadcastFeed {
    tx: broadcast::Sender<Arc<Announced>>,
}

impl BroadcastFeed {
    /// A feed buffering up to `capacity` alerts per slow listener.
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity.max(1)).0,
        }
    }
}

impl Feed for BroadcastFeed {
    fn publish(&self, alerts: &[(u64, Alert)]) {
        for (seq, alert) in alerts {
            // No listener is fine: the alert is already stored.
            let _ = self.tx.send(Arc::new(Announced {
                seq: *seq,
                alert: alert.clone(),
            }));
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Announced>> {
        self.tx.subscribe()
    }
}
