use std::path::Path;

use super::*;

fn file(text: &str) -> AgentConfig {
    AgentConfig::parse(text).unwrap()
}

fn stream() -> RunFlags {
    RunFlags {
        pcap_stream: Some("-".into()),
        ..RunFlags::default()
    }
}

fn replay_flags() -> ReplayFlags {
    ReplayFlags::default()
}

fn no_env() -> Env {
    Env::default()
}

#[test]
fn the_lines_enroll_prints_make_a_working_configuration() {
    let config = file(
        r#"
agent_name = "hall-1"
collector_url = "https://127.0.0.1:8443"
collector_token = "otw_abc"
collector_ca = "/data/ca.pem"
"#,
    );
    let s = replay(&replay_flags(), &no_env(), &config, None).unwrap();
    let d = s.delivery.unwrap();
    assert_eq!(s.agent_name, "hall-1");
    assert_eq!(d.urls, ["https://127.0.0.1:8443"]);
    assert_eq!(d.return_after, DEFAULT_RETURN_AFTER);
    assert_eq!(d.token, "otw_abc");
    assert_eq!(d.ca.as_deref(), Some(Path::new("/data/ca.pem")));
    assert_eq!(d.outbox_budget, DEFAULT_OUTBOX_BUDGET_MB * 1024 * 1024);
    assert_eq!(d.heartbeat_every, DEFAULT_HEARTBEAT);
    assert_eq!(d.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
}

#[test]
fn a_flag_wins_over_the_environment_and_the_environment_over_the_file() {
    let config = file(
        "agent_name = \"from-file\"\npolicy = \"file.toml\"\nmetrics_listen = \"127.0.0.1:1\"\n",
    );
    let env = Env::from_pairs([
        ("OTWATCH_AGENT_NAME", "from-env"),
        ("OTWATCH_POLICY", "env.toml"),
        ("OTWATCH_METRICS_LISTEN", "127.0.0.1:2"),
    ]);
    let mut flags = replay_flags();
    let s = replay(&flags, &env, &config, None).unwrap();
    assert_eq!(s.agent_name, "from-env");
    assert_eq!(s.policy.as_deref(), Some(Path::new("env.toml")));
    assert_eq!(s.metrics_listen, Some("127.0.0.1:2".parse().unwrap()));
    flags.agent_name = Some("from-flag".into());
    flags.policy = Some("flag.toml".into());
    let s = replay(&flags, &env, &config, None).unwrap();
    assert_eq!(s.agent_name, "from-flag");
    assert_eq!(s.policy.as_deref(), Some(Path::new("flag.toml")));
    let s = replay(&replay_flags(), &no_env(), &config, Some("host".into())).unwrap();
    assert_eq!(s.agent_name, "from-file");
    let s = replay(
        &replay_flags(),
        &no_env(),
        &AgentConfig::default(),
        Some("host".into()),
    );
    assert_eq!(s.unwrap().agent_name, "host");
}

#[test]
fn the_token_in_the_environment_wins_over_the_file_as_the_example_configuration_says() {
    let config = file("collector_url = \"https://c:8443\"\ncollector_token = \"otw_file\"\n");
    let env = Env::from_pairs([("OTWATCH_COLLECTOR_TOKEN", "otw_env")]);
    let d = replay(&replay_flags(), &env, &config, None)
        .unwrap()
        .delivery
        .unwrap();
    assert_eq!(d.token, "otw_env");
    let d = replay(&replay_flags(), &no_env(), &config, None)
        .unwrap()
        .delivery
        .unwrap();
    assert_eq!(d.token, "otw_file");
}

#[test]
fn the_token_file_flag_wins_over_everything_and_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.token");
    std::fs::write(&path, "otw_from_file\n").unwrap();
    let config = file("collector_url = \"https://c:8443\"\ncollector_token = \"otw_file\"\n");
    let env = Env::from_pairs([("OTWATCH_COLLECTOR_TOKEN", "otw_env")]);
    let mut flags = replay_flags();
    flags.delivery.collector_token_file = Some(path);
    let d = replay(&flags, &env, &config, None)
        .unwrap()
        .delivery
        .unwrap();
    assert_eq!(d.token, "otw_from_file");
}

#[test]
fn a_token_given_inline_and_as_a_file_in_one_source_is_refused_naming_both() {
    let config = file(
        "collector_url = \"https://c:8443\"\ncollector_token = \"t\"\ncollector_token_file = \"/t\"\n",
    );
    let e = replay(&replay_flags(), &no_env(), &config, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("collector_token and collector_token_file: both are set"),
        "{e}"
    );
    let env = Env::from_pairs([
        ("OTWATCH_COLLECTOR_URL", "https://c:8443"),
        ("OTWATCH_COLLECTOR_TOKEN", "t"),
        ("OTWATCH_COLLECTOR_TOKEN_FILE", "/t"),
    ]);
    let e = replay(&replay_flags(), &env, &AgentConfig::default(), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("OTWATCH_COLLECTOR_TOKEN and OTWATCH_COLLECTOR_TOKEN_FILE"),
        "{e}"
    );
}

#[test]
fn a_collector_without_a_token_is_refused_naming_the_field_and_where_to_get_one() {
    let config = file("collector_url = \"https://c:8443\"");
    let e = replay(&replay_flags(), &no_env(), &config, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("collector_token:") && e.contains("enroll"),
        "{e}"
    );
}

#[test]
fn without_a_collector_nothing_is_delivered_whatever_token_is_around() {
    let env = Env::from_pairs([("OTWATCH_COLLECTOR_TOKEN", "t")]);
    let s = replay(&replay_flags(), &env, &AgentConfig::default(), None).unwrap();
    assert!(s.delivery.is_none());
}

#[test]
fn workers_out_of_range_are_refused_naming_where_the_value_came_from() {
    let mut flags = RunFlags {
        iface: Some("eth1".into()),
        ..RunFlags::default()
    };
    let config = file("[capture]\nworkers = 65\n");
    let e = run(&flags, &no_env(), &config, None)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "[capture] workers: 65 (expected 1 to 64)");
    let env = Env::from_pairs([("OTWATCH_WORKERS", "0")]);
    let e = run(&flags, &env, &config, None).unwrap_err().to_string();
    assert_eq!(e, "OTWATCH_WORKERS: 0 (expected 1 to 64)");
    flags.workers = Some(100);
    let e = run(&flags, &env, &config, None).unwrap_err().to_string();
    assert_eq!(e, "--workers: 100 (expected 1 to 64)");
    let env = Env::from_pairs([("OTWATCH_WORKERS", "many")]);
    flags.workers = None;
    let e = run(&flags, &env, &config, None).unwrap_err().to_string();
    assert_eq!(e, "OTWATCH_WORKERS: \"many\" (expected 1 to 64)");
}

#[test]
fn several_workers_need_the_ring_on_an_interface() {
    let flags = RunFlags {
        workers: Some(2),
        ..stream()
    };
    let e = run(&flags, &no_env(), &AgentConfig::default(), None)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--workers: 2 needs the ring backend"), "{e}");
    let s = run(&stream(), &no_env(), &AgentConfig::default(), None).unwrap();
    assert_eq!(s.workers, 1);
}

#[cfg(target_os = "linux")]
#[test]
fn the_capture_section_is_overridden_field_by_field() {
    let config = file(
        "interface = \"eth9\"\n[capture]\nbackend = \"ring\"\nring_blocks = 8\nring_block_kb = 64\npromiscuous = false\n",
    );
    let env = Env::from_pairs([("OTWATCH_RING_BLOCKS", "16"), ("OTWATCH_INTERFACE", "eth1")]);
    let flags = RunFlags {
        ring_block_kb: Some(128),
        ..RunFlags::default()
    };
    let s = run(&flags, &env, &config, None).unwrap();
    let Source::Ring(ring) = s.source else {
        panic!("expected the ring: {:?}", s.source);
    };
    assert_eq!(ring.interface, "eth1");
    assert_eq!((ring.blocks, ring.block_size), (16, 128 * 1024));
    assert!(!ring.promiscuous);
    let env = Env::from_pairs([("OTWATCH_CAPTURE_BACKEND", "pnet")]);
    let s = run(&RunFlags::default(), &env, &config, None).unwrap();
    assert!(matches!(s.source, Source::Pnet(_)), "{:?}", s.source);
    let env = Env::from_pairs([("OTWATCH_CAPTURE_BACKEND", "dpdk")]);
    let e = run(&RunFlags::default(), &env, &config, None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "OTWATCH_CAPTURE_BACKEND: \"dpdk\" (expected ring or pnet)"
    );
    let bad = file("interface = \"eth9\"\n[capture]\nring_block_kb = 100\n");
    let e = run(&RunFlags::default(), &no_env(), &bad, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("[capture] ring_block_kb: 100 (expected a power of two"),
        "{e}"
    );
}

#[test]
fn nothing_to_capture_says_every_way_to_give_it() {
    let e = run(
        &RunFlags::default(),
        &no_env(),
        &AgentConfig::default(),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--iface") && e.contains("OTWATCH_INTERFACE") && e.contains("--pcap-stream"),
        "{e}"
    );
}

#[test]
fn an_agent_name_the_collector_would_refuse_is_refused_here_naming_its_source() {
    let env = Env::from_pairs([("OTWATCH_AGENT_NAME", "bell\u{7}name")]);
    let e = replay(&replay_flags(), &env, &AgentConfig::default(), None)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("OTWATCH_AGENT_NAME:"), "{e}");
}

#[test]
fn zero_in_a_decoding_flag_or_the_outbox_budget_is_refused() {
    let mut flags = replay_flags();
    flags.decoding.max_flows = 0;
    let e = replay(&flags, &no_env(), &AgentConfig::default(), None)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "--max-flows: 0 (expected at least 1)");
    let config =
        file("collector_url = \"https://c\"\ncollector_token = \"t\"\noutbox_budget_mb = 0\n");
    let e = replay(&replay_flags(), &no_env(), &config, None)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "outbox_budget_mb: 0 (expected at least 1)");
    let env = Env::from_pairs([("OTWATCH_HEARTBEAT_INTERVAL", "often")]);
    let config = file("collector_url = \"https://c\"\ncollector_token = \"t\"\n");
    let e = replay(&replay_flags(), &env, &config, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("OTWATCH_HEARTBEAT_INTERVAL: \"often\""),
        "{e}"
    );
}

#[test]
fn the_log_level_comes_from_the_flag_then_otwatch_log_then_rust_log_then_the_file() {
    let config = file("log_level = \"warn\"\nlog_format = \"json\"\n");
    let env = Env::from_pairs([("OTWATCH_LOG", "debug"), ("RUST_LOG", "trace")]);
    let t = telemetry(Some("error"), None, &env, &config).unwrap();
    assert_eq!((t.level(), t.format()), ("error", LogFormat::Json));
    let t = telemetry(None, None, &env, &config).unwrap();
    assert_eq!(t.level(), "debug");
    let t = telemetry(
        None,
        None,
        &Env::from_pairs([("RUST_LOG", "trace")]),
        &config,
    )
    .unwrap();
    assert_eq!(t.level(), "trace");
    let t = telemetry(None, None, &no_env(), &config).unwrap();
    assert_eq!(t.level(), "warn");
    let t = telemetry(None, None, &no_env(), &AgentConfig::default()).unwrap();
    assert_eq!((t.level(), t.format()), ("info", LogFormat::Text));
    let env = Env::from_pairs([("OTWATCH_LOG_FORMAT", "text")]);
    let t = telemetry(None, None, &env, &config).unwrap();
    assert_eq!(t.format(), LogFormat::Text);
    let e = telemetry(
        None,
        None,
        &Env::from_pairs([("OTWATCH_LOG", "loud")]),
        &config,
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("OTWATCH_LOG: \"loud\""), "{e}");
}

#[test]
fn no_debug_output_of_the_settings_shows_the_token() {
    let config =
        file("collector_url = \"https://c:8443\"\ncollector_token = \"otw_file_secret\"\n");
    let env = Env::from_pairs([("OTWATCH_COLLECTOR_TOKEN", "otw_env_secret")]);
    let settings = replay(&replay_flags(), &env, &config, None).unwrap();
    for text in [
        format!("{config:?}"),
        format!("{env:?}"),
        format!("{settings:?}"),
    ] {
        assert!(!text.contains("_secret"), "{text}");
    }
    assert_eq!(settings.delivery.unwrap().token, "otw_env_secret");
}

#[test]
fn evidence_is_on_for_high_alerts_by_default_and_set_or_refused_by_every_source() {
    let base = "collector_url = \"https://c\"\ncollector_token = \"t\"\n";
    let d = replay(&replay_flags(), &no_env(), &file(base), None)
        .unwrap()
        .delivery
        .unwrap();
    let evidence = d.evidence.unwrap();
    assert_eq!(evidence.min_severity, otwatch_rules::alert::Severity::High);
    assert_eq!(
        evidence.limits.total_bytes as u64,
        DEFAULT_EVIDENCE_BUFFER_MB << 20
    );
    // The file turns it to critical, the environment off, the flag back on.
    let config = file(&format!(
        "{base}evidence = \"critical\"\nevidence_buffer_mb = 4\nevidence_flow_packets = 8\nevidence_flow_kb = 16\n"
    ));
    let d = replay(&replay_flags(), &no_env(), &config, None)
        .unwrap()
        .delivery
        .unwrap();
    let evidence = d.evidence.unwrap();
    assert_eq!(
        evidence.min_severity,
        otwatch_rules::alert::Severity::Critical
    );
    assert_eq!(evidence.limits.total_bytes, 4 << 20);
    assert_eq!(evidence.limits.per_flow_packets, 8);
    assert_eq!(evidence.limits.per_flow_bytes, 16 << 10);
    let env = Env::from_pairs([("OTWATCH_EVIDENCE", "off")]);
    let d = replay(&replay_flags(), &env, &config, None)
        .unwrap()
        .delivery
        .unwrap();
    assert_eq!(d.evidence, None);
    let mut flags = replay_flags();
    flags.delivery.evidence = Some(EvidenceLevel::High);
    let d = replay(&flags, &env, &config, None)
        .unwrap()
        .delivery
        .unwrap();
    assert!(d.evidence.is_some());
    // Out of range or unknown: refused naming the source and what was expected.
    let env = Env::from_pairs([("OTWATCH_EVIDENCE_BUFFER_MB", "0")]);
    let e = replay(&replay_flags(), &env, &file(base), None)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "OTWATCH_EVIDENCE_BUFFER_MB: 0 (expected 1 to 1024)");
    let mut flags = replay_flags();
    flags.delivery.evidence_flow_packets = Some(65);
    let e = replay(&flags, &no_env(), &file(base), None)
        .unwrap_err()
        .to_string();
    assert_eq!(e, "--evidence-flow-packets: 65 (expected 1 to 64)");
    let env = Env::from_pairs([("OTWATCH_EVIDENCE", "medium")]);
    let e = replay(&replay_flags(), &env, &file(base), None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "OTWATCH_EVIDENCE: \"medium\" (expected high, critical or off)"
    );
    let e = AgentConfig::parse(&format!("{base}evidence = \"low\"\n")).unwrap_err();
    assert!(e.contains("evidence"), "{e}");
}

#[test]
fn following_the_collector_needs_one_and_keeps_its_policy_beside_the_outbox() {
    let refused = run(
        &stream(),
        &Env::from_pairs([("OTWATCH_POLICY_SOURCE", "collector")]),
        &AgentConfig::default(),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        refused.starts_with("OTWATCH_POLICY_SOURCE: collector, but no collector is set"),
        "{refused}"
    );
    let config = file(
        r#"
collector_url = "https://127.0.0.1:8443"
collector_token = "otw_abc"
outbox = "/var/lib/otwatch-agent/outbox"
policy_source = "collector"
"#,
    );
    let s = run(&stream(), &no_env(), &config, None).unwrap();
    assert_eq!(s.policy_source, PolicySource::Collector);
    assert_eq!(
        s.policy.as_deref(),
        Some(Path::new("/var/lib/otwatch-agent/assigned-policy.toml"))
    );
    let mut flags = stream();
    flags.policy = Some("/etc/otwatch/agent/kept.toml".into());
    let s = run(&flags, &no_env(), &config, None).unwrap();
    assert_eq!(
        s.policy.as_deref(),
        Some(Path::new("/etc/otwatch/agent/kept.toml"))
    );
    flags.policy_source = Some(PolicySource::File);
    assert_eq!(
        run(&flags, &no_env(), &config, None).unwrap().policy_source,
        PolicySource::File
    );
    let bad = run(
        &stream(),
        &Env::from_pairs([("OTWATCH_POLICY_SOURCE", "cloud")]),
        &config,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(bad.contains("expected file or collector"), "{bad}");
}

#[cfg(target_os = "linux")]
#[test]
fn network_detection_is_on_by_default_lets_arp_through_and_turns_off_anywhere() {
    use crate::capture::bpf::Program;
    let config = file("interface = \"eth9\"\n");
    let filter = |s: &RunSettings| match &s.source {
        Source::Ring(ring) => ring.filter.clone(),
        other => panic!("expected the ring: {other:?}"),
    };
    let s = run(&RunFlags::default(), &no_env(), &config, None).unwrap();
    assert!(s.network_detection);
    assert_eq!(filter(&s), Program::tcp_udp_or_arp());
    let off = file("interface = \"eth9\"\nnetwork_detection = false\n");
    let s = run(&RunFlags::default(), &no_env(), &off, None).unwrap();
    assert!(!s.network_detection);
    assert_eq!(
        filter(&s),
        Program::tcp_or_udp(),
        "no ARP when nothing reads it"
    );
    let env = Env::from_pairs([("OTWATCH_NETWORK_DETECTION", "false")]);
    assert!(
        !run(&RunFlags::default(), &env, &config, None)
            .unwrap()
            .network_detection
    );
    let mut flags = RunFlags::default();
    flags.decoding.network_detection = Some(true);
    assert!(
        run(&flags, &env, &off, None).unwrap().network_detection,
        "the flag wins"
    );
    let env = Env::from_pairs([("OTWATCH_NETWORK_DETECTION", "maybe")]);
    let e = run(&RunFlags::default(), &env, &config, None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "OTWATCH_NETWORK_DETECTION: \"maybe\" (expected true or false)"
    );
    // A filter of the operator's own is kept as given, ARP or not.
    let own = file("interface = \"eth9\"\n[capture]\nfilter = \"tcp-or-udp\"\n");
    let s = run(&RunFlags::default(), &no_env(), &own, None).unwrap();
    assert_eq!(filter(&s), Program::tcp_or_udp());
}

#[test]
fn replicas_come_from_repeated_flags_a_comma_list_or_the_file_and_a_bad_list_names_its_source() {
    let token = "collector_token = \"t\"\n";
    let urls = |flags: &ReplayFlags, env: &Env, config: &AgentConfig| {
        replay(flags, env, config, None).map(|s| s.delivery.map(|d| d.urls))
    };
    let config = file(&format!(
        "collector_urls = [\"https://a:8443\", \"https://b:8443\"]\ncollector_return_after = \"10s\"\n{token}"
    ));
    let s = replay(&replay_flags(), &no_env(), &config, None).unwrap();
    let d = s.delivery.unwrap();
    assert_eq!(d.urls, ["https://a:8443", "https://b:8443"]);
    assert_eq!(d.return_after, Duration::from_secs(10));
    let env = Env::from_pairs([("OTWATCH_COLLECTOR_URL", "https://c:8443, https://d:8443")]);
    assert_eq!(
        urls(&replay_flags(), &env, &config).unwrap().unwrap(),
        ["https://c:8443", "https://d:8443"]
    );
    let mut flags = replay_flags();
    flags.delivery.collector = vec!["https://e:8443".into(), "https://f:8443".into()];
    assert_eq!(
        urls(&flags, &env, &config).unwrap().unwrap(),
        ["https://e:8443", "https://f:8443"]
    );

    let both = file(&format!(
        "collector_url = \"https://a:8443\"\ncollector_urls = [\"https://b:8443\"]\n{token}"
    ));
    let e = urls(&replay_flags(), &no_env(), &both)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("collector_urls: set together with collector_url"),
        "{e}"
    );
    flags.delivery.collector = vec!["https://e:8443".into(), "https://e:8443/".into()];
    let e = urls(&flags, &no_env(), &config).unwrap_err().to_string();
    assert!(
        e.starts_with("--collector: ") && e.contains("listed twice"),
        "{e}"
    );
    flags.delivery.collector = (0..=MAX_COLLECTORS)
        .map(|i| format!("https://c{i}:8443"))
        .collect();
    let e = urls(&flags, &no_env(), &config).unwrap_err().to_string();
    assert!(e.contains("at most 16"), "{e}");
    flags.delivery.collector = vec!["https://a:8443,https://b:8443".into()];
    let e = urls(&flags, &no_env(), &config).unwrap_err().to_string();
    assert!(e.contains("one https://HOST:PORT per entry"), "{e}");
    let empty = file(&format!("collector_urls = []\n{token}"));
    let e = urls(&replay_flags(), &no_env(), &empty)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("collector_urls: empty"), "{e}");
    let zero = Env::from_pairs([("OTWATCH_COLLECTOR_RETURN_AFTER", "0s")]);
    let e = urls(&replay_flags(), &zero, &config)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("OTWATCH_COLLECTOR_RETURN_AFTER: 0s"), "{e}");
}
