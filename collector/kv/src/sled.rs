//! [`Kv`] on sled 0.34 (pinned): one tree, batches applied with sled's atomic `apply_batch`,
//! flushed with `flush`, a bounded page cache.

use std::ops::Bound;
use std::path::Path;

use super::{Batch, Entry, Kv, KvError, Op, Order};

/// sled's page cache for the collector's store, bounded for a predictable footprint.
pub const CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// sled's page cache for an agent's outbox: small, the agent is meant to be light.
pub const AGENT_CACHE_BYTES: u64 = 4 * 1024 * 1024;

/// A sled database used as one ordered keyspace.
#[derive(Debug, Clone)]
pub struct SledKv {
    db: sled::Db,
}

fn engine(e: sled::Error) -> KvError {
    KvError::Engine(e.to_string())
}

impl SledKv {
    /// Opens (or creates) the database in `dir`.
    ///
    /// A database closed moments ago in the same process may still be locked by sled's
    /// background flusher; opening retries for up to two seconds before giving up. (sled 0.34
    /// reports a held lock as an I/O error of kind `Other`, without a source to inspect.)
    pub fn open(dir: &Path) -> Result<Self, KvError> {
        Self::open_with_cache(dir, CACHE_BYTES)
    }

    /// Opens (or creates) the database in `dir` with a page cache of `cache_bytes`.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, KvError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput);
        let mut attempts = 0;
        loop {
            match config.open() {
                Ok(db) => return Ok(Self { db }),
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::Other && attempts < 40 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(engine(e)),
            }
        }
    }
}

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.db.get(key).map_err(engine)?.map(|v| v.to_vec()))
    }

    fn apply(&self, batch: Batch) -> Result<(), KvError> {
        let mut b = sled::Batch::default();
        for op in batch.ops {
            match op {
                Op::Put(k, v) => b.insert(k, v),
                Op::Delete(k) => b.remove(k),
            }
        }
        self.db.apply_batch(b).map_err(engine)
    }

    fn flush(&self) -> Result<(), KvError> {
        self.db.flush().map(|_| ()).map_err(engine)
    }

    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Entry>, KvError> {
        let range = self.db.range::<&[u8], _>((start, end));
        let take = |it: &mut dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>| {
            it.take(limit)
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(engine))
                .collect()
        };
        match order {
            Order::Ascending => take(&mut range.into_iter()),
            Order::Descending => take(&mut range.rev()),
        }
    }

    fn size_on_disk(&self) -> Result<u64, KvError> {
        self.db.size_on_disk().map_err(engine)
    }
}
