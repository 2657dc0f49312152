//! A fleet in fleet mode: a private PostgreSQL (keys shared), a private Redis with a password
//! (`[cluster] redis`), and gateway processes `edge-a`, `edge-b`, ... on both, all secrets
//! given by environment and the passwords added to every gateway's output sweep. Plus what
//! fleet-limit tests need: an upstream that counts the requests in flight at it, clients
//! spreading requests over the nodes, and `/metrics` values.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::{request, roundtrip, Client, Response};
use super::gateway::{config_with, upstream_toml, Driver, Gateway};
use super::keys::{create_key, IssuedKey};
use super::postgres::PgServer;
use super::redis::RedisServer;
use super::upstream::{RecordedRequest, Reply, Upstream};
use super::{wait_until, WAIT};

/// The sync interval the test fleets run with (the default).
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// The longest hold a request may ask of the counting upstream (a bound on what a header
/// can make a test thread do).
const MAX_HOLD: Duration = Duration::from_secs(10);

/// `n` random bytes as hex.
pub fn random_hex(bytes: usize) -> String {
    let mut out = String::new();
    while out.len() < bytes * 2 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_usize(out.len());
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out.truncate(bytes * 2);
    out
}

/// The fleet: PostgreSQL, Redis and the gateways.
pub struct ClusterFleet {
    /// The shared store.
    pub pg: PgServer,
    /// The fleet's Redis (stop and start it to test an outage).
    pub redis: RedisServer,
    /// The Redis password (never to appear in a gateway's output).
    pub redis_password: String,
    /// `edge-a`, `edge-b`, ...
    pub nodes: Vec<Gateway>,
}

impl ClusterFleet {
    /// Starts `nodes` gateways (one worker each) proxying every path (`auth = "api_key"`) to
    /// `upstream_target`.
    pub fn start(nodes: usize, upstream_target: &str, driver: Driver) -> ClusterFleet {
        let rest = format!(
            "{}\n[[route]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"backend\"\n\
             auth = \"api_key\"\n",
            upstream_toml("backend", upstream_target, "")
        );
        ClusterFleet::start_with(nodes, &rest, &[], driver)
    }

    /// Starts `nodes` gateways (one worker each) with `rest` (the tables after `[store]` and
    /// `[cluster]`: upstreams, routes, providers, models) and the extra environment `env`
    /// (the secrets `rest` names; each value is also forbidden in the gateways' output).
    pub fn start_with(
        nodes: usize,
        rest: &str,
        env: &[(&str, &str)],
        driver: Driver,
    ) -> ClusterFleet {
        ClusterFleet::launch(nodes, rest, env, driver).0
    }

    /// [`ClusterFleet::start_with`], also returning the [`NodeLaunch`] that starts a node
    /// again as the same member (a restart test stops one and starts it with it).
    pub fn launch(
        nodes: usize,
        tables: &str,
        env: &[(&str, &str)],
        driver: Driver,
    ) -> (ClusterFleet, NodeLaunch) {
        let mut pg = PgServer::start();
        pg.create_database("cf");
        let pg_password = format!("pw-{}", random_hex(12));
        pg.require_password(&pg_password);
        let redis_password = format!("rpw{}", random_hex(12));
        let redis = RedisServer::start_with_password(&redis_password);
        let launch = NodeLaunch {
            store_url: pg.postgres_url("cf", Some(&pg_password)),
            pepper: random_hex(32),
            pg_password,
            redis_url: redis.url(),
            redis_password: redis_password.clone(),
            tables: tables.to_string(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            driver,
        };
        let gateways = (0..nodes).map(|i| launch.start(i)).collect();
        let fleet = ClusterFleet {
            pg,
            redis,
            redis_password,
            nodes: gateways,
        };
        (fleet, launch)
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Gateway {
        &self.nodes[i]
    }

    /// Creates a key with `body` (its limits) through node 0's admin API and waits until
    /// every node authenticates it. The probe is each node's first use of the key, and its
    /// first answer other than 401 must be 200: a key's first request on a node is not
    /// refused because the node never synced it (the first-use credit; the next tick takes
    /// a lease for it).
    pub fn create_key(&self, body: &Value) -> IssuedKey {
        self.create_key_probed(body, |node, secret| {
            send(node, secret, Duration::ZERO, "probe").status
        })
    }

    /// [`ClusterFleet::create_key`] with the probe `probe(node, secret)` (one request, its
    /// status) instead of a `GET`: for a fleet whose keys are used on other paths.
    pub fn create_key_probed(
        &self,
        body: &Value,
        probe: impl Fn(&Gateway, &str) -> u16,
    ) -> IssuedKey {
        let key = create_key(self.node(0), body);
        for (i, node) in self.nodes.iter().enumerate() {
            let mut status = 401;
            wait_until(WAIT, || {
                status = probe(node, &key.secret);
                status != 401
            });
            assert_eq!(status, 200, "the key's first request on node {i}");
        }
        key
    }

    /// `name`'s value in node `i`'s `/metrics`, if present.
    pub fn metric(&self, i: usize, name: &str) -> Option<f64> {
        metric(self.node(i), name)
    }
}

/// How the gateways of a [`ClusterFleet::launch`] fleet are started: the store, Redis,
/// their secrets (given by environment and swept from the output), and the tables after
/// `[cluster]`.
pub struct NodeLaunch {
    store_url: String,
    pepper: String,
    pg_password: String,
    redis_url: String,
    redis_password: String,
    tables: String,
    env: Vec<(String, String)>,
    driver: Driver,
}

impl NodeLaunch {
    /// Starts node `i` (`edge-a`, `edge-b`, ...; one worker) with a fresh `data_dir`: a node
    /// started again is the same member of the fleet with nothing but what the store and
    /// Redis remember.
    pub fn start(&self, i: usize) -> Gateway {
        let node = format!("edge-{}", (b'a' + i as u8) as char);
        let config = config_with(
            1,
            "",
            &format!(
                "[store]\nbackend = \"postgres\"\nurl = \"env:CF_STORE_URL\"\n\
                 pepper = \"env:CF_PEPPER\"\nnode = \"{node}\"\n\n\
                 [cluster]\nredis = \"env:CF_REDIS_URL\"\nsync_interval_ms = {}\n{}",
                SYNC_INTERVAL.as_millis(),
                self.tables
            ),
        );
        let mut builder = Gateway::builder(&config, self.driver)
            .env("CF_STORE_URL", &self.store_url)
            .env("CF_PEPPER", &self.pepper)
            .env("CF_REDIS_URL", &self.redis_url)
            .forbid_in_output("the store password", &self.pg_password)
            .forbid_in_output("the Redis password", &self.redis_password);
        for (key, value) in &self.env {
            builder = builder.env(key, value).forbid_in_output(key, value);
        }
        builder.start()
    }
}

/// The value of an unlabelled sample in `gw`'s Prometheus scrape.
pub fn metric(gw: &Gateway, name: &str) -> Option<f64> {
    let scrape = gw.admin_get("/metrics").text();
    scrape.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    })
}

/// An upstream that holds each request for the milliseconds its `x-hold-ms` header asks
/// (bounded) and counts the requests in flight at it, in all and by their `x-via` tag.
pub struct CountingUpstream {
    upstream: Upstream,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    in_flight: AtomicI64,
    peak: AtomicI64,
    by_tag: Mutex<BTreeMap<String, i64>>,
}

impl Counts {
    fn tag(&self, tag: &str, delta: i64) {
        *self
            .by_tag
            .lock()
            .unwrap()
            .entry(tag.to_string())
            .or_default() += delta;
    }
}

impl CountingUpstream {
    /// Starts it on 127.0.0.1.
    pub fn start() -> CountingUpstream {
        let counts = Arc::new(Counts::default());
        let counting = Arc::clone(&counts);
        let upstream = Upstream::start("backend", move |request: &RecordedRequest| {
            let hold = request
                .header("x-hold-ms")
                .and_then(|ms| ms.parse().ok())
                .map_or(Duration::ZERO, Duration::from_millis)
                .min(MAX_HOLD);
            let tag = request.header("x-via").unwrap_or("").to_string();
            let now = counting.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            counting.peak.fetch_max(now, Ordering::SeqCst);
            counting.tag(&tag, 1);
            std::thread::sleep(hold);
            // Counted out before the answer is written: the gateway still holds the
            // request's slot then, so the count here never exceeds the gateway's.
            counting.tag(&tag, -1);
            counting.in_flight.fetch_sub(1, Ordering::SeqCst);
            Reply::text("ok")
        });
        CountingUpstream { upstream, counts }
    }

    /// `host:port` for the config.
    pub fn target(&self) -> String {
        self.upstream.target()
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> i64 {
        self.counts.in_flight.load(Ordering::SeqCst)
    }

    /// Requests tagged `tag` in flight now.
    pub fn in_flight_of(&self, tag: &str) -> i64 {
        self.counts
            .by_tag
            .lock()
            .unwrap()
            .get(tag)
            .copied()
            .unwrap_or(0)
    }

    /// The most requests in flight at once since the last reset.
    pub fn peak(&self) -> i64 {
        self.counts.peak.load(Ordering::SeqCst)
    }

    /// Starts a new peak from what is in flight now.
    pub fn reset_peak(&self) {
        self.counts.peak.store(self.in_flight(), Ordering::SeqCst);
    }
}

/// One request through `gw` presenting `secret`, asking the upstream to hold it `hold` and
/// tagging it `tag`.
pub fn send(gw: &Gateway, secret: &str, hold: Duration, tag: &str) -> Response {
    let bearer = format!("Bearer {secret}");
    let hold_ms = hold.as_millis().to_string();
    let headers = [
        ("Authorization", bearer.as_str()),
        ("x-hold-ms", hold_ms.as_str()),
        ("x-via", tag),
        ("Connection", "close"),
    ];
    roundtrip(gw.addr(), &request("GET", "/work", &headers, b""))
}

/// How long a client waits after a 429 before trying again (a refused client would
/// otherwise spin on two shared cores).
pub const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Clients sending requests in a loop until stopped, counting the answers by status.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<BTreeMap<u16, usize>>>,
}

impl Load {
    /// Starts `clients` threads, client `i` on node `nodes[i % nodes.len()]`, each sending
    /// one request at a time (held `hold` by the upstream, tagged `tag`), pausing
    /// [`RETRY_PAUSE`] after a 429.
    pub fn start(
        fleet: &ClusterFleet,
        nodes: &[usize],
        secret: &str,
        clients: usize,
        hold: Duration,
        tag: &str,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|i| {
                let addr = fleet.node(nodes[i % nodes.len()]).addr();
                let (stop, secret, tag) = (Arc::clone(&stop), secret.to_string(), tag.to_string());
                std::thread::spawn(move || {
                    let mut statuses = BTreeMap::new();
                    let bearer = format!("Bearer {secret}");
                    let hold_ms = hold.as_millis().to_string();
                    let headers = [
                        ("Authorization", bearer.as_str()),
                        ("x-hold-ms", hold_ms.as_str()),
                        ("x-via", tag.as_str()),
                        ("Connection", "close"),
                    ];
                    let raw = request("GET", "/work", &headers, b"");
                    while !stop.load(Ordering::Relaxed) {
                        let status = try_roundtrip(addr, &raw);
                        *statuses.entry(status).or_insert(0) += 1;
                        if status == NO_ANSWER {
                            // The node is gone (killed by the test): nothing more to send.
                            break;
                        }
                        if status == 429 {
                            std::thread::sleep(RETRY_PAUSE);
                        }
                    }
                    statuses
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops the clients (each finishes the request it is on) and sums their statuses.
    pub fn finish(self) -> BTreeMap<u16, usize> {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = BTreeMap::new();
        for thread in self.threads {
            for (status, n) in thread.join().expect("a client thread panicked") {
                *total.entry(status).or_insert(0) += n;
            }
        }
        total
    }
}

/// The status a [`Load`] counts for a request whose connection failed or closed unanswered.
pub const NO_ANSWER: u16 = 0;

/// One request on a new connection; its status, or [`NO_ANSWER`].
fn try_roundtrip(addr: std::net::SocketAddr, raw: &[u8]) -> u16 {
    try_exchange(addr, raw).map_or(NO_ANSWER, |response| response.status)
}

/// How many answers in `statuses` were 5xx.
pub fn server_errors(statuses: &BTreeMap<u16, usize>) -> usize {
    statuses
        .iter()
        .filter(|(status, _)| (500..600).contains(*status))
        .map(|(_, n)| n)
        .sum()
}

/// What the clients of a [`RateLoad`] saw on one node (or, summed, on the fleet).
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Answers by status ([`NO_ANSWER`] for a connection that failed or closed unanswered).
    pub statuses: BTreeMap<u16, usize>,
    /// 429 answers without a `retry-after` header.
    pub refusals_without_retry_after: usize,
    /// The units the admitted (2xx) answers carried, by the load's measure.
    pub admitted_units: u64,
    /// 2xx answers the measure found no units in.
    pub unmeasured: usize,
    /// When the first request was sent.
    pub first_sent: Option<Instant>,
    /// When the last request was sent.
    pub last_sent: Option<Instant>,
    /// The longest time from sending a request to having its whole answer.
    pub slowest: Duration,
}

impl Tally {
    /// Requests sent.
    pub fn sent(&self) -> usize {
        self.statuses.values().sum()
    }

    /// Requests answered 2xx.
    pub fn admitted(&self) -> usize {
        self.statuses
            .iter()
            .filter(|(status, _)| (200..300).contains(*status))
            .map(|(_, n)| n)
            .sum()
    }

    /// Requests answered 429.
    pub fn refused(&self) -> usize {
        self.statuses.get(&429).copied().unwrap_or(0)
    }

    /// From the first request sent to the last.
    pub fn window(&self) -> Duration {
        match (self.first_sent, self.last_sent) {
            (Some(first), Some(last)) => last - first,
            _ => Duration::ZERO,
        }
    }

    /// Adds `other`'s counts to this one.
    pub fn merge(&mut self, other: &Tally) {
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_insert(0) += n;
        }
        self.refusals_without_retry_after += other.refusals_without_retry_after;
        self.admitted_units += other.admitted_units;
        self.unmeasured += other.unmeasured;
        self.first_sent = [self.first_sent, other.first_sent]
            .into_iter()
            .flatten()
            .min();
        self.last_sent = [self.last_sent, other.last_sent]
            .into_iter()
            .flatten()
            .max();
        self.slowest = self.slowest.max(other.slowest);
    }

    /// Every tally of `tallies` summed.
    pub fn sum<'a>(tallies: impl IntoIterator<Item = &'a Tally>) -> Tally {
        let mut total = Tally::default();
        for tally in tallies {
            total.merge(tally);
        }
        total
    }
}

/// How a [`RateLoad`] reads the units an admitted answer used: `None` when it finds none.
pub type Measure = fn(&Response) -> Option<u64>;

/// Clients sending requests in a loop over every node until stopped, tallying per node what
/// they sent and what came back: demand far above a rate, for the fleet's admitted total to
/// be compared with the rate's bound.
pub struct RateLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<(usize, JoinHandle<Tally>)>,
    nodes: usize,
}

impl RateLoad {
    /// Starts `clients` threads, client `i` on node `i % nodes`, each sending `raw` on a new
    /// connection, reading the whole answer, and pausing [`RETRY_PAUSE`] after a 429.
    /// `measure` reads the units of each 2xx answer.
    pub fn start(fleet: &ClusterFleet, raw: Vec<u8>, clients: usize, measure: Measure) -> RateLoad {
        RateLoad::start_cycling(fleet, vec![raw], clients, measure)
    }

    /// [`RateLoad::start`] sending the requests `raws` in turn (client `i` starting at the
    /// `i`th), for a load spread over many keys.
    pub fn start_cycling(
        fleet: &ClusterFleet,
        raws: Vec<Vec<u8>>,
        clients: usize,
        measure: Measure,
    ) -> RateLoad {
        assert!(!raws.is_empty(), "a load needs a request to send");
        let stop = Arc::new(AtomicBool::new(false));
        let raws = Arc::new(raws);
        let nodes = fleet.nodes.len();
        let threads = (0..clients)
            .map(|i| {
                let node = i % nodes;
                let addr = fleet.node(node).addr();
                let (stop, raws) = (Arc::clone(&stop), Arc::clone(&raws));
                let thread = std::thread::spawn(move || {
                    let mut tally = Tally::default();
                    let mut next = i;
                    while !stop.load(Ordering::Relaxed) {
                        let raw = &raws[next % raws.len()];
                        next = next.wrapping_add(1);
                        let sent = Instant::now();
                        tally.first_sent.get_or_insert(sent);
                        tally.last_sent = Some(sent);
                        let answer = try_exchange(addr, raw);
                        tally.slowest = tally.slowest.max(sent.elapsed());
                        let status = answer.as_ref().map_or(NO_ANSWER, |a| a.status);
                        *tally.statuses.entry(status).or_insert(0) += 1;
                        match answer {
                            None => break,
                            Some(answer) if (200..300).contains(&answer.status) => {
                                match measure(&answer) {
                                    Some(units) => tally.admitted_units += units,
                                    None => tally.unmeasured += 1,
                                }
                            }
                            Some(answer) if answer.status == 429 => {
                                if answer.header("retry-after").is_none() {
                                    tally.refusals_without_retry_after += 1;
                                }
                                std::thread::sleep(RETRY_PAUSE);
                            }
                            Some(_) => {}
                        }
                    }
                    tally
                });
                (node, thread)
            })
            .collect();
        RateLoad {
            stop,
            threads,
            nodes,
        }
    }

    /// Stops the clients (each finishes the request it is on); the tallies by node.
    pub fn finish(self) -> Vec<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        let mut by_node = vec![Tally::default(); self.nodes];
        for (node, thread) in self.threads {
            by_node[node].merge(&thread.join().expect("a client thread panicked"));
        }
        by_node
    }
}

/// One request on a new connection, its whole answer read; `None` when the connection failed
/// or closed unanswered.
fn try_exchange(addr: std::net::SocketAddr, raw: &[u8]) -> Option<Response> {
    let mut client = Client::try_connect(addr).ok()?;
    client.try_send(raw).ok()?;
    client.try_read_final_response().ok()
}

/// The script calls (`EVALSHA` and `EVAL`) `redis` has run since it started, from
/// `INFO commandstats`.
pub fn redis_script_calls(redis: &RedisServer) -> u64 {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| {
            let calls = line.split(':').nth(1)?.split(',').next()?;
            calls.strip_prefix("calls=")?.parse::<u64>().ok()
        })
        .sum()
}

/// Each node's `credentialflow_cluster_round_trips_total` now.
pub fn round_trips(fleet: &ClusterFleet) -> Vec<f64> {
    (0..fleet.nodes.len())
        .map(|i| {
            fleet
                .metric(i, "credentialflow_cluster_round_trips_total")
                .expect("a node in fleet mode shows its round trips")
        })
        .collect()
}
