//! Request bodies: the Anthropic Messages request (`POST /v1/messages`) checked and turned
//! into the canonical OpenAI chat request, and an OpenAI chat request turned into an
//! Anthropic Messages request for a `kind = "anthropic"` provider.

use serde_json::{json, Map, Value};

use crate::ai::openai::RequestError;

/// A checked `POST /v1/messages` body.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagesRequest {
    /// The whole body as sent by the client.
    pub body: Map<String, Value>,
    /// The client-facing model name.
    pub model: String,
    /// `stream: true`.
    pub stream: bool,
    /// `max_tokens`, which the Messages API requires.
    pub max_tokens: u64,
}

/// A present, non-null field.
fn given<'a>(body: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    body.get(field).filter(|v| !v.is_null())
}

fn invalid(field: &'static str, expected: &'static str) -> RequestError {
    RequestError::Invalid { field, expected }
}

/// Checks a Messages body: a JSON object with `model` a non-empty string, `messages` a
/// non-empty array, `max_tokens` an integer >= 1 (required by the Messages API) and `stream`
/// a boolean when present. The messages themselves are checked by [`request_to_openai`].
pub fn parse_messages_request(body: &[u8]) -> Result<MessagesRequest, RequestError> {
    let body = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(RequestError::NotAnObject),
        Err(e) => return Err(RequestError::NotJson(e.to_string())),
    };
    let model = match given(&body, "model") {
        None => return Err(RequestError::Missing("model")),
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        Some(_) => return Err(invalid("model", "a non-empty string")),
    };
    match given(&body, "messages") {
        None => return Err(RequestError::Missing("messages")),
        Some(Value::Array(messages)) if !messages.is_empty() => {}
        Some(_) => return Err(invalid("messages", "a non-empty array")),
    }
    let max_tokens = match given(&body, "max_tokens") {
        None => return Err(RequestError::Missing("max_tokens")),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            _ => return Err(invalid("max_tokens", "an integer >= 1")),
        },
    };
    let stream = match given(&body, "stream") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream", "a boolean")),
    };
    Ok(MessagesRequest {
        body,
        model,
        stream,
        max_tokens,
    })
}

/// Checks a `POST /v1/messages/count_tokens` body: a Messages body without `max_tokens` or
/// `stream` (the API takes `model`, `messages`, `system`, `tools`, `tool_choice`, `thinking`).
/// The messages are checked as a Messages request's are (by [`request_to_openai`]).
pub fn parse_count_tokens_request(body: &[u8]) -> Result<MessagesRequest, RequestError> {
    let body = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(RequestError::NotAnObject),
        Err(e) => return Err(RequestError::NotJson(e.to_string())),
    };
    let model = match given(&body, "model") {
        None => return Err(RequestError::Missing("model")),
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        Some(_) => return Err(invalid("model", "a non-empty string")),
    };
    match given(&body, "messages") {
        None => return Err(RequestError::Missing("messages")),
        Some(Value::Array(messages)) if !messages.is_empty() => {}
        Some(_) => return Err(invalid("messages", "a non-empty array")),
    }
    let request = MessagesRequest {
        body,
        model,
        stream: false,
        // Nothing is generated; the translation below only checks the messages.
        max_tokens: 1,
    };
    request_to_openai(&request)?;
    Ok(request)
}

// ---------------------------------------------------------------------------------------
// Anthropic → OpenAI
// ---------------------------------------------------------------------------------------

/// Anthropic request → OpenAI chat request body (the canonical form), `model` kept as the
/// client's name. Mapped: `system` (string or text blocks, joined with `\n`) → a leading
/// `system` message; text and image blocks → text and `image_url` parts (base64 sources as
/// `data:` URLs); `tool_use` blocks → `tool_calls`; `tool_result` blocks → `tool` messages
/// (placed first, as OpenAI requires them right after the assistant's calls); `max_tokens`
/// → `max_completion_tokens`; `temperature`, `top_p`; `stop_sequences` → `stop`;
/// `metadata.user_id` → `user`; `tools`, `tool_choice` (`disable_parallel_tool_use` →
/// `parallel_tool_calls: false`); `stream` (with `stream_options.include_usage`, so the
/// usage needed for `message_delta` arrives). Dropped: `top_k`, `thinking`, `service_tier`,
/// `cache_control`, `is_error`, thinking blocks.
pub fn request_to_openai(req: &MessagesRequest) -> Result<Map<String, Value>, RequestError> {
    let body = &req.body;
    let mut out = Map::new();
    out.insert("model".into(), Value::String(req.model.clone()));

    let mut messages = Vec::new();
    if let Some(system) = given(body, "system") {
        let text = match system {
            Value::String(text) => text.clone(),
            Value::Array(blocks) => text_of_blocks(blocks, "\n")
                .ok_or(invalid("system", "a string or an array of text blocks"))?,
            _ => return Err(invalid("system", "a string or an array of text blocks")),
        };
        messages.push(json!({"role": "system", "content": text}));
    }
    let source = given(body, "messages").and_then(Value::as_array);
    for message in source.into_iter().flatten() {
        message_to_openai(message, &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_completion_tokens".into(), req.max_tokens.into());

    for field in ["temperature", "top_p"] {
        if let Some(value) = given(body, field) {
            out.insert(field.into(), value.clone());
        }
    }
    if let Some(stops) = given(body, "stop_sequences") {
        if !stops
            .as_array()
            .is_some_and(|s| s.iter().all(Value::is_string))
        {
            return Err(invalid("stop_sequences", "an array of strings"));
        }
        out.insert("stop".into(), stops.clone());
    }
    if let Some(user) = given(body, "metadata").and_then(|m| m.get("user_id")) {
        if let Value::String(user) = user {
            out.insert("user".into(), Value::String(user.clone()));
        } else if !user.is_null() {
            return Err(invalid("metadata.user_id", "a string"));
        }
    }
    if req.stream {
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(tools) = given(body, "tools") {
        let tools = tools
            .as_array()
            .ok_or(invalid("tools", "an array of tools"))?;
        let tools: Result<Vec<Value>, _> = tools.iter().map(tool_to_openai).collect();
        out.insert("tools".into(), Value::Array(tools?));
    }
    if let Some(choice) = given(body, "tool_choice") {
        let (choice, parallel) = tool_choice_to_openai(choice)?;
        out.insert("tool_choice".into(), choice);
        if !parallel {
            out.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    Ok(out)
}

/// The `text` of every text block, joined with `separator`; `None` when a block is not a
/// text block. Other block fields (`cache_control`, `citations`) are dropped.
fn text_of_blocks(blocks: &[Value], separator: &str) -> Option<String> {
    let texts: Option<Vec<&str>> = blocks
        .iter()
        .map(|b| match b.get("type").and_then(Value::as_str) {
            Some("text") => b.get("text").and_then(Value::as_str),
            _ => None,
        })
        .collect();
    Some(texts?.join(separator))
}

const CONTENT: &str = "a string or an array of content blocks";

/// Appends the OpenAI messages for one Anthropic message.
fn message_to_openai(message: &Value, out: &mut Vec<Value>) -> Result<(), RequestError> {
    let role = message.get("role").and_then(Value::as_str);
    let content = message.get("content").filter(|c| !c.is_null());
    let Some(content) = content else {
        return Err(RequestError::Missing("messages.content"));
    };
    match (role, content) {
        (Some(role @ ("user" | "assistant")), Value::String(text)) => {
            out.push(json!({"role": role, "content": text}));
            Ok(())
        }
        (Some("user"), Value::Array(blocks)) => user_blocks_to_openai(blocks, out),
        (Some("assistant"), Value::Array(blocks)) => assistant_blocks_to_openai(blocks, out),
        (Some("user" | "assistant"), _) => Err(invalid("messages.content", CONTENT)),
        _ => Err(invalid("messages.role", "\"user\" or \"assistant\"")),
    }
}

fn block_type(block: &Value) -> Option<&str> {
    block.get("type").and_then(Value::as_str)
}

/// A user turn: its `tool_result` blocks become `tool` messages, first (OpenAI wants them
/// right after the assistant message that made the calls; Anthropic puts them first too);
/// the remaining blocks become one user message of content parts.
fn user_blocks_to_openai(blocks: &[Value], out: &mut Vec<Value>) -> Result<(), RequestError> {
    let mut parts = Vec::new();
    for block in blocks {
        match block_type(block) {
            Some("tool_result") => out.push(tool_result_to_openai(block)?),
            Some("text") => parts.push(text_part(block)?),
            Some("image") => parts.push(image_to_openai(block)?),
            _ => {
                return Err(invalid(
                    "messages.content",
                    "text, image or tool_result blocks in a user message",
                ))
            }
        }
    }
    if !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

fn text_part(block: &Value) -> Result<Value, RequestError> {
    let text = block.get("text").and_then(Value::as_str);
    let text = text.ok_or(invalid("messages.content.text", "a string"))?;
    Ok(json!({"type": "text", "text": text}))
}

/// Vision: a `base64` source becomes a `data:<media_type>;base64,<data>` URL, a `url`
/// source the URL itself (OpenAI's `image_url` part takes both).
fn image_to_openai(block: &Value) -> Result<Value, RequestError> {
    const EXPECTED: &str = "a base64 source (media_type, data) or a url source";
    let source = block
        .get("source")
        .ok_or(invalid("messages.content.source", EXPECTED))?;
    let field = |name: &str| source.get(name).and_then(Value::as_str);
    let url = match (
        field("type"),
        field("media_type"),
        field("data"),
        field("url"),
    ) {
        (Some("base64"), Some(media_type), Some(data), _) => {
            format!("data:{media_type};base64,{data}")
        }
        (Some("url"), _, _, Some(url)) => url.to_string(),
        _ => return Err(invalid("messages.content.source", EXPECTED)),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A `tool_result` block → a `tool` message. Its content (a string or text blocks) becomes
/// a string; `is_error` has no OpenAI counterpart and is dropped.
fn tool_result_to_openai(block: &Value) -> Result<Value, RequestError> {
    let id = block.get("tool_use_id").and_then(Value::as_str);
    let id = id.ok_or(invalid("messages.content.tool_use_id", "a string"))?;
    let content = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => text_of_blocks(blocks, "\n").ok_or(invalid(
            "messages.content.content",
            "a string or text blocks (images in tool results are not supported)",
        ))?,
        Some(_) => {
            return Err(invalid(
                "messages.content.content",
                "a string or text blocks",
            ))
        }
    };
    Ok(json!({"role": "tool", "tool_call_id": id, "content": content}))
}

/// An assistant turn: text blocks joined into `content`, `tool_use` blocks into
/// `tool_calls` (the input object serialized as the `arguments` string). Thinking blocks
/// have no OpenAI counterpart and are dropped.
fn assistant_blocks_to_openai(blocks: &[Value], out: &mut Vec<Value>) -> Result<(), RequestError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        match block_type(block) {
            Some("text") => {
                let part = text_part(block)?;
                text.push_str(part["text"].as_str().unwrap_or_default());
            }
            Some("tool_use") => {
                let id = block.get("id").and_then(Value::as_str);
                let name = block.get("name").and_then(Value::as_str);
                let (Some(id), Some(name)) = (id, name) else {
                    return Err(invalid(
                        "messages.content",
                        "tool_use blocks with id and name",
                    ));
                };
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            Some("thinking" | "redacted_thinking") => {}
            _ => {
                return Err(invalid(
                    "messages.content",
                    "text or tool_use blocks in an assistant message",
                ))
            }
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    let content = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    };
    message.insert("content".into(), content);
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    out.push(Value::Object(message));
    Ok(())
}

/// `{name, description, input_schema}` → `{type: function, function: {name, description,
/// parameters}}`. Anthropic's server tools (typed, e.g. `web_search_20250305`) have no
/// OpenAI counterpart.
fn tool_to_openai(tool: &Value) -> Result<Value, RequestError> {
    const EXPECTED: &str = "custom tools with name and input_schema";
    if !matches!(block_type(tool), None | Some("custom")) {
        return Err(invalid("tools", EXPECTED));
    }
    let name = tool.get("name").and_then(Value::as_str);
    let schema = tool.get("input_schema").filter(|s| s.is_object());
    let (Some(name), Some(schema)) = (name, schema) else {
        return Err(invalid("tools", EXPECTED));
    };
    let mut function = Map::new();
    function.insert("name".into(), name.into());
    if let Some(description) = tool.get("description").filter(|d| d.is_string()) {
        function.insert("description".into(), description.clone());
    }
    function.insert("parameters".into(), schema.clone());
    Ok(json!({"type": "function", "function": function}))
}

/// `auto`/`any`/`tool{name}`/`none` → `auto`/`required`/`{type: function, function:
/// {name}}`/`none`, and whether parallel tool calls stay allowed.
fn tool_choice_to_openai(choice: &Value) -> Result<(Value, bool), RequestError> {
    const EXPECTED: &str = "an object of type auto, any, tool (with name) or none";
    let parallel = choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        != Some(true);
    let openai = match block_type(choice) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice.get("name").and_then(Value::as_str);
            let name = name.ok_or(invalid("tool_choice", EXPECTED))?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => return Err(invalid("tool_choice", EXPECTED)),
    };
    Ok((openai, parallel))
}

// ---------------------------------------------------------------------------------------
// OpenAI → Anthropic
// ---------------------------------------------------------------------------------------

/// One Anthropic turn being built; consecutive turns of one role are merged, since the
/// Messages API wants user and assistant turns to alternate.
struct Turn {
    role: &'static str,
    content: TurnContent,
}

enum TurnContent {
    /// A plain string, kept as such while the turn is not merged with another.
    Text(String),
    Blocks(Vec<Value>),
}

impl TurnContent {
    fn into_blocks(self) -> Vec<Value> {
        match self {
            TurnContent::Text(text) if text.is_empty() => Vec::new(),
            TurnContent::Text(text) => vec![json!({"type": "text", "text": text})],
            TurnContent::Blocks(blocks) => blocks,
        }
    }

    fn into_value(self) -> Value {
        match self {
            TurnContent::Text(text) => Value::String(text),
            TurnContent::Blocks(blocks) => Value::Array(blocks),
        }
    }
}

fn push_turn(turns: &mut Vec<Turn>, role: &'static str, content: TurnContent) {
    match turns.last_mut() {
        Some(last) if last.role == role => {
            let previous = std::mem::replace(&mut last.content, TurnContent::Blocks(Vec::new()));
            let mut blocks = previous.into_blocks();
            blocks.extend(content.into_blocks());
            last.content = TurnContent::Blocks(blocks);
        }
        _ => turns.push(Turn { role, content }),
    }
}

/// OpenAI chat request (canonical) → Anthropic Messages request body, with `model` =
/// `upstream_model` and `max_tokens` = the request's `max_completion_tokens`, else its
/// `max_tokens`, else `default_max_tokens` (the Messages API requires one).
///
/// Mapped: `system`/`developer` messages → top-level `system` (a string for one string
/// message, else text blocks); text and `image_url` parts → text and image blocks (`data:`
/// URLs as base64 sources); assistant `tool_calls` → `tool_use` blocks (arguments parsed
/// into the input object); `tool` messages → `tool_result` blocks in a user turn;
/// consecutive turns of one role merged; `stop` → `stop_sequences`; `user` →
/// `metadata.user_id`; `temperature` (clamped to 0..=1), `top_p`, `stream`; `tools`;
/// `tool_choice` and `parallel_tool_calls: false` → `disable_parallel_tool_use`.
/// Left out: `response_format` (no Anthropic field), `n`, `seed`, penalties, `logprobs`,
/// `reasoning_effort`, `stream_options` (Anthropic streams always carry usage).
pub fn request_from_openai(
    req: &Map<String, Value>,
    upstream_model: &str,
    default_max_tokens: u64,
) -> Result<Vec<u8>, RequestError> {
    let mut out = body_from_openai(req, default_max_tokens)?;
    out.insert("model".into(), upstream_model.into());
    Ok(serde_json::to_vec(&Value::Object(out)).expect("serialize JSON value"))
}

/// The Messages body of [`request_from_openai`] without `model`, for APIs that name the
/// model in the path and take the body as a map to add their own members (Anthropic on
/// Vertex AI).
pub fn body_from_openai(
    req: &Map<String, Value>,
    default_max_tokens: u64,
) -> Result<Map<String, Value>, RequestError> {
    let mut out = Map::new();
    let max_tokens = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|field| given(req, field).and_then(Value::as_u64))
        .unwrap_or(default_max_tokens);
    out.insert("max_tokens".into(), max_tokens.into());

    let messages = given(req, "messages").and_then(Value::as_array);
    let messages = messages.ok_or(RequestError::Missing("messages"))?;
    let mut system = Vec::new();
    let mut turns = Vec::new();
    for message in messages {
        message_from_openai(message, &mut system, &mut turns)?;
    }
    match system.as_slice() {
        [] => {}
        [TurnContent::Text(text)] => {
            out.insert("system".into(), Value::String(text.clone()));
        }
        _ => {
            let blocks: Vec<Value> = system
                .into_iter()
                .flat_map(TurnContent::into_blocks)
                .collect();
            out.insert("system".into(), Value::Array(blocks));
        }
    }
    let turns: Vec<Value> = turns
        .into_iter()
        .map(|turn| json!({"role": turn.role, "content": turn.content.into_value()}))
        .collect();
    out.insert("messages".into(), Value::Array(turns));

    if let Some(temperature) = given(req, "temperature") {
        let t = temperature
            .as_f64()
            .ok_or(invalid("temperature", "a number"))?;
        // OpenAI accepts 0..=2, Anthropic 0..=1 ("Messages", temperature): clamp rather
        // than have the provider refuse the request.
        let t = t.clamp(0.0, 1.0);
        out.insert("temperature".into(), json!(t));
    }
    if let Some(top_p) = given(req, "top_p") {
        out.insert("top_p".into(), top_p.clone());
    }
    match given(req, "stop") {
        None => {}
        Some(Value::String(stop)) => {
            out.insert("stop_sequences".into(), json!([stop]));
        }
        Some(stops @ Value::Array(items)) if items.iter().all(Value::is_string) => {
            out.insert("stop_sequences".into(), stops.clone());
        }
        Some(_) => return Err(invalid("stop", "a string or an array of strings")),
    }
    if let Some(user) = given(req, "user") {
        let user = user.as_str().ok_or(invalid("user", "a string"))?;
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if given(req, "stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), Value::Bool(true));
    }
    if let Some(tools) = given(req, "tools") {
        let tools = tools
            .as_array()
            .ok_or(invalid("tools", "an array of tools"))?;
        let tools: Result<Vec<Value>, _> = tools.iter().map(tool_from_openai).collect();
        out.insert("tools".into(), Value::Array(tools?));
    }
    let no_parallel = given(req, "parallel_tool_calls").and_then(Value::as_bool) == Some(false);
    let choice = match given(req, "tool_choice") {
        Some(choice) => Some(tool_choice_from_openai(choice)?),
        None if no_parallel && given(req, "tools").is_some() => Some(json!({"type": "auto"})),
        None => None,
    };
    if let Some(mut choice) = choice {
        if no_parallel && choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = Value::Bool(true);
        }
        out.insert("tool_choice".into(), choice);
    }
    Ok(out)
}

/// Adds one OpenAI message to the system prompt or the turns.
fn message_from_openai(
    message: &Value,
    system: &mut Vec<TurnContent>,
    turns: &mut Vec<Turn>,
) -> Result<(), RequestError> {
    let role = message.get("role").and_then(Value::as_str);
    let content = message.get("content").filter(|c| !c.is_null());
    match role {
        Some("system" | "developer") => {
            let content = match content {
                Some(Value::String(text)) => TurnContent::Text(text.clone()),
                Some(Value::Array(parts)) => TurnContent::Blocks(parts_from_openai(parts, false)?),
                _ => return Err(invalid("messages.content", "a string or text parts")),
            };
            system.push(content);
        }
        Some("user") => {
            let content = match content {
                Some(Value::String(text)) => TurnContent::Text(text.clone()),
                Some(Value::Array(parts)) => TurnContent::Blocks(parts_from_openai(parts, true)?),
                _ => return Err(invalid("messages.content", "a string or content parts")),
            };
            push_turn(turns, "user", content);
        }
        Some("assistant") => {
            let mut blocks = match content {
                None => Vec::new(),
                // Anthropic refuses empty text blocks.
                Some(Value::String(text)) if text.is_empty() => Vec::new(),
                Some(Value::String(text)) => vec![json!({"type": "text", "text": text})],
                Some(Value::Array(parts)) => parts_from_openai(parts, false)?,
                Some(_) => return Err(invalid("messages.content", "a string or text parts")),
            };
            let calls = message.get("tool_calls").and_then(Value::as_array);
            for call in calls.into_iter().flatten() {
                blocks.push(tool_call_from_openai(call)?);
            }
            if blocks.is_empty() {
                return Ok(());
            }
            let content = match blocks.as_slice() {
                [only] if only["type"] == "text" && message.get("tool_calls").is_none() => {
                    TurnContent::Text(only["text"].as_str().unwrap_or_default().to_string())
                }
                _ => TurnContent::Blocks(blocks),
            };
            push_turn(turns, "assistant", content);
        }
        Some("tool") => {
            let id = message.get("tool_call_id").and_then(Value::as_str);
            let id = id.ok_or(RequestError::Missing("messages.tool_call_id"))?;
            let text = match content {
                None => String::new(),
                Some(Value::String(text)) => text.clone(),
                Some(Value::Array(parts)) => text_of_parts(parts)?,
                Some(_) => return Err(invalid("messages.content", "a string or text parts")),
            };
            let block = json!({"type": "tool_result", "tool_use_id": id, "content": text});
            push_turn(turns, "user", TurnContent::Blocks(vec![block]));
        }
        _ => {
            return Err(invalid(
                "messages.role",
                "system, developer, user, assistant or tool",
            ))
        }
    }
    Ok(())
}

/// The text of OpenAI text parts, concatenated.
fn text_of_parts(parts: &[Value]) -> Result<String, RequestError> {
    let mut text = String::new();
    for part in parts {
        match (block_type(part), part.get("text").and_then(Value::as_str)) {
            (Some("text"), Some(t)) => text.push_str(t),
            _ => return Err(invalid("messages.content", "text parts")),
        }
    }
    Ok(text)
}

/// OpenAI content parts → Anthropic blocks: text (empty ones left out, Anthropic refuses
/// them), refusal (as text), and, where `images` allows, `image_url`.
fn parts_from_openai(parts: &[Value], images: bool) -> Result<Vec<Value>, RequestError> {
    let mut blocks = Vec::with_capacity(parts.len());
    for part in parts {
        match block_type(part) {
            Some(kind @ ("text" | "refusal")) => {
                let text = part.get(kind).and_then(Value::as_str);
                let text = text.ok_or(invalid("messages.content", "text parts with text"))?;
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
            }
            Some("image_url") if images => blocks.push(image_from_openai(part)?),
            _ => {
                return Err(invalid(
                    "messages.content",
                    "text parts, and image_url parts in user messages",
                ))
            }
        }
    }
    Ok(blocks)
}

/// An `image_url` part → an image block: a `data:<media type>;base64,<data>` URL becomes a
/// base64 source, any other URL a url source (Anthropic "Vision"). `detail` is dropped.
fn image_from_openai(part: &Value) -> Result<Value, RequestError> {
    let url = part
        .get("image_url")
        .and_then(|i| i.get("url"))
        .and_then(Value::as_str);
    let url = url.ok_or(invalid("messages.content.image_url.url", "a string"))?;
    let Some(data_url) = url.strip_prefix("data:") else {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    };
    let (media_type, data) = data_url
        .split_once(',')
        .and_then(|(header, data)| Some((header.strip_suffix(";base64")?, data)))
        .ok_or(invalid(
            "messages.content.image_url.url",
            "an http(s) URL or a base64 data: URL",
        ))?;
    Ok(json!({
        "type": "image",
        "source": {"type": "base64", "media_type": media_type, "data": data},
    }))
}

/// An assistant `tool_calls` entry → a `tool_use` block; `arguments` must be a JSON object
/// (Anthropic's `input` is one).
fn tool_call_from_openai(call: &Value) -> Result<Value, RequestError> {
    let id = call.get("id").and_then(Value::as_str);
    let function = call.get("function");
    let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
    let (Some(id), Some(name)) = (id, name) else {
        return Err(invalid(
            "messages.tool_calls",
            "calls with id and function.name",
        ));
    };
    let arguments = function
        .and_then(|f| f.get("arguments"))
        .and_then(Value::as_str);
    let input = match arguments.map(str::trim) {
        None | Some("") => json!({}),
        Some(arguments) => match serde_json::from_str::<Value>(arguments) {
            Ok(input @ Value::Object(_)) => input,
            _ => {
                return Err(invalid(
                    "messages.tool_calls.function.arguments",
                    "a JSON object in a string",
                ))
            }
        },
    };
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

/// `{type: function, function: {name, description, parameters}}` → `{name, description,
/// input_schema}` (an empty object schema when `parameters` is absent: Anthropic requires
/// one).
fn tool_from_openai(tool: &Value) -> Result<Value, RequestError> {
    let function = tool
        .get("function")
        .filter(|_| block_type(tool) == Some("function"));
    let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
    let (Some(function), Some(name)) = (function, name) else {
        return Err(invalid("tools", "function tools with a name"));
    };
    let mut out = Map::new();
    out.insert("name".into(), name.into());
    if let Some(description) = function.get("description").filter(|d| d.is_string()) {
        out.insert("description".into(), description.clone());
    }
    let schema = function
        .get("parameters")
        .filter(|p| p.is_object())
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    out.insert("input_schema".into(), schema);
    Ok(Value::Object(out))
}

/// `auto`/`required`/`none`/`{type: function, function: {name}}` → Anthropic's
/// `auto`/`any`/`none`/`tool{name}`.
fn tool_choice_from_openai(choice: &Value) -> Result<Value, RequestError> {
    const EXPECTED: &str = "auto, required, none or a function choice";
    Ok(match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => json!({"type": "none"}),
            _ => return Err(invalid("tool_choice", EXPECTED)),
        },
        Value::Object(_) => {
            let name = choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str);
            let name = name.ok_or(invalid("tool_choice", EXPECTED))?;
            json!({"type": "tool", "name": name})
        }
        _ => return Err(invalid("tool_choice", EXPECTED)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn messages_request(value: Value) -> MessagesRequest {
        parse_messages_request(&serde_json::to_vec(&value).unwrap()).unwrap()
    }

    /// Anthropic body → canonical OpenAI body.
    fn to_openai(value: Value) -> Value {
        Value::Object(request_to_openai(&messages_request(value)).unwrap())
    }

    /// OpenAI body → Anthropic body, upstream model "claude-up", default max_tokens 4096.
    fn from_openai(value: Value) -> Value {
        let bytes = request_from_openai(&object(value), "claude-up", 4096).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn from_openai_err(value: Value) -> RequestError {
        request_from_openai(&object(value), "claude-up", 4096).unwrap_err()
    }

    fn anthropic(messages: Value) -> Value {
        json!({"model": "claude", "max_tokens": 100, "messages": messages})
    }

    fn openai(messages: Value) -> Value {
        json!({"model": "gpt", "messages": messages})
    }

    #[test]
    fn messages_request_reads_model_stream_and_max_tokens() {
        let req = messages_request(json!({
            "model": "claude", "max_tokens": 1024, "stream": true,
            "messages": [{"role": "user", "content": "Hello"}]
        }));
        assert_eq!(req.model, "claude");
        assert!(req.stream);
        assert_eq!(req.max_tokens, 1024);
    }

    #[test]
    fn messages_request_requires_model_messages_and_max_tokens() {
        let parse = |v: Value| parse_messages_request(v.to_string().as_bytes());
        let hello = json!([{"role": "user", "content": "hi"}]);
        assert_eq!(
            parse(json!({"max_tokens": 1, "messages": hello})),
            Err(RequestError::Missing("model"))
        );
        assert_eq!(
            parse(json!({"model": "m", "max_tokens": 1})),
            Err(RequestError::Missing("messages"))
        );
        assert_eq!(
            parse(json!({"model": "m", "messages": hello})),
            Err(RequestError::Missing("max_tokens"))
        );
    }

    #[test]
    fn messages_request_rejects_bad_field_types() {
        let parse = |v: Value| parse_messages_request(v.to_string().as_bytes());
        let hello = json!([{"role": "user", "content": "hi"}]);
        let cases = [
            (
                json!({"model": "", "max_tokens": 1, "messages": hello}),
                "model",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": []}),
                "messages",
            ),
            (
                json!({"model": "m", "max_tokens": 0, "messages": hello}),
                "max_tokens",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": hello, "stream": 1}),
                "stream",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(parse(body).unwrap_err().field(), Some(field), "{field}");
        }
        assert_eq!(
            parse_messages_request(b"[1]"),
            Err(RequestError::NotAnObject)
        );
        assert!(matches!(
            parse_messages_request(b"{"),
            Err(RequestError::NotJson(_))
        ));
    }

    #[test]
    fn system_string_becomes_a_leading_system_message() {
        let mut body = anthropic(json!([{"role": "user", "content": "Hi"}]));
        body["system"] = json!("Be terse.");
        let out = to_openai(body);
        assert_eq!(
            out["messages"],
            json!([
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "Hi"}
            ])
        );
    }

    #[test]
    fn system_text_blocks_are_joined_and_cache_control_dropped() {
        let mut body = anthropic(json!([{"role": "user", "content": "Hi"}]));
        body["system"] = json!([
            {"type": "text", "text": "You are a poet."},
            {"type": "text", "text": "Long context.", "cache_control": {"type": "ephemeral"}}
        ]);
        let out = to_openai(body);
        assert_eq!(
            out["messages"][0],
            json!({"role": "system", "content": "You are a poet.\nLong context."})
        );
    }

    #[test]
    fn multi_turn_conversation_keeps_roles_and_order() {
        let out = to_openai(anthropic(json!([
            {"role": "user", "content": "Hello there."},
            {"role": "assistant", "content": "Hi, I'm Claude."},
            {"role": "user", "content": "Explain LLMs."}
        ])));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": "Hello there."},
                {"role": "assistant", "content": "Hi, I'm Claude."},
                {"role": "user", "content": "Explain LLMs."}
            ])
        );
    }

    #[test]
    fn text_and_image_blocks_become_text_and_image_url_parts() {
        let out = to_openai(anthropic(json!([{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            {"type": "text", "text": "Describe these."}
        ]}])));
        assert_eq!(
            out["messages"][0],
            json!({"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                {"type": "text", "text": "Describe these."}
            ]})
        );
    }

    #[test]
    fn assistant_tool_use_becomes_tool_calls_with_json_arguments() {
        let out = to_openai(anthropic(json!([
            {"role": "user", "content": "Weather in SF?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01A", "name": "get_weather",
                 "input": {"location": "San Francisco, CA"}}
            ]}
        ])));
        let assistant = &out["messages"][1];
        assert_eq!(assistant["content"], "Let me check.");
        assert_eq!(
            assistant["tool_calls"],
            json!([{"id": "toolu_01A", "type": "function", "function": {
                "name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\"}"
            }}])
        );
    }

    #[test]
    fn assistant_with_only_tool_use_has_null_content_and_thinking_is_dropped() {
        let out = to_openai(anthropic(json!([
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
            ]}
        ])));
        assert_eq!(out["messages"][1]["content"], Value::Null);
        assert_eq!(
            out["messages"][1]["tool_calls"][0]["function"]["arguments"],
            "{}"
        );
    }

    #[test]
    fn tool_results_become_tool_messages_before_the_user_text() {
        let out = to_openai(anthropic(json!([
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "15 degrees"},
                {"type": "tool_result", "tool_use_id": "t2", "is_error": true,
                 "content": [{"type": "text", "text": "not"}, {"type": "text", "text": "found"}]},
                {"type": "text", "text": "Now summarise."}
            ]}
        ])));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "tool", "tool_call_id": "t1", "content": "15 degrees"},
                {"role": "tool", "tool_call_id": "t2", "content": "not\nfound"},
                {"role": "user", "content": [{"type": "text", "text": "Now summarise."}]}
            ])
        );
    }

    #[test]
    fn tools_and_tool_choices_map_to_functions() {
        let mut body = anthropic(json!([{"role": "user", "content": "x"}]));
        body["tools"] = json!([{"name": "get_weather", "description": "Get the weather",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}]);
        let cases = [
            (json!({"type": "auto"}), json!("auto")),
            (json!({"type": "any"}), json!("required")),
            (json!({"type": "none"}), json!("none")),
            (
                json!({"type": "tool", "name": "get_weather"}),
                json!({"type": "function", "function": {"name": "get_weather"}}),
            ),
        ];
        for (anthropic_choice, openai_choice) in cases {
            body["tool_choice"] = anthropic_choice;
            let out = to_openai(body.clone());
            assert_eq!(out["tool_choice"], openai_choice);
            assert!(out.get("parallel_tool_calls").is_none());
            assert_eq!(
                out["tools"],
                json!([{"type": "function", "function": {"name": "get_weather",
                    "description": "Get the weather",
                    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}])
            );
        }
    }

    #[test]
    fn disable_parallel_tool_use_turns_parallel_tool_calls_off() {
        let mut body = anthropic(json!([{"role": "user", "content": "x"}]));
        body["tool_choice"] = json!({"type": "auto", "disable_parallel_tool_use": true});
        assert_eq!(to_openai(body)["parallel_tool_calls"], false);
    }

    #[test]
    fn server_tools_are_refused() {
        let mut body = anthropic(json!([{"role": "user", "content": "x"}]));
        body["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}]);
        let err = request_to_openai(&messages_request(body)).unwrap_err();
        assert_eq!(err.field(), Some("tools"));
    }

    #[test]
    fn sampling_limits_stops_user_and_stream_are_mapped_and_top_k_dropped() {
        let mut body = anthropic(json!([{"role": "user", "content": "x"}]));
        body["temperature"] = json!(0.5);
        body["top_p"] = json!(0.9);
        body["top_k"] = json!(40);
        body["stop_sequences"] = json!(["\n\nHuman:", "END"]);
        body["metadata"] = json!({"user_id": "user-42"});
        body["stream"] = json!(true);
        let out = to_openai(body);
        assert_eq!(out["model"], "claude");
        assert_eq!(out["max_completion_tokens"], 100);
        assert_eq!(out["temperature"], 0.5);
        assert_eq!(out["top_p"], 0.9);
        assert!(out.get("top_k").is_none());
        assert_eq!(out["stop"], json!(["\n\nHuman:", "END"]));
        assert_eq!(out["user"], "user-42");
        assert_eq!(out["stream"], true);
        assert_eq!(out["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn unknown_role_or_block_is_refused() {
        let bad_role = anthropic(json!([{"role": "system", "content": "x"}]));
        let err = request_to_openai(&messages_request(bad_role)).unwrap_err();
        assert_eq!(err.field(), Some("messages.role"));
        let bad_block = anthropic(json!([{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}
        ]}]));
        let err = request_to_openai(&messages_request(bad_block)).unwrap_err();
        assert_eq!(err.field(), Some("messages.content"));
    }

    #[test]
    fn system_and_developer_messages_become_the_system_prompt() {
        let out = from_openai(openai(json!([
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Hi"}
        ])));
        assert_eq!(out["system"], "Be terse.");
        assert_eq!(out["messages"], json!([{"role": "user", "content": "Hi"}]));

        let out = from_openai(openai(json!([
            {"role": "developer", "content": "Rule one."},
            {"role": "user", "content": "Hi"},
            {"role": "system", "content": [{"type": "text", "text": "Rule two."}]}
        ])));
        assert_eq!(
            out["system"],
            json!([{"type": "text", "text": "Rule one."}, {"type": "text", "text": "Rule two."}])
        );
    }

    #[test]
    fn model_and_max_tokens_come_from_the_caller_and_request() {
        let out = from_openai(openai(json!([{"role": "user", "content": "Hi"}])));
        assert_eq!(out["model"], "claude-up");
        assert_eq!(out["max_tokens"], 4096);
        let mut body = openai(json!([{"role": "user", "content": "Hi"}]));
        body["max_tokens"] = json!(50);
        assert_eq!(from_openai(body.clone())["max_tokens"], 50);
        body["max_completion_tokens"] = json!(7);
        assert_eq!(from_openai(body)["max_tokens"], 7);
    }

    #[test]
    fn image_url_parts_become_base64_or_url_image_blocks() {
        let out = from_openai(openai(json!([{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K", "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
        ]}])));
        assert_eq!(
            out["messages"][0]["content"],
            json!([
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
            ])
        );
    }

    #[test]
    fn data_url_that_is_not_base64_is_refused() {
        let err = from_openai_err(openai(json!([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png,raw"}}
        ]}])));
        assert_eq!(err.field(), Some("messages.content.image_url.url"));
    }

    #[test]
    fn tool_calls_become_tool_use_blocks_and_tool_messages_one_user_turn() {
        let out = from_openai(openai(json!([
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "21C"}]},
            {"role": "user", "content": "Which is warmer?"}
        ])));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "21C"},
                    {"type": "text", "text": "Which is warmer?"}
                ]}
            ])
        );
    }

    #[test]
    fn consecutive_same_role_messages_are_merged() {
        let out = from_openai(openai(json!([
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}]},
            {"role": "assistant", "content": "three"},
            {"role": "assistant", "content": ""},
            {"role": "assistant", "content": "four"}
        ])));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": [
                    {"type": "text", "text": "one"}, {"type": "text", "text": "two"}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "three"}, {"type": "text", "text": "four"}
                ]}
            ])
        );
    }

    #[test]
    fn tool_call_arguments_that_are_not_an_object_are_refused() {
        let err = from_openai_err(openai(json!([
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"trunc"}}
            ]}
        ])));
        assert_eq!(err.field(), Some("messages.tool_calls.function.arguments"));
    }

    #[test]
    fn functions_become_tools_with_input_schema() {
        let mut body = openai(json!([{"role": "user", "content": "x"}]));
        body["tools"] = json!([
            {"type": "function", "function": {"name": "a", "description": "A",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}},
            {"type": "function", "function": {"name": "b"}}
        ]);
        let out = from_openai(body);
        assert_eq!(
            out["tools"],
            json!([
                {"name": "a", "description": "A",
                 "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}},
                {"name": "b", "input_schema": {"type": "object", "properties": {}}}
            ])
        );
    }

    #[test]
    fn tool_choices_map_to_anthropic_tool_choices() {
        let mut body = openai(json!([{"role": "user", "content": "x"}]));
        body["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
        let cases = [
            (json!("auto"), json!({"type": "auto"})),
            (json!("required"), json!({"type": "any"})),
            (json!("none"), json!({"type": "none"})),
            (
                json!({"type": "function", "function": {"name": "f"}}),
                json!({"type": "tool", "name": "f"}),
            ),
        ];
        for (openai_choice, anthropic_choice) in cases {
            body["tool_choice"] = openai_choice;
            assert_eq!(from_openai(body.clone())["tool_choice"], anthropic_choice);
        }
    }

    #[test]
    fn parallel_tool_calls_off_disables_parallel_tool_use() {
        let mut body = openai(json!([{"role": "user", "content": "x"}]));
        body["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
        body["parallel_tool_calls"] = json!(false);
        assert_eq!(
            from_openai(body.clone())["tool_choice"],
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        body["tool_choice"] = json!("required");
        assert_eq!(
            from_openai(body)["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
    }

    #[test]
    fn stop_user_sampling_and_stream_map_and_unsupported_fields_are_left_out() {
        let mut body = openai(json!([{"role": "user", "content": "x"}]));
        body["stop"] = json!("END");
        body["user"] = json!("user-42");
        body["temperature"] = json!(1.5);
        body["top_p"] = json!(0.9);
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        body["response_format"] = json!({"type": "json_object"});
        body["n"] = json!(1);
        body["seed"] = json!(7);
        let out = from_openai(body.clone());
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["metadata"], json!({"user_id": "user-42"}));
        assert_eq!(out["temperature"], 1.0, "clamped to Anthropic's range");
        assert_eq!(out["top_p"], 0.9);
        assert_eq!(out["stream"], true);
        for dropped in [
            "stream_options",
            "response_format",
            "n",
            "seed",
            "user",
            "stop",
        ] {
            assert!(out.get(dropped).is_none(), "{dropped}");
        }
        body["stop"] = json!(["a", "b"]);
        assert_eq!(from_openai(body)["stop_sequences"], json!(["a", "b"]));
    }

    #[test]
    fn unknown_openai_role_is_refused() {
        let err = from_openai_err(openai(
            json!([{"role": "function", "name": "f", "content": "x"}]),
        ));
        assert_eq!(err.field(), Some("messages.role"));
    }

    #[test]
    fn conversation_round_trips_through_openai() {
        let original = json!({
            "model": "claude-up",
            "max_tokens": 256,
            "system": "Be terse.",
            "temperature": 0.25,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u1"},
            "tools": [{"name": "get_weather", "description": "Weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any"},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}
                ]},
                {"role": "assistant", "content": "It is 18C."}
            ]
        });
        let canonical = to_openai(original.clone());
        assert_eq!(from_openai(canonical), original);
    }
}
