//! Joining each request with its response: by transaction id and unit on MBAP, by unit and
//! order on RTU.
//!
//! Invariants:
//! - Every request decoded ends in exactly one [`Transaction`]: answered, or unanswered when it
//!   times out, is displaced, or the connection closes.
//! - Every response decoded ends in exactly one [`Transaction`]: answered, or unsolicited when no
//!   request matches (a spoofing or desynchronisation sign).
//! - At most [`TrackerConfig::max_pending`] requests wait per connection; the oldest is given up
//!   as unanswered to make room, so a request flood cannot grow memory.

use smallvec::SmallVec;
use std::collections::VecDeque;
use std::time::Duration;

use crate::modbus::{DecodeError, Request, Response};
use crate::time::Timestamp;

/// Limits for matching requests with responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerConfig {
    /// How long a request waits for its response before it is reported unanswered.
    pub timeout: Duration,
    /// How many requests may wait per connection.
    pub max_pending: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_pending: 1024,
        }
    }
}

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Request and response matched.
    Answered,
    /// The request got no response in time.
    Unanswered,
    /// A response matched no request.
    Unsolicited,
}

/// A request joined with its response, or either side alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transaction<'a> {
    /// How it ended.
    pub outcome: Outcome,
    /// The MBAP transaction id (none on RTU).
    pub transaction_id: Option<u16>,
    /// The unit addressed.
    pub unit_id: u8,
    /// When the request was captured.
    pub request_ts: Option<Timestamp>,
    /// When the response was captured.
    pub response_ts: Option<Timestamp>,
    /// The decoded request.
    pub request: Option<Request<'a>>,
    /// The request's PDU as captured (empty for an unsolicited response): the evidence of a
    /// request left unanswered.
    pub request_pdu: &'a [u8],
    /// The decoded response.
    pub response: Option<Response<'a>>,
}

impl Transaction<'_> {
    /// Time from request to response, for answered transactions.
    pub fn latency(&self) -> Option<Duration> {
        Some(self.response_ts?.since(self.request_ts?))
    }
}

/// What the tracker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackerEvent<'a> {
    /// A transaction ended.
    Transaction(Transaction<'a>),
    /// A response disagrees with its request (wrong function, count or echo).
    Mismatch {
        /// What disagrees.
        error: DecodeError,
        /// The transaction id.
        transaction_id: Option<u16>,
        /// The unit.
        unit_id: u8,
    },
}

/// A request waiting for its response; keeps its PDU bytes, which decode again unchanged, and
/// the decoded request itself where it borrows nothing (most requests: decoding them again
/// when their answer comes would be wasted work).
#[derive(Debug, Clone)]
struct Pending {
    ts: Timestamp,
    transaction_id: Option<u16>,
    unit_id: u8,
    pdu: SmallVec<[u8; 16]>,
    request: Option<Request<'static>>,
}

impl Pending {
    fn transaction(&self, outcome: Outcome) -> Transaction<'_> {
        Transaction {
            outcome,
            transaction_id: self.transaction_id,
            unit_id: self.unit_id,
            request_ts: Some(self.ts),
            response_ts: None,
            request: self
                .request
                .or_else(|| Request::decode_prefix(&self.pdu).ok().map(|(r, _)| r)),
            request_pdu: &self.pdu,
            response: None,
        }
    }
}

/// Request/response matching state for one connection.
#[derive(Debug, Clone, Default)]
pub struct TransactionTracker {
    config: TrackerConfig,
    /// Waiting requests, oldest first.
    pending: VecDeque<Pending>,
}

impl TransactionTracker {
    /// An empty tracker.
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            pending: VecDeque::new(),
        }
    }

    /// Requests waiting for a response.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Records a request: its PDU and, when it decoded, the request `pdu` decodes to.
    pub fn request(
        &mut self,
        ts: Timestamp,
        transaction_id: Option<u16>,
        unit_id: u8,
        pdu: &[u8],
        decoded: Option<&Request<'_>>,
        out: &mut impl FnMut(TrackerEvent<'_>),
    ) {
        if transaction_id.is_some()
            && let Some(i) = self.position(transaction_id, unit_id)
            && let Some(old) = self.pending.remove(i)
        {
            // The id was reused before an answer came: the earlier request went unanswered.
            out(TrackerEvent::Transaction(
                old.transaction(Outcome::Unanswered),
            ));
        }
        if self.pending.len() >= self.config.max_pending.max(1)
            && let Some(oldest) = self.pending.pop_front()
        {
            out(TrackerEvent::Transaction(
                oldest.transaction(Outcome::Unanswered),
            ));
        }
        self.pending.push_back(Pending {
            ts,
            transaction_id,
            unit_id,
            pdu: SmallVec::from_slice(pdu),
            request: decoded.and_then(Request::detached),
        });
    }

    /// Matches a response with its request. `response` is `None` when the response frame did
    /// not decode (it still answers its request).
    pub fn response(
        &mut self,
        ts: Timestamp,
        transaction_id: Option<u16>,
        unit_id: u8,
        response: Option<Response<'_>>,
        out: &mut impl FnMut(TrackerEvent<'_>),
    ) {
        let Some(pending) = self
            .position(transaction_id, unit_id)
            .and_then(|i| self.pending.remove(i))
        else {
            out(TrackerEvent::Transaction(Transaction {
                outcome: Outcome::Unsolicited,
                transaction_id,
                unit_id,
                request_ts: None,
                response_ts: Some(ts),
                request: None,
                request_pdu: &[],
                response,
            }));
            return;
        };
        let mut transaction = pending.transaction(Outcome::Answered);
        transaction.response_ts = Some(ts);
        transaction.response = match (transaction.request, response) {
            (Some(Request::Read { quantity, .. }), Some(Response::ReadBits { table, values })) => {
                Some(Response::ReadBits {
                    table,
                    values: values.with_count(usize::from(quantity)),
                })
            }
            _ => response,
        };
        if let (Some(request), Some(response)) = (transaction.request, response)
            && let Err(error) = check_response(&request, &response)
        {
            out(TrackerEvent::Mismatch {
                error,
                transaction_id,
                unit_id,
            });
        }
        out(TrackerEvent::Transaction(transaction));
    }

    /// Reports requests older than the timeout as unanswered.
    pub fn expire(&mut self, now: Timestamp, out: &mut impl FnMut(TrackerEvent<'_>)) {
        let deadline = now.saturating_sub(self.config.timeout);
        while let Some(front) = self.pending.front()
            && front.ts < deadline
        {
            if let Some(old) = self.pending.pop_front() {
                out(TrackerEvent::Transaction(
                    old.transaction(Outcome::Unanswered),
                ));
            }
        }
    }

    /// The connection ended: every waiting request is unanswered.
    pub fn close(&mut self, out: &mut impl FnMut(TrackerEvent<'_>)) {
        while let Some(old) = self.pending.pop_front() {
            out(TrackerEvent::Transaction(
                old.transaction(Outcome::Unanswered),
            ));
        }
    }

    fn position(&self, transaction_id: Option<u16>, unit_id: u8) -> Option<usize> {
        self.pending
            .iter()
            .position(|p| p.transaction_id == transaction_id && p.unit_id == unit_id)
    }
}

/// Checks that a response answers its request: same function, counts that fit the quantity
/// asked, and write echoes that repeat what was written.
pub fn check_response(request: &Request<'_>, response: &Response<'_>) -> Result<(), DecodeError> {
    let (asked, answered) = (request.function(), response.function());
    if asked != answered {
        return Err(DecodeError::FunctionMismatch {
            request: asked.code(),
            response: answered.code(),
        });
    }
    match (*request, *response) {
        (Request::Read { quantity, .. }, Response::ReadBits { values, .. }) => {
            let expected = usize::from(quantity).div_ceil(8);
            let declared = values.as_bytes().len();
            (declared == expected)
                .then_some(())
                .ok_or(DecodeError::ByteCountMismatch { declared, expected })
        }
        (
            Request::Read { quantity, .. }
            | Request::ReadWriteMultipleRegisters {
                read_quantity: quantity,
                ..
            },
            Response::ReadRegisters { values, .. },
        ) => {
            let expected = usize::from(quantity) * 2;
            let declared = values.as_bytes().len();
            (declared == expected)
                .then_some(())
                .ok_or(DecodeError::ByteCountMismatch { declared, expected })
        }
        (
            Request::WriteSingleCoil { address, value },
            Response::WriteSingleCoil {
                address: a,
                value: v,
            },
        ) => echo(address == a && value == v),
        (
            Request::WriteSingleRegister { address, value },
            Response::WriteSingleRegister {
                address: a,
                value: v,
            },
        ) => echo(address == a && value == v),
        (
            Request::WriteMultipleCoils { address, values },
            Response::WriteMultipleCoils {
                address: a,
                quantity,
            },
        ) => echo(address == a && values.len() == usize::from(quantity)),
        (
            Request::WriteMultipleRegisters { address, values },
            Response::WriteMultipleRegisters {
                address: a,
                quantity,
            },
        ) => echo(address == a && values.len() == usize::from(quantity)),
        _ => Ok(()),
    }
}

fn echo(matches: bool) -> Result<(), DecodeError> {
    matches.then_some(()).ok_or(DecodeError::EchoMismatch)
}

#[cfg(test)]
mod tests;
