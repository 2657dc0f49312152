//! `bedrock` providers with `assume_role` (issue 16; README, "Credentials the gateway
//! obtains"): the provider's keys only sign STS `AssumeRole` requests (to a fake STS that
//! verifies SigV4 by recomputing it), and Bedrock requests are signed with the role's
//! temporary credentials, `x-amz-security-token` carried and signed, against a fake Bedrock
//! that accepts only what the fake STS issued and still holds valid. The credentials are
//! fetched once for many calls and refreshed before they expire; a refusal of stale
//! credentials (revoked: `UnrecognizedClientException`, expired early:
//! `ExpiredTokenException`) brings one forced refresh and one retry; with STS down the
//! still-valid credentials are used, then calls get 502 `upstream_credential_unavailable`;
//! and no base secret, temporary secret, session token or signature appears in any output.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_bedrock::{FakeBedrock, REGION};
use common::fake_sts::{FakeSts, StsMode, ROLE_ARN};
use common::gateway::DIR;
use common::*;
use serde_json::{json, Value};

/// The gateway's base keys: accepted by the fake STS only, never by the fake Bedrock.
const BASE_KEY_ID: &str = "AKIABASEKEYFORSTS001";
const BASE_SECRET: &str = "base-secret-canary/7d1e0f9a8b7c6d5e4f3a2b1c";
const KEY_ENV: &str = "CF_TEST_STS_BASE_KEY_ID";
const SECRET_ENV: &str = "CF_TEST_STS_BASE_SECRET";
const SESSION_NAME: &str = "cf-bedrock-test";
const MODEL: &str = "claude-on-bedrock";
const MODEL_ID: &str = "anthropic.claude-3-haiku-20240307-v1:0";

/// A gateway config with one Bedrock provider at `bedrock` assuming the fake's role at
/// `sts_url`, an access log, client auth off, and `ai_extra` in `[ai]`.
fn sts_config(bedrock: &str, sts_url: &str, ai_extra: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
admin_listen = "127.0.0.1:0"
admin_token = "env:CF_ADMIN_TOKEN"
data_dir = "{DIR}/data"
access_log = "{DIR}/access.log"
workers = 2

[ai]
auth = "none"
{ai_extra}

[[provider]]
name = "bedrock"
kind = "bedrock"
base_url = "{bedrock}"
region = "{REGION}"
access_key_id = "env:{KEY_ENV}"
secret_access_key = "env:{SECRET_ENV}"
assume_role = {{ role_arn = "{ROLE_ARN}", sts_url = "{sts_url}", session_name = "{SESSION_NAME}", duration_s = 900 }}

[[model]]
name = "{MODEL}"
provider = "bedrock"
upstream_model = "{MODEL_ID}"
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0
"#
    )
}

/// A fake STS issuing `lifetime_s`-second credentials for the base keys, a fake Bedrock
/// taking only those (its own static key is one the gateway does not have), and a gateway
/// in front.
fn setup(lifetime_s: u64, ai_extra: &str, driver: Driver) -> (FakeSts, FakeBedrock, Gateway) {
    let sts = FakeSts::start(BASE_KEY_ID, BASE_SECRET, lifetime_s);
    let bedrock = FakeBedrock::start("AKIAUNRELATEDSTATIC0", "unrelated-static-secret", None);
    bedrock.accept_sts(sts.book());
    let gw = start(&sts, &bedrock, BASE_SECRET, ai_extra, driver);
    (sts, bedrock, gw)
}

fn start(
    sts: &FakeSts,
    bedrock: &FakeBedrock,
    base_secret: &str,
    ai_extra: &str,
    driver: Driver,
) -> Gateway {
    Gateway::builder(
        &sts_config(&bedrock.base_url(), &sts.url(), ai_extra),
        driver,
    )
    .env(KEY_ENV, BASE_KEY_ID)
    .env(SECRET_ENV, base_secret)
    .start()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Door {
    OpenAi,
    Anthropic,
}

/// One call through `door`, streamed or not.
fn call(addr: SocketAddr, door: Door, stream: bool) -> Response {
    let (path, body) = match door {
        Door::OpenAi => (
            "/v1/chat/completions",
            json!({ "model": MODEL, "stream": stream,
                "messages": [{ "role": "user", "content": "Say hello." }] }),
        ),
        Door::Anthropic => (
            "/v1/messages",
            json!({ "model": MODEL, "stream": stream, "max_tokens": 100,
                "messages": [{ "role": "user", "content": "Say hello." }] }),
        ),
    };
    let headers = [
        ("Content-Type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        ("Connection", "close"),
    ];
    roundtrip(
        addr,
        &request("POST", path, &headers, body.to_string().as_bytes()),
    )
}

/// The assistant text of an answer, whole or streamed, of either door.
fn text_of(response: &Response, door: Door, stream: bool) -> String {
    if !stream {
        let body = response.json();
        return match door {
            Door::OpenAi => body["choices"][0]["message"]["content"].as_str(),
            Door::Anthropic => body["content"][0]["text"].as_str(),
        }
        .unwrap_or_default()
        .to_string();
    }
    String::from_utf8_lossy(&response.body)
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
        .filter_map(|e| match door {
            Door::OpenAi => e["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from),
            Door::Anthropic => e["delta"]["text"].as_str().map(String::from),
        })
        .collect()
}

/// The access key id a request to the fake Bedrock was signed with.
fn signing_key_id(request: &common::fake_server::RecordedRequest) -> String {
    request
        .header("authorization")
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
        .unwrap_or_default()
        .to_string()
}

/// The value of the Prometheus sample `series` (name and labels, exactly) in `metrics`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

on_both_drivers! {
    fn both_doors_are_signed_with_the_roles_temporary_credentials(driver) {
        let (sts, bedrock, gw) = setup(300, "", driver);
        for door in [Door::OpenAi, Door::Anthropic] {
            for stream in [false, true] {
                let response = call(gw.addr(), door, stream);
                assert_eq!(response.status, 200, "{door:?} {stream}: {}", response.text());
                assert_eq!(text_of(&response, door, stream), common::fake_bedrock::DEFAULT_REPLY);
            }
        }
        assert_eq!(sts.request_count(), 1, "one AssumeRole for every call");
        let issued = sts.book().issued();
        assert_eq!(issued.len(), 1);
        let temporary = &issued[0];
        assert!(temporary.access_key_id.starts_with("ASIA"));
        for sent in bedrock.requests() {
            assert_eq!(signing_key_id(&sent), temporary.access_key_id, "signed with the role's key, not the base key");
            assert_eq!(sent.header("x-amz-security-token"), Some(temporary.session_token.as_str()));
            let authorization = sent.header("authorization").unwrap();
            assert!(
                authorization.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"),
                "the session token is signed: {authorization}"
            );
            assert!(authorization.contains(&format!("/{REGION}/bedrock/aws4_request")), "{authorization}");
        }
        assert_eq!(bedrock.request_count(), 4);
        assert_eq!(bedrock.refused(), 0, "every signature checked out");
        // The AssumeRole request is the configured one, signed with the base key.
        let form = sts.last_form();
        for (name, value) in [
            ("Action", "AssumeRole"),
            ("RoleArn", ROLE_ARN),
            ("RoleSessionName", SESSION_NAME),
            ("DurationSeconds", "900"),
        ] {
            assert!(form.contains(&(name.to_string(), value.to_string())), "{name}: {form:?}");
        }
        let assume = sts.last_request();
        assert!(assume.header("authorization").unwrap().contains(&format!("Credential={BASE_KEY_ID}/")));
        assert_eq!(assume.header("x-amz-security-token"), None, "long-lived base keys");
        // The source's metrics, under the provider's name.
        let metrics = gw.admin_get("/metrics").text();
        assert_eq!(
            sample(&metrics, "credentialflow_credential_refresh_total{credential=\"bedrock\",result=\"ok\"}"),
            Some(1.0),
            "{metrics}"
        );
        let expiry = sample(&metrics, "credentialflow_credential_expiry_seconds{credential=\"bedrock\"}")
            .unwrap_or_else(|| panic!("no expiry gauge in {metrics}"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((now + 200.0..=now + 301.0).contains(&expiry), "expires at {expiry}, now {now}");
    }
}

on_default_driver! {
    fn ten_seconds_of_traffic_while_credentials_expire_every_2s_fail_nothing(driver) {
        let started = Instant::now();
        let (sts, bedrock, gw) = setup(2, "", driver);
        let addr = gw.addr();
        let done = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let until = Instant::now() + Duration::from_secs(10);
        let clients: Vec<_> = (0..2)
            .map(|c| {
                let (done, failed) = (Arc::clone(&done), Arc::clone(&failed));
                std::thread::spawn(move || {
                    let mut i = c;
                    let mut failures = Vec::new();
                    while Instant::now() < until {
                        let door = if i % 2 == 0 { Door::OpenAi } else { Door::Anthropic };
                        let stream = (i / 2) % 2 == 1;
                        let response = call(addr, door, stream);
                        if response.status != 200
                            || text_of(&response, door, stream) != common::fake_bedrock::DEFAULT_REPLY
                        {
                            failed.fetch_add(1, Ordering::SeqCst);
                            failures.push(format!("{door:?} {stream}: {} {}", response.status, response.text()));
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                        i += 2;
                    }
                    failures
                })
            })
            .collect();
        let failures: Vec<String> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
        let elapsed = started.elapsed().as_secs_f64();
        let requests = done.load(Ordering::SeqCst);
        let sts_calls = sts.request_count();
        // One at start, then one at each 80% of a 2 s lifetime.
        let expected = 1.0 + elapsed / 1.6;
        println!(
            "10 s of traffic, credentials of 2 s: {requests} requests, {} failed, {sts_calls} STS calls, \
             {expected:.1} expected ({elapsed:.1} s from start)",
            failed.load(Ordering::SeqCst)
        );
        assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(3)]);
        assert_eq!(bedrock.refused(), 0, "{:?}", bedrock.refusals());
        assert!(requests >= 50, "only {requests} requests in 10 s");
        assert!(
            (sts_calls as f64 - expected).abs() <= 2.0,
            "{sts_calls} STS calls, {expected:.1} expected"
        );
        assert!(sts_calls * 5 < requests, "STS hit per request: {sts_calls} for {requests}");
        // Every refresh was put to use: the calls were signed with most of the sets issued.
        let used: BTreeSet<String> = bedrock.requests().iter().map(signing_key_id).collect();
        assert!(used.len() + 1 >= sts_calls, "{} key ids used of {sts_calls} issued", used.len());
        assert!(used.iter().all(|id| id.starts_with("ASIA")), "{used:?}");
    }
}

on_default_driver! {
    fn sigv4_with_temporary_credentials_holds_across_an_sts_refresh(driver) {
        let (sts, bedrock, gw) = setup(2, "", driver);
        let before = call(gw.addr(), Door::OpenAi, false);
        assert_eq!(before.status, 200, "{}", before.text());
        let first = bedrock.last_request();
        // The refresh at 80% of the lifetime brings a second set while the first is valid.
        assert!(wait_until(WAIT, || sts.request_count() >= 2), "no refresh");
        std::thread::sleep(Duration::from_millis(100));
        let after = call(gw.addr(), Door::Anthropic, true);
        assert_eq!(after.status, 200, "{}", after.text());
        let second = bedrock.last_request();
        let issued = sts.book().issued();
        let (id_before, id_after) = (signing_key_id(&first), signing_key_id(&second));
        assert_ne!(id_before, id_after, "the refreshed credentials sign the later call");
        for (sent, id) in [(&first, &id_before), (&second, &id_after)] {
            let set = issued
                .iter()
                .find(|c| &c.access_key_id == id)
                .unwrap_or_else(|| panic!("{id} was not issued by STS"));
            assert_eq!(sent.header("x-amz-security-token"), Some(set.session_token.as_str()));
        }
        assert_eq!(bedrock.refused(), 0, "both signatures checked out");
    }
}

on_both_drivers! {
    fn stale_credentials_are_refreshed_once_and_the_call_retried(driver) {
        // Revoked (AWS no longer recognises the session), then expired before the gateway
        // expected (a skewed clock): each on its own gateway, as forced refreshes are
        // rate-limited per source. No retries of the call's own: the second try is the
        // refresh's.
        for (stale, refusal) in [("revoked", "UnrecognizedClientException"), ("expired", "ExpiredTokenException")] {
            let (sts, bedrock, gw) = setup(300, "max_retries = 0", driver);
            assert_eq!(call(gw.addr(), Door::OpenAi, false).status, 200);
            match stale {
                "revoked" => sts.book().revoke_all(),
                _ => sts.book().expire_all(),
            }
            let response = call(gw.addr(), Door::Anthropic, false);
            assert_eq!(response.status, 200, "{stale}: {}", response.text());
            assert_eq!(sts.request_count(), 2, "{stale}: one forced refresh");
            assert_eq!(bedrock.refusals(), [refusal], "{stale}");
            let issued = sts.book().issued();
            let used: Vec<String> = bedrock.requests().iter().map(signing_key_id).collect();
            let (old, new) = (issued[0].access_key_id.clone(), issued[1].access_key_id.clone());
            assert_eq!(used, [old.clone(), old, new.clone()], "{stale}: refused once, retried with the new set");
            // Later calls, streamed too, go with the new set without another refresh.
            assert_eq!(call(gw.addr(), Door::OpenAi, true).status, 200);
            assert_eq!(signing_key_id(&bedrock.last_request()), new);
            assert_eq!(sts.request_count(), 2);
        }
    }
}

on_default_driver! {
    fn static_keys_refused_are_answered_at_once_without_a_refresh(driver) {
        // Static keys cannot be refreshed: the refusal goes to the client without waiting
        // for a newer credential that will never come.
        let bedrock = FakeBedrock::start("AKIAUNRELATEDSTATIC0", "unrelated-static-secret", None);
        let config = sts_config(&bedrock.base_url(), "http://127.0.0.1:9", "max_retries = 0")
            .lines()
            .filter(|line| !line.starts_with("assume_role"))
            .collect::<Vec<_>>()
            .join("\n");
        let gw = Gateway::builder(&config, driver)
            .env(KEY_ENV, BASE_KEY_ID)
            .env(SECRET_ENV, BASE_SECRET)
            .start();
        let sent = Instant::now();
        let response = call(gw.addr(), Door::OpenAi, false);
        let took = sent.elapsed();
        assert_eq!(response.status, 502, "{}", response.text());
        assert_eq!(response.json()["error"]["code"], "provider_credential_refused");
        assert_eq!(bedrock.refusals(), ["UnrecognizedClientException"]);
        assert!(took < Duration::from_secs(2), "waited {took:?} for a refresh");
    }
}

on_default_driver! {
    fn with_sts_down_the_valid_credentials_are_used_then_calls_get_502(driver) {
        let (sts, bedrock, gw) = setup(5, "", driver);
        sts.set_mode(StsMode::Down);
        // The refresh at 4 s fails; the credentials stay in use until they expire at 5 s.
        assert!(
            wait_until(WAIT, || gw.stderr().contains("fetch failed")),
            "{}",
            gw.stderr()
        );
        let response = call(gw.addr(), Door::OpenAi, false);
        assert_eq!(response.status, 200, "still valid: {}", response.text());
        assert_eq!(bedrock.request_count(), 1);
        assert!(
            gw.stderr().contains("keeping the current credential"),
            "{}",
            gw.stderr()
        );
        let mut last = None;
        assert!(
            wait_until(WAIT, || {
                let response = call(gw.addr(), Door::OpenAi, false);
                let gone = response.status == 502;
                last = Some(response);
                gone
            }),
            "never 502"
        );
        let refused = last.unwrap();
        assert_eq!(refused.json()["error"]["code"], "upstream_credential_unavailable", "{}", refused.text());
        let sent = bedrock.request_count();
        for door in [Door::OpenAi, Door::Anthropic] {
            let response = call(gw.addr(), door, true);
            assert_eq!(response.status, 502, "{}", response.text());
        }
        assert_eq!(bedrock.request_count(), sent, "nothing sent without credentials");
        assert_eq!(bedrock.refused(), 0, "no expired credentials were sent");
        // STS back: the source's retry finds credentials and calls pass again.
        sts.set_mode(StsMode::Issue);
        assert!(
            wait_until(Duration::from_secs(20), || call(gw.addr(), Door::OpenAi, false).status == 200),
            "recovers once STS issues again"
        );
        let metrics = gw.admin_get("/metrics").text();
        let errors = sample(&metrics, "credentialflow_credential_refresh_total{credential=\"bedrock\",result=\"error\"}");
        assert!(errors.is_some_and(|n| n >= 1.0), "{metrics}");
    }
}

on_default_driver! {
    fn no_base_secret_temporary_secret_session_token_or_signature_appears_in_any_output(driver) {
        let (sts, bedrock, gw) = setup(300, "", driver);
        let mut seen = Vec::new();
        for door in [Door::OpenAi, Door::Anthropic] {
            for stream in [false, true] {
                let response = call(gw.addr(), door, stream);
                assert_eq!(response.status, 200, "{}", response.text());
                seen.push(response.text());
            }
        }
        // A refusal a refresh cures, then one it cannot (forced refreshes are rate-limited):
        // Bedrock's refusal reaches the client as the gateway's error.
        sts.book().revoke_all();
        seen.push(call(gw.addr(), Door::OpenAi, false).text());
        sts.book().revoke_all();
        let refused = call(gw.addr(), Door::OpenAi, false);
        assert_eq!(refused.status, 502, "{}", refused.text());
        seen.push(refused.text());
        // A gateway whose base secret STS refuses (its error quotes the canonical request,
        // which holds the base session token): no credentials, 502.
        let wrong_secret = "wrong-base-secret-canary/0a9b8c7d6e5f";
        let base_token = "FwoGZXIvYXdzBASESESSIONTOKENCANARY0123456789";
        sts.require_base_session_token(base_token);
        let config = sts_config(&bedrock.base_url(), &sts.url(), "")
            .replace("secret_access_key = ", "session_token = \"env:CF_TEST_STS_BASE_TOKEN\"\nsecret_access_key = ");
        let gw_refused = Gateway::builder(&config, driver)
            .env(KEY_ENV, BASE_KEY_ID)
            .env(SECRET_ENV, wrong_secret)
            .env("CF_TEST_STS_BASE_TOKEN", base_token)
            .start();
        let unavailable = call(gw_refused.addr(), Door::OpenAi, false);
        assert_eq!(unavailable.status, 502, "{}", unavailable.text());
        assert_eq!(unavailable.json()["error"]["code"], "upstream_credential_unavailable");
        seen.push(unavailable.text());
        assert!(
            wait_until(WAIT, || gw_refused.stderr().contains("SignatureDoesNotMatch")),
            "{}",
            gw_refused.stderr()
        );
        seen.push(gw_refused.stderr());
        seen.push(gw_refused.admin_get("/metrics").text());
        seen.push(gw.admin_get("/metrics").text());
        // Let the access log catch up before reading it.
        std::thread::sleep(Duration::from_millis(300));
        seen.push(std::fs::read_to_string(gw.dir().join("access.log")).unwrap_or_default());
        seen.push(std::fs::read_to_string(gw_refused.dir().join("access.log")).unwrap_or_default());
        seen.push(gw.stderr());

        let issued = sts.book().issued();
        assert!(issued.len() >= 2, "{issued:?}");
        let signatures: Vec<String> = bedrock
            .requests()
            .iter()
            .chain(sts.requests().iter())
            .filter_map(|r| r.header("authorization")?.split("Signature=").nth(1).map(String::from))
            .collect();
        assert!(signatures.len() >= 8, "{signatures:?}");
        let mut secrets = vec![BASE_SECRET.to_string(), wrong_secret.to_string(), base_token.to_string()];
        for set in &issued {
            secrets.push(set.secret_access_key.clone());
            secrets.push(set.session_token.clone());
        }
        secrets.extend(signatures);
        for text in &seen {
            for secret in &secrets {
                assert!(!text.contains(secret.as_str()), "a secret ({} bytes) in {text}", secret.len());
            }
        }
    }
}
