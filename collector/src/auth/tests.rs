use super::*;

#[test]
fn enrolled_token_maps_to_its_name_and_role_and_only_its_hash_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let c = Credentials::open(dir.path()).unwrap();
    let token = c.enroll("plc-hall-agent", Role::Agent).unwrap();
    assert!(token.starts_with("otw_") && token.len() == 68);
    assert_eq!(
        c.principal(&token),
        Some(Principal {
            name: "plc-hall-agent".into(),
            role: Role::Agent
        })
    );
    assert_eq!(c.principal("otw_wrong"), None);
    let file = std::fs::read_to_string(dir.path().join("credentials.json")).unwrap();
    assert!(!file.contains(&token[4..]));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("credentials.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_second_process_enrolling_is_seen_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Credentials::open(dir.path()).unwrap();
    let enroller = Credentials::open(dir.path()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let token = enroller.enroll("late", Role::Viewer).unwrap();
    assert_eq!(server.principal(&token).map(|p| p.role), Some(Role::Viewer));
}

#[test]
fn a_name_is_enrolled_once() {
    let dir = tempfile::tempdir().unwrap();
    let c = Credentials::open(dir.path()).unwrap();
    c.enroll("a", Role::Agent).unwrap();
    assert!(matches!(
        c.enroll("a", Role::Admin),
        Err(CredentialError::Taken(_))
    ));
}

#[test]
fn a_bearer_header_carries_a_token_and_the_cookie_a_session() {
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, "Bearer otw_abc".parse().unwrap());
    assert_eq!(
        presented(&h, true),
        Some(Presented::Token("otw_abc".into()))
    );
    let mut c = HeaderMap::new();
    c.insert(
        COOKIE,
        "theme=dark; __Host-otwatch_session=5e55".parse().unwrap(),
    );
    assert_eq!(presented(&c, true), Some(Presented::Session("5e55".into())));
    // Over HTTPS a cookie without the prefix (which a sibling host could set) is not read.
    let mut planted = HeaderMap::new();
    planted.insert(COOKIE, "otwatch_session=bad".parse().unwrap());
    assert_eq!(presented(&planted, true), None);
    assert_eq!(
        presented(&planted, false),
        Some(Presented::Session("bad".into()))
    );
    // The cookie of an earlier release held a token: it is no longer read.
    let mut old = HeaderMap::new();
    old.insert(COOKIE, "otwatch_token=otw_xyz".parse().unwrap());
    assert_eq!(presented(&old, true), None);
    assert_eq!(presented(&HeaderMap::new(), true), None);
}

#[test]
fn a_revoked_name_is_gone_from_the_list_and_its_token_no_longer_works() {
    let dir = tempfile::tempdir().unwrap();
    let c = Credentials::open(dir.path()).unwrap();
    let keep = c.enroll("soc", Role::Viewer).unwrap();
    let gone = c.enroll("contractor", Role::Admin).unwrap();
    let mut changes = c.changes();
    changes.mark_unchanged();
    assert_eq!(c.revoke("contractor").unwrap(), Role::Admin);
    assert!(changes.has_changed().unwrap(), "listeners hear of it");
    assert_eq!(c.principal(&gone), None);
    assert!(c.principal(&keep).is_some());
    let names: Vec<String> = c.list().unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["soc"]);
    assert!(c.list().unwrap()[0].created.is_some());
    assert!(matches!(
        c.revoke("contractor"),
        Err(CredentialError::Unknown(_))
    ));
}

#[test]
fn concurrent_enrolls_each_keep_their_entry() {
    let dir = tempfile::tempdir().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                // Each its own handle on the folder, as separate `enroll` processes are.
                let c = Credentials::open(&path).unwrap();
                (0..5)
                    .map(|j| c.enroll(&format!("agent-{i}-{j}"), Role::Agent).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let tokens: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let c = Credentials::open(dir.path()).unwrap();
    assert_eq!(tokens.len(), 40);
    for token in &tokens {
        assert!(c.principal(token).is_some(), "an enroll was lost");
    }
}

#[test]
fn credentials_in_a_shared_store_are_seen_by_every_replica_and_kept_there_only() {
    let kv: Arc<dyn Kv> = Arc::new(crate::kv::memory::MemoryKv::new());
    let one = Credentials::shared(kv.clone()).unwrap();
    let other = Credentials::shared(kv.clone()).unwrap();
    let token = one.enroll("hall-1", Role::Agent).unwrap();
    // The other replica knows it from its next reread (every second in the server).
    assert_eq!(other.principal(&token), None);
    assert!(other.refresh().unwrap());
    assert_eq!(other.principal(&token).map(|p| p.role), Some(Role::Agent));
    assert!(matches!(
        other.enroll("hall-1", Role::Viewer),
        Err(CredentialError::Taken(_))
    ));
    let record = kv.get(crate::store::CREDENTIALS_KEY).unwrap().unwrap();
    assert!(!String::from_utf8_lossy(&record).contains(&token[4..]));
    let mut changes = one.changes();
    changes.mark_unchanged();
    other.revoke("hall-1").unwrap();
    assert!(one.refresh().unwrap(), "the revocation is seen");
    assert!(changes.has_changed().unwrap());
    assert_eq!(one.principal(&token), None);
}
