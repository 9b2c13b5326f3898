//! Getting alerts and asset observations to the collector: the outbox (sled) and the shipper,
//! set up from the agent's settings and torn down with a report of what was delivered.

pub mod outbox;
pub mod policy_follow;
pub mod sender;
pub mod shipper;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use otwatch_kv::sled::{AGENT_CACHE_BYTES, SledKv};
use serde::Serialize;

use crate::delivery::outbox::{Outbox, OutboxError};
use crate::delivery::policy_follow::PolicyFollower;
use crate::delivery::sender::{HttpsSender, Sender, SenderSetupError};
use crate::delivery::shipper::{Shipper, ShipperConfig};
use crate::detection::evidence::EvidenceOptions;
use crate::detection::learn_requests::LearnRequests;
use crate::telemetry::events::{InternalEvent, OutboxFailed};
use crate::telemetry::status::Status;
use otwatch_delivery::Delivered;

/// Where and how to deliver. Its `Debug` leaves the token out.
#[derive(Clone)]
pub struct DeliveryOptions {
    /// The collectors, `https://host:port`, the first preferred.
    pub urls: Vec<String>,
    /// How long after leaving the preferred collector it is tried again.
    pub return_after: Duration,
    /// The agent's bearer token.
    pub token: String,
    /// The collector's certificate authority (`ca.pem`); the public roots when absent.
    pub ca: Option<PathBuf>,
    /// The outbox's folder.
    pub outbox: PathBuf,
    /// Most bytes of records the outbox holds.
    pub outbox_budget: u64,
    /// Time between heartbeats.
    pub heartbeat_every: Duration,
    /// How long a replay waits at the end for the outbox to empty.
    pub drain_timeout: Duration,
    /// Which alerts send their packets, and the frames kept for them; none when off.
    pub evidence: Option<EvidenceOptions>,
}

impl std::fmt::Debug for DeliveryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryOptions")
            .field("urls", &self.urls)
            .field("token", &"<redacted>")
            .field("ca", &self.ca)
            .field("outbox", &self.outbox)
            .field("outbox_budget", &self.outbox_budget)
            .field("heartbeat_every", &self.heartbeat_every)
            .field("drain_timeout", &self.drain_timeout)
            .field("evidence", &self.evidence)
            .finish()
    }
}

/// Why delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The collector settings are unusable.
    #[error(transparent)]
    Sender(#[from] SenderSetupError),
    /// The outbox could not be opened.
    #[error("outbox: {path}: {source}")]
    Outbox {
        /// Its folder.
        path: PathBuf,
        /// Why.
        source: OutboxError,
    },
    /// The shipper thread could not start.
    #[error("cannot start the shipper: {0}")]
    Thread(#[from] std::io::Error),
}

/// What delivery came to.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryReport {
    /// Delivery counters.
    pub delivered: Delivered,
    /// Records still in the outbox (delivered by the next run).
    pub waiting: u64,
    /// Records the outbox dropped for lack of room, ever.
    pub outbox_dropped: u64,
}

/// A running outbox and shipper.
#[derive(Debug)]
pub struct Delivery {
    outbox: Arc<Outbox>,
    /// The collectors' addresses, by index (the first preferred).
    collectors: Vec<String>,
    shipper: Shipper,
    drain_timeout: Duration,
    status: Arc<Status>,
}

impl Delivery {
    /// Opens the outbox and starts shipping; with a `follower`, the shipper also fetches the
    /// policy the collector assigns, and with `learn`, it posts the collector's learn requests
    /// there.
    pub fn start(
        options: &DeliveryOptions,
        agent: &str,
        agent_addr: SocketAddr,
        status: Arc<Status>,
        follower: Option<PolicyFollower>,
        learn: Option<Arc<LearnRequests>>,
    ) -> Result<Self, DeliveryError> {
        let sender = HttpsSender::new(&options.urls, &options.token, options.ca.as_deref())?;
        let collectors = (0..sender.collectors()).map(|i| sender.name(i)).collect();
        let outbox_error = |source| DeliveryError::Outbox {
            path: options.outbox.clone(),
            source,
        };
        let kv = SledKv::open_with_cache(&options.outbox, AGENT_CACHE_BYTES)
            .map_err(|e| outbox_error(e.into()))?;
        let outbox =
            Arc::new(Outbox::open(Arc::new(kv), options.outbox_budget).map_err(outbox_error)?);
        let mut config = ShipperConfig::new(agent.to_string(), agent_addr);
        config.heartbeat_every = options.heartbeat_every;
        config.return_after = options.return_after;
        config.follower = follower;
        config.learn = learn;
        let shipper = Shipper::spawn(outbox.clone(), Box::new(sender), status.clone(), config)?;
        tracing::info!(
            "delivering to {} (outbox {}, {} records waiting)",
            options.urls.join(", then "),
            options.outbox.display(),
            outbox.depth()
        );
        Ok(Self {
            outbox,
            collectors,
            shipper,
            drain_timeout: options.drain_timeout,
            status,
        })
    }

    /// The outbox, for whoever produces records.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The collectors' addresses, by index (the first preferred).
    pub fn collectors(&self) -> &[String] {
        &self.collectors
    }

    /// A function reading the delivery counters, for `/metrics`.
    pub fn delivered_handle(&self) -> impl Fn() -> Delivered + Send + Sync + 'static {
        self.shipper.delivered_handle()
    }

    /// Waits (up to the drain timeout) for the outbox to empty, stops shipping, and reports.
    pub fn finish(self) -> DeliveryReport {
        if let Err(e) = self.outbox.flush() {
            OutboxFailed { error: &e }.emit(&self.status);
        }
        let (waiting, delivered) = self.shipper.drain(self.drain_timeout);
        DeliveryReport {
            delivered,
            waiting,
            outbox_dropped: self.outbox.dropped_total(),
        }
    }
}
