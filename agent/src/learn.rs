//! `otwatch-agent learn`: write a reviewable allowlist policy from normal traffic.

use std::path::PathBuf;

use otwatch_rules::flow::{FlowEvent, FlowInfo};
use otwatch_rules::learn::Learner;
use otwatch_rules::time::Timestamp;

use crate::capture::file::CaptureFileError;
use crate::flow::FlowConfig;
use crate::offline::{self, FileReport};
use crate::pipeline::{Observer, Pipeline};

/// Feeds the learner from the pipeline.
struct Learning(Learner);

impl Observer for Learning {
    fn flow_event(&mut self, ts: Timestamp, flow: &FlowInfo, event: &FlowEvent<'_>) {
        self.0.observe(ts, flow, event);
    }
}

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

/// Learns a policy from capture files.
pub fn learn(
    pcaps: &[PathBuf],
    flows: FlowConfig,
    progress: bool,
) -> Result<Learned, CaptureFileError> {
    let mut captures = offline::open_all(pcaps)?;
    let mut pipeline = Pipeline::new(flows, Learning(Learner::new()));
    let files = offline::feed(&mut captures, &mut pipeline, progress, &mut |_| {});
    pipeline.finish();
    let learner = pipeline.into_observer().0;
    let sources: Vec<String> = pcaps.iter().map(|p| p.display().to_string()).collect();
    Ok(Learned {
        policy: learner.to_policy(&sources),
        requests: learner.requests(),
        files,
    })
}
