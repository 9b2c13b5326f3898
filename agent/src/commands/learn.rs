//! `otwatch-agent learn`: write a reviewable allowlist policy from normal traffic, read from
//! capture files or watched live on an interface for a while.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use otwatch_rules::learn::Learner;

use crate::capture::file::CaptureFileError;
use crate::capture::live::{Capture, LiveSource, Next};
use crate::commands::offline::{self, FileReport};
use crate::detection::learn_requests::Learning;
use crate::telemetry::events::{CaptureFailed, InternalEvent};
use crate::telemetry::status::Status;
use otwatch_packet::flow_table::FlowConfig;
use otwatch_packet::pipeline::Pipeline;

/// What learning produced.
#[derive(Debug)]
pub struct Learned {
    /// The policy, as TOML text.
    pub policy: String,
    /// Requests learned from.
    pub requests: u64,
    /// Per capture file.
    pub files: Vec<FileReport>,
}

/// How the learned policy is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Layout {
    /// Targets that behave alike become a `[groups]` entry with one rule per master.
    #[default]
    Grouped,
    /// One rule per (master, target, unit), as `learn --per-device` asks.
    PerDevice,
}

fn write(learner: &Learner, sources: &[String], layout: Layout) -> String {
    match layout {
        Layout::Grouped => learner.to_policy(sources),
        Layout::PerDevice => learner.to_policy_per_device(sources),
    }
}

/// Learns a policy from capture files.
pub fn learn(
    pcaps: &[PathBuf],
    flows: FlowConfig,
    progress: bool,
    layout: Layout,
) -> Result<Learned, CaptureFileError> {
    let mut captures = offline::open_all(pcaps)?;
    let mut pipeline = Pipeline::new(flows, Learning(Learner::new()));
    let files = offline::feed(&mut captures, &mut pipeline, progress, &mut |_| {});
    pipeline.finish();
    let learner = pipeline.into_observer().0;
    let sources: Vec<String> = pcaps.iter().map(|p| p.display().to_string()).collect();
    Ok(Learned {
        policy: write(&learner, &sources, layout),
        requests: learner.requests(),
        files,
    })
}

/// Learns a policy from live traffic: reads `source` for `duration` (or until `stop` is set,
/// by SIGTERM or Ctrl-C), then writes what it saw. `what` names the source in the policy's
/// header comment.
pub fn learn_live(
    source: Box<dyn LiveSource>,
    what: &str,
    flows: FlowConfig,
    duration: Duration,
    stop: &AtomicBool,
    layout: Layout,
) -> std::io::Result<Learned> {
    // Learning publishes no status: the event only logs and counts into a throwaway one.
    let status = Status::new();
    let capture = Capture::start(
        source,
        Box::new(move |e| CaptureFailed { error: &e }.emit(&status)),
    )?;
    tracing::info!(
        "learning from {} for {}",
        capture.description(),
        humantime::format_duration(duration)
    );
    let mut pipeline = Pipeline::new(flows, Learning(Learner::new()));
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        match capture.next_batch(Duration::from_millis(100)) {
            Next::Batch(batch) => {
                for packet in batch.packets() {
                    pipeline.packet(&packet);
                }
            }
            Next::Idle => {}
            Next::Ended => break,
        }
    }
    for batch in capture.stop() {
        for packet in batch.packets() {
            pipeline.packet(&packet);
        }
    }
    pipeline.finish();
    let learner = pipeline.into_observer().0;
    Ok(Learned {
        policy: write(&learner, &[what.to_string()], layout),
        requests: learner.requests(),
        files: Vec::new(),
    })
}
