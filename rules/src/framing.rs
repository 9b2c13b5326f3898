//! From a byte stream to Modbus frames: recognising Modbus (MBAP or RTU-over-TCP) on a
//! connection, splitting the stream into ADUs, and resynchronising after gaps and garbage.
//!
//! The framer only cares about frame boundaries. Decoding what is inside a frame is the session's
//! job, so a malformed PDU inside a well-framed ADU never loses the stream.

use crate::Direction;
use crate::modbus::{
    DecodeError, FunctionCode, MAX_ADU_LEN, MAX_RTU_LEN, MBAP_LEN, MbapHeader, Request, Response,
    RtuFrame,
};

/// How Modbus PDUs are wrapped on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encapsulation {
    /// Modbus/TCP or Modbus/UDP: MBAP header, then the PDU.
    Mbap,
    /// Modbus RTU over TCP/UDP: unit id, PDU, CRC-16.
    Rtu,
}

/// What the first bytes of a connection say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Modbus with this encapsulation, the first frame starting `skip` bytes in.
    Modbus {
        /// The encapsulation found.
        encapsulation: Encapsulation,
        /// Bytes before the first frame (a mid-stream pickup on a Modbus port).
        skip: usize,
    },
    /// Not Modbus.
    NotModbus,
    /// Too few bytes to tell yet.
    NeedMore,
}

/// The most a probe buffers before deciding.
pub const PROBE_LIMIT: usize = MAX_ADU_LEN + MBAP_LEN;

/// Decides whether `bytes`, the first bytes seen in `direction`, are Modbus.
///
/// `on_modbus_port` relaxes the test where Modbus is expected: a frame may be malformed inside
/// (it is then reported, not ignored) and the stream may be picked up mid-frame. Elsewhere the
/// first frame must decode completely and end exactly where the bytes end or where another frame
/// starts, so other protocols are not mistaken for Modbus.
pub fn probe(bytes: &[u8], direction: Direction, on_modbus_port: bool) -> Probe {
    // RTU first: a matching CRC-16 over a PDU that decodes and exactly fills the bytes is
    // stronger evidence than an MBAP header, which RTU frames addressing register 0 resemble.
    if let Some(frame) = RtuFrame::find(bytes, direction)
        && Chains::new(bytes, Encapsulation::Rtu, direction).tile_from(frame.len)
    {
        return Probe::Modbus {
            encapsulation: Encapsulation::Rtu,
            skip: 0,
        };
    }
    match probe_mbap_at(bytes, direction, on_modbus_port) {
        Probe::NotModbus => {}
        decided => return decided,
    }
    if on_modbus_port {
        // Picked up mid-stream: look for a frame boundary further in. Failing a run of whole
        // frames, a plausible header whose frame runs past the bytes will do: the tail of a
        // frame then a large one (a 253-byte read) do not fit in what a probe holds.
        let mut chains = Chains::new(bytes, Encapsulation::Mbap, direction);
        let mut runs_past = None;
        for skip in 1..bytes.len().saturating_sub(MBAP_LEN) {
            let rest = bytes.get(skip..).unwrap_or_default();
            if let Some(len) = mbap_frame(rest, direction, false)
                && chains.tile_from(skip + len)
            {
                return Probe::Modbus {
                    encapsulation: Encapsulation::Mbap,
                    skip,
                };
            }
            if runs_past.is_none()
                && MbapHeader::decode(rest).is_ok_and(|h| h.adu_len() > rest.len())
                && function_plausible(rest, direction)
            {
                runs_past = Some(skip);
            }
        }
        if let Some(skip) = runs_past {
            return if bytes.len() < PROBE_LIMIT {
                Probe::NeedMore
            } else {
                Probe::Modbus {
                    encapsulation: Encapsulation::Mbap,
                    skip,
                }
            };
        }
    }
    if bytes.len() <= MBAP_LEN {
        Probe::NeedMore
    } else {
        Probe::NotModbus
    }
}

fn probe_mbap_at(bytes: &[u8], direction: Direction, on_modbus_port: bool) -> Probe {
    let header = match MbapHeader::decode(bytes) {
        Ok(header) => header,
        // On a Modbus port, protocol id 0 with a bad length is an attack on Modbus (an illegal
        // packet size), not another protocol: frame it so the error is reported.
        Err(DecodeError::LengthTooSmall(_) | DecodeError::LengthTooLarge(_)) if on_modbus_port => {
            return Probe::Modbus {
                encapsulation: Encapsulation::Mbap,
                skip: 0,
            };
        }
        Err(_) => return Probe::NotModbus,
    };
    if !function_plausible(bytes, direction) {
        return Probe::NotModbus;
    }
    let modbus = Probe::Modbus {
        encapsulation: Encapsulation::Mbap,
        skip: 0,
    };
    if bytes.len() < header.adu_len() {
        return if on_modbus_port {
            modbus
        } else {
            Probe::NeedMore
        };
    }
    if on_modbus_port {
        return modbus;
    }
    match mbap_frame(bytes, direction, true) {
        Some(len) if Chains::new(bytes, Encapsulation::Mbap, direction).tile_from(len) => modbus,
        _ => Probe::NotModbus,
    }
}

/// The function byte after an MBAP header is a known code, and a request never has the
/// exception bit.
fn function_plausible(bytes: &[u8], direction: Direction) -> bool {
    let Some(&fc) = bytes.get(MBAP_LEN) else {
        return true;
    };
    if direction == Direction::ToServer && fc & 0x80 != 0 {
        return false;
    }
    FunctionCode::new(fc & 0x7F).is_ok()
}

/// Length of a complete, decodable MBAP frame at the start of `bytes`.
fn mbap_frame(bytes: &[u8], direction: Direction, require_pdu: bool) -> Option<usize> {
    let header = MbapHeader::decode(bytes).ok()?;
    if !function_plausible(bytes, direction) {
        return None;
    }
    let pdu = bytes.get(MBAP_LEN..header.adu_len())?;
    if require_pdu && !pdu_decodes(pdu, direction) {
        return None;
    }
    Some(header.adu_len())
}

fn pdu_decodes(pdu: &[u8], direction: Direction) -> bool {
    match direction {
        Direction::ToServer => Request::decode(pdu).is_ok(),
        Direction::ToClient => Response::decode(pdu).is_ok(),
    }
}

/// Whether the frames from an offset of a delivery run on to its end, frame after frame, as
/// pipelined ADUs in one segment do (a partial MBAP frame at the end is fine: it continues in
/// the next segment).
///
/// Each offset's answer is kept, so asking for every offset of a delivery costs one walk over
/// it: walking each offset's chain afresh is quadratic, and a hostile delivery of many small
/// frames ending in garbage would make every search for a frame boundary pay it.
struct Chains<'a> {
    bytes: &'a [u8],
    encapsulation: Encapsulation,
    direction: Direction,
    /// Per offset: not yet known, or whether its chain runs to the end.
    known: Vec<Option<bool>>,
    /// The offsets one query walked, to record its answer at (kept to reuse its allocation).
    walked: Vec<usize>,
    /// Frames judged so far (each offset at most once), which the tests check.
    #[cfg(test)]
    judged: usize,
}

/// Where a frame at some offset leads.
enum Link {
    /// A whole frame, this long.
    Frame(usize),
    /// The chain ends here: well (a partial frame) or not (no frame).
    Ends(bool),
}

impl<'a> Chains<'a> {
    fn new(bytes: &'a [u8], encapsulation: Encapsulation, direction: Direction) -> Self {
        Self {
            bytes,
            encapsulation,
            direction,
            known: Vec::new(),
            walked: Vec::new(),
            #[cfg(test)]
            judged: 0,
        }
    }

    /// Whether frames from `start` tile the rest of the bytes.
    fn tile_from(&mut self, start: usize) -> bool {
        if self.known.is_empty() {
            self.known = vec![None; self.bytes.len()];
        }
        self.walked.clear();
        let mut at = start;
        let tiles = loop {
            let Some(&known) = self.known.get(at) else {
                break at == self.bytes.len();
            };
            if let Some(tiles) = known {
                break tiles;
            }
            self.walked.push(at);
            #[cfg(test)]
            {
                self.judged += 1;
            }
            match self.link(self.bytes.get(at..).unwrap_or_default()) {
                Link::Frame(len) => at += len,
                Link::Ends(tiles) => break tiles,
            }
        };
        for &at in &self.walked {
            if let Some(slot) = self.known.get_mut(at) {
                *slot = Some(tiles);
            }
        }
        tiles
    }

    fn link(&self, rest: &[u8]) -> Link {
        match self.encapsulation {
            Encapsulation::Mbap => match MbapHeader::decode(rest) {
                Ok(h) if rest.len() >= h.adu_len() => Link::Frame(h.adu_len()),
                Ok(_) | Err(DecodeError::Truncated { .. }) => Link::Ends(true),
                Err(_) => Link::Ends(false),
            },
            Encapsulation::Rtu => match RtuFrame::find(rest, self.direction) {
                Some(frame) => Link::Frame(frame.len),
                None => Link::Ends(false),
            },
        }
    }
}

/// One frame cut from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A well-framed ADU (MBAP) or CRC-valid RTU frame.
    Adu {
        /// The MBAP transaction id; RTU frames have none.
        transaction_id: Option<u16>,
        /// The addressed unit.
        unit_id: u8,
        /// Function code and data.
        pdu: &'a [u8],
        /// The whole frame as on the wire.
        raw: &'a [u8],
    },
    /// Bytes where a frame header should be but is not valid; the framer skips to the next
    /// plausible frame in the same delivery, or to the next delivery.
    Invalid {
        /// What was wrong.
        error: DecodeError,
        /// The offending bytes (at most a header's worth).
        raw: &'a [u8],
    },
    /// Bytes skipped while looking for the next frame after a gap or an invalid header.
    Skipped {
        /// How many.
        bytes: usize,
    },
}

/// Cuts one direction of a Modbus connection into frames.
#[derive(Debug, Clone)]
pub struct Framer {
    encapsulation: Encapsulation,
    direction: Direction,
    /// Bytes of an incomplete frame carried over to the next delivery.
    partial: Vec<u8>,
    /// After a gap: the stream position is unknown until a plausible frame is found.
    resync: bool,
}

impl Framer {
    /// A framer for one direction, starting at a frame boundary.
    pub fn new(encapsulation: Encapsulation, direction: Direction) -> Self {
        Self {
            encapsulation,
            direction,
            partial: Vec::new(),
            resync: false,
        }
    }

    /// How this framer's stream wraps PDUs.
    pub fn encapsulation(&self) -> Encapsulation {
        self.encapsulation
    }

    /// Bytes held of an incomplete frame.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Cuts the next contiguous stream bytes into frames.
    pub fn push(&mut self, bytes: &[u8], out: &mut impl FnMut(Frame<'_>)) {
        if self.partial.is_empty() {
            let used = self.cut(bytes, out);
            self.partial
                .extend_from_slice(bytes.get(used..).unwrap_or_default());
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(bytes);
            let used = self.cut(&buf, out);
            buf.drain(..used.min(buf.len()));
            self.partial = buf;
        }
    }

    /// Bytes were lost before the next delivery: drop the incomplete frame and resynchronise.
    pub fn gap(&mut self, out: &mut impl FnMut(Frame<'_>)) {
        if !self.partial.is_empty() {
            out(Frame::Skipped {
                bytes: self.partial.len(),
            });
            self.partial.clear();
        }
        self.resync = true;
    }

    /// The other side spoke. RTU has no pipelining, so bytes still unframed here never will be.
    pub fn turn(&mut self, out: &mut impl FnMut(Frame<'_>)) {
        if self.encapsulation == Encapsulation::Rtu && !self.partial.is_empty() {
            let buf = std::mem::take(&mut self.partial);
            out(Frame::Invalid {
                error: DecodeError::CrcMismatch,
                raw: buf.get(..buf.len().min(MAX_RTU_LEN)).unwrap_or_default(),
            });
        }
    }

    /// The stream ended: an incomplete frame is reported as such.
    pub fn finish(&mut self, out: &mut impl FnMut(Frame<'_>)) {
        let buf = std::mem::take(&mut self.partial);
        if buf.is_empty() {
            return;
        }
        let error = match (self.encapsulation, MbapHeader::decode(&buf)) {
            (Encapsulation::Mbap, Ok(header)) => DecodeError::LengthMismatch {
                declared: usize::from(header.length),
                present: buf.len().saturating_sub(6),
            },
            (Encapsulation::Mbap, Err(error)) => error,
            (Encapsulation::Rtu, _) => DecodeError::CrcMismatch,
        };
        out(Frame::Invalid {
            error,
            raw: buf.get(..buf.len().min(MAX_ADU_LEN)).unwrap_or_default(),
        });
    }

    /// Emits every complete frame in `bytes` and returns how many bytes were used up.
    fn cut(&mut self, bytes: &[u8], out: &mut impl FnMut(Frame<'_>)) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            let rest = bytes.get(at..).unwrap_or_default();
            if self.resync {
                match self.find_boundary(rest) {
                    Some(skip) => {
                        if skip > 0 {
                            out(Frame::Skipped { bytes: skip });
                        }
                        at += skip;
                        self.resync = false;
                        continue;
                    }
                    None => {
                        // Keep a possible header start for the next delivery.
                        let keep = rest.len().min(self.header_window() - 1);
                        let skip = rest.len() - keep;
                        if skip > 0 {
                            out(Frame::Skipped { bytes: skip });
                        }
                        return at + skip;
                    }
                }
            }
            match self.encapsulation {
                Encapsulation::Mbap => match MbapHeader::decode(rest) {
                    Ok(header) => {
                        let len = header.adu_len();
                        let (Some(raw), Some(pdu)) = (rest.get(..len), rest.get(MBAP_LEN..len))
                        else {
                            return at;
                        };
                        out(Frame::Adu {
                            transaction_id: Some(header.transaction_id),
                            unit_id: header.unit_id,
                            pdu,
                            raw,
                        });
                        at += len;
                    }
                    Err(DecodeError::Truncated { .. }) => return at,
                    Err(error) => {
                        out(Frame::Invalid {
                            error,
                            raw: rest.get(..rest.len().min(MBAP_LEN + 1)).unwrap_or_default(),
                        });
                        at += self.skip_invalid(rest, out);
                    }
                },
                Encapsulation::Rtu => match RtuFrame::find(rest, self.direction) {
                    Some(frame) => {
                        out(Frame::Adu {
                            transaction_id: None,
                            unit_id: frame.unit_id,
                            pdu: frame.pdu,
                            raw: rest.get(..frame.len).unwrap_or_default(),
                        });
                        at += frame.len;
                    }
                    None if rest.len() >= MAX_RTU_LEN => {
                        out(Frame::Invalid {
                            error: DecodeError::CrcMismatch,
                            raw: rest.get(..MAX_RTU_LEN).unwrap_or_default(),
                        });
                        at += self.skip_invalid(rest, out);
                    }
                    None => return at,
                },
            }
        }
        at
    }

    /// After an invalid frame start at the beginning of `rest`: skips to the next plausible
    /// frame in this delivery, or past all of it. Senders start segments on frame boundaries, so
    /// the next delivery is decoded strictly again and a further bad header is reported too.
    fn skip_invalid(&self, rest: &[u8], out: &mut impl FnMut(Frame<'_>)) -> usize {
        let after = rest.get(1..).unwrap_or_default();
        let skip = 1 + self.find_boundary(after).unwrap_or(after.len());
        out(Frame::Skipped { bytes: skip });
        skip
    }

    /// Bytes needed to judge a frame start.
    fn header_window(&self) -> usize {
        match self.encapsulation {
            Encapsulation::Mbap => MAX_ADU_LEN + MBAP_LEN,
            Encapsulation::Rtu => MAX_RTU_LEN,
        }
    }

    /// Offset of the first plausible frame start in `bytes`, if one can be told yet.
    ///
    /// An MBAP start must have a valid header and known function, and its frame must end
    /// exactly at the end of the bytes or where another valid header starts.
    fn find_boundary(&self, bytes: &[u8]) -> Option<usize> {
        let mut chains = Chains::new(bytes, self.encapsulation, self.direction);
        (0..bytes.len()).find(|&skip| {
            let rest = bytes.get(skip..).unwrap_or_default();
            let first = match self.encapsulation {
                Encapsulation::Mbap => mbap_frame(rest, self.direction, false),
                Encapsulation::Rtu => RtuFrame::find(rest, self.direction).map(|f| f.len),
            };
            first.is_some_and(|len| chains.tile_from(skip + len))
        })
    }
}

#[cfg(test)]
mod tests;
