//! Which web origins may use this server: browsers send `Origin` on a WebSocket upgrade and
//! on cross-site requests, and only the page's own origin or the configured ones may open a
//! session or call the API with the user's token. Clients that send no `Origin` (native
//! apps, other services, tools) are not browsers and are not concerned.

/// `CHAT_ALLOWED_ORIGINS`, decided at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OriginPolicy {
    /// Any origin (open mode without a list: the seed's behaviour).
    Any,
    /// Only pages served from the host the request was sent to (jwt mode without a list).
    SameHost,
    /// Exactly these origins (`scheme://host[:port]`).
    List(Vec<String>),
}

impl OriginPolicy {
    /// From the configured list (empty: the mode's default).
    pub(crate) fn new(allowed: &[String], authenticated: bool) -> Self {
        let allowed: Vec<String> = allowed
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        if allowed.iter().any(|o| o == "*") {
            Self::Any
        } else if !allowed.is_empty() {
            Self::List(allowed)
        } else if authenticated {
            Self::SameHost
        } else {
            Self::Any
        }
    }

    /// Whether a request with this `Origin` (and this `Host`) may go on.
    pub(crate) fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        match self {
            Self::Any => true,
            Self::List(allowed) => allowed.contains(&origin),
            Self::SameHost => {
                let authority = origin
                    .strip_prefix("https://")
                    .or_else(|| origin.strip_prefix("http://"));
                matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h.trim()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_origins_pass() {
        let list = OriginPolicy::new(
            &[
                "https://chat.example/".into(),
                " https://app.example ".into(),
            ],
            true,
        );
        let same = OriginPolicy::new(&[], true);
        let open = OriginPolicy::new(&[], false);
        let star = OriginPolicy::new(&["*".into()], true);
        let host = Some("chat.example:8080");
        for (policy, origin, expected) in [
            (&list, Some("https://chat.example"), true),
            (&list, Some("HTTPS://APP.EXAMPLE"), true),
            (&list, Some("https://evil.example"), false),
            (&list, None, true),
            (&same, Some("http://chat.example:8080"), true),
            (&same, Some("https://chat.example:8080"), true),
            (&same, Some("https://chat.example"), false),
            (&same, Some("https://evil.example"), false),
            (&same, Some("null"), false),
            (&open, Some("https://evil.example"), true),
            (&star, Some("https://evil.example"), true),
        ] {
            assert_eq!(
                policy.allows(origin, host),
                expected,
                "{policy:?} {origin:?}"
            );
        }
    }
}
