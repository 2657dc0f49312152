//! The `[store]` section and the commands that work on the store (`keys`, `usage`,
//! `audit`): they read only `data_dir` and `[store]` from the config, so an operator can
//! revoke a key in an emergency without exporting the admin token and every provider key;
//! `check` names every `[store]` error and never prints the store URL's password; and a
//! PostgreSQL store that cannot be reached stops `serve` and the commands with an error that
//! never holds the password (the fleet itself is tested in `tests/fleet.rs`).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::TempDir;
use serde_json::Value;

/// Environment variables the configs below refer to and that are never set, so any
/// command that resolved them would fail.
const UNSET_VARS: [&str; 4] = [
    "CF_CLI_STORE_UNSET_ADMIN",
    "CF_CLI_STORE_UNSET_BACKEND",
    "CF_CLI_STORE_UNSET_OPENAI",
    "CF_CLI_STORE_UNSET_HS",
];

/// A pepper as long as one must be (32 bytes); it must never be printed.
const PEPPER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The password written into store URLs below; it must never be printed.
const URL_PASSWORD: &str = "Sup3rS3cretPw";

/// A config whose sections other than `data_dir` cannot be served: the admin token,
/// the upstream credential, the JWT secret and the provider key are references to unset
/// variables, the route names an upstream that does not exist, and `[lua]` has a value
/// `check` refuses. `store` is put in as the `[store]` section (may be empty).
fn unservable_config(store: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
admin_listen = "127.0.0.1:0"
admin_token = "env:CF_CLI_STORE_UNSET_ADMIN"
data_dir = "data"
access_log = ""

[[upstream]]
name = "backend"
targets = ["127.0.0.1:9"]
credential = {{ header = "authorization", value = "Bearer {{secret}}", secret = "env:CF_CLI_STORE_UNSET_BACKEND" }}

[[route]]
name = "api"
path_prefix = "/api/"
upstream = "no-such-upstream"
auth = "jwt"
jwt = {{ hs_secret = "env:CF_CLI_STORE_UNSET_HS" }}

[[provider]]
name = "openai"
kind = "openai"
api_key = "env:CF_CLI_STORE_UNSET_OPENAI"

[[model]]
name = "gpt-4o-mini"
provider = "openai"

[lua]
hook_timeout_ms = 0

{store}
"#
    )
}

/// What a command printed and how it exited.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    fn assert_ok(&self, what: &str) {
        assert_eq!(
            self.code,
            Some(0),
            "`credentialflow {what}` failed:\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `credentialflow ARGS --config CONFIG` in `cwd` with none of [`UNSET_VARS`] set
/// and `env` added.
fn run(config: &Path, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_credentialflow"));
    command.args(args).arg("--config").arg(config);
    for name in UNSET_VARS {
        command.env_remove(name);
    }
    let output = command
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run credentialflow");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A temp dir holding `credentialflow.toml` with `text`, and a separate working
/// directory, so relative paths are seen to follow the config file, not the cwd.
struct Setup {
    dir: TempDir,
    cwd: TempDir,
}

impl Setup {
    /// The config and its (existing) `data_dir`, as a gateway that has served once
    /// leaves them.
    fn new(text: &str) -> Setup {
        let setup = Setup::without_data_dir(text);
        std::fs::create_dir(setup.dir.join("data")).expect("create data_dir");
        setup
    }

    /// The config alone: its `data_dir` does not exist.
    fn without_data_dir(text: &str) -> Setup {
        let dir = TempDir::new("cli-store");
        std::fs::write(dir.join("credentialflow.toml"), text).expect("write config");
        Setup {
            dir,
            cwd: TempDir::new("cli-store-cwd"),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        run(
            &self.dir.join("credentialflow.toml"),
            self.cwd.path(),
            args,
            env,
        )
    }
}

/// Every store command, run in the order of a key's life, on a config the gateway could
/// not serve: none of them may need what they do not use.
fn whole_key_life_works(setup: &Setup) {
    let created = setup.run(&["keys", "create", "--name", "ops", "--team", "red", "--json"]);
    created.assert_ok("keys create");
    let created_stderr = created.stderr.clone();
    let created = created.json();
    let id = created["id"].as_str().expect("id").to_string();
    let secret = created["key"].as_str().expect("key").to_string();
    assert!(
        setup.dir.join("data").join("keys.db").is_file(),
        "the store must live in data_dir next to the config file"
    );
    // Which store was used, on stderr, with data_dir resolved against the config file.
    let data_dir = setup.dir.join("data");
    assert_eq!(
        created_stderr.trim_end(),
        format!("store: sqlite at {}", data_dir.display()),
    );

    let listed = setup.run(&["keys", "list", "--json"]);
    listed.assert_ok("keys list");
    let listed = listed.json();
    let ids: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|k| k["id"].as_str())
        .collect();
    assert_eq!(ids, [id.as_str()]);

    let shown = setup.run(&["keys", "show", &id, "--json"]);
    shown.assert_ok("keys show");
    assert_eq!(shown.json()["team"], "red");

    let updated = setup.run(&["keys", "update", &id, "--team", "blue", "--json"]);
    updated.assert_ok("keys update");
    assert_eq!(updated.json()["team"], "blue");

    let rotated = setup.run(&["keys", "rotate", &id, "--grace", "1h", "--json"]);
    rotated.assert_ok("keys rotate");
    let rotated = rotated.json();
    assert_eq!(rotated["id"], id.as_str());
    assert_ne!(
        rotated["key"],
        secret.as_str(),
        "rotation gives a new secret"
    );

    let revoked = setup.run(&["keys", "revoke", &id, "--json"]);
    revoked.assert_ok("keys revoke");
    assert!(
        revoked.json()["revoked_at"].is_number(),
        "{}",
        revoked.stdout
    );

    let usage = setup.run(&["usage", "--json"]);
    usage.assert_ok("usage");
    assert_eq!(usage.json(), serde_json::json!([]));

    let audit = setup.run(&["audit", "--json"]);
    audit.assert_ok("audit");
    let actions: Vec<String> = audit
        .stdout
        .lines()
        .map(|line| {
            let entry: Value = serde_json::from_str(line).expect("audit JSON line");
            assert_eq!(entry["key_id"], id.as_str(), "{line}");
            entry["action"].as_str().expect("action").to_string()
        })
        .collect();
    assert_eq!(actions, ["create", "update", "rotate", "revoke"]);
}

#[test]
fn store_commands_need_none_of_the_gateways_other_secrets() {
    whole_key_life_works(&Setup::new(&unservable_config("")));
}

#[test]
fn store_commands_work_with_an_explicit_sqlite_store_section() {
    let store = "[store]\nbackend = \"sqlite\"\nnode = \"edge-1\"\n";
    whole_key_life_works(&Setup::new(&unservable_config(store)));
}

#[test]
fn store_commands_still_report_a_bad_store_section() {
    let setup = Setup::new(&unservable_config("[store]\nbackend = \"mysql\"\n"));
    for args in [&["keys", "list"][..], &["usage"], &["audit"]] {
        let run = setup.run(args);
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.output());
        assert!(
            run.stderr.contains("store.backend"),
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("store: "), "{args:?}: {}", run.stderr);
    }
}

/// `check` on `text`, with `env` set; its exit code and output.
fn check(text: &str, env: &[(&str, &str)]) -> Run {
    let setup = Setup::new(text);
    setup.run_with(&["check"], env)
}

/// The key paths of the `error:` lines of `check`'s output.
fn error_paths(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| line.strip_prefix("error: "))
        .filter_map(|rest| rest.split([' ', ':']).next())
        .map(str::to_string)
        .collect()
}

/// A config `check` accepts but for its `[store]` section.
fn valid_config(store: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin_listen = \"127.0.0.1:0\"\n\
         data_dir = \"data\"\naccess_log = \"\"\n\n{store}\n"
    )
}

#[test]
fn check_accepts_a_sqlite_store_section() {
    let run = check(
        &valid_config("[store]\nbackend = \"sqlite\"\nnode = \"edge-1\"\n"),
        &[],
    );
    assert_eq!(run.code, Some(0), "{}", run.output());
    assert!(!run.output().contains("error"), "{}", run.output());
}

#[test]
fn check_names_every_store_error() {
    let run = check(
        &valid_config("[store]\nbackend = \"mysql\"\nnode = \"edge one!\"\npeper = \"x\"\n"),
        &[],
    );
    assert_eq!(run.code, Some(1), "{}", run.output());
    assert_eq!(
        error_paths(&run.stderr),
        ["store.backend", "store.node", "store.peper"],
        "{}",
        run.stderr
    );
}

#[test]
fn check_requires_url_and_pepper_for_postgres() {
    let run = check(&valid_config("[store]\nbackend = \"postgres\"\n"), &[]);
    assert_eq!(run.code, Some(1), "{}", run.output());
    let paths = error_paths(&run.stderr);
    for path in ["store.url", "store.pepper"] {
        assert!(paths.iter().any(|p| p == path), "{path}: {}", run.stderr);
    }
}

#[test]
fn check_refuses_a_short_pepper_without_showing_it() {
    let store = "[store]\nbackend = \"postgres\"\nurl = \"env:CF_CLI_STORE_URL\"\n\
                 pepper = \"env:CF_CLI_STORE_PEPPER\"\n";
    let run = check(
        &valid_config(store),
        &[
            ("CF_CLI_STORE_URL", "postgres://cf@db.example/cf"),
            ("CF_CLI_STORE_PEPPER", "short-pepper"),
        ],
    );
    assert_eq!(run.code, Some(1), "{}", run.output());
    assert!(
        error_paths(&run.stderr).iter().any(|p| p == "store.pepper"),
        "{}",
        run.stderr
    );
    assert!(!run.output().contains("short-pepper"), "{}", run.output());
}

#[test]
fn check_never_prints_the_store_urls_password() {
    // A literal URL: a warning like any literal secret, and not the URL itself.
    let literal = format!(
        "[store]\nbackend = \"postgres\"\nurl = \"postgres://cf:{URL_PASSWORD}@db.example:5432/cf\"\n\
         pepper = \"env:CF_CLI_STORE_PEPPER\"\n"
    );
    let run = check(&valid_config(&literal), &[("CF_CLI_STORE_PEPPER", PEPPER)]);
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("warning: store.url") && l.contains("literal")),
        "{}",
        run.stderr
    );
    assert!(!run.output().contains(URL_PASSWORD), "{}", run.output());
    assert!(!run.output().contains(PEPPER));

    // A URL from the environment with a scheme that is refused: named, not shown.
    let from_env = "[store]\nbackend = \"postgres\"\nurl = \"env:CF_CLI_STORE_URL\"\n\
                    pepper = \"env:CF_CLI_STORE_PEPPER\"\n";
    let url = format!("mysql://cf:{URL_PASSWORD}@db.example/cf");
    let run = check(
        &valid_config(from_env),
        &[("CF_CLI_STORE_URL", &url), ("CF_CLI_STORE_PEPPER", PEPPER)],
    );
    assert_eq!(run.code, Some(1), "{}", run.output());
    assert!(
        error_paths(&run.stderr).iter().any(|p| p == "store.url"),
        "{}",
        run.stderr
    );
    assert!(!run.output().contains(URL_PASSWORD), "{}", run.output());
    assert!(!run.output().contains("db.example"), "{}", run.output());
}

/// A complete `[store]` section for PostgreSQL.
const POSTGRES_STORE: &str = "[store]\nbackend = \"postgres\"\nurl = \"env:CF_CLI_STORE_URL\"\n\
                              pepper = \"env:CF_CLI_STORE_PEPPER\"\n";

fn postgres_env(url: &str) -> [(&str, &str); 2] {
    [("CF_CLI_STORE_URL", url), ("CF_CLI_STORE_PEPPER", PEPPER)]
}

/// Nothing listens on port 9 of the loopback: the store is unreachable.
fn unreachable_url() -> String {
    format!("postgres://cf:{URL_PASSWORD}@127.0.0.1:9/cf")
}

#[test]
fn serve_stops_when_the_postgres_store_is_unreachable_without_showing_the_password() {
    let setup = Setup::new(&valid_config(POSTGRES_STORE));
    let run = setup.run_with(&["serve"], &postgres_env(&unreachable_url()));
    assert_ne!(run.code, Some(0), "{}", run.output());
    assert!(run.stderr.contains("PostgreSQL"), "{}", run.stderr);
    assert!(!run.output().contains(URL_PASSWORD), "{}", run.output());
    assert!(!run.output().contains(PEPPER), "{}", run.output());
}

#[test]
fn store_commands_fail_as_a_machine_error_when_postgres_is_unreachable() {
    let setup = Setup::new(&unservable_config(POSTGRES_STORE));
    let url = unreachable_url();
    let env = postgres_env(&url);
    for args in [
        &["keys", "create", "--name", "x"][..],
        &["keys", "list"],
        &["keys", "revoke", "key_x"],
        &["audit"],
    ] {
        let run = setup.run_with(args, &env);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.output());
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(
            run.stderr.contains("PostgreSQL"),
            "{args:?}: {}",
            run.stderr
        );
        // The store is named by its node, never by its URL.
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("store: postgres (") && first.ends_with(')'),
            "{args:?}: {}",
            run.stderr
        );
        assert!(!first.contains("127.0.0.1"), "{args:?}: {first}");
        assert!(!run.output().contains(URL_PASSWORD), "{args:?}");
        assert!(!run.output().contains(PEPPER), "{args:?}");
    }
    assert!(
        !setup.dir.join("data").join("keys.db").exists(),
        "a PostgreSQL command must not create a SQLite store"
    );
}

#[test]
fn store_commands_refuse_a_data_dir_that_does_not_exist() {
    let setup = Setup::without_data_dir(&unservable_config(""));
    for args in [
        &["keys", "create", "--name", "lost"][..],
        &["keys", "list"],
        &["keys", "revoke", "key_x"],
        &["usage"],
        &["audit"],
    ] {
        let run = setup.run(args);
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.output());
        assert_eq!(run.stdout, "", "{args:?}: no key may be printed");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.starts_with("error: server.data_dir ")
                && run.stderr.contains("does not exist"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            !setup.dir.join("data").exists(),
            "{args:?}: a store command must not create an empty store"
        );
    }
}

#[test]
fn files_a_root_run_command_creates_belong_to_the_data_dirs_owner() {
    use std::os::unix::fs::MetadataExt;

    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: only root can create files for another user");
        return;
    }
    // `nobody`: a user that owns nothing else here, as a service user would.
    const NOBODY: u32 = 65_534;
    let setup = Setup::new(&unservable_config(""));
    let data = setup.dir.join("data");
    std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY)).expect("chown data_dir");

    let created = setup.run(&["keys", "create", "--name", "svc", "--json"]);
    created.assert_ok("keys create");
    let id = created.json()["id"].as_str().expect("id").to_string();
    setup.run(&["keys", "revoke", &id]).assert_ok("keys revoke");
    setup.run(&["usage"]).assert_ok("usage");
    setup.run(&["audit"]).assert_ok("audit");

    let mut names = Vec::new();
    for entry in std::fs::read_dir(&data).expect("read data_dir") {
        let entry = entry.expect("entry");
        let meta = std::fs::symlink_metadata(entry.path()).expect("metadata");
        let name = entry.file_name().to_string_lossy().into_owned();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (NOBODY, NOBODY),
            "{name} is not the data_dir owner's"
        );
        names.push(name);
    }
    names.sort();
    for made in ["audit.log", "keys.db", "pepper"] {
        assert!(names.iter().any(|n| n == made), "{made} missing: {names:?}");
    }
}
