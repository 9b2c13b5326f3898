//! Reloading the policy while the agent runs: on SIGHUP, when the file changes, and when a
//! policy the collector assigns arrives (`policy_source = "collector"`).
//!
//! The check is cheap (an atomic flag and a metadata call) and is made between packets, so the
//! new policy takes over from one packet to the next and none is lost. A changed file is loaded
//! once it has stopped changing for [`SETTLE`], so an editor that truncates the file and then
//! writes it is not caught halfway; SIGHUP loads at once. A policy that fails to load leaves the
//! one in force untouched; the caller reports why (log, metric and an alert).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant, SystemTime};

use otwatch_rules::policy::{Policy, Warning};

use crate::detection::policy_file::{self, PolicyLoadError};

/// How long a changed policy file must stay unchanged before it is loaded.
pub const SETTLE: Duration = Duration::from_millis(300);

/// What the file looked like when last loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// The outcome of a reload attempt.
#[derive(Debug)]
pub enum Reload {
    /// A new policy, valid, now to be put in force.
    Loaded(Arc<Policy>, Vec<Warning>),
    /// The file changed (or SIGHUP came) but does not load: the old policy stays.
    Rejected(PolicyLoadError),
}

/// Watches one policy file for changes and for SIGHUP.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    last: Option<Stamp>,
    /// A change seen but not yet loaded: how the file looked and since when it has.
    settling: Option<(Option<Stamp>, Instant)>,
    hangup: Arc<AtomicBool>,
    /// Policies the collector assigns, already checked and written to the file.
    assigned: Option<Receiver<Reload>>,
    /// The hash of the policy in force: a file changed to the same text is not applied again.
    in_force: Option<String>,
    reloads: u64,
    failures: u64,
}

impl Reloader {
    /// Watches `path`, whose current contents are already in force. Registers a SIGHUP handler
    /// that only sets a flag.
    pub fn new(path: &Path) -> std::io::Result<Self> {
        let hangup = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, hangup.clone())?;
        Ok(Self {
            path: path.to_path_buf(),
            last: stamp(path),
            settling: None,
            hangup,
            assigned: None,
            in_force: None,
            reloads: 0,
            failures: 0,
        })
    }

    /// Takes policies the collector assigns from the returned channel: each is checked and
    /// written to the watched file before it is sent, so it is not loaded a second time.
    pub fn follow_collector(&mut self) -> Sender<Reload> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.assigned = Some(rx);
        tx
    }

    /// Tells the reloader the hash of the policy in force at start.
    pub fn set_in_force(&mut self, hash: Option<String>) {
        self.in_force = hash;
    }

    /// Successful reloads so far.
    pub fn reloads(&self) -> u64 {
        self.reloads
    }

    /// Rejected reloads so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Reloads if SIGHUP arrived, or if the file changed since the last load and has since
    /// stayed unchanged for [`SETTLE`]; `None` otherwise.
    pub fn poll(&mut self) -> Option<Reload> {
        if let Some(outcome) = self.assigned.as_ref().and_then(|rx| rx.try_recv().ok()) {
            return Some(self.count(outcome));
        }
        let hangup = self.hangup.swap(false, Ordering::Relaxed);
        let now = stamp(&self.path);
        if !hangup {
            if now == self.last {
                self.settling = None;
                return None;
            }
            match self.settling {
                Some((seen, since)) if seen == now => {
                    if since.elapsed() < SETTLE {
                        return None;
                    }
                }
                _ => {
                    self.settling = Some((now, Instant::now()));
                    return None;
                }
            }
        }
        self.settling = None;
        self.last = now;
        let outcome = match policy_file::load(&self.path) {
            // Following the collector, the file now holds the policy in force (written a
            // moment before it was handed over): nothing to apply unless SIGHUP asks. A file
            // edited back to the policy in force is applied (and said) as before.
            Ok((policy, _))
                if !hangup
                    && self.assigned.is_some()
                    && self.in_force.as_deref() == Some(policy.hash.as_str()) =>
            {
                return None;
            }
            Ok((policy, warnings)) => Reload::Loaded(Arc::new(policy), warnings),
            Err(e) => Reload::Rejected(e),
        };
        Some(self.count(outcome))
    }

    /// Counts an outcome; a policy from the collector was written to the file, which is then
    /// known as loaded.
    fn count(&mut self, outcome: Reload) -> Reload {
        match &outcome {
            Reload::Loaded(policy, _) => {
                self.reloads += 1;
                self.in_force = Some(policy.hash.clone());
                if self.assigned.is_some() {
                    self.last = stamp(&self.path);
                    self.settling = None;
                }
            }
            Reload::Rejected(_) => self.failures += 1,
        }
        outcome
    }
}

#[cfg(test)]
mod tests;
