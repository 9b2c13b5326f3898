//! The collector's certificates on a real process: lifetimes a browser and an auditor accept,
//! `serve` without the CA key (it can live offline), and `rotate-cert` served without a
//! restart, with its expiry exported for Prometheus.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use otwatch_tests::collector::Site;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// The certificate the collector presents in a handshake, verified against its CA.
fn presented(site: &Site) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(site.ca()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(site.addr).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    conn.peer_certificates().unwrap()[0].to_vec()
}

fn on_disk(site: &Site) -> Vec<u8> {
    CertificateDer::from_pem_file(site.data.join("server.pem"))
        .unwrap()
        .to_vec()
}

fn rotate(site: &Site, args: &[&str]) -> std::process::Output {
    let mut all = vec!["rotate-cert"];
    all.extend_from_slice(args);
    site.command(&all)
}

fn days_from_now(unix: f64) -> f64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    (unix - now) / 86_400.0
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart_while_the_ca_key_stays_offline() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::init(dir.path());
    // The CA key goes offline before the collector ever runs.
    let offline = dir.path().join("offline-ca.key");
    std::fs::rename(site.data.join("ca.key"), &offline).unwrap();
    let c = site.serve();
    let first = presented(&site);
    assert_eq!(first, on_disk(&site));
    let not_after = c
        .client
        .metric("otwatch_collector_certificate_not_after_timestamp_seconds")
        .unwrap();
    let days = days_from_now(not_after);
    assert!((824.0..=825.0).contains(&days), "valid for {days} days");

    // Without the key, rotation says where it looked and what it expects.
    let refused = rotate(&site, &[]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--ca-key"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let done = rotate(&site, &["--ca-key", offline.to_str().unwrap()]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let rotated = on_disk(&site);
    assert_ne!(rotated, first);

    let deadline = Instant::now() + Duration::from_secs(15);
    while presented(&site) != rotated {
        assert!(
            Instant::now() < deadline,
            "the rotated certificate is not served 15 s later"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Agents, which trust the CA, connect as before, under the same names.
    assert_eq!(c.client.get("/healthz", None).0, 200);
    let audit = std::fs::read_to_string(site.data.join("audit.log")).unwrap();
    assert!(audit.contains(r#""event":"rotate_cert""#), "{audit}");
    assert!(audit.contains("127.0.0.1"), "{audit}");
}
