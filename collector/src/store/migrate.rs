//! Upgrades a store written under an earlier schema, in place. Each page of the upgrade is one
//! atomic, flushed batch and the version is written last, so an upgrade cut short by a crash
//! carries on where it stopped at the next start.

use std::ops::Bound;

use super::{StoreError, keys};
use crate::kv::{Batch, Kv, Order};

/// The schema before postings.
pub(super) const V1: u32 = 1;

/// Schema 1 kept one empty index key per alert and value (`X` + field + value + `0` + time and
/// id). Each becomes a posting that lists its one alert, under the same key, with a `P` record
/// (its alert's suffix, then the posting key) so that retention removes it with its alert.
pub(super) fn from_v1<K: Kv>(kv: &K, version_key: Vec<u8>, to: u32) -> Result<(), StoreError> {
    let (first, end) = ([keys::INDEX], [keys::INDEX + 1]);
    let mut after: Option<Vec<u8>> = None;
    loop {
        let start = match &after {
            Some(k) => Bound::Excluded(k.as_slice()),
            None => Bound::Included(&first[..]),
        };
        let page = kv.range(start, Bound::Excluded(&end[..]), Order::Ascending, 512)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        let mut b = Batch::new();
        for (key, value) in &page {
            // A key with a value is a posting already: this page was upgraded before a crash.
            let Some(suffix) = keys::suffix_of(key).filter(|_| value.is_empty()) else {
                continue;
            };
            let mut record = keys::named(keys::BATCH_POSTINGS, &suffix);
            record.extend_from_slice(key);
            b.put(record, keys::posting_list([key.as_slice()]));
            b.put(key.clone(), suffix.to_vec());
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
