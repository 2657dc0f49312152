//! Usage in fleet mode (README, "Fleet"): gateways on one PostgreSQL meter AI requests into
//! one ledger. `GET /admin/usage` on any node and `credentialflow usage` report exactly the
//! sum of what every node served, and a node killed with `kill -9` mid-traffic loses no
//! record it had journaled: the gateway started again on its `data_dir` delivers them.
//!
//! Each test starts its own private PostgreSQL (`common::postgres`), which demands a
//! password, and a fake OpenAI server whose usage per answer is fixed, so the expected
//! totals are computed here request by request.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::keys::*;
use common::postgres::PgServer;
use common::*;
use serde_json::{json, Value};

/// The provider's own API key, given to the gateways as `env:FAKE_OPENAI_KEY`.
const PROVIDER_KEY: &str = "sk-fake-provider-fleet-usage-0123456789";

/// What the fake reports for every answer (its defaults): prompt and completion tokens.
const PROMPT_TOKENS: u64 = 10;
const COMPLETION_TOKENS: u64 = 5;

/// The two models and their prices in USD per million tokens (input, output).
const MINI: (&str, f64, f64) = ("gpt-4o-mini", 1.0, 2.0);
const BIG: (&str, f64, f64) = ("gpt-4o", 2.5, 10.0);

/// The contract's bound for a key made on one node to be in force on another.
const FLEET_BOUND: Duration = Duration::from_secs(1);

/// How often the ledger writer stores (journals) what it holds, at the latest.
const LEDGER_FLUSH: Duration = Duration::from_secs(1);

/// How long the ledger may take to show a record: the writer's flush, the delivery thread,
/// and a loaded machine.
const LEDGER_WAIT: Duration = Duration::from_secs(20);

/// `n` random bytes as hex.
fn random_hex(bytes: usize) -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    while out.len() < bytes * 2 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_usize(out.len());
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out.truncate(bytes * 2);
    out
}

/// A private PostgreSQL, a fake OpenAI server, and the secrets every node is given.
struct Fleet {
    _pg: PgServer,
    url: String,
    pepper: String,
    password: String,
    fake: FakeOpenAi,
}

impl Fleet {
    fn new() -> Fleet {
        let mut pg = PgServer::start();
        pg.create_database("cf");
        let password = format!("pw-{}", random_hex(12));
        pg.require_password(&password);
        Fleet {
            url: pg.postgres_url("cf", Some(&password)),
            _pg: pg,
            pepper: random_hex(32),
            password,
            fake: FakeOpenAi::start(),
        }
    }

    /// A gateway named `node` with its data in `data_dir`.
    fn start_node(&self, node: &str, data_dir: &Path, driver: Driver) -> Gateway {
        let models: String = [MINI, BIG]
            .iter()
            .map(|(name, input, output)| {
                format!(
                    "[[model]]\nname = \"{name}\"\nprovider = \"openai\"\n\
                     upstream_model = \"{name}\"\ninput_price_per_mtok = {input:?}\n\
                     output_price_per_mtok = {output:?}\n"
                )
            })
            .collect();
        let config = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
             admin_token = \"env:CF_ADMIN_TOKEN\"\ndata_dir = \"{data_dir}\"\n\
             access_log = \"\"\nworkers = 1\n\n\
             [[provider]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\n\
             api_key = \"env:FAKE_OPENAI_KEY\"\n\n{models}\n{store}",
            data_dir = data_dir.display(),
            base_url = self.fake.base_url(),
            store = store_toml(node),
        );
        Gateway::builder(&config, driver)
            .env("FAKE_OPENAI_KEY", PROVIDER_KEY)
            .env("CF_STORE_URL", &self.url)
            .env("CF_PEPPER", &self.pepper)
            .forbid_in_output("the store password", &self.password)
            .start()
    }

    /// A client on the fleet's database (with the password it demands).
    fn client(&self) -> ::postgres::Client {
        ::postgres::Client::connect(&self.url, ::postgres::NoTls).expect("connect to PostgreSQL")
    }

    /// `credentialflow usage ARGS` with a config holding `[store]` and `data_dir` only.
    fn cli_usage(&self, args: &[&str]) -> Value {
        let dir = TempDir::new("fleet-usage-cli");
        let config = dir.join("store-only.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\ndata_dir = \"data\"\n{}",
                store_toml("ops-laptop")
            ),
        )
        .unwrap();
        let env = [
            ("CF_STORE_URL", self.url.as_str()),
            ("CF_PEPPER", self.pepper.as_str()),
        ];
        let mut full = vec!["usage", "--json"];
        full.extend_from_slice(args);
        let out = run_cli(&config, dir.path(), &full, &env);
        out.assert_ok("usage");
        assert!(
            !out.output().contains(&self.password) && !out.output().contains(&self.pepper),
            "{}",
            out.output()
        );
        serde_json::from_str(out.stdout.trim()).expect("usage --json prints JSON")
    }
}

/// The `[store]` of a node or of the CLI: both secrets come from the environment.
fn store_toml(node: &str) -> String {
    format!(
        "[store]\nbackend = \"postgres\"\nurl = \"env:CF_STORE_URL\"\n\
         pepper = \"env:CF_PEPPER\"\nnode = \"{node}\"\n"
    )
}

/// The raw bytes of a short chat request for `model` by `secret`, tagged `request_id`.
fn chat_request(secret: &str, model: &str, request_id: &str) -> Vec<u8> {
    let body = json!({
        "model": model,
        "messages": [{ "role": "user", "content": "Say hello." }],
        "max_tokens": 10
    })
    .to_string();
    let auth = format!("Bearer {secret}");
    request(
        "POST",
        "/v1/chat/completions",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", auth.as_str()),
            ("X-Request-Id", request_id),
            ("Connection", "close"),
        ],
        body.as_bytes(),
    )
}

/// Sends a chat request on a new connection; `Some(status)` once the whole answer is read,
/// `None` when the connection fails or closes before the answer is whole (a killed node).
fn try_chat(addr: SocketAddr, secret: &str, model: &str, request_id: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(&chat_request(secret, model, request_id))
        .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text.split(' ').nth(1)?.parse().ok()?;
    // An answer is whole when its JSON body is: it ends with the closing brace.
    (status != 200 || text.trim_end().ends_with('}')).then_some(status)
}

/// Cost of one answer of `model` in nano-USD: the fake's tokens at the model's prices.
fn cost_nano(model: (&str, f64, f64)) -> u64 {
    // USD per Mtok is nano-USD per thousandth of a token: 1.0 USD/Mtok = 1000 nano-USD/token.
    (PROMPT_TOKENS as f64 * model.1 * 1000.0 + COMPLETION_TOKENS as f64 * model.2 * 1000.0) as u64
}

/// Expected report rows: per group, (requests, prompt tokens, completion tokens, nano-USD).
type Totals = BTreeMap<String, (u64, u64, u64, u64)>;

/// A report as [`Totals`], with its cost converted back to nano-USD (exact: the ledger sums
/// nano-USD and converts once).
fn totals_of(report: &Value) -> Totals {
    report
        .as_array()
        .unwrap_or_else(|| panic!("a report is an array: {report}"))
        .iter()
        .map(|row| {
            let number = |name: &str| row[name].as_u64().unwrap_or_else(|| panic!("{row}"));
            (
                row["group"].as_str().unwrap().to_owned(),
                (
                    number("requests"),
                    number("prompt_tokens"),
                    number("completion_tokens"),
                    (row["cost_usd"].as_f64().unwrap() * 1e9).round() as u64,
                ),
            )
        })
        .collect()
}

/// The report of `node`'s admin API.
fn admin_usage(node: &Gateway, query: &str) -> Value {
    let response = node.admin_request("GET", &format!("/admin/usage?{query}"));
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

/// The value of an unlabelled sample in a Prometheus scrape.
fn metric(gw: &Gateway, name: &str) -> Option<f64> {
    gw.admin_get("/metrics")
        .text()
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} "))?.trim().parse().ok())
}

on_default_driver! {
    fn usage_through_every_node_is_reported_exactly_on_any_node_and_by_the_cli(driver) {
        let fleet = Fleet::new();
        let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new("fleet-usage-node")).collect();
        let nodes: Vec<Gateway> = ["edge-a", "edge-b", "edge-c"]
            .iter()
            .zip(&dirs)
            .map(|(name, dir)| fleet.start_node(name, dir.path(), driver))
            .collect();
        let keys: Vec<IssuedKey> = (0..4)
            .map(|i| create_key(&nodes[0], &json!({ "name": format!("spender-{i}") })))
            .collect();
        // Keys made on edge-a are in force everywhere within the fleet bound.
        sleep(FLEET_BOUND + Duration::from_millis(500));

        // 90 requests: node i % 3, key i % 4, model alternating; every one must be answered.
        const REQUESTS: usize = 90;
        let mut by_key = Totals::new();
        let mut by_model = Totals::new();
        let mut by_node: HashMap<String, i64> = HashMap::new();
        for i in 0..REQUESTS {
            let (node, key) = (&nodes[i % 3], &keys[i % 4]);
            let model = if i % 2 == 0 { MINI } else { BIG };
            let status = try_chat(node.addr(), &key.secret, model.0, &format!("sum-{i}"));
            assert_eq!(status, Some(200), "request {i} on node {}", i % 3);
            for (totals, group) in [(&mut by_key, &key.id), (&mut by_model, &model.0.to_owned())] {
                let row = totals.entry(group.clone()).or_default();
                row.0 += 1;
                row.1 += PROMPT_TOKENS;
                row.2 += COMPLETION_TOKENS;
                row.3 += cost_nano(model);
            }
            *by_node.entry(["edge-a", "edge-b", "edge-c"][i % 3].to_owned()).or_default() += 1;
        }

        let reported = |node: &Gateway| {
            totals_of(&admin_usage(node, "group_by=key"))
                .values()
                .map(|row| row.0)
                .sum::<u64>()
        };
        let started = Instant::now();
        assert!(
            wait_until(LEDGER_WAIT, || reported(&nodes[2]) >= REQUESTS as u64),
            "the ledger never held {REQUESTS} requests: {}",
            admin_usage(&nodes[2], "group_by=key")
        );
        eprintln!("fleet usage: all {REQUESTS} records reported {:?} after the last answer", started.elapsed());
        // A little longer, so that a record stored twice would show.
        sleep(LEDGER_FLUSH * 2);

        for node in &nodes {
            assert_eq!(totals_of(&admin_usage(node, "group_by=key")), by_key, "by key");
            assert_eq!(totals_of(&admin_usage(node, "group_by=model")), by_model, "by model");
        }
        assert_eq!(totals_of(&fleet.cli_usage(&["--group-by", "key"])), by_key);
        assert_eq!(totals_of(&fleet.cli_usage(&["--group-by", "model"])), by_model);

        // Each node stored what it served, under its own name.
        let stored: HashMap<String, i64> = fleet
            .client()
            .query("SELECT node, COUNT(*) FROM usage GROUP BY node", &[])
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        assert_eq!(stored, by_node);
    }
}

on_default_driver! {
    /// `kill -9` of a node mid-traffic, then a gateway started again on its `data_dir`.
    ///
    /// What can be lost: records the ledger writer still held in memory, the batch it had not
    /// yet journaled. The writer journals a batch when its oldest record is a second old (or
    /// the batch is full), so these are requests answered within about a second before the
    /// kill. What cannot be lost: anything journaled. The journal is in `data_dir`; the
    /// gateway started on it delivers every journaled record, and delivery is idempotent by
    /// record id, so none is stored twice either.
    ///
    /// The test asserts exactly that: every answered request missing from the ledger was
    /// answered within the flush interval (plus a scheduling margin) before the kill, and no
    /// record is stored twice. It prints how many were missing and the request rate.
    fn a_node_killed_mid_traffic_loses_at_most_its_unjournaled_second(driver) {
        let fleet = Fleet::new();
        let a_dir = TempDir::new("fleet-usage-killed");
        let b_dir = TempDir::new("fleet-usage-survivor");
        let mut a = fleet.start_node("edge-a", a_dir.path(), driver);
        let b = fleet.start_node("edge-b", b_dir.path(), driver);
        let key = create_key(&a, &json!({ "name": "busy" }));

        // Metered requests to A, one after another, until told to stop; each answered one is
        // recorded with the moment its answer was whole.
        let stop = Arc::new(AtomicBool::new(false));
        let traffic = {
            let (addr, secret, stop) = (a.addr(), key.secret.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut answered: Vec<(String, Instant)> = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("kill-{i}");
                    i += 1;
                    if try_chat(addr, &secret, MINI.0, &id) == Some(200) {
                        answered.push((id, Instant::now()));
                    }
                }
                answered
            })
        };
        let traffic_started = Instant::now();
        sleep(Duration::from_secs(3));
        a.signal(libc::SIGKILL);
        let killed_at = Instant::now();
        a.wait_exit(Duration::from_secs(5));
        stop.store(true, Ordering::Relaxed);
        let answered = traffic.join().unwrap();
        let duration = killed_at - traffic_started;
        let rate = answered.len() as f64 / duration.as_secs_f64();
        assert!(answered.len() > 20, "too little traffic to judge: {}", answered.len());

        // B never stopped; A comes back on the same data directory and delivers its journal.
        let a2 = fleet.start_node("edge-a", a_dir.path(), driver);
        assert!(
            wait_until(LEDGER_WAIT, || {
                metric(&a2, "credentialflow_usage_journal_depth") == Some(0.0)
            }),
            "the restarted node never emptied its journal: {:?}",
            metric(&a2, "credentialflow_usage_journal_depth")
        );
        sleep(LEDGER_FLUSH);

        let mut client = fleet.client();
        let duplicates: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM (SELECT request_id FROM usage WHERE node = 'edge-a' \
                 GROUP BY request_id HAVING COUNT(*) > 1) AS twice",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(duplicates, 0, "a record was stored twice");
        let stored: HashSet<String> = client
            .query("SELECT request_id FROM usage WHERE node = 'edge-a'", &[])
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let missing: Vec<&(String, Instant)> =
            answered.iter().filter(|(id, _)| !stored.contains(id)).collect();
        eprintln!(
            "kill -9: {} requests answered in {duration:?} ({rate:.0}/s), {} stored, {} missing \
             (one second's worth is {rate:.0})",
            answered.len(),
            stored.len(),
            missing.len()
        );
        // Only the batch not yet journaled may be missing: answers from the last flush
        // interval before the kill (a margin for the writer being scheduled late).
        let oldest_allowed = killed_at - LEDGER_FLUSH - Duration::from_millis(250);
        for (id, at) in &missing {
            assert!(
                *at >= oldest_allowed,
                "{id} was answered {:?} before the kill and is missing: journaled records \
                 must survive",
                killed_at - *at
            );
        }
        assert!(
            (missing.len() as f64) <= (rate * 1.25).ceil(),
            "{} missing is more than a second's worth at {rate:.0}/s",
            missing.len()
        );
        // The answered requests before that window are all there.
        let settled = answered.iter().filter(|(_, at)| *at < oldest_allowed).count();
        assert!(settled > 0);
        drop(b);
    }
}
