//! Sending to the collector, behind a small trait so the transport can change without touching
//! the shipper. [`HttpsSender`] is the one transport today: JSON over HTTPS (rustls, through
//! `ureq`), a bearer token, and the collector's own certificate authority. It is also the one
//! place an HTTP response becomes a delivery outcome ([`Failure::from_http`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use otwatch_delivery::Failure;
use otwatch_rules::validate::MAX_POLICY_BYTES;
use otwatch_rules::wire::{Heartbeat, HeartbeatReply, IngestBatch, IngestReply};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use ureq::tls::{PemItem, RootCerts, TlsConfig};

/// Delivers batches and heartbeats to the collectors, by index (see
/// [`otwatch_delivery::Config::collectors`]).
pub trait Sender: Send {
    /// How many collectors this sender can reach.
    fn collectors(&self) -> usize;
    /// Collector `collector`'s name for logs, the heartbeat and `/metrics` (its address).
    fn name(&self, collector: usize) -> String {
        format!("collector {collector}")
    }
    /// Delivers a batch to collector `collector`; `Ok` means it stored the batch durably.
    fn ingest(&mut self, collector: usize, batch: &IngestBatch) -> Result<IngestReply, Failure>;
    /// Reports the agent's health to collector `collector`, which answers with the policy
    /// assigned to the agent.
    fn heartbeat(
        &mut self,
        collector: usize,
        heartbeat: &Heartbeat,
    ) -> Result<HeartbeatReply, Failure>;
    /// Fetches the policy collector `collector` assigns to `agent`: its TOML, or `None` when
    /// none is assigned.
    fn policy(&mut self, collector: usize, agent: &str) -> Result<Option<String>, Failure>;
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

/// JSON over HTTPS to `otwatch-collector`: one or several replicas, by index, the first
/// the preferred one.
pub struct HttpsSender {
    agent: ureq::Agent,
    bases: Vec<String>,
    authorization: String,
}

impl std::fmt::Debug for HttpsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsSender")
            .field("bases", &self.bases)
            .finish()
    }
}

/// Requests that take longer than this fail (and are retried).
const TIMEOUT: Duration = Duration::from_secs(30);

/// Connecting that takes longer than this fails (and is retried).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl HttpsSender {
    /// A sender to the collectors at `urls` (`https://host:port`, the first preferred: at
    /// least one), presenting `token`, trusting the certificates in `ca` (the collectors'
    /// `ca.pem`: replicas share one certificate authority) or, without one, the public roots.
    pub fn new<S: AsRef<str>>(
        urls: &[S],
        token: &str,
        ca: Option<&Path>,
    ) -> Result<Self, SenderSetupError> {
        let mut bases = Vec::with_capacity(urls.len());
        for url in urls {
            let url = url.as_ref();
            let base = url.trim_end_matches('/').to_string();
            if !(base.starts_with("https://") || base.starts_with("http://")) || base.len() < 9 {
                return Err(SenderSetupError::Url(url.to_string()));
            }
            bases.push(base);
        }
        if bases.is_empty() {
            return Err(SenderSetupError::Url(String::new()));
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
            bases,
            authorization: format!("Bearer {token}"),
        })
    }

    /// Reads a failed response into a delivery outcome: its status, `Retry-After` and message.
    fn failure(response: &mut ureq::http::Response<ureq::Body>) -> Failure {
        let status = response.status().as_u16();
        // Only the delay-seconds form: an HTTP date would need the wall clock to be right.
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let message = response
            .body_mut()
            .with_config()
            .limit(64 << 10)
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
        Failure::from_http(status, retry_after, message)
    }

    /// Collector `collector`'s address (a machine never names one past the list; the first
    /// stands in, should it).
    fn base(&self, collector: usize) -> &str {
        self.bases
            .get(collector)
            .or_else(|| self.bases.first())
            .map_or("", String::as_str)
    }

    fn post<T: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        collector: usize,
        path: &str,
        body: &T,
    ) -> Result<R, Failure> {
        let mut response = self
            .agent
            .post(format!("{}{path}", self.base(collector)))
            .header("Authorization", &self.authorization)
            .send_json(body)
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        if response.status().is_success() {
            return response
                .body_mut()
                .read_json()
                .map_err(|e| Failure::Unreachable(format!("unreadable reply: {e}")));
        }
        Err(Self::failure(&mut response))
    }
}

impl Sender for HttpsSender {
    fn collectors(&self) -> usize {
        self.bases.len()
    }

    fn name(&self, collector: usize) -> String {
        self.base(collector).to_string()
    }

    fn ingest(&mut self, collector: usize, batch: &IngestBatch) -> Result<IngestReply, Failure> {
        self.post(collector, "/api/v1/ingest", batch)
    }

    fn heartbeat(
        &mut self,
        collector: usize,
        heartbeat: &Heartbeat,
    ) -> Result<HeartbeatReply, Failure> {
        self.post(collector, "/api/v1/heartbeat", heartbeat)
    }

    fn policy(&mut self, collector: usize, agent: &str) -> Result<Option<String>, Failure> {
        let segment = utf8_percent_encode(agent, NON_ALPHANUMERIC);
        let mut response = self
            .agent
            .get(format!(
                "{}/api/v1/agents/{segment}/policy",
                self.base(collector)
            ))
            .header("Authorization", &self.authorization)
            .header("Accept", "application/toml")
            .call()
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        if response.status().as_u16() == 404 {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(Self::failure(&mut response));
        }
        // One byte over the bound tells a policy the collector would not keep from one it
        // would.
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_POLICY_BYTES as u64 + 1)
            .read_to_string()
            .map_err(|e| Failure::Unreachable(format!("unreadable policy: {e}")))?;
        if text.len() > MAX_POLICY_BYTES {
            return Err(Failure::Unreachable(format!(
                "the assigned policy is over {MAX_POLICY_BYTES} bytes"
            )));
        }
        Ok(Some(text))
    }
}

#[cfg(test)]
mod tests;
