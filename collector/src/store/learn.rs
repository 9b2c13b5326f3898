//! Central learning: an admin asks agents to learn their traffic for a while; each sends the
//! policy it learned; the collector merges every policy learned for one proposal into a new
//! version of that proposal, a policy like any other, assigned to no one until an admin
//! assigns it.
//!
//! Keys: `R` + agent name holds the agent's latest request ([`LearnRecord`]), with when what it
//! learned arrived; `U` + agent name holds the learned policy itself (up to 256 KiB, read only
//! to merge). One request per agent: asking again replaces it and its learned policy.

use otwatch_rules::time::Timestamp;
use otwatch_rules::wire::LearnedPolicy;
use serde::{Deserialize, Serialize};

use super::keys::{LEARN, LEARNED, named};
use super::{Store, StoreError, corrupt};
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
    /// Why what it learned is not in the proposal, if it is not (a merge that failed, a
    /// proposal an admin assigned meanwhile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
        let _writer = self.write_lock()?;
        let key = named(LEARN, record.agent.as_bytes());
        if self.kv.get(&key)?.is_none() && self.learn_records()?.len() >= MAX_LEARN_REQUESTS {
            return Err(invalid(
                "agent",
                format!("{MAX_LEARN_REQUESTS} agents have a learn request already"),
            ));
        }
        let mut b = Batch::new();
        b.put(key, serde_json::to_vec(record).map_err(corrupt)?);
        b.delete(named(LEARNED, record.agent.as_bytes()));
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

    /// The policy `agent` learned for its latest request, if it arrived.
    pub fn learned_toml(&self, agent: &str) -> Result<Option<String>, StoreError> {
        self.kv
            .get(&named(LEARNED, agent.as_bytes()))?
            .map(|v| {
                String::from_utf8(v)
                    .map_err(|_| StoreError::Corrupt("a learned policy that is not UTF-8".into()))
            })
            .transpose()
    }

    /// `agent`'s latest request, if `learned` answers it; refused naming the field otherwise.
    pub fn answered(
        &self,
        agent: &str,
        learned: &LearnedPolicy,
    ) -> Result<LearnRecord, StoreError> {
        let Some(record) = self.learn_record(agent)? else {
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
        Ok(record)
    }

    /// Keeps what `agent` learned for its request, with why it is not in the proposal if it
    /// is not. Refused when the request is no longer the agent's latest.
    pub fn keep_learned(
        &self,
        agent: &str,
        learned: &LearnedPolicy,
        now: Timestamp,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let _writer = self.write_lock()?;
        let mut record = self.answered(agent, learned)?;
        record.received_at = Some(now);
        record.requests = Some(learned.requests);
        record.error = error;
        let mut b = Batch::new();
        b.put(
            named(LEARN, agent.as_bytes()),
            serde_json::to_vec(&record).map_err(corrupt)?,
        );
        b.put(
            named(LEARNED, agent.as_bytes()),
            learned.toml.as_bytes().to_vec(),
        );
        self.kv.apply(b)?;
        self.kv.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
