//! An OpenAI chat-completions request as a Gemini `GenerateContentRequest`.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::given;
use super::schema::{to_gemini_parameters, to_gemini_schema};
use crate::ai::openai::RequestError;

/// The placeholder Google documents for a function call whose thought signature is unknown
/// ("Thought signatures", FAQ: history from another model or edited by the client). Gemini 3
/// refuses a replayed function call without a signature; OpenAI's tool calls have no place to
/// carry the real one back, so every replayed call gets this instead (the model then reasons
/// about that step without its earlier thoughts).
const PLACEHOLDER_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

/// The `generateContent` body for an OpenAI chat request (the client's body as given; its
/// `model` and `stream` are the caller's business: the path carries both).
pub fn request_from_openai(req: &Map<String, Value>) -> Result<Vec<u8>, RequestError> {
    let messages = match given(req, "messages") {
        None => return Err(RequestError::Missing("messages")),
        Some(Value::Array(messages)) if !messages.is_empty() => messages,
        Some(_) => {
            return Err(invalid("messages", "a non-empty array"));
        }
    };
    let conversation = Conversation::from_messages(messages)?;
    if conversation.contents.is_empty() {
        return Err(invalid(
            "messages",
            "a conversation with at least one user or assistant message",
        ));
    }
    let mut body = Map::new();
    body.insert("contents".into(), conversation.contents_json());
    if !conversation.system.is_empty() {
        body.insert(
            "systemInstruction".into(),
            json!({ "parts": conversation.system }),
        );
    }
    if let Some(declarations) = function_declarations(req)? {
        body.insert(
            "tools".into(),
            json!([{ "functionDeclarations": declarations }]),
        );
    }
    if let Some(config) = function_calling_config(req)? {
        body.insert(
            "toolConfig".into(),
            json!({ "functionCallingConfig": config }),
        );
    }
    let generation = generation_config(req)?;
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }
    Ok(serde_json::to_vec(&Value::Object(body)).expect("serialize JSON value"))
}

fn invalid(field: &'static str, expected: &'static str) -> RequestError {
    RequestError::Invalid { field, expected }
}

/// Gemini's `contents` and `systemInstruction` parts, built message by message.
#[derive(Default)]
struct Conversation {
    /// `(role, parts)`; consecutive messages of one role share one entry, since Gemini wants
    /// turns to alternate and parallel function responses in one `user` turn.
    contents: Vec<(&'static str, Vec<Value>)>,
    /// Text of every system and developer message, in order.
    system: Vec<Value>,
    /// The function name of each tool call id seen so far (the latest wins: a tool message
    /// answers the assistant message just before it).
    call_names: HashMap<String, String>,
}

impl Conversation {
    fn from_messages(messages: &[Value]) -> Result<Self, RequestError> {
        let mut conversation = Conversation::default();
        for message in messages {
            let Value::Object(message) = message else {
                return Err(invalid("messages", "an array of message objects"));
            };
            conversation.add(message)?;
        }
        Ok(conversation)
    }

    fn add(&mut self, message: &Map<String, Value>) -> Result<(), RequestError> {
        let role = match given(message, "role") {
            None => return Err(RequestError::Missing("messages.role")),
            Some(Value::String(role)) => role.as_str(),
            Some(_) => return Err(invalid("messages.role", "a string")),
        };
        let content = given(message, "content");
        match role {
            // Gemini has one system instruction; where a system message stood is lost.
            "system" | "developer" => {
                for text in texts(content)? {
                    self.system.push(json!({ "text": text }));
                }
            }
            "user" => {
                let parts = user_parts(content)?;
                self.push("user", parts);
            }
            "assistant" => {
                let mut parts: Vec<Value> = texts(content)?
                    .into_iter()
                    .map(|text| json!({ "text": text }))
                    .collect();
                parts.extend(self.function_calls(message)?);
                self.push("model", parts);
            }
            "tool" => {
                let name = match given(message, "tool_call_id") {
                    None => return Err(RequestError::Missing("messages.tool_call_id")),
                    Some(Value::String(id)) => self.call_names.get(id).cloned().ok_or(invalid(
                        "messages.tool_call_id",
                        "the id of a tool call in an earlier assistant message",
                    ))?,
                    Some(_) => return Err(invalid("messages.tool_call_id", "a string")),
                };
                let part = function_response(name, content)?;
                self.push("user", vec![part]);
            }
            // The deprecated `function` role answers a `function_call` by name.
            "function" => {
                let name = match given(message, "name") {
                    Some(Value::String(name)) => name.clone(),
                    _ => return Err(RequestError::Missing("messages.name")),
                };
                let part = function_response(name, content)?;
                self.push("user", vec![part]);
            }
            _ => {
                return Err(invalid(
                    "messages.role",
                    "one of system, developer, user, assistant, tool",
                ))
            }
        }
        Ok(())
    }

    /// An assistant message's `tool_calls` (and deprecated `function_call`) as `functionCall`
    /// parts; the first carries the placeholder thought signature (Gemini checks the first
    /// function call of each model turn; "Thought signatures", parallel calls).
    fn function_calls(&mut self, message: &Map<String, Value>) -> Result<Vec<Value>, RequestError> {
        let mut parts = Vec::new();
        let calls = match given(message, "tool_calls") {
            None => &[][..],
            Some(Value::Array(calls)) => calls.as_slice(),
            Some(_) => return Err(invalid("messages.tool_calls", "an array")),
        };
        for call in calls {
            let function = call
                .get("function")
                .filter(|f| f.is_object())
                .ok_or(RequestError::Missing("messages.tool_calls.function"))?;
            let (name, args) = call_name_and_args(function)?;
            if let Some(id) = call.get("id").and_then(Value::as_str) {
                self.call_names.insert(id.to_string(), name.clone());
            }
            parts.push(json!({ "functionCall": { "name": name, "args": args } }));
        }
        if let Some(function) = given(message, "function_call") {
            let (name, args) = call_name_and_args(function)?;
            parts.push(json!({ "functionCall": { "name": name, "args": args } }));
        }
        if let Some(Value::Object(first)) = parts.first_mut() {
            first.insert(
                "thoughtSignature".into(),
                PLACEHOLDER_THOUGHT_SIGNATURE.into(),
            );
        }
        Ok(parts)
    }

    /// Appends `parts` to the last content when it has the same role; skips empty turns
    /// (Gemini refuses a content without parts).
    fn push(&mut self, role: &'static str, parts: Vec<Value>) {
        if parts.is_empty() {
            return;
        }
        match self.contents.last_mut() {
            Some((last_role, last_parts)) if *last_role == role => last_parts.extend(parts),
            _ => self.contents.push((role, parts)),
        }
    }

    fn contents_json(&self) -> Value {
        self.contents
            .iter()
            .map(|(role, parts)| json!({ "role": role, "parts": parts }))
            .collect()
    }
}

/// A tool call's function `name` and its `arguments` (a JSON text) as an object.
fn call_name_and_args(function: &Value) -> Result<(String, Value), RequestError> {
    let name = match function.get("name") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        _ => return Err(RequestError::Missing("messages.tool_calls.function.name")),
    };
    const FIELD: &str = "messages.tool_calls.function.arguments";
    const EXPECTED: &str = "a JSON object, as a string";
    let args = match function.get("arguments") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(text)) if text.trim().is_empty() => Value::Object(Map::new()),
        Some(Value::String(text)) => match serde_json::from_str(text) {
            Ok(Value::Object(args)) => Value::Object(args),
            _ => return Err(invalid(FIELD, EXPECTED)),
        },
        // Some clients send the object itself.
        Some(Value::Object(args)) => Value::Object(args.clone()),
        Some(_) => return Err(invalid(FIELD, EXPECTED)),
    };
    Ok((name, args))
}

/// A tool result as a `functionResponse` part. Gemini's `response` must be an object, so the
/// result goes in its `content`: parsed when it is JSON, as a string otherwise.
fn function_response(name: String, content: Option<&Value>) -> Result<Value, RequestError> {
    let text = texts(content)?.join("\n");
    let result = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
    Ok(json!({
        "functionResponse": { "name": name, "response": { "content": result } }
    }))
}

/// The texts of a system, developer, assistant or tool message: its string content, or the
/// `text` (and assistant `refusal`) of each part. Empty strings are skipped.
fn texts(content: Option<&Value>) -> Result<Vec<String>, RequestError> {
    const FIELD: &str = "messages.content";
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
                    _ => return Err(invalid(FIELD, "a string or an array of text parts")),
                };
                match text {
                    Some(Value::String(text)) if !text.is_empty() => texts.push(text.clone()),
                    Some(Value::String(_)) => {}
                    _ => return Err(invalid("messages.content.text", "a string")),
                }
            }
            Ok(texts)
        }
        Some(_) => Err(invalid(FIELD, "a string or an array of parts")),
    }
}

/// A user message's content as Gemini parts: text, images, audio and files.
fn user_parts(content: Option<&Value>) -> Result<Vec<Value>, RequestError> {
    let Some(Value::Array(parts)) = content else {
        return Ok(texts(content)?
            .into_iter()
            .map(|text| json!({ "text": text }))
            .collect());
    };
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("text") => match part.get("text") {
                Some(Value::String(text)) if text.is_empty() => {}
                Some(Value::String(text)) => out.push(json!({ "text": text })),
                _ => return Err(invalid("messages.content.text", "a string")),
            },
            Some("image_url") => {
                // `image_url` is `{"url": ..., "detail": ...}`; a bare string is accepted too.
                // Gemini has no `detail`: it picks the resolution itself.
                let url = match part.get("image_url") {
                    Some(Value::String(url)) => url.as_str(),
                    Some(Value::Object(image)) => match image.get("url") {
                        Some(Value::String(url)) => url.as_str(),
                        _ => return Err(RequestError::Missing("messages.content.image_url.url")),
                    },
                    _ => return Err(RequestError::Missing("messages.content.image_url")),
                };
                out.push(media_part(
                    url,
                    "image/jpeg",
                    "messages.content.image_url.url",
                )?);
            }
            Some("input_audio") => {
                let audio = part.get("input_audio");
                let data = audio.and_then(|a| a.get("data")).and_then(Value::as_str);
                let format = audio.and_then(|a| a.get("format")).and_then(Value::as_str);
                let (Some(data), Some(format)) = (data, format) else {
                    return Err(RequestError::Missing("messages.content.input_audio"));
                };
                let mime_type = format!("audio/{format}");
                out.push(json!({ "inlineData": { "mimeType": mime_type, "data": data } }));
            }
            Some("file") => {
                // Only inline files can be passed on: an OpenAI `file_id` means nothing to
                // Gemini.
                let data = part
                    .get("file")
                    .and_then(|f| f.get("file_data"))
                    .and_then(Value::as_str)
                    .ok_or(invalid(
                        "messages.content.file",
                        "a file with file_data (file_id is not supported by this provider)",
                    ))?;
                out.push(media_part(
                    data,
                    "application/pdf",
                    "messages.content.file.file_data",
                )?);
            }
            _ => {
                return Err(invalid(
                    "messages.content",
                    "an array of text, image_url, input_audio or file parts",
                ))
            }
        }
    }
    Ok(out)
}

/// A `data:` URL as `inlineData`, an `http(s)` URL as `fileData` (its MIME type guessed from
/// the path's extension, else `default_mime`).
fn media_part(url: &str, default_mime: &str, field: &'static str) -> Result<Value, RequestError> {
    if let Some(rest) = url.strip_prefix("data:") {
        // RFC 2397: data:[<mediatype>][;base64],<data>
        let (meta, data) = rest
            .split_once(',')
            .ok_or(invalid(field, "a base64 data: URL or an http(s) URL"))?;
        let mime_type = meta
            .strip_suffix(";base64")
            .map(|m| m.split(';').next().unwrap_or_default())
            .filter(|m| !m.is_empty())
            .ok_or(invalid(field, "a base64 data: URL with a media type"))?;
        return Ok(json!({ "inlineData": { "mimeType": mime_type, "data": data } }));
    }
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        let mime_type = mime_from_extension(url).unwrap_or(default_mime);
        return Ok(json!({ "fileData": { "mimeType": mime_type, "fileUri": url } }));
    }
    Err(invalid(field, "a base64 data: URL or an http(s) URL"))
}

/// The MIME type for a URL's file extension (query and fragment ignored), for the types Gemini
/// reads ("Image understanding", "Audio understanding", "Video understanding", "Document
/// understanding").
fn mime_from_extension(url: &str) -> Option<&'static str> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let file = path.rsplit('/').next().unwrap_or(path);
    let (_, extension) = file.rsplit_once('.')?;
    let mime = match extension.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "wav" => "audio/wav",
        "mp3" => "audio/mp3",
        "aac" => "audio/aac",
        "ogg" => "audio/ogg",
        "flac" => "audio/flac",
        "mp4" => "video/mp4",
        "mpeg" | "mpg" => "video/mpeg",
        "mov" => "video/mov",
        "webm" => "video/webm",
        _ => return None,
    };
    Some(mime)
}

/// `tools` as `functionDeclarations` (also the deprecated `functions`). Only function tools
/// exist in OpenAI's chat API besides `custom` tools, which Gemini cannot express.
fn function_declarations(req: &Map<String, Value>) -> Result<Option<Vec<Value>>, RequestError> {
    let mut declarations = Vec::new();
    match given(req, "tools") {
        None => {}
        Some(Value::Array(tools)) => {
            for tool in tools {
                if tool.get("type").and_then(Value::as_str) != Some("function") {
                    return Err(invalid("tools.type", "\"function\""));
                }
                let function = tool
                    .get("function")
                    .ok_or(RequestError::Missing("tools.function"))?;
                declarations.push(declaration(function)?);
            }
        }
        Some(_) => return Err(invalid("tools", "an array")),
    }
    match given(req, "functions") {
        None => {}
        Some(Value::Array(functions)) => {
            for function in functions {
                declarations.push(declaration(function)?);
            }
        }
        Some(_) => return Err(invalid("functions", "an array")),
    }
    Ok((!declarations.is_empty()).then_some(declarations))
}

/// One OpenAI function definition as a `FunctionDeclaration` (`strict` has no equivalent).
fn declaration(function: &Value) -> Result<Value, RequestError> {
    let name = match function.get("name") {
        Some(Value::String(name)) if !name.is_empty() => name,
        _ => return Err(RequestError::Missing("tools.function.name")),
    };
    let mut out = Map::new();
    out.insert("name".into(), name.clone().into());
    if let Some(Value::String(description)) = function.get("description") {
        out.insert("description".into(), description.clone().into());
    }
    if let Some(parameters) = function.get("parameters").filter(|p| !p.is_null()) {
        if !parameters.is_object() {
            return Err(invalid("tools.function.parameters", "a JSON Schema object"));
        }
        if let Some(parameters) = to_gemini_parameters(parameters) {
            out.insert("parameters".into(), parameters);
        }
    }
    Ok(Value::Object(out))
}

/// `tool_choice` as `functionCallingConfig`: `auto` → `AUTO`, `none` → `NONE`, `required` →
/// `ANY`, a named function → `ANY` limited to it; `allowed_tools` limits `ANY` to its list
/// (with `mode: auto` the list cannot be expressed, since Gemini restricts names only in `ANY`).
fn function_calling_config(req: &Map<String, Value>) -> Result<Option<Value>, RequestError> {
    const EXPECTED: &str =
        "\"auto\", \"none\", \"required\", or an object naming a function or allowed tools";
    let Some(choice) = given(req, "tool_choice").or_else(|| given(req, "function_call")) else {
        return Ok(None);
    };
    let config = match choice {
        Value::String(mode) => match mode.as_str() {
            "auto" => json!({ "mode": "AUTO" }),
            "none" => json!({ "mode": "NONE" }),
            "required" => json!({ "mode": "ANY" }),
            _ => return Err(invalid("tool_choice", EXPECTED)),
        },
        Value::Object(choice) => {
            // `{"type":"function","function":{"name":..}}`, or the deprecated `{"name":..}`.
            let named = choice
                .get("function")
                .unwrap_or(&Value::Null)
                .get("name")
                .or_else(|| choice.get("name"))
                .and_then(Value::as_str);
            if let Some(name) = named {
                json!({ "mode": "ANY", "allowedFunctionNames": [name] })
            } else if let Some(allowed) = choice.get("allowed_tools") {
                let names: Vec<&str> = allowed
                    .get("tools")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|t| t.get("function")?.get("name")?.as_str())
                    .collect();
                match allowed.get("mode").and_then(Value::as_str) {
                    Some("required") => json!({ "mode": "ANY", "allowedFunctionNames": names }),
                    _ => json!({ "mode": "AUTO" }),
                }
            } else {
                return Err(invalid("tool_choice", EXPECTED));
            }
        }
        _ => return Err(invalid("tool_choice", EXPECTED)),
    };
    Ok(Some(config))
}

/// The sampling and output options as `generationConfig`.
fn generation_config(req: &Map<String, Value>) -> Result<Map<String, Value>, RequestError> {
    let mut config = Map::new();
    let numbers = [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ];
    for (field, gemini) in numbers {
        if let Some(value) = given(req, field) {
            if !value.is_number() {
                return Err(invalid(field, "a number"));
            }
            config.insert(gemini.into(), value.clone());
        }
    }
    let counts = [
        ("max_completion_tokens", "maxOutputTokens"),
        ("max_tokens", "maxOutputTokens"),
        ("n", "candidateCount"),
        // Not OpenAI's, but sent by clients written for several providers.
        ("top_k", "topK"),
    ];
    for (field, gemini) in counts {
        if let Some(value) = given(req, field) {
            if value.as_u64().is_none() {
                return Err(invalid(field, "an integer >= 0"));
            }
            // `max_completion_tokens` comes first and wins over the deprecated `max_tokens`.
            config.entry(gemini).or_insert_with(|| value.clone());
        }
    }
    if let Some(seed) = given(req, "seed") {
        if seed.as_i64().is_none() {
            return Err(invalid("seed", "an integer"));
        }
        config.insert("seed".into(), seed.clone());
    }
    match given(req, "stop") {
        None => {}
        Some(Value::String(stop)) => {
            config.insert("stopSequences".into(), json!([stop]));
        }
        Some(Value::Array(stops)) if stops.is_empty() => {}
        Some(Value::Array(stops)) if stops.iter().all(Value::is_string) => {
            config.insert("stopSequences".into(), Value::Array(stops.clone()));
        }
        Some(_) => return Err(invalid("stop", "a string or an array of strings")),
    }
    response_format(req, &mut config)?;
    Ok(config)
}

/// `response_format`: `json_object` → `responseMimeType: application/json`; `json_schema` →
/// the same plus `responseSchema` (in Gemini's subset; `name` and `strict` have no
/// equivalent); `text` → nothing.
fn response_format(
    req: &Map<String, Value>,
    config: &mut Map<String, Value>,
) -> Result<(), RequestError> {
    let Some(format) = given(req, "response_format") else {
        return Ok(());
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => {}
        Some("json_object") => {
            config.insert("responseMimeType".into(), "application/json".into());
        }
        Some("json_schema") => {
            let schema = format
                .get("json_schema")
                .and_then(|s| s.get("schema"))
                .filter(|s| s.is_object())
                .ok_or(RequestError::Missing("response_format.json_schema.schema"))?;
            config.insert("responseMimeType".into(), "application/json".into());
            config.insert("responseSchema".into(), to_gemini_schema(schema));
        }
        _ => {
            return Err(invalid(
                "response_format.type",
                "one of text, json_object, json_schema",
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(req: Value) -> Result<Value, RequestError> {
        let Value::Object(req) = req else {
            panic!("test request must be an object")
        };
        request_from_openai(&req).map(|body| serde_json::from_slice(&body).unwrap())
    }

    fn body(req: Value) -> Value {
        translate(req).unwrap()
    }

    #[test]
    fn user_and_assistant_become_user_and_model_turns() {
        let out = body(json!({"model": "m", "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "How are you?"}
        ]}));
        assert_eq!(
            out,
            json!({"contents": [
                {"role": "user", "parts": [{"text": "Hi"}]},
                {"role": "model", "parts": [{"text": "Hello!"}]},
                {"role": "user", "parts": [{"text": "How are you?"}]}
            ]})
        );
    }

    #[test]
    fn system_and_developer_messages_become_the_system_instruction() {
        let out = body(json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]}
        ]}));
        assert_eq!(
            out["systemInstruction"],
            json!({"parts": [{"text": "Be brief."}, {"text": "Answer in French."}]})
        );
        assert_eq!(
            out["contents"],
            json!([{"role": "user", "parts": [{"text": "Hi"}]}])
        );
    }

    #[test]
    fn consecutive_messages_of_one_role_are_merged() {
        let out = body(json!({"messages": [
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b"}]}
        ]}));
        assert_eq!(
            out["contents"],
            json!([{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}])
        );
    }

    #[test]
    fn data_url_images_become_inline_data() {
        let out = body(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}}
        ]}]}));
        assert_eq!(
            out["contents"][0]["parts"][1],
            json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}})
        );
    }

    #[test]
    fn http_images_become_file_data_with_a_guessed_mime_type() {
        let out = body(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.WEBP?size=2#x"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/image"}}
        ]}]}));
        assert_eq!(
            out["contents"][0]["parts"],
            json!([
                {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.WEBP?size=2#x"}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/image"}}
            ])
        );
    }

    #[test]
    fn other_image_urls_are_refused() {
        for url in [
            "ftp://x/y.png",
            "data:image/png,notbase64",
            "data:;base64,AAAA",
        ] {
            let err = translate(json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}
            ]}]}))
            .unwrap_err();
            assert_eq!(err.field(), Some("messages.content.image_url.url"), "{url}");
        }
    }

    #[test]
    fn audio_and_inline_files_become_inline_data() {
        let out = body(json!({"messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}
        ]}]}));
        assert_eq!(
            out["contents"][0]["parts"],
            json!([
                {"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}}
            ])
        );
    }

    #[test]
    fn file_ids_are_refused() {
        let err = translate(json!({"messages": [{"role": "user", "content": [
            {"type": "file", "file": {"file_id": "file-abc"}}
        ]}]}))
        .unwrap_err();
        assert_eq!(err.field(), Some("messages.content.file"));
    }

    #[test]
    fn tools_become_function_declarations_with_a_cleaned_schema() {
        let out = body(
            json!({"messages": [{"role": "user", "content": "weather?"}], "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather", "strict": true,
                 "parameters": {"type": "object", "additionalProperties": false,
                                "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}
            ]}),
        );
        assert_eq!(
            out["tools"],
            json!([{"functionDeclarations": [
                {"name": "get_weather", "description": "Weather",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "now"}
            ]}])
        );
    }

    #[test]
    fn non_function_tools_are_refused() {
        let err = translate(json!({"messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "custom", "custom": {"name": "x"}}]}))
        .unwrap_err();
        assert_eq!(err.field(), Some("tools.type"));
    }

    #[test]
    fn tool_choice_maps_to_function_calling_modes() {
        let cases = [
            (json!("auto"), json!({"mode": "AUTO"})),
            (json!("none"), json!({"mode": "NONE"})),
            (json!("required"), json!({"mode": "ANY"})),
            (
                json!({"type": "function", "function": {"name": "f"}}),
                json!({"mode": "ANY", "allowedFunctionNames": ["f"]}),
            ),
            (
                json!({"type": "allowed_tools", "allowed_tools": {"mode": "required",
                       "tools": [{"type": "function", "function": {"name": "g"}}]}}),
                json!({"mode": "ANY", "allowedFunctionNames": ["g"]}),
            ),
        ];
        for (choice, config) in cases {
            let out = body(json!({"messages": [{"role": "user", "content": "x"}],
                "tool_choice": choice}));
            assert_eq!(
                out["toolConfig"],
                json!({"functionCallingConfig": config}),
                "{choice}"
            );
        }
        let err = translate(json!({"messages": [{"role": "user", "content": "x"}],
            "tool_choice": "sometimes"}))
        .unwrap_err();
        assert_eq!(err.field(), Some("tool_choice"));
    }

    /// A tool round trip as an OpenAI client sends it after a parallel call.
    fn tool_round_trip() -> Value {
        json!({"messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_0", "content": "{\"temp\":21}"},
            {"role": "tool", "tool_call_id": "call_1", "content": "noon"}
        ]})
    }

    #[test]
    fn assistant_tool_calls_become_function_calls_with_a_placeholder_signature() {
        let out = body(tool_round_trip());
        assert_eq!(
            out["contents"][1],
            json!({"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                 "thoughtSignature": PLACEHOLDER_THOUGHT_SIGNATURE},
                {"functionCall": {"name": "get_time", "args": {}}}
            ]})
        );
    }

    #[test]
    fn tool_results_become_one_user_turn_of_function_responses() {
        let out = body(tool_round_trip());
        assert_eq!(
            out["contents"][2],
            json!({"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"content": {"temp": 21}}}},
                {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}}
            ]})
        );
        assert_eq!(out["contents"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn tool_result_names_come_from_the_latest_call_with_that_id() {
        let out = body(json!({"messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "first", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "1"},
            {"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "second", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "2"}
        ]}));
        assert_eq!(
            out["contents"][4]["parts"][0]["functionResponse"]["name"],
            "second"
        );
    }

    #[test]
    fn tool_results_given_as_text_parts_are_joined() {
        let out = body(json!({"messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "line 1"}, {"type": "text", "text": "line 2"}]}
        ]}));
        assert_eq!(
            out["contents"][2]["parts"][0]["functionResponse"]["response"],
            json!({"content": "line 1\nline 2"})
        );
    }

    #[test]
    fn deprecated_functions_and_function_call_are_translated() {
        let out = body(json!({"messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{\"a\":1}"}},
            {"role": "function", "name": "f", "content": "done"}
        ], "functions": [{"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}],
           "function_call": {"name": "f"}}));
        assert_eq!(out["tools"][0]["functionDeclarations"][0]["name"], "f");
        assert_eq!(
            out["toolConfig"]["functionCallingConfig"],
            json!({"mode": "ANY", "allowedFunctionNames": ["f"]})
        );
        assert_eq!(
            out["contents"][1]["parts"][0]["functionCall"],
            json!({"name": "f", "args": {"a": 1}})
        );
        assert_eq!(
            out["contents"][2]["parts"][0]["functionResponse"],
            json!({"name": "f", "response": {"content": "done"}})
        );
    }

    #[test]
    fn tool_result_for_an_unknown_call_is_refused() {
        let err = translate(json!({"messages": [
            {"role": "user", "content": "x"},
            {"role": "tool", "tool_call_id": "nope", "content": "1"}
        ]}))
        .unwrap_err();
        assert_eq!(err.field(), Some("messages.tool_call_id"));
    }

    #[test]
    fn tool_call_arguments_that_are_not_an_object_are_refused() {
        let err = translate(json!({"messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}
        ]}))
        .unwrap_err();
        assert_eq!(err.field(), Some("messages.tool_calls.function.arguments"));
    }

    #[test]
    fn sampling_options_become_generation_config() {
        let out = body(json!({"messages": [{"role": "user", "content": "x"}],
            "temperature": 0.2, "top_p": 0.9, "max_tokens": 100, "max_completion_tokens": 50,
            "stop": "END", "n": 2, "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5}));
        assert_eq!(
            out["generationConfig"],
            json!({"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 50, "stopSequences": ["END"],
                   "candidateCount": 2, "seed": 7, "presencePenalty": 0.5, "frequencyPenalty": -0.5})
        );
    }

    #[test]
    fn stop_lists_are_passed_as_stop_sequences() {
        let out = body(json!({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b"]}));
        assert_eq!(out["generationConfig"]["stopSequences"], json!(["a", "b"]));
    }

    #[test]
    fn bad_sampling_options_are_named() {
        for (field, value) in [
            ("temperature", json!("hot")),
            ("max_tokens", json!(-1)),
            ("n", json!(1.5)),
            ("seed", json!("s")),
            ("stop", json!([1])),
        ] {
            let mut req = json!({"messages": [{"role": "user", "content": "x"}]});
            req[field] = value;
            let err = translate(req).unwrap_err();
            assert_eq!(err.field(), Some(field));
        }
    }

    #[test]
    fn json_object_format_asks_for_json() {
        let out = body(json!({"messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"}}));
        assert_eq!(
            out["generationConfig"],
            json!({"responseMimeType": "application/json"})
        );
    }

    #[test]
    fn json_schema_format_asks_for_json_with_a_schema() {
        let out = body(json!({"messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "strict": true,
                "schema": {"type": "object", "additionalProperties": false,
                           "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}}}}));
        assert_eq!(
            out["generationConfig"],
            json!({"responseMimeType": "application/json", "responseSchema":
                {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}})
        );
    }

    #[test]
    fn text_format_adds_nothing() {
        let out = body(json!({"messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "text"}}));
        assert!(out.get("generationConfig").is_none());
    }

    #[test]
    fn a_conversation_of_only_system_messages_is_refused() {
        let err = translate(json!({"messages": [{"role": "system", "content": "x"}]})).unwrap_err();
        assert_eq!(err.field(), Some("messages"));
    }

    #[test]
    fn unknown_roles_are_refused() {
        let err = translate(json!({"messages": [{"role": "robot", "content": "x"}]})).unwrap_err();
        assert_eq!(err.field(), Some("messages.role"));
    }
}
