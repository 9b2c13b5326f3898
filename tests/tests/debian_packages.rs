//! The Debian packages (`deploy/debian/build`), installed for real with dpkg, as on a fresh
//! sensor and server: files, system users, modes, `--version`; the installed units pass
//! `systemd-analyze verify` and rate at most 2.0 in `systemd-analyze security`; lintian finds
//! nothing but what the packages explain; each bill of materials lists exactly the crates
//! Cargo.lock resolves for its binary. Then state, written by the packaged binaries as their
//! service users (a collector's data folder from `init` and `enroll`, an agent's outbox
//! holding an undelivered alert), and an edited configuration survive an upgrade to a package
//! of a higher version built from the same tree: after it, the collector serves and the agent
//! delivers what waited in its outbox. Remove keeps state and configuration; purge removes
//! them.
//!
//! Needs root (dpkg, service users) and the packages, which CI builds before the tests
//! (`.ci/run`: `deploy/debian/build --profile dev`, then again with a higher version into
//! `target/debian/next`) and says so with OTWATCH_PACKAGE_TEST=1, which turns a skip into a
//! failure. Elsewhere the test says why it skips.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use otwatch_tests::collector::{Client, free_addr};
use otwatch_tests::recorder::{Chunk, Endpoints, write_pcap};
use otwatch_tests::workspace_root;

const PACKAGES: [&str; 2] = ["otwatch-collector", "otwatch-agent"];

/// The package files of one build: collector first (an agent host may carry both).
fn debs_in(dir: &Path) -> Option<Vec<PathBuf>> {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    PACKAGES
        .iter()
        .map(|pkg| {
            entries
                .iter()
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{pkg}_")))
                })
                .cloned()
        })
        .collect()
}

/// The two builds, or why the test cannot run here.
fn packages() -> Result<(Vec<PathBuf>, Vec<PathBuf>), String> {
    if ok("id", &["-u"]).trim() != "0" {
        return Err("needs root (dpkg -i, service users)".into());
    }
    let dir = workspace_root().join("target/debian");
    let (Some(now), Some(next)) = (debs_in(&dir), debs_in(&dir.join("next"))) else {
        return Err(format!(
            "no packages in {0} and {0}/next (deploy/debian/build, twice: see .ci/run)",
            dir.display()
        ));
    };
    for pkg in PACKAGES {
        let status = Command::new("dpkg-query")
            .args(["-W", "-f", "${db:Status-Status}", pkg])
            .output()
            .map_err(|e| format!("dpkg-query: {e}"))?;
        // Unknown to dpkg, or purged ("not-installed"): anything else is someone's install.
        let state = String::from_utf8_lossy(&status.stdout).trim().to_string();
        if status.status.success() && !state.is_empty() && state != "not-installed" {
            return Err(format!(
                "{pkg} is on this machine ({state}): not touching it"
            ));
        }
    }
    // A hand-made install's folders would be purged with the packages'.
    for path in [
        "/etc/otwatch",
        "/var/lib/otwatch-agent",
        "/var/lib/otwatch-collector",
        "/var/log/otwatch",
    ] {
        if Path::new(path).exists() {
            return Err(format!("{path} exists on this machine: not touching it"));
        }
    }
    Ok((now, next))
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `args` run as `user` (its own group), as systemd would run the service.
fn as_user(user: &str, program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={user}"),
        &format!("--regid={user}"),
        "--init-groups",
        "--",
        program,
    ])
    .args(args);
    cmd
}

fn dpkg(args: &[&str], debs: &[PathBuf]) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(debs.iter().map(|p| p.to_str().unwrap()));
    ok("dpkg", &all);
}

fn owner_and_mode(path: &str) -> (String, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let user = ok("id", &["-nu", &meta.uid().to_string()]);
    (user.trim().to_string(), meta.permissions().mode() & 0o7777)
}

/// What Cargo.lock resolves for `package` on this host: every crate reached through normal
/// (not dev, not build) dependencies, as `cargo metadata` resolves the workspace.
fn resolved(package: &str) -> BTreeSet<(String, String)> {
    let host = ok("rustc", &["-vV"])
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .unwrap();
    let out = Command::new("cargo")
        .current_dir(workspace_root())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--filter-platform",
            &host,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let name_of = |id: &str| {
        meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["version"].as_str().unwrap().to_string(),
                )
            })
            .unwrap()
    };
    let nodes = meta["resolve"]["nodes"].as_array().unwrap();
    let root = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == package)
        .map(|p| p["id"].as_str().unwrap().to_string())
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        let node = nodes.iter().find(|n| n["id"] == id.as_str()).unwrap();
        for dep in node["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let pkg = dep["pkg"].as_str().unwrap().to_string();
            if normal && seen.insert(pkg.clone()) {
                todo.push(pkg);
            }
        }
    }
    seen.iter().map(|id| name_of(id)).collect()
}

fn check_bill_of_materials() {
    for pkg in PACKAGES {
        let path = format!("/usr/share/{pkg}/{pkg}.cdx.json");
        let bom: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(bom["bomFormat"], "CycloneDX");
        assert_eq!(bom["metadata"]["component"]["name"], pkg);
        let listed: BTreeSet<(String, String)> = bom["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["version"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let expected = resolved(pkg);
        assert!(expected.len() > 50, "{expected:?}");
        assert_eq!(
            listed.difference(&expected).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "{pkg}: listed, not resolved"
        );
        assert_eq!(
            expected.difference(&listed).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "{pkg}: resolved, not listed"
        );
        // Every component says its license, for the security team's review.
        let unlicensed: Vec<&str> = bom["components"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["licenses"].as_array().is_none_or(|l| l.is_empty()))
            .filter_map(|c| c["name"].as_str())
            .filter(|n| !n.starts_with("otwatch-"))
            .collect();
        assert!(
            unlicensed.is_empty(),
            "{pkg}: no license for {unlicensed:?}"
        );
    }
}

fn check_installed(version: &str) {
    for pkg in PACKAGES {
        let installed = ok("dpkg-query", &["-W", "-f", "${Version}", pkg]);
        assert_eq!(installed, version);
        let printed = ok(&format!("/usr/bin/{pkg}"), &["--version"]);
        let commit = ok(
            "git",
            &[
                "-C",
                workspace_root().to_str().unwrap(),
                "rev-parse",
                "--short=12",
                "HEAD",
            ],
        );
        assert!(
            printed.starts_with(&format!(
                "{pkg} {} (commit {}, ",
                env!("CARGO_PKG_VERSION"),
                commit.trim()
            )),
            "{printed}"
        );
        assert!(printed.trim_end().ends_with(" build)"), "{printed}");
        assert_eq!(
            owner_and_mode(&format!("/usr/bin/{pkg}")),
            ("root".into(), 0o755)
        );
        assert_eq!(
            owner_and_mode(&format!("/lib/systemd/system/{pkg}.service")),
            ("root".into(), 0o644)
        );
    }
    ok("getent", &["passwd", "otwatch"]);
    ok("getent", &["passwd", "otwatch-collector"]);
    assert_eq!(
        owner_and_mode("/var/lib/otwatch-agent"),
        ("otwatch".into(), 0o700)
    );
    assert_eq!(
        owner_and_mode("/var/lib/otwatch-collector"),
        ("otwatch-collector".into(), 0o700)
    );
    assert_eq!(
        owner_and_mode("/var/log/otwatch"),
        ("otwatch-collector".into(), 0o750)
    );
    assert_eq!(
        owner_and_mode("/etc/otwatch/collector/collector.toml"),
        ("root".into(), 0o644)
    );
    let conffiles = ok("dpkg-query", &["-W", "-f", "${Conffiles}", "otwatch-agent"]);
    assert!(
        conffiles.contains("/etc/otwatch/agent/policies/example-plant.toml"),
        "{conffiles}"
    );
    assert!(
        conffiles.contains("/etc/otwatch/agent/agent.toml"),
        "{conffiles}"
    );
}

fn check_units() {
    let units = PACKAGES.map(|p| format!("/lib/systemd/system/{p}.service"));
    ok("systemd-analyze", &["verify", &units[0], &units[1]]);
    for unit in &units {
        let out = run("systemd-analyze", &["security", "--offline=true", unit]);
        let text = String::from_utf8_lossy(&out.stdout);
        let level: f64 = text
            .lines()
            .find_map(|l| l.split("exposure level for ").nth(1))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{unit}: {text}"));
        assert!(level <= 2.0, "{unit}: exposure {level}");
    }
}

fn check_lintian(debs: &[PathBuf], required: bool) {
    if Command::new("lintian").arg("--version").output().is_err() {
        assert!(!required, "lintian is missing (.ci/run installs it)");
        println!("lintian not installed: not checked");
        return;
    }
    let mut args = vec!["--fail-on", "warning", "--tag-display-limit", "0"];
    args.extend(debs.iter().map(|p| p.to_str().unwrap()));
    ok("lintian", &args);
}

/// A capture of one master forcing a PLC into listen-only mode (diag.force_listen_only).
fn attack_pcap(path: &Path) {
    let start = Instant::now();
    let adu = |pdu: &[u8]| {
        let mut v = vec![0, 1, 0, 0, 0, (pdu.len() + 1) as u8, 1];
        v.extend_from_slice(pdu);
        v
    };
    let chunks = [Chunk {
        at: start,
        to_server: true,
        bytes: adu(&[0x08, 0x00, 0x04, 0x00, 0x00]),
    }];
    let endpoints = Endpoints {
        client: ([10, 0, 0, 5], 50_000),
        server: ([10, 0, 0, 9], 502),
    };
    write_pcap(path, &chunks, endpoints).unwrap();
}

/// The packaged collector, run as its service user on `addr`.
fn serve(addr: &str) -> Child {
    as_user(
        "otwatch-collector",
        "/usr/bin/otwatch-collector",
        &[
            "serve",
            "--config",
            "/etc/otwatch/collector/collector.toml",
            "--listen",
            addr,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap()
}

/// The packaged agent replaying `pcap` as its service user with the packaged configuration.
fn replay(pcap: &Path, drain: &str) -> Output {
    as_user(
        "otwatch",
        "/usr/bin/otwatch-agent",
        &[
            "replay",
            "--no-progress",
            "--config",
            "/etc/otwatch/agent/agent.toml",
            "--pcap",
            pcap.to_str().unwrap(),
            "--drain-timeout",
            drain,
        ],
    )
    .output()
    .unwrap()
}

/// Purges the packages and stops a collector left running, whatever way the test ends: a
/// failed run leaves the machine as it found it.
struct Cleanup(Option<Child>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = run("dpkg", &["-P", "otwatch-agent", "otwatch-collector"]);
    }
}

#[test]
fn the_packages_install_keep_state_and_configuration_across_an_upgrade_and_purge_cleanly() {
    let required = std::env::var("OTWATCH_PACKAGE_TEST").is_ok_and(|v| v == "1");
    let (now, next) = match packages() {
        Ok(debs) => debs,
        Err(why) => {
            assert!(!required, "OTWATCH_PACKAGE_TEST=1 but {why}");
            println!("skipped: {why}");
            return;
        }
    };
    let version = |debs: &[PathBuf]| {
        ok("dpkg-deb", &["-f", debs[0].to_str().unwrap(), "Version"])
            .trim()
            .to_string()
    };
    let (v1, v2) = (version(&now), version(&next));
    assert_ne!(v1, v2);
    ok("dpkg", &["--compare-versions", &v2, "gt", &v1]);

    // A fresh install, as the README's deployment section does it.
    let mut cleanup = Cleanup(None);
    dpkg(&["-i"], &now);
    check_installed(&v1);
    check_units();
    check_bill_of_materials();
    check_lintian(&now, required);

    // The collector's data folder, made by root: every file is the service user's.
    let work = tempfile::tempdir().unwrap();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let addr = free_addr().to_string();
    let url = format!("https://{addr}");
    ok("otwatch-collector", &["init", "--name", "ci.plant.example"]);
    let enrolled = work.path().join("hall-1");
    ok(
        "otwatch-collector",
        &[
            "enroll",
            "--agent",
            "hall-1",
            "--url",
            &url,
            "--out",
            enrolled.to_str().unwrap(),
        ],
    );
    let viewer = ok("otwatch-collector", &["enroll", "--viewer", "ci"]);
    let viewer = viewer
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap()
        .to_string();
    let strangers = ok(
        "find",
        &[
            "/var/lib/otwatch-collector",
            "!",
            "-user",
            "otwatch-collector",
        ],
    );
    assert!(strangers.is_empty(), "not the service user's: {strangers}");

    // The agent's files from enroll, copied as the deployment section says, and edited.
    let config = std::fs::read_to_string(enrolled.join("agent.toml"))
        .unwrap()
        .replace("interface = \"eth1\"", "interface = \"ens9\"");
    std::fs::write("/etc/otwatch/agent/agent.toml", &config).unwrap();
    ok(
        "install",
        &[
            "-m",
            "0640",
            "-g",
            "otwatch",
            enrolled.join("agent.token").to_str().unwrap(),
            "/etc/otwatch/agent/agent.token",
        ],
    );
    ok(
        "install",
        &[
            "-m",
            "0644",
            enrolled.join("ca.pem").to_str().unwrap(),
            "/etc/otwatch/agent/ca.pem",
        ],
    );

    // An alert the agent cannot deliver yet (the collector is not running): it waits in the
    // outbox.
    let pcap = work.path().join("attack.pcap");
    attack_pcap(&pcap);
    std::fs::set_permissions(&pcap, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = replay(&pcap, "1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        std::path::Path::new("/var/lib/otwatch-agent/outbox").is_dir(),
        "no outbox: {stderr}"
    );

    // The upgrade: a higher version of the same tree.
    dpkg(&["-i"], &next);
    check_installed(&v2);
    assert_eq!(
        std::fs::read_to_string("/etc/otwatch/agent/agent.toml").unwrap(),
        config,
        "the edited configuration is kept"
    );
    let strangers = ok(
        "find",
        &[
            "/var/lib/otwatch-collector",
            "/var/lib/otwatch-agent",
            "!",
            "(",
            "-user",
            "otwatch-collector",
            "-o",
            "-user",
            "otwatch",
            ")",
        ],
    );
    assert!(strangers.is_empty(), "{strangers}");

    // The upgraded collector opens the store init made; the upgraded agent delivers what
    // waited in its outbox (an empty capture adds nothing of its own).
    let collector = cleanup.0.insert(serve(&addr));
    let client = Client::new(&url, Path::new("/var/lib/otwatch-collector/ca.pem"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get("/healthz", None).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the upgraded collector did not come up"
        );
        assert!(
            collector.try_wait().unwrap().is_none(),
            "the upgraded collector exited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let empty = work.path().join("empty.pcap");
    write_pcap(
        &empty,
        &[],
        Endpoints {
            client: ([10, 0, 0, 5], 1),
            server: ([10, 0, 0, 9], 502),
        },
    )
    .unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = replay(&empty, "30");
    let (status, page) = client.get("/api/v1/alerts?limit=100", Some(&viewer));
    if let Some(mut collector) = cleanup.0.take() {
        let _ = collector.kill();
        let _ = collector.wait();
    }
    assert_eq!(status, 200, "{page}");
    let rules: Vec<&str> = page["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["rule"].as_str())
        .collect();
    assert!(
        rules.contains(&"diag.force_listen_only"),
        "the outbox's alert after the upgrade: {rules:?} ({})",
        String::from_utf8_lossy(&out.stderr)
    );

    // Remove keeps state and configuration; purge takes them.
    dpkg(&["-r", "otwatch-agent", "otwatch-collector"], &[]);
    for kept in [
        "/var/lib/otwatch-agent/outbox",
        "/var/lib/otwatch-collector/ca.pem",
        "/etc/otwatch/agent/agent.toml",
        "/etc/otwatch/collector/collector.toml",
    ] {
        assert!(Path::new(kept).exists(), "{kept} went on remove");
    }
    assert!(!Path::new("/usr/bin/otwatch-agent").exists());
    dpkg(&["-P", "otwatch-agent", "otwatch-collector"], &[]);
    for gone in [
        "/var/lib/otwatch-agent",
        "/var/lib/otwatch-collector",
        "/var/log/otwatch",
        "/etc/otwatch/agent/agent.toml",
        "/etc/otwatch/agent/agent.token",
        "/etc/otwatch/collector",
    ] {
        assert!(
            !Path::new(gone).exists(),
            "{gone} is still there after purge"
        );
    }
}

/// The same packages on a booted Debian 12 with systemd (CI itself runs none):
/// `tests/packaging/services-in-container.sh` boots a minimal bookworm in systemd-nspawn and
/// follows deploy/README.md; both services must run, the agent with CAP_NET_RAW alone and
/// online at the collector, an upgrade must restart them on the new version with the
/// configuration kept, and a purge must leave nothing.
#[test]
fn the_packages_run_as_services_on_a_booted_debian_12_through_an_upgrade() {
    let required = std::env::var("OTWATCH_PACKAGE_TEST").is_ok_and(|v| v == "1");
    let dir = workspace_root().join("target/debian");
    let why = if ok("id", &["-u"]).trim() != "0" {
        Some("needs root (systemd-nspawn)".to_string())
    } else if debs_in(&dir).is_none() || debs_in(&dir.join("next")).is_none() {
        Some(format!("no packages in {}", dir.display()))
    } else {
        ["debootstrap", "systemd-nspawn", "curl"]
            .into_iter()
            .find(|tool| {
                run("sh", &["-c", &format!("command -v {tool}")])
                    .stdout
                    .is_empty()
            })
            .map(|tool| format!("{tool} is missing (.ci/run installs it)"))
    };
    if let Some(why) = why {
        assert!(!required, "OTWATCH_PACKAGE_TEST=1 but {why}");
        println!("skipped: {why}");
        return;
    }
    let out = Command::new(workspace_root().join("tests/packaging/services-in-container.sh"))
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("PASS"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
