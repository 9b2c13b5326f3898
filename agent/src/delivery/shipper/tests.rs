use std::ops::Bound;
use std::sync::atomic::AtomicU64;
use std::sync::{OnceLock, Weak};

use otwatch_delivery::Failure;
use otwatch_kv::sled::{AGENT_CACHE_BYTES, SledKv};
use otwatch_kv::{Batch, Entry, Kv, KvError, Order};
use otwatch_rules::time::Timestamp;
use otwatch_rules::wire::{EvidenceRecord, IngestReply};

use super::*;

/// Sled, with a hook run inside one chosen flush: records written at that moment, as a
/// capture worker writes them while the shipper is between two peeks.
struct HookedKv {
    inner: SledKv,
    flushes: AtomicU64,
    at_flush: u64,
    outbox: OnceLock<Weak<Outbox>>,
    records: Mutex<Vec<Record>>,
}

impl Kv for HookedKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.inner.get(key)
    }

    fn apply(&self, batch: Batch) -> Result<(), KvError> {
        self.inner.apply(batch)
    }

    fn flush(&self) -> Result<(), KvError> {
        let n = self.flushes.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.at_flush {
            let records = std::mem::take(&mut *self.records.lock().unwrap());
            let outbox = self.outbox.get().and_then(Weak::upgrade).unwrap();
            outbox.push(&records).unwrap();
        }
        self.inner.flush()
    }

    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Entry>, KvError> {
        self.inner.range(start, end, order, limit)
    }

    fn size_on_disk(&self) -> Result<u64, KvError> {
        self.inner.size_on_disk()
    }
}

/// A collector that keeps the kinds of batches it is sent, in order.
struct Recorder(Arc<Mutex<Vec<&'static str>>>);

impl Sender for Recorder {
    fn collectors(&self) -> usize {
        1
    }

    fn ingest(&mut self, _collector: usize, batch: &IngestBatch) -> Result<IngestReply, Failure> {
        let kind = match (batch.alerts.is_empty(), batch.evidence.is_empty()) {
            (false, true) => "alerts",
            (true, false) => "evidence",
            _ => "mixed or other",
        };
        self.0.lock().unwrap().push(kind);
        Ok(IngestReply {
            accepted: batch.alerts.len(),
            duplicates: 0,
            assets: 0,
        })
    }

    fn heartbeat(
        &mut self,
        _collector: usize,
        _heartbeat: &Heartbeat,
    ) -> Result<HeartbeatReply, Failure> {
        Ok(HeartbeatReply::default())
    }

    fn policy(&mut self, _collector: usize, _agent: &str) -> Result<Option<String>, Failure> {
        Ok(None)
    }
}

#[test]
fn evidence_pushed_with_its_alert_during_a_pass_goes_after_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = "10.0.0.9:0".parse().unwrap();
    let alert = agent_alert(
        "hall-1",
        &rule::UMAS_STOP,
        Timestamp::from_secs(1_800_000_000),
        addr,
        "stop".into(),
    );
    let evidence = EvidenceRecord {
        alert: alert.id.clone(),
        pcap: "AAAA".into(),
    };
    // The shipper's first batch poll finds the alerts lane empty (flush 1); the alert and its
    // evidence are written during the next lane's look (flush 2); the evidence lane's look
    // (flush 3) then finds the evidence while the pass has already passed the alerts.
    let kv = Arc::new(HookedKv {
        inner: SledKv::open_with_cache(dir.path(), AGENT_CACHE_BYTES).unwrap(),
        flushes: AtomicU64::new(0),
        at_flush: 2,
        outbox: OnceLock::new(),
        records: Mutex::new(vec![Record::Alert(alert), Record::Evidence(evidence)]),
    });
    let outbox = Arc::new(Outbox::open(kv.clone(), 1 << 20).unwrap());
    kv.outbox.set(Arc::downgrade(&outbox)).unwrap();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let shipper = Shipper::spawn(
        outbox.clone(),
        Box::new(Recorder(sent.clone())),
        Arc::new(Status::new()),
        ShipperConfig::new("hall-1".into(), addr),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sent.lock().unwrap().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (waiting, _) = shipper.drain(Duration::from_secs(5));
    assert!(
        kv.records.lock().unwrap().is_empty(),
        "the records were written mid-pass"
    );
    assert_eq!(waiting, 0);
    assert_eq!(*sent.lock().unwrap(), ["alerts", "evidence"]);
}
