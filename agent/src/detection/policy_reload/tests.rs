use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use super::*;

/// SIGHUP goes to the whole test process and so to every reloader in it: the tests that hold a
/// reloader take turns, or one test's signal makes another's reloader act.
static ONE_RELOADER: Mutex<()> = Mutex::new(());

fn alone() -> MutexGuard<'static, ()> {
    ONE_RELOADER.lock().unwrap_or_else(|e| e.into_inner())
}

const V1: &str =
    "version = 1\nname = \"one\"\n[[allow]]\nfrom = \"any\"\nto = \"any\"\nfunctions = \"read\"\n";
const V2: &str = "version = 1\nname = \"two\"\n[[allow]]\nfrom = \"any\"\nto = \"any\"\nfunctions = [\"read\", \"write\"]\n";

/// Polls until the reloader acts or twice [`SETTLE`] has passed.
fn settled(r: &mut Reloader) -> Option<Reload> {
    let deadline = Instant::now() + 2 * SETTLE;
    loop {
        let polled = r.poll();
        if polled.is_some() || Instant::now() > deadline {
            return polled;
        }
        std::thread::sleep(SETTLE / 10);
    }
}

fn name(reload: Option<Reload>) -> String {
    match reload {
        Some(Reload::Loaded(p, _)) => p.name.clone().unwrap_or_default(),
        Some(Reload::Rejected(e)) => format!("rejected: {e}"),
        None => "none".into(),
    }
}

#[test]
fn unchanged_file_is_not_reloaded_and_a_changed_one_is() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, V1).unwrap();
    let mut r = Reloader::new(&path).unwrap();
    assert_eq!(name(r.poll()), "none");
    std::fs::write(&path, V2).unwrap();
    assert_eq!(name(settled(&mut r)), "two");
    assert_eq!(name(r.poll()), "none");
    assert_eq!(r.reloads(), 1);
}

#[test]
fn a_file_being_rewritten_is_loaded_once_it_stops_changing_not_halfway() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, V1).unwrap();
    let mut r = Reloader::new(&path).unwrap();
    // An editor saving in place: truncate, then write the new contents in two parts.
    let started = Instant::now();
    std::fs::write(&path, "").unwrap();
    assert_eq!(name(r.poll()), "none");
    std::fs::write(&path, &V2[..20]).unwrap();
    assert_eq!(name(r.poll()), "none");
    std::fs::write(&path, V2).unwrap();
    assert_eq!(name(settled(&mut r)), "two");
    assert!(started.elapsed() >= SETTLE);
    assert_eq!((r.reloads(), r.failures()), (1, 0));
}

#[test]
fn bad_new_policy_is_rejected_with_its_reason_and_counted() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, V1).unwrap();
    let mut r = Reloader::new(&path).unwrap();
    std::fs::write(
        &path,
        "version = 1\n[[allow]]\nfrom = \"ghost\"\nto = \"any\"\nfunctions = \"read\"\n",
    )
    .unwrap();
    let outcome = name(settled(&mut r));
    assert!(
        outcome.starts_with("rejected:") && outcome.contains("ghost"),
        "{outcome}"
    );
    assert_eq!((r.reloads(), r.failures()), (0, 1));
    assert_eq!(
        name(r.poll()),
        "none",
        "a rejected file is not retried until it changes"
    );
}

#[test]
fn sighup_reloads_even_an_unchanged_file() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, V1).unwrap();
    let mut r = Reloader::new(&path).unwrap();
    signal_hook::low_level::raise(signal_hook::consts::SIGHUP).unwrap();
    assert_eq!(name(r.poll()), "one");
}

#[test]
fn a_policy_from_the_collector_is_applied_once_and_its_file_not_reloaded() {
    let _alone = alone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("assigned-policy.toml");
    let mut r = Reloader::new(&path).unwrap();
    let assigned = r.follow_collector();
    assert_eq!(name(r.poll()), "none", "no cached policy yet");
    // The follower writes the file, then hands the policy over.
    std::fs::write(&path, V2).unwrap();
    let (policy, warnings) = Policy::parse(V2, "collector").unwrap();
    assigned
        .send(Reload::Loaded(Arc::new(policy), warnings))
        .unwrap();
    assert_eq!(name(r.poll()), "two");
    assert_eq!(
        name(settled(&mut r)),
        "none",
        "the file it wrote is not loaded again"
    );
    assert_eq!((r.reloads(), r.failures()), (1, 0));
}
