//! The client-facing model name in a provider's answer.
//!
//! Providers answer with the model as they know it (`upstream_model`, or a dated snapshot of
//! it); a client that asked for `gpt-4o-mini` through the gateway must see `gpt-4o-mini`, as
//! the `x-credentialflow-model` header says, whichever upstream name served it. Answers that
//! pass through (OpenAI-format bodies and chunks, Anthropic's own messages and events) get
//! their `model` member replaced here; translated answers are built with the client-facing
//! name already.
//!
//! The replacement works on the JSON text without parsing it: streamed chunks are relayed
//! byte for byte otherwise, and parsing every chunk only to change one member would cost
//! more than the relay itself. It is exact for valid JSON: inside a JSON string every `"` is
//! escaped, so the bytes `"model"` followed by `:` can only be an object key.

use super::sse::{encode_event, SseEvent};

/// The first `"model": "<string>"` member of `json`: where its string value starts (at its
/// opening quote) and ends (just past its closing quote).
fn find_model_value(json: &[u8]) -> Option<(usize, usize)> {
    const KEY: &[u8] = b"\"model\"";
    let mut from = 0;
    while let Some(at) = json[from..].windows(KEY.len()).position(|w| w == KEY) {
        let key_start = from + at;
        let mut i = skip_ws(json, key_start + KEY.len());
        if json.get(i) == Some(&b':') {
            i = skip_ws(json, i + 1);
            if json.get(i) != Some(&b'"') {
                // `"model": null` or another non-string: nothing to replace.
                return None;
            }
            let start = i;
            i += 1;
            while i < json.len() {
                match json[i] {
                    b'\\' => i += 2,
                    b'"' => return Some((start, i + 1)),
                    _ => i += 1,
                }
            }
            return None;
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

/// `json` with the value of its first `model` member replaced by `model`; `None` when it has
/// no string `model` member or already names `model` (nothing to change).
pub fn replace_model(json: &str, model: &str) -> Option<String> {
    let (start, end) = find_model_value(json.as_bytes())?;
    let quoted = serde_json::to_string(model).expect("strings serialize");
    if json[start..end] == *quoted {
        return None;
    }
    let mut out = String::with_capacity(json.len() + quoted.len());
    out.push_str(&json[..start]);
    out.push_str(&quoted);
    out.push_str(&json[end..]);
    Some(out)
}

/// A whole JSON answer with its `model` member naming `model` (unchanged when it already
/// does, or has none).
pub fn rename_body(body: Vec<u8>, model: &str) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(&body) else {
        return body;
    };
    match replace_model(text, model) {
        Some(renamed) => renamed.into_bytes(),
        None => body,
    }
}

/// `event` with the `model` member of its data naming `model`; `None` when nothing changes
/// (the caller relays the event's own bytes).
pub fn rename_event(event: &SseEvent, model: &str) -> Option<SseEvent> {
    if !event.has_data || !event.data.contains("\"model\"") {
        return None;
    }
    let data = replace_model(&event.data, model)?;
    let mut raw = Vec::with_capacity(data.len() + 32);
    encode_event(event.event.as_deref(), &data, &mut raw);
    Some(SseEvent {
        event: event.event.clone(),
        data,
        has_data: true,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn the_first_model_member_is_replaced_and_the_rest_kept_byte_for_byte() {
        let chunk = r#"{"id":"c","object":"chat.completion.chunk","model" : "gpt-4o-mini-2024-07-18","choices":[{"delta":{"content":"the \"model\": x"}}]}"#;
        let renamed = replace_model(chunk, "gpt-4o-mini").unwrap();
        assert_eq!(
            renamed,
            r#"{"id":"c","object":"chat.completion.chunk","model" : "gpt-4o-mini","choices":[{"delta":{"content":"the \"model\": x"}}]}"#
        );
        let value: Value = serde_json::from_str(&renamed).unwrap();
        assert_eq!(value["model"], "gpt-4o-mini");
    }

    #[test]
    fn escaped_quotes_in_text_are_never_taken_for_the_key() {
        let body = r#"{"content":"say \"model\":\"x\"","model":"up"}"#;
        let renamed = replace_model(body, "client").unwrap();
        let value: Value = serde_json::from_str(&renamed).unwrap();
        assert_eq!(value["content"], r#"say "model":"x""#);
        assert_eq!(value["model"], "client");
    }

    #[test]
    fn names_that_need_escaping_stay_valid_json() {
        let renamed = replace_model(r#"{"model":"a\"b"}"#, "org/m:\"1\"").unwrap();
        let value: Value = serde_json::from_str(&renamed).unwrap();
        assert_eq!(value["model"], "org/m:\"1\"");
    }

    #[test]
    fn nothing_changes_without_a_string_model_or_when_it_is_already_the_name() {
        assert_eq!(replace_model(r#"{"id":"x"}"#, "m"), None);
        assert_eq!(replace_model(r#"{"model":null}"#, "m"), None);
        assert_eq!(replace_model(r#"{"model":"m"}"#, "m"), None);
        assert_eq!(replace_model(r#"{"model":"unterminated"#, "m"), None);
        let body = br#"{"model":"m"}"#.to_vec();
        assert_eq!(rename_body(body.clone(), "m"), body);
    }

    #[test]
    fn an_event_is_re_encoded_with_its_name_kept() {
        let event = SseEvent {
            event: Some("message_start".into()),
            data: r#"{"type":"message_start","message":{"model":"claude-x-2025"}}"#.into(),
            has_data: true,
            raw: Vec::new(),
        };
        let renamed = rename_event(&event, "claude").unwrap();
        assert_eq!(
            String::from_utf8(renamed.raw).unwrap(),
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude\"}}\n\n"
        );
        let done = SseEvent {
            event: None,
            data: "[DONE]".into(),
            has_data: true,
            raw: b"data: [DONE]\n\n".to_vec(),
        };
        assert!(rename_event(&done, "claude").is_none());
    }
}
