//! The upstream side: where requests go and the connections that carry them.
//!
//! - [`Upstream`]: one `[[upstream]]` compiled at config load, shared by every worker through
//!   an `Arc` and read without locks: its targets (resolved addresses), TLS settings, injected
//!   credential, round-robin cursor and passive health (`balance.rs`, [`health`]).
//! - [`connect`]: a new connection to one target, TCP then TLS, within one deadline;
//!   [`acquire`]: a pooled one first, else a new one.
//! - [`Pool`]: each worker's idle keep-alive connections, keyed by [`PoolKey`].
//! - [`UpstreamStream`]: a plain or TLS connection behind monoio's I/O traits.
//!
//! The request exchange itself (writing the head and body, reading the response) is the
//! caller's.

mod balance;
mod connect;
mod credential;
pub mod health;
mod pool;
mod stream;
#[cfg(test)]
pub(crate) mod test_support;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::config::{Config, SecretWatcher, UpstreamConfig};
use crate::identity::oauth2::{self, TokenSource};
use crate::identity::source::SourceTiming;

pub use connect::{acquire, connect, Acquired, ConnectError};
pub use credential::{InjectedCredential, SECRET_PLACEHOLDER};
pub use health::{now_ms, TargetHealth, COOL_DOWN};
pub use pool::{Pool, PoolKey, PoolSettings, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_IDLE_PER_KEY};
pub use stream::{TlsConn, UpstreamStream};

/// One upstream: a named set of targets, balanced round-robin, skipping targets that recently
/// failed to connect.
#[derive(Debug)]
pub struct Upstream {
    /// The `[[upstream]].name`.
    pub name: String,
    /// The targets, in configured order; never empty.
    pub targets: Vec<Target>,
    /// Client TLS configuration when the upstream speaks TLS.
    pub tls: Option<Arc<ClientConfig>>,
    credential: Option<UpstreamCredential>,
    /// How each worker's [`Pool`] keeps idle connections to these targets.
    pub pool: PoolSettings,
    /// Round-robin position, shared by all workers.
    cursor: CacheLinePadded<AtomicUsize>,
}

// Upstreams are built once and shared by every worker thread.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Upstream>();
};

/// One target of an upstream.
#[derive(Debug)]
pub struct Target {
    /// The address connected to, resolved once at config load.
    pub addr: SocketAddr,
    /// `host:port` as configured: the `Host` header toward this target.
    pub authority: String,
    /// The TLS server name (SNI and the name the certificate must match); `Some` iff TLS.
    pub server_name: Option<ServerName<'static>>,
    /// Passive health, shared by every worker; carried across reloads by upstream name and
    /// target (see [`Upstream::share_health`]).
    pub health: Arc<TargetHealth>,
    pool_key: PoolKey,
}

impl Target {
    /// The key of this target's idle connections in a worker's [`Pool`].
    pub fn pool_key(&self) -> &PoolKey {
        &self.pool_key
    }
}

/// What an upstream sends as its credential.
#[derive(Debug)]
enum UpstreamCredential {
    /// A header around a static secret.
    Header(InjectedCredential),
    /// `Authorization: Bearer` with a token the gateway obtains and refreshes itself.
    Token(Arc<TokenSource>),
}

/// TLS settings for [`Upstream::from_parts`].
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The client configuration (see [`crate::tls::client_config`]).
    pub config: Arc<ClientConfig>,
    /// Server name for every target; `None` = each target's host.
    pub sni: Option<String>,
}

/// Keeps the shared round-robin counter on its own cache line: every worker writes it, and
/// the read-mostly fields next to it should not bounce between cores with it.
#[derive(Debug, Default)]
#[repr(align(64))]
struct CacheLinePadded<T>(T);

impl Upstream {
    /// Compiles one `[[upstream]]`: resolves every target (blocking DNS: config load runs off
    /// the data plane), builds its TLS client configuration (with `ca_file` relative to the
    /// config directory) and registers its credential's secret with `secrets`. A credential
    /// the gateway obtains itself is fetched by a running (or newly started) shared source.
    pub fn build(
        cfg: &UpstreamConfig,
        config: &Config,
        secrets: &SecretWatcher,
    ) -> Result<Upstream, String> {
        Upstream::build_with(cfg, config, secrets, Some(SourceTiming::default()))
    }

    /// [`Upstream::build`] with the timing of its credential source; `None` checks the
    /// source's settings without starting it (for `credentialflow check`: nothing is
    /// contacted, and such an upstream never has a token).
    pub fn build_with(
        cfg: &UpstreamConfig,
        config: &Config,
        secrets: &SecretWatcher,
        sources: Option<SourceTiming>,
    ) -> Result<Upstream, String> {
        let name = &cfg.name;
        let tls = if cfg.tls {
            let ca_file = (!cfg.ca_file.is_empty()).then(|| config.resolve_path(&cfg.ca_file));
            let client = crate::tls::client_config(ca_file.as_deref())
                .map_err(|e| format!("upstream {name:?}: {e}"))?;
            Some(TlsSettings {
                config: client,
                sni: (!cfg.sni.is_empty()).then(|| cfg.sni.clone()),
            })
        } else {
            None
        };
        let credential = match &cfg.credential {
            None => None,
            Some(c) => match (&c.oauth2, &c.secret) {
                (Some(settings), _) => {
                    let source = match sources {
                        Some(timing) => oauth2::shared_source(name, settings, secrets, timing),
                        None => oauth2::settings(settings, secrets, &SourceTiming::default())
                            .map(|_| Arc::new(TokenSource::unstarted())),
                    }
                    .map_err(|e| format!("upstream {name:?}: credential.oauth2.{e}"))?;
                    Some(UpstreamCredential::Token(source))
                }
                (None, Some(secret)) => {
                    let live = secrets
                        .watch(secret)
                        .map_err(|e| format!("upstream {name:?}: credential.secret: {e}"))?;
                    Some(UpstreamCredential::Header(
                        InjectedCredential::new(&c.header, &c.value, live)
                            .map_err(|e| format!("upstream {name:?}: {e}"))?,
                    ))
                }
                (None, None) => {
                    return Err(format!("upstream {name:?}: credential.secret: is required"))
                }
            },
        };
        let mut upstream = Upstream::from_parts(name, &cfg.targets, tls, None)?
            .with_pool(pool_settings(cfg.keepalive, cfg.keepalive_timeout_ms));
        upstream.credential = credential;
        Ok(upstream)
    }

    /// This upstream with `pool` as its connection-pool settings.
    pub fn with_pool(mut self, pool: PoolSettings) -> Upstream {
        self.pool = pool;
        self
    }

    /// Replaces each target's health with the one `health_of(authority)` returns, so a
    /// freshly built upstream continues where an earlier build of the same target left off.
    pub fn share_health(&mut self, mut health_of: impl FnMut(&str) -> Arc<TargetHealth>) {
        for target in &mut self.targets {
            target.health = health_of(&target.authority);
        }
    }

    /// Every target's pool key with this upstream's pool settings (what a worker hands to
    /// [`Pool::configure`]).
    pub fn pool_settings(&self) -> impl Iterator<Item = (PoolKey, PoolSettings)> + '_ {
        self.targets.iter().map(|t| (t.pool_key.clone(), self.pool))
    }

    /// Builds an upstream from its parts (also for upstreams that are not `[[upstream]]`
    /// entries, e.g. an AI provider's `base_url`): each target is `host:port` (IPv6 in
    /// brackets), resolved now with the system resolver, first address kept.
    pub fn from_parts(
        name: &str,
        targets: &[String],
        tls: Option<TlsSettings>,
        credential: Option<InjectedCredential>,
    ) -> Result<Upstream, String> {
        if targets.is_empty() {
            return Err(format!("upstream {name:?}: no targets"));
        }
        let sni = match tls.as_ref().and_then(|t| t.sni.as_deref()) {
            Some(sni) => {
                Some(server_name(sni).map_err(|e| format!("upstream {name:?}: sni {sni:?}: {e}"))?)
            }
            None => None,
        };
        let mut built = Vec::with_capacity(targets.len());
        for (i, authority) in targets.iter().enumerate() {
            let target = build_target(authority, tls.is_some(), sni.as_ref())
                .map_err(|e| format!("upstream {name:?}: targets[{i}] {authority:?}: {e}"))?;
            built.push(target);
        }
        Ok(Upstream {
            name: name.to_string(),
            targets: built,
            tls: tls.map(|t| t.config),
            credential: credential.map(UpstreamCredential::Header),
            pool: PoolSettings::default(),
            cursor: CacheLinePadded::default(),
        })
    }

    /// Whether this upstream injects a credential (then the client's own credential headers
    /// must not be forwarded: README, "Reverse proxy behaviour").
    pub fn injects_credential(&self) -> bool {
        self.credential.is_some()
    }

    /// The injected static credential header: its lowercased name and its value with the
    /// secret's current value. `None` when no static credential is configured, or when the
    /// secret's current value cannot be carried in a header (logged); check
    /// [`Upstream::injects_credential`] to decide about the client's credential headers, and
    /// [`Upstream::token_source`] for a token the gateway obtains.
    pub fn credential_header(&self) -> Option<(&str, String)> {
        match self.credential.as_ref()? {
            UpstreamCredential::Header(credential) => {
                credential.value().map(|value| (credential.header(), value))
            }
            UpstreamCredential::Token(_) => None,
        }
    }

    /// The source of the bearer token this upstream is sent, when the gateway obtains it.
    pub fn token_source(&self) -> Option<&Arc<TokenSource>> {
        match self.credential.as_ref()? {
            UpstreamCredential::Token(source) => Some(source),
            UpstreamCredential::Header(_) => None,
        }
    }
}

/// The pool settings of a `keepalive` / `keepalive_timeout_ms` pair (of an upstream or a
/// provider).
pub fn pool_settings(keepalive: usize, keepalive_timeout_ms: u64) -> PoolSettings {
    PoolSettings {
        max_idle: keepalive,
        idle_timeout: std::time::Duration::from_millis(keepalive_timeout_ms),
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6) into host (without brackets) and port.
fn split_authority(authority: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or("expected [ipv6]:port")?;
        (host, port)
    } else {
        let (host, port) = authority.rsplit_once(':').ok_or("expected host:port")?;
        if host.contains(':') {
            return Err("an IPv6 address must be in brackets: [addr]:port".to_string());
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("empty host".to_string());
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or("port must be 1-65535")?;
    Ok((host, port))
}

/// A TLS server name: a DNS name, or an IP address (then no SNI is sent and the certificate
/// must name the address: RFC 6066 section 3 forbids IP literals in SNI).
fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string()).map_err(|e| format!("not a valid server name: {e}"))
}

fn build_target(
    authority: &str,
    tls: bool,
    sni: Option<&ServerName<'static>>,
) -> Result<Target, String> {
    let (host, port) = split_authority(authority)?;
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .next()
        .ok_or("resolves to no address")?;
    let server_name = match (tls, sni) {
        (false, _) => None,
        (true, Some(sni)) => Some(sni.clone()),
        (true, None) => Some(server_name(host)?),
    };
    let pool_key = PoolKey::new(addr, server_name.as_ref().map(server_name_str));
    Ok(Target {
        addr,
        authority: authority.to_string(),
        server_name,
        health: Arc::new(TargetHealth::new()),
        pool_key,
    })
}

/// The text of a server name, for pool keys and logs.
fn server_name_str(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::{CredentialConfig, LiveSecret, Secret, SecretRef};
    use crate::tls::test_pki::{ScratchDir, TestPki};

    fn tls_settings(sni: Option<&str>) -> TlsSettings {
        TlsSettings {
            config: crate::tls::client_config(None).unwrap(),
            sni: sni.map(str::to_string),
        }
    }

    #[test]
    fn targets_resolve_and_keep_their_authority() {
        let up = Upstream::from_parts("u", &["127.0.0.1:9000".to_string()], None, None).unwrap();
        assert_eq!(up.targets[0].addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(up.targets[0].authority, "127.0.0.1:9000");
    }

    #[test]
    fn hostname_targets_resolve_at_build() {
        let up = Upstream::from_parts("u", &["localhost:9000".to_string()], None, None).unwrap();
        assert!(up.targets[0].addr.ip().is_loopback());
        assert_eq!(up.targets[0].addr.port(), 9000);
    }

    #[test]
    fn bracketed_ipv6_target_is_accepted() {
        let up = Upstream::from_parts("u", &["[::1]:9000".to_string()], None, None).unwrap();
        assert_eq!(up.targets[0].addr, "[::1]:9000".parse().unwrap());
    }

    #[test]
    fn target_without_port_is_refused_naming_it() {
        let err = Upstream::from_parts("u", &["localhost".to_string()], None, None).unwrap_err();
        assert!(
            err.contains("targets[0]") && err.contains("localhost"),
            "{err}"
        );
    }

    #[test]
    fn target_with_port_zero_is_refused() {
        assert!(Upstream::from_parts("u", &["127.0.0.1:0".to_string()], None, None).is_err());
    }

    #[test]
    fn unbracketed_ipv6_target_is_refused() {
        assert!(Upstream::from_parts("u", &["::1:9000".to_string()], None, None).is_err());
    }

    #[test]
    fn upstream_without_targets_is_refused() {
        assert!(Upstream::from_parts("u", &[], None, None).is_err());
    }

    #[test]
    fn plain_target_has_no_server_name() {
        let up = Upstream::from_parts("u", &["127.0.0.1:9000".to_string()], None, None).unwrap();
        assert!(up.targets[0].server_name.is_none());
        assert!(up.tls.is_none());
    }

    #[test]
    fn tls_server_name_defaults_to_the_target_host() {
        let targets = ["localhost:9443".to_string()];
        let up = Upstream::from_parts("u", &targets, Some(tls_settings(None)), None).unwrap();
        let name = up.targets[0].server_name.as_ref().unwrap();
        assert_eq!(server_name_str(name), "localhost");
    }

    #[test]
    fn tls_server_name_is_sni_when_set() {
        let targets = ["127.0.0.1:9443".to_string()];
        let up = Upstream::from_parts("u", &targets, Some(tls_settings(Some("api.example"))), None)
            .unwrap();
        let name = up.targets[0].server_name.as_ref().unwrap();
        assert_eq!(server_name_str(name), "api.example");
    }

    #[test]
    fn invalid_sni_is_refused() {
        let targets = ["127.0.0.1:9443".to_string()];
        let err = Upstream::from_parts("u", &targets, Some(tls_settings(Some("bad name"))), None)
            .unwrap_err();
        assert!(err.contains("sni"), "{err}");
    }

    #[test]
    fn pool_key_separates_tls_names_for_one_address() {
        let targets = ["127.0.0.1:9443".to_string()];
        let a = Upstream::from_parts("a", &targets, Some(tls_settings(Some("a.example"))), None)
            .unwrap();
        let b = Upstream::from_parts("b", &targets, Some(tls_settings(Some("b.example"))), None)
            .unwrap();
        let plain = Upstream::from_parts("p", &targets, None, None).unwrap();
        assert_ne!(a.targets[0].pool_key(), b.targets[0].pool_key());
        assert_ne!(a.targets[0].pool_key(), plain.targets[0].pool_key());
    }

    #[test]
    fn pool_key_is_the_same_for_the_same_target_across_builds() {
        let targets = ["127.0.0.1:9000".to_string()];
        let before = Upstream::from_parts("u", &targets, None, None).unwrap();
        let after = Upstream::from_parts("renamed", &targets, None, None).unwrap();
        assert_eq!(before.targets[0].pool_key(), after.targets[0].pool_key());
    }

    #[test]
    fn upstream_without_credential_injects_nothing() {
        let up = Upstream::from_parts("u", &["127.0.0.1:9000".to_string()], None, None).unwrap();
        assert!(!up.injects_credential());
        assert!(up.credential_header().is_none());
    }

    fn with_credential(header: &str, template: &str, secret: &str) -> Upstream {
        let live = LiveSecret::fixed(Secret::new(secret));
        let credential = InjectedCredential::new(header, template, live).unwrap();
        Upstream::from_parts("u", &["127.0.0.1:9000".to_string()], None, Some(credential)).unwrap()
    }

    #[test]
    fn credential_header_fills_the_template_with_the_secret() {
        let up = with_credential("authorization", "Bearer {secret}", "sk-123");
        assert!(up.injects_credential());
        assert_eq!(
            up.credential_header(),
            Some(("authorization", "Bearer sk-123".to_string()))
        );
    }

    #[test]
    fn credential_header_name_is_lowercased() {
        let up = with_credential("X-Api-Key", "{secret}", "k");
        assert_eq!(up.credential_header(), Some(("x-api-key", "k".to_string())));
    }

    #[test]
    fn credential_header_is_withheld_when_the_secret_has_a_line_break() {
        let up = with_credential("authorization", "Bearer {secret}", "a\r\nx-evil: 1");
        assert!(up.injects_credential());
        assert_eq!(up.credential_header(), None);
    }

    #[test]
    fn credential_template_without_placeholder_is_refused() {
        let live = LiveSecret::fixed(Secret::new("s"));
        assert!(InjectedCredential::new("authorization", "Bearer", live).is_err());
    }

    #[test]
    fn credential_header_name_must_be_a_token() {
        let live = LiveSecret::fixed(Secret::new("s"));
        assert!(InjectedCredential::new("bad header", "{secret}", live).is_err());
    }

    #[test]
    fn credential_template_with_a_line_break_is_refused() {
        let live = LiveSecret::fixed(Secret::new("s"));
        assert!(InjectedCredential::new("authorization", "{secret}\r\nx: y", live).is_err());
    }

    fn tls_upstream_config(ca_file: &str) -> UpstreamConfig {
        UpstreamConfig {
            name: "private".to_string(),
            targets: vec!["localhost:9443".to_string()],
            tls: true,
            ca_file: ca_file.to_string(),
            ..UpstreamConfig::default()
        }
    }

    #[test]
    fn build_reads_ca_file_relative_to_the_config_dir() {
        let pki = TestPki::generate();
        let config = Config {
            base_dir: pki.dir.path().to_path_buf(),
            ..Config::default()
        };
        let watcher = SecretWatcher::start();
        let up = Upstream::build(&tls_upstream_config("ca.pem"), &config, &watcher).unwrap();
        assert!(up.tls.is_some());
    }

    #[test]
    fn build_with_a_missing_ca_file_names_it() {
        let pki = TestPki::generate();
        let config = Config {
            base_dir: pki.dir.path().to_path_buf(),
            ..Config::default()
        };
        let watcher = SecretWatcher::start();
        let err =
            Upstream::build(&tls_upstream_config("missing.pem"), &config, &watcher).unwrap_err();
        assert!(
            err.contains("missing.pem") && err.contains("private"),
            "{err}"
        );
    }

    #[test]
    fn built_credential_follows_its_secret_file() {
        let dir = ScratchDir::new("cred");
        let token = dir.write("token", "first\n");
        let cfg = UpstreamConfig {
            name: "api".to_string(),
            targets: vec!["127.0.0.1:9000".to_string()],
            credential: Some(CredentialConfig::header(
                "Authorization",
                "Bearer {secret}",
                SecretRef::parse(&format!("file:{}", token.display())).unwrap(),
            )),
            ..UpstreamConfig::default()
        };
        let watcher = SecretWatcher::with_poll_interval(Duration::from_millis(10));
        let up = Upstream::build(&cfg, &Config::default(), &watcher).unwrap();
        assert_eq!(
            up.credential_header(),
            Some(("authorization", "Bearer first".to_string()))
        );

        dir.write("token", "second-value\n");
        // The watcher polls; there is no event to wait for, so poll its result, bounded.
        let deadline = Instant::now() + Duration::from_secs(10);
        while up.credential_header().map(|(_, v)| v) != Some("Bearer second-value".to_string()) {
            assert!(Instant::now() < deadline, "new secret value never seen");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
