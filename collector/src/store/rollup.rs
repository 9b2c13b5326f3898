//! Counts of the stored alerts per hour and per day of capture time (UTC), by severity, rule,
//! source and technique: what the dashboard's charts ask for (alerts over time by severity,
//! top rules, top sources, the ATT&CK matrix), answered from a few thousand keys whatever the
//! number of alerts stored, never by reading alerts.
//!
//! Invariants:
//! - The counts are those of the stored alerts: ingest adds each alert it stores (never a
//!   duplicate) in the batch that stores it, retention takes each alert away in the batch that
//!   removes it.
//! - One bucket of one dimension holds at most [`MAX_VALUES`] distinct values (severity, with
//!   five, is never capped): a hostile agent or a spoofed flood cannot make a chart read
//!   millions of keys. Alerts with further values are counted under `other`, so totals stay
//!   exact. A range spans at most [`MAX_BUCKETS`] days, so a query reads at most about 1,000
//!   keys per day of its range and dimension.
//!
//! Keys: `H`, the span (`h` or `d`), a dimension byte, the bucket (8 bytes: hours or days since
//! the epoch), then a tag: `0` for the bucket's count of distinct values, `1` and the value for
//! a value's count, `2` for the count of `other`. Values are 8-byte big-endian counts.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ops::Bound;

use otwatch_rules::alert::{Alert, Severity};
use otwatch_rules::time::Timestamp;
use serde::Serialize;

use super::{Store, StoreError, keys, u64_of};
use crate::kv::{Batch, Kv, Order};

/// Most distinct values one dimension counts in one bucket; alerts with more go to `other`.
pub const MAX_VALUES: u64 = 1000;

/// Most buckets a timeline answers with (1000 hours is six weeks, 1000 days nearly three
/// years).
pub const MAX_BUCKETS: u64 = 1000;

/// Keys read per page of a scan.
const PAGE: usize = 4096;

const TAG_DISTINCT: u8 = 0;
const TAG_VALUE: u8 = 1;
const TAG_OTHER: u8 = 2;

/// A bucket's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Span {
    /// One hour.
    Hour,
    /// One UTC day.
    Day,
}

impl Span {
    const BOTH: [Span; 2] = [Span::Hour, Span::Day];

    /// The bucket's width in nanoseconds.
    pub fn nanos(self) -> u64 {
        match self {
            Self::Hour => 3_600_000_000_000,
            Self::Day => 86_400_000_000_000,
        }
    }

    fn byte(self) -> u8 {
        match self {
            Self::Hour => b'h',
            Self::Day => b'd',
        }
    }

    /// The bucket a time falls in.
    fn of(self, t: u64) -> u64 {
        t / self.nanos()
    }
}

/// What alerts are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    /// Severity.
    Severity,
    /// Rule id.
    Rule,
    /// Source address (the master, for a command).
    Source,
    /// ATT&CK technique (an alert with two counts in both).
    Technique,
}

impl Dimension {
    const ALL: [Dimension; 4] = [
        Dimension::Severity,
        Dimension::Rule,
        Dimension::Source,
        Dimension::Technique,
    ];

    fn byte(self) -> u8 {
        match self {
            Self::Severity => b'v',
            Self::Rule => b'r',
            Self::Source => b's',
            Self::Technique => b't',
        }
    }

    /// The values an alert is counted under.
    fn values(self, alert: &Alert) -> Vec<Vec<u8>> {
        match self {
            Self::Severity => vec![vec![alert.severity as u8]],
            Self::Rule => vec![alert.rule.as_bytes().to_vec()],
            Self::Source => vec![alert.src_ip.to_string().into_bytes()],
            Self::Technique => alert
                .technique
                .iter()
                .map(|t| t.as_bytes().to_vec())
                .collect(),
        }
    }
}

/// The key of a bucket's `tag` entry, without a value.
fn bucket_key(span: Span, dim: Dimension, bucket: u64, tag: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(12);
    k.push(keys::ROLLUP);
    k.push(span.byte());
    k.push(dim.byte());
    k.extend_from_slice(&bucket.to_be_bytes());
    k.push(tag);
    k
}

/// Where the keys of `dim` in buckets `[from, to)` of `span` lie.
fn bucket_range(span: Span, dim: Dimension, from: u64, to: u64) -> (Vec<u8>, Vec<u8>) {
    (bucket_key(span, dim, from, 0), bucket_key(span, dim, to, 0))
}

/// A key read back: its bucket, tag and value.
fn parse_key(key: &[u8]) -> Option<(u64, u8, &[u8])> {
    let rest = key.get(3..)?;
    let (bucket, rest) = rest.split_first_chunk::<8>()?;
    let (tag, value) = rest.split_first()?;
    Some((u64::from_be_bytes(*bucket), *tag, value))
}

/// The changes a batch of alerts makes to the counts, gathered before they are applied: a
/// batch touches each key once.
#[derive(Debug, Default)]
pub(super) struct Changes {
    /// Per (span, dimension, bucket, value): alerts added, or removed when negative.
    deltas: HashMap<(Span, Dimension, u64, Vec<u8>), i64>,
}

impl Changes {
    /// Counts a stored alert in.
    pub(super) fn add(&mut self, alert: &Alert) {
        self.change(alert, 1);
    }

    /// Counts a removed alert out.
    pub(super) fn remove(&mut self, alert: &Alert) {
        self.change(alert, -1);
    }

    fn change(&mut self, alert: &Alert, by: i64) {
        let t = alert.ts.as_nanos();
        for span in Span::BOTH {
            for dim in Dimension::ALL {
                for value in dim.values(alert) {
                    *self
                        .deltas
                        .entry((span, dim, span.of(t), value))
                        .or_default() += by;
                }
            }
        }
    }

    /// Writes the changed counts into `b`, reading the counts they change from `kv` (the
    /// caller holds the writer lock, so nothing changes them meanwhile).
    pub(super) fn write<K: Kv>(self, kv: &K, b: &mut Batch) -> Result<(), StoreError> {
        // Distinct values per bucket as this batch leaves them.
        let mut distinct: HashMap<(Span, Dimension, u64), u64> = HashMap::new();
        // `other` per bucket as this batch leaves it.
        let mut other: HashMap<(Span, Dimension, u64), i64> = HashMap::new();
        // Values first in a stable order, so that which values get their own count when a
        // bucket fills up does not depend on hashing.
        let mut deltas: Vec<_> = self.deltas.into_iter().filter(|(_, d)| *d != 0).collect();
        deltas.sort_unstable();
        // Every count this batch touches, read at once (one round trip to a database).
        let value_keys: Vec<Vec<u8>> = deltas
            .iter()
            .map(|((span, dim, bucket, value), _)| {
                let mut key = bucket_key(*span, *dim, *bucket, TAG_VALUE);
                key.extend_from_slice(value);
                key
            })
            .collect();
        let refs: Vec<&[u8]> = value_keys.iter().map(Vec::as_slice).collect();
        let values_held = kv.get_many(&refs)?;
        let mut buckets: Vec<(Span, Dimension, u64)> = deltas
            .iter()
            .map(|((span, dim, bucket, _), _)| (*span, *dim, *bucket))
            .collect();
        buckets.dedup();
        let bucket_keys: Vec<[Vec<u8>; 2]> = buckets
            .iter()
            .map(|(span, dim, bucket)| {
                [
                    bucket_key(*span, *dim, *bucket, TAG_DISTINCT),
                    bucket_key(*span, *dim, *bucket, TAG_OTHER),
                ]
            })
            .collect();
        let refs: Vec<&[u8]> = bucket_keys.iter().flatten().map(Vec::as_slice).collect();
        let bucket_counts: HashMap<&[u8], u64> = refs
            .iter()
            .copied()
            .zip(kv.get_many(&refs)?)
            .map(|(k, v)| (k, v.map_or(0, |v| u64_of(&v))))
            .collect();
        let counted = |key: &[u8]| bucket_counts.get(key).copied().unwrap_or(0);
        for ((((span, dim, bucket, _), delta), key), held) in
            deltas.into_iter().zip(value_keys).zip(values_held)
        {
            let held = held.map(|v| u64_of(&v));
            let counted_alone = match held {
                Some(_) => true,
                // Five severities: never a reason to count one under `other`.
                None if delta > 0 && dim == Dimension::Severity => true,
                None if delta > 0 => {
                    let n = match distinct.entry((span, dim, bucket)) {
                        Entry::Occupied(e) => e.into_mut(),
                        Entry::Vacant(e) => {
                            e.insert(counted(&bucket_key(span, dim, bucket, TAG_DISTINCT)))
                        }
                    };
                    if *n < MAX_VALUES {
                        *n += 1;
                        true
                    } else {
                        false
                    }
                }
                // Removing a value never counted alone: it was counted under `other`.
                None => false,
            };
            if counted_alone {
                put_count(b, key, held.unwrap_or(0), delta);
            } else {
                *other.entry((span, dim, bucket)).or_default() += delta;
            }
        }
        for ((span, dim, bucket), n) in distinct {
            b.put(
                bucket_key(span, dim, bucket, TAG_DISTINCT),
                n.to_be_bytes().to_vec(),
            );
        }
        for ((span, dim, bucket), delta) in other {
            let key = bucket_key(span, dim, bucket, TAG_OTHER);
            let held = counted(&key);
            put_count(b, key, held, delta);
        }
        Ok(())
    }
}

/// Writes `held + delta` under `key`, or deletes the key when that is 0 (a count never goes
/// below 0).
fn put_count(b: &mut Batch, key: Vec<u8>, held: u64, delta: i64) {
    let n = if delta >= 0 {
        held.saturating_add(delta.unsigned_abs())
    } else {
        held.saturating_sub(delta.unsigned_abs())
    };
    if n == 0 {
        b.delete(key);
    } else {
        b.put(key, n.to_be_bytes().to_vec());
    }
}

/// One bucket of a timeline: alerts by severity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// The bucket's start.
    pub start: Timestamp,
    /// Alerts of severity info.
    pub info: u64,
    /// Alerts of severity low.
    pub low: u64,
    /// Alerts of severity medium.
    pub medium: u64,
    /// Alerts of severity high.
    pub high: u64,
    /// Alerts of severity critical.
    pub critical: u64,
}

impl Bucket {
    fn add(&mut self, severity: u8, n: u64) {
        let slot = match severity {
            s if s == Severity::Info as u8 => &mut self.info,
            s if s == Severity::Low as u8 => &mut self.low,
            s if s == Severity::Medium as u8 => &mut self.medium,
            s if s == Severity::High as u8 => &mut self.high,
            _ => &mut self.critical,
        };
        *slot = slot.saturating_add(n);
    }
}

/// One value and its count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ranked {
    /// The rule id, source address, technique id or severity name.
    pub value: String,
    /// Alerts.
    pub count: u64,
}

/// The values with the most alerts in a time range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Top {
    /// The first `limit` values, most alerts first (ties by value).
    pub top: Vec<Ranked>,
    /// Alerts of values beyond the first `limit`.
    pub rest: u64,
    /// Alerts whose value was not counted on its own because its bucket was full
    /// ([`MAX_VALUES`]): included in `rest`.
    pub uncounted: u64,
    /// Alerts in the range (for techniques: alert-technique pairs).
    pub total: u64,
}

/// The buckets of `span` that the range `[since, until)` touches: widened to whole buckets.
fn buckets(span: Span, since: Timestamp, until: Timestamp) -> (u64, u64) {
    let from = span.of(since.as_nanos());
    let to = until.as_nanos().div_ceil(span.nanos());
    (from, to.max(from))
}

impl<K: Kv> Store<K> {
    /// Alerts by severity in each bucket of `span` from `since` to `until` (UTC, widened to
    /// whole buckets), oldest first, empty buckets included.
    pub fn timeline(
        &self,
        span: Span,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<Bucket>, StoreError> {
        let (from, to) = buckets(span, since, until);
        if to - from > MAX_BUCKETS {
            return Err(StoreError::Invalid {
                field: "since".into(),
                message: format!(
                    "the range spans {} buckets (expected at most {MAX_BUCKETS}: a later since or a wider bucket)",
                    to - from
                ),
            });
        }
        let mut out: Vec<Bucket> = (from..to)
            .map(|b| Bucket {
                start: Timestamp::from_nanos(b.saturating_mul(span.nanos())),
                ..Bucket::default()
            })
            .collect();
        self.scan_buckets(
            span,
            Dimension::Severity,
            from,
            to,
            |bucket, tag, value, n| {
                if tag == TAG_VALUE
                    && let Some(slot) = bucket
                        .checked_sub(from)
                        .and_then(|i| out.get_mut(usize::try_from(i).ok()?))
                    && let [severity] = value
                {
                    slot.add(*severity, n);
                }
            },
        )?;
        Ok(out)
    }

    /// The `limit` values of `dim` with the most alerts from `since` to `until` (widened to
    /// whole hours), with the count of the rest.
    pub fn top(
        &self,
        dim: Dimension,
        since: Timestamp,
        until: Timestamp,
        limit: usize,
    ) -> Result<Top, StoreError> {
        let (h0, h1) = buckets(Span::Hour, since, until);
        if h1 - h0 > MAX_BUCKETS * 24 {
            return Err(StoreError::Invalid {
                field: "since".into(),
                message: format!(
                    "the range spans {} days (expected at most {MAX_BUCKETS})",
                    (h1 - h0).div_ceil(24)
                ),
            });
        }
        let mut counts: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut uncounted = 0u64;
        let mut tally = |_: u64, tag: u8, value: &[u8], n: u64| match tag {
            TAG_VALUE => {
                let c = counts.entry(value.to_vec()).or_default();
                *c = c.saturating_add(n);
            }
            TAG_OTHER => uncounted = uncounted.saturating_add(n),
            _ => {}
        };
        // Whole days from days, the hours at either end from hours.
        let per_day = Span::Day.nanos() / Span::Hour.nanos();
        let (d0, d1) = (h0.div_ceil(per_day), h1 / per_day);
        if d0 < d1 {
            self.scan_buckets(Span::Hour, dim, h0, d0 * per_day, &mut tally)?;
            self.scan_buckets(Span::Day, dim, d0, d1, &mut tally)?;
            self.scan_buckets(Span::Hour, dim, d1 * per_day, h1, &mut tally)?;
        } else {
            self.scan_buckets(Span::Hour, dim, h0, h1, &mut tally)?;
        }
        let total = counts
            .values()
            .fold(uncounted, |sum, n| sum.saturating_add(*n));
        let mut ranked: Vec<Ranked> = counts
            .into_iter()
            .map(|(value, count)| Ranked {
                value: display(dim, &value),
                count,
            })
            .collect();
        ranked.sort_unstable_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        let shown: u64 = ranked.iter().take(limit).map(|r| r.count).sum();
        ranked.truncate(limit);
        Ok(Top {
            top: ranked,
            rest: total.saturating_sub(shown),
            uncounted,
            total,
        })
    }

    /// Calls `f(bucket, tag, value, count)` for every key of `dim` in buckets `[from, to)`.
    fn scan_buckets(
        &self,
        span: Span,
        dim: Dimension,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, u8, &[u8], u64),
    ) -> Result<(), StoreError> {
        if from >= to {
            return Ok(());
        }
        let (lo, hi) = bucket_range(span, dim, from, to);
        let mut start = Bound::Included(lo);
        loop {
            let page = self.kv.range(
                start.as_ref().map(Vec::as_slice),
                Bound::Excluded(hi.as_slice()),
                Order::Ascending,
                PAGE,
            )?;
            for (k, v) in &page {
                if let Some((bucket, tag, value)) = parse_key(k) {
                    f(bucket, tag, value, u64_of(v));
                }
            }
            match page.last() {
                Some((last, _)) if page.len() == PAGE => start = Bound::Excluded(last.clone()),
                _ => return Ok(()),
            }
        }
    }

    /// Removes the buckets that end at or before the oldest stored alert: their counts are 0
    /// already (retention counted each alert out), only the bucket's count of distinct values
    /// is left. Each page is judged under the writer lock against the oldest alert at that
    /// moment (a batch ingested meanwhile may hold older alerts).
    pub(super) fn remove_spent_rollups(&self) -> Result<(), StoreError> {
        for span in Span::BOTH {
            for dim in Dimension::ALL {
                loop {
                    let writer = self.write_lock()?;
                    let oldest =
                        crate::kv::scan_prefix(&self.kv, &[keys::ALERT], Order::Ascending, 1)?;
                    let end = match oldest.first().and_then(|(k, _)| keys::suffix_of(k)) {
                        Some(suffix) => span.of(keys::time_of(&suffix)),
                        None => u64::MAX,
                    };
                    let (lo, hi) = bucket_range(span, dim, 0, end);
                    let page = self.kv.range(
                        Bound::Included(lo.as_slice()),
                        Bound::Excluded(hi.as_slice()),
                        Order::Ascending,
                        PAGE,
                    )?;
                    if page.is_empty() {
                        break;
                    }
                    let mut b = Batch::new();
                    for (k, _) in page {
                        b.delete(k);
                    }
                    self.kv.apply(b)?;
                    drop(writer);
                }
            }
        }
        Ok(())
    }
}

/// A value as the API shows it.
fn display(dim: Dimension, value: &[u8]) -> String {
    match (dim, value) {
        (Dimension::Severity, [s]) => Severity::ALL
            .into_iter()
            .find(|v| *v as u8 == *s)
            .map_or("unknown", Severity::name)
            .to_string(),
        _ => String::from_utf8_lossy(value).into_owned(),
    }
}

#[cfg(test)]
mod tests;
