use super::*;

const GOOD: &str = "version = 1\nname = \"plant\"\n";
const BROKEN: &str =
    "version = 1\n[[allow]]\nfrom = \"nowhere\"\nto = \"any\"\nfunctions = \"read\"\n";

fn assigned(hash: &str) -> AssignedPolicy {
    AssignedPolicy {
        name: "plant".into(),
        hash: hash.into(),
    }
}

fn reply(hash: &str) -> HeartbeatReply {
    HeartbeatReply {
        policy: Some(assigned(hash)),
        learn: None,
    }
}

fn follower(dir: &Path) -> (PolicyFollower, std::sync::mpsc::Receiver<Reload>) {
    let (tx, rx) = std::sync::mpsc::channel();
    (
        PolicyFollower::new(dir.join("assigned-policy.toml"), None, tx),
        rx,
    )
}

#[test]
fn a_version_other_than_the_one_in_force_is_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let (f, _rx) = follower(dir.path());
    assert!(f.wanted(&reply("aa"), Some("bb")).is_some());
    assert!(f.wanted(&reply("aa"), None).is_some());
    assert!(f.wanted(&reply("aa"), Some("aa")).is_none());
    assert!(f.wanted(&HeartbeatReply::default(), Some("bb")).is_none());
}

#[test]
fn a_good_policy_is_kept_on_disk_and_handed_to_the_reloader_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut f, rx) = follower(dir.path());
    let hash = Policy::parse(GOOD, "x").unwrap().0.hash;
    let loaded = f.take(&assigned(&hash), Some(GOOD.into()));
    assert_eq!(loaded.as_deref(), Some(hash.as_str()));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("assigned-policy.toml")).unwrap(),
        GOOD
    );
    assert!(matches!(rx.try_recv(), Ok(Reload::Loaded(p, _)) if p.hash == hash));
    // Until the heartbeat shows it applied, it is not fetched again.
    assert!(f.wanted(&reply(&hash), None).is_none());
}

#[test]
fn a_broken_policy_is_refused_not_kept_and_not_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut f, rx) = follower(dir.path());
    std::fs::write(dir.path().join("assigned-policy.toml"), GOOD).unwrap();
    assert_eq!(f.take(&assigned("cc"), Some(BROKEN.into())), None);
    match rx.try_recv() {
        Ok(Reload::Rejected(e)) => {
            let e = e.to_string();
            assert!(
                e.starts_with("collector policy \"plant\":3:8: allow[0].from"),
                "{e}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("assigned-policy.toml")).unwrap(),
        GOOD,
        "the last good policy stays on disk"
    );
    assert!(f.wanted(&reply("cc"), Some("bb")).is_none());
    // A newer version is fetched.
    assert!(f.wanted(&reply("dd"), Some("bb")).is_some());
}

#[test]
fn nothing_assigned_any_more_keeps_the_policy_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let (mut f, rx) = follower(dir.path());
    assert_eq!(f.take(&assigned("cc"), None), None);
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_policy_that_cannot_be_kept_is_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut f = PolicyFollower::new(dir.path().join("missing/policy.toml"), None, tx);
    let hash = Policy::parse(GOOD, "x").unwrap().0.hash;
    assert_eq!(f.take(&assigned(&hash), Some(GOOD.into())), None);
    assert!(rx.try_recv().is_err());
    // Tried again after a while, not at every heartbeat.
    assert!(f.wanted(&reply(&hash), None).is_none());
    assert!(can_keep(&dir.path().join("missing/policy.toml")).is_err());
    assert!(can_keep(&dir.path().join("policy.toml")).is_ok());
}

#[test]
fn an_atomic_write_replaces_the_whole_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, "a much longer old text than the new one").unwrap();
    write_atomically(&path, "new").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
