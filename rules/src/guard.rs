//! One client connection through the command guard (an inline Modbus/TCP proxy in front of a
//! PLC), without I/O: bytes from the client and from the PLC go in, bytes to send each way
//! and what was decided come out.
//!
//! Every request the client sends is framed and decoded here, then judged by the caller (the
//! detection engine and the policy, see `Judge`):
//! - allowed (or, in [`Mode::Monitor`], anything): forwarded unchanged, and its answer relayed
//!   unchanged when the PLC gives it;
//! - blocked in [`Mode::Enforce`]: never forwarded; the client gets an exception response
//!   (code [`Settings::exception`], Illegal Function by default);
//! - not judgeable (the judgement failed): refused or forwarded as [`Settings::fail`] says;
//! - malformed (a frame that does not decode as a request): refused with Illegal Data Value,
//!   never forwarded;
//! - beyond [`Settings::max_in_flight`] requests waiting for the PLC: refused with Server
//!   Device Busy.
//!
//! Answers reach the client in the order the client asked, whatever order the PLC answers in
//! and whatever the guard answered itself: a refusal waits behind the forwarded requests before
//! it. When the PLC is gone every request still waiting for it is answered with exception 0x0B
//! (gateway target device failed to respond). A frame whose header cannot be read ends the
//! connection: nothing after it can be framed with certainty.

mod judge;

use std::collections::VecDeque;

use crate::Direction;
use crate::framing::{Encapsulation, Frame, Framer};
use crate::modbus::Request;
pub use judge::{Asked, BlockSet, EngineJudge};

/// Whether the guard enforces its verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Forward everything; report what enforcement would block (the rollout step).
    Monitor,
    /// Refuse what the verdict blocks.
    Enforce,
}

/// What the guard does when it cannot judge a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fail {
    /// Refuse it with the exception (the default: an unjudged write never reaches the PLC).
    Closed,
    /// Forward it (the PLC stays reachable if the guard's judgement breaks, at the risk of
    /// letting a forbidden command through).
    Open,
}

/// How a connection is guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Monitor or enforce.
    pub mode: Mode,
    /// The exception code a blocked request gets (Illegal Function, 1, by default).
    pub exception: u8,
    /// What an unjudgeable request gets.
    pub fail: Fail,
    /// Most requests forwarded and not yet answered; more are refused (Server Device Busy).
    pub max_in_flight: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mode: Mode::Monitor,
            exception: exception::ILLEGAL_FUNCTION,
            fail: Fail::Closed,
            max_in_flight: 32,
        }
    }
}

/// Modbus exception codes the guard answers with.
pub mod exception {
    /// The function is not allowed (the default for a blocked request).
    pub const ILLEGAL_FUNCTION: u8 = 0x01;
    /// The request does not decode.
    pub const ILLEGAL_DATA_VALUE: u8 = 0x03;
    /// Too many requests waiting for the PLC.
    pub const SERVER_DEVICE_BUSY: u8 = 0x06;
    /// The PLC behind the guard did not answer (unreachable, or the connection to it ended).
    pub const GATEWAY_TARGET_FAILED: u8 = 0x0B;
}

/// The caller's judgement of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Nothing blocks it.
    Allow,
    /// A verdict that blocks: the rule that found it.
    Block {
        /// The rule id (`policy.unauthorized_write`, ...).
        rule: String,
    },
    /// The judgement could not be made (a policy that cannot be evaluated, an internal error).
    Unjudgeable {
        /// Why.
        reason: String,
    },
}

/// What became of one request: what the guard reports and counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded: nothing blocks it.
    Allowed,
    /// Refused with the exception (enforce).
    Blocked {
        /// The rule that blocked it.
        rule: String,
    },
    /// Forwarded, though enforcement would have refused it (monitor).
    WouldBlock {
        /// The rule that would have blocked it.
        rule: String,
    },
    /// Not judged, refused (`fail = closed`).
    FailedClosed {
        /// Why it could not be judged.
        reason: String,
    },
    /// Not judged, forwarded (`fail = open`).
    FailedOpen {
        /// Why it could not be judged.
        reason: String,
    },
    /// Not a request that decodes: refused.
    Malformed,
    /// Refused: too many requests waiting for the PLC.
    Busy,
}

impl Verdict {
    /// The label of `otwatch_guard_requests_total{verdict}`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Blocked { .. } => "blocked",
            Self::WouldBlock { .. } => "would_block",
            Self::FailedClosed { .. } => "failed_closed",
            Self::FailedOpen { .. } => "failed_open",
            Self::Malformed => "malformed",
            Self::Busy => "busy",
        }
    }
}

/// Something to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send these bytes to the PLC.
    Upstream(Vec<u8>),
    /// Send these bytes to the client.
    Client(Vec<u8>),
    /// A request was decided (transaction id, unit, verdict): report and count it.
    Decided {
        /// The request's MBAP transaction id.
        transaction_id: u16,
        /// The unit it addressed.
        unit_id: u8,
        /// What became of it.
        verdict: Verdict,
    },
    /// End the connection (both sides).
    Close {
        /// Why.
        reason: String,
    },
}

/// A request waiting to be answered to the client, in the client's order.
#[derive(Debug)]
enum Slot {
    /// Forwarded, waiting for the PLC's answer.
    Waiting {
        transaction_id: u16,
        unit_id: u8,
        function: u8,
    },
    /// Answered (by the PLC or by the guard): ready to send once everything before is.
    Ready(Vec<u8>),
}

/// A request frame as the client sent it.
struct ClientFrame {
    transaction_id: u16,
    unit_id: u8,
    pdu: Vec<u8>,
    raw: Vec<u8>,
}

/// One guarded client connection.
#[derive(Debug)]
pub struct Connection {
    settings: Settings,
    from_client: Framer,
    from_plc: Framer,
    queue: VecDeque<Slot>,
    closed: bool,
    /// The PLC's connection is gone: what would be forwarded gets exception 0x0B.
    plc_down: bool,
}

impl Connection {
    /// A new connection guarded by `settings`.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            from_client: Framer::new(Encapsulation::Mbap, Direction::ToServer),
            from_plc: Framer::new(Encapsulation::Mbap, Direction::ToClient),
            queue: VecDeque::new(),
            closed: false,
            plc_down: false,
        }
    }

    /// Switches monitor and enforce (a reload), for requests from now on.
    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// Requests forwarded and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.queue
            .iter()
            .filter(|s| matches!(s, Slot::Waiting { .. }))
            .count()
    }

    /// Bytes from the client: each whole request judged by `judge` (unit id and request).
    pub fn client_bytes(
        &mut self,
        bytes: &[u8],
        judge: &mut impl FnMut(u8, &Request<'_>) -> Judgement,
        out: &mut Vec<Action>,
    ) {
        if self.closed {
            return;
        }
        // In the order they came; nothing after a frame that cannot be read is taken.
        let mut frames: Vec<Result<ClientFrame, String>> = Vec::new();
        self.from_client.push(bytes, &mut |frame| match frame {
            Frame::Adu {
                transaction_id,
                unit_id,
                pdu,
                raw,
            } => frames.push(Ok(ClientFrame {
                transaction_id: transaction_id.unwrap_or(0),
                unit_id,
                pdu: pdu.to_vec(),
                raw: raw.to_vec(),
            })),
            Frame::Invalid { error, .. } => frames.push(Err(format!(
                "client sent a frame the guard cannot read: {error}"
            ))),
            Frame::Skipped { bytes } => {
                frames.push(Err(format!("client sent {bytes} bytes that are no frame")))
            }
        });
        for frame in frames {
            match frame {
                Ok(f) => self.request(f.transaction_id, f.unit_id, &f.pdu, f.raw, judge, out),
                Err(reason) => {
                    self.close(reason, out);
                    return;
                }
            }
        }
    }

    fn request(
        &mut self,
        transaction_id: u16,
        unit_id: u8,
        pdu: &[u8],
        raw: Vec<u8>,
        judge: &mut impl FnMut(u8, &Request<'_>) -> Judgement,
        out: &mut Vec<Action>,
    ) {
        let function = pdu.first().copied().unwrap_or(0);
        let refuse = |code: u8| Slot::Ready(exception_adu(transaction_id, unit_id, function, code));
        let (verdict, forward, refusal) = match Request::decode(pdu) {
            Err(_) => (Verdict::Malformed, false, exception::ILLEGAL_DATA_VALUE),
            Ok(request) => match judge(unit_id, &request) {
                Judgement::Allow => (Verdict::Allowed, true, 0),
                Judgement::Block { rule } => match self.settings.mode {
                    Mode::Enforce => (Verdict::Blocked { rule }, false, self.settings.exception),
                    Mode::Monitor => (Verdict::WouldBlock { rule }, true, 0),
                },
                Judgement::Unjudgeable { reason } => match self.settings.fail {
                    Fail::Closed => (
                        Verdict::FailedClosed { reason },
                        false,
                        self.settings.exception,
                    ),
                    Fail::Open => (Verdict::FailedOpen { reason }, true, 0),
                },
            },
        };
        let (verdict, slot) = if forward && self.plc_down {
            (verdict, refuse(exception::GATEWAY_TARGET_FAILED))
        } else if forward && self.in_flight() >= self.settings.max_in_flight {
            (Verdict::Busy, refuse(exception::SERVER_DEVICE_BUSY))
        } else if forward {
            out.push(Action::Upstream(raw));
            (
                verdict,
                Slot::Waiting {
                    transaction_id,
                    unit_id,
                    function,
                },
            )
        } else {
            (verdict, refuse(refusal))
        };
        out.push(Action::Decided {
            transaction_id,
            unit_id,
            verdict,
        });
        self.queue.push_back(slot);
        self.release(out);
    }

    /// Bytes from the PLC: each answer matched to the oldest waiting request with its
    /// transaction id and relayed unchanged, in the client's order. An answer nobody waits for
    /// is dropped.
    pub fn plc_bytes(&mut self, bytes: &[u8], out: &mut Vec<Action>) {
        if self.closed {
            return;
        }
        let mut answers: Vec<(u16, Vec<u8>)> = Vec::new();
        let mut broken: Option<String> = None;
        self.from_plc.push(bytes, &mut |frame| match frame {
            Frame::Adu {
                transaction_id,
                raw,
                ..
            } => answers.push((transaction_id.unwrap_or(0), raw.to_vec())),
            Frame::Invalid { error, .. } => {
                broken.get_or_insert_with(|| {
                    format!("the PLC sent a frame the guard cannot read: {error}")
                });
            }
            Frame::Skipped { bytes } => {
                broken
                    .get_or_insert_with(|| format!("the PLC sent {bytes} bytes that are no frame"));
            }
        });
        for (transaction_id, raw) in answers {
            if let Some(slot) = self.queue.iter_mut().find(
                |s| matches!(s, Slot::Waiting { transaction_id: t, .. } if *t == transaction_id),
            ) {
                *slot = Slot::Ready(raw);
            }
        }
        self.release(out);
        if broken.is_some() {
            // Nothing more from this PLC connection can be matched with certainty.
            self.plc_gone(out);
        }
    }

    /// The connection to the PLC could not be made or ended: every request waiting for it is
    /// answered with exception 0x0B, and so is every later one that would be forwarded.
    pub fn plc_gone(&mut self, out: &mut Vec<Action>) {
        self.plc_down = true;
        for slot in &mut self.queue {
            if let Slot::Waiting {
                transaction_id,
                unit_id,
                function,
            } = *slot
            {
                *slot = Slot::Ready(exception_adu(
                    transaction_id,
                    unit_id,
                    function,
                    exception::GATEWAY_TARGET_FAILED,
                ));
            }
        }
        self.release(out);
    }

    /// Sends every answer at the head of the queue that is ready.
    fn release(&mut self, out: &mut Vec<Action>) {
        while matches!(self.queue.front(), Some(Slot::Ready(_))) {
            if let Some(Slot::Ready(bytes)) = self.queue.pop_front() {
                out.push(Action::Client(bytes));
            }
        }
    }

    fn close(&mut self, reason: String, out: &mut Vec<Action>) {
        self.closed = true;
        self.queue.clear();
        out.push(Action::Close { reason });
    }
}

/// A Modbus/TCP exception response: the request's transaction and unit, its function with the
/// exception bit, and `code`.
pub fn exception_adu(transaction_id: u16, unit_id: u8, function: u8, code: u8) -> Vec<u8> {
    let mut adu = Vec::with_capacity(9);
    adu.extend_from_slice(&transaction_id.to_be_bytes());
    adu.extend_from_slice(&[0, 0, 0, 3, unit_id, function | 0x80, code]);
    adu
}

#[cfg(test)]
mod tests;
