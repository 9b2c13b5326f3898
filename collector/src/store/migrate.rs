//! Upgrades a store written under an earlier schema, in place. Each page of the upgrade is one
//! atomic, flushed batch and the version is written last, so an upgrade cut short by a crash
//! carries on where it stopped at the next start.

use std::ops::Bound;

use super::{StoreError, keys};
use crate::kv::{Batch, Kv, Order};

/// The schema before postings.
pub(super) const V1: u32 = 1;

/// Old index keys read per page.
const PAGE: usize = 4096;

/// Old index keys being gathered into one posting: their value's prefix, the first one's
/// capture time, and the keys.
type Run<'a> = (Vec<u8>, u64, Vec<&'a [u8]>);

/// Schema 1 kept one empty index key per alert and value (`X` + field + value + `0` + time and
/// id). Runs of them with the same value within [`keys::POSTING_SPAN_NANOS`] become one posting
/// under the run's newest key (the others are deleted), listed by posting records as ingest
/// lists its own: the store ends up the size schema 2 would have made it.
pub(super) fn from_v1<K: Kv>(kv: &K, version_key: Vec<u8>, to: u32) -> Result<(), StoreError> {
    let (first, end) = ([keys::INDEX], [keys::INDEX + 1]);
    let mut after: Option<Vec<u8>> = None;
    loop {
        let start = match &after {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Included(&first[..]),
        };
        let page = kv.range(start, Bound::Excluded(&end[..]), Order::Ascending, PAGE)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        let mut b = Batch::new();
        let mut postings: Vec<Vec<u8>> = Vec::new();
        let mut run: Option<Run<'_>> = None;
        for (key, value) in &page {
            // A key with a value is a posting already: this page was upgraded before a crash.
            let old = keys::suffix_of(key)
                .filter(|_| value.is_empty())
                .and_then(|s| Some((key.get(..key.len() - 24)?.to_vec(), keys::time_of(&s))));
            let joins = match (&run, &old) {
                (Some((prefix, start, _)), Some((p, t))) => {
                    prefix == p && t.saturating_sub(*start) <= keys::POSTING_SPAN_NANOS
                }
                _ => false,
            };
            if !joins && let Some((_, _, members)) = run.take() {
                postings.push(close(&mut b, &members));
            }
            if let Some((prefix, t)) = old {
                run.get_or_insert_with(|| (prefix, t, Vec::new()))
                    .2
                    .push(key.as_slice());
            }
        }
        if let Some((_, _, members)) = run.take() {
            postings.push(close(&mut b, &members));
        }
        for (record, list) in keys::posting_records(postings.iter().map(Vec::as_slice), true) {
            b.put(record, list);
        }
        kv.apply(b)?;
        kv.flush()?;
    }
    let mut b = Batch::new();
    b.put(version_key, to.to_be_bytes().to_vec());
    kv.apply(b)?;
    kv.flush()?;
    Ok(())
}

/// Turns a run of old index keys (same value, ascending) into one posting under its newest key;
/// returns that key.
fn close(b: &mut Batch, members: &[&[u8]]) -> Vec<u8> {
    let suffixes: Vec<u8> = members
        .iter()
        .filter_map(|k| keys::suffix_of(k))
        .flatten()
        .collect();
    let Some((newest, older)) = members.split_last() else {
        return Vec::new();
    };
    for k in older {
        b.delete(k.to_vec());
    }
    b.put(newest.to_vec(), suffixes);
    newest.to_vec()
}
