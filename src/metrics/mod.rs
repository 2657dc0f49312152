//! Prometheus metrics for the whole process.
//!
//! Worker threads update plain atomics with `Relaxed` ordering: every series is an independent
//! counter or gauge, nothing is read back on the hot path, and a scrape only needs each value to
//! be some value it really had. The admin thread renders them in the Prometheus text exposition
//! format 0.0.4.
//!
//! Registration (`route`, `counter`) takes a mutex, but it happens at config load, never per
//! request: the hot path holds an `Arc<RouteMetrics>` or `Arc<AtomicU64>` obtained up front.
//!
//! The AI families ([`ai`]) count per worker and are summed at scrape; the `process_*`
//! families ([`process`]) are read from `/proc/self` at scrape.

mod ai;
mod credentials;
mod mcp;
mod process;
mod webhooks;

pub use ai::{
    AiMetrics, AiSeries, Histogram, LimitKind, PerKey, ProviderStats, Settled, MAX_KEY_ID_BYTES,
};
pub use credentials::{CredentialMetrics, CredentialStats};
pub use mcp::McpMetrics;
pub use webhooks::WebhookMetrics;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::cluster::LinkStatus;
use crate::store::StoreHealth;

/// The process-wide metrics, created on first use.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::new)
}

/// Lowest and highest status code with its own `credentialflow_requests_total` series
/// (RFC 9110 §15: status codes are three-digit integers from 100 to 599).
const STATUS_MIN: u16 = 100;
const STATUS_MAX: u16 = 599;
const STATUS_SLOTS: usize = (STATUS_MAX - STATUS_MIN + 1) as usize;

/// Upper bounds of the latency histogram buckets, in nanoseconds (compared exactly), paired
/// with the `le` label that names them. The `+Inf` bucket follows these.
const BUCKETS: [(u64, &str); 14] = [
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
];

/// Names of the families [`Metrics::render`] always writes, which a registered counter may
/// not take.
const BUILT_IN_FAMILIES: [&str; 6] = [
    "credentialflow_requests_total",
    "credentialflow_request_duration_seconds",
    "credentialflow_open_connections",
    "credentialflow_driver_info",
    "credentialflow_workers",
    "credentialflow_config_reloads_total",
];

/// Names of the families [`Metrics::render`] writes in fleet mode, which a registered counter
/// may not take either.
const CLUSTER_FAMILIES: [&str; 4] = [
    "credentialflow_cluster_degraded",
    "credentialflow_cluster_round_trips_total",
    "credentialflow_cluster_errors_total",
    "credentialflow_cluster_live_nodes",
];

/// All metrics of the process: per-route request counters and latency histograms, per-worker
/// connection gauges, the I/O driver, reload outcomes and counters registered by features.
pub struct Metrics {
    routes: Mutex<HashMap<String, Arc<RouteMetrics>>>,
    counters: Mutex<Vec<NamedCounter>>,
    open_connections: ArcSwap<Box<[WorkerGauge]>>,
    workers: AtomicUsize,
    driver: Mutex<Option<&'static str>>,
    reloads_ok: AtomicU64,
    reloads_error: AtomicU64,
    /// The key store's health, shown as `credentialflow_store_up` once the gateway has a
    /// store (its owner is the credential cache; this only reads it).
    store_health: Mutex<Option<Arc<StoreHealth>>>,
    /// The cluster link's status, shown as the `credentialflow_cluster_*` families once fleet
    /// mode is on (its owner is the link; this only reads it).
    cluster: Mutex<Option<Arc<LinkStatus>>>,
    /// The AI families, counted per worker.
    ai: AiMetrics,
    /// The families of credentials the gateway obtains itself.
    credentials: CredentialMetrics,
    /// `credentialflow_webhook_deliveries_total`.
    webhooks: WebhookMetrics,
    /// The MCP gateway's call counts and latency.
    mcp: mcp::McpMetrics,
}

/// The version `credentialflow_build_info` shows.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One worker's open-connection gauge, alone on its cache line so that workers bumping their
/// own gauge do not invalidate each other's lines (false sharing).
#[repr(align(64))]
#[derive(Default)]
struct WorkerGauge(AtomicI64);

/// A counter registered by a feature through [`Metrics::counter`] (or a gauge, through
/// [`Metrics::gauge`]).
struct NamedCounter {
    name: &'static str,
    help: &'static str,
    /// `counter` or `gauge`, for the `# TYPE` line.
    kind: &'static str,
    value: Arc<AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry. The process uses [`global`]; separate instances are for tests.
    pub fn new() -> Self {
        Metrics {
            routes: Mutex::new(HashMap::new()),
            counters: Mutex::new(Vec::new()),
            open_connections: ArcSwap::from_pointee(Box::default()),
            workers: AtomicUsize::new(0),
            driver: Mutex::new(None),
            reloads_ok: AtomicU64::new(0),
            reloads_error: AtomicU64::new(0),
            store_health: Mutex::new(None),
            cluster: Mutex::new(None),
            ai: AiMetrics::new(),
            credentials: CredentialMetrics::default(),
            webhooks: WebhookMetrics::default(),
            mcp: mcp::McpMetrics::default(),
        }
    }

    /// The credential sources' families (`credentialflow_credential_*`).
    pub fn credentials(&self) -> &CredentialMetrics {
        &self.credentials
    }

    /// The webhook delivery family.
    pub fn webhooks(&self) -> &WebhookMetrics {
        &self.webhooks
    }

    /// The MCP gateway's families.
    pub fn mcp(&self) -> &mcp::McpMetrics {
        &self.mcp
    }

    /// The AI families' registry.
    pub fn ai(&self) -> &AiMetrics {
        &self.ai
    }

    /// Records one request answered by the AI front door whose route label is `door` (its
    /// path, such as `/v1/chat/completions`). The door's [`RouteMetrics`] is looked up in a
    /// per-thread cache, so the registry's lock is taken once per thread and door, not per
    /// request.
    pub fn record_door(&self, door: &'static str, status: u16, latency: Duration) {
        thread_local! {
            /// `(registry, door label, its metrics)` seen on this thread; a handful of entries.
            static DOORS: RefCell<Vec<(usize, &'static str, Arc<RouteMetrics>)>> =
                const { RefCell::new(Vec::new()) };
        }
        let registry = self as *const Metrics as usize;
        DOORS.with_borrow_mut(|doors| {
            let known = doors
                .iter()
                .find(|(r, label, _)| *r == registry && *label == door);
            match known {
                Some((_, _, metrics)) => metrics.record(status, latency),
                None => {
                    let metrics = self.route(door);
                    metrics.record(status, latency);
                    doors.push((registry, door, metrics));
                }
            }
        });
    }

    /// The metrics of the route called `name`, created on first use. The same name always
    /// gives the same `Arc`, so a route's counters survive config reloads. Call at config
    /// load and keep the `Arc`; this takes a lock.
    pub fn route(&self, name: &str) -> Arc<RouteMetrics> {
        let mut routes = self.routes.lock();
        if let Some(existing) = routes.get(name) {
            return Arc::clone(existing);
        }
        let created = Arc::new(RouteMetrics::new(name));
        routes.insert(name.to_owned(), Arc::clone(&created));
        created
    }

    /// A plain counter called `name`, rendered with `help` as its `# HELP` text. Registered
    /// once: the same name always gives the same `Arc` (and keeps the first help text).
    /// Increment it with `fetch_add(n, Ordering::Relaxed)`.
    ///
    /// # Panics
    /// If `name` is not a valid Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) or is one
    /// of the built-in families: names are compile-time constants, so either is a
    /// programming error.
    pub fn counter(&self, name: &'static str, help: &'static str) -> Arc<AtomicU64> {
        self.register(name, help, "counter")
    }

    /// A plain gauge called `name`, registered like [`Metrics::counter`] (same rules, same
    /// panics); its owner stores its current value.
    pub fn gauge(&self, name: &'static str, help: &'static str) -> Arc<AtomicU64> {
        self.register(name, help, "gauge")
    }

    fn register(
        &self,
        name: &'static str,
        help: &'static str,
        kind: &'static str,
    ) -> Arc<AtomicU64> {
        assert!(is_valid_metric_name(name), "invalid metric name {name:?}");
        assert!(
            !BUILT_IN_FAMILIES.contains(&name)
                && !CLUSTER_FAMILIES.contains(&name)
                && !ai::FAMILIES.contains(&name)
                && !process::FAMILIES.contains(&name)
                && !credentials::FAMILIES.contains(&name)
                && !webhooks::FAMILIES.contains(&name)
                && !mcp::FAMILIES.contains(&name)
                && name != "credentialflow_build_info",
            "metric name {name:?} is built in"
        );
        let mut counters = self.counters.lock();
        if let Some(existing) = counters.iter().find(|c| c.name == name) {
            return Arc::clone(&existing.value);
        }
        let value = Arc::new(AtomicU64::new(0));
        counters.push(NamedCounter {
            name,
            help,
            kind,
            value: Arc::clone(&value),
        });
        value
    }

    /// Records which I/O driver the workers run on (`"uring"` or `"epoll"`), exposed as
    /// `credentialflow_driver_info{driver=".."} 1`.
    pub fn set_driver(&self, driver: &'static str) {
        *self.driver.lock() = Some(driver);
    }

    /// Exposes `health` as `credentialflow_store_up` (1 reachable, 0 not).
    pub fn set_store_health(&self, health: Arc<StoreHealth>) {
        *self.store_health.lock() = Some(health);
    }

    /// Exposes the cluster link's `status` as `credentialflow_cluster_degraded`,
    /// `_round_trips_total`, `_errors_total` and `_live_nodes` (fleet mode only).
    pub fn set_cluster_status(&self, status: Arc<LinkStatus>) {
        *self.cluster.lock() = Some(status);
    }

    /// Sizes the per-worker gauges for `n` workers. Call once at startup, before the workers
    /// serve: values of workers that still exist are carried over, but a connection opened
    /// or closed while the gauges are being replaced may be missed.
    pub fn set_workers(&self, n: usize) {
        let old = self.open_connections.load();
        let gauges: Box<[WorkerGauge]> = (0..n)
            .map(|i| {
                let carried = old.get(i).map_or(0, |g| g.0.load(Relaxed));
                WorkerGauge(AtomicI64::new(carried))
            })
            .collect();
        self.open_connections.store(Arc::new(gauges));
        self.workers.store(n, Relaxed);
        self.ai.set_workers(n);
    }

    /// Counts a connection accepted by `worker`. Lock-free. A worker index beyond the count
    /// given to [`Metrics::set_workers`] is ignored.
    pub fn connection_opened(&self, worker: usize) {
        if let Some(gauge) = self.open_connections.load().get(worker) {
            gauge.0.fetch_add(1, Relaxed);
        }
    }

    /// Counts a connection of `worker` that closed. Lock-free.
    pub fn connection_closed(&self, worker: usize) {
        if let Some(gauge) = self.open_connections.load().get(worker) {
            gauge.0.fetch_sub(1, Relaxed);
        }
    }

    /// Counts a config reload attempt, by outcome
    /// (`credentialflow_config_reloads_total{result="ok"|"error"}`).
    pub fn config_reloaded(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_error
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Renders every series in the Prometheus text exposition format 0.0.4, routes in name
    /// order so that successive scrapes line up.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut routes: Vec<Arc<RouteMetrics>> = self.routes.lock().values().cloned().collect();
        routes.sort_by(|a, b| a.name.cmp(&b.name));

        family_header(
            &mut out,
            "credentialflow_requests_total",
            "counter",
            "Requests answered, by route and status code.",
        );
        for route in &routes {
            route.render_statuses(&mut out);
        }

        family_header(
            &mut out,
            "credentialflow_request_duration_seconds",
            "histogram",
            "Time from request head to the end of the response, by route.",
        );
        for route in &routes {
            route.render_histogram(&mut out);
        }

        family_header(
            &mut out,
            "credentialflow_open_connections",
            "gauge",
            "Client connections currently open, by worker.",
        );
        for (worker, gauge) in self.open_connections.load().iter().enumerate() {
            let value = gauge.0.load(Relaxed);
            let _ = writeln!(
                out,
                "credentialflow_open_connections{{worker=\"{worker}\"}} {value}"
            );
        }

        if let Some(driver) = *self.driver.lock() {
            family_header(
                &mut out,
                "credentialflow_driver_info",
                "gauge",
                "The I/O driver the workers run on.",
            );
            let _ = writeln!(
                out,
                "credentialflow_driver_info{{driver=\"{}\"}} 1",
                escape_label_value(driver)
            );
        }

        family_header(
            &mut out,
            "credentialflow_workers",
            "gauge",
            "Worker threads serving the data plane.",
        );
        let _ = writeln!(out, "credentialflow_workers {}", self.workers.load(Relaxed));

        family_header(
            &mut out,
            "credentialflow_config_reloads_total",
            "counter",
            "Config reload attempts, by result.",
        );
        let ok = self.reloads_ok.load(Relaxed);
        let error = self.reloads_error.load(Relaxed);
        let _ = writeln!(
            out,
            "credentialflow_config_reloads_total{{result=\"ok\"}} {ok}"
        );
        let _ = writeln!(
            out,
            "credentialflow_config_reloads_total{{result=\"error\"}} {error}"
        );

        if let Some(health) = self.store_health.lock().as_ref() {
            family_header(
                &mut out,
                "credentialflow_store_up",
                "gauge",
                "Whether the key store answered the last call to it (1) or not (0).",
            );
            let up = u8::from(health.is_up());
            let _ = writeln!(out, "credentialflow_store_up {up}");
        }

        if let Some(cluster) = self.cluster.lock().as_ref() {
            render_cluster(&mut out, cluster);
        }

        for counter in self.counters.lock().iter() {
            family_header(&mut out, counter.name, counter.kind, counter.help);
            let _ = writeln!(out, "{} {}", counter.name, counter.value.load(Relaxed));
        }

        self.credentials.render(&mut out);
        self.webhooks.render(&mut out);
        self.mcp.render(&mut out);
        self.ai.render(&mut out, crate::clock::unix_now_ms());
        family_header(
            &mut out,
            "credentialflow_build_info",
            "gauge",
            "The gateway's version; always 1.",
        );
        let _ = writeln!(
            out,
            "credentialflow_build_info{{version=\"{}\"}} 1",
            escape_label_value(VERSION)
        );
        process::render(&mut out);
        out
    }
}

/// The `credentialflow_cluster_*` families of the cluster link's `status`.
fn render_cluster(out: &mut String, status: &LinkStatus) {
    let families: [(&str, &str, &str, u64); 4] = [
        (
            "credentialflow_cluster_degraded",
            "gauge",
            "Whether Redis is unreachable and limits fall back to this node's share (1) or are fleet-wide (0).",
            u64::from(status.degraded()),
        ),
        (
            "credentialflow_cluster_round_trips_total",
            "counter",
            "Pipelined round trips to Redis answered (one per sync interval while healthy).",
            status.round_trips(),
        ),
        (
            "credentialflow_cluster_errors_total",
            "counter",
            "Failed Redis connects and round trips, and calls Redis answered with an error.",
            status.errors(),
        ),
        (
            "credentialflow_cluster_live_nodes",
            "gauge",
            "Live nodes in the fleet's node set at Redis's last answer (at least this one).",
            u64::from(status.live_nodes()),
        ),
    ];
    for (name, kind, help, value) in families {
        family_header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// Request counters and the latency histogram of one route. Shared by every worker; all
/// updates are single relaxed atomic adds.
pub struct RouteMetrics {
    name: String,
    /// The route name escaped as a label value, computed once for rendering.
    label: String,
    /// Requests per exact status code, index `status - 100`.
    statuses: Box<[AtomicU64]>,
    /// Observations per bucket, not cumulative: index `i` counts latencies in
    /// `(BUCKETS[i-1], BUCKETS[i]]`, the last slot those above every bound (`+Inf`).
    buckets: [AtomicU64; BUCKETS.len() + 1],
    /// Sum of all latencies, in microseconds.
    sum_micros: AtomicU64,
}

impl RouteMetrics {
    fn new(name: &str) -> Self {
        RouteMetrics {
            name: name.to_owned(),
            label: escape_label_value(name),
            statuses: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one answered request. A status outside 100..=599 (which no HTTP response
    /// has) still counts in the latency histogram but has no status series.
    pub fn record(&self, status: u16, latency: Duration) {
        if (STATUS_MIN..=STATUS_MAX).contains(&status) {
            self.statuses[usize::from(status - STATUS_MIN)].fetch_add(1, Relaxed);
        }
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        // Prometheus buckets are "less than or equal" upper bounds.
        let slot = BUCKETS
            .iter()
            .position(|&(bound, _)| nanos <= bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    /// Writes one `credentialflow_requests_total` line per status code seen.
    fn render_statuses(&self, out: &mut String) {
        for (offset, counter) in self.statuses.iter().enumerate() {
            let count = counter.load(Relaxed);
            if count == 0 {
                continue;
            }
            let status = usize::from(STATUS_MIN) + offset;
            let _ = writeln!(
                out,
                "credentialflow_requests_total{{route=\"{}\",status=\"{status}\"}} {count}",
                self.label
            );
        }
    }

    /// Writes the cumulative buckets, `_sum` and `_count`. `_count` is the `+Inf` bucket of
    /// the same snapshot, so the two always agree within a scrape.
    fn render_histogram(&self, out: &mut String) {
        let mut cumulative = 0u64;
        let bounds = BUCKETS.iter().map(|&(_, le)| le).chain(["+Inf"]);
        for (le, bucket) in bounds.zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(
                out,
                "credentialflow_request_duration_seconds_bucket{{route=\"{}\",le=\"{le}\"}} {cumulative}",
                self.label
            );
        }
        let micros = self.sum_micros.load(Relaxed);
        let _ = writeln!(
            out,
            "credentialflow_request_duration_seconds_sum{{route=\"{}\"}} {}.{:06}",
            self.label,
            micros / 1_000_000,
            micros % 1_000_000
        );
        let _ = writeln!(
            out,
            "credentialflow_request_duration_seconds_count{{route=\"{}\"}} {cumulative}",
            self.label
        );
    }
}

/// Writes the `# HELP` and `# TYPE` lines that open a metric family.
fn family_header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value for the text format: backslash, double quote and line feed are the
/// three characters the format requires escaped inside label values.
fn escape_label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// Escapes `# HELP` text: backslash and line feed (double quotes are literal there).
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Whether `name` matches the Prometheus metric name grammar `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn is_valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn store_up_follows_the_store_health_once_set() {
        let metrics = Metrics::new();
        assert!(!metrics.render().contains("credentialflow_store_up"));
        let health = Arc::new(StoreHealth::new());
        metrics.set_store_health(Arc::clone(&health));
        assert!(metrics.render().contains("\ncredentialflow_store_up 1\n"));
        health.set(false);
        assert!(metrics.render().contains("\ncredentialflow_store_up 0\n"));
        assert!(metrics
            .render()
            .contains("# TYPE credentialflow_store_up gauge"));
    }

    #[test]
    fn cluster_families_appear_only_in_fleet_mode() {
        let metrics = Metrics::new();
        assert!(!metrics.render().contains("credentialflow_cluster_"));
        let link = crate::cluster::Link::start(
            crate::cluster::LinkSettings {
                target: crate::cluster::RedisTarget::parse("redis+unix:///nonexistent/cf.sock")
                    .unwrap(),
                node: "edge-1".into(),
                tick: Duration::from_millis(50),
            },
            Vec::new(),
        )
        .unwrap();
        metrics.set_cluster_status(Arc::clone(link.status()));
        let scrape = metrics.render();
        for family in CLUSTER_FAMILIES {
            assert!(
                scrape.contains(&format!("# HELP {family} ")),
                "{family} HELP"
            );
        }
        for line in [
            "\ncredentialflow_cluster_degraded 1\n",
            "\ncredentialflow_cluster_live_nodes 1\n",
            "\ncredentialflow_cluster_round_trips_total 0\n",
            "# TYPE credentialflow_cluster_errors_total counter",
            "# TYPE credentialflow_cluster_degraded gauge",
        ] {
            assert!(scrape.contains(line), "{line:?} in\n{scrape}");
        }
        link.abandon();
    }

    #[test]
    fn recorded_request_renders_status_series() {
        let metrics = Metrics::new();
        let route = metrics.route("api");
        route.record(200, Duration::from_millis(3));
        route.record(200, Duration::from_millis(4));
        route.record(502, Duration::from_millis(1));
        let text = metrics.render();
        assert!(
            lines(&text).contains(&r#"credentialflow_requests_total{route="api",status="200"} 2"#)
        );
        assert!(
            lines(&text).contains(&r#"credentialflow_requests_total{route="api",status="502"} 1"#)
        );
    }

    #[test]
    fn status_codes_never_seen_are_not_rendered() {
        let metrics = Metrics::new();
        metrics.route("api").record(200, Duration::ZERO);
        let text = metrics.render();
        assert!(!text.contains(r#"status="404""#));
        assert_eq!(text.matches("credentialflow_requests_total{").count(), 1);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::new();
        let route = metrics.route("api");
        route.record(200, Duration::from_micros(400)); // <= 0.0005
        route.record(200, Duration::from_millis(3)); // <= 0.005
        route.record(200, Duration::from_millis(3)); // <= 0.005
        route.record(200, Duration::from_secs(20)); // +Inf only
        let text = metrics.render();
        let bucket = |le: &str| {
            format!(r#"credentialflow_request_duration_seconds_bucket{{route="api",le="{le}"}}"#)
        };
        for (le, expected) in [
            ("0.0005", 1),
            ("0.001", 1),
            ("0.0025", 1),
            ("0.005", 3),
            ("1", 3),
            ("10", 3),
            ("+Inf", 4),
        ] {
            let line = format!("{} {expected}", bucket(le));
            assert!(lines(&text).contains(&line.as_str()), "missing {line}");
        }
        assert!(lines(&text)
            .contains(&r#"credentialflow_request_duration_seconds_count{route="api"} 4"#));
    }

    #[test]
    fn latency_equal_to_a_bound_falls_in_that_bucket() {
        let metrics = Metrics::new();
        metrics.route("api").record(200, Duration::from_millis(1));
        let text = metrics.render();
        assert!(lines(&text).contains(
            &r#"credentialflow_request_duration_seconds_bucket{route="api",le="0.0005"} 0"#
        ));
        assert!(lines(&text).contains(
            &r#"credentialflow_request_duration_seconds_bucket{route="api",le="0.001"} 1"#
        ));
    }

    #[test]
    fn histogram_sum_has_microsecond_precision() {
        let metrics = Metrics::new();
        let route = metrics.route("api");
        route.record(200, Duration::from_micros(1_500_001));
        route.record(200, Duration::from_micros(250));
        let text = metrics.render();
        assert!(lines(&text)
            .contains(&r#"credentialflow_request_duration_seconds_sum{route="api"} 1.500251"#));
    }

    #[test]
    fn same_route_name_gives_same_arc() {
        let metrics = Metrics::new();
        let first = metrics.route("api");
        let second = metrics.route("api");
        assert!(Arc::ptr_eq(&first, &second));
        assert!(!Arc::ptr_eq(&first, &metrics.route("other")));
    }

    #[test]
    fn same_counter_name_gives_same_arc() {
        let metrics = Metrics::new();
        let first = metrics.counter("credentialflow_test_total", "A test counter.");
        let second = metrics.counter("credentialflow_test_total", "Ignored help.");
        assert!(Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn registered_counter_renders_as_plain_counter() {
        let metrics = Metrics::new();
        let counter = metrics.counter("credentialflow_keys_issued_total", "Keys issued.");
        counter.fetch_add(3, Relaxed);
        let text = metrics.render();
        assert!(lines(&text).contains(&"# HELP credentialflow_keys_issued_total Keys issued."));
        assert!(lines(&text).contains(&"# TYPE credentialflow_keys_issued_total counter"));
        assert!(lines(&text).contains(&"credentialflow_keys_issued_total 3"));
    }

    #[test]
    fn registered_gauge_renders_as_gauge_with_its_current_value() {
        let metrics = Metrics::new();
        let depth = metrics.gauge("credentialflow_usage_journal_depth", "Records waiting.");
        depth.store(7, Relaxed);
        depth.fetch_sub(2, Relaxed);
        let text = metrics.render();
        assert!(lines(&text).contains(&"# TYPE credentialflow_usage_journal_depth gauge"));
        assert!(lines(&text).contains(&"credentialflow_usage_journal_depth 5"));
    }

    #[test]
    #[should_panic(expected = "invalid metric name")]
    fn counter_with_invalid_name_panics() {
        Metrics::new().counter("bad-name", "Dashes are not allowed.");
    }

    #[test]
    #[should_panic(expected = "is built in")]
    fn counter_with_built_in_name_panics() {
        Metrics::new().counter("credentialflow_workers", "Clashes with a gauge.");
    }

    #[test]
    fn route_label_values_are_escaped() {
        let metrics = Metrics::new();
        metrics
            .route("a\"b\\c\nd")
            .record(200, Duration::from_millis(1));
        let text = metrics.render();
        assert!(lines(&text)
            .contains(&r#"credentialflow_requests_total{route="a\"b\\c\nd",status="200"} 1"#));
    }

    #[test]
    fn help_text_is_escaped() {
        assert_eq!(escape_help("a\\b\nc \"d\""), "a\\\\b\\nc \"d\"");
    }

    #[test]
    fn concurrent_recording_sums_exactly() {
        let metrics = Arc::new(Metrics::new());
        let per_thread = 50_000u64;
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let route = metrics.route("api");
                std::thread::spawn(move || {
                    for _ in 0..per_thread {
                        route.record(200, Duration::from_micros(2));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let text = metrics.render();
        let total = 2 * per_thread;
        assert!(lines(&text).contains(
            &format!(r#"credentialflow_requests_total{{route="api",status="200"}} {total}"#)
                .as_str()
        ));
        assert!(lines(&text).contains(
            &format!(r#"credentialflow_request_duration_seconds_count{{route="api"}} {total}"#)
                .as_str()
        ));
        assert!(lines(&text)
            .contains(&r#"credentialflow_request_duration_seconds_sum{route="api"} 0.200000"#));
    }

    #[test]
    fn open_connections_are_tracked_per_worker() {
        let metrics = Metrics::new();
        metrics.set_workers(2);
        metrics.connection_opened(0);
        metrics.connection_opened(1);
        metrics.connection_opened(1);
        metrics.connection_closed(0);
        let text = metrics.render();
        assert!(lines(&text).contains(&r#"credentialflow_open_connections{worker="0"} 0"#));
        assert!(lines(&text).contains(&r#"credentialflow_open_connections{worker="1"} 2"#));
        assert!(lines(&text).contains(&"credentialflow_workers 2"));
    }

    #[test]
    fn worker_beyond_configured_count_is_ignored() {
        let metrics = Metrics::new();
        metrics.set_workers(1);
        metrics.connection_opened(5);
        let text = metrics.render();
        assert!(!text.contains(r#"worker="5""#));
    }

    #[test]
    fn resizing_workers_keeps_open_counts() {
        let metrics = Metrics::new();
        metrics.set_workers(1);
        metrics.connection_opened(0);
        metrics.set_workers(2);
        let text = metrics.render();
        assert!(lines(&text).contains(&r#"credentialflow_open_connections{worker="0"} 1"#));
        assert!(lines(&text).contains(&r#"credentialflow_open_connections{worker="1"} 0"#));
    }

    #[test]
    fn driver_info_renders_once_set() {
        let metrics = Metrics::new();
        assert!(!metrics.render().contains("credentialflow_driver_info{"));
        metrics.set_driver("uring");
        let text = metrics.render();
        assert!(lines(&text).contains(&r#"credentialflow_driver_info{driver="uring"} 1"#));
    }

    #[test]
    fn config_reloads_are_counted_by_result() {
        let metrics = Metrics::new();
        metrics.config_reloaded(true);
        metrics.config_reloaded(true);
        metrics.config_reloaded(false);
        let text = metrics.render();
        assert!(lines(&text).contains(&r#"credentialflow_config_reloads_total{result="ok"} 2"#));
        assert!(lines(&text).contains(&r#"credentialflow_config_reloads_total{result="error"} 1"#));
    }

    #[test]
    fn every_family_has_help_and_type_lines() {
        let metrics = Metrics::new();
        metrics.set_driver("epoll");
        let text = metrics.render();
        for family in BUILT_IN_FAMILIES {
            assert!(text.contains(&format!("# HELP {family} ")), "{family} HELP");
            assert!(text.contains(&format!("# TYPE {family} ")), "{family} TYPE");
        }
    }

    #[test]
    fn build_info_shows_the_version() {
        let text = Metrics::new().render();
        assert!(lines(&text).contains(&"# TYPE credentialflow_build_info gauge"));
        let line = format!(r#"credentialflow_build_info{{version="{VERSION}"}} 1"#);
        assert!(lines(&text).contains(&line.as_str()), "{line}");
    }

    #[test]
    fn doors_are_counted_under_their_own_route_label() {
        let metrics = Metrics::new();
        metrics.record_door("/v1/chat/completions", 200, Duration::from_millis(1));
        metrics.record_door("/v1/chat/completions", 429, Duration::from_millis(1));
        metrics.record_door("/v1/messages", 200, Duration::from_millis(1));
        let text = metrics.render();
        for line in [
            r#"credentialflow_requests_total{route="/v1/chat/completions",status="200"} 1"#,
            r#"credentialflow_requests_total{route="/v1/chat/completions",status="429"} 1"#,
            r#"credentialflow_requests_total{route="/v1/messages",status="200"} 1"#,
        ] {
            assert!(lines(&text).contains(&line), "{line}");
        }
        // The per-thread cache keeps registries apart.
        let other = Metrics::new();
        other.record_door("/v1/messages", 200, Duration::ZERO);
        assert!(lines(&metrics.render())
            .contains(&r#"credentialflow_requests_total{route="/v1/messages",status="200"} 1"#));
        assert!(!text.contains("(ai)"));
    }

    #[test]
    #[should_panic(expected = "is built in")]
    fn counter_may_not_take_an_ai_family_name() {
        Metrics::new().counter(
            "credentialflow_ai_tokens_total",
            "Clashes with the AI family.",
        );
    }

    #[test]
    fn the_ai_and_process_families_are_in_every_scrape() {
        let text = Metrics::new().render();
        for family in [
            "credentialflow_ai_requests_total",
            "credentialflow_ai_tokens_total",
            "credentialflow_ai_cost_usd_total",
            "credentialflow_ai_time_to_first_token_seconds",
            "credentialflow_provider_attempts_total",
            "credentialflow_circuit_open",
            "credentialflow_limit_rejections_total",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
        }
    }

    #[test]
    fn global_is_one_instance() {
        assert!(std::ptr::eq(global(), global()));
    }
}
