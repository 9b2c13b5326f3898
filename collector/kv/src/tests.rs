use std::ops::Bound;

use proptest::prelude::*;

use super::memory::MemoryKv;
use super::sled::SledKv;
use super::*;

#[derive(Debug, Clone)]
enum Action {
    Apply(Vec<(u8, Option<u8>)>),
    Get(u8),
    Range(u8, u8, bool, usize),
    Prefix(u8, bool),
    Flush,
    Reopen,
}

fn key(k: u8) -> Vec<u8> {
    // Two-byte keys with a shared first byte for some, so prefixes and ranges mean something.
    vec![k / 16, k]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        prop::collection::vec((any::<u8>(), prop::option::of(any::<u8>())), 0..8)
            .prop_map(Action::Apply),
        any::<u8>().prop_map(Action::Get),
        (any::<u8>(), any::<u8>(), any::<bool>(), 0usize..20)
            .prop_map(|(a, b, r, l)| Action::Range(a, b, r, l)),
        (0u8..16, any::<bool>()).prop_map(|(p, r)| Action::Prefix(p, r)),
        Just(Action::Flush),
        Just(Action::Reopen),
    ]
}

fn order(reverse: bool) -> Order {
    if reverse {
        Order::Descending
    } else {
        Order::Ascending
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// sled behaves like the in-memory model, including after it is closed and reopened.
    #[test]
    fn sled_matches_the_in_memory_model(actions in prop::collection::vec(action(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut sled = SledKv::open(dir.path()).unwrap();
        let model = MemoryKv::new();
        for a in actions {
            match a {
                Action::Apply(ops) => {
                    let mut batch = Batch::new();
                    for (k, v) in ops {
                        match v {
                            Some(v) => batch.put(key(k), vec![v]),
                            None => batch.delete(key(k)),
                        }
                    }
                    sled.apply(batch.clone()).unwrap();
                    model.apply(batch).unwrap();
                }
                Action::Get(k) => prop_assert_eq!(sled.get(&key(k)).unwrap(), model.get(&key(k)).unwrap()),
                Action::Range(a, b, r, limit) => {
                    let (lo, hi) = (key(a.min(b)), key(a.max(b)));
                    let bounds = (Bound::Included(lo.as_slice()), Bound::Excluded(hi.as_slice()));
                    prop_assert_eq!(
                        sled.range(bounds.0, bounds.1, order(r), limit).unwrap(),
                        model.range(bounds.0, bounds.1, order(r), limit).unwrap()
                    );
                }
                Action::Prefix(p, r) => prop_assert_eq!(
                    scan_prefix(&sled, &[p], order(r), 100).unwrap(),
                    scan_prefix(&model, &[p], order(r), 100).unwrap()
                ),
                Action::Flush => sled.flush().unwrap(),
                Action::Reopen => {
                    sled.flush().unwrap();
                    drop(sled);
                    sled = SledKv::open(dir.path()).unwrap();
                }
            }
        }
    }
}

#[test]
fn prefix_end_is_the_next_key_after_the_prefix() {
    assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
    assert_eq!(prefix_end(&[1, 255]), Some(vec![2]));
    assert_eq!(prefix_end(&[255, 255]), None);
}

#[test]
fn flushed_batch_survives_the_process_dying() {
    let dir = tempfile::tempdir().unwrap();
    // A child process writes and flushes, then is killed without closing the database.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::child_writes_then_aborts",
            "--ignored",
            "--nocapture",
        ])
        .env("OTWATCH_KV_DIR", dir.path())
        .status()
        .unwrap();
    assert!(!status.success(), "the child aborts");
    let kv = SledKv::open(dir.path()).unwrap();
    assert_eq!(kv.get(b"durable").unwrap(), Some(b"yes".to_vec()));
}

#[test]
#[ignore = "run by flushed_batch_survives_the_process_dying in a child process"]
fn child_writes_then_aborts() {
    let dir = std::env::var("OTWATCH_KV_DIR").unwrap();
    let kv = SledKv::open(Path::new(&dir)).unwrap();
    let mut batch = Batch::new();
    batch.put(b"durable".to_vec(), b"yes".to_vec());
    kv.apply(batch).unwrap();
    kv.flush().unwrap();
    std::process::abort();
}

use std::path::Path;

#[test]
fn sled_passes_the_conformance_suite() {
    for seed in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let open = || SledKv::open(dir.path()).unwrap();
        let reopen = |kv: SledKv| {
            drop(kv);
            SledKv::open(dir.path()).unwrap()
        };
        conformance::check(open, reopen, seed, 400).unwrap();
    }
}
