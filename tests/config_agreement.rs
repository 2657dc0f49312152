//! `check`, `serve` and reload take one validation path: for each bad config here, `check`
//! exits 1, `serve` exits 1 naming the same key path with the same error lines, and a
//! reload (`POST /admin/reload`) is refused with them. No output of any of them holds the
//! passwords planted in the configs.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Planted in every URL credential and short secret; must never be printed.
const PLANTED: &str = "PLANTED-pw-7f3a";
/// An `hs_secret` that resolves to fewer than 32 bytes, holding the planted password.
const SHORT_HS_SECRET: &str = "PLANTED-pw-7f3a-short";

/// One bad config: the tables after `[server]`, and the key path its error must name.
struct Case {
    name: &'static str,
    rest: String,
    key_path: &'static str,
}

/// A route `api` on `/` to upstream `backend` with `extra` lines (its `auth`, if not
/// `none`), and that upstream.
fn route_with(extra: &str) -> String {
    let auth = if extra.contains("auth =") {
        ""
    } else {
        "auth = \"none\""
    };
    format!(
        "{}\n[[route]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"backend\"\n{auth}\n{extra}\n",
        upstream_toml("backend", "127.0.0.1:9", ""),
    )
}

/// A provider `p` with `base_url` and a model on it.
fn provider_with(base_url: &str) -> String {
    format!(
        "[[provider]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"{base_url}\"\n\
         api_key = \"env:CF_ADMIN_TOKEN\"\n\n[[model]]\nname = \"m\"\nprovider = \"p\"\n"
    )
}

/// The bad configs; `files` is where PEM and Lua files they name are written.
fn cases(files: &Path) -> Vec<Case> {
    let garbage_pem = files.join("garbage.pem");
    std::fs::write(&garbage_pem, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let broken_lua = files.join("broken.lua");
    std::fs::write(&broken_lua, "function on_access(ctx)\n  if then\nend\n").unwrap();
    vec![
        Case {
            name: "userinfo in base_url",
            rest: provider_with(&format!("http://user:{PLANTED}@127.0.0.1:9")),
            key_path: "provider[0].base_url",
        },
        Case {
            name: "query key in base_url",
            rest: provider_with(&format!("https://api.example.com/v1?key={PLANTED}")),
            key_path: "provider[0].base_url",
        },
        Case {
            name: "userinfo in an upstream target",
            rest: format!(
                "{}{}",
                upstream_toml("backend", &format!("user:{PLANTED}@127.0.0.1:9"), ""),
                route_toml("api", "/", "backend", "")
            ),
            key_path: "upstream[0].targets[0]",
        },
        Case {
            name: "userinfo in jwks_url",
            rest: route_with(&format!(
                "auth = \"jwt\"\njwt = {{ jwks_url = \"https://u:{PLANTED}@127.0.0.1:9/jwks\" }}"
            )),
            key_path: "route[0].jwt.jwks_url",
        },
        Case {
            name: "hs_secret under 32 bytes",
            rest: route_with("auth = \"jwt\"\njwt = { hs_secret = \"env:CF_TEST_SHORT_HS\" }"),
            key_path: "route[0].jwt.hs_secret",
        },
        Case {
            name: "bad PEM public key",
            rest: route_with(
                "auth = \"jwt\"\njwt = { public_key = \"-----BEGIN PUBLIC KEY-----\\nnot base64!\\n-----END PUBLIC KEY-----\" }",
            ),
            key_path: "route[0].jwt.public_key",
        },
        Case {
            name: "TLS certificate that is not PEM",
            rest: format!(
                "[server.tls]\nlisten = [\"127.0.0.1:0\"]\ncert = \"{0}\"\nkey = \"{0}\"\n{1}",
                garbage_pem.display(),
                route_with("")
            ),
            key_path: "server.tls",
        },
        Case {
            name: "Lua script that does not compile",
            rest: route_with(&format!("hooks = \"{}\"", broken_lua.display())),
            key_path: "route[0].hooks",
        },
        Case {
            name: "unknown upstream",
            rest: format!(
                "{}{}",
                upstream_toml("backend", "127.0.0.1:9", ""),
                route_toml("api", "/", "ghost", "")
            ),
            key_path: "route[0].upstream",
        },
        Case {
            name: "bad CIDR",
            rest: route_with("allow_ips = [\"10.0.0.0/33\"]"),
            key_path: "route[0].allow_ips[0]",
        },
        Case {
            name: "cluster Redis URL of another scheme",
            rest: format!(
                "{}[cluster]\nredis = \"http://cf:{PLANTED}@127.0.0.1:6379\"\n",
                route_with("")
            ),
            key_path: "cluster.redis",
        },
        Case {
            name: "cluster sync interval too short",
            rest: format!("{}[cluster]\nsync_interval_ms = 5\n", route_with("")),
            key_path: "cluster.sync_interval_ms",
        },
    ]
}

/// What one run of the binary printed, and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The `error: ` lines, wherever they were printed.
    fn error_lines(&self) -> Vec<String> {
        format!("{}\n{}", self.stdout, self.stderr)
            .lines()
            .filter(|line| line.starts_with("error: "))
            .map(str::to_string)
            .collect()
    }
}

/// Runs `credentialflow <command> --config <dir>/credentialflow.toml` with the test
/// environment; fails the test if it is still running after 20 s (`serve` accepted it).
fn run(command: &str, dir: &Path, config_toml: &str) -> Run {
    let path = dir.join("credentialflow.toml");
    let text = config_toml.replace("@DIR@", &dir.to_string_lossy());
    std::fs::write(&path, text).unwrap();
    let out = dir.join(format!("{command}.out"));
    let err = dir.join(format!("{command}.err"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_credentialflow"));
    cmd.arg(command).arg("--config").arg(&path);
    if command == "serve" {
        cmd.args(["--driver", "epoll"]);
    }
    let mut child = cmd
        .env("CF_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("CF_TEST_SHORT_HS", SHORT_HS_SECRET)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("run credentialflow");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{command}` kept running: it accepted the config\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: std::fs::read_to_string(&out).unwrap(),
        stderr: std::fs::read_to_string(&err).unwrap(),
    }
}

fn assert_no_planted_secret(what: &str, text: &str) {
    assert!(
        !text.contains(PLANTED),
        "{what} printed a planted password:\n{text}"
    );
}

#[test]
fn check_and_serve_refuse_the_same_configs_with_the_same_errors() {
    let files = TempDir::new("agreement-files");
    for case in cases(files.path()) {
        let dir = TempDir::new("agreement");
        let config_toml = config(&case.rest);
        let check = run("check", dir.path(), &config_toml);
        let serve = run("serve", dir.path(), &config_toml);
        let name = case.name;
        assert_eq!(
            check.code,
            Some(1),
            "{name}: check\n{}{}",
            check.stdout,
            check.stderr
        );
        assert_eq!(serve.code, Some(1), "{name}: serve\n{}", serve.stderr);
        let checked = check.error_lines();
        assert!(
            checked.iter().any(
                |line| line.starts_with(&format!("error: {} ", case.key_path))
                    || line.starts_with(&format!("error: {}:", case.key_path))
            ),
            "{name}: check does not name {}: {checked:?}",
            case.key_path
        );
        assert_eq!(
            serve.error_lines(),
            checked,
            "{name}: serve and check disagree"
        );
        for (what, run) in [("check", &check), ("serve", &serve)] {
            assert_no_planted_secret(&format!("{name}: {what} stdout"), &run.stdout);
            assert_no_planted_secret(&format!("{name}: {what} stderr"), &run.stderr);
        }
    }
}

#[test]
fn url_credentials_are_refused_with_a_clear_error() {
    let files = TempDir::new("agreement-url-files");
    for case in cases(files.path()).into_iter().take(4) {
        let dir = TempDir::new("agreement-url");
        let check = run("check", dir.path(), &config(&case.rest));
        let errors = check.error_lines().join("\n");
        let expected = if case.name.starts_with("query") {
            "providers take their key from api_key"
        } else {
            "credentials in URLs are not allowed; use api_key/credential"
        };
        assert!(errors.contains(expected), "{}: {errors}", case.name);
    }
}

#[test]
fn reload_refuses_what_check_refuses_without_printing_secrets() {
    let upstream = Upstream::echo("backend");
    let good = config(&proxy_config(&upstream.target()));
    let mut gw = Gateway::builder(&good, Driver::Epoll)
        .env("CF_TEST_SHORT_HS", SHORT_HS_SECRET)
        .start();
    let files = TempDir::new("agreement-reload-files");
    for case in cases(files.path()) {
        let bad = config(&case.rest);
        let check = run("check", TempDir::new("agreement-reload").path(), &bad);
        gw.write_config(&bad.replace("@DIR@", &gw.dir().to_string_lossy()));
        let response = gw.reload_admin();
        let body = response.text();
        assert_eq!(
            response.status, 400,
            "{}: reload accepted: {body}",
            case.name
        );
        assert!(body.contains(case.key_path), "{}: {body}", case.name);
        for line in check.error_lines() {
            let message = line.strip_prefix("error: ").unwrap();
            assert!(
                body.contains(&message.replace('"', "\\\"")) || body.contains(message),
                "{}: reload body lacks check's line {message:?}: {body}",
                case.name
            );
        }
        assert_no_planted_secret(&format!("{}: reload body", case.name), &body);
    }
    // The old config is still served.
    assert_eq!(http_get(gw.addr(), "/still").status, 200);
    gw.stop();
    assert_no_planted_secret("gateway stderr", &gw.stderr());
    assert_no_planted_secret("gateway stdout", &gw.stdout());
}
