//! A fake OAuth2 token endpoint (RFC 6749 §4.4, client credentials) and an upstream that
//! takes only the tokens it issued while they are valid: the identity provider and the
//! partner API of an `[[upstream]] credential = { oauth2 = ... }`. Entra ID's endpoint is the
//! same grant at `/{tenant}/oauth2/v2.0/token`, which this fake answers on any path.
//!
//! - `POST` with `grant_type=client_credentials` and the client authenticated by HTTP Basic
//!   (RFC 6749 §2.3.1: id and secret form-encoded, then base64) or by `client_id` /
//!   `client_secret` in the body. A wrong or missing client gets 401 `invalid_client` (whose
//!   description quotes the secret it received, as careless IdPs do, so tests can prove the
//!   gateway never repeats it); another grant gets 400 `unsupported_grant_type`.
//! - Tokens are `{"access_token","token_type":"Bearer","expires_in"}` with the configured
//!   lifetime; every issued token is remembered with its expiry, so [`FakeProtected`] can
//!   refuse expired and revoked ones (401 `invalid_token`).
//! - Failure modes: down (the connection is closed unanswered), 500, `invalid_client` for a
//!   right client, and slow answers.

use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::json;

use super::fake_server::{send_json, Conn, FakeServer, RecordedRequest};

/// How the token endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    /// Tokens for the right client.
    Issue,
    /// The connection is closed without an answer.
    Down,
    /// 500 with an HTML body.
    ServerError,
    /// 401 `invalid_client` even for the right client (a rotated secret).
    InvalidClient,
    /// Tokens, after this delay.
    Slow(Duration),
}

/// How a client authenticated, as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Form,
    None,
}

/// One issued token.
#[derive(Debug, Clone)]
struct Issued {
    token: String,
    expires_at: Instant,
    revoked: bool,
}

/// The tokens issued so far, shared by the endpoint and the protected upstream.
#[derive(Default)]
pub struct TokenBook {
    issued: Mutex<Vec<Issued>>,
}

impl TokenBook {
    /// Whether `token` was issued, is not revoked and has not expired.
    pub fn is_valid(&self, token: &str) -> bool {
        self.issued
            .lock()
            .unwrap()
            .iter()
            .any(|t| t.token == token && !t.revoked && Instant::now() < t.expires_at)
    }

    /// Revokes every token issued so far (before its expiry).
    pub fn revoke_all(&self) {
        for t in self.issued.lock().unwrap().iter_mut() {
            t.revoked = true;
        }
    }

    /// Every token issued so far, oldest first.
    pub fn tokens(&self) -> Vec<String> {
        self.issued
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.token.clone())
            .collect()
    }
}

struct Settings {
    client_id: String,
    client_secret: String,
    lifetime_s: u64,
    mode: TokenMode,
    last_auth: Option<ClientAuth>,
    last_form: Vec<(String, String)>,
}

/// A running fake token endpoint; dereferences to its [`FakeServer`] (`request_count()` is
/// its hit counter).
pub struct FakeTokenEndpoint {
    server: FakeServer,
    settings: Arc<Mutex<Settings>>,
    book: Arc<TokenBook>,
}

impl Deref for FakeTokenEndpoint {
    type Target = FakeServer;
    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

impl FakeTokenEndpoint {
    /// Issues tokens valid `lifetime_s` seconds to `client_id` / `client_secret`.
    pub fn start(client_id: &str, client_secret: &str, lifetime_s: u64) -> FakeTokenEndpoint {
        let settings = Arc::new(Mutex::new(Settings {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            lifetime_s,
            mode: TokenMode::Issue,
            last_auth: None,
            last_form: Vec::new(),
        }));
        let book = Arc::new(TokenBook::default());
        let serial = Arc::new(AtomicUsize::new(0));
        let server = {
            let settings = Arc::clone(&settings);
            let book = Arc::clone(&book);
            FakeServer::start(Box::new(move |conn, request, _, keep_alive| {
                answer(conn, request, &settings, &book, &serial, keep_alive)
            }))
        };
        FakeTokenEndpoint {
            server,
            settings,
            book,
        }
    }

    /// The token URL (any path is answered; this is the usual one).
    pub fn token_url(&self) -> String {
        format!("{}/oauth2/token", self.server.base_url())
    }

    /// Changes how the next requests are answered.
    pub fn set_mode(&self, mode: TokenMode) {
        self.settings.lock().unwrap().mode = mode;
    }

    /// Changes the lifetime of the next tokens.
    pub fn set_lifetime(&self, lifetime_s: u64) {
        self.settings.lock().unwrap().lifetime_s = lifetime_s;
    }

    /// How the last request authenticated its client.
    pub fn last_auth(&self) -> Option<ClientAuth> {
        self.settings.lock().unwrap().last_auth.clone()
    }

    /// The last request's form fields other than the client secret.
    pub fn last_form(&self) -> Vec<(String, String)> {
        self.settings.lock().unwrap().last_form.clone()
    }

    /// The tokens issued, shared with a [`FakeProtected`].
    pub fn book(&self) -> Arc<TokenBook> {
        Arc::clone(&self.book)
    }
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space).
pub fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(name), form_decode(value))
        })
        .collect()
}

/// The client id and secret of an `Authorization: Basic` header, form-decoded.
fn basic_client(request: &RecordedRequest) -> Option<(String, String)> {
    let encoded = request.header("authorization")?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

fn answer(
    conn: &mut Conn,
    request: &RecordedRequest,
    settings: &Mutex<Settings>,
    book: &TokenBook,
    serial: &AtomicUsize,
    keep_alive: bool,
) -> bool {
    let fields = form_fields(&request.body);
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let (auth, presented) = match (basic_client(request), field("client_id")) {
        (Some(pair), _) => (ClientAuth::Basic, Some(pair)),
        (None, Some(id)) => (
            ClientAuth::Form,
            Some((id, field("client_secret").unwrap_or_default())),
        ),
        (None, None) => (ClientAuth::None, None),
    };
    let (mode, right, lifetime_s) = {
        let mut s = settings.lock().unwrap();
        s.last_auth = Some(auth);
        s.last_form = fields
            .iter()
            .filter(|(n, _)| n != "client_secret")
            .cloned()
            .collect();
        let right = presented
            .as_ref()
            .is_some_and(|(id, secret)| *id == s.client_id && *secret == s.client_secret);
        (s.mode, right, s.lifetime_s)
    };
    let received_secret = presented.map(|(_, s)| s).unwrap_or_default();
    match mode {
        TokenMode::Down => {
            conn.close();
            return false;
        }
        TokenMode::ServerError => {
            let body = b"<html>internal error</html>";
            let head = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.send(head.as_bytes()) && conn.send(body);
            return false;
        }
        TokenMode::Slow(delay) => std::thread::sleep(delay),
        TokenMode::InvalidClient | TokenMode::Issue => {}
    }
    if request.method != "POST" || field("grant_type").as_deref() != Some("client_credentials") {
        return send_json(
            conn,
            400,
            &json!({"error": "unsupported_grant_type"}),
            keep_alive,
            &[],
        );
    }
    if !right || mode == TokenMode::InvalidClient {
        // Careless IdPs quote what they got; the gateway must not repeat it.
        let description = format!("client authentication failed for secret {received_secret}");
        return send_json(
            conn,
            401,
            &json!({"error": "invalid_client", "error_description": description}),
            keep_alive,
            &[("www-authenticate", "Basic realm=\"fake\"".to_string())],
        );
    }
    let n = serial.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("fake-access-token-{n}-{:08x}", rand_u32());
    book.issued.lock().unwrap().push(Issued {
        token: token.clone(),
        expires_at: Instant::now() + Duration::from_secs(lifetime_s),
        revoked: false,
    });
    send_json(
        conn,
        200,
        &json!({"access_token": token, "token_type": "Bearer", "expires_in": lifetime_s}),
        keep_alive,
        &[("cache-control", "no-store".to_string())],
    )
}

/// Enough randomness to tell tokens of two runs apart.
fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    getrandom::getrandom(&mut bytes).expect("random bytes");
    u32::from_le_bytes(bytes)
}

/// An upstream that answers 200 to requests bearing a valid token of `book`, and 401
/// `invalid_token` (RFC 6750 §3.1) to the rest; counts both.
pub struct FakeProtected {
    server: FakeServer,
    refused: Arc<AtomicUsize>,
}

impl Deref for FakeProtected {
    type Target = FakeServer;
    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

impl FakeProtected {
    /// Starts it against the tokens of `book`.
    pub fn start(book: Arc<TokenBook>) -> FakeProtected {
        let refused = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&refused);
        let server = FakeServer::start(Box::new(move |conn, request, _, keep_alive| {
            let token = request
                .header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            if book.is_valid(token) {
                send_json(
                    conn,
                    200,
                    &json!({"ok": true, "path": request.path}),
                    keep_alive,
                    &[],
                )
            } else {
                counter.fetch_add(1, Ordering::SeqCst);
                send_json(
                    conn,
                    401,
                    &json!({"error": "invalid_token"}),
                    keep_alive,
                    &[(
                        "www-authenticate",
                        "Bearer error=\"invalid_token\"".to_string(),
                    )],
                )
            }
        }));
        FakeProtected { server, refused }
    }

    /// `127.0.0.1:PORT`, for `targets`.
    pub fn target(&self) -> String {
        self.server.addr().to_string()
    }

    /// Requests refused for their token.
    pub fn refused_count(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}
