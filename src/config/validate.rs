//! Semantic checks of a deserialized [`Config`]: addresses, references between tables, files
//! that must exist, limits, secrets. Every finding names its key path.

use std::collections::HashMap;
use std::path::Path;

use crate::http1::normalize_path;

use super::address::{parse_listen_addr, Cidr, HostPort};
use super::cluster::{MAX_SYNC_INTERVAL_MS, MIN_SYNC_INTERVAL_MS};
use super::model::{
    AuthKind, Config, JwtConfig, ProviderKind, ResponsesApi, RouteConfig, ServerConfig,
    UpstreamConfig, MAX_DRAIN_AFTER_DISCONNECT_MS, MAX_KEEPALIVE, MAX_KEEPALIVE_TIMEOUT_MS,
};
use super::redact::{has_userinfo, redact_url, CREDENTIALS_IN_URL};
use super::secret::SecretRef;
use super::store::{
    is_node_name, StoreBackend, StoreConfig, MAX_NODE_LEN, MAX_URL_BYTES, POSTGRES_SCHEMES,
};
use crate::auth::jwt::MIN_HS_SECRET_BYTES;

/// Errors and warnings as (key path, message).
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub errors: Vec<(String, String)>,
    pub warnings: Vec<(String, String)>,
}

impl Findings {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push((path.into(), message.into()));
    }

    fn warning(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push((path.into(), message.into()));
    }

    /// `path` must not be empty.
    fn required(&mut self, path: String, value: &str) -> bool {
        if value.trim().is_empty() {
            self.error(path, "is required and must not be empty");
            return false;
        }
        true
    }

    /// `name` must be unique among `kind` names; `first` remembers where each was seen.
    fn unique<'a>(
        &mut self,
        first: &mut HashMap<&'a str, String>,
        name: &'a str,
        path: String,
        kind: &str,
    ) {
        match first.get(name) {
            Some(earlier) => self.error(
                path,
                format!("duplicate {kind} `{name}` (first defined at {earlier})"),
            ),
            None => {
                first.insert(name, path);
            }
        }
    }
}

/// Runs every check on `config`.
pub(crate) fn validate(config: &Config) -> Findings {
    let mut findings = Findings::default();
    check_server(config, &mut findings);
    check_limits(config, &mut findings);
    check_upstreams(config, &mut findings);
    check_routes(config, &mut findings);
    check_providers(config, &mut findings);
    check_models(config, &mut findings);
    check_prompts(config, &mut findings);
    check_ai(config, &mut findings);
    check_teams(config, &mut findings);
    check_access_policies(config, &mut findings);
    check_store(&config.store, &mut findings);
    check_cluster(config, &mut findings);
    for (path, message) in super::webhook::check(&config.webhook) {
        findings.error(path, message);
    }
    for (path, message) in super::mcp::check(&config.mcp_server, &config.mcp, &config.route) {
        findings.error(path, message);
    }
    check_secrets(config.secrets(), &mut findings);
    findings
}

/// `[cluster]`: a sync interval within its bounds and, with `redis` set, a URL the link can
/// use and a node name it accepts. The URL is only ever shown redacted (it may carry a
/// password); a reference that does not resolve is reported by [`check_secrets`].
fn check_cluster(config: &Config, findings: &mut Findings) {
    let cluster = &config.cluster;
    if !(MIN_SYNC_INTERVAL_MS..=MAX_SYNC_INTERVAL_MS).contains(&cluster.sync_interval_ms) {
        findings.error(
            "cluster.sync_interval_ms",
            format!(
                "must be {MIN_SYNC_INTERVAL_MS} to {MAX_SYNC_INTERVAL_MS} milliseconds (got {})",
                cluster.sync_interval_ms
            ),
        );
    }
    let Some(redis) = &cluster.redis else {
        return;
    };
    if let Ok(value) = redis.resolve() {
        // The link's own parser, so `check` accepts exactly what `serve` connects to.
        if let Err(e) = crate::cluster::RedisTarget::parse(value.expose()) {
            findings.error("cluster.redis", format!("{redis}: {e}"));
        }
    }
    // A name `[store]` already refuses is reported there once.
    if let Some(node) = config.store.node_name().filter(|n| is_node_name(n)) {
        if let Err(e) = crate::cluster::link::check_node_name(&node) {
            findings.error("store.node", format!("with [cluster] redis set, {e}"));
        }
    }
}

/// Checks what the store commands read (`server.data_dir`, already resolved, and
/// `[store]`) and nothing else: their narrow load runs this instead of [`validate`].
pub(crate) fn validate_store(data_dir: &Path, store: &StoreConfig) -> Findings {
    let mut findings = Findings::default();
    check_data_dir(data_dir, &mut findings);
    check_store(store, &mut findings);
    check_secrets(store.secrets(), &mut findings);
    findings
}

/// `[store]`: what PostgreSQL needs, a usable node name. The secret references themselves
/// are resolved by [`check_secrets`]; here the values of the URL and the pepper are checked,
/// and never shown (the URL usually carries a password).
fn check_store(store: &StoreConfig, findings: &mut Findings) {
    match store.backend {
        StoreBackend::Postgres => {
            match &store.url {
                None => findings.error(
                    "store.url",
                    "is required with backend = \"postgres\" (postgres://user:password@host:port/db, as env:NAME or file:PATH)",
                ),
                Some(url) => {
                    if let Ok(value) = url.resolve() {
                        if let Err(e) = check_postgres_url(value.expose()) {
                            findings.error("store.url", format!("{url}: {e}"));
                        }
                    }
                }
            }
            match &store.pepper {
                None => findings.error(
                    "store.pepper",
                    "is required with backend = \"postgres\" (the secret every node shares, as env:NAME or file:PATH)",
                ),
                Some(pepper) => {
                    // The store's own parser, so `check` accepts exactly what `serve` opens.
                    if let Ok(value) = pepper.resolve() {
                        if crate::store::Pepper::from_hex(value.expose()).is_err() {
                            findings.error(
                                "store.pepper",
                                format!(
                                    "{pepper} must be 64 hex characters, 32 random bytes (e.g. \
                                     `openssl rand -hex 32`, or a single host's data_dir/pepper)"
                                ),
                            );
                        }
                    }
                }
            }
        }
        StoreBackend::Sqlite => {
            for (key, secret) in [("url", &store.url), ("pepper", &store.pepper)] {
                if secret.is_some() {
                    findings.warning(
                        format!("store.{key}"),
                        "ignored with backend = \"sqlite\" (the store is in server.data_dir)",
                    );
                }
            }
        }
    }
    // An empty node means the host name (the loader fills it in; a config built in code
    // may not have).
    match store.node_name() {
        None => findings.error(
            "store.node",
            "the host name could not be read; set store.node",
        ),
        Some(node) if !is_node_name(&node) => {
            let whose = if store.node.is_empty() {
                " (the host name is not one; set store.node)"
            } else {
                ""
            };
            findings.error(
                "store.node",
                format!("must be 1 to {MAX_NODE_LEN} letters, digits, `.`, `_` or `-`{whose}"),
            );
        }
        Some(_) => {}
    }
}

/// What is wrong with a PostgreSQL connection URL, in words that never quote it.
fn check_postgres_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_URL_BYTES {
        return Err(format!("is longer than {MAX_URL_BYTES} bytes"));
    }
    if !POSTGRES_SCHEMES
        .iter()
        .any(|scheme| url.starts_with(scheme))
    {
        return Err(
            "must be a postgres://user:password@host:port/db URL (the value is not shown)".into(),
        );
    }
    if !is_field_value(url) || url.contains([' ', '\t']) {
        return Err("contains a space, line break or control character".into());
    }
    Ok(())
}

/// `[[team]]`: named once each, with budgets that mean something.
fn check_teams(config: &Config, findings: &mut Findings) {
    let mut names = HashMap::new();
    for (i, team) in config.team.iter().enumerate() {
        let at = |key: &str| format!("team[{i}].{key}");
        if findings.required(at("name"), &team.name) {
            findings.unique(&mut names, &team.name, at("name"), "team name");
        }
        if let Some(usd) = team.budget_usd {
            if !usd.is_finite() || usd < 0.0 {
                findings.error(at("budget_usd"), "must be a number >= 0");
            }
        }
        if let Some(period) = &team.budget_period {
            if !matches!(period.as_str(), "day" | "month" | "total") {
                findings.error(at("budget_period"), "must be day, month or total");
            }
        }
    }
}

/// `[[access_policy]]`: one per team, durations that parse, and an `auto_approve` envelope
/// that fits inside the policy's `max_ttl`.
fn check_access_policies(config: &Config, findings: &mut Findings) {
    use crate::clock::parse_duration;
    let mut teams = HashMap::new();
    for (i, policy) in config.access_policy.iter().enumerate() {
        let at = |key: &str| format!("access_policy[{i}].{key}");
        if findings.required(at("team"), &policy.team) {
            findings.unique(&mut teams, &policy.team, at("team"), "access policy team");
        }
        let max_ttl = if findings.required(at("max_ttl"), &policy.max_ttl) {
            match parse_duration(&policy.max_ttl) {
                Ok(ttl) if ttl.is_zero() => {
                    findings.error(at("max_ttl"), "must be longer than 0s");
                    None
                }
                Ok(ttl) => Some(ttl),
                Err(e) => {
                    findings.error(at("max_ttl"), e);
                    None
                }
            }
        } else {
            None
        };
        let Some(auto) = &policy.auto_approve else {
            continue;
        };
        if auto.models.iter().any(|m| m.trim().is_empty()) {
            findings.error(at("auto_approve.models"), "entries must not be empty");
        }
        if let Some(text) = &auto.max_ttl {
            match parse_duration(text) {
                Ok(ttl) if max_ttl.is_some_and(|max| ttl > max) => findings.error(
                    at("auto_approve.max_ttl"),
                    format!("must not exceed max_ttl ({})", policy.max_ttl),
                ),
                Ok(_) => {}
                Err(e) => findings.error(at("auto_approve.max_ttl"), e),
            }
        }
        if let Some(usd) = auto.budget_usd {
            if !usd.is_finite() || usd < 0.0 {
                findings.error(at("auto_approve.budget_usd"), "must be a number >= 0");
            }
        }
    }
}

/// Ports collide across `listen`, `tls.listen` and `admin_listen`: with SO_REUSEPORT a
/// duplicate would not fail to bind, it would silently split traffic between two listeners.
fn check_server(config: &Config, findings: &mut Findings) {
    let server: &ServerConfig = &config.server;
    let mut bound: HashMap<std::net::SocketAddr, String> = HashMap::new();
    let mut check_addr =
        |findings: &mut Findings, path: String, text: &str| match parse_listen_addr(text) {
            // Port 0 asks the kernel for a fresh port per listener: never a collision.
            Ok(addr) if addr.port() == 0 => {}
            Ok(addr) => match bound.get(&addr) {
                Some(earlier) => findings.error(path, format!("{addr} is also used by {earlier}")),
                None => {
                    bound.insert(addr, path);
                }
            },
            Err(e) => findings.error(path, e),
        };
    for (i, addr) in server.listen.iter().enumerate() {
        check_addr(findings, format!("server.listen[{i}]"), addr);
    }
    if let Some(tls) = &server.tls {
        for (i, addr) in tls.listen.iter().enumerate() {
            check_addr(findings, format!("server.tls.listen[{i}]"), addr);
        }
        if tls.listen.is_empty() {
            findings.error(
                "server.tls.listen",
                "[server.tls] needs at least one listen address",
            );
        }
        for (key, file) in [("cert", &tls.cert), ("key", &tls.key)] {
            let path = format!("server.tls.{key}");
            if file.as_os_str().is_empty() {
                findings.error(path, "is required when [server.tls] is set");
            } else {
                check_file_exists(config, findings, path, file);
            }
        }
    }
    check_addr(
        findings,
        "server.admin_listen".to_string(),
        &server.admin_listen,
    );
    let tls_listeners = server.tls.as_ref().map_or(0, |tls| tls.listen.len());
    if server.listen.is_empty() && tls_listeners == 0 {
        findings.error(
            "server.listen",
            "no listener: set server.listen or [server.tls] listen",
        );
    }
    if server.connections_per_worker == 0 {
        findings.error("server.connections_per_worker", "must be greater than 0");
    }
    check_data_dir(&config.resolve_path(&server.data_dir), findings);
}

/// `server.data_dir` (resolved) is a directory or can become one.
fn check_data_dir(data_dir: &Path, findings: &mut Findings) {
    if data_dir.exists() && !data_dir.is_dir() {
        findings.error(
            "server.data_dir",
            format!("{} exists and is not a directory", data_dir.display()),
        );
    }
}

fn check_limits(config: &Config, findings: &mut Findings) {
    let limits = &config.limits;
    let positive = [
        ("limits.max_header_bytes", limits.max_header_bytes as u64),
        ("limits.max_body_bytes", limits.max_body_bytes),
        ("limits.header_timeout_ms", limits.header_timeout_ms),
        ("limits.idle_timeout_ms", limits.idle_timeout_ms),
        (
            "limits.upstream_connect_timeout_ms",
            limits.upstream_connect_timeout_ms,
        ),
        ("limits.upstream_timeout_ms", limits.upstream_timeout_ms),
        ("lua.hook_timeout_ms", config.lua.hook_timeout_ms),
        ("lua.memory_limit_mb", config.lua.memory_limit_mb),
    ];
    for (path, value) in positive {
        if value == 0 {
            findings.error(path, "must be greater than 0");
        }
    }
    let max_keys = config.metrics.max_keys;
    if max_keys == 0 || max_keys > super::model::MAX_METRICS_KEYS {
        findings.error(
            "metrics.max_keys",
            format!(
                "must be from 1 to {} (each tracked key is a series of its own)",
                super::model::MAX_METRICS_KEYS
            ),
        );
    }
}

fn check_upstreams(config: &Config, findings: &mut Findings) {
    let mut names = HashMap::new();
    for (i, upstream) in config.upstream.iter().enumerate() {
        let at = |key: &str| format!("upstream[{i}].{key}");
        if findings.required(at("name"), &upstream.name) {
            findings.unique(&mut names, &upstream.name, at("name"), "upstream name");
        }
        if upstream.targets.is_empty() {
            findings.error(at("targets"), "needs at least one host:port target");
        }
        for (t, target) in upstream.targets.iter().enumerate() {
            if let Err(e) = target.parse::<HostPort>() {
                findings.error(format!("upstream[{i}].targets[{t}]"), e);
            }
        }
        if !upstream.sni.is_empty() && !super::address::is_dns_name(&upstream.sni) {
            findings.error(at("sni"), "must be a DNS name");
        }
        check_optional_file(config, findings, at("ca_file"), &upstream.ca_file);
        check_credential(upstream, i, findings);
        check_keepalive(
            findings,
            &format!("upstream[{i}]"),
            upstream.keepalive,
            upstream.keepalive_timeout_ms,
        );
    }
}

/// `keepalive` and `keepalive_timeout_ms` of an upstream or provider at `at`: bounded, since
/// every idle connection holds a descriptor in each worker.
fn check_keepalive(findings: &mut Findings, at: &str, keepalive: usize, timeout_ms: u64) {
    if keepalive > MAX_KEEPALIVE {
        findings.error(
            format!("{at}.keepalive"),
            format!("must be at most {MAX_KEEPALIVE}"),
        );
    }
    if timeout_ms == 0 || timeout_ms > MAX_KEEPALIVE_TIMEOUT_MS {
        findings.error(
            format!("{at}.keepalive_timeout_ms"),
            format!("must be 1 to {MAX_KEEPALIVE_TIMEOUT_MS} (one hour); use keepalive = 0 for no reuse"),
        );
    }
}

/// Header names and values that would let an injected credential rewrite message framing or
/// routing; the gateway owns these (RFC 9112 §6, RFC 9110 §7.2).
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
];

fn check_credential(upstream: &UpstreamConfig, i: usize, findings: &mut Findings) {
    let Some(credential) = &upstream.credential else {
        return;
    };
    let at = |key: &str| format!("upstream[{i}].credential.{key}");
    if let Some(oauth2) = &credential.oauth2 {
        if credential.secret.is_some() || !credential.header.is_empty() {
            findings.error(
                format!("upstream[{i}].credential"),
                "oauth2 takes no header, value or secret: the token goes in Authorization: Bearer",
            );
        }
        check_oauth2(oauth2, &at("oauth2"), findings);
        return;
    }
    if findings.required(at("header"), &credential.header) {
        if !is_token(&credential.header) {
            findings.error(
                at("header"),
                "is not a valid header name (RFC 9110 §5.6.2 token)",
            );
        } else if RESERVED_HEADERS.contains(&credential.header.to_ascii_lowercase().as_str()) {
            findings.error(at("header"), "names a header the gateway must control");
        }
    }
    if !credential.value.contains("{secret}") {
        findings.error(at("value"), "must contain {secret}, where the secret goes");
    }
    if !is_field_value(&credential.value) {
        findings.error(
            at("value"),
            "contains a character not allowed in a header value (RFC 9110 §5.5)",
        );
    }
}

/// An OAuth2 client-credentials source at `at`: a token URL the client can call (no user
/// info; `https://` unless it is a loopback test endpoint, since the client secret travels to
/// it) and a client id. Nothing is contacted.
fn check_oauth2(oauth2: &super::OAuth2Config, at: &str, findings: &mut Findings) {
    let key = |k: &str| format!("{at}.{k}");
    if findings.required(key("token_url"), &oauth2.token_url) {
        match super::HttpUrl::parse(oauth2.token_url.trim()) {
            Err(e) => findings.error(key("token_url"), e),
            Ok(url) if !url.tls() && !is_loopback_host(url.host()) => findings.error(
                key("token_url"),
                "must be https:// (the client secret is sent to it); http:// only to loopback",
            ),
            Ok(_) => {}
        }
    }
    if findings.required(key("client_id"), &oauth2.client_id)
        && oauth2.client_id.chars().any(char::is_control)
    {
        findings.error(key("client_id"), "contains a control character");
    }
    for (name, text) in [("scope", &oauth2.scope), ("audience", &oauth2.audience)] {
        if text.chars().any(char::is_control) {
            findings.error(key(name), "contains a control character");
        }
    }
}

/// `localhost` or a loopback address.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// RFC 9110 §5.6.2: token = 1*tchar.
pub(crate) fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// RFC 9110 §5.5: visible characters, spaces and tabs; no CR, LF or NUL.
fn is_field_value(text: &str) -> bool {
    text.bytes()
        .all(|b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80)
}

/// A name used in URLs, CLI lists (`--routes a,b`) and logs: no spaces, commas or controls.
fn is_plain_name(text: &str) -> bool {
    text.chars()
        .all(|c| !c.is_whitespace() && !c.is_control() && c != ',')
}

fn check_routes(config: &Config, findings: &mut Findings) {
    let mut names = HashMap::new();
    let mut matches: HashMap<(&str, &str), String> = HashMap::new();
    for (i, route) in config.route.iter().enumerate() {
        let at = |key: &str| format!("route[{i}].{key}");
        if findings.required(at("name"), &route.name) {
            if is_plain_name(&route.name) {
                findings.unique(&mut names, &route.name, at("name"), "route name");
            } else {
                findings.error(at("name"), "must not contain spaces or commas");
            }
        }
        if !route.path_prefix.starts_with('/') {
            findings.error(at("path_prefix"), "must start with '/'");
        } else if let Some(problem) =
            prefix_never_matches(&route.path_prefix, config.limits.merge_slashes)
        {
            findings.error(at("path_prefix"), problem);
        } else {
            let key = (route.host.as_str(), route.path_prefix.as_str());
            match matches.get(&key) {
                Some(earlier) => findings.error(
                    at("path_prefix"),
                    format!("{earlier} already matches the same host and path_prefix"),
                ),
                None => {
                    matches.insert(key, format!("route[{i}]"));
                }
            }
        }
        if !route.host.is_empty() && !is_route_host(&route.host) {
            findings.error(at("host"), "must be a host name, optionally with :port");
        }
        if findings.required(at("upstream"), &route.upstream)
            && !config.upstream.iter().any(|u| u.name == route.upstream)
        {
            findings.error(
                at("upstream"),
                format!("no [[upstream]] named `{}`", route.upstream),
            );
        }
        for (s, scope) in route.scopes.iter().enumerate() {
            if scope.is_empty() || !is_plain_name(scope) {
                findings.error(
                    format!("route[{i}].scopes[{s}]"),
                    "must be a non-empty word without spaces or commas",
                );
            }
        }
        check_ip_rules(
            findings,
            &format!("route[{i}]"),
            &route.allow_ips,
            &route.deny_ips,
        );
        for (key, limit) in [
            ("rate_limit.rps", &route.rate_limit),
            ("ip_rate_limit.rps", &route.ip_rate_limit),
        ] {
            if !limit.rps.is_finite() || limit.rps < 0.0 {
                findings.error(at(key), "must be a number >= 0");
            }
        }
        check_optional_file(config, findings, at("hooks"), &route.hooks);
        // Refused whatever the route's auth: the credential leaks by being written there.
        if has_userinfo(&route.jwt.jwks_url) {
            let shown = redact_url(&route.jwt.jwks_url);
            findings.error(
                at("jwt.jwks_url"),
                format!("`{shown}`: {CREDENTIALS_IN_URL}"),
            );
        }
        check_route_auth(route, i, findings);
    }
}

/// `Host` header value as matched by a route: a DNS name, IPv4 or bracketed IPv6 address,
/// with an optional port (RFC 9110 §7.2).
/// Requests are routed on their normalized path (`limits.merge_slashes` included), so a
/// prefix that normalization would change or refuse could never match.
fn prefix_never_matches(prefix: &str, merge_slashes: bool) -> Option<String> {
    match normalize_path(prefix, merge_slashes) {
        Ok(normal) if normal == prefix => None,
        Ok(normal) => Some(format!(
            "can never match: request paths are normalized first (this one becomes {normal:?})"
        )),
        Err(e) => Some(format!("can never match: {e}")),
    }
}

fn is_route_host(host: &str) -> bool {
    let is_port = |p: &str| p.parse::<u16>().is_ok();
    if let Some(rest) = host.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        return ip.parse::<std::net::Ipv6Addr>().is_ok()
            && (after.is_empty() || after.strip_prefix(':').is_some_and(is_port));
    }
    match host.rsplit_once(':') {
        Some((name, port)) => is_port(port) && super::address::is_dns_name(name),
        None => super::address::is_dns_name(host),
    }
}

fn check_route_auth(route: &RouteConfig, i: usize, findings: &mut Findings) {
    let at = |key: &str| format!("route[{i}].{key}");
    match route.auth {
        AuthKind::Jwt => {
            let jwt = &route.jwt;
            if jwt.public_key.is_empty() && jwt.jwks_url.is_empty() && jwt.hs_secret.is_none() {
                findings.error(
                    at("jwt"),
                    "auth = \"jwt\" needs one of jwt.public_key, jwt.jwks_url, jwt.hs_secret",
                );
            }
            if !jwt.jwks_url.is_empty() && !is_http_url(&jwt.jwks_url) {
                findings.error(at("jwt.jwks_url"), "must start with http:// or https://");
            }
            check_hs_secret_length(jwt, at("jwt.hs_secret"), findings);
        }
        AuthKind::Lua if route.hooks.is_empty() => {
            findings.error(at("hooks"), "auth = \"lua\" needs a hooks script");
        }
        _ => {}
    }
}

/// RFC 7518 §3.2: an HS256 key shorter than the hash output is refused. Measured on the
/// resolved value; the message names the reference, never the value. A reference that does
/// not resolve is reported by `check_secrets`.
fn check_hs_secret_length(jwt: &JwtConfig, path: String, findings: &mut Findings) {
    let Some(reference) = &jwt.hs_secret else {
        return;
    };
    if let Ok(value) = reference.resolve() {
        if value.expose().len() < MIN_HS_SECRET_BYTES {
            findings.error(
                path,
                format!(
                    "{reference} must be at least {MIN_HS_SECRET_BYTES} bytes for HS256 (RFC 7518 §3.2)"
                ),
            );
        }
    }
}

fn is_http_url(url: &str) -> bool {
    // Compared as bytes: slicing the str could land inside a multi-byte character.
    let url = url.as_bytes();
    ["http://", "https://"].iter().any(|scheme| {
        url.len() > scheme.len() && url[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
    })
}

fn check_providers(config: &Config, findings: &mut Findings) {
    let mut providers = HashMap::new();
    for (i, provider) in config.provider.iter().enumerate() {
        let at = |key: &str| format!("provider[{i}].{key}");
        if findings.required(at("name"), &provider.name) {
            findings.unique(&mut providers, &provider.name, at("name"), "provider name");
        }
        if provider.kind == ProviderKind::Vertex {
            // Its base_url comes from the region when left out; the region is checked there.
            check_vertex(provider, &at, findings);
        } else {
            if !provider.project.is_empty() {
                findings.error(at("project"), "only kind = \"vertex\" takes a project");
            }
            if provider.service_account.is_some() {
                findings.error(
                    at("service_account"),
                    "only kind = \"vertex\" authenticates with a Google service account",
                );
            }
        }
        if provider.base_url.is_empty() {
            // Bedrock and Vertex endpoints come from their region, whose absence is
            // reported at `region`.
            if !matches!(provider.kind, ProviderKind::Bedrock | ProviderKind::Vertex) {
                findings.error(
                    at("base_url"),
                    "is required for kind = \"azure_openai\" (your resource's endpoint)",
                );
            }
        } else {
            check_base_url(findings, at("base_url"), &provider.base_url);
        }
        check_optional_file(config, findings, at("ca_file"), &provider.ca_file);
        check_keepalive(
            findings,
            &format!("provider[{i}]"),
            provider.keepalive,
            provider.keepalive_timeout_ms,
        );
        check_aws_credentials(provider, &at, findings);
        if provider.kind == ProviderKind::Bedrock {
            // Checked above: Bedrock takes SigV4 signatures, never a key.
        } else if provider.entra.is_some() {
            // Entra ID tokens are Azure's: no other kind would accept them.
            if provider.kind != ProviderKind::AzureOpenai {
                findings.error(
                    at("entra"),
                    "only kind = \"azure_openai\" takes Entra ID tokens",
                );
            }
            if provider.api_key.is_some() {
                findings.error(
                    at("entra"),
                    "set either api_key or entra, not both (entra replaces the api-key header)",
                );
            }
        } else if provider.api_key.is_none()
            && provider.service_account.is_none()
            && provider.kind != ProviderKind::Mock
        {
            findings.warning(
                at("api_key"),
                "no api_key: requests go to the provider without a credential",
            );
        }
        // Only OpenAI's API has `/v1/responses` in its own format; every other kind is
        // reached through the translation to its chat API.
        if provider.responses == Some(ResponsesApi::Native) && provider.kind != ProviderKind::Openai
        {
            findings.error(
                at("responses"),
                "`native` needs kind = \"openai\" (only OpenAI's API has /v1/responses); use \"translate\"",
            );
        }
    }
}

/// The AWS settings of `[[provider]]`: on `kind = "bedrock"` a region and a key pair, no
/// `api_key`, and a well-formed `assume_role`; on any other kind none of them, since only
/// Bedrock's requests are SigV4-signed.
fn check_aws_credentials(
    provider: &crate::config::ProviderConfig,
    at: &dyn Fn(&str) -> String,
    findings: &mut Findings,
) {
    let aws_fields = [
        ("access_key_id", provider.access_key_id.is_some()),
        ("secret_access_key", provider.secret_access_key.is_some()),
        ("session_token", provider.session_token.is_some()),
        ("assume_role", provider.assume_role.is_some()),
    ];
    if provider.kind != ProviderKind::Bedrock {
        for (name, set) in aws_fields {
            if set {
                findings.error(at(name), "only kind = \"bedrock\" takes AWS credentials");
            }
        }
        return;
    }
    if provider.region.is_empty() {
        findings.error(
            at("region"),
            "is required for kind = \"bedrock\" (e.g. us-east-1)",
        );
    } else if !is_aws_region(&provider.region) {
        findings.error(
            at("region"),
            "must be an AWS region name such as us-east-1 (lowercase letters, digits, dashes)",
        );
    }
    for (name, set) in &aws_fields[..2] {
        if !set {
            findings.error(
                at(name),
                "is required for kind = \"bedrock\" (requests are SigV4-signed)",
            );
        }
    }
    if provider.api_key.is_some() {
        findings.error(
            at("api_key"),
            "kind = \"bedrock\" takes no api_key: requests are signed with access_key_id and secret_access_key",
        );
    }
    if provider.entra.is_some() {
        findings.error(
            at("entra"),
            "only kind = \"azure_openai\" takes Entra ID tokens",
        );
    }
    if let Some(role) = &provider.assume_role {
        let at_role = |key: &str| at(&format!("assume_role.{key}"));
        let before = findings.errors.len();
        if !is_iam_role_arn(&role.role_arn) {
            findings.error(
                at_role("role_arn"),
                "must be an IAM role ARN, arn:aws:iam::123456789012:role/name",
            );
        }
        if !is_http_url(&role.sts_url) || has_userinfo(&role.sts_url) {
            findings.error(
                at_role("sts_url"),
                format!(
                    "`{}` must be an http:// or https:// URL",
                    redact_url(&role.sts_url)
                ),
            );
        }
        // Empty is STS's default name, `credentialflow`.
        let name_ok = role.session_name.is_empty()
            || (2..=64).contains(&role.session_name.len())
                && role
                    .session_name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
        if !name_ok {
            findings.error(
                at_role("session_name"),
                "must be 2 to 64 of letters, digits and _+=,.@- (STS RoleSessionName)",
            );
        }
        // 0 is STS's default duration, 3600 seconds.
        if role.duration_s != 0
            && !(MIN_ROLE_DURATION_S..=MAX_ROLE_DURATION_S).contains(&role.duration_s)
        {
            findings.error(
                at_role("duration_s"),
                format!("must be {MIN_ROLE_DURATION_S} to {MAX_ROLE_DURATION_S} seconds (STS DurationSeconds)"),
            );
        }
        // What the fields above do not cover (a query in sts_url, the signing region of a
        // host that names none), as the STS source itself checks it; contacts nothing.
        if findings.errors.len() == before {
            let settings = crate::identity::sts::AssumeRoleSettings {
                sts_url: role.sts_url.clone(),
                role_arn: role.role_arn.clone(),
                session_name: role.session_name.clone(),
                duration_s: u32::try_from(role.duration_s).unwrap_or(u32::MAX),
                fallback_region: Some(provider.region.clone()),
            };
            if let Err(e) = crate::identity::sts::check(&settings) {
                // The source names the setting at fault first (`sts_url: ...`).
                match e.split_once(": ") {
                    Some((key, why))
                        if ["sts_url", "role_arn", "session_name", "duration_s"].contains(&key) =>
                    {
                        findings.error(at_role(key), why)
                    }
                    _ => findings.error(at("assume_role"), e),
                }
            }
        }
    }
}

/// STS `AssumeRole`'s bounds on `DurationSeconds`.
const MIN_ROLE_DURATION_S: u64 = 900;
const MAX_ROLE_DURATION_S: u64 = 43_200;

/// An AWS region name as it stands in endpoints and credential scopes (`us-east-1`,
/// `us-gov-west-1`): lowercase letters, digits and inner dashes.
fn is_aws_region(region: &str) -> bool {
    region.len() <= 32
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-')
}

/// `arn:{partition}:iam::{12-digit account}:role/{path/}name` (IAM's "IAM identifiers").
fn is_iam_role_arn(arn: &str) -> bool {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let name = resource.strip_prefix("role/").unwrap_or_default();
    partition.starts_with("aws")
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !name.is_empty()
        && name.len() <= 512
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+=,.@-".contains(&b))
        && !name.ends_with('/')
}

/// Longest Vertex AI project id accepted (Google's are at most 30 bytes; domain-scoped ones,
/// `example.com:my-project`, are longer).
const MAX_VERTEX_PROJECT_BYTES: usize = 128;

/// `kind = "vertex"`: a project and a region that fit in a path segment (and, for the region,
/// a host name), and a service account instead of an API key. The service-account file
/// itself is parsed when the catalog is built (`check` does too), which names its fields.
fn check_vertex(
    provider: &super::ProviderConfig,
    at: &dyn Fn(&str) -> String,
    findings: &mut Findings,
) {
    let project = &provider.project;
    if findings.required(at("project"), project) {
        let plain = project.len() <= MAX_VERTEX_PROJECT_BYTES
            && project
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:".contains(&b));
        if !plain {
            findings.error(
                at("project"),
                format!(
                    "must be a Google Cloud project id (lower-case letters, digits, `-`, `.`, `:`; at most {MAX_VERTEX_PROJECT_BYTES} bytes)"
                ),
            );
        }
    }
    let region = &provider.region;
    if findings.required(at("region"), region)
        && region != "global"
        && !super::is_vertex_location(region)
    {
        findings.error(
            at("region"),
            "must be a Vertex AI location such as \"us-east5\" or \"global\" (lower-case letters, digits and `-`)",
        );
    }
    match &provider.service_account {
        None => findings.error(
            at("service_account"),
            "is required for kind = \"vertex\": file:PATH of the service-account JSON key (or env:NAME holding it)",
        ),
        Some(reference) if reference.is_literal() => findings.error(
            at("service_account"),
            "must be file:PATH (the service-account JSON) or env:NAME holding it, not the key itself",
        ),
        Some(_) => {}
    }
    if provider.api_key.is_some() {
        findings.error(
            at("api_key"),
            "kind = \"vertex\" takes no api_key: its calls carry the service account's tokens",
        );
    }
}

/// A provider endpoint: http(s), and nothing in it that could be a credential. Keys go in
/// `api_key`, where they are a secret reference and never printed; a URL is logged and shown
/// in errors. Messages show the URL redacted.
fn check_base_url(findings: &mut Findings, path: String, url: &str) {
    let shown = redact_url(url);
    if has_userinfo(url) {
        findings.error(path, format!("`{shown}`: {CREDENTIALS_IN_URL}"));
    } else if !is_http_url(url) {
        findings.error(
            path,
            format!("`{shown}` must start with http:// or https://"),
        );
    } else if url.contains('?') {
        findings.error(
            path,
            format!(
                "`{shown}`: a query string is not allowed in base_url; providers take their key from api_key"
            ),
        );
    } else if url.contains('#') {
        findings.error(
            path,
            format!("`{shown}`: a fragment is not allowed in base_url"),
        );
    }
}

fn check_models(config: &Config, findings: &mut Findings) {
    let mut models = HashMap::new();
    for (i, model) in config.model.iter().enumerate() {
        let at = |key: &str| format!("model[{i}].{key}");
        if findings.required(at("name"), &model.name) {
            if is_plain_name(&model.name) {
                findings.unique(&mut models, &model.name, at("name"), "model name");
            } else {
                findings.error(at("name"), "must not contain spaces or commas");
            }
        }
        if findings.required(at("provider"), &model.provider)
            && !config.provider.iter().any(|p| p.name == model.provider)
        {
            findings.error(
                at("provider"),
                format!("no [[provider]] named `{}`", model.provider),
            );
        }
        let prices = [
            ("input_price_per_mtok", Some(model.input_price_per_mtok)),
            ("output_price_per_mtok", Some(model.output_price_per_mtok)),
            (
                "cached_input_price_per_mtok",
                model.cached_input_price_per_mtok,
            ),
        ];
        for (key, price) in prices {
            if price.is_some_and(|p| !p.is_finite() || p < 0.0) {
                findings.error(at(key), "must be a price >= 0");
            }
        }
    }
    for (i, model) in config.model.iter().enumerate() {
        for (f, fallback) in model.fallbacks.iter().enumerate() {
            let path = format!("model[{i}].fallbacks[{f}]");
            if *fallback == model.name {
                findings.error(path, "a model cannot fall back to itself");
            } else if !config.model.iter().any(|m| m.name == *fallback) {
                findings.error(path, format!("no [[model]] named `{fallback}`"));
            } else if model.fallbacks[..f].contains(fallback) {
                findings.error(path, format!("`{fallback}` is listed twice"));
            }
        }
    }
}

fn check_prompts(config: &Config, findings: &mut Findings) {
    let mut prompts: HashMap<(&str, u32), String> = HashMap::new();
    for (i, prompt) in config.prompt.iter().enumerate() {
        let at = |key: &str| format!("prompt[{i}].{key}");
        if findings.required(at("name"), &prompt.name) {
            if !is_url_segment(&prompt.name) {
                findings.error(
                    at("name"),
                    "may only use letters, digits, '.', '_' and '-' (it is a URL path segment)",
                );
            }
            match prompts.get(&(prompt.name.as_str(), prompt.version)) {
                Some(earlier) => findings.error(
                    at("version"),
                    format!(
                        "duplicate prompt `{}` v{} (first defined at {earlier})",
                        prompt.name, prompt.version
                    ),
                ),
                None => {
                    prompts.insert(
                        (prompt.name.as_str(), prompt.version),
                        format!("prompt[{i}]"),
                    );
                }
            }
        }
        if prompt.version == 0 {
            findings.error(at("version"), "versions start at 1");
        }
        if findings.required(at("model"), &prompt.model)
            && !config.model.iter().any(|m| m.name == prompt.model)
        {
            findings.error(
                at("model"),
                format!("no [[model]] named `{}`", prompt.model),
            );
        }
        findings.required(at("template"), &prompt.template);
    }
}

/// `allow_ips` / `deny_ips` of a route or of `[ai]` (at `owner`): each entry an address or
/// CIDR, each bad one named by its index.
fn check_ip_rules(findings: &mut Findings, owner: &str, allow: &[String], deny: &[String]) {
    for (key, list) in [("allow_ips", allow), ("deny_ips", deny)] {
        for (c, cidr) in list.iter().enumerate() {
            if let Err(e) = cidr.parse::<Cidr>() {
                findings.error(format!("{owner}.{key}[{c}]"), e);
            }
        }
    }
}

/// `[ai]`: only auth kinds that can work without route settings; IP rules as a route's.
fn check_ai(config: &Config, findings: &mut Findings) {
    check_optional_file(config, findings, "ai.hooks".to_string(), &config.ai.hooks);
    check_ip_rules(findings, "ai", &config.ai.allow_ips, &config.ai.deny_ips);
    match config.ai.auth {
        AuthKind::Jwt => findings.error(
            "ai.auth",
            "\"jwt\" is not available for the AI front doors (no [ai] jwt settings); use api_key or lua",
        ),
        AuthKind::Lua if config.ai.hooks.is_empty() => {
            findings.error("ai.hooks", "ai.auth = \"lua\" needs a hooks script")
        }
        _ => {}
    }
    // Each drain holds a provider connection and the key's concurrency slot: bounded.
    if config.ai.drain_after_disconnect_ms > MAX_DRAIN_AFTER_DISCONNECT_MS {
        findings.error(
            "ai.drain_after_disconnect_ms",
            format!("must be at most {MAX_DRAIN_AFTER_DISCONNECT_MS} (10 minutes)"),
        );
    }
}

fn is_url_segment(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        && name != "."
        && name != ".."
}

/// Unresolvable `env:`/`file:` references are errors (the gateway could not use them);
/// literal values are warnings. Messages name the reference, never the value.
/// Each secret reference resolves to a value that can stand in a header; a literal one is
/// accepted with a warning.
fn check_secrets(secrets: Vec<(String, &SecretRef)>, findings: &mut Findings) {
    for (path, secret) in secrets {
        if secret.is_literal() {
            findings.warning(
                path,
                "literal secret in the config file; use env:NAME or file:PATH",
            );
            continue;
        }
        match secret.resolve() {
            Ok(value) if !is_field_value(value.expose()) => findings.error(
                path,
                format!("{secret} contains a line break or control character"),
            ),
            Ok(_) => {}
            Err(e) => findings.error(path, format!("cannot resolve secret: {e}")),
        }
    }
}

fn check_optional_file(config: &Config, findings: &mut Findings, path: String, file: &str) {
    if !file.is_empty() {
        check_file_exists(config, findings, path, Path::new(file));
    }
}

fn check_file_exists(config: &Config, findings: &mut Findings, path: String, file: &Path) {
    let resolved = config.resolve_path(file);
    if !resolved.is_file() {
        findings.error(path, format!("file {} does not exist", resolved.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::*;
    use crate::config::secret::SecretRef;
    use std::path::PathBuf;

    /// A small valid config: one upstream + route, one provider + model + prompt.
    fn valid() -> Config {
        Config {
            upstream: vec![UpstreamConfig {
                name: "backend".into(),
                targets: vec!["127.0.0.1:9000".into()],
                ..UpstreamConfig::default()
            }],
            route: vec![RouteConfig {
                name: "api".into(),
                path_prefix: "/api/".into(),
                upstream: "backend".into(),
                ..RouteConfig::default()
            }],
            provider: vec![ProviderConfig {
                name: "mock".into(),
                kind: ProviderKind::Mock,
                base_url: "http://mock.invalid".into(),
                api_key: None,
                entra: None,
                project: String::new(),
                region: String::new(),
                service_account: None,
                access_key_id: None,
                secret_access_key: None,
                session_token: None,
                assume_role: None,
                ca_file: String::new(),
                api_version: String::new(),
                mock: Default::default(),
                keepalive: 4,
                keepalive_timeout_ms: 1_000,
                responses: None,
            }],
            model: vec![ModelConfig {
                name: "m".into(),
                provider: "mock".into(),
                ..ModelConfig::default()
            }],
            prompt: vec![PromptConfig {
                name: "echo".into(),
                version: 1,
                model: "m".into(),
                template: "{{text}}".into(),
                ..PromptConfig::default()
            }],
            base_dir: PathBuf::from("/nonexistent-cf-base"),
            ..Config::default()
        }
    }

    fn errors_of(config: &Config) -> Vec<String> {
        validate(config)
            .errors
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    }

    fn temp_file(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("cf-validate-{}-{name}", std::process::id()));
        std::fs::write(&path, "x").unwrap();
        path
    }

    #[test]
    fn valid_config_has_no_findings() {
        let findings = validate(&valid());
        assert!(findings.errors.is_empty(), "{:?}", findings.errors);
        assert!(findings.warnings.is_empty(), "{:?}", findings.warnings);
    }

    #[test]
    fn unparsable_listen_address_is_an_error() {
        let mut config = valid();
        config.server.listen = vec!["127.0.0.1:8080".into(), "nohost".into()];
        assert_eq!(errors_of(&config), ["server.listen[1]"]);
    }

    #[test]
    fn ipv6_listen_address_in_brackets_is_accepted() {
        let mut config = valid();
        config.server.listen = vec!["[::1]:8080".into()];
        assert!(errors_of(&config).is_empty());
    }

    #[test]
    fn no_listener_at_all_is_an_error() {
        let mut config = valid();
        config.server.listen.clear();
        assert_eq!(errors_of(&config), ["server.listen"]);
    }

    #[test]
    fn tls_listener_alone_is_enough() {
        let mut config = valid();
        config.server.listen.clear();
        config.server.tls = Some(TlsListenConfig {
            listen: vec!["127.0.0.1:8443".into()],
            cert: temp_file("cert.pem"),
            key: temp_file("key.pem"),
        });
        assert!(errors_of(&config).is_empty(), "{:?}", errors_of(&config));
    }

    #[test]
    fn missing_tls_files_are_errors() {
        let mut config = valid();
        config.server.tls = Some(TlsListenConfig {
            listen: vec!["127.0.0.1:8443".into()],
            cert: "missing-cert.pem".into(),
            key: PathBuf::new(),
        });
        assert_eq!(errors_of(&config), ["server.tls.cert", "server.tls.key"]);
    }

    #[test]
    fn same_address_on_two_listeners_is_an_error() {
        let mut config = valid();
        config.server.admin_listen = "127.0.0.1:8080".into();
        assert_eq!(errors_of(&config), ["server.admin_listen"]);
    }

    #[test]
    fn unparsable_admin_listen_is_an_error() {
        let mut config = valid();
        config.server.admin_listen = "9901".into();
        assert_eq!(errors_of(&config), ["server.admin_listen"]);
    }

    #[test]
    fn metrics_max_keys_is_bounded() {
        let mut config = valid();
        config.metrics.max_keys = 0;
        assert_eq!(errors_of(&config), ["metrics.max_keys"]);
        config.metrics.max_keys = super::super::model::MAX_METRICS_KEYS + 1;
        assert_eq!(errors_of(&config), ["metrics.max_keys"]);
        config.metrics.max_keys = super::super::model::MAX_METRICS_KEYS;
        assert!(errors_of(&config).is_empty());
    }

    #[test]
    fn zero_limits_are_errors() {
        let mut config = valid();
        config.limits.max_body_bytes = 0;
        config.limits.header_timeout_ms = 0;
        config.lua.memory_limit_mb = 0;
        assert_eq!(
            errors_of(&config),
            [
                "limits.max_body_bytes",
                "limits.header_timeout_ms",
                "lua.memory_limit_mb"
            ]
        );
    }

    #[test]
    fn path_prefix_that_normalization_changes_is_an_error() {
        for prefix in ["/a/../b/", "/%7euser/", "/a//b/", "/a%2fb/", "/.."] {
            let mut config = valid();
            config.route[0].path_prefix = prefix.into();
            assert_eq!(errors_of(&config), ["route[0].path_prefix"], "{prefix}");
        }
    }

    #[test]
    fn double_slash_prefix_is_fine_when_slashes_are_kept() {
        let mut config = valid();
        config.limits.merge_slashes = false;
        config.route[0].path_prefix = "/a//b/".into();
        assert!(errors_of(&config).is_empty());
    }

    #[test]
    fn keepalive_is_bounded_and_zero_turns_reuse_off() {
        let mut config = valid();
        config.upstream[0].keepalive = 0;
        config.provider[0].keepalive = MAX_KEEPALIVE;
        assert!(errors_of(&config).is_empty());
        config.upstream[0].keepalive = MAX_KEEPALIVE + 1;
        config.provider[0].keepalive = MAX_KEEPALIVE + 1;
        assert_eq!(
            errors_of(&config),
            ["upstream[0].keepalive", "provider[0].keepalive"]
        );
    }

    #[test]
    fn keepalive_timeout_must_be_positive_and_at_most_an_hour() {
        let mut config = valid();
        config.upstream[0].keepalive_timeout_ms = MAX_KEEPALIVE_TIMEOUT_MS;
        assert!(errors_of(&config).is_empty());
        config.upstream[0].keepalive_timeout_ms = 0;
        config.provider[0].keepalive_timeout_ms = MAX_KEEPALIVE_TIMEOUT_MS + 1;
        assert_eq!(
            errors_of(&config),
            [
                "upstream[0].keepalive_timeout_ms",
                "provider[0].keepalive_timeout_ms"
            ]
        );
    }

    #[test]
    fn drain_after_disconnect_is_bounded_and_zero_turns_it_off() {
        let mut config = valid();
        config.ai.drain_after_disconnect_ms = 0;
        assert!(errors_of(&config).is_empty());
        config.ai.drain_after_disconnect_ms = MAX_DRAIN_AFTER_DISCONNECT_MS;
        assert!(errors_of(&config).is_empty());
        config.ai.drain_after_disconnect_ms = MAX_DRAIN_AFTER_DISCONNECT_MS + 1;
        assert_eq!(errors_of(&config), ["ai.drain_after_disconnect_ms"]);
    }

    #[test]
    fn duplicate_upstream_names_are_errors() {
        let mut config = valid();
        config.upstream.push(config.upstream[0].clone());
        assert_eq!(errors_of(&config), ["upstream[1].name"]);
    }

    #[test]
    fn upstream_without_targets_is_an_error() {
        let mut config = valid();
        config.upstream[0].targets.clear();
        assert_eq!(errors_of(&config), ["upstream[0].targets"]);
    }

    #[test]
    fn target_without_port_is_an_error() {
        let mut config = valid();
        config.upstream[0].targets.push("backend.internal".into());
        assert_eq!(errors_of(&config), ["upstream[0].targets[1]"]);
    }

    #[test]
    fn missing_upstream_ca_file_is_an_error() {
        let mut config = valid();
        config.upstream[0].ca_file = "ca.pem".into();
        assert_eq!(errors_of(&config), ["upstream[0].ca_file"]);
    }

    fn credential(header: &str, value: &str) -> Option<CredentialConfig> {
        std::env::set_var("CF_VALIDATE_CRED", "token");
        Some(CredentialConfig::header(
            header,
            value,
            SecretRef::Env("CF_VALIDATE_CRED".into()),
        ))
    }

    fn oauth2(token_url: &str, client_id: &str) -> Option<CredentialConfig> {
        std::env::set_var("CF_VALIDATE_OAUTH", "client-secret");
        Some(CredentialConfig {
            header: String::new(),
            value: "{secret}".into(),
            secret: None,
            oauth2: Some(crate::config::OAuth2Config {
                token_url: token_url.into(),
                client_id: client_id.into(),
                client_secret: SecretRef::Env("CF_VALIDATE_OAUTH".into()),
                scope: "read".into(),
                audience: String::new(),
                auth_method: crate::config::OAuth2AuthMethod::Basic,
            }),
        })
    }

    #[test]
    fn oauth2_credential_with_https_or_loopback_token_url_is_accepted() {
        let mut config = valid();
        for url in [
            "https://idp.example/token",
            "http://127.0.0.1:9000/token",
            "http://localhost/t",
        ] {
            config.upstream[0].credential = oauth2(url, "gateway");
            assert!(
                errors_of(&config).is_empty(),
                "{url}: {:?}",
                errors_of(&config)
            );
        }
    }

    #[test]
    fn oauth2_credential_needs_a_usable_token_url_and_a_client_id() {
        let mut config = valid();
        for url in [
            "",
            "ftp://idp/token",
            "http://idp.example/token",
            "https://u:p@idp/t",
        ] {
            config.upstream[0].credential = oauth2(url, "gateway");
            assert_eq!(
                errors_of(&config),
                ["upstream[0].credential.oauth2.token_url"],
                "{url}"
            );
        }
        config.upstream[0].credential = oauth2("https://idp.example/token", " ");
        assert_eq!(
            errors_of(&config),
            ["upstream[0].credential.oauth2.client_id"]
        );
    }

    #[test]
    fn oauth2_credential_takes_no_static_header() {
        let mut config = valid();
        let mut both = oauth2("https://idp.example/token", "gateway").unwrap();
        both.header = "authorization".into();
        config.upstream[0].credential = Some(both);
        assert_eq!(errors_of(&config), ["upstream[0].credential"]);
    }

    #[test]
    fn valid_credential_header_is_accepted() {
        let mut config = valid();
        config.upstream[0].credential = credential("authorization", "Bearer {secret}");
        assert!(errors_of(&config).is_empty(), "{:?}", errors_of(&config));
    }

    #[test]
    fn credential_header_that_is_not_a_token_is_an_error() {
        let mut config = valid();
        config.upstream[0].credential = credential("x api key", "{secret}");
        assert_eq!(errors_of(&config), ["upstream[0].credential.header"]);
    }

    #[test]
    fn credential_header_controlling_framing_is_an_error() {
        let mut config = valid();
        config.upstream[0].credential = credential("Content-Length", "{secret}");
        assert_eq!(errors_of(&config), ["upstream[0].credential.header"]);
    }

    #[test]
    fn credential_value_without_placeholder_is_an_error() {
        let mut config = valid();
        config.upstream[0].credential = credential("x-key", "Bearer");
        assert_eq!(errors_of(&config), ["upstream[0].credential.value"]);
    }

    #[test]
    fn route_to_unknown_upstream_is_an_error() {
        let mut config = valid();
        config.route[0].upstream = "nope".into();
        assert_eq!(errors_of(&config), ["route[0].upstream"]);
    }

    #[test]
    fn route_prefix_without_slash_is_an_error() {
        let mut config = valid();
        config.route[0].path_prefix = "api/".into();
        assert_eq!(errors_of(&config), ["route[0].path_prefix"]);
    }

    #[test]
    fn duplicate_route_names_are_errors() {
        let mut config = valid();
        let mut second = config.route[0].clone();
        second.path_prefix = "/other/".into();
        config.route.push(second);
        assert_eq!(errors_of(&config), ["route[1].name"]);
    }

    #[test]
    fn two_routes_with_same_host_and_prefix_are_an_error() {
        let mut config = valid();
        let mut second = config.route[0].clone();
        second.name = "api2".into();
        config.route.push(second);
        assert_eq!(errors_of(&config), ["route[1].path_prefix"]);
    }

    #[test]
    fn route_host_with_port_is_accepted_and_garbage_is_not() {
        let mut config = valid();
        config.route[0].host = "api.example.com:8443".into();
        assert!(errors_of(&config).is_empty());
        config.route[0].host = "[::1]".into();
        assert!(errors_of(&config).is_empty());
        config.route[0].host = "api example".into();
        assert_eq!(errors_of(&config), ["route[0].host"]);
    }

    #[test]
    fn ipv4_and_ipv6_cidrs_are_accepted() {
        let mut config = valid();
        config.route[0].allow_ips = vec!["10.0.0.0/8".into(), "2001:db8::/32".into()];
        config.route[0].deny_ips = vec!["10.1.2.3".into()];
        assert!(errors_of(&config).is_empty());
    }

    #[test]
    fn bad_cidrs_are_errors() {
        let mut config = valid();
        config.route[0].allow_ips = vec!["10.0.0.0/8".into(), "10.0.0.0/40".into()];
        config.route[0].deny_ips = vec!["nope".into()];
        assert_eq!(
            errors_of(&config),
            ["route[0].allow_ips[1]", "route[0].deny_ips[0]"]
        );
    }

    #[test]
    fn ai_ip_rules_are_checked_like_a_routes() {
        let mut config = valid();
        config.ai.allow_ips = vec!["10.0.0.0/8".into(), "::1".into()];
        config.ai.deny_ips = vec!["10.1.2.3".into()];
        assert!(errors_of(&config).is_empty());
        config.ai.allow_ips = vec!["10.0.0.0/8".into(), "10.0.0.0/40".into()];
        config.ai.deny_ips = vec!["nope".into()];
        assert_eq!(errors_of(&config), ["ai.allow_ips[1]", "ai.deny_ips[0]"]);
    }

    #[test]
    fn negative_rate_is_an_error() {
        let mut config = valid();
        config.route[0].rate_limit.rps = -1.0;
        config.route[0].ip_rate_limit.rps = f64::NAN;
        assert_eq!(
            errors_of(&config),
            ["route[0].rate_limit.rps", "route[0].ip_rate_limit.rps"]
        );
    }

    #[test]
    fn missing_hooks_file_is_an_error() {
        let mut config = valid();
        config.route[0].hooks = "hooks/api.lua".into();
        config.ai.hooks = "hooks/ai.lua".into();
        assert_eq!(errors_of(&config), ["route[0].hooks", "ai.hooks"]);
    }

    #[test]
    fn existing_hooks_file_is_accepted() {
        let mut config = valid();
        config.route[0].hooks = temp_file("hook.lua").display().to_string();
        assert!(errors_of(&config).is_empty());
    }

    #[test]
    fn jwt_route_without_key_source_is_an_error() {
        let mut config = valid();
        config.route[0].auth = AuthKind::Jwt;
        assert_eq!(errors_of(&config), ["route[0].jwt"]);
    }

    #[test]
    fn jwt_route_with_jwks_url_is_accepted() {
        let mut config = valid();
        config.route[0].auth = AuthKind::Jwt;
        config.route[0].jwt.jwks_url = "https://idp.example.com/jwks.json".into();
        assert!(errors_of(&config).is_empty());
    }

    fn all_errors(config: &Config) -> String {
        let errors = validate(config).errors;
        errors.iter().map(|(p, m)| format!("{p}: {m}\n")).collect()
    }

    #[test]
    fn provider_base_url_with_user_info_or_query_is_refused_without_the_secret() {
        for url in [
            "http://user:PW-planted@api.example.com",
            "https://api.example.com/v1?key=PW-planted",
            "https://api.example.com/v1#PW-planted",
        ] {
            let mut config = valid();
            config.provider[0].base_url = url.into();
            assert_eq!(errors_of(&config), ["provider[0].base_url"], "{url}");
            let shown = all_errors(&config);
            assert!(!shown.contains("PW-planted"), "{shown}");
        }
        let mut config = valid();
        config.provider[0].base_url = "http://user:PW-planted@api.example.com".into();
        assert!(all_errors(&config)
            .contains("credentials in URLs are not allowed; use api_key/credential"));
        config.provider[0].base_url = "https://api.example.com/v1?key=PW-planted".into();
        assert!(all_errors(&config).contains("providers take their key from api_key"));
    }

    #[test]
    fn jwks_url_with_user_info_is_refused_on_any_route() {
        let mut config = valid();
        config.route[0].jwt.jwks_url = "https://u:PW-planted@idp.example.com/jwks".into();
        assert_eq!(errors_of(&config), ["route[0].jwt.jwks_url"]);
        assert!(!all_errors(&config).contains("PW-planted"));
    }

    #[test]
    fn upstream_target_with_user_info_is_refused_without_the_secret() {
        let mut config = valid();
        config.upstream[0].targets = vec!["user:PW-planted@127.0.0.1:9000".into()];
        assert_eq!(errors_of(&config), ["upstream[0].targets[0]"]);
        assert!(!all_errors(&config).contains("PW-planted"));
    }

    #[test]
    fn short_hs_secret_is_refused_by_its_reference_only() {
        std::env::set_var("CF_TEST_SHORT_HS", "short-PW-planted");
        std::env::set_var("CF_TEST_LONG_HS", "x".repeat(32));
        let mut config = valid();
        config.route[0].auth = AuthKind::Jwt;
        config.route[0].jwt.hs_secret = Some(SecretRef::Env("CF_TEST_SHORT_HS".into()));
        assert_eq!(errors_of(&config), ["route[0].jwt.hs_secret"]);
        let shown = all_errors(&config);
        assert!(
            shown.contains("env:CF_TEST_SHORT_HS must be at least 32 bytes"),
            "{shown}"
        );
        assert!(!shown.contains("PW-planted"), "{shown}");
        config.route[0].jwt.hs_secret = Some(SecretRef::Env("CF_TEST_LONG_HS".into()));
        assert!(errors_of(&config).is_empty());
    }

    #[test]
    fn lua_auth_without_hooks_is_an_error() {
        let mut config = valid();
        config.route[0].auth = AuthKind::Lua;
        assert_eq!(errors_of(&config), ["route[0].hooks"]);
    }

    #[test]
    fn jwt_auth_for_ai_is_an_error() {
        let mut config = valid();
        config.ai.auth = AuthKind::Jwt;
        assert_eq!(errors_of(&config), ["ai.auth"]);
    }

    #[test]
    fn provider_base_url_without_http_scheme_is_an_error() {
        let mut config = valid();
        config.provider[0].base_url = "api.openai.com".into();
        assert_eq!(errors_of(&config), ["provider[0].base_url"]);
    }

    #[test]
    fn non_ascii_base_url_is_an_error_not_a_panic() {
        let mut config = valid();
        // A multi-byte character across the scheme's length used to panic the check.
        config.provider[0].base_url = "http:\u{fffd}//mock.invalid".into();
        assert_eq!(errors_of(&config), ["provider[0].base_url"]);
        config.provider[0].base_url = "HTTPS://m\u{e9}tier.example".into();
        assert!(errors_of(&config).is_empty());
    }

    #[test]
    fn azure_provider_without_base_url_is_an_error() {
        let mut config = valid();
        config.provider[0].kind = ProviderKind::AzureOpenai;
        config.provider[0].base_url.clear();
        assert_eq!(errors_of(&config), ["provider[0].base_url"]);
    }

    #[test]
    fn real_provider_without_api_key_is_a_warning() {
        let mut config = valid();
        config.provider[0].kind = ProviderKind::Openai;
        let findings = validate(&config);
        assert!(findings.errors.is_empty());
        assert_eq!(findings.warnings[0].0, "provider[0].api_key");
    }

    #[test]
    fn bedrock_needs_a_region_and_keys_takes_no_api_key_and_a_well_formed_assume_role() {
        let mut config = valid();
        let provider = &mut config.provider[0];
        provider.kind = ProviderKind::Bedrock;
        provider.base_url = String::new();
        assert_eq!(
            errors_of(&config),
            [
                "provider[0].region",
                "provider[0].access_key_id",
                "provider[0].secret_access_key"
            ]
        );
        let provider = &mut config.provider[0];
        provider.region = "eu-central-1".into();
        provider.access_key_id = Some(SecretRef::Env("CF_VALIDATE_AWS_ID".into()));
        provider.secret_access_key = Some(SecretRef::Env("CF_VALIDATE_AWS_SECRET".into()));
        std::env::set_var("CF_VALIDATE_AWS_ID", "AKIDEXAMPLE");
        std::env::set_var("CF_VALIDATE_AWS_SECRET", "secret");
        assert!(errors_of(&config).is_empty(), "{:?}", errors_of(&config));
        let warnings = validate(&config).warnings;
        assert!(
            !warnings.iter().any(|w| w.0.ends_with("api_key")),
            "SigV4 keys are a credential: {warnings:?}"
        );
        config.provider[0].api_key = Some(SecretRef::parse("sk-literal").unwrap());
        assert_eq!(errors_of(&config), ["provider[0].api_key"]);
        config.provider[0].api_key = None;
        config.provider[0].assume_role = Some(crate::config::AssumeRoleConfig {
            role_arn: "arn:aws:iam::123456789012:role/path/gateway".into(),
            sts_url: "https://sts.us-east-1.amazonaws.com".into(),
            session_name: "credentialflow".into(),
            duration_s: 3600,
        });
        assert!(errors_of(&config).is_empty(), "{:?}", errors_of(&config));
        // Empty name and zero duration are STS's defaults.
        let role = config.provider[0].assume_role.as_mut().unwrap();
        role.session_name = String::new();
        role.duration_s = 0;
        assert!(errors_of(&config).is_empty(), "{:?}", errors_of(&config));
        // What only the STS source's own check sees: a query in the endpoint; and a private
        // endpoint is signed for the provider's region, so it needs one.
        let role = config.provider[0].assume_role.as_mut().unwrap();
        role.sts_url = "https://sts.amazonaws.com/?Action=GetCallerIdentity".into();
        assert_eq!(errors_of(&config), ["provider[0].assume_role.sts_url"]);
        let role = config.provider[0].assume_role.as_mut().unwrap();
        role.sts_url = "https://vpce-1a2b.sts.vpce.amazonaws.com".into();
        assert!(errors_of(&config).is_empty(), "{:?}", errors_of(&config));
        config.provider[0].region = String::new();
        assert_eq!(
            errors_of(&config),
            ["provider[0].region", "provider[0].assume_role.sts_url"]
        );
        config.provider[0].region = "eu-central-1".into();
        config.provider[0].assume_role.as_mut().unwrap().duration_s = 60;
        assert_eq!(errors_of(&config), ["provider[0].assume_role.duration_s"]);
        for (arn, ok) in [
            ("arn:aws-cn:iam::123456789012:role/r", true),
            ("arn:aws:iam::123456789012:user/r", false),
            ("arn:aws:iam::1234:role/r", false),
            ("arn:aws:s3:::bucket", false),
            ("arn:aws:iam::123456789012:role/", false),
        ] {
            assert_eq!(is_iam_role_arn(arn), ok, "{arn}");
        }
        // Another kind takes no AWS keys.
        config.provider[0].assume_role = None;
        config.provider[0].kind = ProviderKind::Openai;
        config.provider[0].base_url = "https://api.openai.com".into();
        assert_eq!(
            errors_of(&config),
            ["provider[0].access_key_id", "provider[0].secret_access_key"]
        );
    }

    #[test]
    fn entra_is_azure_only_and_replaces_api_key() {
        let entra = crate::config::EntraConfig {
            tenant_id: "contoso.onmicrosoft.com".into(),
            client_id: "app".into(),
            client_secret: crate::config::SecretRef::Env("AZ_SECRET".into()),
            authority: String::new(),
        };
        let mut config = valid();
        config.provider[0].kind = ProviderKind::AzureOpenai;
        config.provider[0].base_url = "https://myres.openai.azure.com".into();
        config.provider[0].entra = Some(entra);
        let findings = validate(&config);
        assert!(findings.errors.is_empty(), "{:?}", findings.errors);
        assert!(
            findings.warnings.is_empty(),
            "entra is a credential: no missing-api_key warning"
        );
        config.provider[0].api_key = Some(crate::config::SecretRef::parse("sk-literal").unwrap());
        assert_eq!(errors_of(&config), ["provider[0].entra"]);
        assert!(all_errors(&config).contains("not both"));
        config.provider[0].api_key = None;
        for kind in [
            ProviderKind::Openai,
            ProviderKind::Anthropic,
            ProviderKind::Gemini,
        ] {
            config.provider[0].kind = kind;
            assert_eq!(errors_of(&config), ["provider[0].entra"], "{kind:?}");
            assert!(all_errors(&config).contains("azure_openai"));
        }
    }

    #[test]
    fn native_responses_are_refused_on_every_kind_but_openai() {
        for kind in [
            ProviderKind::AzureOpenai,
            ProviderKind::Anthropic,
            ProviderKind::Gemini,
            ProviderKind::Mock,
        ] {
            let mut config = valid();
            config.provider[0].kind = kind;
            config.provider[0].base_url = "https://api.example.com".into();
            config.provider[0].responses = Some(ResponsesApi::Native);
            assert_eq!(errors_of(&config), ["provider[0].responses"], "{kind:?}");
            assert!(all_errors(&config).contains("kind = \"openai\""));
            config.provider[0].responses = Some(ResponsesApi::Translate);
            assert!(errors_of(&config).is_empty(), "{kind:?}");
        }
        let mut config = valid();
        config.provider[0].kind = ProviderKind::Openai;
        config.provider[0].base_url = "http://127.0.0.1:9".into();
        config.provider[0].responses = Some(ResponsesApi::Native);
        assert!(errors_of(&config).is_empty());
    }

    #[test]
    fn responses_default_to_native_on_openais_own_host_only() {
        let mut provider = valid().provider.remove(0);
        provider.kind = ProviderKind::Openai;
        for (base_url, api) in [
            ("https://api.openai.com", ResponsesApi::Native),
            ("https://API.OpenAI.com/", ResponsesApi::Native),
            ("", ResponsesApi::Native),
            ("http://127.0.0.1:8000", ResponsesApi::Translate),
            (
                "https://api.openai.com.example.net",
                ResponsesApi::Translate,
            ),
            ("https://openrouter.ai/api", ResponsesApi::Translate),
        ] {
            provider.base_url = base_url.into();
            assert_eq!(provider.responses_api(), api, "{base_url}");
        }
        provider.base_url = "http://127.0.0.1:8000".into();
        provider.responses = Some(ResponsesApi::Native);
        assert_eq!(provider.responses_api(), ResponsesApi::Native);
        provider.base_url = "https://api.openai.com".into();
        provider.responses = Some(ResponsesApi::Translate);
        assert_eq!(provider.responses_api(), ResponsesApi::Translate);
        // Other kinds translate, whatever their endpoint.
        provider.responses = None;
        provider.kind = ProviderKind::AzureOpenai;
        assert_eq!(provider.responses_api(), ResponsesApi::Translate);
    }

    #[test]
    fn duplicate_provider_names_are_errors() {
        let mut config = valid();
        config.provider.push(config.provider[0].clone());
        assert_eq!(errors_of(&config), ["provider[1].name"]);
    }

    #[test]
    fn model_on_unknown_provider_is_an_error() {
        let mut config = valid();
        config.model[0].provider = "nope".into();
        assert_eq!(errors_of(&config), ["model[0].provider"]);
    }

    #[test]
    fn duplicate_model_names_are_errors() {
        let mut config = valid();
        config.model.push(config.model[0].clone());
        assert_eq!(errors_of(&config), ["model[1].name"]);
    }

    #[test]
    fn negative_price_is_an_error() {
        let mut config = valid();
        config.model[0].cached_input_price_per_mtok = Some(-0.1);
        assert_eq!(errors_of(&config), ["model[0].cached_input_price_per_mtok"]);
    }

    #[test]
    fn fallback_to_existing_model_is_accepted() {
        let mut config = valid();
        let mut other = config.model[0].clone();
        other.name = "m2".into();
        config.model.push(other);
        config.model[0].fallbacks = vec!["m2".into()];
        assert!(errors_of(&config).is_empty());
    }

    #[test]
    fn fallback_to_unknown_or_same_model_is_an_error() {
        let mut config = valid();
        config.model[0].fallbacks = vec!["ghost".into(), "m".into()];
        assert_eq!(
            errors_of(&config),
            ["model[0].fallbacks[0]", "model[0].fallbacks[1]"]
        );
    }

    #[test]
    fn prompt_on_unknown_model_is_an_error() {
        let mut config = valid();
        config.prompt[0].model = "ghost".into();
        assert_eq!(errors_of(&config), ["prompt[0].model"]);
    }

    #[test]
    fn same_prompt_name_and_version_twice_is_an_error() {
        let mut config = valid();
        config.prompt.push(config.prompt[0].clone());
        assert_eq!(errors_of(&config), ["prompt[1].version"]);
    }

    #[test]
    fn same_prompt_name_with_new_version_is_accepted() {
        let mut config = valid();
        let mut v2 = config.prompt[0].clone();
        v2.version = 2;
        config.prompt.push(v2);
        assert!(errors_of(&config).is_empty());
    }

    #[test]
    fn prompt_name_with_slash_is_an_error() {
        let mut config = valid();
        config.prompt[0].name = "a/b".into();
        assert_eq!(errors_of(&config), ["prompt[0].name"]);
    }

    #[test]
    fn required_names_are_reported_when_empty() {
        let mut config = valid();
        config.route[0].name.clear();
        config.upstream.push(UpstreamConfig {
            targets: vec!["a:1".into()],
            ..UpstreamConfig::default()
        });
        assert_eq!(errors_of(&config), ["upstream[1].name", "route[0].name"]);
    }

    #[test]
    fn unresolvable_env_secret_is_an_error_naming_the_variable() {
        let mut config = valid();
        config.server.admin_token = Some(SecretRef::Env("CF_VALIDATE_SURELY_UNSET".into()));
        let findings = validate(&config);
        assert_eq!(findings.errors[0].0, "server.admin_token");
        assert!(findings.errors[0]
            .1
            .contains("env:CF_VALIDATE_SURELY_UNSET"));
    }

    #[test]
    fn unreadable_file_secret_is_an_error() {
        let mut config = valid();
        config.provider[0].api_key = Some(SecretRef::File("/nonexistent/cf/key".into()));
        assert_eq!(errors_of(&config), ["provider[0].api_key"]);
    }

    #[test]
    fn literal_secret_is_a_warning_without_the_value() {
        let mut config = valid();
        config.server.admin_token = Some(SecretRef::parse("hunter2-literal").unwrap());
        let findings = validate(&config);
        assert!(findings.errors.is_empty());
        assert_eq!(findings.warnings[0].0, "server.admin_token");
        assert!(!findings.warnings[0].1.contains("hunter2"));
    }

    #[test]
    fn secret_with_line_break_is_an_error() {
        let mut config = valid();
        std::env::set_var("CF_VALIDATE_CRLF", "abc\r\nx-injected: 1");
        config.server.admin_token = Some(SecretRef::Env("CF_VALIDATE_CRLF".into()));
        assert_eq!(errors_of(&config), ["server.admin_token"]);
    }

    #[test]
    fn access_policies_name_every_error() {
        use crate::config::{AccessPolicyConfig, AutoApproveConfig};
        let mut config = valid();
        let good = AccessPolicyConfig {
            team: "ml".into(),
            max_ttl: "8h".into(),
            auto_approve: Some(AutoApproveConfig {
                models: vec!["gpt-4o-mini".into()],
                max_ttl: Some("1h".into()),
                budget_usd: Some(5.0),
            }),
        };
        config.access_policy = vec![
            good.clone(),
            good,
            AccessPolicyConfig {
                team: "web".into(),
                max_ttl: "forever".into(),
                auto_approve: Some(AutoApproveConfig {
                    models: vec![String::new()],
                    max_ttl: Some("2x".into()),
                    budget_usd: Some(-1.0),
                }),
            },
            AccessPolicyConfig {
                team: "ops".into(),
                max_ttl: "1h".into(),
                auto_approve: Some(AutoApproveConfig {
                    max_ttl: Some("2h".into()),
                    ..AutoApproveConfig::default()
                }),
            },
            AccessPolicyConfig::default(),
        ];
        let findings = validate(&config);
        let paths: Vec<&str> = findings.errors.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "access_policy[1].team",
                "access_policy[2].max_ttl",
                "access_policy[2].auto_approve.models",
                "access_policy[2].auto_approve.max_ttl",
                "access_policy[2].auto_approve.budget_usd",
                "access_policy[3].auto_approve.max_ttl",
                "access_policy[4].team",
                "access_policy[4].max_ttl",
            ],
            "{:?}",
            findings.errors
        );
        assert_eq!(findings.errors[5].1, "must not exceed max_ttl (1h)");
    }

    #[test]
    fn teams_need_unique_names_and_known_periods() {
        let mut config = valid();
        let team = TeamConfig {
            name: "research".into(),
            budget_period: Some("week".into()),
            budget_usd: Some(-1.0),
            ..TeamConfig::default()
        };
        config.team = vec![team.clone(), team, TeamConfig::default()];
        assert_eq!(
            errors_of(&config),
            [
                "team[0].budget_usd",
                "team[0].budget_period",
                "team[1].name",
                "team[1].budget_usd",
                "team[1].budget_period",
                "team[2].name"
            ]
        );
    }
}
