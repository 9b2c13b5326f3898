//! A pcap stream as a live source: `tcpdump -i eth0 -w - | otwatch-agent run --pcap-stream -`,
//! a FIFO, or a capture a simulator is still writing. Packets keep their own timestamps; the
//! stream ends when its writer closes it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{CaptureFile, CaptureFileError};
use super::live::{LiveSource, Polled};
use super::{CapturedPacket, PacketSource};

/// A pcap or pcapng stream read as it arrives.
pub struct PcapStream {
    capture: CaptureFile,
    ended: bool,
}

impl std::fmt::Debug for PcapStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapStream")
            .field("path", &self.capture.path())
            .finish_non_exhaustive()
    }
}

impl PcapStream {
    /// Opens `path`, or standard input for `-`; blocks until the stream's header arrives.
    pub fn open(path: &Path) -> Result<Self, CaptureFileError> {
        let capture = if path == Path::new("-") {
            CaptureFile::from_reader(
                &PathBuf::from("standard input"),
                Box::new(std::io::stdin()),
                0,
            )?
        } else {
            let file = std::fs::File::open(path).map_err(|source| CaptureFileError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            CaptureFile::from_reader(path, Box::new(file), 0)?
        };
        Ok(Self {
            capture,
            ended: false,
        })
    }
}

impl LiveSource for PcapStream {
    fn describe(&self) -> String {
        format!("pcap stream from {}", self.capture.path().display())
    }

    fn poll(
        &mut self,
        _timeout: Duration,
        on_packet: &mut dyn FnMut(&CapturedPacket<'_>),
    ) -> std::io::Result<Polled> {
        if self.ended {
            return Ok(Polled::End);
        }
        // Hand out what is already buffered; only the first read may block until the writer
        // writes, so packets read are never held back waiting for the rest of a record.
        let mut count = 0;
        loop {
            match self.capture.next_packet() {
                Ok(Some(packet)) => {
                    on_packet(&packet);
                    count += 1;
                }
                Ok(None) => {
                    self.ended = true;
                    return Ok(if count == 0 {
                        Polled::End
                    } else {
                        Polled::Packets(count)
                    });
                }
                Err(e) => {
                    // A damaged stream cannot be resynchronised: report it, then end.
                    self.ended = true;
                    return Err(std::io::Error::other(e));
                }
            }
            if !self.capture.holds_whole_record() {
                return Ok(Polled::Packets(count));
            }
        }
    }

    fn kernel_drops(&mut self) -> u64 {
        0
    }

    /// The writer blocks when the pipeline falls behind: nothing is dropped, and every return
    /// of [`poll`](Self::poll) is a point to hand the batch over (the next may block).
    fn can_wait(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
