//! Fleet-wide rates through three gateway processes (README, "Fleet"): one key's `rps`, `rpm`
//! and streamed AI `tpm`, with far more demand than the limit spread over every node. The
//! fleet's admitted total stays within the documented bound
//!
//! ```text
//! burst + rate x W + N x S,   S = max(1, ceil(rate x sync_interval)), N = 3 nodes
//! ```
//!
//! (for `tpm`, `S` is at least the largest single reservation), and is not far below the
//! limit; no request fails, every refusal says when to retry, and each node's Redis round
//! trips follow the sync interval, not the requests.
//!
//! `W` runs from the first request sent to the last; the bound adds `rate x` the slowest
//! answer, since the last request sent may be admitted up to one answer's time later.
//!
//! Every test prints its figures (`cargo test --test cluster_fleet_rates -- --nocapture`).

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::client::{request, Response};
use common::cluster::*;
use common::*;
use serde_json::{json, Value};

/// Gateways in the fleet.
const NODES: usize = 3;

/// Client threads, three per node: each waits for its answer, so more threads than cores
/// keep the demand well above every rate tested.
const CLIENTS: usize = 9;

/// How long the clients send.
const LOAD: Duration = Duration::from_secs(5);

/// The share of `burst + rate x W` the fleet must at least admit.
const LOWER_SHARE: f64 = 0.85;

/// The load phases of this file's tests run one at a time: three fleets loading two cores
/// at once would measure the machine, not the limit (the fleets still start in parallel).
static ONE_LOAD_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A fleet-wide rate as the key configures it.
struct Rate {
    /// How the rate is named in the figures, e.g. "rps 20".
    label: &'static str,
    /// Units a second.
    per_second: f64,
    /// Units available at once.
    burst: f64,
    /// `S`: what one node may admit on credit.
    sync_worth: f64,
    /// What one admitted request counts, by the load's measure (the provider's reported
    /// tokens for `tpm`, 1 otherwise): how many units the clients offered.
    units_per_request: f64,
}

impl Rate {
    /// `S = max(1, ceil(rate x sync_interval))`, as the fleet's module doc defines it.
    fn sync_worth_of(per_second: f64) -> f64 {
        (per_second * SYNC_INTERVAL.as_secs_f64()).ceil().max(1.0)
    }
}

/// Every node reaches Redis.
fn wait_for_fleet_mode(fleet: &ClusterFleet) {
    assert!(
        wait_until(WAIT, || (0..fleet.nodes.len()).all(|i| {
            fleet.metric(i, "credentialflow_cluster_degraded") == Some(0.0)
        })),
        "every node reaches Redis"
    );
}

/// The fleet's Redis traffic over a span: each node's round trips and the script calls
/// Redis ran.
struct RedisTraffic {
    /// Round trips by node.
    trips: Vec<f64>,
    /// `EVALSHA`/`EVAL` calls, all nodes together.
    calls: u64,
    /// The span, including the reads of the counts.
    seconds: f64,
}

/// Runs `work` and counts the Redis traffic around it.
fn redis_traffic_during<T>(fleet: &ClusterFleet, work: impl FnOnce() -> T) -> (T, RedisTraffic) {
    let from = Instant::now();
    let trips_before = round_trips(fleet);
    let calls_before = redis_script_calls(&fleet.redis);
    let result = work();
    let trips = round_trips(fleet)
        .iter()
        .zip(&trips_before)
        .map(|(after, before)| after - before)
        .collect();
    let calls = redis_script_calls(&fleet.redis) - calls_before;
    let traffic = RedisTraffic {
        trips,
        calls,
        seconds: from.elapsed().as_secs_f64(),
    };
    (result, traffic)
}

impl RedisTraffic {
    fn calls_per_round_trip(&self) -> f64 {
        self.calls as f64 / self.trips.iter().sum::<f64>().max(1.0)
    }

    /// The figures, with the `requests` sent meanwhile for scale.
    fn figures(&self, requests: usize) -> String {
        let per_second: Vec<String> = self
            .trips
            .iter()
            .map(|n| format!("{:.1}", n / self.seconds))
            .collect();
        format!(
            "Redis: round trips per second per node [{}] (tick {SYNC_INTERVAL:?}), {} script \
             calls in {} round trips = {:.2} per round trip, while {:.0} requests per second \
             were sent",
            per_second.join(", "),
            self.calls,
            self.trips.iter().sum::<f64>(),
            self.calls_per_round_trip(),
            requests as f64 / self.seconds
        )
    }

    /// One round trip per tick whatever the request rate: the next tick is timed from the
    /// end of the last, so a node makes at most one per sync interval, and one more for
    /// where the span starts.
    fn check_one_round_trip_per_tick(&self) {
        let most = (self.seconds / SYNC_INTERVAL.as_secs_f64()).floor() + 1.0;
        for (i, n) in self.trips.iter().enumerate() {
            assert!(
                *n <= most,
                "node {i} made {n} round trips in {:.2} s (at most {most})",
                self.seconds
            );
        }
    }

    /// Each round trip carries at most `calls` script calls on average (the heartbeat and
    /// one per active rate), with a tolerance for the counts being read a moment apart.
    fn check_calls_per_round_trip_at_most(&self, calls: f64) {
        let per_trip = self.calls_per_round_trip();
        assert!(
            per_trip <= calls * 1.15,
            "{per_trip:.2} script calls per round trip (expected at most {calls})"
        );
    }
}

/// Sends `raw` from [`CLIENTS`] threads over every node for [`LOAD`] and checks the fleet's
/// admitted units against `rate`'s bound, the refusals, and the Redis round trips.
fn load_and_check(fleet: &ClusterFleet, rate: &Rate, raw: Vec<u8>, measure: Measure) -> Tally {
    let _alone = ONE_LOAD_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (by_node, redis) = redis_traffic_during(fleet, || {
        let load = RateLoad::start(fleet, raw, CLIENTS, measure);
        std::thread::sleep(LOAD);
        load.finish()
    });
    let total = Tally::sum(&by_node);
    let window = total.window().as_secs_f64();
    let in_flight = total.slowest.as_secs_f64();
    let admitted = total.admitted_units as f64;
    let nominal = rate.burst + rate.per_second * window;
    let credit = NODES as f64 * rate.sync_worth;
    let bound = rate.burst + rate.per_second * (window + in_flight) + credit;
    let offered = total.sent() as f64 * rate.units_per_request;
    // A machine too loaded to offer even the limit is not the fleet's shortfall.
    let floor = LOWER_SHARE * nominal.min(offered);
    let split: Vec<String> = by_node
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                "edge-{}: {} units in {} admitted of {} sent",
                (b'a' + i as u8) as char,
                t.admitted_units,
                t.admitted(),
                t.sent()
            )
        })
        .collect();
    let arithmetic = format!(
        "{label} over {NODES} nodes, {CLIENTS} clients, W = {window:.2} s, slowest answer \
         {in_flight:.3} s: admitted {admitted} units; burst + rate x W = {burst} + {per_second} x \
         {window:.2} = {nominal:.1}; bound = burst + rate x (W + slowest) + N x S = {burst} + \
         {per_second} x {:.2} + {NODES} x {s} = {bound:.1}; floor {LOWER_SHARE} x min(nominal, \
         offered {offered}) = {floor:.1}; admitted = {:.1}% of nominal",
        window + in_flight,
        admitted / nominal * 100.0,
        label = rate.label,
        burst = rate.burst,
        per_second = rate.per_second,
        s = rate.sync_worth,
    );
    println!("{arithmetic}");
    println!("  per node: {}", split.join("; "));
    println!(
        "  statuses {:?}; {}",
        total.statuses,
        redis.figures(total.sent())
    );
    assert_eq!(
        server_errors(&total.statuses),
        0,
        "no 5xx: {:?}",
        total.statuses
    );
    assert_eq!(
        total.statuses.get(&NO_ANSWER),
        None,
        "every request answered: {:?}",
        total.statuses
    );
    assert_eq!(
        total.admitted() + total.refused(),
        total.sent(),
        "only 2xx and 429: {:?}",
        total.statuses
    );
    assert!(
        total.refused() > 0,
        "the demand exceeded the limit: {arithmetic}"
    );
    assert_eq!(
        total.refusals_without_retry_after, 0,
        "every 429 carries retry-after"
    );
    assert_eq!(
        total.unmeasured, 0,
        "every admitted answer showed its units"
    );
    assert!(admitted <= bound, "over the bound: {arithmetic}");
    assert!(admitted >= floor, "far below the limit: {arithmetic}");
    for (i, tally) in by_node.iter().enumerate() {
        assert!(
            tally.admitted() > 0,
            "node {i} admitted nothing: {arithmetic}"
        );
    }
    redis.check_one_round_trip_per_tick();
    // Each round trip carries the heartbeat and this key's rate: the calls scale with the
    // active rates, not with the requests.
    redis.check_calls_per_round_trip_at_most(2.0);
    total
}

/// `GET /work` presenting `secret`, on a connection the client closes after.
fn plain_request(secret: &str) -> Vec<u8> {
    let bearer = format!("Bearer {secret}");
    request(
        "GET",
        "/work",
        &[("Authorization", bearer.as_str()), ("Connection", "close")],
        b"",
    )
}

/// A plain request counts one unit.
fn one_request(_: &Response) -> Option<u64> {
    Some(1)
}

/// Starts the three gateways proxying to an upstream answering at once, and creates a key
/// with `limits`.
fn plain_fleet(
    upstream: &CountingUpstream,
    limits: Value,
    driver: Driver,
) -> (ClusterFleet, String) {
    let fleet = ClusterFleet::start(NODES, &upstream.target(), driver);
    wait_for_fleet_mode(&fleet);
    let key = fleet.create_key(&limits);
    // Past the first-use credit: from now on every node takes the key's rate from grants.
    std::thread::sleep(SYNC_INTERVAL * 3);
    (fleet, key.secret)
}

on_default_driver! {
    fn a_keys_rps_holds_across_three_gateways(driver) {
        let upstream = CountingUpstream::start();
        let (fleet, secret) =
            plain_fleet(&upstream, json!({ "name": "twenty-a-second", "rps": 20 }), driver);
        let rate = Rate {
            label: "rps 20",
            per_second: 20.0,
            burst: 20.0,
            sync_worth: Rate::sync_worth_of(20.0),
            units_per_request: 1.0,
        };
        load_and_check(&fleet, &rate, plain_request(&secret), one_request);
    }
}

on_default_driver! {
    fn a_keys_rpm_holds_across_three_gateways(driver) {
        let upstream = CountingUpstream::start();
        let (fleet, secret) =
            plain_fleet(&upstream, json!({ "name": "120-a-minute", "rpm": 120 }), driver);
        // Burst = the whole minute: over 5 s the fleet admits about 120 + 10.
        let rate = Rate {
            label: "rpm 120",
            per_second: 2.0,
            burst: 120.0,
            sync_worth: Rate::sync_worth_of(2.0),
            units_per_request: 1.0,
        };
        load_and_check(&fleet, &rate, plain_request(&secret), one_request);
    }
}

/// The model of the `tpm` test, the same name at the gateway and upstream.
const MODEL: &str = "gpt-4o-mini";

/// The completion tokens each streamed request asks for (its reservation's second part).
const MAX_TOKENS: u64 = 100;

/// What the fake provider reports for every answer: 20 prompt + 80 completion tokens.
const PROMPT_TOKENS: u64 = 20;
const COMPLETION_TOKENS: u64 = 80;

/// The provider key, given to the gateways as `env:FAKE_OPENAI_KEY`.
const PROVIDER_KEY: &str = "sk-fake-fleet-provider-5a1c9e";

/// The streamed chat request the `tpm` test sends, usage asked for in the last chunk.
fn streamed_chat_body() -> Value {
    json!({
        "model": MODEL,
        "messages": [
            { "role": "system", "content": "You are terse." },
            { "role": "user", "content": "Count to three." }
        ],
        "max_tokens": MAX_TOKENS,
        "stream": true,
        "stream_options": { "include_usage": true }
    })
}

/// `POST /v1/chat/completions` with [`streamed_chat_body`] presenting `secret`.
fn streamed_chat(secret: &str) -> Vec<u8> {
    let bearer = format!("Bearer {secret}");
    let body = streamed_chat_body().to_string();
    request(
        "POST",
        "/v1/chat/completions",
        &[
            ("Authorization", bearer.as_str()),
            ("Content-Type", "application/json"),
            ("Connection", "close"),
        ],
        body.as_bytes(),
    )
}

/// The `total_tokens` of the usage chunk of a stream that ran to `data: [DONE]`.
fn streamed_usage(response: &Response) -> Option<u64> {
    let text = response.text();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    if events.last() != Some(&"[DONE]") {
        return None;
    }
    events.iter().find_map(|event| {
        let chunk: Value = serde_json::from_str(event).ok()?;
        chunk["usage"]["total_tokens"].as_u64()
    })
}

on_default_driver! {
    fn a_keys_tpm_holds_across_three_gateways_on_streamed_usage(driver) {
        const TPM: f64 = 6000.0;
        let fake = FakeOpenAi::start();
        fake.set_usage(PROMPT_TOKENS, COMPLETION_TOKENS, 0);
        let rest = format!(
            "[[provider]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
             api_key = \"env:FAKE_OPENAI_KEY\"\n\n\
             [[model]]\nname = \"{MODEL}\"\nprovider = \"openai\"\nupstream_model = \"{MODEL}\"\n\
             input_price_per_mtok = 1.0\noutput_price_per_mtok = 2.0\n",
            fake.base_url()
        );
        let fleet =
            ClusterFleet::start_with(NODES, &rest, &[("FAKE_OPENAI_KEY", PROVIDER_KEY)], driver);
        wait_for_fleet_mode(&fleet);
        let key = fleet.create_key_probed(
            &json!({ "name": "six-thousand-tokens-a-minute", "tpm": TPM as u64 }),
            |node, secret| {
                let answer = common::client::roundtrip(node.addr(), &streamed_chat(secret));
                if answer.status == 200 {
                    assert_eq!(streamed_usage(&answer), Some(PROMPT_TOKENS + COMPLETION_TOKENS));
                }
                answer.status
            },
        );
        std::thread::sleep(SYNC_INTERVAL * 3);
        let probes = fake.request_count();

        // The reservation each request takes at admission: the gateway's own prompt estimate
        // (the function it calls) plus `max_tokens`. `S` for a token rate is at least the
        // largest single reservation.
        let reservation = credentialflow::ai::tokens::estimate_chat_prompt_tokens(
            MODEL,
            &streamed_chat_body(),
        ) + MAX_TOKENS;
        let per_second = TPM / 60.0;
        let rate = Rate {
            label: "tpm 6000 (streamed)",
            per_second,
            burst: TPM,
            sync_worth: Rate::sync_worth_of(per_second).max(reservation as f64),
            units_per_request: (PROMPT_TOKENS + COMPLETION_TOKENS) as f64,
        };
        println!(
            "tpm: each request reserves {reservation} tokens (prompt estimate + max_tokens \
             {MAX_TOKENS}) and the provider reports {} (S = max({}, {reservation}) = {})",
            PROMPT_TOKENS + COMPLETION_TOKENS,
            Rate::sync_worth_of(per_second),
            rate.sync_worth
        );
        let total = load_and_check(&fleet, &rate, streamed_chat(&key.secret), streamed_usage);
        assert_eq!(
            fake.request_count() - probes,
            total.admitted(),
            "exactly the admitted requests reached the provider"
        );
    }
}

on_default_driver! {
    fn redis_round_trips_follow_the_ticks_and_script_calls_the_active_keys(driver) {
        // Many keys, each far below its rate: the subject is the Redis traffic, which must
        // grow with the keys in use per interval, never with the requests.
        const KEYS: usize = 30;
        let upstream = CountingUpstream::start();
        let fleet = ClusterFleet::start(NODES, &upstream.target(), driver);
        wait_for_fleet_mode(&fleet);
        let secrets: Vec<String> = (0..KEYS)
            .map(|i| fleet.create_key(&json!({ "name": format!("busy-{i}"), "rps": 1000 })).secret)
            .collect();
        let raws = secrets.iter().map(|secret| plain_request(secret)).collect();

        let _alone = ONE_LOAD_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (by_node, redis) = redis_traffic_during(&fleet, || {
            let load = RateLoad::start_cycling(&fleet, raws, CLIENTS, one_request);
            std::thread::sleep(Duration::from_secs(2));
            load.finish()
        });
        let total = Tally::sum(&by_node);
        println!(
            "{KEYS} keys over {NODES} nodes: statuses {:?}; {}",
            total.statuses,
            redis.figures(total.sent())
        );
        assert_eq!(total.admitted(), total.sent(), "no key reached its rate: {:?}", total.statuses);
        redis.check_one_round_trip_per_tick();
        // The heartbeat and at most one call per key in use on the node.
        redis.check_calls_per_round_trip_at_most(1.0 + KEYS as f64);
        assert!(
            redis.calls_per_round_trip() > 2.0,
            "the keys in use show in the calls ({:.2} per round trip)",
            redis.calls_per_round_trip()
        );
    }
}
