//! The live alert feed: every newly stored alert, to whoever listens (the SSE endpoint, the
//! exporters). Behind a small trait so several collectors can share a feed over a message bus
//! later; in one process it is a broadcast channel.

use std::sync::Arc;

use otwatch_rules::alert::Alert;
use tokio::sync::broadcast;

/// Where stored alerts are announced.
pub trait Feed: Send + Sync + 'static {
    /// Announces newly stored alerts, in order.
    fn publish(&self, alerts: &[Alert]);
    /// A new listener, receiving every alert published from now on. A listener that falls
    /// more than the channel's capacity behind skips ahead (and is told how much it missed).
    fn subscribe(&self) -> broadcast::Receiver<Arc<Alert>>;
}

/// An in-process feed.
#[derive(Debug, Clone)]
pub struct BroadcastFeed {
    tx: broadcast::Sender<Arc<Alert>>,
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
    fn publish(&self, alerts: &[Alert]) {
        for a in alerts {
            // No listener is fine: the alert is already stored.
            let _ = self.tx.send(Arc::new(a.clone()));
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Alert>> {
        self.tx.subscribe()
    }
}
