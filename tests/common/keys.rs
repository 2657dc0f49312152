//! Virtual keys in tests: the `/admin/keys*` API with any token and body, the
//! `credentialflow keys|audit` commands against a running gateway's store,
//! and requests that present a key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::{request, roundtrip, Client, Response};
use super::gateway::{remember_issued_key, Gateway, ADMIN_TOKEN};

/// The gateway's config file (as `Gateway::start` wrote it).
pub fn config_path(gw: &Gateway) -> PathBuf {
    gw.dir().join("credentialflow.toml")
}

/// The gateway's `data_dir` (the standard test `[server]` puts it in `@DIR@/data`).
pub fn data_dir(gw: &Gateway) -> PathBuf {
    gw.dir().join("data")
}

/// An admin API request on a new connection: `token` as a Bearer token (none
/// when `None`), `body` as JSON when given.
pub fn admin_call(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Connection", "close")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let mut client = Client::connect(admin);
    client.send(&request(method, path, &headers, &bytes));
    client.read_final_response()
}

/// An admin API request with the standard test admin token.
pub fn admin(gw: &Gateway, method: &str, path: &str, body: Option<&Value>) -> Response {
    admin_call(gw.admin_addr(), method, path, Some(ADMIN_TOKEN), body)
}

/// A key issued through the admin API or the CLI: its id and its secret.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    /// The key id (`key_...`).
    pub id: String,
    /// The secret, shown once.
    pub secret: String,
}

/// Reads `{"id","key"}` out of a create or rotate answer, and records the key
/// for the secret sweep (no gateway output may ever contain it).
pub fn issued_key(json: &Value) -> IssuedKey {
    let field = |name: &str| {
        json[name]
            .as_str()
            .unwrap_or_else(|| panic!("no string {name:?} in {json}"))
            .to_string()
    };
    let issued = IssuedKey {
        id: field("id"),
        secret: field("key"),
    };
    remember_issued_key(&issued.secret);
    issued
}

/// `POST /admin/keys` with `body`; fails unless the answer is 201 with an id and a key.
pub fn create_key(gw: &Gateway, body: &Value) -> IssuedKey {
    let response = admin(gw, "POST", "/admin/keys", Some(body));
    assert_eq!(
        response.status,
        201,
        "POST /admin/keys {body}: {}",
        response.text()
    );
    issued_key(&response.json())
}

/// `DELETE /admin/keys/{id}`; fails unless 204.
pub fn revoke_key(gw: &Gateway, id: &str) {
    let response = admin(gw, "DELETE", &format!("/admin/keys/{id}"), None);
    assert_eq!(response.status, 204, "DELETE {id}: {}", response.text());
}

/// `POST /admin/keys/{id}/rotate` with `{"grace": grace}`; fails unless 200
/// with the same id and a new key.
pub fn rotate_key(gw: &Gateway, id: &str, grace: &str) -> IssuedKey {
    let body = serde_json::json!({ "grace": grace });
    let response = admin(gw, "POST", &format!("/admin/keys/{id}/rotate"), Some(&body));
    assert_eq!(response.status, 200, "rotate {id}: {}", response.text());
    let rotated = issued_key(&response.json());
    assert_eq!(rotated.id, id, "rotation must keep the key id");
    rotated
}

/// What a `credentialflow` command printed and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    /// The exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
}

impl CliOutput {
    /// stdout and stderr together.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Fails the test unless the command exited 0.
    pub fn assert_ok(&self, what: &str) {
        assert_eq!(
            self.code,
            Some(0),
            "`credentialflow {what}` failed:\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `credentialflow ARGS --config CONFIG` in `dir` with `env`; a
/// one-shot command, so it is given 30 s.
pub fn run_cli(config: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let output = Command::new(env!("CARGO_BIN_EXE_credentialflow"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("CF_ADMIN_TOKEN", ADMIN_TOKEN)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run credentialflow");
    CliOutput {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `credentialflow ARGS --config <gw's config>` against a running gateway's store.
pub fn cli(gw: &Gateway, args: &[&str]) -> CliOutput {
    run_cli(&config_path(gw), gw.dir(), args, &[])
}

/// `credentialflow keys create --name NAME EXTRA.. --json`; fails unless it
/// prints `{"id","key"}`.
pub fn cli_create_key(gw: &Gateway, name: &str, extra: &[&str]) -> IssuedKey {
    let mut args = vec!["keys", "create", "--name", name];
    args.extend_from_slice(extra);
    args.push("--json");
    let out = cli(gw, &args);
    out.assert_ok("keys create");
    let json: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "`keys create --json` printed no JSON ({e}): {:?}",
            out.stdout
        )
    });
    issued_key(&json)
}

/// `credentialflow keys revoke ID`; fails unless it exits 0.
pub fn cli_revoke_key(gw: &Gateway, id: &str) {
    cli(gw, &["keys", "revoke", id]).assert_ok("keys revoke");
}

/// `credentialflow keys rotate ID --grace GRACE --json`; fails unless it
/// prints `{"id","key"}` with the same id.
pub fn cli_rotate_key(gw: &Gateway, id: &str, grace: &str) -> IssuedKey {
    let out = cli(gw, &["keys", "rotate", id, "--grace", grace, "--json"]);
    out.assert_ok("keys rotate");
    let json: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "`keys rotate --json` printed no JSON ({e}): {:?}",
            out.stdout
        )
    });
    let rotated = issued_key(&json);
    assert_eq!(rotated.id, id, "rotation must keep the key id");
    rotated
}

/// How a request presents its key.
#[derive(Clone, Copy, Debug)]
pub enum Presented {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// `x-api-key: <key>`.
    XApiKey,
}

/// `GET path` on a new connection, presenting `key` (or nothing).
pub fn get_with_key(addr: SocketAddr, path: &str, key: Option<&str>) -> Response {
    get_presenting(addr, path, key, Presented::Bearer)
}

/// `GET path` on a new connection, presenting `key` the way `how` says.
pub fn get_presenting(addr: SocketAddr, path: &str, key: Option<&str>, how: Presented) -> Response {
    let bearer = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Connection", "close")];
    if let (Some(key), Some(bearer)) = (key, bearer.as_deref()) {
        match how {
            Presented::Bearer => headers.push(("Authorization", bearer)),
            Presented::XApiKey => headers.push(("x-api-key", key)),
        }
    }
    roundtrip(addr, &request("GET", path, &headers, b""))
}

/// Sends `GET path` with `key` on fresh connections (fresh connections land
/// on different workers) until `streak` answers in a row have status `want`,
/// or `timeout` passes. Returns the time from `since` to the first answer of
/// that final streak, or None on timeout. The streak makes "every worker"
/// likely: with 2 workers, 12 in a row all on one worker has odds 1 in 2048.
pub fn time_until_status(
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
    want: u16,
    streak: usize,
    since: Instant,
    timeout: Duration,
) -> Option<Duration> {
    let mut run = 0;
    let mut run_started = since.elapsed();
    while since.elapsed() < timeout {
        let sent_at = since.elapsed();
        let status = get_with_key(addr, path, key).status;
        if status == want {
            if run == 0 {
                run_started = sent_at;
            }
            run += 1;
            if run >= streak {
                return Some(run_started);
            }
        } else {
            run = 0;
        }
        // Leave the (shared, 2-core) CPU to the gateway between probes.
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

/// Fails the test unless the answer is a 401 `authentication_error`.
pub fn assert_unauthenticated(response: &Response) {
    response.assert_error(401, "authentication_error");
}

/// Fails the test unless the answer is a 403 `permission_error`.
pub fn assert_forbidden(response: &Response) {
    response.assert_error(403, "permission_error");
}

/// The median and the maximum of `samples` (which must not be empty).
pub fn median_and_worst(samples: &[Duration]) -> (Duration, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    (sorted[sorted.len() / 2], sorted[sorted.len() - 1])
}
