//! Errors of the Redis adapter, and the one place fred errors are translated: into
//! [`RedisError`] at start-up and into the domain's [`BusError`] at run time. Messages name
//! the endpoint (never the password) and say what to check.

use chat_domain::BusError;
use fred::error::{Error as FredError, ErrorKind};
use thiserror::Error;

/// Why the Redis bus could not start.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RedisError {
    /// `REDIS_URL` is malformed or uses an unsupported scheme.
    #[error("invalid REDIS_URL: {0}")]
    InvalidUrl(String),
    /// A setting other than the URL is unusable (an empty channel name).
    #[error("invalid Redis settings: {0}")]
    InvalidConfig(String),
    /// Nothing answered at the address in time (not running, wrong host or port, firewall).
    #[error("Redis is unreachable: {0}")]
    Unreachable(String),
    /// Redis refused the user or password from `REDIS_URL`.
    #[error("Redis refused the credentials: {0}")]
    AuthFailed(String),
    /// TLS could not be set up or the handshake failed (`rediss://`).
    #[error("Redis TLS failed: {0}")]
    Tls(String),
    /// Redis answered but refused a command the bus needs (SELECT of the database, SUBSCRIBE).
    #[error("Redis rejected a start-up command: {0}")]
    Rejected(String),
}

impl RedisError {
    /// Classifies a fred error raised while connecting to `endpoint` or running `what`.
    pub(crate) fn at_startup(endpoint: &str, tls: bool, what: &str, error: &FredError) -> Self {
        let details = error.details();
        if tls && matches!(error.kind(), ErrorKind::IO) && looks_like_tls_failure(details) {
            // rustls reports handshake and certificate failures as I/O errors.
            return Self::Tls(format!(
                "handshake with {endpoint} failed ({details}); check that the server speaks TLS \
                 on this port and that its certificate is trusted (system CA store, or \
                 SSL_CERT_FILE)"
            ));
        }
        match error.kind() {
            ErrorKind::Auth => Self::AuthFailed(format!(
                "{endpoint} answered {what} with \"{details}\"; check the user and password in REDIS_URL"
            )),
            ErrorKind::Tls => Self::Tls(format!(
                "{endpoint}: {details}; check that the server speaks TLS on this port and its certificate is trusted"
            )),
            ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled => {
                Self::Unreachable(unreachable_message(endpoint, details))
            }
            ErrorKind::Config | ErrorKind::Url => {
                Self::InvalidUrl(format!("{endpoint}: {details}"))
            }
            _ => Self::Rejected(format!(
                "{endpoint} answered {what} with \"{details}\"; check the Redis ACL and the database index in REDIS_URL"
            )),
        }
    }
}

fn looks_like_tls_failure(details: &str) -> bool {
    let details = details.to_ascii_lowercase();
    [
        "certificate",
        "handshake",
        "tls",
        "corrupt message",
        "alert",
    ]
    .iter()
    .any(|sign| details.contains(sign))
}

pub(crate) fn unreachable_message(endpoint: &str, details: &str) -> String {
    format!(
        "cannot connect to {endpoint} ({details}); check that Redis is running and that REDIS_URL points to it"
    )
}

/// Maps a fred error of a running bus to the domain error: to the domain every failure of
/// the bus means "not delivered through Redis right now".
pub(crate) fn unavailable(what: &str, endpoint: &str, error: &FredError) -> BusError {
    let reason = match error.kind() {
        ErrorKind::Timeout => "no reply in time".to_owned(),
        // fred fails commands at once with Canceled while it is reconnecting (fail-fast).
        ErrorKind::Canceled => "connection is down, reconnecting".to_owned(),
        _ => error.details().to_owned(),
    };
    BusError::Unavailable(format!("Redis {what} at {endpoint} failed: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_is_unreachable_and_says_what_to_check() {
        let err = RedisError::at_startup(
            "127.0.0.1:1",
            false,
            "connect",
            &FredError::new(ErrorKind::IO, "Connection refused"),
        );
        assert!(matches!(err, RedisError::Unreachable(_)));
        let text = err.to_string();
        assert!(
            text.contains("127.0.0.1:1") && text.contains("REDIS_URL"),
            "{text}"
        );
    }

    #[test]
    fn a_wrong_password_is_an_auth_failure() {
        let err = RedisError::at_startup(
            "h:6379",
            false,
            "AUTH",
            &FredError::new(ErrorKind::Auth, "WRONGPASS invalid username-password pair"),
        );
        assert!(matches!(err, RedisError::AuthFailed(_)), "{err}");
    }

    #[test]
    fn a_certificate_failure_on_a_tls_endpoint_is_a_tls_error() {
        let error = FredError::new(
            ErrorKind::IO,
            "Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }",
        );
        let err = RedisError::at_startup("h:6379 (TLS)", true, "connect", &error);
        assert!(matches!(err, RedisError::Tls(_)), "{err}");
        let plain = RedisError::at_startup("h:6379", false, "connect", &error);
        assert!(matches!(plain, RedisError::Unreachable(_)), "{plain}");
    }

    #[test]
    fn a_timed_out_command_is_unavailable_with_the_endpoint() {
        let err = unavailable("PUBLISH", "h:6379", &FredError::new(ErrorKind::Timeout, ""));
        assert_eq!(
            err,
            BusError::Unavailable("Redis PUBLISH at h:6379 failed: no reply in time".into())
        );
    }
}
