//! A pair's memory of which allow rule allowed each request shape.
//!
//! Masters poll the same few registers over and over, and matching each poll against the
//! pair's candidate rule read two or three cache lines of the rule that the rest of the path
//! did not need. When which rule allows a request depends on the request alone (its unit and a
//! request whose every field is in its shape: reads of functions 1 to 4, single writes) and
//! none of the pair's candidate rules has a time window, the answer is remembered, at the
//! start of the pair's state (a lookup reads one cache line of it). A remembered answer still takes the rule's rate token
//! on every request; when the rate is exceeded, the full check runs to report it.
//!
//! Invariant: an entry holds the rule the full check found allowing exactly that shape, and
//! every entry is forgotten when the policy changes.

use crate::modbus::Request;

/// Sets of two entries (16 bytes); eight sets, two cache lines, hold a master's usual polls of
/// one target (a handful of blocks per table) without evicting each other.
const SETS: usize = 8;

/// Bits of an entry below its shape: the rule index (16 bits) and whether the rule has a rate.
const SHAPE_SHIFT: u32 = 17;

/// The shape of a request whose verdict depends on nothing else (47 bits: unit, function code,
/// address, and quantity or written value); never 0, since function codes start at 1.
pub(super) fn shape(unit: u8, request: &Request<'_>) -> Option<u64> {
    let (a, b) = match *request {
        Request::Read {
            address, quantity, ..
        } => (address, quantity),
        Request::WriteSingleRegister { address, value } => (address, value),
        Request::WriteSingleCoil { address, value } => (address, u16::from(value)),
        _ => return None,
    };
    let code = u64::from(request.function().code() & 0x7f);
    Some(u64::from(unit) << 39 | code << 32 | u64::from(a) << 16 | u64::from(b))
}

/// Remembered verdicts of one pair: two-way set-associative by shape, most recent first.
#[derive(Debug, Clone, Default)]
pub(super) struct Verdicts {
    entries: [[u64; 2]; SETS],
}

impl Verdicts {
    /// The rule remembered as allowing `shape`, and whether it has a rate.
    pub fn get(&self, shape: u64) -> Option<(usize, bool)> {
        let set = self.entries.get(set_of(shape))?;
        let entry = *set
            .iter()
            .find(|e| **e != 0 && **e >> SHAPE_SHIFT == shape)?;
        Some((usize::from(entry as u16), entry >> 16 & 1 == 1))
    }

    /// Remembers that `rule` allows `shape` (rules past index 65,535 are not remembered),
    /// evicting the older entry of its set.
    pub fn insert(&mut self, shape: u64, rule: usize, rated: bool) {
        let Ok(rule) = u16::try_from(rule) else {
            return;
        };
        if let Some(set) = self.entries.get_mut(set_of(shape)) {
            set[1] = set[0];
            set[0] = shape << SHAPE_SHIFT | u64::from(rated) << 16 | u64::from(rule);
        }
    }

    /// Forgets everything (a new policy is in force).
    pub fn clear(&mut self) {
        self.entries = [[0; 2]; SETS];
    }
}

fn set_of(shape: u64) -> usize {
    (shape.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SETS.trailing_zeros())) as usize
}

#[cfg(test)]
mod tests;
