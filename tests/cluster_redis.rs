//! The Redis building blocks of fleet mode against a real, private `redis-server`: the
//! cluster link (one pipelined round trip per tick, script reload, reconnect, degraded flag)
//! and fleet concurrency leases across three nodes in one process.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{wait_until, WAIT};
use credentialflow::cluster::{
    lease_ttl, FleetLeases, LeasePermit, LeaseSync, Link, LinkSettings, RedisTarget,
};

const TICK: Duration = Duration::from_millis(100);

/// One gateway's cluster side: its allowances and the link keeping them backed.
struct Node {
    leases: Arc<FleetLeases>,
    link: Link,
}

impl Node {
    fn start(url: &str, name: &str) -> Node {
        let leases = FleetLeases::new(1000);
        let sync = LeaseSync::new(Arc::clone(&leases), name, TICK).unwrap();
        let link = Link::start(
            LinkSettings {
                target: RedisTarget::parse(url).unwrap(),
                node: name.to_string(),
                tick: TICK,
            },
            vec![Box::new(sync)],
        )
        .unwrap();
        Node { leases, link }
    }

    /// Takes `n` slots of `key`, retrying as the link obtains leases.
    fn take(&self, key: &str, limit: u32, n: usize) -> Vec<LeasePermit> {
        let mut permits = Vec::new();
        assert!(
            wait_until(WAIT, || {
                if let Some(permit) = self.leases.try_acquire(key, limit) {
                    permits.push(permit);
                }
                permits.len() >= n
            }),
            "took only {} of {n} slots",
            permits.len()
        );
        permits
    }
}

fn lease_count(redis: &RedisServer, key: &str) -> usize {
    redis
        .cli(&["ZCARD", &format!("cf:lease:{key}")])
        .parse()
        .unwrap()
}

fn lease_members(redis: &RedisServer, key: &str) -> Vec<String> {
    redis
        .cli(&["ZRANGE", &format!("cf:lease:{key}"), "0", "-1"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn three_nodes_never_hold_more_than_the_limit_together() {
    const LIMIT: u32 = 4;
    let redis = RedisServer::start();
    let nodes: Vec<Arc<Node>> = ["edge-a", "edge-b", "edge-c"]
        .iter()
        .map(|name| Arc::new(Node::start(&redis.url(), name)))
        .collect();
    let in_flight = Arc::new(AtomicI64::new(0));
    let peak = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let admitted: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let started = Instant::now();
    let mut workers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for _ in 0..3 {
            let (node, in_flight, peak, stop, admitted) = (
                Arc::clone(node),
                Arc::clone(&in_flight),
                Arc::clone(&peak),
                Arc::clone(&stop),
                Arc::clone(&admitted[n]),
            );
            workers.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // Two keys: the second proves calls for many keys share one round trip.
                    let _other = node.leases.try_acquire("key-b", 100);
                    match node.leases.try_acquire("key-a", LIMIT) {
                        Some(permit) => {
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            admitted.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(5));
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            drop(permit);
                        }
                        None => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            }));
        }
    }
    let mut redis_peak = 0;
    while started.elapsed() < Duration::from_secs(3) {
        redis_peak = redis_peak.max(lease_count(&redis, "key-a"));
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    let elapsed = started.elapsed();
    let admitted: Vec<u64> = admitted.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let round_trips: Vec<u64> = nodes
        .iter()
        .map(|n| n.link.status().round_trips())
        .collect();
    println!(
        "limit {LIMIT}: peak in flight {}, peak leases in Redis {redis_peak}, admitted per \
         node {admitted:?} in {elapsed:?}, round trips per node {round_trips:?}",
        peak.load(Ordering::SeqCst)
    );
    assert!(peak.load(Ordering::SeqCst) <= i64::from(LIMIT));
    assert!(peak.load(Ordering::SeqCst) >= 2, "the fleet used its slots");
    assert!(redis_peak <= LIMIT as usize);
    // Every node is busy all along, so each holds at least floor(4 / 3) = 1 of the 4 slots
    // once the shares settle (a few ticks): a quarter of the fleet's capacity. Asking for a
    // tenth of the fleet's admissions leaves 2.5x room for scheduling noise, and as a ratio
    // it does not depend on how fast the machine is; a starved node admits almost nothing.
    let total: u64 = admitted.iter().sum();
    for (node, &count) in admitted.iter().enumerate() {
        assert!(
            count * 10 >= total,
            "node {node} admitted {count} of {total}: {admitted:?}"
        );
    }
    let ticks = elapsed.as_millis() as u64 / TICK.as_millis() as u64;
    for (status, trips) in nodes.iter().map(|n| n.link.status()).zip(&round_trips) {
        assert!(!status.degraded());
        assert_eq!(status.live_nodes(), 3);
        assert!(
            *trips <= ticks + 2,
            "one round trip per tick for both keys: {trips} in {ticks} ticks"
        );
        assert!(
            *trips >= ticks / 3,
            "the link ticked: {trips} in {ticks} ticks"
        );
    }
}

/// Request traffic on one node and key: workers that each hold a slot for 5 ms whenever
/// they get one, counting admissions and the fleet's requests in flight.
struct Load {
    stop: Arc<AtomicBool>,
    admitted: Arc<AtomicU64>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// The fleet's requests in flight on one key, and their peak.
#[derive(Default)]
struct InFlight {
    now: AtomicI64,
    peak: AtomicI64,
}

impl Load {
    fn start(node: &Arc<Node>, key: &'static str, limit: u32, fleet: &Arc<InFlight>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let admitted = Arc::new(AtomicU64::new(0));
        let workers = (0..4)
            .map(|_| {
                let (node, fleet, stop, admitted) = (
                    Arc::clone(node),
                    Arc::clone(fleet),
                    Arc::clone(&stop),
                    Arc::clone(&admitted),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match node.leases.try_acquire(key, limit) {
                            Some(permit) => {
                                let now = fleet.now.fetch_add(1, Ordering::SeqCst) + 1;
                                fleet.peak.fetch_max(now, Ordering::SeqCst);
                                admitted.fetch_add(1, Ordering::Relaxed);
                                std::thread::sleep(Duration::from_millis(5));
                                fleet.now.fetch_sub(1, Ordering::SeqCst);
                                drop(permit);
                            }
                            None => std::thread::sleep(Duration::from_millis(2)),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            admitted,
            workers,
        }
    }

    fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.join().unwrap();
        }
    }
}

/// Admissions of each load over `window`, watching the fleet's leases in Redis meanwhile.
fn admitted_over(loads: &[&Load], window: Duration, redis: &RedisServer, key: &str) -> Vec<u64> {
    let before: Vec<u64> = loads.iter().map(|l| l.admitted()).collect();
    let started = Instant::now();
    while started.elapsed() < window {
        assert!(
            lease_count(redis, key) <= 4,
            "the fleet holds at most the limit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    loads
        .iter()
        .zip(before)
        .map(|(l, b)| l.admitted() - b)
        .collect()
}

#[test]
fn busy_nodes_share_the_limit_and_a_node_busy_alone_uses_all_of_it() {
    const LIMIT: u32 = 4;
    const KEY: &str = "key";
    let redis = RedisServer::start();
    // Node names decide who gets the remainder: with three busy, edge-a's share is 2.
    let [a, b, c] =
        ["edge-a", "edge-b", "edge-c"].map(|name| Arc::new(Node::start(&redis.url(), name)));
    let fleet = Arc::new(InFlight::default());
    let held = |node: &Node| node.leases.holdings(KEY).map_or(0, |(held, _)| held);

    // Two busy nodes: 2 slots each, however the first ticks handed them out.
    let load_a = Load::start(&a, KEY, LIMIT, &fleet);
    let load_b = Load::start(&b, KEY, LIMIT, &fleet);
    let started = Instant::now();
    assert!(
        wait_until(WAIT, || held(&a) == 2 && held(&b) == 2),
        "a holds {}, b {}",
        held(&a),
        held(&b)
    );
    let settled = started.elapsed();
    let two = admitted_over(&[&load_a, &load_b], Duration::from_secs(1), &redis, KEY);
    let total: u64 = two.iter().sum();
    println!("two busy: 2 slots each {settled:?} after start; admitted over 1 s {two:?}");
    // Equal shares: each half of the admissions. A third to two thirds leaves room for
    // scheduling noise while ruling out 3 + 1 (a quarter) or worse.
    for &count in &two {
        assert!(count * 3 >= total && count * 3 <= total * 2, "{two:?}");
    }

    // A third node joins: its share (1) comes from b's spare slot within a few ticks.
    let joined = Instant::now();
    let load_c = Load::start(&c, KEY, LIMIT, &fleet);
    assert!(
        wait_until(WAIT, || load_c.admitted() > 0),
        "c admitted nothing"
    );
    let first = joined.elapsed();
    assert!(
        wait_until(WAIT, || held(&a) == 2 && held(&b) == 1 && held(&c) == 1),
        "a {}, b {}, c {}",
        held(&a),
        held(&b),
        held(&c)
    );
    let shared = joined.elapsed();
    let three = admitted_over(
        &[&load_a, &load_b, &load_c],
        Duration::from_secs(1),
        &redis,
        KEY,
    );
    let total: u64 = three.iter().sum();
    println!(
        "c joined: first admission after {first:?}, shares 2/1/1 after {shared:?} \
         ({} ticks); admitted over 1 s {three:?}",
        shared.as_millis() / TICK.as_millis()
    );
    // Expected 1/2, 1/4, 1/4 of the admissions; an eighth is the floor that still proves
    // every node got its slot, with room for scheduling noise.
    for &count in &three {
        assert!(count * 8 >= total, "{three:?}");
    }
    // "A few ticks": the protocol needs about three (c is refused and waits, b stops using
    // its second slot, b releases it and c takes it); ten leave room for late ticks.
    assert!(shared <= TICK * 10, "c got its share after {shared:?}");

    // a and b go idle: c, busy alone, may use the whole limit.
    load_a.stop();
    load_b.stop();
    let idle = Instant::now();
    assert!(
        wait_until(WAIT, || held(&c) == LIMIT),
        "c holds {}",
        held(&c)
    );
    let alone = idle.elapsed();
    // The idle nodes give their slots back at their next tick (no spare while c waits), and
    // c takes them at its next; ten ticks leave room for late ticks.
    assert!(alone <= TICK * 10, "c held all after {alone:?}");
    let before = fleet.peak.swap(0, Ordering::SeqCst);
    assert!(
        wait_until(WAIT, || fleet.peak.load(Ordering::SeqCst)
            == i64::from(LIMIT)),
        "c alone ran {} at once",
        fleet.peak.load(Ordering::SeqCst)
    );
    println!("a and b idle: c held all {LIMIT} after {alone:?}");
    load_c.stop();
    assert!(before <= i64::from(LIMIT), "peak in flight {before}");
    assert!(fleet.peak.load(Ordering::SeqCst) <= i64::from(LIMIT));
    assert_eq!(held(&a), 0, "an idle node gives its slots back");
    assert_eq!(held(&b), 0);
}

#[test]
fn a_dead_nodes_leases_expire_and_another_node_takes_them() {
    const LIMIT: u32 = 4;
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "edge-a");
    let b = Node::start(&redis.url(), "edge-b");
    let held_by_a = a.take("key", LIMIT, LIMIT as usize);
    std::thread::sleep(TICK * 3);
    assert!(
        b.leases.try_acquire("key", LIMIT).is_none(),
        "the fleet's slots are all on a"
    );
    assert_eq!(lease_count(&redis, "key"), LIMIT as usize);

    // kill -9: a stops renewing without releasing anything.
    let killed = Instant::now();
    a.link.abandon();
    let _b_permits = b.take("key", LIMIT, LIMIT as usize);
    let took = killed.elapsed();
    let bound = lease_ttl(TICK) + TICK;
    println!("b held all {LIMIT} slots {took:?} after a died (lease TTL + one tick = {bound:?})");
    // Scheduling slack for a loaded machine: the lease script itself grants within a tick.
    assert!(took <= bound + Duration::from_millis(600), "{took:?}");
    assert!(lease_members(&redis, "key")
        .iter()
        .all(|m| m.starts_with("edge-b:")));
    drop(held_by_a);
}

#[test]
fn a_stopped_node_gives_its_leases_back_at_once() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "edge-a");
    let permits = a.take("key", 2, 2);
    drop(permits);
    a.link.stop();
    assert_eq!(lease_count(&redis, "key"), 0, "released on the way out");
    let nodes = redis.cli(&["ZRANGE", "cf:nodes", "0", "-1"]);
    assert_eq!(nodes, "edge-a", "the heartbeat is left to expire");
}

#[test]
fn after_redis_loses_its_memory_the_nodes_re_register_their_live_leases() {
    const LIMIT: u32 = 4;
    let mut redis = RedisServer::start();
    let a = Node::start(&redis.url(), "edge-a");
    let b = Node::start(&redis.url(), "edge-b");
    let _a_permits = a.take("key", LIMIT, 2);
    let _b_permits = b.take("key", LIMIT, 1);
    assert!(wait_until(WAIT, || a.link.status().live_nodes() == 2
        && b.link.status().live_nodes() == 2));

    redis.stop();
    assert!(wait_until(WAIT, || a.link.status().degraded()
        && b.link.status().degraded()));
    // Past the lease TTL the leases may have lapsed: each node falls back to its share of
    // the limit over the two nodes it last knew.
    assert!(wait_until(WAIT, || a.leases.holdings("key")
        == Some((2, 2))
        && b.leases.holdings("key") == Some((2, 1))));

    redis.start_again();
    let restarted = Instant::now();
    assert!(wait_until(WAIT, || !a.link.status().degraded()
        && !b.link.status().degraded()));
    let recovered = restarted.elapsed();
    assert!(wait_until(WAIT, || {
        let members = lease_members(&redis, "key");
        members.iter().filter(|m| m.starts_with("edge-a:")).count() >= 2
            && members.iter().filter(|m| m.starts_with("edge-b:")).count() >= 1
            && members.len() <= LIMIT as usize
    }));
    let (a_held, a_used) = a.leases.holdings("key").unwrap();
    let (b_held, b_used) = b.leases.holdings("key").unwrap();
    println!(
        "back in fleet mode {recovered:?} after Redis restarted; a holds {a_held}, b {b_held}"
    );
    assert!(a_held >= a_used && b_held >= b_used);
    assert!(a_held + b_held <= LIMIT);
    assert!(a.link.status().connects() >= 2, "a reconnected");
}

#[test]
fn flushed_scripts_are_loaded_again_on_the_same_connection() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "edge-a");
    let _permit = a.take("key", 3, 1);
    assert!(wait_until(WAIT, || a.link.status().round_trips() >= 2));
    assert_eq!(a.link.status().errors(), 0);
    redis.cli(&["SCRIPT", "FLUSH"]);
    assert!(
        wait_until(WAIT, || a.link.status().errors() > 0),
        "NOSCRIPT was seen"
    );
    let errors = a.link.status().errors();
    let trips = a.link.status().round_trips();
    assert!(wait_until(WAIT, || a.link.status().round_trips() >= trips + 5));
    assert_eq!(
        a.link.status().errors(),
        errors,
        "the reloaded scripts run cleanly"
    );
    assert_eq!(a.link.status().connects(), 1, "no reconnect was needed");
    // Still renewed: the lease outlived several TTLs.
    std::thread::sleep(lease_ttl(TICK) * 2);
    assert!(lease_members(&redis, "key")
        .iter()
        .any(|m| m.starts_with("edge-a:")));
}

/// Log lines the gateway wrote, for tests that check what a log may not contain.
fn captured_log() -> &'static Mutex<Vec<String>> {
    static LINES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    struct Capture;
    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            captured_log()
                .lock()
                .unwrap()
                .push(record.args().to_string());
        }
        fn flush(&self) {}
    }
    static LOGGER: Capture = Capture;
    let lines = LINES.get_or_init(|| Mutex::new(Vec::new()));
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
    lines
}

#[test]
fn an_unreachable_redis_degrades_without_blocking_or_leaking_the_password() {
    let log = captured_log();
    let url = "redis://cf:S3CRET-PW@127.0.0.1:1/0";
    let a = Node::start(url, "edge-a");
    assert!(wait_until(WAIT, || a.link.status().errors() >= 2));
    assert!(a.link.status().degraded());
    // The hot path answers at once, from its share (1 node known: the whole limit).
    assert!(wait_until(WAIT, || a
        .leases
        .holdings("key")
        .is_some_and(|(held, _)| held == 3)
        || a.leases.try_acquire("key", 3).is_some()));
    let started = Instant::now();
    for _ in 0..10_000 {
        drop(a.leases.try_acquire("key", 3));
    }
    let per_call = started.elapsed() / 10_000;
    println!("try_acquire while Redis is down: {per_call:?} per call");
    assert!(per_call < Duration::from_millis(1));
    drop(a);
    let lines = log.lock().unwrap();
    assert!(
        lines.iter().all(|line| !line.contains("S3CRET-PW")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.contains("redis://***@127.0.0.1:1/0")),
        "{lines:?}"
    );
}
