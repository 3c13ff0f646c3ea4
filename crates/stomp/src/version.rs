//! STOMP protocol version negotiation: from the CONNECT `accept-version` header and from the
//! WebSocket `Sec-WebSocket-Protocol` offer.

use std::fmt;

/// A STOMP protocol version; later versions compare greater.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0.
    V1_0,
    /// STOMP 1.1.
    V1_1,
    /// STOMP 1.2.
    V1_2,
}

impl Version {
    /// The version as written in `accept-version` and `version` headers, e.g. `"1.2"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    fn from_header_token(token: &str) -> Option<Version> {
        match token.trim() {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The version to speak, given the CONNECT frame's `accept-version` header (a comma separated
/// list such as `"1.0,1.1,1.2"`): the highest one both sides support.
///
/// A missing header means the client speaks 1.0 only, as the spec says. Returns `None` when
/// the client offers nothing we support; the server then answers with an `ERROR` frame.
#[must_use]
pub fn negotiate(accept_version: Option<&str>) -> Option<Version> {
    let Some(offered) = accept_version else {
        return Some(Version::V1_0);
    };
    offered
        .split(',')
        .filter_map(Version::from_header_token)
        .max()
}

/// The WebSocket subprotocols we speak, best first.
const SUBPROTOCOLS_BEST_FIRST: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];

/// The subprotocol to answer in `Sec-WebSocket-Protocol`, given the client's offer such as
/// `"v10.stomp, v11.stomp, v12.stomp"`: the best of `v12.stomp` > `v11.stomp` > `v10.stomp`
/// that was offered (case-insensitive, whitespace tolerant), or `None` if none was.
#[must_use]
pub fn select_subprotocol(offered: &str) -> Option<&'static str> {
    SUBPROTOCOLS_BEST_FIRST.into_iter().find(|ours| {
        offered
            .split(',')
            .any(|theirs| theirs.trim().eq_ignore_ascii_case(ours))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_accept_version_means_stomp_1_0() {
        assert_eq!(negotiate(None), Some(Version::V1_0));
    }

    #[test]
    fn the_highest_common_version_is_chosen_whatever_the_order() {
        assert_eq!(negotiate(Some("1.0,1.1,1.2")), Some(Version::V1_2));
        assert_eq!(negotiate(Some("1.2,1.0")), Some(Version::V1_2));
        assert_eq!(negotiate(Some("1.1, 1.0")), Some(Version::V1_1));
        assert_eq!(negotiate(Some("1.0")), Some(Version::V1_0));
    }

    #[test]
    fn unknown_versions_are_ignored_and_no_overlap_is_none() {
        assert_eq!(negotiate(Some("2.0,1.1")), Some(Version::V1_1));
        assert_eq!(negotiate(Some("2.0")), None);
        assert_eq!(negotiate(Some("")), None);
    }

    #[test]
    fn versions_order_and_print_as_on_the_wire() {
        assert!(Version::V1_0 < Version::V1_1 && Version::V1_1 < Version::V1_2);
        assert_eq!(Version::V1_2.as_str(), "1.2");
        assert_eq!(Version::V1_0.to_string(), "1.0");
    }

    #[test]
    fn the_best_offered_subprotocol_is_selected() {
        assert_eq!(
            select_subprotocol("v10.stomp, v11.stomp, v12.stomp"),
            Some("v12.stomp")
        );
        assert_eq!(select_subprotocol("v10.stomp,v11.stomp"), Some("v11.stomp"));
        assert_eq!(select_subprotocol("v10.stomp"), Some("v10.stomp"));
    }

    #[test]
    fn subprotocol_matching_ignores_case_and_whitespace() {
        assert_eq!(select_subprotocol("  V12.STOMP  ,chat"), Some("v12.stomp"));
        assert_eq!(
            select_subprotocol("graphql-ws,\tv11.Stomp"),
            Some("v11.stomp")
        );
    }

    #[test]
    fn no_stomp_subprotocol_is_none() {
        assert_eq!(select_subprotocol("graphql-ws, mqtt"), None);
        assert_eq!(select_subprotocol(""), None);
        assert_eq!(select_subprotocol("v12.stomp.extra"), None);
    }
}
