//! The in-process mock provider (`kind = "mock"`): deterministic replies with no network, so
//! the gateway runs and can be tested on a fresh machine.
//!
//! Replies: the text of the last user message, echoed; when that text is `lorem N`, N words of
//! lorem ipsum (at most [`MAX_LOREM_WORDS`]).
//!
//! Tools: when the request has `tools` (and `tool_choice` is not `"none"`) and the last user
//! message names one of them (the tool's name appears in its text; the first such tool in
//! `tools` order), the reply is a call of that tool instead of text, with `finish_reason:
//! "tool_calls"`. Its arguments are a JSON object holding the `required` properties of the
//! tool's `parameters` schema, each with a plausible value for its type (the first of an
//! `enum`, `"example"` for a string, `1` for a number or integer, `true`, `[]`, and nested
//! objects filled the same way), or `{}`. Once the conversation ends with a tool's result
//! (a `tool` message), the reply is text again: `Tool result: ` and the result's text. So a
//! tool round trip runs offline, in both dialects (the Anthropic front door translates the
//! call to `tool_use`).
//!
//! Usage, the same in every dialect the mock speaks (it is computed once, in [`reply`]):
//! - prompt tokens = ceil(B / 4) + 3 × M, where B is the byte length of all messages' text
//!   (string contents, and the `text` of `text` parts) and M the number of messages;
//! - completion tokens = ceil(R / 4), R the byte length of the reply (of a tool call: its
//!   name and arguments text);
//! - no cached tokens.
//!
//! Embeddings: 8 dimensions, a unit vector derived from a hash of each input; prompt tokens =
//! ceil(bytes / 4) per text input, or the number of tokens of a token-array input.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::ai::openai::Usage;
use crate::ai::sse::encode_event;

/// Most words a `lorem N` request gets (a bound on what one request can make the mock build).
pub const MAX_LOREM_WORDS: usize = 10_000;

/// Dimensions of the mock's embeddings.
pub const EMBEDDING_DIMENSIONS: usize = 8;

/// Words per content chunk of a streamed reply.
const WORDS_PER_CHUNK: usize = 4;

/// Tokens added per message, for the role and message framing (as OpenAI's chat format does).
const TOKENS_PER_MESSAGE: u64 = 3;

const LOREM: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "ut",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "ut",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
];

/// Deepest nesting of object schemas filled in for a tool call's arguments: a bound on the
/// work one request's schema can ask for (deeper objects are `{}`).
const MAX_SCHEMA_DEPTH: usize = 8;

/// What the mock answers to one chat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockReply {
    /// The assistant's text (empty for a tool call).
    pub text: String,
    /// The tool called instead of answering with text.
    pub tool_call: Option<ToolCall>,
    /// The usage reported for it.
    pub usage: Usage,
}

/// A call of one of the request's tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// `call_` and a hash of the name and arguments: stable for the same call.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, a JSON object as text.
    pub arguments: String,
}

/// A rough token count: one token per four bytes, rounded up.
fn estimate_tokens(bytes: usize) -> u64 {
    bytes.div_ceil(4) as u64
}

/// The text of one chat message: its string content, or its text parts joined with `\n`.
fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|part| part.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// `lorem N` (any case, surrounding whitespace ignored) → N.
fn lorem_request(text: &str) -> Option<usize> {
    let mut words = text.split_whitespace();
    let (keyword, count, rest) = (words.next()?, words.next()?, words.next());
    if !keyword.eq_ignore_ascii_case("lorem") || rest.is_some() {
        return None;
    }
    count.parse().ok()
}

/// `count` words of lorem ipsum, space separated.
fn lorem(count: usize) -> String {
    let words = LOREM.iter().cycle().take(count.min(MAX_LOREM_WORDS));
    words.copied().collect::<Vec<_>>().join(" ")
}

/// The reply to a chat request (the `messages` and `tools` of an OpenAI-format body).
pub fn reply(request: &Map<String, Value>) -> MockReply {
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut prompt_bytes = 0;
    let mut last_user = None;
    let mut last_role = None;
    let mut last_text = String::new();
    for message in messages {
        let text = message_text(message);
        prompt_bytes += text.len();
        let role = message.get("role").and_then(Value::as_str);
        if role == Some("user") {
            last_user = Some(text.clone());
        }
        if role != Some("system") && role != Some("developer") {
            last_role = role;
            last_text = text;
        }
    }
    let last_user = last_user.unwrap_or_default();
    let prompt_tokens = estimate_tokens(prompt_bytes) + TOKENS_PER_MESSAGE * messages.len() as u64;
    let after_tool_result = last_role == Some("tool");
    if !after_tool_result {
        if let Some(call) = tool_call(request, &last_user) {
            let usage = Usage {
                prompt_tokens,
                completion_tokens: estimate_tokens(call.name.len() + call.arguments.len()),
                cached_tokens: 0,
            };
            return MockReply {
                text: String::new(),
                tool_call: Some(call),
                usage,
            };
        }
    }
    let text = if after_tool_result {
        format!("Tool result: {last_text}")
    } else {
        match lorem_request(&last_user) {
            Some(count) => lorem(count),
            None => last_user,
        }
    };
    let usage = Usage {
        prompt_tokens,
        completion_tokens: estimate_tokens(text.len()),
        cached_tokens: 0,
    };
    MockReply {
        text,
        tool_call: None,
        usage,
    }
}

/// The call of the first of the request's function tools whose name appears in `text`,
/// unless `tool_choice` is `"none"`.
fn tool_call(request: &Map<String, Value>, text: &str) -> Option<ToolCall> {
    if request.get("tool_choice").and_then(Value::as_str) == Some("none") {
        return None;
    }
    let tools = request.get("tools")?.as_array()?;
    let function = tools.iter().find_map(|tool| {
        let function = tool.get("function")?;
        let name = function.get("name")?.as_str()?;
        (!name.is_empty() && text.contains(name)).then_some(function)
    })?;
    let name = function.get("name")?.as_str()?.to_string();
    let arguments = example_value(function.get("parameters").unwrap_or(&Value::Null), 0);
    let arguments = match arguments {
        Value::Object(_) => arguments.to_string(),
        _ => "{}".to_string(),
    };
    let id = format!(
        "call_mock{:016x}",
        fnv1a(format!("{name}\0{arguments}").as_bytes())
    );
    Some(ToolCall {
        id,
        name,
        arguments,
    })
}

/// A plausible value for a JSON schema: the first of its `enum`, else one for its `type`;
/// an object holds its `required` properties (and is `{}` past [`MAX_SCHEMA_DEPTH`]).
fn example_value(schema: &Value, depth: usize) -> Value {
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        // `["string", "null"]`: the first type named.
        Some(Value::Array(kinds)) => kinds.first().and_then(Value::as_str).unwrap_or("object"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match kind {
        "string" => Value::from("example"),
        "integer" | "number" => Value::from(1),
        "boolean" => Value::Bool(true),
        "array" => Value::Array(Vec::new()),
        "null" => Value::Null,
        _ => {
            let mut object = Map::new();
            if depth >= MAX_SCHEMA_DEPTH {
                return Value::Object(object);
            }
            let properties = schema.get("properties");
            let required = schema.get("required").and_then(Value::as_array);
            for name in required.into_iter().flatten().filter_map(Value::as_str) {
                let property = properties.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
                object.insert(name.to_string(), example_value(property, depth + 1));
            }
            Value::Object(object)
        }
    }
}

/// The OpenAI `usage` object.
#[derive(Serialize)]
struct WireUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
}

impl From<Usage> for WireUsage {
    fn from(u: Usage) -> WireUsage {
        WireUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
            prompt_tokens_details: PromptDetails {
                cached_tokens: u.cached_tokens,
            },
        }
    }
}

/// A `chat.completion` object (OpenAI API reference, "The chat completion object").
#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    usage: WireUsage,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    /// `null` when the message is a tool call.
    content: Option<&'a str>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Value>,
}

/// `finish_reason` of `reply`.
fn finish_reason(reply: &MockReply) -> &'static str {
    match reply.tool_call {
        Some(_) => "tool_calls",
        None => "stop",
    }
}

/// The `tool_calls` of a whole message.
fn tool_calls(call: &ToolCall) -> Value {
    serde_json::json!([{
        "id": call.id,
        "type": "function",
        "function": { "name": call.name, "arguments": call.arguments },
    }])
}

/// The non-streamed response: one `chat.completion` with the reply (its text, or its tool
/// call with `finish_reason: "tool_calls"`) and usage.
pub fn chat_completion_body(model: &str, id: &str, created: i64, reply: &MockReply) -> Vec<u8> {
    let completion = Completion {
        id,
        object: "chat.completion",
        created,
        model,
        choices: [CompletionChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: reply.tool_call.is_none().then_some(reply.text.as_str()),
                refusal: None,
                tool_calls: reply.tool_call.as_ref().map(tool_calls),
            },
            logprobs: None,
            finish_reason: finish_reason(reply),
        }],
        usage: reply.usage.into(),
    };
    serde_json::to_vec(&completion).expect("serialize chat completion")
}

/// A `chat.completion.chunk` object (OpenAI API reference, "The chat completion chunk object").
#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    /// With `include_usage`, every chunk has `usage`: `null` except on the last one.
    #[serde(skip_serializing_if = "Nullable::is_omitted")]
    usage: Nullable<WireUsage>,
}

/// A member that is left out, `null`, or a value (`Option` cannot tell the first two apart).
enum Nullable<T> {
    Omitted,
    Null,
    Value(T),
}

impl<T> Nullable<T> {
    fn is_omitted(&self) -> bool {
        matches!(self, Nullable::Omitted)
    }
}

impl<T: Serialize> Serialize for Nullable<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Nullable::Value(v) => v.serialize(s),
            Nullable::Null | Nullable::Omitted => s.serialize_none(),
        }
    }
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Value>,
}

/// `text` in pieces of a few words, each keeping its trailing whitespace, so the pieces
/// concatenate back to `text`.
fn content_pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut words = 0;
    let mut in_space = false;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if in_space && !space {
            words += 1;
            if words == WORDS_PER_CHUNK {
                pieces.push(&text[start..i]);
                start = i;
                words = 0;
            }
        }
        in_space = space;
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// The streamed response as complete SSE events: the role chunk, content chunks of a few
/// words, the finish chunk (`finish_reason: "stop"`), the usage-only chunk (`choices: []`)
/// when `include_usage`, then `data: [DONE]`.
pub fn chat_completion_chunks(
    model: &str,
    id: &str,
    created: i64,
    reply: &MockReply,
    include_usage: bool,
) -> Vec<Vec<u8>> {
    let usage_member = || {
        if include_usage {
            Nullable::Null
        } else {
            Nullable::Omitted
        }
    };
    let chunk = |delta: Delta<'_>, finish_reason: Option<&'static str>| {
        let chunk = Chunk {
            id,
            object: "chat.completion.chunk",
            created,
            model,
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            usage: usage_member(),
        };
        event(&serde_json::to_string(&chunk).expect("serialize chunk"))
    };
    let pieces = content_pieces(&reply.text);
    let mut events = Vec::with_capacity(pieces.len() + 4);
    match &reply.tool_call {
        // As OpenAI streams a call: the id and name first, then the arguments.
        Some(call) => {
            events.push(chunk(
                Delta {
                    role: Some("assistant"),
                    tool_calls: Some(serde_json::json!([{
                        "index": 0,
                        "id": call.id,
                        "type": "function",
                        "function": { "name": call.name, "arguments": "" },
                    }])),
                    ..Delta::default()
                },
                None,
            ));
            events.push(chunk(
                Delta {
                    tool_calls: Some(serde_json::json!([{
                        "index": 0,
                        "function": { "arguments": call.arguments },
                    }])),
                    ..Delta::default()
                },
                None,
            ));
        }
        None => {
            events.push(chunk(
                Delta {
                    role: Some("assistant"),
                    content: Some(""),
                    ..Delta::default()
                },
                None,
            ));
            for piece in pieces {
                events.push(chunk(
                    Delta {
                        content: Some(piece),
                        ..Delta::default()
                    },
                    None,
                ));
            }
        }
    }
    events.push(chunk(Delta::default(), Some(finish_reason(reply))));
    if include_usage {
        let usage_chunk = Chunk {
            id,
            object: "chat.completion.chunk",
            created,
            model,
            choices: Vec::new(),
            usage: Nullable::Value(reply.usage.into()),
        };
        events.push(event(
            &serde_json::to_string(&usage_chunk).expect("serialize chunk"),
        ));
    }
    events.push(event("[DONE]"));
    events
}

fn event(data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
    encode_event(None, data, &mut out);
    out
}

/// FNV-1a, 64 bit: a small, stable hash (the vectors must not change between builds).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64: spreads one hash into a sequence of well-mixed values.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A unit vector of [`EMBEDDING_DIMENSIONS`] derived from `bytes` (OpenAI's are normalized too).
fn embedding(bytes: &[u8]) -> Vec<f32> {
    let mut state = fnv1a(bytes);
    let raw: Vec<f64> = (0..EMBEDDING_DIMENSIONS)
        .map(|_| (splitmix64(&mut state) >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
        .collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    raw.iter().map(|x| (x / norm) as f32).collect()
}

/// One embeddings input: its bytes to hash and its token count.
fn embedding_input(input: &Value) -> (Vec<u8>, u64) {
    match input {
        Value::String(text) => (text.as_bytes().to_vec(), estimate_tokens(text.len())),
        Value::Array(tokens) => (input.to_string().into_bytes(), tokens.len() as u64),
        other => (other.to_string().into_bytes(), 0),
    }
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// The embeddings response for `input` (a string, an array of strings, a token array or an
/// array of token arrays, as in the OpenAI API).
pub fn embeddings_body(model: &str, input: &Value) -> Vec<u8> {
    let inputs: Vec<&Value> = match input {
        // One token array is one input; an array of strings or of token arrays is many.
        Value::Array(items) if items.iter().all(Value::is_number) => vec![input],
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    let mut tokens = 0;
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let (bytes, count) = embedding_input(input);
            tokens += count;
            EmbeddingItem {
                object: "embedding",
                index,
                embedding: embedding(&bytes),
            }
        })
        .collect();
    let list = EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    };
    serde_json::to_vec(&list).expect("serialize embeddings")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::openai::{usage_from_chat_response, usage_from_embeddings_response};
    use crate::ai::sse::SseParser;
    use serde_json::json;

    fn request(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn chat(messages: Value) -> MockReply {
        reply(&request(json!({ "model": "m", "messages": messages })))
    }

    #[test]
    fn reply_echoes_the_last_user_message() {
        let reply = chat(json!([
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second"},
            {"role": "system", "content": "be brief"}
        ]));
        assert_eq!(reply.text, "second");
    }

    #[test]
    fn reply_reads_text_parts_of_array_content() {
        let reply = chat(json!([{"role": "user", "content": [
            {"type": "text", "text": "a"},
            {"type": "image_url", "image_url": {"url": "http://x"}},
            {"type": "text", "text": "b"}
        ]}]));
        assert_eq!(reply.text, "a\nb");
    }

    #[test]
    fn lorem_n_replies_with_n_words() {
        let reply = chat(json!([{"role": "user", "content": "lorem 40"}]));
        assert_eq!(reply.text.split(' ').count(), 40);
        assert!(reply.text.starts_with("lorem ipsum dolor"));
    }

    #[test]
    fn lorem_is_capped() {
        let reply = chat(json!([{"role": "user", "content": "Lorem 99999999"}]));
        assert_eq!(reply.text.split(' ').count(), MAX_LOREM_WORDS);
    }

    #[test]
    fn lorem_with_extra_words_is_echoed() {
        let reply = chat(json!([{"role": "user", "content": "lorem 4 please"}]));
        assert_eq!(reply.text, "lorem 4 please");
    }

    #[test]
    fn usage_estimates_a_quarter_token_per_byte_plus_three_per_message() {
        // 5 + 4 bytes of text → ceil(9 / 4) = 3, + 3 × 2 messages = 9; reply "abcd" → 1.
        let reply = chat(json!([
            {"role": "system", "content": "hello"},
            {"role": "user", "content": "abcd"}
        ]));
        assert_eq!(
            reply.usage,
            Usage {
                prompt_tokens: 9,
                completion_tokens: 1,
                cached_tokens: 0
            }
        );
    }

    #[test]
    fn no_user_message_gives_an_empty_reply() {
        let reply = reply(&request(json!({"model": "m"})));
        assert_eq!(reply.text, "");
        assert_eq!(reply.usage, Usage::default());
    }

    fn sample() -> MockReply {
        chat(json!([{"role": "user", "content": "one two three four five six"}]))
    }

    #[test]
    fn completion_body_is_a_chat_completion_with_the_reply_and_its_usage() {
        let reply = sample();
        let body = chat_completion_body("m", "chatcmpl-1", 1_700_000_000, &reply);
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["object"], "chat.completion");
        assert_eq!(value["id"], "chatcmpl-1");
        assert_eq!(value["model"], "m");
        assert_eq!(value["created"], 1_700_000_000);
        assert_eq!(value["choices"][0]["message"]["role"], "assistant");
        assert_eq!(value["choices"][0]["message"]["content"], reply.text);
        assert_eq!(value["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            value["usage"]["total_tokens"],
            reply.usage.prompt_tokens + reply.usage.completion_tokens
        );
        assert_eq!(usage_from_chat_response(&body), Some(reply.usage));
    }

    fn parse_chunks(events: &[Vec<u8>]) -> Vec<String> {
        let mut parser = SseParser::new(1 << 16);
        let mut datas = Vec::new();
        for event in events {
            parser.push(event).unwrap();
            let parsed = parser.next_event().expect("each chunk is one whole event");
            assert!(parser.next_event().is_none());
            datas.push(parsed.data);
        }
        datas
    }

    #[test]
    fn chunks_are_role_content_finish_then_done() {
        let reply = sample();
        let events = chat_completion_chunks("m", "c1", 5, &reply, false);
        let datas = parse_chunks(&events);
        assert_eq!(datas.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = datas[..datas.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks[1..chunks.len() - 1]
            .iter()
            .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(text, reply.text);
        assert_eq!(chunks.len(), 2 + 2, "six words in chunks of four");
        let finish = chunks.last().unwrap();
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"
            && c["id"] == "c1"
            && c.get("usage").is_none()));
    }

    #[test]
    fn chunks_with_include_usage_end_with_the_usage_chunk() {
        let reply = sample();
        let events = chat_completion_chunks("m", "c1", 5, &reply, true);
        let datas = parse_chunks(&events);
        let usage_chunk: Value = serde_json::from_str(&datas[datas.len() - 2]).unwrap();
        assert_eq!(usage_chunk["choices"], json!([]));
        assert_eq!(
            usage_from_chat_response(datas[datas.len() - 2].as_bytes()),
            Some(reply.usage)
        );
        let first: Value = serde_json::from_str(&datas[0]).unwrap();
        assert_eq!(first["usage"], Value::Null);
        assert!(
            first.get("usage").is_some(),
            "other chunks carry usage: null"
        );
    }

    fn weather_tools() -> Value {
        json!([{ "type": "function", "function": {
            "name": "get_weather",
            "parameters": { "type": "object",
                "properties": {
                    "city": { "type": "string" },
                    "unit": { "type": "string", "enum": ["celsius", "fahrenheit"] },
                    "days": { "type": "integer" },
                    "where": { "type": "object", "properties": { "lat": { "type": "number" } },
                               "required": ["lat"] },
                    "optional": { "type": "string" }
                },
                "required": ["city", "unit", "days", "where"] } } }])
    }

    #[test]
    fn a_message_naming_a_tool_is_answered_with_a_call_of_it() {
        let reply = reply(&request(json!({ "model": "m", "tools": weather_tools(),
            "messages": [{ "role": "user", "content": "use get_weather for Paris" }] })));
        let call = reply.tool_call.clone().expect("a tool call");
        assert_eq!(call.name, "get_weather");
        let arguments: Value = serde_json::from_str(&call.arguments).unwrap();
        assert_eq!(
            arguments,
            json!({ "city": "example", "unit": "celsius", "days": 1, "where": { "lat": 1 } })
        );
        assert!(call.id.starts_with("call_mock"));
        assert_eq!(
            reply.usage.completion_tokens,
            estimate_tokens(call.name.len() + call.arguments.len())
        );
        let body = chat_completion_body("m", "c", 1, &reply);
        let value: Value = serde_json::from_slice(&body).unwrap();
        let choice = &value["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(
            choice["message"]["tool_calls"][0]["function"]["name"],
            "get_weather"
        );
        assert_eq!(choice["message"]["tool_calls"][0]["id"], call.id.as_str());
    }

    #[test]
    fn no_call_without_the_name_with_tool_choice_none_or_after_a_tool_result() {
        let ask = |extra: Value, messages: Value| {
            let mut body = json!({ "model": "m", "tools": weather_tools(), "messages": messages });
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            reply(&request(body))
        };
        let plain = ask(
            json!({}),
            json!([{ "role": "user", "content": "the weather?" }]),
        );
        assert_eq!(
            (plain.tool_call, plain.text.as_str()),
            (None, "the weather?")
        );
        let none = ask(
            json!({ "tool_choice": "none" }),
            json!([{ "role": "user", "content": "get_weather" }]),
        );
        assert_eq!(none.tool_call, None);
        let after = ask(
            json!({}),
            json!([
                { "role": "user", "content": "get_weather please" },
                { "role": "assistant", "content": null, "tool_calls": [] },
                { "role": "tool", "tool_call_id": "x", "content": "Sunny" }
            ]),
        );
        assert_eq!(
            (after.tool_call, after.text.as_str()),
            (None, "Tool result: Sunny")
        );
    }

    #[test]
    fn a_schema_nested_past_the_bound_is_filled_with_an_empty_object() {
        let mut schema = json!({ "type": "object" });
        for _ in 0..(MAX_SCHEMA_DEPTH + 4) {
            schema = json!({ "type": "object", "properties": { "a": schema }, "required": ["a"] });
        }
        let mut value = &example_value(&schema, 0);
        let mut depth = 0;
        while let Some(inner) = value.get("a") {
            value = inner;
            depth += 1;
        }
        assert_eq!(depth, MAX_SCHEMA_DEPTH);
        assert_eq!(*value, json!({}));
    }

    #[test]
    fn a_streamed_tool_call_is_the_name_then_the_arguments_then_tool_calls() {
        let reply = reply(&request(json!({ "model": "m", "tools": weather_tools(),
            "messages": [{ "role": "user", "content": "get_weather" }] })));
        let datas = parse_chunks(&chat_completion_chunks("m", "c", 1, &reply, false));
        let chunks: Vec<Value> = datas[..datas.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let first = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(first["function"]["name"], "get_weather");
        assert_eq!(first["function"]["arguments"], "");
        let arguments = &chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"];
        assert_eq!(
            arguments.as_str(),
            Some(reply.tool_call.unwrap().arguments.as_str())
        );
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors_with_usage() {
        let body = embeddings_body("e", &json!(["hello", "world!"]));
        assert_eq!(body, embeddings_body("e", &json!(["hello", "world!"])));
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["object"], "list");
        assert_eq!(value["model"], "e");
        let data = value["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        let first: Vec<f64> = data[0]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(first.len(), EMBEDDING_DIMENSIONS);
        let norm: f64 = first.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "norm {norm}");
        assert_ne!(data[0]["embedding"], data[1]["embedding"]);
        assert_eq!(data[1]["index"], 1);
        // ceil(5 / 4) + ceil(6 / 4) = 4.
        assert_eq!(
            usage_from_embeddings_response(&body).map(|u| u.prompt_tokens),
            Some(4)
        );
    }

    #[test]
    fn one_token_array_is_one_input_counted_in_tokens() {
        let body = embeddings_body("e", &json!([1, 2, 3]));
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["data"].as_array().unwrap().len(), 1);
        assert_eq!(value["usage"]["prompt_tokens"], 3);
    }
}
