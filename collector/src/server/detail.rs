//! The investigation pages' endpoints: one incident with its alerts and ATT&CK names, one
//! host with its inventory record, risk, incidents, latest alerts, and the conversations it
//! is part of (the registers its masters read and write, what it polls).
//!
//! - `GET /api/v1/incidents/{id}?cursor&limit`
//! - `GET /api/v1/assets/{ip}`

use std::collections::HashMap;
use std::net::IpAddr;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use otwatch_rules::modbus::FunctionCode;
use serde::Serialize;

use super::{ApiError, Shared, authorize, blocking};
use crate::attack;
use crate::kv::Kv;
use crate::posture;
use crate::store::conversation::ConversationRecord;
use crate::store::{Action, AlertFilter, StoreError};

/// Alerts an incident page shows at once, unless `limit` says otherwise.
const INCIDENT_ALERTS: usize = 200;
/// Latest alerts an asset page shows.
const ASSET_ALERTS: usize = 50;
/// Incidents read to find a host's (the same bound as the posture's).
const INCIDENTS_READ: usize = 10_000;
/// Conversations read to find a host's (all the store keeps).
const CONVERSATIONS_READ: usize = crate::store::conversation::MAX_CONVERSATIONS as usize;

/// A technique with its ATT&CK for ICS names.
#[derive(Debug, Serialize)]
struct NamedTechnique {
    id: String,
    /// `None` for an id ATT&CK for ICS does not have.
    name: Option<&'static str>,
    description: Option<&'static str>,
    tactics: Vec<NamedTactic>,
}

#[derive(Debug, Serialize)]
struct NamedTactic {
    id: &'static str,
    name: &'static str,
}

fn named(id: &str) -> NamedTechnique {
    let known = attack::technique(id);
    NamedTechnique {
        id: id.to_string(),
        name: known.map(|t| t.name.as_str()),
        description: known.map(|t| t.description.as_str()),
        tactics: known
            .map(|t| {
                t.tactics
                    .iter()
                    .filter_map(|tactic| {
                        Some(NamedTactic {
                            id: tactic.as_str(),
                            name: attack::tactic_name(tactic)?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// One incident, its techniques named, and a page of its alerts.
pub(super) async fn incident<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    let id: u64 = id.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "id: {id:?} is not valid (expected an incident number)"
        ))
    })?;
    let mut cursor = None;
    let mut limit = INCIDENT_ALERTS;
    for (k, v) in &params {
        match k.as_str() {
            "cursor" => cursor = Some(v.clone()),
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "limit: {v:?} is not valid (expected a number from 1 to 1000)"
                        ))
                    })?
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "{k}: unknown parameter (expected cursor, limit)"
                )));
            }
        }
    }
    let store = state.store.clone();
    let found = blocking(move || {
        let Some(incident) = store.incident(id)? else {
            return Ok(None);
        };
        let page = store.incident_alerts(&incident, cursor.as_deref(), limit)?;
        let mut packets = Vec::new();
        for a in &page.alerts {
            if store.has_evidence(&a.id)? {
                packets.push(a.id.clone());
            }
        }
        Ok(Some((incident, page, packets)))
    })
    .await?;
    let Some((incident, page, packets)) = found else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "incident not found"));
    };
    let techniques: Vec<NamedTechnique> = incident.technique.iter().map(|t| named(t)).collect();
    Ok(axum::Json(serde_json::json!({
        "incident": incident,
        "techniques": techniques,
        "alerts": page.alerts,
        "next": page.next,
        "packets": packets,
    })))
}

/// One host: what the agents report about it, its risk and why, its incidents and its latest
/// alerts. A host seen only in alerts has a page too.
pub(super) async fn asset<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    Path(ip): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    let ip: IpAddr = ip.parse().map_err(|_| {
        ApiError::bad_request(format!("ip: {ip:?} is not valid (expected an IP address)"))
    })?;
    let store = state.store.clone();
    let (record, incidents, alerts, conversations) = blocking(move || {
        let record = store.asset(ip)?;
        let incidents: Vec<_> = store
            .incidents(None, INCIDENTS_READ)?
            .into_iter()
            .filter(|i| i.src_ip == ip || i.dst_ip == ip)
            .collect();
        let filter = AlertFilter {
            asset: Some(ip),
            ..AlertFilter::default()
        };
        let alerts = store.query_alerts(&filter, None, ASSET_ALERTS)?;
        let conversations: Vec<_> = store
            .conversations(CONVERSATIONS_READ)?
            .into_iter()
            .filter(|c| c.master == ip || c.slave == ip)
            .collect();
        Ok::<_, StoreError>((record, incidents, alerts, conversations))
    })
    .await?;
    if record.is_none()
        && incidents.is_empty()
        && alerts.alerts.is_empty()
        && conversations.is_empty()
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no agent reported this host and no alert names it",
        ));
    }
    // The posture's own scoring, on this host's incidents and record alone.
    let risk = posture::posture(&[], &incidents, record.as_slice())
        .assets
        .into_iter()
        .find(|r| r.ip == ip);
    let functions: Vec<serde_json::Value> = record
        .iter()
        .flat_map(|r| r.asset.functions.iter())
        .map(|&code| {
            let name = FunctionCode::new(code).map(FunctionCode::name).ok();
            serde_json::json!({ "code": code, "name": name })
        })
        .collect();
    // What its masters read and wrote of it, and what it read and wrote of its slaves.
    let summary = |c: &ConversationRecord| {
        serde_json::json!({ "master": c.master, "slave": c.slave, "rate": c.rate,
            "functions": c.functions, "units": c.units, "reads": c.reads, "writes": c.writes,
            "last_seen": c.last_seen })
    };
    let served: Vec<_> = conversations
        .iter()
        .filter(|c| c.slave == ip)
        .map(summary)
        .collect();
    let polled: Vec<_> = conversations
        .iter()
        .filter(|c| c.master == ip)
        .map(summary)
        .collect();
    Ok(axum::Json(serde_json::json!({
        "ip": ip,
        "record": record,
        "as_slave": served,
        "as_master": polled,
        "functions": functions,
        "risk": risk,
        "incidents": incidents,
        "alerts": alerts.alerts,
        "more_alerts": alerts.next.is_some(),
    })))
}
