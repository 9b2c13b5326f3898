//! Evidence packets: the pcaps agents send with their serious alerts, checked like any other
//! hostile input before they are kept, and `GET /api/v1/alerts/{id}/pcap`, which hands one to
//! an analyst as a file tshark and Wireshark open.
//!
//! A pcap is taken only when it decodes from base64, passes
//! [`otwatch_packet::evidence::validate`] (a classic pcap within the bounds, of a link type
//! agents capture, every record whole) and belongs to a high or critical alert of the sending
//! agent, stored before or in the same batch, and while the agent holds less than
//! [`crate::store::MAX_EVIDENCE_PER_AGENT`] bytes of evidence; otherwise the batch gets 422
//! naming the record (and nothing of it is stored), so the agent sets it aside.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use otwatch_packet::evidence;
use otwatch_rules::alert::Severity;
use otwatch_rules::wire::IngestBatch;

use super::{ApiError, Shared, authorize, blocking};
use crate::kv::Kv;
use crate::store::{Action, MAX_EVIDENCE_PER_AGENT, Store, StoreError};

/// One alert's evidence: its id and the pcap.
pub(super) type Evidence = (String, Vec<u8>);

/// The batch's evidence, decoded and checked, as (alert id, pcap) per record; or why the
/// first record refused is refused (for a 422 naming it). Each must decode from base64, pass
/// [`evidence::validate`], and belong to a high or critical alert of the batch's agent, in the
/// batch or stored before. Runs off the async workers (decoding is work an agent chooses).
pub(super) fn checked<K: Kv>(
    store: &Store<K>,
    batch: &IngestBatch,
) -> Result<Result<Vec<Evidence>, String>, StoreError> {
    let mut out = Vec::with_capacity(batch.evidence.len());
    let mut held = if batch.evidence.is_empty() {
        0
    } else {
        store.evidence_bytes(&batch.agent)?
    };
    for (i, e) in batch.evidence.iter().enumerate() {
        let severity = match batch.alerts.iter().find(|a| a.id == e.alert) {
            Some(a) => Some(a.severity),
            None => store
                .alert(&e.alert)?
                .filter(|a| a.agent == batch.agent)
                .map(|a| a.severity),
        };
        match severity {
            Some(s) if s >= Severity::High => {}
            Some(s) => {
                return Ok(Err(format!(
                    "evidence[{i}].alert: {:?} is a {} alert (evidence is taken for high and critical alerts)",
                    e.alert,
                    s.name()
                )));
            }
            None => {
                return Ok(Err(format!(
                    "evidence[{i}].alert: {:?} is no alert of agent {:?} (expected one it sent before or in this batch)",
                    e.alert, batch.agent
                )));
            }
        }
        let pcap = match base64::engine::general_purpose::STANDARD.decode(&e.pcap) {
            Ok(pcap) => pcap,
            Err(err) => return Ok(Err(format!("evidence[{i}].pcap: not base64 ({err})"))),
        };
        if let Err(err) = evidence::validate(&pcap) {
            return Ok(Err(format!("evidence[{i}].pcap: {err}")));
        }
        held = held.saturating_add(pcap.len() as u64);
        if held > MAX_EVIDENCE_PER_AGENT {
            return Ok(Err(format!(
                "evidence[{i}].pcap: agent {:?} would hold {held} bytes of evidence (at most {MAX_EVIDENCE_PER_AGENT}; retention frees them with their alerts)",
                batch.agent
            )));
        }
        out.push((e.alert.clone(), pcap));
    }
    Ok(Ok(out))
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
            "no packets were kept for this alert (an agent may send them for its high and critical alerts)",
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
