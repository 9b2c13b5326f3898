//! Capture time, passed in by the caller: the core never reads a clock.

use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

/// A capture timestamp in nanoseconds since the Unix epoch. Serialized as RFC 3339 with
/// microseconds, the precision captures carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The timestamp `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// The timestamp `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros.saturating_mul(1_000))
    }

    /// The timestamp `secs` seconds after the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later (captures can step back).
    pub fn since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Whether at least `d` has passed from `earlier` to `self`: `self.since(earlier) >= d`,
    /// compared in nanoseconds without building a `Duration` (detectors ask it per request).
    pub fn passed(self, earlier: Self, d: Duration) -> bool {
        u128::from(self.0.saturating_sub(earlier.0)) >= d.as_nanos()
    }

    /// `self` moved back by `d`, saturating at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// `self` moved forward by `d`, saturating at the end of time.
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = UNIX_EPOCH + Duration::from_nanos(self.0);
        write!(f, "{}", humantime::format_rfc3339_micros(time))
    }
}

impl std::str::FromStr for Timestamp {
    type Err = humantime::TimestampError;

    /// Parses an RFC 3339 timestamp in UTC (`2024-01-02T03:04:05.123456Z`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let time = humantime::parse_rfc3339_weak(s)?;
        let nanos = time
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Ok(Self(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
