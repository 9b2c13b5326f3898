//! What a browser needs to be safe with the dashboard: security headers on every response, and
//! the checks that keep another site from making a signed-in dashboard change anything.
//!
//! A request authenticated by the session cookie that changes state must carry an `Origin`
//! that is the collector's own and a JSON body type: a cross-site form cannot send either
//! (`SameSite=Strict` already keeps the cookie off most of them; this holds when it does not,
//! and for browsers that ignore it). Bearer-token clients (agents, scripts) are not browsers
//! and are not checked.
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The dashboard's content security policy: its own script and style only, no inline script,
/// no framing, requests only to the collector itself.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Adds the security headers to every response; API responses are never cached.
pub async fn headers(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Why a cookie-authenticated change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrossSite {
    /// No `Origin` header.
    NoOrigin,
    /// An `Origin` that is not the collector's.
    OtherOrigin(String),
    /// A body type a form can send.
    NotJson(String),
}

impl std::fmt::Display for CrossSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoOrigin => write!(
                f,
                "Origin: missing (expected the collector's own origin on a change made with the session cookie)"
            ),
            Self::OtherOrigin(o) => write!(
                f,
                "Origin: {o:?} is not this collector (expected the collector's own origin on a change made with the session cookie)"
            ),
            Self::NotJson(t) => write!(
                f,
                "Content-Type: {t:?} is not allowed (expected application/json, or application/toml for a policy, on a change made with the session cookie)"
            ),
        }
    }
}

/// Checks that a cookie-authenticated change comes from the dashboard itself: `Origin` is
/// `scheme://` + the request's own `Host`, and the body is declared JSON.
pub fn same_origin(headers: &HeaderMap, https: bool) -> Result<(), CrossSite> {
    let text = |name| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let origin = text(header::ORIGIN).ok_or(CrossSite::NoOrigin)?;
    let host = text(header::HOST).unwrap_or_default();
    let scheme = if https { "https" } else { "http" };
    if host.is_empty() || !origin.eq_ignore_ascii_case(&format!("{scheme}://{host}")) {
        return Err(CrossSite::OtherOrigin(origin));
    }
    let content_type = text(header::CONTENT_TYPE).unwrap_or_default();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    // Types a form cannot send (each needs a CORS preflight): JSON, and TOML for policies.
    if essence != "application/json" && essence != "application/toml" {
        return Err(CrossSite::NotJson(content_type));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_collectors_own_origin_with_a_json_body_may_change_state() {
        let ok = [
            ("host", "collector:8443"),
            ("origin", "https://collector:8443"),
            ("content-type", "application/json; charset=utf-8"),
        ];
        assert_eq!(same_origin(&headers(&ok), true), Ok(()));
        assert_eq!(
            same_origin(&headers(&ok[..2]), true),
            Err(CrossSite::NotJson(String::new()))
        );
        let form = [
            ok[0],
            ok[1],
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        assert!(matches!(
            same_origin(&headers(&form), true),
            Err(CrossSite::NotJson(_))
        ));
        let evil = [ok[0], ("origin", "https://evil.example"), ok[2]];
        assert!(matches!(
            same_origin(&headers(&evil), true),
            Err(CrossSite::OtherOrigin(_))
        ));
        assert_eq!(
            same_origin(&headers(&[ok[0], ok[2]]), true),
            Err(CrossSite::NoOrigin)
        );
        // Plain HTTP (a lab) has an http origin.
        assert!(same_origin(&headers(&ok), false).is_err());
    }
}
