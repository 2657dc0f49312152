//! A Responses request checked and rewritten as the canonical chat completions request.
//!
//! `instructions` becomes a system message; `input` (a string, or a list of message,
//! `function_call` and `function_call_output` items) becomes the messages; function tools,
//! `tool_choice`, `max_output_tokens` (→ `max_completion_tokens`), `temperature`, `top_p`,
//! `parallel_tool_calls`, `user`, `text.format` (→ `response_format`) and `reasoning.effort`
//! (→ `reasoning_effort`) carry over. A streamed request asks for the usage chunk, which the
//! Responses stream reports in `response.completed`. `metadata` and `store` are kept for the
//! Response object only: a chat request with them would store the completion upstream.
//! Built-in tools and input items of other types have no chat form: they are left out of the
//! chat and named, so the request goes only to a provider with the Responses API itself
//! ([`ResponsesRequest::untranslatable`]), which gets the client's body as it came.
//!
//! Bounds, on top of the body size and JSON nesting limits every front door has: at most
//! [`MAX_INPUT_ITEMS`] input items, [`MAX_CONTENT_PARTS`] content parts per item,
//! [`MAX_TOOLS`] tools and [`MAX_METADATA_ENTRIES`] metadata entries.

use std::fmt;

use serde_json::{json, Map, Value};

use super::Echo;

/// Most `input` items one request may carry.
pub const MAX_INPUT_ITEMS: usize = 4096;

/// Most content parts one input item may carry.
pub const MAX_CONTENT_PARTS: usize = 1024;

/// Most tools one request may offer (OpenAI's own limit).
pub const MAX_TOOLS: usize = 128;

/// Most `metadata` entries (OpenAI's own limit).
pub const MAX_METADATA_ENTRIES: usize = 16;

/// A checked `POST /v1/responses` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsesRequest {
    /// The canonical chat completions body it stands for.
    pub chat: Map<String, Value>,
    /// What the Response object repeats of the request.
    pub echo: Echo,
    /// The client's body as it came, for a provider that has the Responses API.
    pub native: Map<String, Value>,
    /// The first built-in tool (`web_search`, ...) the request offers: left out of `chat`,
    /// since only a provider's own Responses API can run it.
    pub built_in_tool: Option<String>,
    /// The type of the first input item with no chat equivalent (`reasoning`,
    /// `web_search_call`, ...): left out of `chat`, for the same reason.
    pub native_item: Option<String>,
}

impl ResponsesRequest {
    /// Why the request cannot be translated to a chat, when it cannot: it offers a built-in
    /// tool, which only a provider's own Responses API runs.
    pub fn untranslatable(&self) -> Option<RequestInvalid> {
        if let Some(kind) = &self.native_item {
            return Some(RequestInvalid(format!(
                "input items of type '{kind}' are not supported for this model; this gateway \
                 translates messages, function_call and function_call_output items (other \
                 items reach only models on providers with responses = \"native\")"
            )));
        }
        let kind = self.built_in_tool.as_deref()?;
        Some(RequestInvalid(format!(
            "the built-in tool '{kind}' is not supported by this gateway for this model; only \
             tools of type 'function' are (built-in tools reach only models on providers with \
             responses = \"native\")"
        )))
    }
}

/// Why a Responses request is refused: the message of a 400 `invalid_request_error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInvalid(pub String);

impl fmt::Display for RequestInvalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RequestInvalid {}

fn invalid(field: &str, expected: &str) -> RequestInvalid {
    RequestInvalid(format!("invalid parameter '{field}': must be {expected}"))
}

/// A present, non-null field (`null` means "not given" in OpenAI's API).
fn given<'a>(body: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    body.get(field).filter(|v| !v.is_null())
}

fn string_field<'a>(
    body: &'a Map<String, Value>,
    field: &str,
    at: &str,
) -> Result<&'a str, RequestInvalid> {
    match given(body, field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        None => Err(RequestInvalid(format!(
            "missing required parameter: '{at}.{field}'"
        ))),
        Some(_) => Err(invalid(&format!("{at}.{field}"), "a non-empty string")),
    }
}

/// Checks a Responses body and rewrites it as a chat completions body.
pub fn parse_request(body: &[u8]) -> Result<ResponsesRequest, RequestInvalid> {
    let body = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(RequestInvalid(
                "the request body must be a JSON object".into(),
            ))
        }
        Err(e) => {
            return Err(RequestInvalid(format!(
                "the request body is not valid JSON: {e}"
            )))
        }
    };
    refuse_stored_state(&body)?;
    let mut chat = Map::new();
    let mut echo = Map::new();
    match given(&body, "model") {
        Some(Value::String(model)) if !model.is_empty() => {
            chat.insert("model".into(), model.clone().into());
        }
        None => return Err(RequestInvalid("missing required parameter: 'model'".into())),
        Some(_) => return Err(invalid("model", "a non-empty string")),
    }
    let mut messages = Vec::new();
    let mut native_item = None;
    match given(&body, "instructions") {
        None => {
            echo.insert("instructions".into(), Value::Null);
        }
        Some(Value::String(text)) => {
            messages.push(json!({"role": "system", "content": text}));
            echo.insert("instructions".into(), text.clone().into());
        }
        Some(_) => return Err(invalid("instructions", "a string")),
    }
    match given(&body, "input") {
        None => return Err(RequestInvalid("missing required parameter: 'input'".into())),
        Some(Value::String(text)) => messages.push(json!({"role": "user", "content": text})),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(invalid("input", "a string or a non-empty array of items"))
        }
        Some(Value::Array(items)) if items.len() > MAX_INPUT_ITEMS => {
            return Err(RequestInvalid(format!(
                "'input' has {} items; at most {MAX_INPUT_ITEMS} are accepted",
                items.len()
            )))
        }
        Some(Value::Array(items)) => {
            for item in items {
                input_item(item, &mut messages, &mut native_item)?;
            }
        }
        Some(_) => return Err(invalid("input", "a string or an array of items")),
    }
    chat.insert("messages".into(), Value::Array(messages));
    if bool_field(&body, "stream")?.unwrap_or(false) {
        chat.insert("stream".into(), true.into());
        // The usage chunk is what `response.completed` reports.
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let mut built_in_tool = None;
    let has_tools = tools(&body, &mut chat, &mut echo, &mut built_in_tool)?;
    tool_choice(&body, &mut chat, &mut echo)?;
    match bool_field(&body, "parallel_tool_calls")? {
        // The chat API takes `parallel_tool_calls` only along with tools.
        Some(parallel) if has_tools => {
            chat.insert("parallel_tool_calls".into(), parallel.into());
            echo.insert("parallel_tool_calls".into(), parallel.into());
        }
        parallel => {
            echo.insert(
                "parallel_tool_calls".into(),
                parallel.unwrap_or(true).into(),
            );
        }
    }
    match given(&body, "max_output_tokens") {
        None => {
            echo.insert("max_output_tokens".into(), Value::Null);
        }
        Some(n) if n.is_u64() => {
            chat.insert("max_completion_tokens".into(), n.clone());
            echo.insert("max_output_tokens".into(), n.clone());
        }
        Some(_) => return Err(invalid("max_output_tokens", "an integer >= 0")),
    }
    for field in ["temperature", "top_p"] {
        match given(&body, field) {
            None => {
                echo.insert(field.into(), Value::Null);
            }
            Some(n) if n.is_number() => {
                chat.insert(field.into(), n.clone());
                echo.insert(field.into(), n.clone());
            }
            Some(_) => return Err(invalid(field, "a number")),
        }
    }
    match given(&body, "user") {
        None => {}
        Some(Value::String(user)) => {
            chat.insert("user".into(), user.clone().into());
            echo.insert("user".into(), user.clone().into());
        }
        Some(_) => return Err(invalid("user", "a string")),
    }
    metadata(&body, &mut echo)?;
    // `store` is accepted, and nothing is stored (see the module docs).
    bool_field(&body, "store")?;
    text_format(&body, &mut chat, &mut echo)?;
    match given(&body, "reasoning").and_then(|r| r.get("effort")) {
        None | Some(Value::Null) => {}
        Some(Value::String(effort)) => {
            chat.insert("reasoning_effort".into(), effort.clone().into());
        }
        Some(_) => return Err(invalid("reasoning.effort", "a string")),
    }
    echo.insert("previous_response_id".into(), Value::Null);
    echo.insert("truncation".into(), "disabled".into());
    Ok(ResponsesRequest {
        chat,
        echo: Echo(echo),
        native: body,
        built_in_tool,
        native_item,
    })
}

/// Refuses what needs responses stored by the gateway, which it does not do.
fn refuse_stored_state(body: &Map<String, Value>) -> Result<(), RequestInvalid> {
    if given(body, "previous_response_id").is_some() {
        return Err(RequestInvalid(
            "'previous_response_id' is not supported: this gateway does not store responses \
             (store: true is accepted, but nothing is kept); send the whole conversation in \
             'input' instead"
                .into(),
        ));
    }
    if given(body, "conversation").is_some() {
        return Err(RequestInvalid(
            "'conversation' is not supported: this gateway does not store conversations; send \
             the whole conversation in 'input' instead"
                .into(),
        ));
    }
    if given(body, "background") == Some(&Value::Bool(true)) {
        return Err(RequestInvalid(
            "'background' is not supported: this gateway does not store responses to fetch \
             later"
                .into(),
        ));
    }
    if given(body, "prompt").is_some() {
        return Err(RequestInvalid(
            "'prompt' (a stored prompt template) is not supported; use this gateway's \
             /prompts/{name} endpoints instead"
                .into(),
        ));
    }
    Ok(())
}

fn bool_field(body: &Map<String, Value>, field: &str) -> Result<Option<bool>, RequestInvalid> {
    match given(body, field) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(field, "a boolean")),
    }
}

/// One `input` item appended to the chat `messages`; the type of the first item with no chat
/// equivalent is named in `native_item`, and no such item is translated.
fn input_item(
    item: &Value,
    messages: &mut Vec<Value>,
    native_item: &mut Option<String>,
) -> Result<(), RequestInvalid> {
    let Value::Object(item) = item else {
        return Err(invalid("input[]", "an object"));
    };
    match item.get("type").and_then(Value::as_str) {
        // An "easy" input message has no type.
        None | Some("message") => message(item, messages),
        Some("function_call") => {
            let call_id = string_field(item, "call_id", "function_call")?;
            let name = string_field(item, "name", "function_call")?;
            let arguments = match given(item, "arguments") {
                Some(Value::String(a)) => a.as_str(),
                None => "",
                Some(_) => return Err(invalid("function_call.arguments", "a string")),
            };
            let call = json!({"id": call_id, "type": "function",
                              "function": {"name": name, "arguments": arguments}});
            // Calls that follow an assistant message (or each other) belong to it.
            match messages.last_mut() {
                Some(last) if last["role"] == "assistant" => match last.get_mut("tool_calls") {
                    Some(Value::Array(calls)) => calls.push(call),
                    _ => {
                        last["tool_calls"] = json!([call]);
                    }
                },
                _ => messages.push(json!({"role": "assistant", "content": null,
                                          "tool_calls": [call]})),
            }
            Ok(())
        }
        Some("function_call_output") => {
            let call_id = string_field(item, "call_id", "function_call_output")?;
            let output = match given(item, "output") {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Array(parts)) => texts_of(parts, "function_call_output.output")?,
                _ => {
                    return Err(invalid(
                        "function_call_output.output",
                        "a string or an array of input_text parts",
                    ))
                }
            };
            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            Ok(())
        }
        Some("item_reference") => Err(RequestInvalid(
            "input items of type 'item_reference' are not supported: this gateway does not \
             store responses; send the items themselves"
                .into(),
        )),
        Some(other) => {
            native_item.get_or_insert_with(|| other.to_string());
            Ok(())
        }
    }
}

/// A message item: its role, and its content as a string or as content parts.
fn message(item: &Map<String, Value>, messages: &mut Vec<Value>) -> Result<(), RequestInvalid> {
    let role = match given(item, "role") {
        Some(Value::String(r))
            if matches!(r.as_str(), "user" | "assistant" | "system" | "developer") =>
        {
            r.as_str()
        }
        _ => {
            return Err(invalid(
                "input[].role",
                "one of 'user', 'assistant', 'system', 'developer'",
            ))
        }
    };
    let content = match given(item, "content") {
        Some(Value::String(text)) => Value::String(text.clone()),
        Some(Value::Array(parts)) if role == "user" => Value::Array(user_parts(parts)?),
        // The chat API's other roles take text only.
        Some(Value::Array(parts)) => Value::String(texts_of(parts, "input[].content")?),
        _ => {
            return Err(invalid(
                "input[].content",
                "a string or an array of content parts",
            ))
        }
    };
    messages.push(json!({"role": role, "content": content}));
    Ok(())
}

fn check_parts_count(parts: &[Value], field: &str) -> Result<(), RequestInvalid> {
    if parts.len() > MAX_CONTENT_PARTS {
        return Err(RequestInvalid(format!(
            "'{field}' has {} parts; at most {MAX_CONTENT_PARTS} are accepted",
            parts.len()
        )));
    }
    Ok(())
}

/// The text of a text part (`input_text`, `output_text`, `text`, `refusal`).
fn part_text(part: &Value) -> Option<&str> {
    match part.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text" | "text") => part.get("text").and_then(Value::as_str),
        Some("refusal") => part.get("refusal").and_then(Value::as_str),
        _ => None,
    }
}

/// Text parts joined, for the roles whose chat content is text only.
fn texts_of(parts: &[Value], field: &str) -> Result<String, RequestInvalid> {
    check_parts_count(parts, field)?;
    let mut text = String::new();
    for part in parts {
        match part_text(part) {
            Some(t) => text.push_str(t),
            None => return Err(unsupported_part(part, field)),
        }
    }
    Ok(text)
}

/// A user message's parts as chat content parts: text, and images by URL.
fn user_parts(parts: &[Value]) -> Result<Vec<Value>, RequestInvalid> {
    check_parts_count(parts, "input[].content")?;
    parts
        .iter()
        .map(|part| {
            if let Some(text) = part_text(part) {
                return Ok(json!({"type": "text", "text": text}));
            }
            match (
                part.get("type").and_then(Value::as_str),
                part.get("image_url").and_then(Value::as_str),
            ) {
                (Some("input_image"), Some(url)) => {
                    let mut image = json!({"url": url});
                    if let Some(detail) = part.get("detail").filter(|d| d.is_string()) {
                        image["detail"] = detail.clone();
                    }
                    Ok(json!({"type": "image_url", "image_url": image}))
                }
                _ => Err(unsupported_part(part, "input[].content")),
            }
        })
        .collect()
}

fn unsupported_part(part: &Value, field: &str) -> RequestInvalid {
    match part.get("type").and_then(Value::as_str) {
        Some(kind) => RequestInvalid(format!(
            "content parts of type '{kind}' are not supported in '{field}' (images by \
             image_url in user messages and text are)"
        )),
        None => invalid(&format!("{field}[]"), "a content part object with a 'type'"),
    }
}

/// Function tools rewritten as chat tools; the first built-in tool (any other type) is named
/// in `built_in`, and none of them is translated. Returns whether any function tool was
/// given.
fn tools(
    body: &Map<String, Value>,
    chat: &mut Map<String, Value>,
    echo: &mut Map<String, Value>,
    built_in: &mut Option<String>,
) -> Result<bool, RequestInvalid> {
    let tools = match given(body, "tools") {
        None => {
            echo.insert("tools".into(), json!([]));
            return Ok(false);
        }
        Some(Value::Array(tools)) if tools.len() > MAX_TOOLS => {
            return Err(RequestInvalid(format!(
                "'tools' has {} tools; at most {MAX_TOOLS} are accepted",
                tools.len()
            )))
        }
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(invalid("tools", "an array")),
    };
    let mut chat_tools = Vec::with_capacity(tools.len());
    let mut echoed = Vec::with_capacity(tools.len());
    for tool in tools {
        let Value::Object(tool) = tool else {
            return Err(invalid("tools[]", "an object"));
        };
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(kind) => {
                built_in.get_or_insert_with(|| kind.to_string());
                continue;
            }
            None => return Err(invalid("tools[].type", "a string")),
        }
        let name = string_field(tool, "name", "tools[]")?;
        let mut function = Map::new();
        function.insert("name".into(), name.into());
        match given(tool, "description") {
            None => {}
            Some(d @ Value::String(_)) => {
                function.insert("description".into(), d.clone());
            }
            Some(_) => return Err(invalid("tools[].description", "a string")),
        }
        match given(tool, "parameters") {
            None => {}
            Some(p @ Value::Object(_)) => {
                function.insert("parameters".into(), p.clone());
            }
            Some(_) => return Err(invalid("tools[].parameters", "a JSON Schema object")),
        }
        match given(tool, "strict") {
            None => {}
            Some(s @ Value::Bool(_)) => {
                function.insert("strict".into(), s.clone());
            }
            Some(_) => return Err(invalid("tools[].strict", "a boolean")),
        }
        let mut shown = function.clone();
        shown.insert("type".into(), "function".into());
        shown.entry("strict").or_insert(Value::Bool(false));
        shown.entry("description").or_insert(Value::Null);
        shown.entry("parameters").or_insert(Value::Null);
        echoed.push(Value::Object(shown));
        chat_tools.push(json!({"type": "function", "function": function}));
    }
    let any = !chat_tools.is_empty();
    if any {
        chat.insert("tools".into(), Value::Array(chat_tools));
    }
    echo.insert("tools".into(), Value::Array(echoed));
    Ok(any)
}

/// `tool_choice`: a mode, or one function by name.
fn tool_choice(
    body: &Map<String, Value>,
    chat: &mut Map<String, Value>,
    echo: &mut Map<String, Value>,
) -> Result<(), RequestInvalid> {
    let choice = match given(body, "tool_choice") {
        None => {
            echo.insert("tool_choice".into(), "auto".into());
            return Ok(());
        }
        Some(Value::String(mode)) if matches!(mode.as_str(), "auto" | "none" | "required") => {
            Value::String(mode.clone())
        }
        Some(Value::Object(choice)) if choice.get("type") == Some(&json!("function")) => {
            let name = string_field(choice, "name", "tool_choice")?;
            chat.insert(
                "tool_choice".into(),
                json!({"type": "function", "function": {"name": name}}),
            );
            echo.insert(
                "tool_choice".into(),
                json!({"type": "function", "name": name}),
            );
            return Ok(());
        }
        Some(Value::Object(choice)) => {
            let kind = choice.get("type").and_then(Value::as_str).unwrap_or("?");
            return Err(RequestInvalid(format!(
                "tool_choice of type '{kind}' is not supported by this gateway; use 'auto', \
                 'none', 'required' or a function"
            )));
        }
        Some(_) => {
            return Err(invalid(
                "tool_choice",
                "'auto', 'none', 'required' or {\"type\":\"function\",\"name\":...}",
            ))
        }
    };
    chat.insert("tool_choice".into(), choice.clone());
    echo.insert("tool_choice".into(), choice);
    Ok(())
}

/// `metadata`: at most [`MAX_METADATA_ENTRIES`] string values, echoed in the Response.
fn metadata(
    body: &Map<String, Value>,
    echo: &mut Map<String, Value>,
) -> Result<(), RequestInvalid> {
    let metadata = match given(body, "metadata") {
        None => Map::new(),
        Some(Value::Object(m)) if m.len() > MAX_METADATA_ENTRIES => {
            return Err(RequestInvalid(format!(
                "'metadata' has {} entries; at most {MAX_METADATA_ENTRIES} are accepted",
                m.len()
            )))
        }
        Some(Value::Object(m)) if m.values().all(Value::is_string) => m.clone(),
        Some(_) => return Err(invalid("metadata", "an object of string values")),
    };
    echo.insert("metadata".into(), Value::Object(metadata));
    Ok(())
}

/// `text.format` as the chat `response_format`.
fn text_format(
    body: &Map<String, Value>,
    chat: &mut Map<String, Value>,
    echo: &mut Map<String, Value>,
) -> Result<(), RequestInvalid> {
    let format = given(body, "text")
        .and_then(|t| t.get("format"))
        .filter(|f| !f.is_null());
    let Some(format) = format else {
        echo.insert("text".into(), json!({"format": {"type": "text"}}));
        return Ok(());
    };
    let response_format = match format.get("type").and_then(Value::as_str) {
        Some("text") => None,
        Some("json_object") => Some(json!({"type": "json_object"})),
        Some("json_schema") => {
            let Value::Object(f) = format else {
                unreachable!("a value with a type is an object")
            };
            let mut schema = Map::new();
            schema.insert(
                "name".into(),
                string_field(f, "name", "text.format")?.into(),
            );
            for field in ["schema", "description", "strict"] {
                if let Some(v) = given(f, field) {
                    schema.insert(field.into(), v.clone());
                }
            }
            Some(json!({"type": "json_schema", "json_schema": schema}))
        }
        _ => {
            return Err(invalid(
                "text.format.type",
                "'text', 'json_object' or 'json_schema'",
            ))
        }
    };
    if let Some(response_format) = response_format {
        chat.insert("response_format".into(), response_format);
    }
    echo.insert("text".into(), json!({"format": format}));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<ResponsesRequest, RequestInvalid> {
        parse_request(body.to_string().as_bytes())
    }

    fn refused(body: Value) -> String {
        parse(body).expect_err("refused").0
    }

    #[test]
    fn string_input_and_instructions_become_a_system_and_a_user_message() {
        let request = parse(
            json!({"model": "m", "input": "Hi", "instructions": "Be terse.",
                                   "max_output_tokens": 50, "temperature": 0.2, "top_p": 0.9,
                                   "user": "u1", "metadata": {"k": "v"}, "store": true}),
        )
        .unwrap();
        assert_eq!(
            Value::Object(request.chat),
            json!({"model": "m", "messages": [
                       {"role": "system", "content": "Be terse."},
                       {"role": "user", "content": "Hi"}],
                   "max_completion_tokens": 50, "temperature": 0.2, "top_p": 0.9,
                   "user": "u1"}),
            "metadata and store stay at the gateway"
        );
        assert_eq!(request.echo.0["metadata"], json!({"k": "v"}));
        assert_eq!(request.echo.0["max_output_tokens"], 50);
    }

    #[test]
    fn items_with_a_tool_round_trip_become_chat_messages_with_tool_calls() {
        let request = parse(json!({"model": "m", "stream": true, "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in "},
                                         {"type": "input_text", "text": "Paris?"}]},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather",
             "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
        ], "tools": [{"type": "function", "name": "get_weather", "description": "Weather.",
                      "parameters": {"type": "object"}}],
           "tool_choice": {"type": "function", "name": "get_weather"}}))
        .unwrap();
        let chat = Value::Object(request.chat);
        assert_eq!(
            chat["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "Weather in "},
                                             {"type": "text", "text": "Paris?"}]},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
            ])
        );
        assert_eq!(
            chat["tools"],
            json!([{"type": "function", "function": {"name": "get_weather",
                    "description": "Weather.", "parameters": {"type": "object"}}}])
        );
        assert_eq!(
            chat["tool_choice"],
            json!({"type": "function", "function": {"name": "get_weather"}})
        );
        assert_eq!(chat["stream_options"], json!({"include_usage": true}));
        assert_eq!(
            request.echo.0["tool_choice"],
            json!({"type": "function", "name": "get_weather"})
        );
    }

    #[test]
    fn a_function_call_without_an_assistant_message_gets_its_own() {
        let request = parse(json!({"model": "m", "input": [
            {"role": "user", "content": "Weather?"},
            {"type": "function_call", "call_id": "a", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "b", "name": "f", "arguments": "{}"},
        ]}))
        .unwrap();
        let messages = &request.chat["messages"];
        assert_eq!(messages[1]["role"], "assistant");
        assert_eq!(messages[1]["content"], Value::Null);
        assert_eq!(messages[1]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(messages.as_array().unwrap().len(), 2);
    }

    #[test]
    fn stored_state_is_refused_saying_responses_are_not_stored() {
        let message = refused(json!({"model": "m", "input": "Hi",
                                     "previous_response_id": "resp_1"}));
        assert!(message.contains("previous_response_id"), "{message}");
        assert!(message.contains("does not store responses"), "{message}");
        let message = refused(json!({"model": "m", "input": [
            {"type": "item_reference", "id": "msg_1"}]}));
        assert!(message.contains("does not store"), "{message}");
        assert!(
            refused(json!({"model": "m", "input": "Hi", "conversation": "c"}))
                .contains("conversation")
        );
    }

    #[test]
    fn items_without_a_chat_equivalent_are_kept_for_native_providers_only() {
        let body = json!({"model": "m", "input": [
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {"role": "user", "content": "Hi"}]});
        let request = parse(body.clone()).unwrap();
        assert_eq!(request.native_item.as_deref(), Some("reasoning"));
        let message = request.untranslatable().expect("refused in translation").0;
        assert!(message.contains("'reasoning'"), "{message}");
        assert_eq!(
            request.chat["messages"],
            json!([{"role": "user", "content": "Hi"}])
        );
        assert_eq!(Value::Object(request.native), body);
        // An item by reference needs stored state: refused wherever the request goes.
        let message = refused(json!({"model": "m", "input": [
            {"type": "item_reference", "id": "msg_1"}]}));
        assert!(message.contains("'item_reference'"), "{message}");
    }

    #[test]
    fn built_in_tools_are_kept_out_of_the_chat_and_refuse_its_translation_by_name() {
        for kind in ["web_search", "file_search", "code_interpreter"] {
            let body = json!({"model": "m", "input": "Hi", "tools": [
                {"type": "function", "name": "f"}, {"type": kind}, {"type": "web_search"}]});
            let request = parse(body.clone()).unwrap();
            assert_eq!(request.built_in_tool.as_deref(), Some(kind));
            let message = request.untranslatable().expect("refused in translation").0;
            assert!(message.contains(&format!("'{kind}'")), "{message}");
            // Only the function tool is translated; the native body keeps them all.
            assert_eq!(request.chat["tools"].as_array().unwrap().len(), 1);
            assert_eq!(Value::Object(request.native), body);
        }
        let plain = parse(json!({"model": "m", "input": "Hi",
                                 "tools": [{"type": "function", "name": "f"}]}))
        .unwrap();
        assert_eq!(plain.untranslatable(), None);
    }

    #[test]
    fn bad_input_is_refused_with_the_field_named() {
        for (body, field) in [
            (json!({"model": "m"}), "input"),
            (json!({"input": "Hi"}), "model"),
            (json!({"model": "m", "input": []}), "input"),
            (json!({"model": "m", "input": 7}), "input"),
            (
                json!({"model": "m", "input": [{"role": "robot", "content": "x"}]}),
                "role",
            ),
            (
                json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]}),
                "call_id",
            ),
            (
                json!({"model": "m", "input": "Hi", "max_output_tokens": -1}),
                "max_output_tokens",
            ),
            (
                json!({"model": "m", "input": "Hi", "tool_choice": "sometimes"}),
                "tool_choice",
            ),
            (
                json!({"model": "m", "input": [{"role": "user", "content": [
                {"type": "input_file", "file_id": "f"}]}]}),
                "input_file",
            ),
        ] {
            let message = refused(body.clone());
            assert!(message.contains(field), "{body}: {message}");
        }
        assert!(refused(json!([1])).contains("JSON object"));
        assert!(parse_request(b"{")
            .unwrap_err()
            .0
            .contains("not valid JSON"));
    }

    #[test]
    fn counts_past_their_bounds_are_refused() {
        let item = json!({"role": "user", "content": "x"});
        let items = vec![item; MAX_INPUT_ITEMS + 1];
        assert!(refused(json!({"model": "m", "input": items})).contains("at most"));
        let items = vec![json!({"role": "user", "content": "x"}); MAX_INPUT_ITEMS];
        assert!(parse(json!({"model": "m", "input": items})).is_ok());
        let part = json!({"type": "input_text", "text": "x"});
        let parts = vec![part; MAX_CONTENT_PARTS + 1];
        assert!(
            refused(json!({"model": "m", "input": [{"role": "user", "content": parts}]}))
                .contains("at most")
        );
        let tool = json!({"type": "function", "name": "f"});
        let tools = vec![tool; MAX_TOOLS + 1];
        assert!(refused(json!({"model": "m", "input": "x", "tools": tools})).contains("at most"));
        let metadata: Map<String, Value> = (0..=MAX_METADATA_ENTRIES)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect();
        assert!(
            refused(json!({"model": "m", "input": "x", "metadata": metadata})).contains("at most")
        );
    }
}
