//! [`Kv`] in memory: the model the engine is checked against, and a store for tests that need
//! no disk. Nothing survives the process; `flush` does nothing.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use super::{Batch, Entry, Kv, KvError, Op, Order};

/// An ordered map behind a lock.
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: Mutex<Map>,
}

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

impl MemoryKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Map>, KvError> {
        self.map
            .lock()
            .map_err(|_| KvError::Engine("memory store lock poisoned".into()))
    }
}

impl Kv for MemoryKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.lock()?.get(key).cloned())
    }

    fn apply(&self, batch: Batch) -> Result<(), KvError> {
        let mut map = self.lock()?;
        for op in batch.ops {
            match op {
                Op::Put(k, v) => {
                    map.insert(k, v);
                }
                Op::Delete(k) => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), KvError> {
        Ok(())
    }

    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Entry>, KvError> {
        let map = self.lock()?;
        let owned = |b: Bound<&[u8]>| match b {
            Bound::Included(k) => Bound::Included(k.to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let range = map.range((owned(start), owned(end)));
        let pick = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        Ok(match order {
            Order::Ascending => range.take(limit).map(pick).collect(),
            Order::Descending => range.rev().take(limit).map(pick).collect(),
        })
    }

    fn size_on_disk(&self) -> Result<u64, KvError> {
        Ok(self
            .lock()?
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum())
    }
}
