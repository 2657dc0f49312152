//! Fleet-wide rates against a real, private `redis-server`: three nodes (three `Link`s, each
//! with a `RateSync`) in one process, each driving its hot path as the gateway does (the
//! local GCRA check at `FleetRates::local_gcra`, then `FleetRates::take`), and the fleet's
//! admitted total compared with the documented bound
//! `burst + rate x W + N x S`, `S = max(1, ceil(rate x sync_interval))`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{wait_until, WAIT};
use credentialflow::cluster::{
    FleetDecision, FleetRates, Link, LinkSettings, RateKind, RateSync, RedisTarget,
};
use credentialflow::limits::{gcra_per_minute, gcra_per_second, Gcra};

const TICK: Duration = Duration::from_millis(100);
const NODES: [&str; 3] = ["edge-a", "edge-b", "edge-c"];

/// One gateway's cluster side: its fleet rates and the link keeping them granted.
struct Node {
    rates: Arc<FleetRates>,
    link: Link,
}

impl Node {
    fn start(url: &str, name: &str) -> Arc<Node> {
        let rates = FleetRates::new(1000, TICK);
        let sync = RateSync::new(Arc::clone(&rates), name).unwrap();
        let link = Link::start(
            LinkSettings {
                target: RedisTarget::parse(url).unwrap(),
                node: name.to_string(),
                tick: TICK,
            },
            vec![Box::new(sync)],
        )
        .unwrap();
        Arc::new(Node { rates, link })
    }
}

fn fleet(redis: &RedisServer) -> Vec<Arc<Node>> {
    let nodes: Vec<Arc<Node>> = NODES
        .iter()
        .map(|name| Node::start(&redis.url(), name))
        .collect();
    // Every node counted in the heartbeat set, so the degraded share is known.
    assert!(wait_until(WAIT, || nodes.iter().all(|n| n
        .link
        .status()
        .live_nodes()
        == 3)));
    nodes
}

/// One rate under test: which, for whom, its rate, and the units each request asks.
#[derive(Clone, Copy)]
struct Rate {
    kind: RateKind,
    scope: &'static str,
    gcra: Gcra,
    /// Request `i` asks `1 + i % weights` units (1 for request rates).
    weights: u64,
}

/// What one node's driver counted.
#[derive(Default)]
struct Counters {
    admitted: AtomicU64,
    /// Units the fleet admitted (the rest were admitted by the local check alone).
    fleet_admitted: AtomicU64,
    not_consulted: AtomicU64,
}

/// A node's request traffic: one thread offering about 1000 requests a second (far above
/// any rate under test), each checked as the gateway checks it.
struct Driver {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: JoinHandle<()>,
}

impl Driver {
    fn start(node: &Arc<Node>, rate: Rate, epoch: Instant) -> Driver {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let thread = {
            let (node, stop, counters) =
                (Arc::clone(node), Arc::clone(&stop), Arc::clone(&counters));
            std::thread::spawn(move || {
                // This node's local limiter state for the rate (the gateway's table entry).
                let tat = AtomicU64::new(0);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let n = 1 + i % rate.weights;
                    i += 1;
                    // Offset by a second so the GCRA's clock never starts at 0.
                    let now = epoch.elapsed().as_nanos() as u64 + 1_000_000_000;
                    let local = node.rates.local_gcra(&rate.gcra);
                    if local.check_n(&tat, now, n).allowed {
                        match node.rates.take(rate.kind, rate.scope, &rate.gcra, n) {
                            FleetDecision::Admitted(_) => {
                                counters.admitted.fetch_add(n, Ordering::Relaxed);
                                counters.fleet_admitted.fetch_add(n, Ordering::Relaxed);
                            }
                            FleetDecision::NotConsulted => {
                                counters.admitted.fetch_add(n, Ordering::Relaxed);
                                counters.not_consulted.fetch_add(1, Ordering::Relaxed);
                            }
                            FleetDecision::Refused(_) => local.adjust(&tat, now, -(n as i64)),
                        }
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        Driver {
            stop,
            counters,
            thread,
        }
    }

    /// `(units admitted, units the fleet admitted, requests not consulted)` so far.
    fn counts(&self) -> (u64, u64, u64) {
        (
            self.counters.admitted.load(Ordering::Relaxed),
            self.counters.fleet_admitted.load(Ordering::Relaxed),
            self.counters.not_consulted.load(Ordering::Relaxed),
        )
    }

    /// Stops the traffic; returns `(units admitted, requests not consulted)`.
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        (
            self.counters.admitted.load(Ordering::Relaxed),
            self.counters.not_consulted.load(Ordering::Relaxed),
        )
    }
}

/// The units a rate hands out per second.
fn per_second(gcra: &Gcra) -> f64 {
    1e9 / gcra.emission_interval_ns() as f64
}

/// `S`: one sync interval's worth of the rate, at least one unit.
fn sync_worth(gcra: &Gcra) -> u64 {
    (TICK.as_nanos() as u64)
        .div_ceil(gcra.emission_interval_ns())
        .max(1)
}

/// Drives `rate` on `nodes` for `window`; returns each node's admitted units and the window
/// as measured (from the first request to the last).
fn drive(nodes: &[Arc<Node>], rate: Rate, window: Duration) -> (Vec<u64>, Duration) {
    let epoch = Instant::now();
    let drivers: Vec<Driver> = nodes
        .iter()
        .map(|n| Driver::start(n, rate, epoch))
        .collect();
    std::thread::sleep(window);
    let admitted: Vec<u64> = drivers
        .into_iter()
        .map(|d| {
            let (admitted, not_consulted) = d.stop();
            assert_eq!(
                not_consulted, 0,
                "Redis was up: the fleet decided every request"
            );
            admitted
        })
        .collect();
    (admitted, epoch.elapsed())
}

/// Drives `rate` on three nodes for 5 s and checks the fleet's total against the bound.
fn fleet_total_within_bound(rate: Rate, label: &str) {
    let redis = RedisServer::start();
    let nodes = fleet(&redis);
    let (admitted, window) = drive(&nodes, rate, Duration::from_secs(5));
    let total: u64 = admitted.iter().sum();
    let burst = rate.gcra.burst() as f64;
    let limit = burst + per_second(&rate.gcra) * window.as_secs_f64();
    let bound = limit + (nodes.len() as u64 * sync_worth(&rate.gcra)) as f64;
    println!(
        "{label}: admitted {total} over {window:?} on 3 nodes {admitted:?}; limit burst + rate \
         x W = {limit:.1}, bound (+ N x S) = {bound:.1}, {:.1}% of the limit",
        total as f64 * 100.0 / limit
    );
    assert!(total as f64 <= bound, "{total} > {bound:.1}");
    let nominal = burst + per_second(&rate.gcra) * 5.0;
    assert!(
        total as f64 >= 0.85 * nominal,
        "{total} below 85% of {nominal:.1}"
    );
    for (node, &count) in admitted.iter().enumerate() {
        assert!(count > 0, "node {node} admitted nothing: {admitted:?}");
    }
}

#[test]
fn three_nodes_share_a_keys_rps_within_the_bound() {
    fleet_total_within_bound(
        Rate {
            kind: RateKind::KeyRps,
            scope: "key-1",
            gcra: gcra_per_second(20.0, 0).unwrap(),
            weights: 1,
        },
        "rps 20",
    );
}

#[test]
fn three_nodes_share_a_teams_rpm_within_the_bound() {
    fleet_total_within_bound(
        Rate {
            kind: RateKind::TeamRpm,
            scope: "research",
            gcra: gcra_per_minute(600).unwrap(),
            weights: 1,
        },
        "rpm 600",
    );
}

#[test]
fn three_nodes_share_a_keys_tpm_by_token_weight_within_the_bound() {
    fleet_total_within_bound(
        Rate {
            kind: RateKind::KeyTpm,
            scope: "key-1",
            gcra: gcra_per_minute(6000).unwrap(),
            weights: 10,
        },
        "tpm 6000 (1 to 10 tokens a request)",
    );
}

#[test]
fn a_node_alone_gets_the_whole_rate() {
    let redis = RedisServer::start();
    let nodes = fleet(&redis);
    let rate = Rate {
        kind: RateKind::KeyRps,
        scope: "key-1",
        gcra: gcra_per_second(20.0, 0).unwrap(),
        weights: 1,
    };
    let (admitted, window) = drive(&nodes[..1], rate, Duration::from_secs(3));
    let limit = 20.0 + 20.0 * window.as_secs_f64();
    println!("one busy node of 3: admitted {admitted:?} over {window:?}, limit {limit:.1}");
    assert!(admitted[0] as f64 <= limit + 2.0);
    assert!(admitted[0] as f64 >= 0.85 * (20.0 + 20.0 * 3.0));
}

#[test]
fn without_redis_every_node_enforces_its_share_and_comes_back_without_a_windfall() {
    let mut redis = RedisServer::start();
    let nodes = fleet(&redis);
    let rate = Rate {
        kind: RateKind::KeyRps,
        scope: "key-1",
        gcra: gcra_per_second(20.0, 0).unwrap(),
        weights: 1,
    };
    // Fleet mode first, so every node has a view of the bucket.
    let (before, _) = drive(&nodes, rate, Duration::from_secs(1));
    assert!(before.iter().all(|&n| n > 0), "{before:?}");

    // Requests go on through the outage and the restart.
    let epoch = Instant::now();
    let drivers: Vec<Driver> = nodes
        .iter()
        .map(|n| Driver::start(n, rate, epoch))
        .collect();
    let sum = |drivers: &[Driver]| {
        drivers
            .iter()
            .map(Driver::counts)
            .fold((0, 0, 0), |a, c| (a.0 + c.0, a.1 + c.1, a.2 + c.2))
    };
    redis.stop();
    assert!(wait_until(WAIT, || nodes
        .iter()
        .all(|n| n.rates.degraded())));
    for node in &nodes {
        assert!(matches!(
            node.rates.take(rate.kind, rate.scope, &rate.gcra, 1),
            FleetDecision::NotConsulted
        ));
        let share = node.rates.local_gcra(&rate.gcra);
        assert_eq!(
            share.emission_interval_ns(),
            rate.gcra.emission_interval_ns() * 3
        );
        assert_eq!(share.burst(), 6, "20 / 3 live nodes");
    }
    // Each node at its share: the fleet admits at most 3 x (6 + 20/3 x W) (the local state
    // may still be ahead from fleet mode, which only lowers it).
    let degraded_at = Instant::now();
    let (admitted_before, fleet_before, _) = sum(&drivers);
    std::thread::sleep(Duration::from_millis(1500));
    let (admitted, fleet_admitted, not_consulted) = sum(&drivers);
    let window = degraded_at.elapsed();
    let total = admitted - admitted_before;
    let local_bound = 3.0 * 6.0 + 20.0 * window.as_secs_f64();
    println!(
        "Redis down: the fleet admitted {total} locally over {window:?} (bound of the shares \
         {local_bound:.1})"
    );
    assert_eq!(fleet_admitted, fleet_before, "nothing asked the fleet");
    assert!(not_consulted > 0);
    assert!(total as f64 <= local_bound + 3.0, "{total}");
    assert!(
        total as f64 >= 0.5 * 20.0 * 1.5,
        "{total}: the shares were used"
    );

    // Redis comes back empty: the bucket is rebuilt from the nodes' last view, not full.
    let last_level = nodes
        .iter()
        .filter_map(|n| n.rates.share(rate.kind, rate.scope))
        .filter_map(|s| s.last_level())
        .fold(0.0f64, f64::max);
    redis.start_again();
    let restarted = Instant::now();
    assert!(wait_until(WAIT, || nodes
        .iter()
        .any(|n| !n.rates.degraded())));
    // The first answer rebuilt the bucket: from here the fleet may hand out the rebuilt
    // level, the refill, and each node's borrow.
    let first_back = Instant::now();
    let (_, fleet_at_first, _) = sum(&drivers);
    assert!(wait_until(WAIT, || nodes
        .iter()
        .all(|n| !n.rates.degraded())));
    let recovered = restarted.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let (_, fleet_after, _) = sum(&drivers);
    // One tick of slack: the bucket was rebuilt just before the first node saw the answer.
    let since = first_back.elapsed() + TICK;
    for driver in drivers {
        driver.stop();
    }
    let total = fleet_after - fleet_at_first;
    let bound = last_level + 20.0 * since.as_secs_f64() + 3.0 * sync_worth(&rate.gcra) as f64;
    let windfall = 20.0 + 20.0 * since.as_secs_f64();
    println!(
        "Redis restarted empty: first node back after {:?}, all after {recovered:?}; the \
         fleet admitted {total} in the {since:?} since the first answer: bound {bound:.1} \
         (rebuilt from the last level seen, {last_level:.2}); a full bucket would hand out \
         {windfall:.1}",
        first_back - restarted
    );
    assert!(total as f64 <= bound, "{total} > {bound:.1}");
    assert!(
        total as f64 >= 0.85 * 20.0 * 2.0 - 6.0,
        "{total}: back to the rate"
    );
    assert!(recovered <= Duration::from_secs(5), "{recovered:?}");
}

fn rate_keys(redis: &RedisServer) -> usize {
    redis
        .cli(&["KEYS", "cf:r*"])
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

#[test]
fn redis_keys_scale_with_active_scopes_and_expire_when_idle() {
    let redis = RedisServer::start();
    let node = Node::start(&redis.url(), "edge-a");
    let gcra = gcra_per_second(20.0, 0).unwrap();
    let touch = |scopes: std::ops::Range<u32>| {
        for scope in scopes {
            let scope = format!("key-{scope}");
            drop(node.rates.take(RateKind::KeyRps, &scope, &gcra, 1));
        }
    };
    // 40 scopes in use: a bucket and a busy set each.
    assert!(wait_until(WAIT, || {
        touch(0..40);
        std::thread::sleep(TICK);
        rate_keys(&redis) == 80
    }));
    // Only 5 stay in use: the 35 others expire (their buckets are nearly full, so within
    // three ticks plus the refill of a few units) and the node forgets them.
    assert!(
        wait_until(WAIT, || {
            touch(0..5);
            std::thread::sleep(TICK);
            rate_keys(&redis) == 10
        }),
        "{} rate keys",
        rate_keys(&redis)
    );
    assert_eq!(node.rates.tracked(), 5);
    assert!(
        wait_until(WAIT, || rate_keys(&redis) == 0),
        "all idle: nothing left in Redis"
    );
    assert_eq!(node.rates.tracked(), 0);
}

#[test]
fn a_stopped_node_gives_its_allowance_back() {
    let redis = RedisServer::start();
    let node = Node::start(&redis.url(), "edge-a");
    // 6 a minute: a bucket of 6 that refills one unit per 10 s, so a give-back shows.
    let gcra = gcra_per_minute(6).unwrap();
    // One request on credit: the next tick charges it and asks for it plus one spare.
    drop(node.rates.take(RateKind::KeyRpm, "key-1", &gcra, 1));
    let share = node.rates.share(RateKind::KeyRpm, "key-1").unwrap();
    assert!(wait_until(WAIT, || share.allowance() > 0));
    let level = || -> f64 {
        redis
            .cli(&["HGET", "cf:rate:krpm:key-1", "level"])
            .parse()
            .unwrap()
    };
    let held = share.allowance() as f64;
    let before = level();
    let Node { link, .. } = Arc::try_unwrap(node).ok().unwrap();
    link.stop();
    let after = level();
    println!("stop: level {before} with {held} held on the node, {after} after the farewell");
    assert!(
        after >= before + held && after < before + held + 0.5,
        "level {before} -> {after}, {held} held"
    );
}
