//! Gemini error bodies as OpenAI error bodies.
//!
//! Gemini answers errors in Google's API format (Gemini API "Troubleshooting"; AIP-193):
//! `{"error": {"code": 429, "message": "..", "status": "RESOURCE_EXHAUSTED", "details": [..]}}`,
//! where `status` is the gRPC code name. OpenAI's is `{"error": {"message", "type", "param",
//! "code"}}`.

use serde_json::{json, Value};

use crate::ai::provider_error::{self, ProviderError};
use crate::ai::scrub::scrub_message;

/// The OpenAI error body for a Gemini error response of HTTP `status`. The message is
/// Gemini's; the type comes from the gRPC status (else the HTTP status); the code is the gRPC
/// status in lower case (`resource_exhausted`). A body that is not Gemini's error format gets
/// a generic message naming the status.
pub fn error_to_openai(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    // A stream requested without `alt=sse` answers errors inside a JSON array.
    let envelope = match &parsed {
        Some(Value::Array(items)) => items.first(),
        other => other.as_ref(),
    };
    let error = envelope
        .and_then(|e| e.get("error"))
        .filter(|e| e.is_object());
    let body = json!({ "error": openai_error(status, error) });
    serde_json::to_vec(&body).expect("serialize JSON value")
}

/// The OpenAI `error` object for Gemini's `error` object (`None` when there was none).
pub(super) fn openai_error(status: u16, error: Option<&Value>) -> Value {
    let field = |name: &str| error.and_then(|e| e.get(name));
    let grpc_status = field("status").and_then(Value::as_str);
    let message = match field("message").and_then(Value::as_str) {
        // No credential-looking text passes, whoever calls this (provider errors, whole or
        // mid-stream, are mapped with the provider key by `provider_error` instead).
        Some(message) if !message.is_empty() => scrub_message(message, &[]),
        _ => format!("the Gemini API answered with HTTP status {status}"),
    };
    let kind = if has_reason(error, "API_KEY_INVALID") {
        // Gemini says 400 INVALID_ARGUMENT for a bad key: to the client it is an auth failure.
        "authentication_error"
    } else {
        error_type(status, grpc_status)
    };
    json!({
        "message": message,
        "type": kind,
        "param": null,
        "code": grpc_status.map(str::to_ascii_lowercase),
    })
}

/// The gateway's error for an error object inside a Gemini stream (`data` is the event's
/// data, `{"error":{"code","message","status",..}}`): mapped as a whole error answer of the
/// HTTP status it names (its `code`, else the one its gRPC status stands for), the message
/// scrubbed of `secrets` and everything credential-shaped.
pub(super) fn stream_error(error: &Value, data: &[u8], secrets: &[&str]) -> ProviderError {
    let code = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..=599).contains(c));
    let grpc_status = error.get("status").and_then(Value::as_str);
    let status = code.unwrap_or_else(|| status_for_grpc(grpc_status));
    provider_error::from_response(status, data, None, secrets)
}

/// The HTTP status of a gRPC status name (Google's "HTTP mapping" of the canonical codes).
fn status_for_grpc(grpc_status: Option<&str>) -> u16 {
    match grpc_status {
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE") => 400,
        Some("UNAUTHENTICATED") => 401,
        Some("PERMISSION_DENIED") => 403,
        Some("NOT_FOUND") => 404,
        Some("ABORTED" | "ALREADY_EXISTS") => 409,
        Some("RESOURCE_EXHAUSTED") => 429,
        Some("CANCELLED") => 499,
        Some("UNIMPLEMENTED") => 501,
        Some("UNAVAILABLE") => 503,
        Some("DEADLINE_EXCEEDED") => 504,
        _ => 500,
    }
}

/// Whether one of the error's `details` is a `google.rpc.ErrorInfo` with this `reason`.
fn has_reason(error: Option<&Value>, reason: &str) -> bool {
    error
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array)
        .is_some_and(|details| {
            details
                .iter()
                .any(|d| d.get("reason").and_then(Value::as_str) == Some(reason))
        })
}

/// The OpenAI error type for a gRPC status name (Google's "HTTP mapping" of the canonical
/// codes), else for the HTTP status.
fn error_type(status: u16, grpc_status: Option<&str>) -> &'static str {
    match grpc_status {
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE") => {
            "invalid_request_error"
        }
        Some("UNAUTHENTICATED") => "authentication_error",
        Some("PERMISSION_DENIED") => "permission_error",
        Some("NOT_FOUND") => "not_found_error",
        Some("RESOURCE_EXHAUSTED") => "rate_limit_error",
        Some("DEADLINE_EXCEEDED") => "timeout_error",
        _ => match status {
            400 | 413 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            408 | 504 => "timeout_error",
            429 => "rate_limit_error",
            _ => "server_error",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(status: u16, body: &str) -> Value {
        serde_json::from_slice(&error_to_openai(status, body.as_bytes())).unwrap()
    }

    #[test]
    fn rate_limit_error_keeps_the_message() {
        let out = translate(
            429,
            r#"{"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED",
                "details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"22s"}]}}"#,
        );
        assert_eq!(
            out,
            json!({"error": {"message": "You exceeded your current quota.", "type": "rate_limit_error",
                             "param": null, "code": "resource_exhausted"}})
        );
    }

    #[test]
    fn grpc_statuses_map_to_openai_types() {
        let cases = [
            (400, "INVALID_ARGUMENT", "invalid_request_error"),
            (400, "FAILED_PRECONDITION", "invalid_request_error"),
            (401, "UNAUTHENTICATED", "authentication_error"),
            (403, "PERMISSION_DENIED", "permission_error"),
            (404, "NOT_FOUND", "not_found_error"),
            (500, "INTERNAL", "server_error"),
            (503, "UNAVAILABLE", "server_error"),
            (504, "DEADLINE_EXCEEDED", "timeout_error"),
        ];
        for (status, grpc, kind) in cases {
            let body =
                format!(r#"{{"error":{{"code":{status},"message":"m","status":"{grpc}"}}}}"#);
            assert_eq!(translate(status, &body)["error"]["type"], kind, "{grpc}");
        }
    }

    #[test]
    fn invalid_api_key_is_an_authentication_error() {
        let out = translate(
            400,
            r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT",
                "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#,
        );
        assert_eq!(out["error"]["type"], "authentication_error");
        assert_eq!(out["error"]["code"], "invalid_argument");
    }

    #[test]
    fn error_inside_an_array_is_read() {
        let out = translate(
            404,
            r#"[{"error":{"code":404,"message":"models/x is not found","status":"NOT_FOUND"}}]"#,
        );
        assert_eq!(out["error"]["message"], "models/x is not found");
        assert_eq!(out["error"]["type"], "not_found_error");
    }

    #[test]
    fn stream_error_status_is_its_code_else_its_grpc_status() {
        use crate::ai::provider_error::ProviderErrorKind;
        for (error, status, kind) in [
            (
                json!({"code": 429, "message": "m", "status": "RESOURCE_EXHAUSTED"}),
                429,
                ProviderErrorKind::RateLimited,
            ),
            (
                json!({"message": "m", "status": "UNAVAILABLE"}),
                503,
                ProviderErrorKind::Overloaded,
            ),
            (
                json!({"code": 0, "message": "m", "status": "NOT_FOUND"}),
                404,
                ProviderErrorKind::NotFound,
            ),
            (json!({"message": "m"}), 502, ProviderErrorKind::Failed),
            (
                json!({"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT",
                    "details": [{"reason": "API_KEY_INVALID"}]}),
                502,
                ProviderErrorKind::CredentialRefused,
            ),
        ] {
            let data = json!({ "error": error }).to_string();
            let mapped = stream_error(&error, data.as_bytes(), &[]);
            assert_eq!((mapped.status, mapped.kind), (status, kind), "{error}");
        }
    }

    #[test]
    fn body_that_is_not_gemini_json_gets_a_generic_message() {
        let out = translate(502, "<html>Bad Gateway</html>");
        assert_eq!(
            out,
            json!({"error": {"message": "the Gemini API answered with HTTP status 502",
                             "type": "server_error", "param": null, "code": null}})
        );
        assert_eq!(translate(429, "")["error"]["type"], "rate_limit_error");
    }
}
