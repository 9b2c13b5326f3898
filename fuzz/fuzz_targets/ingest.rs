//! The collector's ingest on arbitrary bodies: decoding an agent's batch and the one validator
//! (`otwatch_rules::validate::batch`) every record goes through. None may panic; what the
//! validator takes keeps its promises (an id that derives from the alert's own fields, `seen`
//! lists as an agent makes them, only from schema 3; conversation windows of at most a day
//! with lists as an agent makes them) and, encoded again as the collector
//! stores it, decodes to a batch the validator still takes with the same ids.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otwatch_rules::alert::seen;
use otwatch_rules::validate;
use otwatch_rules::wire::IngestBatch;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = serde_json::from_slice::<IngestBatch>(data) else {
        return;
    };
    if validate::batch(&batch).is_err() {
        return;
    }
    for a in &batch.alerts {
        if a.schema >= 2 {
            assert!(
                a.id == a.derived_id(0) || a.id == a.derived_id(1),
                "took an id its fields do not derive: {a:?}"
            );
        }
        if let Some(seen) = &a.seen {
            assert!(a.schema >= 3, "took `seen` before schema 3");
            assert!(seen.check().is_ok(), "took {seen:?}");
        }
    }
    for c in &batch.conversations {
        assert!(
            c.since <= c.until && c.until.since(c.since) <= validate::MAX_WINDOW,
            "took {c:?}"
        );
        assert!(
            seen::ascending_once(&c.units) && seen::ascending_once(&c.functions),
            "took {c:?}"
        );
        for side in [&c.reads, &c.writes] {
            for (_, ranges) in side.tables() {
                assert!(seen::check_ranges(ranges).is_ok(), "took {c:?}");
            }
        }
    }
    let stored = serde_json::to_vec(&batch).expect("a batch encodes");
    let back: IngestBatch = serde_json::from_slice(&stored).expect("what was stored decodes");
    assert_eq!(
        validate::batch(&back),
        Ok(()),
        "stored, then refused: {back:?}"
    );
    let ids = |b: &IngestBatch| b.alerts.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&back), ids(&batch));
});
