//! Classic pcap and pcapng captures, sans-IO: bytes in as they arrive (from a file, a pipe,
//! standard input), packets out (crate `pcap-file` parses the records).
//!
//! [`CaptureDecoder`] owns one buffer and asks the caller's [`CaptureInput`] to fill it (a
//! file's or a pipe's read, or a copy from memory, [`InMemory`]; 0 bytes is the end of the
//! input): packets come out of [`CaptureDecoder::next_packet`] as slices of the buffer,
//! without copying. Memory stays flat however large the capture: the
//! buffer is [`CHUNK`] bytes and grows only for a record larger than that, up to
//! [`MAX_RECORD`]; a pcapng section holds at most [`MAX_INTERFACES`] interfaces. Every
//! record's byte offset is tracked so damage is reported where it is, and the same bytes give
//! the same packets, and an error of the same kind at the same offset, however they are split
//! into reads.

use pcap_file::pcap::{PcapParser, RawPcapPacket};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{Endianness, PcapError, TsResolution};

use crate::frame::{CapturedPacket, LinkType};
use otwatch_rules::time::Timestamp;

/// Bytes the buffer holds to begin with: one read's worth.
pub const CHUNK: usize = 256 << 10;
/// The largest record accepted; anything larger is corruption, not a packet.
pub const MAX_RECORD: usize = 16 << 20;
/// The most interfaces a pcapng section describes; more is corruption (each is kept).
pub const MAX_INTERFACES: usize = 4096;
/// The size of a classic pcap file header.
const PCAP_HEADER: usize = 24;
/// A pcapng section header block's type, in either byte order.
const SECTION_HEADER: [u8; 4] = [0x0A, 0x0D, 0x0D, 0x0A];

/// Why a capture could not be read (further). Offsets count from the capture's first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureError {
    /// Neither pcap nor pcapng.
    UnknownFormat {
        /// The first bytes (at most 4).
        magic: Vec<u8>,
    },
    /// The capture ends in the middle of a record (or of its file header).
    Truncated {
        /// Where the incomplete record starts.
        offset: u64,
        /// Bytes the record needs (header included), when its header was readable.
        needed: usize,
        /// Bytes left in the capture.
        present: usize,
    },
    /// A record (or the file header) is malformed.
    Corrupt {
        /// Where the record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
}

impl std::fmt::Display for CaptureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownFormat { magic } => {
                write!(f, "not a pcap or pcapng file (magic {magic:02x?})")
            }
            Self::Truncated {
                offset,
                needed,
                present,
            } => write!(
                f,
                "truncated at offset {offset}: the record there needs {needed} bytes, {present} remain"
            ),
            Self::Corrupt { offset, reason } => {
                write!(f, "corrupt record at offset {offset}: {reason}")
            }
        }
    }
}

impl std::error::Error for CaptureError {}

/// Where a [`CaptureDecoder`] gets its bytes, and how its caller names a damaged capture in
/// its own error type: the caller's result needs no conversion on the per-packet path.
pub trait CaptureInput {
    /// The caller's error.
    type Error;
    /// Fills the start of `buf` (never empty) with the next bytes of the capture and says how
    /// many; 0 at the end of the input.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error>;
    /// The capture's damage (`e`) as the caller's error.
    fn damaged(&self, e: CaptureError) -> Self::Error;
}

/// A capture in memory, delivered in reads of the given sizes in turn (cycled), as a pipe
/// delivers a stream: how tests and the fuzz target check that the packets do not depend on
/// the reads. Counts any misuse by the decoder.
#[derive(Debug)]
pub struct InMemory<'a> {
    bytes: &'a [u8],
    at: usize,
    reads: &'a [usize],
    next: usize,
    ended: bool,
    /// Reads asked for after the input ended, or into no room: a decoder that would stall.
    pub misuse: usize,
}

impl<'a> InMemory<'a> {
    /// `bytes` in reads of `reads` bytes in turn (all at once when empty; 0 counts as 1).
    pub fn new(bytes: &'a [u8], reads: &'a [usize]) -> Self {
        Self {
            bytes,
            at: 0,
            reads,
            next: 0,
            ended: false,
            misuse: 0,
        }
    }
}

impl CaptureInput for InMemory<'_> {
    type Error = CaptureError;

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, CaptureError> {
        if self.ended || buf.is_empty() {
            self.misuse += 1;
        }
        let want = match self.reads.get(self.next % self.reads.len().max(1)) {
            Some(&n) => n.max(1),
            None => usize::MAX,
        };
        self.next = self.next.wrapping_add(1);
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        let n = want.min(buf.len()).min(rest.len());
        if let (Some(to), Some(from)) = (buf.get_mut(..n), rest.get(..n)) {
            to.copy_from_slice(from);
        }
        self.at += n;
        self.ended = n == 0;
        Ok(n)
    }

    fn damaged(&self, e: CaptureError) -> CaptureError {
        e
    }
}

enum Format {
    Pcap {
        parser: PcapParser,
        link: LinkType,
        nanos: bool,
        big_endian: bool,
    },
    PcapNg {
        parser: PcapNgParser,
        /// Per interface: link type and nanoseconds per timestamp unit.
        interfaces: Vec<(LinkType, u64)>,
    },
}

/// A pcap or pcapng capture decoded from bytes as they arrive.
pub struct CaptureDecoder {
    /// Known once the file header has been parsed.
    format: Option<Format>,
    buf: Vec<u8>,
    /// Start of unread data in `buf`.
    pos: usize,
    /// End of valid data in `buf`.
    len: usize,
    /// Capture offset of `buf[0]`.
    base: u64,
    /// The input ended.
    eof: bool,
    /// Bytes the buffer starts with.
    chunk: usize,
    /// The largest record accepted.
    max_record: usize,
}

impl std::fmt::Debug for CaptureDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureDecoder")
            .field("offset", &self.offset())
            .field("buffered", &self.buffered())
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl Default for CaptureDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl CaptureDecoder {
    /// A decoder waiting for a capture's first bytes.
    pub fn new() -> Self {
        Self::with_limits(CHUNK, MAX_RECORD)
    }

    /// A decoder whose buffer starts at `chunk` bytes (at least 16) and accepts records of
    /// at most `max_record` bytes: [`CHUNK`] and [`MAX_RECORD`] in use, smaller so tests and
    /// the fuzz target reach the buffer's growth and its bound.
    pub fn with_limits(chunk: usize, max_record: usize) -> Self {
        let chunk = chunk.max(16);
        Self {
            format: None,
            buf: vec![0; chunk],
            pos: 0,
            len: 0,
            base: 0,
            eof: false,
            chunk,
            max_record,
        }
    }

    /// Reads more of the input with `read` into the buffer, after moving unread bytes to its
    /// front (and growing it, up to the largest record and a chunk, when they fill it).
    /// Reading nothing ends the input; a record that fills even the largest buffer is corrupt.
    #[inline(never)]
    fn read_more<I: CaptureInput>(&mut self, input: &mut I) -> Result<(), I::Error> {
        let offset = self.offset();
        let max_record = self.max_record;
        let space = self.space();
        if space.is_empty() {
            return Err(input.damaged(CaptureError::Corrupt {
                offset,
                reason: format!("a record longer than {max_record} bytes"),
            }));
        }
        let n = input.read(space)?;
        if n == 0 {
            self.eof = true;
        }
        self.len = (self.len + n).min(self.buf.len());
        Ok(())
    }

    /// Where the next bytes of the input go.
    fn space(&mut self) -> &mut [u8] {
        if self.eof {
            return &mut [];
        }
        self.buf.copy_within(self.pos..self.len, 0);
        self.base += self.pos as u64;
        self.len -= self.pos;
        self.pos = 0;
        if self.len == self.buf.len() {
            let grown = (self.buf.len() * 2).min(self.max_record + self.chunk);
            self.buf.resize(grown, 0);
        }
        self.buf.get_mut(self.len..).unwrap_or_default()
    }

    /// Bytes consumed so far: where the next record starts.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Bytes the buffer holds: a chunk ([`CHUNK`]), more only for a record larger than that,
    /// never more than the largest record ([`MAX_RECORD`]) and a chunk.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Bytes received but not yet handed out.
    pub fn buffered(&self) -> usize {
        self.len - self.pos
    }

    /// Whether a whole record is buffered, so the next packet can be handed out without
    /// reading (which, on a pipe, waits for the writer).
    pub fn holds_whole_record(&self) -> bool {
        self.announced_len()
            .is_some_and(|len| len <= self.buffered())
    }

    /// Reads the file header with `read`, unless it has been read: what a reader of a pipe
    /// waits for before it says it is ready.
    pub fn read_header<I: CaptureInput>(&mut self, input: &mut I) -> Result<(), I::Error> {
        while !self.header().map_err(|e| input.damaged(e))? {
            self.read_more(input)?;
        }
        Ok(())
    }

    /// Parses the file header if it has not been parsed yet: `Ok(true)` once it is,
    /// `Ok(false)` while more bytes are needed.
    #[inline(never)]
    fn header(&mut self) -> Result<bool, CaptureError> {
        if self.format.is_some() {
            return Ok(true);
        }
        let head = self.buf.get(self.pos..self.len).unwrap_or_default();
        let magic = head.get(..4).unwrap_or(head);
        let corrupt = |e: PcapError| CaptureError::Corrupt {
            offset: 0,
            reason: e.to_string(),
        };
        let (format, rest) = match magic {
            [0xD4, 0xC3, 0xB2, 0xA1]
            | [0xA1, 0xB2, 0xC3, 0xD4]
            | [0x4D, 0x3C, 0xB2, 0xA1]
            | [0xA1, 0xB2, 0x3C, 0x4D] => {
                if head.len() < PCAP_HEADER {
                    return self.header_incomplete(PCAP_HEADER);
                }
                let (rest, parser) = PcapParser::new(head).map_err(corrupt)?;
                let header = parser.header();
                let format = Format::Pcap {
                    link: LinkType::from_linktype(u32::from(header.datalink)),
                    nanos: header.ts_resolution == TsResolution::NanoSecond,
                    big_endian: header.endianness == Endianness::Big,
                    parser,
                };
                (format, rest.len())
            }
            [0x0A, 0x0D, 0x0D, 0x0A] => match PcapNgParser::new(head) {
                Ok((rest, parser)) => {
                    let format = Format::PcapNg {
                        parser,
                        interfaces: Vec::new(),
                    };
                    (format, rest.len())
                }
                Err(PcapError::IncompleteBuffer) => {
                    let needed = block_len(head);
                    if let Some(len) = needed.filter(|n| *n > self.max_record) {
                        return Err(CaptureError::Corrupt {
                            offset: 0,
                            reason: format!("section header claims {len} bytes"),
                        });
                    }
                    return self.header_incomplete(needed.unwrap_or(0));
                }
                Err(e) => return Err(corrupt(e)),
            },
            _ if magic.len() < 4 && !self.eof => return Ok(false),
            _ => {
                return Err(CaptureError::UnknownFormat {
                    magic: magic.to_vec(),
                });
            }
        };
        self.pos = self.len - rest;
        self.format = Some(format);
        Ok(true)
    }

    /// The file header needs `needed` bytes and fewer have arrived.
    fn header_incomplete(&self, needed: usize) -> Result<bool, CaptureError> {
        if !self.eof {
            return Ok(false);
        }
        Err(CaptureError::Truncated {
            offset: 0,
            needed,
            present: self.buffered(),
        })
    }

    /// The next packet, reading with `read` as needed; `None` at the end of the capture.
    /// Blocks other than packets (interface descriptions, statistics) are read and passed
    /// over. After an error the decoder is not to be used again.
    #[inline(always)]
    pub fn next_packet<I: CaptureInput>(
        &mut self,
        input: &mut I,
    ) -> Result<Option<CapturedPacket<'_>>, I::Error> {
        if self.format.is_none() {
            self.read_header(input)?;
        }
        loop {
            let offset = self.offset();
            let avail = self.buf.get(self.pos..self.len).unwrap_or_default();
            if avail.is_empty() {
                if self.eof {
                    return Ok(None);
                }
                self.read_more(input)?;
                continue;
            }
            let (used, found) = match &mut self.format {
                None => return Ok(None),
                Some(Format::Pcap {
                    parser,
                    link,
                    nanos,
                    ..
                }) => match parser.next_raw_packet(avail) {
                    Ok((rest, raw)) => {
                        let (from, to) = locate(avail, &raw.data);
                        let (ts, orig_len) = pcap_record(&raw, *nanos);
                        (
                            avail.len() - rest.len(),
                            Some((ts, *link, from, to, orig_len)),
                        )
                    }
                    Err(PcapError::IncompleteBuffer) => {
                        self.incomplete().map_err(|e| input.damaged(e))?;
                        self.read_more(input)?;
                        continue;
                    }
                    Err(e) => return Err(input.damaged(corrupt(offset, e))),
                },
                Some(Format::PcapNg {
                    parser, interfaces, ..
                }) => match parser.next_block(avail) {
                    Ok((rest, block)) => {
                        let found = match block {
                            Block::InterfaceDescription(idb) => {
                                if interfaces.len() >= MAX_INTERFACES {
                                    return Err(input.damaged(too_many_interfaces(offset)));
                                }
                                interfaces.push(interface(&idb));
                                None
                            }
                            Block::SectionHeader(_) => {
                                interfaces.clear();
                                None
                            }
                            Block::EnhancedPacket(epb) => {
                                let (link, unit) = interfaces
                                    .get(epb.interface_id as usize)
                                    .copied()
                                    .unwrap_or((LinkType::Ethernet, 1_000));
                                let raw_ts =
                                    u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX);
                                let (from, to) = locate(avail, &epb.data);
                                let ts = Timestamp::from_nanos(raw_ts.saturating_mul(unit));
                                Some((ts, link, from, to, epb.original_len))
                            }
                            Block::SimplePacket(spb) => {
                                let link =
                                    interfaces.first().map_or(LinkType::Ethernet, |&(l, _)| l);
                                let (from, to) = locate(avail, &spb.data);
                                Some((Timestamp::default(), link, from, to, spb.original_len))
                            }
                            _ => None,
                        };
                        (avail.len() - rest.len(), found)
                    }
                    Err(PcapError::IncompleteBuffer) => {
                        self.incomplete().map_err(|e| input.damaged(e))?;
                        self.read_more(input)?;
                        continue;
                    }
                    Err(e) => return Err(input.damaged(corrupt(offset, e))),
                },
            };
            if used > self.max_record {
                // Whole in the buffer only because an earlier record grew it.
                return Err(input.damaged(oversized(offset, used)));
            }
            let start = self.pos;
            self.pos += used;
            if let Some((ts, link, from, to, orig_len)) = found {
                let data = self.buf.get(start + from..start + to).unwrap_or_default();
                return Ok(Some(CapturedPacket {
                    ts,
                    link,
                    data,
                    orig_len,
                }));
            }
        }
    }

    /// The parser wants more bytes than have arrived for the record at the read position:
    /// more are needed, unless it claims more than the largest record, or it has all the
    /// bytes it claims (a record the parser cannot read: waiting would swallow the rest of the
    /// input), or the input ended.
    #[cold]
    fn incomplete(&self) -> Result<(), CaptureError> {
        let offset = self.offset();
        if let Some(len) = self.announced_len() {
            if len > self.max_record {
                return Err(CaptureError::Corrupt {
                    offset,
                    reason: format!("record claims {len} bytes"),
                });
            }
            if len <= self.buffered() {
                return Err(CaptureError::Corrupt {
                    offset,
                    reason: format!("record of {len} bytes does not parse whole"),
                });
            }
        }
        if !self.eof {
            return Ok(());
        }
        Err(CaptureError::Truncated {
            offset,
            needed: self.announced_len().unwrap_or(0),
            present: self.buffered(),
        })
    }

    /// The length the record at the read position announces, header included; `None` until
    /// the length field has arrived (the buffer past `len` holds stale bytes of earlier reads).
    fn announced_len(&self) -> Option<usize> {
        let arrived = self.buf.get(self.pos..self.len)?;
        let at = |i: usize| arrived.get(i..i + 4);
        let (field, big_endian, extra) = match self.format.as_ref()? {
            Format::Pcap { big_endian, .. } => (at(8)?, *big_endian, 16),
            // A section header says its own byte order; other blocks follow their section's.
            Format::PcapNg { .. } if at(0)? == SECTION_HEADER => return block_len(arrived),
            Format::PcapNg { parser, .. } => {
                (at(4)?, parser.section().endianness == Endianness::Big, 0)
            }
        };
        let bytes = [field[0], field[1], field[2], field[3]];
        let n = if big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        };
        Some((n as usize).saturating_add(extra))
    }
}

/// A record at `offset` of `len` bytes, more than the largest accepted.
#[cold]
#[inline(never)]
fn oversized(offset: u64, len: usize) -> CaptureError {
    CaptureError::Corrupt {
        offset,
        reason: format!("record of {len} bytes"),
    }
}

/// An interface description at `offset` past [`MAX_INTERFACES`] in its section.
#[cold]
#[inline(never)]
fn too_many_interfaces(offset: u64) -> CaptureError {
    CaptureError::Corrupt {
        offset,
        reason: format!("more than {MAX_INTERFACES} interfaces in one section"),
    }
}

fn corrupt(offset: u64, e: PcapError) -> CaptureError {
    CaptureError::Corrupt {
        offset,
        reason: e.to_string(),
    }
}

/// The length a pcapng section header block announces (either byte order).
fn block_len(head: &[u8]) -> Option<usize> {
    let field: [u8; 4] = head.get(4..8)?.try_into().ok()?;
    let magic: [u8; 4] = head.get(8..12)?.try_into().ok()?;
    let n = if magic == [0x1A, 0x2B, 0x3C, 0x4D] {
        u32::from_be_bytes(field)
    } else {
        u32::from_le_bytes(field)
    };
    Some(n as usize)
}

/// A classic pcap record's time and length on the wire.
fn pcap_record(raw: &RawPcapPacket<'_>, nanos: bool) -> (Timestamp, u32) {
    let frac = u64::from(raw.ts_frac);
    let frac_nanos = if nanos {
        frac
    } else {
        frac.saturating_mul(1_000)
    };
    let ts = Timestamp::from_nanos(
        u64::from(raw.ts_sec)
            .saturating_mul(1_000_000_000)
            .saturating_add(frac_nanos),
    );
    (ts, raw.orig_len)
}

/// Where `inner` (a sub-slice of `outer`) sits inside `outer`.
fn locate(outer: &[u8], inner: &[u8]) -> (usize, usize) {
    let start = (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize);
    let start = start.min(outer.len());
    (start, (start + inner.len()).min(outer.len()))
}

/// Link type and nanoseconds per timestamp unit of a pcapng interface.
fn interface(idb: &InterfaceDescriptionBlock<'_>) -> (LinkType, u64) {
    let link = LinkType::from_linktype(u32::from(idb.linktype));
    let unit = idb
        .options
        .iter()
        .find_map(|o| match o {
            InterfaceDescriptionOption::IfTsResol(r) => Some(*r),
            _ => None,
        })
        .map_or(1_000, |r| {
            if r & 0x80 == 0 {
                // 10^-r seconds per unit.
                10u64
                    .checked_pow(9u32.saturating_sub(u32::from(r)))
                    .unwrap_or(1)
            } else {
                // 2^-(r & 0x7F) seconds: nanoseconds only approximately.
                (1_000_000_000u64 >> u32::from(r & 0x7F).min(63)).max(1)
            }
        });
    (link, unit)
}

#[cfg(test)]
mod tests;
