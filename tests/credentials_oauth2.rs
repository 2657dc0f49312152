//! Upstreams whose credential the gateway obtains itself with the OAuth2 client credentials
//! grant (issue 16; README, "Credentials the gateway obtains"): tokens fetched once per
//! process and refreshed at 80% of their lifetime under traffic, a 401 answered by one
//! forced refresh and one retry, the still-valid token used while the token endpoint is
//! down and 502 `upstream_credential_unavailable` once it has expired. The fake token
//! endpoint is itself checked against a reference client (requests-oauthlib).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::fake_oauth::{ClientAuth, FakeProtected, FakeTokenEndpoint, TokenMode};
use common::*;

const CLIENT_ID: &str = "gateway-client";
const CLIENT_SECRET: &str = "oauth-client-secret-4be1c9d07a";
const SECRET_ENV: &str = "CF_TEST_OAUTH_SECRET";

/// A gateway config with upstream `backend` at `target` taking tokens from `token_url` with
/// client auth `method`, and a route `/` to it without client auth.
fn oauth_config(target: &str, token_url: &str, method: &str) -> String {
    config(&format!(
        r#"
[[upstream]]
name = "backend"
targets = ["{target}"]
credential = {{ oauth2 = {{ token_url = "{token_url}", client_id = "{CLIENT_ID}", client_secret = "env:{SECRET_ENV}", scope = "read write", audience = "https://api.partner.example", auth_method = "{method}" }} }}

[[route]]
name = "api"
path_prefix = "/"
upstream = "backend"
auth = "none"
"#
    ))
}

/// The token endpoint issuing `lifetime_s`-second tokens, the upstream taking them, and a
/// gateway in front using client auth `method`.
fn setup(
    lifetime_s: u64,
    method: &str,
    driver: Driver,
) -> (FakeTokenEndpoint, FakeProtected, Gateway) {
    let idp = FakeTokenEndpoint::start(CLIENT_ID, CLIENT_SECRET, lifetime_s);
    let upstream = FakeProtected::start(idp.book());
    let gw = Gateway::builder(
        &oauth_config(&upstream.target(), &idp.token_url(), method),
        driver,
    )
    .env(SECRET_ENV, CLIENT_SECRET)
    .start();
    (idp, upstream, gw)
}

/// `credentialflow_credential_refresh_total{credential="backend",result}` from `/metrics`.
fn refreshes(gw: &Gateway, result: &str) -> u64 {
    let scrape = gw.admin_get("/metrics").text();
    let series = format!(
        "credentialflow_credential_refresh_total{{credential=\"backend\",result=\"{result}\"}} "
    );
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .unwrap_or_else(|| panic!("no {series} in\n{scrape}"))
        .parse()
        .unwrap()
}

/// Runs the reference client with client auth `method`; its stdout (the token response as
/// JSON) or its stderr as the error.
fn reference_client(
    token_url: &str,
    secret: &str,
    method: &str,
) -> Result<serde_json::Value, String> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/oauth2_client_credentials.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .env("CF_TOKEN_URL", token_url)
        .env("CF_CLIENT_ID", CLIENT_ID)
        .env("CF_CLIENT_SECRET", secret)
        .env("CF_AUTH_METHOD", method)
        .env("CF_SCOPE", "read write")
        .output()
        .expect("run python3 (scripts/test.sh installs requests-oauthlib)");
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("JSON token response"))
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn the_fake_token_endpoint_serves_the_reference_client_with_basic_and_form_auth() {
    let idp = FakeTokenEndpoint::start(CLIENT_ID, "s3cret with spaces&symbols:", 120);
    for (method, seen) in [("basic", ClientAuth::Basic), ("form", ClientAuth::Form)] {
        let token = reference_client(&idp.token_url(), "s3cret with spaces&symbols:", method)
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        assert_eq!(token["token_type"], "Bearer", "{method}: {token}");
        assert_eq!(token["expires_in"], 120, "{method}: {token}");
        let access = token["access_token"].as_str().unwrap();
        assert!(idp.book().is_valid(access), "{method}: token not issued");
        assert_eq!(idp.last_auth(), Some(seen), "{method}");
        let form = idp.last_form();
        assert!(
            form.contains(&("grant_type".into(), "client_credentials".into())),
            "{form:?}"
        );
        assert!(
            form.contains(&("scope".into(), "read write".into())),
            "{form:?}"
        );
    }
    // A wrong secret is refused, by either method, with the error the RFC names.
    for method in ["basic", "form"] {
        let err = reference_client(&idp.token_url(), "wrong", method).unwrap_err();
        assert!(err.contains("invalid_client"), "{method}: {err}");
    }
    assert_eq!(idp.book().tokens().len(), 2);
}

on_default_driver! {
    fn tokens_expiring_every_2s_are_refreshed_under_10s_of_traffic(driver) {
        let (idp, upstream, gw) = setup(2, "basic", driver);
        let started = Instant::now();
        let (mut ok, mut failed) = (0u64, 0u64);
        let mut client = Client::connect(gw.addr());
        while started.elapsed() < Duration::from_secs(10) {
            // The client's own Authorization is never forwarded; the gateway's token is.
            client.send(&request("GET", "/data", &[("Authorization", "Bearer client-own")], b""));
            let response = client.read_response();
            if response.status == 200 {
                ok += 1;
            } else {
                failed += 1;
                eprintln!("failed: {} {}", response.status, response.text());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let hits = idp.request_count();
        let expected = 10.0 / (0.8 * 2.0) + 1.0;
        println!(
            "10 s of traffic, 2 s tokens: {ok} requests ok, {failed} failed, \
             {hits} token requests (expected about {expected:.1}), {} refused by the upstream",
            upstream.refused_count()
        );
        assert_eq!(failed, 0, "every request passes");
        assert!(ok > 100, "enough traffic to mean something: {ok}");
        assert!((5..=10).contains(&hits), "token requests in proportion to lifetimes: {hits}");
        assert_eq!(upstream.refused_count(), 0, "no request went with an expired token");
        let last = upstream.last_request();
        let sent = last.header("authorization").unwrap();
        assert!(sent.starts_with("Bearer fake-access-token-"), "{sent}");
        assert_eq!(idp.last_auth(), Some(ClientAuth::Basic));
        assert!(refreshes(&gw, "ok") as usize >= hits - 1);
        assert_eq!(refreshes(&gw, "error"), 0);
    }
}

on_both_drivers! {
    fn a_revoked_token_is_refreshed_once_and_the_request_retried(driver) {
        let (idp, upstream, gw) = setup(300, "form", driver);
        assert_eq!(idp.request_count(), 1, "one token at start");
        assert_eq!(http_get(gw.addr(), "/a").status, 200);
        idp.book().revoke_all();
        let response = http_get(gw.addr(), "/b");
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(idp.request_count(), 2, "one forced refresh");
        assert_eq!(upstream.refused_count(), 1, "the first try was refused");
        let paths: Vec<String> = upstream.requests().iter().map(|r| r.path.clone()).collect();
        assert_eq!(paths, ["/a", "/b", "/b"], "retried once");
        assert_eq!(idp.last_auth(), Some(ClientAuth::Form));
    }
}

on_default_driver! {
    fn a_refused_post_with_a_body_is_relayed_and_the_token_still_refreshed(driver) {
        let (idp, upstream, gw) = setup(300, "basic", driver);
        idp.book().revoke_all();
        let response = roundtrip(gw.addr(), &request("POST", "/orders", &[], b"{\"n\":1}"));
        assert_eq!(response.status, 401, "not repeatable: relayed");
        assert_eq!(upstream.request_count(), 1, "sent once");
        // The refresh it asked for lands; the next request goes with the new token.
        assert!(wait_until(WAIT, || idp.request_count() == 2), "forced refresh");
        let response = roundtrip(gw.addr(), &request("POST", "/orders", &[], b"{\"n\":2}"));
        assert_eq!(response.status, 200, "{}", response.text());
    }
}

on_both_drivers! {
    fn a_down_token_endpoint_keeps_the_valid_token_then_answers_502(driver) {
        let (idp, upstream, gw) = setup(3, "basic", driver);
        let issued = Instant::now();
        idp.set_mode(TokenMode::Down);
        // Valid until 3 s after issue: requests pass although refreshes fail from 2.4 s.
        while issued.elapsed() < Duration::from_millis(2700) {
            let response = http_get(gw.addr(), "/still");
            assert_eq!(response.status, 200, "at {:?}: {}", issued.elapsed(), response.text());
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(wait_until(WAIT, || refreshes(&gw, "error") >= 1), "a failed refresh counted");
        std::thread::sleep(Duration::from_secs(3).saturating_sub(issued.elapsed()) + Duration::from_millis(200));
        let before = upstream.request_count();
        let response = http_get(gw.addr(), "/expired");
        response.assert_error(502, "upstream_error");
        assert_eq!(response.json()["error"]["code"], "upstream_credential_unavailable");
        assert_eq!(upstream.request_count(), before, "nothing sent without a token");
        assert!(gw.stderr().contains("fetch failed"), "a log line per failure");
        // Back up: the retry with backoff finds it.
        idp.set_mode(TokenMode::Issue);
        assert!(
            wait_until(WAIT, || http_get(gw.addr(), "/again").status == 200),
            "recovers once the endpoint answers"
        );
    }
}

on_default_driver! {
    fn an_invalid_client_answer_is_logged_by_its_code_without_the_echoed_secret(driver) {
        let idp = FakeTokenEndpoint::start(CLIENT_ID, CLIENT_SECRET, 300);
        idp.set_mode(TokenMode::InvalidClient);
        let upstream = FakeProtected::start(idp.book());
        // The sweep fails the test if the gateway ever prints the secret the fake echoes.
        let gw = Gateway::builder(&oauth_config(&upstream.target(), &idp.token_url(), "basic"), driver)
            .env(SECRET_ENV, CLIENT_SECRET)
            .start();
        let response = http_get(gw.addr(), "/x");
        assert_eq!(response.status, 502);
        assert!(!response.text().contains(CLIENT_SECRET));
        assert!(
            wait_until(WAIT, || gw.stderr().contains("error invalid_client")),
            "{}",
            gw.stderr()
        );
        assert!(!gw.stderr().contains(CLIENT_SECRET));
    }
}

on_default_driver! {
    fn upstreams_with_the_same_settings_share_one_source_which_a_reload_keeps(driver) {
        let idp = FakeTokenEndpoint::start(CLIENT_ID, CLIENT_SECRET, 300);
        let upstream = FakeProtected::start(idp.book());
        let base = oauth_config(&upstream.target(), &idp.token_url(), "form");
        let twin = base
            .split("[[upstream]]")
            .nth(1)
            .and_then(|s| s.split("[[route]]").next())
            .unwrap()
            .replace("name = \"backend\"", "name = \"twin\"");
        let with_twin = format!(
            "{base}\n[[upstream]]{twin}\n{}",
            route_toml("twin", "/twin/", "twin", "")
        );
        let gw = Gateway::builder(&with_twin, driver)
            .env(SECRET_ENV, CLIENT_SECRET)
            .start();
        assert_eq!(idp.request_count(), 1, "one fetch for both upstreams");
        assert_eq!(http_get(gw.addr(), "/one").status, 200);
        assert_eq!(http_get(gw.addr(), "/twin/two").status, 200);
        // A reload that leaves the credential settings alone keeps the running source.
        gw.write_config(&format!("{with_twin}\n{}", route_toml("more", "/more/", "backend", "")));
        assert_eq!(gw.reload_admin().status, 200);
        assert_eq!(http_get(gw.addr(), "/more/x").status, 200);
        assert_eq!(idp.request_count(), 1, "no refetch on reload");
    }
}

#[test]
fn check_validates_oauth2_settings_without_contacting_the_token_endpoint() {
    let idp = FakeTokenEndpoint::start(CLIENT_ID, CLIENT_SECRET, 300);
    let good = oauth_config("127.0.0.1:9", &idp.token_url(), "basic")
        .replace(&format!("env:{SECRET_ENV}"), "literal-check-secret");
    let out = check_config(&good);
    assert_eq!(out.code, Some(0), "{}", out.output());
    assert_eq!(idp.request_count(), 0, "check contacts nothing");
    assert!(!out.output().contains("literal-check-secret"));

    let cases = [
        (
            good.replace(&idp.token_url(), "ftp://idp/token"),
            "credential.oauth2.token_url",
        ),
        (
            good.replace(&idp.token_url(), "http://idp.example/token"),
            "credential.oauth2.token_url",
        ),
        (
            good.replace(&format!("client_id = \"{CLIENT_ID}\""), "client_id = \"\""),
            "credential.oauth2.client_id",
        ),
        (
            good.replace("auth_method = \"basic\"", "auth_method = \"digest\""),
            "credential.oauth2.auth_method",
        ),
        (
            good.replace("client_secret = \"literal-check-secret\", ", ""),
            "credential.oauth2.client_secret",
        ),
    ];
    for (config, path) in cases {
        let out = check_config(&config);
        assert_ne!(out.code, Some(0), "{path}: {}", out.output());
        assert!(out.output().contains(path), "{path}: {}", out.output());
        assert!(!out.output().contains("literal-check-secret"));
    }
}
