//! Connections to a real collector process: no peer on the network can use up its connections
//! or hold one without working, whether it floods from one address or from many.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use otwatch_tests::collector::{Client, Site};

/// Opens `count` TCP connections to `to` from each of `sources` (loopback addresses), sending
/// nothing on them.
fn idle_flood(sources: &[IpAddr], count: usize, to: SocketAddr) -> Vec<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut open = Vec::new();
        for source in sources {
            for _ in 0..count {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::new(*source, 0)).unwrap();
                if let Ok(stream) = socket.connect(to).await {
                    open.push(stream.into_std().unwrap());
                }
            }
        }
        open
    })
}

/// How long a fresh client waits for `/healthz`.
fn answer_time(client: &Client) -> (u16, Duration) {
    let started = Instant::now();
    let (status, _) = client.get("/healthz", None);
    (status, started.elapsed())
}

/// Waits up to `within` for a metric to reach `at_least`.
fn metric_reaches(client: &Client, series: &str, at_least: f64, within: Duration) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let value = client.metric(series).unwrap_or(0.0);
        if value >= at_least || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

#[test]
fn an_idle_connection_flood_from_one_source_leaves_a_client_answered_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::init(dir.path());
    // 128 descriptors, as the review ran it: 64 connections after the reserve.
    let collector = site.serve_limited(128, "", &[]);
    let flood = idle_flood(&[loopback(2)], 200, site.addr);
    assert!(
        flood.len() >= 100,
        "only {} connections opened",
        flood.len()
    );
    for _ in 0..3 {
        let client = Client::new(&site.url(), &site.ca());
        let (status, took) = answer_time(&client);
        assert_eq!(status, 200);
        assert!(took < Duration::from_secs(1), "answered after {took:?}");
    }
    let evicted = metric_reaches(
        &collector.client,
        "otwatch_collector_connections_evicted_total",
        100.0,
        Duration::from_secs(5),
    );
    assert!(evicted >= 100.0, "{evicted} idle connections closed");
}

#[test]
fn an_idle_connection_flood_from_many_sources_leaves_a_client_answered_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::init(dir.path());
    let collector = site.serve_limited(128, "", &[]);
    let sources: Vec<IpAddr> = (10..=209).map(loopback).collect();
    let flood = idle_flood(&sources, 1, site.addr);
    assert!(
        flood.len() >= 100,
        "only {} connections opened",
        flood.len()
    );
    let client = Client::new(&site.url(), &site.ca());
    let (status, took) = answer_time(&client);
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    let open = collector
        .client
        .metric("otwatch_collector_connections_open")
        .unwrap_or(f64::MAX);
    assert!(
        open <= 64.0,
        "{open} connections open under a 128-descriptor limit"
    );
}

#[test]
fn connections_past_the_per_source_cap_are_closed_at_once_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::init(dir.path());
    let collector = site.serve_limited(1024, "[connections]\nmax_per_source = 8", &[]);
    let mut flood = idle_flood(&[loopback(2)], 20, site.addr);
    let refused = metric_reaches(
        &collector.client,
        "otwatch_collector_requests_refused_total{reason=\"connections_per_source\"}",
        12.0,
        Duration::from_secs(5),
    );
    assert_eq!(refused, 12.0);
    // The refused ones were closed without a handshake: reading them ends at once.
    let mut closed = 0;
    for stream in &mut flood {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if matches!(stream.read(&mut [0u8; 1]), Ok(0) | Err(_)) && stream.peer_addr().is_ok() {
            closed += 1;
        }
    }
    assert!(closed >= 12, "{closed} connections closed");
    let (status, took) = answer_time(&Client::new(&site.url(), &site.ca()));
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
}

/// How long until the collector closes `stream` (reads end), at most `limit`.
fn closed_after(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return None;
            }
            Err(_) => return Some(started.elapsed()),
        }
        if started.elapsed() > limit {
            return None;
        }
    }
}

#[test]
fn a_silent_handshake_a_trickled_header_and_an_idle_keep_alive_are_each_closed_in_time() {
    let settings =
        "[connections]\nhandshake_timeout = \"1s\"\nheader_timeout = \"1s\"\nidle_timeout = \"2s\"";
    let dir = tempfile::tempdir().unwrap();
    let site = Site::init(dir.path());
    let _tls = site.serve_limited(1024, settings, &[]);
    // TLS: a peer that connects and never says hello.
    let mut silent = TcpStream::connect(site.addr).unwrap();
    let took = closed_after(&mut silent, Duration::from_secs(10));
    assert!(
        took.is_some_and(|t| t < Duration::from_secs(3)),
        "a silent TLS peer held on for {took:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let plain = Site::init(dir.path());
    let _http = plain.serve_limited(1024, settings, &["--insecure-http"]);
    // Headers one byte every 300 ms: never complete within the header timeout.
    let mut trickle = TcpStream::connect(plain.addr).unwrap();
    let started = Instant::now();
    let mut cut = None;
    for byte in
        b"GET /healthz HTTP/1.1\r\nHost: collector\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
    {
        if trickle.write_all(&[*byte]).is_err() {
            cut = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let cut = cut
        .or_else(|| closed_after(&mut trickle, Duration::from_secs(1)).map(|_| started.elapsed()));
    assert!(
        cut.is_some_and(|t| t < Duration::from_secs(4)),
        "a trickled header held on for {cut:?}"
    );
    // A keep-alive connection that asks once, then says nothing.
    let mut idle = TcpStream::connect(plain.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: collector\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 256];
    let n = idle.read(&mut first).unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    let took = closed_after(&mut idle, Duration::from_secs(10));
    assert!(
        took.is_some_and(|t| t < Duration::from_secs(4)),
        "an idle keep-alive connection held on for {took:?}"
    );
}
