//! The aggregation endpoints behind the dashboard's charts, answered by the store's rollups
//! ([`crate::store::rollup`]), never by paging through alerts, and the vendored ATT&CK for ICS
//! matrix they name techniques from.
//!
//! - `GET /api/v1/stats/timeline?since&until&bucket=hour|day`: alerts by severity per bucket.
//! - `GET /api/v1/stats/top?by=rule|source|technique|severity&since&until&limit`: the values
//!   with the most alerts.
//! - `GET /api/v1/stats/techniques?since&until`: alerts per technique with ATT&CK's names,
//!   for the matrix.
//! - `GET /api/v1/attack`: the whole matrix, its version and MITRE's attribution.
//!
//! `since` and `until` are RFC 3339 times (default: the last 24 hours); ranges are widened to
//! whole hours (whole UTC days for a day timeline).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use otwatch_rules::time::Timestamp;
use serde::Serialize;

use super::{ApiError, Shared, authorize, blocking, now};
use crate::attack;
use crate::kv::Kv;
use crate::store::Action;
use crate::store::rollup::{Dimension, Ranked, Span};

/// The range a chart shows when the request names none.
const DEFAULT_RANGE: Duration = Duration::from_secs(24 * 3600);

/// Most values `top` returns.
const MAX_LIMIT: usize = 100;

/// Most techniques `techniques` returns, the most seen first: the whole matrix and room for a
/// policy's own ids; alerts of the rest are counted in `rest`.
const MAX_TECHNIQUES: usize = 200;

/// Every parameter of a stats request, parsed; `allowed` names those this endpoint takes.
struct Params {
    since: Timestamp,
    until: Timestamp,
    bucket: Span,
    by: Option<Dimension>,
    limit: usize,
}

fn params(query: &HashMap<String, String>, allowed: &[&str]) -> Result<Params, ApiError> {
    let mut since = None;
    let mut until = None;
    let mut p = Params {
        since: Timestamp::from_nanos(0),
        until: Timestamp::from_nanos(0),
        bucket: Span::Hour,
        by: None,
        limit: 10,
    };
    for (k, v) in query {
        let bad = |expected: &str| {
            ApiError::bad_request(format!("{k}: {v:?} is not valid (expected {expected})"))
        };
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "{k}: unknown parameter (expected {})",
                allowed.join(", ")
            )));
        }
        match k.as_str() {
            "since" => since = Some(v.parse().map_err(|_| bad("an RFC 3339 time"))?),
            "until" => until = Some(v.parse().map_err(|_| bad("an RFC 3339 time"))?),
            "bucket" => {
                p.bucket = match v.as_str() {
                    "hour" => Span::Hour,
                    "day" => Span::Day,
                    _ => return Err(bad("hour or day")),
                }
            }
            "by" => {
                p.by = Some(match v.as_str() {
                    "rule" => Dimension::Rule,
                    "source" => Dimension::Source,
                    "technique" => Dimension::Technique,
                    "severity" => Dimension::Severity,
                    _ => return Err(bad("rule, source, technique or severity")),
                })
            }
            "limit" => {
                p.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| bad(&format!("a number from 1 to {MAX_LIMIT}")))?
            }
            _ => {}
        }
    }
    p.until = until.unwrap_or_else(now);
    p.since = since.unwrap_or_else(|| p.until.saturating_sub(DEFAULT_RANGE));
    if p.since >= p.until {
        return Err(ApiError::bad_request(
            "since: must be before until".to_string(),
        ));
    }
    Ok(p)
}

/// Alerts by severity per hour or day.
pub(super) async fn timeline<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    let p = params(&query, &["since", "until", "bucket"])?;
    let store = state.store.clone();
    let buckets = blocking(move || store.timeline(p.bucket, p.since, p.until)).await?;
    let bucket = match p.bucket {
        Span::Hour => "hour",
        Span::Day => "day",
    };
    Ok(axum::Json(serde_json::json!({
        "since": p.since,
        "until": p.until,
        "bucket": bucket,
        "buckets": buckets,
    })))
}

/// The rules, sources, techniques or severities with the most alerts.
pub(super) async fn top<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    let p = params(&query, &["by", "since", "until", "limit"])?;
    let by = p.by.ok_or_else(|| {
        ApiError::bad_request("by: missing (expected rule, source, technique or severity)")
    })?;
    let store = state.store.clone();
    let top = blocking(move || store.top(by, p.since, p.until, p.limit)).await?;
    Ok(axum::Json(serde_json::json!({
        "since": p.since,
        "until": p.until,
        "top": top.top,
        "rest": top.rest,
        "uncounted": top.uncounted,
        "total": top.total,
    })))
}

/// One technique's count, named from the matrix.
#[derive(Debug, Serialize)]
struct TechniqueCount {
    id: String,
    /// `None` for an id ATT&CK for ICS does not have (a policy's own).
    name: Option<&'static str>,
    tactics: Vec<&'static str>,
    description: Option<&'static str>,
    count: u64,
}

impl TechniqueCount {
    fn of(r: Ranked) -> Self {
        let known = attack::technique(&r.value);
        Self {
            name: known.map(|t| t.name.as_str()),
            tactics: known
                .map(|t| t.tactics.iter().map(String::as_str).collect())
                .unwrap_or_default(),
            description: known.map(|t| t.description.as_str()),
            id: r.value,
            count: r.count,
        }
    }
}

/// Alerts per technique in the range, for the matrix: every technique seen, named.
pub(super) async fn techniques<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    let p = params(&query, &["since", "until"])?;
    let store = state.store.clone();
    let top =
        blocking(move || store.top(Dimension::Technique, p.since, p.until, MAX_TECHNIQUES)).await?;
    let m = attack::matrix();
    Ok(axum::Json(serde_json::json!({
        "since": p.since,
        "until": p.until,
        "attack_version": m.version,
        "attribution": m.attribution,
        "techniques": top.top.into_iter().map(TechniqueCount::of).collect::<Vec<_>>(),
        "rest": top.rest,
        "uncounted": top.uncounted,
    })))
}

/// The vendored ATT&CK for ICS matrix.
pub(super) async fn matrix<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        attack::MATRIX_JSON,
    ))
}
