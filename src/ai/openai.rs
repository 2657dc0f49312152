//! The OpenAI wire format ("dialect") of the AI front doors: request checks, the body sent to
//! an OpenAI-format upstream, usage read back from responses and streams, `GET /v1/models`.
//!
//! Formats follow the OpenAI API reference: "Chat" (`POST /v1/chat/completions`, the
//! `chat.completion` and `chat.completion.chunk` objects, `stream_options.include_usage`),
//! "Completions" (legacy, `POST /v1/completions`, the `text_completion` object),
//! "Embeddings" (`POST /v1/embeddings`) and "Models" (`GET /v1/models`, `/v1/models/{id}`).
//!
//! Everything here is synchronous and pure; the caller does the I/O.

use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::sse::{encode_event, SseEvent};

/// A checked `POST /v1/chat/completions` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// The whole body as sent by the client.
    pub body: Map<String, Value>,
    /// The client-facing model name.
    pub model: String,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage == true` in the client's request: the client wants the
    /// usage-only chunk at the end of the stream.
    pub client_wants_usage: bool,
    /// `max_completion_tokens`, else the deprecated `max_tokens`.
    pub max_tokens: Option<u64>,
}

/// A checked `POST /v1/embeddings` body.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    /// The whole body as sent by the client.
    pub body: Map<String, Value>,
    /// The client-facing model name.
    pub model: String,
}

/// Why a request body is refused: the message of a 400 `invalid_request_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The body is not JSON.
    NotJson(String),
    /// The body is JSON but not an object.
    NotAnObject,
    /// A required field is absent (or `null`).
    Missing(&'static str),
    /// A field has the wrong type or value; `expected` says what it must be.
    Invalid {
        /// The field's name (dotted for nested fields).
        field: &'static str,
        /// What the field must be, e.g. "a non-empty string".
        expected: &'static str,
    },
}

impl RequestError {
    /// The offending field, for the error body's `param`.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            RequestError::Missing(field) | RequestError::Invalid { field, .. } => Some(field),
            RequestError::NotJson(_) | RequestError::NotAnObject => None,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NotJson(e) => write!(f, "the request body is not valid JSON: {e}"),
            RequestError::NotAnObject => f.write_str("the request body must be a JSON object"),
            RequestError::Missing(field) => write!(f, "missing required parameter: '{field}'"),
            RequestError::Invalid { field, expected } => {
                write!(f, "invalid parameter '{field}': must be {expected}")
            }
        }
    }
}

impl std::error::Error for RequestError {}

/// Token counts reported by a provider for one request.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Input tokens read from the provider's prompt cache (`prompt_tokens_details.cached_tokens`).
    pub cached_tokens: u64,
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, RequestError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(RequestError::NotAnObject),
        Err(e) => Err(RequestError::NotJson(e.to_string())),
    }
}

/// A present, non-null field (`null` means "not given" in OpenAI's API).
fn given<'a>(body: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    body.get(field).filter(|v| !v.is_null())
}

fn model_of(body: &Map<String, Value>) -> Result<String, RequestError> {
    match given(body, "model") {
        None => Err(RequestError::Missing("model")),
        Some(Value::String(model)) if !model.is_empty() => Ok(model.clone()),
        Some(_) => Err(RequestError::Invalid {
            field: "model",
            expected: "a non-empty string",
        }),
    }
}

fn optional_bool(body: &Map<String, Value>, field: &'static str) -> Result<bool, RequestError> {
    match given(body, field) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(RequestError::Invalid {
            field,
            expected: "a boolean",
        }),
    }
}

fn optional_count(
    body: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<u64>, RequestError> {
    match given(body, field) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or(RequestError::Invalid {
            field,
            expected: "an integer >= 0",
        }),
    }
}

/// Checks a chat completions body: a JSON object with `model` a non-empty string, `messages`
/// a non-empty array, `stream` a boolean, `stream_options` an object whose `include_usage` is
/// a boolean, and the token limits integers >= 0 (when present and not `null`).
pub fn parse_chat_request(body: &[u8]) -> Result<ChatRequest, RequestError> {
    let body = parse_object(body)?;
    let model = model_of(&body)?;
    match given(&body, "messages") {
        None => return Err(RequestError::Missing("messages")),
        Some(Value::Array(messages)) if !messages.is_empty() => {}
        Some(_) => {
            return Err(RequestError::Invalid {
                field: "messages",
                expected: "a non-empty array",
            })
        }
    }
    let stream = optional_bool(&body, "stream")?;
    let client_wants_usage = match given(&body, "stream_options") {
        None => false,
        Some(Value::Object(options)) => match given(options, "include_usage") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(RequestError::Invalid {
                    field: "stream_options.include_usage",
                    expected: "a boolean",
                })
            }
        },
        Some(_) => {
            return Err(RequestError::Invalid {
                field: "stream_options",
                expected: "an object",
            })
        }
    };
    let max_completion_tokens = optional_count(&body, "max_completion_tokens")?;
    let max_tokens = optional_count(&body, "max_tokens")?;
    Ok(ChatRequest {
        model,
        stream,
        client_wants_usage,
        max_tokens: max_completion_tokens.or(max_tokens),
        body,
    })
}

/// Writes `body` as a JSON object, with `model` replaced and `extra` members replacing or
/// added after the client's own (serialized field by field: the messages are not cloned).
fn write_body(
    body: &Map<String, Value>,
    upstream_model: &str,
    extra: Option<(&str, &Value)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.push(b'{');
    let mut first = true;
    let mut member = |out: &mut Vec<u8>, key: &str, value: &Value| {
        if !first {
            out.push(b',');
        }
        first = false;
        // Serializing strings and Values into a Vec cannot fail.
        serde_json::to_writer(&mut *out, key).expect("serialize JSON key");
        out.push(b':');
        serde_json::to_writer(&mut *out, value).expect("serialize JSON value");
    };
    let model = Value::String(upstream_model.to_string());
    for (key, value) in body {
        match (key.as_str(), extra) {
            ("model", _) => member(&mut out, key, &model),
            (k, Some((extra_key, extra_value))) if k == extra_key => {
                member(&mut out, key, extra_value)
            }
            _ => member(&mut out, key, value),
        }
    }
    if let Some((extra_key, extra_value)) = extra {
        if !body.contains_key(extra_key) {
            member(&mut out, extra_key, extra_value);
        }
    }
    if !body.contains_key("model") {
        member(&mut out, "model", &model);
    }
    out.push(b'}');
    out
}

/// Body for an OpenAI-format upstream: the client's body with `model` replaced by the
/// upstream model; when streaming, `stream_options.include_usage = true` is set so the stream
/// ends with a usage chunk the gateway can meter (other `stream_options` members are kept).
pub fn upstream_chat_body(req: &ChatRequest, upstream_model: &str) -> Vec<u8> {
    if !req.stream {
        return write_body(&req.body, upstream_model, None);
    }
    let mut options = match given(&req.body, "stream_options") {
        Some(Value::Object(options)) => options.clone(),
        _ => Map::new(),
    };
    options.insert("include_usage".to_string(), Value::Bool(true));
    let options = Value::Object(options);
    write_body(
        &req.body,
        upstream_model,
        Some(("stream_options", &options)),
    )
}

/// Checks an embeddings body: a JSON object with `model` a non-empty string and `input` a
/// non-empty string or a non-empty array (of strings or token arrays).
pub fn parse_embeddings_request(body: &[u8]) -> Result<EmbeddingsRequest, RequestError> {
    let body = parse_object(body)?;
    let model = model_of(&body)?;
    match given(&body, "input") {
        None => return Err(RequestError::Missing("input")),
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(Value::Array(items)) if !items.is_empty() => {}
        Some(_) => {
            return Err(RequestError::Invalid {
                field: "input",
                expected: "a non-empty string or array",
            })
        }
    }
    Ok(EmbeddingsRequest { body, model })
}

/// Body for an OpenAI-format upstream: the client's body with `model` replaced.
pub fn upstream_embeddings_body(req: &EmbeddingsRequest, upstream_model: &str) -> Vec<u8> {
    write_body(&req.body, upstream_model, None)
}

/// Most prompts one legacy completion request may carry (each is a separate completion
/// upstream, so the list is bounded like any other multiplier of work).
pub const MAX_COMPLETION_PROMPTS: usize = 64;

/// Largest `n` or `best_of` of a legacy completion request: completions made per prompt.
pub const MAX_COMPLETION_CHOICES: u64 = 16;

/// A checked `POST /v1/completions` (legacy) body.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    /// The whole body as sent by the client.
    pub body: Map<String, Value>,
    /// The client-facing model name.
    pub model: String,
    /// `prompt`, as a list (a string prompt is a list of one).
    pub prompts: Vec<String>,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage == true`.
    pub client_wants_usage: bool,
    /// `max_tokens` (the legacy API's default is 16; absent, the gateway's reservation
    /// applies).
    pub max_tokens: Option<u64>,
    /// Completions made per prompt: the larger of `n` and `best_of` (1 when neither).
    pub choices_per_prompt: u64,
}

/// Checks a legacy completions body: `model` a non-empty string; `prompt` a string or a
/// non-empty array of at most [`MAX_COMPLETION_PROMPTS`] strings (token arrays are refused:
/// the gateway meters and hooks text); no `suffix` (insertion is not supported); `stream`,
/// `stream_options.include_usage` booleans; `max_tokens` an integer >= 0; `n` and `best_of`
/// integers from 1 to [`MAX_COMPLETION_CHOICES`].
pub fn parse_completion_request(body: &[u8]) -> Result<CompletionRequest, RequestError> {
    let body = parse_object(body)?;
    let model = model_of(&body)?;
    const PROMPT_TEXT: &str = "a string or an array of strings (token arrays are not supported)";
    let prompts = match given(&body, "prompt") {
        None => return Err(RequestError::Missing("prompt")),
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) if !items.is_empty() => {
            if items.len() > MAX_COMPLETION_PROMPTS {
                return Err(RequestError::Invalid {
                    field: "prompt",
                    expected: "an array of at most 64 prompts",
                });
            }
            let texts: Option<Vec<String>> = items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect();
            texts.ok_or(RequestError::Invalid {
                field: "prompt",
                expected: PROMPT_TEXT,
            })?
        }
        Some(_) => {
            return Err(RequestError::Invalid {
                field: "prompt",
                expected: PROMPT_TEXT,
            })
        }
    };
    if given(&body, "suffix").is_some() {
        return Err(RequestError::Invalid {
            field: "suffix",
            expected: "absent (insertion with a suffix is not supported)",
        });
    }
    let stream = optional_bool(&body, "stream")?;
    let client_wants_usage = match given(&body, "stream_options") {
        None => false,
        Some(Value::Object(options)) => {
            optional_bool(options, "include_usage").map_err(|_| RequestError::Invalid {
                field: "stream_options.include_usage",
                expected: "a boolean",
            })?
        }
        Some(_) => {
            return Err(RequestError::Invalid {
                field: "stream_options",
                expected: "an object",
            })
        }
    };
    let max_tokens = optional_count(&body, "max_tokens")?;
    let mut choices_per_prompt = 1;
    for field in ["n", "best_of"] {
        if let Some(value) = given(&body, field) {
            match value.as_u64() {
                Some(n) if (1..=MAX_COMPLETION_CHOICES).contains(&n) => {
                    choices_per_prompt = choices_per_prompt.max(n)
                }
                _ => {
                    return Err(RequestError::Invalid {
                        field: if field == "n" { "n" } else { "best_of" },
                        expected: "an integer from 1 to 16",
                    })
                }
            }
        }
    }
    Ok(CompletionRequest {
        body,
        model,
        prompts,
        stream,
        client_wants_usage,
        max_tokens,
        choices_per_prompt,
    })
}

/// Body for an OpenAI upstream's `/v1/completions`: the client's body with `model` replaced
/// and `prompt` as checked (or as `on_prompt` changed it); when streaming,
/// `stream_options.include_usage = true`, so the stream ends with the usage the gateway
/// meters.
pub fn upstream_completion_body(req: &CompletionRequest, upstream_model: &str) -> Vec<u8> {
    let mut body = req.body.clone();
    body.insert("model".into(), Value::String(upstream_model.to_string()));
    let prompt = match req.prompts.as_slice() {
        [one] if !matches!(req.body.get("prompt"), Some(Value::Array(_))) => {
            Value::String(one.clone())
        }
        many => Value::Array(many.iter().cloned().map(Value::String).collect()),
    };
    body.insert("prompt".into(), prompt);
    if req.stream {
        let mut options = match given(&req.body, "stream_options") {
            Some(Value::Object(options)) => options.clone(),
            _ => Map::new(),
        };
        options.insert("include_usage".to_string(), Value::Bool(true));
        body.insert("stream_options".into(), Value::Object(options));
    }
    serde_json::to_vec(&body).expect("JSON maps serialize")
}

/// The `usage` object of the OpenAI API, as far as metering needs it.
#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<WireDetails>,
}

#[derive(Deserialize)]
struct WireDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(w: WireUsage) -> Usage {
        Usage {
            prompt_tokens: w.prompt_tokens.unwrap_or(0),
            completion_tokens: w.completion_tokens.unwrap_or(0),
            cached_tokens: w
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
        }
    }
}

/// A response object reduced to its `usage` (the rest is skipped without being built).
#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// The usage of a non-streamed `chat.completion` response; `None` without a `usage` object.
pub fn usage_from_chat_response(body: &[u8]) -> Option<Usage> {
    let parsed: WithUsage = serde_json::from_slice(body).ok()?;
    parsed.usage.map(Usage::from)
}

/// The usage of an embeddings response: its `prompt_tokens` (embeddings have no completion).
pub fn usage_from_embeddings_response(body: &[u8]) -> Option<Usage> {
    usage_from_chat_response(body).map(|u| Usage {
        completion_tokens: 0,
        ..u
    })
}

/// Where a `"usage": <value>` member is in a JSON text, found without parsing it.
struct UsageMember {
    /// Offset of the key's opening quote.
    key_start: usize,
    /// Offset just past the value when it is `null`; `None` for any other value.
    null_end: Option<usize>,
}

/// Finds `"usage"` used as an object key. Inside a JSON string a quote is always escaped, so
/// `"usage"` followed by a colon can only be a key.
fn find_usage_member(json: &[u8]) -> Option<UsageMember> {
    const KEY: &[u8] = b"\"usage\"";
    let mut from = 0;
    while let Some(at) = json[from..].windows(KEY.len()).position(|w| w == KEY) {
        let key_start = from + at;
        let mut i = skip_ws(json, key_start + KEY.len());
        if json.get(i) == Some(&b':') {
            i = skip_ws(json, i + 1);
            let null_end = json[i..].starts_with(b"null").then_some(i + 4);
            return Some(UsageMember {
                key_start,
                null_end,
            });
        }
        from = key_start + 1;
    }
    None
}

fn skip_ws(json: &[u8], mut i: usize) -> usize {
    while json.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// `json` without the member `[key_start, value_end)`, and the comma that separated it.
fn without_member(json: &str, key_start: usize, value_end: usize) -> (&str, &str) {
    let bytes = json.as_bytes();
    let before = bytes[..key_start].trim_ascii_end();
    if before.last() == Some(&b',') {
        // `..., "usage": null` → drop from the comma.
        (&json[..before.len() - 1], &json[value_end..])
    } else {
        // `{"usage": null, ...` → drop through the following comma.
        let after = skip_ws(bytes, value_end);
        let after = if bytes.get(after) == Some(&b',') {
            skip_ws(bytes, after + 1)
        } else {
            value_end
        };
        (&json[..key_start], &json[after..])
    }
}

/// Relays an OpenAI-format upstream's chat completion stream to an OpenAI-format client, one
/// event at a time, and meters it.
///
/// The gateway always asks the upstream for usage (`stream_options.include_usage`); OpenAI
/// then adds `"usage": null` to every chunk and sends one last chunk with `"choices": []` and
/// the usage before `data: [DONE]`. A client that did not ask for usage gets neither, so it
/// sees the stream it would have got from OpenAI directly.
#[derive(Debug, Default)]
pub struct ChatStreamRelay {
    client_wants_usage: bool,
    usage: Option<Usage>,
    saw_done: bool,
}

impl ChatStreamRelay {
    /// A relay for a client that did (`true`) or did not ask for the usage chunk.
    pub fn new(client_wants_usage: bool) -> Self {
        ChatStreamRelay {
            client_wants_usage,
            usage: None,
            saw_done: false,
        }
    }

    /// Appends to `out` what the client gets for this upstream event: its bytes unchanged;
    /// or, when the client did not ask for usage, nothing for the usage-only chunk and the
    /// chunk without its `usage` member otherwise. Captures the usage of any chunk whose
    /// `usage` is not `null` (the last one wins).
    pub fn on_event(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if event.is_done() {
            self.saw_done = true;
        }
        if !event.has_data {
            out.extend_from_slice(&event.raw);
            return;
        }
        // Cheap check first: most chunks have no usage, or `"usage":null`.
        let Some(member) = find_usage_member(event.data.as_bytes()) else {
            out.extend_from_slice(&event.raw);
            return;
        };
        if let Some(null_end) = member.null_end {
            if self.client_wants_usage {
                out.extend_from_slice(&event.raw);
            } else {
                let (head, tail) = without_member(&event.data, member.key_start, null_end);
                encode_joined(event.event.as_deref(), head, tail, out);
            }
            return;
        }
        let Ok(Value::Object(mut chunk)) = serde_json::from_str::<Value>(&event.data) else {
            out.extend_from_slice(&event.raw);
            return;
        };
        let usage = chunk
            .get("usage")
            .filter(|u| u.is_object())
            .and_then(|u| WireUsage::deserialize(u).ok());
        if let Some(usage) = usage {
            self.usage = Some(usage.into());
        }
        if self.client_wants_usage {
            out.extend_from_slice(&event.raw);
            return;
        }
        let has_choices = chunk
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(|choices| !choices.is_empty());
        if has_choices {
            // Some OpenAI-compatible servers report running usage on every chunk.
            chunk.remove("usage");
            let data = Value::Object(chunk).to_string();
            encode_event(event.event.as_deref(), &data, out);
        }
    }

    /// The usage of the stream, once a chunk carried it.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Whether the `data: [DONE]` end marker was seen (a stream cut short lacks it).
    pub fn saw_done(&self) -> bool {
        self.saw_done
    }
}

/// One event whose data is `head` followed by `tail`, without joining them first.
fn encode_joined(event: Option<&str>, head: &str, tail: &str, out: &mut Vec<u8>) {
    if head.contains(['\n', '\r']) || tail.contains(['\n', '\r']) {
        encode_event(event, &format!("{head}{tail}"), out);
        return;
    }
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(tail.as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// One `model` object, owned by the gateway.
fn model_object(name: &str, created: i64) -> Value {
    serde_json::json!({
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "credentialflow",
    })
}

/// The `GET /v1/models/{id}` body: the `model` object of `name`.
pub fn model_body(name: &str, created: i64) -> Vec<u8> {
    serde_json::to_vec(&model_object(name, created)).expect("serialize JSON value")
}

/// The `GET /v1/models` body: a `list` of `model` objects, owned by the gateway.
pub fn models_list_body(names: &[&str], created: i64) -> Vec<u8> {
    let data: Vec<Value> = names
        .iter()
        .map(|name| model_object(name, created))
        .collect();
    serde_json::to_vec(&serde_json::json!({ "object": "list", "data": data }))
        .expect("serialize JSON value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::sse::SseParser;

    fn chat(body: &str) -> Result<ChatRequest, RequestError> {
        parse_chat_request(body.as_bytes())
    }

    const HELLO: &str = r#""messages":[{"role":"user","content":"hi"}]"#;

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn chat_request_reads_model_stream_usage_wish_and_max_tokens() {
        let req = chat(&format!(
            r#"{{"model":"m",{HELLO},"stream":true,"stream_options":{{"include_usage":true}},"max_tokens":50}}"#
        ))
        .unwrap();
        assert_eq!(req.model, "m");
        assert!(req.stream);
        assert!(req.client_wants_usage);
        assert_eq!(req.max_tokens, Some(50));
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let req = chat(&format!(
            r#"{{"model":"m",{HELLO},"max_tokens":50,"max_completion_tokens":7}}"#
        ))
        .unwrap();
        assert_eq!(req.max_tokens, Some(7));
    }

    #[test]
    fn absent_or_null_options_take_their_defaults() {
        let req = chat(&format!(
            r#"{{"model":"m",{HELLO},"stream":null,"stream_options":null,"max_tokens":null}}"#
        ))
        .unwrap();
        assert!(!req.stream);
        assert!(!req.client_wants_usage);
        assert_eq!(req.max_tokens, None);
    }

    #[test]
    fn body_that_is_not_json_is_refused() {
        assert!(matches!(chat("{nope"), Err(RequestError::NotJson(_))));
    }

    #[test]
    fn body_that_is_not_an_object_is_refused() {
        assert_eq!(chat("[1]"), Err(RequestError::NotAnObject));
    }

    #[test]
    fn missing_model_is_named() {
        let err = chat(&format!("{{{HELLO}}}")).unwrap_err();
        assert_eq!(err.field(), Some("model"));
        assert_eq!(err.to_string(), "missing required parameter: 'model'");
    }

    #[test]
    fn empty_or_non_string_model_is_named() {
        for model in [r#""""#, "3"] {
            let err = chat(&format!(r#"{{"model":{model},{HELLO}}}"#)).unwrap_err();
            assert_eq!(err.field(), Some("model"), "model {model}");
            assert!(err.to_string().contains("non-empty string"));
        }
    }

    #[test]
    fn missing_messages_is_named() {
        assert_eq!(
            chat(r#"{"model":"m"}"#),
            Err(RequestError::Missing("messages"))
        );
    }

    #[test]
    fn empty_or_non_array_messages_is_named() {
        for messages in ["[]", r#""hi""#] {
            let err = chat(&format!(r#"{{"model":"m","messages":{messages}}}"#)).unwrap_err();
            assert_eq!(err.field(), Some("messages"), "messages {messages}");
        }
    }

    #[test]
    fn non_boolean_stream_is_named() {
        let err = chat(&format!(r#"{{"model":"m",{HELLO},"stream":"yes"}}"#)).unwrap_err();
        assert_eq!(err.field(), Some("stream"));
    }

    #[test]
    fn bad_stream_options_are_named() {
        let err = chat(&format!(r#"{{"model":"m",{HELLO},"stream_options":1}}"#)).unwrap_err();
        assert_eq!(err.field(), Some("stream_options"));
        let err = chat(&format!(
            r#"{{"model":"m",{HELLO},"stream_options":{{"include_usage":"y"}}}}"#
        ))
        .unwrap_err();
        assert_eq!(err.field(), Some("stream_options.include_usage"));
    }

    #[test]
    fn negative_max_tokens_is_named() {
        let err = chat(&format!(r#"{{"model":"m",{HELLO},"max_tokens":-1}}"#)).unwrap_err();
        assert_eq!(err.field(), Some("max_tokens"));
    }

    #[test]
    fn upstream_body_replaces_the_model_and_keeps_the_rest() {
        let req = chat(&format!(r#"{{"model":"m",{HELLO},"temperature":0.5}}"#)).unwrap();
        let body = json(&upstream_chat_body(&req, "gpt-4o-2024"));
        assert_eq!(
            body,
            serde_json::json!({
                "model": "gpt-4o-2024",
                "messages": [{"role": "user", "content": "hi"}],
                "temperature": 0.5
            })
        );
    }

    #[test]
    fn upstream_stream_body_asks_for_usage() {
        let req = chat(&format!(r#"{{"model":"m",{HELLO},"stream":true}}"#)).unwrap();
        let body = json(&upstream_chat_body(&req, "u"));
        assert_eq!(
            body["stream_options"],
            serde_json::json!({"include_usage": true})
        );
    }

    #[test]
    fn upstream_stream_body_keeps_other_stream_options() {
        let req = chat(&format!(
            r#"{{"model":"m",{HELLO},"stream":true,"stream_options":{{"include_usage":false,"x":1}}}}"#
        ))
        .unwrap();
        let body = json(&upstream_chat_body(&req, "u"));
        assert_eq!(
            body["stream_options"],
            serde_json::json!({"include_usage": true, "x": 1})
        );
    }

    #[test]
    fn upstream_body_without_stream_leaves_stream_options_alone() {
        let req = chat(&format!(r#"{{"model":"m",{HELLO}}}"#)).unwrap();
        let body = json(&upstream_chat_body(&req, "u"));
        assert!(body.get("stream_options").is_none());
    }

    #[test]
    fn usage_is_read_from_a_chat_completion() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"usage"}}],
            "usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,
            "prompt_tokens_details":{"cached_tokens":4}}}"#;
        assert_eq!(
            usage_from_chat_response(body),
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 5,
                cached_tokens: 4
            })
        );
    }

    #[test]
    fn chat_completion_without_usage_has_none() {
        assert_eq!(usage_from_chat_response(br#"{"id":"x"}"#), None);
        assert_eq!(usage_from_chat_response(br#"{"usage":null}"#), None);
        assert_eq!(usage_from_chat_response(b"not json"), None);
    }

    #[test]
    fn embeddings_request_needs_model_and_input() {
        let req = parse_embeddings_request(br#"{"model":"e","input":"hello"}"#).unwrap();
        assert_eq!(req.model, "e");
        assert_eq!(
            parse_embeddings_request(br#"{"model":"e"}"#),
            Err(RequestError::Missing("input"))
        );
        for input in ["\"\"", "[]", "3"] {
            let body = format!(r#"{{"model":"e","input":{input}}}"#);
            let err = parse_embeddings_request(body.as_bytes()).unwrap_err();
            assert_eq!(err.field(), Some("input"), "input {input}");
        }
        let err = parse_embeddings_request(br#"{"input":"x"}"#).unwrap_err();
        assert_eq!(err.field(), Some("model"));
    }

    #[test]
    fn upstream_embeddings_body_replaces_the_model() {
        let req = parse_embeddings_request(br#"{"model":"e","input":["a","b"]}"#).unwrap();
        let body = json(&upstream_embeddings_body(&req, "text-embedding-3-small"));
        assert_eq!(
            body,
            serde_json::json!({"model": "text-embedding-3-small", "input": ["a", "b"]})
        );
    }

    #[test]
    fn embeddings_usage_is_prompt_tokens_only() {
        let body = br#"{"object":"list","data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        assert_eq!(
            usage_from_embeddings_response(body),
            Some(Usage {
                prompt_tokens: 8,
                completion_tokens: 0,
                cached_tokens: 0
            })
        );
    }

    #[test]
    fn models_list_has_one_model_object_per_name() {
        let body = json(&models_list_body(&["a", "b"], 1_700_000_000));
        assert_eq!(
            body,
            serde_json::json!({"object": "list", "data": [
                {"id": "a", "object": "model", "created": 1_700_000_000, "owned_by": "credentialflow"},
                {"id": "b", "object": "model", "created": 1_700_000_000, "owned_by": "credentialflow"}
            ]})
        );
    }

    /// An upstream stream as OpenAI sends it with `include_usage`.
    const UPSTREAM: &[u8] = b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":3}}}\n\n\
data: [DONE]\n\n";

    fn relay(client_wants_usage: bool, stream: &[u8]) -> (ChatStreamRelay, Vec<u8>) {
        let mut parser = SseParser::new(1 << 16);
        let mut relay = ChatStreamRelay::new(client_wants_usage);
        let mut out = Vec::new();
        parser.push(stream).unwrap();
        while let Some(event) = parser.next_event() {
            relay.on_event(&event, &mut out);
        }
        (relay, out)
    }

    const UPSTREAM_USAGE: Usage = Usage {
        prompt_tokens: 9,
        completion_tokens: 2,
        cached_tokens: 3,
    };

    #[test]
    fn relay_forwards_everything_unchanged_when_the_client_asked_for_usage() {
        let (relay, out) = relay(true, UPSTREAM);
        assert_eq!(out, UPSTREAM);
        assert_eq!(relay.usage(), Some(UPSTREAM_USAGE));
        assert!(relay.saw_done());
    }

    #[test]
    fn relay_drops_the_usage_chunk_and_null_usage_when_the_client_did_not_ask() {
        let (relay, out) = relay(false, UPSTREAM);
        let expected =
            b"data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
data: [DONE]\n\n";
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8_lossy(expected)
        );
        assert_eq!(relay.usage(), Some(UPSTREAM_USAGE));
        assert!(relay.saw_done());
    }

    #[test]
    fn relay_strips_a_leading_null_usage_member() {
        let (_, out) = relay(false, b"data: {\"usage\": null, \"id\":\"c\"}\n\n");
        assert_eq!(out, b"data: {\"id\":\"c\"}\n\n");
    }

    #[test]
    fn relay_keeps_usage_of_ordinary_chunks_out_when_not_asked() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n";
        let (relay, out) = relay(false, stream);
        assert_eq!(
            out,
            b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n"
        );
        assert_eq!(relay.usage().map(|u| u.completion_tokens), Some(1));
    }

    #[test]
    fn relay_ignores_the_word_usage_inside_content() {
        let stream =
            b"data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\": 5 usage\"}}]}\n\n";
        let (relay, out) = relay(false, stream);
        assert_eq!(out, stream);
        assert_eq!(relay.usage(), None);
    }

    #[test]
    fn relay_forwards_comments_and_reports_a_stream_cut_short() {
        let stream = b": keep-alive\n\ndata: {\"choices\":[]}\n\n";
        let (relay, out) = relay(false, stream);
        assert_eq!(out, stream);
        assert!(!relay.saw_done());
        assert_eq!(relay.usage(), None);
    }
}
