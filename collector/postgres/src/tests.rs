// Test code: a failed unwrap is a failed test (`cfg(all(test, ...))` hides it from clippy's
// allow-unwrap-in-tests).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use otwatch_kv::{Batch, Kv, conformance};

use super::throwaway::Cluster;
use super::*;

fn database(cluster: &Cluster, name: &str) -> Options {
    cluster.create_database(name).unwrap();
    cluster.options(name)
}

#[test]
fn postgres_passes_the_conformance_suite() {
    let Some(cluster) = Cluster::for_test("postgres_passes_the_conformance_suite") else {
        return;
    };
    for seed in 0..3 {
        let options = database(&cluster, &format!("conformance{seed}"));
        let open = || PgKv::open(&options, Create::IfMissing).unwrap();
        let reopen = |kv: PgKv| {
            drop(kv);
            PgKv::open(&options, Create::Never).unwrap()
        };
        conformance::check(open, reopen, seed, 300).unwrap();
    }
}

#[test]
fn writer_sections_of_two_engines_never_interleave() {
    let Some(cluster) = Cluster::for_test("writer_sections_of_two_engines_never_interleave") else {
        return;
    };
    let options = database(&cluster, "sections");
    // Two engines, as two replicas would have, each used by two threads.
    let engines = [
        Arc::new(PgKv::open(&options, Create::IfMissing).unwrap()),
        Arc::new(PgKv::open(&options, Create::Never).unwrap()),
    ];
    let locks = [Arc::new(Mutex::new(())), Arc::new(Mutex::new(()))];
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let kv = Arc::clone(&engines[i % 2]);
            let lock = Arc::clone(&locks[i % 2]);
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let _local = lock.lock().unwrap();
                    let _section = kv.section().unwrap();
                    let n = kv
                        .get(b"counter")
                        .unwrap()
                        .map(|v| u64::from_be_bytes(v.try_into().unwrap()))
                        .unwrap_or(0);
                    let mut b = Batch::new();
                    b.put(b"counter".to_vec(), (n + 1).to_be_bytes().to_vec());
                    kv.apply(b).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let n = engines[0].get(b"counter").unwrap().unwrap();
    assert_eq!(
        u64::from_be_bytes(n.try_into().unwrap()),
        200,
        "no increment lost"
    );
}

#[test]
fn a_section_whose_connection_dies_fails_instead_of_writing_unlocked() {
    let Some(cluster) = Cluster::for_test("a_section_whose_connection_dies_fails") else {
        return;
    };
    let options = database(&cluster, "fencing");
    let kv = PgKv::open(&options, Create::IfMissing).unwrap();
    let other = PgKv::open(&options, Create::Never).unwrap();
    let section = kv.section().unwrap();
    let nested = kv.section().map(|_| ()).unwrap_err().to_string();
    assert!(nested.contains("do not nest"), "{nested}");
    // The section's backend is killed, as a network partition would end it.
    cluster
        .sql(
            "fencing",
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted",
        )
        .unwrap();
    let mut b = Batch::new();
    b.put(b"k".to_vec(), b"v".to_vec());
    assert!(kv.apply(b).is_err(), "a write after losing the lock fails");
    // And every later call of the section, even one that would find a new connection.
    assert!(kv.get(b"k").is_err(), "the section stays failed");
    drop(section);
    // The lock went with the connection: another replica enters at once, and so does this one.
    drop(other.section().unwrap());
    drop(kv.section().unwrap());
    assert_eq!(kv.get(b"k").unwrap(), None);
}

#[test]
fn a_database_without_tables_or_with_newer_ones_is_refused() {
    let Some(cluster) = Cluster::for_test("a_database_without_tables_is_refused") else {
        return;
    };
    let options = database(&cluster, "versions");
    let err = PgKv::open(&options, Create::Never).unwrap_err().to_string();
    assert!(err.contains("otwatch-collector init"), "{err}");
    drop(PgKv::open(&options, Create::IfMissing).unwrap());
    cluster
        .sql("versions", "UPDATE otwatch_engine SET version = 99")
        .unwrap();
    let err = PgKv::open(&options, Create::Never).unwrap_err().to_string();
    assert!(err.contains("version 99, newer"), "{err}");
}

#[test]
fn a_password_in_the_url_or_a_wrong_one_is_refused() {
    let Some(cluster) = Cluster::for_test("a_password_in_the_url_is_refused") else {
        return;
    };
    let url = format!(
        "postgresql://otwatch:secret@127.0.0.1:{}/postgres",
        cluster.port()
    );
    let err = PgKv::open(&Options::new(url), Create::Never)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("store url: carries a password"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-it\n").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let options = Options {
        password_file: Some(wrong),
        ..Options::new(cluster.url("postgres"))
    };
    let err = PgKv::open(&options, Create::Never).unwrap_err().to_string();
    assert!(err.contains("password authentication failed"), "{err}");
}

#[test]
fn a_multi_host_url_finds_the_primary_after_a_promotion() {
    let Some(primary) = Cluster::for_test("a_multi_host_url_finds_the_primary") else {
        return;
    };
    primary.create_database("ha").unwrap();
    let standby = primary.synchronous_standby().unwrap();
    let url = format!(
        "postgresql://otwatch@127.0.0.1:{},127.0.0.1:{}/ha?target_session_attrs=read-write",
        primary.port(),
        standby.port()
    );
    let options = Options {
        password_file: Some(primary.password_file().to_path_buf()),
        ..Options::new(url)
    };
    let kv = PgKv::open(&options, Create::IfMissing).unwrap();
    let mut b = Batch::new();
    b.put(b"before".to_vec(), b"1".to_vec());
    // Synchronous: once applied, the standby has it.
    kv.apply(b).unwrap();
    primary.stop().unwrap();
    standby.promote().unwrap();
    // The pool's connections to the old primary fail once; new ones find the promoted standby.
    let mut found = None;
    for _ in 0..20 {
        match kv.get(b"before") {
            Ok(v) => {
                found = v;
                break;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(250)),
        }
    }
    assert_eq!(
        found,
        Some(b"1".to_vec()),
        "the committed write survived the failover"
    );
    let mut b = Batch::new();
    b.put(b"after".to_vec(), b"2".to_vec());
    kv.apply(b).unwrap();
    assert_eq!(kv.get(b"after").unwrap(), Some(b"2".to_vec()));
}

#[test]
fn live_bytes_fall_when_rows_go_while_the_files_keep_their_size() {
    let Some(cluster) = Cluster::for_test("live_bytes_fall_when_rows_go") else {
        return;
    };
    let kv = PgKv::open(&database(&cluster, "sizes"), Create::IfMissing).unwrap();
    let mut b = Batch::new();
    for n in 0u32..4_000 {
        b.put(n.to_be_bytes().to_vec(), vec![7u8; 1_000]);
    }
    kv.apply(b).unwrap();
    let (live, disk) = (kv.live_bytes().unwrap(), kv.size_on_disk().unwrap());
    assert!(
        live >= 4_000_000 && disk >= live,
        "{live} live, {disk} on disk"
    );
    let mut b = Batch::new();
    for n in 0u32..3_900 {
        b.delete(n.to_be_bytes().to_vec());
    }
    kv.apply(b).unwrap();
    let live_after = kv.live_bytes().unwrap();
    assert!(
        live_after < 200_000,
        "{live_after} live after removing 39/40 of the rows"
    );
    assert!(
        kv.size_on_disk().unwrap() >= disk,
        "the files keep their space"
    );
}
