//! JWTs for servers in jwt mode (`CHAT_AUTH=jwt CHAT_JWT_SECRET=…`): with `--jwt-secret`,
//! every connection gets its own HS256 token, minted with `jsonwebtoken`, and sends it as
//! the CONNECT header `Authorization: Bearer <jwt>` (room creation sends one too).
//!
//! The `sub` of a publisher's token is the `senderId` it writes in its chat messages
//! ([`publisher_user`]); chat-service refuses any other with `SENDER_MISMATCH`. Subscribers
//! and idle connections only listen and get user ids of their own ([`listener_user`]).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::{BenchArgs, BenchError};

/// chat-server refuses to start with a shorter HS256 secret.
pub const MIN_SECRET_BYTES: usize = 32;

/// First user id of the listening connections (subscribers, idle connections); publishers
/// are users 1.. below it.
pub const LISTENER_USER_BASE: i64 = 1_000_000;

/// The `senderId` publisher `index` puts in its messages, and so its token's `sub`.
#[must_use]
pub fn publisher_user(index: u32) -> i64 {
    i64::from(index) + 1
}

/// The user id of subscriber (or idle connection) `index`: distinct per connection and
/// apart from every publisher's.
#[must_use]
pub fn listener_user(index: usize) -> i64 {
    LISTENER_USER_BASE.saturating_add(i64::try_from(index).unwrap_or(i64::MAX))
}

/// The claims of one token. `sub` is a string, as JWT has it (chat-server takes a string
/// or a number holding an integer).
#[derive(Debug, Clone, Serialize)]
struct Claims<'a> {
    sub: String,
    name: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Signs one HS256 token per connection with `--jwt-secret`.
#[derive(Clone)]
pub struct TokenMinter {
    key: EncodingKey,
    issuer: Option<String>,
    audience: Option<String>,
    ttl: Duration,
}

impl fmt::Debug for TokenMinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("TokenMinter")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenMinter {
    /// A minter for `secret`; tokens carry `iss` / `aud` when given and expire `ttl` after
    /// they are minted.
    #[must_use]
    pub fn new(
        secret: &str,
        issuer: Option<String>,
        audience: Option<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            issuer,
            audience,
            ttl,
        }
    }

    /// The minter `--jwt-secret`, `--jwt-issuer`, `--jwt-audience` and `--jwt-ttl`
    /// describe; `None` without a secret (the server runs open).
    #[must_use]
    pub fn from_args(args: &BenchArgs) -> Option<Self> {
        args.jwt_secret.as_deref().map(|secret| {
            Self::new(
                secret,
                args.jwt_issuer.clone(),
                args.jwt_audience.clone(),
                Duration::from_secs(args.jwt_ttl),
            )
        })
    }

    /// A token for user `sub` with display name `name`, valid from now for the TTL.
    ///
    /// # Errors
    /// [`BenchError::InvalidArgs`] if signing fails (it does not with an HMAC key).
    pub fn mint(&self, sub: i64, name: &str) -> Result<String, BenchError> {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            sub: sub.to_string(),
            name,
            iat,
            exp: iat.saturating_add(self.ttl.as_secs()),
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .map_err(|e| BenchError::InvalidArgs(format!("cannot sign a JWT: {e}")))
    }
}

/// A token for each connection of a run, or `None` for all of them without a minter.
///
/// # Errors
/// As [`TokenMinter::mint`].
pub fn mint_optional(
    minter: Option<&TokenMinter>,
    sub: i64,
    name: &str,
) -> Result<Option<String>, BenchError> {
    minter.map(|minter| minter.mint(sub, name)).transpose()
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use jsonwebtoken::{DecodingKey, Validation};
    use serde_json::Value;

    use super::*;

    const SECRET: &str = "a-bench-secret-that-is-long-enough-for-hs256";

    fn decode(token: &str, validation: &Validation) -> jsonwebtoken::errors::Result<Value> {
        jsonwebtoken::decode::<Value>(
            token,
            &DecodingKey::from_secret(SECRET.as_bytes()),
            validation,
        )
        .map(|data| data.claims)
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn a_minted_token_decodes_with_the_secret_to_its_sub_name_and_expiry() {
        let minter = TokenMinter::new(SECRET, None, None, Duration::from_secs(3600));
        let before = now();
        let token = minter.mint(publisher_user(4), "bench-4").unwrap();
        let claims = decode(&token, &Validation::new(Algorithm::HS256)).unwrap();
        assert_eq!(claims["sub"], "5");
        assert_eq!(claims["name"], "bench-4");
        let iat = claims["iat"].as_u64().unwrap();
        let exp = claims["exp"].as_u64().unwrap();
        assert!(iat >= before && iat <= now(), "{claims}");
        assert_eq!(exp, iat + 3600);
        assert!(claims.get("iss").is_none() && claims.get("aud").is_none());
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
    }

    #[test]
    fn issuer_and_audience_are_claimed_when_given() {
        let minter = TokenMinter::new(
            SECRET,
            Some("https://id.example".into()),
            Some("chat".into()),
            Duration::from_secs(60),
        );
        let token = minter.mint(listener_user(2), "bench-sub-2").unwrap();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&["https://id.example"]);
        validation.set_audience(&["chat"]);
        let claims = decode(&token, &validation).unwrap();
        assert_eq!(claims["sub"], "1000002");
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let minter = TokenMinter::new(
            "another-secret-that-is-also-long-enough",
            None,
            None,
            Duration::from_secs(60),
        );
        let token = minter.mint(1, "bench-0").unwrap();
        assert!(decode(&token, &Validation::new(Algorithm::HS256)).is_err());
    }

    #[test]
    fn publishers_and_listeners_never_share_a_user_id() {
        assert_eq!(publisher_user(0), 1);
        assert!(publisher_user(999_998) < listener_user(0));
        assert_ne!(listener_user(0), listener_user(1));
    }

    #[test]
    fn the_flags_build_a_minter_only_with_a_secret() {
        let args = BenchArgs::parse_from(["chat-bench"]);
        assert!(TokenMinter::from_args(&args).is_none());
        assert_eq!(mint_optional(None, 1, "x").unwrap(), None);
        let args = BenchArgs::parse_from(["chat-bench", "--jwt-secret", SECRET, "--jwt-ttl", "90"]);
        let minter = TokenMinter::from_args(&args).unwrap();
        assert_eq!(minter.ttl, Duration::from_secs(90));
        assert!(!format!("{minter:?}").contains(SECRET));
        let token = mint_optional(Some(&minter), 3, "bench-2").unwrap().unwrap();
        let claims = decode(&token, &Validation::new(Algorithm::HS256)).unwrap();
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            90
        );
    }
}
