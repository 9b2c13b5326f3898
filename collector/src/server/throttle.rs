//! Failed logins per source: each source (an address, or an IPv6 /64) has an allowance of
//! failures that refills over a minute; a source that used it up gets 429 on its logins until
//! it refills, so no one can guess tokens through the login form at speed. Every attempt takes
//! one unit before its token is looked at and a successful one gives it back, so attempts in
//! flight at once (a source may hold hundreds of connections) cannot overdraw the allowance.
//! Bounded: at most [`MAX_SOURCES`] sources are tracked, the fullest (least suspicious)
//! forgotten first.
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most sources tracked at once.
pub const MAX_SOURCES: usize = 4096;

/// One source's allowance: what was left at a time, and whether its refusal since it ran out
/// has been reported (the audit log gets one line per episode, not one per attempt).
#[derive(Debug, Clone, Copy)]
struct Allowance {
    left: f64,
    at: Instant,
    reported: bool,
}

/// Why a login is refused before its token is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// How long until the source may try again.
    pub wait: Duration,
    /// The first refusal since the source ran out (worth an audit line).
    pub first: bool,
}

/// Failed-login allowances by source.
#[derive(Debug)]
pub struct LoginThrottle {
    per_minute: f64,
    sources: HashMap<IpAddr, Allowance>,
}

impl LoginThrottle {
    /// Allows `per_minute` failures per source per minute (at least one).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute.max(1)),
            sources: HashMap::new(),
        }
    }

    /// What `a` has left at `now`.
    fn refilled(&self, a: &Allowance, now: Instant) -> f64 {
        let refill = now.duration_since(a.at).as_secs_f64() / 60.0 * self.per_minute;
        (a.left + refill).min(self.per_minute)
    }

    /// The allowance `source` has left at `now`.
    fn left(&self, source: IpAddr, now: Instant) -> f64 {
        self.sources
            .get(&source)
            .map_or(self.per_minute, |a| self.refilled(a, now))
    }

    /// Takes one unit of `source`'s allowance for a login attempt at `now`; when none is left,
    /// how long until one is and whether this is the first refusal since it ran out.
    pub fn attempt(&mut self, source: IpAddr, now: Instant) -> Result<(), Throttled> {
        let left = self.left(source, now);
        if left < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - left) * 60.0 / self.per_minute);
            let first = match self.sources.get_mut(&source) {
                Some(a) => !std::mem::replace(&mut a.reported, true),
                None => true,
            };
            return Err(Throttled { wait, first });
        }
        if !self.sources.contains_key(&source) && self.sources.len() >= MAX_SOURCES {
            self.forget_one(now);
        }
        self.sources.insert(
            source,
            Allowance {
                left: left - 1.0,
                at: now,
                reported: false,
            },
        );
        Ok(())
    }

    /// Gives back the unit a successful login from `source` took.
    pub fn succeeded(&mut self, source: IpAddr, now: Instant) {
        let full = self.per_minute;
        let left = self.left(source, now);
        if let Some(a) = self.sources.get_mut(&source) {
            a.left = (left + 1.0).min(full);
            a.at = now;
        }
    }

    /// Drops every source whose allowance refilled; if none did, the one with the most left.
    fn forget_one(&mut self, now: Instant) {
        let full = self.per_minute;
        let refilled: Vec<IpAddr> = self
            .sources
            .iter()
            .filter(|(_, a)| self.refilled(a, now) >= full)
            .map(|(ip, _)| *ip)
            .collect();
        if !refilled.is_empty() {
            for ip in &refilled {
                self.sources.remove(ip);
            }
            return;
        }
        let most = self
            .sources
            .iter()
            .max_by(|a, b| self.refilled(a.1, now).total_cmp(&self.refilled(b.1, now)))
            .map(|(ip, _)| *ip);
        if let Some(ip) = most {
            self.sources.remove(&ip);
        }
    }

    /// Sources tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_past_its_failures_waits_and_another_source_does_not() {
        let mut t = LoginThrottle::new(10);
        let now = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        // Ten attempts in flight at once take the whole allowance: the eleventh waits.
        for _ in 0..10 {
            assert!(t.attempt(a, now).is_ok());
        }
        let refused = t.attempt(a, now).unwrap_err();
        assert!(refused.wait <= Duration::from_secs(6), "{refused:?}");
        assert!(refused.first);
        assert!(
            !t.attempt(a, now).unwrap_err().first,
            "reported once per episode"
        );
        assert!(t.attempt(b, now).is_ok());
        // Six seconds refill one attempt; a success gives its unit back.
        let later = now + Duration::from_secs(6);
        assert!(t.attempt(a, later).is_ok());
        t.succeeded(a, later);
        assert!(t.attempt(a, later).is_ok());
        assert!(t.attempt(a, later).is_err());
    }

    #[test]
    fn tracking_stays_bounded_under_failures_from_every_address() {
        let mut t = LoginThrottle::new(10);
        let now = Instant::now();
        for n in 0..(MAX_SOURCES as u32 * 3) {
            let _ = t.attempt(IpAddr::from(n.to_be_bytes()), now);
        }
        assert!(t.len() <= MAX_SOURCES);
    }
}
