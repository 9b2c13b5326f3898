use std::net::SocketAddr;
use std::path::Path;

use std::sync::atomic::{AtomicBool, Ordering};

use otwatch_kv::memory::MemoryKv;
use otwatch_kv::sled::{AGENT_CACHE_BYTES, SledKv};
use otwatch_rules::alert::rule;
use otwatch_rules::detect::agent_alert;
use otwatch_rules::time::Timestamp;

use super::*;

fn alert(n: u64) -> Record {
    let addr: SocketAddr = "10.0.0.1:0".parse().unwrap();
    Record::Alert(agent_alert(
        "a1",
        &rule::POLICY_RELOAD_FAILED,
        Timestamp::from_secs(n),
        addr,
        format!("number {n}"),
    ))
}

fn size(record: &Record) -> u64 {
    serde_json::to_vec(record).unwrap().len() as u64
}

fn sled(dir: &Path, budget: u64) -> Outbox {
    let kv = SledKv::open_with_cache(dir, AGENT_CACHE_BYTES).unwrap();
    Outbox::open(Arc::new(kv), budget).unwrap()
}

fn messages(peeked: &Peeked) -> Vec<String> {
    peeked
        .records
        .iter()
        .map(|r| match r {
            Record::Alert(a) => a.message.clone().unwrap(),
            Record::Asset(a) => a.ip.to_string(),
            Record::Conversation(c) => format!("{} -> {}", c.master, c.slave),
            Record::Evidence(e) => format!("evidence of {}", e.alert),
            Record::Learned(l) => format!("learned for {}", l.request),
        })
        .collect()
}

#[test]
fn records_survive_reopening_in_the_order_they_were_pushed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let outbox = sled(dir.path(), 1 << 20);
        outbox.push(&[alert(1), alert(2)]).unwrap();
        outbox.push(&[alert(3)]).unwrap();
        outbox.flush().unwrap();
    }
    let outbox = sled(dir.path(), 1 << 20);
    assert_eq!(outbox.depth(), 3);
    let peeked = outbox.peek(Lane::Alerts, 10, u64::MAX).unwrap();
    assert_eq!(messages(&peeked), ["number 1", "number 2", "number 3"]);
    outbox.push(&[alert(4)]).unwrap();
    let all = outbox.peek(Lane::Alerts, 10, u64::MAX).unwrap();
    assert_eq!(messages(&all).last().map(String::as_str), Some("number 4"));
}

#[test]
fn acknowledged_records_are_gone_for_good_and_the_rest_stay() {
    let dir = tempfile::tempdir().unwrap();
    {
        let outbox = sled(dir.path(), 1 << 20);
        outbox.push(&[alert(1), alert(2), alert(3)]).unwrap();
        let first_two = outbox.peek(Lane::Alerts, 2, u64::MAX).unwrap();
        assert_eq!(first_two.records.len(), 2);
        outbox
            .ack_through(Lane::Alerts, first_two.through.unwrap())
            .unwrap();
        assert_eq!(outbox.depth(), 1);
    }
    let outbox = sled(dir.path(), 1 << 20);
    assert_eq!(
        messages(&outbox.peek(Lane::Alerts, 10, u64::MAX).unwrap()),
        ["number 3"]
    );
    assert_eq!(outbox.bytes(), size(&alert(3)));
}

#[test]
fn peek_stops_at_the_byte_limit_but_always_returns_one() {
    let outbox = Outbox::open(Arc::new(MemoryKv::new()), 1 << 20).unwrap();
    outbox.push(&[alert(1), alert(2), alert(3)]).unwrap();
    let one = size(&alert(1));
    assert_eq!(outbox.peek(Lane::Alerts, 10, 1).unwrap().records.len(), 1);
    assert_eq!(
        outbox
            .peek(Lane::Alerts, 10, 2 * one)
            .unwrap()
            .records
            .len(),
        2
    );
    assert_eq!(
        outbox
            .peek(Lane::Alerts, 10, u64::MAX)
            .unwrap()
            .records
            .len(),
        3
    );
}

#[test]
fn when_full_the_oldest_go_first_and_every_drop_is_counted_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let one = size(&alert(10));
    {
        let outbox = sled(dir.path(), 3 * one);
        for n in 10..15 {
            outbox.push(&[alert(n)]).unwrap();
        }
        assert_eq!(outbox.depth(), 3);
        assert!(outbox.bytes() <= 3 * one);
        assert_eq!((outbox.dropped_total(), outbox.unreported()), (2, 2));
        outbox.flush().unwrap();
    }
    let outbox = sled(dir.path(), 3 * one);
    assert_eq!(
        messages(&outbox.peek(Lane::Alerts, 10, u64::MAX).unwrap()),
        ["number 12", "number 13", "number 14"]
    );
    assert_eq!((outbox.dropped_total(), outbox.unreported()), (2, 2));
}

#[test]
fn one_push_larger_than_the_budget_keeps_only_its_newest_records() {
    let outbox = Outbox::open(Arc::new(MemoryKv::new()), 2 * size(&alert(10))).unwrap();
    let pushed = outbox
        .push(&[alert(10), alert(11), alert(12), alert(13)])
        .unwrap();
    assert_eq!(
        pushed,
        Pushed {
            stored: 2,
            dropped: 2
        }
    );
    assert_eq!(
        messages(&outbox.peek(Lane::Alerts, 10, u64::MAX).unwrap()),
        ["number 12", "number 13"]
    );
}

#[test]
fn a_record_larger_than_the_whole_budget_is_dropped_alone() {
    let outbox = Outbox::open(Arc::new(MemoryKv::new()), 10).unwrap();
    let pushed = outbox.push(&[alert(1)]).unwrap();
    assert_eq!(
        pushed,
        Pushed {
            stored: 0,
            dropped: 1
        }
    );
    assert_eq!(outbox.depth(), 0);
}

#[test]
fn reporting_drops_queues_the_alert_and_clears_the_count_together() {
    let dir = tempfile::tempdir().unwrap();
    let one = size(&alert(10));
    {
        let outbox = sled(dir.path(), 2 * one + 400);
        for n in 10..14 {
            outbox.push(&[alert(n)]).unwrap();
        }
        let unreported = outbox.unreported();
        assert_eq!(unreported, 2);
        let Record::Alert(report) = alert(99) else {
            unreachable!()
        };
        outbox.report_drops(report, unreported).unwrap();
        outbox.flush().unwrap();
    }
    let outbox = sled(dir.path(), 2 * one + 400);
    assert_eq!(outbox.unreported(), 0);
    assert_eq!(outbox.dropped_total(), 2);
    let queued = messages(&outbox.peek(Lane::Alerts, 10, u64::MAX).unwrap());
    assert_eq!(queued.last().map(String::as_str), Some("number 99"));
}

#[test]
fn a_record_this_build_cannot_read_is_skipped_and_acknowledged_with_its_batch() {
    let kv = Arc::new(MemoryKv::new());
    let outbox = Outbox::open(kv.clone(), 1 << 20).unwrap();
    outbox.push(&[alert(1)]).unwrap();
    let mut b = Batch::new();
    b.put(
        key(Lane::Alerts, 1).to_vec(),
        b"{\"kind\":\"future\"}".to_vec(),
    );
    kv.apply(b).unwrap();
    let outbox = Outbox::open(kv, 1 << 20).unwrap();
    outbox.push(&[alert(3)]).unwrap();
    let peeked = outbox.peek(Lane::Alerts, 10, u64::MAX).unwrap();
    assert_eq!(messages(&peeked), ["number 1", "number 3"]);
    assert_eq!(peeked.unreadable, 1);
    outbox
        .ack_through(Lane::Alerts, peeked.through.unwrap())
        .unwrap();
    assert_eq!(outbox.depth(), 0);
}

/// A store whose writes fail while `failing` is set: a full or broken disk.
struct FailingDisk {
    kv: MemoryKv,
    failing: AtomicBool,
}

impl Kv for FailingDisk {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.kv.get(key)
    }

    fn apply(&self, batch: Batch) -> Result<(), KvError> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(KvError::Engine("No space left on device".into()));
        }
        self.kv.apply(batch)
    }

    fn flush(&self) -> Result<(), KvError> {
        self.kv.flush()
    }

    fn range(
        &self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
        self.kv.range(from, to, order, limit)
    }

    fn size_on_disk(&self) -> Result<u64, KvError> {
        self.kv.size_on_disk()
    }
}

#[test]
fn records_a_failing_disk_could_not_take_are_counted_as_drops_and_the_rest_stay() {
    let disk = Arc::new(FailingDisk {
        kv: MemoryKv::new(),
        failing: AtomicBool::new(false),
    });
    let outbox = Outbox::open(disk.clone(), 1 << 20).unwrap();
    outbox.push(&[alert(1), alert(2)]).unwrap();
    disk.failing.store(true, Ordering::Relaxed);
    assert!(outbox.push(&[alert(3), alert(4), alert(5)]).is_err());
    assert_eq!((outbox.dropped_total(), outbox.unreported()), (3, 3));
    assert_eq!(outbox.depth(), 2);
    disk.failing.store(false, Ordering::Relaxed);
    outbox.push(&[alert(6)]).unwrap();
    assert_eq!(
        messages(&outbox.peek(Lane::Alerts, 10, u64::MAX).unwrap()),
        ["number 1", "number 2", "number 6"]
    );
}

fn asset(n: u8) -> Record {
    Record::Asset(AssetObservation::new(
        std::net::IpAddr::from([10, 0, 1, n]),
        Timestamp::from_secs(u64::from(n)),
    ))
}

#[test]
fn each_lane_is_its_own_queue_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let outbox = sled(dir.path(), 1 << 20);
        outbox
            .push(&[asset(1), alert(1), asset(2), alert(2)])
            .unwrap();
        outbox.flush().unwrap();
    }
    let outbox = sled(dir.path(), 1 << 20);
    assert_eq!(outbox.depth(), 4);
    assert_eq!(outbox.depth_of(Lane::Observations), 2);
    let alerts = outbox.peek(Lane::Alerts, 10, u64::MAX).unwrap();
    assert_eq!(messages(&alerts), ["number 1", "number 2"]);
    let observations = outbox.peek(Lane::Observations, 10, u64::MAX).unwrap();
    assert_eq!(messages(&observations), ["10.0.1.1", "10.0.1.2"]);
    outbox
        .ack_through(Lane::Observations, observations.through.unwrap())
        .unwrap();
    assert_eq!(outbox.depth_of(Lane::Observations), 0);
    assert_eq!(
        outbox.depth_of(Lane::Alerts),
        2,
        "the other lane is untouched"
    );
}

#[test]
fn when_full_a_new_alert_pushes_out_observations_before_any_alert() {
    let one = size(&alert(1));
    let outbox = Outbox::open(Arc::new(MemoryKv::new()), 8 * one).unwrap();
    outbox.push(&[asset(1), asset(2)]).unwrap();
    outbox
        .push(&(1..=6).map(alert).collect::<Vec<_>>())
        .unwrap();
    assert!(outbox.bytes() <= 8 * one);
    let pushed = outbox.push(&[alert(7), alert(8)]).unwrap();
    assert!(pushed.dropped >= 1);
    assert_eq!(
        messages(&outbox.peek(Lane::Alerts, 100, u64::MAX).unwrap()),
        (1..=8).map(|n| format!("number {n}")).collect::<Vec<_>>(),
        "every alert kept"
    );
    assert!(outbox.depth_of(Lane::Observations) < 2);
    assert!(outbox.bytes() <= 8 * one);
    assert_eq!(outbox.dropped_total(), pushed.dropped);
}

#[test]
fn observations_keep_within_their_share_dropping_only_their_own_oldest() {
    let budget = 4000;
    let outbox = Outbox::open(Arc::new(MemoryKv::new()), budget).unwrap();
    outbox.push(&[alert(1)]).unwrap();
    let observations: Vec<Record> = (1..=100).map(asset).collect();
    let pushed = outbox.push(&observations).unwrap();
    assert!(pushed.dropped > 0);
    let held = outbox.peek(Lane::Observations, 1000, u64::MAX).unwrap();
    let bytes: u64 = held.records.iter().map(size).sum();
    assert!(bytes <= Lane::Observations.budget(budget), "{bytes}");
    assert_eq!(
        messages(&held).last().map(String::as_str),
        Some("10.0.1.100"),
        "the newest kept"
    );
    assert_eq!(outbox.depth_of(Lane::Alerts), 1, "the alert stays");
    assert_eq!(outbox.unreported(), pushed.dropped);
}

#[test]
fn an_observation_that_cannot_fit_beside_the_alerts_leaves_the_older_observations_alone() {
    let one = size(&alert(1));
    let observation = size(&asset(1));
    let outbox = Outbox::open(Arc::new(MemoryKv::new()), 4 * one + observation).unwrap();
    outbox.push(&[asset(1)]).unwrap();
    outbox
        .push(&(1..=4).map(alert).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(outbox.depth(), 5, "all fit");
    // A larger one would need room the alerts hold: it alone is dropped.
    let Record::Asset(mut larger) = asset(2) else {
        unreachable!()
    };
    larger.vendor = Some("Schneider Electric".into());
    let pushed = outbox.push(&[Record::Asset(larger)]).unwrap();
    assert_eq!((pushed.stored, pushed.dropped), (0, 1));
    assert_eq!(
        messages(&outbox.peek(Lane::Observations, 10, u64::MAX).unwrap()),
        ["10.0.1.1"]
    );
}

#[test]
fn an_observation_never_pushes_out_an_alert() {
    let one = size(&alert(1));
    let outbox = Outbox::open(Arc::new(MemoryKv::new()), 4 * one).unwrap();
    outbox
        .push(&(1..=4).map(alert).collect::<Vec<_>>())
        .unwrap();
    let pushed = outbox.push(&[asset(1)]).unwrap();
    assert_eq!((pushed.stored, pushed.dropped), (0, 1));
    assert_eq!(outbox.depth_of(Lane::Alerts), 4);
    assert_eq!(outbox.depth_of(Lane::Observations), 0);
}

#[test]
fn an_outbox_from_before_lanes_delivers_its_asset_observations_with_the_alerts() {
    let kv = Arc::new(MemoryKv::new());
    let mut b = Batch::new();
    b.put(
        key(Lane::Alerts, 0).to_vec(),
        serde_json::to_vec(&alert(1)).unwrap(),
    );
    b.put(
        key(Lane::Alerts, 1).to_vec(),
        serde_json::to_vec(&asset(9)).unwrap(),
    );
    kv.apply(b).unwrap();
    let outbox = Outbox::open(kv, 1 << 20).unwrap();
    assert_eq!(
        messages(&outbox.peek(Lane::Alerts, 10, u64::MAX).unwrap()),
        ["number 1", "10.0.1.9"]
    );
}

#[test]
fn a_push_that_stores_records_wakes_whoever_waits_for_them() {
    let outbox = Outbox::open(Arc::new(MemoryKv::new()), 4 * size(&alert(1))).unwrap();
    let woken = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = woken.clone();
    outbox.on_push(Arc::new(move || {
        counter.fetch_add(1, Ordering::Relaxed);
    }));
    outbox.push(&[alert(1), alert(2)]).unwrap();
    assert_eq!(woken.load(Ordering::Relaxed), 1, "one push, one wake");
    // Nothing stored (larger than the whole budget): nobody is woken.
    let huge = Outbox::open(Arc::new(MemoryKv::new()), 10).unwrap();
    let none = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = none.clone();
    huge.on_push(Arc::new(move || {
        c.fetch_add(1, Ordering::Relaxed);
    }));
    huge.push(&[alert(1)]).unwrap();
    assert_eq!(none.load(Ordering::Relaxed), 0);
}

fn evidence(n: u8) -> Record {
    Record::Evidence(otwatch_rules::wire::EvidenceRecord {
        alert: format!("alert-{n}"),
        pcap: "A".repeat(40),
    })
}

#[test]
fn evidence_waits_in_its_own_lane_within_an_eighth_and_goes_first_when_an_alert_needs_room() {
    let one = size(&alert(1));
    let budget = 8 * one;
    let outbox = Outbox::open(Arc::new(MemoryKv::new()), budget).unwrap();
    outbox.push(&[asset(1)]).unwrap();
    let pushed = outbox
        .push(&(1..=20).map(evidence).collect::<Vec<_>>())
        .unwrap();
    assert!(pushed.dropped > 0, "more than an eighth was offered");
    let held = outbox.peek(Lane::Evidence, 100, u64::MAX).unwrap();
    let bytes: u64 = held.records.iter().map(size).sum();
    assert!(bytes <= Lane::Evidence.budget(budget), "{bytes}");
    assert_eq!(
        messages(&held).last().map(String::as_str),
        Some("evidence of alert-20"),
        "the newest kept"
    );
    assert_eq!(
        outbox.depth_of(Lane::Observations),
        1,
        "evidence drops only evidence"
    );
    // Alerts filling the budget push out evidence before the observation.
    let evidence_before = outbox.depth_of(Lane::Evidence);
    outbox
        .push(&(1..=7).map(alert).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(outbox.depth_of(Lane::Alerts), 7);
    assert!(outbox.depth_of(Lane::Evidence) < evidence_before);
    assert_eq!(outbox.depth_of(Lane::Observations), 1);
}
