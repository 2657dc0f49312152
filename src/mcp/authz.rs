//! MCP authorization (the spec's "Authorization", RFC 9728): the protected-resource metadata
//! a client reads to learn where to get a token for this endpoint, and the challenge that
//! points it there.
//!
//! - `GET /.well-known/oauth-protected-resource` and the path-suffixed form RFC 9728 §3.1
//!   derives from the resource URL (`/.well-known/oauth-protected-resource/mcp` for
//!   `https://host/mcp`) answer the same document: `resource`, `authorization_servers`,
//!   `bearer_methods_supported`. No credential is needed to read it.
//! - A request to the endpoint without a valid credential is answered 401 with
//!   `WWW-Authenticate: Bearer resource_metadata="<metadata URL>"`.
//!
//! The resource URL is `[mcp] resource` when set, else derived from the request's `Host`
//! (checked to be a plain host, so nothing a client sends can break out of the quoted
//! header value) and the endpoint's path.

use std::fmt::Write as _;

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use serde_json::{json, Value};

use super::McpGateway;
use crate::http1::{BufConn, RequestHead, StrBuf};
use crate::pipeline::{Failure, Outcome, RequestCtx};

/// Where the metadata is served (RFC 9728 §3).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// Longest `Host` a resource URL is derived from (RFC 1035's name length plus a port).
pub const MAX_HOST_LEN: usize = 261;

/// Whether `path` is one of the metadata's paths for `gateway`.
pub fn is_metadata_path(gateway: &McpGateway, path: &str) -> bool {
    match path.strip_prefix(METADATA_PATH) {
        Some("") => true,
        Some(suffix) => suffix == gateway.path,
        None => false,
    }
}

/// Whether `host` (a `Host` header) is a name or address with an optional port, and nothing
/// else.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// This endpoint's URL: `[mcp] resource`, else `http(s)://<Host><path>`; `None` when it is not
/// configured and the request's `Host` is not a plain host.
pub fn resource_url(gateway: &McpGateway, head: &RequestHead, https: bool) -> Option<String> {
    if !gateway.resource.is_empty() {
        return Some(gateway.resource.clone());
    }
    let host = head.host();
    if !is_plain_host(host) {
        return None;
    }
    let scheme = if https { "https" } else { "http" };
    Some(format!("{scheme}://{host}{}", gateway.path))
}

/// The metadata URL of `resource` (RFC 9728 §3.1): the well-known path inserted between its
/// authority and its path.
pub fn metadata_url(resource: &str) -> String {
    let after_scheme = resource.find("://").map_or(0, |i| i + 3);
    let path_at = resource[after_scheme..]
        .find('/')
        .map_or(resource.len(), |i| after_scheme + i);
    let (origin, path) = resource.split_at(path_at);
    let path = path.trim_end_matches('/');
    format!("{origin}{METADATA_PATH}{path}")
}

/// The `WWW-Authenticate` value of a 401 from the endpoint.
pub fn challenge(gateway: &McpGateway, head: &RequestHead, https: bool) -> String {
    match resource_url(gateway, head, https) {
        Some(resource) => format!("Bearer resource_metadata=\"{}\"", metadata_url(&resource)),
        None => "Bearer".to_string(),
    }
}

/// The metadata document for `resource`.
pub fn document(gateway: &McpGateway, resource: &str) -> Value {
    json!({
        "resource": resource,
        "authorization_servers": gateway.authorization_servers,
        "bearer_methods_supported": ["header"],
        "resource_name": "credentialflow MCP gateway",
    })
}

/// Answers a request for the metadata: `GET` (or `HEAD`) only.
pub(crate) async fn serve<S>(
    gateway: &McpGateway,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let (status, body) = match head.method() {
        "GET" | "HEAD" => match resource_url(gateway, head, ctx.https) {
            Some(resource) => (200, document(gateway, &resource).to_string()),
            None => (
                400,
                json!({"error": "invalid_request", "error_description": "a Host the resource URL can be derived from is required"}).to_string(),
            ),
        },
        _ => (
            405,
            json!({"error": "invalid_request", "error_description": "GET only"}).to_string(),
        ),
    };
    let close = !head.keep_alive() || !ctx.body_done;
    let mut out = Vec::with_capacity(256 + body.len());
    let _ = write!(
        StrBuf(&mut out),
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: max-age=300\r\naccess-control-allow-origin: *\r\nx-request-id: {}\r\n",
        match status {
            200 => "OK",
            400 => "Bad Request",
            _ => "Method Not Allowed",
        },
        body.len(),
        ctx.request_id
    );
    if status == 405 {
        out.extend_from_slice(b"allow: GET, HEAD\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if head.method() != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    ctx.status = status;
    let (res, _) = client.write_all(out).await;
    res.map_err(|_| Failure::Abort)?;
    Ok(if close {
        Outcome::Close
    } else {
        Outcome::KeepAlive
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_url_inserts_the_well_known_path() {
        assert_eq!(
            metadata_url("https://gw.example.com/mcp"),
            "https://gw.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            metadata_url("https://gw.example.com/"),
            "https://gw.example.com/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn only_plain_hosts_make_a_resource_url() {
        assert!(is_plain_host("gw.example.com:8443"));
        assert!(is_plain_host("[::1]:80"));
        assert!(!is_plain_host("a\" , evil=\"x"));
        assert!(!is_plain_host("host/path"));
        assert!(!is_plain_host(""));
        assert!(!is_plain_host(&"a".repeat(MAX_HOST_LEN + 1)));
    }
}
