use super::*;

#[test]
fn the_lines_enroll_prints_make_a_working_configuration() {
    let config = AgentConfig::parse(
        r#"
agent_name = "hall-1"
collector_url = "https://127.0.0.1:8443"
collector_token = "otw_abc"
collector_ca = "/data/ca.pem"
"#,
    )
    .unwrap();
    let d = config
        .delivery(None, Duration::from_secs(3))
        .unwrap()
        .unwrap();
    assert_eq!(d.url, "https://127.0.0.1:8443");
    assert_eq!(d.token, "otw_abc");
    assert_eq!(d.ca.as_deref(), Some(Path::new("/data/ca.pem")));
    assert_eq!(d.outbox_budget, DEFAULT_OUTBOX_BUDGET_MB * 1024 * 1024);
    assert_eq!(d.heartbeat_every, DEFAULT_HEARTBEAT);
}

#[test]
fn an_unknown_field_is_named_with_its_line() {
    let e = AgentConfig::parse("agent_name = \"a\"\ncollector_uri = \"https://x\"\n").unwrap_err();
    assert!(e.contains("line 2") && e.contains("collector_uri"), "{e}");
}

#[test]
fn a_bad_duration_says_what_was_expected() {
    let e = AgentConfig::parse("heartbeat_interval = \"often\"").unwrap_err();
    assert!(
        e.contains("heartbeat_interval") || e.contains("line 1"),
        "{e}"
    );
    assert!(e.contains("expected e.g. \"5s\""), "{e}");
}

#[test]
fn a_collector_without_a_token_is_refused_naming_the_field() {
    let config = AgentConfig::parse("collector_url = \"https://c:8443\"").unwrap();
    let e = config
        .delivery(None, Duration::ZERO)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("collector_token:"), "{e}");
    let from_env = config
        .delivery(Some("otw_env".into()), Duration::ZERO)
        .unwrap()
        .unwrap();
    assert_eq!(from_env.token, "otw_env");
}

#[test]
fn the_token_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.token");
    std::fs::write(&file, "otw_from_file\n").unwrap();
    let config = AgentConfig {
        collector_url: Some("https://c:8443".into()),
        collector_token_file: Some(file),
        ..AgentConfig::default()
    };
    let d = config
        .delivery(Some("otw_env".into()), Duration::ZERO)
        .unwrap()
        .unwrap();
    assert_eq!(d.token, "otw_from_file");
}

#[test]
fn without_a_collector_nothing_is_delivered() {
    assert!(
        AgentConfig::default()
            .delivery(Some("t".into()), Duration::ZERO)
            .unwrap()
            .is_none()
    );
}

#[test]
fn the_example_configuration_in_deploy_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/agent.toml");
    let config = AgentConfig::load(&path).unwrap();
    assert_eq!(config.agent_name.as_deref(), Some("hall-1"));
    assert_eq!(config.outbox_budget_mb, Some(256));
    assert_eq!(config.interface.as_deref(), Some("eth1"));
    assert_eq!(config.capture.backend, Some(CaptureBackend::Ring));
    assert_eq!(config.capture.filter.as_deref(), Some("tcp-or-udp"));
}

#[test]
fn the_capture_section_parses_and_an_unknown_backend_names_the_choices() {
    let config = AgentConfig::parse(
        "interface = \"eth1\"\n[capture]\nbackend = \"pnet\"\nsocket_buffer_mb = 16\nignore_outgoing = true\n",
    )
    .unwrap();
    assert_eq!(config.interface.as_deref(), Some("eth1"));
    assert_eq!(config.capture.backend, Some(CaptureBackend::Pnet));
    assert_eq!(config.capture.socket_buffer_mb, Some(16));
    assert_eq!(config.capture.ignore_outgoing, Some(true));
    let e = AgentConfig::parse("[capture]\nbackend = \"dpdk\"\n").unwrap_err();
    assert!(
        e.contains("line 2") && e.contains("dpdk") && e.contains("pnet"),
        "{e}"
    );
}
