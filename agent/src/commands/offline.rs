//! Running capture files through a pipeline: every file is opened before the first packet
//! (a typo in the last name should not cost a long run), a progress bar is drawn on a terminal,
//! and damage stops only the damaged file, with what came before it kept.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::capture::PacketSource;
use crate::capture::file::{CaptureFile, CaptureFileError};
use otwatch_packet::pipeline::{Observer, Pipeline};

/// What happened to one capture file.
#[derive(Debug, Serialize)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// Packets read from it.
    pub packets: u64,
    /// Why reading stopped early, if it did.
    pub error: Option<String>,
}

/// Opens every capture, failing on the first that cannot be opened.
pub fn open_all(paths: &[PathBuf]) -> Result<Vec<CaptureFile>, CaptureFileError> {
    paths.iter().map(|p| CaptureFile::open(p)).collect()
}

/// Packets between calls of the `tick` callback of [`feed`].
pub const TICK_PACKETS: u64 = 4096;

/// Feeds every packet of every capture, in order, to the pipeline, calling `tick` every
/// [`TICK_PACKETS`] packets (to publish status) and once at the end.
pub fn feed<O: Observer>(
    captures: &mut [CaptureFile],
    pipeline: &mut Pipeline<O>,
    progress: bool,
    tick: &mut dyn FnMut(&mut Pipeline<O>),
) -> Vec<FileReport> {
    let total: u64 = captures.iter().map(CaptureFile::size).sum();
    let bar = if progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut files = Vec::new();
    let mut done_bytes = 0;
    for capture in captures.iter_mut() {
        let mut packets = 0u64;
        let error = loop {
            match capture.next_packet() {
                Ok(Some(packet)) => {
                    pipeline.packet(&packet);
                    packets += 1;
                    if packets.is_multiple_of(TICK_PACKETS) {
                        tick(pipeline);
                        if packets.is_multiple_of(65_536) {
                            bar.set_position(done_bytes + capture.offset());
                        }
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(e.to_string()),
            }
        };
        done_bytes += capture.size();
        bar.set_position(done_bytes);
        files.push(FileReport {
            path: capture.path().to_path_buf(),
            packets,
            error,
        });
    }
    bar.finish_and_clear();
    tick(pipeline);
    files
}
