//! Fleet mode switched on (README, "Fleet"): three gateway processes sharing one PostgreSQL
//! store and one Redis (`[cluster] redis`). A key's `max_concurrency` holds across the fleet,
//! a Redis outage degrades every node (no request fails, the metric says so) and heals by
//! itself, a `kill -9`ed node's slots come back to the others within the lease time, and
//! `check` refuses a bad `[cluster]` naming every error without showing the password.
//!
//! Every gateway's output is swept for the store and Redis passwords when it is dropped.

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use serde_json::json;

/// How long an upstream holds each request in the concurrency test.
const SLOW: Duration = Duration::from_millis(300);

/// A lease's lifetime without renewal: three sync intervals.
const LEASE_TTL: Duration = Duration::from_millis(3 * SYNC_INTERVAL.as_millis() as u64);

/// Scheduling slack for three gateways, PostgreSQL and Redis on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(1500);

/// Whether every node's `credentialflow_cluster_degraded` is `want`.
fn all_degraded(fleet: &ClusterFleet, want: f64) -> bool {
    (0..fleet.nodes.len()).all(|i| fleet.metric(i, "credentialflow_cluster_degraded") == Some(want))
}

on_default_driver! {
    fn max_concurrency_holds_across_three_nodes_and_is_used_most_of_the_time(driver) {
        const LIMIT: i64 = 4;
        let upstream = CountingUpstream::start();
        let fleet = ClusterFleet::start(3, &upstream.target(), driver);
        assert!(wait_until(WAIT, || all_degraded(&fleet, 0.0)), "every node reaches Redis");
        // `create_key` sends each node one quick request: the key's first use there, on
        // the first-use credit (one request per node, the documented bound). The load
        // starts after it, so from its first request every slot is a lease.
        let key = fleet.create_key(&json!({ "name": "four-at-a-time", "max_concurrency": LIMIT }));
        std::thread::sleep(SYNC_INTERVAL * 3);
        upstream.reset_peak();

        let load = Load::start(&fleet, &[0, 1, 2], &key.secret, 12, SLOW, "load");
        // Sample the upstream's in-flight count; the first half second is the fleet's
        // ramp-up (nodes obtaining leases), left out of the use figure but not of the peak.
        let started = Instant::now();
        let mut samples = Vec::new();
        while started.elapsed() < Duration::from_secs(4) {
            if started.elapsed() >= Duration::from_millis(500) {
                samples.push(upstream.in_flight());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let statuses = load.finish();
        let peak = upstream.peak();
        let mean = samples.iter().sum::<i64>() as f64 / samples.len() as f64;
        let at_limit = samples.iter().filter(|&&n| n == LIMIT).count() as f64 / samples.len() as f64;
        println!(
            "max_concurrency {LIMIT} over 3 nodes, 12 clients, {SLOW:?} upstream: peak {peak}, \
             mean in flight {mean:.2}, at the limit {:.0}% of samples, statuses {statuses:?}",
            at_limit * 100.0
        );
        assert!(peak <= LIMIT, "the upstream saw {peak} in flight (limit {LIMIT})");
        assert!(mean >= 3.0, "the fleet used only {mean:.2} of {LIMIT} slots on average");
        assert_eq!(server_errors(&statuses) + statuses.get(&NO_ANSWER).copied().unwrap_or(0), 0, "{statuses:?}");
        assert!(statuses.get(&429).copied().unwrap_or(0) > 0, "12 clients, 4 slots: {statuses:?}");
    }
}

on_default_driver! {
    fn a_redis_outage_degrades_every_node_without_failing_requests_and_heals(driver) {
        let upstream = CountingUpstream::start();
        let mut fleet = ClusterFleet::start(3, &upstream.target(), driver);
        assert!(wait_until(WAIT, || all_degraded(&fleet, 0.0)), "every node reaches Redis");
        let key = fleet.create_key(&json!({ "name": "through-the-outage", "max_concurrency": 4 }));
        let load = Load::start(&fleet, &[0, 1, 2], &key.secret, 6, Duration::from_millis(50), "load");
        std::thread::sleep(Duration::from_millis(500));

        fleet.redis.stop();
        let stopped = Instant::now();
        assert!(
            wait_until(Duration::from_secs(2) + SLACK, || all_degraded(&fleet, 1.0)),
            "every node's credentialflow_cluster_degraded is 1 after Redis stopped"
        );
        let degraded_after = stopped.elapsed();
        let health = fleet.node(0).admin_get("/healthz");
        assert_eq!(health.status, 200, "a degraded node still serves");
        assert_eq!(health.json()["cluster"], "degraded", "{}", health.text());
        // Traffic goes on while Redis is away: limits fall back to each node's share.
        std::thread::sleep(Duration::from_secs(1));

        fleet.redis.start_again();
        let restarted = Instant::now();
        assert!(
            wait_until(Duration::from_secs(5), || all_degraded(&fleet, 0.0)),
            "every node's credentialflow_cluster_degraded is 0 within 5 s of Redis's restart"
        );
        let healed_after = restarted.elapsed();
        std::thread::sleep(Duration::from_millis(300));
        let statuses = load.finish();
        println!(
            "Redis outage: every node degraded {degraded_after:?} after the stop, back {healed_after:?} \
             after the restart; statuses {statuses:?}"
        );
        assert_eq!(
            server_errors(&statuses) + statuses.get(&NO_ANSWER).copied().unwrap_or(0),
            0,
            "no request fails because Redis is down: {statuses:?}"
        );
        assert!(statuses.get(&200).copied().unwrap_or(0) > 0, "{statuses:?}");
        assert_eq!(fleet.node(0).admin_get("/healthz").json(), json!({ "status": "ok" }));
        assert!(fleet.metric(0, "credentialflow_cluster_errors_total").unwrap_or(0.0) >= 1.0);
        assert!(fleet.metric(0, "credentialflow_cluster_round_trips_total").unwrap_or(0.0) >= 1.0);
        assert_eq!(fleet.metric(0, "credentialflow_cluster_live_nodes"), Some(3.0));
        // The outage was logged naming Redis redacted (the sweep on drop checks the rest).
        let stderr = fleet.node(0).stderr();
        assert!(stderr.contains("unreachable"), "{stderr}");
        assert!(!stderr.contains(&fleet.redis_password));
    }
}

on_default_driver! {
    fn a_killed_nodes_slots_come_back_to_the_others_within_the_lease_time(driver) {
        const LIMIT: i64 = 4;
        let upstream = CountingUpstream::start();
        let mut fleet = ClusterFleet::start(3, &upstream.target(), driver);
        assert!(wait_until(WAIT, || all_degraded(&fleet, 0.0)), "every node reaches Redis");
        let key = fleet.create_key(&json!({ "name": "dies-holding", "max_concurrency": LIMIT }));
        std::thread::sleep(SYNC_INTERVAL * 3);

        // edge-a takes every slot with long requests.
        let on_a = Load::start(&fleet, &[0], &key.secret, LIMIT as usize, Duration::from_secs(6), "a");
        assert!(
            wait_until(WAIT, || upstream.in_flight_of("a") == LIMIT),
            "edge-a never ran {LIMIT} requests at once (ran {})",
            upstream.in_flight_of("a")
        );
        // The others want slots too and are refused while a holds them all.
        let on_bc = Load::start(&fleet, &[1, 2], &key.secret, LIMIT as usize, Duration::from_secs(2), "bc");
        std::thread::sleep(SYNC_INTERVAL * 5);
        assert_eq!(upstream.in_flight_of("bc"), 0, "edge-a holds every slot");

        fleet.nodes[0].kill();
        let killed = Instant::now();
        assert!(
            wait_until(LEASE_TTL + SYNC_INTERVAL + SLACK, || upstream.in_flight_of("bc") == LIMIT),
            "edge-b and edge-c ran only {} of the {LIMIT} slots after edge-a died",
            upstream.in_flight_of("bc")
        );
        let took = killed.elapsed();
        println!(
            "all {LIMIT} slots back on edge-b/edge-c {took:?} after edge-a's kill -9 \
             (lease TTL {LEASE_TTL:?} + one tick)"
        );
        assert!(upstream.in_flight_of("bc") <= LIMIT);
        let statuses = on_bc.finish();
        assert_eq!(server_errors(&statuses), 0, "{statuses:?}");
        // edge-a's clients lost their connections with the process, and stop there.
        let on_a = on_a.finish();
        assert_eq!(on_a.get(&NO_ANSWER), Some(&(LIMIT as usize)), "{on_a:?}");
        assert_eq!(server_errors(&on_a), 0, "{on_a:?}");
    }
}

#[test]
fn check_refuses_a_bad_cluster_section_naming_each_error_without_the_password() {
    let text = config(
        "[store]\nnode = \"edge-a\"\n\n[cluster]\n\
         redis = \"http://cf:pw-check-secret-9@cache:6379/0\"\n\
         sync_interval_ms = 5\ncolour = \"blue\"\n",
    );
    let checked = check_config(&text);
    let output = checked.output();
    assert_eq!(checked.code, Some(1), "{output}");
    let line_of = |needle: &str| text.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
    for (path, key) in [
        ("cluster.redis", "redis ="),
        ("cluster.sync_interval_ms", "sync_interval_ms ="),
        ("cluster.colour", "colour ="),
    ] {
        let named = format!("{path} (line {})", line_of(key));
        assert!(output.contains(&named), "{named} in:\n{output}");
    }
    assert!(!output.contains("pw-check-secret-9"), "{output}");

    let fine = config("[cluster]\nsync_interval_ms = 10000\n");
    assert_eq!(
        check_config(&fine).code,
        Some(0),
        "{}",
        check_config(&fine).output()
    );
}

on_default_driver! {
    fn a_changed_cluster_section_waits_for_a_restart_with_one_warning(driver) {
        let redis = common::redis::RedisServer::start_with_password("rpw-reload-0123456789");
        let upstream = Upstream::echo("backend");
        let with_interval = |ms: u64| {
            config(&format!(
                "[store]\nnode = \"edge-a\"\n[cluster]\nredis = \"env:CF_REDIS_URL\"\n\
                 sync_interval_ms = {ms}\n{}",
                proxy_config(&upstream.target())
            ))
        };
        let gw = Gateway::builder(&with_interval(100), driver)
            .env("CF_REDIS_URL", &redis.url())
            .forbid_in_output("the Redis password", "rpw-reload-0123456789")
            .start();
        assert!(wait_until(WAIT, || metric(&gw, "credentialflow_cluster_degraded") == Some(0.0)));
        let trips = || metric(&gw, "credentialflow_cluster_round_trips_total").unwrap();

        gw.write_config(&with_interval(5000));
        assert_eq!(gw.reload_admin().status, 200, "the rest of the config reloads");
        let warning = "reload: changed [cluster] takes effect only after a restart";
        // The gateway's stderr is collected by a reader thread: the line may land a moment
        // after the reload's answer.
        assert!(wait_until(WAIT, || gw.stderr().contains(warning)), "{}", gw.stderr());
        assert_eq!(gw.stderr().matches(warning).count(), 1, "{}", gw.stderr());
        // Still ticking every 100 ms, not every 5 s.
        let before = trips();
        std::thread::sleep(Duration::from_millis(1000));
        assert!(trips() - before >= 5.0, "the link kept its interval");
    }
}
