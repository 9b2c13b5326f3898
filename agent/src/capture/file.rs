//! Reading classic pcap and pcapng files and streams: the pure decoder of `otwatch-packet`
//! ([`CaptureDecoder`]) fed from a file, a pipe or standard input, with errors that name the
//! file.
//!
//! The file is read through the decoder's one buffer: memory stays flat however large the
//! capture, and packets are handed out as slices of that buffer without copying.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use otwatch_packet::capture_file::{CaptureDecoder, CaptureError, CaptureInput};

use super::{CapturedPacket, PacketSource};

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
    /// The file ends in the middle of a record (or of its file header).
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

/// A capture file opened for reading, packet by packet: the pure decoder
/// ([`CaptureDecoder`]) fed from a file, a pipe or standard input.
pub struct CaptureFile {
    path: PathBuf,
    reader: Box<dyn Read + Send>,
    decoder: CaptureDecoder,
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
        reader: Box<dyn Read + Send>,
        size: u64,
    ) -> Result<Self, CaptureFileError> {
        let mut capture = Self {
            path: path.to_path_buf(),
            reader,
            decoder: CaptureDecoder::new(),
            size,
        };
        let Self {
            path,
            reader,
            decoder,
            ..
        } = &mut capture;
        decoder.read_header(&mut FileInput { path, reader })?;
        Ok(capture)
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether a whole record is buffered, so the next packet can be handed out without
    /// reading (which, on a pipe, waits for the writer).
    pub fn holds_whole_record(&self) -> bool {
        self.decoder.holds_whole_record()
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.decoder.offset()
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The decoder's input: `reader`, retried when interrupted; errors name the file (`path`).
struct FileInput<'a> {
    path: &'a Path,
    reader: &'a mut Box<dyn Read + Send>,
}

impl CaptureInput for FileInput<'_> {
    type Error = CaptureFileError;

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, CaptureFileError> {
        loop {
            match self.reader.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(io_failed(self.path, source)),
            }
        }
    }

    fn damaged(&self, e: CaptureError) -> CaptureFileError {
        damaged(self.path, e)
    }
}

/// Reading `path` failed.
#[cold]
#[inline(never)]
fn io_failed(path: &Path, source: io::Error) -> CaptureFileError {
    CaptureFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The capture in `path` is damaged (`e`).
#[cold]
#[inline(never)]
fn damaged(path: &Path, e: CaptureError) -> CaptureFileError {
    let path = path.to_path_buf();
    match e {
        CaptureError::UnknownFormat { magic } => CaptureFileError::UnknownFormat { path, magic },
        CaptureError::Truncated {
            offset,
            needed,
            present,
        } => CaptureFileError::Truncated {
            path,
            offset,
            needed,
            present,
        },
        CaptureError::Corrupt { offset, reason } => CaptureFileError::Corrupt {
            path,
            offset,
            reason,
        },
    }
}

impl PacketSource for CaptureFile {
    type Error = CaptureFileError;

    #[inline]
    fn next_packet(&mut self) -> Result<Option<CapturedPacket<'_>>, CaptureFileError> {
        let Self {
            path,
            reader,
            decoder,
            ..
        } = self;
        decoder.next_packet(&mut FileInput { path, reader })
    }
}

#[cfg(test)]
mod tests;
