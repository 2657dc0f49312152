//! The AI front doors' access phase: `[ai]` `allow_ips` / `deny_ips` are checked like a
//! route's, before the `on_access` hook and before authentication, and a refused client is
//! answered in its front door's dialect without the provider ever being called.

mod common;

use std::net::SocketAddr;

use common::*;
use serde_json::{json, Value};

/// The provider's own API key, given to the gateway through `env:`.
const OPENAI_KEY: &str = "sk-fake-openai-0123456789abcdef";

/// A gateway whose one model is on `fake`, with `ai` lines in its `[ai]` table.
fn ai_gateway(fake: &FakeOpenAi, ai: &str, driver: Driver) -> Gateway {
    let rest = format!(
        "[[provider]]\nname = \"openai\"\nkind = \"openai\"\nbase_url = \"{}\"\n\
         api_key = \"env:FAKE_OPENAI_KEY\"\n\n\
         [[model]]\nname = \"gpt-4o-mini\"\nprovider = \"openai\"\n\n\
         [ai]\n{ai}\n",
        fake.base_url()
    );
    Gateway::builder(&config(&rest), driver)
        .env("FAKE_OPENAI_KEY", OPENAI_KEY)
        .start()
}

/// `POST path` with the JSON `body` on a new connection that closes after it.
fn post(addr: SocketAddr, path: &str, body: &Value) -> Response {
    let headers = [
        ("Content-Type", "application/json"),
        ("Connection", "close"),
    ];
    roundtrip(
        addr,
        &request("POST", path, &headers, body.to_string().as_bytes()),
    )
}

/// An OpenAI chat request.
fn chat() -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{ "role": "user", "content": "hi" }],
        "max_tokens": 4
    })
}

/// An Anthropic Messages request.
fn messages() -> Value {
    json!({
        "model": "gpt-4o-mini",
        "max_tokens": 4,
        "messages": [{ "role": "user", "content": "hi" }]
    })
}

/// Fails unless a 127.0.0.1 client is refused with 403 `permission_error` on both chat front
/// doors (each in its own dialect) and on `/v1/models`, and the provider saw nothing.
fn assert_refused_everywhere(gw: &Gateway, fake: &FakeOpenAi) {
    let openai = post(gw.addr(), "/v1/chat/completions", &chat());
    openai.assert_error(403, "permission_error");

    let anthropic = post(gw.addr(), "/v1/messages", &messages());
    anthropic.assert_error(403, "permission_error");
    assert_eq!(
        anthropic.json()["type"],
        "error",
        "not the Anthropic error shape: {}",
        anthropic.text()
    );

    let models = roundtrip(
        gw.addr(),
        &request("GET", "/v1/models", &[("Connection", "close")], b""),
    );
    models.assert_error(403, "permission_error");

    assert!(
        fake.requests().is_empty(),
        "a refused request reached the provider"
    );
}

on_both_drivers! {
    fn client_in_the_ai_deny_list_is_403_before_authentication(driver) {
        let fake = FakeOpenAi::start();
        // api_key auth and no key presented: were the rules checked after auth, this would be 401.
        let gw = ai_gateway(&fake, "auth = \"api_key\"\ndeny_ips = [\"127.0.0.1/32\"]", driver);
        assert_refused_everywhere(&gw, &fake);
    }
}

on_default_driver! {
    fn client_outside_the_ai_allow_list_is_403(driver) {
        let fake = FakeOpenAi::start();
        let gw = ai_gateway(&fake, "auth = \"none\"\nallow_ips = [\"10.0.0.0/8\"]", driver);
        assert_refused_everywhere(&gw, &fake);
    }
}

on_default_driver! {
    fn ai_deny_wins_over_allow(driver) {
        let fake = FakeOpenAi::start();
        let lists = "auth = \"none\"\nallow_ips = [\"127.0.0.0/8\"]\ndeny_ips = [\"127.0.0.1\"]";
        let gw = ai_gateway(&fake, lists, driver);
        assert_refused_everywhere(&gw, &fake);
    }
}

on_both_drivers! {
    fn client_inside_the_ai_allow_list_is_served(driver) {
        let fake = FakeOpenAi::start();
        let lists = "auth = \"none\"\nallow_ips = [\"10.0.0.0/8\", \"127.0.0.0/8\"]";
        let gw = ai_gateway(&fake, lists, driver);

        let openai = post(gw.addr(), "/v1/chat/completions", &chat());
        assert_eq!(openai.status, 200, "{}", openai.text());
        assert_eq!(openai.json()["object"], "chat.completion");

        let anthropic = post(gw.addr(), "/v1/messages", &messages());
        assert_eq!(anthropic.status, 200, "{}", anthropic.text());
        assert_eq!(anthropic.json()["type"], "message");

        assert_eq!(fake.requests().len(), 2);
    }
}

on_default_driver! {
    fn ai_on_access_runs_after_the_ip_rules_and_before_auth(driver) {
        let dir = TempDir::new("ai-access");
        let script = dir.join("teapot.lua");
        std::fs::write(
            &script,
            "function on_access(ctx)\n  ctx:deny(418, \"teapot\")\nend\n",
        )
        .unwrap();
        let fake = FakeOpenAi::start();
        let hooks = format!("auth = \"api_key\"\nhooks = \"{}\"", script.display());

        // No key presented: the hook's answer, not auth's 401, so the hook ran first.
        let gw = ai_gateway(&fake, &hooks, driver);
        let denied = post(gw.addr(), "/v1/chat/completions", &chat());
        assert_eq!(denied.status, 418, "{}", denied.text());
        assert_eq!(denied.json()["error"]["message"], "teapot");

        // A refused address never reaches the hook.
        let ruled = format!("{hooks}\ndeny_ips = [\"127.0.0.1\"]");
        let gw = ai_gateway(&fake, &ruled, driver);
        post(gw.addr(), "/v1/chat/completions", &chat()).assert_error(403, "permission_error");

        assert!(fake.requests().is_empty(), "a denied request reached the provider");
    }
}

#[test]
fn check_names_a_bad_ai_ip_entry() {
    let rest = "[[provider]]\nname = \"openai\"\nkind = \"openai\"\n\
                base_url = \"http://127.0.0.1:9\"\napi_key = \"env:CF_ADMIN_TOKEN\"\n\n\
                [[model]]\nname = \"gpt-4o-mini\"\nprovider = \"openai\"\n\n\
                [ai]\nallow_ips = [\"10.0.0.0/8\", \"10.0.0.0/40\"]\ndeny_ips = [\"nope\"]\n";
    let check = check_config(&config(rest));
    let output = check.output();
    assert_eq!(check.code, Some(1), "{output}");
    assert!(output.contains("ai.allow_ips[1]"), "{output}");
    assert!(output.contains("ai.deny_ips[0]"), "{output}");
}
