//! Signed webhooks (issue 18): key lifecycle, `key.expiring` and `budget.threshold` events
//! POSTed to a local receiver that verifies every signature; retries with backoff, the
//! give-up audited, a restart that loses nothing, and requests that keep their latency
//! while the receiver is down; and two gateways sharing PostgreSQL delivering each event once.

mod common;
#[path = "reference/run.rs"]
mod reference;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::keys::*;
use common::postgres::PgServer;
use common::webhook_receiver::{Delivery, WebhookReceiver};
use common::*;
use serde_json::{json, Value};

/// The shared secret receivers check signatures with (given through the environment).
const SECRET: &str = "whsec-test-0123456789abcdef-never-printed";

/// The environment variable the config names for [`SECRET`].
const SECRET_ENV: &str = "CF_WEBHOOK_SECRET";

/// How long any delivery may take to arrive on a loaded machine.
const DELIVERY_WAIT: Duration = Duration::from_secs(15);

/// A `[[webhook]]` table to `url` for `events` and `extra` lines, with a 50 ms backoff
/// unless `extra` sets one.
fn webhook_toml(url: &str, events: &[&str], extra: &str) -> String {
    let events: Vec<String> = events.iter().map(|e| format!("\"{e}\"")).collect();
    let backoff = if extra.contains("backoff") {
        ""
    } else {
        "backoff = \"50ms\"\n"
    };
    format!(
        "\n[[webhook]]\nurl = \"{url}\"\nsecret = \"env:{SECRET_ENV}\"\nevents = [{}]\n\
         timeout = \"2s\"\n{backoff}{extra}\n",
        events.join(", ")
    )
}

/// A gateway proxying `/` to an echo upstream, with `webhooks` tables.
fn gateway(webhooks: &str, driver: Driver) -> (Upstream, Gateway) {
    let upstream = Upstream::echo("backend");
    let rest = format!("{}{webhooks}", proxy_config(&upstream.target()));
    let gw = Gateway::builder(&config(&rest), driver)
        .env(SECRET_ENV, SECRET)
        .start();
    (upstream, gw)
}

/// Fails if any delivery carries the webhook secret, a key's secret or its prefix.
fn assert_no_secret_in(deliveries: &[Delivery], keys: &[&IssuedKey]) {
    for delivery in deliveries {
        assert!(!delivery.raw.contains(SECRET), "{}", delivery.raw);
        for key in keys {
            assert!(!delivery.raw.contains(&key.secret), "{}", delivery.raw);
            assert!(
                !delivery.raw.contains(&key.secret[..12]),
                "prefix in {}",
                delivery.raw
            );
        }
        assert!(!delivery.raw.contains("hash"), "{}", delivery.raw);
    }
}

/// The value of `credentialflow_webhook_deliveries_total{event,result}` (0 when absent).
fn deliveries_metric(gw: &Gateway, event: &str, result: &str) -> u64 {
    let scrape = gw.admin_get("/metrics").text();
    assert!(
        !scrape.contains(SECRET),
        "the webhook secret is in /metrics"
    );
    let series = format!(
        "credentialflow_webhook_deliveries_total{{event=\"{event}\",result=\"{result}\"}} "
    );
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// The audit log's entries.
fn audit_entries(gw: &Gateway) -> Vec<Value> {
    std::fs::read_to_string(data_dir(gw).join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

on_default_driver! {
    fn key_created_rotated_and_revoked_are_delivered_signed(driver) {
        let receiver = WebhookReceiver::start(SECRET);
        let hooks = webhook_toml(
            &receiver.url(),
            &["key.created", "key.rotated", "key.revoked"],
            "",
        );
        let (_upstream, gw) = gateway(&hooks, driver);

        // The admin API and the CLI both write the store: both paths send events.
        let key = create_key(&gw, &json!({ "name": "ci", "team": "platform" }));
        let rotated = rotate_key(&gw, &key.id, "0s");
        cli_revoke_key(&gw, &key.id);
        receiver.wait_until(DELIVERY_WAIT, "three key events", |d| d.len() >= 3);

        let accepted = receiver.accepted();
        let types: Vec<&str> = accepted.iter().map(|d| d.event.as_str()).collect();
        assert_eq!(types, ["key.created", "key.rotated", "key.revoked"]);
        for delivery in &accepted {
            assert_eq!(delivery.body["key"]["id"], key.id.as_str());
            assert_eq!(delivery.body["key"]["name"], "ci");
            assert_eq!(delivery.body["key"]["team"], "platform");
        }
        assert_eq!(accepted[0].body["actor"], "admin");
        assert!(accepted[2].body["actor"].as_str().unwrap().starts_with("cli:"));
        assert!(accepted[2].body["key"]["revoked_at"].is_number());
        assert_no_secret_in(&accepted, &[&key, &rotated]);
        assert_eq!(deliveries_metric(&gw, "key.created", "delivered"), 1);
        assert_eq!(deliveries_metric(&gw, "key.revoked", "delivered"), 1);
        assert!(!gw.stderr().contains(SECRET));
    }
}

on_default_driver! {
    fn a_receiver_answering_500_twice_gets_the_event_on_the_third_attempt(driver) {
        let receiver = WebhookReceiver::start(SECRET);
        receiver.answer_next(&[500, 500]);
        let (_upstream, gw) = gateway(&webhook_toml(&receiver.url(), &["key.created"], ""), driver);
        let started = Instant::now();
        let key = create_key(&gw, &json!({ "name": "retried" }));
        receiver.wait_until(DELIVERY_WAIT, "an accepted delivery", |d| {
            d.iter().any(|d| d.status == 200)
        });

        let deliveries = receiver.deliveries();
        let statuses: Vec<u16> = deliveries.iter().map(|d| d.status).collect();
        assert_eq!(statuses, [500, 500, 200]);
        // Every attempt is the same event, signed afresh.
        assert!(deliveries.iter().all(|d| d.id() == deliveries[0].id()));
        assert!(deliveries.iter().all(|d| d.body["key"]["id"] == key.id.as_str()));
        // Backoff 50 ms then 100 ms: at least 150 ms between the create and the success.
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(deliveries_metric(&gw, "key.created", "failed"), 2);
        assert_eq!(deliveries_metric(&gw, "key.created", "delivered"), 1);
        assert_no_secret_in(&deliveries, &[&key]);
    }
}

on_default_driver! {
    fn an_event_is_given_up_after_max_attempts_and_audited(driver) {
        let receiver = WebhookReceiver::start(SECRET);
        receiver.answer_next(&[503; 10]);
        let hooks = webhook_toml(&receiver.url(), &["key.created"], "max_attempts = 3");
        let (_upstream, gw) = gateway(&hooks, driver);
        let key = create_key(&gw, &json!({ "name": "doomed" }));
        receiver.wait_until(DELIVERY_WAIT, "three attempts", |d| d.len() >= 3);
        wait_until(DELIVERY_WAIT, "the give-up in the audit log", || {
            audit_entries(&gw).iter().any(|e| e["action"] == "webhook_give_up")
        });
        // Nothing after the last attempt.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(receiver.deliveries().len(), 3);
        let give_up = audit_entries(&gw)
            .into_iter()
            .find(|e| e["action"] == "webhook_give_up")
            .unwrap();
        assert_eq!(give_up["actor"], "webhook");
        assert_eq!(give_up["key_id"], key.id.as_str());
        assert_eq!(deliveries_metric(&gw, "key.created", "gave_up"), 1);
        assert_eq!(deliveries_metric(&gw, "key.created", "failed"), 2);
    }
}

on_default_driver! {
    fn key_expiring_fires_once_for_keys_inside_the_window(driver) {
        let receiver = WebhookReceiver::start(SECRET);
        let hooks = webhook_toml(
            &receiver.url(),
            &["key.expiring"],
            "key_expiring_before = \"1h\"",
        );
        let (_upstream, gw) = gateway(&hooks, driver);
        let soon = create_key(&gw, &json!({ "name": "soon", "expires_in": "30m" }));
        let later = create_key(&gw, &json!({ "name": "later", "expires_in": "3h" }));
        let _never = create_key(&gw, &json!({ "name": "never" }));
        receiver.wait_until(DELIVERY_WAIT, "key.expiring", |d| !d.is_empty());
        // More changes make the thread scan again: the event must not repeat.
        create_key(&gw, &json!({ "name": "another" }));
        admin(&gw, "PATCH", &format!("/admin/keys/{}", later.id), Some(&json!({ "rpm": 5 })));
        std::thread::sleep(Duration::from_millis(1500));

        let expiring = receiver.accepted_of("key.expiring");
        assert_eq!(expiring.len(), 1, "{expiring:#?}");
        assert_eq!(expiring[0].body["key"]["id"], soon.id.as_str());
        assert!(expiring[0].body["expires_at"].is_string());
        assert_eq!(receiver.deliveries().len(), 1, "only key.expiring is subscribed");
        assert_no_secret_in(&expiring, &[&soon, &later]);
    }
}

on_default_driver! {
    fn undelivered_events_are_delivered_after_a_restart(driver) {
        let receiver = WebhookReceiver::start(SECRET);
        // The first attempt fails; the retry is due after the gateway has stopped.
        receiver.answer_next(&[503]);
        let hooks = webhook_toml(&receiver.url(), &["key.created"], "backoff = \"2s\"");
        let (_upstream, mut first) = gateway(&hooks, driver);
        let failed = create_key(&first, &json!({ "name": "before-stop" }));
        receiver.wait_until(DELIVERY_WAIT, "the failed attempt", |d| d.len() == 1);
        first.stop();
        // Written while no gateway runs: only the store's queue holds the event.
        let offline = cli_create_key(&first, "while-stopped", &[]);
        assert_eq!(receiver.deliveries().len(), 1);

        let data = data_dir(&first);
        let upstream = Upstream::echo("backend");
        let rest = format!("{}{hooks}", proxy_config(&upstream.target()));
        let text = config(&rest).replace("@DIR@/data", &data.to_string_lossy());
        let second = Gateway::builder(&text, driver).env(SECRET_ENV, SECRET).start();
        receiver.wait_until(DELIVERY_WAIT, "both events after the restart", |d| {
            d.iter().filter(|d| d.status == 200).count() >= 2
        });
        let accepted = receiver.accepted_of("key.created");
        let of = |id: &str| {
            accepted
                .iter()
                .find(|d| d.body["key"]["id"] == id)
                .unwrap_or_else(|| panic!("no key.created for {id}: {accepted:#?}"))
        };
        // The retried event is the one first attempted, not a copy; the one written while
        // stopped was queued by the CLI alone.
        assert_eq!(of(&failed.id).id(), receiver.deliveries()[0].id());
        assert_eq!(of(&offline.id).body["actor"].as_str().map(|a| a.starts_with("cli:")), Some(true));
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(receiver.accepted().len(), 2, "each event exactly once");
        drop(second);
    }
}

/// Polls `done` every 25 ms until it holds, or fails after `limit`.
fn wait_until(limit: Duration, what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The median time of `n` sequential proxied `GET`s, each on a new connection.
fn median_latency(gw: &Gateway, n: usize) -> Duration {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        let response = http_get(gw.addr(), &format!("/r{i}"));
        samples.push(start.elapsed());
        assert_eq!(response.status, 200);
    }
    median_and_worst(&samples).0
}

on_default_driver! {
    fn requests_keep_their_latency_while_the_receiver_is_down(driver) {
        // Baseline: the same gateway without webhooks.
        let (_upstream, plain) = gateway("", driver);
        median_latency(&plain, 10); // warm-up
        let baseline = median_latency(&plain, 50);
        drop(plain);

        // A receiver that refuses connections, a queue full of events retried every 10 ms.
        let down = format!("http://{}/hooks", refused_addr());
        let hooks = webhook_toml(&down, &["key.created"], "backoff = \"10ms\"\nmax_attempts = 50");
        let (_upstream, gw) = gateway(&hooks, driver);
        for i in 0..20 {
            create_key(&gw, &json!({ "name": format!("k{i}") }));
        }
        wait_until(DELIVERY_WAIT, "failing deliveries", || {
            deliveries_metric(&gw, "key.created", "failed") >= 20
        });
        median_latency(&gw, 10);
        let with_receiver_down = median_latency(&gw, 50);
        let failing_meanwhile = deliveries_metric(&gw, "key.created", "failed");
        assert!(failing_meanwhile > 20, "the thread kept retrying");
        eprintln!("median latency: {baseline:?} without webhooks, {with_receiver_down:?} with the receiver down");
        // Generous slack for a shared 2-core machine; a request waiting on a delivery
        // would take at least a connect attempt longer, over and over.
        assert!(
            with_receiver_down <= baseline * 5,
            "median {with_receiver_down:?} with the receiver down vs {baseline:?} without webhooks"
        );
    }
}

/// The fake OpenAI as `[[provider]] openai` with model `gpt-4o-mini`.
fn ai_tables(fake: &FakeOpenAi) -> String {
    format!(
        "\n[[provider]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
         api_key = \"env:FAKE_OPENAI_KEY\"\n\n[[model]]\nname = \"gpt-4o-mini\"\n\
         provider = \"openai\"\ninput_price_per_mtok = 1.0\noutput_price_per_mtok = 2.0\n",
        fake.base_url()
    )
}

/// One short chat completion by `key`.
fn chat(gw: &Gateway, key: &str) -> Response {
    let body = json!({
        "model": "gpt-4o-mini",
        "messages": [{ "role": "user", "content": "Say hello." }],
        "max_tokens": 10
    })
    .to_string();
    let auth = format!("Bearer {key}");
    let headers = [
        ("Content-Type", "application/json"),
        ("Connection", "close"),
        ("Authorization", auth.as_str()),
    ];
    roundtrip(
        gw.addr(),
        &request("POST", "/v1/chat/completions", &headers, body.as_bytes()),
    )
}

on_default_driver! {
    fn budget_threshold_fires_at_80_and_100_percent_exactly_once(driver) {
        let receiver = WebhookReceiver::start(SECRET);
        let fake = FakeOpenAi::start();
        // 500 tokens a request against 1250: 40 %, 80 % (exactly), 120 %.
        fake.set_usage(400, 100, 0);
        let rest = format!(
            "{}{}",
            ai_tables(&fake),
            webhook_toml(&receiver.url(), &["budget.threshold"], "")
        );
        let gw = Gateway::builder(&config(&rest), driver)
            .env(SECRET_ENV, SECRET)
            .env("FAKE_OPENAI_KEY", "sk-fake-provider-webhooks")
            .start();
        let key = create_key(
            &gw,
            &json!({ "name": "metered", "team": "ml", "budget_tokens": 1250, "budget_period": "day" }),
        );
        assert_eq!(chat(&gw, &key.secret).status, 200);
        std::thread::sleep(Duration::from_millis(300));
        assert!(receiver.deliveries().is_empty(), "40 % is below every threshold");
        assert_eq!(chat(&gw, &key.secret).status, 200);
        receiver.wait_until(DELIVERY_WAIT, "the 80 % event", |d| !d.is_empty());
        assert_eq!(chat(&gw, &key.secret).status, 200);
        receiver.wait_until(DELIVERY_WAIT, "the 100 % event", |d| d.len() >= 2);
        // Over budget now: refused requests settle nothing and send nothing.
        for _ in 0..3 {
            assert_ne!(chat(&gw, &key.secret).status, 200);
        }
        std::thread::sleep(Duration::from_millis(1000));

        let events = receiver.accepted_of("budget.threshold");
        let percents: Vec<u64> = events
            .iter()
            .map(|d| d.body["budget"]["threshold_percent"].as_u64().unwrap())
            .collect();
        assert_eq!(percents, [80, 100], "{events:#?}");
        for event in &events {
            assert_eq!(event.body["key"]["id"], key.id.as_str());
            assert_eq!(event.body["team"], "ml");
            assert_eq!(event.body["budget"]["scope"], "key");
            assert_eq!(event.body["budget"]["period"], "day");
            assert_eq!(event.body["budget"]["limit_tokens"], 1250);
        }
        assert_eq!(events[0].body["budget"]["spent_tokens"], 1000);
        assert_eq!(events[1].body["budget"]["spent_tokens"], 1500);
        assert_eq!(receiver.deliveries().len(), 2);
        assert_no_secret_in(&events, &[&key]);
    }
}

/// The pepper of the fleet test's PostgreSQL store.
const PEPPER: &str = "3f6a1c0e9b8d7f2a4c5e6b7d8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f70";

on_default_driver! {
    fn two_nodes_deliver_each_event_once(driver) {
        let mut pg = PgServer::start();
        pg.create_database("cf");
        let url = pg.postgres_url("cf", None);
        let receiver = WebhookReceiver::start(SECRET);
        // A slow receiver keeps each node's claims open long enough for the other node to
        // try the same rows.
        receiver.set_delay(Duration::from_millis(100));
        let nodes: Vec<Gateway> = ["edge-a", "edge-b"]
            .iter()
            .map(|node| {
                let rest = format!(
                    "[store]\nbackend = \"postgres\"\nurl = \"env:CF_STORE_URL\"\n\
                     pepper = \"env:CF_PEPPER\"\nnode = \"{node}\"\n\n\
                     [[webhook]]\nurl = \"{}\"\nsecret = \"env:{SECRET_ENV}\"\n\
                     events = [\"key.created\", \"key.revoked\", \"key.expiring\"]\n\
                     key_expiring_before = \"1h\"\nbackoff = \"50ms\"\n",
                    receiver.url()
                );
                Gateway::builder(&config_with(1, "", &rest), driver)
                    .env("CF_STORE_URL", &url)
                    .env("CF_PEPPER", PEPPER)
                    .env(SECRET_ENV, SECRET)
                    .start()
            })
            .collect();

        // Writes on both nodes; every one queues an event both delivery threads may claim.
        let mut keys = Vec::new();
        for i in 0..10 {
            let node = &nodes[i % 2];
            keys.push(create_key(node, &json!({ "name": format!("k{i}") })));
        }
        for key in &keys[..4] {
            revoke_key(&nodes[1], &key.id);
        }
        // Both nodes scan for expiring keys; the queue keeps one event.
        let expiring = create_key(&nodes[0], &json!({ "name": "soon", "expires_in": "30m" }));
        let expected = 10 + 4 + 1 + 1; // created, revoked, "soon" created and expiring
        receiver.wait_until(Duration::from_secs(20), "every event", |d| d.len() >= expected);
        // Both nodes have scanned again by now (each write changes the sequence they watch).
        create_key(&nodes[1], &json!({ "name": "late" }));
        receiver.wait_until(Duration::from_secs(20), "the last key.created", |d| {
            d.len() > expected
        });
        std::thread::sleep(Duration::from_millis(1500));

        let deliveries = receiver.accepted();
        let mut per_event: HashMap<String, usize> = HashMap::new();
        for delivery in &deliveries {
            *per_event.entry(delivery.id().to_string()).or_default() += 1;
        }
        assert!(per_event.values().all(|&n| n == 1), "an event was delivered twice: {per_event:?}");
        assert_eq!(deliveries.len(), expected + 1, "{deliveries:#?}");
        let count = |kind: &str| deliveries.iter().filter(|d| d.event == kind).count();
        assert_eq!(count("key.created"), 12);
        assert_eq!(count("key.revoked"), 4);
        assert_eq!(count("key.expiring"), 1);
        let expiring_event = deliveries.iter().find(|d| d.event == "key.expiring").unwrap();
        assert_eq!(expiring_event.body["key"]["id"], expiring.id.as_str());
        // The nodes' counters add up to one delivery per event: no node sent one twice.
        let delivered: u64 = nodes
            .iter()
            .map(|gw| deliveries_metric(gw, "key.created", "delivered"))
            .sum();
        assert_eq!(delivered, 12);
        drop(nodes);
        pg.stop();
    }
}

on_default_driver! {
    fn the_readme_receiver_accepts_a_real_delivery_and_refuses_forgeries(driver) {
        let receiver = WebhookReceiver::start(SECRET);
        let (_upstream, gw) = gateway(&webhook_toml(&receiver.url(), &["key.created"], ""), driver);
        create_key(&gw, &json!({ "name": "readme" }));
        receiver.wait_until(DELIVERY_WAIT, "a delivery", |d| !d.is_empty());
        let delivery = receiver.deliveries().remove(0);
        let headers: serde_json::Map<String, Value> = delivery
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), Value::from(value.as_str())))
            .collect();
        let tampered = delivery.raw.replace("readme", "README");
        let stale_ts = delivery.body["timestamp"].as_i64().unwrap() - 3600;
        let mut stale = delivery.body.clone();
        stale["timestamp"] = json!(stale_ts);
        let stale_raw = stale.to_string();
        let mut stale_headers = headers.clone();
        stale_headers.insert(
            "x-credentialflow-signature".into(),
            common::webhook_receiver::signature(SECRET.as_bytes(), stale_raw.as_bytes()).into(),
        );
        stale_headers.insert("x-credentialflow-timestamp".into(), stale_ts.to_string().into());
        let input = json!({
            "secret": SECRET,
            "cases": [
                { "body": delivery.raw, "headers": headers },
                { "body": tampered, "headers": headers },
                { "body": stale_raw, "headers": stale_headers },
            ]
        });
        let results = reference::run_reference("webhook_receiver", &[], &input);
        let results = results["results"].as_array().unwrap();
        assert_eq!(results[0]["ok"], true, "{results:?}");
        assert_eq!(results[0]["type"], "key.created");
        assert_eq!(results[0]["id"], delivery.id());
        assert_eq!(results[1]["error"], "bad signature", "{results:?}");
        assert_eq!(results[2]["error"], "stale delivery: a replay?", "{results:?}");
    }
}

#[test]
fn check_names_every_webhook_problem_and_never_shows_the_secret() {
    let hooks = "\n[[webhook]]\nurl = \"ftp://hooks.example/x\"\nevents = [\"key.created\", \"key.deleted\"]\n\
                 key_expiring_before = \"tomorrow\"\n\n\
                 [[webhook]]\nurl = \"https://user:pa55word@hooks.example/x\"\nsecret = \"literal-hook-secret\"\n\
                 events = [\"budget.threshold\"]\n";
    let out = check_config(&config(hooks));
    assert_eq!(out.code, Some(1), "{}", out.output());
    let text = out.output();
    for path in [
        "webhook[0].url",
        "webhook[0].secret",
        "webhook[0].events[1]",
        "webhook[0].key_expiring_before",
        "webhook[1].url",
    ] {
        assert!(text.contains(path), "{path} not named in:\n{text}");
    }
    assert!(!text.contains("pa55word"), "{text}");
    assert!(!text.contains("literal-hook-secret"), "{text}");
}

on_default_driver! {
    fn an_attempt_is_cut_at_its_timeout_and_retried(driver) {
        let receiver = WebhookReceiver::start(SECRET);
        receiver.set_delay(Duration::from_secs(3));
        let hooks = webhook_toml(&receiver.url(), &["key.created"], "");
        let hooks = hooks.replace("timeout = \"2s\"", "timeout = \"300ms\"");
        let (_upstream, gw) = gateway(&hooks, driver);
        let started = Instant::now();
        create_key(&gw, &json!({ "name": "slow" }));
        wait_until(DELIVERY_WAIT, "a timed-out attempt", || {
            deliveries_metric(&gw, "key.created", "failed") >= 1
        });
        // Counted failed well before the receiver would have answered.
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        receiver.set_delay(Duration::ZERO);
        wait_until(DELIVERY_WAIT, "the retried delivery", || {
            deliveries_metric(&gw, "key.created", "delivered") == 1
        });
    }
}
