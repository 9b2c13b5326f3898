//! Central learning over the API.
//!
//! - `POST /api/v1/agents/{agent}/learn` (`{"duration": "24h", "proposal": "NAME"}`, admin):
//!   asks the agent to learn for that long (1 s to 31 days); the answers to its heartbeats
//!   carry the request until it has sent what it learned. Learned policies of one proposal
//!   (default `learned`) are merged into a new version of that policy.
//! - What agents learned arrives in their ingest batches ([`take`]): checked (only what
//!   learning writes), kept per agent, and merged with the other agents' of the same proposal
//!   into a new version of the proposal, stored by `learning`. The proposal is assigned to no
//!   one: a proposal that an admin has assigned meanwhile is not changed by learning.
//!
//! Every request is an audit record (`learning_requested`), and so is every proposal stored
//! (`policy_proposed`).

use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use otwatch_rules::policy::merge_learned;
use otwatch_rules::wire::LearnedPolicy;
use serde::Deserialize;
use serde_json::json;

use super::session::Source;
use super::{ApiError, Shared, authorize, blocking, json_body_expecting, now};
use crate::audit::{self, detail};
use crate::kv::Kv;
use crate::store::learn::LearnRecord;
use crate::store::model::Role;
use crate::store::policy::{NewVersion, PolicyPut, valid_policy_name};
use crate::store::{Action, Store, StoreError};

/// Shortest and longest learning an admin may ask for.
const DURATIONS: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(31 * 24 * 3600));

/// The proposal learned policies go to when the request names none.
const DEFAULT_PROPOSAL: &str = "learned";

/// The body of a learn request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ask {
    /// How long, as `"24h"`, `"30m"`.
    duration: String,
    /// The policy the learned policies are merged into.
    #[serde(default)]
    proposal: Option<String>,
}

/// A fresh request id: 32 hex digits from the system's randomness.
fn fresh_id() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// `POST /api/v1/agents/{agent}/learn`.
pub(super) async fn ask<K: Kv>(
    State(state): State<Shared<K>>,
    Source(source): Source,
    headers: HeaderMap,
    Path(agent): Path<String>,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let principal = authorize(&state, &headers, Action::Change)?;
    let ask: Ask = json_body_expecting(
        &state,
        body,
        Some(r#"{"duration": "24h", "proposal": "NAME"}"#),
    )
    .await?;
    let duration = humantime::parse_duration(&ask.duration)
        .ok()
        .filter(|d| (DURATIONS.0..=DURATIONS.1).contains(d))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "duration: {:?} (expected a duration from 1s to 31d, such as \"24h\")",
                ask.duration
            ))
        })?;
    let proposal = ask.proposal.unwrap_or_else(|| DEFAULT_PROPOSAL.into());
    if !valid_policy_name(&proposal) {
        return Err(ApiError::bad_request(format!(
            "proposal: {proposal:?} (expected a policy name: 1 to 64 letters, digits, '.', '_' or '-')"
        )));
    }
    let is_agent = state
        .credentials
        .list()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .iter()
        .any(|c| c.name == agent && c.role == Role::Agent);
    if !is_agent {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no agent credential is named {agent:?}"),
        ));
    }
    let record = LearnRecord {
        id: fresh_id()?,
        agent: agent.clone(),
        proposal: proposal.clone(),
        duration_s: duration.as_secs(),
        requested_by: principal.name.clone(),
        requested_at: now(),
        received_at: None,
        requests: None,
        error: None,
    };
    let store = state.store.clone();
    let (kept, name) = (record.clone(), proposal.clone());
    blocking(move || {
        if let Some((holder, _)) = store.assignments()?.into_iter().find(|(_, p)| *p == name) {
            return Ok(Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "proposal: policy {name:?} is assigned to agent {holder:?} (expected a policy no agent enforces: learning writes new versions of it)"
                ),
            )));
        }
        store.request_learning(&kept).map(Ok)
    })
    .await??;
    audit::note_off_the_workers(
        state.audit.clone(),
        audit::Event {
            ts: now(),
            event: "learning_requested",
            who: Some(principal.name.clone()),
            source,
            detail: detail([
                ("agent", json!(agent)),
                ("proposal", json!(proposal)),
                ("duration_s", json!(record.duration_s)),
                ("request", json!(record.id)),
            ]),
        },
    )
    .await;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "request": record.id,
            "agent": agent,
            "proposal": proposal,
            "duration_s": record.duration_s,
        })),
    ))
}

/// One merge at a time: two agents' policies arriving together would otherwise each store a
/// proposal without the other's.
static MERGING: Mutex<()> = Mutex::new(());

/// Keeps what `agent` learned and stores the merged proposal; returns the proposal's name,
/// its new version and the agents merged when one was stored. The proposal is stored before
/// the learned policy is marked received, so a failure to store it leaves the agent's batch
/// unacknowledged and sent again. A learned policy that cannot be merged (the merge would not
/// be a valid policy, or too large) is kept with the reason, out of the proposal, and the
/// batch acknowledged: sending it again would not help. Runs on a blocking thread.
pub(super) fn take<K: Kv>(
    store: &Store<K>,
    agent: &str,
    learned: &LearnedPolicy,
) -> Result<Option<(String, u64, Vec<String>)>, StoreError> {
    let _merging = MERGING.lock().unwrap_or_else(|e| e.into_inner());
    let record = store.answered(agent, learned)?;
    if record.received_at.is_some()
        && store.learned_toml(agent)?.as_deref() == Some(learned.toml.as_str())
    {
        // A retried batch: merged already.
        return Ok(None);
    }
    let proposal = record.proposal;
    if let Some((holder, _)) = store
        .assignments()?
        .into_iter()
        .find(|(_, p)| *p == proposal)
    {
        let why = format!("not merged: an admin assigned {proposal:?} to {holder:?} meanwhile");
        tracing::warn!("learned policy of {agent:?} {why}");
        store.keep_learned(agent, learned, now(), Some(why))?;
        return Ok(None);
    }
    let mut parts: Vec<(String, String)> = Vec::new();
    for other in store.learn_records()? {
        if other.agent != agent
            && other.proposal == proposal
            && other.received_at.is_some()
            && other.error.is_none()
            && let Some(toml) = store.learned_toml(&other.agent)?
        {
            parts.push((other.agent, toml));
        }
    }
    parts.push((agent.to_string(), learned.toml.clone()));
    parts.sort();
    let borrowed: Vec<(&str, &str)> = parts
        .iter()
        .map(|(a, t)| (a.as_str(), t.as_str()))
        .collect();
    let merged = match merge_learned(&proposal, &borrowed) {
        Ok(merged) => merged,
        Err(e) => {
            let why = format!("not merged: {e}");
            tracing::warn!("learned policy of {agent:?} {why}");
            store.keep_learned(agent, learned, now(), Some(why))?;
            return Ok(None);
        }
    };
    let Ok((policy, _)) = otwatch_rules::policy::Policy::parse(&merged, &proposal) else {
        // merge_learned parses what it returns: not reached.
        store.keep_learned(agent, learned, now(), Some("not merged".into()))?;
        return Ok(None);
    };
    let agents: Vec<String> = parts.into_iter().map(|(a, _)| a).collect();
    let note = format!("merged from what agents learned: {}", agents.join(", "));
    let current = store.policy_hash(&proposal)?;
    let put = store.put_policy(
        &proposal,
        NewVersion {
            toml: &merged,
            hash: &policy.hash,
            author: "learning",
            at: now(),
            note: Some(&note),
        },
        current.as_deref(),
    );
    let stored = match put {
        Ok(PolicyPut::Stored(v)) => Some((proposal, v.version, agents)),
        Ok(_) => None,
        // Too large, or too many policies: kept, with why, out of the proposal.
        Err(StoreError::Invalid { field, message }) => {
            let why = format!("not merged: {field}: {message}");
            tracing::warn!("learned policy of {agent:?} {why}");
            store.keep_learned(agent, learned, now(), Some(why))?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    store.keep_learned(agent, learned, now(), None)?;
    Ok(stored)
}
