//! The decode-event log: one JSON line per protocol anomaly (decode errors, non-Modbus traffic on
//! a Modbus port, stream gaps, conflicting overlaps, resynchronisation), with the offending
//! bytes as evidence.

use std::io::{self, Write};
use std::net::IpAddr;

use otwatch_rules::Direction;
use otwatch_rules::session::Event;
use otwatch_rules::time::Timestamp;
use serde::Serialize;

use crate::outputs::jsonl::JsonLines;
use otwatch_packet::pipeline::Observer;
use otwatch_rules::flow::{FlowEvent, FlowInfo};

/// Most evidence bytes kept per event.
const EVIDENCE: usize = 64;

/// One line of the decode-event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRecord {
    /// Capture time, RFC 3339.
    pub ts: Timestamp,
    /// The flow's id within this run.
    pub flow: u64,
    /// What happened: a decode error kind, or `gap`, `overlap_conflict`, `not_modbus`,
    /// `skipped`.
    pub event: &'static str,
    /// Human-readable detail.
    pub detail: String,
    /// The side that sent the bytes.
    pub direction: Direction,
    /// Sender address.
    pub src_ip: IpAddr,
    /// Sender port.
    pub src_port: u16,
    /// Receiver address.
    pub dst_ip: IpAddr,
    /// Receiver port.
    pub dst_port: u16,
    /// MBAP transaction id, when readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<u16>,
    /// Unit id, when readable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_id: Option<u8>,
    /// The offending bytes in hex, trimmed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub evidence: String,
}

impl EventRecord {
    /// The record of one anomaly, or `None` for events that are not anomalies.
    pub fn new(ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) -> Option<Self> {
        let (name, detail, direction, tid, unit, raw): (_, _, _, _, _, &[u8]) = match *event {
            FlowEvent::Session(&Event::DecodeError {
                direction,
                error,
                transaction_id,
                unit_id,
                raw,
            }) => (
                error.kind(),
                error.to_string(),
                direction,
                transaction_id,
                unit_id,
                raw,
            ),
            FlowEvent::Session(&Event::ResponseMismatch {
                error,
                transaction_id,
                unit_id,
            }) => (
                error.kind(),
                error.to_string(),
                Direction::ToClient,
                transaction_id,
                Some(unit_id),
                &[],
            ),
            FlowEvent::Session(&Event::NotModbus { direction, sample }) => (
                "not_modbus",
                "non-Modbus payload on a Modbus port".to_string(),
                direction,
                None,
                None,
                sample,
            ),
            FlowEvent::Session(&Event::Skipped { direction, bytes }) => (
                "skipped",
                format!("{bytes} bytes skipped to the next frame boundary"),
                direction,
                None,
                None,
                &[],
            ),
            FlowEvent::Gap { direction, bytes } => (
                "gap",
                format!("{bytes} stream bytes never captured"),
                direction,
                None,
                None,
                &[],
            ),
            FlowEvent::OverlapConflict { direction, bytes } => (
                "overlap_conflict",
                format!("{bytes} bytes retransmitted with different contents"),
                direction,
                None,
                None,
                &[],
            ),
            _ => return None,
        };
        let (src, dst) = match direction {
            Direction::ToServer => (flow.client, flow.server),
            Direction::ToClient => (flow.server, flow.client),
        };
        Some(Self {
            ts,
            flow: flow.id,
            event: name,
            detail,
            direction,
            src_ip: src.ip(),
            src_port: src.port(),
            dst_ip: dst.ip(),
            dst_port: dst.port(),
            transaction_id: tid,
            unit_id: unit,
            evidence: hex(raw.get(..raw.len().min(EVIDENCE)).unwrap_or_default()),
        })
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Writes every EventRecord as one JSON line.
pub struct EventLog<W: Write>(JsonLines<W>);

impl<W: Write> EventLog<W> {
    /// A log writing to `out`.
    pub fn new(out: W) -> Self {
        Self(JsonLines::new(out))
    }

    /// Flushes, returning the number of records or the first write error.
    pub fn finish(self) -> io::Result<u64> {
        self.0.finish()
    }
}

impl<W: Write> Observer for EventLog<W> {
    fn flow_event(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        if let Some(record) = EventRecord::new(ts, flow, event) {
            self.0.write(&record);
        }
    }
}
