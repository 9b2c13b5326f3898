//! The policy API: policies kept by the collector ([`crate::store::policy`]), read by viewers
//! and admins, changed by admins.
//!
//! - `GET /api/v1/policies`: every policy and its version in force.
//! - `GET /api/v1/policies/{name}`: the TOML in force, `ETag` its hash.
//! - `PUT /api/v1/policies/{name}`: a new version (`Content-Type: application/toml`), checked
//!   by the same checker as `otwatch-agent check`: 400 with the line, column, field and what
//!   was expected; warnings in the reply. Changing a policy that exists needs `If-Match` with
//!   the ETag of the version in force (428 without, 412 when another is in force).
//! - `GET /api/v1/policies/{name}/history`: the kept versions, newest first, each with a
//!   unified diff from the version before it.
//! - `POST /api/v1/policies/{name}/rollback` (`{"version": "HASH or NUMBER"}`): the text of a
//!   kept version becomes a new version.
//! - `PUT /api/v1/agents/{agent}/policy` (`{"policy": "NAME"}`, or `null` to take it away):
//!   assigns a policy to an agent (admin).
//! - `GET /api/v1/agents/{agent}/policy`: the TOML of the policy assigned to the agent, `ETag`
//!   its hash: viewers and admins read any agent's, an agent its own only. The answer to an
//!   agent's heartbeat names it and its hash.
//!
//! Every change is an audit record (`policy_stored`, `policy_rolled_back`, `policy_assigned`).

use std::net::IpAddr;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use otwatch_rules::policy::{POLICY_VERSION, Policy, readable_by};
use serde::Deserialize;
use serde_json::json;

use super::session::Source;
use super::{ApiError, Shared, authorize, blocking, body_bytes, json_body_expecting, now};
use crate::audit::{self, detail};
use crate::kv::Kv;
use crate::store::Action;
use crate::store::model::Role;
use crate::store::policy::{
    MAX_POLICY_BYTES, NewVersion, PolicyPut, PolicyVersion, valid_policy_name,
};

/// The media type of a policy.
const TOML: &str = "application/toml";

fn named(name: &str) -> Result<(), ApiError> {
    if valid_policy_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "name: {name:?} (expected 1 to 64 letters, digits, '.', '_' or '-', not starting with '.')"
        )))
    }
}

fn etag(hash: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{hash}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// What an `If-Match` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IfMatch {
    /// `*`: whatever version is in force (the policy must exist).
    Any,
    /// One of these versions (strong entity tags, quotes off; weak ones never match).
    Tags(Vec<String>),
}

/// The `If-Match` headers, every list entry of each (RFC 9110).
fn if_match(headers: &HeaderMap) -> Result<Option<IfMatch>, ApiError> {
    let mut tags = Vec::new();
    let mut any = false;
    let mut present = false;
    for value in headers.get_all(header::IF_MATCH) {
        present = true;
        let text = value
            .to_str()
            .map_err(|_| ApiError::bad_request("If-Match: not ASCII (expected an ETag)"))?;
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                any = true;
            } else if !entry.starts_with("W/") {
                tags.push(entry.trim_matches('"').to_string());
            }
        }
    }
    Ok(match (present, any) {
        (false, _) => None,
        (true, true) => Some(IfMatch::Any),
        (true, false) => Some(IfMatch::Tags(tags)),
    })
}

/// The version the store is to find in force: the one `wanted` names if it is in force, the
/// first named otherwise (so the store refuses with the version in force), none without
/// `If-Match`.
fn condition<K: Kv>(
    store: &crate::store::Store<K>,
    name: &str,
    wanted: Option<IfMatch>,
) -> Result<Option<String>, crate::store::StoreError> {
    let Some(wanted) = wanted else {
        return Ok(None);
    };
    let current = store.policy_hash(name)?;
    Ok(Some(match (current, wanted) {
        (Some(h), IfMatch::Any) => h,
        (Some(h), IfMatch::Tags(tags)) if tags.contains(&h) => h,
        (_, IfMatch::Tags(tags)) => tags.into_iter().next().unwrap_or_default(),
        // No policy: any condition fails.
        (None, IfMatch::Any) => "*".to_string(),
    }))
}

/// `GET /api/v1/policies`.
pub(super) async fn list<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    let store = state.store.clone();
    Ok(axum::Json(blocking(move || store.policies()).await?))
}

/// `GET /api/v1/policies/{name}`.
pub(super) async fn get<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    named(&name)?;
    let store = state.store.clone();
    let wanted = name.clone();
    let Some(version) = blocking(move || store.policy(&wanted)).await? else {
        return Err(not_found(&name));
    };
    Ok(toml_response(version))
}

/// `PUT /api/v1/policies/{name}`.
pub(super) async fn put<K: Kv>(
    State(state): State<Shared<K>>,
    Source(source): Source,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = authorize(&state, &headers, Action::Change)?;
    named(&name)?;
    let is_toml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(TOML));
    if !is_toml {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type: expected {TOML}"),
        ));
    }
    let wanted = if_match(&headers)?;
    let asked = wanted.is_some();
    let bytes = body_bytes(&state, body).await?;
    if bytes.len() > MAX_POLICY_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "policy: {} bytes (expected at most {MAX_POLICY_BYTES})",
                bytes.len()
            ),
        ));
    }
    let text = String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::bad_request("policy: not UTF-8 (expected TOML text)"))?;
    let (policy, warnings) = match checked(&name, &text) {
        Ok(checked) => checked,
        Err(e) => return Ok(refused(&e)),
    };
    let store = state.store.clone();
    let (author, key, hash) = (principal.name.clone(), name.clone(), policy.hash.clone());
    let language = policy.version;
    let put = blocking(move || {
        let agents: Vec<String> = store
            .assignments()?
            .into_iter()
            .filter(|(_, p)| *p == key)
            .map(|(agent, _)| agent)
            .collect();
        if let Some(refusal) = unreadable(&store, &agents, &key, language)? {
            return Ok(Err(refusal));
        }
        let condition = condition(&store, &key, wanted)?;
        store
            .put_policy(
                &key,
                NewVersion {
                    toml: &text,
                    hash: &hash,
                    author: &author,
                    at: now(),
                    note: None,
                },
                condition.as_deref(),
            )
            .map(Ok)
    })
    .await??;
    stored(
        &state,
        source,
        &principal.name,
        &name,
        put,
        asked,
        warnings,
        None,
    )
    .await
}

/// 409 when one of `agents` (assigned policy `name`) has said it reads only policy-language
/// versions older than `version`: it could not use the policy. Agents not heard from yet, or
/// from before central policies (which read version 1), are taken as able.
fn unreadable<K: Kv>(
    store: &crate::store::Store<K>,
    agents: &[String],
    name: &str,
    version: u32,
) -> Result<Option<ApiError>, crate::store::StoreError> {
    for agent in agents {
        let reads = store
            .agent(agent)?
            .map_or(POLICY_VERSION, |r| r.heartbeat.policy_language.unwrap_or(1));
        if !readable_by(version, reads) {
            return Ok(Some(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "agent {agent:?} reads policy-language versions up to {reads}; policy {name:?} is written in version {version} (expected an agent upgraded first, or a policy it reads)"
                ),
            )));
        }
    }
    Ok(None)
}

/// `text` as policy `name`, checked as `otwatch-agent check` checks a file, with its warnings
/// as lines.
fn checked(
    name: &str,
    text: &str,
) -> Result<(Policy, Vec<String>), otwatch_rules::policy::PolicyError> {
    let (policy, warnings) = Policy::parse(text, &format!("{name}.toml"))?;
    Ok((policy, warnings.iter().map(ToString::to_string).collect()))
}

/// 404 for a policy the collector does not keep.
fn not_found(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("policy {name:?} not found"))
}

/// A policy version as the reply: its TOML, `ETag` its hash.
fn toml_response(version: PolicyVersion) -> Response {
    let mut response = version.toml.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(TOML));
    h.insert(header::ETAG, etag(&version.hash));
    response
}

/// 400 for a policy the checker refuses: where and what, as fields and as one line.
fn refused(e: &otwatch_rules::policy::PolicyError) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({
            "error": e.to_string(),
            "line": e.line,
            "column": e.column,
            "field": e.field,
            "message": e.message,
        })),
    )
        .into_response()
}

/// The reply to a store of a version, audited when something changed; `asked` says whether
/// the request named a version (`If-Match`).
#[allow(clippy::too_many_arguments)]
async fn stored<K: Kv>(
    state: &Shared<K>,
    source: Option<IpAddr>,
    who: &str,
    name: &str,
    put: PolicyPut,
    asked: bool,
    warnings: Vec<String>,
    rollback_to: Option<u64>,
) -> Result<Response, ApiError> {
    let (status, version, changed) = match put {
        PolicyPut::Stored(v) if v.version == 1 => (StatusCode::CREATED, v, true),
        PolicyPut::Stored(v) => (StatusCode::OK, v, true),
        PolicyPut::Unchanged(v) => (StatusCode::OK, v, false),
        PolicyPut::Precondition { current: None } => {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                format!(
                    "If-Match: policy {name:?} does not exist (expected no If-Match to create it)"
                ),
            ));
        }
        PolicyPut::Precondition { current: Some(h) } if !asked => {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_REQUIRED,
                format!(
                    "If-Match: required to change policy {name:?} (expected \"{h}\", the ETag of the version in force)"
                ),
            ));
        }
        PolicyPut::Precondition { current: Some(h) } => {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                format!(
                    "If-Match: expected \"{h}\", the ETag of the version in force (GET the policy, then change that version)"
                ),
            ));
        }
    };
    if changed {
        let fields = detail([
            ("policy", json!(name)),
            ("version", json!(version.version)),
            ("hash", json!(version.hash)),
            ("restored", json!(rollback_to)),
        ]);
        audit::note_off_the_workers(
            state.audit.clone(),
            audit::Event {
                ts: now(),
                event: if rollback_to.is_some() {
                    "policy_rolled_back"
                } else {
                    "policy_stored"
                },
                who: Some(who.to_string()),
                source,
                detail: fields,
            },
        )
        .await;
    }
    let mut response = (
        status,
        axum::Json(json!({
            "policy": name,
            "version": version.version,
            "hash": version.hash,
            "changed": changed,
            "warnings": warnings,
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::ETAG, etag(&version.hash));
    Ok(response)
}

/// The query of a history: how many versions, newest first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    /// How many: for a history 1 to [`MAX_HISTORY`] (default 20), for assignments 1 to 1000
    /// (default 100).
    limit: Option<usize>,
}

/// Most versions one history reply holds (each up to 256 KiB of TOML).
const MAX_HISTORY: usize = 50;
/// Most time one diff may take: a diff of two large, wholly different texts is cut short
/// (what it found by then is shown), so no request holds a thread for long.
const DIFF_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);
/// Most bytes of diffs in one history reply; later versions get none, said so.
const MAX_DIFF_BYTES: usize = 4 << 20;

/// The `limit` asked for, `default` without one, refused outside 1 to `max`.
fn limit_of(
    query: Result<Query<HistoryQuery>, QueryRejection>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(format!(
            "limit: {limit} (expected 1 to {max})"
        )))
    }
}

/// `GET /api/v1/policies/{name}/history`.
pub(super) async fn history<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    named(&name)?;
    let limit = limit_of(query, 20, MAX_HISTORY)?;
    let store = state.store.clone();
    let key = name.clone();
    // Read and diffed off the async workers. One more than shown, for the diff of the oldest
    // shown.
    let out = blocking(move || {
        let mut versions = store.policy_history(&key, limit + 1)?;
        let before_oldest = (versions.len() > limit).then(|| versions.remove(limit));
        let mut budget = MAX_DIFF_BYTES;
        let out: Vec<serde_json::Value> = versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                // The version before is the next one kept (newest first).
                let before = versions.get(i + 1).or(before_oldest.as_ref());
                let diff = match before.map(|before| diff(before, v)) {
                    Some(d) if d.len() <= budget => {
                        budget -= d.len();
                        json!(d)
                    }
                    Some(_) => json!("(not shown: this reply's diffs reached their size limit; ask for fewer versions)"),
                    None => serde_json::Value::Null,
                };
                json!({
                    "version": v.version,
                    "hash": v.hash,
                    "author": v.author,
                    "at": v.at,
                    "note": v.note,
                    "diff": diff,
                })
            })
            .collect();
        Ok(out)
    })
    .await?;
    if out.is_empty() {
        return Err(not_found(&name));
    }
    Ok(axum::Json(out))
}

/// A unified diff from `before` to `after`, within [`DIFF_TIMEOUT`].
fn diff(before: &PolicyVersion, after: &PolicyVersion) -> String {
    unified_diff(
        &before.toml,
        &after.toml,
        &format!("version {}", before.version),
        &format!("version {}", after.version),
    )
}

/// A unified diff of two policy texts, labelled, within [`DIFF_TIMEOUT`] (a diff past it is
/// coarser, never late).
pub(super) fn unified_diff(before: &str, after: &str, from: &str, to: &str) -> String {
    similar::TextDiff::configure()
        .timeout(DIFF_TIMEOUT)
        .diff_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(from, to)
        .to_string()
}

/// The body of a rollback.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rollback {
    /// The version to restore: its hash (ETag) or its number.
    version: Target,
}

/// A version named by number or by text (its hash, or its number as text).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Target {
    Number(u64),
    Text(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// `POST /api/v1/policies/{name}/rollback`.
pub(super) async fn rollback<K: Kv>(
    State(state): State<Shared<K>>,
    Source(source): Source,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = authorize(&state, &headers, Action::Change)?;
    named(&name)?;
    let wanted = if_match(&headers)?;
    let request: Rollback =
        json_body_expecting(&state, body, Some(r#"{"version": "HASH or NUMBER"}"#)).await?;
    let store = state.store.clone();
    let (key, asked) = (name.clone(), request.version.clone());
    let (current, target) = blocking(move || {
        let current = store.policy_hash(&key)?;
        let target = match asked {
            Target::Number(n) => store.policy_version(&key, n)?,
            // A hash first (one of digits only is possible), then a number as text.
            Target::Text(t) => match store.policy_version_by_hash(&key, &t)? {
                Some(v) => Some(v),
                None => match t.parse::<u64>() {
                    Ok(n) => store.policy_version(&key, n)?,
                    Err(_) => None,
                },
            },
        };
        Ok((current, target))
    })
    .await?;
    let Some(current) = current else {
        return Err(not_found(&name));
    };
    let target = target.ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "version: {} is no kept version of policy {name:?} (expected a hash or a number from its history)",
                    request.version
                ),
            )
        })?;
    // Checked again: what was valid then must be valid for today's checker.
    let (policy, warnings) = match checked(&name, &target.toml) {
        Ok(checked) => checked,
        Err(e) => return Ok(refused(&e)),
    };
    let store = state.store.clone();
    let (author, key, text) = (principal.name.clone(), name.clone(), target.toml.clone());
    let note = format!("rollback to version {}", target.version);
    let restored = target.version;
    // Without If-Match, the rollback applies to the version in force when it was asked for.
    let put = blocking(move || {
        let condition = match wanted {
            Some(w) => condition(&store, &key, Some(w))?.unwrap_or_default(),
            None => current,
        };
        store.put_policy(
            &key,
            NewVersion {
                toml: &text,
                hash: &policy.hash,
                author: &author,
                at: now(),
                note: Some(&note),
            },
            Some(&condition),
        )
    })
    .await?;
    stored(
        &state,
        source,
        &principal.name,
        &name,
        put,
        true,
        warnings,
        Some(restored),
    )
    .await
}

/// `GET /api/v1/policies/{name}/assignments`: the newest `limit` (1-1000, 100) assignment
/// changes of the policy, newest first: which agent, given or taken away, by whom, when.
pub(super) async fn assignments<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    named(&name)?;
    let limit = limit_of(query, 100, 1000)?;
    let store = state.store.clone();
    let key = name.clone();
    let (exists, changes) = blocking(move || {
        Ok((
            store.policy_hash(&key)?.is_some(),
            store.assignment_changes(&key, limit)?,
        ))
    })
    .await?;
    if !exists {
        return Err(not_found(&name));
    }
    Ok(axum::Json(changes))
}

/// The body of an assignment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Assignment {
    /// The policy's name; `null` takes the assignment away.
    policy: Option<String>,
}

/// `PUT /api/v1/agents/{agent}/policy`.
pub(super) async fn assign<K: Kv>(
    State(state): State<Shared<K>>,
    Source(source): Source,
    headers: HeaderMap,
    Path(agent): Path<String>,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let principal = authorize(&state, &headers, Action::Change)?;
    let request: Assignment = json_body_expecting(
        &state,
        body,
        Some(r#"{"policy": "NAME"} or {"policy": null}"#),
    )
    .await?;
    if let Some(p) = &request.policy {
        named(p).map_err(|_| {
            ApiError::bad_request(format!(
                "policy: {p:?} (expected the name of a policy the collector keeps)"
            ))
        })?;
    }
    let store = state.store.clone();
    let (key, policy) = (agent.clone(), request.policy.clone());
    let author = principal.name.clone();
    blocking(move || {
        if let Some(name) = &policy
            && let Some(version) = store.policy(name)?
            && let Ok((parsed, _)) = Policy::parse(&version.toml, name)
            && let Some(refusal) =
                unreadable(&store, std::slice::from_ref(&key), name, parsed.version)?
        {
            return Ok(Err(refusal));
        }
        store
            .assign_policy(&key, policy.as_deref(), &author, now())
            .map(Ok)
    })
    .await??;
    audit::note_off_the_workers(
        state.audit.clone(),
        audit::Event {
            ts: now(),
            event: "policy_assigned",
            who: Some(principal.name.clone()),
            source,
            detail: detail([("agent", json!(agent)), ("policy", json!(request.policy))]),
        },
    )
    .await;
    Ok(axum::Json(
        json!({ "agent": agent, "policy": request.policy }),
    ))
}

/// `GET /api/v1/agents/{agent}/policy`.
pub(super) async fn assigned<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    Path(agent): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authorize(&state, &headers, Action::ReadPolicy)?;
    if principal.role == Role::Agent && principal.name != agent {
        state
            .metrics
            .refused
            .with_label_values(&["forbidden"])
            .inc();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "an agent may read only its own policy",
        ));
    }
    let store = state.store.clone();
    let key = agent.clone();
    let found = blocking(move || {
        let Some(name) = store.assigned_policy(&key)? else {
            return Ok(None);
        };
        Ok(store.policy(&name)?.map(|v| (name, v)))
    })
    .await?;
    let Some((name, version)) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no policy is assigned to agent {agent:?}"),
        ));
    };
    let mut response = toml_response(version);
    if let Ok(v) = HeaderValue::from_str(&name) {
        response.headers_mut().insert("x-otwatch-policy", v);
    }
    Ok(response)
}
