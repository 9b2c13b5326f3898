//! `GET /api/v1/alerts/export`: every alert of a filter (the same parameters as
//! `/api/v1/alerts`, without `cursor` and `limit`) as a download, newest first: CSV for a
//! spreadsheet (`format=csv`, the default) or JSON lines (`format=jsonl`).
//!
//! The export streams page by page (each read off the async workers), so a large one holds one
//! page in memory, and stops when the client goes away; at most [`MAX_EXPORTS`] run at once
//! (429 beyond). It holds at most [`MAX_EXPORT`] alerts (the response says so in
//! `X-Otwatch-Export-Limit`): narrow the filter for more.
//!
//! Alert fields come from agents and are hostile: a CSV cell that a spreadsheet would run as
//! a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage return) is prefixed with
//! `'` ([`neutralise`]), and the CSV writer quotes what needs quoting.

use std::collections::HashMap;
use std::io;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use otwatch_rules::alert::Alert;
use tokio_stream::wrappers::ReceiverStream;

use super::{ApiError, Shared, authorize, filter_of, now};
use crate::kv::Kv;
use crate::store::Action;

/// Most alerts one export holds.
pub const MAX_EXPORT: usize = 1_000_000;

/// Most exports running at once: each holds a connection and reads the store page by page
/// for as long as its client takes to read; more are refused with 429.
pub const MAX_EXPORTS: usize = 4;

/// Alerts read and sent per page.
const PAGE: usize = 1000;

/// The columns of a CSV export, in order.
const COLUMNS: [&str; 21] = [
    "id",
    "ts",
    "first_ts",
    "agent",
    "severity",
    "rule",
    "title",
    "technique",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "unit_id",
    "function_code",
    "function",
    "address",
    "quantity",
    "values",
    "exception",
    "count",
    "message",
];

/// What an export is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    JsonLines,
}

/// A cell a spreadsheet shows as text: one that starts with a character that would make it
/// a formula (or, for tab and carriage return, hide where one starts) gets a leading `'`.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// An alert as a CSV record, [`COLUMNS`] in order.
fn record(a: &Alert) -> Vec<String> {
    let opt = |v: Option<String>| v.unwrap_or_default();
    vec![
        a.id.clone(),
        a.ts.to_string(),
        a.first_ts.to_string(),
        a.agent.clone(),
        a.severity.name().to_string(),
        a.rule.clone(),
        a.title.clone(),
        a.technique.join(";"),
        a.src_ip.to_string(),
        a.src_port.to_string(),
        a.dst_ip.to_string(),
        a.dst_port.to_string(),
        opt(a.unit_id.map(|u| u.to_string())),
        opt(a.function_code.map(|f| f.to_string())),
        opt(a.function.clone()),
        opt(a.address.map(|x| x.to_string())),
        opt(a.quantity.map(|q| q.to_string())),
        opt(a
            .values
            .as_ref()
            .map(|v| v.iter().map(u16::to_string).collect::<Vec<_>>().join(" "))),
        opt(a.exception.clone()),
        a.count.to_string(),
        opt(a.message.clone()),
    ]
}

/// One page of alerts in `format` (with the header line first, for the first page of a CSV).
fn encode(format: Format, alerts: &[Alert], header: bool) -> io::Result<Vec<u8>> {
    match format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            if header {
                w.write_record(COLUMNS)?;
            }
            for a in alerts {
                w.write_record(record(a).iter().map(|c| neutralise(c).into_owned()))?;
            }
            w.into_inner().map_err(|e| io::Error::other(e.to_string()))
        }
        Format::JsonLines => {
            let mut out = Vec::new();
            for a in alerts {
                serde_json::to_writer(&mut out, a)?;
                out.push(b'\n');
            }
            Ok(out)
        }
    }
}

/// The export route.
pub(super) async fn export<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    Query(mut params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    let format = match params.remove("format").as_deref() {
        None | Some("csv") => Format::Csv,
        Some("jsonl") => Format::JsonLines,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format: {other:?} is not valid (expected csv or jsonl)"
            )));
        }
    };
    for taken in ["cursor", "limit"] {
        if params.contains_key(taken) {
            return Err(ApiError::bad_request(format!(
                "{taken}: not taken by an export (it holds every alert of the filter, up to {MAX_EXPORT})"
            )));
        }
    }
    let (filter, _, _) = filter_of(&params)?;
    let permit = state.exports.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_EXPORTS} exports are running (at most {MAX_EXPORTS} at once): try again when one ends"),
        )
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(2);
    let store = state.store.clone();
    tokio::spawn(async move {
        // Held until the export ends, however it ends.
        let _permit = permit;
        let mut cursor: Option<String> = None;
        let mut sent = 0usize;
        loop {
            let want = PAGE.min(MAX_EXPORT - sent);
            let (store, filter, at) = (store.clone(), filter.clone(), cursor.clone());
            // One page off the async workers; waiting for a slow client holds no thread.
            let page = tokio::task::spawn_blocking(move || {
                let page = store
                    .query_alerts(&filter, at.as_deref(), want)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                let bytes = encode(format, &page.alerts, at.is_none())?;
                Ok::<_, io::Error>((bytes, page.alerts.len(), page.next))
            })
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
            let chunk = page.map(|(bytes, n, next)| {
                sent += n;
                cursor = next;
                Bytes::from(bytes)
            });
            let failed = chunk.is_err();
            // A client that went away ends the export.
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
            if cursor.is_none() || sent >= MAX_EXPORT {
                return;
            }
        }
    });
    let (kind, extension) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::JsonLines => ("application/x-ndjson", "jsonl"),
    };
    let stamp = now().to_string().replace([':', '-'], "");
    let stamp = stamp.split('.').next().unwrap_or_default();
    let disposition = format!("attachment; filename=\"otwatch-alerts-{stamp}Z.{extension}\"");
    let mut response = Body::from_stream(ReceiverStream::new(rx)).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert("x-otwatch-export-limit", HeaderValue::from(MAX_EXPORT));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::neutralise;

    #[test]
    fn cells_a_spreadsheet_would_run_are_neutralised_and_others_kept() {
        for (cell, shown) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+1+1", "'+1+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("write to register 40001", "write to register 40001"),
            ("10.0.0.1", "10.0.0.1"),
            ("", ""),
        ] {
            assert_eq!(neutralise(cell), shown, "{cell:?}");
        }
    }
}
