//! `GET /api/v1/audit?limit=N`: the newest audit events (logins, admin actions, credential
//! changes), newest first, for admins: the same from every replica when the store is shared.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

use super::{ApiError, Shared, authorize};
use crate::audit::MAX_READ;
use crate::kv::Kv;
use crate::store::Action;

/// Events returned when no `limit` is given.
const DEFAULT_LIMIT: usize = 100;

/// `GET /api/v1/audit`.
pub(super) async fn audit<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Change)?;
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_READ).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "limit: {v:?} is not a number of events (expected 1 to {MAX_READ})"
                ))
            })?,
    };
    if let Some(unknown) = params.keys().find(|k| k.as_str() != "limit") {
        return Err(ApiError::bad_request(format!(
            "{unknown}: unknown parameter (expected limit)"
        )));
    }
    let log = state.audit.clone();
    let events = tokio::task::spawn_blocking(move || log.newest(limit))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("audit log unreadable: {e}"),
            )
        })?;
    Ok(axum::Json(json!({ "events": events })))
}
