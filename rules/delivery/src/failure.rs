//! What a delivery attempt can come to besides success, and the one place HTTP statuses are
//! read: the transport maps a response to a [`Failure`] with [`Failure::from_http`] and the
//! machine never sees a status code.

use std::time::Duration;

/// Why a collector did not take what was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The collector could not be reached, timed out, or failed (5xx, 503 included): another
    /// collector may take it, or this one later.
    #[error("collector unreachable: {0}")]
    Unreachable(String),
    /// The collector is busy with this agent (429): wait as long as it says.
    #[error("collector busy (429): {message}")]
    Busy {
        /// Its `Retry-After`, when it gave one.
        retry_after: Option<Duration>,
        /// Its explanation.
        message: String,
    },
    /// The batch is too large (413): fewer records may pass.
    #[error("collector refused the request (413): {0}")]
    TooLarge(String),
    /// A record the collector cannot read (400): a newer schema than it knows, or damaged.
    /// Kept: a newer collector may take it.
    #[error("collector refused the request (400): {0}")]
    Unreadable(String),
    /// A record this collector will never take from this agent (422): set aside.
    #[error("collector refused the request (422): {0}")]
    Invalid(String),
    /// Any other refusal (401, 403, 404, ...): the agent's settings are wrong. Nothing is
    /// discarded; the agent backs off and says why.
    #[error("collector refused the request ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The collector's explanation.
        message: String,
    },
}

impl Failure {
    /// The failure an HTTP response with a status other than 2xx stands for: `retry_after` is
    /// its `Retry-After` header when it has one in seconds, `message` its explanation.
    pub fn from_http(status: u16, retry_after: Option<Duration>, message: String) -> Self {
        match status {
            400 => Self::Unreadable(message),
            413 => Self::TooLarge(message),
            422 => Self::Invalid(message),
            429 => Self::Busy {
                retry_after,
                message,
            },
            500.. => Self::Unreachable(format!("{status}: {message}")),
            _ => Self::Refused { status, message },
        }
    }

    /// Whether the collector answered (as opposed to not being reached, or failing).
    pub fn answered(&self) -> bool {
        !matches!(self, Self::Unreachable(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_maps_to_what_the_machine_does_with_it() {
        let f = |status| Failure::from_http(status, None, "m".into());
        assert_eq!(f(400), Failure::Unreadable("m".into()));
        assert_eq!(f(413), Failure::TooLarge("m".into()));
        assert_eq!(f(422), Failure::Invalid("m".into()));
        assert!(matches!(f(429), Failure::Busy { .. }));
        assert_eq!(f(503), Failure::Unreachable("503: m".into()));
        assert_eq!(f(500), Failure::Unreachable("500: m".into()));
        assert_eq!(
            f(401),
            Failure::Refused {
                status: 401,
                message: "m".into()
            }
        );
        assert!(f(401).answered() && !f(502).answered());
    }
}
