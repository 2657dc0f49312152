//! A fake Google OAuth 2.0 token endpoint in the test process: `POST /token` with the
//! JWT-bearer grant (RFC 7523) as Google's "OAuth 2.0 for Server to Server Applications"
//! describes it, checking the assertion the way Google does, independently of the gateway's
//! own code (ring and serde_json only).
//!
//! - The body must be `application/x-www-form-urlencoded` with
//!   `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and `assertion=<JWT>`.
//! - The assertion's header must say `alg: RS256` (and, if it names a `kid`, the service
//!   account's key id); its signature must verify RSASSA-PKCS1-v1_5 SHA-256 with the
//!   service account's public key.
//! - Its claims: `iss` the service account's `client_email`, `aud` this endpoint's own URL
//!   ([`FakeGoogle::token_uri`]), `scope` including the required scope, `iat` not in the
//!   future and `exp` not past (both within [`CLOCK_SKEW_SECS`]), and `exp - iat` at most one
//!   hour.
//! - Success: `{"access_token":"ya29.fake-...","expires_in":N,"token_type":"Bearer"}` with a
//!   fresh token each time and a configurable lifetime. Refusals have Google's shape,
//!   `{"error":"invalid_grant","error_description":"..."}` with status 400 (`invalid_scope`,
//!   `invalid_request` and `unsupported_grant_type` as Google names them).
//!
//! Every request is counted ([`FakeGoogle::hits`]); tokens issued can be checked with
//! [`FakeGoogle::is_valid_token`], so a fake API behind it can accept exactly them.

use std::collections::{HashMap, VecDeque};
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use serde_json::{json, Value};

use super::fake_server::{send_json, unix_now, Conn, FakeServer, RecordedRequest};

/// Where the fake answers.
pub const TOKEN_PATH: &str = "/token";

/// The grant type of RFC 7523 section 2.1.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The scope required unless a test sets another.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// How far `iat` may be in the future and `exp` in the past: the clocks of two machines differ.
pub const CLOCK_SKEW_SECS: i64 = 60;

/// The longest assertion Google accepts, `exp - iat`.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 3600;

/// Google's refusal for assertions whose times are wrong.
pub const TIMEFRAME_ERROR: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) \
     and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";

/// The committed test service account (see `tests/data/google/README.md`).
pub const SERVICE_ACCOUNT_JSON: &str = include_str!("../data/google/service-account.json");

/// A second RSA key (PKCS#8), not the service account's.
pub const OTHER_KEY_PEM: &str = include_str!("../data/google/other-key.pem");

/// The test service account's file with `token_uri` (and, if given, `private_key`) replaced.
pub fn service_account_json(token_uri: &str, private_key: Option<&str>) -> String {
    let mut account: Value = serde_json::from_str(SERVICE_ACCOUNT_JSON).unwrap();
    account["token_uri"] = Value::from(token_uri);
    if let Some(pem) = private_key {
        account["private_key"] = Value::from(pem);
    }
    serde_json::to_string_pretty(&account).unwrap()
}

/// What the endpoint accepts and answers; shared with the serving threads.
struct State {
    /// The service account's public key, PKCS#1 `RSAPublicKey` DER as ring verifies it.
    public_key: Vec<u8>,
    client_email: String,
    key_id: String,
    /// This endpoint's URL: the `aud` it requires.
    token_uri: String,
    required_scope: String,
    lifetime_secs: u64,
    /// Tokens issued, with the unix time they expire in milliseconds (seconds would cut a
    /// 2 s token's life short by up to one second).
    issued: HashMap<String, u128>,
    /// The `error_description` of every refusal, in order.
    refusals: Vec<String>,
    /// Statuses the next requests are answered with instead (an endpoint that is down).
    failures: VecDeque<u16>,
    /// Requests still to be refused with their assertion quoted ([`FakeGoogle::refuse_next_echoing`]).
    echoing: usize,
}

/// A running fake token endpoint; stops on drop. Dereferences to its [`FakeServer`] for
/// `requests()`, `request_count()`, `wait_for_requests()` and the rest.
pub struct FakeGoogle {
    server: FakeServer,
    state: Arc<Mutex<State>>,
}

impl Deref for FakeGoogle {
    type Target = FakeServer;
    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

/// What one request is answered with, decided before it is recorded.
enum Plan {
    Fail(u16),
    Token(u64),
    Refuse(u16, &'static str, String),
}

impl FakeGoogle {
    /// Starts an endpoint for the service account in `account_json` (its `client_email`,
    /// `private_key_id` and the public half of its `private_key`): tokens live an hour, the
    /// required scope is cloud-platform.
    pub fn for_service_account(account_json: &str) -> FakeGoogle {
        let account: Value = serde_json::from_str(account_json).expect("service account JSON");
        let pem = account["private_key"].as_str().expect("private_key");
        let der = match rustls_pemfile::read_one_from_slice(pem.as_bytes())
            .expect("private_key PEM")
            .expect("a PEM block")
            .0
        {
            rustls_pemfile::Item::Pkcs8Key(key) => key.secret_pkcs8_der().to_vec(),
            _ => panic!("private_key is not PKCS#8"),
        };
        let public_key = RsaKeyPair::from_pkcs8(&der)
            .expect("RSA key")
            .public()
            .as_ref()
            .to_vec();
        let state = Arc::new(Mutex::new(State {
            public_key,
            client_email: account["client_email"].as_str().unwrap().to_string(),
            key_id: account["private_key_id"].as_str().unwrap().to_string(),
            token_uri: String::new(),
            required_scope: CLOUD_PLATFORM.to_string(),
            lifetime_secs: 3600,
            issued: HashMap::new(),
            refusals: Vec::new(),
            failures: VecDeque::new(),
            echoing: 0,
        }));
        let shared = state.clone();
        let plan = move |request: &RecordedRequest| {
            let mut state = shared.lock().unwrap();
            if let Some(status) = state.failures.pop_front() {
                return Plan::Fail(status);
            }
            if state.echoing > 0 {
                state.echoing -= 1;
                let form = parse_form(&request.body);
                let assertion = form.get("assertion").map(String::as_str).unwrap_or("");
                let description = format!("Invalid JWT Signature: {assertion}");
                state.refusals.push(description.clone());
                return Plan::Refuse(400, "invalid_grant", description);
            }
            match verify(&state, request) {
                Ok(()) => Plan::Token(state.lifetime_secs),
                Err((status, error, description)) => {
                    state.refusals.push(description.clone());
                    Plan::Refuse(status, error, description)
                }
            }
        };
        let shared = state.clone();
        let answer = move |conn: &mut Conn,
                           _request: &RecordedRequest,
                           plan: Plan,
                           ordinal: usize,
                           keep_alive: bool| match plan {
            Plan::Fail(status) => send_json(
                conn,
                status,
                &json!({"error": "internal_failure", "error_description": "The fake was told to fail."}),
                keep_alive,
                &[],
            ),
            Plan::Refuse(status, error, description) => send_json(
                conn,
                status,
                &json!({"error": error, "error_description": description}),
                keep_alive,
                &[],
            ),
            Plan::Token(lifetime) => {
                let token = format!("ya29.fake-{ordinal}-{}", random_hex());
                shared
                    .lock()
                    .unwrap()
                    .issued
                    .insert(token.clone(), unix_now_ms() + u128::from(lifetime) * 1000);
                send_json(
                    conn,
                    200,
                    &json!({"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}),
                    keep_alive,
                    &[],
                )
            }
        };
        let server = FakeServer::start_planned(plan, answer);
        state.lock().unwrap().token_uri = format!("{}{TOKEN_PATH}", server.base_url());
        FakeGoogle { server, state }
    }

    /// Starts an endpoint for the committed test service account.
    pub fn start() -> FakeGoogle {
        FakeGoogle::for_service_account(SERVICE_ACCOUNT_JSON)
    }

    /// This endpoint's URL, the `token_uri` a service account file must name.
    pub fn token_uri(&self) -> String {
        self.state().token_uri.clone()
    }

    /// The test service account's file pointing at this endpoint.
    pub fn service_account_json(&self) -> String {
        service_account_json(&self.token_uri(), None)
    }

    /// How long the next tokens live (`expires_in`).
    pub fn set_token_lifetime(&self, secs: u64) {
        self.state().lifetime_secs = secs;
    }

    /// The scope the next assertions must include.
    pub fn require_scope(&self, scope: &str) {
        self.state().required_scope = scope.to_string();
    }

    /// Answers the next requests with `statuses`, one each, before checking anything.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.state().failures.extend(statuses.iter().copied());
    }

    /// Refuses the next `n` requests with `invalid_grant`, the description quoting the
    /// assertion received (as a careless endpoint might), so tests can prove the gateway
    /// never repeats what a token endpoint says about its request.
    pub fn refuse_next_echoing(&self, n: usize) {
        self.state().echoing += n;
    }

    /// Every access token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state().issued.keys().cloned().collect()
    }

    /// Requests received so far, good or bad.
    pub fn hits(&self) -> usize {
        self.server.request_count()
    }

    /// Tokens issued so far.
    pub fn issued_count(&self) -> usize {
        self.state().issued.len()
    }

    /// Whether `token` was issued here and has not expired.
    pub fn is_valid_token(&self, token: &str) -> bool {
        self.state()
            .issued
            .get(token)
            .is_some_and(|&expires| unix_now_ms() < expires)
    }

    /// [`FakeGoogle::is_valid_token`] as a function another fake's serving threads can call
    /// (an API behind this endpoint accepting exactly its tokens).
    pub fn token_checker(&self) -> impl Fn(&str) -> bool + Send + Sync + 'static {
        let state = Arc::clone(&self.state);
        move |token: &str| {
            state
                .lock()
                .unwrap()
                .issued
                .get(token)
                .is_some_and(|&expires| unix_now_ms() < expires)
        }
    }

    /// The `error_description` of every refusal so far, in order.
    pub fn refusals(&self) -> Vec<String> {
        self.state().refusals.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

type Refusal = (u16, &'static str, String);

fn invalid_grant(description: &str) -> Refusal {
    (400, "invalid_grant", description.to_string())
}

/// Checks a token request as Google does; the refusal's status, code and description.
fn verify(state: &State, request: &RecordedRequest) -> Result<(), Refusal> {
    if request.method != "POST" || request.path != TOKEN_PATH {
        return Err((
            404,
            "not_found",
            format!("No {} {}", request.method, request.path),
        ));
    }
    let form_type = request
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return Err((
            400,
            "invalid_request",
            "Content-Type must be application/x-www-form-urlencoded".to_string(),
        ));
    }
    let form = parse_form(&request.body);
    let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
    if grant != JWT_BEARER {
        return Err((
            400,
            "unsupported_grant_type",
            format!("Invalid grant_type: {grant}"),
        ));
    }
    let Some(assertion) = form.get("assertion") else {
        return Err((
            400,
            "invalid_request",
            "Missing required parameter: assertion".to_string(),
        ));
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err(invalid_grant("Invalid JWT: not three segments"));
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
    };
    let (Some(header), Some(claims)) = (decode(header), decode(claims)) else {
        return Err(invalid_grant(
            "Invalid JWT: segments are not base64url JSON",
        ));
    };
    if header["alg"] != "RS256" {
        return Err(invalid_grant("Invalid JWT: alg must be RS256"));
    }
    // Google looks the key up by `kid`: another key id names a key the account does not have.
    if header
        .get("kid")
        .is_some_and(|kid| kid.as_str() != Some(state.key_id.as_str()))
    {
        return Err(invalid_grant("Invalid JWT Signature."));
    }
    let signed_len = assertion.len() - signature.len() - 1;
    let signature_ok = URL_SAFE_NO_PAD.decode(signature).is_ok_and(|sig| {
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &state.public_key)
            .verify(&assertion.as_bytes()[..signed_len], &sig)
            .is_ok()
    });
    if !signature_ok {
        return Err(invalid_grant("Invalid JWT Signature."));
    }
    if claims["iss"] != state.client_email.as_str() {
        return Err(invalid_grant("Invalid grant: account not found"));
    }
    if claims["aud"] != state.token_uri.as_str() {
        return Err(invalid_grant("Invalid JWT: Failed audience check."));
    }
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return Err(invalid_grant(TIMEFRAME_ERROR));
    };
    let now = unix_now() as i64;
    let timely = iat <= now + CLOCK_SKEW_SECS
        && exp >= now - CLOCK_SKEW_SECS
        && exp > iat
        && exp - iat <= MAX_ASSERTION_LIFETIME_SECS;
    if !timely {
        return Err(invalid_grant(TIMEFRAME_ERROR));
    }
    let scopes = claims["scope"].as_str().unwrap_or("");
    if !scopes.split(' ').any(|s| s == state.required_scope) {
        return Err((
            400,
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.".to_string(),
        ));
    }
    Ok(())
}

/// An `application/x-www-form-urlencoded` body as name → value (`+` is a space, `%XX` a byte).
pub fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len()
                    && bytes[i + 1].is_ascii_hexdigit()
                    && bytes[i + 2].is_ascii_hexdigit() =>
                {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// Milliseconds since the Unix epoch.
fn unix_now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// 16 random bytes as hex: tokens nobody can guess or confuse with another run's.
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
