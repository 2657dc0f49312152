//! The entry points shared by the cargo-fuzz targets (`tests/fuzz/fuzz_targets/`) and the
//! corpus replay test (`tests/fuzz_corpora.rs`).
//!
//! Each `pub fn` takes one fuzz input and panics when a property is violated, so libFuzzer
//! reports a crash and the stable replay test fails on the same input. A target file is one
//! line calling its function here; adding a target is one function in this module, one target
//! file, one `[[bin]]` entry and one replay test line.
//!
//! Inputs of the incremental parsers start with one *split byte*: it chooses how the rest is
//! cut into pieces (see [`Pieces`]), so the fuzzer explores both the bytes and the read
//! boundaries, and a property can compare a piecewise parse with a parse of the whole input.
//!
//! Nothing here is used by the gateway itself; it stays free of test-only dependencies so the
//! replay test builds with the normal stable `cargo test`.

use std::path::Path;

use serde_json::Value;

use crate::ai::provider_error::{self, ProviderError};
use crate::ai::providers::{anthropic, gemini};
use crate::ai::{openai, SseEvent, SseParser};
use crate::error::Dialect;
use crate::http1::{
    encode_chunk, encode_last_chunk, BodyFraming, ChunkError, ChunkedDecoder, HeadError,
    HeadParser, RequestHead, Version, MAX_HEADERS,
};

/// `max_head` for the head parser target: small, so the fuzzer reaches `TooLarge` with short
/// inputs (libFuzzer's `-max_len` in `scripts/fuzz.sh` is twice this).
pub const FUZZ_MAX_HEAD: usize = 4096;

/// Splits a fuzz input into its split byte and the payload (empty input: split byte 0).
fn split_byte(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&seed, rest)) => (seed, rest),
        None => (0, data),
    }
}

/// Piece lengths derived from a split byte: lengths in `1..=2^(seed % 8)`, drawn from a
/// xorshift generator seeded by the byte. `seed % 8 == 0` gives one byte at a time.
#[derive(Clone, Debug)]
pub struct Pieces {
    state: u32,
    max: usize,
}

impl Pieces {
    /// The piece lengths for `seed`.
    pub fn new(seed: u8) -> Pieces {
        Pieces {
            state: u32::from(seed).wrapping_mul(0x9E37_79B9) | 1,
            max: 1 << (seed % 8),
        }
    }

    /// `input` cut into consecutive, non-empty pieces that together are `input`.
    pub fn cut<'a>(&mut self, mut input: &'a [u8]) -> Vec<&'a [u8]> {
        let mut pieces = Vec::new();
        while !input.is_empty() {
            let (piece, rest) = input.split_at(self.next_len().min(input.len()));
            pieces.push(piece);
            input = rest;
        }
        pieces
    }

    fn next_len(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        1 + self.state as usize % self.max
    }
}

// ---------------------------------------------------------------------------------------
// http1_head: the request head parser and its validation
// ---------------------------------------------------------------------------------------

/// The outcome of feeding one input to a [`HeadParser`]: the head and bytes consumed, `None`
/// for "need more bytes", or the error.
type HeadOutcome = Result<Option<(RequestHead, usize)>, HeadError>;

/// Feeds `pieces` to `parser` the way a connection does: the buffer grows by one piece per
/// call, always from the same start, until the parser answers.
fn feed_head(parser: &mut HeadParser, pieces: &[&[u8]]) -> HeadOutcome {
    let mut buf = Vec::new();
    let mut outcome = Ok(None);
    for piece in pieces {
        buf.extend_from_slice(piece);
        outcome = parser.parse(&buf, FUZZ_MAX_HEAD);
        if !matches!(outcome, Ok(None)) {
            break;
        }
    }
    outcome
}

/// Request head parser, [`HeadParser`]: the answer does not depend on how the bytes were
/// split across reads (a head from one, the same head from the other; an error from one, an
/// error from the other, as the early request-line check may name a different first fault),
/// a parsed head's accessors agree with its bytes, and a parser that has answered parses the
/// next request like a new one.
pub fn http1_head(data: &[u8]) {
    let (seed, input) = split_byte(data);
    let mut parser = HeadParser::new();
    let whole = parser.parse(input, FUZZ_MAX_HEAD);
    let split = feed_head(&mut HeadParser::new(), &Pieces::new(seed).cut(input));
    match (&whole, &split) {
        (Ok(Some((a, a_len))), Ok(Some((b, b_len)))) => {
            assert_eq!(a_len, b_len, "consumed differs when split");
            assert_eq!(
                format!("{a:?}"),
                format!("{b:?}"),
                "head differs when split"
            );
        }
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        _ => panic!("whole input gave {whole:?}, split input gave {split:?}"),
    }
    if let Ok(None) = whole {
        assert!(
            input.len() <= FUZZ_MAX_HEAD,
            "an incomplete head over max_head"
        );
    }
    if let Ok(Some((head, consumed))) = &whole {
        check_request_head(head, *consumed, input);
        // The parser reset itself after answering: it reads what follows like a new one.
        let rest = &input[*consumed..];
        let again = format!("{:?}", parser.parse(rest, FUZZ_MAX_HEAD));
        let fresh = format!("{:?}", HeadParser::new().parse(rest, FUZZ_MAX_HEAD));
        assert_eq!(again, fresh, "a reused parser differs from a new one");
    }
}

/// Whether `name` appears among `head`'s fields (case-insensitive).
fn has_field(head: &RequestHead, name: &str) -> bool {
    head.header(name).is_some()
}

/// The accessors of a parsed head agree with each other and with the bytes it came from.
fn check_request_head(head: &RequestHead, consumed: usize, input: &[u8]) {
    let bytes = head.as_bytes();
    assert!(consumed <= input.len() && bytes.len() <= consumed);
    assert!(
        consumed <= FUZZ_MAX_HEAD,
        "a head longer than max_head was accepted"
    );
    let skipped = &input[..consumed - bytes.len()];
    assert_eq!(
        bytes,
        &input[skipped.len()..consumed],
        "as_bytes is not the input"
    );
    assert!(
        skipped.chunks(2).all(|pair| pair == b"\r\n"),
        "only empty lines may precede the request-line"
    );
    assert!(bytes.ends_with(b"\r\n\r\n"), "a head ends with CRLF CRLF");

    let line = format!(
        "{} {} {}\r\n",
        head.method(),
        head.target(),
        head.version().as_str()
    );
    assert!(bytes.starts_with(line.as_bytes()), "request-line accessors");
    assert!(!head.method().is_empty() && head.method() != "CONNECT");
    let target = head.target();
    let path_and_query = match head.query() {
        Some(query) => format!("{}?{query}", head.path()),
        None => head.path().to_string(),
    };
    assert!(
        !head.path().contains('?'),
        "the path stops at the first '?'"
    );
    if target.starts_with('/') {
        assert_eq!(
            target, path_and_query,
            "origin-form target is path and query"
        );
    } else if target == "*" {
        assert_eq!((head.method(), head.path()), ("OPTIONS", "*"));
    } else {
        // Absolute-form: the path part may be empty, which path() reports as "/".
        let tail = target.split_once("://").expect("absolute-form has ://").1;
        let tail = &tail[tail.find(['/', '?']).unwrap_or(tail.len())..];
        let expected = match tail.strip_prefix('?') {
            Some(query) => format!("/?{query}"),
            None if tail.is_empty() => "/".to_string(),
            None => tail.to_string(),
        };
        assert_eq!(expected, path_and_query, "absolute-form path and query");
    }

    let fields: Vec<(&str, &[u8])> = head.headers().collect();
    assert!(fields.len() <= MAX_HEADERS);
    for (name, value) in &fields {
        assert!(!name.is_empty() && !name.contains(':'));
        assert!(!value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0));
        assert!(
            !value.starts_with(b" ") && !value.ends_with(b" "),
            "values are trimmed"
        );
        assert_eq!(head.header(name), head.header_all(name).next());
    }

    let http11 = head.version() == Version::Http11;
    match head.header("host") {
        Some(host) => assert_eq!(head.host().as_bytes(), host, "host() is the Host field"),
        None => assert!(!http11, "HTTP/1.1 without Host was accepted"),
    }
    let content_length = head.header("content-length");
    match head.body() {
        BodyFraming::Length(n) => {
            let digits = std::str::from_utf8(content_length.expect("Length needs Content-Length"))
                .expect("Content-Length is ASCII");
            assert_eq!(digits.parse::<u64>().ok(), Some(n));
            assert!(!has_field(head, "transfer-encoding"));
        }
        BodyFraming::Chunked => {
            assert!(http11 && content_length.is_none() && has_field(head, "transfer-encoding"));
        }
        BodyFraming::None => {
            assert!(content_length.is_none() && !has_field(head, "transfer-encoding"));
        }
    }
    if !has_field(head, "connection") {
        assert_eq!(
            head.keep_alive(),
            http11,
            "default keep-alive follows the version"
        );
    }
    assert!(!head.expects_continue() || (http11 && has_field(head, "expect")));
    assert!(!head.is_upgrade() || (http11 && has_field(head, "upgrade")));
    assert!(head.is_hop_by_hop("Connection") && head.is_hop_by_hop("transfer-encoding"));
    assert!(!head.is_hop_by_hop("host") && !head.is_hop_by_hop("Content-Length"));
}

// ---------------------------------------------------------------------------------------
// http1_chunked: the chunked body decoder
// ---------------------------------------------------------------------------------------

/// What decoding one input produced.
#[derive(Debug, PartialEq, Eq)]
struct ChunkedOutcome {
    /// Input bytes consumed and whether the body ended, or the error.
    result: Result<(usize, bool), ChunkError>,
    /// The decoded body (up to the error, if any).
    body: Vec<u8>,
}

/// Decodes `pieces` in order with one decoder, checking each call's invariants.
fn decode_pieces(pieces: &[&[u8]]) -> ChunkedOutcome {
    let mut decoder = ChunkedDecoder::new();
    let mut body = Vec::new();
    let mut consumed = 0;
    let mut result = Ok((0, false));
    for piece in pieces {
        match decoder.decode(piece, &mut body) {
            Err(error) => {
                let mut more = Vec::new();
                assert_eq!(decoder.decode(b"0\r\n\r\n", &mut more), Err(error));
                assert!(more.is_empty(), "a failed decoder decoded more");
                result = Err(error);
                break;
            }
            Ok(decoded) => {
                assert!(decoded.consumed <= piece.len());
                assert_eq!(decoded.done, decoder.is_done());
                consumed += decoded.consumed;
                result = Ok((consumed, decoded.done));
                if decoded.done {
                    let before = body.len();
                    let after = decoder.decode(b"0\r\n\r\n", &mut body);
                    assert_eq!(after.map(|d| (d.consumed, d.done)), Ok((0, true)));
                    assert_eq!(body.len(), before, "a finished decoder decoded more");
                    break;
                }
                assert_eq!(decoded.consumed, piece.len(), "unfinished body left input");
            }
        }
        assert_eq!(decoder.body_bytes(), body.len() as u64);
        assert!(decoder.declared_bytes() >= decoder.body_bytes());
        assert!(!decoder.in_first_size_line() || body.is_empty());
    }
    ChunkedOutcome { result, body }
}

/// Chunked decoder, [`ChunkedDecoder`]: the outcome (body bytes, bytes consumed, done, or the
/// exact error) does not depend on how the input was split; the decoded body is never longer
/// than the input consumed; errors are sticky and a finished decoder consumes nothing more.
/// Also, the payload re-encoded with [`encode_chunk`] in the same pieces decodes back to itself.
pub fn http1_chunked(data: &[u8]) {
    let (seed, input) = split_byte(data);
    let whole = decode_pieces(&[input]);
    let split = decode_pieces(&Pieces::new(seed).cut(input));
    assert_eq!(whole, split, "outcome differs when split");
    let consumed = whole.result.map_or(input.len(), |(consumed, _)| consumed);
    assert!(
        whole.body.len() <= consumed,
        "body longer than its encoding"
    );

    let mut encoded = Vec::new();
    for piece in Pieces::new(seed.rotate_left(3)).cut(input) {
        encode_chunk(piece, &mut encoded);
    }
    encode_last_chunk(&mut encoded);
    encoded.extend_from_slice(b"next");
    let round_trip = decode_pieces(&Pieces::new(seed).cut(&encoded));
    assert_eq!(round_trip.result, Ok((encoded.len() - 4, true)));
    assert_eq!(
        round_trip.body, input,
        "encode then decode is not the identity"
    );
}

// ---------------------------------------------------------------------------------------
// sse: the server-sent events parser
// ---------------------------------------------------------------------------------------

/// The event size limit for the SSE target: small enough for the fuzzer to reach.
pub const FUZZ_MAX_EVENT: usize = 512;

/// What an event stream parsed into: each event without its raw bytes, every raw byte in
/// order (events then the leftover), and the error if the limit was exceeded.
#[derive(Debug, PartialEq, Eq)]
struct SseOutcome {
    events: Vec<(Option<String>, String, bool)>,
    raw: Vec<u8>,
    error: bool,
}

fn parse_sse(pieces: &[&[u8]]) -> SseOutcome {
    let mut parser = SseParser::new(FUZZ_MAX_EVENT);
    let mut outcome = SseOutcome {
        events: Vec::new(),
        raw: Vec::new(),
        error: false,
    };
    for piece in pieces {
        outcome.error = parser.push(piece).is_err();
        while let Some(event) = parser.next_event() {
            // The limit leaves out a leading LF (the previous event's CRLF split across pushes)
            // and the LF of a final CRLF.
            let own = event.raw.len()
                - usize::from(event.raw.starts_with(b"\n"))
                - usize::from(event.raw.ends_with(b"\r\n"));
            assert!(own <= FUZZ_MAX_EVENT, "an event over the limit");
            assert!(
                !event.has_data || event.raw.len() >= 5,
                "data without a data line"
            );
            outcome.raw.extend_from_slice(&event.raw);
            outcome
                .events
                .push((event.event, event.data, event.has_data));
        }
        if outcome.error {
            return outcome;
        }
    }
    outcome.raw.extend_from_slice(&parser.finish());
    outcome
}

/// SSE parser, [`SseParser`]: the events (name, data, whether it had data) and the error do
/// not depend on how the stream was split, and without an error the events' raw bytes and the
/// leftover are exactly the input (a relay forwards the stream byte for byte).
pub fn sse(data: &[u8]) {
    let (seed, input) = split_byte(data);
    let whole = parse_sse(&[input]);
    let split = parse_sse(&Pieces::new(seed).cut(input));
    assert_eq!(whole.events, split.events, "events differ when split");
    assert_eq!(
        whole.error, split.error,
        "the size limit depends on the split"
    );
    if !whole.error {
        assert_eq!(whole.raw, input, "raw bytes are not the input");
        assert_eq!(split.raw, input, "raw bytes are not the input when split");
    }
}

// ---------------------------------------------------------------------------------------
// ai_json: the AI dialect translators
// ---------------------------------------------------------------------------------------

/// `bytes` is one JSON object.
fn assert_json_object(what: &str, bytes: &[u8]) -> serde_json::Map<String, Value> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => map,
        other => panic!("{what} is not a JSON object: {other:?}"),
    }
}

/// `out` is an event stream whose data is JSON or the `[DONE]` marker.
fn assert_json_events(what: &str, out: &[u8]) {
    let mut parser = SseParser::new(usize::MAX);
    parser.push(out).expect("no limit");
    assert!(parser.finish().is_empty(), "{what}: an unterminated event");
    while let Some(event) = parser.next_event() {
        if event.has_data && !event.is_done() {
            assert!(
                serde_json::from_str::<Value>(&event.data).is_ok(),
                "{what} wrote an event that is not JSON: {:?}",
                event.data
            );
        }
    }
}

/// The input as stream events: its SSE events when it parses as an event stream with data,
/// else the whole input as one event's data.
fn events_of(data: &[u8]) -> Vec<SseEvent> {
    let mut parser = SseParser::new(64 * 1024);
    let mut events = Vec::new();
    if parser.push(data).is_ok() {
        while let Some(event) = parser.next_event() {
            events.push(event);
        }
    }
    if !events.iter().any(|e| e.has_data) {
        let text = String::from_utf8_lossy(data);
        let mut raw = Vec::new();
        crate::ai::encode_event(None, &text, &mut raw);
        let data = text.replace("\r\n", "\n").replace('\r', "\n");
        events = vec![SseEvent {
            event: None,
            data,
            has_data: true,
            raw,
        }];
    }
    events
}

/// AI translators: every request, response, error and stream translator between the OpenAI,
/// Anthropic and Gemini dialects takes any bytes without panicking, and what a translator
/// writes is JSON (an object for bodies, JSON events for streams). A provider's error answer,
/// whatever its body and `Retry-After`, becomes an error body in both front-door dialects
/// without the provider key. A Messages request that
/// passes its check and translates becomes an OpenAI request that passes the OpenAI check.
pub fn ai_json(data: &[u8]) {
    if let Ok(chat) = openai::parse_chat_request(data) {
        assert_json_object(
            "upstream chat body",
            &openai::upstream_chat_body(&chat, "up"),
        );
        if let Ok(body) = anthropic::request_from_openai(&chat.body, "claude-up", 1024) {
            let body = assert_json_object("Anthropic request", &body);
            assert_eq!(body.get("model"), Some(&Value::from("claude-up")));
            assert!(body.get("max_tokens").is_some_and(Value::is_u64));
        }
        if let Ok(body) = gemini::request_from_openai(&chat.body) {
            let body = assert_json_object("Gemini request", &body);
            assert!(body.get("contents").is_some_and(Value::is_array));
        }
    }
    if let Ok(messages) = anthropic::parse_messages_request(data) {
        if let Ok(canonical) = anthropic::request_to_openai(&messages) {
            let bytes = serde_json::to_vec(&canonical).expect("serialize JSON");
            let chat = openai::parse_chat_request(&bytes)
                .expect("a translated Messages request passes the OpenAI check");
            assert_eq!(chat.model, messages.model);
            assert_eq!(chat.stream, messages.stream);
            let _ = anthropic::request_from_openai(&chat.body, "claude-up", 1024);
            let _ = gemini::request_from_openai(&chat.body);
        }
    }
    if let Ok(embeddings) = openai::parse_embeddings_request(data) {
        let body = openai::upstream_embeddings_body(&embeddings, "up");
        assert_json_object("upstream embeddings body", &body);
        if let Ok(body) = gemini::embeddings_request_from_openai(&embeddings.body, "up") {
            assert_json_object("Gemini embeddings request", &body);
        }
        if let Ok(body) = gemini::embeddings_response_to_openai(data, "m", &embeddings.body) {
            assert_json_object("embeddings response", &body);
        }
    }

    if let Ok((body, _)) = anthropic::response_to_openai(data, "m", 0) {
        assert_json_object("Anthropic response as OpenAI", &body);
    }
    if let Ok((body, _)) = anthropic::response_from_openai(data, "m") {
        assert_json_object("OpenAI response as Anthropic", &body);
    }
    if let Ok((body, _)) = gemini::response_to_openai(data, "m", "id", 0) {
        assert_json_object("Gemini response as OpenAI", &body);
    }
    let _ = openai::usage_from_chat_response(data);
    let _ = openai::usage_from_embeddings_response(data);
    for status in [400, 401, 404, 429, 500, 503, 529] {
        assert_provider_error(
            status,
            &provider_error::from_response(status, data, Some(data), &[FUZZ_SECRET]),
        );
        assert_json_object(
            "error from OpenAI",
            &anthropic::error_from_openai(status, data),
        );
    }
    let stream_error = anthropic::stream_error(data, &[FUZZ_SECRET]);
    assert_provider_error(stream_error.provider_status, &stream_error);

    let events = events_of(data);
    let mut out = Vec::new();
    let mut to_openai = anthropic::StreamToOpenAi::new("m", 0, true);
    let mut from_openai = anthropic::StreamFromOpenAi::new("m", "msg_1");
    let mut gemini_stream = gemini::StreamToOpenAi::new("m", "id", 0, true);
    let mut relays = [
        openai::ChatStreamRelay::new(true),
        openai::ChatStreamRelay::new(false),
    ];
    for event in &events {
        to_openai.on_event(event, &mut out);
    }
    to_openai.finish(&mut out);
    assert_json_events("Anthropic stream as OpenAI", &out);
    out.clear();
    for event in &events {
        from_openai.on_event(event, &mut out);
    }
    from_openai.finish(&mut out);
    assert_json_events("OpenAI stream as Anthropic", &out);
    out.clear();
    for event in &events {
        gemini_stream.on_event(event, &mut out);
    }
    gemini_stream.finish(&mut out);
    assert_json_events("Gemini stream as OpenAI", &out);
    for relay in &mut relays {
        for event in &events {
            relay.on_event(event, &mut out);
        }
    }
}

/// The provider key the AI error mapping is given: it must not come out in any message.
const FUZZ_SECRET: &str = "sk-fuzzQ7xK2mP9vL4nR8tW1yZ3";

/// A mapped provider error: both dialects' bodies are JSON objects, the client sees the
/// provider's status or a gateway one, a `Retry-After` only on 429 and 503, and nowhere the
/// provider key.
fn assert_provider_error(provider_status: u16, error: &ProviderError) {
    assert!(
        error.status == provider_status || matches!(error.status, 502 | 503),
        "status {} for provider status {provider_status}",
        error.status
    );
    if error.retry_after_secs.is_some() {
        assert!(
            matches!(error.status, 429 | 503),
            "Retry-After on {}",
            error.status
        );
    }
    for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
        let body = error.body(dialect);
        assert_json_object("provider error body", body.as_bytes());
        assert!(
            !body.contains(FUZZ_SECRET),
            "the provider key leaked: {body}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// config: the config loader
// ---------------------------------------------------------------------------------------

/// Config loader: [`crate::config::parse`] and [`crate::config::check_text`] never panic on
/// any text and agree: `parse` succeeds exactly when `check` reports no error, and when it
/// fails it reports the errors `check` reports.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // A directory that does not exist: relative file references in the text resolve to
    // nothing, so the outcome does not depend on the machine.
    let base = Path::new("/nonexistent/credentialflow-fuzz");
    let report = crate::config::check_text(&text, base);
    match crate::config::parse(&text, base) {
        Ok(_) => assert!(
            report.is_ok(),
            "parse accepted what check refuses: {report:?}"
        ),
        Err(errors) => {
            assert!(
                !report.is_ok(),
                "parse refused what check accepts: {errors:?}"
            );
            assert_eq!(
                errors.0, report.errors,
                "parse and check report different errors"
            );
        }
    }
}

/// Path normalizer: the first byte's low bit is `merge_slashes`, the rest is the path. Every
/// accepted path comes out rooted, without dot segments (so it cannot climb above the root),
/// without `//` when merging, no longer than its input, and as a fixed point (normalizing it
/// again borrows it unchanged). For paths of plain segment characters, the result must also
/// equal a literal stack reading of RFC 3986 §5.2.4 (differential check).
pub fn http1_path(data: &[u8]) {
    let (flags, rest) = split_byte(data);
    let merge_slashes = flags & 1 == 1;
    let path = String::from_utf8_lossy(rest);
    let result = crate::http1::normalize_path(&path, merge_slashes);
    if let Some(expected) = reference_dot_removal(&path, merge_slashes) {
        let got = result.as_deref().map_err(|_| ());
        assert_eq!(
            got,
            expected.as_deref().map_err(|_| ()),
            "normalizer and RFC 3986 stack disagree on {path:?}"
        );
    }
    let Ok(normal) = result else { return };
    assert!(
        normal.starts_with('/'),
        "{path:?} -> {normal:?} is not rooted"
    );
    assert!(
        normal.len() <= path.len().max(1),
        "{path:?} -> {normal:?} grew"
    );
    for segment in normal.split('/') {
        assert!(
            segment != "." && segment != "..",
            "{path:?} -> {normal:?} keeps a dot segment"
        );
        let lower = segment.to_ascii_lowercase();
        assert!(
            !lower.contains("%2e") && !lower.contains("%2f") && !lower.contains("%5c"),
            "{path:?} -> {normal:?} keeps an escaped dot or slash"
        );
    }
    if merge_slashes {
        assert!(!normal.contains("//"), "{path:?} -> {normal:?} keeps //");
    }
    match crate::http1::normalize_path(&normal, merge_slashes) {
        Ok(std::borrow::Cow::Borrowed(again)) => assert_eq!(again, &*normal),
        other => panic!("{path:?} -> {normal:?} is not a fixed point: {other:?}"),
    }
}

/// RFC 3986 §5.2.4 read as a stack of segments, for paths of `[a-z0-9.-]` and `/` only
/// (nothing to decode or refuse but climbing): `None` for any other path.
fn reference_dot_removal(path: &str, merge_slashes: bool) -> Option<Result<String, ()>> {
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"./-".contains(&b));
    let rest = path.strip_prefix('/').filter(|_| plain)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let mut stack: Vec<&str> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return Some(Err(()));
                }
            }
            "" if merge_slashes && !last => continue,
            other => {
                stack.push(other);
                continue;
            }
        }
        // A final dot segment leaves the directory it named: a trailing slash.
        if last {
            stack.push("");
        }
    }
    Some(Ok(format!("/{}", stack.join("/"))))
}

/// Library functions whose arguments the Lua sandbox caps (`lua::caps`), and argument shapes
/// around and past every cap.
const LUA_CALLS: &[&str] = &[
    "table.move",
    "table.create",
    "table.insert",
    "table.remove",
    "table.concat",
    "table.unpack",
    "unpack",
    "table.sort",
    "table.clear",
    "string.rep",
    "string.find",
    "string.split",
    "string.format",
    "string.byte",
    "string.char",
    "string.pack",
    "string.unpack",
    "string.packsize",
    "string.sub",
    "string.gsub",
    "buffer.create",
    "buffer.fill",
    "buffer.copy",
    "utf8.char",
    "select",
];
const LUA_ARGS: &[&str] = &[
    "0",
    "1",
    "-1",
    "1e9",
    "-1e9",
    "2^53",
    "0/0",
    "math.huge",
    "65536",
    "65537",
    "4194305",
    "{}",
    "table.create(8, 1)",
    "string.rep('ab', 64)",
    "'%99d'",
    "'x'",
    "buffer.create(16)",
    "'i4'",
    "'s4'",
    "'c1000000'",
    "('a'):rep(300)",
    "nil",
];

/// Lua argument caps: the first byte picks a capped library function, each later byte an
/// argument shape (at most six); the call runs in the sandboxed fuzz VM under `pcall`. It must
/// neither panic nor run for long: every call returns or is refused within the VM's budget
/// (the bound here is generous so a loaded machine cannot trip it; libFuzzer's `-timeout`
/// catches a real hang).
pub fn lua_caps(data: &[u8]) {
    let Some((&pick, args)) = data.split_first() else {
        return;
    };
    let function = LUA_CALLS[usize::from(pick) % LUA_CALLS.len()];
    let args: Vec<&str> = args
        .iter()
        .take(6)
        .map(|&b| LUA_ARGS[usize::from(b) % LUA_ARGS.len()])
        .collect();
    let script = format!("pcall({function}, {})", args.join(", "));
    let started = std::time::Instant::now();
    let _ = crate::lua::fuzz_library_call(&script);
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(5),
        "{script} ran for {took:?}"
    );
}
