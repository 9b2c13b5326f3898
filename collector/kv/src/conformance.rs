//! The conformance suite every engine passes: the contract of [`Kv`](super::Kv) checked
//! against the in-memory model, step by step, over a reproducible random sequence of batches,
//! reads, scans, flushes and reopenings, then on the key orderings that are easy to get wrong
//! (empty keys, `0xff` bytes, a key that is a prefix of another).
//!
//! It needs no test framework, so an engine in another crate runs it from its own tests with
//! the engine it builds there (sled in a temporary folder, PostgreSQL in a throwaway cluster).

use std::ops::Bound;

use super::memory::MemoryKv;
use super::{Batch, Kv, Order, scan_prefix};

/// Runs `steps` random steps from `seed` on the engine that `open` returns, reopening it with
/// `reopen` (which gets the engine to drop), comparing every answer with the model.
///
/// Returns where the engine first differed, with the step and what each side said.
pub fn check<K: Kv>(
    open: impl FnOnce() -> K,
    mut reopen: impl FnMut(K) -> K,
    seed: u64,
    steps: usize,
) -> Result<(), String> {
    let mut engine = open();
    let model = MemoryKv::new();
    orderings(&engine, &model)?;
    let mut rng = seed;
    for step in 0..steps {
        let fail = |what: &str, got: &dyn std::fmt::Debug, want: &dyn std::fmt::Debug| {
            Err(format!(
                "step {step} (seed {seed}): {what}: engine {got:?}, model {want:?}"
            ))
        };
        match next(&mut rng) % 8 {
            0..=2 => {
                let mut batch = Batch::new();
                for _ in 0..next(&mut rng) % 8 {
                    let k = key(next(&mut rng));
                    if next(&mut rng).is_multiple_of(4) {
                        batch.delete(k);
                    } else {
                        batch.put(k, value(next(&mut rng)));
                    }
                }
                engine.apply(batch.clone()).map_err(|e| e.to_string())?;
                model.apply(batch).map_err(|e| e.to_string())?;
            }
            3 => {
                let k = key(next(&mut rng));
                let (got, want) = (engine.get(&k), model.get(&k));
                let (got, want) = (got.map_err(|e| e.to_string())?, want.ok());
                if Some(&got) != want.as_ref() {
                    return fail("get", &got, &want);
                }
                let others: Vec<Vec<u8>> = (0..3).map(|_| key(next(&mut rng))).collect();
                let refs: Vec<&[u8]> = others.iter().map(Vec::as_slice).collect();
                let got = engine.get_many(&refs).map_err(|e| e.to_string())?;
                let want = model.get_many(&refs).map_err(|e| e.to_string())?;
                if got != want {
                    return fail("get_many", &got, &want);
                }
            }
            4 | 5 => {
                let (a, b) = (key(next(&mut rng)), key(next(&mut rng)));
                let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
                let order = if next(&mut rng).is_multiple_of(2) {
                    Order::Ascending
                } else {
                    Order::Descending
                };
                let limit = (next(&mut rng) % 20) as usize;
                let start = match next(&mut rng) % 3 {
                    0 => Bound::Included(lo.as_slice()),
                    1 => Bound::Excluded(lo.as_slice()),
                    _ => Bound::Unbounded,
                };
                let end = match next(&mut rng) % 3 {
                    0 => Bound::Included(hi.as_slice()),
                    1 => Bound::Excluded(hi.as_slice()),
                    _ => Bound::Unbounded,
                };
                let got = engine.range(start, end, order, limit);
                let want = model.range(start, end, order, limit);
                let (got, want) = (got.map_err(|e| e.to_string())?, want.ok());
                if Some(&got) != want.as_ref() {
                    return fail("range", &got, &want);
                }
            }
            6 => {
                let prefix = [(next(&mut rng) % 5) as u8];
                let order = if next(&mut rng).is_multiple_of(2) {
                    Order::Ascending
                } else {
                    Order::Descending
                };
                let got = scan_prefix(&engine, &prefix, order, 100).map_err(|e| e.to_string())?;
                let want = scan_prefix(&model, &prefix, order, 100).map_err(|e| e.to_string())?;
                if got != want {
                    return fail("scan_prefix", &got, &want);
                }
            }
            _ => {
                engine.flush().map_err(|e| e.to_string())?;
                if next(&mut rng).is_multiple_of(4) {
                    engine = reopen(engine);
                }
            }
        }
    }
    // Everything, once more, after a last reopening.
    engine.flush().map_err(|e| e.to_string())?;
    let engine = reopen(engine);
    let everything = |kv: &dyn Kv| {
        kv.range(Bound::Unbounded, Bound::Unbounded, Order::Ascending, 10_000)
            .map_err(|e| e.to_string())
    };
    let (got, want) = (everything(&engine)?, everything(&model)?);
    if got != want {
        return Err(format!(
            "after reopening (seed {seed}): engine holds {} entries, model {}",
            got.len(),
            want.len()
        ));
    }
    Ok(())
}

/// Keys whose byte order is easy to get wrong, written then scanned back in both orders.
fn orderings<K: Kv>(engine: &K, model: &MemoryKv) -> Result<(), String> {
    let keys: [&[u8]; 8] = [
        b"",
        &[0],
        &[0, 0],
        &[1],
        &[1, 0],
        &[0x7f],
        &[0x80],
        &[0xff, 0xff],
    ];
    let mut batch = Batch::new();
    for (i, k) in keys.iter().enumerate() {
        batch.put(k.to_vec(), vec![i as u8]);
    }
    // The last write of a key in a batch wins, and a removal then a write leaves the write.
    batch.put(vec![9], vec![1]);
    batch.put(vec![9], vec![2]);
    batch.delete(vec![10]);
    batch.put(vec![10], vec![3]);
    batch.put(vec![11], vec![4]);
    batch.delete(vec![11]);
    engine.apply(batch.clone()).map_err(|e| e.to_string())?;
    model.apply(batch).map_err(|e| e.to_string())?;
    for order in [Order::Ascending, Order::Descending] {
        let got = engine
            .range(Bound::Unbounded, Bound::Unbounded, order, 100)
            .map_err(|e| e.to_string())?;
        let want = model
            .range(Bound::Unbounded, Bound::Unbounded, order, 100)
            .map_err(|e| e.to_string())?;
        if got != want {
            return Err(format!(
                "key order ({order:?}): engine {got:?}, model {want:?}"
            ));
        }
    }
    // Clean up, so the random steps start from an empty store.
    let mut batch = Batch::new();
    for (k, _) in model
        .range(Bound::Unbounded, Bound::Unbounded, Order::Ascending, 100)
        .map_err(|e| e.to_string())?
    {
        batch.delete(k);
    }
    engine.apply(batch.clone()).map_err(|e| e.to_string())?;
    model.apply(batch).map_err(|e| e.to_string())?;
    Ok(())
}

/// splitmix64: a small reproducible generator, so a failing seed replays exactly.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Keys of one to three bytes with a small first byte, so prefixes and ranges overlap.
fn key(r: u64) -> Vec<u8> {
    let len = 1 + (r % 3) as usize;
    let mut k = vec![((r >> 8) % 5) as u8];
    k.extend((1..len).map(|i| (r >> (16 + 8 * i)) as u8));
    k
}

fn value(r: u64) -> Vec<u8> {
    let len = (r % 40) as usize;
    (0..len).map(|i| (r >> (i % 8)) as u8).collect()
}
