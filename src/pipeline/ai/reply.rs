//! `on_response` on the AI front doors: a non-streamed answer's status, headers and text
//! (`resp.text`: the assistant's reply) go through the hook before the client sees them; a
//! stream's status and headers do (its text is not held back to be edited).

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use serde_json::Value;

use super::{respond, send_whole};
use crate::error::Dialect;
use crate::http1::BufConn;
use crate::http1::{push_header, RequestHead};
use crate::lua::ResponseInfo;
use crate::pipeline::ThreadState;
use crate::pipeline::{hooks, Failure, Outcome, RequestCtx};
use crate::snapshot::Snapshot;

/// Sends a whole answer (`body` in the front door's dialect, JSON) after `on_response`.
pub(super) async fn answer<S>(
    worker: &ThreadState,
    snapshot: &Snapshot,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    status: u16,
    body: Vec<u8>,
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    if !hooks::wants_response(snapshot, ctx) {
        return respond(client, head, ctx, status, "application/json", &body).await;
    }
    let mut parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let mut info = ResponseInfo {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        text: parsed.as_ref().and_then(|v| answer_text(ctx.dialect, v)),
        ..ResponseInfo::default()
    };
    hooks::response(worker, snapshot, ctx, &mut info)?;
    let body = match (&mut parsed, info.text_changed) {
        (Some(value), true) => {
            set_answer_text(ctx.dialect, value, info.text.as_deref().unwrap_or(""));
            serde_json::to_vec(value).expect("JSON values serialize")
        }
        _ => body,
    };
    let headers = |out: &mut Vec<u8>| push_edited_headers(out, &info);
    send_whole(client, head, ctx, info.status, headers, &body).await
}

/// The response head of a stream, after `on_response` (status and headers only): the extra
/// header lines to write and the status to send.
pub(super) fn stream_head(
    worker: &ThreadState,
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
) -> Result<Option<ResponseInfo>, Failure> {
    if !hooks::wants_response(snapshot, ctx) {
        return Ok(None);
    }
    let mut info = ResponseInfo {
        status: 200,
        headers: vec![
            ("content-type".into(), "text/event-stream".into()),
            ("cache-control".into(), "no-cache".into()),
        ],
        ..ResponseInfo::default()
    };
    hooks::response(worker, snapshot, ctx, &mut info)?;
    Ok(Some(info))
}

/// Writes the header lines a hook left in `info` (framing, connection and the gateway's own
/// headers excepted: those are the gateway's to write).
pub(super) fn push_edited_headers(out: &mut Vec<u8>, info: &ResponseInfo) {
    for (name, value) in &info.headers {
        let own = [
            "content-length",
            "transfer-encoding",
            "connection",
            "keep-alive",
            "x-request-id",
        ];
        if own.iter().any(|o| name.eq_ignore_ascii_case(o)) {
            continue;
        }
        push_header(out, name, value.as_bytes());
    }
}

/// The assistant's text in an answer: OpenAI's `choices[0].message.content`, or Anthropic's
/// text blocks joined. `None` for bodies without one (errors, tool-call-only answers).
fn answer_text(dialect: Dialect, body: &Value) -> Option<String> {
    match dialect {
        Dialect::OpenAi => body
            .pointer("/choices/0/message/content")?
            .as_str()
            .map(str::to_owned),
        Dialect::Anthropic => {
            let texts: Vec<&str> = body
                .get("content")?
                .as_array()?
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            (!texts.is_empty()).then(|| texts.concat())
        }
    }
}

/// Replaces the assistant's text with `text`: OpenAI's first choice content; in Anthropic's
/// content list the text blocks become one (where the first was), other blocks stay.
fn set_answer_text(dialect: Dialect, body: &mut Value, text: &str) {
    match dialect {
        Dialect::OpenAi => {
            if let Some(message) = body.pointer_mut("/choices/0/message") {
                if let Some(message) = message.as_object_mut() {
                    message.insert("content".into(), Value::String(text.to_owned()));
                }
            }
        }
        Dialect::Anthropic => {
            let Some(blocks) = body.get_mut("content").and_then(Value::as_array_mut) else {
                return;
            };
            let is_text = |b: &Value| b.get("type").and_then(Value::as_str) == Some("text");
            let at = blocks.iter().position(is_text).unwrap_or(0);
            blocks.retain(|b| !is_text(b));
            let block = serde_json::json!({"type": "text", "text": text});
            blocks.insert(at.min(blocks.len()), block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_text_is_the_first_choice_content() {
        let body = json!({"choices": [{"message": {"role": "assistant", "content": "hi"}}]});
        assert_eq!(answer_text(Dialect::OpenAi, &body).as_deref(), Some("hi"));
    }

    #[test]
    fn openai_answer_without_content_has_no_text() {
        let body = json!({"choices": [{"message": {"role": "assistant", "content": null,
            "tool_calls": []}}]});
        assert_eq!(answer_text(Dialect::OpenAi, &body), None);
        assert_eq!(answer_text(Dialect::OpenAi, &json!({"error": {}})), None);
    }

    #[test]
    fn setting_openai_text_changes_only_the_content() {
        let mut body = json!({"id": "x", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]});
        set_answer_text(Dialect::OpenAi, &mut body, "bye");
        assert_eq!(
            body,
            json!({"id": "x", "choices": [{"index": 0,
                "message": {"role": "assistant", "content": "bye"}, "finish_reason": "stop"}]})
        );
    }

    #[test]
    fn anthropic_text_joins_the_text_blocks() {
        let body = json!({"content": [{"type": "text", "text": "a"},
            {"type": "tool_use", "id": "t", "name": "f", "input": {}},
            {"type": "text", "text": "b"}]});
        assert_eq!(
            answer_text(Dialect::Anthropic, &body).as_deref(),
            Some("ab")
        );
    }

    #[test]
    fn setting_anthropic_text_keeps_tool_blocks_and_merges_text_where_it_began() {
        let mut body = json!({"content": [{"type": "text", "text": "a"},
            {"type": "tool_use", "id": "t", "name": "f", "input": {}},
            {"type": "text", "text": "b"}]});
        set_answer_text(Dialect::Anthropic, &mut body, "[redacted]");
        assert_eq!(
            body,
            json!({"content": [{"type": "text", "text": "[redacted]"},
                {"type": "tool_use", "id": "t", "name": "f", "input": {}}]})
        );
    }

    #[test]
    fn edited_headers_leave_framing_to_the_gateway() {
        let info = ResponseInfo {
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("content-length".into(), "1".into()),
                ("x-policy".into(), "checked".into()),
                ("connection".into(), "close".into()),
            ],
            ..ResponseInfo::default()
        };
        let mut out = Vec::new();
        push_edited_headers(&mut out, &info);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "content-type: application/json\r\nx-policy: checked\r\n"
        );
    }
}
