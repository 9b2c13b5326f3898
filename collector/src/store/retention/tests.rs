use std::collections::BTreeMap;

use otwatch_rules::alert::Severity;
use otwatch_rules::time::Timestamp;
use proptest::prelude::*;

use super::shares;
use crate::fixtures::{alert, batch};
use crate::kv::memory::MemoryKv;
use crate::store::{AlertFilter, Store};

/// Every posting lists at least one stored alert, and every group of postings names only
/// postings that exist.
fn assert_every_posting_is_live(s: &Store<MemoryKv>) {
    use crate::kv::{Kv, Order, scan_prefix};
    use crate::store::keys;
    let postings = scan_prefix(s.kv(), &[keys::INDEX], Order::Ascending, usize::MAX).unwrap();
    assert!(!postings.is_empty());
    for (key, members) in &postings {
        let live = keys::posting_entries(members)
            .any(|suffix| s.kv().get(&keys::alert(&suffix)).unwrap().is_some());
        assert!(live, "a posting lists only removed alerts: {key:?}");
    }
    for (_, list) in scan_prefix(
        s.kv(),
        &[keys::POSTING_RECORDS],
        Order::Ascending,
        usize::MAX,
    )
    .unwrap()
    {
        for posting in keys::posting_keys(&list) {
            assert!(s.kv().get(posting).unwrap().is_some());
        }
    }
}

fn held(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(a, n)| (a.to_string(), *n)).collect()
}

#[test]
fn the_agent_holding_the_most_gives_up_first() {
    assert_eq!(
        shares(&held(&[("flood", 9000), ("quiet", 1000)]), 1000),
        held(&[("flood", 1000)])
    );
    // Down to a common level, then shared.
    assert_eq!(
        shares(&held(&[("a", 100), ("b", 60), ("c", 10)]), 60),
        held(&[("a", 50), ("b", 10)])
    );
    let even = shares(&held(&[("a", 10), ("b", 10)]), 5);
    assert_eq!(even.values().sum::<u64>(), 5);
    assert!(even.values().all(|n| (2..=3).contains(n)), "{even:?}");
    // Never more than there is.
    assert_eq!(shares(&held(&[("a", 3)]), 10), held(&[("a", 3)]));
    assert!(shares(&BTreeMap::new(), 10).is_empty());
}

proptest! {
    #[test]
    fn shares_remove_exactly_the_budget_and_leave_no_agent_below_one_that_gave_up(
        counts in proptest::collection::vec(0u64..5_000, 1..12),
        budget in 0u64..20_000,
    ) {
        let held: BTreeMap<String, u64> =
            counts.iter().enumerate().map(|(i, c)| (format!("a{i}"), *c)).collect();
        let total: u64 = held.values().sum();
        let given = shares(&held, budget);
        prop_assert_eq!(given.values().sum::<u64>(), budget.min(total));
        let left = |a: &str| held[a] - given.get(a).copied().unwrap_or(0);
        for (a, g) in &given {
            prop_assert!(*g <= held[a]);
            // An agent that gave up alerts keeps at least as many as any other, less one.
            for b in held.keys() {
                prop_assert!(left(b) <= left(a) + 1, "{} kept {} but {} kept {}", b, left(b), a, left(a));
            }
        }
    }
}

#[test]
fn one_agent_flooding_the_store_loses_its_own_history_not_the_others() {
    let s = Store::open(MemoryKv::new()).unwrap();
    // A quiet agent's 100 alerts, older than anything the flooding one sends.
    s.ingest(
        &batch(
            "quiet",
            (0..100)
                .map(|n| alert(n, "r", Severity::High, "10.0.0.1", "10.0.0.2", "quiet"))
                .collect(),
        ),
        Timestamp::from_secs(5_000),
    )
    .unwrap();
    for chunk in 0..9 {
        let alerts = (0..100)
            .map(|n| {
                let mut a = alert(
                    1_000 + chunk * 100 + n,
                    "r",
                    Severity::Low,
                    "10.0.0.9",
                    "10.0.0.2",
                    "flood",
                );
                a.ts = Timestamp::from_secs(50_000 + chunk * 100 + n);
                a
            })
            .collect();
        s.ingest(&batch("flood", alerts), Timestamp::from_secs(5_000))
            .unwrap();
    }
    // Over the size limit: a tenth of 1,000 goes, all of it the flooding agent's oldest.
    assert_eq!(s.enforce_retention(None, Some(1)).unwrap(), 100);
    let count = |agent: &str| {
        s.query_alerts(
            &AlertFilter {
                agent: Some(agent.into()),
                ..Default::default()
            },
            None,
            1000,
        )
        .unwrap()
        .alerts
        .len()
    };
    assert_eq!((count("quiet"), count("flood")), (100, 800));
    assert_eq!(
        s.stored_by_agent().unwrap(),
        held(&[("flood", 800), ("quiet", 100)])
    );
    assert_eq!(s.alert_count().unwrap(), 900);
    // The index of what went goes too, although the quiet agent's older alerts stay: every
    // posting left lists an alert still stored, every group lists postings that exist.
    assert_every_posting_is_live(&s);
    // Pass after pass, the flooding agent comes down to the quiet one's level before the
    // quiet one loses anything.
    for _ in 0..7 {
        s.enforce_retention(None, Some(1)).unwrap();
    }
    assert_eq!(count("quiet"), 100);
    // An age limit still applies to every agent.
    s.enforce_retention(Some(Timestamp::from_secs(1_050)), None)
        .unwrap();
    assert_eq!(count("quiet"), 50);
}
