//! The dashboard in a real browser: headless Chromium signs in with a viewer token, the page
//! shows an alert that was just ingested, the posture and the asset, and a screenshot is
//! written to `target/test-data/dashboard.png`.
//!
//! Needs Chromium (Debian package `chromium`, which CI installs); elsewhere the test says it
//! skips.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use otwatch_rules::alert::rule;
use otwatch_rules::detect::agent_alert;
use otwatch_rules::time::Timestamp;
use otwatch_rules::wire::AssetObservation;
use otwatch_tests::collector::{Collector, Site};
use otwatch_tests::workspace_root;
use serde_json::json;

/// Chromium, or `None` after saying that `test` is skipped without it.
fn chromium_for(test: &str) -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        eprintln!(
            "SKIPPED {test}: chromium is not installed (apt-get install chromium; CI installs it)"
        );
    }
    found
}

/// What each browser test starts from: Chromium, a folder, a collector's site with agent hall-1
/// enrolled and its token; `None` after saying that `test` is skipped without Chromium.
fn browser_site(test: &str) -> Option<(PathBuf, tempfile::TempDir, Site, String)> {
    let chromium = chromium_for(test)?;
    let dir = tempfile::tempdir().unwrap();
    let site = Site::init(dir.path());
    let agent = site.enroll_agent("hall-1");
    Some((chromium, dir, site, agent))
}

/// Agent hall-1 delivers `alerts` and `assets` to the collector.
fn ingest(collector: &Collector, agent: &str, alerts: Value, assets: Value) {
    let batch = json!({ "agent": "hall-1", "alerts": alerts, "assets": assets });
    assert_eq!(
        collector
            .client
            .post("/api/v1/ingest", Some(agent), &batch)
            .0,
        200
    );
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let out = Command::new("which").arg(name).output().ok()?;
            out.status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
}

/// Headless Chromium driven over the DevTools protocol (a page that keeps a live feed open
/// never goes idle, so `--dump-dom` cannot wait for it).
struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
}

impl Browser {
    fn open(chromium: &Path, profile: &Path, url: &str) -> Self {
        let child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                // The collector's certificate comes from its own authority, which this
                // throwaway browser profile does not trust.
                "--ignore-certificate-errors",
                "--window-size=1400,1100",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let port_file = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let endpoint = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            assert!(Instant::now() < deadline, "chromium did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        let (socket, _) = tungstenite::connect(endpoint).unwrap();
        let mut browser = Self {
            child,
            socket,
            session: String::new(),
            next_id: 0,
        };
        let target = browser.call("Target.createTarget", json!({ "url": url }), false);
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
            false,
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser
    }

    fn call(&mut self, method: &str, params: Value, in_page: bool) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if in_page {
            message["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .unwrap();
        loop {
            let reply = self.socket.read().unwrap();
            let Message::Text(text) = reply else { continue };
            let value: Value = serde_json::from_str(text.as_str()).unwrap();
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
        }
    }

    /// The page's visible text once it contains every one of `wanted` (or after 20 s).
    fn text_with(&mut self, wanted: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let result = self.call(
                "Runtime.evaluate",
                json!({ "expression": "document.body.innerText", "returnByValue": true }),
                true,
            );
            let text = result["result"]["value"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if wanted.iter().all(|w| text.contains(w)) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `expression` in the page (awaiting a promise) and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            true,
        );
        result["result"]["value"].clone()
    }

    fn screenshot(&mut self, path: &Path) {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }), true);
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Agent hall-1's alert: a UMAS stop to the kiln PLC.
fn kiln_stop() -> otwatch_rules::alert::Alert {
    let mut alert = agent_alert(
        "hall-1",
        &rule::UMAS_STOP,
        Timestamp::from_secs(1_800_000_000),
        "192.168.1.10:50000".parse().unwrap(),
        "stop command to the kiln PLC".into(),
    );
    alert.dst_ip = "192.168.1.20".parse().unwrap();
    alert.dst_port = 502;
    alert.id = alert.derived_id(0);
    alert
}

#[test]
fn the_dashboard_shows_an_alert_just_ingested_and_the_posture() {
    let Some((chromium, dir, site, agent)) =
        browser_site("the_dashboard_shows_an_alert_just_ingested_and_the_posture")
    else {
        return;
    };
    let viewer = site.enroll_viewer("soc");
    let collector = site.serve();
    let alert = kiln_stop();
    let mut plc = AssetObservation::new(
        "192.168.1.20".parse().unwrap(),
        Timestamp::from_secs(1_800_000_000),
    );
    plc.slave = true;
    plc.name = Some("kiln-plc".into());
    plc.zone = Some("kiln".into());
    plc.vendor = Some("Schneider Electric".into());
    ingest(&collector, &agent, json!([alert]), json!([plc]));
    // A policy the collector keeps, assigned to hall-1, which still applies none: the agents
    // view shows assigned against applied.
    let (status, stored) = collector.client.put(
        "/api/v1/policies/kiln",
        &site.admin,
        "application/toml",
        "version = 1\nname = \"kiln\"\n",
    );
    assert_eq!(status, 201, "{stored}");
    let (status, _) = collector.client.put(
        "/api/v1/agents/hall-1/policy",
        &site.admin,
        "application/json",
        r#"{"policy": "kiln"}"#,
    );
    assert_eq!(status, 200);
    let heartbeat = json!({ "agent": "hall-1", "version": "test", "uptime_s": 1, "policy_source": "collector", "packets_per_s": 0.0, "packets": 0, "drops": 0, "flows": 0, "outbox_depth": 0, "outbox_dropped": 0 });
    let (status, answer) = collector
        .client
        .post("/api/v1/heartbeat", Some(&agent), &heartbeat);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["policy"]["hash"], stored["hash"]);

    let url = format!("{}/#token={viewer}", site.url());
    let mut browser = Browser::open(&chromium, &dir.path().join("chromium"), &url);
    let kiln_policy = format!("kiln {}", stored["hash"].as_str().unwrap());
    let wanted = [
        "soc (viewer)",
        "program.umas_stop",
        "stop command to the kiln PLC",
        "kiln-plc",
        "Schneider Electric",
        kiln_policy.as_str(),
    ];
    let text = browser.text_with(&wanted);
    for w in wanted {
        assert!(text.contains(w), "the page shows {w:?}:\n{text}");
    }

    // An alert ingested while the page is open arrives over the live feed.
    let mut later = agent_alert(
        "hall-1",
        &rule::FORCE_LISTEN_ONLY,
        Timestamp::from_secs(1_800_000_100),
        "192.168.1.10:50000".parse().unwrap(),
        "listen-only forced on the kiln PLC".into(),
    );
    later.dst_ip = "192.168.1.20".parse().unwrap();
    later.id = later.derived_id(0);
    ingest(&collector, &agent, json!([later]), json!([]));
    let text = browser.text_with(&["listen-only forced on the kiln PLC"]);
    assert!(text.contains("diag.force_listen_only"), "{text}");
    // The agent applies another version than the one assigned: marked.
    assert_eq!(
        browser.eval(
            "[...document.querySelectorAll('#agents td.conflict')].map((c) => c.textContent)"
        ),
        json!([kiln_policy])
    );

    let out_dir = workspace_root().join("target/test-data");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shot = out_dir.join("dashboard.png");
    browser.screenshot(&shot);
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a screenshot was taken"
    );
}

#[test]
fn an_admin_acknowledges_from_the_page_and_signing_out_ends_the_session() {
    let Some((chromium, dir, site, agent)) =
        browser_site("an_admin_acknowledges_from_the_page_and_signing_out_ends_the_session")
    else {
        return;
    };
    let collector = site.serve();
    let alert = kiln_stop();
    ingest(&collector, &agent, json!([alert]), json!([]));
    let url = format!("{}/#token={}", site.url(), site.admin);
    let mut browser = Browser::open(&chromium, &dir.path().join("chromium"), &url);
    let text = browser.text_with(&["admin (admin)", "program.umas_stop"]);
    assert!(text.contains("admin (admin)"), "{text}");
    // The page's own button: a same-origin JSON POST with the session cookie.
    let deadline = Instant::now() + Duration::from_secs(20);
    let clicked = loop {
        let clicked = browser.eval(
            "(() => { const b = document.querySelector('button[data-act=ack]'); if (b) b.click(); return !!b; })()",
        );
        if clicked == json!(true) || Instant::now() > deadline {
            break clicked;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(clicked, json!(true), "an ack button is on the page");
    let deadline = Instant::now() + Duration::from_secs(10);
    let state = loop {
        let (_, incidents) = collector.client.get("/api/v1/incidents", Some(&site.admin));
        let state = incidents[0]["state"].as_str().unwrap_or("").to_string();
        if state == "acknowledged" || Instant::now() > deadline {
            break state;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(state, "acknowledged", "the page acknowledged the incident");
    // A form on another site cannot: the same request without the page's Origin is refused.
    let forged = browser.eval(
        "fetch('/api/v1/incidents/1/resolve', { method: 'POST', body: 'x=1', headers: { 'content-type': 'application/x-www-form-urlencoded' } }).then((r) => r.status)",
    );
    assert_eq!(forged, json!(403));
    browser.eval("document.querySelector('#logout').click()");
    let text = browser.text_with(&["Sign in with a viewer or admin token"]);
    assert!(text.contains("Sign in"), "{text}");
    let after = browser.eval("fetch('/api/v1/session').then((r) => r.status)");
    assert_eq!(after, json!(401), "the session ended");
}

/// Waits until `expression` is true in the page (or 20 s), and says whether it became true.
fn wait_for(browser: &mut Browser, expression: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if browser.eval(expression) == json!(true) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sets the page's size, as a laptop or a wall screen shows it.
fn resize(browser: &mut Browser, width: u32, height: u32) {
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        true,
    );
}

#[test]
fn charts_and_the_alert_explorer_show_what_the_api_holds_and_link_by_clicks() {
    let Some((chromium, dir, site, agent)) =
        browser_site("charts_and_the_alert_explorer_show_what_the_api_holds_and_link_by_clicks")
    else {
        return;
    };
    let viewer = site.enroll_viewer("soc");
    let collector = site.serve();
    // Three stops from one master and a listen-only from another, with a message a
    // spreadsheet would run.
    let mut alerts = Vec::new();
    for n in 0..3 {
        let mut a = kiln_stop();
        a.ts = Timestamp::from_secs(1_790_000_000 + n * 600);
        a.first_ts = a.ts;
        a.id = a.derived_id(0);
        alerts.push(a);
    }
    let mut listen = agent_alert(
        "hall-1",
        &rule::FORCE_LISTEN_ONLY,
        Timestamp::from_secs(1_790_000_100),
        "192.168.1.11:50000".parse().unwrap(),
        "=cmd|' /C calc'!A0".into(),
    );
    listen.dst_ip = "192.168.1.20".parse().unwrap();
    listen.id = listen.derived_id(0);
    alerts.push(listen.clone());
    ingest(&collector, &agent, json!(alerts), json!([]));

    let url = format!("{}/#token={viewer}", site.url());
    let mut browser = Browser::open(&chromium, &dir.path().join("chromium"), &url);
    browser.text_with(&["soc (viewer)"]);
    browser.eval("location.hash = '#/charts?range=7d'");
    let text = browser.text_with(&[
        "ALERTS OVER TIME",
        "program.umas_stop",
        "Change Operating Mode",
    ]);
    // The page shows what the API answers for the range the page chose.
    let shown = browser.eval(
        "[...document.querySelectorAll('#top-rules .bar')].map((b) => b.innerText.replace(/\\s+/g, ' ').trim())",
    );
    let range = browser.eval("location.hash.split('?')[1] || ''");
    assert_eq!(range, json!("range=7d"), "the view has its own URL");
    let q = browser.eval("chartRangeQuery()");
    let (status, top) = collector.client.get(
        &format!("/api/v1/stats/top?by=rule&limit=10&{}", q.as_str().unwrap()),
        Some(&viewer),
    );
    assert_eq!(status, 200, "{top}");
    let expected: Vec<String> = top["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r["value"].as_str().unwrap(), r["count"]))
        .collect();
    assert_eq!(shown, json!(expected), "{text}");
    assert_eq!(expected[0], "program.umas_stop 3");
    // Bars are as long as their counts (3 and 1).
    let widths = browser.eval(
        "[...document.querySelectorAll('#top-rules .fill')].map((f) => Math.round(f.getBoundingClientRect().width))",
    );
    let widths: Vec<f64> = serde_json::from_value(widths).unwrap();
    assert!(
        widths[0] > 0.0 && (widths[1] * 3.0 - widths[0]).abs() <= 3.0,
        "{widths:?}"
    );
    // Every hour's bar adds up to what the timeline endpoint holds: four alerts drawn.
    let drawn = browser.eval(
        "[...document.querySelectorAll('#timeline rect title')].map((t) => +t.textContent.split(': ')[1].split(' ')[0]).reduce((a, b) => a + b, 0)",
    );
    assert_eq!(drawn, json!(4));
    // Techniques seen are links in the matrix, with their counts.
    let seen = browser.eval(
        "[...document.querySelectorAll('#matrix a.t')].map((a) => a.textContent.trim()).sort()",
    );
    let seen: Vec<String> = serde_json::from_value(seen).unwrap();
    assert!(
        seen.contains(&"3Change Operating Mode".to_string()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"1Device Restart/Shutdown".to_string()),
        "{seen:?}"
    );
    assert!(
        browser
            .text_with(&["MITRE"])
            .contains("The MITRE Corporation")
    );

    let out_dir = workspace_root().join("target/test-data");
    std::fs::create_dir_all(&out_dir).unwrap();
    for (width, height, name) in [(1366, 768, "laptop"), (3840, 2160, "wall")] {
        resize(&mut browser, width, height);
        let fits = browser.eval("document.documentElement.scrollWidth <= window.innerWidth");
        assert_eq!(
            fits,
            json!(true),
            "the charts fit {width}x{height} without scrolling sideways"
        );
        browser.screenshot(&out_dir.join(format!("dashboard-charts-{name}.png")));
    }
    resize(&mut browser, 1400, 1100);

    // A click on a rule opens the explorer on that rule's alerts in the range.
    browser.eval("document.querySelector('#top-rules .bar a').click()");
    assert!(wait_for(
        &mut browser,
        "location.hash.startsWith('#/alerts?rule=program.umas_stop') && document.querySelectorAll('#explorer tbody tr').length === 3"
    ));
    assert_eq!(
        browser.eval("document.querySelector('#filters').elements.rule.value"),
        json!("program.umas_stop")
    );
    // The export link exports what is shown; cells a spreadsheet would run are neutralised.
    browser.eval("location.hash = '#/alerts?agent=hall-1'");
    assert!(wait_for(
        &mut browser,
        "document.querySelectorAll('#explorer tbody tr').length === 4"
    ));
    let csv =
        browser.eval("fetch(document.querySelector('#export-csv').href).then((r) => r.text())");
    let csv = csv.as_str().unwrap();
    assert_eq!(csv.lines().count(), 5, "a header and four alerts:\n{csv}");
    assert!(csv.contains(&listen.id), "{csv}");
    assert!(csv.contains("'=cmd|' /C calc'!A0"), "{csv}");
    browser.screenshot(&out_dir.join("dashboard-alerts.png"));
    // A filter the API refuses is shown with the API's reason.
    browser.eval("location.hash = '#/alerts?asset=not-an-address'");
    let text = browser.text_with(&["asset: \"not-an-address\" is not valid"]);
    assert!(text.contains("expected an IP address"), "{text}");
}

#[test]
fn incident_and_asset_pages_link_by_clicks_and_an_admin_resolves_with_a_note() {
    let Some((chromium, dir, site, agent)) =
        browser_site("incident_and_asset_pages_link_by_clicks_and_an_admin_resolves_with_a_note")
    else {
        return;
    };
    let collector = site.serve();
    let mut alerts = Vec::new();
    for n in 0..3 {
        let mut a = kiln_stop();
        a.ts = Timestamp::from_secs(1_800_000_000 + n * 60);
        a.first_ts = a.ts;
        a.id = a.derived_id(0);
        alerts.push(a);
    }
    let mut plc = AssetObservation::new(
        "192.168.1.20".parse().unwrap(),
        Timestamp::from_secs(1_800_000_000),
    );
    plc.slave = true;
    plc.name = Some("kiln-plc".into());
    plc.vendor = Some("Schneider Electric".into());
    plc.functions = vec![3, 90];
    ingest(&collector, &agent, json!(alerts), json!([plc]));

    let url = format!("{}/#token={}", site.url(), site.admin);
    let mut browser = Browser::open(&chromium, &dir.path().join("chromium"), &url);
    browser.text_with(&["admin (admin)", "program.umas_stop"]);
    // Overview -> incident.
    assert!(wait_for(
        &mut browser,
        "!!document.querySelector('#incidents a[href^=\"#/incident/\"]')"
    ));
    browser.eval("document.querySelector('#incidents a[href^=\"#/incident/\"]').click()");
    let text = browser.text_with(&["Incident #1", "Change Operating Mode", "ALERTS, DECODED"]);
    assert!(
        text.contains("Inhibit Response Function"),
        "tactic names:\n{text}"
    );
    assert!(wait_for(
        &mut browser,
        "document.querySelectorAll('#incident-alerts tbody tr').length === 3 && document.querySelectorAll('#incident-timeline circle').length === 3"
    ));
    // A new alert of the incident appears on its page by itself (live updates, no reload).
    browser.eval("window.notReloaded = true");
    let mut later = kiln_stop();
    later.ts = Timestamp::from_secs(1_800_000_000 + 3 * 60);
    later.first_ts = later.ts;
    later.id = later.derived_id(0);
    ingest(&collector, &agent, json!([later]), json!([]));
    assert!(wait_for(
        &mut browser,
        "document.querySelectorAll('#incident-alerts tbody tr').length === 4 && window.notReloaded === true"
    ));
    let out_dir = workspace_root().join("target/test-data");
    std::fs::create_dir_all(&out_dir).unwrap();
    browser.screenshot(&out_dir.join("dashboard-incident.png"));
    // Incident -> its target's asset page.
    browser
        .eval("document.querySelector('#incident-head a[href=\"#/asset/192.168.1.20\"]').click()");
    let text = browser.text_with(&["kiln-plc (192.168.1.20)", "Schneider Electric"]);
    assert!(text.contains("read_holding_registers (3)"), "{text}");
    assert!(wait_for(
        &mut browser,
        "document.querySelectorAll('#asset-incidents tbody tr').length === 1"
    ));
    browser.screenshot(&out_dir.join("dashboard-asset.png"));
    // Asset -> back to the incident, resolved there with a note.
    browser.eval("document.querySelector('#asset-incidents a[href^=\"#/incident/\"]').click()");
    assert!(wait_for(
        &mut browser,
        "location.hash === '#/incident/1' && !document.querySelector('#incident-actions').hidden"
    ));
    browser.eval("document.querySelector('#incident-note').value = 'stop was the planned kiln shutdown'; document.querySelector('#incident-resolve').click()");
    let text = browser.text_with(&["stop was the planned kiln shutdown"]);
    assert!(text.contains("resolved by admin"), "{text}");
    let (_, incident) = collector
        .client
        .get("/api/v1/incidents/1", Some(&site.admin));
    assert_eq!(incident["incident"]["state"], "resolved");
    assert_eq!(
        incident["incident"]["history"][0]["note"],
        "stop was the planned kiln shutdown"
    );
}

/// Records the attack capture (real tokio-modbus peers) and replays it into the collector as
/// agent hall-1 with the capture's policy, as a SPAN-port agent would report it.
fn replay_attack(site: &Site, token: &str, dir: &Path) {
    let pcap = dir.join("attack.pcap");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(otwatch_tests::attack::record_attack(&pcap))
        .unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, otwatch_tests::attack::POLICY).unwrap();
    let out = Command::new(otwatch_tests::binary("otwatch-agent"))
        .args([
            "replay",
            "--no-progress",
            "--agent-name",
            "hall-1",
            "--pcap",
        ])
        .arg(&pcap)
        .arg("--policy")
        .arg(&policy)
        .args(["--collector", &site.url(), "--ca"])
        .arg(site.ca())
        .arg("--outbox")
        .arg(dir.join("outbox"))
        .env("OTWATCH_COLLECTOR_TOKEN", token)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_map_of_a_replayed_attack_leads_by_clicks_to_the_asset_its_incident_and_its_packets() {
    let Some((chromium, dir, site, agent)) = browser_site(
        "the_map_of_a_replayed_attack_leads_by_clicks_to_the_asset_its_incident_and_its_packets",
    ) else {
        return;
    };
    let viewer = site.enroll_viewer("soc");
    let collector = site.serve();
    replay_attack(&site, &agent, dir.path());
    // A host no agent saw talk, only an alert names: a scan of the PLC.
    let mut scan = agent_alert(
        "hall-1",
        &rule::READ_DEVICE_ID,
        Timestamp::from_secs(1_800_000_000),
        "192.168.1.66:41000".parse().unwrap(),
        "device identification read by an unknown host".into(),
    );
    scan.dst_ip = "192.168.1.20".parse().unwrap();
    scan.id = scan.derived_id(0);
    ingest(&collector, &agent, json!([scan]), json!([]));
    let (status, map) = collector.client.get("/api/v1/map", Some(&viewer));
    assert_eq!(status, 200, "{map}");
    let conversation = map["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "conversation")
        .cloned()
        .unwrap_or_else(|| panic!("the replay reported the conversation: {map}"));
    assert_eq!(
        (&conversation["master"], &conversation["slave"]),
        (&json!("192.168.1.10"), &json!("192.168.1.20"))
    );
    assert_eq!(conversation["worst"], "critical", "{conversation}");

    let (_, stops) = collector
        .client
        .get("/api/v1/alerts?rule=program.umas_stop", Some(&viewer));
    // The agent sent the packets behind it after it (evidence is on by default).
    let stop = stops["alerts"][0].clone();

    let url = format!("{}/#token={viewer}", site.url());
    let mut browser = Browser::open(&chromium, &dir.path().join("chromium"), &url);
    browser.text_with(&["soc (viewer)"]);
    browser.eval("location.hash = '#/map'");
    assert!(wait_for(
        &mut browser,
        "document.querySelectorAll('#map .node').length === 3 && document.querySelectorAll('#map .edge').length === 2"
    ));
    // Zones from the policy, the scanner highlighted as seen only in alerts.
    let text = browser.text_with(&["zone control (1)", "zone kiln (1)", "kiln-plc"]);
    assert!(text.contains("not in the inventory (1)"), "{text}");
    assert_eq!(
        browser.eval("document.querySelector('#map .node.alerts-only').dataset.ip"),
        json!("192.168.1.66")
    );
    // The PLC's ring has the colour of its worst open incident.
    assert_eq!(
        browser.eval("getComputedStyle(document.querySelector('#map .node[data-ip=\"192.168.1.20\"] .worst')).stroke"),
        browser.eval("getComputedStyle(document.querySelector('.sev.critical')).backgroundColor"),
    );
    // Search finds a host by name.
    browser.eval(
        "(() => { const s = document.querySelector('#map-search'); s.value = 'kiln'; s.dispatchEvent(new Event('input')); s.dispatchEvent(new KeyboardEvent('keydown', { key: 'Enter' })); })()",
    );
    assert_eq!(
        browser.eval("[...document.querySelectorAll('#map .node.match')].map((n) => n.dataset.ip)"),
        json!(["192.168.1.20"])
    );
    assert_eq!(
        browser.eval("document.activeElement.dataset.ip"),
        json!("192.168.1.20")
    );
    // Zoom and pan from the keyboard: + closer, an arrow right, 0 back to the whole map.
    let view_box = |browser: &mut Browser| -> Vec<f64> {
        let text = browser.eval("document.querySelector('#map-svg').getAttribute('viewBox')");
        text.as_str()
            .unwrap()
            .split(' ')
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let key = |browser: &mut Browser, key: &str| {
        browser.eval(&format!(
            "document.querySelector('#map').focus(); document.querySelector('#map').dispatchEvent(new KeyboardEvent('keydown', {{ key: '{key}', bubbles: true }}))"
        ));
    };
    key(&mut browser, "0");
    let whole = view_box(&mut browser);
    key(&mut browser, "+");
    let closer = view_box(&mut browser);
    assert!(
        closer[2] < whole[2],
        "{closer:?} is not closer than {whole:?}"
    );
    key(&mut browser, "ArrowRight");
    let right = view_box(&mut browser);
    assert!(
        right[0] > closer[0] && right[2] == closer[2],
        "{right:?} after {closer:?}"
    );
    key(&mut browser, "0");
    assert_eq!(view_box(&mut browser), whole);
    let out_dir = workspace_root().join("target/test-data");
    std::fs::create_dir_all(&out_dir).unwrap();
    browser.eval("document.querySelector('#map-fit').click()");
    browser.screenshot(&out_dir.join("dashboard-map.png"));
    // A line opens the alerts between its two hosts.
    browser.eval(
        "document.querySelector('#map .edge.conversation line.hit').dispatchEvent(new MouseEvent('click', { bubbles: true }))",
    );
    assert!(wait_for(
        &mut browser,
        "location.hash.startsWith('#/alerts?asset=192.168.1.10&peer=192.168.1.20') && document.querySelectorAll('#explorer tbody tr').length > 0"
    ));
    // Map -> asset -> incident, by clicks.
    browser.eval("location.hash = '#/map'");
    assert!(wait_for(
        &mut browser,
        "!!document.querySelector('#map .node[data-ip=\"192.168.1.20\"]')"
    ));
    browser.eval(
        "document.querySelector('#map .node[data-ip=\"192.168.1.20\"] circle').dispatchEvent(new MouseEvent('click', { bubbles: true }))",
    );
    let text = browser.text_with(&["kiln-plc (192.168.1.20)", "INCIDENTS", "holding_registers"]);
    assert!(text.contains("program.umas_stop"), "{text}");
    // The registers the workstation read and wrote, from the agent's conversation reports.
    assert!(
        wait_for(
            &mut browser,
            "document.querySelectorAll('#asset-conversations tbody tr').length === 1"
        ),
        "{text}"
    );
    browser.eval(
        "[...document.querySelectorAll('#asset-incidents tbody tr')].find((r) => r.innerText.includes('program.umas_stop')).querySelector('a').click()",
    );
    let text = browser.text_with(&["Change Operating Mode", "ALERTS, DECODED"]);
    assert!(text.contains("Schneider UMAS stop PLC"), "{text}");
    assert!(wait_for(
        &mut browser,
        "document.querySelectorAll('#incident-alerts tbody tr').length > 0"
    ));
    // The packets the agent kept behind the alert: downloaded in the page, read by the
    // project's own reader, holding the alert's frame.
    let href =
        browser.eval("(document.querySelector('#incident-alerts a.pcap') || {}).href || null");
    let href = href.as_str().expect("the stop alert has a pcap link");
    assert!(
        href.ends_with(&format!(
            "/api/v1/alerts/{}/pcap",
            stop["id"].as_str().unwrap()
        )),
        "{href}"
    );
    let downloaded = browser.eval(&format!(
        "fetch('{href}').then((r) => r.arrayBuffer()).then((b) => btoa(String.fromCharCode(...new Uint8Array(b))))"
    ));
    let pcap = base64::engine::general_purpose::STANDARD
        .decode(downloaded.as_str().unwrap())
        .unwrap();
    let frames = frames_of(&pcap);
    // libpcap, the reference reader of the classic format (what tcpdump and Wireshark's
    // pcap support stand on), reads every frame of it.
    let file = dir.path().join("downloaded.pcap");
    std::fs::write(&file, &pcap).unwrap();
    match Command::new("tcpdump")
        .arg("-nn")
        .arg("-r")
        .arg(&file)
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "tcpdump: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let lines = String::from_utf8_lossy(&out.stdout).lines().count();
            assert_eq!(lines, frames.len(), "tcpdump reads every frame");
        }
        Err(_) => eprintln!(
            "SKIPPED the tcpdump check of the downloaded pcap: tcpdump is not installed (apt-get install tcpdump; CI installs it)"
        ),
    }
    let stop_ts = stop["ts"].as_str().unwrap().parse::<Timestamp>().unwrap();
    assert!(
        frames.iter().any(|(ts, _)| *ts == stop_ts),
        "the pcap holds the alert's frame at {stop_ts}: {:?}",
        frames
            .iter()
            .map(|(ts, _)| ts.to_string())
            .collect::<Vec<_>>()
    );
}

/// Every frame of a capture, with its time, read by the project's own capture reader.
fn frames_of(capture: &[u8]) -> Vec<(Timestamp, Vec<u8>)> {
    use otwatch_packet::capture_file::{CaptureDecoder, InMemory};
    let mut input = InMemory::new(capture, &[]);
    let mut decoder = CaptureDecoder::new();
    let mut out = Vec::new();
    while let Some(p) = decoder.next_packet(&mut input).unwrap() {
        out.push((p.ts, p.data.to_vec()));
    }
    out
}

/// Agent hall-1's alert: 192.168.1.10 writes 7 to holding register 100 of the kiln PLC, which
/// no rule allows (the frame included, as an agent sends it).
fn kiln_write() -> otwatch_rules::alert::Alert {
    let mut alert = agent_alert(
        "hall-1",
        &rule::UNAUTHORIZED_WRITE,
        Timestamp::from_secs(1_800_000_000),
        "192.168.1.10:50000".parse().unwrap(),
        "function write_single_register not allowed".into(),
    );
    alert.dst_ip = "192.168.1.20".parse().unwrap();
    alert.dst_port = 502;
    alert.unit_id = Some(1);
    alert.function_code = Some(6);
    alert.function = Some("write_single_register".into());
    (alert.address, alert.quantity, alert.values) = (Some(100), Some(1), Some(vec![7]));
    alert.evidence = Some("000100000006010600640007".into());
    alert.id = alert.derived_id(0);
    alert
}

/// Runs `script` (a click or a value set) once `ready` is true in the page.
fn act(browser: &mut Browser, ready: &str, script: &str) {
    assert!(wait_for(browser, ready), "not ready: {ready}");
    browser.eval(script);
}

#[test]
fn an_admin_edits_a_policy_and_allows_an_alert_from_its_incident_page() {
    let Some((chromium, dir, site, agent)) =
        browser_site("an_admin_edits_a_policy_and_allows_an_alert_from_its_incident_page")
    else {
        return;
    };
    let collector = site.serve();
    // hall-1 follows the collector's policy.
    let heartbeat = json!({ "agent": "hall-1", "version": "test", "uptime_s": 1, "policy_source": "collector", "policy_language": 1 });
    assert_eq!(
        collector
            .client
            .post("/api/v1/heartbeat", Some(&agent), &heartbeat)
            .0,
        200
    );
    ingest(&collector, &agent, json!([kiln_write()]), json!([]));
    let url = format!("{}/#token={}", site.url(), site.admin);
    let mut browser = Browser::open(&chromium, &dir.path().join("chromium"), &url);
    browser.text_with(&["admin (admin)"]);

    // A new policy: a mistake is refused naming its line; the fixed text is stored.
    browser.eval("location.hash = '#/policies/kiln'");
    let broken = "version = 1\\n[[allow]]\\nfrom = \\\"nowhere\\\"\\nto = \\\"any\\\"\\nfunctions = \\\"read\\\"\\n";
    act(
        &mut browser,
        "!document.querySelector('#policy-detail').hidden && !document.querySelector('#policy-save').hidden",
        &format!(
            "document.querySelector('#policy-text').value = \"{broken}\"; document.querySelector('#policy-save').click()"
        ),
    );
    assert!(
        wait_for(
            &mut browser,
            "document.querySelector('#policy-result').textContent.startsWith('Refused: line 3, column 8')"
        ),
        "{}",
        browser.text_with(&["Refused"])
    );
    let good =
        "version = 1\\n\\n[[asset]]\\nname = \\\"kiln-plc\\\"\\naddress = \\\"192.168.1.20\\\"\\n";
    browser.eval(&format!("document.querySelector('#policy-text').value = \"{good}\"; document.querySelector('#policy-save').click()"));
    assert!(wait_for(
        &mut browser,
        "document.querySelector('#policy-result').textContent === 'Version 1 is in force.' && document.querySelectorAll('#policies tbody tr').length === 1"
    ));
    act(
        &mut browser,
        "!document.querySelector('#policy-assign-box').hidden",
        "document.querySelector('#policy-assign-agent').value = 'hall-1'; document.querySelector('#policy-assign').click()",
    );
    assert!(wait_for(
        &mut browser,
        "document.querySelector('#policy-assign-result').textContent === 'Assigned to hall-1.' && document.querySelector('#policy-assignments tbody').innerText.includes('hall-1\tassigned\tadmin')"
    ));

    // The incident page offers the change that allows its alert; applying it is version 2.
    browser.eval("location.hash = '#/incident/1'");
    act(
        &mut browser,
        "!!document.querySelector('#incident-alerts button.allow')",
        "document.querySelector('#incident-alerts button.allow').click()",
    );
    assert!(wait_for(
        &mut browser,
        "document.querySelector('#allow-diff').textContent.includes('+[[allow]]') && !document.querySelector('#allow-apply').hidden"
    ));
    let out_dir = workspace_root().join("target/test-data");
    std::fs::create_dir_all(&out_dir).unwrap();
    browser.screenshot(&out_dir.join("dashboard-allow-this.png"));
    browser.eval("document.querySelector('#allow-apply').click()");
    assert!(wait_for(
        &mut browser,
        "document.querySelector('#allow-result').textContent.startsWith('Version 2 of kiln is in force')"
    ));

    // The history shows both versions, who made them, and the diff.
    browser.eval("location.hash = '#/policies/kiln'");
    assert!(wait_for(
        &mut browser,
        "document.querySelectorAll('#policy-history .version').length === 2 && document.querySelector('#policy-history pre.diff').textContent.includes('+from = \"192.168.1.10\"')"
    ));
    let (_, history) = collector
        .client
        .get("/api/v1/policies/kiln/history", Some(&site.admin));
    assert_eq!(history[0]["version"], 2);
    assert_eq!(history[0]["author"], "admin");
}
