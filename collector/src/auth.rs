//! Credentials: random bearer tokens, each with a name and a role, kept hashed (SHA-256) in
//! `credentials.json` in the data folder; and finding the caller's token in a request (an
//! `Authorization: Bearer` header, or the dashboard's cookie).
//!
//! The file is separate from the store so `otwatch-collector enroll` works while the collector
//! runs: the server rereads it when it changes. It is written atomically (a temporary file
//! renamed over it) and readable by its owner only.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::model::{Principal, Role};

/// The dashboard's session cookie.
pub const COOKIE_NAME: &str = "otwatch_token";

/// Why credentials could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("{path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The operating system gave no randomness.
    #[error("no randomness for a token: {0}")]
    Random(String),
    /// A name is already enrolled with another role.
    #[error("name: {0:?} is already enrolled (expected a new name)")]
    Taken(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// SHA-256 of the token, hex.
    hash: String,
    name: String,
    role: Role,
}

/// The credentials file, cached and reread when it changes.
#[derive(Debug)]
pub struct Credentials {
    path: PathBuf,
    cache: RwLock<(Option<SystemTime>, Vec<Entry>)>,
}

impl Credentials {
    /// The credentials in `data/credentials.json` (an absent file means none yet).
    pub fn open(data: &Path) -> Result<Self, CredentialError> {
        let this = Self {
            path: data.join("credentials.json"),
            cache: RwLock::new((None, Vec::new())),
        };
        this.reload()?;
        Ok(this)
    }

    fn read(&self) -> Result<Vec<Entry>, CredentialError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| CredentialError::Corrupt {
                path: self.path.clone(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(CredentialError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn modified(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok()
    }

    fn reload(&self) -> Result<(), CredentialError> {
        let modified = self.modified();
        let entries = self.read()?;
        if let Ok(mut cache) = self.cache.write() {
            *cache = (modified, entries);
        }
        Ok(())
    }

    /// Enrolls `name` with `role` and returns its new token (shown once, never stored).
    /// Enrolls in other processes wait: the file is read, changed and replaced under an
    /// exclusive lock on `credentials.lock`, through a temporary file of this call's own, so no
    /// concurrent enroll can lose another's entry.
    pub fn enroll(&self, name: &str, role: Role) -> Result<String, CredentialError> {
        let io = |source| CredentialError::Io {
            path: self.path.clone(),
            source,
        };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_extension("lock"))
            .map_err(io)?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io(e.into()))?;
        let mut entries = self.read()?;
        if entries.iter().any(|e| e.name == name) {
            return Err(CredentialError::Taken(name.to_string()));
        }
        let token = new_token()?;
        entries.push(Entry {
            hash: hash(&token),
            name: name.to_string(),
            role,
        });
        let tmp =
            self.path
                .with_extension(format!("json.{}.{}.tmp", std::process::id(), &token[4..20]));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            let text =
                serde_json::to_vec_pretty(&entries).map_err(|e| CredentialError::Corrupt {
                    path: tmp.clone(),
                    message: e.to_string(),
                })?;
            f.write_all(&text).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        // The lock goes with `lock` when it is dropped, after the file is replaced.
        self.reload()?;
        Ok(token)
    }

    /// Who holds `token`, if anyone (rereading the file if it changed).
    pub fn principal(&self, token: &str) -> Option<Principal> {
        let stale = self
            .cache
            .read()
            .map(|c| c.0 != self.modified())
            .unwrap_or(true);
        if stale {
            let _ = self.reload();
        }
        let wanted = hash(token);
        let cache = self.cache.read().ok()?;
        cache
            .1
            .iter()
            .find(|e| constant_time_eq(e.hash.as_bytes(), wanted.as_bytes()))
            .map(|e| Principal {
                name: e.name.clone(),
                role: e.role,
            })
    }
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares without an early exit, so timing says nothing about where hashes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random token: `otw_` and 64 hex digits (256 bits from the operating system).
pub fn new_token() -> Result<String, CredentialError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| CredentialError::Random(e.to_string()))?;
    Ok(format!("otw_{}", hex::encode(bytes)))
}

/// The token a request carries, if any.
pub fn token_of(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(token) = value.strip_prefix("Bearer ")
    {
        return Some(token.trim().to_string());
    }
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_string())
}

#[cfg(test)]
mod tests;
