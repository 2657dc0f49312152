//! A provider's error answer as the gateway's own error: one mapping for every provider kind,
//! front door and endpoint.
//!
//! The client sees the provider's status class with the gateway's error types, never the
//! provider's body:
//!
//! | provider says | client gets |
//! |---|---|
//! | 401, 403, 407, or a bad key by any status (Gemini's 400 `API_KEY_INVALID`) | 502 `upstream_error`: the gateway's provider key is at fault, not the client |
//! | 429 | 429 `rate_limit_error` (`insufficient_quota` when the provider says so), with its `Retry-After` |
//! | 404 | 404 `not_found_error` |
//! | 408 | 408 `timeout_error` |
//! | 400, 413, 422 and any other 4xx | the same status, `invalid_request_error` |
//! | 503, 529 (overloaded) | 503 `upstream_error` (`overloaded_error` on `/v1/messages`), with its `Retry-After` |
//! | any other status | 502 `upstream_error` |
//!
//! The message is the provider's, through [`scrub_message`]: credentials removed, at most
//! [`super::scrub::MAX_MESSAGE_CHARS`] characters. `error.code` is the provider's code (or
//! type, or gRPC status) when it is a short identifier, so clients can still tell
//! `context_length_exceeded` from other 400s.

use serde_json::Value;

use super::scrub::scrub_message;
use crate::error::{anthropic_error_body, error_body, Dialect};

/// Largest provider error body read: real ones are a few hundred bytes, and only a bounded
/// message is kept from it.
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// Largest `Retry-After` passed on, in seconds: a provider asking for more is not waited on
/// by any client anyway.
pub const MAX_RETRY_AFTER_SECS: u64 = 3600;

/// The message of every credential refusal (the provider's own words would be about the key).
pub const CREDENTIAL_REFUSED: &str = "the provider refused the gateway's credential";

/// Longest provider code passed on as `error.code`.
const MAX_CODE_LEN: usize = 64;

/// What kind of failure a provider reported, in the gateway's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderErrorKind {
    /// The provider refused the gateway's own key.
    CredentialRefused,
    /// The request was refused as invalid (400, 413, 422, other 4xx).
    InvalidRequest,
    /// The model or resource does not exist at the provider.
    NotFound,
    /// The provider's rate limit.
    RateLimited,
    /// The provider's quota or billing limit.
    InsufficientQuota,
    /// The provider timed out waiting for the request (408).
    Timeout,
    /// The provider is overloaded (503, 529).
    Overloaded,
    /// Any other provider failure (5xx).
    Failed,
}

/// A provider's error, ready to answer the client with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    /// The status the provider answered with (for the access log).
    pub provider_status: u16,
    /// The status the client gets.
    pub status: u16,
    /// What failed.
    pub kind: ProviderErrorKind,
    /// `error.code` on the OpenAI front doors.
    pub code: String,
    /// `error.message`: scrubbed and bounded.
    pub message: String,
    /// `Retry-After` in whole seconds, on 429 and 503 answers that had one.
    pub retry_after_secs: Option<u64>,
}

/// The gateway's error for a provider's error answer: its `status`, its `body` (in any
/// provider's format, or none) and its `Retry-After` header. `secrets` are removed from the
/// message with everything else that looks like a credential (see [`scrub_message`]).
pub fn from_response(
    status: u16,
    body: &[u8],
    retry_after: Option<&[u8]>,
    secrets: &[&str],
) -> ProviderError {
    let fields = ErrorFields::parse(body);
    let kind = kind_of(status, &fields);
    let client_status = match kind {
        ProviderErrorKind::CredentialRefused | ProviderErrorKind::Failed => 502,
        ProviderErrorKind::Overloaded => 503,
        _ => status,
    };
    let message = match kind {
        ProviderErrorKind::CredentialRefused => CREDENTIAL_REFUSED.to_string(),
        _ => match fields.message.as_deref().map(|m| scrub_message(m, secrets)) {
            Some(m) if !m.trim().is_empty() => m,
            _ => format!("the provider answered with status {status}"),
        },
    };
    let code = match kind {
        ProviderErrorKind::CredentialRefused => "provider_credential_refused".to_string(),
        _ => fields
            .code_candidates()
            .find_map(|c| safe_code(c, secrets))
            .unwrap_or_else(|| default_code(kind).to_string()),
    };
    let retry_after_secs = match client_status {
        429 | 503 => retry_after
            .and_then(parse_retry_after)
            .or(fields.retry_delay_secs),
        _ => None,
    };
    ProviderError {
        provider_status: status,
        status: client_status,
        kind,
        code,
        message,
        retry_after_secs,
    }
}

impl ProviderError {
    /// Whether another attempt (or a fallback model) may do better: the provider's own
    /// trouble (its key, its limits, its failures), not the request's.
    pub fn worth_retrying(&self) -> bool {
        matches!(
            self.kind,
            ProviderErrorKind::CredentialRefused
                | ProviderErrorKind::RateLimited
                | ProviderErrorKind::InsufficientQuota
                | ProviderErrorKind::Overloaded
                | ProviderErrorKind::Failed
        )
    }

    /// `error.type` on the OpenAI front doors (the contract's names).
    pub fn openai_type(&self) -> &'static str {
        match self.kind {
            ProviderErrorKind::CredentialRefused
            | ProviderErrorKind::Overloaded
            | ProviderErrorKind::Failed => "upstream_error",
            ProviderErrorKind::InvalidRequest => "invalid_request_error",
            ProviderErrorKind::NotFound => "not_found_error",
            ProviderErrorKind::RateLimited => "rate_limit_error",
            ProviderErrorKind::InsufficientQuota => "insufficient_quota",
            ProviderErrorKind::Timeout => "timeout_error",
        }
    }

    /// `error.type` on `/v1/messages` (Anthropic API reference, "Errors").
    pub fn anthropic_type(&self) -> &'static str {
        match self.kind {
            ProviderErrorKind::CredentialRefused | ProviderErrorKind::Failed => "api_error",
            ProviderErrorKind::Overloaded => "overloaded_error",
            ProviderErrorKind::InvalidRequest if self.status == 413 => "request_too_large",
            ProviderErrorKind::InvalidRequest => "invalid_request_error",
            ProviderErrorKind::NotFound => "not_found_error",
            ProviderErrorKind::RateLimited => "rate_limit_error",
            ProviderErrorKind::InsufficientQuota => "billing_error",
            ProviderErrorKind::Timeout => "timeout_error",
        }
    }

    /// The JSON error body in `dialect`.
    pub fn body(&self, dialect: Dialect) -> String {
        match dialect {
            Dialect::OpenAi => error_body(self.openai_type(), &self.code, &self.message),
            Dialect::Anthropic => anthropic_error_body(self.anthropic_type(), &self.message),
        }
    }
}

/// What the gateway reads from an error body. The formats differ but the members used are
/// the same: `{"error":{"message","type","code"}}` (OpenAI, Azure),
/// `{"type":"error","error":{"type","message"}}` (Anthropic), `{"error":{"code","message",
/// "status","details"}}` (Google, possibly inside a JSON array).
#[derive(Default)]
struct ErrorFields {
    message: Option<String>,
    error_type: Option<String>,
    code: Option<String>,
    grpc_status: Option<String>,
    /// `google.rpc.ErrorInfo` reasons among the details.
    reasons: Vec<String>,
    /// `google.rpc.RetryInfo.retryDelay`, in whole seconds.
    retry_delay_secs: Option<u64>,
}

impl ErrorFields {
    fn parse(body: &[u8]) -> ErrorFields {
        let Ok(parsed) = serde_json::from_slice::<Value>(body) else {
            return ErrorFields::default();
        };
        // A Gemini stream requested without `alt=sse` answers errors inside a JSON array.
        let envelope = match &parsed {
            Value::Array(items) => items.first().unwrap_or(&Value::Null),
            other => other,
        };
        let string = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let error = match envelope.get("error") {
            Some(Value::String(message)) => {
                return ErrorFields {
                    message: Some(message.clone()),
                    ..ErrorFields::default()
                }
            }
            Some(error @ Value::Object(_)) => error,
            _ => {
                return ErrorFields {
                    message: string(envelope.get("message")),
                    ..ErrorFields::default()
                }
            }
        };
        let code = match error.get("code") {
            Some(Value::String(code)) => Some(code.clone()),
            _ => None,
        };
        let details = error.get("details").and_then(Value::as_array);
        let reasons = details
            .into_iter()
            .flatten()
            .filter_map(|d| d.get("reason").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        let retry_delay_secs = details
            .into_iter()
            .flatten()
            .filter_map(|d| d.get("retryDelay").and_then(Value::as_str))
            .find_map(parse_duration_secs);
        ErrorFields {
            message: string(error.get("message")),
            error_type: string(error.get("type")),
            code,
            grpc_status: string(error.get("status")),
            reasons,
            retry_delay_secs,
        }
    }

    /// What may become `error.code`, best first.
    fn code_candidates(&self) -> impl Iterator<Item = &str> {
        [&self.code, &self.grpc_status, &self.error_type]
            .into_iter()
            .filter_map(|c| c.as_deref())
    }

    /// Whether the body names a type or status, whatever its format.
    fn says(&self, names: &[&str]) -> bool {
        [&self.error_type, &self.code, &self.grpc_status]
            .into_iter()
            .filter_map(|v| v.as_deref())
            .any(|v| names.iter().any(|n| v.eq_ignore_ascii_case(n)))
    }
}

fn kind_of(status: u16, fields: &ErrorFields) -> ProviderErrorKind {
    // Google answers a bad key with 400 INVALID_ARGUMENT and this reason.
    let bad_key = fields.reasons.iter().any(|r| r == "API_KEY_INVALID");
    match status {
        401 | 403 | 407 => ProviderErrorKind::CredentialRefused,
        _ if bad_key => ProviderErrorKind::CredentialRefused,
        402 => ProviderErrorKind::InsufficientQuota,
        429 if fields.says(&["insufficient_quota", "billing_error"]) => {
            ProviderErrorKind::InsufficientQuota
        }
        429 => ProviderErrorKind::RateLimited,
        404 => ProviderErrorKind::NotFound,
        408 => ProviderErrorKind::Timeout,
        400..=499 => ProviderErrorKind::InvalidRequest,
        503 | 529 => ProviderErrorKind::Overloaded,
        _ => ProviderErrorKind::Failed,
    }
}

fn default_code(kind: ProviderErrorKind) -> &'static str {
    match kind {
        ProviderErrorKind::CredentialRefused => "provider_credential_refused",
        ProviderErrorKind::InvalidRequest => "invalid_request",
        ProviderErrorKind::NotFound => "not_found",
        ProviderErrorKind::RateLimited => "rate_limit_exceeded",
        ProviderErrorKind::InsufficientQuota => "insufficient_quota",
        ProviderErrorKind::Timeout => "timeout",
        ProviderErrorKind::Overloaded => "upstream_overloaded",
        ProviderErrorKind::Failed => "upstream_error",
    }
}

/// A provider code as `error.code`, in lower case: only a short identifier that the scrubber
/// leaves alone (a code is no place for a credential, but a provider may put one there).
fn safe_code(code: &str, secrets: &[&str]) -> Option<String> {
    let identifier = !code.is_empty()
        && code.len() <= MAX_CODE_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    (identifier && scrub_message(code, secrets) == code).then(|| code.to_ascii_lowercase())
}

/// `Retry-After` as delay-seconds (RFC 9110 10.2.3), between 1 and [`MAX_RETRY_AFTER_SECS`];
/// an HTTP-date or anything else is ignored.
fn parse_retry_after(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs: u64 = std::str::from_utf8(value).ok()?.parse().ok()?;
    Some(secs.clamp(1, MAX_RETRY_AFTER_SECS))
}

/// A protobuf JSON duration (`"22s"`, `"1.5s"`) in whole seconds, rounded up and bounded
/// like `Retry-After`.
fn parse_duration_secs(text: &str) -> Option<u64> {
    let number = text.strip_suffix('s')?;
    if number.is_empty() || number.len() > 20 {
        return None;
    }
    let secs: f64 = number.parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some((secs.ceil() as u64).clamp(1, MAX_RETRY_AFTER_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "sk-test-Zx81QpLm0aT4vB7nR2wK9cYe5uH3jD6f";

    fn map(status: u16, body: Value) -> ProviderError {
        from_response(status, body.to_string().as_bytes(), None, &[KEY])
    }

    fn openai(error_type: &str, code: Value, message: &str) -> Value {
        json!({"error": {"message": message, "type": error_type, "param": null, "code": code}})
    }

    fn anthropic(error_type: &str, message: &str) -> Value {
        json!({"type": "error", "error": {"type": error_type, "message": message}})
    }

    fn google(code: u16, status: &str, message: &str) -> Value {
        json!({"error": {"code": code, "message": message, "status": status}})
    }

    #[test]
    fn credential_refusals_are_502_whatever_the_provider_says() {
        let cases = [
            (
                401,
                openai(
                    "invalid_request_error",
                    json!("invalid_api_key"),
                    &format!("Incorrect API key provided: {KEY}"),
                ),
            ),
            (
                403,
                anthropic("permission_error", &format!("key {KEY} may not")),
            ),
            (
                401,
                json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key"}}),
            ),
            (
                403,
                google(
                    403,
                    "PERMISSION_DENIED",
                    "Method doesn't allow unregistered callers",
                ),
            ),
            (
                400,
                json!({"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]}}),
            ),
            (401, json!("not even an object")),
        ];
        for (status, body) in cases {
            let e = map(status, body.clone());
            assert_eq!(e.status, 502, "{body}");
            assert_eq!(e.kind, ProviderErrorKind::CredentialRefused, "{body}");
            assert_eq!(e.message, CREDENTIAL_REFUSED);
            assert_eq!(e.code, "provider_credential_refused");
            assert_eq!(e.openai_type(), "upstream_error");
            assert_eq!(e.anthropic_type(), "api_error");
            assert!(e.worth_retrying());
        }
    }

    #[test]
    fn client_errors_keep_their_status_and_get_the_gateways_types() {
        let cases = [
            (
                400,
                openai(
                    "invalid_request_error",
                    json!("context_length_exceeded"),
                    "too long",
                ),
                "invalid_request_error",
                "invalid_request_error",
                "context_length_exceeded",
            ),
            (
                400,
                anthropic("invalid_request_error", "bad"),
                "invalid_request_error",
                "invalid_request_error",
                "invalid_request_error",
            ),
            (
                400,
                google(400, "INVALID_ARGUMENT", "bad"),
                "invalid_request_error",
                "invalid_request_error",
                "invalid_argument",
            ),
            (
                404,
                google(404, "NOT_FOUND", "models/x is not found"),
                "not_found_error",
                "not_found_error",
                "not_found",
            ),
            (
                413,
                anthropic("request_too_large", "big"),
                "invalid_request_error",
                "request_too_large",
                "request_too_large",
            ),
            (
                422,
                json!({"detail": "unprocessable"}),
                "invalid_request_error",
                "invalid_request_error",
                "invalid_request",
            ),
            (
                429,
                openai("requests", json!("rate_limit_exceeded"), "slow down"),
                "rate_limit_error",
                "rate_limit_error",
                "rate_limit_exceeded",
            ),
            (
                429,
                openai("insufficient_quota", json!("insufficient_quota"), "pay"),
                "insufficient_quota",
                "billing_error",
                "insufficient_quota",
            ),
            (
                429,
                google(429, "RESOURCE_EXHAUSTED", "quota"),
                "rate_limit_error",
                "rate_limit_error",
                "resource_exhausted",
            ),
            (408, json!({}), "timeout_error", "timeout_error", "timeout"),
        ];
        for (status, body, openai_type, anthropic_type, code) in cases {
            let e = map(status, body.clone());
            assert_eq!(e.status, status, "{body}");
            assert_eq!(e.openai_type(), openai_type, "{body}");
            assert_eq!(e.anthropic_type(), anthropic_type, "{body}");
            assert_eq!(e.code, code, "{body}");
            // The provider's limits may be over on the next try or another provider.
            assert_eq!(e.worth_retrying(), status == 429, "{body}");
        }
    }

    #[test]
    fn server_errors_become_502_and_overload_503() {
        for (status, body, client_status, kind) in [
            (
                500,
                openai("server_error", Value::Null, "oops"),
                502,
                ProviderErrorKind::Failed,
            ),
            (502, json!("<html>"), 502, ProviderErrorKind::Failed),
            (504, json!({}), 502, ProviderErrorKind::Failed),
            (
                503,
                google(503, "UNAVAILABLE", "overloaded"),
                503,
                ProviderErrorKind::Overloaded,
            ),
            (
                529,
                anthropic("overloaded_error", "Overloaded"),
                503,
                ProviderErrorKind::Overloaded,
            ),
            (302, json!({}), 502, ProviderErrorKind::Failed),
        ] {
            let e = map(status, body.clone());
            assert_eq!((e.status, e.kind), (client_status, kind), "{body}");
            assert_eq!(e.openai_type(), "upstream_error");
            assert!(e.worth_retrying());
        }
        assert_eq!(map(529, json!({})).anthropic_type(), "overloaded_error");
        assert_eq!(map(500, json!({})).anthropic_type(), "api_error");
    }

    #[test]
    fn the_message_is_scrubbed_and_a_missing_one_names_the_status() {
        let e = map(
            400,
            openai(
                "invalid_request_error",
                Value::Null,
                &format!("bad request from key {KEY} via https://x/y?key={KEY}"),
            ),
        );
        assert!(!e.message.contains("Zx81QpLm"), "{}", e.message);
        assert_eq!(
            e.message,
            "bad request from key [redacted] via https://x/y?key=[redacted]"
        );
        let e = from_response(500, b"<html>Internal error</html>", None, &[KEY]);
        assert_eq!(e.message, "the provider answered with status 500");
        let e = map(400, json!({"error": format!("plain string error {KEY}")}));
        assert_eq!(e.message, "plain string error [redacted]");
        let e = map(
            400,
            json!([google(400, "INVALID_ARGUMENT", "inside an array")]),
        );
        assert_eq!(e.message, "inside an array");
    }

    #[test]
    fn a_code_holding_a_credential_or_junk_is_not_passed_on() {
        let e = map(400, openai("invalid_request_error", json!(KEY), "m"));
        assert_eq!(e.code, "invalid_request_error");
        let e = map(400, openai("a b", json!("x".repeat(100)), "m"));
        assert_eq!(e.code, "invalid_request");
    }

    #[test]
    fn bodies_render_in_each_dialect() {
        let e = map(429, anthropic("rate_limit_error", "slow"));
        let openai_body: Value = serde_json::from_str(&e.body(Dialect::OpenAi)).unwrap();
        assert_eq!(
            openai_body,
            json!({"error": {"message": "slow", "type": "rate_limit_error",
            "code": "rate_limit_error"}})
        );
        let anthropic_body: Value = serde_json::from_str(&e.body(Dialect::Anthropic)).unwrap();
        assert_eq!(
            anthropic_body,
            json!({"type": "error", "error": {"type": "rate_limit_error",
            "message": "slow"}})
        );
    }

    #[test]
    fn retry_after_is_kept_bounded_on_429_and_503_only() {
        let body = anthropic("rate_limit_error", "m").to_string();
        let with = |status: u16, value: &[u8]| {
            from_response(status, body.as_bytes(), Some(value), &[]).retry_after_secs
        };
        assert_eq!(with(429, b"7"), Some(7));
        assert_eq!(with(429, b" 0 "), Some(1));
        assert_eq!(with(429, b"99999999"), Some(MAX_RETRY_AFTER_SECS));
        assert_eq!(with(429, b"99999999999999999999"), None);
        assert_eq!(with(429, b"Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(with(503, b"3"), Some(3));
        assert_eq!(with(529, b"3"), Some(3));
        assert_eq!(with(400, b"3"), None);
        assert_eq!(with(500, b"3"), None);
        // Google says it in the body.
        let google_429 = json!({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "21.2s"}]}});
        assert_eq!(map(429, google_429).retry_after_secs, Some(22));
    }
}
