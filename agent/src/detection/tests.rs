use super::*;
use crate::detection::policy_file::PolicyLoadError;

fn detection() -> Detection<Vec<u8>> {
    Detection::new(DetectionConfig::default(), None, Some(Vec::new()), false)
}

#[test]
fn loaded_policy_takes_over() {
    let mut d = detection();
    let (policy, _) = Policy::parse("version = 1\nname = \"new\"\n", "p.toml").unwrap();
    d.apply_reload(
        Reload::Loaded(Arc::new(policy), Vec::new()),
        Timestamp::from_secs(1),
        "127.0.0.1:0".parse().unwrap(),
    );
    assert_eq!(d.policy().and_then(|p| p.name.as_deref()), Some("new"));
    assert_eq!(d.counts().total, 0);
}

#[test]
fn rejected_policy_keeps_the_old_one_and_raises_an_alert_saying_why() {
    let mut d = detection();
    let error = Policy::parse("version = 9\n", "p.toml").unwrap_err();
    d.apply_reload(
        Reload::Rejected(PolicyLoadError::Invalid(error)),
        Timestamp::from_secs(1),
        "10.0.0.2:0".parse().unwrap(),
    );
    assert!(d.policy().is_none());
    assert_eq!(
        d.counts().by_rule.get("agent.policy_reload_failed"),
        Some(&1)
    );
    assert_eq!(
        d.finish_log().unwrap(),
        Some(1),
        "the alert is written like any other"
    );
}

/// A store that counts writes and flushes: what is durable is what was applied before the last
/// flush.
#[derive(Default)]
struct Journal {
    inner: otwatch_kv::memory::MemoryKv,
    applied: std::sync::atomic::AtomicU64,
    flushes: std::sync::atomic::AtomicU64,
    durable: std::sync::atomic::AtomicU64,
}

impl otwatch_kv::Kv for Journal {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, otwatch_kv::KvError> {
        self.inner.get(key)
    }

    fn apply(&self, batch: otwatch_kv::Batch) -> Result<(), otwatch_kv::KvError> {
        self.applied
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.apply(batch)
    }

    fn flush(&self) -> Result<(), otwatch_kv::KvError> {
        self.flushes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.durable.store(
            self.applied.load(std::sync::atomic::Ordering::SeqCst),
            std::sync::atomic::Ordering::SeqCst,
        );
        self.inner.flush()
    }

    fn range(
        &self,
        start: std::ops::Bound<&[u8]>,
        end: std::ops::Bound<&[u8]>,
        order: otwatch_kv::Order,
        limit: usize,
    ) -> Result<Vec<otwatch_kv::Entry>, otwatch_kv::KvError> {
        self.inner.range(start, end, order, limit)
    }

    fn size_on_disk(&self) -> Result<u64, otwatch_kv::KvError> {
        self.inner.size_on_disk()
    }
}

#[test]
fn an_alert_is_reported_only_once_one_flush_has_made_its_whole_batch_durable() {
    use std::sync::atomic::Ordering::SeqCst;
    let journal = Arc::new(Journal::default());
    let outbox = Arc::new(Outbox::open(journal.clone(), 1 << 20).unwrap());
    let mut d = detection().with_outbox(outbox.clone(), Arc::new(Status::new()));
    for n in 0..3 {
        d.apply_reload(
            Reload::Rejected(PolicyLoadError::Invalid(
                Policy::parse("version = 9\n", "p.toml").unwrap_err(),
            )),
            Timestamp::from_secs(1 + n),
            "10.0.0.2:0".parse().unwrap(),
        );
    }
    // Queued, not yet durable: nothing is reported anywhere.
    assert_eq!(outbox.depth(), 3);
    assert_eq!(d.counts().total, 0);
    assert!(journal.durable.load(SeqCst) < journal.applied.load(SeqCst));
    let flushes = journal.flushes.load(SeqCst);
    d.flush_log();
    // One flush for the batch, covering every alert of it; then they are reported.
    assert_eq!(journal.flushes.load(SeqCst), flushes + 1);
    assert_eq!(journal.durable.load(SeqCst), journal.applied.load(SeqCst));
    assert_eq!(d.counts().total, 3);
    assert_eq!(d.finish_log().unwrap(), Some(3));
}
