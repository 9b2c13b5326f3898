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
fn bearer_header_and_cookie_both_carry_the_token() {
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, "Bearer otw_abc".parse().unwrap());
    assert_eq!(token_of(&h).as_deref(), Some("otw_abc"));
    let mut c = HeaderMap::new();
    c.insert(COOKIE, "theme=dark; otwatch_token=otw_xyz".parse().unwrap());
    assert_eq!(token_of(&c).as_deref(), Some("otw_xyz"));
    assert_eq!(token_of(&HeaderMap::new()), None);
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
