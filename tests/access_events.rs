//! Access requests as webhooks (issue 18): `access.requested`, `access.approved` and
//! `access.denied` from every path that takes a step (admin API, a key asking for itself, a
//! policy approving at once, the CLI), delivered signed to a local receiver that verifies
//! each signature, naming the request and never its claim token or the key's secret; the
//! audit entry of every step; and, printed for `--nocapture`, the request-to-usable-key flow
//! timed end to end and the webhook delivery latency.

mod common;

use std::time::{Duration, Instant};

use common::keys::*;
use common::webhook_receiver::{Delivery, WebhookReceiver};
use common::*;
use serde_json::{json, Value};

/// The shared secret the receiver checks signatures with (given through the environment).
const SECRET: &str = "whsec-access-0123456789abcdef-never-printed";

/// The environment variable the config names for [`SECRET`].
const SECRET_ENV: &str = "CF_WEBHOOK_SECRET";

/// How long any delivery may take to arrive on a loaded machine.
const DELIVERY_WAIT: Duration = Duration::from_secs(15);

/// The team `ml`'s policy: 8 h at most, gpt-4o-mini for up to 1 h and $5 approved at once.
const POLICY: &str = "[[access_policy]]\nteam = \"ml\"\nmax_ttl = \"8h\"\n\
    auto_approve = { models = [\"gpt-4o-mini\"], max_ttl = \"1h\", budget_usd = 5 }\n";

/// An echo upstream and a gateway whose route `/` wants a virtual key, with [`POLICY`] and a
/// `[[webhook]]` to `receiver` for the three access events and `key.created`.
fn gateway(receiver: &WebhookReceiver, driver: Driver) -> (Upstream, Gateway) {
    let upstream = Upstream::echo("backend");
    let rest = format!(
        "{}\n[[route]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"backend\"\n\
         auth = \"api_key\"\n\n{POLICY}\n[[webhook]]\nurl = \"{}\"\nsecret = \"env:{SECRET_ENV}\"\n\
         events = [\"access.requested\", \"access.approved\", \"access.denied\", \"key.created\"]\n\
         timeout = \"2s\"\nbackoff = \"50ms\"\n",
        upstream_toml("backend", &upstream.target(), ""),
        receiver.url()
    );
    let gw = Gateway::builder(&config(&rest), driver)
        .env(SECRET_ENV, SECRET)
        .start();
    (upstream, gw)
}

/// `POST /admin/access-requests` with the admin token; the answer's `(id, claim_token)`.
fn ask(gw: &Gateway, body: &Value) -> (String, String) {
    let answer = admin(gw, "POST", "/admin/access-requests", Some(body));
    assert_eq!(answer.status, 201, "{}", answer.text());
    let answer = answer.json();
    (
        answer["id"].as_str().unwrap().to_owned(),
        answer["claim_token"].as_str().unwrap().to_owned(),
    )
}

/// `POST /admin/access-requests/{id}/{verb}` (`approve` or `deny`) with the admin token.
fn decide(gw: &Gateway, id: &str, verb: &str, note: &str) -> Value {
    let answer = admin(
        gw,
        "POST",
        &format!("/admin/access-requests/{id}/{verb}"),
        Some(&json!({ "note": note })),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()
}

/// Claims request `id` with `token` (no admin token); the key's secret.
fn claim(gw: &Gateway, id: &str, token: &str) -> String {
    let answer = admin_call(
        gw.admin_addr(),
        "POST",
        &format!("/admin/access-requests/{id}/claim"),
        None,
        Some(&json!({ "claim_token": token })),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let secret = answer.json()["key"].as_str().unwrap().to_owned();
    common::gateway::remember_issued_key(&secret);
    secret
}

/// The accepted deliveries of type `event` about request `id`.
fn events_of(receiver: &WebhookReceiver, event: &str, id: &str) -> Vec<Delivery> {
    receiver
        .accepted_of(event)
        .into_iter()
        .filter(|d| d.body["request"]["id"] == id)
        .collect()
}

/// Waits for the one delivery of type `event` about request `id` and returns it.
fn wait_for(receiver: &WebhookReceiver, event: &str, id: &str) -> Delivery {
    receiver.wait_until(DELIVERY_WAIT, &format!("{event} for {id}"), |deliveries| {
        deliveries
            .iter()
            .any(|d| d.status == 200 && d.event == event && d.body["request"]["id"] == id)
    });
    let mut found = events_of(receiver, event, id);
    assert_eq!(found.len(), 1, "{event} for {id} once: {found:#?}");
    found.remove(0)
}

/// The `(action, actor)` of every audit entry about request `id`, in order.
fn steps_of(gw: &Gateway, id: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(data_dir(gw).join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["request_id"] == id)
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// Fails if any delivery carries the webhook secret, a claim token or a key's secret.
fn assert_no_secret_in(deliveries: &[Delivery], secrets: &[&str]) {
    for delivery in deliveries {
        assert!(!delivery.raw.contains(SECRET), "{}", delivery.raw);
        assert!(!delivery.raw.contains("cfclaim_"), "{}", delivery.raw);
        assert!(!delivery.raw.contains("claim_token"), "{}", delivery.raw);
        assert!(!delivery.raw.contains("hash"), "{}", delivery.raw);
        for secret in secrets {
            assert!(!delivery.raw.contains(secret), "{}", delivery.raw);
        }
    }
}

on_default_driver! {
    fn each_step_of_a_request_sends_its_signed_event(driver) {
        let receiver = WebhookReceiver::start(SECRET);
        let (upstream, gw) = gateway(&receiver, driver);

        // Request -> access.requested, naming the request and who asked.
        let (id, token) = ask(
            &gw,
            &json!({"name": "jit-oncall", "team": "sre", "ttl": "1h", "reason": "incident 7"}),
        );
        let requested = wait_for(&receiver, "access.requested", &id);
        let request = &requested.body["request"];
        assert_eq!(
            (&request["name"], &request["team"], &request["requester"], &request["status"]),
            (&json!("jit-oncall"), &json!("sre"), &json!("admin"), &json!("pending"))
        );
        assert_eq!(request["reason"], "incident 7");
        assert_eq!(request["decided_by"], Value::Null);
        assert_eq!(requested.body["actor"], "admin");
        assert_eq!(requested.body["team"], "sre");
        assert!(events_of(&receiver, "access.approved", &id).is_empty());

        // Approve -> access.approved with the minted key, and that key's key.created.
        let approved = decide(&gw, &id, "approve", "go");
        let key_id = approved["key_id"].as_str().unwrap().to_owned();
        let event = wait_for(&receiver, "access.approved", &id);
        let request = &event.body["request"];
        assert_eq!(
            (&request["status"], &request["decided_by"], &request["note"]),
            (&json!("approved"), &json!("admin"), &json!("go"))
        );
        assert_eq!(event.body["key"]["id"], key_id.as_str());
        assert_eq!(event.body["key"]["expires_at"], approved["expires_at"]);
        receiver.wait_until(DELIVERY_WAIT, "key.created of the minted key", |d| {
            d.iter().any(|d| d.event == "key.created" && d.body["key"]["id"] == key_id.as_str())
        });

        // The claimed key works; the claim itself sends no access event.
        let secret = claim(&gw, &id, &token);
        assert_eq!(get_with_key(gw.addr(), "/x", Some(&secret)).status, 200);
        assert_eq!(upstream.request_count(), 1);

        // Deny -> access.denied.
        let (denied_id, _) = ask(
            &gw,
            &json!({"name": "jit-no", "team": "sre", "ttl": "1h", "reason": "curious"}),
        );
        decide(&gw, &denied_id, "deny", "not now");
        let denied = wait_for(&receiver, "access.denied", &denied_id);
        let request = &denied.body["request"];
        assert_eq!(
            (&request["status"], &request["decided_by"], &request["note"]),
            (&json!("denied"), &json!("admin"), &json!("not now"))
        );
        assert!(denied.body.get("key").is_none(), "{}", denied.raw);

        // A policy approving at once -> access.requested, then access.approved by `policy`.
        let (auto_id, auto_token) = ask(
            &gw,
            &json!({"name": "notebook", "team": "ml", "models": ["gpt-4o-mini"], "ttl": "30m",
                    "reason": "analysis"}),
        );
        let first = wait_for(&receiver, "access.requested", &auto_id);
        let second = wait_for(&receiver, "access.approved", &auto_id);
        assert_eq!(first.body["request"]["status"], "pending");
        assert_eq!(second.body["request"]["decided_by"], "policy");
        assert_eq!(second.body["actor"], "policy");
        let order: Vec<String> = receiver
            .accepted()
            .iter()
            .filter(|d| d.body["request"]["id"] == auto_id.as_str())
            .map(|d| d.event.clone())
            .collect();
        assert_eq!(order, ["access.requested", "access.approved"]);
        let auto_secret = claim(&gw, &auto_id, &auto_token);

        // A key asking for itself -> access.requested naming the key as requester.
        let asker = create_key(
            &gw,
            &json!({"name": "svc", "team": "web", "scopes": ["access:request"]}),
        );
        let made = {
            use common::client::{request, roundtrip};
            let body = json!({"name": "svc-jit", "ttl": "10m", "reason": "batch"}).to_string();
            let headers = [
                ("Connection", "close"),
                ("Content-Type", "application/json"),
                ("x-api-key", asker.secret.as_str()),
            ];
            roundtrip(
                gw.admin_addr(),
                &request("POST", "/admin/access-requests", &headers, body.as_bytes()),
            )
        };
        assert_eq!(made.status, 201, "{}", made.text());
        let self_id = made.json()["id"].as_str().unwrap().to_owned();
        let self_service = wait_for(&receiver, "access.requested", &self_id);
        assert_eq!(self_service.body["request"]["requester"], asker.id.as_str());
        assert_eq!(self_service.body["request"]["team"], "web");
        assert_eq!(self_service.body["actor"], asker.id.as_str());

        // Every step is on the record, with who took it.
        assert_eq!(
            steps_of(&gw, &id),
            pairs(&[
                ("access.request", "admin"),
                ("access.approve", "admin"),
                ("access.claim", "admin"),
            ])
        );
        assert_eq!(
            steps_of(&gw, &denied_id),
            pairs(&[("access.request", "admin"), ("access.deny", "admin")])
        );
        assert_eq!(
            steps_of(&gw, &auto_id),
            pairs(&[
                ("access.request", "admin"),
                ("access.auto_approve", "policy"),
                ("access.claim", "admin"),
            ])
        );
        assert_eq!(steps_of(&gw, &self_id), pairs(&[("access.request", asker.id.as_str())]));

        // Nothing secret in any body, and one delivery per event.
        let accepted = receiver.accepted();
        assert_no_secret_in(
            &accepted,
            &[&token, &auto_token, &secret, &auto_secret, &asker.secret],
        );
        let mut ids: Vec<&str> = accepted.iter().map(Delivery::id).collect();
        ids.sort_unstable();
        let all = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), all, "an event was delivered twice");
        assert!(!gw.stderr().contains(SECRET));
    }
}

on_default_driver! {
    fn cli_steps_send_events_and_follow_the_policy(driver) {
        let receiver = WebhookReceiver::start(SECRET);
        let (_upstream, gw) = gateway(&receiver, driver);
        let config = config_path(&gw);
        // The CLI needs no webhook secret: it queues events in the store the gateway
        // delivers from.
        let as_user =
            |user: &str, args: &[&str]| run_cli(&config, gw.dir(), args, &[("USER", user)]);
        let json_of =
            |out: &CliOutput| -> Value { serde_json::from_str(out.stdout.trim()).unwrap() };

        let asked = as_user(
            "bob",
            &["access", "request", "--name", "cli-jit", "--team", "ops", "--ttl", "1h",
              "--reason", "deploy", "--json"],
        );
        asked.assert_ok("access request");
        let id = json_of(&asked)["id"].as_str().unwrap().to_owned();
        let requested = wait_for(&receiver, "access.requested", &id);
        assert_eq!(requested.body["request"]["requester"], "cli:bob");

        as_user("carol", &["access", "approve", &id, "--note", "ok"]).assert_ok("access approve");
        let approved = wait_for(&receiver, "access.approved", &id);
        assert_eq!(approved.body["request"]["decided_by"], "cli:carol");
        assert_eq!(approved.body["actor"], "cli:carol");

        let other = as_user(
            "bob",
            &["access", "request", "--name", "cli-no", "--ttl", "1h", "--reason", "r", "--json"],
        );
        other.assert_ok("access request");
        let denied_id = json_of(&other)["id"].as_str().unwrap().to_owned();
        as_user("carol", &["access", "deny", &denied_id]).assert_ok("access deny");
        let denied = wait_for(&receiver, "access.denied", &denied_id);
        assert_eq!(denied.body["request"]["decided_by"], "cli:carol");

        // Inside team ml's envelope: the CLI's request is approved at once by the policy.
        let auto = as_user(
            "bob",
            &["access", "request", "--name", "cli-auto", "--team", "ml", "--models",
              "gpt-4o-mini", "--ttl", "30m", "--reason", "notebook", "--json"],
        );
        auto.assert_ok("access request inside the policy");
        let auto = json_of(&auto);
        assert_eq!(auto["status"], "approved", "{auto}");
        assert!(auto["key_id"].as_str().is_some_and(|k| k.starts_with("key_")), "{auto}");
        let auto_id = auto["id"].as_str().unwrap().to_owned();
        wait_for(&receiver, "access.requested", &auto_id);
        let by_policy = wait_for(&receiver, "access.approved", &auto_id);
        assert_eq!(by_policy.body["request"]["decided_by"], "policy");
        assert_eq!(by_policy.body["key"]["id"], auto["key_id"]);

        assert_eq!(
            steps_of(&gw, &id),
            pairs(&[("access.request", "cli:bob"), ("access.approve", "cli:carol")])
        );
        assert_eq!(
            steps_of(&gw, &auto_id),
            pairs(&[("access.request", "cli:bob"), ("access.auto_approve", "policy")])
        );
        assert_no_secret_in(&receiver.accepted(), &[auto["claim_token"].as_str().unwrap()]);
    }
}

/// Sleeps 1 ms between looks until `done` holds (fails after [`DELIVERY_WAIT`]); the time
/// it held, for measurements finer than the receiver's own polling.
fn arrived_at(done: impl Fn() -> bool) -> Instant {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < DELIVERY_WAIT, "nothing arrived");
        std::thread::sleep(Duration::from_millis(1));
    }
    Instant::now()
}

/// Milliseconds, with a tenth.
fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

on_default_driver! {
    fn the_request_to_usable_key_flow_and_webhook_latency_are_measured(driver) {
        let receiver = WebhookReceiver::start(SECRET);
        let (_upstream, gw) = gateway(&receiver, driver);
        const RUNS: usize = 5;
        let (mut flows, mut steps, mut latencies) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..RUNS {
            // Each step is timed on its own and the flow is their sum, so the waits for the
            // webhooks between steps (an approver acting at once) are not counted in it.
            let asked_at = Instant::now();
            let (id, token) = ask(
                &gw,
                &json!({"name": format!("timed-{run}"), "team": "sre", "ttl": "1h",
                        "reason": "measured"}),
            );
            let asked = asked_at.elapsed();
            // The event is created inside the call: from the call's start to its arrival.
            let arrived = arrived_at(|| !events_of(&receiver, "access.requested", &id).is_empty());
            latencies.push(("access.requested", arrived - asked_at, arrived - (asked_at + asked)));

            let approve_at = Instant::now();
            decide(&gw, &id, "approve", "timed");
            let approved = approve_at.elapsed();
            let arrived = arrived_at(|| !events_of(&receiver, "access.approved", &id).is_empty());
            latencies.push((
                "access.approved",
                arrived - approve_at,
                arrived - (approve_at + approved),
            ));

            let claim_at = Instant::now();
            let secret = claim(&gw, &id, &token);
            let claimed = claim_at.elapsed();
            let use_at = Instant::now();
            let first_ok = loop {
                if get_with_key(gw.addr(), "/x", Some(&secret)).status == 200 {
                    break use_at.elapsed();
                }
                assert!(use_at.elapsed() < WAIT, "the claimed key never worked");
                std::thread::sleep(Duration::from_millis(1));
            };
            flows.push(asked + approved + claimed + first_ok);
            steps.push([asked, approved, claimed, first_ok]);
        }
        // Every event arrived once, verified.
        assert_eq!(receiver.accepted_of("access.requested").len(), RUNS);
        assert_eq!(receiver.accepted_of("access.approved").len(), RUNS);

        let (median, worst) = median_and_worst(&flows);
        eprintln!(
            "request -> approve -> claim -> first 200 (sum of the four calls), {RUNS} runs \
             ({} driver): median {}, worst {}",
            driver.as_str(),
            ms(median),
            ms(worst)
        );
        for (i, [asked, approved, claimed, first_ok]) in steps.iter().enumerate() {
            eprintln!(
                "  run {i}: request {}, approve {}, claim {}, first 200 {}",
                ms(*asked),
                ms(*approved),
                ms(*claimed),
                ms(*first_ok)
            );
        }
        let samples: Vec<Duration> = latencies.iter().map(|(_, d, _)| *d).collect();
        let (median, worst) = median_and_worst(&samples);
        let after: Vec<Duration> = latencies.iter().map(|(_, _, d)| *d).collect();
        let (after_median, after_worst) = median_and_worst(&after);
        eprintln!(
            "webhook delivery latency (event created -> receiver has it), {} events: \
             median {}, worst {}; after the creating call returned: median {}, worst {}",
            samples.len(),
            ms(median),
            ms(worst),
            ms(after_median),
            ms(after_worst)
        );
        for (event, latency, after) in &latencies {
            eprintln!("  {event}: {} ({} after the call returned)", ms(*latency), ms(*after));
        }
    }
}
