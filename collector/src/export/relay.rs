//! An exporter's loop: hold the exporter's lease, read stored alerts after its cursor in ingest
//! order, send them, move the cursor past what was sent; wait for more (woken by this replica's
//! ingest, or by the clock for alerts another replica stored).
//!
//! The cursor moves only past alerts sent (or, for UDP, refused for good), and only while the
//! lease is held: an exporter that crashes, or loses its lease, leaves the cursor where the
//! next one resumes, so alerts are sent again rather than skipped.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec};
use tokio::sync::broadcast;

use super::sink::{Outcome, Sink};
use crate::feed::Announced;
use crate::kv::Kv;
use crate::server::now;
use crate::store::{Store, StoreError};

/// How long to wait before trying a failed send again at first (doubled at each failure).
const RETRY_MIN: Duration = Duration::from_millis(500);

/// The longest wait between tries.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How often an exporter with nothing to send looks at the store without being woken.
const POLL: Duration = Duration::from_secs(1);

/// How an exporter runs, and what it reports.
#[derive(Debug, Clone)]
pub struct Exporting {
    /// This replica's name as a lease holder (unique per process).
    pub holder: String,
    /// How long a lease runs unless renewed (renewed every loop): how long a dead replica's
    /// exporter holds up another's.
    pub lease: Duration,
    /// Alerts read per page.
    pub page: usize,
    /// Alerts lost for good, by exporter and reason (`failed`: a datagram refused).
    pub lost: IntCounterVec,
    /// Sends that failed and will be tried again, by exporter.
    pub retries: IntCounterVec,
    /// Alerts stored and not yet exported, by exporter (on the replica exporting).
    pub behind: IntGaugeVec,
    /// 1 on the replica exporting, by exporter.
    pub leader: IntGaugeVec,
}

/// Runs `sink`'s exporter for ever.
pub async fn relay<K: Kv>(
    mut sink: Sink,
    store: Arc<Store<K>>,
    mut wake: broadcast::Receiver<Arc<Announced>>,
    how: Exporting,
) {
    let name = sink.name();
    let lease = format!("export:{name}");
    let leader = how.leader.with_label_values(&[name]);
    let mut backoff = RETRY_MIN;
    loop {
        let held = {
            let (lease, holder, ttl) = (lease.clone(), how.holder.clone(), how.lease);
            off(&store, move |s| s.lease(&lease, &holder, ttl, now())).await
        };
        match held {
            Ok(true) => {
                if leader.get() == 0 {
                    tracing::info!(exporter = name, "exporting from this replica");
                    leader.set(1);
                }
            }
            Ok(false) => {
                // Another replica exports: its figures are the ones that count.
                leader.set(0);
                how.behind.with_label_values(&[name]).set(0);
                tokio::time::sleep(how.lease / 3).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(exporter = name, error = %e, "export lease unavailable");
                leader.set(0);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
                continue;
            }
        }
        let step = step(&mut sink, &store, &lease, &how).await;
        match step {
            Ok(Step::Idle) => {
                backoff = RETRY_MIN;
                tokio::select! {
                    _ = wake.recv() => {}
                    () = tokio::time::sleep(POLL) => {}
                }
            }
            Ok(Step::Sent) => backoff = RETRY_MIN,
            Ok(Step::Retry) => {
                how.retries.with_label_values(&[name]).inc();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
            Ok(Step::LostLease) => {
                leader.set(0);
                how.behind.with_label_values(&[name]).set(0);
            }
            Err(e) => {
                tracing::warn!(exporter = name, error = %e, "export paused: the store failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

/// What one page came to.
enum Step {
    /// Nothing new to send.
    Idle,
    /// A page sent.
    Sent,
    /// A send failed: try again later from where it stopped.
    Retry,
    /// The lease went to another replica meanwhile.
    LostLease,
}

/// Sends the page after the cursor and moves the cursor past what was sent.
async fn step<K: Kv>(
    sink: &mut Sink,
    store: &Arc<Store<K>>,
    lease: &str,
    how: &Exporting,
) -> Result<Step, StoreError> {
    let name = sink.name();
    // The first run starts from now ([`Store::start_export_cursor`]).
    let cursor = off(store, move |s| s.start_export_cursor(name)).await?;
    let page = how.page;
    let (alerts, through) = off(store, move |s| s.alerts_since(cursor, page)).await?;
    let mut done = cursor;
    let mut retry = false;
    // A slow receiver must not keep a page past a third of the lease: the cursor moves and the
    // lease is renewed before the rest.
    let started = std::time::Instant::now();
    let mut cut = false;
    for (seq, alert) in &alerts {
        if started.elapsed() > how.lease / 3 {
            cut = true;
            break;
        }
        match sink.send(alert).await {
            Outcome::Sent => done = *seq,
            Outcome::Lost => {
                how.lost.with_label_values(&[name, "failed"]).inc();
                done = *seq;
            }
            Outcome::Retry => {
                retry = true;
                break;
            }
        }
    }
    if !retry && !cut {
        // Past alerts retention removed too.
        done = through;
    }
    if done > cursor {
        let (lease, holder) = (lease.to_string(), how.holder.clone());
        let held = off(store, move |s| {
            s.advance_export_cursor(name, &lease, &holder, done)
        })
        .await?;
        if !held {
            return Ok(Step::LostLease);
        }
    }
    let newest = off(store, |s| s.last_sequence()).await?;
    how.behind
        .with_label_values(&[name])
        .set(i64::try_from(newest.saturating_sub(done)).unwrap_or(i64::MAX));
    Ok(if retry {
        Step::Retry
    } else if through == cursor {
        Step::Idle
    } else {
        Step::Sent
    })
}

/// Runs a store call on the blocking pool.
async fn off<K: Kv, T: Send + 'static>(
    store: &Arc<Store<K>>,
    call: impl FnOnce(&Store<K>) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || call(&store))
        .await
        .map_err(|e| StoreError::Corrupt(format!("export task: {e}")))?
}
