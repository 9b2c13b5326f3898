use std::time::Duration;

use otwatch_rules::alert::Severity;
use tokio::io::AsyncReadExt;

use super::*;
use crate::feed::{BroadcastFeed, Feed};
use crate::fixtures::alert;

fn lost() -> Lost {
    Lost::new(
        prometheus::Opts::new("lost", "lost"),
        &["exporter", "reason"],
    )
    .unwrap()
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
    let feed = BroadcastFeed::new(16);
    let config = Syslog {
        address: receiver.local_addr().unwrap().to_string(),
        transport: SyslogTransport::Udp,
        max_message_bytes: None,
    };
    tokio::spawn(syslog(config, feed.subscribe(), "gw1".into(), lost()));
    feed.publish(&numbered(vec![
        hostile(),
        alert(8, "scan", Severity::Low, "10.0.0.9", "10.0.1.6", "a1"),
    ]));
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
    let feed = BroadcastFeed::new(16);
    let config = Syslog {
        address: listener.local_addr().unwrap().to_string(),
        transport: SyslogTransport::Tcp,
        max_message_bytes: None,
    };
    tokio::spawn(syslog(config, feed.subscribe(), "gw1".into(), lost()));
    let a = alert(3, "scan", Severity::Low, "10.0.0.9", "10.0.1.6", "a1");
    feed.publish(&numbered(vec![a.clone()]));
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
    let feed = BroadcastFeed::new(16);
    tokio::spawn(jsonl(path.clone(), feed.subscribe(), lost()));
    let alerts: Vec<Alert> = (0..3)
        .map(|n| alert(n, "scan", Severity::Low, "10.0.0.9", "10.0.1.6", "a1"))
        .collect();
    feed.publish(&numbered(alerts.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&path).unwrap();
        if text.lines().count() == 4 || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0], "{\"earlier\":true}");
    for (line, a) in lines[1..].iter().zip(&alerts) {
        let back: Alert = serde_json::from_str(line).unwrap();
        assert_eq!(&back, a);
    }
}

#[tokio::test]
async fn a_jsonl_file_that_cannot_be_written_counts_each_alert_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-folder").join("alerts.jsonl");
    let feed = BroadcastFeed::new(16);
    let counter = lost();
    tokio::spawn(jsonl(path, feed.subscribe(), counter.clone()));
    feed.publish(&numbered(vec![hostile(), hostile()]));
    let failed = counter.with_label_values(&["jsonl", "failed"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while failed.get() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(failed.get(), 2);
}

/// Alerts as the store hands them to the feed: numbered from 1.
fn numbered(alerts: Vec<Alert>) -> Vec<(u64, Alert)> {
    (1..).zip(alerts).collect()
}
