//! Finding the client's credential in a request head.

use crate::http1::RequestHead;

/// The credential the client presented: the token of `Authorization: Bearer <key>` (the
/// scheme is case-insensitive, RFC 9110 11.1; one or more spaces before the token, RFC 9110
/// 11.4), else the value of `x-api-key` (Anthropic's header, also sent by many OpenAI SDK
/// users). `None` when neither carries a non-empty value; an `Authorization` with another
/// scheme (Basic, ...) falls through to `x-api-key`.
pub fn presented_key(head: &RequestHead) -> Option<&[u8]> {
    if let Some(token) = head.header("authorization").and_then(bearer_token) {
        return Some(token);
    }
    head.header("x-api-key").filter(|value| !value.is_empty())
}

/// The token after a `Bearer` scheme, trimmed; `None` for another scheme or an empty token.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let rest = &value[SCHEME.len()..];
    // The scheme must end at a space: `Bearerxyz` is a different scheme.
    if rest[0] != b' ' {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::HeadParser;

    fn head(fields: &str) -> RequestHead {
        let text = format!("GET /v1/models HTTP/1.1\r\nHost: gw\r\n{fields}\r\n");
        HeadParser::new()
            .parse(text.as_bytes(), 8192)
            .unwrap()
            .expect("complete head")
            .0
    }

    #[test]
    fn bearer_authorization_yields_the_token() {
        let head = head("Authorization: Bearer cf_secret123\r\n");
        assert_eq!(presented_key(&head), Some(&b"cf_secret123"[..]));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let head = head("authorization: bEaReR   cf_abc\r\n");
        assert_eq!(presented_key(&head), Some(&b"cf_abc"[..]));
    }

    #[test]
    fn x_api_key_yields_its_value() {
        let head = head("x-api-key: cf_from_header\r\n");
        assert_eq!(presented_key(&head), Some(&b"cf_from_header"[..]));
    }

    #[test]
    fn bearer_takes_precedence_over_x_api_key() {
        let head = head("X-Api-Key: cf_second\r\nAuthorization: Bearer cf_first\r\n");
        assert_eq!(presented_key(&head), Some(&b"cf_first"[..]));
    }

    #[test]
    fn other_authorization_scheme_falls_back_to_x_api_key() {
        let with_fallback = head("Authorization: Basic dXNlcjpwYXNz\r\nx-api-key: cf_k\r\n");
        assert_eq!(presented_key(&with_fallback), Some(&b"cf_k"[..]));
        let basic_only = head("Authorization: Basic dXNlcjpwYXNz\r\n");
        assert_eq!(presented_key(&basic_only), None);
    }

    #[test]
    fn scheme_glued_to_token_is_not_bearer() {
        let head = head("Authorization: Bearercf_abc\r\n");
        assert_eq!(presented_key(&head), None);
    }

    #[test]
    fn empty_bearer_token_is_absent() {
        let head = head("Authorization: Bearer \r\n");
        assert_eq!(presented_key(&head), None);
    }

    #[test]
    fn no_credential_headers_is_none() {
        let head = head("Accept: */*\r\n");
        assert_eq!(presented_key(&head), None);
    }
}
