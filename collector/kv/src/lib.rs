//! The storage engine behind the agent's outbox and the collector's store, reached through one
//! small trait so the engine can be swapped (PostgreSQL for several collectors, later) without
//! touching callers.
//!
//! Invariants every implementation keeps:
//! 1. **Atomic batches.** [`Kv::apply`] makes all of a batch's writes and removals visible, or
//!    none of them, even across a crash.
//! 2. **Durable after flush.** Once [`Kv::apply`] and then [`Kv::flush`] have returned `Ok`, the
//!    batch survives the process being killed (`kill -9`). Callers acknowledge anything
//!    (an ingest, a delivery) only after a flush.
//! 3. **Ordered keys.** Keys are bytes compared lexicographically; [`Kv::range`] returns entries
//!    in that order (or its reverse), so big-endian numbers in keys sort numerically.
//! 4. **Bounded reads.** Every scan takes a limit: no call reads an unbounded number of entries.
//! 5. **One writer section at a time.** While a [`Section`] from [`Kv::section`] is held, no
//!    other section over the same data is, in this process or (for an engine that processes
//!    share, such as PostgreSQL) any other. A writer that reads, decides and then applies does
//!    so inside a section, so two collector replicas never interleave their read-modify-write.
//!
//! [`sled::SledKv`] is the embedded engine; [`memory::MemoryKv`] is a plain model of the same
//! contract; [`conformance`] checks any engine against that model.

pub mod conformance;
pub mod memory;
pub mod sled;

use std::ops::Bound;

/// Why the storage engine failed.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The engine reported an error (I/O, corruption).
    #[error("storage: {0}")]
    Engine(String),
}

/// A key and its value, as scans return them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One write or removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put(Vec<u8>, Vec<u8>),
    /// Remove `key` (no error if absent).
    Delete(Vec<u8>),
}

/// Writes applied together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a write.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put(key.into(), value.into()));
    }

    /// Adds a removal.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete(key.into()));
    }

    /// The operations in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Whether the batch does nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Which way a range scan walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Smallest key first.
    Ascending,
    /// Largest key first.
    Descending,
}

/// An ordered key-value store (see the module's invariants).
pub trait Kv: Send + Sync + 'static {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;
    /// Applies a batch atomically.
    fn apply(&self, batch: Batch) -> Result<(), KvError>;
    /// Makes everything applied so far durable.
    fn flush(&self) -> Result<(), KvError>;
    /// At most `limit` entries with keys in `(start, end)`, in `order`.
    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Entry>, KvError>;
    /// Bytes the store occupies on disk (an estimate for in-memory stores).
    fn size_on_disk(&self) -> Result<u64, KvError>;

    /// Bytes the entries kept take, what a size limit is held to: the size on disk for an
    /// engine whose files shrink as entries go, an estimate of the live rows for one whose
    /// files keep the space (PostgreSQL).
    fn live_bytes(&self) -> Result<u64, KvError> {
        self.size_on_disk()
    }

    /// The values of `keys`, in the same order: one round trip for an engine across a
    /// network, a loop of [`Kv::get`] otherwise.
    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    /// Enters a writer section (invariant 5), waiting for any other to end. Callers serialize
    /// their own threads first (a mutex); a thread holding a section must not ask for another.
    /// Engines used by one process only need nothing more, which is the default.
    fn section(&self) -> Result<Section<'_>, KvError> {
        Ok(Section::default())
    }

    /// Calls and connections, for an engine across a network (metrics); `None` for an
    /// embedded one.
    fn stats(&self) -> Option<EngineStats> {
        None
    }
}

/// What an engine across a network reports for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Calls made since the engine opened.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Time spent in calls, in microseconds.
    pub busy_micros: u64,
    /// Connections in use now.
    pub pool_in_use: u64,
    /// Connections open and idle now.
    pub pool_idle: u64,
    /// Most connections the engine opens.
    pub pool_max: u64,
}

/// An engine shared between owners (the store and the credentials of one collector) is the
/// engine itself.
impl<K: Kv + ?Sized> Kv for std::sync::Arc<K> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        (**self).get(key)
    }

    fn apply(&self, batch: Batch) -> Result<(), KvError> {
        (**self).apply(batch)
    }

    fn flush(&self) -> Result<(), KvError> {
        (**self).flush()
    }

    fn range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Entry>, KvError> {
        (**self).range(start, end, order, limit)
    }

    fn size_on_disk(&self) -> Result<u64, KvError> {
        (**self).size_on_disk()
    }

    fn live_bytes(&self) -> Result<u64, KvError> {
        (**self).live_bytes()
    }

    fn get_many(&self, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        (**self).get_many(keys)
    }

    fn section(&self) -> Result<Section<'_>, KvError> {
        (**self).section()
    }

    fn stats(&self) -> Option<EngineStats> {
        (**self).stats()
    }
}

/// A writer section: held until dropped (see [`Kv::section`]).
#[derive(Default)]
#[must_use = "the section ends when this is dropped"]
pub struct Section<'a> {
    end: Option<Box<dyn FnOnce() + 'a>>,
}

impl<'a> Section<'a> {
    /// A section that runs `end` when it is dropped (an engine releasing its lock).
    pub fn ending_with(end: impl FnOnce() + 'a) -> Self {
        Self {
            end: Some(Box::new(end)),
        }
    }
}

impl Drop for Section<'_> {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            end();
        }
    }
}

impl std::fmt::Debug for Section<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Section")
            .field("shared", &self.end.is_some())
            .finish()
    }
}

/// The smallest key greater than every key that starts with `prefix` (for prefix ranges).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// At most `limit` entries whose keys start with `prefix`, in `order`.
pub fn scan_prefix<K: Kv + ?Sized>(
    kv: &K,
    prefix: &[u8],
    order: Order,
    limit: usize,
) -> Result<Vec<Entry>, KvError> {
    let end = prefix_end(prefix);
    let end = match &end {
        Some(e) => Bound::Excluded(e.as_slice()),
        None => Bound::Unbounded,
    };
    kv.range(Bound::Included(prefix), end, order, limit)
}

#[cfg(test)]
mod tests;
