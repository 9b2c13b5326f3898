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
        error: None,
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
fn a_learned_policy_is_kept_apart_from_its_request_and_a_new_request_forgets_it() {
    let store = Store::open(MemoryKv::new()).unwrap();
    store
        .request_learning(&record("a1", "aa", "plant"))
        .unwrap();
    let now = Timestamp::from_secs(2_000);
    store
        .keep_learned("a1", &learned("aa", "one"), now, None)
        .unwrap();
    let a1 = store.learn_record("a1").unwrap().unwrap();
    assert_eq!(
        (a1.received_at, a1.requests, a1.error),
        (Some(now), Some(5), None)
    );
    assert_eq!(store.learned_toml("a1").unwrap().as_deref(), Some("one"));
    store
        .request_learning(&record("a1", "ab", "plant"))
        .unwrap();
    assert_eq!(store.learned_toml("a1").unwrap(), None);
    assert_eq!(store.learn_records().unwrap().len(), 1);
}

#[test]
fn a_policy_for_another_request_or_an_agent_never_asked_is_refused_naming_the_field() {
    let store = Store::open(MemoryKv::new()).unwrap();
    let now = Timestamp::from_secs(2_000);
    let e = store
        .keep_learned("a1", &learned("aa", "x"), now, None)
        .unwrap_err();
    assert!(e.to_string().starts_with("learned.request:"), "{e}");
    store
        .request_learning(&record("a1", "aa", "plant"))
        .unwrap();
    // Asked again: the earlier request is replaced, what answers it refused.
    store
        .request_learning(&record("a1", "ab", "plant"))
        .unwrap();
    let e = store.answered("a1", &learned("aa", "x")).unwrap_err();
    assert!(e.to_string().contains("expected \"ab\""), "{e}");
}
