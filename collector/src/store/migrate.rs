//! Upgrades a store written under an earlier schema, in place. Each page of the upgrade is one
//! atomic, flushed batch and the version is written last, so an upgrade cut short by a crash
//! carries on where it stopped at the next start.

use std::ops::Bound;

use super::{StoreError, corrupt, keys, rollup};
use crate::kv::{Batch, Entry, Kv, Order};

/// The schema before postings.
pub(super) const V1: u32 = 1;
/// The schema whose index keys ended a value with a `0` byte (not prefix-free).
pub(super) const V2: u32 = 2;

/// The schema before the rollup counts.
pub(super) const V3: u32 = 3;

/// Schema 1 and 2's index namespace.
pub(super) const V2_INDEX: u8 = b'X';

/// Old index keys read per page.
const PAGE: usize = 4096;
/// Postings or posting records read per page.
const POSTINGS_PAGE: usize = 256;

/// Old index keys being gathered into one posting: their value's prefix, the first one's
/// capture time, and the keys.
type Run<'a> = (Vec<u8>, u64, Vec<&'a [u8]>);

/// Schema 1 kept one empty index key per alert and value (`X` + field + value + `0` + time and
/// id). Runs of them with the same value within [`keys::POSTING_SPAN_NANOS`] become one posting
/// under the run's newest key (the others are deleted), listed by posting records as ingest
/// lists its own: the store ends up the size schema 2 would have made it.
pub(super) fn from_v1<K: Kv>(kv: &K, version_key: Vec<u8>, to: u32) -> Result<(), StoreError> {
    each_page(kv, V2_INDEX, PAGE, |page, b| {
        let mut postings: Vec<Vec<u8>> = Vec::new();
        let mut run: Option<Run<'_>> = None;
        for (key, value) in page {
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
                postings.push(close(b, &members));
            }
            if let Some((prefix, t)) = old {
                run.get_or_insert_with(|| (prefix, t, Vec::new()))
                    .2
                    .push(key.as_slice());
            }
        }
        if let Some((_, _, members)) = run.take() {
            postings.push(close(b, &members));
        }
        for (record, list) in keys::posting_records(postings.iter().map(Vec::as_slice), true) {
            b.put(record, list);
        }
        Ok(())
    })?;
    set_version(kv, version_key, to)
}

/// Schema 3 kept no chart counts: every stored alert is counted into them
/// ([`rollup`]), a page of alerts per atomic, flushed batch. Counts an upgrade cut short left
/// behind are removed first, so the next start counts from scratch.
pub(super) fn from_v3<K: Kv>(kv: &K, version_key: Vec<u8>, to: u32) -> Result<(), StoreError> {
    each_page(kv, keys::ROLLUP, PAGE, |page, b| {
        for (key, _) in page {
            b.delete(key.clone());
        }
        Ok(())
    })?;
    each_page(kv, keys::ALERT, PAGE, |page, b| {
        let mut counts = rollup::Changes::default();
        for (_, value) in page {
            counts.add(&serde_json::from_slice(value).map_err(corrupt)?);
        }
        counts.write(kv, b)
    })?;
    set_version(kv, version_key, to)
}

/// Reads one namespace page by page in key order, from where the last page ended, and writes
/// each page's changes (`each` puts them in the batch) as one atomic, flushed batch: an upgrade
/// cut short carries on from what is left.
fn each_page<K: Kv>(
    kv: &K,
    namespace: u8,
    page_size: usize,
    mut each: impl FnMut(&[Entry], &mut Batch) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let (first, end) = ([namespace], [namespace + 1]);
    let mut after: Option<Vec<u8>> = None;
    loop {
        let start = match &after {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Included(&first[..]),
        };
        let page = kv.range(
            start,
            Bound::Excluded(&end[..]),
            Order::Ascending,
            page_size,
        )?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        let mut b = Batch::new();
        each(&page, &mut b)?;
        kv.apply(b)?;
        kv.flush()?;
    }
}

/// Writes the schema version, last: the upgrade is done.
fn set_version<K: Kv>(kv: &K, version_key: Vec<u8>, to: u32) -> Result<(), StoreError> {
    let mut b = Batch::new();
    b.put(version_key, to.to_be_bytes().to_vec());
    kv.apply(b)?;
    kv.flush()?;
    Ok(())
}

/// A schema 2 index key: `X` + field + value + `0` + time and id (tests write old stores).
#[cfg(test)]
pub(super) fn v2_index_key(field: u8, value: &[u8], suffix: &[u8; 24]) -> Vec<u8> {
    let mut k = vec![V2_INDEX, field];
    k.extend_from_slice(value);
    k.push(0);
    k.extend_from_slice(suffix);
    k
}

/// The schema 3 key of a schema 2 index key, if it is one. Read from both ends (the time and id
/// are the last 24 bytes, the `0` before them ends the value), so a value holding `0` bytes of
/// its own is still told apart.
fn v3_of_v2(key: &[u8]) -> Option<Vec<u8>> {
    let (&namespace, rest) = key.split_first()?;
    let (&field, rest) = rest.split_first()?;
    let (rest, suffix) = rest.split_at_checked(rest.len().checked_sub(24)?)?;
    let (&end, value) = rest.split_last()?;
    if namespace != V2_INDEX || end != 0 {
        return None;
    }
    let mut k = keys::index_prefix_of(field, value);
    k.extend_from_slice(suffix);
    Some(k)
}

/// Schema 2 kept postings under `X` + field + value + `0`, which one value followed by `0` and
/// more bytes could sort into. Each posting moves to its prefix-free key under `Y`, then every
/// posting record's list is rewritten to name the moved keys. A key under `X` that is not a
/// schema 2 posting is dropped (nothing reads it). Each page is one atomic, flushed batch and
/// both passes carry on from what is left, so a crash mid-way resumes at the next start.
pub(super) fn from_v2<K: Kv>(kv: &K, version_key: Vec<u8>, to: u32) -> Result<(), StoreError> {
    // Postings list up to a batch's alerts (24 bytes each): pages of a few megabytes.
    each_page(kv, V2_INDEX, POSTINGS_PAGE, |page, b| {
        for (key, value) in page {
            if let Some(moved) = v3_of_v2(key) {
                b.put(moved, value.clone());
            }
            b.delete(key.clone());
        }
        Ok(())
    })?;
    each_page(kv, keys::POSTING_RECORDS, POSTINGS_PAGE, |page, b| {
        for (record, list) in page {
            let old = keys::posting_keys(list);
            if !old.iter().any(|k| k.first() == Some(&V2_INDEX)) {
                continue;
            }
            let moved: Vec<Vec<u8>> = old
                .iter()
                .map(|k| v3_of_v2(k).unwrap_or_else(|| k.to_vec()))
                .collect();
            b.put(
                record.clone(),
                keys::posting_list(moved.iter().map(Vec::as_slice)),
            );
        }
        Ok(())
    })?;
    set_version(kv, version_key, to)
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
