//! `azure_openai` providers authenticated with Entra ID tokens (issue 16; README,
//! "Credentials the gateway obtains"): the gateway obtains a token with the client
//! credentials grant at `{authority}/{tenant_id}/oauth2/v2.0/token` (scope
//! `https://cognitiveservices.azure.com/.default`, secret in the body), sends it as
//! `Authorization: Bearer` with no `api-key`, fetches it once for many calls, refreshes it
//! once when Azure answers 401 and retries the call, answers 502
//! `upstream_credential_unavailable` when it has none, and never shows the token or the
//! client secret. The Azure fake accepts only tokens the fake token endpoint issued and
//! still holds valid.

mod common;

use std::net::SocketAddr;

use common::fake_oauth::{form_decode, ClientAuth, FakeTokenEndpoint, TokenMode};
use common::*;
use serde_json::{json, Value};

const TENANT: &str = "contoso.onmicrosoft.com";
const CLIENT_ID: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
const CLIENT_SECRET: &str = "entra-client-secret-canary-58d2c7a1f0";
const SECRET_ENV: &str = "CF_TEST_ENTRA_SECRET";
const MODEL: &str = "azure-gpt";
const DEPLOYMENT: &str = "prod-gpt4o";
const SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// A gateway config with one Entra-authenticated Azure provider at `azure`, tokens from the
/// Entra authority `authority`, client auth off on the AI front doors, and `ai_extra` in
/// `[ai]`.
fn entra_config(azure: &str, authority: &str, ai_extra: &str) -> String {
    config(&format!(
        r#"
[ai]
auth = "none"
{ai_extra}

[[provider]]
name = "azure"
kind = "azure_openai"
base_url = "{azure}"
api_version = "2024-10-21"
entra = {{ tenant_id = "{TENANT}", client_id = "{CLIENT_ID}", client_secret = "env:{SECRET_ENV}", authority = "{authority}" }}

[[model]]
name = "{MODEL}"
provider = "azure"
upstream_model = "{DEPLOYMENT}"
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0
"#
    ))
}

/// The Entra fake issuing `lifetime_s`-second tokens, the Azure fake taking only them, and a
/// gateway in front.
fn setup(
    lifetime_s: u64,
    ai_extra: &str,
    driver: Driver,
) -> (FakeTokenEndpoint, FakeOpenAi, Gateway) {
    let entra = FakeTokenEndpoint::start(CLIENT_ID, CLIENT_SECRET, lifetime_s);
    let azure = FakeOpenAi::start();
    azure.require_entra(entra.book());
    let gw = start(&entra, &azure, ai_extra, driver);
    (entra, azure, gw)
}

fn start(entra: &FakeTokenEndpoint, azure: &FakeOpenAi, ai_extra: &str, driver: Driver) -> Gateway {
    Gateway::builder(
        &entra_config(&azure.base_url(), &entra.base_url(), ai_extra),
        driver,
    )
    .env(SECRET_ENV, CLIENT_SECRET)
    .start()
}

/// `POST /v1/chat/completions` for the Azure model, streamed or not.
fn chat(addr: SocketAddr, stream: bool) -> Response {
    let body = json!({
        "model": MODEL,
        "messages": [{ "role": "user", "content": "Say hello." }],
        "stream": stream,
    });
    let headers = [
        ("Content-Type", "application/json"),
        ("Connection", "close"),
    ];
    roundtrip(
        addr,
        &request(
            "POST",
            "/v1/chat/completions",
            &headers,
            body.to_string().as_bytes(),
        ),
    )
}

/// The assistant text of a streamed answer, its deltas joined.
fn streamed_text(response: &Response) -> String {
    String::from_utf8_lossy(&response.body)
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .filter(|data| *data != "[DONE]" && !data.is_empty())
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|event| {
            event["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

on_both_drivers! {
    fn chat_plain_and_streamed_goes_with_one_entra_token_and_no_api_key(driver) {
        let (entra, azure, gw) = setup(300, "", driver);
        for i in 0..10 {
            let response = chat(gw.addr(), i % 2 == 1);
            assert_eq!(response.status, 200, "{}", response.text());
            if i % 2 == 1 {
                assert_eq!(streamed_text(&response), common::fake_openai::DEFAULT_REPLY);
            } else {
                assert_eq!(response.json()["model"], MODEL);
                assert_eq!(
                    response.json()["choices"][0]["message"]["content"],
                    common::fake_openai::DEFAULT_REPLY
                );
            }
        }
        assert_eq!(entra.request_count(), 1, "one token for every call");
        let issued = entra.book().tokens();
        assert_eq!(issued.len(), 1);
        for seen in azure.requests() {
            assert!(seen.path.starts_with(&format!("/openai/deployments/{DEPLOYMENT}/")), "{}", seen.target);
            assert_eq!(seen.header("authorization"), Some(format!("Bearer {}", issued[0]).as_str()));
            assert_eq!(seen.header("api-key"), None, "no api-key next to the token");
        }
        assert_eq!(azure.request_count(), 10);
        // The token request is Entra's: tenant path, Cognitive Services scope, secret in the body.
        let token_request = entra.last_request();
        assert_eq!(token_request.path, format!("/{TENANT}/oauth2/v2.0/token"));
        assert_eq!(entra.last_auth(), Some(ClientAuth::Form));
        let form = entra.last_form();
        assert!(form.contains(&("scope".to_string(), SCOPE.to_string())), "{form:?}");
        assert!(form.contains(&("client_id".to_string(), CLIENT_ID.to_string())), "{form:?}");
        assert!(form.contains(&("grant_type".to_string(), "client_credentials".to_string())));
        let sent = form_decode(&String::from_utf8_lossy(&token_request.body));
        assert!(sent.contains(&format!("client_secret={CLIENT_SECRET}")), "{sent}");
    }
}

on_both_drivers! {
    fn a_revoked_entra_token_is_refreshed_once_and_the_call_retried(driver) {
        // No retries of the call's own: the second try is the refresh's.
        let (entra, azure, gw) = setup(300, "max_retries = 0", driver);
        assert_eq!(chat(gw.addr(), false).status, 200);
        entra.book().revoke_all();
        let response = chat(gw.addr(), false);
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(entra.request_count(), 2, "one forced refresh");
        let sent: Vec<String> = azure
            .requests()
            .iter()
            .map(|r| r.header("authorization").unwrap_or_default().to_string())
            .collect();
        let issued = entra.book().tokens();
        let first = format!("Bearer {}", issued[0]);
        let second = format!("Bearer {}", issued[1]);
        assert_eq!(sent, [first.clone(), first, second.clone()], "refused once, retried with the new token");
        // Streamed calls keep using the new token.
        let response = chat(gw.addr(), true);
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(azure.last_request().header("authorization"), Some(second.as_str()));
        assert_eq!(entra.request_count(), 2);
    }
}

on_default_driver! {
    fn without_a_token_a_model_with_fallbacks_is_served_by_them(driver) {
        let entra = FakeTokenEndpoint::start(CLIENT_ID, CLIENT_SECRET, 300);
        entra.set_mode(TokenMode::InvalidClient);
        let azure = FakeOpenAi::start();
        azure.require_entra(entra.book());
        let text = entra_config(&azure.base_url(), &entra.base_url(), "").replace(
            &format!("upstream_model = \"{DEPLOYMENT}\"\n"),
            &format!("upstream_model = \"{DEPLOYMENT}\"\nfallbacks = [\"backup\"]\n"),
        ) + r#"
[[provider]]
name = "mock"
kind = "mock"
base_url = "http://mock.invalid"

[[model]]
name = "backup"
provider = "mock"
upstream_model = "mock-gpt"
"#;
        let gw = Gateway::builder(&text, driver)
            .env(SECRET_ENV, CLIENT_SECRET)
            .start();
        for stream in [false, true] {
            let response = chat(gw.addr(), stream);
            assert_eq!(response.status, 200, "{}", response.text());
        }
        assert_eq!(azure.request_count(), 0, "nothing sent to Azure without a token");
        assert!(!gw.stderr().contains(CLIENT_SECRET));
    }
}

on_default_driver! {
    fn without_a_token_calls_get_502_upstream_credential_unavailable(driver) {
        let entra = FakeTokenEndpoint::start(CLIENT_ID, CLIENT_SECRET, 300);
        // A rotated secret: the endpoint refuses the client (and echoes the secret it got).
        entra.set_mode(TokenMode::InvalidClient);
        let azure = FakeOpenAi::start();
        azure.require_entra(entra.book());
        let gw = start(&entra, &azure, "", driver);
        for stream in [false, true] {
            let response = chat(gw.addr(), stream);
            assert_eq!(response.status, 502, "{}", response.text());
            assert_eq!(response.json()["error"]["code"], "upstream_credential_unavailable");
            assert!(!response.text().contains(CLIENT_SECRET));
        }
        assert_eq!(azure.request_count(), 0, "nothing sent without a token");
        assert!(
            wait_until(WAIT, || gw.stderr().contains("error invalid_client")),
            "{}",
            gw.stderr()
        );
        // Back to issuing: the source's retry finds a token and calls pass.
        entra.set_mode(TokenMode::Issue);
        assert!(
            wait_until(WAIT, || chat(gw.addr(), false).status == 200),
            "recovers once the endpoint issues tokens"
        );
    }
}

on_default_driver! {
    fn no_token_or_client_secret_appears_in_any_output(driver) {
        let (entra, azure, gw) = setup(300, "", driver);
        let mut seen = Vec::new();
        for stream in [false, true] {
            seen.push(chat(gw.addr(), stream).text());
        }
        // A 401 cured by a refresh, then one that is not (forced refreshes are rate-limited):
        // the provider's refusal reaches the client as the gateway's error.
        entra.book().revoke_all();
        seen.push(chat(gw.addr(), false).text());
        entra.book().revoke_all();
        let refused = chat(gw.addr(), false);
        assert_eq!(refused.status, 502, "{}", refused.text());
        seen.push(refused.text());
        seen.push(gw.admin_get("/metrics").text());
        seen.push(gw.stderr());
        let tokens = entra.book().tokens();
        assert!(tokens.len() >= 2, "{tokens:?}");
        assert!(azure.request_count() >= 4);
        for text in &seen {
            assert!(!text.contains(CLIENT_SECRET), "client secret in {text}");
            for token in &tokens {
                assert!(!text.contains(token.as_str()), "token in {text}");
            }
        }
    }
}

#[test]
fn check_refuses_entra_settings_that_cannot_work_without_contacting_anything() {
    let entra = FakeTokenEndpoint::start(CLIENT_ID, CLIENT_SECRET, 300);
    let good = entra_config("http://127.0.0.1:9", &entra.base_url(), "")
        .replace(&format!("env:{SECRET_ENV}"), "literal-entra-check-secret");
    let out = check_config(&good);
    assert_eq!(out.code, Some(0), "{}", out.output());
    assert_eq!(entra.request_count(), 0, "check contacts nothing");
    assert!(!out.output().contains("literal-entra-check-secret"));
    // The authority defaults to the public cloud's.
    let default_authority = good.replace(&format!(", authority = \"{}\"", entra.base_url()), "");
    assert_ne!(default_authority, good);
    let out = check_config(&default_authority);
    assert_eq!(out.code, Some(0), "{}", out.output());

    let cases = [
        (
            good.replace("kind = \"azure_openai\"", "kind = \"openai\""),
            "provider[0].entra",
        ),
        (
            good.replace(
                "api_version = ",
                "api_key = \"literal-entra-check-key\"\napi_version = ",
            ),
            "provider[0].entra",
        ),
        (
            good.replace(TENANT, "contoso/../common"),
            "provider[0].entra.tenant_id",
        ),
        (good.replace(TENANT, ""), "provider[0].entra.tenant_id"),
        (
            good.replace(&format!("client_id = \"{CLIENT_ID}\""), "client_id = \"\""),
            "provider[0].entra.client_id",
        ),
        (
            good.replace(&entra.base_url(), "ftp://login.example"),
            "provider[0].entra.authority",
        ),
        (
            good.replace("client_secret = \"literal-entra-check-secret\", ", ""),
            "provider[0].entra",
        ),
        (
            good.replace("tenant_id =", "resource = \"x\", tenant_id ="),
            "provider[0].entra",
        ),
    ];
    for (config, path) in cases {
        assert_ne!(config, good, "{path}: the case changes the config");
        let out = check_config(&config);
        assert_ne!(out.code, Some(0), "{path}: {}", out.output());
        assert!(out.output().contains(path), "{path}: {}", out.output());
        assert!(!out.output().contains("literal-entra-check-secret"));
    }
    assert_eq!(entra.request_count(), 0, "check contacts nothing");
}
