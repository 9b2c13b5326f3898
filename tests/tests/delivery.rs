//! The agent's shipper against a real collector process over real HTTPS on loopback: records
//! reach it once and leave the outbox, refusals set aside exactly the records the collector
//! will never take, and nothing is lost while it is away. The decisions themselves are tested
//! on a manual clock in `otwatch-delivery`; these tests pin that the thread, the outbox and
//! the HTTPS transport carry them out against the real thing.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use otwatch_agent::delivery::outbox::{Outbox, Record};
use otwatch_agent::delivery::sender::{HttpsSender, Sender};
use otwatch_agent::delivery::shipper::{Shipper, ShipperConfig};
use otwatch_agent::telemetry::status::Status;
use otwatch_kv::memory::MemoryKv;
use otwatch_rules::alert::{Alert, rule};
use otwatch_rules::detect::agent_alert;
use otwatch_rules::time::Timestamp;
use otwatch_tests::collector::{self, Collector as Serve};
use serde_json::Value;

/// A collector data folder with an agent `a1` and a viewer enrolled.
struct Site {
    _dir: tempfile::TempDir,
    site: collector::Site,
    token: String,
    viewer: String,
}

/// A running collector process.
struct Collector {
    serve: Serve,
    viewer: String,
}

impl Collector {
    /// Every alert it holds.
    fn alerts(&self) -> Vec<Value> {
        let (status, page) = self
            .serve
            .client
            .get("/api/v1/alerts?limit=1000", Some(&self.viewer));
        assert_eq!(status, 200, "{page}");
        page["alerts"].as_array().unwrap().clone()
    }
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let site = collector::Site::init(dir.path());
        let token = site.enroll_agent("a1");
        let viewer = site.enroll_viewer("analyst");
        Self {
            _dir: dir,
            site,
            token,
            viewer,
        }
    }

    fn sender(&self, token: &str) -> Box<dyn Sender> {
        let ca = self.site.ca();
        Box::new(HttpsSender::new(&[self.site.url()], token, Some(&ca)).unwrap())
    }

    fn collector(&self) -> Collector {
        Collector {
            serve: self.site.serve(),
            viewer: self.viewer.clone(),
        }
    }
}

fn config() -> ShipperConfig {
    let mut c = ShipperConfig::new("a1".into(), "10.0.0.250:0".parse().unwrap());
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.heartbeat_every = Duration::from_millis(100);
    c.batch_records = 7;
    c
}

fn alerts(range: std::ops::Range<u64>) -> Vec<Record> {
    range
        .map(|n| {
            Record::Alert(agent_alert(
                "a1",
                &rule::POLICY_RELOAD_FAILED,
                Timestamp::from_secs(1_000 + n),
                "10.0.0.250:0".parse().unwrap(),
                format!("number {n}"),
            ))
        })
        .collect()
}

fn outbox(budget: u64) -> Arc<Outbox> {
    Arc::new(Outbox::open(Arc::new(MemoryKv::new()), budget).unwrap())
}

/// A shipper with the tests' pacing, moving `outbox` through `sender`.
fn spawn(outbox: &Arc<Outbox>, sender: Box<dyn Sender>, status: Arc<Status>) -> Shipper {
    Shipper::spawn(outbox.clone(), sender, status, config()).unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn records_reach_the_collector_once_and_leave_the_outbox() {
    let site = Site::new();
    let collector = site.collector();
    let outbox = outbox(1 << 20);
    outbox.push(&alerts(0..30)).unwrap();
    let shipper = spawn(&outbox, site.sender(&site.token), Arc::new(Status::new()));
    wait_for("the outbox to empty", || outbox.depth() == 0);
    let (waiting, delivered) = shipper.drain(Duration::from_secs(5));
    assert_eq!(waiting, 0);
    assert_eq!((delivered.records, delivered.duplicates), (30, 0));
    assert!(delivered.batches >= 5, "batches of 7: {delivered:?}");
    assert_eq!(collector.alerts().len(), 30);
}

#[test]
fn a_collector_down_then_up_gets_everything_once() {
    let site = Site::new();
    let outbox = outbox(1 << 20);
    let shipper = spawn(&outbox, site.sender(&site.token), Arc::new(Status::new()));
    outbox.push(&alerts(0..20)).unwrap();
    wait_for("failed attempts", || shipper.delivered().failures >= 3);
    assert_eq!(outbox.depth(), 20);
    assert!(!shipper.delivered().connected);
    let collector = site.collector();
    outbox.push(&alerts(20..25)).unwrap();
    wait_for("the outbox to empty", || outbox.depth() == 0);
    let (_, delivered) = shipper.drain(Duration::from_secs(5));
    assert_eq!((delivered.records, delivered.duplicates), (25, 0));
    assert_eq!(collector.alerts().len(), 25);
}

#[test]
fn drops_while_the_collector_is_away_are_reported_as_an_alert_when_it_returns() {
    let site = Site::new();
    let one = serde_json::to_vec(&alerts(0..1)[0]).unwrap().len() as u64;
    let outbox = outbox(5 * one + one / 2);
    let shipper = spawn(&outbox, site.sender(&site.token), Arc::new(Status::new()));
    for record in alerts(0..12) {
        outbox.push(&[record]).unwrap();
    }
    assert_eq!(outbox.unreported(), 7);
    let collector = site.collector();
    wait_for("the drop report", || {
        collector
            .alerts()
            .iter()
            .any(|a| a["rule"] == rule::OUTBOX_OVERFLOW.id)
    });
    drop(shipper);
    let stored = collector.alerts();
    let report = stored
        .iter()
        .find(|a| a["rule"] == rule::OUTBOX_OVERFLOW.id)
        .unwrap();
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .starts_with("7 undelivered records"),
        "{report}"
    );
    assert_eq!(stored.len(), 6, "the newest five, and the report");
    assert_eq!(outbox.unreported(), 0);
}

#[test]
fn an_alert_under_another_agents_name_is_set_aside_and_the_rest_delivered() {
    let site = Site::new();
    let collector = site.collector();
    let outbox = outbox(1 << 20);
    // Written under an earlier name: this agent's credential will never deliver it.
    outbox.push(&alerts(1..4)).unwrap();
    outbox.push(&renamed(0..1)).unwrap();
    outbox.push(&alerts(4..10)).unwrap();
    let status = Arc::new(Status::new());
    let shipper = spawn(&outbox, site.sender(&site.token), status.clone());
    wait_for("the outbox to empty", || outbox.depth() == 0);
    let (_, delivered) = shipper.drain(Duration::from_secs(5));
    assert_eq!(
        (delivered.records, delivered.rejected),
        (9, 1),
        "{delivered:?}"
    );
    assert_eq!(collector.alerts().len(), 9);
    let error = status.last_error().unwrap();
    assert!(
        error.contains("set aside") && error.contains("old-name"),
        "{error}"
    );
}

/// Alerts `range` changed by `change`: records the collector refuses.
fn refused(range: std::ops::Range<u64>, change: fn(&mut Alert)) -> Vec<Record> {
    alerts(range)
        .into_iter()
        .map(|r| match r {
            Record::Alert(mut a) => {
                change(&mut a);
                Record::Alert(a)
            }
            other => other,
        })
        .collect()
}

/// Written under an earlier agent name: the collector never takes them from this agent (422).
fn renamed(range: std::ops::Range<u64>) -> Vec<Record> {
    refused(range, |a| a.agent = "old-name".into())
}

/// Malformed to this collector (400), as a newer agent's records can be to an older one.
fn unreadable_to_the_collector(range: std::ops::Range<u64>) -> Vec<Record> {
    // A newer agent's schema: an older collector cannot read it, a newer one may.
    refused(range, |a| a.schema = 99)
}

#[test]
fn alerts_under_another_agents_name_are_all_set_aside_however_many_in_a_row() {
    let site = Site::new();
    let collector = site.collector();
    let outbox = outbox(1 << 20);
    outbox.push(&renamed(0..3)).unwrap();
    outbox.push(&alerts(3..5)).unwrap();
    let status = Arc::new(Status::new());
    let shipper = spawn(&outbox, site.sender(&site.token), status);
    wait_for("the outbox to empty", || outbox.depth() == 0);
    let (_, delivered) = shipper.drain(Duration::from_secs(5));
    assert_eq!(
        (delivered.records, delivered.rejected),
        (2, 3),
        "{delivered:?}"
    );
    assert_eq!(collector.alerts().len(), 2);
}

#[test]
fn a_collector_that_refuses_every_record_gets_them_all_kept_not_set_aside_one_by_one() {
    let site = Site::new();
    let collector = site.collector();
    let outbox = outbox(1 << 20);
    outbox.push(&unreadable_to_the_collector(0..5)).unwrap();
    let status = Arc::new(Status::new());
    let shipper = spawn(&outbox, site.sender(&site.token), status.clone());
    wait_for("refusals", || shipper.delivered().failures >= 4);
    assert_eq!(outbox.depth(), 5);
    assert_eq!(shipper.delivered().rejected, 0);
    let error = status.last_error().unwrap();
    assert!(error.contains("refuses every record"), "{error}");

    // A lone malformed record waits for the next: once that one is taken, it is set aside.
    let outbox = self::outbox(1 << 20);
    outbox.push(&unreadable_to_the_collector(10..11)).unwrap();
    let shipper = spawn(&outbox, site.sender(&site.token), status.clone());
    wait_for("refusals", || shipper.delivered().failures >= 2);
    assert_eq!(outbox.depth(), 1);
    let error = status.last_error().unwrap();
    assert!(
        error.contains("kept until the collector takes a record after it"),
        "{error}"
    );
    outbox.push(&alerts(11..12)).unwrap();
    wait_for("the outbox to empty", || outbox.depth() == 0);
    let (_, delivered) = shipper.drain(Duration::from_secs(5));
    assert_eq!(
        (delivered.records, delivered.rejected),
        (1, 1),
        "{delivered:?}"
    );
    assert_eq!(collector.alerts().len(), 1);
}

#[test]
fn a_refused_credential_keeps_everything_and_says_why() {
    let site = Site::new();
    let _collector = site.collector();
    let outbox = outbox(1 << 20);
    outbox.push(&alerts(0..3)).unwrap();
    let status = Arc::new(Status::new());
    let shipper = spawn(&outbox, site.sender("otw_not_enrolled"), status.clone());
    wait_for("failed attempts", || shipper.delivered().failures >= 2);
    assert_eq!(outbox.depth(), 3);
    let error = status.last_error().unwrap();
    assert!(error.contains("(401)"), "{error}");
}

#[test]
fn heartbeats_tell_the_collector_the_outbox_depth_and_version() {
    let site = Site::new();
    let collector = site.collector();
    let outbox = outbox(1 << 20);
    let status = Arc::new(Status::new());
    let shipper = spawn(&outbox, site.sender(&site.token), status);
    wait_for("a heartbeat", || shipper.delivered().heartbeats >= 1);
    let (_, agents) = collector
        .serve
        .client
        .get("/api/v1/agents", Some(&site.viewer));
    let agent = &agents[0]["heartbeat"];
    assert_eq!(agent["version"], env!("CARGO_PKG_VERSION"), "{agents}");
    assert_eq!(agent["outbox_depth"], 0, "{agents}");
}
