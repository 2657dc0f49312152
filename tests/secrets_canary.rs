//! Secrets never leak (issue 3): plant canary secrets (virtual keys, an
//! upstream credential, the admin token, a JWT signing secret and JWTs), run a
//! session of good and bad requests, then grep everything the gateway and its
//! commands wrote: responses, stdout/stderr, the access log, the audit log and
//! every other file in `data_dir`, `check`, `/metrics`, `keys list|show`,
//! `audit`. The upstream credential may appear only in what the upstream got. An upstream
//! with an OAuth2 credential adds its client secret (which the token endpoint echoes in an
//! error answer) and every access token it was issued to the canaries.
//!
//! The same session covers every identity the gateway obtains for AI providers (issue 16):
//! an `azure_openai` provider with Entra ID (client secret and tokens), a `vertex` provider
//! with a Google service account (the key file's private key, the signed assertions and the
//! access tokens) and `bedrock` providers with static AWS keys and a session token (the
//! secret key, the session token, a wrong secret and every SigV4 signature). Each answers
//! plain and streamed calls, then refuses a credential while its token endpoint echoes what
//! it was sent; none of it may appear anywhere the gateway writes.

mod common;

use std::path::Path;

use common::client::contains;
use common::fake_bedrock::FakeBedrock;
use common::fake_google::{parse_form, SERVICE_ACCOUNT_JSON};
use common::fake_oauth::{FakeProtected, FakeTokenEndpoint, TokenMode};
use common::fake_vertex::FakeVertex;
use common::jwt::{b64url, now, sign, token, Signer};
use common::keys::*;
use common::*;
use serde_json::{json, Value};

const ADMIN_CANARY: &str = "canary-admin-token-7d1f0c9e5b2a4f8c";
const WRONG_ADMIN_CANARY: &str = "canary-wrong-admin-token-41c7aa90e3";
const UPSTREAM_CANARY: &str = "canary-upstream-secret-93be27d4c01f";
const LITERAL_CANARY: &str = "canary-literal-secret-5a60f2e8d7b1";
const JWT_HS_CANARY: &str = "canary-jwt-hs-secret-0f4e9b1c7a2d5e8f";
const UNKNOWN_KEY_CANARY: &str = "cf_canaryUnknownKeyXq7Lp2Vw9Rt4Zk8Mn3Bc6Hd";
const OAUTH_CLIENT_CANARY: &str = "canary-oauth-client-secret-6c2e91d4b8";
const ENTRA_CLIENT_CANARY: &str = "canary-entra-client-secret-e47b03c9d2";
const AWS_KEY_ID: &str = "AKIACANARYKEY0000001";
const AWS_SECRET_CANARY: &str = "canary-aws-secret/4b1d9e7f2a6c0853QQ";
const AWS_SESSION_CANARY: &str = "canary-aws-session-token-FwoGZXIv7e3a91";
const AWS_WRONG_CANARY: &str = "canary-aws-wrong-secret-0c5f28ab97";

/// The Entra application the Azure provider signs in as.
const ENTRA_TENANT: &str = "canary.onmicrosoft.com";
const ENTRA_CLIENT_ID: &str = "0b8f3c52-7d1e-4a96-8e20-5f4c3b1a9d77";
/// Where the fake Vertex serves.
const VERTEX_PROJECT: &str = "canary-project";
const VERTEX_REGION: &str = "us-east5";
/// The front-door model names of the identity session.
const AZURE_MODEL: &str = "canary-azure";
const GEMINI_MODEL: &str = "canary-gemini";
const CLAUDE_MODEL: &str = "canary-claude";
const BEDROCK_MODEL: &str = "canary-bedrock";
/// A Bedrock provider whose secret key is wrong: every signature it makes is refused.
const BEDROCK_STALE_MODEL: &str = "canary-bedrock-stale";

/// The canary config: an upstream with an injected credential, a keyed
/// route, a JWT route and an `auth = "none"` route, an access log file.
fn canary_config(target: &str, upstream_secret: &str) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]
admin_listen = "127.0.0.1:0"
admin_token = "env:CF_ADMIN_TOKEN"
data_dir = "@DIR@/data"
access_log = "@DIR@/data/access.log"
workers = 2

[[upstream]]
name = "backend"
targets = ["{target}"]
credential = {{ header = "authorization", value = "Bearer {{secret}}", secret = "{upstream_secret}" }}

[[route]]
name = "keyed"
path_prefix = "/"
upstream = "backend"
auth = "api_key"

[[route]]
name = "jwt"
path_prefix = "/jwt/"
upstream = "backend"
auth = "jwt"
jwt = {{ issuer = "canary-issuer", hs_secret = "env:CF_CANARY_JWT_HS" }}

[[route]]
name = "open"
path_prefix = "/open/"
upstream = "backend"
auth = "none"
"#
    )
}

/// An upstream `partner` taking OAuth2 tokens from `token_url` and a route `/partner/` to it
/// without client auth (so only the credential injection keeps client credentials back).
fn oauth_canary_toml(target: &str, token_url: &str) -> String {
    format!(
        r#"
[[upstream]]
name = "partner"
targets = ["{target}"]
credential = {{ oauth2 = {{ token_url = "{token_url}", client_id = "canary-client", client_secret = "env:CF_CANARY_OAUTH", auth_method = "basic" }} }}

[[route]]
name = "partner"
path_prefix = "/partner/"
upstream = "partner"
auth = "none"
"#
    )
}

/// The AI providers whose credentials the gateway obtains: Entra for Azure at `azure`
/// (tokens from `authority`), a Google service account (the file `service_account`) for
/// Vertex at `vertex`, and two Bedrock providers at `bedrock`, one with the right keys and a
/// session token, one with a wrong secret. No retries of the calls' own, so each refusal
/// below is one upstream answer.
fn identities_toml(
    azure: &str,
    authority: &str,
    vertex: &str,
    service_account: &str,
    bedrock: &str,
) -> String {
    let bedrock_provider = |name: &str, secret_env: &str| {
        format!(
            r#"
[[provider]]
name = "{name}"
kind = "bedrock"
base_url = "{bedrock}"
region = "{}"
access_key_id = "env:CF_CANARY_AWS_KEY_ID"
secret_access_key = "env:{secret_env}"
session_token = "env:CF_CANARY_AWS_SESSION"
"#,
            common::fake_bedrock::REGION
        )
    };
    let model = |name: &str, provider: &str, upstream: &str| {
        format!(
            r#"
[[model]]
name = "{name}"
provider = "{provider}"
upstream_model = "{upstream}"
input_price_per_mtok = 1.0
output_price_per_mtok = 2.0
"#
        )
    };
    format!(
        r#"
[ai]
max_retries = 0

[[provider]]
name = "azure"
kind = "azure_openai"
base_url = "{azure}"
api_version = "2024-10-21"
entra = {{ tenant_id = "{ENTRA_TENANT}", client_id = "{ENTRA_CLIENT_ID}", client_secret = "env:CF_CANARY_ENTRA", authority = "{authority}" }}

[[provider]]
name = "vertex"
kind = "vertex"
base_url = "{vertex}"
project = "{VERTEX_PROJECT}"
region = "{VERTEX_REGION}"
service_account = "file:{service_account}"
"#
    ) + &bedrock_provider("bedrock", "CF_CANARY_AWS_SECRET")
        + &bedrock_provider("bedrock-stale", "CF_CANARY_AWS_WRONG")
        + &model(AZURE_MODEL, "azure", "canary-deployment")
        + &model(GEMINI_MODEL, "vertex", "gemini-2.5-flash")
        + &model(CLAUDE_MODEL, "vertex", "claude-sonnet-4@20250514")
        + &model(
            BEDROCK_MODEL,
            "bedrock",
            "anthropic.claude-3-haiku-20240307-v1:0",
        )
        + &model(
            BEDROCK_STALE_MODEL,
            "bedrock-stale",
            "anthropic.claude-3-haiku-20240307-v1:0",
        )
}

/// The environment every process of the session gets.
fn canary_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("CF_ADMIN_TOKEN", ADMIN_CANARY),
        ("CF_CANARY_UPSTREAM", UPSTREAM_CANARY),
        ("CF_CANARY_JWT_HS", JWT_HS_CANARY),
        ("CF_CANARY_OAUTH", OAUTH_CLIENT_CANARY),
        ("CF_CANARY_ENTRA", ENTRA_CLIENT_CANARY),
        ("CF_CANARY_AWS_KEY_ID", AWS_KEY_ID),
        ("CF_CANARY_AWS_SECRET", AWS_SECRET_CANARY),
        ("CF_CANARY_AWS_SESSION", AWS_SESSION_CANARY),
        ("CF_CANARY_AWS_WRONG", AWS_WRONG_CANARY),
        ("CF_LOG", "debug"),
    ]
}

/// Everything observed during the session, as one text to grep.
#[derive(Default)]
struct Observed {
    sources: Vec<(String, Vec<u8>)>,
}

impl Observed {
    fn add(&mut self, source: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.sources.push((source.into(), bytes.into()));
    }

    fn response(&mut self, what: &str, response: &Response) -> Response {
        let mut bytes = format!("{} {}\n", response.status, response.reason).into_bytes();
        for (name, value) in &response.headers {
            bytes.extend_from_slice(format!("{name}: {value}\n").as_bytes());
        }
        bytes.extend_from_slice(&response.body);
        self.add(format!("response to {what}"), bytes);
        response.clone()
    }

    fn cli(&mut self, what: &str, out: &CliOutput) {
        self.add(format!("`{what}` stdout"), out.stdout.clone());
        self.add(format!("`{what}` stderr"), out.stderr.clone());
    }

    /// Fails naming every source that contains `needle`.
    fn assert_absent(&self, label: &str, needle: &[u8]) {
        let hits: Vec<&str> = self
            .sources
            .iter()
            .filter(|(_, bytes)| contains(bytes, needle))
            .map(|(source, _)| source.as_str())
            .collect();
        assert!(hits.is_empty(), "canary {label} leaked into: {hits:?}");
    }
}

/// Every file under `dir`, recursively, with its path.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

fn admin_as(
    gw: &Gateway,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Response {
    admin_call(gw.admin_addr(), method, path, token, body)
}

fn get_with(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut all = vec![("Connection", "close")];
    all.extend_from_slice(headers);
    roundtrip(gw.addr(), &request("GET", path, &all, b""))
}

/// A call of `model` through the chat completions door or the messages door (`messages`),
/// streamed or not, with the virtual key `bearer`.
fn ai_call(gw: &Gateway, model: &str, messages: bool, stream: bool, bearer: &str) -> Response {
    let (path, body) = if messages {
        (
            "/v1/messages",
            json!({ "model": model, "stream": stream, "max_tokens": 64,
                    "messages": [{ "role": "user", "content": "Say hello." }] }),
        )
    } else {
        (
            "/v1/chat/completions",
            json!({ "model": model, "stream": stream,
                    "messages": [{ "role": "user", "content": "Say hello." }] }),
        )
    };
    let headers = [
        ("Authorization", bearer),
        ("Content-Type", "application/json"),
        ("Connection", "close"),
    ];
    roundtrip(
        gw.addr(),
        &request("POST", path, &headers, body.to_string().as_bytes()),
    )
}

/// The base64 lines of the test service account's private key (a PEM line is long enough
/// to be unmistakable).
fn private_key_lines() -> Vec<String> {
    let account: Value = serde_json::from_str(SERVICE_ACCOUNT_JSON).expect("service account");
    account["private_key"]
        .as_str()
        .expect("private_key")
        .lines()
        .filter(|line| line.len() >= 40 && !line.starts_with("-----"))
        .map(str::to_string)
        .collect()
}

on_default_driver! {
    fn canary_secrets_never_appear_outside_the_upstream(driver) {
        canary_session(driver);
    }
}

/// The session: plant, exercise, collect, grep.
fn canary_session(driver: Driver) {
    let upstream = Upstream::replying("backend", Reply::text("upstream-ok"));
    let idp = FakeTokenEndpoint::start("canary-client", OAUTH_CLIENT_CANARY, 300);
    let partner = FakeProtected::start(idp.book());
    let entra = FakeTokenEndpoint::start(ENTRA_CLIENT_ID, ENTRA_CLIENT_CANARY, 300);
    let azure = FakeOpenAi::start();
    azure.require_entra(entra.book());
    let vertex = FakeVertex::start(VERTEX_PROJECT, VERTEX_REGION);
    // The key file is the one place its private key belongs: it lives outside data_dir,
    // whose every file is swept below.
    let key_dir = TempDir::new("canary-sa");
    let service_account = key_dir.file("sa.json");
    std::fs::write(&service_account, vertex.service_account_json()).expect("write key file");
    let bedrock = FakeBedrock::start(AWS_KEY_ID, AWS_SECRET_CANARY, Some(AWS_SESSION_CANARY));
    let cfg = canary_config(&upstream.target(), "env:CF_CANARY_UPSTREAM")
        + &oauth_canary_toml(&partner.target(), &idp.token_url())
        + &identities_toml(
            &azure.base_url(),
            &entra.base_url(),
            &vertex.base_url(),
            &service_account,
            &bedrock.base_url(),
        );
    let mut builder = Gateway::builder(&cfg, driver);
    for (k, v) in canary_env() {
        builder = builder.env(k, v);
    }
    let mut gw = builder.start();
    let env = canary_env();
    let run = |args: &[&str]| run_cli(&config_path(&gw), gw.dir(), args, &env);
    let mut seen = Observed::default();

    // Keys: one from the admin API, one from the CLI.
    let created = admin_as(
        &gw,
        Some(ADMIN_CANARY),
        "POST",
        "/admin/keys",
        Some(&json!({ "name": "canary-a", "team": "t" })),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let key_a = issued_key(&created.json());
    let cli_created = run(&["keys", "create", "--name", "canary-b", "--json"]);
    cli_created.assert_ok("keys create");
    let key_b =
        issued_key(&serde_json::from_str(cli_created.stdout.trim()).expect("keys create --json"));
    // Both answers show a secret once, by design; they are not greped.

    // Good requests, each credential header form.
    assert!(
        wait_until(WAIT, || get_with(
            &gw,
            "/a",
            &[("Authorization", &format!("Bearer {}", key_b.secret))]
        )
        .status
            == 200),
        "the CLI-made key never worked"
    );
    let bearer_a = format!("Bearer {}", key_a.secret);
    for (path, headers) in [
        ("/a", vec![("Authorization", bearer_a.as_str())]),
        ("/b?x=1", vec![("x-api-key", key_b.secret.as_str())]),
        (
            "/open/c",
            vec![
                ("api-key", key_a.secret.as_str()),
                ("x-api-key", key_b.secret.as_str()),
            ],
        ),
    ] {
        let r = seen.response(path, &get_with(&gw, path, &headers));
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }

    // JWTs: good, expired, signed with the wrong secret, alg none.
    let hs = Signer::hs256(JWT_HS_CANARY.as_bytes());
    let t = now();
    let good_jwt = token(
        &hs,
        &json!({ "sub": "canary-user", "iss": "canary-issuer", "exp": t + 600 }),
    );
    let expired_jwt = token(
        &hs,
        &json!({ "sub": "canary-user", "iss": "canary-issuer", "exp": t - 600 }),
    );
    let wrong_jwt = token(
        &Signer::hs256(b"not-the-secret-but-long-enough-0123"),
        &json!({ "sub": "x", "iss": "canary-issuer", "exp": t + 600 }),
    );
    let none_jwt = sign(
        &Signer::Unsigned,
        json!({}),
        &json!({ "sub": "x", "iss": "canary-issuer", "exp": t + 600 }),
    );
    let bearer = |jwt: &str| format!("Bearer {jwt}");
    let r = seen.response(
        "good jwt",
        &get_with(&gw, "/jwt/ok", &[("Authorization", &bearer(&good_jwt))]),
    );
    assert_eq!(r.status, 200, "good JWT: {}", r.text());
    for (what, jwt) in [
        ("expired jwt", &expired_jwt),
        ("wrong-key jwt", &wrong_jwt),
        ("alg none jwt", &none_jwt),
    ] {
        let r = seen.response(
            what,
            &get_with(&gw, "/jwt/no", &[("Authorization", &bearer(jwt))]),
        );
        assert_eq!(r.status, 401, "{what}: {}", r.text());
    }

    // Bad keys and bad admin tokens.
    let bearer_unknown = format!("Bearer {UNKNOWN_KEY_CANARY}");
    for (what, headers) in [
        (
            "unknown key",
            vec![("Authorization", bearer_unknown.as_str())],
        ),
        ("unknown x-api-key", vec![("x-api-key", UNKNOWN_KEY_CANARY)]),
        ("admin token as a key", vec![("x-api-key", ADMIN_CANARY)]),
        (
            "upstream secret as a key",
            vec![("x-api-key", UPSTREAM_CANARY)],
        ),
        (
            "jwt on a keyed route",
            vec![("Authorization", &*bearer(&good_jwt))],
        ),
    ] {
        let r = seen.response(what, &get_with(&gw, "/bad", &headers));
        assert_eq!(r.status, 401, "{what}: {}", r.text());
    }
    // The access log copies a request's agent and a refusal's error code: the sweep below
    // covers those fields too (checked present after the stop).
    let r = seen.response(
        "agent",
        &get_with(
            &gw,
            "/bad",
            &[
                ("x-api-key", UNKNOWN_KEY_CANARY),
                ("User-Agent", "canary-agent/1.0"),
            ],
        ),
    );
    assert_eq!(r.status, 401, "agent: {}", r.text());
    for token in [None, Some(WRONG_ADMIN_CANARY), Some(UNKNOWN_KEY_CANARY)] {
        let r = seen.response(
            "bad admin token",
            &admin_as(&gw, token, "GET", "/admin/keys", None),
        );
        assert_eq!(r.status, 401);
    }

    // The OAuth2 upstream: a token injected in place of the client's key, then a revoked
    // token whose forced refresh is refused by a token endpoint that echoes the secret.
    let r = seen.response(
        "partner",
        &get_with(&gw, "/partner/ok", &[("Authorization", &bearer_a)]),
    );
    assert_eq!(r.status, 200, "partner: {}", r.text());
    idp.set_mode(TokenMode::InvalidClient);
    idp.book().revoke_all();
    let r = seen.response("partner refused", &get_with(&gw, "/partner/refused", &[]));
    assert_eq!(
        r.status,
        401,
        "a refused retry relays the 401: {}",
        r.text()
    );
    assert!(idp.request_count() >= 2, "the forced refresh was tried");

    // The AI providers' identities: every provider answers plain and streamed calls through
    // both doors with the credential the gateway obtained for it.
    let calls = [
        (AZURE_MODEL, false, false),
        (AZURE_MODEL, false, true),
        (GEMINI_MODEL, false, false),
        (GEMINI_MODEL, true, true),
        (CLAUDE_MODEL, true, false),
        (CLAUDE_MODEL, false, true),
        (BEDROCK_MODEL, false, false),
        (BEDROCK_MODEL, true, true),
    ];
    for (model, messages, stream) in calls {
        let what = format!("{model} messages={messages} stream={stream}");
        let r = seen.response(&what, &ai_call(&gw, model, messages, stream, &bearer_a));
        assert_eq!(r.status, 200, "{what}: {}", r.text());
    }
    // Entra: a revoked token whose forced refresh meets a rotated secret (the endpoint
    // echoes the secret it got).
    entra.set_mode(TokenMode::InvalidClient);
    entra.book().revoke_all();
    let r = seen.response(
        "azure refused",
        &ai_call(&gw, AZURE_MODEL, false, false, &bearer_a),
    );
    assert_ne!(r.status, 200, "azure refused: {}", r.text());
    assert!(
        entra.request_count() >= 2,
        "the forced Entra refresh was tried"
    );
    // Vertex: a revoked token whose forced refresh is refused by a token endpoint quoting
    // the assertion it got (the source's retry after backoff may still save the call), then
    // a token revoked again within the forced-refresh interval: Vertex's 401 reaches the
    // client as the gateway's error.
    vertex.google.refuse_next_echoing(1);
    vertex.revoke_seen_tokens();
    seen.response(
        "vertex refresh refused",
        &ai_call(&gw, CLAUDE_MODEL, true, false, &bearer_a),
    );
    assert!(
        vertex
            .google
            .refusals()
            .iter()
            .any(|d| d.starts_with("Invalid JWT Signature: ey")),
        "the forced Vertex refresh met the echoing refusal: {:?}",
        vertex.google.refusals()
    );
    vertex.revoke_seen_tokens();
    for messages in [false, true] {
        let r = seen.response(
            "vertex refused",
            &ai_call(&gw, GEMINI_MODEL, messages, false, &bearer_a),
        );
        assert_eq!(r.status, 502, "vertex refused: {}", r.text());
    }
    // Bedrock: signatures made with a wrong secret, plain and streamed.
    for stream in [false, true] {
        let r = seen.response(
            "bedrock wrong secret",
            &ai_call(&gw, BEDROCK_STALE_MODEL, false, stream, &bearer_a),
        );
        assert_eq!(r.status, 502, "bedrock wrong secret: {}", r.text());
    }
    assert!(
        bedrock.refused() >= 2,
        "the wrong signatures reached Bedrock"
    );

    // The rest of a key's life, and the admin reads.
    let rotated = admin_as(
        &gw,
        Some(ADMIN_CANARY),
        "POST",
        &format!("/admin/keys/{}/rotate", key_a.id),
        Some(&json!({ "grace": "1h" })),
    );
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let key_a2 = issued_key(&rotated.json());
    let patched = admin_as(
        &gw,
        Some(ADMIN_CANARY),
        "PATCH",
        &format!("/admin/keys/{}", key_a.id),
        Some(&json!({ "metadata": { "owner": "canary" } })),
    );
    seen.response("PATCH", &patched);
    run(&["keys", "revoke", &key_b.id]).assert_ok("keys revoke");
    assert!(
        wait_until(WAIT, || get_with(
            &gw,
            "/a",
            &[("x-api-key", &key_b.secret)]
        )
        .status
            == 401),
        "the revoked key kept working"
    );
    seen.response(
        "revoked key",
        &get_with(&gw, "/a", &[("x-api-key", &key_b.secret)]),
    );
    assert!(
        wait_until(WAIT, || get_with(
            &gw,
            "/a",
            &[("x-api-key", &key_a2.secret)]
        )
        .status
            == 200),
        "the rotated key never worked"
    );
    seen.response(
        "rotated key",
        &get_with(&gw, "/a", &[("x-api-key", &key_a2.secret)]),
    );
    seen.response(
        "old key in grace",
        &get_with(&gw, "/a", &[("x-api-key", &key_a.secret)]),
    );
    seen.response(
        "list",
        &admin_as(&gw, Some(ADMIN_CANARY), "GET", "/admin/keys", None),
    );
    seen.response(
        "show",
        &admin_as(
            &gw,
            Some(ADMIN_CANARY),
            "GET",
            &format!("/admin/keys/{}", key_a.id),
            None,
        ),
    );
    seen.response(
        "reload",
        &admin_as(&gw, Some(ADMIN_CANARY), "POST", "/admin/reload", None),
    );
    seen.response("metrics", &gw.admin_get("/metrics"));
    seen.response("healthz", &gw.admin_get("/healthz"));

    // Commands on the same store and config.
    seen.cli("keys list", &run(&["keys", "list"]));
    seen.cli("keys show", &run(&["keys", "show", &key_a.id]));
    seen.cli("audit", &run(&["audit"]));
    seen.cli("check", &run(&["check"]));

    // Stop so every log line is flushed, then collect the logs and files.
    let status = gw.stop();
    assert!(status.success(), "gateway exit: {status:?}");
    seen.add("gateway stderr", gw.stderr());
    seen.add("gateway stdout", gw.stdout());
    let data = data_dir(&gw);
    let pepper = std::fs::read(data.join("pepper")).ok();
    let files = files_under(&data);
    assert!(
        files
            .iter()
            .any(|(p, b)| p.ends_with("access.log") && !b.is_empty()),
        "no access log was written"
    );
    let access_log = files
        .iter()
        .find(|(p, _)| p.ends_with("access.log"))
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    for field in [
        "\"user_agent\":\"canary-agent/1.0\"",
        "\"error\":\"invalid_api_key\"",
        "\"upstream_addr\":\"127.0.0.1:",
    ] {
        assert!(access_log.contains(field), "no {field} in the access log");
    }
    for (path, bytes) in files {
        if !path.ends_with("/pepper") {
            seen.add(path, bytes);
        }
    }

    // The checks.
    let key_secrets = [&key_a.secret, &key_a2.secret, &key_b.secret];
    for secret in key_secrets {
        seen.assert_absent(
            &format!("virtual key {}..", &secret[..6]),
            secret.as_bytes(),
        );
    }
    for (label, canary) in [
        ("admin token", ADMIN_CANARY),
        ("wrong admin token", WRONG_ADMIN_CANARY),
        ("upstream credential", UPSTREAM_CANARY),
        ("jwt hs secret", JWT_HS_CANARY),
        ("unknown key", UNKNOWN_KEY_CANARY),
    ] {
        seen.assert_absent(label, canary.as_bytes());
    }
    seen.assert_absent("oauth2 client secret", OAUTH_CLIENT_CANARY.as_bytes());
    let tokens = idp.book().tokens();
    assert_eq!(tokens.len(), 1, "one token issued");
    for access_token in &tokens {
        seen.assert_absent("oauth2 access token", access_token.as_bytes());
    }
    // The identities' canaries.
    for (label, canary) in [
        ("entra client secret", ENTRA_CLIENT_CANARY),
        ("aws secret key", AWS_SECRET_CANARY),
        ("aws session token", AWS_SESSION_CANARY),
        ("wrong aws secret key", AWS_WRONG_CANARY),
        ("private key PEM", "-----BEGIN PRIVATE KEY"),
    ] {
        seen.assert_absent(label, canary.as_bytes());
    }
    let entra_tokens = entra.book().tokens();
    assert!(!entra_tokens.is_empty(), "Entra issued tokens");
    for access_token in &entra_tokens {
        seen.assert_absent("entra access token", access_token.as_bytes());
    }
    let mut google_tokens = vertex.google.issued_tokens();
    google_tokens.extend(vertex.tokens_seen());
    assert!(!google_tokens.is_empty(), "Google issued tokens");
    for access_token in &google_tokens {
        seen.assert_absent("google access token", access_token.as_bytes());
    }
    let assertions: Vec<String> = vertex
        .google
        .requests()
        .iter()
        .filter_map(|r| parse_form(&r.body).get("assertion").cloned())
        .collect();
    assert!(assertions.len() >= 2, "{assertions:?}");
    for assertion in &assertions {
        // The signature alone is as secret as the whole assertion.
        let signature = assertion.rsplit('.').next().unwrap();
        seen.assert_absent("google assertion signature", signature.as_bytes());
    }
    let key_lines = private_key_lines();
    assert!(key_lines.len() > 10, "{key_lines:?}");
    for line in &key_lines {
        seen.assert_absent("service-account private key line", line.as_bytes());
    }
    let signatures: Vec<String> = bedrock
        .requests()
        .iter()
        .filter_map(|r| {
            r.header("authorization")?
                .split("Signature=")
                .nth(1)
                .map(String::from)
        })
        .collect();
    assert!(signatures.len() >= 4, "{signatures:?}");
    for signature in &signatures {
        seen.assert_absent("sigv4 signature", signature.as_bytes());
    }

    for (label, jwt) in [
        ("good jwt", &good_jwt),
        ("expired jwt", &expired_jwt),
        ("wrong jwt", &wrong_jwt),
    ] {
        seen.assert_absent(label, jwt.as_bytes());
        let signature = jwt.rsplit('.').next().unwrap();
        seen.assert_absent(&format!("{label} signature"), signature.as_bytes());
    }
    if let Some(pepper) = pepper {
        assert!(
            pepper.len() >= 16,
            "the pepper file is too short: {} bytes",
            pepper.len()
        );
        let pepper_text = String::from_utf8_lossy(&pepper).trim().to_string();
        let hex: String = pepper.iter().map(|b| format!("{b:02x}")).collect();
        seen.assert_absent("pepper file", &pepper);
        seen.assert_absent("pepper text", pepper_text.as_bytes());
        seen.assert_absent("pepper as hex", hex.as_bytes());
        seen.assert_absent("pepper as base64url", b64url(&pepper).as_bytes());
    } else {
        panic!("no pepper file in {}", data.display());
    }

    // The upstream got its credential, and never a client credential.
    let raw = upstream.raw_received();
    assert!(
        contains(&raw, UPSTREAM_CANARY.as_bytes()),
        "the upstream credential was not injected"
    );
    for secret in key_secrets {
        assert!(
            !contains(&raw, secret.as_bytes()),
            "a client key reached the upstream"
        );
    }
    assert!(
        !contains(&raw, good_jwt.as_bytes()),
        "the JWT reached the upstream"
    );
    assert!(
        !contains(&raw, ADMIN_CANARY.as_bytes()),
        "the admin token reached the upstream"
    );
    // The OAuth2 upstream got the gateway's tokens, never the client's key or the secret.
    let partner_saw: Vec<String> = partner
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert!(
        partner_saw
            .iter()
            .all(|a| a.starts_with("Bearer fake-access-token-")),
        "{partner_saw:?}"
    );
    assert!(partner_saw.iter().all(|a| !a.contains(&key_a.secret)));
    // Azure got Entra tokens and no key; Vertex got Google tokens; Bedrock got signatures
    // and the session token, never the secret keys or a client key.
    for seen_by_azure in azure.requests() {
        let authorization = seen_by_azure.header("authorization").unwrap_or_default();
        assert!(
            entra_tokens
                .iter()
                .any(|t| authorization == format!("Bearer {t}")),
            "{authorization}"
        );
        assert_eq!(seen_by_azure.header("api-key"), None);
    }
    for seen_by_vertex in vertex.requests() {
        let authorization = seen_by_vertex.header("authorization").unwrap_or_default();
        assert!(
            authorization.starts_with("Bearer ya29.fake-"),
            "{authorization}"
        );
    }
    for seen_by_bedrock in bedrock.requests() {
        for (_, value) in &seen_by_bedrock.headers {
            for secret in [AWS_SECRET_CANARY, AWS_WRONG_CANARY, key_a.secret.as_str()] {
                assert!(!value.contains(secret), "a secret reached Bedrock: {value}");
            }
        }
        assert_eq!(
            seen_by_bedrock.header("x-amz-security-token"),
            Some(AWS_SESSION_CANARY)
        );
    }
}

/// `credentialflow check` on `config_toml` with the canary environment.
fn check_with_canary_env(config_toml: &str) -> CliOutput {
    let dir = TempDir::new("canary-check");
    let path = dir.join("credentialflow.toml");
    std::fs::write(
        &path,
        config_toml.replace("@DIR@", &dir.path().to_string_lossy()),
    )
    .expect("write config");
    run_cli(&path, dir.path(), &["check"], &canary_env())
}

#[test]
fn check_warns_about_a_literal_secret_without_printing_it() {
    let upstream = Upstream::replying("backend", Reply::text("ok"));
    let out = check_with_canary_env(&canary_config(&upstream.target(), LITERAL_CANARY));
    let text = out.output();
    assert_eq!(out.code, Some(0), "a literal secret is accepted: {text}");
    assert!(
        text.to_ascii_lowercase().contains("warning"),
        "no warning: {text}"
    );
    assert!(
        !text.contains(LITERAL_CANARY),
        "check printed the secret: {text}"
    );
}

#[test]
fn check_with_an_error_next_to_a_secret_does_not_print_the_secret() {
    let upstream = Upstream::replying("backend", Reply::text("ok"));
    let cfg = canary_config(&upstream.target(), LITERAL_CANARY).replace(
        "value = \"Bearer {secret}\"",
        "value = \"Bearer {secret}\", bogus = 1",
    );
    let out = check_with_canary_env(&cfg);
    let text = out.output();
    assert_eq!(out.code, Some(1), "an unknown key is an error: {text}");
    assert!(text.contains("bogus"), "the error names the key: {text}");
    assert!(
        !text.contains(LITERAL_CANARY),
        "check printed the secret: {text}"
    );
    assert!(
        !text.contains(ADMIN_CANARY),
        "check printed the admin token: {text}"
    );
}
