//! The collector's HTTP API (HTTPS by default), the live feed over Server-Sent Events, the
//! dashboard and `/metrics`.
//!
//! Every request but `/healthz`, `/metrics`, the dashboard page and `/api/v1/login` needs a
//! credential: 401 without a valid one (nothing is stored), 403 when its role may not do what
//! is asked. Bodies are limited in size (413), each agent in rate (429). Malformed requests get
//! a 4xx with a JSON body naming the problem; a batch holding a record the collector will never
//! take from this agent (an alert under another agent's name) gets 422 naming the record.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use otwatch_rules::alert::{Severity, rule_by_id};
use otwatch_rules::time::Timestamp;
use otwatch_rules::validate;
use otwatch_rules::wire::{Heartbeat, IngestBatch};
use serde::Deserialize;
use serde_json::json;

use crate::audit::{self, AuditLog, detail};
use crate::auth::{self, Credentials};
use crate::config::CollectorConfig;
use crate::feed::Feed;
use crate::kv::Kv;
use crate::metrics::Metrics;
use crate::posture::{self, agent_status};
use crate::store::model::{IncidentState, Principal};
use crate::store::{Action, AlertFilter, Store, StoreError, allowed};

/// How often the live feed sends a comment when it has no alert to send: it keeps the stream
/// moving, which is what tells the listener it is alive (see `listener.rs`).
pub const FEED_KEEP_ALIVE: Duration = Duration::from_secs(15);

mod allow_rule;
mod audit_log;
mod browser;
mod detail;
mod download;
mod evidence;
mod learn;
mod map;
mod policies;
mod session;
mod stats;
mod throttle;

use session::Source;
use throttle::LoginThrottle;

/// Everything a request handler needs.
pub struct AppState<K: Kv> {
    /// The data.
    pub store: Arc<Store<K>>,
    /// Who may do what.
    pub credentials: Arc<Credentials>,
    /// The live feed.
    pub feed: Arc<dyn Feed>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub config: CollectorConfig,
    /// Token buckets per agent.
    rates: Mutex<HashMap<String, (f64, Instant)>>,
    /// Failed logins per source.
    logins: Mutex<LoginThrottle>,
    /// When `/metrics` last read its gauges from the store.
    store_gauges_at: Mutex<Option<Instant>>,
    /// Logins, admin actions and credential changes.
    pub audit: Arc<AuditLog>,
    /// Alert exports running at once (`download::MAX_EXPORTS`).
    exports: Arc<tokio::sync::Semaphore>,
    /// The network map as last built, reused for `map::FRESH`.
    map_cache: Mutex<Option<(Instant, bytes::Bytes)>>,
    /// Held while the map is built: requests that find it stale wait for one build.
    map_build: tokio::sync::Mutex<()>,
}

impl<K: Kv> AppState<K> {
    /// The state for a store, feed and configuration.
    pub fn new(
        store: Arc<Store<K>>,
        credentials: Arc<Credentials>,
        feed: Arc<dyn Feed>,
        metrics: Arc<Metrics>,
        config: CollectorConfig,
    ) -> Self {
        Self {
            store,
            credentials,
            feed,
            metrics,
            logins: Mutex::new(LoginThrottle::new(config.sessions.failed_logins_per_minute)),
            store_gauges_at: Mutex::new(None),
            audit: Arc::new(AuditLog::in_dir(&config.data)),
            config,
            rates: Mutex::new(HashMap::new()),
            exports: Arc::new(tokio::sync::Semaphore::new(download::MAX_EXPORTS)),
            map_cache: Mutex::new(None),
            map_build: tokio::sync::Mutex::new(()),
        }
    }

    /// The state with its audit log kept elsewhere than the data folder's file (the shared
    /// store of replicas).
    pub fn with_audit(mut self, audit: AuditLog) -> Self {
        self.audit = Arc::new(audit);
        self
    }
}

/// The collector's clock, as a capture-style timestamp.
pub fn now() -> Timestamp {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    Timestamp::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// A refused request: a status and a JSON body naming the problem.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Seconds for a `Retry-After` header (a rate limit says when to come back).
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => {
                Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
            }
            StoreError::Invalid { .. } => Self::bad_request(e.to_string()),
            // The engine failed (a database unreachable, a disk error): 503, so an agent
            // delivers to another replica and a load balancer stops sending here.
            StoreError::Kv(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store unavailable: {e}"),
            ),
            other => Self::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

type Shared<K> = Arc<AppState<K>>;

/// The router with every route.
pub fn router<K: Kv>(state: Shared<K>) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/dashboard.js", get(dashboard_script))
        .route("/dashboard.css", get(dashboard_style))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<K>))
        .route("/metrics", get(metrics::<K>))
        .route("/api/v1/login", post(session::login::<K>))
        .route("/api/v1/logout", post(session::logout::<K>))
        .route("/api/v1/session", get(session::whoami::<K>))
        .route("/api/v1/ingest", post(ingest::<K>))
        .route("/api/v1/heartbeat", post(heartbeat::<K>))
        .route("/api/v1/alerts", get(alerts::<K>))
        .route("/api/v1/alerts/stream", get(stream::<K>))
        .route("/api/v1/alerts/export", get(download::export::<K>))
        .route("/api/v1/alerts/{id}", get(alert_by_id::<K>))
        .route("/api/v1/alerts/{id}/pcap", get(evidence::pcap::<K>))
        .route(
            "/api/v1/alerts/{id}/allow-rule",
            get(allow_rule::allow_rule::<K>),
        )
        .route("/api/v1/incidents", get(incidents::<K>))
        .route("/api/v1/incidents/{id}", get(detail::incident::<K>))
        .route("/api/v1/incidents/{id}/ack", post(ack::<K>))
        .route("/api/v1/incidents/{id}/resolve", post(resolve::<K>))
        .route("/api/v1/assets", get(assets::<K>))
        .route("/api/v1/assets/{ip}", get(detail::asset::<K>))
        .route("/api/v1/agents", get(agents::<K>))
        .route("/api/v1/posture", get(posture_route::<K>))
        .route("/api/v1/audit", get(audit_log::audit::<K>))
        .route("/api/v1/map", get(map::map::<K>))
        .route("/api/v1/policies", get(policies::list::<K>))
        .route("/api/v1/agents/{agent}/learn", post(learn::ask::<K>))
        .route(
            "/api/v1/agents/{agent}/policy",
            get(policies::assigned::<K>).put(policies::assign::<K>),
        )
        .route(
            "/api/v1/policies/{name}",
            get(policies::get::<K>).put(policies::put::<K>),
        )
        .route(
            "/api/v1/policies/{name}/assignments",
            get(policies::assignments::<K>),
        )
        .route(
            "/api/v1/policies/{name}/history",
            get(policies::history::<K>),
        )
        .route(
            "/api/v1/policies/{name}/rollback",
            post(policies::rollback::<K>),
        )
        .route("/api/v1/stats/timeline", get(stats::timeline::<K>))
        .route("/api/v1/stats/top", get(stats::top::<K>))
        .route("/api/v1/stats/techniques", get(stats::techniques::<K>))
        .route("/api/v1/attack", get(stats::matrix::<K>))
        .route("/api/v1/openapi.json", get(openapi))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(middleware::from_fn_with_state(state.clone(), timing::<K>))
        .layer(middleware::from_fn(browser::headers))
        .with_state(state)
}

/// Records each request's latency under its route.
async fn timing<K: Kv>(State(state): State<Shared<K>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .latency
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The caller, if its credential allows `action`.
fn authorize<K: Kv>(
    state: &AppState<K>,
    headers: &HeaderMap,
    action: Action,
) -> Result<Principal, ApiError> {
    let changes = !matches!(action, Action::Read);
    Ok(caller(state, headers, action, changes)?.principal)
}

/// The caller and how it came, if its credential allows `action`. A request that `changes`
/// state and came with the session cookie must also come from the dashboard's own origin with
/// a JSON body type (see `browser.rs`).
fn caller<K: Kv>(
    state: &AppState<K>,
    headers: &HeaderMap,
    action: Action,
    changes: bool,
) -> Result<session::Identity, ApiError> {
    let refuse = |reason: &str, status: StatusCode, message: &str| {
        state.metrics.refused.with_label_values(&[reason]).inc();
        ApiError::new(status, message)
    };
    let Some(presented) = auth::presented(headers, !state.config.insecure_http) else {
        return Err(refuse(
            "no_credential",
            StatusCode::UNAUTHORIZED,
            "no credential (expected an Authorization: Bearer token or a session)",
        ));
    };
    let identity = session::identify(state, &presented)
        .map_err(|(reason, message)| refuse(reason, StatusCode::UNAUTHORIZED, message))?;
    if !allowed(identity.principal.role, action) {
        return Err(refuse(
            "forbidden",
            StatusCode::FORBIDDEN,
            &format!("a {:?} credential may not do this", identity.principal.role).to_lowercase(),
        ));
    }
    if changes && identity.session.is_some() {
        browser::same_origin(headers, !state.config.insecure_http)
            .map_err(|e| refuse("cross_site", StatusCode::FORBIDDEN, &e.to_string()))?;
    }
    Ok(identity)
}

/// Takes one token from the agent's bucket; 429 when empty.
fn rate_limit<K: Kv>(state: &AppState<K>, agent: &str) -> Result<(), ApiError> {
    let rate = f64::from(state.config.agent_rate_per_s.max(1));
    let mut rates = state
        .rates
        .lock()
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "rate limiter poisoned"))?;
    let now = Instant::now();
    let (tokens, last) = rates.entry(agent.to_string()).or_insert((rate, now));
    *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
    *last = now;
    if *tokens < 1.0 {
        state
            .metrics
            .refused
            .with_label_values(&["rate_limited"])
            .inc();
        // The bucket holds one more request within a second at any rate of one or more.
        let mut refusal = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("agent {agent:?} exceeds {rate} requests per second"),
        );
        refusal.retry_after = Some(1);
        return Err(refusal);
    }
    *tokens -= 1.0;
    Ok(())
}

/// Reads a body within the configured size and time: a peer that trickles its body holds a
/// connection busy, so it gets the body timeout, not the idle one.
async fn body_bytes<K: Kv>(state: &AppState<K>, body: Body) -> Result<axum::body::Bytes, ApiError> {
    let limit = state.config.body_limit_bytes;
    let within = state.config.connections.body_timeout;
    let refuse = |reason: &str, status: StatusCode, message: String| {
        state.metrics.refused.with_label_values(&[reason]).inc();
        ApiError::new(status, message)
    };
    match tokio::time::timeout(within, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(refuse(
            "too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {limit} bytes"),
        )),
        Err(_) => Err(refuse(
            "body_timeout",
            StatusCode::REQUEST_TIMEOUT,
            format!("body not received within {within:?}"),
        )),
    }
}

/// Reads a JSON body within the configured limit.
async fn json_body<T: serde::de::DeserializeOwned, K: Kv>(
    state: &AppState<K>,
    body: Body,
) -> Result<T, ApiError> {
    json_body_expecting(state, body, None).await
}

/// [`json_body`], whose refusal says what was `expected` (`{"policy": "NAME"}`).
async fn json_body_expecting<T: serde::de::DeserializeOwned, K: Kv>(
    state: &AppState<K>,
    body: Body,
    expected: Option<&str>,
) -> Result<T, ApiError> {
    let bytes = body_bytes(state, body).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        state
            .metrics
            .refused
            .with_label_values(&["malformed"])
            .inc();
        ApiError::bad_request(match expected {
            Some(shape) => format!("malformed JSON body: {e} (expected {shape})"),
            None => format!("malformed JSON body: {e}"),
        })
    })
}

/// The body of an agent's request: the credential must be an agent's, within its rate, and
/// the body (a `what`) must carry that agent's name.
async fn from_agent<T: serde::de::DeserializeOwned, K: Kv>(
    state: &AppState<K>,
    headers: &HeaderMap,
    body: Body,
    what: &str,
    agent_of: impl Fn(&T) -> &str,
) -> Result<T, ApiError> {
    let principal = authorize(state, headers, Action::Ingest)?;
    rate_limit(state, &principal.name)?;
    let value: T = json_body(state, body).await?;
    let named = agent_of(&value);
    if named != principal.name {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "agent: {what} says {named:?} but the credential is {:?}'s",
                principal.name
            ),
        ));
    }
    Ok(value)
}

async fn ingest<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let batch: IngestBatch =
        from_agent(&state, &headers, body, "batch", |b: &IngestBatch| &b.agent).await?;
    // The credential is fine; a record that is not (under another agent's name, an id its
    // fields do not derive, a field out of syntax or bounds) gets 422 naming it, which tells
    // the agent to set that record aside and deliver the rest (a 403 would hold its whole
    // outbox back).
    validate::batch(&batch).map_err(|e| invalid(&state, e))?;
    let batch_agent = batch.agent.clone();
    let mut batch = batch;
    let store = state.store.clone();
    let outcome = blocking(move || {
        let sent = batch.alerts.len();
        batch.alerts.retain_mut(|alert| {
            // Only schema 1 ids are ever rebound.
            let id_sent = (alert.schema < 2).then(|| alert.id.clone());
            if !validate::bind_id(alert) {
                return true;
            }
            // A schema-1 agent retrying what a collector from before ids were verified stored
            // under the id it sent: already here, not to be stored again under the bound id.
            let earlier = id_sent.and_then(|id| store.alert(&id).ok().flatten());
            earlier.is_none_or(|stored| stored.agent != alert.agent)
        });
        // Evidence is checked whole before anything is stored: a refusal stores nothing.
        let packets = match evidence::checked(&store, &batch)? {
            Ok(packets) => packets,
            Err(why) => return Ok(Err(why)),
        };
        let stored_before = sent - batch.alerts.len();
        // What the agent learned: kept and merged into its proposal, before the rest is
        // acknowledged (a refusal stores nothing of the batch).
        let mut proposed = Vec::with_capacity(batch.learned.len());
        for learned in &batch.learned {
            match learn::take(&store, &batch.agent, learned) {
                Ok(Some(p)) => proposed.push(p),
                Ok(None) => {}
                Err(StoreError::Invalid { field, message }) => {
                    return Ok(Err(format!("{field}: {message}")));
                }
                Err(e) => return Err(e),
            }
        }
        let (reply, fresh) = store.ingest_sequenced(&batch, now())?;
        // The alerts are durable: they are reported whatever happens to their evidence.
        let kept = if packets.is_empty() {
            Ok(())
        } else {
            store.put_evidence(&batch.agent, &packets)
        };
        Ok(Ok((reply, fresh, stored_before, kept, proposed)))
    })
    .await?;
    let (mut reply, fresh, stored_before, kept, proposed) = match outcome {
        Ok(stored) => stored,
        Err(why) => {
            state.metrics.refused.with_label_values(&["invalid"]).inc();
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, why));
        }
    };
    reply.duplicates += stored_before;
    state.metrics.ingested.inc_by(reply.accepted as u64);
    state.metrics.duplicates.inc_by(reply.duplicates as u64);
    for (_, a) in &fresh {
        state
            .metrics
            .alerts
            .with_label_values(&[a.severity.name(), metric_rule(&a.rule)])
            .inc();
    }
    state.feed.publish(&fresh);
    for (policy, version, agents) in proposed {
        audit::note_off_the_workers(
            state.audit.clone(),
            audit::Event {
                ts: now(),
                event: "policy_proposed",
                who: Some(batch_agent.clone()),
                source: None,
                detail: audit::detail([
                    ("policy", json!(policy)),
                    ("version", json!(version)),
                    ("agents", json!(agents)),
                ]),
            },
        )
        .await;
    }
    // Evidence that could not be kept: the agent sends the batch again (its alerts then
    // count as duplicates, already reported).
    kept?;
    Ok(axum::Json(reply))
}

/// The `rule` label of an alert's metrics, from a bounded set: the catalogue's rule ids,
/// `policy.alert` for every policy alert rule, `other` for the rest (a later release's rules,
/// or whatever an agent makes up). A label per rule string an agent sends would let one agent
/// grow the collector's memory and `/metrics` without bound.
fn metric_rule(rule: &str) -> &str {
    match rule_by_id(rule) {
        Some(meta) => meta.id,
        None if rule.starts_with("policy.alert.") => "policy.alert",
        None => "other",
    }
}

/// The refusal of a record that fails validation, counted: 422 (set it aside) for a record
/// this collector will never take, 400 (keep it) for one of a schema version it does not know,
/// which a newer collector may take.
fn invalid<K: Kv>(state: &AppState<K>, e: validate::Invalid) -> ApiError {
    let (reason, status) = if e.unknown_version {
        ("unknown_version", StatusCode::BAD_REQUEST)
    } else {
        ("invalid", StatusCode::UNPROCESSABLE_ENTITY)
    };
    state.metrics.refused.with_label_values(&[reason]).inc();
    ApiError::new(status, e.to_string())
}

/// Runs a store write off the async workers: it waits for the store's writer lock (held by
/// ingest and, a page at a time, by retention) and for the disk.
async fn blocking<T: Send + 'static>(
    write: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(write)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

async fn heartbeat<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let hb: Heartbeat = from_agent(&state, &headers, body, "heartbeat", |h: &Heartbeat| {
        &h.agent
    })
    .await?;
    validate::heartbeat(&hb).map_err(|e| invalid(&state, e))?;
    let store = state.store.clone();
    // The answer names the agent's assigned policy and its version in force, so an agent that
    // follows the collector's policy fetches it when that changes.
    let (policy, learn) = blocking(move || {
        store.heartbeat(&hb, now())?;
        // A learn request goes with every answer until what the agent learned arrives.
        let learn = store
            .learn_record(&hb.agent)?
            .filter(|r| r.received_at.is_none())
            .map(|r| json!({ "id": r.id, "duration_s": r.duration_s }));
        let Some(name) = store.assigned_policy(&hb.agent)? else {
            return Ok((None, learn));
        };
        // The head only: no TOML is read for a heartbeat.
        let policy = store
            .policy_hash(&name)?
            .map(|hash| json!({ "name": name, "hash": hash }));
        Ok((policy, learn))
    })
    .await?;
    Ok(axum::Json(
        json!({ "ok": true, "policy": policy, "learn": learn }),
    ))
}

/// Turns query parameters into an alert filter, naming any bad or unknown parameter.
fn filter_of(
    params: &HashMap<String, String>,
) -> Result<(AlertFilter, Option<String>, usize), ApiError> {
    let mut f = AlertFilter::default();
    let mut cursor = None;
    let mut limit = 100;
    for (k, v) in params {
        let bad = |expected: &str| {
            ApiError::bad_request(format!("{k}: {v:?} is not valid (expected {expected})"))
        };
        match k.as_str() {
            "since" => f.since = Some(v.parse().map_err(|_| bad("an RFC 3339 time"))?),
            "until" => f.until = Some(v.parse().map_err(|_| bad("an RFC 3339 time"))?),
            "min_severity" => {
                f.min_severity = Some(
                    Severity::from_name(v)
                        .ok_or_else(|| bad("info, low, medium, high or critical"))?,
                )
            }
            "agent" => f.agent = Some(v.clone()),
            "asset" => f.asset = Some(v.parse::<IpAddr>().map_err(|_| bad("an IP address"))?),
            "peer" => f.peer = Some(v.parse::<IpAddr>().map_err(|_| bad("an IP address"))?),
            "rule" => f.rule = Some(v.clone()),
            "technique" => f.technique = Some(v.clone()),
            "cursor" => cursor = Some(v.clone()),
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| bad("a number from 1 to 1000"))?
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "{k}: unknown parameter (expected since, until, min_severity, agent, asset, peer, rule, technique, cursor, limit)"
                )));
            }
        }
    }
    if f.peer.is_some() && f.asset.is_none() {
        return Err(ApiError::bad_request(
            "peer: taken only with asset (the alerts between the two hosts)",
        ));
    }
    Ok((f, cursor, limit))
}

async fn alerts<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    let (filter, cursor, limit) = filter_of(&params)?;
    let store = state.store.clone();
    let page =
        tokio::task::spawn_blocking(move || store.query_alerts(&filter, cursor.as_deref(), limit))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(axum::Json(page))
}

/// One alert by its id: an id names one agent's alert everywhere in the API.
async fn alert_by_id<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    let store = state.store.clone();
    let found = blocking(move || store.alert(&id)).await?;
    found
        .map(axum::Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "alert not found"))
}

/// Readiness, for a load balancer in front of replicas: 200 when the store answers a read,
/// 503 naming why when it does not (`/healthz` stays liveness: the process runs).
async fn readyz<K: Kv>(State(state): State<Shared<K>>) -> Response {
    let store = state.store.clone();
    let answer = blocking(move || store.last_sequence()).await;
    state.metrics.store_ready.set(i64::from(answer.is_ok()));
    match answer {
        Ok(_) => (StatusCode::OK, axum::Json(json!({ "ready": true }))).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "ready": false, "error": e.message })),
        )
            .into_response(),
    }
}

/// Alerts a live-feed subscriber is sent per read of the store.
const FEED_PAGE: usize = 500;

/// How often a live feed reads the store without being woken: the most an alert another
/// replica stored waits before this replica's subscribers get it.
const FEED_POLL: Duration = Duration::from_secs(1);

/// The live-feed event for a stored alert: its ingest sequence number as the id.
fn alert_event(seq: u64, alert: &otwatch_rules::alert::Alert) -> Event {
    let data = serde_json::to_string(alert).unwrap_or_default();
    Event::default()
        .event("alert")
        .id(seq.to_string())
        .data(data)
}

/// Where one subscriber's live feed stands.
struct FeedReader<K: Kv> {
    store: Arc<Store<K>>,
    /// Wakes the reader when alerts are stored (the messages themselves are not used).
    rx: tokio::sync::broadcast::Receiver<Arc<crate::feed::Announced>>,
    filter: AlertFilter,
    /// The sequence number read through.
    sent: u64,
    /// Events read and not yet sent.
    pending: std::collections::VecDeque<Event>,
    /// Whether to read the store again before waiting (the last read made progress).
    read_now: bool,
}

impl<K: Kv> FeedReader<K> {
    /// The next event: read from the store in sequence order, so a subscriber sees every
    /// stored alert once and in order whatever order concurrent batches were announced in;
    /// `None` when the feed or the store fails (the client reconnects and resumes).
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        use tokio::sync::broadcast::error::{RecvError, TryRecvError};
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if !self.read_now {
                // Woken by this replica's ingest, or after a second by the clock: alerts other
                // replicas stored in a shared store are announced only to their own feeds.
                tokio::select! {
                    woken = self.rx.recv() => match woken {
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return None,
                    },
                    () = tokio::time::sleep(FEED_POLL) => {}
                }
                // One read covers every announcement so far.
                loop {
                    match self.rx.try_recv() {
                        Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Closed) => return None,
                    }
                }
            }
            let (store, after) = (self.store.clone(), self.sent);
            let read = tokio::task::spawn_blocking(move || store.alerts_since(after, FEED_PAGE));
            let Ok(Ok((alerts, through))) = read.await else {
                return None;
            };
            self.read_now = through > after;
            self.sent = through;
            for (seq, alert) in &alerts {
                if self.filter.matches(alert) {
                    self.pending.push_back(alert_event(*seq, alert));
                }
            }
        }
    }
}

async fn stream<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    // The stream ends when what authorised it no longer holds (revoked, logged out, expired).
    let ends = auth::presented(&headers, !state.config.insecure_http)
        .map(|p| session::revoked(state.clone(), p));
    let mut params = params;
    params.remove("cursor");
    params.remove("limit");
    let (filter, _, _) = filter_of(&params)?;
    // A reconnecting subscriber (browsers send it by themselves) resumes after the last event
    // it saw. An id that is not a sequence number (one from before sequence numbers: an alert
    // id) resumes nothing.
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // Subscribed before the store is read: nothing stored from here on goes unannounced.
    let rx = state.feed.subscribe();
    let store = state.store.clone();
    let newest = blocking(move || store.last_sequence()).await?;
    // An id past the newest number (a store restored from an older backup, another site's
    // collector) must not hold back the live feed: it resumes from the newest.
    let reader = FeedReader {
        store: state.store.clone(),
        rx,
        filter,
        sent: resume.map_or(newest, |after| after.min(newest)),
        pending: std::collections::VecDeque::new(),
        read_now: resume.is_some(),
    };
    let stream = futures::stream::unfold(reader, FeedReader::next);
    let ends = async move {
        match ends {
            Some(f) => f.await,
            None => std::future::pending().await,
        }
    };
    let stream = stream.take_until(Box::pin(ends));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(FEED_KEEP_ALIVE)))
}

use futures::StreamExt as _;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncidentQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn incidents<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
    query: Result<Query<IncidentQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = match q.state.as_deref() {
        None => None,
        Some("open") => Some(IncidentState::Open),
        Some("acknowledged") => Some(IncidentState::Acknowledged),
        Some("resolved") => Some(IncidentState::Resolved),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "state: {other:?} is not valid (expected open, acknowledged or resolved)"
            )));
        }
    };
    let limit = q.limit.unwrap_or(200).clamp(1, 1000);
    let store = state.store.clone();
    Ok(axum::Json(
        blocking(move || store.incidents(filter, limit)).await?,
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Note {
    #[serde(default)]
    note: Option<String>,
}

async fn change<K: Kv>(
    state: Shared<K>,
    headers: HeaderMap,
    source: Option<IpAddr>,
    id: String,
    body: Body,
    to: IncidentState,
) -> Result<axum::Json<crate::store::model::Incident>, ApiError> {
    let principal = authorize(&state, &headers, Action::Change)?;
    let id: u64 = id.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "id: {id:?} is not an incident id (expected a number)"
        ))
    })?;
    let bytes = body_bytes(&state, body).await?;
    let note: Note = if bytes.is_empty() {
        Note::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))?
    };
    let store = state.store.clone();
    let by = principal.name.clone();
    let noted = note.note.clone();
    let incident =
        blocking(move || store.set_incident_state(id, to, &by, note.note, now())).await?;
    let event = match to {
        IncidentState::Acknowledged => "incident_acknowledged",
        IncidentState::Resolved => "incident_resolved",
        IncidentState::Open => "incident_reopened",
    };
    audit::note_off_the_workers(
        state.audit.clone(),
        audit::Event {
            ts: now(),
            event,
            who: Some(principal.name.clone()),
            source,
            detail: detail([("incident", json!(id)), ("note", json!(noted))]),
        },
    )
    .await;
    Ok(axum::Json(incident))
}

async fn ack<K: Kv>(
    State(state): State<Shared<K>>,
    Source(source): Source,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    change(
        state,
        headers,
        source,
        id,
        body,
        IncidentState::Acknowledged,
    )
    .await
}

async fn resolve<K: Kv>(
    State(state): State<Shared<K>>,
    Source(source): Source,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    change(state, headers, source, id, body, IncidentState::Resolved).await
}

async fn assets<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    let store = state.store.clone();
    Ok(axum::Json(blocking(move || store.assets(100_000)).await?))
}

async fn agents<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    // Read off the async workers: with a database, every read is a round trip.
    let store = state.store.clone();
    let (records, assigned, hashes, mut learning) = blocking(move || {
        let records = store.agents(10_000)?;
        // Each agent's assigned policy and the hash of its version in force, beside the hash
        // the agent reports applying: assigned vs applied.
        let assigned: HashMap<String, String> = store.assignments()?.into_iter().collect();
        let mut hashes: HashMap<String, Option<String>> = HashMap::new();
        for policy in assigned.values() {
            if !hashes.contains_key(policy.as_str()) {
                hashes.insert(policy.clone(), store.policy_hash(policy)?);
            }
        }
        // Each agent's latest learn request (what it learned is in the proposal).
        let learning: HashMap<String, serde_json::Value> = store
            .learn_records()?
            .into_iter()
            .map(|r| (r.agent.clone(), json!(r)))
            .collect();
        Ok((records, assigned, hashes, learning))
    })
    .await?;
    let list = agent_status(records, now(), state.config.agent_offline_after);
    let list: Vec<serde_json::Value> = list
        .into_iter()
        .map(|a| {
            let policy = assigned.get(&a.record.heartbeat.agent).map(|name| {
                json!({ "name": name, "hash": hashes.get(name.as_str()).cloned().flatten() })
            });
            let learn = learning.remove(&a.record.heartbeat.agent);
            let mut v = serde_json::to_value(&a).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("assigned_policy".into(), json!(policy));
                o.insert("learning".into(), json!(learn));
            }
            v
        })
        .collect();
    Ok(axum::Json(list))
}

async fn posture_route<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    authorize(&state, &headers, Action::Read)?;
    let store = state.store.clone();
    let (records, incidents, assets) = blocking(move || {
        Ok((
            store.agents(10_000)?,
            store.incidents(None, 10_000)?,
            store.assets(100_000)?,
        ))
    })
    .await?;
    let agents = agent_status(records, now(), state.config.agent_offline_after);
    Ok(axum::Json(posture::posture(&agents, &incidents, &assets)))
}

/// How long the gauges read from the store (agents online, open incidents, store size) are
/// reused: a flood of scrapes costs one store read a second, not one blocking task each.
/// Counters kept by the server itself are always current.
const STORE_GAUGES_FRESH: Duration = Duration::from_secs(1);

/// The metrics: counters the server keeps, and gauges read from counters the store keeps, off
/// the async workers (the agents' records, one per enrolled agent, and the store's size are
/// read from disk) and at most once a second.
async fn metrics<K: Kv>(State(state): State<Shared<K>>) -> Result<Response, ApiError> {
    let fresh = state
        .store_gauges_at
        .lock()
        .ok()
        .and_then(|at| *at)
        .is_some_and(|at| at.elapsed() < STORE_GAUGES_FRESH);
    if !fresh {
        let s = state.clone();
        tokio::task::spawn_blocking(move || {
            let m = &s.metrics;
            let agents = agent_status(
                s.store.agents(10_000).unwrap_or_default(),
                now(),
                s.config.agent_offline_after,
            );
            m.agents_online
                .set(agents.iter().filter(|a| a.online).count() as i64);
            m.incidents_open
                .set(s.store.open_incident_count().map_or(0, |n| n as i64));
            m.store_bytes
                .set(s.store.kv().size_on_disk().map_or(0, |b| b as i64));
            let alerts = s.store.alert_count();
            m.store_ready.set(i64::from(alerts.is_ok()));
            m.store_alerts.set(alerts.map_or(0, |n| n as i64));
            if let Some(stats) = s.store.kv().stats() {
                m.follow_engine(stats);
            }
            // A counter that follows the store's: only ever raised.
            let dropped = s.store.asset_entries_dropped().unwrap_or(0);
            m.asset_entries_dropped
                .inc_by(dropped.saturating_sub(m.asset_entries_dropped.get()));
        })
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        if let Ok(mut at) = state.store_gauges_at.lock() {
            *at = Some(Instant::now());
        }
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response())
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

async fn dashboard_script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("dashboard.js"),
    )
}

async fn dashboard_style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("dashboard.css"),
    )
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

#[cfg(test)]
mod tests;
