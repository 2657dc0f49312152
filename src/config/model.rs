//! The config file's shape: one serde struct per TOML table of the README's
//! "Config reference".
//!
//! Every struct denies unknown keys (a typo must not silently fall back to a default) and
//! every optional key has the default shown in that section's example. Keys that are required
//! but plain strings (`name`, `upstream`, ...) default to `""` here and are reported as
//! missing by validation, which can name the exact key path.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cluster::ClusterConfig;
use super::secret::{self, SecretRef};
use super::store::StoreConfig;

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[server]`: listeners, workers, admin API, data directory.
    #[serde(default)]
    pub server: ServerConfig,
    /// `[limits]`: request size and time limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// `[[upstream]]`: plain API backends.
    #[serde(default)]
    pub upstream: Vec<UpstreamConfig>,
    /// `[[route]]`: path/host matches onto upstreams.
    #[serde(default)]
    pub route: Vec<RouteConfig>,
    /// `[[provider]]`: AI providers.
    #[serde(default)]
    pub provider: Vec<ProviderConfig>,
    /// `[[model]]`: client-facing model names onto providers.
    #[serde(default)]
    pub model: Vec<ModelConfig>,
    /// `[[prompt]]`: named, versioned prompt templates.
    #[serde(default)]
    pub prompt: Vec<PromptConfig>,
    /// `[ai]`: auth and hooks of the AI front doors.
    #[serde(default)]
    pub ai: AiConfig,
    /// `[lua]`: hook time and memory budgets.
    #[serde(default)]
    pub lua: LuaConfig,
    /// Extension `[[team]]`: limits and budgets shared by every key of a team.
    #[serde(default)]
    pub team: Vec<TeamConfig>,
    /// `[store]`: the SQLite store in `data_dir`, or PostgreSQL shared by a fleet.
    #[serde(default)]
    pub store: StoreConfig,
    /// `[cluster]`: the fleet's Redis for fleet-wide limits (off without `redis`).
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// `[metrics]`: what `/metrics` shows beyond the default series.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[[access_policy]]`: per-team limits and auto-approval of access requests.
    #[serde(default)]
    pub access_policy: Vec<AccessPolicyConfig>,
    /// `[[webhook]]`: signed lifecycle events to receivers.
    #[serde(default)]
    pub webhook: Vec<super::webhook::WebhookConfig>,
    /// `[[mcp_server]]`: the MCP servers behind the MCP gateway.
    #[serde(default)]
    pub mcp_server: Vec<super::mcp::McpServerConfig>,
    /// `[mcp]`: the MCP gateway's endpoint.
    #[serde(default)]
    pub mcp: super::mcp::McpConfig,
    /// Directory of the config file; relative paths in it resolve against this.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Names of the top-level tables, in file order (used to report unknown top-level keys).
pub(crate) const SECTIONS: &[&str] = &[
    "server",
    "limits",
    "upstream",
    "route",
    "provider",
    "model",
    "prompt",
    "ai",
    "lua",
    "team",
    "store",
    "cluster",
    "metrics",
    "access_policy",
    "webhook",
    "mcp_server",
    "mcp",
];

impl Config {
    /// `p` as an absolute-or-cwd-relative path: relative paths are taken from the config
    /// file's directory, as users expect from nginx-style configs moved around with their files.
    pub fn resolve_path(&self, p: impl AsRef<Path>) -> PathBuf {
        resolve_against(&self.base_dir, p.as_ref())
    }

    /// Every secret reference the gateway uses, with its key path (`server.admin_token`,
    /// `upstream[0].credential.secret`, `route[1].jwt.hs_secret`, `provider[2].api_key`,
    /// `store.url` and `store.pepper` for PostgreSQL, `cluster.redis`).
    pub fn secrets(&self) -> Vec<(String, &SecretRef)> {
        let mut out = Vec::new();
        if let Some(token) = &self.server.admin_token {
            out.push(("server.admin_token".to_string(), token));
        }
        for (i, upstream) in self.upstream.iter().enumerate() {
            if let Some(credential) = &upstream.credential {
                if let Some(secret) = &credential.secret {
                    out.push((format!("upstream[{i}].credential.secret"), secret));
                }
                if let Some(oauth2) = &credential.oauth2 {
                    out.push((
                        format!("upstream[{i}].credential.oauth2.client_secret"),
                        &oauth2.client_secret,
                    ));
                }
            }
        }
        for (i, route) in self.route.iter().enumerate() {
            if let Some(secret) = &route.jwt.hs_secret {
                out.push((format!("route[{i}].jwt.hs_secret"), secret));
            }
        }
        for (i, provider) in self.provider.iter().enumerate() {
            let named = [
                ("api_key", &provider.api_key),
                ("access_key_id", &provider.access_key_id),
                ("secret_access_key", &provider.secret_access_key),
                ("session_token", &provider.session_token),
            ];
            for (name, secret) in named {
                if let Some(secret) = secret {
                    out.push((format!("provider[{i}].{name}"), secret));
                }
            }
        }
        out.extend(self.store.secrets());
        out.extend(self.cluster.secrets());
        for (i, server) in self.mcp_server.iter().enumerate() {
            if let Some(credential) = &server.credential {
                if let Some(secret) = &credential.secret {
                    out.push((format!("mcp_server[{i}].credential.secret"), secret));
                }
                if let Some(oauth2) = &credential.oauth2 {
                    out.push((
                        format!("mcp_server[{i}].credential.oauth2.client_secret"),
                        &oauth2.client_secret,
                    ));
                }
            }
        }
        if let Some(secret) = &self.mcp.jwt.hs_secret {
            out.push(("mcp.jwt.hs_secret".to_string(), secret));
        }
        for (i, hook) in self.webhook.iter().enumerate() {
            if let Some(secret) = &hook.secret {
                out.push((format!("webhook[{i}].secret"), secret));
            }
        }
        out
    }

    /// Makes every relative `file:` secret relative to `base_dir`.
    pub(crate) fn anchor_secrets(&mut self) {
        let base_dir = self.base_dir.clone();
        let server = self.server.admin_token.iter_mut();
        let upstreams = self
            .upstream
            .iter_mut()
            .filter_map(|u| u.credential.as_mut())
            .flat_map(|c| {
                let oauth2 = c.oauth2.as_mut().map(|o| &mut o.client_secret);
                c.secret.as_mut().into_iter().chain(oauth2)
            });
        let routes = self
            .route
            .iter_mut()
            .filter_map(|r| r.jwt.hs_secret.as_mut());
        let providers = self.provider.iter_mut().flat_map(|p| {
            [
                &mut p.api_key,
                &mut p.service_account,
                &mut p.access_key_id,
                &mut p.secret_access_key,
                &mut p.session_token,
            ]
            .into_iter()
            .filter_map(Option::as_mut)
        });
        for secret in server.chain(upstreams).chain(routes).chain(providers) {
            secret.anchor(&base_dir);
        }
        self.store.anchor_secrets(&base_dir);
        self.cluster.anchor_secrets(&base_dir);
        for secret in self.webhook.iter_mut().filter_map(|w| w.secret.as_mut()) {
            secret.anchor(&base_dir);
        }
        let mcp_servers = self
            .mcp_server
            .iter_mut()
            .filter_map(|s| s.credential.as_mut())
            .flat_map(|c| {
                let oauth2 = c.oauth2.as_mut().map(|o| &mut o.client_secret);
                c.secret.as_mut().into_iter().chain(oauth2)
            });
        for secret in mcp_servers.chain(self.mcp.jwt.hs_secret.as_mut()) {
            secret.anchor(&base_dir);
        }
    }

    /// Fills defaults that depend on other keys or on the host: a provider's `base_url` from
    /// its kind, a model's `upstream_model` from its name, the store's `node` from the host
    /// name.
    pub(crate) fn fill_derived_defaults(&mut self) {
        self.store.fill_node();
        for provider in &mut self.provider {
            if provider.base_url.is_empty() {
                if let Some(url) = provider.kind.default_base_url() {
                    provider.base_url = url.to_string();
                } else if provider.kind == ProviderKind::Bedrock && !provider.region.is_empty() {
                    provider.base_url = bedrock_base_url(&provider.region);
                } else if provider.kind == ProviderKind::Vertex {
                    provider.base_url = vertex_base_url(&provider.region).unwrap_or_default();
                }
            }
        }
        for model in &mut self.model {
            if model.upstream_model.is_empty() {
                model.upstream_model = model.name.clone();
            }
        }
    }
}

/// `p` resolved against `base_dir` when relative (see [`Config::resolve_path`]).
pub(crate) fn resolve_against(base_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    base_dir
        .join(p)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Plain HTTP listen addresses, `ip:port` (IPv6 in brackets).
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Worker threads; 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    /// Admin API address.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    /// Bearer token for `/admin/*`; `None` refuses every `/admin/*` call with 401.
    #[serde(default, deserialize_with = "secret::deserialize_optional")]
    pub admin_token: Option<SecretRef>,
    /// Embedded store: keys, usage ledger, audit log.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Access log path; `"-"` = stdout, `""` = off.
    #[serde(default = "default_access_log")]
    pub access_log: String,
    /// The gateway's own log lines on stderr: `text` or `json`.
    #[serde(default)]
    pub log_format: LogFormat,
    /// `[server.tls]`: optional HTTPS listeners.
    #[serde(default)]
    pub tls: Option<TlsListenConfig>,
    /// Extension: cap of open client connections per worker.
    #[serde(default = "default_connections_per_worker")]
    pub connections_per_worker: usize,
    /// Extension: how long graceful shutdown waits for open requests.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
}

fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:8080".to_string()]
}
fn default_admin_listen() -> String {
    "127.0.0.1:9901".to_string()
}
pub(crate) fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_access_log() -> String {
    "./data/access.log".to_string()
}
fn default_connections_per_worker() -> usize {
    10_000
}
fn default_drain_timeout_ms() -> u64 {
    30_000
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            workers: 0,
            admin_listen: default_admin_listen(),
            admin_token: None,
            data_dir: default_data_dir(),
            access_log: default_access_log(),
            log_format: LogFormat::default(),
            tls: None,
            connections_per_worker: default_connections_per_worker(),
            drain_timeout_ms: default_drain_timeout_ms(),
        }
    }
}

/// `[server.tls]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenConfig {
    /// HTTPS listen addresses.
    #[serde(default)]
    pub listen: Vec<String>,
    /// PEM certificate chain.
    #[serde(default)]
    pub cert: PathBuf,
    /// PEM private key.
    #[serde(default)]
    pub key: PathBuf,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request head accepted (431 past it).
    pub max_header_bytes: usize,
    /// Largest request body accepted (413 past it).
    pub max_body_bytes: u64,
    /// Time for the whole request head, however slowly it trickles in (408 past it).
    pub header_timeout_ms: u64,
    /// Keep-alive idle time before the connection is closed.
    pub idle_timeout_ms: u64,
    /// Time to connect to an upstream.
    pub upstream_connect_timeout_ms: u64,
    /// Time to the upstream's response head; streams may run longer.
    pub upstream_timeout_ms: u64,
    /// Fold runs of `/` in a request path into one before routing (and forwarding).
    pub merge_slashes: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_header_bytes: 32_768,
            max_body_bytes: 10_485_760,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            upstream_connect_timeout_ms: 3_000,
            upstream_timeout_ms: 300_000,
            merge_slashes: true,
        }
    }
}

/// `[[upstream]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name that routes refer to.
    #[serde(default)]
    pub name: String,
    /// `host:port` targets; several are load balanced.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Speak TLS to the targets.
    #[serde(default)]
    pub tls: bool,
    /// Extra CA (PEM) for a private upstream; `""` = web roots only.
    #[serde(default)]
    pub ca_file: String,
    /// SNI and certificate name; `""` = the target's host.
    #[serde(default)]
    pub sni: String,
    /// Credential injected toward this upstream.
    #[serde(default)]
    pub credential: Option<CredentialConfig>,
    /// Idle connections each worker keeps per target; 0 = no reuse.
    #[serde(default = "default_keepalive")]
    pub keepalive: usize,
    /// How long an idle connection is kept.
    #[serde(default = "default_keepalive_timeout_ms")]
    pub keepalive_timeout_ms: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            name: String::new(),
            targets: Vec::new(),
            tls: false,
            ca_file: String::new(),
            sni: String::new(),
            credential: None,
            keepalive: default_keepalive(),
            keepalive_timeout_ms: default_keepalive_timeout_ms(),
        }
    }
}

/// Largest `keepalive`: each idle connection holds a file descriptor in every worker.
pub const MAX_KEEPALIVE: usize = 10_000;
/// Longest `keepalive_timeout_ms` (one hour).
pub const MAX_KEEPALIVE_TIMEOUT_MS: u64 = 3_600_000;

fn default_keepalive() -> usize {
    crate::upstream::DEFAULT_MAX_IDLE_PER_KEY
}

fn default_keepalive_timeout_ms() -> u64 {
    crate::upstream::DEFAULT_IDLE_TIMEOUT.as_millis() as u64
}

/// An upstream's credential: a header around a static secret (`header`, `value`, `secret`),
/// or a token the gateway obtains itself (`oauth2`), never both.
#[derive(Debug, Clone, Serialize)]
pub struct CredentialConfig {
    /// Header name, e.g. `authorization` (static credential).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub header: String,
    /// Header value; `{secret}` is replaced by the secret (static credential).
    pub value: String,
    /// The secret (static credential); required unless `oauth2` is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
    /// An OAuth2 client-credentials token, sent as `Authorization: Bearer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2Config>,
}

impl CredentialConfig {
    /// A static header credential.
    pub fn header(header: &str, value: &str, secret: SecretRef) -> CredentialConfig {
        CredentialConfig {
            header: header.to_string(),
            value: value.to_string(),
            secret: Some(secret),
            oauth2: None,
        }
    }
}

/// The file's spelling of [`CredentialConfig`], before the one rule serde cannot say: a
/// static credential needs its `secret`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialFields {
    #[serde(default)]
    header: String,
    #[serde(default = "default_credential_value")]
    value: String,
    #[serde(default)]
    secret: Option<SecretRef>,
    #[serde(default)]
    oauth2: Option<OAuth2Config>,
}

impl<'de> Deserialize<'de> for CredentialConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = CredentialFields::deserialize(deserializer)?;
        if fields.secret.is_none() && fields.oauth2.is_none() {
            // Reported at `credential.secret`, like any missing key.
            return Err(serde::de::Error::missing_field("secret"));
        }
        Ok(CredentialConfig {
            header: fields.header,
            value: fields.value,
            secret: fields.secret,
            oauth2: fields.oauth2,
        })
    }
}

/// `credential = { oauth2 = { ... } }`: the OAuth2 client credentials grant (RFC 6749 §4.4).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// The token endpoint.
    #[serde(default)]
    pub token_url: String,
    /// The client identifier.
    #[serde(default)]
    pub client_id: String,
    /// The client secret.
    pub client_secret: SecretRef,
    /// Space-separated scopes asked for; `""` = none sent.
    #[serde(default)]
    pub scope: String,
    /// The `audience` parameter some IdPs want (Auth0, Okta); `""` = none sent.
    #[serde(default)]
    pub audience: String,
    /// How the client authenticates to the token endpoint.
    #[serde(default)]
    pub auth_method: OAuth2AuthMethod,
}

/// `[[provider]] entra = { ... }`: an Entra ID application, whose tokens (client credentials
/// grant at `{authority}/{tenant_id}/oauth2/v2.0/token`) authenticate an `azure_openai`
/// provider's requests.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EntraConfig {
    /// The directory (tenant) ID: a GUID or a domain name.
    #[serde(default)]
    pub tenant_id: String,
    /// The application (client) ID.
    #[serde(default)]
    pub client_id: String,
    /// The application's client secret.
    pub client_secret: SecretRef,
    /// Where Entra ID lives; `""` = `https://login.microsoftonline.com` (the public cloud).
    #[serde(default)]
    pub authority: String,
}

/// `[[provider]] assume_role = { ... }`: an IAM role whose temporary credentials (STS
/// `AssumeRole`, signed with the provider's own keys) sign a `bedrock` provider's requests.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AssumeRoleConfig {
    /// The role's ARN, `arn:aws:iam::123456789012:role/name`.
    #[serde(default)]
    pub role_arn: String,
    /// Where STS is reached.
    #[serde(default = "default_sts_url")]
    pub sts_url: String,
    /// The `RoleSessionName`, shown in the account's CloudTrail.
    #[serde(default = "default_role_session_name")]
    pub session_name: String,
    /// The lifetime asked for the temporary credentials, 900 to 43200 seconds.
    #[serde(default = "default_role_duration_s")]
    pub duration_s: u64,
}

fn default_sts_url() -> String {
    "https://sts.amazonaws.com".to_string()
}

fn default_role_session_name() -> String {
    "credentialflow".to_string()
}

fn default_role_duration_s() -> u64 {
    3600
}

/// Client authentication at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuth2AuthMethod {
    /// HTTP Basic with the form-encoded id and secret (`client_secret_basic`).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the request body (`client_secret_post`).
    Form,
}

fn default_credential_value() -> String {
    "{secret}".to_string()
}

/// `[server] log_format`: how the gateway's own log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `2026-12-07T19:02:29.123Z info target: message`.
    #[default]
    Text,
    /// One JSON object per line: `ts`, `level`, `target`, `msg`.
    Json,
}

/// How a route (or the AI front doors) authenticates clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// No client credential; client credential headers pass through.
    #[default]
    None,
    /// A gateway-issued API key.
    ApiKey,
    /// A JWT checked against the route's `[jwt]` settings.
    Jwt,
    /// The route's Lua `on_access` hook decides.
    Lua,
}

/// `[[route]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Name used in keys' route lists, logs and metrics.
    #[serde(default)]
    pub name: String,
    /// Exact host match; `""` = any host.
    #[serde(default)]
    pub host: String,
    /// Path prefix; the longest matching prefix wins.
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
    /// Remove the prefix before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Name of the `[[upstream]]` to forward to.
    #[serde(default)]
    pub upstream: String,
    /// Client authentication.
    #[serde(default)]
    pub auth: AuthKind,
    /// Scopes a key or token must carry.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Allowed client CIDRs; empty = all.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// Denied client CIDRs.
    #[serde(default)]
    pub deny_ips: Vec<String>,
    /// Route-wide rate limit.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Extension: the same kind of limit, per client IP on this route, checked before auth.
    #[serde(default)]
    pub ip_rate_limit: RateLimitConfig,
    /// Lua script for this route; `""` = none.
    #[serde(default)]
    pub hooks: String,
    /// JWT settings when `auth = "jwt"`.
    #[serde(default)]
    pub jwt: JwtConfig,
}

fn default_path_prefix() -> String {
    "/".to_string()
}

/// A route-wide rate limit; 0 = none.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per second (may be fractional).
    pub rps: f64,
    /// Requests admitted at once from rest; 0 = one second's worth (at least 1).
    pub burst: u32,
}

/// Extension `[[team]]`: limits and budgets over the sum of a team's keys. A key's `team`
/// field names its team; keys of teams without an entry here have only their own limits.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    /// The team name, as in keys' `team`.
    #[serde(default)]
    pub name: String,
    /// Requests per minute over all of the team's keys.
    #[serde(default)]
    pub rpm: Option<u64>,
    /// Tokens per minute over all of the team's keys (AI requests).
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Spend cap in USD per `budget_period`.
    #[serde(default)]
    pub budget_usd: Option<f64>,
    /// Token cap per `budget_period`.
    #[serde(default)]
    pub budget_tokens: Option<u64>,
    /// `day`, `month` (UTC calendar) or `total` (the default).
    #[serde(default)]
    pub budget_period: Option<String>,
}

/// `[[access_policy]]`: how a team's access requests are bounded and which of them are
/// approved at once (README, "Just-in-time access").
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicyConfig {
    /// The team the policy governs, as in keys' and requests' `team`.
    #[serde(default)]
    pub team: String,
    /// Longest `ttl` a request of this team may ask for (`8h`); longer ones are refused.
    #[serde(default)]
    pub max_ttl: String,
    /// Requests inside this envelope are approved at once, by `policy`.
    #[serde(default)]
    pub auto_approve: Option<AutoApproveConfig>,
}

/// The envelope of `[[access_policy]] auto_approve`: a request is inside it when every
/// model it asks for matches one of `models`, its ttl is at most `max_ttl` and its
/// budget at most `budget_usd`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AutoApproveConfig {
    /// Model-name globs a request may ask for and still be approved at once.
    #[serde(default)]
    pub models: Vec<String>,
    /// Longest ttl approved at once (default: the policy's `max_ttl`).
    #[serde(default)]
    pub max_ttl: Option<String>,
    /// Largest `budget_usd` approved at once; a request naming no budget is given this one.
    #[serde(default)]
    pub budget_usd: Option<f64>,
}

/// A route's JWT settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss`; `""` = not checked.
    #[serde(default)]
    pub issuer: String,
    /// Required `aud`; `""` = not checked.
    #[serde(default)]
    pub audience: String,
    /// JWKS endpoint for RS/ES keys.
    #[serde(default)]
    pub jwks_url: String,
    /// PEM public key.
    #[serde(default)]
    pub public_key: String,
    /// HMAC secret for HS256.
    #[serde(default, deserialize_with = "secret::deserialize_optional")]
    pub hs_secret: Option<SecretRef>,
    /// Clock skew allowed on `exp`/`nbf`.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
}

fn default_leeway_s() -> u64 {
    30
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            issuer: String::new(),
            audience: String::new(),
            jwks_url: String::new(),
            public_key: String::new(),
            hs_secret: None,
            leeway_s: default_leeway_s(),
        }
    }
}

/// An AI provider's API dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI.
    Openai,
    /// Azure OpenAI (base_url is the resource's endpoint; no default).
    AzureOpenai,
    /// Anthropic.
    Anthropic,
    /// Google Gemini.
    Gemini,
    /// Amazon Bedrock's Converse API, SigV4-signed (`base_url` defaults from `region`, see
    /// [`bedrock_base_url`]).
    Bedrock,
    /// Google Vertex AI: Gemini and Anthropic models of one project and region, authenticated
    /// with a service account's tokens (base_url derived from `region` when left out).
    Vertex,
    /// The in-process mock provider.
    Mock,
}

impl ProviderKind {
    /// The public endpoint used when `base_url` is left out.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("https://api.openai.com"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
            ProviderKind::Mock => Some("http://mock.invalid"),
            // Azure: the resource's own endpoint; Bedrock and Vertex: derived from the region
            // ([`bedrock_base_url`], [`vertex_base_url`]).
            ProviderKind::AzureOpenai | ProviderKind::Bedrock | ProviderKind::Vertex => None,
        }
    }
}

/// Bedrock's public endpoint in `region`, the `base_url` a `kind = "bedrock"` provider gets
/// when it names none.
pub fn bedrock_base_url(region: &str) -> String {
    format!("https://bedrock-runtime.{region}.amazonaws.com")
}

/// The Vertex AI endpoint of `region`: `https://{region}-aiplatform.googleapis.com`, or
/// `https://aiplatform.googleapis.com` for the `global` location (Vertex AI, "Locations").
/// `None` for a region that could not be a host label (the config check names it).
pub fn vertex_base_url(region: &str) -> Option<String> {
    match region {
        "global" => Some("https://aiplatform.googleapis.com".to_string()),
        r if is_vertex_location(r) => Some(format!("https://{r}-aiplatform.googleapis.com")),
        _ => None,
    }
}

/// A Vertex AI location as it goes into a host name and a path segment: lower-case letters,
/// digits and `-` (`us-east5`, `europe-west4`), at most 63 bytes.
pub fn is_vertex_location(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 63
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-')
}

/// `[[provider]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Name that models refer to.
    #[serde(default)]
    pub name: String,
    /// API dialect.
    pub kind: ProviderKind,
    /// Endpoint without `/v1`; defaults per kind (see [`ProviderKind::default_base_url`]).
    #[serde(default)]
    pub base_url: String,
    /// The provider's API key, injected upstream.
    #[serde(default, deserialize_with = "secret::deserialize_optional")]
    pub api_key: Option<SecretRef>,
    /// `azure_openai` only, instead of `api_key`: the application whose Entra ID tokens
    /// authenticate the requests (`Authorization: Bearer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra: Option<EntraConfig>,
    /// `vertex` only: the Google Cloud project whose Vertex AI endpoint is called.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project: String,
    /// The cloud region: `vertex`'s location (`us-east5`, `global`); `bedrock`'s AWS region
    /// (required, e.g. `us-east-1`; it is in every signature). It picks the default `base_url`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// `vertex` only, instead of `api_key`: the service-account key file (`file:sa.json`, or
    /// `env:NAME` holding the JSON) whose tokens authenticate the requests
    /// (`Authorization: Bearer`).
    #[serde(
        default,
        deserialize_with = "secret::deserialize_optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub service_account: Option<SecretRef>,
    /// `bedrock`: the AWS access key id the requests are signed with.
    #[serde(default, deserialize_with = "secret::deserialize_optional")]
    pub access_key_id: Option<SecretRef>,
    /// `bedrock`: the secret access key of `access_key_id`.
    #[serde(default, deserialize_with = "secret::deserialize_optional")]
    pub secret_access_key: Option<SecretRef>,
    /// `bedrock`, optional: the session token of temporary credentials, sent as
    /// `x-amz-security-token`.
    #[serde(default, deserialize_with = "secret::deserialize_optional")]
    pub session_token: Option<SecretRef>,
    /// `bedrock`, optional: a role assumed with STS `AssumeRole`, whose temporary credentials
    /// sign the requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assume_role: Option<AssumeRoleConfig>,
    /// Extra CA (PEM); `""` = web roots only.
    #[serde(default)]
    pub ca_file: String,
    /// Extension, `azure_openai` only: the `api-version` query parameter (default
    /// `2024-10-21`).
    #[serde(default)]
    pub api_version: String,
    /// Extension, `mock` only: simulated latency and streaming speed.
    #[serde(default)]
    pub mock: MockOptions,
    /// Idle connections each worker keeps to the provider; 0 = no reuse.
    #[serde(default = "default_keepalive")]
    pub keepalive: usize,
    /// How long an idle connection to the provider is kept.
    #[serde(default = "default_keepalive_timeout_ms")]
    pub keepalive_timeout_ms: u64,
    /// How `POST /v1/responses` reaches the provider; `None` = the default for its kind and
    /// `base_url` (see [`ProviderConfig::responses_api`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses: Option<ResponsesApi>,
}

/// How a provider serves `POST /v1/responses` (`[[provider]] responses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponsesApi {
    /// The provider has the Responses API: the request is sent to its `/v1/responses` as it
    /// is (model replaced), and its answer relayed.
    Native,
    /// The request is translated to the provider's chat API, and its answer back.
    Translate,
}

/// The host of OpenAI's own API, the one `kind = "openai"` endpoint known to have
/// `/v1/responses` (OpenAI-compatible servers often lack it).
pub const OPENAI_API_HOST: &str = "api.openai.com";

impl ProviderConfig {
    /// How `POST /v1/responses` reaches this provider: `responses` when set, else `native`
    /// for `kind = "openai"` on OpenAI's own host and `translate` for every other provider.
    pub fn responses_api(&self) -> ResponsesApi {
        if let Some(api) = self.responses {
            return api;
        }
        let base_url = match self.base_url.as_str() {
            "" => self.kind.default_base_url().unwrap_or_default(),
            url => url,
        };
        let on_openai = super::HttpUrl::parse(base_url)
            .is_ok_and(|url| url.host().eq_ignore_ascii_case(OPENAI_API_HOST));
        if self.kind == ProviderKind::Openai && on_openai {
            ResponsesApi::Native
        } else {
            ResponsesApi::Translate
        }
    }
}

/// How the in-process mock provider paces its answers.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockOptions {
    /// Delay before the response head (time to first token).
    pub latency_ms: u64,
    /// Streaming speed; 0 = as fast as possible.
    pub tokens_per_second: u64,
}

/// `[[model]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// What clients ask for.
    #[serde(default)]
    pub name: String,
    /// Name of the `[[provider]]`.
    #[serde(default)]
    pub provider: String,
    /// The provider's model name; defaults to `name`.
    #[serde(default)]
    pub upstream_model: String,
    /// USD per million input tokens.
    #[serde(default)]
    pub input_price_per_mtok: f64,
    /// USD per million output tokens.
    #[serde(default)]
    pub output_price_per_mtok: f64,
    /// USD per million prompt-cache-read tokens; `None` = input price.
    #[serde(default)]
    pub cached_input_price_per_mtok: Option<f64>,
    /// Other models tried in order when this one fails.
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

/// `[[prompt]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PromptConfig {
    /// Name in `/prompts/{name}`.
    #[serde(default)]
    pub name: String,
    /// Version in `/prompts/{name}/v{N}`; the highest is served at `/prompts/{name}`.
    #[serde(default = "default_prompt_version")]
    pub version: u32,
    /// Name of the `[[model]]` to run it on.
    #[serde(default)]
    pub model: String,
    /// System message.
    #[serde(default)]
    pub system: String,
    /// User message template with `{{var}}` placeholders.
    #[serde(default)]
    pub template: String,
}

fn default_prompt_version() -> u32 {
    1
}

/// `[ai]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AiConfig {
    /// Auth for `/v1/*` and `/prompts/*`.
    #[serde(default = "default_ai_auth")]
    pub auth: AuthKind,
    /// Lua script for AI requests; `""` = none.
    #[serde(default)]
    pub hooks: String,
    /// Client addresses (CIDRs or bare addresses) allowed on the front doors; empty = all.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// Client addresses refused on the front doors; checked first.
    #[serde(default)]
    pub deny_ips: Vec<String>,
    /// Extension: completion tokens reserved for a request without `max_tokens`, for the
    /// token-per-minute limits and budgets until the provider reports the real usage.
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u64,
    /// Extension: extra attempts on the same model after a 429, 5xx, timeout or connection
    /// error (with backoff and jitter), before its `fallbacks` are tried.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Extension: time to the provider's response head per attempt; 0 = `[limits]
    /// upstream_timeout_ms`.
    #[serde(default)]
    pub attempt_timeout_ms: u64,
    /// Extension: after a client leaves a stream, how long the gateway keeps reading the
    /// provider's stream (relaying nothing) to capture the usage it reports at the end, so
    /// the request is charged what it really used; 0 = stop at once (the stream is then
    /// charged as cut short: the larger of the completion tokens relayed and reserved).
    #[serde(default = "default_drain_after_disconnect_ms")]
    pub drain_after_disconnect_ms: u64,
}

/// The longest `drain_after_disconnect_ms` accepted.
pub const MAX_DRAIN_AFTER_DISCONNECT_MS: u64 = 10 * 60 * 1000;

fn default_drain_after_disconnect_ms() -> u64 {
    30_000
}

fn default_max_retries() -> u32 {
    2
}

fn default_max_tokens() -> u64 {
    1024
}

fn default_ai_auth() -> AuthKind {
    AuthKind::ApiKey
}

impl Default for AiConfig {
    fn default() -> Self {
        AiConfig {
            auth: default_ai_auth(),
            hooks: String::new(),
            allow_ips: Vec::new(),
            deny_ips: Vec::new(),
            default_max_tokens: default_max_tokens(),
            max_retries: default_max_retries(),
            attempt_timeout_ms: 0,
            drain_after_disconnect_ms: default_drain_after_disconnect_ms(),
        }
    }
}

/// `[lua]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LuaConfig {
    /// Budget of one hook call; past it the call is interrupted.
    pub hook_timeout_ms: u64,
    /// Memory cap of one worker's VM.
    pub memory_limit_mb: u64,
}

impl Default for LuaConfig {
    fn default() -> Self {
        LuaConfig {
            hook_timeout_ms: 10,
            memory_limit_mb: 32,
        }
    }
}

/// Most `[metrics] max_keys`: each tracked key costs 5 counters per worker.
pub const MAX_METRICS_KEYS: usize = 100_000;

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Whether AI requests, tokens and cost are also counted per virtual key
    /// (`credentialflow_key_*{key="<id>"}`).
    pub per_key: bool,
    /// Most keys with series of their own; later keys are counted as `key="other"`.
    pub max_keys: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            per_key: false,
            max_keys: 1_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_section_defaults_to_no_per_key_series() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config.metrics, MetricsConfig::default());
        assert!(!config.metrics.per_key);
        let config: Config = toml::from_str("[metrics]\nper_key = true\nmax_keys = 50\n").unwrap();
        assert!(config.metrics.per_key);
        assert_eq!(config.metrics.max_keys, 50);
        assert!(toml::from_str::<Config>("[metrics]\nper_kye = true\n").is_err());
    }

    #[test]
    fn empty_document_gives_contract_defaults() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config.server.listen, vec!["127.0.0.1:8080"]);
        assert_eq!(config.server.admin_listen, "127.0.0.1:9901");
        assert_eq!(config.server.connections_per_worker, 10_000);
        assert_eq!(config.server.drain_timeout_ms, 30_000);
        assert_eq!(config.limits.max_header_bytes, 32_768);
        assert_eq!(config.limits.upstream_timeout_ms, 300_000);
        assert_eq!(config.ai.auth, AuthKind::ApiKey);
        assert_eq!(config.ai.drain_after_disconnect_ms, 30_000);
        assert_eq!(config.lua.hook_timeout_ms, 10);
        assert_eq!(config.lua.memory_limit_mb, 32);
    }

    #[test]
    fn route_defaults_to_no_auth_and_root_prefix() {
        let config: Config = toml::from_str("[[route]]\nname = \"r\"").unwrap();
        assert_eq!(config.route[0].auth, AuthKind::None);
        assert_eq!(config.route[0].path_prefix, "/");
        assert_eq!(config.route[0].jwt.leeway_s, 30);
    }

    #[test]
    fn oauth2_credential_parses_with_its_defaults() {
        let text = "[[upstream]]\ncredential = { oauth2 = { token_url = \"https://idp/t\", client_id = \"c\", client_secret = \"env:S\" } }";
        let config: Config = toml::from_str(text).unwrap();
        let credential = config.upstream[0].credential.as_ref().unwrap();
        assert!(credential.secret.is_none());
        let oauth2 = credential.oauth2.as_ref().unwrap();
        assert_eq!(oauth2.auth_method, OAuth2AuthMethod::Basic);
        assert_eq!((oauth2.scope.as_str(), oauth2.audience.as_str()), ("", ""));
        let secrets: Vec<String> = config.secrets().into_iter().map(|(path, _)| path).collect();
        assert_eq!(secrets, ["upstream[0].credential.oauth2.client_secret"]);
    }

    #[test]
    fn credential_value_defaults_to_the_bare_secret() {
        let text = "[[upstream]]\ncredential = { header = \"x-key\", secret = \"env:K\" }";
        let config: Config = toml::from_str(text).unwrap();
        assert_eq!(
            config.upstream[0].credential.as_ref().unwrap().value,
            "{secret}"
        );
    }

    #[test]
    fn empty_optional_secret_means_unset() {
        let text = "[[route]]\njwt = { hs_secret = \"\" }";
        let config: Config = toml::from_str(text).unwrap();
        assert!(config.route[0].jwt.hs_secret.is_none());
    }

    #[test]
    fn section_list_matches_config_fields() {
        let json = serde_json::to_value(Config::default()).unwrap();
        let mut fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut sections = SECTIONS.to_vec();
        fields.sort_unstable();
        sections.sort_unstable();
        assert_eq!(fields, sections);
    }

    #[test]
    fn postgres_store_secrets_are_listed_and_anchored_like_the_others() {
        let text = "[store]\nbackend = \"postgres\"\nurl = \"file:url\"\npepper = \"env:P\"";
        let mut config: Config = toml::from_str(text).unwrap();
        config.base_dir = PathBuf::from("/etc/cf");
        config.anchor_secrets();
        let secrets: Vec<(String, String)> = config
            .secrets()
            .into_iter()
            .map(|(path, secret)| (path, secret.to_string()))
            .collect();
        assert_eq!(
            secrets,
            [
                ("store.url".to_string(), "file:/etc/cf/url".to_string()),
                ("store.pepper".to_string(), "env:P".to_string()),
            ]
        );
    }

    #[test]
    fn resolve_path_joins_relative_paths_to_base_dir() {
        let config = Config {
            base_dir: PathBuf::from("/etc/cf"),
            ..Config::default()
        };
        assert_eq!(config.resolve_path("./data"), PathBuf::from("/etc/cf/data"));
        assert_eq!(config.resolve_path("/var/x"), PathBuf::from("/var/x"));
    }

    #[test]
    fn derived_defaults_fill_base_url_and_upstream_model() {
        let text = "[[provider]]\nname = \"p\"\nkind = \"anthropic\"\n\
                    [[model]]\nname = \"m\"\nprovider = \"p\"";
        let mut config: Config = toml::from_str(text).unwrap();
        config.fill_derived_defaults();
        assert_eq!(config.provider[0].base_url, "https://api.anthropic.com");
        assert_eq!(config.model[0].upstream_model, "m");
    }

    #[test]
    fn a_vertex_base_url_comes_from_its_region() {
        assert_eq!(
            vertex_base_url("us-east5").as_deref(),
            Some("https://us-east5-aiplatform.googleapis.com")
        );
        assert_eq!(
            vertex_base_url("global").as_deref(),
            Some("https://aiplatform.googleapis.com")
        );
        // A region that would change the host is no region.
        for region in ["", "us.evil.example/x", "US-EAST5", "-us", "a@b", "x:1"] {
            assert_eq!(vertex_base_url(region), None, "{region:?}");
        }
        let mut config: Config = toml::from_str(
            "[[provider]]\nname = \"v\"\nkind = \"vertex\"\nregion = \"europe-west4\"\nproject = \"p\"\nservice_account = \"file:sa.json\"\n",
        )
        .unwrap();
        config.fill_derived_defaults();
        assert_eq!(
            config.provider[0].base_url,
            "https://europe-west4-aiplatform.googleapis.com"
        );
        assert_eq!(config.provider[0].kind, ProviderKind::Vertex);
    }
}
