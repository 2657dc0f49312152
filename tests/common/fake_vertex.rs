//! A fake Google Vertex AI endpoint in the test process: the paths, authentication and body
//! rules of Vertex in front of the fake Gemini and Anthropic APIs, which answer the calls
//! (Vertex serves both publishers' models with their own answer formats).
//!
//! - Paths: `POST /v1/projects/{project}/locations/{region}/publishers/google/models/{m}:`
//!   `generateContent` or `:streamGenerateContent?alt=sse`, and
//!   `.../publishers/anthropic/models/{m}:rawPredict` or `:streamRawPredict`; the project and
//!   region must be the fake's own. Anything else: 404 `NOT_FOUND`.
//! - Authentication: `Authorization: Bearer` with an access token the fake Google token
//!   endpoint ([`FakeVertex::google`]) issued and still holds valid, and not revoked here
//!   ([`FakeVertex::revoke_seen_tokens`]); otherwise 401 `UNAUTHENTICATED` in Google's error
//!   shape, as Vertex answers. A request carrying an API key header is refused with 400.
//! - Claude calls: the body must carry `anthropic_version: "vertex-2023-10-16"` and no
//!   `model` (400 `INVALID_ARGUMENT` otherwise); `:streamRawPredict` needs `"stream": true`.
//! - The accepted call is forwarded to the fake Gemini (`/v1beta/models/{m}:{method}`) or
//!   Anthropic (`/v1/messages`, the model from the path, the version header Anthropic's
//!   own API wants) and its answer relayed byte for byte, streams as they arrive.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::fake_anthropic::ANTHROPIC_VERSION as ANTHROPIC_API_VERSION;
use super::fake_gemini::error_body;
use super::fake_google::FakeGoogle;
use super::fake_server::{connection_token, send_json, Conn, FakeServer, RecordedRequest};
use super::{FakeAnthropic, FakeGemini};

/// The `anthropic_version` Vertex requires in Claude bodies.
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// The key the fake puts on calls it forwards to the publisher fakes (they want one).
const FORWARDED_KEY: &str = "vertex-forwarded";

/// What the fake checks and counts; shared with the serving threads.
#[derive(Default)]
struct State {
    /// Every bearer token presented, valid or not.
    seen: HashSet<String>,
    /// Tokens refused from now on although the token endpoint issued them.
    revoked: HashSet<String>,
    /// Calls answered 401.
    unauthenticated: usize,
}

/// A running fake Vertex AI endpoint with its token endpoint and publisher fakes; stops on
/// drop. Dereferences to its own [`FakeServer`] (the Vertex-side requests).
pub struct FakeVertex {
    server: FakeServer,
    /// The token endpoint whose tokens are accepted.
    pub google: FakeGoogle,
    /// Answers Gemini calls.
    pub gemini: Arc<FakeGemini>,
    /// Answers Claude calls.
    pub anthropic: Arc<FakeAnthropic>,
    state: Arc<Mutex<State>>,
    project: String,
    region: String,
}

impl Deref for FakeVertex {
    type Target = FakeServer;
    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

/// What one call is answered with, decided before it is recorded.
enum Plan {
    /// An error answer, in Google's shape.
    Refuse(u16, Value),
    /// The call as the publisher fake takes it: its address and the request bytes.
    Forward(std::net::SocketAddr, Vec<u8>),
}

impl FakeVertex {
    /// Starts the token endpoint (for the committed test service account), both publisher
    /// fakes and the Vertex front for `project` in `region`.
    pub fn start(project: &str, region: &str) -> FakeVertex {
        let google = FakeGoogle::start();
        let gemini = Arc::new(FakeGemini::start());
        let anthropic = Arc::new(FakeAnthropic::start());
        let state = Arc::new(Mutex::new(State::default()));
        let prefix = format!("/v1/projects/{project}/locations/{region}/publishers/");
        let (token_check, shared) = (google.token_checker(), state.clone());
        let (gemini_addr, anthropic_addr) = (gemini.addr(), anthropic.addr());
        let plan = move |request: &RecordedRequest| {
            let mut state = shared.lock().unwrap();
            let token = request
                .header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default()
                .to_string();
            if !token.is_empty() {
                state.seen.insert(token.clone());
            }
            if token.is_empty() || state.revoked.contains(&token) || !token_check(&token) {
                state.unauthenticated += 1;
                return Plan::Refuse(
                    401,
                    error_body(
                        401,
                        "UNAUTHENTICATED",
                        "Request had invalid authentication credentials. Expected OAuth 2 \
                         access token, login cookie or other valid authentication credential.",
                    ),
                );
            }
            drop(state);
            plan_call(request, &prefix, gemini_addr, anthropic_addr)
                .unwrap_or_else(|(status, body)| Plan::Refuse(status, body))
        };
        let answer =
            |conn: &mut Conn, _: &RecordedRequest, plan: Plan, _: usize, keep: bool| match plan {
                Plan::Refuse(status, body) => send_json(conn, status, &body, keep, &[]),
                Plan::Forward(addr, bytes) => relay(conn, addr, &bytes, keep),
            };
        FakeVertex {
            server: FakeServer::start_planned(plan, answer),
            google,
            gemini,
            anthropic,
            state,
            project: project.to_string(),
            region: region.to_string(),
        }
    }

    /// The test service account's JSON, its `token_uri` this fake's token endpoint.
    pub fn service_account_json(&self) -> String {
        self.google.service_account_json()
    }

    /// Every bearer token presented so far.
    pub fn tokens_seen(&self) -> Vec<String> {
        self.state.lock().unwrap().seen.iter().cloned().collect()
    }

    /// Refuses every token presented so far (a token revoked before its expiry).
    pub fn revoke_seen_tokens(&self) {
        let mut state = self.state.lock().unwrap();
        let seen: Vec<String> = state.seen.iter().cloned().collect();
        state.revoked.extend(seen);
    }

    /// Calls answered 401 so far.
    pub fn unauthenticated_count(&self) -> usize {
        self.state.lock().unwrap().unauthenticated
    }

    /// The project the fake serves.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The region the fake serves.
    pub fn region(&self) -> &str {
        &self.region
    }
}

type Refusal = (u16, Value);

fn invalid(message: &str) -> Refusal {
    (400, error_body(400, "INVALID_ARGUMENT", message))
}

fn not_found() -> Refusal {
    (
        404,
        error_body(404, "NOT_FOUND", "Requested entity was not found."),
    )
}

/// Checks an authenticated call as Vertex does and builds the publisher fake's request.
fn plan_call(
    request: &RecordedRequest,
    prefix: &str,
    gemini: std::net::SocketAddr,
    anthropic: std::net::SocketAddr,
) -> Result<Plan, Refusal> {
    if request.method != "POST" {
        return Err(not_found());
    }
    for key_header in ["x-goog-api-key", "x-api-key", "api-key"] {
        if request.header(key_header).is_some() {
            return Err(invalid("API keys are not supported by this API."));
        }
    }
    let rest = request.path.strip_prefix(prefix).ok_or_else(not_found)?;
    let (publisher, rest) = rest.split_once("/models/").ok_or_else(not_found)?;
    let (model, method) = rest.split_once(':').ok_or_else(not_found)?;
    if model.is_empty() || model.contains('/') {
        return Err(not_found());
    }
    let body: Value = serde_json::from_slice(&request.body)
        .map_err(|_| invalid("Invalid JSON payload received."))?;
    match (publisher, method) {
        ("google", "generateContent" | "streamGenerateContent") => {
            let target = format!("/v1beta/models/{model}:{method}?{}", request.query);
            let headers = [("x-goog-api-key", FORWARDED_KEY)];
            Ok(Plan::Forward(
                gemini,
                request_bytes(&target, &headers, &request.body),
            ))
        }
        ("anthropic", "rawPredict" | "streamRawPredict") => {
            let Value::Object(mut body) = body else {
                return Err(invalid("The body is not a JSON object."));
            };
            if body.get("anthropic_version").and_then(Value::as_str)
                != Some(VERTEX_ANTHROPIC_VERSION)
            {
                return Err(invalid("anthropic_version: vertex-2023-10-16 is required"));
            }
            if body.contains_key("model") {
                return Err(invalid("model: Extra inputs are not permitted"));
            }
            let streamed = body.get("stream").and_then(Value::as_bool) == Some(true);
            if streamed != (method == "streamRawPredict") {
                return Err(invalid(
                    "stream must be true for streamRawPredict and absent for rawPredict",
                ));
            }
            body.remove("anthropic_version");
            body.insert("model".into(), json!(model));
            let headers = [
                ("x-api-key", FORWARDED_KEY),
                ("anthropic-version", ANTHROPIC_API_VERSION),
            ];
            let body = serde_json::to_vec(&Value::Object(body)).unwrap();
            Ok(Plan::Forward(
                anthropic,
                request_bytes("/v1/messages", &headers, &body),
            ))
        }
        _ => Err(not_found()),
    }
}

/// A `POST` with a JSON body, the connection closed after the answer (the relay reads the
/// answer to its end).
fn request_bytes(target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "POST {target} HTTP/1.1\r\nhost: fake\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends `request` to the publisher fake at `addr` and relays its answer as it arrives,
/// with the `Connection` header this connection needs, up to the end of its body (the
/// publisher fake keeps its side of the connection open, so its end is found by framing,
/// not by EOF); false once either side is gone before that.
fn relay(conn: &mut Conn, addr: std::net::SocketAddr, request: &[u8], keep_alive: bool) -> bool {
    let Ok(mut upstream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = upstream.set_read_timeout(Some(Duration::from_secs(30)));
    if upstream.write_all(request).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    // The head, rewritten once whole.
    let head_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        match upstream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut rewritten = String::with_capacity(head.len());
    let mut content_length = None;
    for line in head.split_inclusive("\r\n") {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") {
            rewritten.push_str(&format!("Connection: {}\r\n", connection_token(keep_alive)));
            continue;
        }
        if let Some(value) = lower.strip_prefix("content-length:") {
            content_length = value.trim().parse::<usize>().ok();
        }
        rewritten.push_str(line);
    }
    // Without a length the fakes' answers are chunked.
    let body_end = |body: &[u8]| match content_length {
        Some(len) => (body.len() >= len).then_some(len),
        None => chunked_end(body),
    };
    if !conn.send(rewritten.as_bytes()) {
        return false;
    }
    let mut body = buf.split_off(head_end);
    let mut sent = 0;
    loop {
        let end = body_end(&body);
        let upto = end.unwrap_or(body.len());
        if upto > sent {
            if !conn.send(&body[sent..upto]) {
                return false;
            }
            sent = upto;
        }
        if end.is_some() {
            return true;
        }
        match upstream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Where a chunked body (RFC 9112 section 7.1, no trailers) ends in `body`, once it has.
fn chunked_end(body: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_len = body[at..].windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&body[at..at + line_len]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at += line_len + 2;
        if size == 0 {
            // The empty trailer section.
            return (body.len() >= at + 2).then_some(at + 2);
        }
        at += size + 2;
        if body.len() < at {
            return None;
        }
    }
}
