//! Tokens and session ids never reach a log line: the collector and the agent run at the
//! `trace` level (the agent in JSON), an agent delivers alerts with its token, an analyst logs
//! in and uses the session, and neither process's log holds a token or the session id.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::process::{Command, Stdio};
use std::time::Duration;

use otwatch_tests::attack::record_attack;
use otwatch_tests::binary;
use otwatch_tests::collector::{Site, https_agent};

#[test]
fn no_token_or_session_id_reaches_a_log_line_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::init(dir.path());
    let token = site.enroll_agent("hall-1");
    let viewer = site.enroll_viewer("analyst");
    let collector = site.serve_with_args(&["--log-level", "trace"]);

    // An analyst logs in and uses the session.
    let cookie = site.login(&viewer);
    let session = cookie.split_once('=').unwrap().1.to_string();
    let page = https_agent(&site.ca(), Duration::from_secs(30))
        .get(format!("{}/api/v1/alerts", site.url()))
        .header("Cookie", &cookie)
        .call()
        .unwrap();
    assert_eq!(page.status(), 200);

    // An agent delivers the alerts of an attack with its token, logging everything.
    let pcap = dir.path().join("attack.pcap");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(record_attack(&pcap))
        .unwrap();
    let out = Command::new(binary("otwatch-agent"))
        .args([
            "replay",
            "--no-progress",
            "--agent-name",
            "hall-1",
            "--pcap",
        ])
        .arg(&pcap)
        .args(["--collector", &site.url(), "--ca"])
        .arg(site.ca())
        .arg("--outbox")
        .arg(dir.path().join("outbox"))
        .args(["--log-level", "trace", "--log-format", "json"])
        .env("OTWATCH_COLLECTOR_TOKEN", &token)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let agent_log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{agent_log}");
    let (_, alerts) = collector.client.get("/api/v1/alerts", Some(&viewer));
    assert!(
        !alerts["alerts"].as_array().unwrap().is_empty(),
        "the agent delivered nothing: {agent_log}"
    );
    drop(collector);

    // Both logged (the test would pass vacuously on silent processes), the agent in JSON.
    let serve_log = std::fs::read_to_string(site.data.join("serve.log")).unwrap();
    assert!(serve_log.lines().count() > 1, "{serve_log}");
    let json_lines: Vec<serde_json::Value> = agent_log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(
        json_lines.iter().any(|l| l["level"].is_string()),
        "no JSON log line: {agent_log}"
    );
    for (what, secret) in [
        ("the agent's token", &token),
        ("the viewer's token", &viewer),
        ("the admin token", &site.admin),
        ("the session id", &session),
    ] {
        assert!(
            !serve_log.contains(secret.as_str()),
            "{what} is in the collector's log"
        );
        assert!(
            !agent_log.contains(secret.as_str()),
            "{what} is in the agent's log"
        );
    }
}
