//! The shipper against a real collector (its router, sled store and credentials) over real
//! HTTPS on localhost.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use otwatch_collector::auth::Credentials;
use otwatch_collector::config::CollectorConfig;
use otwatch_collector::feed::BroadcastFeed;
use otwatch_collector::metrics::Metrics;
use otwatch_collector::pki;
use otwatch_collector::server::{AppState, router};
use otwatch_collector::store::model::Role;
use otwatch_collector::store::{AlertFilter, Store};
use otwatch_kv::memory::MemoryKv;
use otwatch_kv::sled::SledKv;
use otwatch_rules::alert::Alert;
use otwatch_rules::time::Timestamp;

use super::*;
use crate::sender::HttpsSender;

/// A collector serving HTTPS on `addr` until dropped.
struct Collector {
    store: Arc<Store<SledKv>>,
    handle: axum_server::Handle<SocketAddr>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    fn start(data: &Path, addr: SocketAddr) -> Self {
        let files = pki::Files::in_dir(data);
        let store = Arc::new(Store::open(SledKv::open(&data.join("store")).unwrap()).unwrap());
        let state = Arc::new(AppState::new(
            store.clone(),
            Arc::new(Credentials::open(data).unwrap()),
            Arc::new(BroadcastFeed::new(64)),
            Arc::new(Metrics::new().unwrap()),
            CollectorConfig::with_data(data.to_path_buf()),
        ));
        let handle = axum_server::Handle::new();
        let server = handle.clone();
        let (cert, key) = (files.cert.clone(), files.key.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .unwrap();
                axum_server::bind_rustls(addr, tls)
                    .handle(server)
                    .serve(router(state).into_make_service())
                    .await
                    .unwrap();
            });
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "collector did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            store,
            handle,
            thread: Some(thread),
        }
    }

    fn alerts(&self) -> Vec<otwatch_rules::alert::Alert> {
        self.store
            .query_alerts(&AlertFilter::default(), None, 1000)
            .unwrap()
            .alerts
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A collector data folder with certificates and an agent credential.
struct Site {
    dir: tempfile::TempDir,
    token: String,
    addr: SocketAddr,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        pki::create(dir.path(), &["127.0.0.1".to_string()]).unwrap();
        let token = Credentials::open(dir.path())
            .unwrap()
            .enroll("a1", Role::Agent)
            .unwrap();
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        Self { dir, token, addr }
    }

    fn sender(&self, token: &str) -> Box<dyn Sender> {
        let url = format!("https://{}", self.addr);
        let ca = self.dir.path().join("ca.pem");
        Box::new(HttpsSender::new(&url, token, Some(&ca)).unwrap())
    }

    fn collector(&self) -> Collector {
        Collector::start(self.dir.path(), self.addr)
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
            .any(|a| a.rule == rule::OUTBOX_OVERFLOW.id)
    });
    drop(shipper);
    let stored = collector.alerts();
    let report = stored
        .iter()
        .find(|a| a.rule == rule::OUTBOX_OVERFLOW.id)
        .unwrap();
    assert!(
        report
            .message
            .as_deref()
            .unwrap()
            .starts_with("7 undelivered records"),
        "{:?}",
        report.message
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
    let agent = collector.store.agent("a1").unwrap().unwrap();
    assert_eq!(agent.heartbeat.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(agent.heartbeat.outbox_depth, 0);
}

#[test]
fn backoff_doubles_up_to_its_cap_with_jitter_between_half_and_all() {
    let mut b = Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_secs(2),
        failures: 0,
    };
    let waits: Vec<Duration> = (0..8).map(|_| b.next()).collect();
    for (i, w) in waits.iter().enumerate() {
        let full = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(2));
        assert!(
            *w >= full / 2 && *w <= full,
            "attempt {i}: {w:?} vs {full:?}"
        );
    }
    b.reset();
    assert!(b.next() <= Duration::from_millis(100));
}
