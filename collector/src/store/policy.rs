//! Policies kept by the collector: named, each a list of versions (the TOML, its hash, who
//! stored it and when), the newest in force. Storing is conditional, as HTTP's `If-Match`:
//! changing a policy that exists names the version it replaces, so two admins editing at once
//! cannot silently overwrite each other; storing the text in force again makes no version.
//! A rollback stores an old version's text as a new version, so history only grows.
//!
//! The text is checked before it gets here (the same checker as `otwatch-agent check`); the
//! store bounds what it keeps: [`MAX_POLICIES`] policies, [`MAX_POLICY_BYTES`] of TOML each,
//! the newest [`MAX_VERSIONS`] versions of each (older ones go as new ones come).
//!
//! Keys (namespace `L`): `L` + name length (1) + name + `h` holds the head (the version in
//! force and its hash); `L` + name length + name + `v` + version number (8) holds a version.
//! Assignments (namespace `B`): `B` + agent name holds the name of the agent's policy; at most
//! [`MAX_ASSIGNMENTS`].

use std::ops::Bound;

use otwatch_rules::time::Timestamp;
use serde::{Deserialize, Serialize};

use super::keys::{ASSIGNMENT, POLICY, named};
use super::{Store, StoreError, corrupt};
use crate::kv::{Batch, Kv, Order};

/// Most policies kept.
pub const MAX_POLICIES: usize = 256;
/// Most bytes of TOML in one version (the bound agents apply to what they fetch).
pub use otwatch_rules::validate::MAX_POLICY_BYTES;
/// Most versions kept per policy: the oldest go first.
pub const MAX_VERSIONS: u64 = 1000;
/// Most agents with a policy assigned.
pub const MAX_ASSIGNMENTS: usize = 10_000;

/// One version of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// 1 for the first version, one more for each after it.
    pub version: u64,
    /// The text's hash (`otwatch_rules::policy::Policy::hash`, what agents report in their
    /// heartbeats): the version's ETag.
    pub hash: String,
    /// The policy, as TOML.
    pub toml: String,
    /// Who stored it (a credential's name).
    pub author: String,
    /// When (the collector's clock).
    pub at: Timestamp,
    /// Why, when the collector knows: a rollback names the version it restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The version in force, and what a listing shows of it (so a listing reads no TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    version: u64,
    hash: String,
    author: String,
    at: Timestamp,
}

/// A policy's name and the version in force, for listings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicySummary {
    /// The policy's name.
    pub name: String,
    /// The version in force.
    pub version: u64,
    /// Its hash.
    pub hash: String,
    /// Who stored it.
    pub author: String,
    /// When.
    pub at: Timestamp,
}

/// A new version to store.
#[derive(Debug, Clone, Copy)]
pub struct NewVersion<'a> {
    /// The policy, as TOML (already checked).
    pub toml: &'a str,
    /// Its hash.
    pub hash: &'a str,
    /// Who stores it.
    pub author: &'a str,
    /// When.
    pub at: Timestamp,
    /// Why, if the collector knows.
    pub note: Option<&'a str>,
}

/// What storing a version did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyPut {
    /// A new version is in force.
    Stored(PolicyVersion),
    /// The text is the one in force already: no new version.
    Unchanged(PolicyVersion),
    /// The condition failed: the policy exists and no version was named (`current` is the
    /// version in force), another version is in force than the one named, or a version was
    /// named for a policy that does not exist (`current` is none).
    Precondition {
        /// The hash of the version in force, if the policy exists.
        current: Option<String>,
    },
}

/// Whether `name` may name a policy: 1 to 64 of ASCII letters, digits, `.`, `_` and `-`,
/// not starting with `.` (it appears in URLs and file names).
pub fn valid_policy_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn prefix(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + name.len() + 9);
    k.push(POLICY);
    // Names are at most 64 bytes (checked before any key is made).
    k.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    k.extend_from_slice(name.as_bytes());
    k
}

fn head_key(name: &str) -> Vec<u8> {
    let mut k = prefix(name);
    k.push(b'h');
    k
}

fn version_key(name: &str, version: u64) -> Vec<u8> {
    let mut k = prefix(name);
    k.push(b'v');
    k.extend_from_slice(&version.to_be_bytes());
    k
}

fn assignment_key(name: &str, seq: u64) -> Vec<u8> {
    let mut k = prefix(name);
    k.push(b'a');
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Most assignment changes kept per policy: the oldest go as new ones come.
pub const MAX_ASSIGNMENT_CHANGES: u64 = 1000;

/// A policy given to an agent or taken from it: the policy's assignment history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentChange {
    /// The agent.
    pub agent: String,
    /// Given (`true`) or taken away, by an assignment of another policy or of none.
    pub assigned: bool,
    /// Who (a credential's name).
    pub by: String,
    /// When (the collector's clock).
    pub at: Timestamp,
}

fn check_name(name: &str) -> Result<(), StoreError> {
    if valid_policy_name(name) {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            field: "name".into(),
            message: format!(
                "{name:?} (expected 1 to 64 letters, digits, '.', '_' or '-', not starting with '.')"
            ),
        })
    }
}

impl<K: Kv> Store<K> {
    /// Stores a new version of policy `name` if `if_match` names the version in force (none for
    /// a new policy); the text in force again makes no version.
    pub fn put_policy(
        &self,
        name: &str,
        new: NewVersion<'_>,
        if_match: Option<&str>,
    ) -> Result<PolicyPut, StoreError> {
        check_name(name)?;
        if new.toml.len() > MAX_POLICY_BYTES {
            return Err(StoreError::Invalid {
                field: "policy".into(),
                message: format!(
                    "{} bytes (expected at most {MAX_POLICY_BYTES})",
                    new.toml.len()
                ),
            });
        }
        let _writer = self.write_lock()?;
        let head = self.policy_head(name)?;
        match (&head, if_match) {
            (Some(h), Some(wanted)) if h.hash == wanted => {}
            (None, None) => {}
            (h, _) => {
                return Ok(PolicyPut::Precondition {
                    current: h.as_ref().map(|h| h.hash.clone()),
                });
            }
        }
        if let Some(h) = &head
            && h.hash == new.hash
        {
            let current = self
                .policy_version(name, h.version)?
                .ok_or_else(|| StoreError::Corrupt(format!("policy {name:?} lost its head")))?;
            return Ok(PolicyPut::Unchanged(current));
        }
        if head.is_none() && self.policy_count()? >= MAX_POLICIES {
            return Err(StoreError::Invalid {
                field: "name".into(),
                message: format!(
                    "a new policy, but the collector holds {MAX_POLICIES} already (expected a change to one of them)"
                ),
            });
        }
        let version = head.as_ref().map_or(1, |h| h.version + 1);
        let stored = PolicyVersion {
            version,
            hash: new.hash.to_string(),
            toml: new.toml.to_string(),
            author: new.author.to_string(),
            at: new.at,
            note: new.note.map(str::to_string),
        };
        let mut b = Batch::new();
        b.put(
            version_key(name, version),
            serde_json::to_vec(&stored).map_err(corrupt)?,
        );
        b.put(
            head_key(name),
            serde_json::to_vec(&Head {
                version,
                hash: stored.hash.clone(),
                author: stored.author.clone(),
                at: stored.at,
            })
            .map_err(corrupt)?,
        );
        if version > MAX_VERSIONS {
            b.delete(version_key(name, version - MAX_VERSIONS));
        }
        self.kv.apply(b)?;
        self.kv.flush()?;
        Ok(PolicyPut::Stored(stored))
    }

    /// The version of `name` in force.
    pub fn policy(&self, name: &str) -> Result<Option<PolicyVersion>, StoreError> {
        check_name(name)?;
        match self.policy_head(name)? {
            Some(h) => self.policy_version(name, h.version),
            None => Ok(None),
        }
    }

    /// Version `version` of `name`, if kept.
    pub fn policy_version(
        &self,
        name: &str,
        version: u64,
    ) -> Result<Option<PolicyVersion>, StoreError> {
        check_name(name)?;
        self.kv
            .get(&version_key(name, version))?
            .map(|v| serde_json::from_slice(&v).map_err(corrupt))
            .transpose()
    }

    /// The kept versions of `name`, newest first (at most `limit`).
    pub fn policy_history(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<PolicyVersion>, StoreError> {
        check_name(name)?;
        let mut start = prefix(name);
        start.push(b'v');
        let mut end = start.clone();
        end.extend_from_slice(&[0xff; 9]);
        self.kv
            .range(
                Bound::Included(&start[..]),
                Bound::Excluded(&end[..]),
                Order::Descending,
                limit,
            )?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(corrupt))
            .collect()
    }

    /// The newest kept version of `name` whose hash is `hash`, read a few versions at a time.
    pub fn policy_version_by_hash(
        &self,
        name: &str,
        hash: &str,
    ) -> Result<Option<PolicyVersion>, StoreError> {
        check_name(name)?;
        let mut start = prefix(name);
        start.push(b'v');
        let mut end = start.clone();
        end.extend_from_slice(&[0xff; 9]);
        loop {
            let page = self.kv.range(
                Bound::Included(&start[..]),
                Bound::Excluded(&end[..]),
                Order::Descending,
                8,
            )?;
            let Some((last, _)) = page.last() else {
                return Ok(None);
            };
            end = last.clone();
            for (_, v) in &page {
                let version: PolicyVersion = serde_json::from_slice(v).map_err(corrupt)?;
                if version.hash == hash {
                    return Ok(Some(version));
                }
            }
        }
    }

    /// Every policy and the version in force, by name (from the heads: no TOML is read).
    pub fn policies(&self) -> Result<Vec<PolicySummary>, StoreError> {
        let mut out = Vec::new();
        for name in self.policy_names()? {
            if let Some(h) = self.policy_head(&name)? {
                out.push(PolicySummary {
                    name,
                    version: h.version,
                    hash: h.hash,
                    author: h.author,
                    at: h.at,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The hash of the version of `name` in force, if the policy exists.
    pub fn policy_hash(&self, name: &str) -> Result<Option<String>, StoreError> {
        check_name(name)?;
        Ok(self.policy_head(name)?.map(|h| h.hash))
    }

    /// Assigns policy `policy` to agent `agent` (which must be a valid agent name), or takes
    /// its assignment away (`None`), as `by` at `at`. The policy must exist. The change goes
    /// into the assignment history of the policy given and of the one taken away.
    pub fn assign_policy(
        &self,
        agent: &str,
        policy: Option<&str>,
        by: &str,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        otwatch_rules::validate::agent_name("agent", agent).map_err(|e| StoreError::Invalid {
            field: e.field,
            message: format!("{} is not valid (expected {})", e.found, e.expected),
        })?;
        let _writer = self.write_lock()?;
        let key = named(ASSIGNMENT, agent.as_bytes());
        let mut b = Batch::new();
        match policy {
            Some(p) => {
                check_name(p)?;
                if self.policy_head(p)?.is_none() {
                    return Err(StoreError::NotFound(format!("policy {p:?}")));
                }
                if self.kv.get(&key)?.is_none() && self.assignments()?.len() >= MAX_ASSIGNMENTS {
                    return Err(StoreError::Invalid {
                        field: "agent".into(),
                        message: format!(
                            "{MAX_ASSIGNMENTS} agents have a policy already (expected one of them)"
                        ),
                    });
                }
                b.put(key.clone(), p.as_bytes().to_vec());
            }
            None => b.delete(key.clone()),
        }
        let before = self.kv.get(&key)?.and_then(|v| String::from_utf8(v).ok());
        if before.as_deref() != policy {
            let change = |assigned| AssignmentChange {
                agent: agent.to_string(),
                assigned,
                by: by.to_string(),
                at,
            };
            if let Some(old) = &before {
                self.note_assignment(&mut b, old, &change(false))?;
            }
            if let Some(new) = policy {
                self.note_assignment(&mut b, new, &change(true))?;
            }
        }
        self.kv.apply(b)?;
        self.kv.flush()?;
        Ok(())
    }

    /// Adds `change` to the assignment history of `name`, the oldest past
    /// [`MAX_ASSIGNMENT_CHANGES`] going.
    fn note_assignment(
        &self,
        b: &mut Batch,
        name: &str,
        change: &AssignmentChange,
    ) -> Result<(), StoreError> {
        let start = assignment_key(name, 0);
        let end = assignment_key(name, u64::MAX);
        let last = self
            .kv
            .range(
                Bound::Included(&start[..]),
                Bound::Included(&end[..]),
                Order::Descending,
                1,
            )?
            .into_iter()
            .next()
            .and_then(|(k, _)| Some(u64::from_be_bytes(k.get(k.len() - 8..)?.try_into().ok()?)));
        let seq = last.map_or(1, |s| s + 1);
        b.put(
            assignment_key(name, seq),
            serde_json::to_vec(change).map_err(corrupt)?,
        );
        if seq > MAX_ASSIGNMENT_CHANGES {
            b.delete(assignment_key(name, seq - MAX_ASSIGNMENT_CHANGES));
        }
        Ok(())
    }

    /// The newest `limit` assignment changes of policy `name`, newest first.
    pub fn assignment_changes(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<AssignmentChange>, StoreError> {
        check_name(name)?;
        let start = assignment_key(name, 0);
        let end = assignment_key(name, u64::MAX);
        self.kv
            .range(
                Bound::Included(&start[..]),
                Bound::Included(&end[..]),
                Order::Descending,
                limit,
            )?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(corrupt))
            .collect()
    }

    /// The name of the policy assigned to `agent`, if any.
    pub fn assigned_policy(&self, agent: &str) -> Result<Option<String>, StoreError> {
        self.kv
            .get(&named(ASSIGNMENT, agent.as_bytes()))?
            .map(|v| {
                String::from_utf8(v)
                    .map_err(|_| StoreError::Corrupt("an assignment that is not UTF-8".into()))
            })
            .transpose()
    }

    /// Every assignment: (agent, policy), by agent name.
    pub fn assignments(&self) -> Result<Vec<(String, String)>, StoreError> {
        crate::kv::scan_prefix(
            &self.kv,
            &[ASSIGNMENT],
            Order::Ascending,
            MAX_ASSIGNMENTS + 1,
        )?
        .into_iter()
        .map(|(k, v)| {
            let text = |b: &[u8]| {
                std::str::from_utf8(b)
                    .map(str::to_string)
                    .map_err(|_| StoreError::Corrupt("an assignment that is not UTF-8".into()))
            };
            Ok((text(k.get(1..).unwrap_or_default())?, text(&v)?))
        })
        .collect()
    }

    fn policy_head(&self, name: &str) -> Result<Option<Head>, StoreError> {
        self.kv
            .get(&head_key(name))?
            .map(|v| serde_json::from_slice(&v).map_err(corrupt))
            .transpose()
    }

    fn policy_count(&self) -> Result<usize, StoreError> {
        Ok(self.policy_names()?.len())
    }

    /// The names of the policies, in key order (by length, then bytes), from their heads: one
    /// key read per name, skipping each policy's versions.
    fn policy_names(&self) -> Result<Vec<String>, StoreError> {
        let mut names = Vec::new();
        let mut from = vec![POLICY];
        loop {
            let next = self.kv.range(
                Bound::Excluded(&from[..]),
                Bound::Excluded(&[POLICY + 1][..]),
                Order::Ascending,
                1,
            )?;
            let Some((key, _)) = next.into_iter().next() else {
                break;
            };
            let len = usize::from(*key.get(1).unwrap_or(&0));
            let name = key
                .get(2..2 + len)
                .and_then(|n| std::str::from_utf8(n).ok())
                .ok_or_else(|| StoreError::Corrupt("a policy key without a name".into()))?
                .to_string();
            if self.policy_head(&name)?.is_some() {
                names.push(name.clone());
            }
            // Past every key of this name: its prefix followed by the highest tag.
            from = prefix(&name);
            from.push(0xff);
            if names.len() > MAX_POLICIES {
                break;
            }
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests;
