//! Starting, reloading and stopping a real `credentialflow serve` process.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::client::{request, Client, Response};
use super::{write_atomically, TempDir};

/// The admin token every test gateway is started with (through
/// `admin_token = "env:CF_ADMIN_TOKEN"`).
pub const ADMIN_TOKEN: &str = "cf-test-admin-token";

/// Placeholder in config text for the gateway's own temp dir.
pub const DIR: &str = "@DIR@";

/// How long the gateway may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the gateway may take to exit after SIGTERM.
const EXIT_TIMEOUT: Duration = Duration::from_secs(40);

/// How long the secret sweep waits for the output readers to reach EOF once the
/// process is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The monoio driver a gateway runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// io_uring.
    Uring,
    /// epoll ("legacy").
    Epoll,
}

impl Driver {
    /// The `--driver` value, also what the ready line reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Uring => "uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// A config with the standard test `[server]` section (2 workers) and `rest`.
pub fn config(rest: &str) -> String {
    config_with(2, "", rest)
}

/// A config with the standard test `[server]` section, `workers` workers,
/// extra `[server]` lines, then `rest` (other tables).
pub fn config_with(workers: usize, server_extra: &str, rest: &str) -> String {
    format!(
        "[server]\n\
         listen = [\"127.0.0.1:0\"]\n\
         admin_listen = \"127.0.0.1:0\"\n\
         admin_token = \"env:CF_ADMIN_TOKEN\"\n\
         data_dir = \"{DIR}/data\"\n\
         access_log = \"\"\n\
         workers = {workers}\n\
         {server_extra}\n\
         {rest}\n"
    )
}

/// The `[[upstream]] backend` + `[[route]] api` (prefix `/`, no auth) pair
/// most tests proxy through.
pub fn proxy_config(target: &str) -> String {
    format!(
        r#"
[[upstream]]
name = "backend"
targets = ["{target}"]

[[route]]
name = "api"
path_prefix = "/"
upstream = "backend"
auth = "none"
"#
    )
}

/// An `[[upstream]]` table named `name` with one target and `extra` lines.
pub fn upstream_toml(name: &str, target: &str, extra: &str) -> String {
    format!("\n[[upstream]]\nname = \"{name}\"\ntargets = [\"{target}\"]\n{extra}\n")
}

/// A `[[route]]` table with no auth, `path_prefix` and `extra` lines.
pub fn route_toml(name: &str, path_prefix: &str, upstream: &str, extra: &str) -> String {
    format!(
        "\n[[route]]\nname = \"{name}\"\npath_prefix = \"{path_prefix}\"\nupstream = \"{upstream}\"\nauth = \"none\"\n{extra}\n"
    )
}

/// What the gateway's ready line says.
#[derive(Debug, Clone)]
pub struct ReadyLine {
    /// Plain HTTP listeners.
    pub listen: Vec<SocketAddr>,
    /// HTTPS listeners.
    pub tls: Vec<SocketAddr>,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The driver in use.
    pub driver: String,
    /// The number of workers.
    pub workers: usize,
}

/// Parses `credentialflow ready listen=A[,B] [tls=C] admin=D driver=X workers=N`.
pub fn parse_ready_line(line: &str) -> Result<ReadyLine, String> {
    let start = line
        .find("credentialflow ready ")
        .ok_or_else(|| format!("not a ready line: {line:?}"))?;
    let mut listen = Vec::new();
    let mut tls = Vec::new();
    let mut admin = None;
    let mut driver = None;
    let mut workers = None;
    let addrs = |v: &str| -> Result<Vec<SocketAddr>, String> {
        v.split(',')
            .map(|a| a.parse().map_err(|e| format!("bad address {a:?}: {e}")))
            .collect()
    };
    for field in line[start..].split_whitespace().skip(2) {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| format!("bad field {field:?} in {line:?}"))?;
        match key {
            "listen" => listen = addrs(value)?,
            "tls" => tls = addrs(value)?,
            "admin" => {
                admin = Some(
                    value
                        .parse()
                        .map_err(|e| format!("bad admin {value:?}: {e}"))?,
                )
            }
            "driver" => driver = Some(value.to_string()),
            "workers" => workers = Some(value.parse().map_err(|e| format!("bad workers: {e}"))?),
            _ => {}
        }
    }
    Ok(ReadyLine {
        listen,
        tls,
        admin: admin.ok_or("ready line has no admin=")?,
        driver: driver.ok_or("ready line has no driver=")?,
        workers: workers.ok_or("ready line has no workers=")?,
    })
}

/// Options for starting a gateway beyond config and driver.
pub struct GatewayBuilder {
    config: String,
    driver: Driver,
    env: Vec<(String, String)>,
    /// Values the gateway must never print beyond those its config and env name.
    forbidden: Vec<(String, String)>,
}

impl GatewayBuilder {
    /// Sets an environment variable for the gateway process (for `env:` secrets).
    pub fn env(mut self, key: &str, value: &str) -> GatewayBuilder {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Adds `value` to the secret sweep: the gateway fails the test if it ever prints it
    /// (for a secret inside another, such as the password inside a connection URL).
    pub fn forbid_in_output(mut self, label: &str, value: &str) -> GatewayBuilder {
        self.forbidden.push((label.to_string(), value.to_string()));
        self
    }

    /// Writes the config, spawns the gateway and waits for its ready line.
    pub fn start(self) -> Gateway {
        let dir = TempDir::new("gw");
        let config_path = dir.join("credentialflow.toml");
        let text = self.config.replace(DIR, &dir.path().to_string_lossy());
        write_atomically(&config_path, text.as_bytes());

        let mut sweep = SecretSweep::new(&self.env);
        sweep.learn_config(&text, dir.path());
        for (label, value) in &self.forbidden {
            sweep.add(label.clone(), value.clone());
        }

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_credentialflow"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--driver")
            .arg(self.driver.as_str())
            .env("CF_ADMIN_TOKEN", ADMIN_TOKEN)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // If the test process dies without running Drop, take the gateway with it.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn credentialflow");

        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let drains = vec![
            drain_lines(
                child.stderr.take().expect("stderr"),
                stderr.clone(),
                Some(ready_tx),
            ),
            drain_lines(child.stdout.take().expect("stdout"), stdout.clone(), None),
        ];

        let line = match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(reason) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "gateway (driver {}) never printed its ready line ({reason:?}); exit: {status:?}\n\
                     --- stderr ---\n{}\n--- stdout ---\n{}",
                    self.driver.as_str(),
                    stderr.lock().unwrap(),
                    stdout.lock().unwrap()
                );
            }
        };
        let ready = match parse_ready_line(&line) {
            Ok(ready) => ready,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{e}");
            }
        };
        let gateway = Gateway {
            pid: child.id() as i32,
            child,
            exit: None,
            config_path,
            ready,
            stderr,
            stdout,
            drains,
            sweep: Mutex::new(sweep),
            dir,
        };
        assert_eq!(
            gateway.ready.driver,
            self.driver.as_str(),
            "the gateway must run the driver it was asked for"
        );
        assert!(
            !gateway.ready.listen.is_empty(),
            "ready line lists no listener: {line}"
        );
        gateway
    }
}

/// Reads `source` line by line into `buffer`; the first ready line is sent on
/// `ready`. Dropping the sender at EOF tells a waiter the process is gone.
fn drain_lines(
    source: impl Read + Send + 'static,
    buffer: Arc<Mutex<String>>,
    ready: Option<mpsc::Sender<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(source);
        let mut ready = ready;
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&raw).into_owned();
            buffer.lock().unwrap().push_str(&line);
            if line.contains("credentialflow ready ") {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(line.trim_end().to_string());
                }
            }
        }
    })
}

/// A running gateway process; killed on drop if not stopped.
pub struct Gateway {
    child: Child,
    pid: i32,
    exit: Option<ExitStatus>,
    config_path: PathBuf,
    ready: ReadyLine,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    /// The threads reading stderr and stdout; they end at EOF.
    drains: Vec<JoinHandle<()>>,
    /// The secrets this gateway was given, checked against its output on drop
    /// (behind a lock because a config rewrite through `&self` adds to it).
    sweep: Mutex<SecretSweep>,
    dir: TempDir,
}

impl Gateway {
    /// Starts a gateway with `config_toml` (which may use `@DIR@` for its temp dir).
    pub fn start(config_toml: &str, driver: Driver) -> Gateway {
        Gateway::builder(config_toml, driver).start()
    }

    /// A builder for a gateway that needs more than config and driver.
    pub fn builder(config_toml: &str, driver: Driver) -> GatewayBuilder {
        GatewayBuilder {
            config: config_toml.to_string(),
            driver,
            env: Vec::new(),
            forbidden: Vec::new(),
        }
    }

    /// The first plain HTTP listener.
    pub fn addr(&self) -> SocketAddr {
        self.ready.listen[0]
    }

    /// The admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.ready.admin
    }

    /// The first HTTPS listener (panics if the ready line listed none).
    pub fn tls_addr(&self) -> SocketAddr {
        *self
            .ready
            .tls
            .first()
            .expect("the ready line lists no tls= listener")
    }

    /// The parsed ready line.
    pub fn ready(&self) -> &ReadyLine {
        &self.ready
    }

    /// Everything the gateway has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Everything the gateway has written to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// The gateway's process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The gateway's temp dir (holds the config file and `data/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces the config file (atomically; `@DIR@` is expanded). The gateway
    /// does not see it until a reload.
    pub fn write_config(&self, config_toml: &str) {
        let text = config_toml.replace(DIR, &self.dir.path().to_string_lossy());
        write_atomically(&self.config_path, text.as_bytes());
        self.sweep
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .learn_config(&text, self.dir.path());
    }

    /// Sends a signal to the gateway.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let rc = unsafe { libc::kill(self.pid, signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid);
    }

    /// Asks the gateway to reload its config file (SIGHUP).
    pub fn reload_sighup(&self) {
        self.signal(libc::SIGHUP);
    }

    /// `POST /admin/reload` with the admin token; returns the answer.
    pub fn reload_admin(&self) -> Response {
        self.admin_request("POST", "/admin/reload")
    }

    /// An admin API request with the admin token.
    pub fn admin_request(&self, method: &str, path: &str) -> Response {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let raw = request(
            method,
            path,
            &[("Authorization", auth.as_str()), ("Connection", "close")],
            b"",
        );
        let mut client = Client::connect(self.admin_addr());
        client.send(&raw);
        client.read_final_response()
    }

    /// An unauthenticated admin request (for `/healthz`, `/metrics`).
    pub fn admin_get(&self, path: &str) -> Response {
        let raw = request("GET", path, &[("Connection", "close")], b"");
        let mut client = Client::connect(self.admin_addr());
        client.send(&raw);
        client.read_final_response()
    }

    /// Kills the process at once (SIGKILL, `kill -9`: nothing is flushed or given back) and
    /// reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        self.wait_exit(EXIT_TIMEOUT)
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(EXIT_TIMEOUT)
    }

    /// Waits up to `timeout` for the process to exit; kills it and fails the
    /// test if it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let status = self.child.wait();
                panic!(
                    "gateway did not exit within {timeout:?} (killed: {status:?}); stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait");
        }
        self.exit.is_some()
    }

    /// A field of `/proc/<pid>/status` in KiB (e.g. `VmHWM`, `VmRSS`).
    pub fn proc_status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| {
                let rest = line.strip_prefix(field)?.strip_prefix(':')?;
                rest.trim().trim_end_matches("kB").trim().parse().ok()
            })
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A test already failing needs no second panic (which would abort).
        if !std::thread::panicking() {
            self.sweep_secrets();
        }
    }
}

impl Gateway {
    /// Fails the test if the gateway's stderr, stdout or access log holds a
    /// secret it was given or a full virtual key issued through the harness.
    /// Runs once the process is gone, so the output is complete.
    fn sweep_secrets(&mut self) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while self.drains.iter().any(|d| !d.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let sweep = self.sweep.get_mut().unwrap_or_else(|e| e.into_inner());
        let mut outputs = vec![
            ("stderr".to_string(), self.stderr.lock().unwrap().clone()),
            ("stdout".to_string(), self.stdout.lock().unwrap().clone()),
        ];
        for path in &sweep.access_logs {
            if let Ok(bytes) = std::fs::read(path) {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                outputs.push((format!("access log {}", path.display()), text));
            }
        }
        let mut leaks = Vec::new();
        for (source, text) in &outputs {
            for (label, secret) in &sweep.secrets {
                if text.contains(secret.as_str()) {
                    leaks.push(format!("{label} in {source}"));
                }
            }
            for key in issued_keys_in(text) {
                leaks.push(format!("full virtual key {key}... in {source}"));
            }
        }
        assert!(
            leaks.is_empty(),
            "gateway (temp dir {}) leaked secrets: {}",
            self.dir.path().display(),
            leaks.join("; ")
        );
    }
}

/// Shortest value the sweep looks for: a shorter "secret" would match
/// ordinary text by chance.
const MIN_SECRET_LEN: usize = 8;

/// Config fields whose string value is a secret or a secret reference
/// (`env:NAME`, `file:PATH`).
const SECRET_FIELDS: &[&str] = &[
    "admin_token",
    "secret",
    "api_key",
    "hs_secret",
    "client_secret",
    "secret_access_key",
    "pepper",
];

/// What one gateway was given that must never appear in its output.
struct SecretSweep {
    /// The environment the gateway runs with, as the harness set it.
    env: Vec<(String, String)>,
    /// `(label, value)`: the label names the secret without showing it.
    secrets: Vec<(String, String)>,
    /// Access log files the configs named.
    access_logs: BTreeSet<PathBuf>,
}

impl SecretSweep {
    fn new(extra_env: &[(String, String)]) -> SecretSweep {
        // The builder's variables are set after CF_ADMIN_TOKEN, so they win.
        let mut env = vec![("CF_ADMIN_TOKEN".to_string(), ADMIN_TOKEN.to_string())];
        env.extend(extra_env.iter().cloned());
        let mut sweep = SecretSweep {
            env,
            secrets: Vec::new(),
            access_logs: BTreeSet::new(),
        };
        if let Some(token) = sweep.env_value("CF_ADMIN_TOKEN") {
            sweep.add("the admin token (CF_ADMIN_TOKEN)".into(), token);
        }
        sweep
    }

    fn env_value(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }

    fn add(&mut self, label: String, value: String) {
        if value.len() >= MIN_SECRET_LEN && !self.secrets.iter().any(|(_, v)| *v == value) {
            self.secrets.push((label, value));
        }
    }

    /// Learns the secrets and the access log of config `text` (already
    /// expanded; `dir` is where relative paths start). Text that is not TOML
    /// teaches nothing: the gateway refuses it anyway.
    fn learn_config(&mut self, text: &str, dir: &Path) {
        let Ok(root) = text.parse::<toml::Table>() else {
            return;
        };
        let access_log = root
            .get("server")
            .and_then(|server| server.get("access_log"))
            .and_then(toml::Value::as_str)
            .unwrap_or("./data/access.log");
        if !matches!(access_log, "" | "-") {
            self.access_logs.insert(dir.join(access_log));
        }
        let mut found = Vec::new();
        collect_secrets(&toml::Value::Table(root), "", false, &mut found);
        for (path, value) in found {
            if let Some(name) = value.strip_prefix("env:") {
                if let Some(resolved) = self.env_value(name) {
                    self.add(format!("env {name} (named by {path})"), resolved);
                }
            } else if let Some(file) = value.strip_prefix("file:") {
                if let Ok(contents) = std::fs::read_to_string(dir.join(file)) {
                    self.add(
                        format!("the contents of {file} (named by {path})"),
                        contents.trim_end().to_string(),
                    );
                }
            } else {
                self.add(format!("the literal secret at {path}"), value);
            }
        }
    }
}

/// Every string in `value` that is a secret: an `env:` reference anywhere
/// (references name secrets only), or any value of a [`SECRET_FIELDS`] field.
/// Pushes `(dotted path, value)`.
fn collect_secrets(
    value: &toml::Value,
    path: &str,
    in_secret_field: bool,
    out: &mut Vec<(String, String)>,
) {
    match value {
        toml::Value::String(s) if in_secret_field || s.starts_with("env:") => {
            out.push((path.to_string(), s.clone()));
        }
        toml::Value::Table(table) => {
            for (key, child) in table {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let secret = SECRET_FIELDS.contains(&key.as_str());
                collect_secrets(child, &child_path, secret, out);
            }
        }
        toml::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_secrets(child, &format!("{path}[{i}]"), in_secret_field, out);
            }
        }
        _ => {}
    }
}

/// Every full virtual key issued through the harness in this process (the
/// admin API and the CLI helpers in `keys.rs` record them).
fn issued_keys() -> &'static Mutex<IssuedKeys> {
    static KEYS: OnceLock<Mutex<IssuedKeys>> = OnceLock::new();
    KEYS.get_or_init(|| Mutex::new(IssuedKeys::default()))
}

#[derive(Default)]
struct IssuedKeys {
    keys: HashSet<String>,
    /// The distinct lengths of `keys` (one in practice), so a sweep looks up
    /// each `cf_` in the text once per length instead of searching for every key.
    lengths: BTreeSet<usize>,
}

/// Records a full virtual key the test was issued, for the secret sweep.
pub fn remember_issued_key(secret: &str) {
    let mut issued = issued_keys().lock().unwrap_or_else(|e| e.into_inner());
    issued.lengths.insert(secret.len());
    issued.keys.insert(secret.to_string());
}

/// The display prefixes (`cf_` and 9 more characters, not secret) of the
/// issued keys that occur in full in `text`.
fn issued_keys_in(text: &str) -> Vec<String> {
    let issued = issued_keys().lock().unwrap_or_else(|e| e.into_inner());
    let mut hits = Vec::new();
    for (at, _) in text.match_indices("cf_") {
        for &len in &issued.lengths {
            if let Some(candidate) = text.get(at..at + len) {
                if issued.keys.contains(candidate) {
                    hits.push(candidate.chars().take(12).collect());
                }
            }
        }
    }
    hits
}

/// The outcome of `credentialflow check`.
#[derive(Debug)]
pub struct CheckOutput {
    /// The exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// Captured stdout.
    pub stdout: String,
    /// Captured stderr.
    pub stderr: String,
}

impl CheckOutput {
    /// stdout and stderr together, for assertions that do not care which.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `credentialflow check --config F` on `config_toml` (`@DIR@` expands to
/// a temp dir) and captures its output and exit code.
pub fn check_config(config_toml: &str) -> CheckOutput {
    let dir = TempDir::new("check");
    let path = dir.join("credentialflow.toml");
    let text = config_toml.replace(DIR, &dir.path().to_string_lossy());
    std::fs::write(&path, text).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_credentialflow"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env("CF_ADMIN_TOKEN", ADMIN_TOKEN)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run credentialflow check");
    let stdout = Arc::new(Mutex::new(String::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let drains = [
        drain_lines(child.stdout.take().expect("stdout"), stdout.clone(), None),
        drain_lines(child.stderr.take().expect("stderr"), stderr.clone(), None),
    ];
    let deadline = Instant::now() + READY_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`credentialflow check` did not exit within {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The pipes hit EOF once the process is gone: join so no output is lost.
    for drain in drains {
        let _ = drain.join();
    }
    let stdout = stdout.lock().unwrap().clone();
    let stderr = stderr.lock().unwrap().clone();
    CheckOutput {
        code: status.code(),
        stdout,
        stderr,
    }
}
