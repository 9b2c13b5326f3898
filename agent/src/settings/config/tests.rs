use super::*;

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
fn the_example_configuration_in_deploy_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/agent.toml");
    let config = AgentConfig::load(&path).unwrap();
    assert_eq!(config.agent_name.as_deref(), Some("hall-1"));
    assert_eq!(config.outbox_budget_mb, Some(256));
    assert_eq!(config.interface.as_deref(), Some("eth1"));
    assert_eq!(config.capture.backend, Some(CaptureBackend::Ring));
    assert_eq!(config.capture.filter.as_deref(), Some("tcp-udp-or-arp"));
    assert_eq!(config.network_detection, Some(true));
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
