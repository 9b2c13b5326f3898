//! Sending to the collector, behind a small trait so the transport can change (a message bus
//! for several collectors, later) without touching the shipper. [`HttpsSender`] is the one
//! transport today: JSON over HTTPS (rustls, through `ureq`), a bearer token, and the
//! collector's own certificate authority.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use otwatch_rules::wire::{Heartbeat, IngestBatch, IngestReply};
use ureq::tls::{PemItem, RootCerts, TlsConfig};

/// Why a delivery failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The collector could not be reached or failed (connection, TLS, timeout, 5xx, 429):
    /// try again later.
    #[error("collector unreachable: {0}")]
    Unreachable(String),
    /// The collector refused the request (4xx other than 429), with its explanation.
    #[error("collector refused the request ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The collector's message.
        message: String,
    },
}

impl SendError {
    /// Whether the collector said the batch is too large (smaller batches may pass).
    pub fn too_large(&self) -> bool {
        matches!(self, Self::Refused { status: 413, .. })
    }
}

/// Delivers batches and heartbeats to a collector.
pub trait Sender: Send {
    /// Delivers a batch; `Ok` means the collector stored it durably.
    fn ingest(&mut self, batch: &IngestBatch) -> Result<IngestReply, SendError>;
    /// Reports the agent's health.
    fn heartbeat(&mut self, heartbeat: &Heartbeat) -> Result<(), SendError>;
}

/// Why a sender could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SenderSetupError {
    /// The certificate authority file could not be read.
    #[error("collector_ca: {path}: {source}")]
    ReadCa {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no PEM certificate.
    #[error("collector_ca: {0}: no PEM certificate in it (expected the collector's ca.pem)")]
    NoCertificate(String),
    /// The URL is not usable.
    #[error("collector_url: {0:?} is not valid (expected https://HOST:PORT, or http:// for a lab)")]
    Url(String),
}

/// JSON over HTTPS to `otwatch-collector`.
pub struct HttpsSender {
    agent: ureq::Agent,
    base: String,
    authorization: String,
}

impl std::fmt::Debug for HttpsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsSender")
            .field("base", &self.base)
            .finish()
    }
}

/// Requests that take longer than this fail (and are retried).
const TIMEOUT: Duration = Duration::from_secs(30);

/// Connecting that takes longer than this fails (and is retried).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl HttpsSender {
    /// A sender to the collector at `url` (`https://host:port`), presenting `token`, trusting
    /// the certificates in `ca` (the collector's `ca.pem`) or, without one, the public roots.
    pub fn new(url: &str, token: &str, ca: Option<&Path>) -> Result<Self, SenderSetupError> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("https://") || base.starts_with("http://")) || base.len() < 9 {
            return Err(SenderSetupError::Url(url.to_string()));
        }
        let mut tls = TlsConfig::builder();
        if let Some(path) = ca {
            let pem = std::fs::read(path).map_err(|source| SenderSetupError::ReadCa {
                path: path.display().to_string(),
                source,
            })?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(SenderSetupError::NoCertificate(path.display().to_string()));
            }
            tls = tls.root_certs(RootCerts::Specific(Arc::new(certs)));
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .build()
            .new_agent();
        Ok(Self {
            agent,
            base,
            authorization: format!("Bearer {token}"),
        })
    }

    fn post<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<R, SendError> {
        let mut response = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", &self.authorization)
            .send_json(body)
            .map_err(|e| SendError::Unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return response
                .body_mut()
                .read_json()
                .map_err(|e| SendError::Unreachable(format!("unreadable reply: {e}")));
        }
        let message = response
            .body_mut()
            .read_json::<serde_json::Value>()
            .ok()
            .and_then(|v| v.get("error").and_then(|m| m.as_str()).map(String::from))
            .unwrap_or_else(|| {
                response
                    .status()
                    .canonical_reason()
                    .unwrap_or("")
                    .to_string()
            });
        if status == 429 || status >= 500 {
            Err(SendError::Unreachable(format!("{status}: {message}")))
        } else {
            Err(SendError::Refused { status, message })
        }
    }
}

impl Sender for HttpsSender {
    fn ingest(&mut self, batch: &IngestBatch) -> Result<IngestReply, SendError> {
        self.post("/api/v1/ingest", batch)
    }

    fn heartbeat(&mut self, heartbeat: &Heartbeat) -> Result<(), SendError> {
        self.post::<_, serde_json::Value>("/api/v1/heartbeat", heartbeat)
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests;
