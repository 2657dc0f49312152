//! An OpenAI chat-completions request as a Bedrock `Converse` / `ConverseStream` body
//! (botocore's `bedrock-runtime` service model: `ConverseRequest`, `Message`, `ContentBlock`,
//! `InferenceConfiguration`, `ToolConfiguration`). The model and the streaming choice are in
//! the path, not the body.

use serde_json::{json, Map, Value};

use super::given;
use crate::ai::openai::RequestError;

/// Most content blocks one request may carry after translation: Bedrock's own limits are far
/// lower, and a bound keeps a hostile body from growing the translation without end.
const MAX_BLOCKS: usize = 10_000;

/// The Converse body for an OpenAI chat request (the client's body as given).
pub fn request_from_openai(req: &Map<String, Value>) -> Result<Vec<u8>, RequestError> {
    let messages = match given(req, "messages") {
        None => return Err(RequestError::Missing("messages")),
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        Some(_) => return Err(invalid("messages", "a non-empty array")),
    };
    let mut conversation = Conversation::default();
    for message in messages {
        let Value::Object(message) = message else {
            return Err(invalid("messages", "an array of message objects"));
        };
        conversation.add(message)?;
        if conversation.blocks > MAX_BLOCKS {
            return Err(invalid("messages", "at most 10000 content parts"));
        }
    }
    if conversation.messages.is_empty() {
        return Err(invalid(
            "messages",
            "a conversation with at least one user or assistant message",
        ));
    }
    let mut body = Map::new();
    let messages: Vec<Value> = conversation
        .messages
        .into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect();
    body.insert("messages".into(), Value::Array(messages));
    if !conversation.system.is_empty() {
        body.insert("system".into(), Value::Array(conversation.system));
    }
    let inference = inference_config(req)?;
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(tools) = tool_config(req)? {
        body.insert("toolConfig".into(), tools);
    }
    Ok(serde_json::to_vec(&Value::Object(body)).expect("serialize JSON value"))
}

fn invalid(field: &'static str, expected: &'static str) -> RequestError {
    RequestError::Invalid { field, expected }
}

/// Bedrock's `messages` and `system` blocks, built message by message.
#[derive(Default)]
struct Conversation {
    /// `(role, content blocks)`; consecutive messages of one role share one entry, since
    /// Bedrock wants turns to alternate and every tool result of a turn in one user message.
    messages: Vec<(&'static str, Vec<Value>)>,
    /// Text of every system and developer message, in order.
    system: Vec<Value>,
    /// Content blocks so far, for [`MAX_BLOCKS`].
    blocks: usize,
}

impl Conversation {
    fn add(&mut self, message: &Map<String, Value>) -> Result<(), RequestError> {
        let role = match given(message, "role") {
            None => return Err(RequestError::Missing("messages.role")),
            Some(Value::String(role)) => role.as_str(),
            Some(_) => return Err(invalid("messages.role", "a string")),
        };
        let content = given(message, "content");
        match role {
            // Bedrock has one system prompt; where a system message stood is lost.
            "system" | "developer" => {
                for text in texts(content)? {
                    self.blocks += 1;
                    self.system.push(json!({ "text": text }));
                }
            }
            "user" => {
                let blocks = texts(content)?
                    .into_iter()
                    .map(|text| json!({ "text": text }))
                    .collect();
                self.push("user", blocks);
            }
            "assistant" => {
                let mut blocks: Vec<Value> = texts(content)?
                    .into_iter()
                    .map(|text| json!({ "text": text }))
                    .collect();
                blocks.extend(tool_uses(message)?);
                self.push("assistant", blocks);
            }
            "tool" => {
                let id = match given(message, "tool_call_id") {
                    None => return Err(RequestError::Missing("messages.tool_call_id")),
                    Some(Value::String(id)) => id.clone(),
                    Some(_) => return Err(invalid("messages.tool_call_id", "a string")),
                };
                let text = texts(content)?.concat();
                let result = json!({ "toolResult": {
                    "toolUseId": id,
                    "content": [{ "text": text }],
                }});
                self.push("user", vec![result]);
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

    /// Appends `blocks` to the last message when it has the same role, else as a new one.
    /// A message with no blocks adds nothing (Bedrock refuses empty content).
    fn push(&mut self, role: &'static str, blocks: Vec<Value>) {
        if blocks.is_empty() {
            return;
        }
        self.blocks += blocks.len();
        match self.messages.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => self.messages.push((role, blocks)),
        }
    }
}

/// The text of a message's content: a string or an array of text parts. Bedrock takes images
/// and documents as bytes, which OpenAI's URL parts are not: they are refused.
fn texts(content: Option<&Value>) -> Result<Vec<String>, RequestError> {
    match content {
        None => Ok(Vec::new()),
        Some(Value::String(text)) if text.is_empty() => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in parts {
                let text = match part.get("type").and_then(Value::as_str) {
                    Some("text") => part.get("text"),
                    Some("refusal") => part.get("refusal"),
                    _ => {
                        return Err(invalid(
                            "messages.content",
                            "a string or an array of text parts (Bedrock takes no URL parts)",
                        ))
                    }
                };
                match text {
                    Some(Value::String(text)) if !text.is_empty() => texts.push(text.clone()),
                    Some(Value::String(_)) => {}
                    _ => return Err(invalid("messages.content.text", "a string")),
                }
            }
            Ok(texts)
        }
        Some(_) => Err(invalid("messages.content", "a string or an array of parts")),
    }
}

/// An assistant message's `tool_calls` as `toolUse` blocks; the arguments string must hold a
/// JSON object (Bedrock's `input` is a document, not a string).
fn tool_uses(message: &Map<String, Value>) -> Result<Vec<Value>, RequestError> {
    let Some(calls) = given(message, "tool_calls") else {
        return Ok(Vec::new());
    };
    let Value::Array(calls) = calls else {
        return Err(invalid("messages.tool_calls", "an array"));
    };
    let mut blocks = Vec::with_capacity(calls.len());
    for call in calls {
        let id = call.get("id").and_then(Value::as_str);
        let function = call.get("function");
        let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
        let (Some(id), Some(name)) = (id, name) else {
            return Err(invalid(
                "messages.tool_calls",
                "tool calls with an id and a function name",
            ));
        };
        let input = match function.and_then(|f| f.get("arguments")) {
            None | Some(Value::Null) => json!({}),
            Some(Value::String(text)) if text.trim().is_empty() => json!({}),
            Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
                Ok(input @ Value::Object(_)) => input,
                _ => {
                    return Err(invalid(
                        "messages.tool_calls.function.arguments",
                        "a JSON object in a string",
                    ))
                }
            },
            Some(_) => {
                return Err(invalid(
                    "messages.tool_calls.function.arguments",
                    "a string",
                ))
            }
        };
        blocks.push(json!({ "toolUse": { "toolUseId": id, "name": name, "input": input } }));
    }
    Ok(blocks)
}

/// `inferenceConfig`: `max_completion_tokens` (else `max_tokens`), `temperature`, `top_p`,
/// `stop`. Sampling options Bedrock's common configuration lacks (`n`, penalties, `seed`,
/// `logit_bias`, `top_k`) are not sent.
fn inference_config(req: &Map<String, Value>) -> Result<Map<String, Value>, RequestError> {
    let mut config = Map::new();
    let max_tokens = given(req, "max_completion_tokens").or_else(|| given(req, "max_tokens"));
    if let Some(max) = max_tokens {
        let max = max
            .as_u64()
            .filter(|&n| n >= 1)
            .ok_or(invalid("max_tokens", "a positive integer"))?;
        config.insert("maxTokens".into(), json!(max));
    }
    for (openai, bedrock) in [("temperature", "temperature"), ("top_p", "topP")] {
        if let Some(value) = given(req, openai) {
            let value = value
                .as_f64()
                .ok_or(invalid(openai_field(openai), "a number"))?;
            config.insert(bedrock.into(), json!(value));
        }
    }
    match given(req, "stop") {
        None => {}
        Some(Value::String(stop)) => {
            config.insert("stopSequences".into(), json!([stop]));
        }
        Some(Value::Array(stops)) if stops.iter().all(Value::is_string) => {
            config.insert("stopSequences".into(), Value::Array(stops.clone()));
        }
        Some(_) => return Err(invalid("stop", "a string or an array of strings")),
    }
    Ok(config)
}

fn openai_field(name: &str) -> &'static str {
    match name {
        "temperature" => "temperature",
        _ => "top_p",
    }
}

/// `toolConfig`: each function tool as a `toolSpec` (its JSON schema as `inputSchema.json`),
/// and `tool_choice` as `toolChoice` (`auto`, `required` as `any`, a named function as
/// `tool`). Bedrock has no "none": with `tool_choice = "none"` the tools are still declared
/// (a conversation holding tool calls needs them) but no choice is forced.
fn tool_config(req: &Map<String, Value>) -> Result<Option<Value>, RequestError> {
    let Some(tools) = given(req, "tools") else {
        return Ok(None);
    };
    let Value::Array(tools) = tools else {
        return Err(invalid("tools", "an array"));
    };
    if tools.is_empty() {
        return Ok(None);
    }
    let mut specs = Vec::with_capacity(tools.len());
    for tool in tools {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(invalid("tools", "function tools"));
        }
        let function = tool.get("function");
        let Some(name) = function.and_then(|f| f.get("name")).and_then(Value::as_str) else {
            return Err(RequestError::Missing("tools.function.name"));
        };
        let schema = match function.and_then(|f| f.get("parameters")) {
            Some(schema @ Value::Object(_)) => schema.clone(),
            None | Some(Value::Null) => json!({ "type": "object", "properties": {} }),
            Some(_) => return Err(invalid("tools.function.parameters", "a JSON schema object")),
        };
        let mut spec = json!({ "name": name, "inputSchema": { "json": schema } });
        if let Some(description) = function
            .and_then(|f| f.get("description"))
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
        {
            spec["description"] = json!(description);
        }
        specs.push(json!({ "toolSpec": spec }));
    }
    let mut config = json!({ "tools": specs });
    match given(req, "tool_choice") {
        None => {}
        Some(Value::String(choice)) => match choice.as_str() {
            "auto" => config["toolChoice"] = json!({ "auto": {} }),
            "required" => config["toolChoice"] = json!({ "any": {} }),
            "none" => {}
            _ => return Err(invalid("tool_choice", "auto, required, none or a function")),
        },
        Some(choice) => {
            let name = choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or(invalid("tool_choice", "auto, required, none or a function"))?;
            config["toolChoice"] = json!({ "tool": { "name": name } });
        }
    }
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(body: Value) -> Value {
        let bytes = request_from_openai(body.as_object().unwrap()).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn messages_system_and_inference_settings_become_converse_fields() {
        let body = translate(json!({
            "model": "m", "max_tokens": 50, "temperature": 0.5, "top_p": 0.9, "stop": "END",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "again"},
            ]
        }));
        assert_eq!(
            body,
            json!({
                "messages": [
                    {"role": "user", "content": [{"text": "hi"}]},
                    {"role": "assistant", "content": [{"text": "hello"}]},
                    {"role": "user", "content": [{"text": "again"}]},
                ],
                "system": [{"text": "be brief"}],
                "inferenceConfig": {"maxTokens": 50, "temperature": 0.5, "topP": 0.9,
                    "stopSequences": ["END"]},
            })
        );
    }

    #[test]
    fn tools_tool_calls_and_tool_results_become_tool_blocks() {
        let body = translate(json!({
            "model": "m",
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "description": "Weather", "parameters": {"type": "object",
                "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "tu_1",
                    "type": "function", "function": {"name": "get_weather",
                    "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "tu_1", "content": "sunny"},
            ]
        }));
        assert_eq!(
            body["messages"][1],
            json!({"role": "assistant", "content": [{"toolUse": {"toolUseId": "tu_1",
                "name": "get_weather", "input": {"city": "Paris"}}}]})
        );
        assert_eq!(
            body["messages"][2],
            json!({"role": "user", "content": [{"toolResult": {"toolUseId": "tu_1",
                "content": [{"text": "sunny"}]}}]})
        );
        assert_eq!(
            body["toolConfig"],
            json!({"tools": [{"toolSpec": {"name": "get_weather", "description": "Weather",
                "inputSchema": {"json": {"type": "object",
                "properties": {"city": {"type": "string"}}}}}}],
                "toolChoice": {"tool": {"name": "get_weather"}}})
        );
    }

    #[test]
    fn tool_choice_maps_and_bad_shapes_are_refused() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        for (choice, expected) in [
            (json!("auto"), Some(json!({"auto": {}}))),
            (json!("required"), Some(json!({"any": {}}))),
            (json!("none"), None),
        ] {
            let body = translate(json!({"messages": [{"role": "user", "content": "x"}],
                "tools": tools, "tool_choice": choice}));
            assert_eq!(body["toolConfig"].get("toolChoice").cloned(), expected);
        }
        let refused = [
            json!({"messages": []}),
            json!({"messages": [{"role": "user", "content": [{"type": "image_url",
                "image_url": {"url": "http://x"}}]}]}),
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "a",
                "function": {"name": "f", "arguments": "[1]"}}]}]}),
            json!({"messages": [{"role": "user", "content": "x"}], "stop": 3}),
            json!({"messages": [{"role": "system", "content": "only system"}]}),
        ];
        for body in refused {
            assert!(
                request_from_openai(body.as_object().unwrap()).is_err(),
                "{body}"
            );
        }
    }

    #[test]
    fn consecutive_tool_results_share_one_user_message() {
        let body = translate(json!({"messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [
                {"id": "a", "function": {"name": "f", "arguments": "{}"}},
                {"id": "b", "function": {"name": "g", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "a", "content": "1"},
            {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "2"}]},
        ]}));
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[2]["content"].as_array().unwrap().len(), 2);
        assert_eq!(messages[1]["content"][1]["toolUse"]["input"], json!({}));
    }
}
