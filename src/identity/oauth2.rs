//! OAuth2 client credentials (RFC 6749 §4.4): the gateway authenticates as itself at a token
//! endpoint and gets an access token to send upstream as `Authorization: Bearer`.
//!
//! The request is `POST token_url` with `grant_type=client_credentials`, `scope` and
//! `audience` when set, and the client authenticated either by HTTP Basic over the
//! form-encoded id and secret (RFC 6749 §2.3.1, `auth_method = "basic"`) or by `client_id`
//! and `client_secret` in the body (`"form"`). The answer (§5.1) must carry `access_token`,
//! `token_type` Bearer and normally `expires_in`; an error answer (§5.2) is reported by its
//! `error` code only, since its description may echo what was sent.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::http::{form_encode_into, Endpoint, Limits};
use super::source::{
    BearerToken, CredentialSource, Fetch, FetchError, Fetched, Registry, SourceTiming,
};
use crate::config::{LiveSecret, OAuth2AuthMethod, OAuth2Config, SecretRef, SecretWatcher};

/// A source of bearer tokens.
pub type TokenSource = CredentialSource<BearerToken>;

/// Largest token response accepted; real ones are a few KiB (a JWT access token included).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest access token accepted: it goes into every upstream request head.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Lifetime assumed when the endpoint gives no `expires_in` (RFC 6749 §5.1 makes it
/// RECOMMENDED, not required): short, so a token of unknown lifetime is replaced early.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Longest lifetime believed; a larger `expires_in` is clamped so the token is still renewed.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Longest `error` code logged from an error answer.
const MAX_ERROR_CODE_BYTES: usize = 64;

/// Everything one client-credentials source needs.
#[derive(Clone)]
pub struct ClientCredentials {
    /// The token endpoint.
    pub endpoint: Endpoint,
    /// The client identifier.
    pub client_id: String,
    /// The client secret (a `file:` secret follows its file).
    pub client_secret: LiveSecret,
    /// `scope`; empty = not sent.
    pub scope: String,
    /// `audience`; empty = not sent.
    pub audience: String,
    /// How the client authenticates.
    pub auth_method: OAuth2AuthMethod,
    /// Bound of one token request.
    pub timeout: Duration,
}

impl Fetch for ClientCredentials {
    type Credential = BearerToken;

    fn fetch(&mut self) -> Result<Fetched<BearerToken>, FetchError> {
        let secret = self.client_secret.current();
        let mut form: Vec<(&str, &str)> = vec![("grant_type", "client_credentials")];
        if !self.scope.is_empty() {
            form.push(("scope", &self.scope));
        }
        if !self.audience.is_empty() {
            form.push(("audience", &self.audience));
        }
        // RFC 6749 §2.3.1: id and secret are form-encoded before they go into Basic.
        let (mut id, mut password) = (String::new(), zeroize::Zeroizing::new(String::new()));
        let basic = match self.auth_method {
            OAuth2AuthMethod::Basic => {
                form_encode_into(&self.client_id, &mut id);
                form_encode_into(secret.expose(), &mut password);
                Some((id.as_str(), password.as_str()))
            }
            OAuth2AuthMethod::Form => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", secret.expose()));
                None
            }
        };
        let limits = Limits {
            timeout: self.timeout,
            max_body: MAX_RESPONSE_BYTES,
        };
        let response = self.endpoint.post_form(&form, basic, limits)?;
        token_from_response(response.status, &response.body)
    }

    fn describe(&self) -> String {
        self.endpoint.url().to_string()
    }
}

/// The successful answer's fields (RFC 6749 §5.1); others are ignored.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// The error answer's code (RFC 6749 §5.2); its description is never read.
#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
}

/// The token in a token endpoint's answer, or why there is none (no part of the body but a
/// short, checked `error` code is ever put in the message).
pub fn token_from_response(status: u16, body: &[u8]) -> Result<Fetched<BearerToken>, FetchError> {
    if status != 200 {
        let code = serde_json::from_slice::<ErrorAnswer>(body)
            .ok()
            .map(|e| e.error)
            .filter(|code| is_error_code(code));
        return Err(match code {
            Some(code) => format!("token endpoint answered {status} with error {code}"),
            None => format!("token endpoint answered {status}"),
        });
    }
    let answer: TokenAnswer = serde_json::from_slice(body)
        .map_err(|_| "token endpoint answered 200 without a JSON access_token".to_string())?;
    if let Some(kind) = &answer.token_type {
        // RFC 6749 §7.1 / RFC 6750: only bearer tokens can be sent as they are.
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err("token endpoint issued a token that is not a Bearer token".to_string());
        }
    }
    let token = answer.access_token;
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES || !is_token68ish(&token) {
        return Err(format!(
            "token endpoint issued an access token that cannot be sent in a header ({} bytes)",
            token.len()
        ));
    }
    let lifetime = match answer.expires_in {
        None => Ok(DEFAULT_LIFETIME),
        // Some IdPs send the number as a string.
        Some(serde_json::Value::Number(n)) => lifetime_of(n.as_f64()),
        Some(serde_json::Value::String(s)) => lifetime_of(s.trim().parse::<f64>().ok()),
        Some(_) => return Err("token endpoint sent an expires_in that is not a number".into()),
    }?;
    Ok(Fetched {
        credential: BearerToken::new(token),
        lifetime,
    })
}

fn lifetime_of(seconds: Option<f64>) -> Result<Duration, FetchError> {
    match seconds {
        Some(s) if s.is_finite() && s > 0.0 => {
            Ok(Duration::from_secs_f64(s.min(MAX_LIFETIME.as_secs_f64())))
        }
        _ => Err("token endpoint sent an expires_in that is not a positive number".into()),
    }
}

/// RFC 6749 §5.2 error codes are NQSCHAR without spaces in practice; anything else is not
/// logged (it could be an echo of what was sent).
fn is_error_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= MAX_ERROR_CODE_BYTES
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Visible ASCII only (RFC 6750 §2.1 `b64token` and what JWTs use, a little wider): it goes
/// into a header value after `Bearer `, so no space, control or non-ASCII byte.
fn is_token68ish(token: &str) -> bool {
    token.bytes().all(|b| b.is_ascii_graphic())
}

/// Client-credentials settings from the config, checked (nothing contacted).
pub fn settings(
    cfg: &OAuth2Config,
    secrets: &SecretWatcher,
    timing: &SourceTiming,
) -> Result<ClientCredentials, String> {
    let endpoint = Endpoint::new(cfg.token_url.trim()).map_err(|e| format!("token_url: {e}"))?;
    if cfg.client_id.trim().is_empty() {
        return Err("client_id: is required".to_string());
    }
    let client_secret = secrets
        .watch(&cfg.client_secret)
        .map_err(|e| format!("client_secret: {e}"))?;
    Ok(ClientCredentials {
        endpoint,
        client_id: cfg.client_id.clone(),
        client_secret,
        scope: cfg.scope.clone(),
        audience: cfg.audience.clone(),
        auth_method: cfg.auth_method,
        timeout: timing.fetch_timeout,
    })
}

/// What makes two sources the same: every setting, the secret by reference (a literal by a
/// digest of its value, so no secret is kept as a key).
pub fn settings_key(cfg: &OAuth2Config) -> String {
    let mut digest = Sha256::new();
    let secret = match &cfg.client_secret {
        SecretRef::Env(name) => format!("env:{name}"),
        SecretRef::File(path) => format!("file:{}", path.display()),
        SecretRef::Literal(value) => format!("literal:{}", value.expose()),
    };
    let method = match cfg.auth_method {
        OAuth2AuthMethod::Basic => "basic",
        OAuth2AuthMethod::Form => "form",
    };
    for field in [
        "oauth2",
        cfg.token_url.trim(),
        &cfg.client_id,
        &secret,
        &cfg.scope,
        &cfg.audience,
        method,
    ] {
        // Length-prefixed, so no two different settings hash the same input.
        digest.update((field.len() as u64).to_be_bytes());
        digest.update(field.as_bytes());
    }
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The process's bearer-token sources, shared by settings.
pub fn registry() -> &'static Registry<BearerToken> {
    static REGISTRY: OnceLock<Registry<BearerToken>> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// The running token source for `cfg`, started on first use and shared with every other
/// holder of the same settings; `name` (the upstream's) labels its metrics and log lines.
pub fn shared_source(
    name: &str,
    cfg: &OAuth2Config,
    secrets: &SecretWatcher,
    timing: SourceTiming,
) -> Result<Arc<TokenSource>, String> {
    let fetcher = settings(cfg, secrets, &timing)?;
    registry().get_or_start(settings_key(cfg), || {
        let stats = crate::metrics::global().credentials().register(name);
        CredentialSource::start(name, fetcher, timing, stats)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_answer_gives_its_token_and_lifetime() {
        let fetched = token_from_response(
            200,
            br#"{"access_token":"eyJ.abc.def","token_type":"Bearer","expires_in":3599}"#,
        )
        .unwrap();
        assert_eq!(fetched.credential.expose(), "eyJ.abc.def");
        assert_eq!(fetched.lifetime, Duration::from_secs(3599));
        let fetched = token_from_response(
            200,
            br#"{"access_token":"t","token_type":"bearer","expires_in":"60"}"#,
        )
        .unwrap();
        assert_eq!(fetched.lifetime, Duration::from_secs(60));
    }

    #[test]
    fn a_missing_expires_in_gets_a_short_default_and_a_huge_one_is_clamped() {
        let fetched = token_from_response(200, br#"{"access_token":"t"}"#).unwrap();
        assert_eq!(fetched.lifetime, DEFAULT_LIFETIME);
        let fetched =
            token_from_response(200, br#"{"access_token":"t","expires_in":1e12}"#).unwrap();
        assert_eq!(fetched.lifetime, MAX_LIFETIME);
        assert!(token_from_response(200, br#"{"access_token":"t","expires_in":0}"#).is_err());
        assert!(token_from_response(200, br#"{"access_token":"t","expires_in":-5}"#).is_err());
    }

    #[test]
    fn tokens_that_cannot_be_sent_are_refused() {
        for body in [
            r#"{"access_token":"a b"}"#,
            r#"{"access_token":"a\r\nx-evil: 1"}"#,
            r#"{"access_token":""}"#,
            r#"{"access_token":"t","token_type":"mac"}"#,
            r#"{"token_type":"Bearer"}"#,
        ] {
            assert!(token_from_response(200, body.as_bytes()).is_err(), "{body}");
        }
        let long = format!(
            r#"{{"access_token":"{}"}}"#,
            "a".repeat(MAX_TOKEN_BYTES + 1)
        );
        assert!(token_from_response(200, long.as_bytes()).is_err());
    }

    #[test]
    fn an_error_answer_is_reported_by_its_code_only() {
        let err = token_from_response(
            401,
            br#"{"error":"invalid_client","error_description":"client secret s3cr3t-value is wrong"}"#,
        )
        .unwrap_err();
        assert_eq!(err, "token endpoint answered 401 with error invalid_client");
        // A code that is not a code (it could be an echo) is left out.
        let err = token_from_response(400, br#"{"error":"secret s3cr3t-value"}"#).unwrap_err();
        assert_eq!(err, "token endpoint answered 400");
        let err = token_from_response(500, b"<html>s3cr3t-value</html>").unwrap_err();
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    fn config(secret: &str) -> OAuth2Config {
        OAuth2Config {
            token_url: "https://idp.example/oauth2/token".into(),
            client_id: "gateway".into(),
            client_secret: SecretRef::parse(secret).unwrap(),
            scope: "read".into(),
            audience: String::new(),
            auth_method: OAuth2AuthMethod::Basic,
        }
    }

    #[test]
    fn settings_key_tells_settings_apart_without_holding_the_secret() {
        let a = settings_key(&config("literal-one"));
        assert_eq!(a, settings_key(&config("literal-one")));
        assert_ne!(a, settings_key(&config("literal-two")));
        let mut form = config("literal-one");
        form.auth_method = OAuth2AuthMethod::Form;
        assert_ne!(a, settings_key(&form));
        assert!(!a.contains("literal-one"));
    }
}
