//! Following the policy the collector assigns (`policy_source = "collector"`).
//!
//! Every heartbeat's answer names the assigned policy's version in force. When it is not the
//! one the agent enforces, the shipper fetches the TOML, which is checked here by the same
//! parser as `otwatch-agent check`. A policy that passes is written atomically to the cache file
//! (so the agent starts enforcing it even while the collector is unreachable) and handed to the
//! reloader, which applies it between two batches exactly as a file reload; one that fails is
//! handed over as a rejection, which keeps the policy in force and raises
//! `agent.policy_reload_failed`. Each version is fetched once: a rejected one is not fetched
//! again until the collector names another.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use otwatch_rules::policy::Policy;
use otwatch_rules::wire::{AssignedPolicy, HeartbeatReply};

use crate::detection::policy_file::PolicyLoadError;
use crate::detection::policy_reload::Reload;

/// How long a version that could not be kept waits before it is fetched again.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Decides when to fetch the assigned policy, checks what was fetched, keeps the last good
/// one on disk and hands each outcome to the reloader.
#[derive(Debug)]
pub struct PolicyFollower {
    cache: PathBuf,
    /// The hash of the last version handed over or loaded at start.
    handed: Option<String>,
    /// The hash of the last version refused, not fetched again.
    refused: Option<String>,
    /// The last version that could not be kept, and when: fetched again only after
    /// [`RETRY_AFTER`].
    unkept: Option<(String, Instant)>,
    reloader: Sender<Reload>,
}

impl PolicyFollower {
    /// Follows into `cache` (the file the agent starts from), whose policy, if any, is in force
    /// with hash `in_force`; outcomes go to `reloader`.
    pub fn new(cache: PathBuf, in_force: Option<String>, reloader: Sender<Reload>) -> Self {
        Self {
            cache,
            handed: in_force,
            refused: None,
            unkept: None,
            reloader,
        }
    }

    /// The assigned policy to fetch after this heartbeat answer, if its version is neither the
    /// one the agent enforces (`applied`, from the heartbeat) nor one already handed over or
    /// refused. No policy assigned keeps the one in force.
    pub fn wanted<'a>(
        &self,
        reply: &'a HeartbeatReply,
        applied: Option<&str>,
    ) -> Option<&'a AssignedPolicy> {
        let assigned = reply.policy.as_ref()?;
        let known = |hash: &Option<String>| hash.as_deref() == Some(assigned.hash.as_str());
        let waiting = self
            .unkept
            .as_ref()
            .is_some_and(|(hash, at)| *hash == assigned.hash && at.elapsed() < RETRY_AFTER);
        (applied != Some(assigned.hash.as_str())
            && !known(&self.handed)
            && !known(&self.refused)
            && !waiting)
            .then_some(assigned)
    }

    /// Takes what the collector sent for `assigned`: checks it, keeps it and hands it to the
    /// reloader, or hands over why it was refused. `None` (nothing assigned any more, by the
    /// time of the fetch) keeps the policy in force. Returns the hash now in force, if it
    /// changed.
    pub fn take(&mut self, assigned: &AssignedPolicy, text: Option<String>) -> Option<String> {
        let text = text?;
        let label = format!("collector policy {:?}", assigned.name);
        let outcome = match Policy::parse(&text, &label) {
            Ok((policy, warnings)) => match write_atomically(&self.cache, &text) {
                Ok(()) => {
                    self.handed = Some(policy.hash.clone());
                    Reload::Loaded(Arc::new(policy), warnings)
                }
                Err(source) => {
                    // Not kept, so not applied: a restart would not enforce it. Tried again
                    // after a while.
                    self.unkept = Some((assigned.hash.clone(), Instant::now()));
                    tracing::warn!(
                        "cannot keep the assigned policy in {}: {source}; it is not applied",
                        self.cache.display()
                    );
                    return None;
                }
            },
            Err(e) => {
                // What the agent refuses is named by the hash the collector gave, so it is
                // not fetched again.
                self.refused = Some(assigned.hash.clone());
                Reload::Rejected(PolicyLoadError::Invalid(e))
            }
        };
        let loaded = match &outcome {
            Reload::Loaded(policy, _) => Some(policy.hash.clone()),
            Reload::Rejected(_) => None,
        };
        // The reloader has gone only when the agent is stopping.
        let _ = self.reloader.send(outcome);
        loaded
    }
}

/// Replaces `path` with `text` so a crash leaves the old file or the new one, never half of
/// one: a temporary file beside it, flushed to disk, renamed over it, and the folder flushed.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut file = tempfile::NamedTempFile::new_in(folder)?;
    file.write_all(text.as_bytes())?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    // The new file is in place: a folder that cannot be flushed only risks the rename on a
    // crash, which leaves the old policy (still a good one).
    if let Err(e) = std::fs::File::open(folder).and_then(|f| f.sync_all()) {
        tracing::warn!("cannot flush {} to disk: {e}", folder.display());
    }
    Ok(())
}

/// Whether the agent can keep a policy in `path`: its folder takes a new file. Checked at start,
/// so an agent told to follow the collector into a read-only place says so at once rather than
/// fetching forever.
pub fn can_keep(path: &Path) -> std::io::Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    tempfile::NamedTempFile::new_in(folder).map(drop)
}

#[cfg(test)]
mod tests;
