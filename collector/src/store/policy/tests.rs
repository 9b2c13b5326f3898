use super::*;
use crate::kv::sled::SledKv;

fn store(dir: &std::path::Path) -> Store<SledKv> {
    Store::open(SledKv::open(dir).unwrap()).unwrap()
}

fn text(n: u32) -> String {
    format!("version = 1\nname = \"hall\"\n# revision {n}\n")
}

fn new<'a>(toml: &'a str, hash: &'a str, author: &'a str) -> NewVersion<'a> {
    NewVersion {
        toml,
        hash,
        author,
        at: Timestamp::from_secs(1_800_000_000),
        note: None,
    }
}

fn stored(put: PolicyPut) -> PolicyVersion {
    match put {
        PolicyPut::Stored(v) => v,
        other => panic!("not stored: {other:?}"),
    }
}

#[test]
fn versions_follow_each_other_only_when_the_version_in_force_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let (t1, t2) = (text(1), text(2));
    let v1 = stored(s.put_policy("hall", new(&t1, "h1", "alice"), None).unwrap());
    assert_eq!((v1.version, v1.hash.as_str()), (1, "h1"));
    // An existing policy changes only with the version in force named.
    assert_eq!(
        s.put_policy("hall", new(&t2, "h2", "bob"), None).unwrap(),
        PolicyPut::Precondition {
            current: Some("h1".into())
        }
    );
    assert_eq!(
        s.put_policy("hall", new(&t2, "h2", "bob"), Some("h0"))
            .unwrap(),
        PolicyPut::Precondition {
            current: Some("h1".into())
        }
    );
    let v2 = stored(
        s.put_policy("hall", new(&t2, "h2", "bob"), Some("h1"))
            .unwrap(),
    );
    assert_eq!((v2.version, v2.author.as_str()), (2, "bob"));
    // The same text again makes no version.
    assert_eq!(
        s.put_policy("hall", new(&t2, "h2", "carol"), Some("h2"))
            .unwrap(),
        PolicyPut::Unchanged(v2.clone())
    );
    // A version named for a policy that does not exist fails too.
    assert_eq!(
        s.put_policy("other", new(&t1, "h1", "alice"), Some("h1"))
            .unwrap(),
        PolicyPut::Precondition { current: None }
    );
    assert_eq!(s.policy("hall").unwrap(), Some(v2.clone()));
    assert_eq!(s.policy("other").unwrap(), None);
    assert_eq!(s.policy_history("hall", 10).unwrap(), vec![v2, v1]);
}

#[test]
fn a_rollback_is_a_new_version_and_everything_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (t1, t2) = (text(1), text(2));
    {
        let s = store(dir.path());
        s.put_policy("hall", new(&t1, "h1", "alice"), None).unwrap();
        s.put_policy("hall", new(&t2, "h2", "alice"), Some("h1"))
            .unwrap();
        let old = s.policy_version("hall", 1).unwrap().unwrap();
        let back = NewVersion {
            note: Some("rollback to version 1"),
            ..new(&old.toml, &old.hash, "bob")
        };
        let v3 = stored(s.put_policy("hall", back, Some("h2")).unwrap());
        assert_eq!((v3.version, v3.hash.as_str()), (3, "h1"));
        s.put_policy("plc-cell.2", new(&t2, "h2", "alice"), None)
            .unwrap();
    }
    let s = store(dir.path());
    let current = s.policy("hall").unwrap().unwrap();
    assert_eq!(current.toml, t1);
    assert_eq!(current.note.as_deref(), Some("rollback to version 1"));
    let versions: Vec<u64> = s
        .policy_history("hall", 10)
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(versions, [3, 2, 1]);
    let listed: Vec<(String, u64)> = s
        .policies()
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.version))
        .collect();
    assert_eq!(
        listed,
        [("hall".to_string(), 3), ("plc-cell.2".to_string(), 1)]
    );
}

#[test]
fn names_sizes_and_counts_are_bounded_and_refusals_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let t = text(1);
    for bad in ["", ".hidden", "a/b", "a b", "é", &"x".repeat(65)] {
        let e = s.put_policy(bad, new(&t, "h", "a"), None).unwrap_err();
        assert!(e.to_string().starts_with("name: "), "{bad:?}: {e}");
        assert!(s.policy(bad).is_err());
    }
    let big = "#".repeat(MAX_POLICY_BYTES + 1);
    let e = s.put_policy("big", new(&big, "h", "a"), None).unwrap_err();
    assert!(e.to_string().starts_with("policy: "), "{e}");
    for n in 0..MAX_POLICIES {
        s.put_policy(&format!("p{n}"), new(&t, "h", "a"), None)
            .unwrap();
    }
    let e = s
        .put_policy("one-more", new(&t, "h", "a"), None)
        .unwrap_err();
    assert!(e.to_string().contains("holds 256 already"), "{e}");
    assert_eq!(s.policies().unwrap().len(), MAX_POLICIES);
}

#[test]
fn only_the_newest_versions_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let mut hash = None;
    for n in 0..MAX_VERSIONS + 5 {
        let (t, h) = (text(n as u32), format!("h{n}"));
        s.put_policy("hall", new(&t, &h, "a"), hash.as_deref())
            .unwrap();
        hash = Some(h);
    }
    let kept = s.policy_history("hall", usize::MAX).unwrap();
    assert_eq!(kept.len() as u64, MAX_VERSIONS);
    assert_eq!(kept.first().map(|v| v.version), Some(MAX_VERSIONS + 5));
    assert_eq!(kept.last().map(|v| v.version), Some(6));
    assert_eq!(s.policy_version("hall", 5).unwrap(), None);
    // Found by hash, the newest with it, however far back (read a few at a time).
    let found = s.policy_version_by_hash("hall", "h6").unwrap().unwrap();
    assert_eq!(found.version, 7);
    assert_eq!(s.policy_version_by_hash("hall", "h1").unwrap(), None);
}

#[test]
fn a_policys_assignment_history_keeps_its_newest_changes_only() {
    let store = Store::open(crate::kv::memory::MemoryKv::new()).unwrap();
    store
        .put_policy("hall", new(&text(1), "h1", "lead"), None)
        .unwrap();
    let extra = 5;
    for i in 0..MAX_ASSIGNMENT_CHANGES + extra {
        let at = Timestamp::from_secs(1_000 + i);
        store
            .assign_policy(&format!("a{i}"), Some("hall"), "lead", at)
            .unwrap();
    }
    let kept = store.assignment_changes("hall", 5_000).unwrap();
    assert_eq!(kept.len() as u64, MAX_ASSIGNMENT_CHANGES);
    assert_eq!(
        kept[0].agent,
        format!("a{}", MAX_ASSIGNMENT_CHANGES + extra - 1)
    );
    assert_eq!(kept.last().unwrap().agent, format!("a{extra}"));
}
