use super::*;

#[test]
fn the_example_configuration_in_deploy_parses_with_every_section() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/collector.toml");
    let c = CollectorConfig::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(c.listen.port(), 8443);
    assert_eq!(c.retention.max_age, Some(Duration::from_secs(90 * 86_400)));
    assert_eq!(c.export.syslog.unwrap().transport, SyslogTransport::Udp);
    assert!(c.export.jsonl.is_some());
}

#[test]
fn only_the_data_folder_is_required() {
    let c = CollectorConfig::parse("data = \"/d\"").unwrap();
    assert_eq!(c.agent_rate_per_s, 50);
    assert_eq!(c.agent_offline_after, Duration::from_secs(30));
    assert!(!c.insecure_http);
}

#[test]
fn an_unknown_field_and_a_bad_duration_are_named() {
    let e = CollectorConfig::parse("data = \"/d\"\nlisten_on = \"x\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("listen_on"), "{e}");
    let e = CollectorConfig::parse("data = \"/d\"\nagent_offline_after = \"soon\"")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("agent_offline_after") || e.contains("line 2"),
        "{e}"
    );
}

#[test]
fn without_a_size_limit_the_store_keeps_under_ten_gib_and_half_its_disk() {
    let dir = tempfile::tempdir().unwrap();
    let default = Retention::default().max_bytes_for(dir.path());
    assert!(default > 0 && default <= DEFAULT_MAX_BYTES, "{default}");
    let set = Retention {
        max_age: None,
        max_bytes: Some(5_000),
    };
    assert_eq!(set.max_bytes_for(dir.path()), 5_000);
    // No collector.toml at all: the size limit still holds.
    let c = CollectorConfig::with_data(dir.path().to_path_buf());
    assert!(c.retention.max_bytes_for(&c.data) <= DEFAULT_MAX_BYTES);
}
