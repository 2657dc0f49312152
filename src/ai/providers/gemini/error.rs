//! Errors inside a Gemini stream.
//!
//! Gemini answers errors in Google's API format (Gemini API "Troubleshooting"; AIP-193):
//! `{"error": {"code": 429, "message": "..", "status": "RESOURCE_EXHAUSTED", "details": [..]}}`,
//! where `status` is the gRPC code name. A whole error answer is mapped by
//! [`crate::ai::provider_error`], as every provider's is; one inside a stream (status 200)
//! first needs the HTTP status it stands for.

use serde_json::Value;

use crate::ai::provider_error::{self, ProviderError};

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
