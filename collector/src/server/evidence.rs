//! Evidence packets: the pcaps agents send with their serious alerts, checked like any other
//! hostile input before they are kept, and `GET /api/v1/alerts/{id}/pcap`, which hands one to
//! an analyst as a file tshark and Wireshark open.
//!
//! A pcap is taken only when it decodes from base64, passes
//! [`otwatch_packet::evidence::validate`] (a classic pcap within the bounds, of a link type
//! agents capture, every record whole) and belongs to an alert of the sending agent, stored
//! before or in the same batch; otherwise the batch gets 422 naming the record, so the agent
//! sets it aside.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use otwatch_packet::evidence;
use otwatch_rules::wire::IngestBatch;

use super::{ApiError, Shared, authorize, blocking};
use crate::kv::Kv;
use crate::store::{Action, Store, StoreError};

/// The batch's evidence, decoded and checked: (alert id, pcap) per record, or a 422 naming
/// the first record refused.
pub(super) fn decoded(batch: &IngestBatch) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    let refuse = |i: usize, field: &str, why: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("evidence[{i}].{field}: {why}"),
        )
    };
    batch
        .evidence
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let pcap = base64::engine::general_purpose::STANDARD
                .decode(&e.pcap)
                .map_err(|err| refuse(i, "pcap", format!("not base64 ({err})")))?;
            evidence::validate(&pcap).map_err(|err| refuse(i, "pcap", err.to_string()))?;
            Ok((e.alert.clone(), pcap))
        })
        .collect()
}

/// Keeps a batch's evidence once its alerts are stored: each for an alert of the batch's
/// agent (`Err` names the first that is not, for a 422).
pub(super) fn keep<K: Kv>(
    store: &Store<K>,
    agent: &str,
    records: Vec<(String, Vec<u8>)>,
) -> Result<Result<(), String>, StoreError> {
    for (i, (id, _)) in records.iter().enumerate() {
        match store.alert(id)? {
            Some(a) if a.agent == agent => {}
            _ => {
                return Ok(Err(format!(
                    "evidence[{i}].alert: {id:?} is no alert of agent {agent:?} (expected one it sent before or in this batch)"
                )));
            }
        }
    }
    store.put_evidence(&records)?;
    Ok(Ok(()))
}

/// `GET /api/v1/alerts/{id}/pcap`.
pub(super) async fn pcap<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    let store = state.store.clone();
    let wanted = id.clone();
    let (alert, pcap) = blocking(move || {
        let Some(alert) = store.alert(&wanted)? else {
            return Ok((None, None));
        };
        let pcap = store.evidence(&wanted)?;
        Ok((Some(alert), pcap))
    })
    .await?;
    let Some(alert) = alert else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "alert not found"));
    };
    let Some(pcap) = pcap else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no packets were kept for this alert (agents send them for alerts of severity high and critical, when their buffer still held the flow)",
        ));
    };
    // The rule id keeps to letters, digits, `.`, `_` and `-` in the file name.
    let rule: String = alert
        .rule
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let mut response = pcap.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.tcpdump.pcap"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"otwatch-{rule}-{}.pcap\"",
        alert.id
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
