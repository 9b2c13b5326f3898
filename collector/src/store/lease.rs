//! Leases and export cursors: what lets one replica at a time do a job that must not run twice
//! at once (an exporter, retention) and another take over when it stops, and where an exporter
//! has got to, kept in the store so whichever replica exports next resumes there.
//!
//! A lease names its holder and runs until a time of the holder's clock; it is taken only when
//! free or run out, and renewed by its holder. Replicas' clocks must agree to well within a
//! lease's length (NTP). A holder that stalls past its lease may find another took over: every
//! step it takes under the lease ([`Store::advance_export_cursor`]) checks the lease first, in
//! the same writer section, so at worst a page is sent twice, never skipped.

use std::time::Duration;

use otwatch_rules::time::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, corrupt, json, keys, u64_of};
use crate::kv::{Batch, Kv};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Held {
    holder: String,
    until: Timestamp,
}

fn lease_key(name: &str) -> Vec<u8> {
    keys::named(keys::META, format!("lease/{name}").as_bytes())
}

fn cursor_key(name: &str) -> Vec<u8> {
    keys::named(keys::META, format!("export/{name}").as_bytes())
}

impl<K: Kv> Store<K> {
    /// Takes or renews lease `name` for `holder` until `now + ttl`: `true` when `holder` holds
    /// it now, `false` when another's runs. A lease with more than half of `ttl` left is not
    /// written again.
    pub fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let _writer = self.write_lock()?;
        let key = lease_key(name);
        if let Some(held) = self.held(&key)? {
            if held.holder != holder && held.until > now {
                return Ok(false);
            }
            if held.holder == holder && held.until.saturating_sub(ttl / 2) > now {
                return Ok(true);
            }
        }
        let mut b = Batch::new();
        b.put(
            key,
            json(&Held {
                holder: holder.to_string(),
                until: now.saturating_add(ttl),
            }),
        );
        self.kv.apply(b)?;
        self.kv.flush()?;
        Ok(true)
    }

    /// Gives lease `name` up if `holder` holds it, so another may take it at once.
    pub fn release(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let _writer = self.write_lock()?;
        let key = lease_key(name);
        if self.held(&key)?.is_some_and(|h| h.holder == holder) {
            let mut b = Batch::new();
            b.delete(key);
            self.kv.apply(b)?;
            self.kv.flush()?;
        }
        Ok(())
    }

    fn held(&self, key: &[u8]) -> Result<Option<Held>, StoreError> {
        self.kv
            .get(key)?
            .map(|v| serde_json::from_slice(&v).map_err(corrupt))
            .transpose()
    }

    /// The sequence number exporter `name` has sent through (`None` before it first ran).
    pub fn export_cursor(&self, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.kv.get(&cursor_key(name))?.map(|v| u64_of(&v)))
    }

    /// Exporter `name`'s place, given one if it has none: the newest alert now, so a new
    /// exporter sends what is stored from then on (not the history before it existed). `serve`
    /// calls it before it accepts alerts, so none slips in between; the exporter reads its
    /// place through it.
    pub fn start_export_cursor(&self, name: &str) -> Result<u64, StoreError> {
        let _writer = self.write_lock()?;
        if let Some(at) = self.export_cursor(name)? {
            return Ok(at);
        }
        let at = self.last_sequence()?;
        let mut b = Batch::new();
        b.put(cursor_key(name), at.to_be_bytes().to_vec());
        self.kv.apply(b)?;
        self.kv.flush()?;
        Ok(at)
    }

    /// Records that exporter `name` sent through `through`, if lease `lease` is still
    /// `holder`'s (run out or not: nobody else took it, so nobody else sent meanwhile);
    /// `false` (nothing written) when another holds it.
    pub fn advance_export_cursor(
        &self,
        name: &str,
        lease: &str,
        holder: &str,
        through: u64,
    ) -> Result<bool, StoreError> {
        let _writer = self.write_lock()?;
        let holds = self
            .held(&lease_key(lease))?
            .is_some_and(|h| h.holder == holder);
        if !holds {
            return Ok(false);
        }
        let mut b = Batch::new();
        b.put(cursor_key(name), through.to_be_bytes().to_vec());
        self.kv.apply(b)?;
        self.kv.flush()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::memory::MemoryKv;

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn one_holder_at_a_time_and_another_takes_over_once_it_runs_out() {
        let s = Store::open(MemoryKv::new()).unwrap();
        let t = Timestamp::from_secs(1_000);
        assert!(s.lease("export:syslog", "a", TTL, t).unwrap());
        assert!(!s.lease("export:syslog", "b", TTL, t).unwrap());
        assert!(
            s.lease("export:jsonl", "b", TTL, t).unwrap(),
            "leases are per name"
        );
        // Renewed by its holder, it runs on.
        let later = t.saturating_add(Duration::from_secs(8));
        assert!(s.lease("export:syslog", "a", TTL, later).unwrap());
        let after_first_ttl = t.saturating_add(Duration::from_secs(11));
        assert!(!s.lease("export:syslog", "b", TTL, after_first_ttl).unwrap());
        // Run out: taken over, and the old holder's step under it is refused.
        let gone = later.saturating_add(Duration::from_secs(11));
        assert!(s.lease("export:syslog", "b", TTL, gone).unwrap());
        assert!(
            !s.advance_export_cursor("syslog", "export:syslog", "a", 5)
                .unwrap()
        );
        assert!(
            s.advance_export_cursor("syslog", "export:syslog", "b", 5)
                .unwrap()
        );
        // Run out but not taken: still its holder's to move on.
        let much_later = gone.saturating_add(Duration::from_secs(60));
        assert!(
            s.advance_export_cursor("syslog", "export:syslog", "b", 6)
                .unwrap()
        );
        assert!(s.lease("export:syslog", "b", TTL, much_later).unwrap());
        assert_eq!(s.export_cursor("syslog").unwrap(), Some(6));
        // Released, free at once.
        s.release("export:syslog", "b").unwrap();
        assert!(s.lease("export:syslog", "a", TTL, gone).unwrap());
    }
}
