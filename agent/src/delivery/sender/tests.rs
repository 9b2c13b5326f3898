use super::*;

#[test]
fn a_url_without_a_scheme_is_refused_naming_the_field() {
    let e = HttpsSender::new(&["collector:8443"], "t", None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("collector_url: \"collector:8443\" is not valid"),
        "{e}"
    );
}

#[test]
fn a_missing_certificate_authority_file_names_the_field_and_path() {
    let e = HttpsSender::new(
        &["https://c:8443"],
        "t",
        Some(Path::new("/nonexistent/ca.pem")),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("collector_ca: /nonexistent/ca.pem:"), "{e}");
}

#[test]
fn a_file_without_a_certificate_is_not_taken_for_a_certificate_authority() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, "not a certificate").unwrap();
    let e = HttpsSender::new(&["https://c:8443"], "t", Some(&path))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no PEM certificate"), "{e}");
}

#[test]
fn nothing_listening_is_unreachable_so_the_shipper_retries() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut sender = HttpsSender::new(&[format!("https://127.0.0.1:{port}")], "t", None).unwrap();
    let batch = IngestBatch {
        agent: "a".into(),
        alerts: Vec::new(),
        assets: Vec::new(),
        conversations: Vec::new(),
        evidence: Vec::new(),
        learned: Vec::new(),
    };
    assert!(matches!(
        sender.ingest(0, &batch),
        Err(Failure::Unreachable(_))
    ));
}

#[test]
fn each_collector_is_named_by_its_address_and_a_bad_one_among_several_is_refused() {
    let sender = HttpsSender::new(&["https://a:8443/", "https://b:8443"], "t", None).unwrap();
    assert_eq!(sender.collectors(), 2);
    assert_eq!(sender.name(0), "https://a:8443");
    assert_eq!(sender.name(1), "https://b:8443");
    let e = HttpsSender::new(&["https://a:8443", "b:8443"], "t", None)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("collector_url: \"b:8443\""), "{e}");
}
