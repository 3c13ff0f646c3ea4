//! Who is speaking: the server's authentication mode and, in jwt mode, token verification
//! with `jsonwebtoken` (never our own signature code). A verified token becomes a
//! [`Caller::User`]; open mode makes every caller [`Caller::Open`]. What a caller may then
//! do is decided in the domain ([`Caller::attribute`]).
//!
//! Keys come from one of: an HS256 secret, a PEM public key (RS256, ES256 or EdDSA, chosen
//! by the key's type), or a JWKS file. The accepted algorithm is always the key's, never
//! the token header's, so `alg: none` and HS/RS confusion are refused. A JWKS file is
//! re-read on SIGHUP and when a token names a `kid` it does not know (at most once per
//! [`JWKS_RELOAD_MIN_INTERVAL`], so unknown kids cannot make us read the file in a loop).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chat_domain::{Caller, Identity, SenderId};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;

use crate::config::{AuthMode, Settings, TokenArgs};

/// Clock skew allowed on `exp` and `nbf`.
pub(crate) const LEEWAY: Duration = Duration::from_secs(30);
/// Shortest HS256 secret accepted (RFC 7518 §3.2: at least the hash size).
const MIN_SECRET_BYTES: usize = 32;
/// A JWKS file is re-read for an unknown `kid` at most this often.
const JWKS_RELOAD_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// Why a credential was not accepted; the text goes to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    #[error(
        "authentication required: send a JWT as `Authorization: Bearer <token>` (a STOMP CONNECT header or an HTTP header), as the CONNECT passcode, or as ?access_token= on the WebSocket URL"
    )]
    Missing,
    #[error("the token has expired; get a fresh one and reconnect")]
    Expired,
    #[error("the token was refused: {0}")]
    Refused(String),
}

/// Why the authentication settings cannot be used; says what to set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthConfigError(String);

/// A verified caller, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    pub(crate) caller: Caller,
    /// `exp` plus the leeway; `None` in open mode.
    pub(crate) expires_at: Option<SystemTime>,
}

/// The instance's authentication.
#[derive(Debug)]
pub(crate) enum Authenticator {
    /// Nobody is authenticated; the sender is what the client says.
    Open,
    Jwt(JwtVerifier),
}

impl Authenticator {
    /// The mode the settings ask for (spec: production shape without a key refuses to
    /// start; the embedded default runs open).
    ///
    /// # Errors
    /// [`AuthConfigError`] naming the variables to set.
    pub(crate) fn from_settings(settings: &Settings) -> Result<Self, AuthConfigError> {
        let keys = [
            settings.jwt_secret.is_some(),
            settings.jwt_public_key.is_some(),
            settings.jwks_file.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count();
        if keys > 1 {
            return Err(AuthConfigError(
                "set only one of CHAT_JWT_SECRET, CHAT_JWT_PUBLIC_KEY and CHAT_JWKS_FILE".into(),
            ));
        }
        match (settings.auth, keys) {
            (Some(AuthMode::None), _) => {
                tracing::warn!(
                    "CHAT_AUTH=none: no authentication; anyone who can reach this server can read every room and post as any user"
                );
                Ok(Self::Open)
            }
            (Some(AuthMode::Jwt), 0) => Err(AuthConfigError(
                "CHAT_AUTH=jwt needs a key: set CHAT_JWT_SECRET (HS256, at least 32 bytes), CHAT_JWT_PUBLIC_KEY (a PEM file) or CHAT_JWKS_FILE (a JWKS document)".into(),
            )),
            (_, 1..) => Ok(Self::Jwt(JwtVerifier::from_settings(settings)?)),
            (None, 0) if settings.database_url.is_some() => Err(AuthConfigError(
                "DATABASE_URL is set (a production deployment) but no authentication is configured: set CHAT_JWT_SECRET, CHAT_JWT_PUBLIC_KEY or CHAT_JWKS_FILE to verify JWTs, or CHAT_AUTH=none to run without authentication on purpose".into(),
            )),
            (None, 0) => {
                tracing::warn!(
                    "NO AUTHENTICATION (embedded default): anyone can post as any user; set CHAT_JWT_SECRET or another key to require JWTs"
                );
                Ok(Self::Open)
            }
        }
    }

    /// Checks a credential (a bare JWT) against the clock.
    ///
    /// # Errors
    /// [`AuthError`] in jwt mode; open mode accepts anything, including nothing.
    pub(crate) fn verify(&self, credential: Option<&str>) -> Result<Verified, AuthError> {
        match self {
            Self::Open => Ok(Verified {
                caller: Caller::Open,
                expires_at: None,
            }),
            Self::Jwt(verifier) => verifier.verify(credential.ok_or(AuthError::Missing)?),
        }
    }

    /// Re-reads a JWKS file (on SIGHUP); other key sources do not change.
    pub(crate) fn reload(&self) {
        if let Self::Jwt(verifier) = self {
            verifier.reload();
        }
    }
}

/// One key and the one algorithm it verifies.
struct VerifyingKey {
    kid: Option<String>,
    key: DecodingKey,
    algorithm: Algorithm,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum KeySource {
    /// A secret or a PEM key: fixed for the life of the process.
    Fixed(VerifyingKey),
    Jwks {
        path: PathBuf,
        keys: RwLock<Vec<VerifyingKey>>,
        last_load: Mutex<Instant>,
    },
}

/// jwt mode: verifies tokens against the configured key(s).
#[derive(Debug)]
pub(crate) struct JwtVerifier {
    source: KeySource,
    issuer: Option<String>,
    audience: Option<String>,
    name_claim: String,
}

impl JwtVerifier {
    fn from_settings(settings: &Settings) -> Result<Self, AuthConfigError> {
        let source = if let Some(secret) = &settings.jwt_secret {
            KeySource::Fixed(secret_key(secret)?)
        } else if let Some(path) = &settings.jwt_public_key {
            KeySource::Fixed(pem_key(path)?)
        } else if let Some(path) = &settings.jwks_file {
            KeySource::Jwks {
                keys: RwLock::new(load_jwks(path)?),
                path: path.clone(),
                last_load: Mutex::new(Instant::now()),
            }
        } else {
            return Err(AuthConfigError("no JWT key configured".into()));
        };
        tracing::info!(
            issuer = settings.jwt_issuer.as_deref().unwrap_or("(any)"),
            audience = settings.jwt_audience.as_deref().unwrap_or("(any)"),
            "authentication: JWT required on every connection and API call"
        );
        Ok(Self {
            source,
            issuer: settings.jwt_issuer.clone(),
            audience: settings.jwt_audience.clone(),
            name_claim: settings.jwt_name_claim.clone(),
        })
    }

    fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| refused(&e))?;
        let claims = match &self.source {
            KeySource::Fixed(key) => self.check(token, key)?,
            KeySource::Jwks {
                keys, last_load, ..
            } => {
                let kid = header.kid.as_deref();
                match self.check_with_set(token, kid, keys) {
                    // A key we do not know: perhaps rotated in since we read the file.
                    Err(None) if reload_allowed(last_load) => {
                        self.reload();
                        self.check_with_set(token, kid, keys)
                    }
                    other => other,
                }
                .map_err(|e| e.unwrap_or_else(|| unknown_kid(kid)))?
            }
        };
        self.identity(&claims)
    }

    /// `Err(None)`: no key for this `kid`.
    fn check_with_set(
        &self,
        token: &str,
        kid: Option<&str>,
        keys: &RwLock<Vec<VerifyingKey>>,
    ) -> Result<HashMap<String, Value>, Option<AuthError>> {
        let keys = keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = match kid {
            Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if keys.len() == 1 => keys.first(),
            None => {
                return Err(Some(AuthError::Refused(
                    "the token has no kid and the key set has several keys".into(),
                )));
            }
        };
        let key = key.ok_or(None)?;
        self.check(token, key).map_err(Some)
    }

    fn check(&self, token: &str, key: &VerifyingKey) -> Result<HashMap<String, Value>, AuthError> {
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY.as_secs();
        validation.validate_nbf = true;
        // `sub` is checked by `identity`: jsonwebtoken only sees a string `sub`, and a user
        // id may come as a number.
        validation.set_required_spec_claims(&["exp"]);
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        jsonwebtoken::decode::<HashMap<String, Value>>(token, &key.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| refused(&e))
    }

    fn identity(&self, claims: &HashMap<String, Value>) -> Result<Verified, AuthError> {
        let user = match claims.get("sub") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.parse::<i64>().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            AuthError::Refused(
                "sub must be the user's id, an integer (as a number or a string)".into(),
            )
        })?;
        let nickname = [self.name_claim.as_str(), "preferred_username"]
            .iter()
            .find_map(|claim| claims.get(*claim).and_then(Value::as_str))
            .map(str::to_owned);
        let admin = claims
            .get("roles")
            .and_then(Value::as_array)
            .is_some_and(|roles| roles.iter().any(|r| r.as_str() == Some("admin")));
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        Ok(Verified {
            caller: Caller::User(Identity {
                user: SenderId(user),
                nickname,
                admin,
            }),
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(exp) + LEEWAY),
        })
    }

    fn reload(&self) {
        if let KeySource::Jwks {
            path,
            keys,
            last_load,
        } = &self.source
        {
            match load_jwks(path) {
                Ok(fresh) => {
                    tracing::info!(keys = fresh.len(), path = %path.display(), "JWKS reloaded");
                    *keys
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
                    *last_load
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
                }
                Err(error) => {
                    tracing::error!(%error, "cannot reload the JWKS; keeping the keys already loaded");
                }
            }
        }
    }
}

fn reload_allowed(last_load: &Mutex<Instant>) -> bool {
    let mut last = last_load
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if last.elapsed() < JWKS_RELOAD_MIN_INTERVAL {
        return false;
    }
    *last = Instant::now();
    true
}

fn unknown_kid(kid: Option<&str>) -> AuthError {
    AuthError::Refused(format!(
        "no key with kid {:?} in the server's key set",
        kid.unwrap_or("")
    ))
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn refused(error: &jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    let why = match error.kind() {
        ErrorKind::ExpiredSignature => return AuthError::Expired,
        ErrorKind::InvalidSignature => "bad signature".to_owned(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "its algorithm is not the one of the server's key".to_owned()
        }
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidAudience => "wrong audience (aud)".to_owned(),
        ErrorKind::InvalidIssuer => "wrong issuer (iss)".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the {claim} claim is required"),
        _ => format!("not a valid JWT ({error})"),
    };
    AuthError::Refused(why)
}

fn secret_key(secret: &str) -> Result<VerifyingKey, AuthConfigError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(AuthConfigError(format!(
            "CHAT_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes (it has {}); generate one with `openssl rand -base64 48`",
            secret.len()
        )));
    }
    Ok(VerifyingKey {
        kid: None,
        key: DecodingKey::from_secret(secret.as_bytes()),
        algorithm: Algorithm::HS256,
    })
}

fn pem_key(path: &Path) -> Result<VerifyingKey, AuthConfigError> {
    let pem = std::fs::read(path).map_err(|e| {
        AuthConfigError(format!(
            "cannot read CHAT_JWT_PUBLIC_KEY {}: {e}",
            path.display()
        ))
    })?;
    let (key, algorithm) = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        (key, Algorithm::RS256)
    } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        (key, Algorithm::ES256)
    } else if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        (key, Algorithm::EdDSA)
    } else {
        return Err(AuthConfigError(format!(
            "CHAT_JWT_PUBLIC_KEY {} is not an RSA, EC (P-256) or Ed25519 public key in PEM",
            path.display()
        )));
    };
    Ok(VerifyingKey {
        kid: None,
        key,
        algorithm,
    })
}

fn load_jwks(path: &Path) -> Result<Vec<VerifyingKey>, AuthConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        AuthConfigError(format!(
            "cannot read CHAT_JWKS_FILE {}: {e}",
            path.display()
        ))
    })?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| {
        AuthConfigError(format!(
            "CHAT_JWKS_FILE {} is not a JWKS document: {e}",
            path.display()
        ))
    })?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.clone();
        let algorithm = match (jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(KeyAlgorithm::RS256), _) => Algorithm::RS256,
            (Some(KeyAlgorithm::ES256), _) => Algorithm::ES256,
            (Some(KeyAlgorithm::EdDSA), _) => Algorithm::EdDSA,
            (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P256 => {
                Algorithm::ES256
            }
            (None, AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
            _ => {
                tracing::warn!(
                    ?kid,
                    "JWKS key skipped: only RS256, ES256 and EdDSA public keys are used"
                );
                continue;
            }
        };
        match DecodingKey::from_jwk(jwk) {
            Ok(key) => keys.push(VerifyingKey {
                kid,
                key,
                algorithm,
            }),
            Err(error) => tracing::warn!(?kid, %error, "JWKS key skipped: unusable"),
        }
    }
    if keys.is_empty() {
        return Err(AuthConfigError(format!(
            "CHAT_JWKS_FILE {} holds no usable RS256, ES256 or EdDSA key",
            path.display()
        )));
    }
    Ok(keys)
}

/// `chat-server token`: a token signed with `CHAT_JWT_SECRET`, for trying jwt mode.
///
/// # Errors
/// [`AuthConfigError`] when no usable secret is configured.
pub fn mint_token(settings: &Settings, args: &TokenArgs) -> Result<String, AuthConfigError> {
    let secret = settings.jwt_secret.as_deref().ok_or_else(|| {
        AuthConfigError("`chat-server token` signs with CHAT_JWT_SECRET; set it".into())
    })?;
    secret_key(secret)?;
    let now = unix_seconds(SystemTime::now());
    let mut claims = serde_json::json!({
        "sub": args.sub.to_string(),
        "iat": now,
        "exp": now + args.ttl.as_secs(),
        "roles": args.roles,
    });
    if let Some(name) = &args.name {
        claims[settings.jwt_name_claim.as_str()] = Value::String(name.clone());
    }
    if let Some(issuer) = &settings.jwt_issuer {
        claims["iss"] = Value::String(issuer.clone());
    }
    if let Some(audience) = &settings.jwt_audience {
        claims["aud"] = Value::String(audience.clone());
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| AuthConfigError(format!("cannot sign the token: {e}")))
}
