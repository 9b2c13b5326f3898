//! Counting what a run decoded, for the replay summary (human and JSON) and the metrics.

use std::collections::BTreeMap;

use otwatch_rules::framing::Encapsulation;
use otwatch_rules::modbus::{DecodeError, FunctionCode, Response};
use otwatch_rules::session::Event;
use otwatch_rules::time::Timestamp;
use otwatch_rules::transaction::Outcome;
use serde::Serialize;

use crate::pipeline::Observer;
use otwatch_rules::flow::{FlowEvent, FlowInfo};

/// Per function code counters, indexed by code (exception bit cleared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByFunction([u64; 128]);

impl Default for ByFunction {
    fn default() -> Self {
        Self([0; 128])
    }
}

impl ByFunction {
    /// Counts one more of `function`.
    pub fn add(&mut self, function: FunctionCode) {
        if let Some(n) = self.0.get_mut(usize::from(function.code())) {
            *n += 1;
        }
    }

    /// Adds another set of counts (another worker's).
    pub fn merge(&mut self, other: &ByFunction) {
        for (code, n) in other.nonzero() {
            if let Some(slot) = self.0.get_mut(usize::from(code)) {
                *slot += n;
            }
        }
    }

    /// The count for one code.
    pub fn get(&self, code: u8) -> u64 {
        self.0.get(usize::from(code)).copied().unwrap_or(0)
    }

    /// The sum over all codes.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Non-zero counts by code.
    pub fn nonzero(&self) -> impl Iterator<Item = (u8, u64)> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(code, n)| (code as u8, *n))
    }
}

impl Serialize for ByFunction {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.nonzero().map(|(code, n)| (code.to_string(), n)))
    }
}

/// Everything the replay summary reports about Modbus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ModbusCounters {
    /// Flows recognised as Modbus/TCP or Modbus/UDP (MBAP).
    pub mbap_flows: u64,
    /// Flows recognised as Modbus RTU over TCP/UDP.
    pub rtu_flows: u64,
    /// Flows on a Modbus port that carried something else.
    pub non_modbus_flows: u64,
    /// Requests decoded, by function code.
    pub requests: ByFunction,
    /// Responses decoded (exceptions included), by function code.
    pub responses: ByFunction,
    /// Exception responses by function and code, serialized as `"function/code"`.
    #[serde(serialize_with = "exception_keys")]
    pub exceptions: BTreeMap<(u8, u8), u64>,
    /// Transactions by outcome.
    pub transactions: OutcomeCounts,
    /// Answered transactions by function code.
    pub answered: ByFunction,
    /// Decode errors by kind.
    pub decode_errors: BTreeMap<&'static str, u64>,
    /// Stream bytes never captured: gap count and bytes.
    pub gaps: u64,
    /// Bytes in gaps.
    pub gap_bytes: u64,
    /// Retransmitted segments dropped as duplicates.
    pub retransmissions: u64,
    /// Overlapping segments with conflicting contents.
    pub overlap_conflicts: u64,
    /// Bytes skipped while resynchronising on frame boundaries.
    pub skipped_bytes: u64,
    /// Sum of response latencies of answered transactions, in microseconds.
    pub latency_us_total: u64,
}

impl Observer for ModbusCounters {
    #[inline]
    fn flow_event(&mut self, _ts: Timestamp, _flow: &FlowInfo, event: &FlowEvent<'_>) {
        match event {
            FlowEvent::Session(e) => self.session_event(e),
            FlowEvent::Gap { bytes, .. } => {
                self.gaps += 1;
                self.gap_bytes += bytes;
            }
            FlowEvent::Retransmission { .. } => self.retransmissions += 1,
            FlowEvent::OverlapConflict { .. } => self.overlap_conflicts += 1,
            FlowEvent::Opened
            | FlowEvent::Accepted
            | FlowEvent::Reset { .. }
            | FlowEvent::Closed(_) => {}
        }
    }
}

impl ModbusCounters {
    fn session_event(&mut self, event: &Event<'_>) {
        match event {
            Event::Recognised { encapsulation, .. } => match encapsulation {
                Encapsulation::Mbap => self.mbap_flows += 1,
                Encapsulation::Rtu => self.rtu_flows += 1,
            },
            Event::NotModbus { .. } => self.non_modbus_flows += 1,
            Event::Request { request, .. } => self.requests.add(request.function()),
            Event::Transaction(t) => {
                self.transactions.add(t.outcome);
                if let Some(response) = &t.response {
                    self.responses.add(response.function());
                    if let Response::Exception { function, code } = response {
                        *self
                            .exceptions
                            .entry((function.code(), code.code()))
                            .or_default() += 1;
                    }
                }
                if t.outcome == Outcome::Answered
                    && let Some(request) = &t.request
                {
                    self.answered.add(request.function());
                    if let Some(latency) = t.latency() {
                        self.latency_us_total += u64::try_from(latency.as_micros()).unwrap_or(0);
                    }
                }
            }
            Event::DecodeError { error, .. } | Event::ResponseMismatch { error, .. } => {
                self.decode_error(error)
            }
            Event::Skipped { bytes, .. } => self.skipped_bytes += *bytes as u64,
        }
    }

    fn decode_error(&mut self, error: &DecodeError) {
        *self.decode_errors.entry(error.kind()).or_default() += 1;
    }

    /// Decode errors in all.
    pub fn decode_error_total(&self) -> u64 {
        self.decode_errors.values().sum()
    }
}

/// Transactions counted by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    /// Request and response matched.
    pub answered: u64,
    /// Requests that got no response.
    pub unanswered: u64,
    /// Responses that matched no request.
    pub unsolicited: u64,
}

impl OutcomeCounts {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Answered => self.answered += 1,
            Outcome::Unanswered => self.unanswered += 1,
            Outcome::Unsolicited => self.unsolicited += 1,
        }
    }
}

fn exception_keys<S: serde::Serializer>(
    map: &BTreeMap<(u8, u8), u64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(map.iter().map(|((f, c), n)| (format!("{f}/{c}"), n)))
}
