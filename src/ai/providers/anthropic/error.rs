//! Error bodies in Anthropic's format (`{"type":"error","error":{"type","message"}}`,
//! Anthropic API reference "Errors"): an Anthropic provider's mid-stream `error` event as the
//! gateway's error, and an OpenAI-format error (`{"error":{"message","type","code"}}`, see the
//! contract) as the Anthropic front door's body. A whole error answer from an Anthropic
//! provider is mapped by [`crate::ai::provider_error`], as every provider's is.

use serde_json::{json, Value};

use crate::ai::provider_error::{self, ProviderError};
use crate::ai::scrub::scrub_message;

/// The HTTP status Anthropic answers each error type with (Anthropic API reference,
/// "Errors"). A mid-stream `error` event has no status of its own (the stream's was 200), so
/// its type stands for the status it would have had.
fn status_for_type(anthropic_type: &str) -> u16 {
    match anthropic_type {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        // api_error and types added after this was written.
        _ => 500,
    }
}

/// The gateway's error for an `error` event in an Anthropic stream (`data` is the event's
/// data, `{"type":"error","error":{"type","message"}}`, or anything else a broken provider
/// sends there): mapped as a whole error answer of the status its type stands for, the
/// message scrubbed of `secrets` and everything credential-shaped.
pub fn stream_error(data: &[u8], secrets: &[&str]) -> ProviderError {
    let status = error_member(data)
        .as_ref()
        .and_then(|e| string_field(e, "type"))
        .map(status_for_type)
        .unwrap_or(500);
    provider_error::from_response(status, data, None, secrets)
}

/// OpenAI-format error types (OpenAI's own and the gateway's) → Anthropic error types.
fn anthropic_type_for(openai_type: &str) -> Option<&'static str> {
    Some(match openai_type {
        "invalid_request_error" => "invalid_request_error",
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "not_found_error" => "not_found_error",
        "rate_limit_error" | "requests" | "tokens" => "rate_limit_error",
        "insufficient_quota" => "billing_error",
        "timeout_error" => "timeout_error",
        "server_error" | "upstream_error" => "api_error",
        _ => return None,
    })
}

/// The Anthropic type an error status means when the body does not say (Anthropic API
/// reference, "Errors": 529 is `overloaded_error`; 503 means the same for OpenAI).
fn anthropic_type_for_status(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// The `error` member of a body, when the body is a JSON object with one.
fn error_member(body: &[u8]) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_slice::<Value>(body)
        .ok()?
        .get_mut("error")?
        .take()
    {
        Value::Object(error) => Some(error),
        _ => None,
    }
}

fn string_field<'a>(error: &'a serde_json::Map<String, Value>, field: &str) -> Option<&'a str> {
    error.get(field).and_then(Value::as_str)
}

/// An OpenAI-format error (status and body) as an Anthropic error body:
/// `{"type":"error","error":{"type","message"}}`. The type comes from the body's `type`
/// when it has an Anthropic counterpart, else from the status.
pub fn error_from_openai(status: u16, body: &[u8]) -> Vec<u8> {
    let error = error_member(body);
    let message = error
        .as_ref()
        .and_then(|e| string_field(e, "message"))
        // No credential-looking text passes, whoever calls this (provider errors, whole or
        // mid-stream, are mapped with the provider key by `provider_error` instead).
        .map(|m| scrub_message(m, &[]))
        .unwrap_or_else(|| format!("the provider answered with status {status}"));
    let anthropic_type = error
        .as_ref()
        .and_then(|e| string_field(e, "type"))
        .and_then(anthropic_type_for)
        .unwrap_or_else(|| anthropic_type_for_status(status));
    let body = json!({"type": "error", "error": {"type": anthropic_type, "message": message}});
    serde_json::to_vec(&body).expect("serialize JSON value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    fn anthropic_error(kind: &str, message: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"type": "error", "error": {"type": kind, "message": message}}))
            .unwrap()
    }

    #[test]
    fn openai_error_types_map_to_anthropic_types() {
        for (status, kind, anthropic) in [
            (400, "invalid_request_error", "invalid_request_error"),
            (401, "authentication_error", "authentication_error"),
            (429, "insufficient_quota", "billing_error"),
            (429, "tokens", "rate_limit_error"),
            (500, "server_error", "api_error"),
            (502, "upstream_error", "api_error"),
        ] {
            let openai =
                serde_json::to_vec(&json!({"error": {"message": "m", "type": kind, "code": null}}))
                    .unwrap();
            let body = json_of(&error_from_openai(status, &openai));
            assert_eq!(
                body,
                json!({"type": "error", "error": {"type": anthropic, "message": "m"}}),
                "{kind}"
            );
        }
    }

    #[test]
    fn openai_error_with_unknown_type_is_typed_by_its_status() {
        for (status, anthropic) in [
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (429, "rate_limit_error"),
            (503, "overloaded_error"),
            (500, "api_error"),
        ] {
            let openai = br#"{"error":{"message":"x","type":"weird","code":"y"}}"#;
            let body = json_of(&error_from_openai(status, openai));
            assert_eq!(body["error"]["type"], anthropic, "{status}");
        }
    }

    #[test]
    fn unparsable_openai_error_names_the_status() {
        let body = json_of(&error_from_openai(502, b"Bad Gateway"));
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": "api_error",
                   "message": "the provider answered with status 502"}})
        );
    }

    #[test]
    fn stream_errors_are_mapped_as_whole_answers_of_the_status_their_type_stands_for() {
        use crate::ai::provider_error::{ProviderErrorKind, CREDENTIAL_REFUSED};
        let key = "prv7Lm9Rt4Kp8Wz3Vn6Yb1Hc5Jd0FgTe";
        for (kind, status, expected, anthropic) in [
            (
                "overloaded_error",
                503,
                ProviderErrorKind::Overloaded,
                "overloaded_error",
            ),
            (
                "rate_limit_error",
                429,
                ProviderErrorKind::RateLimited,
                "rate_limit_error",
            ),
            (
                "billing_error",
                402,
                ProviderErrorKind::InsufficientQuota,
                "billing_error",
            ),
            (
                "request_too_large",
                413,
                ProviderErrorKind::InvalidRequest,
                "request_too_large",
            ),
            (
                "authentication_error",
                502,
                ProviderErrorKind::CredentialRefused,
                "api_error",
            ),
            ("api_error", 502, ProviderErrorKind::Failed, "api_error"),
            (
                "brand_new_error",
                502,
                ProviderErrorKind::Failed,
                "api_error",
            ),
        ] {
            let data = anthropic_error(kind, &format!("about {key}"));
            let error = stream_error(&data, &[key]);
            assert_eq!(
                (error.status, error.kind, error.anthropic_type()),
                (status, expected, anthropic),
                "{kind}"
            );
            assert!(
                !error.message.contains(&key[..8]),
                "{kind}: {}",
                error.message
            );
            if expected == ProviderErrorKind::CredentialRefused {
                assert_eq!(error.message, CREDENTIAL_REFUSED);
            }
        }
        let garbage = stream_error(format!("oops {key}").as_bytes(), &[key]);
        assert_eq!(garbage.kind, ProviderErrorKind::Failed);
        assert_eq!(garbage.message, "the provider answered with status 500");
    }
}
