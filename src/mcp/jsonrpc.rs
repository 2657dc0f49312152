//! JSON-RPC 2.0 as MCP uses it: parsing a client's POST body within bounds, and the
//! messages the gateway writes.
//!
//! Everything here is bounded before `serde_json` sees it: the body's size (by the caller),
//! its nesting depth ([`MAX_DEPTH`], scanned without recursion) and a batch's length
//! ([`MAX_BATCH`]).

use serde_json::{json, Map, Value};

/// Deepest nesting of arrays and objects accepted in a client's message (or an upstream's):
/// arguments are passed through, never interpreted, so anything deeper is refused before a
/// recursive parser sees it.
pub const MAX_DEPTH: usize = 64;

/// Most messages in one batch (2025-03-26 only).
pub const MAX_BATCH: usize = 32;

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// No such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Bad parameters (an unknown tool, a bad cursor).
pub const INVALID_PARAMS: i64 = -32602;
/// The gateway failed.
pub const INTERNAL_ERROR: i64 = -32603;
/// The owning MCP server is unavailable or failed (implementation-defined server error).
pub const SERVER_UNAVAILABLE: i64 = -32001;
/// A limit refused the call.
pub const RATE_LIMITED: i64 = -32029;
/// The gateway's `on_tool_call` hook denied the call.
pub const DENIED: i64 = -32003;
/// A stateless request's headers disagree with its envelope.
pub const HEADER_MISMATCH: i64 = -32020;
/// A stateless request names a revision the gateway does not serve (`data.supported`).
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// The HTTP status of a stateless-revision answer carrying the error `code` (the revision
/// maps request errors to 400 and an unknown method to 404; anything else is 200).
pub fn stateless_status(code: i64) -> u16 {
    match code {
        PARSE_ERROR
        | INVALID_REQUEST
        | INVALID_PARAMS
        | HEADER_MISMATCH
        | UNSUPPORTED_PROTOCOL_VERSION => 400,
        METHOD_NOT_FOUND => 404,
        _ => 200,
    }
}

/// One message a client sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// `None` for a notification, else the request's id (a string or a number).
    pub id: Option<Value>,
    pub method: String,
    /// `params` (an object; absent = empty).
    pub params: Map<String, Value>,
}

/// A client's POST body: one message or a batch.
#[derive(Debug)]
pub enum Body {
    Single(Parsed),
    Batch(Vec<Parsed>),
}

/// A message, or why it is not one (answered with its error in place).
#[derive(Debug)]
pub enum Parsed {
    /// A request or a notification.
    Message(Incoming),
    /// A response from the client (to a server-initiated request, which this gateway never
    /// makes): accepted and dropped.
    Response,
    /// Not a valid message; the id when one could be read.
    Invalid(Option<Value>, &'static str),
}

/// Why a whole body is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON, or nested deeper than [`MAX_DEPTH`].
    Parse(&'static str),
    /// A batch that is empty or longer than [`MAX_BATCH`].
    Batch(&'static str),
}

/// Parses a POST body.
pub fn parse_body(bytes: &[u8]) -> Result<Body, BodyError> {
    if !depth_within(bytes, MAX_DEPTH) {
        return Err(BodyError::Parse("nested deeper than the gateway accepts"));
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|_| BodyError::Parse("not valid JSON"))?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(BodyError::Batch("an empty batch"));
            }
            if items.len() > MAX_BATCH {
                return Err(BodyError::Batch("a batch longer than the gateway accepts"));
            }
            Ok(Body::Batch(items.into_iter().map(parse_message).collect()))
        }
        other => Ok(Body::Single(parse_message(other))),
    }
}

/// One message of a body.
fn parse_message(value: Value) -> Parsed {
    let Value::Object(mut object) = value else {
        return Parsed::Invalid(None, "a message must be an object");
    };
    let id = object.remove("id");
    let id_ok = matches!(id, None | Some(Value::String(_)) | Some(Value::Number(_)));
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Parsed::Invalid(id.filter(|_| id_ok), "jsonrpc must be \"2.0\"");
    }
    if !id_ok {
        return Parsed::Invalid(None, "id must be a string or a number");
    }
    let method = match object.remove("method") {
        Some(Value::String(m)) if m.len() <= 256 => m,
        Some(_) => return Parsed::Invalid(id, "method must be a string of at most 256 bytes"),
        None if object.contains_key("result") || object.contains_key("error") => {
            return Parsed::Response
        }
        None => return Parsed::Invalid(id, "method is required"),
    };
    let params = match object.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Parsed::Invalid(id, "params must be an object"),
    };
    Parsed::Message(Incoming { id, method, params })
}

/// Whether the JSON text's arrays and objects nest at most `max` deep (brackets inside
/// strings are skipped). Iterative and linear, so it is safe on any input.
pub fn depth_within(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// A success response.
pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error response (`id` null when the request's could not be read).
pub fn error(id: Option<&Value>, code: i64, message: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": {"code": code, "message": message},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_and_a_notification_parse() {
        let body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"x"}}"#;
        let Ok(Body::Single(Parsed::Message(m))) = parse_body(body) else {
            panic!("not a message")
        };
        assert_eq!(m.id, Some(json!(7)));
        assert_eq!(m.method, "tools/list");
        assert_eq!(m.params["cursor"], "x");
        let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let Ok(Body::Single(Parsed::Message(n))) = parse_body(note) else {
            panic!("not a message")
        };
        assert_eq!(n.id, None);
    }

    #[test]
    fn nesting_deeper_than_the_bound_is_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(matches!(
            parse_body(deep.as_bytes()),
            Err(BodyError::Parse(_))
        ));
        let ok = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"m","params":{{"a":{}{}}}}}"#,
            "[".repeat(MAX_DEPTH - 3),
            "]".repeat(MAX_DEPTH - 3)
        );
        assert!(matches!(
            parse_body(ok.as_bytes()),
            Ok(Body::Single(Parsed::Message(_)))
        ));
        // Brackets inside strings do not count.
        let quoted = format!(r#"{{"a":"{}"}}"#, "[".repeat(1000));
        assert!(depth_within(quoted.as_bytes(), 2));
    }

    #[test]
    fn batches_are_bounded() {
        let one = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        let batch = |n: usize| format!("[{}]", vec![one; n].join(","));
        assert!(
            matches!(parse_body(batch(MAX_BATCH).as_bytes()), Ok(Body::Batch(b)) if b.len() == MAX_BATCH)
        );
        assert!(matches!(
            parse_body(batch(MAX_BATCH + 1).as_bytes()),
            Err(BodyError::Batch(_))
        ));
        assert!(matches!(parse_body(b"[]"), Err(BodyError::Batch(_))));
    }

    #[test]
    fn invalid_messages_keep_their_id_for_the_error() {
        let Ok(Body::Single(Parsed::Invalid(id, _))) =
            parse_body(br#"{"jsonrpc":"1.0","id":"a","method":"x"}"#)
        else {
            panic!("accepted")
        };
        assert_eq!(id, Some(json!("a")));
        assert!(matches!(
            parse_body(br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#),
            Ok(Body::Single(Parsed::Invalid(None, _)))
        ));
        assert!(matches!(parse_body(b"{nope"), Err(BodyError::Parse(_))));
    }
}
