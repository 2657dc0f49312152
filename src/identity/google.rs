//! Google service-account access tokens: the OAuth 2.0 JWT-bearer grant (RFC 7523) as Google's
//! token endpoint speaks it ("Using OAuth 2.0 for Server to Server Applications").
//!
//! A service-account key file (JSON, `type = "service_account"`) holds an RSA private key. To
//! get an access token the gateway signs a short-lived JWT, the *assertion*, with that key
//! (RS256: RSASSA-PKCS1-v1_5 with SHA-256) and POSTs it to the file's `token_uri`; the endpoint
//! answers `{"access_token", "expires_in", "token_type": "Bearer"}`.
//!
//! Everything here is a pure function of its inputs (the file, the time, the endpoint's
//! answer): no I/O but reading the key file, no threads, no clock. The credential source that
//! fetches and refreshes tokens in the background calls [`ServiceAccount::token_request`],
//! sends it with its own HTTP client, and hands the answer to [`parse_token_response`].
//! [`super::google_source`] runs it as a `vertex` provider's token source and checks the
//! provider's `service_account` the way [`check_service_account_file`] does.
//!
//! Secrets: the private key, the assertion (exchangeable for tokens until it expires) and the
//! access token. None of them has a `Debug` or `Display` that shows it, no error message
//! quotes them (errors name the field and the problem, never the value), and the copies this
//! module makes are zeroized on drop. The parsed key itself lives inside ring's `RsaKeyPair`,
//! which keeps it private but does not zeroize it.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

/// The scope that covers every Google Cloud API, Vertex AI included.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The `grant_type` of the JWT-bearer grant (RFC 7523 section 2.1).
pub const JWT_BEARER_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How long an assertion is valid: Google refuses assertions that live longer than an hour.
pub const ASSERTION_LIFETIME_SECS: u64 = 3600;

/// Largest service-account file read. Google's are about 2.3 KiB; the bound keeps a wrong
/// path (a log, a device) from being read whole.
pub const MAX_SERVICE_ACCOUNT_BYTES: usize = 64 * 1024;

/// Largest token-endpoint answer parsed. Google's are well under 4 KiB.
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// Longest access token accepted. Google documents up to 2 KiB and reserves the right to grow
/// them; four times that still bounds what every request then carries.
pub const MAX_ACCESS_TOKEN_BYTES: usize = 8 * 1024;

/// Longest lifetime believed from `expires_in`. Google's tokens live an hour (twelve at most
/// when extended); a longer claim is shortened to this, so a broken or hostile endpoint cannot
/// make the gateway hold a token for years.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 12 * 3600;

/// Longest error code surfaced from a refusal; longer codes are not RFC 6749's.
const MAX_ERROR_CODE_BYTES: usize = 64;

/// Longest value accepted for the file's text fields (`client_email`, `token_uri`, ...).
const MAX_FIELD_BYTES: usize = 2048;

/// Longest scope list accepted, joined.
const MAX_SCOPE_BYTES: usize = 4096;

/// The MIME type of the token request's body.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

const PKCS8_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PKCS8_END: &str = "-----END PRIVATE KEY-----";

/// Why a service-account file was refused. The message names the file's field and the problem,
/// never the field's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAccountError {
    /// The file could not be read.
    Read {
        /// The path as given.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The file is larger than [`MAX_SERVICE_ACCOUNT_BYTES`].
    TooLarge,
    /// The file is not JSON; where the parser stopped.
    NotJson {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The JSON is not an object.
    NotAnObject,
    /// A required field is absent (or `null`).
    Missing(&'static str),
    /// A field is present but not a string.
    NotAString(&'static str),
    /// A field's value is unusable.
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it, in words that never quote the value.
        reason: String,
    },
}

impl fmt::Display for ServiceAccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceAccountError::Read { path, reason } => {
                write!(f, "cannot read service-account file {path}: {reason}")
            }
            ServiceAccountError::TooLarge => write!(
                f,
                "service-account file is larger than {MAX_SERVICE_ACCOUNT_BYTES} bytes"
            ),
            ServiceAccountError::NotJson { line, column } => write!(
                f,
                "service-account file is not JSON (stopped at line {line}, column {column})"
            ),
            ServiceAccountError::NotAnObject => {
                write!(f, "service-account file is not a JSON object")
            }
            ServiceAccountError::Missing(field) => {
                write!(f, "service-account file has no `{field}`")
            }
            ServiceAccountError::NotAString(field) => {
                write!(f, "service-account file's `{field}` is not a string")
            }
            ServiceAccountError::Invalid { field, reason } => {
                write!(f, "service-account file's `{field}` {reason}")
            }
        }
    }
}

impl std::error::Error for ServiceAccountError {}

fn invalid(field: &'static str, reason: impl Into<String>) -> ServiceAccountError {
    ServiceAccountError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A parsed service account: who it is, where its tokens come from, and its signing key.
pub struct ServiceAccount {
    client_email: String,
    private_key_id: String,
    token_uri: String,
    project_id: String,
    key: RsaKeyPair,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .field("project_id", &self.project_id)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl ServiceAccount {
    /// Reads and parses a service-account key file (at most [`MAX_SERVICE_ACCOUNT_BYTES`]).
    pub fn from_file(path: &Path) -> Result<ServiceAccount, ServiceAccountError> {
        use std::io::Read;
        let read_error = |e: std::io::Error| ServiceAccountError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        // One byte past the bound tells "exactly at the bound" from "over it".
        let mut bytes = Zeroizing::new(Vec::new());
        file.take(MAX_SERVICE_ACCOUNT_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        ServiceAccount::from_json(&bytes)
    }

    /// Parses a service-account key file's contents.
    pub fn from_json(bytes: &[u8]) -> Result<ServiceAccount, ServiceAccountError> {
        if bytes.len() > MAX_SERVICE_ACCOUNT_BYTES {
            return Err(ServiceAccountError::TooLarge);
        }
        // Parsed as a generic object, fields taken one by one, so that no serde message
        // ("invalid type: string \"...\"") can quote a value.
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ServiceAccountError::NotJson {
                line: e.line(),
                column: e.column(),
            })?;
        let Value::Object(mut fields) = value else {
            return Err(ServiceAccountError::NotAnObject);
        };
        let private_key = take_secret(&mut fields, "private_key");
        let fields = fields;

        let kind = text_field(&fields, "type")?;
        if kind != "service_account" {
            return Err(invalid("type", type_reason(kind)));
        }
        let client_email = text_field(&fields, "client_email")?;
        if !client_email.contains('@') {
            return Err(invalid("client_email", "is not an email address"));
        }
        let private_key_id = text_field(&fields, "private_key_id")?;
        let token_uri = text_field(&fields, "token_uri")?;
        check_token_uri(token_uri)?;
        let project_id = text_field(&fields, "project_id")?;
        let key = parse_private_key(private_key?)?;
        Ok(ServiceAccount {
            client_email: client_email.to_string(),
            private_key_id: private_key_id.to_string(),
            token_uri: token_uri.to_string(),
            project_id: project_id.to_string(),
            key,
        })
    }

    /// The account's identity, the assertion's `iss`.
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// The key's id, the assertion header's `kid`: Google picks the public key by it.
    pub fn private_key_id(&self) -> &str {
        &self.private_key_id
    }

    /// Where tokens are requested, and the assertion's `aud`.
    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// The project the account belongs to.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// The JWT-bearer assertion (RFC 7523 section 3) issued at `issued_at` (unix seconds) for
    /// `scopes` ([`CLOUD_PLATFORM_SCOPE`] when empty): header
    /// `{"alg":"RS256","kid":private_key_id,"typ":"JWT"}`, claims `iss` = client_email,
    /// `scope` = the scopes space-separated, `aud` = token_uri, `iat`, `exp` = `iat` +
    /// [`ASSERTION_LIFETIME_SECS`]; base64url without padding, signed RS256.
    pub fn assertion(&self, scopes: &[&str], issued_at: u64) -> Result<Assertion, AssertionError> {
        let scope = join_scopes(scopes)?;
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id});
        let claims = json!({
            "iss": self.client_email,
            "scope": scope,
            "aud": self.token_uri,
            "iat": issued_at,
            "exp": issued_at + ASSERTION_LIFETIME_SECS,
        });
        let mut jwt = String::with_capacity(1024);
        URL_SAFE_NO_PAD.encode_string(header.to_string(), &mut jwt);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut jwt);
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                jwt.as_bytes(),
                &mut signature,
            )
            .map_err(|_| AssertionError::Signing)?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut jwt);
        Ok(Assertion(Zeroizing::new(jwt)))
    }

    /// The token request for an assertion issued at `issued_at` for `scopes`: `POST
    /// token_uri` with the form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&
    /// assertion=...` (RFC 7523 section 2.1).
    pub fn token_request(
        &self,
        scopes: &[&str],
        issued_at: u64,
    ) -> Result<TokenRequest, AssertionError> {
        let assertion = self.assertion(scopes, issued_at)?;
        let mut body = String::with_capacity(assertion.as_str().len() + 96);
        body.push_str("grant_type=");
        form_encode_into(JWT_BEARER_GRANT_TYPE, &mut body);
        body.push_str("&assertion=");
        form_encode_into(assertion.as_str(), &mut body);
        Ok(TokenRequest {
            url: self.token_uri.clone(),
            assertion,
            body: Zeroizing::new(body),
        })
    }
}

/// Checks a service-account file as `check` does, without contacting anything: it parses, its
/// fields are usable, and its private key is an RSA key that signs (a probe assertion is
/// signed and thrown away). The error names the field at fault.
pub fn check_service_account_file(path: &Path) -> Result<(), ServiceAccountError> {
    let account = ServiceAccount::from_file(path)?;
    account
        .assertion(&[], 0)
        .map(drop)
        .map_err(|_| invalid("private_key", "cannot sign"))
}

/// Removes `name` from `fields` and returns it as a zeroized string, so the only copy of the
/// key's PEM outside this function is wiped when parsing ends.
fn take_secret(
    fields: &mut Map<String, Value>,
    name: &'static str,
) -> Result<Zeroizing<String>, ServiceAccountError> {
    match fields.remove(name) {
        None | Some(Value::Null) => Err(ServiceAccountError::Missing(name)),
        Some(Value::String(s)) => Ok(Zeroizing::new(s)),
        Some(_) => Err(ServiceAccountError::NotAString(name)),
    }
}

/// A required, non-empty text field of at most [`MAX_FIELD_BYTES`] without control characters.
fn text_field<'a>(
    fields: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, ServiceAccountError> {
    let value = match fields.get(name) {
        None | Some(Value::Null) => return Err(ServiceAccountError::Missing(name)),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(ServiceAccountError::NotAString(name)),
    };
    if value.is_empty() {
        return Err(invalid(name, "is empty"));
    }
    if value.len() > MAX_FIELD_BYTES {
        return Err(invalid(
            name,
            format!("is longer than {MAX_FIELD_BYTES} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(name, "contains control characters"));
    }
    Ok(value)
}

/// Why `type` is refused; the value is quoted only when it is one of Google's short
/// lower-case credential types (`authorized_user`, `external_account`, ...), which are not
/// secret and tell the operator which file they gave.
fn type_reason(kind: &str) -> String {
    let plain = kind.len() <= 32 && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if plain {
        format!("is \"{kind}\", not \"service_account\"")
    } else {
        "is not \"service_account\"".to_string()
    }
}

/// `token_uri` must be `https://host[:port]/...`, or plain `http://` to a loopback host only:
/// the assertion is a bearer credential for an hour and must not cross a network in clear.
fn check_token_uri(uri: &str) -> Result<(), ServiceAccountError> {
    let (rest, loopback_only) = if let Some(rest) = uri.strip_prefix("https://") {
        (rest, false)
    } else if let Some(rest) = uri.strip_prefix("http://") {
        (rest, true)
    } else {
        return Err(invalid("token_uri", "is not an https:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(invalid("token_uri", "carries user information"));
    }
    if uri.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err(invalid("token_uri", "contains white space"));
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    if host.is_empty() {
        return Err(invalid("token_uri", "has no host"));
    }
    if loopback_only && !matches!(host, "127.0.0.1" | "localhost" | "::1") {
        return Err(invalid(
            "token_uri",
            "is plain http:// to a host that is not loopback",
        ));
    }
    Ok(())
}

/// Decodes the PKCS#8 PEM and loads it as an RSA key pair; every intermediate copy is
/// zeroized.
fn parse_private_key(pem: Zeroizing<String>) -> Result<RsaKeyPair, ServiceAccountError> {
    const FIELD: &str = "private_key";
    let Some(start) = pem.find(PKCS8_BEGIN) else {
        let reason = if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
            "is a PKCS#1 key (BEGIN RSA PRIVATE KEY), not PKCS#8 (BEGIN PRIVATE KEY)"
        } else if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            "is encrypted; a service-account key is a plain PKCS#8 key"
        } else {
            "is not a PEM private key (BEGIN PRIVATE KEY)"
        };
        return Err(invalid(FIELD, reason));
    };
    let body_start = start + PKCS8_BEGIN.len();
    let Some(body_len) = pem[body_start..].find(PKCS8_END) else {
        return Err(invalid(FIELD, "has no END PRIVATE KEY line"));
    };
    let mut base64 = Zeroizing::new(String::with_capacity(body_len));
    base64.extend(
        pem[body_start..body_start + body_len]
            .chars()
            .filter(|c| !c.is_ascii_whitespace()),
    );
    // The decoder's own error names the offending byte: only the fact is reported.
    let der = Zeroizing::new(
        STANDARD
            .decode(base64.as_bytes())
            .map_err(|_| invalid(FIELD, "is not valid base64 inside its PEM lines"))?,
    );
    RsaKeyPair::from_pkcs8(&der).map_err(|rejected| {
        // ring's reasons are fixed words ("WrongAlgorithm", "TooSmall", ...), never key bytes.
        match rejected.to_string().as_str() {
            "WrongAlgorithm" => invalid(FIELD, "is not an RSA key"),
            "TooSmall" => invalid(FIELD, "is an RSA key shorter than 2048 bits"),
            "TooLarge" => invalid(FIELD, "is an RSA key longer than 8192 bits"),
            other => invalid(FIELD, format!("is not a usable PKCS#8 RSA key ({other})")),
        }
    })
}

fn join_scopes(scopes: &[&str]) -> Result<String, AssertionError> {
    if scopes.is_empty() {
        return Ok(CLOUD_PLATFORM_SCOPE.to_string());
    }
    for scope in scopes {
        if scope.is_empty() || scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(AssertionError::InvalidScope);
        }
    }
    let joined = scopes.join(" ");
    if joined.len() > MAX_SCOPE_BYTES {
        return Err(AssertionError::InvalidScope);
    }
    Ok(joined)
}

/// `application/x-www-form-urlencoded` (WHATWG URL, "urlencoded serializing"): letters, digits
/// and `*-._` as they are, space as `+`, every other byte `%XX`.
fn form_encode_into(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
}

/// Why an assertion could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionError {
    /// A scope is empty or holds white space, or the scopes are too long together.
    InvalidScope,
    /// The key refused to sign (ring reports no reason).
    Signing,
}

impl fmt::Display for AssertionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssertionError::InvalidScope => write!(
                f,
                "a scope is empty or contains white space, or the scopes exceed {MAX_SCOPE_BYTES} bytes"
            ),
            AssertionError::Signing => write!(f, "signing the assertion with the service account's key failed"),
        }
    }
}

impl std::error::Error for AssertionError {}

/// A signed JWT-bearer assertion: a bearer credential until its `exp`, so it is zeroized on
/// drop and never shown by `Debug`.
pub struct Assertion(Zeroizing<String>);

impl Assertion {
    /// The compact JWS, `header.claims.signature`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Assertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Assertion(<redacted>)")
    }
}

/// A token request ready to send: `POST url`, `Content-Type: `[`FORM_CONTENT_TYPE`], the body.
pub struct TokenRequest {
    url: String,
    assertion: Assertion,
    body: Zeroizing<String>,
}

impl TokenRequest {
    /// The token endpoint (the file's `token_uri`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The request's `Content-Type`.
    pub fn content_type(&self) -> &'static str {
        FORM_CONTENT_TYPE
    }

    /// The form-encoded body. Secret: it carries the assertion.
    pub fn body(&self) -> &[u8] {
        self.body.as_bytes()
    }

    /// The form's parameters unencoded, for an HTTP client that encodes forms itself.
    pub fn form(&self) -> [(&'static str, &str); 2] {
        [
            ("grant_type", JWT_BEARER_GRANT_TYPE),
            ("assertion", self.assertion.as_str()),
        ]
    }
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRequest")
            .field("url", &self.url)
            .field("body", &"<redacted>")
            .finish()
    }
}

/// An access token from the token endpoint: used as `Authorization: Bearer <token>` until
/// its lifetime passes. Zeroized on drop and never shown by `Debug`.
pub struct AccessToken {
    value: Zeroizing<String>,
    lifetime: Duration,
}

impl AccessToken {
    /// The token itself. Secret.
    pub fn secret(&self) -> &str {
        &self.value
    }

    /// How long it is valid from when the answer arrived (`expires_in`, at most
    /// [`MAX_TOKEN_LIFETIME_SECS`]).
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// Why the token endpoint's answer gave no token. Only the endpoint's `error` code is kept
/// from a refusal: its `error_description` and any other text may quote what it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The endpoint refused: its HTTP status and, when it sent one in RFC 6749's shape, its
    /// `error` code (`invalid_grant`, `invalid_scope`, ...).
    Refused {
        /// The HTTP status.
        status: u16,
        /// The `error` code, when it was a plain lower-case code of at most 64 bytes.
        error: Option<String>,
    },
    /// The answer is larger than [`MAX_TOKEN_RESPONSE_BYTES`].
    TooLarge,
    /// A success answer that is not a usable token; what is wrong with it.
    Malformed(&'static str),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Refused {
                status,
                error: Some(code),
            } => write!(f, "token endpoint refused (HTTP {status}, error {code})"),
            TokenError::Refused {
                status,
                error: None,
            } => write!(f, "token endpoint refused (HTTP {status})"),
            TokenError::TooLarge => write!(
                f,
                "token endpoint's answer is larger than {MAX_TOKEN_RESPONSE_BYTES} bytes"
            ),
            TokenError::Malformed(what) => write!(f, "token endpoint's answer {what}"),
        }
    }
}

impl std::error::Error for TokenError {}

/// Parses the token endpoint's answer (RFC 6749 sections 5.1 and 5.2): on a 2xx,
/// `access_token`, `expires_in` (seconds) and `token_type` (`Bearer`); otherwise the refusal
/// with its `error` code only.
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<AccessToken, TokenError> {
    if body.len() > MAX_TOKEN_RESPONSE_BYTES {
        return Err(TokenError::TooLarge);
    }
    let parsed: Option<Map<String, Value>> = match serde_json::from_slice(body) {
        Ok(Value::Object(fields)) => Some(fields),
        _ => None,
    };
    if !(200..300).contains(&status) {
        let error = parsed.as_ref().and_then(error_code);
        return Err(TokenError::Refused { status, error });
    }
    let Some(mut fields) = parsed else {
        return Err(TokenError::Malformed("is not a JSON object"));
    };
    if fields.contains_key("error") {
        // A 200 carrying an error is still a refusal.
        let error = error_code(&fields);
        return Err(TokenError::Refused { status, error });
    }
    let value = match fields.remove("access_token") {
        Some(Value::String(token)) => Zeroizing::new(token),
        Some(_) => {
            return Err(TokenError::Malformed(
                "has an access_token that is not a string",
            ))
        }
        None => return Err(TokenError::Malformed("has no access_token")),
    };
    if value.is_empty() {
        return Err(TokenError::Malformed("has an empty access_token"));
    }
    if value.len() > MAX_ACCESS_TOKEN_BYTES {
        return Err(TokenError::Malformed(
            "has an access_token longer than 8 KiB",
        ));
    }
    // It goes into a header as it is: only RFC 6750's b64token characters are safe there.
    let b64token = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
    if !value.bytes().all(b64token) {
        return Err(TokenError::Malformed(
            "has an access_token with characters a Bearer token cannot hold",
        ));
    }
    match fields.get("token_type").and_then(Value::as_str) {
        Some(kind) if kind.eq_ignore_ascii_case("bearer") => {}
        Some(_) => return Err(TokenError::Malformed("has a token_type other than Bearer")),
        None => return Err(TokenError::Malformed("has no token_type")),
    }
    let expires_in = match fields.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        // Some endpoints send the number as a string; its value is still a number of seconds.
        Some(Value::String(s)) => s.parse::<u64>().ok(),
        _ => return Err(TokenError::Malformed("has no expires_in")),
    };
    let Some(expires_in) = expires_in else {
        return Err(TokenError::Malformed(
            "has an expires_in that is not a whole number of seconds",
        ));
    };
    if expires_in == 0 {
        return Err(TokenError::Malformed(
            "has a token that has already expired",
        ));
    }
    Ok(AccessToken {
        value,
        lifetime: Duration::from_secs(expires_in.min(MAX_TOKEN_LIFETIME_SECS)),
    })
}

/// The refusal's `error` code, when it is a plain lower-case code (RFC 6749's are
/// `snake_case` words); anything else could be text the endpoint echoed, and is dropped.
fn error_code(fields: &Map<String, Value>) -> Option<String> {
    let code = fields.get("error")?.as_str()?;
    let plain = !code.is_empty()
        && code.len() <= MAX_ERROR_CODE_BYTES
        && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    plain.then(|| code.to_string())
}

#[cfg(test)]
mod tests;
