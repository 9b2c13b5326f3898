//! The collector's syslog export against a real syslog daemon (Debian's rsyslog, started here
//! on loopback): one record per alert, over UDP and over TCP, fields intact whatever bytes the
//! alert carried (line breaks, CEF delimiters), a message over the UDP size cut with a marker
//! rather than lost.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use otwatch_rules::alert::{Alert, rule};
use otwatch_rules::detect::agent_alert;
use otwatch_rules::time::Timestamp;
use otwatch_tests::collector::{Site, free_addr};
use serde_json::json;

/// rsyslogd listening on loopback, writing each message's MSGID and MSG to one line of a file.
struct Rsyslog {
    child: Child,
    out: PathBuf,
    udp: u16,
    tcp: u16,
}

impl Rsyslog {
    fn start(dir: &Path) -> Option<Self> {
        let binary = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .find(|p| Path::new(p).exists())?;
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tcp = free_addr().port();
        let out = dir.join("received.log");
        let config = dir.join("rsyslog.conf");
        std::fs::write(
            &config,
            format!(
                r#"global(workDirectory="{dir}")
module(load="imudp")
module(load="imtcp")
template(name="raw" type="string" string="%msgid% %msg%\n")
ruleset(name="otwatch") {{ action(type="omfile" file="{out}" template="raw") }}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="otwatch")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="otwatch")
"#,
                dir = dir.display(),
                out = out.display(),
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .args(["-n", "-f"])
            .arg(&config)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", tcp)).is_err() {
            assert!(Instant::now() < deadline, "rsyslogd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self {
            child,
            out,
            udp,
            tcp,
        })
    }

    /// The lines received so far, once `count` have arrived.
    fn lines(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&self.out).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= count || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Alerts whose title and message carry what a line-based receiver would split on.
fn hostile_alerts(agent: &str) -> Vec<Alert> {
    let texts = [
        (
            "stop\r\n<14>1 2026-01-01T00:00:00Z forged otwatch - forged - CEF:0|a|b|1|x|y|10|",
            "line one\nline two\r\nkey=value|pipe\\back",
        ),
        (
            "tab\there and a bell\u{7}",
            "Ventil \u{f6}ffnen = 5 | \u{2713}",
        ),
        ("long", &"x=1 ".repeat(900)),
    ];
    texts
        .iter()
        .enumerate()
        .map(|(i, (title, message))| {
            let mut a = agent_alert(
                agent,
                &rule::UMAS_STOP,
                Timestamp::from_secs(1_800_000_000 + i as u64),
                "192.168.1.10:50000".parse().unwrap(),
                String::new(),
            );
            a.title = (*title).to_string();
            a.message = Some((*message).to_string());
            a
        })
        .collect()
}

fn check(lines: &[String], alerts: &[Alert], udp: bool) {
    assert_eq!(
        lines.len(),
        alerts.len(),
        "one record per alert: {lines:#?}"
    );
    for a in alerts {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("externalId={}", a.id)))
            .unwrap_or_else(|| panic!("no record for {}: {lines:#?}", a.id));
        assert!(
            line.starts_with("program.umas_stop CEF:0|otwatch|otwatch|"),
            "{line}"
        );
        assert!(line.contains("src=192.168.1.10 spt=50000"), "{line}");
        assert!(line.contains("deviceExternalId=hall-1"), "{line}");
    }
    let first = &lines[0];
    assert!(
        first.contains("|stop  <14>1 2026-01-01T00:00:00Z forged otwatch - forged - CEF:0\\|a\\|b\\|1\\|x\\|y\\|10\\||"),
        "{first}"
    );
    assert!(
        first.contains("msg=line one\\nline two\\r\\nkey\\=value|pipe\\\\back"),
        "{first}"
    );
    assert!(
        lines[1].contains("msg=Ventil \u{f6}ffnen \\= 5 | \u{2713}"),
        "{}",
        lines[1]
    );
    let long = &lines[2];
    if udp {
        assert!(long.ends_with(" [truncated]"), "{long}");
        assert!(long.len() < 2048, "{}", long.len());
    } else {
        assert!(long.ends_with(&"x\\=1 ".repeat(3)[..15]), "{long}");
    }
}

#[test]
fn a_real_syslog_daemon_gets_one_intact_record_per_alert_over_udp_and_tcp() {
    let dir = tempfile::tempdir().unwrap();
    for (transport, udp) in [("udp", true), ("tcp", false)] {
        let logs = dir.path().join(transport);
        std::fs::create_dir_all(&logs).unwrap();
        let Some(rsyslog) = Rsyslog::start(&logs) else {
            eprintln!(
                "SKIPPED a_real_syslog_daemon_gets_one_intact_record_per_alert_over_udp_and_tcp: rsyslogd is not installed (apt-get install rsyslog; CI installs it)"
            );
            return;
        };
        let port = if udp { rsyslog.udp } else { rsyslog.tcp };
        let site = Site::init(&logs);
        let agent = site.enroll_agent("hall-1");
        let collector = site.serve_limited(
            1024,
            &format!(
                "[export.syslog]\naddress = \"127.0.0.1:{port}\"\ntransport = \"{transport}\""
            ),
            &[],
        );
        let alerts = hostile_alerts("hall-1");
        let batch = json!({ "agent": "hall-1", "alerts": alerts, "assets": [] });
        let (status, reply) = collector
            .client
            .post("/api/v1/ingest", Some(&agent), &batch);
        assert_eq!(status, 200, "{reply}");
        check(&rsyslog.lines(alerts.len()), &alerts, udp);
    }
}
