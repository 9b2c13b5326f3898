//! A pair's memory of the requests it sends all day: which allow rule allowed each request
//! shape, and until when the pair's unit and read-block windows already hold it.
//!
//! Masters poll the same few registers over and over. Matching each poll against the pair's
//! candidate rules read two or three cache lines of the rule that the rest of the path did not
//! need, and adding it to the unit and read-block windows read two more lines of the pair's
//! state only to find it there already. Both answers are remembered per shape, in one entry
//! (a lookup reads one cache line of the pair's state):
//!
//! - the verdict, when which rule allows a request depends on the request alone (its unit and
//!   a request whose every field is in its shape: reads of functions 1 to 4, single writes)
//!   and none of the pair's candidate rules has a time window. A remembered verdict still
//!   takes the rule's rate token on every request; when the rate is exceeded, the full check
//!   runs to report it.
//! - for reads, the end of the windows: until then, adding the read to the windows changes
//!   nothing (the windows hold its unit and block, and neither window can restart before its
//!   end), so the built-in detectors skip it. Writes are always counted afresh: a written
//!   point's changes count, not its shape.
//!
//! Invariants: an entry's verdict is the rule the full check found allowing exactly that
//! shape; an entry's window end is at most the end of the unit window and of the block
//! window that held its unit and block when it was written. Every entry is forgotten when the
//! policy changes (rules, thresholds and windows may all change).

use crate::modbus::Request;
use crate::time::Timestamp;

/// Sets of two entries (32 bytes); eight sets, four cache lines, hold a master's usual polls
/// of one target (a handful of blocks per table) without evicting each other.
const SETS: usize = 8;

/// Bits of an entry's key below its shape: the verdict, as [`Recall`] keeps it.
const SHAPE_SHIFT: u32 = 17;

/// The verdict's bits: the rule index plus one (0: no verdict), then whether the verdict is the
/// whole policy check and whether the rule has a rate.
const RULE_BITS: u32 = 0x7fff;
const WHOLE_BIT: u32 = 1 << 15;
const RATED_BIT: u32 = 1 << 16;

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

/// Which allow rule allows a request shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Verdict {
    /// The rule's index.
    pub rule: usize,
    /// Whether the rule has a rate (a token is taken on every request).
    pub rated: bool,
    /// Whether the verdict is the whole policy check: the pair's candidate rules include no
    /// alert rule to match the request against.
    pub whole: bool,
}

/// What a pair remembers of one request shape: 16 bytes, as the memo keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Recall {
    /// The verdict, encoded (see [`RULE_BITS`]).
    verdict: u32,
    /// Until when the pair's windows hold the shape's unit and block (the epoch: not known).
    pub windows_until: Timestamp,
}

impl Recall {
    /// The rule that allows the shape, if remembered.
    pub fn verdict(self) -> Option<Verdict> {
        let rule = self.verdict & RULE_BITS;
        (rule != 0).then(|| Verdict {
            rule: rule as usize - 1,
            whole: self.verdict & WHOLE_BIT != 0,
            rated: self.verdict & RATED_BIT != 0,
        })
    }

    /// Remembers `verdict`; a rule past index 32,766 is not remembered (the verdict is then
    /// forgotten).
    pub fn set_verdict(&mut self, verdict: Verdict) {
        self.verdict = match u32::try_from(verdict.rule) {
            Ok(rule) if rule < RULE_BITS => {
                (rule + 1)
                    | if verdict.whole { WHOLE_BIT } else { 0 }
                    | if verdict.rated { RATED_BIT } else { 0 }
            }
            _ => 0,
        };
    }
}

/// One remembered shape: the shape with its verdict, and the end of its windows.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    key: u64,
    windows_until: Timestamp,
}

impl Entry {
    fn shape(self) -> u64 {
        self.key >> SHAPE_SHIFT
    }
}

/// Remembered shapes of one pair: two-way set-associative by shape, most recent first.
#[derive(Debug, Clone, Default)]
pub(super) struct Memo {
    entries: [[Entry; 2]; SETS],
}

impl Memo {
    /// What is remembered of `shape`, if anything.
    pub fn get(&self, shape: u64) -> Option<Recall> {
        let set = self.entries.get(set_of(shape))?;
        set.iter()
            .find(|e| e.key != 0 && e.shape() == shape)
            .map(|e| Recall {
                verdict: (e.key & ((1 << SHAPE_SHIFT) - 1)) as u32,
                windows_until: e.windows_until,
            })
    }

    /// Remembers `recall` for `shape` (replacing what was remembered of it), evicting the
    /// older entry of its set when the shape is new to it.
    pub fn insert(&mut self, shape: u64, recall: Recall) {
        let entry = Entry {
            key: shape << SHAPE_SHIFT | u64::from(recall.verdict),
            windows_until: recall.windows_until,
        };
        if let Some(set) = self.entries.get_mut(set_of(shape)) {
            if set[0].key == 0 || set[0].shape() != shape {
                set[1] = set[0];
            }
            set[0] = entry;
        }
    }

    /// Forgets everything (a new policy is in force).
    pub fn clear(&mut self) {
        self.entries = Default::default();
    }
}

fn set_of(shape: u64) -> usize {
    (shape.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SETS.trailing_zeros())) as usize
}

#[cfg(test)]
mod tests;
