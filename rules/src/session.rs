//! One Modbus conversation: recognising it, framing both directions, decoding every PDU and
//! joining requests with responses.
//!
//! The session takes in-order stream bytes (from [`crate::reassembly`]) or whole datagrams and
//! emits [`Event`]s. It never fails: malformed input becomes an event and decoding continues.

use crate::Direction;
use crate::framing::{Encapsulation, Frame, Framer, PROBE_LIMIT, Probe, probe};
use crate::modbus::{Adu, DecodeError, Request, Response};
use crate::time::Timestamp;
use crate::transaction::{TrackerConfig, TrackerEvent, Transaction, TransactionTracker};

/// What the caller knows about a conversation when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionHints {
    /// The server side uses a port configured as Modbus (502 by default): probing is lenient
    /// and non-Modbus traffic is worth an event.
    pub on_modbus_port: bool,
    /// The caller knows which side is the client (it saw the SYN, or the Modbus port). When
    /// false, the session may swap the sides if the first bytes only make sense that way.
    pub orientation_known: bool,
}

/// What a session reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// The conversation was recognised as Modbus.
    Recognised {
        /// How PDUs are wrapped.
        encapsulation: Encapsulation,
        /// Whether client and server are swapped relative to the caller's guess.
        reversed: bool,
    },
    /// The conversation is not Modbus although it uses a Modbus port.
    NotModbus {
        /// The side whose bytes decided it.
        direction: Direction,
        /// The first bytes, as evidence.
        sample: &'a [u8],
    },
    /// A request was decoded (reported at once; its [`Transaction`] follows later).
    Request {
        /// The MBAP transaction id (none on RTU).
        transaction_id: Option<u16>,
        /// The unit addressed.
        unit_id: u8,
        /// The decoded request.
        request: Request<'a>,
        /// The whole frame.
        raw: &'a [u8],
        /// Requests on this connection waiting for a response, this one included.
        outstanding: usize,
    },
    /// A transaction ended.
    Transaction(Transaction<'a>),
    /// A response disagrees with its request: another function, a count that does not fit
    /// the quantity asked, or a write echo that does not repeat the write.
    ResponseMismatch {
        /// What disagrees.
        error: DecodeError,
        /// The transaction id.
        transaction_id: Option<u16>,
        /// The unit.
        unit_id: u8,
    },
    /// A frame failed to decode.
    DecodeError {
        /// Which side sent it.
        direction: Direction,
        /// What was wrong.
        error: DecodeError,
        /// The MBAP transaction id, when the header was readable.
        transaction_id: Option<u16>,
        /// The unit, when the header was readable.
        unit_id: Option<u8>,
        /// The offending bytes.
        raw: &'a [u8],
    },
    /// Stream bytes were skipped to find the next frame boundary.
    Skipped {
        /// Which side.
        direction: Direction,
        /// How many bytes.
        bytes: usize,
    },
}

#[derive(Debug, Clone)]
enum State {
    Probing { buffered: [Vec<u8>; 2] },
    Modbus { framers: [Framer; 2] },
    NotModbus,
}

/// State of one Modbus conversation (a TCP connection or a UDP flow).
#[derive(Debug, Clone)]
pub struct Session {
    hints: SessionHints,
    state: State,
    reversed: bool,
    tracker: TransactionTracker,
    last_speaker: Option<Direction>,
}

impl Session {
    /// A conversation not yet recognised.
    pub fn new(hints: SessionHints, tracker: TrackerConfig) -> Self {
        Self {
            hints,
            state: State::Probing {
                buffered: [Vec::new(), Vec::new()],
            },
            reversed: false,
            tracker: TransactionTracker::new(tracker),
            last_speaker: None,
        }
    }

    /// Whether the session swapped client and server relative to the caller's guess.
    pub fn reversed(&self) -> bool {
        self.reversed
    }

    /// Whether the conversation turned out not to be Modbus: the caller may stop feeding it.
    pub fn is_not_modbus(&self) -> bool {
        matches!(self.state, State::NotModbus)
    }

    /// The encapsulation, once recognised.
    pub fn encapsulation(&self) -> Option<Encapsulation> {
        match &self.state {
            State::Modbus { framers } => Some(framers[0].encapsulation()),
            _ => None,
        }
    }

    /// Requests waiting for a response.
    pub fn pending_requests(&self) -> usize {
        self.tracker.pending()
    }

    /// The next in-order stream bytes from `direction` (as the caller oriented it).
    pub fn stream(
        &mut self,
        now: Timestamp,
        direction: Direction,
        bytes: &[u8],
        out: &mut impl FnMut(Event<'_>),
    ) {
        let direction = self.orient(direction);
        self.turn(direction, out);
        match &mut self.state {
            State::NotModbus => {}
            State::Modbus { framers } => {
                let framer = &mut framers[index(direction)];
                Self::frames(framer, &mut self.tracker, now, direction, bytes, out);
            }
            State::Probing { buffered } => {
                let buf = &mut buffered[index(direction)];
                let fits = bytes.len().min(PROBE_LIMIT.saturating_sub(buf.len()));
                buf.extend_from_slice(bytes.get(..fits).unwrap_or_default());
                let overflow = bytes.get(fits..).unwrap_or_default();
                self.probe(now, direction, overflow, out);
            }
        }
    }

    /// Bytes from `direction` were lost.
    pub fn gap(&mut self, direction: Direction, out: &mut impl FnMut(Event<'_>)) {
        let direction = self.orient(direction);
        match &mut self.state {
            State::Modbus { framers } => framers[index(direction)].gap(&mut |frame| {
                if let Frame::Skipped { bytes } = frame {
                    out(Event::Skipped { direction, bytes });
                }
            }),
            State::Probing { buffered } => buffered[index(direction)].clear(),
            State::NotModbus => {}
        }
    }

    /// One UDP datagram from `direction`: it must hold whole frames.
    pub fn datagram(
        &mut self,
        now: Timestamp,
        direction: Direction,
        bytes: &[u8],
        out: &mut impl FnMut(Event<'_>),
    ) {
        let direction = self.orient(direction);
        if let State::Probing { .. } = self.state {
            match probe(bytes, direction, self.hints.on_modbus_port) {
                Probe::Modbus { encapsulation, .. } => self.recognise(encapsulation, out),
                Probe::NotModbus | Probe::NeedMore => {
                    return self.reject(direction, bytes, out);
                }
            }
        }
        let State::Modbus { framers } = &mut self.state else {
            return;
        };
        if framers[0].encapsulation() == Encapsulation::Rtu {
            let framer = &mut framers[index(direction)];
            Self::frames(framer, &mut self.tracker, now, direction, bytes, out);
            framer.finish(&mut |frame| Self::frame(&mut self.tracker, now, direction, frame, out));
            return;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            match Adu::split(rest) {
                Ok((adu, after)) => {
                    let raw = rest.get(..rest.len() - after.len()).unwrap_or_default();
                    let frame = Frame::Adu {
                        transaction_id: Some(adu.header.transaction_id),
                        unit_id: adu.header.unit_id,
                        pdu: adu.pdu,
                        raw,
                    };
                    Self::frame(&mut self.tracker, now, direction, frame, out);
                    rest = after;
                }
                Err(error) => {
                    let error = match error {
                        DecodeError::Truncated { present, .. } => DecodeError::LengthMismatch {
                            declared: 0,
                            present,
                        },
                        other => other,
                    };
                    out(Event::DecodeError {
                        direction,
                        error,
                        transaction_id: None,
                        unit_id: None,
                        raw: rest,
                    });
                    return;
                }
            }
        }
    }

    /// Reports requests that waited longer than the timeout.
    pub fn expire(&mut self, now: Timestamp, out: &mut impl FnMut(Event<'_>)) {
        self.tracker.expire(now, &mut |event| forward(event, out));
    }

    /// The conversation ended: incomplete frames and waiting requests are reported.
    pub fn close(&mut self, now: Timestamp, out: &mut impl FnMut(Event<'_>)) {
        if let State::Modbus { framers } = &mut self.state {
            for (i, framer) in framers.iter_mut().enumerate() {
                let direction = if i == 0 {
                    Direction::ToServer
                } else {
                    Direction::ToClient
                };
                framer.finish(&mut |frame| {
                    Self::frame(&mut self.tracker, now, direction, frame, out)
                });
            }
        }
        self.tracker.close(&mut |event| forward(event, out));
    }

    fn orient(&self, direction: Direction) -> Direction {
        if self.reversed {
            direction.reverse()
        } else {
            direction
        }
    }

    /// RTU cannot pipeline: when the other side speaks, half-framed bytes are garbage.
    fn turn(&mut self, direction: Direction, out: &mut impl FnMut(Event<'_>)) {
        if self.last_speaker == Some(direction) {
            return;
        }
        self.last_speaker = Some(direction);
        if let State::Modbus { framers } = &mut self.state {
            let other = direction.reverse();
            framers[index(other)].turn(&mut |frame| {
                if let Frame::Invalid { error, raw } = frame {
                    out(Event::DecodeError {
                        direction: other,
                        error,
                        transaction_id: None,
                        unit_id: raw.first().copied(),
                        raw,
                    });
                }
            });
        }
    }

    /// Runs the probe on what `direction` buffered; `overflow` is stream data past the probe
    /// buffer, fed to the framer once recognised.
    fn probe(
        &mut self,
        now: Timestamp,
        direction: Direction,
        overflow: &[u8],
        out: &mut impl FnMut(Event<'_>),
    ) {
        let State::Probing { buffered } = &mut self.state else {
            return;
        };
        let bytes = std::mem::take(&mut buffered[index(direction)]);
        let mut verdict = probe(&bytes, direction, self.hints.on_modbus_port);
        if verdict == Probe::NotModbus
            && !self.hints.orientation_known
            && !self.reversed
            && let Probe::Modbus { .. } = probe(&bytes, direction.reverse(), false)
        {
            // The caller guessed the sides wrong: these bytes only make sense the other way.
            self.reversed = !self.reversed;
            buffered.swap(0, 1);
            let direction = direction.reverse();
            buffered[index(direction)] = bytes;
            return self.probe(now, direction, overflow, out);
        }
        if verdict == Probe::NeedMore && bytes.len() >= PROBE_LIMIT {
            verdict = Probe::NotModbus;
        }
        match verdict {
            Probe::NeedMore => buffered[index(direction)] = bytes,
            Probe::NotModbus => self.reject(direction, &bytes, out),
            Probe::Modbus {
                encapsulation,
                skip,
            } => {
                let mut other = std::mem::take(&mut buffered[index(direction.reverse())]);
                self.recognise(encapsulation, out);
                if skip > 0 {
                    out(Event::Skipped {
                        direction,
                        bytes: skip,
                    });
                }
                let State::Modbus { framers } = &mut self.state else {
                    return;
                };
                let first = bytes.get(skip..).unwrap_or_default();
                if !other.is_empty() {
                    // The other side spoke first; its bytes go through the framer as well.
                    let framer = &mut framers[index(direction.reverse())];
                    Self::frames(
                        framer,
                        &mut self.tracker,
                        now,
                        direction.reverse(),
                        &other,
                        out,
                    );
                    other.clear();
                }
                let framer = &mut framers[index(direction)];
                if overflow.is_empty() {
                    Self::frames(framer, &mut self.tracker, now, direction, first, out);
                } else {
                    // One delivery stays one delivery: the framer resumes after garbage at
                    // delivery boundaries.
                    let mut whole = first.to_vec();
                    whole.extend_from_slice(overflow);
                    Self::frames(framer, &mut self.tracker, now, direction, &whole, out);
                }
            }
        }
    }

    fn recognise(&mut self, encapsulation: Encapsulation, out: &mut impl FnMut(Event<'_>)) {
        self.state = State::Modbus {
            framers: [
                Framer::new(encapsulation, Direction::ToServer),
                Framer::new(encapsulation, Direction::ToClient),
            ],
        };
        out(Event::Recognised {
            encapsulation,
            reversed: self.reversed,
        });
    }

    fn reject(&mut self, direction: Direction, bytes: &[u8], out: &mut impl FnMut(Event<'_>)) {
        self.state = State::NotModbus;
        if self.hints.on_modbus_port {
            out(Event::NotModbus {
                direction,
                sample: bytes.get(..bytes.len().min(64)).unwrap_or_default(),
            });
        }
    }

    fn frames(
        framer: &mut Framer,
        tracker: &mut TransactionTracker,
        now: Timestamp,
        direction: Direction,
        bytes: &[u8],
        out: &mut impl FnMut(Event<'_>),
    ) {
        if bytes.is_empty() {
            return;
        }
        framer.push(bytes, &mut |frame| {
            Self::frame(tracker, now, direction, frame, out)
        });
    }

    fn frame(
        tracker: &mut TransactionTracker,
        now: Timestamp,
        direction: Direction,
        frame: Frame<'_>,
        out: &mut impl FnMut(Event<'_>),
    ) {
        match frame {
            Frame::Adu {
                transaction_id,
                unit_id,
                pdu,
                raw,
            } => {
                let decode_error = |error| Event::DecodeError {
                    direction,
                    error,
                    transaction_id,
                    unit_id: Some(unit_id),
                    raw,
                };
                match direction {
                    Direction::ToServer => {
                        let decoded = Request::decode_prefix(pdu);
                        // Malformed requests wait for their answer too, so the server's
                        // exception is not mistaken for an unsolicited response.
                        let request = decoded.as_ref().ok().map(|(r, _)| r);
                        tracker.request(now, transaction_id, unit_id, pdu, request, &mut |event| {
                            forward(event, out)
                        });
                        match decoded {
                            Ok((request, trailing)) => {
                                if trailing > 0 {
                                    out(decode_error(DecodeError::TrailingBytes(trailing)));
                                }
                                out(Event::Request {
                                    transaction_id,
                                    unit_id,
                                    request,
                                    raw,
                                    outstanding: tracker.pending(),
                                });
                            }
                            Err(error) => out(decode_error(error)),
                        }
                    }
                    Direction::ToClient => {
                        let response = match Response::decode_prefix(pdu) {
                            Ok((response, trailing)) => {
                                if trailing > 0 {
                                    out(decode_error(DecodeError::TrailingBytes(trailing)));
                                }
                                Some(response)
                            }
                            Err(error) => {
                                out(decode_error(error));
                                None
                            }
                        };
                        // A malformed response still answers its request.
                        tracker.response(now, transaction_id, unit_id, response, &mut |e| {
                            forward(e, out)
                        });
                    }
                }
            }
            Frame::Invalid { error, raw } => out(Event::DecodeError {
                direction,
                error,
                transaction_id: None,
                unit_id: None,
                raw,
            }),
            Frame::Skipped { bytes } => out(Event::Skipped { direction, bytes }),
        }
    }
}

fn forward(event: TrackerEvent<'_>, out: &mut impl FnMut(Event<'_>)) {
    match event {
        TrackerEvent::Transaction(t) => out(Event::Transaction(t)),
        TrackerEvent::Mismatch {
            error,
            transaction_id,
            unit_id,
        } => out(Event::ResponseMismatch {
            error,
            transaction_id,
            unit_id,
        }),
    }
}

fn index(direction: Direction) -> usize {
    match direction {
        Direction::ToServer => 0,
        Direction::ToClient => 1,
    }
}

#[cfg(test)]
mod tests;
