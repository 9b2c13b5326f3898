use std::sync::Arc;
use std::time::Duration;

use otwatch_rules::alert::Severity;
use tokio::io::AsyncReadExt;

use super::*;
use crate::config::{Syslog, SyslogTransport};
use crate::feed::{BroadcastFeed, Feed};
use crate::fixtures::{alert, batch};
use crate::kv::memory::MemoryKv;
use crate::server::now;
use crate::store::Store;

/// How a test's exporter runs: as replica `holder`, with a short lease.
fn exporting(holder: &str) -> Exporting {
    let vec = |name: &str, labels: &[&str]| {
        prometheus::IntCounterVec::new(prometheus::Opts::new(name, name), labels).unwrap()
    };
    let gauge = |name: &str| {
        prometheus::IntGaugeVec::new(prometheus::Opts::new(name, name), &["exporter"]).unwrap()
    };
    Exporting {
        holder: holder.into(),
        lease: Duration::from_millis(600),
        page: 2,
        lost: vec("lost", &["exporter", "reason"]),
        retries: vec("retries", &["exporter"]),
        behind: gauge("behind"),
        leader: gauge("leader"),
    }
}

/// A store, its feed, and an exporter on `sink` that has saved its starting place.
struct Rig {
    store: Arc<Store<MemoryKv>>,
    feed: BroadcastFeed,
}

impl Rig {
    fn new() -> Self {
        Self {
            store: Arc::new(Store::open(MemoryKv::new()).unwrap()),
            feed: BroadcastFeed::new(16),
        }
    }

    /// Starts an exporter as `holder` and waits until it runs.
    async fn export(&self, sink: Sink, how: Exporting) -> tokio::task::JoinHandle<()> {
        let name = sink.name();
        let task = tokio::spawn(relay(sink, self.store.clone(), self.feed.subscribe(), how));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.store.export_cursor(name).unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the exporter did not start"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task
    }

    /// Stores alerts as ingest does and announces them.
    fn ingest(&self, alerts: Vec<Alert>) {
        let (_, fresh) = self
            .store
            .ingest_sequenced(&batch("a1", alerts), now())
            .unwrap();
        self.feed.publish(&fresh);
    }
}

/// The lines of `path` once it has `n` (or after five seconds).
async fn lines_of(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n || std::time::Instant::now() > deadline {
            return text.lines().map(str::to_string).collect();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ids_in(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Alert>(l).ok())
        .map(|a| a.id)
        .collect()
}

fn scans(range: std::ops::Range<u64>) -> Vec<Alert> {
    range
        .map(|n| alert(n, "scan", Severity::Low, "10.0.0.9", "10.0.1.6", "a1"))
        .collect()
}

fn hostile() -> Alert {
    let mut a = alert(
        7,
        "write|denied",
        Severity::High,
        "10.0.0.9",
        "10.0.1.5",
        "hall=3",
    );
    a.title = "Write | to a \\ register".into();
    a.message = Some("line one\nvalue=5".into());
    a
}

#[test]
fn cef_escapes_pipes_in_the_header_and_equals_and_newlines_in_extensions() {
    let line = cef(&hostile());
    assert!(line.starts_with("CEF:0|otwatch|otwatch|"), "{line}");
    assert!(
        line.contains("|write\\|denied|Write \\| to a \\\\ register|8|"),
        "{line}"
    );
    assert!(line.contains("deviceExternalId=hall\\=3"), "{line}");
    assert!(line.contains("msg=line one\\nvalue\\=5"), "{line}");
    assert!(
        line.contains("src=10.0.0.9 spt=40000 dst=10.0.1.5 dpt=502"),
        "{line}"
    );
    assert!(!line.contains('\n'));
}

#[test]
fn syslog_line_carries_local4_priority_from_severity_and_an_rfc3339_time() {
    let mut a = alert(1, "scan", Severity::Critical, "10.0.0.9", "10.0.1.5", "a1");
    assert!(syslog_line(&a, "gw1", 65_536).starts_with("<162>1 1970-01-01T00:16:41"));
    a.severity = Severity::Info;
    let line = syslog_line(&a, "", 2048);
    assert!(line.starts_with("<166>1 "), "{line}");
    assert!(line.contains(" - otwatch - scan - CEF:0|"), "{line}");
}

#[test]
fn line_breaks_and_controls_anywhere_in_an_alert_stay_inside_one_message() {
    let mut a = hostile();
    a.rule = "forged\r\n<14>1 2026-01-01T00:00:00Z host app - - fake".into();
    a.title = "title\nCEF:0|x|y|1|2|3|10|".into();
    a.agent = "hall\u{0}3".into();
    a.message = Some("m\r\nn\u{7}".into());
    let line = syslog_line(&a, "gw 1\n", 65_536);
    assert!(!line.contains(['\r', '\n', '\u{0}', '\u{7}']), "{line:?}");
    let fields: Vec<&str> = line.splitn(8, ' ').collect();
    // HOSTNAME and MSGID: printable US-ASCII, no spaces; MSGID at most 32.
    assert_eq!(fields[2], "gw_1_");
    assert_eq!(fields[5], "forged__<14>1_2026-01-01T00:00:0");
    assert!(
        line.contains("|forged  <14>1 2026-01-01T00:00:00Z host app - - fake|title CEF:0\\|x\\|y"),
        "{line}"
    );
    assert!(line.contains("msg=m\\r\\nn "), "{line}");
}

#[test]
fn a_message_over_the_receivers_size_is_cut_with_a_marker_not_lost() {
    let mut a = hostile();
    a.message = Some("\\".repeat(3000));
    let line = syslog_line(&a, "gw1", 2048);
    assert!(line.len() <= 2048, "{}", line.len());
    assert!(line.ends_with(TRUNCATED), "{line}");
    // The cut never leaves a lone backslash escaping the marker.
    let body = line.strip_suffix(TRUNCATED).unwrap();
    assert_eq!(
        body.bytes().rev().take_while(|b| *b == b'\\').count() % 2,
        0
    );
    let short = syslog_line(
        &alert(1, "scan", Severity::Low, "10.0.0.9", "10.0.1.5", "a1"),
        "gw1",
        2048,
    );
    assert!(!short.ends_with(TRUNCATED));
}

#[tokio::test]
async fn udp_exporter_sends_one_datagram_per_alert() {
    let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rig = Rig::new();
    let config = Syslog {
        address: receiver.local_addr().unwrap().to_string(),
        transport: SyslogTransport::Udp,
        max_message_bytes: None,
    };
    rig.export(Sink::syslog(config, "gw1".into()), exporting("r1"))
        .await;
    rig.ingest(vec![
        hostile(),
        alert(8, "scan", Severity::Low, "10.0.0.9", "10.0.1.6", "a1"),
    ]);
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    for _ in 0..2 {
        let n = tokio::time::timeout(Duration::from_secs(5), receiver.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    assert!(
        got[0].contains("externalId=00000000000000000000000000000007"),
        "{got:?}"
    );
    assert!(got[1].contains("|scan|"), "{got:?}");
}

#[tokio::test]
async fn tcp_exporter_frames_messages_with_their_octet_count() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rig = Rig::new();
    let config = Syslog {
        address: listener.local_addr().unwrap().to_string(),
        transport: SyslogTransport::Tcp,
        max_message_bytes: None,
    };
    rig.export(Sink::syslog(config, "gw1".into()), exporting("r1"))
        .await;
    let a = alert(3, "scan", Severity::Low, "10.0.0.9", "10.0.1.6", "a1");
    rig.ingest(vec![a.clone()]);
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .unwrap()
        .unwrap();
    let expected = syslog_line(&a, "gw1", 65_536);
    let mut buf = vec![0u8; format!("{} {expected}", expected.len()).len()];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8(buf).unwrap(),
        format!("{} {expected}", expected.len())
    );
}

#[tokio::test]
async fn jsonl_exporter_appends_one_parsable_line_per_alert() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.jsonl");
    std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
    let rig = Rig::new();
    rig.export(Sink::jsonl(path.clone()), exporting("r1")).await;
    let alerts = scans(0..3);
    rig.ingest(alerts.clone());
    let lines = lines_of(&path, 4).await;
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0], "{\"earlier\":true}");
    for (line, a) in lines[1..].iter().zip(&alerts) {
        let back: Alert = serde_json::from_str(line).unwrap();
        assert_eq!(&back, a);
    }
}

#[tokio::test]
async fn a_file_that_cannot_be_written_is_retried_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("missing-folder");
    let path = folder.join("alerts.jsonl");
    let rig = Rig::new();
    let how = exporting("r1");
    let retries = how.retries.with_label_values(&["jsonl"]);
    rig.export(Sink::jsonl(path.clone()), how.clone()).await;
    rig.ingest(scans(0..3));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while retries.get() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(retries.get() >= 2, "the failed write is tried again");
    std::fs::create_dir(&folder).unwrap();
    let lines = lines_of(&path, 3).await;
    assert_eq!(
        ids_in(&lines),
        scans(0..3).into_iter().map(|a| a.id).collect::<Vec<_>>()
    );
    assert_eq!(how.lost.with_label_values(&["jsonl", "failed"]).get(), 0);
}

#[tokio::test]
async fn an_exporter_restarted_elsewhere_resumes_where_the_last_one_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.jsonl");
    let rig = Rig::new();
    let first = rig.export(Sink::jsonl(path.clone()), exporting("r1")).await;
    rig.ingest(scans(0..4));
    assert_eq!(lines_of(&path, 4).await.len(), 4);
    // Killed: its lease runs out, and alerts keep arriving meanwhile.
    first.abort();
    rig.ingest(scans(4..9));
    let second = exporting("r2");
    let leader = second.leader.with_label_values(&["jsonl"]);
    tokio::spawn(relay(
        Sink::jsonl(path.clone()),
        rig.store.clone(),
        rig.feed.subscribe(),
        second,
    ));
    let lines = lines_of(&path, 9).await;
    assert_eq!(
        ids_in(&lines),
        scans(0..9).into_iter().map(|a| a.id).collect::<Vec<_>>(),
        "each alert once, in order"
    );
    assert_eq!(leader.get(), 1);
}

#[tokio::test]
async fn of_two_replicas_one_exports_and_each_alert_goes_out_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.jsonl");
    let rig = Rig::new();
    let (one, two) = (exporting("r1"), exporting("r2"));
    let leaders = [
        one.leader.with_label_values(&["jsonl"]),
        two.leader.with_label_values(&["jsonl"]),
    ];
    rig.export(Sink::jsonl(path.clone()), one).await;
    tokio::spawn(relay(
        Sink::jsonl(path.clone()),
        rig.store.clone(),
        rig.feed.subscribe(),
        two,
    ));
    for n in 0..5 {
        rig.ingest(scans(n * 4..n * 4 + 4));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = lines_of(&path, 20).await;
    assert_eq!(
        ids_in(&lines),
        scans(0..20).into_iter().map(|a| a.id).collect::<Vec<_>>()
    );
    assert_eq!((leaders[0].get(), leaders[1].get()), (1, 0));
}
