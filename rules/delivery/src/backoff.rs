//! Exponential backoff with jitter, so a plant's agents do not all come back in the same
//! instant after a collector outage.

use std::time::Duration;

/// Waits after failures: `min * 2^failures`, capped at `max`, scaled by a random factor
/// between one half and one.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
    /// A splitmix64 state: jitter needs spread, not secrecy.
    state: u64,
}

impl Backoff {
    /// Backoff from `min` up to `max`; `seed` makes the jitter (the driver takes it from the
    /// operating system, tests fix it).
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        Self {
            min,
            max: max.max(min),
            failures: 0,
            state: seed,
        }
    }

    /// A success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The wait after one more failure.
    pub fn next_wait(&mut self) -> Duration {
        let exp = self.min.saturating_mul(1u32 << self.failures.min(16));
        self.failures = self.failures.saturating_add(1);
        let capped = exp.min(self.max);
        let byte = (self.random() >> 56) as u8;
        capped.mul_f64(0.5 + f64::from(byte) / 510.0)
    }

    /// The longest wait.
    pub fn max(&self) -> Duration {
        self.max
    }

    fn random(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_between_half_and_all() {
        for seed in 0..50 {
            let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1), seed);
            let waits: Vec<Duration> = (0..8).map(|_| b.next_wait()).collect();
            for (i, wait) in waits.iter().enumerate() {
                let full = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(1));
                assert!(
                    *wait >= full / 2 && *wait <= full,
                    "{i}: {wait:?} of {full:?}"
                );
            }
            b.reset();
            assert!(b.next_wait() <= Duration::from_millis(100));
        }
    }

    #[test]
    fn jitter_spreads_agents_that_failed_together() {
        let waits: std::collections::BTreeSet<Duration> = (0..20)
            .map(|seed| {
                Backoff::new(Duration::from_secs(1), Duration::from_secs(1), seed).next_wait()
            })
            .collect();
        assert!(waits.len() > 10, "{waits:?}");
    }
}
