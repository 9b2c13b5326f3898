//! Reloading the policy while the agent runs: on SIGHUP and when the file changes.
//!
//! The check is cheap (an atomic flag and a metadata call) and is made between packets, so the
//! new policy takes over from one packet to the next and none is lost. A policy that fails to
//! load leaves the one in force untouched; the caller reports why (log, metric and an alert).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use otwatch_rules::policy::{Policy, Warning};

use crate::policy_file::{self, PolicyLoadError};

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
    hangup: Arc<AtomicBool>,
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
            hangup,
            reloads: 0,
            failures: 0,
        })
    }

    /// Successful reloads so far.
    pub fn reloads(&self) -> u64 {
        self.reloads
    }

    /// Rejected reloads so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Reloads if SIGHUP arrived or the file changed since the last load; `None` otherwise.
    pub fn poll(&mut self) -> Option<Reload> {
        let hangup = self.hangup.swap(false, Ordering::Relaxed);
        let now = stamp(&self.path);
        if !hangup && now == self.last {
            return None;
        }
        self.last = now;
        Some(match policy_file::load(&self.path) {
            Ok((policy, warnings)) => {
                self.reloads += 1;
                Reload::Loaded(Arc::new(policy), warnings)
            }
            Err(e) => {
                self.failures += 1;
                Reload::Rejected(e)
            }
        })
    }
}

#[cfg(test)]
mod tests;
