//! The README's quickstart, run as a newcomer pastes it: the commands, curl calls and SDK
//! snippets are read from README.md itself (the fenced block after each
//! `<!-- quickstart:NAME -->` comment), so the README and this test cannot drift apart.
//!
//! What differs from a newcomer's machine, and why:
//! - `cargo run --release --` is the test's own `credentialflow` binary (the same code).
//! - Ports: 8080 and 9901 may be taken on a test machine, so the working directory holds the
//!   built-in default config (`BUILTIN_DEFAULT_TOML`) with both ports rewritten to 0; `serve`
//!   with no arguments reads it from `./credentialflow.toml` exactly as it would read the
//!   built-in text, and the address the ready line reports replaces `127.0.0.1:8080` in the
//!   curl commands and SDK snippets.
//! - The placeholders a newcomer fills in (`export CF_KEY=cf_...`, `export OPENAI_API_KEY=sk-...`)
//!   are filled in by the test: the key the CLI printed, a dummy provider key.
//! - A host the machine cannot resolve (a CI box without DNS: `check` resolves provider hosts)
//!   is replaced with `127.0.0.1`, and the test says so; with DNS the file is checked as written.
//!
//! python3 with the official SDKs is required (`scripts/test.sh` installs them); without it the
//! test fails with that line, it does not skip.

mod common;

use std::fs::File;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::gateway::parse_ready_line;
use common::keys::get_with_key;
use common::{wait_until, TempDir, KEY_PROPAGATION};
use serde_json::Value;

/// The README, read at compile time (cargo rebuilds this test when it changes).
const README: &str = include_str!("../README.md");

/// What a newcomer types to run the gateway; the test runs its own binary instead.
const CARGO_RUN: &str = "cargo run --release -- ";

/// The address every quickstart command and snippet talks to.
const README_ADDR: &str = "127.0.0.1:8080";

/// Longest any one step (a CLI run, a curl call, an SDK snippet) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `serve` may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The dummy value the test gives every secret a quickstart `export` line names.
const DUMMY_SECRET: &str = "quickstart-dummy-secret-0123456789abcdef";

// ---------------------------------------------------------------------------
// Reading the README
// ---------------------------------------------------------------------------

/// One fenced block of the README: its info string (`sh`, `python`, `toml`) and its text.
struct Block {
    lang: String,
    text: String,
}

/// The fenced block right after `<!-- quickstart:NAME -->` (blank lines between are allowed).
fn block(name: &str) -> Block {
    let marker = format!("<!-- quickstart:{name} -->");
    let mut found = README.match_indices(&marker);
    let (at, _) = found
        .next()
        .unwrap_or_else(|| panic!("README.md has no {marker}"));
    assert!(found.next().is_none(), "README.md has {marker} twice");
    let mut lines = README[at + marker.len()..]
        .lines()
        .skip(1)
        .skip_while(|l| l.trim().is_empty());
    let fence = lines.next().unwrap_or("");
    let lang = fence
        .strip_prefix("```")
        .unwrap_or_else(|| panic!("{marker} is not followed by a fenced block: {fence:?}"))
        .trim()
        .to_string();
    let mut text = String::new();
    for line in lines.by_ref() {
        if line.starts_with("```") {
            assert!(!text.is_empty(), "{marker}: empty block");
            return Block { lang, text };
        }
        text.push_str(line);
        text.push('\n');
    }
    panic!("{marker}: the fenced block never ends");
}

/// The lines of a shell block that are commands (not blank, not comments), comments cut.
fn commands(block: &Block) -> Vec<String> {
    assert_eq!(block.lang, "sh", "a command block is `sh`");
    block
        .text
        .lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// `cargo run --release -- ARGS` as the binary's arguments (the quickstart quotes none).
fn cli_args(command: &str) -> Vec<String> {
    let args = command
        .strip_prefix(CARGO_RUN)
        .unwrap_or_else(|| panic!("not a `{CARGO_RUN}...` command: {command:?}"));
    assert!(
        !args.contains(['"', '\'', '$', '|', ';']),
        "{command:?}: the test splits arguments on spaces only"
    );
    args.split_whitespace().map(str::to_string).collect()
}

/// `export NAME=VALUE` → `NAME`.
fn exported_name(command: &str) -> &str {
    command
        .strip_prefix("export ")
        .and_then(|rest| rest.split_once('='))
        .map(|(name, _)| name)
        .unwrap_or_else(|| panic!("not an `export NAME=...` line: {command:?}"))
}

/// `text` with the README's address replaced by `addr`; the address must be there.
fn at_addr(text: &str, addr: SocketAddr) -> String {
    assert!(
        text.contains(README_ADDR),
        "the snippet does not talk to {README_ADDR}:\n{text}"
    );
    text.replace(README_ADDR, &addr.to_string())
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

// ---------------------------------------------------------------------------
// Running things
// ---------------------------------------------------------------------------

/// What a finished command printed.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status.code(),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `cmd` in `dir` to completion (at most [`STEP_TIMEOUT`]), output captured in files so
/// a chatty command cannot block on a full pipe.
fn run(mut cmd: Command, dir: &Path, label: &str) -> Ran {
    let out_path = dir.join(format!("{label}.stdout"));
    let err_path = dir.join(format!("{label}.stderr"));
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{label}: cannot start: {e}"));
    let deadline = Instant::now() + STEP_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{label}: still running after {STEP_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    Ran {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

/// The binary with the arguments of a `cargo run --release -- ...` line.
fn credentialflow(command: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_credentialflow"));
    cmd.args(cli_args(command));
    cmd
}

/// A `serve` started from a quickstart line; stopped with SIGINT (Ctrl-C) by [`stop`].
///
/// [`stop`]: Serve::stop
struct Serve {
    child: Child,
    addr: SocketAddr,
    output: Arc<Mutex<String>>,
}

impl Serve {
    /// Runs `command` in `dir` and waits for the ready line.
    fn start(command: &str, dir: &Path, env: &[(&str, &str)]) -> Serve {
        let mut cmd = credentialflow(command);
        cmd.current_dir(dir)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl only sets this process's parent-death signal (the test dying takes
        // the gateway with it); no allocation or lock between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn credentialflow serve");
        let output = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        collect(
            child.stderr.take().expect("stderr"),
            &output,
            Some(ready_tx),
        );
        collect(child.stdout.take().expect("stdout"), &output, None);
        let line = match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(why) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "`{command}` never printed its ready line ({why:?}); exit {status:?}\n{}",
                    output.lock().unwrap()
                );
            }
        };
        let ready = parse_ready_line(&line).expect("ready line");
        Serve {
            child,
            addr: ready.listen[0],
            output,
        }
    }

    /// Ctrl-C: SIGINT, then the exit status (the gateway drains and exits 0).
    fn stop(mut self) -> (ExitStatus, String) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + STEP_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "serve ignored Ctrl-C");
            std::thread::sleep(Duration::from_millis(20));
        };
        // The readers reach EOF once the process is gone.
        std::thread::sleep(Duration::from_millis(100));
        let output = self.output.lock().unwrap().clone();
        (status, output)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends `source`'s lines to `into` on a thread; the first ready line goes to `ready`.
fn collect(
    source: impl std::io::Read + Send + 'static,
    into: &Arc<Mutex<String>>,
    ready: Option<mpsc::Sender<String>>,
) {
    use std::io::BufRead;
    let into = Arc::clone(into);
    std::thread::spawn(move || {
        let mut ready = ready;
        for line in std::io::BufReader::new(source).lines() {
            let Ok(line) = line else { return };
            if line.contains("credentialflow ready ") {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(line.clone());
                }
            }
            let mut all = into.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
}

/// The first `cf_` key in `text`.
fn key_in(text: &str) -> Option<String> {
    let at = text.find("cf_")?;
    let key: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (key.len() > 20).then_some(key)
}

/// Fails unless python3 can import both SDKs, saying how to install them.
fn require_sdks(dir: &Path) {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", "import openai, anthropic"]);
    let ran = run(cmd, dir, "sdk-import");
    assert!(
        ran.status.success(),
        "the quickstart's SDK snippets need python3 with the official SDKs \
         (scripts/test.sh installs them): {}",
        ran.stderr.trim()
    );
}

/// Runs a curl block of the README against `addr` with `CF_KEY` set; returns status and body.
fn curl(name: &str, addr: SocketAddr, key: &str, dir: &Path) -> (u16, Value) {
    let block = block(name);
    assert_eq!(block.lang, "sh");
    assert!(block.text.trim_start().starts_with("curl "), "{name}");
    // The README's command as written, plus a last line with the status code.
    let script = format!(
        "{} -w '\\n%{{http_code}}'",
        at_addr(&block.text, addr).trim_end()
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-ec", &script]).env("CF_KEY", key);
    let ran = run(cmd, dir, name);
    assert!(ran.status.success(), "{name}: {}", ran.describe());
    let (body, status) = ran
        .stdout
        .rsplit_once('\n')
        .unwrap_or_else(|| panic!("{name}: no status line: {}", ran.describe()));
    let body: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{name}: body is not JSON ({e}): {}", ran.describe()));
    (status.trim().parse().expect("status code"), body)
}

/// Runs a python block of the README against `addr` with `CF_KEY` set; returns its stdout.
fn python(name: &str, addr: SocketAddr, key: &str, dir: &Path) -> String {
    let block = block(name);
    assert_eq!(block.lang, "python", "{name}");
    let mut cmd = Command::new("python3");
    cmd.args(["-c", &at_addr(&block.text, addr)])
        .env("CF_KEY", key);
    let ran = run(cmd, dir, name);
    assert!(ran.status.success(), "{name}: {}", ran.describe());
    ran.stdout
}

// ---------------------------------------------------------------------------
// The quickstart
// ---------------------------------------------------------------------------

#[test]
fn readme_quickstart_runs_as_written() {
    let dir = TempDir::new("quickstart");
    let dir = dir.path();
    require_sdks(dir);

    // 1. `serve` on the built-in default, its two ports made free ones.
    let default_on_free_ports = credentialflow::config::BUILTIN_DEFAULT_TOML
        .replacen("\"127.0.0.1:8080\"", "\"127.0.0.1:0\"", 1)
        .replacen("\"127.0.0.1:9901\"", "\"127.0.0.1:0\"", 1);
    assert_eq!(
        default_on_free_ports.matches("127.0.0.1:0").count(),
        2,
        "the built-in default no longer listens on 127.0.0.1:8080 and :9901: update the README"
    );
    std::fs::write(dir.join("credentialflow.toml"), &default_on_free_ports).unwrap();
    let serve_line = commands(&block("serve"));
    assert_eq!(serve_line, [format!("{CARGO_RUN}serve")]);
    let gateway = Serve::start(&serve_line[0], dir, &[]);

    // 2. `keys create` in the same folder, with nothing in its environment: no secret needed.
    let keys_line = commands(&block("keys"));
    assert_eq!(keys_line.len(), 1, "one command: {keys_line:?}");
    let mut cmd = credentialflow(&keys_line[0]);
    cmd.env_clear();
    let created = run(cmd, dir, "keys-create");
    assert!(created.status.success(), "{}", created.describe());
    let key = key_in(&created.stdout)
        .unwrap_or_else(|| panic!("keys create printed no key: {}", created.describe()));
    assert!(
        created.stdout.contains(&format!("key: {key}")),
        "the README shows `key: cf_...`: {}",
        created.describe()
    );
    let export = commands(&block("export"));
    assert_eq!(export.len(), 1);
    assert_eq!(exported_name(&export[0]), "CF_KEY");
    assert!(export[0].starts_with("export CF_KEY=cf_"), "{export:?}");

    // The gateway takes the CLI's key within a second; a newcomer types slower than that.
    assert!(
        wait_until(KEY_PROPAGATION, || {
            get_with_key(gateway.addr, "/v1/models", Some(&key)).status == 200
        }),
        "the gateway never accepted the key the CLI made"
    );

    // 3. curl, both dialects.
    let (status, body) = curl("curl-openai", gateway.addr, &key, dir);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion", "{body}");
    assert_eq!(body["model"], "mock-gpt", "{body}");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant", "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"], "Hello, gateway!",
        "{body}"
    );
    assert!(body["usage"]["prompt_tokens"].as_u64() > Some(0), "{body}");
    assert!(
        body["usage"]["completion_tokens"].as_u64() > Some(0),
        "{body}"
    );

    let (status, body) = curl("curl-anthropic", gateway.addr, &key, dir);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "message", "{body}");
    assert_eq!(body["model"], "mock-claude", "{body}");
    assert_eq!(body["content"][0]["type"], "text", "{body}");
    assert_eq!(body["content"][0]["text"], "Hello, Claude!", "{body}");
    assert!(body["usage"]["input_tokens"].as_u64() > Some(0), "{body}");
    assert!(body["usage"]["output_tokens"].as_u64() > Some(0), "{body}");
    // What the README says the answers say.
    assert!(README.contains("says `Hello, gateway!`") && README.contains("says `Hello, Claude!`"));

    // 4. The SDK snippets.
    let printed = python("openai-sdk", gateway.addr, &key, dir);
    assert_eq!(printed.trim(), "Hello from the OpenAI SDK");
    let printed = python("anthropic-sdk", gateway.addr, &key, dir);
    assert_eq!(printed.trim(), "Hello from the Anthropic SDK");

    // The usage report, from the ledger the gateway writes at least once a second.
    let usage_line = commands(&block("usage"));
    assert_eq!(usage_line.len(), 1, "{usage_line:?}");
    let mut last = String::new();
    let counted = wait_until(Duration::from_secs(5), || {
        let mut cmd = credentialflow(&usage_line[0]);
        cmd.env_clear();
        let ran = run(cmd, dir, "usage");
        assert!(ran.status.success(), "{}", ran.describe());
        let requests = |model: &str| {
            ran.stdout
                .lines()
                .find(|l| l.split_whitespace().next() == Some(model))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        };
        last = ran.stdout.clone();
        requests("mock-gpt").as_deref() == Some("2")
            && requests("mock-claude").as_deref() == Some("2")
    });
    assert!(counted, "usage never showed 2 requests per model:\n{last}");
    // The README shows the report exactly (the mock's usage and the default's prices).
    let words = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .filter(|w: &Vec<String>| !w.is_empty())
            .collect()
    };
    assert_eq!(words(&last), words(&block("usage-output").text));

    // Ctrl-C: a clean stop, and the key never in the gateway's output or its access log.
    let (status, output) = gateway.stop();
    assert!(status.success(), "serve exit {status:?}\n{output}");
    assert!(!output.contains(&key), "the key is in the gateway's output");
    let access_log = std::fs::read_to_string(dir.join("data/access.log")).unwrap_or_default();
    let logged = |path: &str| {
        let field = format!("\"path\":\"{path}\"");
        access_log.lines().filter(|l| l.contains(&field)).count()
    };
    assert_eq!(
        (logged("/v1/chat/completions"), logged("/v1/messages")),
        (2, 2),
        "one access-log line per call (curl and SDK, each dialect): {access_log}"
    );
    assert!(!access_log.contains(&key), "the key is in the access log");

    // 5. The first real provider: check, then serve, with the key from step 2 still valid.
    let config = block("provider-config");
    assert_eq!(config.lang, "toml");
    let (config_text, offline) = offline_hosts(&config.text);
    if !offline.is_empty() {
        eprintln!("no DNS for {offline:?} here: checked with 127.0.0.1 in their place");
    }
    std::fs::write(dir.join("openai.toml"), &config_text).unwrap();
    let run_lines = commands(&block("provider-run"));
    let mut env: Vec<(&str, &str)> = Vec::new();
    let mut check_seen = false;
    let mut serve_seen = false;
    for line in &run_lines {
        if line.starts_with("export ") {
            env.push((exported_name(line), DUMMY_SECRET));
        } else if cli_args(line)[0] == "check" {
            let mut cmd = credentialflow(line);
            cmd.env_clear().envs(env.iter().copied());
            let checked = run(cmd, dir, "check");
            assert!(checked.status.success(), "{}", checked.describe());
            assert!(
                checked.stdout.contains("ok: openai.toml"),
                "{}",
                checked.describe()
            );
            assert!(
                !checked.stdout.contains("warning") && !checked.stderr.contains("warning"),
                "{}",
                checked.describe()
            );
            assert!(
                !checked.stdout.contains(DUMMY_SECRET) && !checked.stderr.contains(DUMMY_SECRET)
            );
            check_seen = true;
        } else {
            assert_eq!(cli_args(line)[..2], ["serve", "--config"], "{line}");
            assert!(check_seen, "the README checks the file before serving it");
            let on_free_ports = config_text
                .replacen(&format!("\"{README_ADDR}\""), "\"127.0.0.1:0\"", 1)
                .replacen("\"127.0.0.1:9901\"", "\"127.0.0.1:0\"", 1);
            std::fs::write(dir.join("openai.toml"), on_free_ports).unwrap();
            let gateway = Serve::start(line, dir, &env);
            let models = get_with_key(gateway.addr, "/v1/models", Some(&key));
            assert_eq!(models.status, 200, "the step-2 key works on the new config");
            let models = models.json();
            assert_eq!(models["data"][0]["id"], "gpt-4o-mini", "{models}");
            let (status, output) = gateway.stop();
            assert!(status.success(), "{output}");
            assert!(!output.contains(DUMMY_SECRET) && !output.contains(&key));
            serve_seen = true;
        }
    }
    assert!(check_seen && serve_seen, "{run_lines:?}");
}
