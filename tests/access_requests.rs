//! Just-in-time access (issue 18): a request for a key, its approval by a person or a
//! policy, the one-time claim of the key it mints, and the key's use and expiry on the data
//! plane; self-service by a key holding `access:request`; the CLI; the audit trail; the
//! bounds on every field a requester sends; and the same steps on PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::keys::*;
use common::postgres::PgServer;
use common::*;
use credentialflow::access::flow::{self, AccessError, Requester};
use credentialflow::access::{AccessStatus, NewAccessRequest};
use credentialflow::store::{KeyBackend, Pepper};
use serde_json::{json, Value};

/// An echo upstream and a gateway whose route `/` wants a virtual key, with `extra` tables.
fn gateway_with(extra: &str) -> (Upstream, Gateway) {
    gateway_on(extra, Driver::Uring)
}

/// [`gateway_with`] on the I/O driver `driver`.
fn gateway_on(extra: &str, driver: Driver) -> (Upstream, Gateway) {
    let upstream = Upstream::echo("backend");
    let rest = format!(
        "{}\n[[route]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"backend\"\n\
         auth = \"api_key\"\n{extra}\n",
        upstream_toml("backend", &upstream.target(), "")
    );
    let gw = Gateway::start(&config(&rest), driver);
    (upstream, gw)
}

/// The team `ml`'s policy: 8 h at most, gpt-4o-mini for up to 1 h and $5 approved at once.
const POLICY: &str = "[[access_policy]]\nteam = \"ml\"\nmax_ttl = \"8h\"\n\
    auto_approve = { models = [\"gpt-4o-mini\"], max_ttl = \"1h\", budget_usd = 5 }\n";

/// `POST /admin/access-requests` with the admin token.
fn ask(gw: &Gateway, body: &Value) -> Response {
    admin(gw, "POST", "/admin/access-requests", Some(body))
}

/// `POST /admin/access-requests/{id}/claim` with no admin token, only the claim token.
fn claim(gw: &Gateway, id: &str, token: &str) -> Response {
    admin_call(
        gw.admin_addr(),
        "POST",
        &format!("/admin/access-requests/{id}/claim"),
        None,
        Some(&json!({ "claim_token": token })),
    )
}

/// An admin call presenting a virtual key as `x-api-key` on the admin listener.
fn as_key(gw: &Gateway, method: &str, path: &str, key: &str, body: &Value) -> Response {
    use common::client::{request, roundtrip};
    let bytes = body.to_string().into_bytes();
    let headers = [
        ("Connection", "close"),
        ("Content-Type", "application/json"),
        ("x-api-key", key),
    ];
    roundtrip(gw.admin_addr(), &request(method, path, &headers, &bytes))
}

fn audit_lines(gw: &Gateway) -> Vec<Value> {
    std::fs::read_to_string(data_dir(gw).join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `(action, actor)` of every audit entry about request `id`, in order.
fn steps_of(gw: &Gateway, id: &str) -> Vec<(String, String)> {
    audit_lines(gw)
        .into_iter()
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

on_both_drivers! {
    fn request_approve_claim_use_then_the_key_expires(driver) {
        request_approve_claim_use_expire(driver);
    }
}

fn request_approve_claim_use_expire(driver: Driver) {
    let (upstream, gw) = gateway_on("", driver);
    let started = Instant::now();
    let asked = ask(
        &gw,
        &json!({"name": "jit-oncall", "team": "sre", "ttl": "3s", "reason": "incident 7",
                "routes": ["api"], "rpm": 100}),
    );
    assert_eq!(asked.status, 201, "{}", asked.text());
    let asked = asked.json();
    assert_eq!(asked["status"], "pending");
    let (id, token) = (
        asked["id"].as_str().unwrap().to_owned(),
        asked["claim_token"].as_str().unwrap().to_owned(),
    );

    let pending = admin(&gw, "GET", "/admin/access-requests?status=pending", None).json();
    assert_eq!(pending.as_array().unwrap().len(), 1);
    assert_eq!(pending[0]["reason"], "incident 7");

    let approved = admin(
        &gw,
        "POST",
        &format!("/admin/access-requests/{id}/approve"),
        Some(&json!({"note": "go"})),
    );
    assert_eq!(approved.status, 200, "{}", approved.text());
    let approved = approved.json();
    assert_eq!(
        (approved["status"].clone(), approved["decided_by"].clone()),
        (json!("approved"), json!("admin"))
    );
    assert_eq!(approved["note"], "go");

    let claimed = claim(&gw, &id, &token);
    assert_eq!(claimed.status, 200, "{}", claimed.text());
    let claimed = claimed.json();
    let secret = claimed["key"].as_str().unwrap().to_owned();
    common::gateway::remember_issued_key(&secret);
    assert_eq!(claimed["id"], approved["key_id"]);
    let usable_after = started.elapsed();

    assert_eq!(get_with_key(gw.addr(), "/x", Some(&secret)).status, 200);
    assert_eq!(upstream.request_count(), 1);
    let key = admin(
        &gw,
        "GET",
        &format!("/admin/keys/{}", claimed["id"].as_str().unwrap()),
        None,
    )
    .json();
    assert_eq!(
        (key["rpm"].clone(), key["routes"].clone()),
        (json!(100), json!(["api"]))
    );

    // Once only.
    let again = claim(&gw, &id, &token);
    again.assert_error(410, "invalid_request_error");
    assert!(again.text().contains("already_claimed"), "{}", again.text());

    // The key dies ttl after approval (3 s), on every worker.
    let refused = time_until_status(
        gw.addr(),
        "/x",
        Some(&secret),
        401,
        8,
        started,
        Duration::from_secs(8),
    )
    .expect("the minted key never stopped working");
    assert!(
        refused >= Duration::from_millis(2500),
        "refused after {refused:?}"
    );
    eprintln!("request to usable key: {usable_after:?}; refused after {refused:?}");

    let listed = admin(&gw, "GET", "/admin/access-requests", None);
    assert_eq!(listed.json()[0]["status"], "claimed");
    assert_eq!(
        steps_of(&gw, &id),
        pairs(&[
            ("access.request", "admin"),
            ("access.approve", "admin"),
            ("access.claim", "admin"),
        ])
    );
    // Neither the key nor the claim token is anywhere in the log or the list.
    let log = std::fs::read_to_string(data_dir(&gw).join("audit.log")).unwrap();
    for text in [log, listed.text()] {
        assert!(!text.contains(&secret) && !text.contains(&token));
        assert!(!text.contains("claim_hash"));
    }
}

#[test]
fn denied_requests_wrong_tokens_and_unknown_ids() {
    let (_upstream, gw) = gateway_with("");
    let asked = ask(&gw, &json!({"name": "n", "ttl": "1h", "reason": "r"})).json();
    let (id, token) = (
        asked["id"].as_str().unwrap().to_owned(),
        asked["claim_token"].as_str().unwrap().to_owned(),
    );
    // Pending: the holder learns it is not approved yet; nobody else learns anything.
    claim(&gw, &id, &token).assert_error(409, "invalid_request_error");
    let wrong = claim(
        &gw,
        &id,
        "cfclaim_0000000000000000000000000000000000000000000",
    );
    wrong.assert_error(403, "permission_error");
    let unknown = claim(&gw, "req_aaaaaaaaaaaaaaaaaaaa", &token);
    unknown.assert_error(403, "permission_error");
    assert_eq!(wrong.text(), unknown.text());

    let denied = admin(
        &gw,
        "POST",
        &format!("/admin/access-requests/{id}/deny"),
        Some(&json!({"note": "not now"})),
    );
    assert_eq!(denied.status, 200, "{}", denied.text());
    assert_eq!(denied.json()["status"], "denied");
    admin(
        &gw,
        "POST",
        &format!("/admin/access-requests/{id}/approve"),
        None,
    )
    .assert_error(409, "invalid_request_error");
    claim(&gw, &id, &token).assert_error(410, "invalid_request_error");
    assert_eq!(admin(&gw, "GET", "/admin/keys", None).json(), json!([]));
    admin(&gw, "POST", "/admin/access-requests/req_nope/deny", None)
        .assert_error(404, "not_found_error");
    // The list and decisions need the admin token.
    admin_call(gw.admin_addr(), "GET", "/admin/access-requests", None, None)
        .assert_error(401, "authentication_error");
    assert_eq!(
        steps_of(&gw, &id),
        pairs(&[("access.request", "admin"), ("access.deny", "admin")])
    );
}

#[test]
fn keys_ask_for_themselves_and_never_approve_their_own() {
    let (_upstream, gw) = gateway_with("");
    let asker = create_key(
        &gw,
        &json!({"name": "svc", "team": "ml", "scopes": ["access:request", "access:approve"]}),
    );
    let plain = create_key(&gw, &json!({"name": "plain", "team": "ml"}));
    let approver = create_key(&gw, &json!({"name": "lead", "scopes": ["access:approve"]}));
    let body = json!({"name": "svc-jit", "ttl": "10m", "reason": "batch", "models": ["m"]});

    let made = as_key(&gw, "POST", "/admin/access-requests", &asker.secret, &body);
    assert_eq!(made.status, 201, "{}", made.text());
    let id = made.json()["id"].as_str().unwrap().to_owned();
    let listed = admin(&gw, "GET", "/admin/access-requests", None).json();
    assert_eq!(listed[0]["requester"], asker.id.as_str());
    assert_eq!(listed[0]["team"], "ml");

    // Only its own team.
    let other = json!({"name": "x", "team": "finance", "ttl": "10m", "reason": "r"});
    assert_forbidden(&as_key(
        &gw,
        "POST",
        "/admin/access-requests",
        &asker.secret,
        &other,
    ));
    // Without the scope, or without a key, nothing.
    let refused = as_key(&gw, "POST", "/admin/access-requests", &plain.secret, &body);
    assert_forbidden(&refused);
    assert!(
        refused.text().contains("access:request"),
        "{}",
        refused.text()
    );
    assert_unauthenticated(&as_key(
        &gw,
        "POST",
        "/admin/access-requests",
        "cf_nope",
        &body,
    ));
    // A key cannot list (admin only), nor use scope access:request to approve.
    assert_unauthenticated(&as_key(
        &gw,
        "GET",
        "/admin/access-requests",
        &asker.secret,
        &json!({}),
    ));
    assert_forbidden(&as_key(
        &gw,
        "POST",
        &format!("/admin/access-requests/{id}/approve"),
        &plain.secret,
        &json!({}),
    ));

    let own = as_key(
        &gw,
        "POST",
        &format!("/admin/access-requests/{id}/approve"),
        &asker.secret,
        &json!({}),
    );
    assert_forbidden(&own);
    assert!(
        own.text().contains("cannot approve their own request"),
        "{}",
        own.text()
    );
    let approved = as_key(
        &gw,
        "POST",
        &format!("/admin/access-requests/{id}/approve"),
        &approver.secret,
        &json!({"note": "ok"}),
    );
    assert_eq!(approved.status, 200, "{}", approved.text());
    assert_eq!(approved.json()["decided_by"], approver.id.as_str());
    assert_eq!(
        steps_of(&gw, &id),
        pairs(&[
            ("access.request", asker.id.as_str()),
            ("access.approve", approver.id.as_str()),
        ])
    );
}

#[test]
fn policy_approves_inside_its_envelope_and_refuses_beyond_max_ttl() {
    let (_upstream, gw) = gateway_with(POLICY);
    let inside = ask(
        &gw,
        &json!({"name": "quick", "team": "ml", "models": ["gpt-4o-mini"], "ttl": "30m",
                "reason": "notebook"}),
    );
    assert_eq!(inside.status, 201, "{}", inside.text());
    let inside = inside.json();
    assert_eq!(inside["status"], "approved");
    let id = inside["id"].as_str().unwrap();
    let claimed = claim(&gw, id, inside["claim_token"].as_str().unwrap()).json();
    common::gateway::remember_issued_key(claimed["key"].as_str().unwrap());
    let key = admin(
        &gw,
        "GET",
        &format!("/admin/keys/{}", claimed["id"].as_str().unwrap()),
        None,
    )
    .json();
    assert_eq!(key["budget_usd"], 5.0);
    assert_eq!(key["models"], json!(["gpt-4o-mini"]));
    let record = admin(&gw, "GET", "/admin/access-requests?status=claimed", None).json();
    assert_eq!(record[0]["decided_by"], "policy");
    assert_eq!(
        steps_of(&gw, id),
        pairs(&[
            ("access.request", "admin"),
            ("access.auto_approve", "policy"),
            ("access.claim", "admin"),
        ])
    );

    let longer = ask(
        &gw,
        &json!({"name": "long", "team": "ml", "models": ["gpt-4o-mini"], "ttl": "2h",
                "reason": "r"}),
    );
    assert_eq!(longer.json()["status"], "pending");

    let beyond = ask(
        &gw,
        &json!({"name": "too-long", "team": "ml", "ttl": "9h", "reason": "r"}),
    );
    beyond.assert_error(422, "invalid_request_error");
    assert!(
        beyond.text().contains("exceeds the max_ttl of 8h"),
        "{}",
        beyond.text()
    );
}

#[test]
fn every_field_a_requester_sends_is_bounded() {
    let (_upstream, gw) = gateway_with("");
    let base = json!({"name": "n", "ttl": "1h", "reason": "r"});
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    let long = "x".repeat(257);
    for (body, names) in [
        (with("models", json!(vec!["m"; 65])), "models"),
        (with("scopes", json!([long.clone()])), "scopes"),
        (with("name", json!(long.clone())), "name"),
        (with("team", json!(long.clone())), "team"),
        (with("reason", json!("r".repeat(1025))), "reason"),
        (with("ttl", json!("91d")), "ttl"),
        (with("ttl", json!("0s")), "ttl"),
        (with("budget_usd", json!(-1)), "budget_usd"),
        (with("surprise", json!(1)), "surprise"),
        (json!({"name": "n", "reason": "r"}), "ttl"),
    ] {
        let answer = ask(&gw, &body);
        answer.assert_error(400, "invalid_request_error");
        assert!(answer.text().contains(names), "{names}: {}", answer.text());
    }
    let id = ask(&gw, &base).json()["id"].as_str().unwrap().to_owned();
    let note = admin(
        &gw,
        "POST",
        &format!("/admin/access-requests/{id}/approve"),
        Some(&json!({"note": "n".repeat(1025)})),
    );
    note.assert_error(400, "invalid_request_error");
    claim(&gw, &id, &"t".repeat(10_000)).assert_error(403, "permission_error");
}

#[test]
fn the_cli_requests_approves_and_claims() {
    let (_upstream, gw) = gateway_with("");
    let config = config_path(&gw);
    let as_user = |user: &str, args: &[&str]| run_cli(&config, gw.dir(), args, &[("USER", user)]);
    let asked = as_user(
        "bob",
        &[
            "access", "request", "--name", "cli-jit", "--team", "ops", "--ttl", "1h", "--reason",
            "deploy", "--models", "a,b", "--json",
        ],
    );
    asked.assert_ok("access request");
    let asked: Value = serde_json::from_str(asked.stdout.trim()).unwrap();
    let (id, token) = (
        asked["id"].as_str().unwrap().to_owned(),
        asked["claim_token"].as_str().unwrap().to_owned(),
    );
    let table = as_user("bob", &["access", "list", "--status", "pending"]);
    table.assert_ok("access list");
    assert!(table.stdout.starts_with("ID"), "{}", table.stdout);
    assert!(table.stdout.contains(&id) && table.stdout.contains("cli:bob"));
    assert!(!table.stdout.contains(&token));

    let own = as_user("bob", &["access", "approve", &id]);
    assert_eq!(own.code, Some(1), "{}", own.output());
    assert!(
        own.stderr.contains("cannot approve their own request"),
        "{}",
        own.stderr
    );
    as_user("carol", &["access", "approve", &id, "--note", "ok"]).assert_ok("access approve");
    let claimed = as_user(
        "bob",
        &["access", "claim", &id, "--claim-token", &token, "--json"],
    );
    claimed.assert_ok("access claim");
    let claimed: Value = serde_json::from_str(claimed.stdout.trim()).unwrap();
    let secret = claimed["key"].as_str().unwrap().to_owned();
    common::gateway::remember_issued_key(&secret);
    // The running gateway sees the CLI's key within a second.
    assert!(wait_until(WAIT, || get_with_key(
        gw.addr(),
        "/",
        Some(&secret)
    )
    .status
        == 200));
    let again = as_user("bob", &["access", "claim", &id, "--claim-token", &token]);
    assert_eq!(again.code, Some(1), "{}", again.output());

    let denied_id = {
        let out = as_user(
            "bob",
            &[
                "access", "request", "--name", "x", "--ttl", "1h", "--reason", "r", "--json",
            ],
        );
        let v: Value = serde_json::from_str(out.stdout.trim()).unwrap();
        v["id"].as_str().unwrap().to_owned()
    };
    as_user("carol", &["access", "deny", &denied_id]).assert_ok("access deny");

    let audit = as_user("bob", &["audit"]);
    audit.assert_ok("audit");
    assert!(
        audit.stdout.contains("cli:carol access.approve"),
        "{}",
        audit.stdout
    );
    assert_eq!(
        steps_of(&gw, &id),
        pairs(&[
            ("access.request", "cli:bob"),
            ("access.approve", "cli:carol"),
            ("access.claim", "cli:bob"),
        ])
    );
    assert_eq!(
        steps_of(&gw, &denied_id),
        pairs(&[("access.request", "cli:bob"), ("access.deny", "cli:carol")])
    );
}

#[test]
fn the_cli_judges_its_requests_by_the_access_policy() {
    let (_upstream, gw) = gateway_with(POLICY);
    let config = config_path(&gw);
    let request = |name: &str, models: &str, ttl: &str| {
        run_cli(
            &config,
            gw.dir(),
            &[
                "access", "request", "--name", name, "--team", "ml", "--models", models, "--ttl",
                ttl, "--reason", "notebook", "--json",
            ],
            &[("USER", "bob")],
        )
    };
    // Inside the envelope: approved at once by `policy`, its key bounded by the envelope.
    let inside = request("cli-quick", "gpt-4o-mini", "30m");
    inside.assert_ok("access request inside the policy");
    let inside: Value = serde_json::from_str(inside.stdout.trim()).unwrap();
    assert_eq!(inside["status"], "approved", "{inside}");
    let key_id = inside["key_id"].as_str().unwrap();
    let key = admin(&gw, "GET", &format!("/admin/keys/{key_id}"), None).json();
    assert_eq!(key["budget_usd"], 5.0);
    let id = inside["id"].as_str().unwrap();
    assert_eq!(
        steps_of(&gw, id),
        pairs(&[
            ("access.request", "cli:bob"),
            ("access.auto_approve", "policy"),
        ])
    );

    // Outside it but within max_ttl: waits for a person.
    let longer = request("cli-longer", "gpt-4o-mini", "2h");
    longer.assert_ok("access request outside the envelope");
    assert!(
        longer.stdout.contains("\"status\":\"pending\""),
        "{}",
        longer.stdout
    );

    // Beyond max_ttl: refused with the limit, and nothing stored.
    let before = admin(&gw, "GET", "/admin/access-requests", None).json();
    let beyond = request("cli-too-long", "gpt-4o-mini", "9h");
    assert_eq!(beyond.code, Some(1), "{}", beyond.output());
    assert!(
        beyond
            .stderr
            .contains("ttl 9h exceeds the max_ttl of 8h for team \"ml\""),
        "{}",
        beyond.stderr
    );
    assert_eq!(
        admin(&gw, "GET", "/admin/access-requests", None).json(),
        before
    );
}

#[test]
fn the_same_steps_on_postgresql() {
    let server = PgServer::start();
    let pepper =
        Pepper::from_hex("5f1e0b9c2a7d4e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9011223344556677")
            .unwrap();
    let mut store =
        credentialflow::store::postgres::PgStore::open(&server.url(), pepper, "edge-1").unwrap();
    let now = credentialflow::clock::unix_now_ms();
    let asked = NewAccessRequest {
        name: "pg-jit".into(),
        team: "ml".into(),
        models: vec!["gpt-4o-mini".into()],
        ttl: "2s".into(),
        reason: "fleet".into(),
        ..NewAccessRequest::default()
    };
    let bob = Requester::Operator("cli:bob".into());
    let submitted = flow::submit(&mut store, asked.clone(), &bob, &[], now).unwrap();
    let id = submitted.request.id.clone();
    let token = submitted.claim_token.expose().to_owned();
    assert!(matches!(
        flow::approve(&mut store, &id, "cli:bob", None, now),
        Err(AccessError::Forbidden(_))
    ));
    let (_, key) = flow::approve(&mut store, &id, "cli:carol", Some("ok".into()), now).unwrap();
    assert!(matches!(
        flow::claim(&mut store, &id, "cfclaim_wrong", now),
        Err(AccessError::ClaimRefused)
    ));
    let (claimed, rotated, secret) = flow::claim(&mut store, &id, &token, now).unwrap();
    assert_eq!(claimed.status, AccessStatus::Claimed);
    assert_eq!(rotated.id, key.id);
    assert_eq!(rotated.hash, store.pepper().hash(secret.as_bytes()));
    assert!(matches!(
        flow::claim(&mut store, &id, &token, now),
        Err(AccessError::Gone("already_claimed"))
    ));

    // Denied, and an unclaimed approval that expires.
    let denied = flow::submit(&mut store, asked.clone(), &bob, &[], now).unwrap();
    flow::deny(&mut store, &denied.request.id, "cli:carol", None, now).unwrap();
    let lapsed = flow::submit(
        &mut store,
        NewAccessRequest {
            name: "pg-2".into(),
            ..asked
        },
        &bob,
        &[],
        now,
    )
    .unwrap();
    flow::approve(&mut store, &lapsed.request.id, "cli:carol", None, now).unwrap();
    assert_eq!(flow::expire_due(&mut store, now + 5_000).unwrap(), 1);
    let listed = flow::list(&mut store, None, now + 5_000).unwrap();
    let status_of = |request_id: &str| {
        listed
            .iter()
            .find(|r| r.id == request_id)
            .map(|r| r.status)
            .unwrap()
    };
    assert_eq!(listed.len(), 3);
    assert_eq!(status_of(&id), AccessStatus::Claimed);
    assert_eq!(status_of(&denied.request.id), AccessStatus::Denied);
    assert_eq!(status_of(&lapsed.request.id), AccessStatus::Expired);

    let steps: Vec<(String, String)> = store
        .read_audit()
        .unwrap()
        .into_iter()
        .filter(|e| e.request_id.as_deref() == Some(id.as_str()))
        .map(|e| (e.action, e.actor))
        .collect();
    assert_eq!(
        steps,
        pairs(&[
            ("access.request", "cli:bob"),
            ("access.approve", "cli:carol"),
            ("access.claim", "cli:bob"),
        ])
    );
    let actions: Vec<String> = store
        .read_audit()
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(actions.contains(&"access.deny".to_owned()));
    assert!(actions.contains(&"access.expire".to_owned()));
    // No token or secret anywhere in the tables.
    let mut client = server.client();
    for table in ["access_requests", "audit_log", "keys"] {
        let dump: String = client
            .query_one(
                &format!("SELECT COALESCE(string_agg(t::TEXT, ' '), '') FROM {table} t"),
                &[],
            )
            .unwrap()
            .get(0);
        assert!(!dump.contains(&token) && !dump.contains(&secret), "{table}");
    }
}
