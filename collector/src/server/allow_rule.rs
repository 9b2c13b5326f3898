//! `GET /api/v1/alerts/{id}/allow-rule`: the smallest change to the policy assigned to the
//! alert's agent that would allow exactly what the alert saw
//! ([`otwatch_rules::policy::allow_this`]), as a unified diff and the whole new text.
//!
//! Nothing is stored here: applying the change is a `PUT /api/v1/policies/{name}` of `toml`
//! with `If-Match` set to `base`, which makes a new version (checked, audited, and followed by
//! the agents assigned the policy) or fails with 412 when someone changed the policy meanwhile.
//! An agent on a local policy file gets 409: the collector does not hold its policy.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use otwatch_rules::policy::{NotAllowable, allow_this};
use otwatch_rules::wire::PolicySource;
use serde_json::json;

use super::policies::unified_diff;
use super::{ApiError, Shared, authorize, blocking};
use crate::kv::Kv;
use crate::store::Action;

/// What the store holds for the alert: the alert, its agent's policy source, the policy
/// assigned to that agent and its version in force.
enum Found {
    NoAlert,
    LocalFile(String),
    NotAssigned(String),
    Policy {
        alert: Box<otwatch_rules::alert::Alert>,
        name: String,
        version: crate::store::policy::PolicyVersion,
    },
}

/// `GET /api/v1/alerts/{id}/allow-rule`.
pub(super) async fn allow_rule<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    let store = state.store.clone();
    let found = blocking(move || {
        let Some(alert) = store.alert(&id)? else {
            return Ok(Found::NoAlert);
        };
        let source = store
            .agent(&alert.agent)?
            .and_then(|r| r.heartbeat.policy_source)
            .unwrap_or_default();
        if source == PolicySource::File {
            return Ok(Found::LocalFile(alert.agent));
        }
        let Some(name) = store.assigned_policy(&alert.agent)? else {
            return Ok(Found::NotAssigned(alert.agent));
        };
        Ok(match store.policy(&name)? {
            Some(version) => Found::Policy {
                alert: Box::new(alert),
                name,
                version,
            },
            None => Found::NotAssigned(alert.agent),
        })
    })
    .await?;
    let (alert, name, version) = match found {
        Found::NoAlert => return Err(ApiError::new(StatusCode::NOT_FOUND, "alert not found")),
        Found::LocalFile(agent) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "agent {agent:?} enforces a local policy file (policy_source = \"file\"): add the rule to that file, or have the agent follow a policy the collector keeps"
                ),
            ));
        }
        Found::NotAssigned(agent) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "no policy is assigned to agent {agent:?} (expected one assigned with PUT /api/v1/agents/{{agent}}/policy)"
                ),
            ));
        }
        Found::Policy {
            alert,
            name,
            version,
        } => (alert, name, version),
    };
    // Editing and checking a policy of at most 256 KiB: off the async workers.
    let base = version.toml.clone();
    let change = tokio::task::spawn_blocking(move || allow_this(&base, &alert))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // What the policy allows already (a version newer than the alert) is a conflict; what no
    // rule can allow (a rate, an [[alert]] rule, an agent's own alert) says why.
    let change = change.map_err(|e| match e {
        NotAllowable::AlreadyAllowed(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        // A change that fails the checker is this collector's defect, not the alert's.
        NotAllowable::Invalid(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        e => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    })?;
    let diff = unified_diff(
        &version.toml,
        &change.text,
        &format!("{name} version {}", version.version),
        &format!("{name} with the alert allowed"),
    );
    Ok(axum::Json(json!({
        "policy": name,
        "base": version.hash,
        "base_version": version.version,
        "summary": change.summary,
        "notes": change.notes,
        "diff": diff,
        "toml": change.text,
    })))
}
