//! Central learning: an admin asks agents to learn their traffic for a while; each sends the
//! policy it learned; the collector merges every policy learned for one proposal into a new
//! version of that proposal, a policy like any other, assigned to no one until an admin
//! assigns it.
//!
//! Keys (namespace `R`): `R` + agent name holds the agent's latest request ([`LearnRecord`]),
//! with what it learned once it arrives. One request per agent: asking again replaces it.

use otwatch_rules::time::Timestamp;
use otwatch_rules::wire::LearnedPolicy;
use serde::{Deserialize, Serialize};

use super::keys::{LEARN, named};
use super::{Store, StoreError, corrupt, poisoned};
use crate::kv::{Batch, Kv, Order};

/// Most agents with a learn request kept.
pub const MAX_LEARN_REQUESTS: usize = 10_000;

/// An agent's learn request and, once it arrived, what it learned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnRecord {
    /// The request's id (32 hex digits), which the agent's learned policy names.
    pub id: String,
    /// The agent.
    pub agent: String,
    /// The policy the learned policies are merged into.
    pub proposal: String,
    /// How long to learn, in seconds.
    pub duration_s: u64,
    /// Who asked.
    pub requested_by: String,
    /// When.
    pub requested_at: Timestamp,
    /// When the learned policy arrived, if it has.
    #[serde(default)]
    pub received_at: Option<Timestamp>,
    /// Requests it was learned from.
    #[serde(default)]
    pub requests: Option<u64>,
    /// The learned policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toml: Option<String>,
}

/// What taking a learned policy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// The same policy arrived before (a retried batch): nothing changed.
    Again,
    /// Kept; every learned policy of its proposal so far, `(agent, toml)` by agent name.
    Kept {
        /// The proposal.
        proposal: String,
        /// Every policy learned for it.
        learned: Vec<(String, String)>,
    },
}

fn invalid(field: &str, message: String) -> StoreError {
    StoreError::Invalid {
        field: field.into(),
        message,
    }
}

impl<K: Kv> Store<K> {
    /// Keeps a learn request (its agent's, replacing any earlier one).
    pub fn request_learning(&self, record: &LearnRecord) -> Result<(), StoreError> {
        let _writer = self.writer.lock().map_err(|_| poisoned())?;
        let key = named(LEARN, record.agent.as_bytes());
        if self.kv.get(&key)?.is_none() && self.learn_records()?.len() >= MAX_LEARN_REQUESTS {
            return Err(invalid(
                "agent",
                format!("{MAX_LEARN_REQUESTS} agents have a learn request already"),
            ));
        }
        let mut b = Batch::new();
        b.put(key, serde_json::to_vec(record).map_err(corrupt)?);
        self.kv.apply(b)?;
        self.kv.flush()?;
        Ok(())
    }

    /// `agent`'s latest learn request, if any.
    pub fn learn_record(&self, agent: &str) -> Result<Option<LearnRecord>, StoreError> {
        self.kv
            .get(&named(LEARN, agent.as_bytes()))?
            .map(|v| serde_json::from_slice(&v).map_err(corrupt))
            .transpose()
    }

    /// Every agent's latest learn request.
    pub fn learn_records(&self) -> Result<Vec<LearnRecord>, StoreError> {
        crate::kv::scan_prefix(&self.kv, &[LEARN], Order::Ascending, MAX_LEARN_REQUESTS + 1)?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(corrupt))
            .collect()
    }

    /// Keeps what `agent` learned for its request. A policy for another request than the
    /// agent's latest is refused naming the field.
    pub fn take_learned(
        &self,
        agent: &str,
        learned: &LearnedPolicy,
        now: Timestamp,
    ) -> Result<Taken, StoreError> {
        let _writer = self.writer.lock().map_err(|_| poisoned())?;
        let Some(mut record) = self.learn_record(agent)? else {
            return Err(invalid(
                "learned.request",
                format!(
                    "{:?}: agent {agent:?} was not asked to learn",
                    learned.request
                ),
            ));
        };
        if record.id != learned.request {
            return Err(invalid(
                "learned.request",
                format!(
                    "{:?} is not agent {agent:?}'s learn request (expected {:?})",
                    learned.request, record.id
                ),
            ));
        }
        if record.toml.as_deref() == Some(learned.toml.as_str()) {
            return Ok(Taken::Again);
        }
        record.received_at = Some(now);
        record.requests = Some(learned.requests);
        record.toml = Some(learned.toml.clone());
        let mut b = Batch::new();
        b.put(
            named(LEARN, agent.as_bytes()),
            serde_json::to_vec(&record).map_err(corrupt)?,
        );
        self.kv.apply(b)?;
        self.kv.flush()?;
        let learned = self
            .learn_records()?
            .into_iter()
            .filter(|r| r.proposal == record.proposal)
            .filter_map(|r| Some((r.agent, r.toml?)))
            .collect();
        Ok(Taken::Kept {
            proposal: record.proposal,
            learned,
        })
    }
}

#[cfg(test)]
mod tests;
