//! A fake Amazon Bedrock runtime in the test process, speaking the wire format of `Converse`
//! and `ConverseStream` (botocore's `bedrock-runtime` service model; Bedrock API reference),
//! and checking every request's SigV4 signature the way AWS does: by recomputing it from the
//! request and the secret of the access key it names.
//!
//! - `POST /model/{modelId}/converse` answers one `ConverseResponse` (text, or a `toolUse`
//!   block), `stopReason` and `usage` as the test set them.
//! - `POST /model/{modelId}/converse-stream` answers `application/vnd.amazon.eventstream`
//!   frames: `messageStart`, `contentBlockStart` (tool use), `contentBlockDelta`s,
//!   `contentBlockStop`, `messageStop`, `metadata` with the usage; optionally an `exception`
//!   frame after some frames, as Bedrock sends a mid-stream error.
//! - The signature: `Authorization: AWS4-HMAC-SHA256 Credential=AKID/date/region/bedrock/
//!   aws4_request, SignedHeaders=..., Signature=...`, recomputed over the headers it names
//!   with the library's signer (botocore's own client is what keeps that honest: see
//!   `tests/bedrock_reference.rs`). A wrong signature, an unknown key, a missing or wrong
//!   session token, or a clock more than 5 minutes off get 403 with AWS's error shape
//!   (`x-amzn-ErrorType` and `{"message": ...}`).
//! - Temporary credentials a fake STS issued are accepted when the fake is given its book
//!   ([`FakeBedrock::accept_sts`]), as AWS services accept any role session's: while they
//!   are valid; expired, 403 `ExpiredTokenException`; revoked, 403
//!   `UnrecognizedClientException`.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use credentialflow::identity::eventstream::{Header, HeaderValue, Message};
use credentialflow::identity::sigv4::{Credentials, Payload, Request, Signer, SigningOptions};
use serde_json::{json, Value};

use super::fake_server::{
    connection_token, send_json, status_line, unix_now, Conn, FakeServer, RecordedRequest,
};
use super::fake_sts::{Standing, StsBook};

/// The assistant text answered until a test sets its own.
pub const DEFAULT_REPLY: &str = "Hello from the fake Bedrock server.";

/// The region the fake signs for.
pub const REGION: &str = "us-east-1";

/// The message of AWS's signature mismatch (as Bedrock answers it).
pub const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// Token counts the fake reports as `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BedrockUsage {
    /// `inputTokens`.
    pub input: u64,
    /// `outputTokens`.
    pub output: u64,
}

/// One access key the fake knows.
#[derive(Clone)]
struct Key {
    id: String,
    secret: String,
    session_token: Option<String>,
}

struct Behaviour {
    keys: Vec<Key>,
    usage: BedrockUsage,
    reply: String,
    /// `(name, input JSON)` answered instead of text when the request declares tools.
    tool_use: Option<(String, Value)>,
    /// Frames sent before a `throttlingException` frame ends the next stream.
    exception_after: Option<usize>,
    /// Temporary credentials accepted besides `keys`: those a fake STS issued.
    sts: Option<Arc<StsBook>>,
    /// The AWS error type of each refused request, in order.
    refusals: Vec<&'static str>,
}

/// A running fake Bedrock; stops on drop. Dereferences to its [`FakeServer`].
pub struct FakeBedrock {
    server: FakeServer,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl Deref for FakeBedrock {
    type Target = FakeServer;
    fn deref(&self) -> &FakeServer {
        &self.server
    }
}

/// What one request is answered with, read before it is recorded.
struct Planned {
    keys: Vec<Key>,
    usage: BedrockUsage,
    reply: String,
    tool_use: Option<(String, Value)>,
    exception_after: Option<usize>,
    sts: Option<Arc<StsBook>>,
}

impl FakeBedrock {
    /// Binds 127.0.0.1:0; knows the key `access_key_id` with `secret` (and, for temporary
    /// credentials, `session_token`); answers [`DEFAULT_REPLY`] with 10 input and 5 output
    /// tokens.
    pub fn start(access_key_id: &str, secret: &str, session_token: Option<&str>) -> FakeBedrock {
        let behaviour = Arc::new(Mutex::new(Behaviour {
            keys: vec![Key {
                id: access_key_id.to_string(),
                secret: secret.to_string(),
                session_token: session_token.map(str::to_string),
            }],
            usage: BedrockUsage {
                input: 10,
                output: 5,
            },
            reply: DEFAULT_REPLY.to_string(),
            tool_use: None,
            exception_after: None,
            sts: None,
            refusals: Vec::new(),
        }));
        let shared = behaviour.clone();
        let plan = move |_: &RecordedRequest| {
            let mut b = shared.lock().unwrap();
            Planned {
                keys: b.keys.clone(),
                usage: b.usage,
                reply: b.reply.clone(),
                tool_use: b.tool_use.clone(),
                exception_after: b.exception_after.take(),
                sts: b.sts.clone(),
            }
        };
        let counted = behaviour.clone();
        let respond = move |conn: &mut Conn,
                            request: &RecordedRequest,
                            planned: Planned,
                            _ordinal: usize,
                            keep_alive: bool| {
            if let Err((kind, message)) = verify(request, &planned.keys, planned.sts.as_deref()) {
                counted.lock().unwrap().refusals.push(kind);
                let headers = [(
                    "x-amzn-ErrorType",
                    format!("{kind}:http://internal.amazon.com/coral/com.amazon.coral.service/"),
                )];
                return send_json(
                    conn,
                    403,
                    &json!({ "message": message }),
                    keep_alive,
                    &headers,
                );
            }
            answer(conn, request, &planned, keep_alive)
        };
        FakeBedrock {
            server: FakeServer::start_planned(plan, respond),
            behaviour,
        }
    }

    fn behaviour(&self) -> std::sync::MutexGuard<'_, Behaviour> {
        self.behaviour.lock().unwrap()
    }

    /// What the next answers report as `usage`.
    pub fn set_usage(&self, input: u64, output: u64) {
        self.behaviour().usage = BedrockUsage { input, output };
    }

    /// The text of the next answers.
    pub fn set_reply(&self, reply: &str) {
        self.behaviour().reply = reply.to_string();
    }

    /// Requests that declare tools are answered with a call of `name` with `input`.
    pub fn set_tool_use(&self, name: &str, input: Value) {
        self.behaviour().tool_use = Some((name.to_string(), input));
    }

    /// The next stream sends `frames` frames, then a `throttlingException` frame, then ends.
    pub fn fail_next_stream_after(&self, frames: usize) {
        self.behaviour().exception_after = Some(frames);
    }

    /// How many requests were refused for their signature or credentials.
    pub fn refused(&self) -> usize {
        self.behaviour().refusals.len()
    }

    /// The AWS error type of each refused request (`ExpiredTokenException`, ...), in order.
    pub fn refusals(&self) -> Vec<&'static str> {
        self.behaviour().refusals.clone()
    }

    /// Also accepts the temporary credentials `book`'s fake STS issued, while they are valid.
    pub fn accept_sts(&self, book: Arc<StsBook>) {
        self.behaviour().sts = Some(book);
    }

    /// The `endpoint_url` of clients (botocore's) pointed at the fake.
    pub fn endpoint(&self) -> String {
        self.base_url()
    }
}

/// The `Authorization` header's parts.
struct Authorization<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (name, value) = part.trim().split_once('=')?;
        match name {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed = Some(value),
            "Signature" => signature = Some(value),
            _ => return None,
        }
    }
    let mut scope = credential?.split('/');
    let (access_key_id, date, region, service, terminator) = (
        scope.next()?,
        scope.next()?,
        scope.next()?,
        scope.next()?,
        scope.next()?,
    );
    (terminator == "aws4_request" && scope.next().is_none()).then_some(())?;
    Some(Authorization {
        access_key_id,
        date,
        region,
        service,
        signed_headers: signed?.split(';').collect(),
        signature: signature?,
    })
}

/// The key `access_key_id` names: one of the fake's own, or temporary credentials `sts`
/// issued; the error is AWS's for a key it cannot use.
fn find_key(
    access_key_id: &str,
    keys: &[Key],
    sts: Option<&StsBook>,
) -> Result<Key, (&'static str, String)> {
    let invalid = || {
        (
            "UnrecognizedClientException",
            "The security token included in the request is invalid.".to_string(),
        )
    };
    if let Some(key) = keys.iter().find(|k| k.id == access_key_id) {
        return Ok(key.clone());
    }
    match sts.and_then(|book| book.lookup(access_key_id)) {
        Some((issued, Standing::Valid)) => Ok(Key {
            id: issued.access_key_id,
            secret: issued.secret_access_key,
            session_token: Some(issued.session_token),
        }),
        Some((_, Standing::Expired)) => Err((
            "ExpiredTokenException",
            "The security token included in the request is expired".to_string(),
        )),
        Some((_, Standing::Revoked)) | None => Err(invalid()),
    }
}

/// Checks the request's signature as AWS would; the error is AWS's `(ErrorType, message)`.
fn verify(
    request: &RecordedRequest,
    keys: &[Key],
    sts: Option<&StsBook>,
) -> Result<(), (&'static str, String)> {
    let missing = || {
        (
            "MissingAuthenticationTokenException",
            "Missing Authentication Token".to_string(),
        )
    };
    let auth = request
        .header("authorization")
        .and_then(parse_authorization)
        .ok_or_else(missing)?;
    let key = find_key(auth.access_key_id, keys, sts)?;
    if request.header("x-amz-security-token") != key.session_token.as_deref() {
        return Err((
            "UnrecognizedClientException",
            "The security token included in the request is invalid.".to_string(),
        ));
    }
    let amz_date = request.header("x-amz-date").ok_or_else(missing)?;
    let signed_at = parse_amz_date(amz_date).ok_or_else(missing)?;
    if signed_at.abs_diff(unix_now() as i64) > 300 {
        return Err((
            "InvalidSignatureException",
            format!(
                "Signature expired: {amz_date} is now earlier or later than the allowed window."
            ),
        ));
    }
    if auth.region != REGION || auth.service != "bedrock" || !amz_date.starts_with(auth.date) {
        return Err((
            "InvalidSignatureException",
            "Credential should be scoped correctly.".to_string(),
        ));
    }
    // Every signed header but those the signer writes itself, with the value received.
    let headers: Vec<(&str, &str)> = auth
        .signed_headers
        .iter()
        .filter(|name| !matches!(**name, "x-amz-date" | "x-amz-security-token"))
        .map(|name| (*name, request.header(name).unwrap_or("")))
        .collect();
    let credentials = match &key.session_token {
        Some(token) => Credentials::with_session_token(&key.id, &key.secret, token),
        None => Credentials::new(&key.id, &key.secret),
    };
    let signer = Signer::new(
        credentials,
        auth.region,
        "bedrock",
        SigningOptions::default(),
    )
    .map_err(|_| ("InvalidSignatureException", SIGNATURE_MISMATCH.to_string()))?;
    let expected = signer
        .sign(
            &Request {
                method: &request.method,
                path: &request.path,
                query: &request.query,
                headers: &headers,
                payload: Payload::Body(&request.body),
            },
            signed_at,
        )
        .map_err(|_| ("InvalidSignatureException", SIGNATURE_MISMATCH.to_string()))?;
    if expected.signature() != auth.signature {
        return Err(("InvalidSignatureException", SIGNATURE_MISMATCH.to_string()));
    }
    Ok(())
}

/// `YYYYMMDDTHHMMSSZ` as Unix seconds.
fn parse_amz_date(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn answer(conn: &mut Conn, request: &RecordedRequest, planned: &Planned, keep_alive: bool) -> bool {
    let path = request.path.as_str();
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let wants_tools = body.get("toolConfig").is_some();
    let tool_use = planned.tool_use.as_ref().filter(|_| wants_tools);
    if path.starts_with("/model/") && path.ends_with("/converse") {
        let (content, stop) = match tool_use {
            Some((name, input)) => (
                json!([{ "toolUse": { "toolUseId": "tooluse_fake1", "name": name, "input": input } }]),
                "tool_use",
            ),
            None => (json!([{ "text": planned.reply }]), "end_turn"),
        };
        let usage = planned.usage;
        let answer = json!({
            "output": { "message": { "role": "assistant", "content": content } },
            "stopReason": stop,
            "usage": { "inputTokens": usage.input, "outputTokens": usage.output,
                "totalTokens": usage.input + usage.output },
            "metrics": { "latencyMs": 12 },
        });
        return send_json(conn, 200, &answer, keep_alive, &[]);
    }
    if path.starts_with("/model/") && path.ends_with("/converse-stream") {
        return send_frames(conn, &stream_frames(planned, tool_use), keep_alive);
    }
    let headers = [("x-amzn-ErrorType", "UnknownOperationException:".to_string())];
    send_json(
        conn,
        404,
        &json!({ "message": "Unknown operation" }),
        keep_alive,
        &headers,
    )
}

fn event(event_type: &str, payload: Value) -> Vec<u8> {
    frame(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    )
}

fn frame(headers: &[(&str, &str)], payload: Value) -> Vec<u8> {
    Message {
        headers: headers
            .iter()
            .map(|(name, value)| Header {
                name: name.to_string(),
                value: HeaderValue::String(value.to_string()),
            })
            .collect(),
        payload: payload.to_string().into_bytes(),
    }
    .encode()
    .expect("frame within limits")
}

/// The frames of one ConverseStream answer.
fn stream_frames(planned: &Planned, tool_use: Option<&(String, Value)>) -> Vec<Vec<u8>> {
    let mut frames = vec![event(
        "messageStart",
        json!({ "role": "assistant", "p": "abc" }),
    )];
    let stop = match tool_use {
        Some((name, input)) => {
            frames.push(event(
                "contentBlockStart",
                json!({ "contentBlockIndex": 0, "start": { "toolUse": {
                    "toolUseId": "tooluse_fake1", "name": name } } }),
            ));
            // The input JSON in two pieces, as Bedrock splits it.
            let input = input.to_string();
            let (a, b) = input.split_at(input.len() / 2);
            for piece in [a, b] {
                frames.push(event(
                    "contentBlockDelta",
                    json!({ "contentBlockIndex": 0, "delta": { "toolUse": { "input": piece } } }),
                ));
            }
            "tool_use"
        }
        None => {
            for piece in planned.reply.split_inclusive(' ') {
                frames.push(event(
                    "contentBlockDelta",
                    json!({ "contentBlockIndex": 0, "delta": { "text": piece } }),
                ));
            }
            "end_turn"
        }
    };
    frames.push(event("contentBlockStop", json!({ "contentBlockIndex": 0 })));
    frames.push(event("messageStop", json!({ "stopReason": stop })));
    let usage = planned.usage;
    frames.push(event(
        "metadata",
        json!({ "usage": { "inputTokens": usage.input, "outputTokens": usage.output,
            "totalTokens": usage.input + usage.output }, "metrics": { "latencyMs": 12 } }),
    ));
    if let Some(after) = planned.exception_after {
        frames.truncate(after);
        frames.push(frame(
            &[
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            json!({ "message": "Too many requests, please wait before trying again." }),
        ));
    }
    frames
}

/// Writes a `200 application/vnd.amazon.eventstream` answer, chunked, one HTTP chunk per
/// frame.
fn send_frames(conn: &mut Conn, frames: &[Vec<u8>], keep_alive: bool) -> bool {
    let mut head = status_line(200);
    head.push_str(
        "Content-Type: application/vnd.amazon.eventstream\r\n\
         x-amzn-RequestId: 00000000-0000-0000-0000-000000000000\r\n\
         Transfer-Encoding: chunked\r\n",
    );
    head.push_str(&format!(
        "Connection: {}\r\n\r\n",
        connection_token(keep_alive)
    ));
    if !conn.send(head.as_bytes()) {
        return false;
    }
    for frame in frames {
        let mut chunk = format!("{:x}\r\n", frame.len()).into_bytes();
        chunk.extend_from_slice(frame);
        chunk.extend_from_slice(b"\r\n");
        if !conn.send(&chunk) {
            return false;
        }
    }
    conn.send(b"0\r\n\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_parse_to_unix_seconds() {
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("2015-08-30T12:36"), None);
    }
}
