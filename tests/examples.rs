//! The configs in `examples/`: each one passes `credentialflow check` with exit 0 and no
//! warning when the environment variables it names are set (to dummy values here), and
//! `lua-auth.toml` with its script is served and driven end to end.
//!
//! `check` resolves upstream and provider host names. On a machine without DNS (a CI box, a
//! sandbox) a host that does not resolve is replaced with `127.0.0.1` in a copy of the example,
//! and the test says so; with DNS every example is checked exactly as written.

mod common;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use common::keys::{assert_unauthenticated, create_key};
use common::*;
use serde_json::json;

/// The examples folder of the source tree.
fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Every `*.toml` in `examples/`, sorted.
fn example_configs() -> Vec<PathBuf> {
    let mut configs: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples/ exists")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    configs.sort();
    configs
}

/// The names of the `env:NAME` secret references in a config.
fn env_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split("\"env:")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap_or("").to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// A dummy value for secret `name` of the shape the gateway checks it for: a PostgreSQL or
/// Redis URL, a 32-byte pepper, or an opaque token.
fn dummy_secret(name: &str) -> String {
    match name {
        "CF_STORE_URL" => "postgres://cf:dummy-db-password@db.internal:5432/cf".into(),
        "CF_REDIS_URL" => "redis://:dummy-redis-password@cache.internal:6379/0".into(),
        "CF_PEPPER" => "0123456789abcdef".repeat(4),
        other => format!("dummy-{}-0123456789abcdef", other.to_ascii_lowercase()),
    }
}

/// `text` with every `https://HOST` this machine cannot resolve replaced by
/// `https://127.0.0.1`, and the hosts replaced.
fn offline_hosts(text: &str) -> (String, Vec<String>) {
    let mut out = text.to_string();
    let mut replaced = Vec::new();
    for piece in text.split("https://").skip(1) {
        let host: String = piece
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
            .collect();
        if host.is_empty() || replaced.contains(&host) {
            continue;
        }
        let resolves = (host.as_str(), 443)
            .to_socket_addrs()
            .is_ok_and(|mut a| a.next().is_some());
        if !resolves {
            out = out.replace(&format!("https://{host}"), "https://127.0.0.1");
            replaced.push(host);
        }
    }
    (out, replaced)
}

/// Copies `from` (files and folders) into `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

#[test]
fn every_example_passes_check_without_warnings() {
    let configs = example_configs();
    let names: Vec<String> = configs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "single-host.toml",
        "ai-fallbacks.toml",
        "lua-auth.toml",
        "fleet.toml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "examples/{expected} is missing"
        );
    }
    let index = std::fs::read_to_string(examples_dir().join("README.md")).expect("README.md");

    // A copy of the folder, so scripts resolve as they do beside the originals and nothing
    // (a data dir) is created in the source tree.
    let copy = TempDir::new("examples");
    copy_tree(&examples_dir(), copy.path());

    for (path, name) in configs.iter().zip(&names) {
        assert!(
            index.contains(&format!("[`{name}`]({name})")),
            "examples/README.md does not describe {name}"
        );
        let text = std::fs::read_to_string(path).expect("read example");
        let (text, offline) = offline_hosts(&text);
        if !offline.is_empty() {
            eprintln!("{name}: no DNS for {offline:?} here: checked with 127.0.0.1 in their place");
        }
        let checked_path = copy.join(name);
        std::fs::write(&checked_path, &text).expect("write copy");

        let secrets: Vec<(String, String)> = env_names(&text)
            .into_iter()
            .map(|n| {
                let value = dummy_secret(&n);
                (n, value)
            })
            .collect();
        for (var, _) in &secrets {
            assert!(
                index.contains(&format!("`{var}`")),
                "examples/README.md does not say {name} needs {var}"
            );
        }
        let output = Command::new(env!("CARGO_BIN_EXE_credentialflow"))
            .args(["check", "--config"])
            .arg(&checked_path)
            .env_clear()
            .envs(secrets.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(copy.path())
            .stdin(Stdio::null())
            .output()
            .expect("run credentialflow check");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let shown = format!("{name}: exit {:?}\n{stdout}{stderr}", output.status.code());
        assert_eq!(output.status.code(), Some(0), "{shown}");
        assert!(stdout.contains("ok: "), "{shown}");
        assert!(
            !stdout.contains("warning") && !stderr.contains("warning"),
            "{shown}"
        );
        for (var, value) in &secrets {
            assert!(
                !stdout.contains(value.as_str()) && !stderr.contains(value.as_str()),
                "check printed the value of {var}: {shown}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// lua-auth.toml, served
// ---------------------------------------------------------------------------

/// The secret `examples/scripts/hmac_secrets.lua` holds for `partner-a`.
const PARTNER_A_SECRET: &str = "example-secret-of-partner-a-change-me";

/// hex(HMAC-SHA256(secret, method "\n" path "\n" timestamp)), as a partner signs.
fn sign(secret: &str, method: &str, path: &str, timestamp: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{method}\n{path}\n{timestamp}").as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET path` with the signature headers `headers`.
fn send(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut all = vec![("Connection", "close")];
    all.extend_from_slice(headers);
    roundtrip(addr, &request("GET", path, &all, b""))
}

/// `lua-auth.toml` as the test serves it: free ports, the test upstream, and the scripts
/// folder of the source tree (the harness writes the config into a folder of its own).
fn lua_auth_config(upstream: &Upstream) -> String {
    let text = std::fs::read_to_string(examples_dir().join("lua-auth.toml")).unwrap();
    let replacements = [
        ("\"127.0.0.1:8080\"", "\"127.0.0.1:0\"".to_string()),
        ("\"127.0.0.1:9901\"", "\"127.0.0.1:0\"".to_string()),
        ("\"127.0.0.1:9000\"", format!("\"{}\"", upstream.target())),
        (
            "\"scripts/hmac_auth.lua\"",
            format!(
                "\"{}\"",
                examples_dir().join("scripts/hmac_auth.lua").display()
            ),
        ),
    ];
    let mut text = text;
    for (from, to) in replacements {
        assert_eq!(text.matches(from).count(), 1, "lua-auth.toml: {from}");
        text = text.replace(from, &to);
    }
    text
}

#[test]
fn lua_auth_example_admits_signed_requests_as_the_named_key_and_refuses_the_rest() {
    let upstream = Upstream::echo("partner-api");
    let partner_token = "dummy-partner-api-token-0123456789";
    let gw = Gateway::builder(&lua_auth_config(&upstream), Driver::Uring)
        .env("PARTNER_API_TOKEN", partner_token)
        .start();
    let key = create_key(&gw, &json!({ "name": "partner-a" }));

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let signature = sign(PARTNER_A_SECRET, "GET", "/partners/orders", &now);
    let signed = [
        ("x-client", "partner-a"),
        ("x-timestamp", now.as_str()),
        ("x-signature", signature.as_str()),
    ];
    let response = send(gw.addr(), "/partners/orders", &signed);
    let echo = Echo::of(&response);
    assert_eq!(
        echo.path, "/orders",
        "strip_prefix: the API sees its own path"
    );
    let injected: Vec<&str> = echo
        .headers
        .iter()
        .filter(|(name, _)| name == "x-api-token")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(
        injected,
        [partner_token],
        "the upstream credential is injected"
    );
    assert!(
        !echo.headers.iter().any(|(_, v)| v.contains(&key.secret)),
        "the key's secret never travels"
    );

    // A wrong secret, a signature for another path, a stale time, no signature: all 401,
    // none forwarded.
    let forged = sign("not-the-secret", "GET", "/partners/orders", &now);
    let other_path = sign(PARTNER_A_SECRET, "GET", "/partners/other", &now);
    let stale_time = (now.parse::<u64>().unwrap() - 301).to_string();
    let stale = sign(PARTNER_A_SECRET, "GET", "/partners/orders", &stale_time);
    let refused: [Vec<(&str, &str)>; 5] = [
        vec![signed[0], signed[1], ("x-signature", forged.as_str())],
        vec![signed[0], signed[1], ("x-signature", other_path.as_str())],
        vec![
            signed[0],
            ("x-timestamp", stale_time.as_str()),
            ("x-signature", stale.as_str()),
        ],
        vec![("x-client", "partner-b"), signed[1], signed[2]],
        vec![signed[0]],
    ];
    for headers in &refused {
        let response = send(gw.addr(), "/partners/orders", headers);
        assert_unauthenticated(&response);
    }
    assert_eq!(
        upstream.request_count(),
        1,
        "only the signed request was forwarded"
    );
}
