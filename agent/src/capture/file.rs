//! Reading classic pcap and pcapng files (crate `pcap-file`), tracking the byte offset of every
//! record so damage is reported where it is.
//!
//! The file is read through one fixed buffer: memory stays flat however large the capture, and
//! packets are handed out as slices of that buffer without copying.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use pcap_file::pcap::{PcapParser, RawPcapPacket};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{Endianness, PcapError, TsResolution};

use super::{CapturedPacket, LinkType, PacketSource};
use otwatch_rules::time::Timestamp;

/// Bytes read from the file at a time.
const CHUNK: usize = 256 << 10;
/// The size of a classic pcap file header.
const PCAP_HEADER: usize = 24;
/// The largest record accepted; anything larger is corruption, not a packet.
const MAX_RECORD: usize = 16 << 20;

/// Why a capture file could not be read (further).
#[derive(Debug, thiserror::Error)]
pub enum CaptureFileError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The capture file.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The file is neither pcap nor pcapng.
    #[error("{path}: not a pcap or pcapng file (magic {magic:02x?})")]
    UnknownFormat {
        /// The capture file.
        path: PathBuf,
        /// The first bytes.
        magic: Vec<u8>,
    },
    /// The file ends in the middle of a record.
    #[error(
        "{path}: truncated at offset {offset}: the record there needs {needed} bytes, {present} remain"
    )]
    Truncated {
        /// The capture file.
        path: PathBuf,
        /// Where the incomplete record starts.
        offset: u64,
        /// Bytes the record needs (header included), when its header was readable.
        needed: usize,
        /// Bytes left in the file.
        present: usize,
    },
    /// A record is malformed.
    #[error("{path}: corrupt record at offset {offset}: {reason}")]
    Corrupt {
        /// The capture file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
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
        big_endian: bool,
    },
}

/// A capture file opened for reading, packet by packet.
pub struct CaptureFile {
    path: PathBuf,
    reader: Box<dyn Read + Send>,
    format: Format,
    buf: Vec<u8>,
    /// Start of unread data in `buf`.
    pos: usize,
    /// End of valid data in `buf`.
    len: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    size: u64,
}

impl CaptureFile {
    /// Opens `path` and reads its file header.
    pub fn open(path: &Path) -> Result<Self, CaptureFileError> {
        let io_err = |source| CaptureFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let size = file.metadata().map_err(io_err)?.len();
        Self::from_reader(path, Box::new(file), size)
    }

    /// Reads a capture from `reader` (a pipe or standard input as well as a file), named
    /// `path` in messages, `size` bytes long if known (0 otherwise). Blocks until the header
    /// has arrived; packets are handed out as soon as they are complete.
    pub fn from_reader(
        path: &Path,
        mut reader: Box<dyn Read + Send>,
        size: u64,
    ) -> Result<Self, CaptureFileError> {
        let io_err = |source| CaptureFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut buf = vec![0; CHUNK];
        let mut len = 0;
        // Enough for the magic and a classic header; a pcapng section header is read on below.
        while len < PCAP_HEADER {
            match reader.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        if buf.get(..4) == Some(&[0x0A, 0x0D, 0x0D, 0x0A][..]) {
            while len < buf.len()
                && PcapNgParser::new(&buf[..len])
                    .is_err_and(|e| matches!(e, PcapError::IncompleteBuffer))
            {
                match reader.read(&mut buf[len..]) {
                    Ok(0) => break,
                    Ok(n) => len += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_err(e)),
                }
            }
        }
        let corrupt = |e: PcapError| CaptureFileError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason: e.to_string(),
        };
        let head = buf.get(..len).unwrap_or_default();
        let magic = head.get(..4).unwrap_or(head);
        let (format, used) = match magic {
            [0xD4, 0xC3, 0xB2, 0xA1]
            | [0xA1, 0xB2, 0xC3, 0xD4]
            | [0x4D, 0x3C, 0xB2, 0xA1]
            | [0xA1, 0xB2, 0x3C, 0x4D] => {
                let (rest, parser) = PcapParser::new(head).map_err(corrupt)?;
                let header = parser.header();
                let format = Format::Pcap {
                    link: LinkType::from_linktype(u32::from(header.datalink)),
                    nanos: header.ts_resolution == TsResolution::NanoSecond,
                    big_endian: header.endianness == Endianness::Big,
                    parser,
                };
                (format, head.len() - rest.len())
            }
            [0x0A, 0x0D, 0x0D, 0x0A] => {
                let (rest, parser) = PcapNgParser::new(head).map_err(corrupt)?;
                let big_endian = parser.section().endianness == Endianness::Big;
                let format = Format::PcapNg {
                    parser,
                    interfaces: Vec::new(),
                    big_endian,
                };
                (format, head.len() - rest.len())
            }
            _ => {
                return Err(CaptureFileError::UnknownFormat {
                    path: path.to_path_buf(),
                    magic: magic.to_vec(),
                });
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            format,
            buf,
            pos: used,
            len,
            base: 0,
            eof: false,
            size,
        })
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes read from the file but not yet handed out.
    pub fn buffered(&self) -> usize {
        self.len - self.pos
    }

    /// Whether a whole record is buffered, so the next packet can be handed out without
    /// reading (which, on a pipe, waits for the writer).
    pub fn holds_whole_record(&self) -> bool {
        self.announced_len()
            .is_some_and(|len| len <= self.buffered())
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, offset: u64, e: PcapError) -> CaptureFileError {
        CaptureFileError::Corrupt {
            path: self.path.clone(),
            offset,
            reason: e.to_string(),
        }
    }

    /// Moves unread bytes to the front and reads more; returns false at end of file.
    fn fill(&mut self) -> Result<bool, CaptureFileError> {
        if self.eof {
            return Ok(false);
        }
        self.buf.copy_within(self.pos..self.len, 0);
        self.base += self.pos as u64;
        self.len -= self.pos;
        self.pos = 0;
        if self.len == self.buf.len() {
            let grown = (self.buf.len() * 2).min(MAX_RECORD + CHUNK);
            self.buf.resize(grown, 0);
        }
        let read = loop {
            match self.reader.read(&mut self.buf[self.len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(CaptureFileError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        };
        self.len += read;
        self.eof = read == 0;
        Ok(read > 0)
    }

    /// The length the record at the read position announces, header included; `None` until
    /// the length field has arrived (the buffer past `len` holds stale bytes of earlier reads).
    fn announced_len(&self) -> Option<usize> {
        let arrived = self.buf.get(self.pos..self.len)?;
        let at = |i: usize| arrived.get(i..i + 4);
        let (field, big_endian, extra) = match &self.format {
            Format::Pcap { big_endian, .. } => (at(8)?, *big_endian, 16),
            Format::PcapNg { big_endian, .. } => (at(4)?, *big_endian, 0),
        };
        let bytes = [field[0], field[1], field[2], field[3]];
        let n = if big_endian {
            u32::from_be_bytes(bytes)
        } else {
            u32::from_le_bytes(bytes)
        };
        Some((n as usize).saturating_add(extra))
    }

    /// Called when the parser needs more bytes than are buffered.
    fn need_more(&mut self) -> Result<bool, CaptureFileError> {
        let offset = self.offset();
        if let Some(len) = self.announced_len()
            && len > MAX_RECORD
        {
            return Err(CaptureFileError::Corrupt {
                path: self.path.clone(),
                offset,
                reason: format!("record claims {len} bytes"),
            });
        }
        if self.fill()? {
            return Ok(true);
        }
        let present = self.len - self.pos;
        if present == 0 {
            return Ok(false);
        }
        Err(CaptureFileError::Truncated {
            path: self.path.clone(),
            offset,
            needed: self.announced_len().unwrap_or(0),
            present,
        })
    }
}

impl PacketSource for CaptureFile {
    type Error = CaptureFileError;

    fn next_packet(&mut self) -> Result<Option<CapturedPacket<'_>>, CaptureFileError> {
        loop {
            let offset = self.offset();
            let Some(avail) = self.buf.get(self.pos..self.len) else {
                return Ok(None);
            };
            if avail.is_empty() && !self.fill()? {
                return Ok(None);
            }
            let avail = self.buf.get(self.pos..self.len).unwrap_or_default();
            match &mut self.format {
                Format::Pcap {
                    parser,
                    link,
                    nanos,
                    ..
                } => match parser.next_raw_packet(avail) {
                    Ok((rest, raw)) => {
                        let used = avail.len() - rest.len();
                        let packet = pcap_packet(&raw, *link, *nanos);
                        let (from, to) = locate(avail, &raw.data);
                        let start = self.pos;
                        self.pos += used;
                        let data = self.buf.get(start + from..start + to).unwrap_or_default();
                        return Ok(Some(CapturedPacket { data, ..packet }));
                    }
                    Err(PcapError::IncompleteBuffer) => {
                        if !self.need_more()? {
                            return Ok(None);
                        }
                    }
                    Err(e) => return Err(self.corrupt(offset, e)),
                },
                Format::PcapNg {
                    parser, interfaces, ..
                } => match parser.next_block(avail) {
                    Ok((rest, block)) => {
                        let used = avail.len() - rest.len();
                        let start = self.pos;
                        self.pos += used;
                        let found = match block {
                            Block::InterfaceDescription(idb) => {
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
                                Some((
                                    Timestamp::from_nanos(raw_ts.saturating_mul(unit)),
                                    link,
                                    locate(avail, &epb.data),
                                    epb.original_len,
                                ))
                            }
                            Block::SimplePacket(spb) => {
                                let link =
                                    interfaces.first().map_or(LinkType::Ethernet, |&(l, _)| l);
                                Some((
                                    Timestamp::default(),
                                    link,
                                    locate(avail, &spb.data),
                                    spb.original_len,
                                ))
                            }
                            _ => None,
                        };
                        if let Some((ts, link, (from, to), orig_len)) = found {
                            let data = self.buf.get(start + from..start + to).unwrap_or_default();
                            return Ok(Some(CapturedPacket {
                                ts,
                                link,
                                data,
                                orig_len,
                            }));
                        }
                    }
                    Err(PcapError::IncompleteBuffer) => {
                        if !self.need_more()? {
                            return Ok(None);
                        }
                    }
                    Err(e) => return Err(self.corrupt(offset, e)),
                },
            }
        }
    }
}

fn pcap_packet(raw: &RawPcapPacket<'_>, link: LinkType, nanos: bool) -> CapturedPacket<'static> {
    let frac = u64::from(raw.ts_frac);
    let frac_nanos = if nanos {
        frac
    } else {
        frac.saturating_mul(1_000)
    };
    CapturedPacket {
        ts: Timestamp::from_nanos(
            u64::from(raw.ts_sec)
                .saturating_mul(1_000_000_000)
                .saturating_add(frac_nanos),
        ),
        link,
        data: &[],
        orig_len: raw.orig_len,
    }
}

/// Where `inner` (a sub-slice of `outer`) sits inside `outer`.
fn locate(outer: &[u8], inner: &[u8]) -> (usize, usize) {
    let start = (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize);
    let start = start.min(outer.len());
    (start, (start + inner.len()).min(outer.len()))
}

/// Link type and nanoseconds per timestamp unit of a pcapng interface.
fn interface(
    idb: &pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock<'_>,
) -> (LinkType, u64) {
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
