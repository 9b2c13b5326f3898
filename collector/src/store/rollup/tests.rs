use std::collections::BTreeMap;

use otwatch_rules::alert::{Alert, Severity};
use otwatch_rules::time::Timestamp;

use super::*;
use crate::fixtures::{alert, batch};
use crate::kv::memory::MemoryKv;
use crate::kv::scan_prefix;
use crate::store::{AlertFilter, SCHEMA_VERSION, keys};

const HOUR: u64 = 3_600;
const NOW: Timestamp = Timestamp::from_secs(10_000_000);

/// Alert `n` at `secs`, of one of three rules and four severities, from one of five sources,
/// naming one or two techniques.
fn varied(n: u64, secs: u64) -> Alert {
    let severity = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ][(n % 4) as usize];
    let mut a = alert(
        n,
        ["diag.a", "write.b", "recon.c"][(n % 3) as usize],
        severity,
        &format!("10.0.0.{}", n % 5),
        "10.0.1.1",
        "a1",
    );
    a.ts = Timestamp::from_secs(secs);
    a.first_ts = a.ts;
    if n.is_multiple_of(2) {
        a.technique.push("T0836".into());
    }
    a
}

/// Alerts spread over three days and a bit, a few per hour.
fn spread() -> Vec<Alert> {
    (0..400).map(|n| varied(n, 86_400 * 20 + n * 701)).collect()
}

fn ingest_all(s: &Store<MemoryKv>, alerts: &[Alert]) {
    for chunk in alerts.chunks(64) {
        s.ingest(&batch("a1", chunk.to_vec()), NOW).unwrap();
    }
}

/// What the store holds, read alert by alert.
fn stored(s: &Store<MemoryKv>) -> Vec<Alert> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = s
            .query_alerts(&AlertFilter::default(), cursor.as_deref(), 1000)
            .unwrap();
        out.extend(page.alerts);
        match page.next {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

/// `top` as a brute force over `alerts`, on the range widened to whole hours.
fn brute_top(alerts: &[Alert], dim: Dimension, since: u64, until: u64) -> BTreeMap<String, u64> {
    let (from, to) = (since / HOUR * HOUR, until.div_ceil(HOUR) * HOUR);
    let mut out = BTreeMap::new();
    for a in alerts {
        let t = a.ts.as_nanos() / 1_000_000_000;
        if t < from || t >= to {
            continue;
        }
        for v in dim.values(a) {
            *out.entry(display(dim, &v)).or_default() += 1;
        }
    }
    out
}

fn top_map(t: &Top) -> BTreeMap<String, u64> {
    t.top.iter().map(|r| (r.value.clone(), r.count)).collect()
}

/// Checks `top` and `timeline` against a brute force over what is stored, on ranges that
/// start and end mid-hour, on day boundaries, and span from an hour to all of it.
fn assert_counts_match(s: &Store<MemoryKv>) {
    let alerts = stored(s);
    let base = 86_400 * 20;
    for (since, until) in [
        (base, base + 4 * 86_400),
        (base + 1_800, base + 86_400 + 5_400),
        (base + 86_400, base + 3 * 86_400),
        (base + 86_400 - 1, base + 3 * 86_400 + 1),
        (base + 40_000, base + 40_001),
        (base - 10 * 86_400, base + 990 * 86_400),
    ] {
        let (from, to) = (Timestamp::from_secs(since), Timestamp::from_secs(until));
        for dim in Dimension::ALL {
            let top = s.top(dim, from, to, 1000).unwrap();
            let expected = brute_top(&alerts, dim, since, until);
            assert_eq!(top_map(&top), expected, "{dim:?} over {since}..{until}");
            assert_eq!(top.total, expected.values().sum::<u64>());
            assert_eq!((top.rest, top.uncounted), (0, 0));
        }
        if until - since <= 40 * 86_400 {
            let line = s.timeline(Span::Hour, from, to).unwrap();
            let by_severity: u64 = line
                .iter()
                .map(|b| b.info + b.low + b.medium + b.high + b.critical)
                .sum();
            let expected = brute_top(&alerts, Dimension::Severity, since, until);
            assert_eq!(by_severity, expected.values().sum::<u64>());
            for b in &line {
                let t = b.start.as_nanos() / 1_000_000_000;
                let of = |sev: Severity| {
                    alerts
                        .iter()
                        .filter(|a| {
                            let at = a.ts.as_nanos() / 1_000_000_000;
                            a.severity == sev && at >= t && at < t + HOUR
                        })
                        .count() as u64
                };
                assert_eq!(
                    (b.low, b.medium, b.high, b.critical),
                    (
                        of(Severity::Low),
                        of(Severity::Medium),
                        of(Severity::High),
                        of(Severity::Critical)
                    )
                );
            }
        }
    }
}

#[test]
fn counts_are_those_of_the_stored_alerts_through_retries_and_retention() {
    let s = Store::open(MemoryKv::new()).unwrap();
    let alerts = spread();
    ingest_all(&s, &alerts);
    assert_counts_match(&s);
    // A retried batch changes nothing.
    ingest_all(&s, &alerts[..100]);
    assert_counts_match(&s);
    // Retention by age counts what it removes out.
    let cut = Timestamp::from_secs(86_400 * 21 + 1_234);
    assert!(s.enforce_retention(Some(cut), None).unwrap() > 0);
    assert_counts_match(&s);
    // And by size, out of time order.
    s.enforce_retention(None, Some(1)).unwrap();
    assert_counts_match(&s);
}

#[test]
fn a_day_timeline_adds_up_its_hours() {
    let s = Store::open(MemoryKv::new()).unwrap();
    ingest_all(&s, &spread());
    let (from, to) = (
        Timestamp::from_secs(86_400 * 20),
        Timestamp::from_secs(86_400 * 24),
    );
    let days = s.timeline(Span::Day, from, to).unwrap();
    let hours = s.timeline(Span::Hour, from, to).unwrap();
    assert_eq!((days.len(), hours.len()), (4, 96));
    for (d, day) in days.iter().enumerate() {
        let sum = |f: fn(&Bucket) -> u64| hours[d * 24..(d + 1) * 24].iter().map(f).sum::<u64>();
        assert_eq!(day.high, sum(|b| b.high));
        assert_eq!(day.critical, sum(|b| b.critical));
        assert_eq!(day.low + day.medium, sum(|b| b.low + b.medium));
    }
    assert!(days.iter().map(|d| d.high).sum::<u64>() > 0);
}

#[test]
fn a_timeline_of_too_many_buckets_is_refused_naming_since() {
    let s = Store::open(MemoryKv::new()).unwrap();
    let err = s
        .timeline(
            Span::Hour,
            Timestamp::from_secs(0),
            Timestamp::from_secs(HOUR * 1001),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("since: the range spans 1001 buckets"),
        "{err}"
    );
    assert_eq!(
        s.timeline(
            Span::Hour,
            Timestamp::from_secs(0),
            Timestamp::from_secs(HOUR * 1000)
        )
        .unwrap()
        .len(),
        1000
    );
}

#[test]
fn a_top_over_more_than_a_thousand_days_is_refused_naming_since() {
    let s = Store::open(MemoryKv::new()).unwrap();
    let err = s
        .top(
            Dimension::Rule,
            Timestamp::from_secs(0),
            Timestamp::from_secs(1001 * 86_400),
            10,
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("since: the range spans 1001 days"),
        "{err}"
    );
    assert!(
        s.top(
            Dimension::Rule,
            Timestamp::from_secs(0),
            Timestamp::from_secs(1000 * 86_400),
            10
        )
        .is_ok()
    );
}

#[test]
fn a_flood_of_sources_counts_the_first_thousand_alone_and_the_rest_as_other() {
    let s = Store::open(MemoryKv::new()).unwrap();
    let hour = 86_400 * 30;
    let alerts: Vec<Alert> = (0..MAX_VALUES + 200)
        .map(|n| {
            let mut a = varied(n, hour + n % 3_000);
            a.src_ip = std::net::IpAddr::from([10, 1, (n / 256) as u8, (n % 256) as u8]);
            a
        })
        .collect();
    ingest_all(&s, &alerts);
    let (from, to) = (
        Timestamp::from_secs(hour),
        Timestamp::from_secs(hour + HOUR),
    );
    let top = s.top(Dimension::Source, from, to, 10).unwrap();
    assert_eq!(top.total, MAX_VALUES + 200, "totals stay exact");
    assert_eq!(top.uncounted, 200);
    assert_eq!(top.top.len(), 10);
    assert_eq!(top.rest, MAX_VALUES + 200 - 10);
    let values = scan_prefix(
        s.kv(),
        &[keys::ROLLUP, b'h', b's'],
        Order::Ascending,
        usize::MAX,
    )
    .unwrap()
    .len() as u64;
    // A count per value kept alone, the count of distinct values and `other`.
    assert_eq!(values, MAX_VALUES + 2);
    // Removing them all leaves nothing behind.
    s.enforce_retention(Some(Timestamp::from_secs(hour + HOUR)), None)
        .unwrap();
    assert_eq!(
        scan_prefix(s.kv(), &[keys::ROLLUP], Order::Ascending, usize::MAX)
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn a_schema_3_store_gets_its_counts_when_opened() {
    let written = Store::open(MemoryKv::new()).unwrap();
    ingest_all(&written, &spread());
    // Its keys, back at schema 3: no counts.
    let kv = MemoryKv::new();
    let mut b = Batch::new();
    let everything = written
        .kv()
        .range(
            Bound::Unbounded,
            Bound::Unbounded,
            Order::Ascending,
            usize::MAX,
        )
        .unwrap();
    for (k, v) in everything {
        if k.first() != Some(&keys::ROLLUP) {
            b.put(k, v);
        }
    }
    b.put(
        keys::named(keys::META, b"schema"),
        3u32.to_be_bytes().to_vec(),
    );
    kv.apply(b).unwrap();
    let s = Store::open(kv).unwrap();
    let version = s.kv().get(&keys::named(keys::META, b"schema")).unwrap();
    assert_eq!(version, Some(SCHEMA_VERSION.to_be_bytes().to_vec()));
    assert_counts_match(&s);
}
