//! `[[mcp_server]]` and `[mcp]`: the MCP gateway's tool servers and its one endpoint.
//!
//! Each `[[mcp_server]]` is a Streamable HTTP MCP server the gateway calls with that server's
//! own credential (a static secret or an OAuth2 source, as an `[[upstream]]`'s). Clients see
//! one endpoint, `[mcp] path`, where every server's tools, prompts and resources appear under
//! `<prefix>__<name>`. Nothing is served while no `[[mcp_server]]` is configured.

use serde::{Deserialize, Serialize};

use super::model::{AuthKind, CredentialConfig, JwtConfig, RouteConfig};
use super::redact::redact_url;
use super::url::HttpUrl;

/// Most `[[mcp_server]]` entries: every listing asks each of them, so the fan-out is bounded.
pub const MAX_MCP_SERVERS: usize = 64;

/// Longest `prefix` (and `name` when it is the prefix): names clients see are
/// `<prefix>__<tool>`, and MCP clients commonly cap tool names at 64 characters.
pub const MAX_PREFIX_LEN: usize = 32;

/// Most `tools` globs of one server.
pub const MAX_TOOL_GLOBS: usize = 256;

/// Longest `timeout_ms` (ten minutes): a tool call holds a worker's connection that long.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// The separator between a server's prefix and an upstream name.
pub const PREFIX_SEPARATOR: &str = "__";

/// One `[[mcp_server]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Name in logs and metrics; the default prefix.
    #[serde(default)]
    pub name: String,
    /// The server's Streamable HTTP endpoint (`http://` or `https://`).
    #[serde(default)]
    pub url: String,
    /// The credential injected on every request to this server (as an `[[upstream]]`'s).
    #[serde(default)]
    pub credential: Option<CredentialConfig>,
    /// Globs of the server's tool names exposed; others are hidden and refused.
    #[serde(default = "default_tools")]
    pub tools: Vec<String>,
    /// What clients see before `__`; `""` = `name`.
    #[serde(default)]
    pub prefix: String,
    /// Longest wait for one answer of the server (a tool call's whole answer).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_tools() -> Vec<String> {
    vec!["*".to_string()]
}

fn default_timeout_ms() -> u64 {
    60_000
}

impl McpServerConfig {
    /// The prefix clients see: `prefix`, else `name`.
    pub fn effective_prefix(&self) -> &str {
        if self.prefix.is_empty() {
            &self.name
        } else {
            &self.prefix
        }
    }
}

/// `[mcp]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// The one endpoint clients connect to.
    #[serde(default = "default_path")]
    pub path: String,
    /// How clients authenticate: `none`, `api_key`, `jwt` or `lua` (an `on_access` hook in
    /// `hooks` names the consumer).
    #[serde(default = "default_auth")]
    pub auth: AuthKind,
    /// Token settings for `auth = "jwt"`, as a route's.
    #[serde(default)]
    pub jwt: JwtConfig,
    /// A Lua script with any of `on_access`, `on_tool_call` and `on_tool_result`.
    #[serde(default)]
    pub hooks: String,
    /// The authorization servers named in the protected-resource metadata (RFC 9728
    /// `authorization_servers`); empty = `jwt.issuer` when set.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// This endpoint's URL as clients reach it, the metadata's `resource` and, when
    /// `jwt.audience` is empty, the audience tokens must carry; `""` = derived per request
    /// from its `Host` and `path` (no audience check then unless `jwt.audience` is set).
    #[serde(default)]
    pub resource: String,
    /// Client addresses allowed; empty = all.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// Client addresses refused; checked first.
    #[serde(default)]
    pub deny_ips: Vec<String>,
}

fn default_path() -> String {
    "/mcp".to_string()
}

fn default_auth() -> AuthKind {
    AuthKind::ApiKey
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            path: default_path(),
            auth: default_auth(),
            jwt: JwtConfig::default(),
            hooks: String::new(),
            authorization_servers: Vec::new(),
            resource: String::new(),
            allow_ips: Vec::new(),
            deny_ips: Vec::new(),
        }
    }
}

/// Whether `prefix` may name a server: ASCII letters, digits and `-`, no `_` at all, so
/// `<prefix>__<tool>` splits at its first `__` and nowhere else.
pub fn is_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `(key path, message)` for every problem of `servers` and `mcp`: a URL the gateway cannot
/// call, duplicate names or prefixes, a prefix outside its charset, a path that clashes with
/// a route or an AI front door, settings this version does not serve. URLs are only shown
/// redacted; credentials are checked where upstreams' are (`check_secrets`).
pub(crate) fn check(
    servers: &[McpServerConfig],
    mcp: &McpConfig,
    routes: &[RouteConfig],
) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    if servers.len() > MAX_MCP_SERVERS {
        errors.push((
            "mcp_server".to_string(),
            format!("at most {MAX_MCP_SERVERS} entries (got {})", servers.len()),
        ));
    }
    let mut names: Vec<(&str, usize)> = Vec::new();
    let mut prefixes: Vec<(&str, usize)> = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let at = |key: &str| format!("mcp_server[{i}].{key}");
        if server.name.trim().is_empty() {
            errors.push((at("name"), "is required and must not be empty".into()));
        } else if let Some((_, j)) = names.iter().find(|(n, _)| *n == server.name) {
            errors.push((
                at("name"),
                format!(
                    "duplicate mcp_server `{}` (first defined at mcp_server[{j}])",
                    server.name
                ),
            ));
        } else {
            names.push((&server.name, i));
        }
        let prefix = server.effective_prefix();
        let prefix_key = if server.prefix.is_empty() {
            "name"
        } else {
            "prefix"
        };
        if !prefix.is_empty() {
            if !is_prefix(prefix) {
                errors.push((
                    at(prefix_key),
                    format!(
                        "`{}` cannot be a tool prefix: 1 to {MAX_PREFIX_LEN} ASCII letters, digits or `-` (no `_`, so `<prefix>__<tool>` is unambiguous); set `prefix`",
                        prefix.chars().take(40).collect::<String>()
                    ),
                ));
            } else if let Some((_, j)) = prefixes.iter().find(|(p, _)| *p == prefix) {
                errors.push((
                    at(prefix_key),
                    format!("duplicate prefix `{prefix}` (also mcp_server[{j}]'s): tool names would collide"),
                ));
            } else {
                prefixes.push((prefix, i));
            }
        }
        if server.url.trim().is_empty() {
            errors.push((at("url"), "is required and must not be empty".into()));
        } else if let Err(e) = HttpUrl::parse(&server.url) {
            errors.push((at("url"), e));
        } else if let Ok(url) = HttpUrl::parse(&server.url) {
            if url.query().is_some() {
                errors.push((
                    at("url"),
                    format!("{}: a query is not allowed (it is where secrets hide in logs); put credentials in `credential`", redact_url(&server.url)),
                ));
            }
        }
        if server.tools.len() > MAX_TOOL_GLOBS {
            errors.push((at("tools"), format!("at most {MAX_TOOL_GLOBS} globs")));
        }
        for (j, glob) in server.tools.iter().enumerate() {
            if glob.is_empty() || glob.len() > 128 {
                errors.push((
                    format!("mcp_server[{i}].tools[{j}]"),
                    "must be 1 to 128 characters".into(),
                ));
            }
        }
        if server.timeout_ms == 0 || server.timeout_ms > MAX_TIMEOUT_MS {
            errors.push((
                at("timeout_ms"),
                format!("must be 1 to {MAX_TIMEOUT_MS} (got {})", server.timeout_ms),
            ));
        }
        if let Some(c) = &server.credential {
            if c.oauth2.is_none() && c.secret.is_none() {
                errors.push((at("credential.secret"), "is required".into()));
            }
        }
    }
    check_endpoint(mcp, routes, &mut errors);
    errors
}

/// `[mcp]`: its path, its auth and what this version does not serve.
fn check_endpoint(mcp: &McpConfig, routes: &[RouteConfig], errors: &mut Vec<(String, String)>) {
    let path = &mcp.path;
    let bad_char = |b: u8| !(b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
    if !path.starts_with('/') || path.len() > 256 || path.bytes().any(bad_char) {
        errors.push((
            "mcp.path".into(),
            "must start with `/` and hold only letters, digits and `/-._~` (at most 256)".into(),
        ));
    } else if path.contains("//") || path.split('/').any(|s| s == "." || s == "..") {
        errors.push((
            "mcp.path".into(),
            "must be a normalized path (no `//`, `.` or `..`)".into(),
        ));
    } else if path == "/v1" || path.starts_with("/v1/") || path.starts_with("/prompts/") {
        errors.push((
            "mcp.path".into(),
            format!("`{path}` is under the AI front doors (/v1/, /prompts/)"),
        ));
    }
    for (i, route) in routes.iter().enumerate() {
        if route.path_prefix == *path {
            errors.push((
                "mcp.path".into(),
                format!(
                    "`{path}` is also route[{i}]'s path_prefix; the MCP endpoint would hide it"
                ),
            ));
        }
    }
    match mcp.auth {
        AuthKind::Lua if mcp.hooks.is_empty() => errors.push((
            "mcp.auth".into(),
            "auth = \"lua\" needs a hooks script whose on_access names the consumer".into(),
        )),
        AuthKind::Jwt
            if mcp.jwt.jwks_url.is_empty()
                && mcp.jwt.public_key.is_empty()
                && mcp.jwt.hs_secret.is_none() =>
        {
            errors.push((
                "mcp.jwt".into(),
                "auth = \"jwt\" needs jwks_url, public_key or hs_secret".into(),
            ))
        }
        _ => {}
    }
    if mcp.authorization_servers.len() > MAX_AUTHORIZATION_SERVERS {
        errors.push((
            "mcp.authorization_servers".into(),
            format!("at most {MAX_AUTHORIZATION_SERVERS} entries"),
        ));
    }
    for (i, url) in mcp.authorization_servers.iter().enumerate() {
        if !is_metadata_url(url) {
            errors.push((
                format!("mcp.authorization_servers[{i}]"),
                format!("not an http(s) URL of at most {MAX_METADATA_URL_LEN} bytes without spaces or quotes"),
            ));
        }
    }
    if !mcp.resource.is_empty() && !is_metadata_url(&mcp.resource) {
        errors.push((
            "mcp.resource".into(),
            format!("not an http(s) URL of at most {MAX_METADATA_URL_LEN} bytes without spaces or quotes"),
        ));
    }
}

/// Most `authorization_servers` listed in the metadata.
pub const MAX_AUTHORIZATION_SERVERS: usize = 16;

/// Longest URL in the metadata: `resource` also goes into a `WWW-Authenticate` header.
pub const MAX_METADATA_URL_LEN: usize = 2048;

/// Whether `url` may be written into the metadata and a challenge header as it is: an
/// `http(s)://` URL with no byte that would need escaping in a quoted string.
pub fn is_metadata_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    url.len() <= MAX_METADATA_URL_LEN
        && rest.is_some_and(|r| !r.is_empty())
        && url
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, url: &str) -> McpServerConfig {
        McpServerConfig {
            name: name.into(),
            url: url.into(),
            credential: None,
            tools: default_tools(),
            prefix: String::new(),
            timeout_ms: default_timeout_ms(),
        }
    }

    fn paths(errors: &[(String, String)]) -> Vec<&str> {
        errors.iter().map(|(p, _)| p.as_str()).collect()
    }

    #[test]
    fn a_plain_server_passes() {
        let errors = check(
            &[server("github", "http://127.0.0.1:9/mcp")],
            &McpConfig::default(),
            &[],
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let mut bad_prefix = server("a_b", "http://127.0.0.1:9/mcp");
        bad_prefix.timeout_ms = 0;
        let servers = [
            server("one", "ftp://x/mcp"),
            server("one", "http://127.0.0.1:9/mcp"),
            bad_prefix,
            server("two", "http://127.0.0.1:9/mcp?token=hunter2"),
        ];
        let errors = check(&servers, &McpConfig::default(), &[]);
        let paths = paths(&errors);
        assert!(paths.contains(&"mcp_server[0].url"), "{errors:?}");
        assert!(paths.contains(&"mcp_server[1].name"), "{errors:?}");
        assert!(paths.contains(&"mcp_server[2].name"), "{errors:?}");
        assert!(paths.contains(&"mcp_server[2].timeout_ms"), "{errors:?}");
        assert!(paths.contains(&"mcp_server[3].url"), "{errors:?}");
        assert!(
            !format!("{errors:?}").contains("hunter2"),
            "a URL's query is never shown"
        );
    }

    #[test]
    fn duplicate_prefixes_are_refused_even_with_different_names() {
        let mut a = server("a", "http://127.0.0.1:9/mcp");
        a.prefix = "tools".into();
        let mut b = server("b", "http://127.0.0.1:9/mcp");
        b.prefix = "tools".into();
        let errors = check(&[a, b], &McpConfig::default(), &[]);
        assert_eq!(paths(&errors), ["mcp_server[1].prefix"], "{errors:?}");
    }

    #[test]
    fn the_path_may_not_clash_with_a_route_or_the_ai_doors() {
        let route = RouteConfig {
            path_prefix: "/mcp".into(),
            ..Default::default()
        };
        let errors = check(
            &[server("a", "http://127.0.0.1:9/m")],
            &McpConfig::default(),
            &[route],
        );
        assert_eq!(paths(&errors), ["mcp.path"]);
        let under_ai = McpConfig {
            path: "/v1/mcp".into(),
            ..Default::default()
        };
        assert_eq!(paths(&check(&[], &under_ai, &[])), ["mcp.path"]);
        let dotted = McpConfig {
            path: "/a/../mcp".into(),
            ..Default::default()
        };
        assert_eq!(paths(&check(&[], &dotted, &[])), ["mcp.path"]);
    }

    #[test]
    fn lua_auth_needs_hooks() {
        let without = McpConfig {
            auth: AuthKind::Lua,
            ..Default::default()
        };
        assert_eq!(paths(&check(&[], &without, &[])), ["mcp.auth"]);
        let with = McpConfig {
            hooks: "mcp.lua".into(),
            ..without
        };
        assert!(check(&[], &with, &[]).is_empty());
    }

    #[test]
    fn metadata_urls_are_checked() {
        let mcp = McpConfig {
            authorization_servers: vec![
                "https://auth.example.com".into(),
                "ftp://x".into(),
                "https://a\"b".into(),
            ],
            resource: "https://gw.example.com/mcp x".into(),
            ..Default::default()
        };
        assert_eq!(
            paths(&check(&[], &mcp, &[])),
            [
                "mcp.authorization_servers[1]",
                "mcp.authorization_servers[2]",
                "mcp.resource"
            ]
        );
        assert!(!is_metadata_url(&format!(
            "https://{}",
            "a".repeat(MAX_METADATA_URL_LEN)
        )));
        assert!(is_metadata_url("http://127.0.0.1:8080/mcp"));
    }

    #[test]
    fn prefixes_have_no_underscore() {
        assert!(is_prefix("git-hub2"));
        assert!(!is_prefix("git_hub"));
        assert!(!is_prefix(""));
        assert!(!is_prefix(&"a".repeat(MAX_PREFIX_LEN + 1)));
    }
}
