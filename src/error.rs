//! Every gateway-made error becomes a response here, and only here.
//!
//! Handlers return a [`GatewayError`]; [`GatewayError::write_response`] turns it into the
//! contract's status, error type and JSON body (see the README, "Reverse proxy behaviour").

use std::fmt::Write as _;

/// A request that the gateway answers itself instead of (or instead of finishing) forwarding it.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayError {
    /// Malformed or ambiguous framing; the connection is closed afterwards (RFC 9112 11.2).
    BadRequest(&'static str),
    /// A transfer coding we do not implement (RFC 9112 6.1: 501).
    NotImplemented(&'static str),
    /// Missing, unknown, revoked or expired credential. The message is the same in every case,
    /// so a client cannot probe which keys exist.
    Unauthorized,
    /// Authenticated (or addressed) but not allowed: scope, route, model or client address.
    Forbidden(&'static str),
    /// No route matches the request's host and path.
    NotFound,
    /// The request head did not arrive within `header_timeout_ms`.
    HeaderTimeout,
    /// The body is larger than `max_body_bytes`.
    BodyTooLarge,
    /// The head is larger than `max_header_bytes`.
    HeadersTooLarge,
    /// The upstream refused the connection, failed TLS, or sent a response we cannot parse.
    Upstream(&'static str),
    /// The upstream did not connect or answer within its timeout.
    UpstreamTimeout,
    /// The upstream takes a credential the gateway obtains itself, and it has no valid one
    /// (the token endpoint failed and the last token expired).
    CredentialUnavailable,
    /// A well-framed request whose content is not acceptable (an AI body without `model`,
    /// say); unlike [`GatewayError::BadRequest`] the connection stays usable.
    InvalidRequest(String),
    /// The requested model is not configured.
    UnknownModel(String),
    /// No `[[prompt]]` (or no such version of it) answers this path.
    UnknownPrompt(String),
    /// A rate, concurrency or token-per-minute limit refused the request.
    RateLimited {
        /// `error.code`: `rate_limit_exceeded`, `concurrency_limit_exceeded` or
        /// `tokens_limit_exceeded`.
        code: &'static str,
        /// Which limit, for the message (`key`, `route`, `client address`, `team`).
        scope: &'static str,
        /// `Retry-After` in whole seconds (at least 1).
        retry_after_secs: u64,
    },
    /// The key's or team's budget cannot cover the request.
    InsufficientQuota(&'static str),
    /// A Lua hook failed, ran out of memory or time (details go to the gateway's log only).
    HookFailed,
    /// A Lua hook answered the request itself with `ctx:deny(status, msg)`.
    Denied {
        /// The status the hook chose (400-599; anything else is answered as 403).
        status: u16,
        /// `error.message`, as the hook wrote it.
        message: String,
    },
}

/// The API dialect a client speaks: the AI front door `/v1/messages` speaks Anthropic's,
/// everything else OpenAI's (README, "AI front doors"). It decides how requests and answers
/// are translated and which shape gateway-made error bodies take; for an answer, it also
/// says which dialect a body is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// OpenAI chat (`/v1/chat/completions`, `/prompts/*`), the canonical form; errors are
    /// `{"error":{"message","type","code"}}`.
    #[default]
    OpenAi,
    /// Anthropic Messages (`/v1/messages`); errors are `{"type":"error","error":{"type","message"}}`.
    Anthropic,
}

impl GatewayError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::BadRequest(_) => 400,
            GatewayError::NotImplemented(_) => 501,
            GatewayError::Unauthorized => 401,
            GatewayError::Forbidden(_) => 403,
            GatewayError::NotFound => 404,
            GatewayError::HeaderTimeout => 408,
            GatewayError::BodyTooLarge => 413,
            GatewayError::HeadersTooLarge => 431,
            GatewayError::Upstream(_) | GatewayError::CredentialUnavailable => 502,
            GatewayError::UpstreamTimeout => 504,
            GatewayError::InvalidRequest(_) => 400,
            GatewayError::UnknownModel(_) | GatewayError::UnknownPrompt(_) => 404,
            GatewayError::RateLimited { .. } | GatewayError::InsufficientQuota(_) => 429,
            GatewayError::HookFailed => 500,
            GatewayError::Denied { status, .. } if (400..600).contains(status) => *status,
            GatewayError::Denied { .. } => 403,
        }
    }

    /// The contract's `error.type`.
    pub fn error_type(&self) -> &'static str {
        match self {
            GatewayError::BadRequest(_)
            | GatewayError::NotImplemented(_)
            | GatewayError::BodyTooLarge
            | GatewayError::HeadersTooLarge
            | GatewayError::InvalidRequest(_) => "invalid_request_error",
            GatewayError::Unauthorized => "authentication_error",
            GatewayError::Forbidden(_) => "permission_error",
            GatewayError::NotFound
            | GatewayError::UnknownModel(_)
            | GatewayError::UnknownPrompt(_) => "not_found_error",
            GatewayError::HeaderTimeout | GatewayError::UpstreamTimeout => "timeout_error",
            GatewayError::Upstream(_) | GatewayError::CredentialUnavailable => "upstream_error",
            GatewayError::RateLimited { .. } => "rate_limit_error",
            GatewayError::InsufficientQuota(_) => "insufficient_quota",
            GatewayError::HookFailed => "hook_error",
            GatewayError::Denied { .. } => match self.status() {
                400 | 404..=422 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                429 => "rate_limit_error",
                500..=599 => "api_error",
                _ => "permission_error",
            },
        }
    }

    /// A stable machine-readable `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::NotImplemented(_) => "not_implemented",
            GatewayError::Unauthorized => "invalid_api_key",
            GatewayError::Forbidden(_) => "permission_denied",
            GatewayError::NotFound => "route_not_found",
            GatewayError::HeaderTimeout => "header_timeout",
            GatewayError::BodyTooLarge => "body_too_large",
            GatewayError::HeadersTooLarge => "headers_too_large",
            GatewayError::Upstream(_) => "upstream_unavailable",
            GatewayError::CredentialUnavailable => "upstream_credential_unavailable",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::InvalidRequest(_) => "invalid_request",
            GatewayError::UnknownModel(_) => "model_not_found",
            GatewayError::UnknownPrompt(_) => "prompt_not_found",
            GatewayError::RateLimited { code, .. } => code,
            GatewayError::InsufficientQuota(_) => "insufficient_quota",
            GatewayError::HookFailed => "hook_error",
            GatewayError::Denied { .. } => "denied_by_hook",
        }
    }

    /// The human-readable `error.message`. Never contains request data, so no secret can leak.
    pub fn message(&self) -> String {
        match self {
            GatewayError::BadRequest(why) => format!("malformed request: {why}"),
            GatewayError::NotImplemented(why) => format!("not implemented: {why}"),
            GatewayError::Unauthorized => "missing or invalid credential".to_string(),
            GatewayError::Forbidden(why) => format!("not allowed: {why}"),
            GatewayError::NotFound => "no route matches this request".to_string(),
            GatewayError::HeaderTimeout => "request head not received in time".to_string(),
            GatewayError::BodyTooLarge => "request body too large".to_string(),
            GatewayError::HeadersTooLarge => "request headers too large".to_string(),
            GatewayError::Upstream(why) => format!("upstream error: {why}"),
            GatewayError::CredentialUnavailable => {
                "the gateway has no valid credential for the upstream".to_string()
            }
            GatewayError::UpstreamTimeout => "upstream timed out".to_string(),
            GatewayError::InvalidRequest(why) => why.clone(),
            GatewayError::UnknownModel(model) => format!("the model `{model}` does not exist"),
            GatewayError::UnknownPrompt(prompt) => format!("no prompt `{prompt}`"),
            GatewayError::RateLimited {
                scope,
                retry_after_secs,
                ..
            } => format!("{scope} rate limit reached; retry in {retry_after_secs} s"),
            GatewayError::InsufficientQuota(scope) => {
                format!("{scope} budget exhausted for this period")
            }
            GatewayError::HookFailed => "a gateway hook failed".to_string(),
            GatewayError::Denied { message, .. } => message.clone(),
        }
    }

    /// Whether the connection must close after this response: framing errors leave the byte
    /// stream in an unknown state, so nothing after them may be parsed as a request.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            GatewayError::BadRequest(_)
                | GatewayError::NotImplemented(_)
                | GatewayError::HeaderTimeout
                | GatewayError::HeadersTooLarge
        )
    }

    /// Appends the complete HTTP/1.1 response for this error to `out`.
    pub fn write_response(&self, request_id: &str, close: bool, out: &mut Vec<u8>) {
        self.write_response_with(request_id, close, Dialect::OpenAi, &[], out);
    }

    /// Like [`GatewayError::write_response`], in `dialect`, with `extra_headers` (complete
    /// `name: value\r\n` lines, such as `x-ratelimit-*`) and `Retry-After` on a 429 from a limit.
    pub fn write_response_with(
        &self,
        request_id: &str,
        close: bool,
        dialect: Dialect,
        extra_headers: &[u8],
        out: &mut Vec<u8>,
    ) {
        let message = self.message();
        let body = match dialect {
            Dialect::OpenAi => error_body(self.error_type(), self.code(), &message),
            Dialect::Anthropic => anthropic_error_body(self.anthropic_type(), &message),
        };
        let mut headers = Vec::with_capacity(extra_headers.len() + 24);
        if let GatewayError::RateLimited {
            retry_after_secs, ..
        } = self
        {
            let _ = write!(
                crate::http1::StrBuf(&mut headers),
                "retry-after: {}\r\n",
                (*retry_after_secs).max(1)
            );
        }
        headers.extend_from_slice(extra_headers);
        write_json_response_with(self.status(), request_id, close, &headers, &body, out);
    }

    /// Anthropic's `error.type` for this error (its API names some types differently).
    fn anthropic_type(&self) -> &'static str {
        match self {
            GatewayError::Upstream(_) | GatewayError::CredentialUnavailable => "api_error",
            GatewayError::InsufficientQuota(_) => "rate_limit_error",
            GatewayError::HeaderTimeout | GatewayError::UpstreamTimeout => "timeout_error",
            other => other.error_type(),
        }
    }
}

/// Anthropic's error body: `{"type":"error","error":{"type":..,"message":..}}`.
pub fn anthropic_error_body(error_type: &str, message: &str) -> String {
    serde_json::json!({ "type": "error", "error": { "type": error_type, "message": message } })
        .to_string()
}

/// The contract's JSON error body: `{"error":{"message":..,"type":..,"code":..}}`.
pub fn error_body(error_type: &str, code: &str, message: &str) -> String {
    serde_json::json!({ "error": { "message": message, "type": error_type, "code": code } })
        .to_string()
}

/// Appends a complete response with a JSON body and `extra_headers` (complete lines).
pub fn write_json_response_with(
    status: u16,
    request_id: &str,
    close: bool,
    extra_headers: &[u8],
    body: &str,
    out: &mut Vec<u8>,
) {
    let mut head = String::with_capacity(160);
    let _ = write!(
        head,
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {request_id}\r\n",
        reason_phrase(status),
        body.len()
    );
    if close {
        head.push_str("connection: close\r\n");
    }
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(extra_headers);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// The standard reason phrase for the statuses the gateway makes itself.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_text(err: GatewayError, close: bool) -> String {
        let mut out = Vec::new();
        err.write_response("rid-1", close, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn statuses_relayed_from_providers_have_reason_phrases() {
        for status in [400, 402, 404, 408, 413, 415, 422, 429, 500, 502, 503, 504] {
            assert!(
                !reason_phrase(status).is_empty(),
                "{status} has no reason phrase"
            );
        }
    }

    #[test]
    fn every_error_maps_to_the_contract_status_and_type() {
        let table = [
            (GatewayError::BadRequest("x"), 400, "invalid_request_error"),
            (GatewayError::Unauthorized, 401, "authentication_error"),
            (GatewayError::Forbidden("scope"), 403, "permission_error"),
            (GatewayError::NotFound, 404, "not_found_error"),
            (GatewayError::HeaderTimeout, 408, "timeout_error"),
            (GatewayError::BodyTooLarge, 413, "invalid_request_error"),
            (GatewayError::HeadersTooLarge, 431, "invalid_request_error"),
            (GatewayError::Upstream("x"), 502, "upstream_error"),
            (GatewayError::UpstreamTimeout, 504, "timeout_error"),
        ];
        for (err, status, kind) in table {
            assert_eq!(err.status(), status, "{err:?}");
            assert_eq!(err.error_type(), kind, "{err:?}");
        }
    }

    #[test]
    fn error_response_is_json_with_request_id_and_length() {
        let text = response_text(GatewayError::NotFound, false);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let head = format!("{head}\r\n");
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(head.contains("x-request-id: rid-1\r\n"));
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(!head.contains("connection: close"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["type"], "not_found_error");
        assert_eq!(json["error"]["code"], "route_not_found");
    }

    #[test]
    fn closing_errors_say_connection_close() {
        let err = GatewayError::BadRequest("bare LF");
        assert!(err.closes_connection());
        assert!(response_text(err, true).contains("connection: close\r\n"));
        assert!(!GatewayError::NotFound.closes_connection());
    }
}
