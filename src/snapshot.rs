//! A compiled, immutable view of one config load, and the one place that swaps it.
//!
//! Workers load the current [`Snapshot`] once per request (one atomic load, no lock), so a
//! reload takes effect for the next request on every worker while requests in flight finish on
//! the snapshot they started with.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::ai::prompt::Prompts;
use crate::ai::Catalog;
use crate::auth::jwt::JwtVerifier;
use crate::auth::{CredentialCache, IpRules};
use crate::config::{self, AuthKind, Config, SecretWatcher};
use crate::identity::source::SourceTiming;
use crate::limits::Gcra;
use crate::limits::{budget_limit, gcra_per_minute, gcra_per_second, Admission, RouteLimiter};
use crate::limits::{BudgetLimit, BudgetTable};
use crate::lua::{ScriptId, ScriptSet};
use crate::metrics::{self, AiSeries, PerKey, RouteMetrics};
use crate::router::{RouteEntry, Router};
use crate::store::usage::UsageSender;
use crate::tls;
use crate::upstream::Upstream;

mod carry;

pub use carry::{ByName, Carried};

/// One `[[route]]`, resolved against its upstream.
pub struct Route {
    /// The route's name, for logs and metric labels.
    pub name: String,
    /// The matched prefix, removed from the path when `strip_prefix` is set.
    pub path_prefix: String,
    /// Whether to remove `path_prefix` before forwarding.
    pub strip_prefix: bool,
    /// Index into [`Snapshot::upstreams`].
    pub upstream: usize,
    /// Whether the client's own credential headers are removed before forwarding: on any
    /// authenticated route, and wherever the gateway injects its own credential.
    pub strip_client_credentials: bool,
    /// Request counters and latency for this route; carried across reloads by name.
    pub metrics: Arc<RouteMetrics>,
    /// How callers authenticate.
    pub auth: AuthKind,
    /// Scopes the caller must hold.
    pub scopes: Vec<String>,
    /// Client-address rules, checked before authentication (`None` = everyone).
    pub ip_rules: Option<IpRules>,
    /// The token verifier of an `auth = "jwt"` route.
    pub jwt: Option<Arc<JwtVerifier>>,
    /// The route-wide `rate_limit`, if any.
    pub rate_limit: Option<Gcra>,
    /// The per-client-address `ip_rate_limit`, if any.
    pub ip_rate_limit: Option<Gcra>,
    /// Counters of both limits; carried across reloads by route name.
    pub limiter: Arc<RouteLimiter>,
    /// The route's Lua script (`hooks`), in [`Snapshot::scripts`].
    pub hooks: Option<ScriptId>,
}

/// The `[limits]` section as the hot path uses them: size and time bounds on a request and its
/// connections (admission limits such as rates and budgets are [`crate::limits`]).
#[derive(Clone, Copy, Debug)]
pub struct RequestBounds {
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_timeout: Duration,
    /// Whether request paths have runs of `/` folded into one (`merge_slashes`).
    pub merge_slashes: bool,
}

/// One `[[team]]`'s limits over the sum of its keys.
#[derive(Debug, Clone, Default)]
pub struct TeamLimits {
    /// Requests per minute.
    pub rpm: Option<Gcra>,
    /// Tokens per minute, with its capacity in tokens.
    pub tpm: Option<Gcra>,
    /// Spend cap over the team's keys.
    pub budget: Option<BudgetLimit>,
}

/// Everything a worker needs from one config load.
pub struct Snapshot {
    pub config: Config,
    pub router: Router,
    pub routes: Vec<Route>,
    pub upstreams: Vec<Arc<Upstream>>,
    pub limits: RequestBounds,
    /// Server TLS for the HTTPS listeners (certificates are re-read on every reload).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Metrics for requests that matched no route.
    pub unrouted: Arc<RouteMetrics>,
    /// `[[team]]` limits by team name.
    pub teams: HashMap<String, TeamLimits>,
    /// `[[provider]]` and `[[model]]`; the AI front doors are mounted when it has models.
    pub catalog: Catalog,
    /// `[[prompt]]` templates by name and version.
    pub prompts: Prompts,
    /// The AI metric series of this config's models, providers and teams (the front doors'
    /// request counts are by door, see [`metrics::Metrics::record_door`]).
    pub ai_series: Arc<AiSeries>,
    /// Every Lua script the config references, compiled.
    pub scripts: Arc<ScriptSet>,
    /// The AI front doors' script (`[ai].hooks`).
    pub ai_hooks: Option<ScriptId>,
    /// The AI front doors' client-address rules (`[ai]` `allow_ips` / `deny_ips`), checked
    /// before authentication as a route's are (`None` = everyone).
    pub ai_ip_rules: Option<IpRules>,
    /// The MCP gateway (`[mcp]` and `[[mcp_server]]`), served when a server is configured.
    pub mcp: Option<Arc<crate::mcp::McpGateway>>,
}

/// What a snapshot is built for: both build the same things and refuse the same configs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// To serve: JWKS endpoints are fetched, credential sources started.
    Serve,
    /// For `credentialflow check`: nothing is fetched, no background work is started.
    Check,
}

impl Snapshot {
    /// Reads the config file at `path` and compiles it with fresh runtime state (for
    /// `check`, which serves nothing). Returns the snapshot when there is no error, and every
    /// error and warning, each with its key path and line where known.
    pub fn load(
        path: &Path,
        secrets: &SecretWatcher,
        admission: &Admission,
        purpose: Purpose,
    ) -> (Option<Snapshot>, config::CheckReport) {
        Snapshot::load_carrying(path, secrets, admission, &Carried::default(), purpose)
    }

    /// Reads the config file at `path` and compiles it: the one path for `serve`, reload and
    /// `check`. Route limiters come from `admission` and target health and circuit breakers
    /// from `carried`, by name, so a reload continues where the previous snapshot left off.
    pub fn load_carrying(
        path: &Path,
        secrets: &SecretWatcher,
        admission: &Admission,
        carried: &Carried,
        purpose: Purpose,
    ) -> (Option<Snapshot>, config::CheckReport) {
        config::load_and_build(path, |config| {
            Snapshot::build_for(config, secrets, admission, carried, purpose)
        })
    }

    /// Compiles `config` to serve it; every error found is returned, not just the first.
    pub fn build(
        config: Config,
        secrets: &SecretWatcher,
        admission: &Admission,
        carried: &Carried,
    ) -> Result<Snapshot, Vec<String>> {
        Snapshot::build_for(config, secrets, admission, carried, Purpose::Serve)
    }

    /// Compiles `config`; errors are `key.path: message`.
    fn build_for(
        config: Config,
        secrets: &SecretWatcher,
        admission: &Admission,
        carried: &Carried,
        purpose: Purpose,
    ) -> Result<Snapshot, Vec<String>> {
        let mut errors = Vec::new();
        let mut upstreams = Vec::with_capacity(config.upstream.len());
        for (i, up) in config.upstream.iter().enumerate() {
            // Checking starts no credential source: `check` contacts nothing.
            let sources = match purpose {
                Purpose::Serve => Some(SourceTiming::default()),
                Purpose::Check => None,
            };
            match Upstream::build_with(up, &config, secrets, sources) {
                Ok(mut u) => {
                    carried.adopt_upstream(&mut u);
                    upstreams.push(Arc::new(u));
                }
                Err(e) => errors.push(format!("upstream[{i}]: {e}")),
            }
        }
        // Every referenced script is read and compiled here, so a reload with a broken script
        // is refused (with its file and line) and the old scripts keep running.
        let scripts = match ScriptSet::load(&config) {
            Ok(s) => Arc::new(s),
            Err(errs) => {
                errors.extend(errs);
                Arc::new(ScriptSet::empty())
            }
        };
        let mut routes = Vec::with_capacity(config.route.len());
        for (i, r) in config.route.iter().enumerate() {
            let Some(upstream) = config.upstream.iter().position(|u| u.name == r.upstream) else {
                errors.push(format!(
                    "route[{i}].upstream: no upstream named {:?}",
                    r.upstream
                ));
                continue;
            };
            let injects = config.upstream[upstream].credential.is_some();
            let ip_rules = compile_ip_rules(&r.allow_ips, &r.deny_ips).unwrap_or_else(|e| {
                errors.push(format!("route[{i}]: {e}"));
                None
            });
            let jwt = match r.auth {
                AuthKind::Jwt => {
                    let verifier = match purpose {
                        Purpose::Serve => JwtVerifier::new(&r.jwt, &config, secrets),
                        Purpose::Check => JwtVerifier::without_fetching(&r.jwt, &config, secrets),
                    };
                    match verifier {
                        Ok(v) => Some(v),
                        // The verifier's errors start with the setting (`jwt.public_key: ..`).
                        Err(e) => {
                            errors.push(format!("route[{i}].{e}"));
                            None
                        }
                    }
                }
                _ => None,
            };
            routes.push(Route {
                name: r.name.clone(),
                path_prefix: r.path_prefix.clone(),
                strip_prefix: r.strip_prefix,
                upstream,
                strip_client_credentials: injects || !matches!(r.auth, AuthKind::None),
                metrics: metrics::global().route(&r.name),
                auth: r.auth,
                scopes: r.scopes.clone(),
                ip_rules,
                jwt,
                rate_limit: gcra_per_second(r.rate_limit.rps, r.rate_limit.burst),
                ip_rate_limit: gcra_per_second(r.ip_rate_limit.rps, r.ip_rate_limit.burst),
                limiter: admission.route(&r.name),
                hooks: script_id(&scripts, &config, &r.hooks),
            });
        }
        let ai_ip_rules = compile_ip_rules(&config.ai.allow_ips, &config.ai.deny_ips)
            .unwrap_or_else(|e| {
                errors.push(format!("ai: {e}"));
                None
            });
        // As for upstreams: checking starts no token source.
        let sources = match purpose {
            Purpose::Serve => Some(SourceTiming::default()),
            Purpose::Check => None,
        };
        let catalog = match Catalog::build_with(&config, secrets, sources) {
            Ok(mut c) => {
                carried.adopt_catalog(&mut c);
                c
            }
            Err(errs) => {
                errors.extend(errs);
                Catalog::default()
            }
        };
        let sources = match purpose {
            Purpose::Serve => Some(SourceTiming::default()),
            Purpose::Check => None,
        };
        let mcp = match crate::mcp::McpGateway::build(&config, secrets, sources) {
            Ok(gateway) => gateway.map(|mut gateway| {
                gateway.hooks = script_id(&scripts, &config, &config.mcp.hooks);
                Arc::new(gateway)
            }),
            Err(errs) => {
                errors.extend(errs);
                None
            }
        };
        let tls = match &config.server.tls {
            Some(t) if !t.listen.is_empty() => {
                let cert = config.resolve_path(&t.cert);
                let key = config.resolve_path(&t.key);
                match tls::server_config(&cert, &key) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        errors.push(format!("server.tls: {e}"));
                        None
                    }
                }
            }
            _ => None,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let router = Router::new(config.route.iter().map(|r| RouteEntry {
            host: &r.host,
            path_prefix: &r.path_prefix,
        }));
        let l = &config.limits;
        let limits = RequestBounds {
            max_header_bytes: l.max_header_bytes,
            max_body_bytes: l.max_body_bytes,
            header_timeout: Duration::from_millis(l.header_timeout_ms),
            idle_timeout: Duration::from_millis(l.idle_timeout_ms),
            upstream_connect_timeout: Duration::from_millis(l.upstream_connect_timeout_ms),
            upstream_timeout: Duration::from_millis(l.upstream_timeout_ms),
            merge_slashes: l.merge_slashes,
        };
        let teams = config
            .team
            .iter()
            .map(|t| {
                let limits = TeamLimits {
                    rpm: t.rpm.and_then(gcra_per_minute),
                    tpm: t.tpm.and_then(gcra_per_minute),
                    budget: budget_limit(t.budget_usd, t.budget_tokens, t.budget_period.as_deref()),
                };
                (t.name.clone(), limits)
            })
            .collect();
        let per_key = config.metrics.per_key.then_some(PerKey {
            max_keys: config.metrics.max_keys,
        });
        let ai_series = metrics::global().ai().series(
            &catalog,
            config.team.iter().map(|t| t.name.as_str()),
            per_key,
        );
        Ok(Snapshot {
            teams,
            prompts: Prompts::new(&config.prompt),
            catalog,
            ai_series: Arc::new(ai_series),
            ai_hooks: script_id(&scripts, &config, &config.ai.hooks),
            ai_ip_rules,
            mcp,
            scripts,
            router,
            routes,
            upstreams,
            limits,
            tls,
            unrouted: metrics::global().route("-"),
            config,
        })
    }
}

/// `allow_ips` / `deny_ips` compiled; `None` when both are empty, so the request path skips
/// the check.
fn compile_ip_rules(allow: &[String], deny: &[String]) -> Result<Option<IpRules>, String> {
    let rules = IpRules::new(allow, deny)?;
    Ok((!rules.is_empty()).then_some(rules))
}

/// The long-lived services a [`Shared`] hands to every worker.
pub struct Services {
    /// The key store's in-memory replica.
    pub credentials: Arc<CredentialCache>,
    /// Limiter state.
    pub admission: Arc<Admission>,
    /// Budget spend.
    pub budgets: Arc<BudgetTable>,
    /// The usage ledger's channel.
    pub usage: UsageSender,
    /// Target health and circuit breakers (the first snapshot must be built with it).
    pub carried: Arc<Carried>,
}

/// The id of the script a `hooks` setting names (`""` = none).
fn script_id(scripts: &ScriptSet, config: &Config, hooks: &str) -> Option<ScriptId> {
    if hooks.is_empty() {
        return None;
    }
    scripts.id_for(&config.resolve_path(hooks))
}

/// State shared by every thread of a running gateway.
pub struct Shared {
    current: ArcSwap<Snapshot>,
    /// Bumped after each swap, so workers can keep their own handle on the current snapshot
    /// and notice a change with one plain atomic load.
    generation: AtomicU64,
    /// Serializes reloads (SIGHUP and the admin API may race); never taken on the hot path.
    reload_lock: Mutex<()>,
    /// Where the config came from (`None` = the built-in default).
    config_path: Option<PathBuf>,
    secrets: SecretWatcher,
    shutting_down: AtomicBool,
    workers_serving: AtomicUsize,
    /// The in-memory replica of the key store, read lock-free by every worker.
    pub credentials: Arc<CredentialCache>,
    /// Rate, concurrency and token limiter state, for the life of the process.
    pub admission: Arc<Admission>,
    /// Spend against key and team budgets, resumed from the ledger at start.
    pub budgets: Arc<BudgetTable>,
    /// Where workers send each metered request's usage (the ledger thread).
    pub usage: UsageSender,
    /// Target health and circuit breakers, carried from snapshot to snapshot.
    pub carried: Arc<Carried>,
    /// How many worker threads run.
    pub workers: usize,
}

impl Shared {
    /// Shared state starting with `first`.
    pub fn new(
        first: Snapshot,
        config_path: Option<PathBuf>,
        secrets: SecretWatcher,
        services: Services,
        workers: usize,
    ) -> Shared {
        metrics::global()
            .ai()
            .set_current(Arc::clone(&first.ai_series));
        Shared {
            current: ArcSwap::from_pointee(first),
            generation: AtomicU64::new(0),
            reload_lock: Mutex::new(()),
            config_path,
            secrets,
            shutting_down: AtomicBool::new(false),
            workers_serving: AtomicUsize::new(0),
            credentials: services.credentials,
            admission: services.admission,
            budgets: services.budgets,
            usage: services.usage,
            carried: services.carried,
            workers,
        }
    }

    /// The snapshot new requests use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Changes whenever [`snapshot`](Self::snapshot) does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Re-reads the config file, compiles it and makes it current. On any error the current
    /// snapshot stays and every error is returned.
    pub fn reload(&self) -> Result<(), Vec<String>> {
        let _one_at_a_time = self.reload_lock.lock();
        let built = match &self.config_path {
            Some(path) => {
                let (snapshot, report) = Snapshot::load_carrying(
                    path,
                    &self.secrets,
                    &self.admission,
                    &self.carried,
                    Purpose::Serve,
                );
                for warning in &report.warnings {
                    log::warn!("config: {warning}");
                }
                snapshot.ok_or_else(|| report.errors.iter().map(|e| e.to_string()).collect())
            }
            None => Snapshot::build(
                config::builtin_default(),
                &self.secrets,
                &self.admission,
                &self.carried,
            ),
        };
        let result = built.map(|snap| {
            let before = self.current.load();
            if snap.config.server.listen != before.config.server.listen {
                log::warn!("reload: changed [server].listen takes effect only after a restart");
            }
            // The link and its participants started with the first config and keep it.
            if snap.config.cluster != before.config.cluster {
                log::warn!("reload: changed [cluster] takes effect only after a restart");
            }
            crate::logging::set_format(snap.config.server.log_format);
            let names: Vec<&str> = snap.routes.iter().map(|r| r.name.as_str()).collect();
            self.admission.retain_routes(&names);
            metrics::global()
                .ai()
                .set_current(Arc::clone(&snap.ai_series));
            self.current.store(Arc::new(snap));
            self.generation.fetch_add(1, Ordering::Release);
        });
        // A refused build may have registered state for names it had; keep only the current
        // snapshot's, either way.
        self.carried.retain_for(&self.current.load());
        metrics::global().config_reloaded(result.is_ok());
        match &result {
            Ok(()) => log::info!("config reloaded"),
            Err(errors) => log::error!("reload refused, old config kept: {}", errors.join("; ")),
        }
        result
    }

    /// The watcher that keeps `file:` secrets current.
    pub fn secrets(&self) -> &SecretWatcher {
        &self.secrets
    }

    /// Starts a graceful shutdown: workers stop accepting and drain.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether a shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// Called by each worker once its listeners are bound.
    pub fn worker_serving(&self) {
        self.workers_serving.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether every worker is serving (for `/healthz`).
    pub fn all_serving(&self) -> bool {
        self.workers_serving.load(Ordering::SeqCst) >= self.workers && !self.is_shutting_down()
    }
}
