//! The MCP gateway: one Streamable HTTP endpoint (`[mcp] path`) in front of every
//! `[[mcp_server]]`, with each server's credential kept at the edge.
//!
//! - [`McpGateway`]: `[mcp]` and the servers compiled at config load (one per snapshot).
//! - [`endpoint`]: the HTTP side clients talk to: methods, `Accept`, sessions, JSON-RPC
//!   dispatch, JSON or event-stream answers, the per-call access log and metrics.
//! - [`aggregate`]: `initialize`, the merged listings and their gateway cursor.
//! - [`client`]: the gateway as a client of each server (per-worker upstream sessions).
//! - [`jsonrpc`], [`names`], [`revision`], [`session`]: the protocol's pieces.
//!
//! A call is permitted or refused for a consumer in one place ([`McpGateway::permits`], the
//! server's `tools` globs today; per-key tool lists slot in there), and
//! [`endpoint`]'s `routed` runs the call and result hooks (`on_tool_call`,
//! `on_tool_result`) between the permission and the upstream request, and after the answer.
//! [`authz`] serves the protected-resource metadata (RFC 9728) and the 401 challenge.

pub mod aggregate;
pub mod authz;
pub mod client;
pub mod endpoint;
pub mod jsonrpc;
pub mod names;
pub mod revision;
pub mod session;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::auth::jwt::JwtVerifier;
use crate::auth::{glob_match, Consumer, IpRules};
use crate::config::mcp::{McpConfig, McpServerConfig};
use crate::config::{AuthKind, Config, HttpUrl, SecretWatcher, UpstreamConfig};
use crate::identity::source::SourceTiming;
use crate::upstream::Upstream;

/// One `[[mcp_server]]`, compiled.
#[derive(Debug)]
pub struct McpServer {
    /// `name`, for logs and metrics.
    pub name: String,
    /// What clients see before `__`.
    pub prefix: String,
    /// Where requests go, with the server's credential.
    pub upstream: Arc<Upstream>,
    /// The request target (path and query) of the server's endpoint.
    pub target: String,
    /// Globs of the tools exposed.
    pub tools: Vec<String>,
    /// Longest wait for one answer.
    pub timeout: Duration,
    /// Identifies the server's per-worker upstream session across reloads: the same name and
    /// URL keep their session, a changed URL starts a new one.
    pub(crate) session_key: String,
}

impl McpServer {
    /// Whether the server's `tools` globs expose `tool` (its upstream name).
    pub fn exposes(&self, tool: &str) -> bool {
        self.tools.iter().any(|g| glob_match(g, tool))
    }
}

/// `[mcp]` and its servers, compiled; the endpoint is served when there is at least one
/// server.
pub struct McpGateway {
    /// The endpoint's path.
    pub path: String,
    pub auth: AuthKind,
    /// The verifier of `auth = "jwt"`.
    pub jwt: Option<Arc<JwtVerifier>>,
    /// Client-address rules (`None` = everyone).
    pub ip_rules: Option<IpRules>,
    /// The servers, in config order (listings merge in this order).
    pub servers: Vec<McpServer>,
    /// The script of `[mcp] hooks` (set by the snapshot, which owns the scripts).
    pub hooks: Option<crate::lua::ScriptId>,
    /// `[mcp] authorization_servers`, else `jwt.issuer` when set: the metadata's list.
    pub authorization_servers: Vec<String>,
    /// `[mcp] resource` (`""` = derived per request).
    pub resource: String,
}

impl McpGateway {
    /// Compiles `[mcp]` and `[[mcp_server]]`; `None` when no server is configured. With
    /// `sources` `None` (for `check`), no credential source is started and no JWKS fetched.
    pub fn build(
        config: &Config,
        secrets: &SecretWatcher,
        sources: Option<SourceTiming>,
    ) -> Result<Option<McpGateway>, Vec<String>> {
        if config.mcp_server.is_empty() {
            return Ok(None);
        }
        let mut errors = Vec::new();
        let mut servers = Vec::with_capacity(config.mcp_server.len());
        for (i, cfg) in config.mcp_server.iter().enumerate() {
            match build_server(cfg, config, secrets, sources) {
                Ok(s) => servers.push(s),
                Err(e) => errors.push(format!("mcp_server[{i}]: {e}")),
            }
        }
        let mcp: &McpConfig = &config.mcp;
        let ip_rules = match IpRules::new(&mcp.allow_ips, &mcp.deny_ips) {
            Ok(rules) => (!rules.is_empty()).then_some(rules),
            Err(e) => {
                errors.push(format!("mcp: {e}"));
                None
            }
        };
        // Tokens are for this resource: its URL is the audience unless one is configured.
        let mut jwt_config = mcp.jwt.clone();
        if jwt_config.audience.is_empty() {
            jwt_config.audience = mcp.resource.clone();
        }
        let jwt = match mcp.auth {
            AuthKind::Jwt => {
                let verifier = match sources {
                    Some(_) => JwtVerifier::new(&jwt_config, config, secrets),
                    None => JwtVerifier::without_fetching(&jwt_config, config, secrets),
                };
                match verifier {
                    Ok(v) => Some(v),
                    Err(e) => {
                        errors.push(format!("mcp.{e}"));
                        None
                    }
                }
            }
            _ => None,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Some(McpGateway {
            path: mcp.path.clone(),
            auth: mcp.auth,
            jwt,
            ip_rules,
            servers,
            hooks: None,
            authorization_servers: if !mcp.authorization_servers.is_empty() {
                mcp.authorization_servers.clone()
            } else if crate::config::mcp::is_metadata_url(&mcp.jwt.issuer) {
                // Only an issuer that is a URL can be named as a server to discover.
                vec![mcp.jwt.issuer.clone()]
            } else {
                Vec::new()
            },
            resource: mcp.resource.clone(),
        }))
    }

    /// The server whose prefix is `prefix`.
    pub fn server(&self, prefix: &str) -> Option<&McpServer> {
        self.servers.iter().find(|s| s.prefix == prefix)
    }

    /// Whether `consumer` may call `tool` of `server`: the one place a call is permitted or
    /// refused before anything reaches the server. The server's `tools` globs say which of
    /// its tools are exposed at all; the consumer's key's `mcp_tools` globs, matched against
    /// the exposed name (`<prefix>__<tool>`), which of those it may use.
    pub fn permits(&self, consumer: Option<&Consumer>, server: &McpServer, tool: &str) -> bool {
        server.exposes(tool)
            && consumer.is_none_or(|c| c.may_call_tool(&names::prefixed(&server.prefix, tool)))
    }
}

/// One server: its URL as an upstream with the server's credential.
fn build_server(
    cfg: &McpServerConfig,
    config: &Config,
    secrets: &SecretWatcher,
    sources: Option<SourceTiming>,
) -> Result<McpServer, String> {
    let url = HttpUrl::parse(&cfg.url).map_err(|e| format!("url: {e}"))?;
    let authority = if url.host().contains(':') {
        format!("[{}]:{}", url.host(), url.port())
    } else {
        format!("{}:{}", url.host(), url.port())
    };
    let upstream_cfg = UpstreamConfig {
        name: format!("mcp:{}", cfg.name),
        targets: vec![authority],
        tls: url.tls(),
        credential: cfg.credential.clone(),
        ..UpstreamConfig::default()
    };
    let upstream = Upstream::build_with(&upstream_cfg, config, secrets, sources)?;
    Ok(McpServer {
        name: cfg.name.clone(),
        prefix: cfg.effective_prefix().to_string(),
        upstream: Arc::new(upstream),
        target: url.request_target(),
        tools: cfg.tools.clone(),
        timeout: Duration::from_millis(cfg.timeout_ms),
        session_key: format!("{}\n{}", cfg.name, cfg.url),
    })
}

/// Runs `futures` concurrently on this worker (no task is spawned: they borrow the request)
/// and returns their outputs in order, once all are done.
pub(crate) async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// The largest offset a listing cursor may name: every server's items at most.
pub(crate) fn config_max_items() -> usize {
    crate::config::mcp::MAX_MCP_SERVERS * aggregate::MAX_ITEMS_PER_SERVER
}
