//! Credentials and sessions on a real collector process: `revoke` from another process ends a
//! credential's dashboard sessions and live feeds at once, `list` shows what is enrolled, and
//! every change lands in the audit log.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use otwatch_tests::collector::{Site, https_agent};

fn agent(site: &Site) -> ureq::Agent {
    https_agent(&site.ca(), Duration::from_secs(60))
}

/// Opens the live feed with `header` and reports on the channel when the stream ends.
fn feed_until_closed(site: &Site, header: (&str, String)) -> mpsc::Receiver<Instant> {
    let response = agent(site)
        .get(format!("{}/api/v1/alerts/stream", site.url()))
        .header(header.0, header.1)
        .call()
        .unwrap();
    assert_eq!(response.status(), 200);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(response.into_body().into_reader());
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            line.clear();
        }
        let _ = tx.send(Instant::now());
    });
    rx
}

#[test]
fn revoke_from_another_process_ends_the_credentials_sessions_and_live_feeds_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::init(dir.path());
    let soc = site.enroll_viewer("soc");
    let other = site.enroll_viewer("night-shift");
    let c = site.serve();
    let cookie = site.login(&soc);
    let by_cookie = feed_until_closed(&site, ("Cookie", cookie.clone()));
    let by_token = feed_until_closed(&site, ("Authorization", format!("Bearer {soc}")));
    let unrelated = feed_until_closed(&site, ("Authorization", format!("Bearer {other}")));
    // Both feeds are open.
    assert!(by_cookie.recv_timeout(Duration::from_millis(500)).is_err());
    assert!(by_token.try_recv().is_err());

    let listed = site.run(&["list"]);
    assert!(
        listed.contains("soc") && listed.contains("night-shift"),
        "{listed}"
    );
    assert!(!listed.contains("otw_"), "list shows no token: {listed}");

    let revoked_at = Instant::now();
    site.run(&["revoke", "soc"]);
    for (what, feed) in [("cookie", &by_cookie), ("token", &by_token)] {
        let ended = feed
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("the {what} feed is still open 10 s after revoke"));
        let took = ended.duration_since(revoked_at);
        assert!(
            took < Duration::from_secs(3),
            "the {what} feed took {took:?}"
        );
    }
    assert!(
        unrelated.try_recv().is_err(),
        "another viewer's feed stays open"
    );
    let (status, body) = c.client.get("/api/v1/agents", Some(&soc));
    assert_eq!(status, 401, "{body}");
    let r = agent(&site)
        .get(format!("{}/api/v1/agents", site.url()))
        .header("Cookie", cookie)
        .call()
        .unwrap();
    assert_eq!(r.status(), 401, "the session ended with its credential");
    assert_eq!(c.client.get("/api/v1/agents", Some(&other)).0, 200);
    assert!(!site.run(&["list"]).contains("soc "));

    let audit = std::fs::read_to_string(site.data.join("audit.log")).unwrap();
    let events: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["name"].as_str().or(e["who"].as_str()).unwrap_or(""),
            )
        })
        .collect();
    for wanted in [
        ("enroll", "admin"),
        ("enroll", "soc"),
        ("login", "soc"),
        ("revoke", "soc"),
    ] {
        assert!(kinds.contains(&wanted), "{wanted:?} not in {kinds:?}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(site.data.join("audit.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
