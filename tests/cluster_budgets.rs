//! Fleet budgets against a real, private `redis-server`: three nodes (three `Link`s, each
//! with its own `BudgetTable` and `BudgetSync`) in one process spending on one budget at
//! once, through the same `BudgetTable::try_reserve` / `settle` the request path calls.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::redis::RedisServer;
use common::{wait_until, WAIT};
use credentialflow::cluster::{BudgetSync, FleetBudgets, Link, LinkSettings, RedisTarget};
use credentialflow::limits::budget::{usd_to_nano, BudgetLimit, BudgetTable, Period};

const TICK: Duration = Duration::from_millis(100);
const SCOPE: &str = "key:fleet";
/// The Redis hash of [`SCOPE`]'s `total` budget.
const HASH: &str = "cf:budget:key:fleet:0";
/// How long nothing may be admitted anywhere before the fleet counts as refusing.
const QUIET: Duration = Duration::from_millis(1_500);
const NODES: u64 = 3;

/// One gateway's budget side: its local table, with fleet budgets kept by a link.
struct Node {
    table: Arc<BudgetTable>,
    fleet: Arc<FleetBudgets>,
    link: Mutex<Option<Link>>,
}

impl Node {
    fn start(url: &str, name: &str) -> Arc<Node> {
        let table = Arc::new(BudgetTable::new());
        let fleet = FleetBudgets::new(100);
        assert!(table.set_fleet(Arc::clone(&fleet)).is_ok());
        let sync = BudgetSync::new(Arc::clone(&fleet), name, TICK).unwrap();
        let link = Link::start(
            LinkSettings {
                target: RedisTarget::parse(url).unwrap(),
                node: name.to_string(),
                tick: TICK,
            },
            vec![Box::new(sync)],
        )
        .unwrap();
        Arc::new(Node {
            table,
            fleet,
            link: Mutex::new(Some(link)),
        })
    }

    fn degraded(&self) -> bool {
        self.link
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|link| link.status().degraded())
    }

    /// Ends the link as `kill -9` would: nothing is given back.
    fn vanish(&self) {
        if let Some(link) = self.link.lock().unwrap().take() {
            link.abandon();
        }
    }
}

fn three(redis: &RedisServer) -> Vec<Arc<Node>> {
    ["edge-a", "edge-b", "edge-c"]
        .iter()
        .map(|name| Node::start(&redis.url(), name))
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What each request reserves and then really uses, and how long it runs.
#[derive(Debug, Clone, Copy)]
struct Request {
    reserve: (u64, u64),
    actual: (u64, u64),
    runs: Duration,
}

/// What one load settled.
#[derive(Default)]
struct Spent {
    tokens: AtomicU64,
    nano: AtomicU64,
    admitted: AtomicU64,
}

/// Two workers on one node sending requests on [`SCOPE`] back to back (a refused one is
/// tried again 5 ms later), settling each with its actual usage.
struct Load {
    stop: Arc<AtomicBool>,
    spent: Arc<Spent>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(node: &Arc<Node>, limit: BudgetLimit, request: Request) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let spent = Arc::new(Spent::default());
        let workers = (0..2)
            .map(|_| {
                let (node, stop, spent) = (Arc::clone(node), Arc::clone(&stop), Arc::clone(&spent));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let (tokens, nano) = request.reserve;
                        match node
                            .table
                            .try_reserve(SCOPE, &limit, now_ms(), tokens, nano)
                        {
                            Ok(reservation) => {
                                std::thread::sleep(request.runs);
                                let (tokens, nano) = request.actual;
                                node.table.settle(reservation, now_ms(), tokens, nano);
                                spent.tokens.fetch_add(tokens, Ordering::SeqCst);
                                spent.nano.fetch_add(nano, Ordering::SeqCst);
                                spent.admitted.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(_) => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            spent,
            workers,
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.join().unwrap();
        }
    }
}

/// `(tokens, nano-USD, requests)` the loads settled together.
fn total(loads: &[Load]) -> (u64, u64, u64) {
    loads.iter().fold((0, 0, 0), |(t, n, a), load| {
        (
            t + load.spent.tokens.load(Ordering::SeqCst),
            n + load.spent.nano.load(Ordering::SeqCst),
            a + load.spent.admitted.load(Ordering::SeqCst),
        )
    })
}

/// Waits until no load has had a request admitted for [`QUIET`]; false after 30 s.
fn wait_until_refused(loads: &[Load]) -> bool {
    let started = Instant::now();
    let mut last = total(loads).2;
    let mut since = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
        let now = total(loads).2;
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= QUIET {
            return true;
        }
    }
    false
}

fn hget(redis: &RedisServer, field: &str) -> Option<u64> {
    redis.cli(&["HGET", HASH, field]).parse().ok()
}

/// Three nodes spend on one budget until the fleet refuses; returns what they settled.
fn spend_to_the_end(limit: BudgetLimit, request: Request) -> (RedisServer, (u64, u64, u64)) {
    let redis = RedisServer::start();
    let nodes = three(&redis);
    let loads: Vec<Load> = nodes
        .iter()
        .map(|node| Load::start(node, limit, request))
        .collect();
    assert!(
        wait_until_refused(&loads),
        "the fleet never stopped admitting"
    );
    let spent = total(&loads);
    for load in loads {
        load.stop();
    }
    // Nothing lost, nothing counted twice: Redis ends with exactly what was settled.
    assert!(
        wait_until(WAIT, || hget(&redis, "st") == Some(spent.0)
            && hget(&redis, "sn") == Some(spent.1)),
        "Redis counts {:?} tokens and {:?} nano-USD, the nodes settled {spent:?}",
        hget(&redis, "st"),
        hget(&redis, "sn"),
    );
    for node in &nodes {
        assert!(!node.degraded());
    }
    (redis, spent)
}

#[test]
fn three_nodes_spend_a_dollar_budget_to_within_one_request_each() {
    let budget = usd_to_nano(2.0);
    let one = usd_to_nano(0.01);
    let limit = BudgetLimit {
        tokens: None,
        nano_usd: Some(budget),
        period: Period::Total,
    };
    let request = Request {
        reserve: (0, one),
        actual: (0, one),
        runs: Duration::from_millis(10),
    };
    let (_redis, (_, spent, admitted)) = spend_to_the_end(limit, request);
    let over = spent as i64 - budget as i64;
    println!(
        "$ budget: {admitted} requests spent ${:.4} of ${:.4}: overshoot ${:.4} = {:.1} \
         requests (bound {NODES} x ${:.4})",
        spent as f64 / 1e9,
        budget as f64 / 1e9,
        over as f64 / 1e9,
        over as f64 / one as f64,
        one as f64 / 1e9
    );
    assert!(spent <= budget + NODES * one, "overshoot past the bound");
    assert!(
        spent + NODES * one >= budget,
        "the fleet stopped far below the budget"
    );
}

#[test]
fn three_nodes_spend_a_token_budget_to_within_one_request_each() {
    let budget = 20_000;
    let one = 100;
    let limit = BudgetLimit {
        tokens: Some(budget),
        nano_usd: None,
        period: Period::Total,
    };
    let request = Request {
        reserve: (one, 0),
        actual: (one, 0),
        runs: Duration::from_millis(10),
    };
    let (_redis, (spent, _, admitted)) = spend_to_the_end(limit, request);
    let over = spent as i64 - budget as i64;
    println!(
        "token budget: {admitted} requests spent {spent} of {budget} tokens: overshoot {over} \
         = {:.1} requests (bound {NODES} x {one})",
        over as f64 / one as f64
    );
    assert!(spent <= budget + NODES * one);
    assert!(spent + NODES * one >= budget);
}

#[test]
fn usage_below_the_reservation_goes_back_and_the_fleet_ends_near_the_budget() {
    // Each request reserves 500 tokens and uses 200. What it did not use goes back to the
    // node's allowance at settlement (the unit tests prove that step) and, in any case,
    // leaves the hold the node reports: were it kept anywhere, the fleet would stop near
    // 200 / 500 of the budget.
    let budget = 20_000;
    let (reserve, used) = (500, 200);
    let limit = BudgetLimit {
        tokens: Some(budget),
        nano_usd: None,
        period: Period::Total,
    };
    let request = Request {
        reserve: (reserve, 0),
        actual: (used, 0),
        runs: Duration::from_millis(10),
    };
    let (_redis, (spent, _, admitted)) = spend_to_the_end(limit, request);
    println!(
        "reserve {reserve}, use {used}: {admitted} requests spent {spent} of {budget} tokens \
         ({:+})",
        spent as i64 - budget as i64
    );
    assert!(spent <= budget + NODES * reserve);
    assert!(
        spent + NODES * reserve >= budget,
        "the unused reservations were not given back"
    );
}

/// Three nodes spending $2 in $0.01 requests of 50 ms each (about 120 requests a second).
fn dollar_load(nodes: &[Arc<Node>]) -> (BudgetLimit, u64, Vec<Load>) {
    let budget = usd_to_nano(2.0);
    let one = usd_to_nano(0.01);
    let limit = BudgetLimit {
        tokens: None,
        nano_usd: Some(budget),
        period: Period::Total,
    };
    let request = Request {
        reserve: (0, one),
        actual: (0, one),
        runs: Duration::from_millis(50),
    };
    let loads = nodes
        .iter()
        .map(|node| Load::start(node, limit, request))
        .collect();
    (limit, one, loads)
}

#[test]
fn with_redis_down_the_nodes_spend_only_their_degraded_shares() {
    let mut redis = RedisServer::start();
    let nodes = three(&redis);
    let (limit, one, loads) = dollar_load(&nodes);
    let budget = limit.nano_usd.unwrap();
    assert!(wait_until(WAIT, || total(&loads).1 >= budget * 3 / 10));
    redis.stop();
    let at_outage = total(&loads).1;
    assert!(wait_until(WAIT, || nodes.iter().all(|n| n.degraded())));
    assert!(wait_until_refused(&loads));
    let spent = total(&loads).1;
    for load in loads {
        load.stop();
    }
    let in_outage = spent - at_outage;
    println!(
        "Redis down at ${:.2} spent: the nodes spent ${:.2} more (remaining was ${:.2}); \
         fleet total ${:.4} of ${:.2}",
        at_outage as f64 / 1e9,
        in_outage as f64 / 1e9,
        (budget - at_outage) as f64 / 1e9,
        spent as f64 / 1e9,
        budget as f64 / 1e9
    );
    assert!(
        in_outage > 0,
        "the nodes went on admitting from their shares"
    );
    // The bound of `src/cluster/budgets.rs`: the holds plus what remained, plus one request
    // per node, plus the documented exception: the nodes' views are up to a tick apart, so
    // a grant of the last tick before the outage can be shared out twice. At this load a
    // node's grant is about one tick of its demand (~4 requests); under a loaded machine's
    // late ticks one such request has been seen, so the slack is one more per node.
    let slack = 2 * NODES * one;
    assert!(in_outage <= budget - at_outage + slack);
    assert!(spent <= budget + slack);
    assert!(nodes.iter().all(|n| n.degraded()));
}

#[test]
fn after_redis_restarts_empty_the_fleet_spend_is_rebuilt_from_the_nodes() {
    let mut redis = RedisServer::start();
    let nodes = three(&redis);
    let (limit, one, loads) = dollar_load(&nodes);
    let budget = limit.nano_usd.unwrap();
    assert!(wait_until(WAIT, || total(&loads).1 >= budget * 3 / 10));
    redis.stop();
    let at_restart = total(&loads).1;
    redis.start_again();
    assert!(wait_until(WAIT, || nodes.iter().all(|n| !n.degraded())));
    assert!(
        wait_until(WAIT, || hget(&redis, "sn").is_some_and(|s| s >= at_restart)),
        "Redis's fleet spend {:?} was not rebuilt to the ${at_restart} spent before",
        hget(&redis, "sn")
    );
    assert!(wait_until_refused(&loads));
    let spent = total(&loads).1;
    for load in loads {
        load.stop();
    }
    let rebuilt = hget(&redis, "sn");
    println!(
        "Redis restarted empty at ${:.2} spent: fleet total ${:.4} of ${:.2} (Redis counts \
         {rebuilt:?} nano-USD)",
        at_restart as f64 / 1e9,
        spent as f64 / 1e9,
        budget as f64 / 1e9
    );
    // A fresh budget would let the fleet spend at_restart + budget (1.3 x). What the
    // rebuild may miss is the other nodes' reports of the last tick before the restart.
    assert!(spent <= budget + NODES * one + budget / 10, "${spent}");
}

#[test]
fn the_fleet_starts_from_the_ledgers_spend() {
    let redis = RedisServer::start();
    let nodes = three(&redis);
    let budget = usd_to_nano(2.0);
    let ledger = usd_to_nano(1.5);
    for node in &nodes {
        node.table.seed(SCOPE, Period::Total, now_ms(), 0, ledger);
    }
    let one = usd_to_nano(0.01);
    let limit = BudgetLimit {
        tokens: None,
        nano_usd: Some(budget),
        period: Period::Total,
    };
    let request = Request {
        reserve: (0, one),
        actual: (0, one),
        runs: Duration::from_millis(10),
    };
    let loads: Vec<Load> = nodes
        .iter()
        .map(|node| Load::start(node, limit, request))
        .collect();
    assert!(wait_until_refused(&loads));
    let spent = total(&loads).1;
    for load in loads {
        load.stop();
    }
    println!(
        "ledger ${:.2} of ${:.2}: the fleet spent ${:.4} more",
        ledger as f64 / 1e9,
        budget as f64 / 1e9,
        spent as f64 / 1e9
    );
    assert!(spent <= budget - ledger + NODES * one);
    assert!(spent + NODES * one >= budget - ledger);
    assert!(
        wait_until(WAIT, || hget(&redis, "sn") == Some(ledger + spent)),
        "Redis counts {:?}",
        hget(&redis, "sn")
    );
}

#[test]
fn a_vanished_nodes_hold_frees_within_three_ticks() {
    let redis = RedisServer::start();
    let a = Node::start(&redis.url(), "edge-a");
    let b = Node::start(&redis.url(), "edge-b");
    let budget = 200_000;
    let one = 100;
    let limit = BudgetLimit {
        tokens: Some(budget),
        nano_usd: None,
        period: Period::Total,
    };
    // a's requests (and refusals: demand) earn it an allowance, which it still holds when
    // it stops sending.
    let load_a = Load::start(
        &a,
        limit,
        Request {
            reserve: (one, 0),
            actual: (one, 0),
            runs: Duration::from_millis(5),
        },
    );
    assert!(wait_until(WAIT, || a
        .fleet
        .snapshot(SCOPE)
        .is_some_and(|s| s.tokens.allowance >= (10 * one) as i64)));
    load_a.stop();
    let a_spent = a.fleet.snapshot(SCOPE).unwrap().tokens.settled;
    assert!(
        wait_until(WAIT, || hget(&redis, "st") == Some(a_spent)),
        "a reported what it spent"
    );
    let a_fields = || {
        redis
            .cli(&["HKEYS", HASH])
            .lines()
            .filter(|field| field.starts_with("ht:edge-a:"))
            .count()
    };
    assert_eq!(a_fields(), 1, "a's hold is in Redis");
    let a_held = a.fleet.snapshot(SCOPE).unwrap().tokens.allowance;
    // kill -9: a's allowance is never given back.
    a.vanish();
    let vanished = Instant::now();
    let load_b = Load::start(
        &b,
        limit,
        Request {
            reserve: (one, 0),
            actual: (one, 0),
            runs: Duration::from_millis(1),
        },
    );
    assert!(wait_until(WAIT, || a_fields() == 0));
    let freed = vanished.elapsed();
    assert!(wait_until_refused(std::slice::from_ref(&load_b)));
    let b_spent = load_b.spent.tokens.load(Ordering::SeqCst);
    load_b.stop();
    println!(
        "a vanished holding an allowance of {a_held} tokens: freed after {freed:?} (3 ticks \
         = {:?}); a spent {a_spent}, b {b_spent} of {budget}",
        TICK * 3
    );
    // The TTL is three ticks from a's last call; the rest is b's next tick and slack for a
    // loaded machine.
    assert!(freed <= TICK * 4 + Duration::from_millis(600), "{freed:?}");
    assert!(a_spent + b_spent <= budget + 2 * one);
    assert!(a_spent + b_spent + 2 * one >= budget, "b got what a held");
}
