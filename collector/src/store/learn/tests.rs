use super::*;
use crate::kv::memory::MemoryKv;

fn record(agent: &str, id: &str, proposal: &str) -> LearnRecord {
    LearnRecord {
        id: id.into(),
        agent: agent.into(),
        proposal: proposal.into(),
        duration_s: 60,
        requested_by: "lead".into(),
        requested_at: Timestamp::from_secs(1_000),
        received_at: None,
        requests: None,
        toml: None,
    }
}

fn learned(id: &str, toml: &str) -> LearnedPolicy {
    LearnedPolicy {
        request: id.into(),
        toml: toml.into(),
        requests: 5,
    }
}

#[test]
fn learned_policies_are_kept_per_agent_and_gathered_per_proposal() {
    let store = Store::open(MemoryKv::new()).unwrap();
    store
        .request_learning(&record("a1", "aa", "plant"))
        .unwrap();
    store
        .request_learning(&record("a2", "bb", "plant"))
        .unwrap();
    store
        .request_learning(&record("a3", "cc", "other"))
        .unwrap();
    let now = Timestamp::from_secs(2_000);
    assert_eq!(
        store
            .take_learned("a1", &learned("aa", "one"), now)
            .unwrap(),
        Taken::Kept {
            proposal: "plant".into(),
            learned: vec![("a1".into(), "one".into())],
        }
    );
    assert_eq!(
        store
            .take_learned("a1", &learned("aa", "one"), now)
            .unwrap(),
        Taken::Again,
        "a retried batch changes nothing"
    );
    store
        .take_learned("a3", &learned("cc", "three"), now)
        .unwrap();
    let Taken::Kept { learned: all, .. } = store
        .take_learned("a2", &learned("bb", "two"), now)
        .unwrap()
    else {
        panic!("kept");
    };
    assert_eq!(
        all,
        [("a1".into(), "one".into()), ("a2".into(), "two".into())]
    );
    let a1 = store.learn_record("a1").unwrap().unwrap();
    assert_eq!((a1.received_at, a1.requests), (Some(now), Some(5)));
}

#[test]
fn a_policy_for_another_request_or_an_agent_never_asked_is_refused_naming_the_field() {
    let store = Store::open(MemoryKv::new()).unwrap();
    let now = Timestamp::from_secs(2_000);
    let e = store
        .take_learned("a1", &learned("aa", "x"), now)
        .unwrap_err();
    assert!(e.to_string().starts_with("learned.request:"), "{e}");
    store
        .request_learning(&record("a1", "aa", "plant"))
        .unwrap();
    // Asked again: the earlier request is replaced, what answers it refused.
    store
        .request_learning(&record("a1", "ab", "plant"))
        .unwrap();
    let e = store
        .take_learned("a1", &learned("aa", "x"), now)
        .unwrap_err();
    assert!(e.to_string().contains("expected \"ab\""), "{e}");
}
