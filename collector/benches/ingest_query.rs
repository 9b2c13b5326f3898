//! Collector benchmark: sustained durable ingest over HTTPS, then query latency on a store of
//! a million alerts.
//!
//! A real collector (router, sled store, credentials, TLS) serves on loopback; two client
//! threads post batches of 500 alerts as four agents, each batch acknowledged only once sled
//! has flushed it. Then the API is queried with each filter in turn and the latency
//! percentiles are printed.
//!
//! Last, the chart endpoints (`/api/v1/stats/...`) over the whole span of the alerts.
//!
//! `cargo bench -p otwatch-collector --bench ingest_query [-- ALERTS] [days=N] [evidence=K]
//! [store=postgres] [replicas=R]`
//! (default 1,000,000 alerts, 1 ms apart; `days=N` spreads them over N days, as a week of a
//! plant's alerts is spread over the chart's hours; `evidence=K` follows each batch with the
//! packets behind K of its high and critical alerts, a 32-frame pcap each, in batches of up to 64
//! as an agent's evidence lane sends them, and counts their time in the ingest rate;
//! `store=postgres` keeps the store in a throwaway PostgreSQL cluster started for the run, and
//! `replicas=R` serves it from R collectors sharing that database, the clients spreading their
//! batches and queries over them).
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use otwatch_collector::auth::Credentials;
use otwatch_collector::config::{CollectorConfig, Connections};
use otwatch_collector::engine::Engine;
use otwatch_collector::feed::BroadcastFeed;
use otwatch_collector::kv::Kv;
use otwatch_collector::kv::sled::SledKv;
use otwatch_collector::listener;
use otwatch_collector::metrics::Metrics;
use otwatch_collector::pki;
use otwatch_collector::server::{AppState, router};
use otwatch_collector::store::Store;
use otwatch_collector::store::model::Role;
use otwatch_kv_postgres::throwaway::Cluster;
use otwatch_kv_postgres::{Create, PgKv};
use otwatch_rules::alert::{Alert, SCHEMA_VERSION, Severity};
use otwatch_rules::time::Timestamp;
use otwatch_rules::wire::{EvidenceRecord, IngestBatch};
use ureq::tls::{PemItem, RootCerts, TlsConfig};

/// The collector binary's allocator, so the benchmark measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: u64 = 500;
const AGENTS: usize = 4;
const RULES: [(&str, Severity, &str); 8] = [
    ("policy.unauthorized_write", Severity::High, "T0855"),
    ("policy.unauthorized_read", Severity::Medium, "T0801"),
    ("recon.read_device_id", Severity::Low, "T0888"),
    ("diag.force_listen_only", Severity::High, "T0814"),
    ("program.umas_stop", Severity::Critical, "T0858"),
    ("dos.request_flood", Severity::High, "T0814"),
    ("baseline.new_pair", Severity::Low, "T0848"),
    ("policy.setpoint_out_of_bounds", Severity::High, "T0836"),
];

/// The first alert's capture time: 2023-11-14T22:13:20Z.
const BASE_NANOS: u64 = 1_700_000_000_000_000_000;

fn alert(n: u64, agent: &str, step_nanos: u64) -> Alert {
    let (rule, severity, technique) = RULES[(n % RULES.len() as u64) as usize];
    let ts = Timestamp::from_nanos(BASE_NANOS + n * step_nanos);
    let mut alert = Alert {
        schema: SCHEMA_VERSION,
        id: String::new(),
        ts,
        agent: agent.into(),
        severity,
        rule: rule.into(),
        title: rule.into(),
        technique: vec![technique.into()],
        src_ip: format!("10.0.{}.{}", (n / 7) % 4, 10 + n % 40)
            .parse()
            .unwrap(),
        src_port: 40_000,
        dst_ip: format!("10.1.{}.{}", (n / 11) % 4, 10 + (n / 3) % 60)
            .parse()
            .unwrap(),
        dst_port: 502,
        unit_id: Some(1),
        function_code: Some(6),
        function: Some("write_single_register".into()),
        address: Some((n % 1000) as u16),
        quantity: Some(1),
        values: Some(vec![(n % 65_535) as u16]),
        exception: None,
        count: 1,
        first_ts: ts,
        evidence: None,
        flow: n,
        message: Some(format!("bench alert {n}")),
        seen: None,
    };
    // The id an agent derives, which ingest checks.
    alert.id = alert.derived_id(0);
    alert
}

/// A flow's worth of evidence as an agent's buffer writes it: 32 Modbus/TCP-sized frames,
/// in base64.
fn evidence_pcap() -> String {
    use base64::Engine as _;
    use otwatch_packet::evidence::{EvidenceBuffer, Limits};
    use otwatch_packet::frame::{CapturedPacket, LinkType};
    let mut buffer = EvidenceBuffer::new(Limits::default());
    for n in 0..32u8 {
        let frame = vec![n; 66];
        buffer.keep(
            1,
            &CapturedPacket {
                ts: Timestamp::from_nanos(BASE_NANOS + u64::from(n)),
                link: LinkType::Ethernet,
                data: &frame,
                orig_len: 66,
            },
        );
    }
    base64::engine::general_purpose::STANDARD.encode(buffer.pcap(1).unwrap())
}

fn client(ca: &std::path::Path) -> ureq::Agent {
    let pem = std::fs::read(ca).unwrap();
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|i| match i {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    ureq::Agent::config_builder()
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::Specific(Arc::new(certs)))
                .build(),
        )
        .http_status_as_error(false)
        .build()
        .new_agent()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Serves `state` as `serve` does (the collector's own listener, HTTPS) on a free loopback
/// port, on a runtime of its own; returns the address once it accepts connections.
fn serve(state: Arc<AppState<Engine>>, files: &pki::Files) -> SocketAddr {
    let addr: SocketAddr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (cert, key) = (files.cert.clone(), files.key.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let served =
                listener::ServedCertificate::load(&cert, &key, listener::certificate_provider())
                    .unwrap();
            let tls = listener::tls_acceptor(std::sync::Arc::new(served)).unwrap();
            let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
            let limits =
                listener::Limits::new(&Connections::default(), listener::raise_descriptor_limit());
            let metrics = state.metrics.clone();
            listener::serve(
                tcp,
                Some(tls),
                router(state),
                limits,
                metrics,
                std::future::pending(),
            )
            .await;
        });
    });
    while std::net::TcpStream::connect(addr).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    addr
}

fn main() {
    let total: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let days: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.strip_prefix("days=")?.parse().ok())
        .unwrap_or(0);
    let evidence_per_batch: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.strip_prefix("evidence=")?.parse().ok())
        .unwrap_or(0);
    let postgres = std::env::args().skip(1).any(|a| a == "store=postgres");
    let replicas: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.strip_prefix("replicas=")?.parse().ok())
        .unwrap_or(1);
    assert!(
        replicas == 1 || postgres,
        "replicas share a database: add store=postgres"
    );
    let pcap = evidence_pcap();
    let step_nanos = if days == 0 {
        1_000_000
    } else {
        days * 86_400_000_000_000 / total.max(1)
    };
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data = dir.path();
    let files = pki::create(data, &["127.0.0.1".to_string()]).unwrap();
    // The engine: sled in the data folder, or a database every replica opens.
    let cluster = postgres.then(|| {
        let cluster = Cluster::start()
            .unwrap()
            .expect("PostgreSQL is not installed");
        cluster.create_database("bench").unwrap();
        cluster
    });
    let open = |create: Create| -> Engine {
        match &cluster {
            Some(c) => Arc::new(PgKv::open(&c.options("bench"), create).unwrap()),
            None => Arc::new(SledKv::open(&data.join("store")).unwrap()),
        }
    };
    let engines: Vec<Engine> = (0..replicas)
        .map(|i| {
            open(if i == 0 {
                Create::IfMissing
            } else {
                Create::Never
            })
        })
        .collect();
    let credentials_of = |engine: &Engine| {
        if postgres {
            Credentials::shared(engine.clone()).unwrap()
        } else {
            Credentials::open(data).unwrap()
        }
    };
    let credentials = credentials_of(&engines[0]);
    let tokens: Vec<String> = (0..AGENTS)
        .map(|i| {
            credentials
                .enroll(&format!("agent-{i}"), Role::Agent)
                .unwrap()
        })
        .collect();
    let viewer = credentials.enroll("viewer", Role::Viewer).unwrap();
    let stores: Vec<_> = engines
        .iter()
        .map(|e| Arc::new(Store::open(e.clone()).unwrap()))
        .collect();
    let store = stores[0].clone();
    let bases: Vec<String> = stores
        .iter()
        .zip(&engines)
        .map(|(store, engine)| {
            let mut config = CollectorConfig::with_data(data.to_path_buf());
            config.agent_rate_per_s = 10_000;
            let state = Arc::new(AppState::new(
                store.clone(),
                Arc::new(credentials_of(engine)),
                Arc::new(BroadcastFeed::new(4096)),
                Arc::new(Metrics::new().unwrap()),
                config,
            ));
            format!("https://{}", serve(state, &files))
        })
        .collect();

    // Ingest.
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (next, bases, tokens, pcap) =
                (next.clone(), bases.clone(), tokens.clone(), pcap.clone());
            let http = client(&files.ca);
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                loop {
                    let first = next.fetch_add(BATCH, Ordering::SeqCst);
                    if first >= total {
                        return latencies;
                    }
                    let agent_index = (first / BATCH) as usize % AGENTS;
                    let base = &bases[(first / BATCH) as usize % bases.len()];
                    let agent = format!("agent-{agent_index}");
                    let alerts: Vec<Alert> = (first..(first + BATCH).min(total))
                        .map(|n| alert(n, &agent, step_nanos))
                        .collect();
                    // Encoded as the agent's sender does (straight from the wire type).
                    let evidence: Vec<EvidenceRecord> = alerts
                        .iter()
                        .filter(|a| a.severity >= Severity::High)
                        .take(evidence_per_batch)
                        .map(|a| EvidenceRecord {
                            alert: a.id.clone(),
                            pcap: pcap.clone(),
                        })
                        .collect();
                    let body = serde_json::to_vec(&IngestBatch {
                        agent: agent.clone(),
                        alerts,
                        assets: Vec::new(),
                        conversations: Vec::new(),
                        evidence: Vec::new(),
                        learned: Vec::new(),
                    })
                    .unwrap();
                    let post = |body: &[u8]| {
                        let mut reply = http
                            .post(format!("{base}/api/v1/ingest"))
                            .header("Authorization", format!("Bearer {}", tokens[agent_index]))
                            .header("Content-Type", "application/json")
                            .send(body)
                            .unwrap();
                        assert_eq!(
                            reply.status(),
                            200,
                            "{}",
                            reply.body_mut().read_to_string().unwrap_or_default()
                        );
                    };
                    let sent = Instant::now();
                    post(&body);
                    latencies.push(sent.elapsed());
                    for chunk in evidence.chunks(otwatch_rules::validate::MAX_EVIDENCE_RECORDS) {
                        post(
                            &serde_json::to_vec(&IngestBatch {
                                agent: agent.clone(),
                                alerts: Vec::new(),
                                assets: Vec::new(),
                                conversations: Vec::new(),
                                evidence: chunk.to_vec(),
                                learned: Vec::new(),
                            })
                            .unwrap(),
                        );
                    }
                }
            })
        })
        .collect();
    let mut batch_latencies: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let elapsed = started.elapsed();
    batch_latencies.sort();
    let stored = store.alert_count().unwrap();
    assert_eq!(stored, total);
    let bytes = store.kv().size_on_disk().unwrap();
    println!(
        "ingest ({}, {replicas} replica{}): {total} alerts in {:.1} s = {:.0} alerts/s durable (batches of {BATCH}, 2 clients, HTTPS); batch latency p50 {:.1} ms p99 {:.1} ms; store {:.0} MB = {:.0} bytes per alert",
        if postgres { "PostgreSQL" } else { "sled" },
        if replicas == 1 { "" } else { "s" },
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        percentile(&batch_latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&batch_latencies, 0.99).as_secs_f64() * 1e3,
        bytes as f64 / 1e6,
        bytes as f64 / total.max(1) as f64,
    );
    if evidence_per_batch > 0 {
        let bytes: u64 = (0..AGENTS)
            .map(|i| store.evidence_bytes(&format!("agent-{i}")).unwrap())
            .sum();
        assert!(bytes > 0, "the evidence was stored");
        println!(
            "evidence: the packets of {evidence_per_batch} alerts after each batch (in batches of up to 64), {:.0} MB of pcaps stored",
            bytes as f64 / 1e6
        );
    }

    // Queries.
    let http = client(&files.ca);
    let queries = [
        ("latest 100", "/api/v1/alerts?limit=100".to_string()),
        (
            "min_severity=critical",
            "/api/v1/alerts?min_severity=critical&limit=100".to_string(),
        ),
        (
            "agent",
            "/api/v1/alerts?agent=agent-2&limit=100".to_string(),
        ),
        (
            "asset",
            "/api/v1/alerts?asset=10.1.2.33&limit=100".to_string(),
        ),
        (
            "rule",
            "/api/v1/alerts?rule=recon.read_device_id&limit=100".to_string(),
        ),
        (
            "technique",
            "/api/v1/alerts?technique=T0836&limit=100".to_string(),
        ),
        (
            "time window",
            "/api/v1/alerts?since=2023-11-14T22:13:30Z&until=2023-11-14T22:13:40Z&limit=100"
                .to_string(),
        ),
        ("incidents", "/api/v1/incidents?limit=100".to_string()),
        ("posture", "/api/v1/posture".to_string()),
    ];
    // The charts, over every hour that holds an alert, and over the last 24 hours of them.
    let rfc3339 = |nanos: u64| {
        Timestamp::from_nanos(nanos)
            .to_string()
            .replace(".000000Z", "Z")
    };
    let end = BASE_NANOS + total * step_nanos;
    let whole = format!("since={}&until={}", rfc3339(BASE_NANOS), rfc3339(end));
    let day = format!(
        "since={}&until={}",
        rfc3339(end.saturating_sub(86_400_000_000_000).max(BASE_NANOS)),
        rfc3339(end)
    );
    let charts = [
        (
            "timeline by hour",
            format!("/api/v1/stats/timeline?{whole}&bucket=hour"),
        ),
        (
            "timeline by day",
            format!("/api/v1/stats/timeline?{whole}&bucket=day"),
        ),
        ("top rules", format!("/api/v1/stats/top?by=rule&{whole}")),
        (
            "top sources",
            format!("/api/v1/stats/top?by=source&{whole}"),
        ),
        (
            "top sources 24 h",
            format!("/api/v1/stats/top?by=source&{day}"),
        ),
        ("techniques", format!("/api/v1/stats/techniques?{whole}")),
    ];
    let queries: Vec<_> = queries.into_iter().chain(charts).collect();
    println!(
        "query latency over HTTPS, {stored} alerts stored (200 runs each, first page, then pages via cursor):"
    );
    let mut all = Vec::new();
    let mut all_charts = Vec::new();
    for (name, path) in &queries {
        let mut times = Vec::new();
        let mut returned = 0;
        let mut cursor: Option<String> = None;
        for run in 0..200 {
            let base = &bases[run % bases.len()];
            let url = match &cursor {
                Some(c) if path.contains("alerts") => format!("{base}{path}&cursor={c}"),
                _ => format!("{base}{path}"),
            };
            let t = Instant::now();
            let mut reply = http
                .get(&url)
                .header("Authorization", format!("Bearer {viewer}"))
                .call()
                .unwrap();
            let body: serde_json::Value = reply.body_mut().read_json().unwrap();
            times.push(t.elapsed());
            assert_eq!(reply.status(), 200, "{body}");
            cursor = body.get("next").and_then(|n| n.as_str()).map(String::from);
            returned += ["alerts", "incidents", "buckets", "top", "techniques"]
                .iter()
                .find_map(|k| body.get(k).and_then(|a| a.as_array()).map(Vec::len))
                .unwrap_or(1);
        }
        // A query that finds nothing is fast and measures nothing.
        assert!(returned > 0, "{name} returned nothing");
        times.sort();
        println!(
            "  {name:<22} p50 {:>6.2} ms  p99 {:>6.2} ms  ({returned} returned)",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3
        );
        if path.contains("/stats/") {
            all_charts.extend(times);
        } else if *name != "posture" && *name != "incidents" {
            all.extend(times);
        }
    }
    for (name, times) in [
        ("all alert queries", &mut all),
        ("all chart queries", &mut all_charts),
    ] {
        times.sort();
        println!(
            "  {name:<22} p50 {:>6.2} ms  p99 {:>6.2} ms",
            percentile(times, 0.5).as_secs_f64() * 1e3,
            percentile(times, 0.99).as_secs_f64() * 1e3
        );
    }
}
