//! JWT authentication for `auth = "jwt"` routes (RFC 7519, JWS compact form of RFC 7515).
//!
//! [`JwtVerifier::verify`] runs on the hot path: it parses, checks the signature with a key
//! read through one atomic load, then checks the claims. It never blocks, never touches the
//! network and never takes a lock. Keys come from the route's `jwt` settings: a PEM public
//! key, a JWKS URL kept fresh by a background thread ([`jwks`]), and/or an HMAC secret.
//!
//! Rules, with where they come from:
//! - Accepted algorithms are RS256, ES256, EdDSA and HS256; `none` and everything else is
//!   rejected (RFC 8725 §3.1, §3.2).
//! - A key verifies only the algorithm of its type, so an HS256 token is checked against the
//!   `hs_secret` only and never against RSA key bytes (the HS/RS confusion, RFC 8725 §2.1).
//! - The signature is checked before any claim is looked at.
//! - `exp` is required and, like `nbf`, must be a number (NumericDate, RFC 7519 §2); both
//!   are checked with the configured leeway (RFC 7519 §4.1.4, §4.1.5). A claim of the wrong
//!   type is an invalid token, never a missing claim.
//! - `iss` and `aud` are checked when configured (RFC 7519 §4.1.1, §4.1.3).
//! - A `crit` header is rejected: no extension is understood (RFC 7515 §4.1.11).
//! - Errors carry a fixed reason for logs; no error ever contains the token or a claim.

mod jwks;
mod keys;

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{Config, JwtConfig, LiveSecret, SecretWatcher};

pub use jwks::JwksTiming;
pub use keys::Algorithm;
use keys::PublicKey;

/// Longest token accepted. The request head is capped anyway; this bounds the work a
/// hostile token can cause before its signature is known to be bad.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash output, 256 bits.
pub const MIN_HS_SECRET_BYTES: usize = 32;

/// The identity a verified token carries.
#[derive(Clone, Debug, PartialEq)]
pub struct JwtClaims {
    /// `sub`, or `""` when absent; becomes the consumer's name.
    pub subject: String,
    /// The `team` claim, or `""`.
    pub team: String,
    /// Scopes from `scope` (space-separated, RFC 8693 §4.2), `scopes` (array of strings) and
    /// `scp` (either form, as Okta and Entra ID issue it), in that order, without duplicates.
    pub scopes: Vec<String>,
    /// `cf_key`: the id of a virtual key whose limits and budgets apply to this caller.
    pub key_id: Option<String>,
    /// Every claim of the payload, for hooks and logs that want more.
    pub raw: Map<String, Value>,
}

/// Why a token was refused. Every variant answers 401 `authentication_error`; clients get no
/// detail. [`JwtError::reason`] is for the gateway's own log and never contains token data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtError {
    /// Not three base64url parts with JSON objects, or longer than [`MAX_TOKEN_BYTES`].
    Malformed,
    /// `alg` is `none` or not one of RS256, ES256, EdDSA, HS256.
    UnsupportedAlgorithm,
    /// The header has `crit`.
    UnsupportedHeader,
    /// The route has no key for the token's algorithm (an HS256 token without `hs_secret`).
    NoKeyForAlgorithm,
    /// No key with the token's `kid`; a JWKS refresh has been requested.
    UnknownKeyId,
    /// The signature does not verify.
    BadSignature,
    /// No `exp` claim.
    MissingExpiry,
    /// `exp` (plus leeway) has passed.
    Expired,
    /// `nbf` (minus leeway) has not come yet.
    NotYetValid,
    /// `iss` is missing or not the configured issuer.
    WrongIssuer,
    /// `aud` is missing or does not contain the configured audience.
    WrongAudience,
    /// A claim has the wrong JSON type; the text names the claim.
    InvalidClaim(&'static str),
}

impl JwtError {
    /// HTTP status for the client: always 401.
    pub fn status(&self) -> u16 {
        401
    }

    /// A fixed, token-free description for the gateway's log.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::Malformed => "malformed token",
            JwtError::UnsupportedAlgorithm => "token algorithm is none or not supported",
            JwtError::UnsupportedHeader => "token header has crit",
            JwtError::NoKeyForAlgorithm => "no key configured for the token's algorithm",
            JwtError::UnknownKeyId => "token kid matches no key",
            JwtError::BadSignature => "token signature does not verify",
            JwtError::MissingExpiry => "token has no exp",
            JwtError::Expired => "token expired",
            JwtError::NotYetValid => "token not yet valid (nbf)",
            JwtError::WrongIssuer => "token issuer does not match",
            JwtError::WrongAudience => "token audience does not match",
            JwtError::InvalidClaim(what) => what,
        }
    }
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for JwtError {}

/// Checks JWTs for one route. Built when the config is compiled; shared by every worker.
pub struct JwtVerifier {
    issuer: Option<String>,
    audience: Option<String>,
    leeway_s: i64,
    hs_secret: Option<LiveSecret>,
    pem_keys: Vec<PublicKey>,
    jwks: Option<jwks::JwksSource>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_s", &self.leeway_s)
            .field("hs_secret", &self.hs_secret.is_some())
            .field("pem_keys", &self.pem_keys)
            .field("jwks", &self.jwks)
            .finish()
    }
}

impl JwtVerifier {
    /// Builds the verifier of one route's `jwt` settings: reads the PEM key (text, or a file
    /// relative to the config dir), watches `hs_secret`, and starts the JWKS thread, waiting
    /// briefly for the first fetch (a failed fetch is logged and retried, not an error).
    /// Errors name the setting (`jwt.public_key: ...`) and never contain a secret.
    pub fn new(
        cfg: &JwtConfig,
        config: &Config,
        secrets: &SecretWatcher,
    ) -> Result<Arc<JwtVerifier>, String> {
        JwtVerifier::with_jwks_timing(cfg, config, secrets, JwksTiming::default())
    }

    /// [`JwtVerifier::new`] with explicit JWKS timing (tests use short intervals).
    pub fn with_jwks_timing(
        cfg: &JwtConfig,
        config: &Config,
        secrets: &SecretWatcher,
        timing: JwksTiming,
    ) -> Result<Arc<JwtVerifier>, String> {
        JwtVerifier::build(cfg, config, secrets, Some(timing))
    }

    /// [`JwtVerifier::new`] without starting the JWKS fetch (its URL is still checked): the
    /// same errors, for `credentialflow check`. The verifier has no JWKS keys.
    pub fn without_fetching(
        cfg: &JwtConfig,
        config: &Config,
        secrets: &SecretWatcher,
    ) -> Result<Arc<JwtVerifier>, String> {
        JwtVerifier::build(cfg, config, secrets, None)
    }

    /// `timing` = `None`: do not start the JWKS fetch.
    fn build(
        cfg: &JwtConfig,
        config: &Config,
        secrets: &SecretWatcher,
        timing: Option<JwksTiming>,
    ) -> Result<Arc<JwtVerifier>, String> {
        let pem_keys = if cfg.public_key.trim().is_empty() {
            Vec::new()
        } else {
            load_pem_keys(&cfg.public_key, config).map_err(|e| format!("jwt.public_key: {e}"))?
        };
        let hs_secret = match &cfg.hs_secret {
            None => None,
            Some(reference) => {
                let live = secrets
                    .watch(reference)
                    .map_err(|e| format!("jwt.hs_secret: {e}"))?;
                if live.current().expose().len() < MIN_HS_SECRET_BYTES {
                    return Err(format!(
                        "jwt.hs_secret: must be at least {MIN_HS_SECRET_BYTES} bytes for HS256 (RFC 7518 §3.2)"
                    ));
                }
                Some(live)
            }
        };
        let jwks = if cfg.jwks_url.trim().is_empty() {
            None
        } else {
            let url = cfg.jwks_url.trim();
            let source = match timing {
                Some(timing) => jwks::JwksSource::start(url, timing),
                None => jwks::JwksSource::unstarted(url),
            };
            Some(source.map_err(|e| format!("jwt.jwks_url: {e}"))?)
        };
        if pem_keys.is_empty() && hs_secret.is_none() && jwks.is_none() {
            return Err("jwt: needs one of public_key, jwks_url, hs_secret".to_string());
        }
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Ok(Arc::new(JwtVerifier {
            issuer: non_empty(&cfg.issuer),
            audience: non_empty(&cfg.audience),
            leeway_s: i64::try_from(cfg.leeway_s).unwrap_or(i64::MAX),
            hs_secret,
            pem_keys,
            jwks,
        }))
    }

    /// Verifies `token` (the compact JWS, without `Bearer `) at unix time `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<JwtClaims, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header: Header =
            serde_json::from_slice(&b64url(header_b64)?).map_err(|_| JwtError::Malformed)?;
        if header.crit.is_some() {
            return Err(JwtError::UnsupportedHeader);
        }
        let alg = Algorithm::from_name(&header.alg).ok_or(JwtError::UnsupportedAlgorithm)?;
        let signature = b64url(signature_b64)?;
        // The JWS Signing Input is the first two parts as sent (RFC 7515 §5.2 step 8).
        let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        self.check_signature(alg, header.kid.as_deref(), signing_input, &signature)?;

        let payload: Map<String, Value> =
            serde_json::from_slice(&b64url(payload_b64)?).map_err(|_| JwtError::Malformed)?;
        self.check_claims(&payload, now)?;
        claims_of(payload)
    }

    fn check_signature(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
        signing_input: &[u8],
        signature: &[u8],
    ) -> Result<(), JwtError> {
        if alg == Algorithm::Hs256 {
            let secret = self.hs_secret.as_ref().ok_or(JwtError::NoKeyForAlgorithm)?;
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret.current().expose().as_bytes());
            // ring compares the tags in constant time.
            return hmac::verify(&key, signing_input, signature)
                .map_err(|_| JwtError::BadSignature);
        }
        // A kid-less key (a PEM key) is a candidate for any kid; `kid` is only a hint.
        let fits = |key: &PublicKey| {
            key.algorithm() == alg
                && (kid.is_none() || key.kid.is_none() || key.kid.as_deref() == kid)
        };
        let jwks_keys = self.jwks.as_ref().map(|source| source.keys());
        let jwks_slice: &[PublicKey] = jwks_keys.as_ref().map_or(&[], |keys| keys.as_slice());
        let jwks_has_fit = jwks_slice.iter().any(&fits);
        if let Some(source) = &self.jwks {
            if !jwks_has_fit {
                // Maybe the IdP rotated keys since the last fetch (rate-limited inside).
                source.request_refresh();
            }
        }
        let mut tried = false;
        for key in self.pem_keys.iter().chain(jwks_slice).filter(|k| fits(k)) {
            tried = true;
            if key.verify(signing_input, signature) {
                return Ok(());
            }
        }
        match (tried, &self.jwks) {
            (true, _) => Err(JwtError::BadSignature),
            (false, Some(_)) => Err(JwtError::UnknownKeyId),
            (false, None) => Err(JwtError::NoKeyForAlgorithm),
        }
    }

    fn check_claims(&self, claims: &Map<String, Value>, now: i64) -> Result<(), JwtError> {
        let exp = numeric_date(claims, "exp", "claim exp is not a number")?
            .ok_or(JwtError::MissingExpiry)?;
        // RFC 7519 §4.1.4: the current time must be before exp.
        if now >= exp.saturating_add(self.leeway_s) {
            return Err(JwtError::Expired);
        }
        // RFC 7519 §4.1.5: the current time must be at or after nbf.
        if let Some(nbf) = numeric_date(claims, "nbf", "claim nbf is not a number")? {
            if now.saturating_add(self.leeway_s) < nbf {
                return Err(JwtError::NotYetValid);
            }
        }
        if let Some(issuer) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err(JwtError::WrongIssuer);
            }
        }
        if let Some(audience) = &self.audience {
            // RFC 7519 §4.1.3: one string, or an array of strings.
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
                _ => false,
            };
            if !ok {
                return Err(JwtError::WrongAudience);
            }
        }
        Ok(())
    }
}

/// The JOSE header members looked at (RFC 7515 §4.1). Wrong types make the token malformed.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// base64url without padding (RFC 7515 §2); padding or other alphabets are malformed.
fn b64url(part: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)
}

/// A NumericDate claim (RFC 7519 §2): seconds, possibly fractional. Absent is `None`; any
/// other JSON type is an error, so a string `exp` cannot pass for a missing one.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &str,
    wrong_type: &'static str,
) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(seconds), _) => Ok(Some(seconds)),
            // `as` saturates for out-of-range floats; floor keeps "before exp" exact.
            (None, Some(seconds)) if seconds.is_finite() => Ok(Some(seconds.floor() as i64)),
            _ => Err(JwtError::InvalidClaim(wrong_type)),
        },
        Some(_) => Err(JwtError::InvalidClaim(wrong_type)),
    }
}

fn optional_string(
    claims: &Map<String, Value>,
    name: &str,
    wrong_type: &'static str,
) -> Result<Option<String>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(JwtError::InvalidClaim(wrong_type)),
    }
}

fn claims_of(raw: Map<String, Value>) -> Result<JwtClaims, JwtError> {
    let mut scopes: Vec<String> = Vec::new();
    let mut add = |scope: &str| {
        if !scope.is_empty() && !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_string());
        }
    };
    for (name, wrong_type) in [
        ("scope", "claim scope is not a string"),
        ("scopes", "claim scopes is not an array of strings"),
        ("scp", "claim scp is not a string or an array of strings"),
    ] {
        match raw.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(list)) if name != "scopes" => {
                list.split_whitespace().for_each(&mut add)
            }
            Some(Value::Array(items)) if name != "scope" => {
                for item in items {
                    add(item.as_str().ok_or(JwtError::InvalidClaim(wrong_type))?);
                }
            }
            Some(_) => return Err(JwtError::InvalidClaim(wrong_type)),
        }
    }
    Ok(JwtClaims {
        subject: optional_string(&raw, "sub", "claim sub is not a string")?.unwrap_or_default(),
        team: optional_string(&raw, "team", "claim team is not a string")?.unwrap_or_default(),
        key_id: optional_string(&raw, "cf_key", "claim cf_key is not a string")?,
        scopes,
        raw,
    })
}

/// The keys of `public_key`: PEM text itself, or the path of a PEM file (relative paths
/// start at the config file's directory).
fn load_pem_keys(public_key: &str, config: &Config) -> Result<Vec<PublicKey>, String> {
    if public_key.contains("-----BEGIN") {
        return keys::keys_from_pem(public_key);
    }
    let path = config.resolve_path(public_key.trim());
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    keys::keys_from_pem(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests;
