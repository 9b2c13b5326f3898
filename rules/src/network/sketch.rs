//! Bounded summaries of who sent what to one target in one second, that merge exactly
//! across capture workers: a distinct count ([`Distinct`], HyperLogLog) and the heaviest
//! sources ([`Top`], space-saving).

use std::net::IpAddr;

use smallvec::SmallVec;

/// Registers of a [`Distinct`]: 256 give about 6.5 % standard error in 256 bytes.
const REGISTERS: usize = 256;

/// Addresses a [`Distinct`] counts exactly before it estimates.
const EXACT: usize = 32;

/// How many distinct addresses were added: exact up to [`EXACT`], then estimated
/// (HyperLogLog, 256 registers). Two merged give exactly what one fed with both inputs gives,
/// in any order: what keeps alerts the same whatever the number of workers.
///
/// The registers are a function of the set of addresses, so they are only built when the
/// set outgrows [`EXACT`]: a server with a handful of masters, the common case, costs a short
/// sorted list and no register work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Distinct {
    /// Once more than [`EXACT`] addresses were added.
    registers: Option<Box<[u8; REGISTERS]>>,
    /// The addresses (sorted) while there are at most [`EXACT`]; empty once `registers` is set.
    exact: SmallVec<[IpAddr; 4]>,
}

impl Distinct {
    /// Counts `ip`.
    #[inline]
    pub fn add(&mut self, ip: IpAddr) {
        if let Some(registers) = &mut self.registers {
            register(registers, ip);
            return;
        }
        if let Err(at) = self.exact.binary_search(&ip) {
            if self.exact.len() < EXACT {
                self.exact.insert(at, ip);
            } else {
                let mut registers = Box::new([0; REGISTERS]);
                for known in self.exact.drain(..).chain([ip]) {
                    register(&mut registers, known);
                }
                self.exact = SmallVec::new();
                self.registers = Some(registers);
            }
        }
    }

    /// The addresses, when few enough to be known exactly.
    pub fn exact(&self) -> Option<&[IpAddr]> {
        self.registers.is_none().then_some(self.exact.as_slice())
    }

    /// Adds what `other` counted.
    pub fn merge(&mut self, other: &Distinct) {
        match (&mut self.registers, &other.registers) {
            (Some(mine), Some(theirs)) => {
                for (r, o) in mine.iter_mut().zip(theirs.iter()) {
                    *r = (*r).max(*o);
                }
            }
            (Some(_), None) => {
                for ip in &other.exact {
                    self.add(*ip);
                }
            }
            (None, Some(theirs)) => {
                let mut registers = theirs.clone();
                for ip in self.exact.drain(..) {
                    register(&mut registers, ip);
                }
                self.exact = SmallVec::new();
                self.registers = Some(registers);
            }
            (None, None) => {
                for ip in &other.exact {
                    self.add(*ip);
                }
            }
        }
    }

    /// The number of distinct addresses: exact up to 32, then within a few percent.
    pub fn estimate(&self) -> u64 {
        let Some(registers) = &self.registers else {
            return self.exact.len() as u64;
        };
        let m = REGISTERS as f64;
        let zeros = registers.iter().filter(|r| **r == 0).count();
        let sum: f64 = registers.iter().map(|r| (-f64::from(*r)).exp2()).sum();
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            // Linear counting for small cardinalities.
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }
}

/// Counts `ip` in HyperLogLog registers.
#[inline]
fn register(registers: &mut [u8; REGISTERS], ip: IpAddr) {
    let hash = mix(ip);
    let index = (hash >> 56) as usize;
    // Leading zeros of the remaining 56 bits, plus one.
    let rank = ((hash << 8) | 0x80).leading_zeros() as u8 + 1;
    if let Some(r) = registers.get_mut(index)
        && rank > *r
    {
        *r = rank;
    }
}

/// A fixed 64-bit mix of an address (SplitMix64's finaliser over both halves): the same on
/// every worker and every run, so merged registers agree.
fn mix(ip: IpAddr) -> u64 {
    let bits = match ip {
        IpAddr::V4(v4) => u128::from(v4.to_bits()),
        IpAddr::V6(v6) => v6.to_bits(),
    };
    let mut z = (bits as u64) ^ ((bits >> 64) as u64).rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Sources kept by a [`Top`].
pub const TOP: usize = 8;

/// The heaviest sources (space-saving with [`TOP`] counters): a source that sent more than
/// a `1 / TOP` share is always among them. Each counter knows how much of it may belong to the
/// sources it replaced, so what it reports is a count each source sent at least.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Top {
    /// (source, count, of which possibly others').
    entries: SmallVec<[(IpAddr, u64, u64); 4]>,
}

impl Top {
    /// Counts `n` more from `ip`.
    #[inline]
    pub fn add(&mut self, ip: IpAddr, n: u64) {
        self.add_uncertain(ip, n, 0);
    }

    fn add_uncertain(&mut self, ip: IpAddr, n: u64, error: u64) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.0 == ip) {
            e.1 += n;
            e.2 += error;
        } else if self.entries.len() < TOP {
            self.entries.push((ip, n, error));
        } else if let Some(min) = self.entries.iter_mut().min_by_key(|e| (e.1, e.0)) {
            *min = (ip, min.1 + n, min.1 + error);
        }
    }

    /// Adds what `other` counted.
    pub fn merge(&mut self, other: &Top) {
        let mut theirs = other.entries.clone();
        theirs.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (ip, n, error) in theirs {
            self.add_uncertain(ip, n, error);
        }
    }

    /// The sources with what each sent at least, heaviest first (ties by address); sources
    /// of which nothing is certain are left out.
    pub fn sorted(&self) -> Vec<(IpAddr, u64)> {
        let mut v: Vec<(IpAddr, u64)> = self
            .entries
            .iter()
            .map(|e| (e.0, e.1 - e.2.min(e.1)))
            .filter(|e| e.1 > 0)
            .collect();
        v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn distinct_counts_small_sets_exactly_and_large_ones_within_a_few_percent() {
        for n in [0u32, 1, 2, 3, 10, 32, 33] {
            let mut d = Distinct::default();
            for i in 0..n {
                d.add(ip(i));
                d.add(ip(i));
            }
            let e = d.estimate();
            assert!(e.abs_diff(u64::from(n)) <= u64::from(n) / 10, "{n}: {e}");
            assert_eq!(d.exact().is_some(), n <= 32);
            if n <= 32 {
                assert_eq!(e, u64::from(n));
            }
        }
        let mut d = Distinct::default();
        for i in 0..200_000 {
            d.add(ip(i));
        }
        let e = d.estimate() as f64;
        assert!((e / 200_000.0 - 1.0).abs() < 0.2, "{e}");
    }

    #[test]
    fn distinct_merged_in_any_split_equals_one_fed_everything() {
        let mut whole = Distinct::default();
        let (mut a, mut b) = (Distinct::default(), Distinct::default());
        for i in 0..5_000 {
            whole.add(ip(i));
            if i % 3 == 0 {
                a.add(ip(i))
            } else {
                b.add(ip(i))
            }
        }
        let mut ab = a.clone();
        ab.merge(&b);
        b.merge(&a);
        assert_eq!(ab, whole);
        assert_eq!(b, whole);
    }

    #[test]
    fn top_keeps_a_heavy_source_among_many_light_ones() {
        let mut t = Top::default();
        for i in 0..1_000 {
            t.add(ip(i), 1);
            if i % 3 == 0 {
                t.add(ip(5_000), 1);
            }
        }
        assert_eq!(t.sorted().first().map(|e| e.0), Some(ip(5_000)));
        let mut other = Top::default();
        other.add(ip(7), 500);
        t.merge(&other);
        let (heaviest, n) = t.sorted()[0];
        assert_eq!(heaviest, ip(7));
        assert_eq!(n, 500, "what it sent at least");
        // A thousand sources of one each leave nothing certain but the last ones counted.
        let mut flat = Top::default();
        for i in 0..1_000 {
            flat.add(ip(i), 1);
        }
        assert!(
            flat.sorted().iter().all(|e| e.1 == 1),
            "{:?}",
            flat.sorted()
        );
    }
}
