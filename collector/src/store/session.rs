//! Dashboard sessions: what a session cookie stands for, kept in the store (so every replica
//! of a later release sees the same sessions) under the hash of its id, never the id itself.
//!
//! A session names the credential that opened it by that credential's hash: revoking the
//! credential ends its sessions, with nothing to clean up first.
use serde::{Deserialize, Serialize};

use otwatch_rules::time::Timestamp;

use super::keys;
use super::{Store, StoreError, corrupt, json};
use crate::kv::{Batch, Kv, Order, scan_prefix};
use crate::store::model::Role;

/// Most sessions one credential keeps open; a new login past it ends the oldest.
pub const MAX_SESSIONS_PER_CREDENTIAL: usize = 16;

/// One signed-in dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The hash of the credential that opened it.
    pub credential: String,
    /// The credential's name, for the audit log and `whoami`.
    pub name: String,
    /// The role it had at login.
    pub role: Role,
    /// When it was opened.
    pub created: Timestamp,
    /// When it ends, whatever happens.
    pub expires: Timestamp,
}

impl<K: Kv> Store<K> {
    /// Keeps a new session under `id_hash`; past [`MAX_SESSIONS_PER_CREDENTIAL`] for its
    /// credential, the oldest are removed.
    pub fn open_session(&self, id_hash: &str, session: &Session) -> Result<(), StoreError> {
        let mut same: Vec<(Vec<u8>, Session)> = self
            .sessions()?
            .into_iter()
            .filter(|(_, s)| s.credential == session.credential)
            .collect();
        same.sort_by_key(|(_, s)| s.created);
        let mut b = Batch::new();
        let over = (same.len() + 1).saturating_sub(MAX_SESSIONS_PER_CREDENTIAL);
        for (key, _) in same.into_iter().take(over) {
            b.delete(key);
        }
        b.put(
            keys::named(keys::SESSION, id_hash.as_bytes()),
            json(session),
        );
        self.kv.apply(b)?;
        Ok(())
    }

    /// The session under `id_hash`, if it exists and has not expired at `now`.
    pub fn session(&self, id_hash: &str, now: Timestamp) -> Result<Option<Session>, StoreError> {
        let Some(v) = self
            .kv
            .get(&keys::named(keys::SESSION, id_hash.as_bytes()))?
        else {
            return Ok(None);
        };
        let session: Session = serde_json::from_slice(&v).map_err(corrupt)?;
        Ok((session.expires > now).then_some(session))
    }

    /// Ends the session under `id_hash` (logout); returns whether there was one.
    pub fn close_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let key = keys::named(keys::SESSION, id_hash.as_bytes());
        let existed = self.kv.get(&key)?.is_some();
        let mut b = Batch::new();
        b.delete(key);
        self.kv.apply(b)?;
        Ok(existed)
    }

    /// Removes every session expired at `now` or whose credential `alive` no longer knows;
    /// returns how many.
    pub fn purge_sessions(
        &self,
        now: Timestamp,
        alive: impl Fn(&str) -> bool,
    ) -> Result<usize, StoreError> {
        let mut b = Batch::new();
        let mut removed = 0;
        for (key, s) in self.sessions()? {
            if s.expires <= now || !alive(&s.credential) {
                b.delete(key);
                removed += 1;
            }
        }
        if removed > 0 {
            self.kv.apply(b)?;
        }
        Ok(removed)
    }

    fn sessions(&self) -> Result<Vec<(Vec<u8>, Session)>, StoreError> {
        scan_prefix(&self.kv, &[keys::SESSION], Order::Ascending, usize::MAX)?
            .into_iter()
            .map(|(k, v)| Ok((k, serde_json::from_slice(&v).map_err(corrupt)?)))
            .collect()
    }
}
