//! Dashboard sign-in: a login exchanges a token for a random session id in an `HttpOnly`
//! cookie (the token itself never reaches the browser's cookie jar), a logout ends it, and
//! every request made with the cookie finds its session in the store and the session's
//! credential in the credentials file, so revoking the credential ends the session.
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState, Shared, blocking, json_body, now};
use crate::audit::{Event, detail, note_off_the_workers};
use crate::auth::{self, Presented};
use crate::kv::Kv;
use crate::listener::source_of;
use crate::store::model::Principal;
use crate::store::session::Session;

/// The source a request came from (an address, or an IPv6 /64), when the listener knows it.
#[derive(Debug, Clone, Copy)]
pub struct Source(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| source_of(c.0)),
        ))
    }
}

/// Who presented what, once recognised.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The credential's holder.
    pub principal: Principal,
    /// The session, when it came by cookie: its id's hash and when it ends.
    pub session: Option<(String, Session)>,
}

/// Why a presented credential is not (or no longer) recognised: a metric reason and a message.
pub type Unrecognised = (&'static str, &'static str);

/// Recognises what a request presented: a token in the credentials, or a live session whose
/// credential is still enrolled.
pub fn identify<K: Kv>(
    state: &AppState<K>,
    presented: &Presented,
) -> Result<Identity, Unrecognised> {
    match presented {
        Presented::Token(token) => state
            .credentials
            .principal(token)
            .map(|principal| Identity {
                principal,
                session: None,
            })
            .ok_or(("bad_credential", "credential not recognised")),
        Presented::Session(id) => {
            let id_hash = auth::hash(id);
            let session = state
                .store
                .session(&id_hash, now())
                .ok()
                .flatten()
                .ok_or(("bad_session", "session expired or ended (sign in again)"))?;
            let principal = state
                .credentials
                .principal_of_hash(&session.credential)
                .ok_or(("bad_session", "the credential of this session was revoked"))?;
            Ok(Identity {
                principal,
                session: Some((id_hash, session)),
            })
        }
    }
}

/// Resolves once what `presented` stood for no longer holds: its credential was revoked
/// (seen at once through [`crate::auth::Credentials::changes`]), or its session ended or
/// expired (checked every few seconds). The live feed ends its stream then.
pub async fn revoked<K: Kv>(state: Shared<K>, presented: Presented) {
    let mut changes = state.credentials.changes();
    let mut watching = true;
    loop {
        tokio::select! {
            changed = changes.changed(), if watching => watching = changed.is_ok(),
            () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
        if identify(&state, &presented).is_err() {
            return;
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Login {
    token: String,
}

/// Exchanges a viewer's or admin's token for a session cookie; a source that failed too often
/// within the last minute gets 429 without its token being looked at.
pub(super) async fn login<K: Kv>(
    State(state): State<Shared<K>>,
    Source(source): Source,
    body: Body,
) -> Result<Response, ApiError> {
    let audit = |event: &'static str, who: Option<&str>, d| {
        note_off_the_workers(
            state.audit.clone(),
            Event {
                ts: now(),
                event,
                who: who.map(str::to_string),
                source,
                detail: d,
            },
        )
    };
    if let Some(src) = source {
        let throttled = state
            .logins
            .lock()
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "throttle poisoned"))?
            .attempt(src, Instant::now());
        if let Err(throttled) = throttled {
            state
                .metrics
                .refused
                .with_label_values(&["login_throttled"])
                .inc();
            // One audit line when a source starts being refused, not one per attempt: a
            // source hammering the login cannot grow the audit log at its own pace.
            if throttled.first {
                audit("login_throttled", None, detail([])).await;
            }
            let secs = throttled.wait.as_secs().max(1);
            let mut r = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed logins from this address (try again in {secs} s)"),
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return Ok(r);
        }
    }
    let Login { token } = json_body(&state, body).await?;
    let Some(principal) = state
        .credentials
        .principal(&token)
        .filter(|p| p.role.can_read())
    else {
        state
            .metrics
            .refused
            .with_label_values(&["login_failed"])
            .inc();
        audit("login_failed", None, detail([])).await;
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "credential not recognised",
        ));
    };
    if let Some(src) = source
        && let Ok(mut t) = state.logins.lock()
    {
        t.succeeded(src, Instant::now());
    }
    let id = auth::new_session_id()
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let ttl = state.config.sessions.ttl;
    let created = now();
    let session = Session {
        credential: auth::hash(&token),
        name: principal.name.clone(),
        role: principal.role,
        created,
        expires: created.saturating_add(ttl),
    };
    let store = state.store.clone();
    let id_hash = auth::hash(&id);
    let expires = session.expires;
    blocking(move || store.open_session(&id_hash, &session)).await?;
    audit(
        "login",
        Some(&principal.name),
        detail([("role", json!(principal.role))]),
    )
    .await;
    let cookie = session_cookie(&state, &id, ttl.as_secs());
    let mut response = axum::Json(json!({
        "name": principal.name,
        "role": principal.role,
        "expires": expires,
    }))
    .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie)
            .map_err(|_| ApiError::bad_request("session: not usable in a cookie"))?,
    );
    Ok(response)
}

/// The `Set-Cookie` value that gives the browser session `id` for `max_age` seconds (0 and an
/// empty id clear it).
fn session_cookie<K: Kv>(state: &AppState<K>, id: &str, max_age: u64) -> String {
    let https = !state.config.insecure_http;
    format!(
        "{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{}",
        auth::cookie_name(https),
        if https { "; Secure" } else { "" }
    )
}

/// Ends the caller's session (a change: same origin and a JSON body type, like every other)
/// and clears the cookie.
pub(super) async fn logout<K: Kv>(
    State(state): State<Shared<K>>,
    Source(source): Source,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = super::caller(&state, &headers, crate::store::Action::Read, true)?;
    if let Some((id_hash, _)) = caller.session {
        let store = state.store.clone();
        blocking(move || store.close_session(&id_hash)).await?;
        note_off_the_workers(
            state.audit.clone(),
            Event {
                ts: now(),
                event: "logout",
                who: Some(caller.principal.name.clone()),
                source,
                detail: detail([]),
            },
        )
        .await;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let cookie = session_cookie(&state, "", 0);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

/// Who the caller is: name, role and, for a session, when it ends.
pub(super) async fn whoami<K: Kv>(
    State(state): State<Shared<K>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = super::caller(&state, &headers, crate::store::Action::Read, false)?;
    Ok(axum::Json(json!({
        "name": caller.principal.name,
        "role": caller.principal.role,
        "expires": caller.session.map(|(_, s)| s.expires),
    }))
    .into_response())
}
