//! Credentials: random bearer tokens, each with a name and a role, kept hashed (SHA-256); and
//! finding what a request presents (an `Authorization: Bearer` token, or the dashboard's
//! session cookie).
//!
//! Where they are kept follows the store:
//! - With sled, in `credentials.json` in the data folder, apart from the store (which one
//!   process holds open) so `otwatch-collector enroll` and `revoke` work while the collector
//!   runs. It is written atomically (a temporary file renamed over it, under a lock) and
//!   readable by its owner only.
//! - With a database, in one record of it ([`crate::store::CREDENTIALS_KEY`]), changed inside a
//!   writer section, so every replica knows every agent as soon as it is enrolled.
//!
//! Either way the server rereads them when they change (checking every second, off the request
//! path) and tells whoever listens ([`Credentials::changes`]), so a credential enrolled or
//! revoked anywhere takes effect on every replica within a second, and a revoked credential's
//! sessions and live feeds end then.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use otwatch_rules::time::Timestamp;

use crate::kv::{Batch, Kv};
use crate::store::model::{Principal, Role};

/// The dashboard's session cookie over HTTPS: a random session id, never the token itself.
/// The `__Host-` prefix makes browsers take it only from this host, over HTTPS, for the whole
/// site, so no sibling host can plant a session of its own choosing.
pub const COOKIE_NAME: &str = "__Host-otwatch_session";

/// The cookie's name over plain HTTP (a lab), where `__Host-` cookies cannot be set.
pub const PLAIN_HTTP_COOKIE_NAME: &str = "otwatch_session";

/// The session cookie's name when serving HTTPS (`https`) or plain HTTP.
pub fn cookie_name(https: bool) -> &'static str {
    if https {
        COOKIE_NAME
    } else {
        PLAIN_HTTP_COOKIE_NAME
    }
}

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
    /// No credential has that name.
    #[error("name: {0:?} is not enrolled (expected a name `list` shows)")]
    Unknown(String),
    /// The shared store failed.
    #[error("credentials in the store: {0}")]
    Store(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// SHA-256 of the token, hex.
    hash: String,
    name: String,
    role: Role,
    /// When it was enrolled (absent for credentials enrolled before this was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created: Option<Timestamp>,
}

/// A credential as `list` shows it: never its token or hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enrolled {
    /// The name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was enrolled, if known.
    pub created: Option<Timestamp>,
}

/// Which version of a file is on disk: its modification time, inode and size. Every change
/// replaces the file through a rename (a new inode), so two changes within the file system's
/// timestamp granularity still differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    modified: SystemTime,
    inode: u64,
    len: u64,
}

impl FileStamp {
    /// The stamp of the file at `path`, if it exists.
    pub fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            modified: m.modified().ok()?,
            inode: m.ino(),
            len: m.len(),
        })
    }
}

/// Where credentials are kept (see the module documentation).
enum Backing {
    /// `credentials.json` in the data folder.
    File(PathBuf),
    /// A record of a store replicas share.
    Shared(Arc<dyn Kv>),
}

impl std::fmt::Debug for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Shared(_) => f.write_str("Shared"),
        }
    }
}

/// Which version of the credentials the cache holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Version {
    /// The file's stamp (`None`: no file).
    File(Option<FileStamp>),
    /// The record's bytes (`None`: no record).
    Shared(Option<Vec<u8>>),
}

/// The credentials, cached and reread when they change.
#[derive(Debug)]
pub struct Credentials {
    backing: Backing,
    cache: RwLock<(Version, Vec<Entry>)>,
    /// Changes made by this process, one at a time (the store's section orders processes).
    writer: Mutex<()>,
    /// Bumped whenever the cached credentials change.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Credentials {
    /// The credentials in `data/credentials.json` (an absent file means none yet).
    pub fn open(data: &Path) -> Result<Self, CredentialError> {
        Self::with(Backing::File(data.join("credentials.json")))
    }

    /// The credentials in a store replicas share.
    pub fn shared(kv: Arc<dyn Kv>) -> Result<Self, CredentialError> {
        Self::with(Backing::Shared(kv))
    }

    fn with(backing: Backing) -> Result<Self, CredentialError> {
        let this = Self {
            backing,
            cache: RwLock::new((Version::File(None), Vec::new())),
            writer: Mutex::new(()),
            changed: tokio::sync::watch::Sender::new(0),
        };
        this.reload()?;
        Ok(this)
    }

    /// The credentials as kept now, with their version.
    fn load(&self) -> Result<(Version, Vec<Entry>), CredentialError> {
        match &self.backing {
            Backing::File(path) => {
                let version = Version::File(FileStamp::of(path));
                let entries = match std::fs::read(path) {
                    Ok(bytes) => parse(&bytes, path)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(source) => {
                        return Err(CredentialError::Io {
                            path: path.clone(),
                            source,
                        });
                    }
                };
                Ok((version, entries))
            }
            Backing::Shared(kv) => {
                let bytes = kv
                    .get(crate::store::CREDENTIALS_KEY)
                    .map_err(|e| CredentialError::Store(e.to_string()))?;
                let entries = match &bytes {
                    Some(b) => parse(b, Path::new("the store's credentials record"))?,
                    None => Vec::new(),
                };
                Ok((Version::Shared(bytes), entries))
            }
        }
    }

    fn read(&self) -> Result<Vec<Entry>, CredentialError> {
        self.load().map(|(_, entries)| entries)
    }

    fn reload(&self) -> Result<(), CredentialError> {
        let loaded = self.load()?;
        self.replace(loaded);
        Ok(())
    }

    fn replace(&self, loaded: (Version, Vec<Entry>)) {
        if let Ok(mut cache) = self.cache.write() {
            *cache = loaded;
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Rereads the credentials if they changed since they were last read; returns whether
    /// they did. The server calls this every second, so a `revoke` from another process (or
    /// replica) takes effect at once even with no request arriving.
    pub fn refresh(&self) -> Result<bool, CredentialError> {
        let cached = self.cache.read().map(|c| c.0.clone()).ok();
        let stale = match &self.backing {
            Backing::File(path) => cached != Some(Version::File(FileStamp::of(path))),
            Backing::Shared(_) => {
                let loaded = self.load()?;
                if cached.as_ref() == Some(&loaded.0) {
                    return Ok(false);
                }
                self.replace(loaded);
                return Ok(true);
            }
        };
        if stale {
            self.reload()?;
        }
        Ok(stale)
    }

    /// [`Credentials::refresh`] for a lookup: a file is checked every time (one `stat`); a
    /// shared record never here (a lookup runs on the request path, which must not wait for a
    /// database): the server rereads it every second.
    fn refresh_for_lookup(&self) {
        if matches!(self.backing, Backing::Shared(_)) {
            return;
        }
        if let Err(e) = self.refresh() {
            tracing::warn!(error = %e, "credentials not reread; the last ones read still hold");
        }
    }

    /// A receiver that sees every change of the credentials.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Enrolls `name` with `role` and returns its new token (shown once, never stored).
    pub fn enroll(&self, name: &str, role: Role) -> Result<String, CredentialError> {
        let token = new_token()?;
        self.update(|entries| {
            if entries.iter().any(|e| e.name == name) {
                return Err(CredentialError::Taken(name.to_string()));
            }
            entries.push(Entry {
                hash: hash(&token),
                name: name.to_string(),
                role,
                created: Some(crate::server::now()),
            });
            Ok(())
        })?;
        Ok(token)
    }

    /// Removes the credential `name`: its token, the sessions it opened and the live feeds
    /// they hold stop working as soon as the running collector sees the file change.
    pub fn revoke(&self, name: &str) -> Result<Role, CredentialError> {
        let mut role = None;
        self.update(|entries| {
            let at = entries
                .iter()
                .position(|e| e.name == name)
                .ok_or_else(|| CredentialError::Unknown(name.to_string()))?;
            role = Some(entries.remove(at).role);
            Ok(())
        })?;
        role.ok_or_else(|| CredentialError::Unknown(name.to_string()))
    }

    /// Every credential, by name.
    pub fn list(&self) -> Result<Vec<Enrolled>, CredentialError> {
        let mut all: Vec<Enrolled> = self
            .read()?
            .into_iter()
            .map(|e| Enrolled {
                name: e.name,
                role: e.role,
                created: e.created,
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Reads, changes and writes the credentials so that no concurrent change in another
    /// process (or replica) can lose this one's or be lost.
    fn update(
        &self,
        change: impl FnOnce(&mut Vec<Entry>) -> Result<(), CredentialError>,
    ) -> Result<(), CredentialError> {
        match &self.backing {
            Backing::File(path) => self.update_file(path, change),
            Backing::Shared(kv) => {
                let store = |e: crate::kv::KvError| CredentialError::Store(e.to_string());
                let _local = self
                    .writer
                    .lock()
                    .map_err(|_| CredentialError::Store("writer poisoned".into()))?;
                let _section = kv.section().map_err(store)?;
                let mut entries = self.read()?;
                change(&mut entries)?;
                let mut b = Batch::new();
                b.put(crate::store::CREDENTIALS_KEY.to_vec(), json_of(&entries)?);
                kv.apply(b).map_err(store)?;
                kv.flush().map_err(store)?;
                self.reload()
            }
        }
    }

    /// [`Credentials::update`] of the file, under an exclusive lock on `credentials.lock`,
    /// through a temporary file of this call's own.
    fn update_file(
        &self,
        path: &Path,
        change: impl FnOnce(&mut Vec<Entry>) -> Result<(), CredentialError>,
    ) -> Result<(), CredentialError> {
        let io = |source| CredentialError::Io {
            path: path.to_path_buf(),
            source,
        };
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.with_extension("lock"))
            .map_err(io)?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io(e.into()))?;
        let mut entries = self.read()?;
        change(&mut entries)?;
        let unique = &new_token()?[4..20];
        let tmp = path.with_extension(format!("json.{}.{unique}.tmp", std::process::id()));
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
            f.write_all(&json_of(&entries)?).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        // The lock goes with `lock` when it is dropped, after the file is replaced.
        self.reload()
    }

    /// Who holds `token`, if anyone (rereading the file if it changed).
    pub fn principal(&self, token: &str) -> Option<Principal> {
        self.principal_of_hash(&hash(token))
    }

    /// Who holds the token whose hash ([`hash`]) is `wanted`, if anyone: how a session finds
    /// the credential that opened it, so revoking the credential ends the session.
    pub fn principal_of_hash(&self, wanted: &str) -> Option<Principal> {
        self.refresh_for_lookup();
        self.cached(wanted)
    }

    fn cached(&self, wanted: &str) -> Option<Principal> {
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

fn parse(bytes: &[u8], path: &Path) -> Result<Vec<Entry>, CredentialError> {
    serde_json::from_slice(bytes).map_err(|e| CredentialError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn json_of(entries: &[Entry]) -> Result<Vec<u8>, CredentialError> {
    serde_json::to_vec_pretty(entries).map_err(|e| CredentialError::Corrupt {
        path: PathBuf::from("credentials"),
        message: e.to_string(),
    })
}

/// SHA-256 of a token or session id, hex: what is kept instead of the secret.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
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

/// A new random session id: 64 hex digits (256 bits from the operating system).
pub fn new_session_id() -> Result<String, CredentialError> {
    Ok(new_token()?[4..].to_string())
}

/// What a request presents to prove who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// A bearer token (agents, scripts): never subject to the browser checks.
    Token(String),
    /// The dashboard's session cookie.
    Session(String),
}

/// What a request presents, if anything: a bearer token first, else the session cookie (under
/// [`cookie_name`] for `https`).
pub fn presented(headers: &HeaderMap, https: bool) -> Option<Presented> {
    let cookie = cookie_name(https);
    if let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(token) = value.strip_prefix("Bearer ")
    {
        return Some(Presented::Token(token.trim().to_string()));
    }
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == cookie)
        .map(|(_, value)| Presented::Session(value.to_string()))
}

#[cfg(test)]
mod tests;
