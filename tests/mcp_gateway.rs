//! The MCP gateway (issue 20): one Streamable HTTP endpoint in front of real MCP servers,
//! with each server's credential kept at the edge.
//!
//! Every server here is a real MCP server built with the official Python SDK
//! (`tests/mcp/server.py`, MCPServer over Streamable HTTP on 127.0.0.1), and the gateway is
//! driven by the SDK's own client (`tests/mcp/client.py`, `mcp.client.streamable_http` and
//! `ClientSession`) holding a virtual key; a few protocol details the SDK client never does
//! (an older revision, batches, bad headers) are sent as raw HTTP. python3 with the SDK is
//! required (`pip install mcp==2.3.0`, see scripts/test.sh); without it these tests fail.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use common::client::TEST_HOST;
use common::gateway::DIR;
use common::keys::create_key;
use common::*;
use serde_json::{json, Value};

/// What CI installs so these tests can pass.
const PIP_INSTALL: &str = "pip install mcp==2.3.0";

/// The token the `alpha` server requires; the gateway has it as `env:ALPHA_TOKEN`.
const ALPHA_TOKEN: &str = "mcp-alpha-token-5f0c1d9e7a";

/// Longest wait for one answer of the client script.
const OP_TIMEOUT: Duration = Duration::from_secs(60);

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp")
}

/// A port nothing listens on right now (a server started on it later, and again after a
/// restart).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `tests/mcp/server.py` process.
struct McpServer {
    name: String,
    extra_tools: usize,
    slow_list_ms: u64,
    port: u16,
    token: Option<String>,
    seen: PathBuf,
    child: Option<Child>,
}

impl McpServer {
    /// Starts server `name` (requiring `token` when given), recording the credential headers
    /// it receives in `dir`.
    fn start(name: &str, token: Option<&str>, dir: &Path) -> McpServer {
        McpServer::start_with(name, token, dir, 0)
    }

    /// [`McpServer::start`] with `extra_tools` more tools (`t0`, `t1`, ...).
    fn start_with(name: &str, token: Option<&str>, dir: &Path, extra_tools: usize) -> McpServer {
        let mut server = McpServer {
            extra_tools,
            slow_list_ms: 0,
            name: name.to_string(),
            port: free_port(),
            token: token.map(str::to_string),
            seen: dir.join(format!("{name}-seen.jsonl")),
            child: None,
        };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// (Re)starts the process on the same port and waits until it accepts connections.
    fn restart(&mut self) {
        let mut cmd = Command::new("python3");
        cmd.arg(scripts_dir().join("server.py"))
            .args(["--name", &self.name, "--port", &self.port.to_string()])
            .arg("--seen")
            .arg(&self.seen)
            .args(["--extra-tools", &self.extra_tools.to_string()])
            .args(["--slow-list-ms", &self.slow_list_ms.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(token) = &self.token {
            cmd.args(["--token", token]);
        }
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("python3: {e}; {PIP_INSTALL}")),
        );
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let up = wait_until(Duration::from_secs(30), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        assert!(
            up,
            "MCP server {} never listened (is `{PIP_INSTALL}` done?)",
            self.name
        );
    }

    /// Stops the process and waits until its port refuses connections.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The `slow` calls the server saw cancelled.
    fn cancelled(&self) -> Vec<Value> {
        let mut path = self.seen.clone().into_os_string();
        path.push(".cancelled");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Every credential header set the server received, one JSON object per request.
    fn seen(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.seen)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `tests/mcp/client.py`: the SDK's client in one session, one operation at a time.
struct SdkClient {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// The first line: the negotiated revision, capabilities and session ids.
    opened: Value,
}

impl SdkClient {
    fn open(gw: &Gateway, key: Option<&str>) -> SdkClient {
        SdkClient::open_with(gw, key, &[])
    }

    /// [`SdkClient::open`] with extra environment (`CF_MODE=auto`).
    fn open_with(gw: &Gateway, key: Option<&str>, env: &[(&str, &str)]) -> SdkClient {
        let mut cmd = Command::new("python3");
        cmd.envs(env.iter().copied());
        cmd.arg(scripts_dir().join("client.py"))
            .env("CF_URL", format!("http://{}/mcp", gw.addr()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(key) = key {
            cmd.env("CF_KEY", key);
        }
        let mut child = cmd.spawn().expect("python3");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut client = SdkClient {
            child,
            stdin,
            lines,
            opened: Value::Null,
        };
        client.opened = client.answer();
        client
    }

    fn answer(&mut self) -> Value {
        let line = self
            .lines
            .recv_timeout(OP_TIMEOUT)
            .expect("the MCP client script did not answer");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn op(&mut self, op: Value) -> Value {
        writeln!(self.stdin, "{op}").unwrap();
        self.stdin.flush().unwrap();
        self.answer()
    }

    fn tools(&mut self) -> Vec<String> {
        let answer = self.op(json!({"op": "list_tools"}));
        let tools = answer["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer}"));
        tools
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    }

    fn call(&mut self, name: &str, args: Value) -> Value {
        self.op(json!({"op": "call", "name": name, "args": args}))
    }
}

impl Drop for SdkClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two servers, `alpha` (requires [`ALPHA_TOKEN`], exposes all but `secret_tool`) and
/// `beta` (no credential), behind a gateway with `auth = "api_key"` and an access log.
struct Setup {
    alpha: McpServer,
    beta: McpServer,
    gw: Gateway,
    /// Where the servers record what they received; removed with the setup.
    _dir: TempDir,
}

fn mcp_toml(alpha: &McpServer, beta: &McpServer, alpha_tools: &str) -> String {
    format!(
        r#"
[[mcp_server]]
name = "alpha"
url = "{}"
credential = {{ header = "authorization", value = "Bearer {{secret}}", secret = "env:ALPHA_TOKEN" }}
tools = {alpha_tools}

[[mcp_server]]
name = "beta"
url = "{}"
timeout_ms = 10000

[mcp]
path = "/mcp"
auth = "api_key"
"#,
        alpha.url(),
        beta.url()
    )
}

fn gateway_config(rest: &str) -> String {
    let extra = format!("access_log = \"{DIR}/access.log\"\n");
    config_with(2, &extra, rest).replace("access_log = \"\"\n", "")
}

const ALPHA_TOOLS: &str = r#"["echo", "add", "slow", "big"]"#;

fn setup(driver: Driver) -> Setup {
    setup_with(driver, "auth = \"api_key\"\n", None, &[])
}

/// [`setup`] with `mcp` in place of `[mcp]`'s `auth = "api_key"` line, `script` (when given)
/// written beside the servers' records as `[mcp] hooks`, and `env` for the gateway.
fn setup_with(driver: Driver, mcp: &str, script: Option<&str>, env: &[(&str, &str)]) -> Setup {
    let dir = TempDir::new("mcp");
    let alpha = McpServer::start("alpha", Some(ALPHA_TOKEN), dir.path());
    let beta = McpServer::start("beta", None, dir.path());
    let mut mcp = mcp.to_string();
    if let Some(source) = script {
        let path = dir.path().join("mcp.lua");
        std::fs::write(&path, source).unwrap();
        mcp += &format!("hooks = \"{}\"\n", path.display());
    }
    let toml = mcp_toml(&alpha, &beta, ALPHA_TOOLS).replace("auth = \"api_key\"\n", &mcp);
    let mut builder =
        Gateway::builder(&gateway_config(&toml), driver).env("ALPHA_TOKEN", ALPHA_TOKEN);
    for (name, value) in env {
        builder = builder.env(name, value);
    }
    let gw = builder.start();
    Setup {
        alpha,
        beta,
        gw,
        _dir: dir,
    }
}

fn access_log(gw: &Gateway) -> Vec<Value> {
    std::fs::read_to_string(gw.dir().join("access.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn mcp_calls(gw: &Gateway) -> Vec<Value> {
    access_log(gw)
        .into_iter()
        .filter(|l| l["kind"] == "mcp_call")
        .collect()
}

/// A raw POST to the endpoint: JSON-RPC `body` with `headers` (Accept and Content-Type
/// given unless overridden).
fn post(gw: &Gateway, key: &str, headers: &[(&str, &str)], body: &Value) -> Response {
    let auth = format!("Bearer {key}");
    let mut all: Vec<(&str, &str)> = vec![("authorization", auth.as_str())];
    let has = |n: &str| headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n));
    if !has("accept") {
        all.push(("accept", "application/json, text/event-stream"));
    }
    if !has("content-type") {
        all.push(("content-type", "application/json"));
    }
    all.extend_from_slice(headers);
    roundtrip(
        gw.addr(),
        &request("POST", "/mcp", &all, body.to_string().as_bytes()),
    )
}

/// `initialize` at `revision`; the session id and the negotiated revision.
fn initialize(gw: &Gateway, key: &str, revision: &str) -> (String, String) {
    let response = post(
        gw,
        key,
        &[],
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": revision, "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"}}}),
    );
    assert_eq!(response.status, 200, "{}", response.text());
    let session = response
        .header("mcp-session-id")
        .expect("a session id")
        .to_string();
    let negotiated = response.json()["result"]["protocolVersion"]
        .as_str()
        .unwrap()
        .to_string();
    (session, negotiated)
}

on_both_drivers! {
    fn tools_of_every_server_are_listed_with_prefixes_and_calls_reach_their_server(driver) {
        let s = setup(driver);
        let key = create_key(&s.gw, &json!({"name": "agent"}));
        let mut client = SdkClient::open(&s.gw, Some(&key.secret));
        assert_eq!(client.opened["protocol_version"], "2025-11-25", "{}", client.opened);
        let tools = client.tools();
        for expected in ["alpha__echo", "alpha__add", "alpha__slow", "beta__echo", "beta__secret_tool"] {
            assert!(tools.contains(&expected.to_string()), "{expected} missing from {tools:?}");
        }
        // Outside alpha's globs: hidden, and refused without reaching the server.
        assert!(!tools.contains(&"alpha__secret_tool".to_string()), "{tools:?}");
        let before = s.alpha.seen().len();
        let hidden = client.call("alpha__secret_tool", json!({}));
        assert_eq!(hidden["error"], "MCPError", "{hidden}");
        assert_eq!(s.alpha.seen().len(), before, "a hidden tool's call reached the server");

        // Each call goes to its own server with the prefix stripped.
        let a = client.call("alpha__echo", json!({"text": "hi"}));
        assert_eq!(a["texts"], json!(["alpha:hi"]), "{a}");
        let b = client.call("beta__echo", json!({"text": "there"}));
        assert_eq!(b["texts"], json!(["beta:there"]), "{b}");
        let sum = client.call("alpha__add", json!({"a": 2, "b": 40}));
        assert_eq!(sum["texts"], json!(["42"]), "{sum}");

        // Prompts and resources are aggregated the same way.
        let prompt = client.op(json!({"op": "prompt", "name": "beta__greet", "args": {"who": "ada"}}));
        assert_eq!(prompt["messages"], json!(["Hello ada, from beta"]), "{prompt}");
        let resources = client.op(json!({"op": "list_resources"}));
        let uri = "mcpgw://alpha/note://alpha/hello";
        assert!(resources["resources"].as_array().unwrap().contains(&json!(uri)), "{resources}");
        let read = client.op(json!({"op": "read", "uri": uri}));
        assert_eq!(read["texts"], json!(["note of alpha"]), "{read}");

        // The client only ever saw the gateway's session, never a server's.
        let sessions = client.opened["sessions"].as_array().unwrap();
        assert_eq!(sessions.len(), 1);
        assert!(sessions[0].as_str().unwrap().starts_with("2."), "{sessions:?}");
    }
}

on_default_driver! {
    fn the_server_gets_its_credential_and_the_client_never_sees_it_nor_the_logs(driver) {
        let s = setup(driver);
        let key = create_key(&s.gw, &json!({"name": "agent"}));
        let mut client = SdkClient::open(&s.gw, Some(&key.secret));
        let answer = client.call("alpha__echo", json!({"text": "x"}));
        assert_eq!(answer["texts"], json!(["alpha:x"]), "{answer}");
        assert_eq!(client.call("beta__echo", json!({"text": "y"}))["texts"], json!(["beta:y"]));
        // alpha got its token on every request; neither server ever got the virtual key.
        let alpha_seen = s.alpha.seen();
        assert!(!alpha_seen.is_empty());
        for seen in &alpha_seen {
            assert_eq!(seen, &json!({"authorization": format!("Bearer {ALPHA_TOKEN}")}));
        }
        for seen in s.beta.seen() {
            assert_eq!(seen, json!({}), "beta got a credential header: {seen}");
        }
        // Nothing the client saw, and nothing in the access log, holds the token.
        let everything = format!("{} {answer} {:?}", client.opened, access_log(&s.gw));
        assert!(!everything.contains(ALPHA_TOKEN));
        assert!(!s.gw.stderr().contains(ALPHA_TOKEN) && !s.gw.stdout().contains(ALPHA_TOKEN));
    }
}

on_both_drivers! {
    fn progress_of_a_slow_tool_is_relayed_as_it_happens(driver) {
        let s = setup(driver);
        let key = create_key(&s.gw, &json!({"name": "agent"}));
        let mut client = SdkClient::open(&s.gw, Some(&key.secret));
        let answer = client.call("alpha__slow", json!({"steps": 3, "delay_ms": 300}));
        assert_eq!(answer["texts"], json!(["alpha:done after 3"]), "{answer}");
        let progress = answer["progress"].as_array().unwrap();
        assert_eq!(progress.len(), 3, "{answer}");
        assert_eq!(progress[0]["message"], "step 1");
        assert_eq!(progress[2]["progress"], 3.0);
        // The first step arrived well before the answer: streamed, not buffered to the end.
        assert!(progress[0]["before_end_s"].as_f64().unwrap() > 0.5, "{answer}");
    }
}

on_default_driver! {
    fn a_server_down_loses_its_tools_alone_and_comes_back(driver) {
        let mut s = setup(driver);
        let key = create_key(&s.gw, &json!({"name": "agent"}));
        let mut client = SdkClient::open(&s.gw, Some(&key.secret));
        assert_eq!(client.call("beta__echo", json!({"text": "1"}))["texts"], json!(["beta:1"]));

        s.beta.stop();
        let tools = client.tools();
        assert!(tools.iter().all(|t| !t.starts_with("beta__")), "{tools:?}");
        assert!(tools.contains(&"alpha__echo".to_string()), "{tools:?}");
        let down = client.call("beta__echo", json!({"text": "2"}));
        assert_eq!(down["error"], "MCPError", "{down}");
        assert!(down["message"].as_str().unwrap().contains("MCP server beta is unavailable"), "{down}");
        assert_eq!(client.call("alpha__echo", json!({"text": "3"}))["texts"], json!(["alpha:3"]));

        // Back up (a new process: its old sessions are gone, so the gateway opens new ones).
        s.beta.restart();
        let back = client.call("beta__echo", json!({"text": "4"}));
        assert_eq!(back["texts"], json!(["beta:4"]), "{back}");
        assert!(client.tools().contains(&"beta__echo".to_string()));
        let unavailable = mcp_calls(&s.gw)
            .into_iter()
            .filter(|l| l["server"] == "beta" && l["status"] == "unavailable")
            .count();
        assert_eq!(unavailable, 1);
    }
}

on_default_driver! {
    fn without_a_valid_key_the_endpoint_is_401(driver) {
        let s = setup(driver);
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}});
        let raw = |auth: Option<&str>| {
            let mut headers = vec![
                ("accept", "application/json, text/event-stream"),
                ("content-type", "application/json"),
            ];
            if let Some(a) = auth {
                headers.push(("authorization", a));
            }
            roundtrip(s.gw.addr(), &request("POST", "/mcp", &headers, init.to_string().as_bytes()))
        };
        assert_eq!(raw(None).status, 401);
        assert_eq!(raw(Some("Bearer cf_not-a-key")).status, 401);
        // The SDK client gets no session either.
        let client = SdkClient::open(&s.gw, None);
        assert!(client.opened.get("error").is_some(), "{}", client.opened);
        assert!(s.alpha.seen().is_empty() && s.beta.seen().is_empty());
    }
}

on_default_driver! {
    fn a_key_limited_to_some_tools_sees_only_those_and_is_refused_the_rest(driver) {
        let s = setup(driver);
        let key = create_key(
            &s.gw,
            &json!({"name": "narrow", "mcp_tools": ["alpha__ec?o", "beta__*"]}),
        );
        let mut client = SdkClient::open(&s.gw, Some(&key.secret));
        let mut tools = client.tools();
        tools.sort();
        assert!(tools.contains(&"alpha__echo".to_string()), "{tools:?}");
        assert!(tools.iter().all(|t| t == "alpha__echo" || t.starts_with("beta__")), "{tools:?}");
        assert!(!tools.contains(&"alpha__add".to_string()), "{tools:?}");

        // Allowed calls go through; the others are refused as unknown and never reach the
        // server, and the refusal is logged.
        let echo = client.call("alpha__echo", json!({"text": "ok"}));
        assert_eq!(echo["texts"], json!(["alpha:ok"]), "{echo}");
        let before = s.alpha.seen().len();
        let refused = client.call("alpha__add", json!({"a": 1, "b": 2}));
        assert_eq!(refused["error"], "MCPError", "{refused}");
        assert_eq!(s.alpha.seen().len(), before, "a tool outside the key's mcp_tools reached the server");
        let refusals = || -> Vec<Value> {
            mcp_calls(&s.gw)
                .into_iter()
                .filter(|l| l["status"] == "refused" && l["tool"] == "add")
                .collect()
        };
        wait_until(Duration::from_secs(5), || !refusals().is_empty());
        assert_eq!(refusals()[0]["key_id"], json!(key.id));

        // A key without mcp_tools may use every exposed tool.
        let open = create_key(&s.gw, &json!({"name": "open"}));
        let mut all = SdkClient::open(&s.gw, Some(&open.secret));
        assert!(all.tools().contains(&"alpha__add".to_string()));
    }
}

on_default_driver! {
    fn the_keys_rate_limit_applies_to_tool_calls(driver) {
        let s = setup(driver);
        let key = create_key(&s.gw, &json!({"name": "slowpoke", "rpm": 2}));
        let mut client = SdkClient::open(&s.gw, Some(&key.secret));
        // Listings are not tool calls: not counted.
        for _ in 0..3 {
            assert!(!client.tools().is_empty());
        }
        assert_eq!(client.call("beta__echo", json!({"text": "1"}))["texts"], json!(["beta:1"]));
        assert_eq!(client.call("beta__echo", json!({"text": "2"}))["texts"], json!(["beta:2"]));
        let before = s.beta.seen().len();
        let third = client.call("beta__echo", json!({"text": "3"}));
        assert_eq!(third["error"], "MCPError", "{third}");
        assert!(third["message"].as_str().unwrap().contains("rate"), "{third}");
        assert_eq!(s.beta.seen().len(), before, "a limited call reached the server");
        let limited = || -> Vec<Value> {
            mcp_calls(&s.gw)
                .into_iter()
                .filter(|l| l["status"] == "rate_limited")
                .collect()
        };
        // The access log is written by its own thread: wait for the line.
        wait_until(Duration::from_secs(5), || !limited().is_empty());
        let limited = limited();
        assert_eq!(limited.len(), 1, "{limited:?}");
        assert_eq!(limited[0]["key_id"], json!(key.id));
    }
}

on_default_driver! {
    fn every_call_is_one_access_log_line_with_an_arguments_hash_never_the_arguments(driver) {
        let s = setup(driver);
        let key = create_key(&s.gw, &json!({"name": "agent"}));
        let mut client = SdkClient::open(&s.gw, Some(&key.secret));
        let marker = "very-private-argument-7c1e";
        client.call("alpha__echo", json!({"text": marker}));
        client.call("alpha__secret_tool", json!({"text": marker}));
        client.call("beta__nope", json!({}));
        let calls = mcp_calls(&s.gw);
        assert_eq!(calls.len(), 3, "{calls:?}");
        let ok = &calls[0];
        assert_eq!(ok["server"], "alpha");
        assert_eq!(ok["tool"], "echo");
        assert_eq!(ok["status"], "ok");
        assert_eq!(ok["key_id"], json!(key.id));
        assert_eq!(ok["args_sha256"].as_str().unwrap().len(), 64);
        assert!(ok["duration_us"].as_u64().is_some());
        assert_eq!(calls[1]["status"], "refused");
        assert_eq!(calls[1]["tool"], "secret_tool");
        assert_eq!(calls[2]["server"], "beta");
        // MCPServer answers an unknown tool with a result flagged isError: the server's own.
        assert_eq!(calls[2]["status"], "tool_error", "{:?}", calls[2]);
        assert!(!format!("{:?}", access_log(&s.gw)).contains(marker), "arguments in the log");
        // And counted.
        let metrics = s.gw.admin_get("/metrics").text();
        assert!(
            metrics.contains(r#"credentialflow_mcp_calls_total{server="alpha",tool="echo",outcome="ok"} 1"#),
            "{metrics}"
        );
        assert!(metrics.contains(r#"credentialflow_mcp_call_duration_seconds_count{server="alpha"} 2"#), "{metrics}");
    }
}

on_default_driver! {
    fn a_reload_during_a_session_keeps_the_session_working(driver) {
        let s = setup(driver);
        let key = create_key(&s.gw, &json!({"name": "agent"}));
        let mut client = SdkClient::open(&s.gw, Some(&key.secret));
        assert_eq!(client.call("alpha__echo", json!({"text": "a"}))["texts"], json!(["alpha:a"]));
        // The reload also narrows alpha's globs, so it visibly took effect.
        let narrowed = gateway_config(&mcp_toml(&s.alpha, &s.beta, r#"["echo"]"#));
        s.gw.write_config(&narrowed);
        s.gw.reload_sighup();
        let reloaded = wait_until(Duration::from_secs(10), || {
            !client.tools().contains(&"alpha__add".to_string())
        });
        assert!(reloaded, "the reload never took effect");
        let after = client.call("alpha__echo", json!({"text": "b"}));
        assert_eq!(after["texts"], json!(["alpha:b"]), "{after}");
        // Still the one session the client opened.
        assert_eq!(after["sessions"].as_array().unwrap().len(), 1, "{after}");
    }
}

on_both_drivers! {
    fn an_sdk_client_in_its_default_mode_speaks_the_stateless_revision(driver) {
        let s = setup(driver);
        let key = create_key(&s.gw, &json!({"name": "auto"}));
        let mut client = SdkClient::open_with(&s.gw, Some(&key.secret), &[("CF_MODE", "auto")]);
        assert_eq!(client.opened["protocol_version"], "2026-07-28", "{}", client.opened);
        // The capabilities come from server/discover: the union of the servers'.
        let capabilities = &client.opened["capabilities"];
        assert!(capabilities.get("tools").is_some() && capabilities.get("prompts").is_some(), "{capabilities}");
        let tools = client.tools();
        assert!(tools.contains(&"alpha__echo".to_string()) && tools.contains(&"beta__add".to_string()), "{tools:?}");
        assert_eq!(client.call("beta__echo", json!({"text": "auto"}))["texts"], json!(["beta:auto"]));
        // Progress still streams, and hidden tools are still refused.
        let slow = client.call("alpha__slow", json!({"steps": 2, "delay_ms": 200}));
        assert_eq!(slow["texts"], json!(["alpha:done after 2"]), "{slow}");
        assert_eq!(slow["progress"].as_array().unwrap().len(), 2, "{slow}");
        assert_eq!(client.call("alpha__secret_tool", json!({}))["error"], "MCPError");
        // No session was ever issued.
        assert_eq!(client.call("beta__echo", json!({"text": "x"}))["sessions"], json!([]));
    }
}

on_default_driver! {
    fn sdk_clients_pinned_to_the_older_revisions_get_them(driver) {
        let s = setup(driver);
        let key = create_key(&s.gw, &json!({"name": "pinned"}));
        for revision in ["2025-11-25", "2025-06-18"] {
            let mut client = SdkClient::open_with(&s.gw, Some(&key.secret), &[("CF_PIN", revision)]);
            assert_eq!(client.opened["protocol_version"], revision, "{}", client.opened);
            let answer = client.call("beta__echo", json!({"text": revision}));
            assert_eq!(answer["texts"], json!([format!("beta:{revision}")]), "{answer}");
            assert_eq!(answer["sessions"].as_array().unwrap().len(), 1, "{answer}");
        }
    }
}

on_default_driver! {
    fn the_stateless_envelope_is_checked(driver) {
        let s = setup(driver);
        let key = create_key(&s.gw, &json!({"name": "raw"}));
        let k = key.secret.as_str();
        let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}});
        let modern = [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call")];
        let call = |meta: &Value| json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "beta__add", "arguments": {"a": 2, "b": 3}, "_meta": meta}});
        // A complete envelope: answered without any session.
        let ok = post(&s.gw, k, &modern, &call(&meta));
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert_eq!(ok.json()["result"]["content"][0]["text"], "5", "{}", ok.text());
        assert_eq!(ok.json()["result"]["resultType"], "complete");
        assert!(ok.header("mcp-session-id").is_none());
        // Missing capabilities, a header that disagrees, a revision not served.
        let r = post(&s.gw, k, &modern, &call(&json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"})));
        assert_eq!((r.status, r.json()["error"]["code"].as_i64()), (400, Some(-32602)), "{}", r.text());
        let r = post(&s.gw, k, &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/list")], &call(&meta));
        assert_eq!((r.status, r.json()["error"]["code"].as_i64()), (400, Some(-32020)), "{}", r.text());
        let mut future = meta.clone();
        future["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
        let r = post(&s.gw, k, &[("mcp-protocol-version", "2099-01-01"), ("mcp-method", "tools/call")], &call(&future));
        assert_eq!((r.status, r.json()["error"]["code"].as_i64()), (400, Some(-32022)), "{}", r.text());
        assert_eq!(r.json()["error"]["data"]["supported"],
            json!(["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"]));
        // server/discover; an unknown method is 404; a notification is acknowledged.
        let discover = json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}});
        let r = post(&s.gw, k, &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "server/discover")], &discover);
        assert_eq!(r.json()["result"]["supportedVersions"][3], "2026-07-28", "{}", r.text());
        let nope = json!({"jsonrpc": "2.0", "id": 2, "method": "nope/nope", "params": {"_meta": meta}});
        assert_eq!(post(&s.gw, k, &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "nope/nope")], &nope).status, 404);
        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}});
        assert_eq!(post(&s.gw, k, &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "notifications/cancelled")], &note).status, 202);
    }
}

on_default_driver! {
    fn protocol_revisions_are_negotiated_and_checked(driver) {
        let s = setup(driver);
        let key = create_key(&s.gw, &json!({"name": "raw"}));
        let k = key.secret.as_str();
        // An older supported revision is kept, and allows batches.
        let (old, negotiated) = initialize(&s.gw, k, "2025-03-26");
        assert_eq!(negotiated, "2025-03-26");
        let batch = json!([
            {"jsonrpc": "2.0", "id": "a", "method": "ping"},
            {"jsonrpc": "2.0", "id": "b", "method": "tools/call",
             "params": {"name": "beta__add", "arguments": {"a": 1, "b": 2}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"}
        ]);
        let response = post(&s.gw, k, &[("mcp-session-id", &old), ("mcp-protocol-version", "2025-03-26")], &batch);
        assert_eq!(response.status, 200, "{}", response.text());
        let answers = response.json();
        assert_eq!(answers.as_array().unwrap().len(), 2, "{answers}");
        assert_eq!(answers[1]["id"], "b");
        assert_eq!(answers[1]["result"]["content"][0]["text"], "3", "{answers}");
        // An unsupported revision is countered with the newest; batches are refused there.
        let (new, negotiated) = initialize(&s.gw, k, "2024-11-05");
        assert_eq!(negotiated, "2025-11-25");
        let refused = post(&s.gw, k, &[("mcp-session-id", &new), ("mcp-protocol-version", "2025-11-25")], &batch);
        assert_eq!(refused.status, 400, "{}", refused.text());
        // The header must be a supported revision, and the session's.
        let ping = json!({"jsonrpc": "2.0", "id": 9, "method": "ping"});
        for bad in ["1999-01-01", "2025-03-26"] {
            let r = post(&s.gw, k, &[("mcp-session-id", &new), ("mcp-protocol-version", bad)], &ping);
            assert_eq!(r.status, 400, "{bad}: {}", r.text());
        }
        let ok = post(&s.gw, k, &[("mcp-session-id", &new), ("mcp-protocol-version", "2025-11-25")], &ping);
        assert_eq!(ok.json()["result"], json!({}));
        // No session, another key's session, and an ended session.
        assert_eq!(post(&s.gw, k, &[], &ping).status, 400);
        let other = create_key(&s.gw, &json!({"name": "other"}));
        assert_eq!(post(&s.gw, &other.secret, &[("mcp-session-id", &new)], &ping).status, 404);
        let auth = format!("Bearer {k}");
        let end = roundtrip(s.gw.addr(), &request("DELETE", "/mcp", &[("authorization", &auth), ("mcp-session-id", &new)], b""));
        assert_eq!(end.status, 200);
        assert_eq!(post(&s.gw, k, &[("mcp-session-id", &new)], &ping).status, 404);
        // GET (a server-initiated stream) is not offered; Accept and Content-Type are checked;
        // a notification alone is 202.
        let get = roundtrip(s.gw.addr(), &request("GET", "/mcp", &[("authorization", &auth), ("accept", "text/event-stream")], b""));
        assert_eq!(get.status, 405);
        assert_eq!(post(&s.gw, k, &[("accept", "text/html"), ("mcp-session-id", &old)], &ping).status, 406);
        assert_eq!(post(&s.gw, k, &[("content-type", "text/plain"), ("mcp-session-id", &old)], &ping).status, 415);
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert_eq!(post(&s.gw, k, &[("mcp-session-id", &old)], &note).status, 202);
    }
}

on_default_driver! {
    fn what_clients_and_servers_send_is_bounded(driver) {
        let s = setup(driver);
        let key = create_key(&s.gw, &json!({"name": "raw"}));
        let k = key.secret.as_str();
        let (session, _) = initialize(&s.gw, k, "2025-03-26");
        let sid = [("mcp-session-id", session.as_str())];
        // Body size: over 1 MiB is refused before it is parsed.
        let huge = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "beta__echo", "arguments": {"text": "x".repeat(1_100_000)}}});
        assert_eq!(post(&s.gw, k, &sid, &huge).status, 413);
        // Nesting depth.
        let deep: Value = serde_json::from_str(&format!("{}1{}", "[".repeat(100), "]".repeat(100))).unwrap();
        let nested = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "beta__echo", "arguments": {"text": deep}}});
        let r = post(&s.gw, k, &sid, &nested);
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["error"]["code"], -32700);
        // Batch length.
        let batch: Vec<Value> = (0..33).map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "ping"})).collect();
        assert_eq!(post(&s.gw, k, &sid, &json!(batch)).status, 400);
        // A server's answer larger than the gateway relays (5 MB in one event) is an error,
        // not relayed.
        let big = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "beta__big", "arguments": {"size": 5_000_000}}});
        let r = post(&s.gw, k, &sid, &big);
        assert_eq!(r.status, 200);
        let error = &r.json()["error"];
        assert_eq!(error["code"], -32001, "{}", r.text());
        assert!(error["message"].as_str().unwrap().contains("larger than the gateway relays"));
        // ... while a smaller one is.
        let fine = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
            "params": {"name": "beta__big", "arguments": {"size": 100_000}}});
        let r = post(&s.gw, k, &sid, &fine);
        assert_eq!(r.json()["result"]["content"][0]["text"].as_str().unwrap().len(), 100_000);
    }
}

on_default_driver! {
    fn a_listing_larger_than_the_bound_is_cut_and_paginated(driver) {
        let dir = TempDir::new("mcp-many");
        // 1005 numbered tools and the 5 usual ones: more than the 1000 taken per server.
        let many = McpServer::start_with("many", None, dir.path(), 1005);
        let rest = format!(
            "\n[[mcp_server]]\nname = \"many\"\nurl = \"{}\"\n\n[mcp]\nauth = \"api_key\"\n",
            many.url()
        );
        let gw = Gateway::start(&config(&rest), driver);
        let key = create_key(&gw, &json!({"name": "lister"}));
        let mut client = SdkClient::open(&gw, Some(&key.secret));
        let answer = client.op(json!({"op": "list_tools"}));
        let tools = answer["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 1000, "cut at the bound");
        // Two pages of 500, through the gateway's cursor.
        assert_eq!(answer["pages"], 2, "{}", answer["pages"]);
        assert!(tools.iter().all(|t| t.as_str().unwrap().starts_with("many__")));
        // A cursor the gateway did not issue is refused.
        let (session, _) = initialize(&gw, &key.secret, "2025-11-25");
        let bad = post(&gw, &key.secret, &[("mcp-session-id", &session)],
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"cursor": "forged"}}));
        assert_eq!(bad.json()["error"]["code"], -32602, "{}", bad.text());
    }
}

/// The endpoint's tool hooks: a denial, a rewrite, a redaction, a hook error and a hook past
/// its time budget, each on its own call.
const TOOL_HOOKS: &str = r#"
local function redact(s) return (s:gsub("secret%-%w+", "[redacted]")) end

function on_tool_call(ctx, call)
  if call.tool == "add" then
    call:deny("adding is not allowed for " .. ctx.consumer.name)
    return
  end
  local text = call.arguments.text
  if text == "rewrite-me" then call.arguments.text = "rewritten by the gateway" end
  if text == "boom" then error("a bug in the hook") end
  if text == "spin" then while true do end end
end

function on_tool_result(ctx, result, call)
  for _, c in ipairs(result.content or {}) do
    if c.type == "text" then c.text = redact(c.text) end
  end
  local structured = result.structuredContent
  if structured and type(structured.result) == "string" then
    structured.result = redact(structured.result)
  end
end
"#;

on_default_driver! {
    fn tool_hooks_deny_rewrite_and_redact_and_a_failing_hook_fails_its_call_alone(driver) {
        let s = setup_with(driver, "auth = \"api_key\"\n", Some(TOOL_HOOKS), &[]);
        let key = create_key(&s.gw, &json!({"name": "agent"}));
        let mut client = SdkClient::open(&s.gw, Some(&key.secret));

        // Denied: a JSON-RPC error with the hook's message, and the server never asked.
        let before = s.alpha.seen().len();
        let denied = client.call("alpha__add", json!({"a": 1, "b": 2}));
        assert_eq!(denied["error"], "MCPError", "{denied}");
        assert!(denied["message"].as_str().unwrap().contains("adding is not allowed for agent"), "{denied}");
        assert_eq!(s.alpha.seen().len(), before, "a denied call reached the server");

        // Rewritten: the server echoes what it received, which is the hook's version.
        let rewritten = client.call("alpha__echo", json!({"text": "rewrite-me"}));
        assert_eq!(rewritten["texts"], json!(["alpha:rewritten by the gateway"]), "{rewritten}");

        // Redacted: the server answered the secret, the client sees the redaction.
        let redacted = client.call("beta__echo", json!({"text": "secret-abc123"}));
        assert_eq!(redacted["texts"], json!(["beta:[redacted]"]), "{redacted}");
        assert!(!redacted.to_string().contains("abc123"), "{redacted}");

        // A hook that raises, and one past its time budget, fail that call only.
        for text in ["boom", "spin"] {
            let failed = client.call("alpha__echo", json!({"text": text}));
            assert_eq!(failed["error"], "MCPError", "{text}: {failed}");
            assert!(failed["message"].as_str().unwrap().contains("hook_error"), "{failed}");
            let after = client.call("alpha__echo", json!({"text": "after"}));
            assert_eq!(after["texts"], json!(["alpha:after"]), "after {text}: {after}");
        }
        // The hook's own error text goes to the gateway's log, never to the client.
        assert!(s.gw.stderr().contains("on_tool_call failed"), "{}", s.gw.stderr());

        // The access log is written by its own thread: wait for every line.
        wait_until(Duration::from_secs(5), || mcp_calls(&s.gw).len() >= 7);
        let statuses: Vec<Value> = mcp_calls(&s.gw).into_iter().map(|l| l["status"].clone()).collect();
        assert_eq!(
            statuses,
            json!(["denied", "ok", "ok", "hook_error", "ok", "hook_error", "ok"]).as_array().unwrap().clone(),
        );
    }
}

on_default_driver! {
    fn lua_auth_lets_on_access_name_the_consumer(driver) {
        let script = r#"
function on_access(ctx)
  local name = (ctx:header("authorization") or ""):match("^Bearer agent:(%w+)$")
  if name == "blocked" then ctx:deny(403, "this agent is blocked") return end
  if name then ctx:set_consumer(name) end
end
"#;
        let s = setup_with(driver, "auth = \"lua\"\n", Some(script), &[]);
        let key = create_key(&s.gw, &json!({"name": "ada"}));
        let mut client = SdkClient::open(&s.gw, Some("agent:ada"));
        assert_eq!(client.call("beta__echo", json!({"text": "hi"}))["texts"], json!(["beta:hi"]));
        wait_until(Duration::from_secs(5), || !mcp_calls(&s.gw).is_empty());
        let calls = mcp_calls(&s.gw);
        assert_eq!(calls[0]["key_id"], json!(key.id), "{calls:?}");
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}});
        let status = |bearer: &str| post(&s.gw, bearer, &[], &init).status;
        assert_eq!(status("agent:blocked"), 403);
        assert_eq!(status("agent:nobody"), 401, "a name that is no key fails closed");
        assert_eq!(status("no-agent"), 401);
    }
}

on_default_driver! {
    fn the_protected_resource_metadata_and_the_challenge_point_to_each_other(driver) {
        let s = setup(driver);
        // Without `[mcp] resource`, the resource is this request's Host and the endpoint path.
        let resource = format!("http://{TEST_HOST}/mcp");
        let metadata_url = format!("http://{TEST_HOST}/.well-known/oauth-protected-resource/mcp");
        for path in ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"] {
            let r = http_get(s.gw.addr(), path);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            let doc = r.json();
            assert_eq!(doc["resource"], json!(resource), "{doc}");
            assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
            assert_eq!(doc["authorization_servers"], json!([]));
        }
        assert_eq!(http_get(s.gw.addr(), "/.well-known/oauth-protected-resource/other").status, 404);
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}});
        let refused = roundtrip(s.gw.addr(), &request("POST", "/mcp",
            &[("accept", "application/json"), ("content-type", "application/json")],
            init.to_string().as_bytes()));
        assert_eq!(refused.status, 401);
        assert_eq!(
            refused.header("www-authenticate"),
            Some(format!("Bearer resource_metadata=\"{metadata_url}\"").as_str())
        );
        // Nothing reached a server.
        assert!(s.alpha.seen().is_empty() && s.beta.seen().is_empty());
    }
}

on_default_driver! {
    fn the_sdk_clients_auth_discovery_finds_the_metadata_from_the_challenge(driver) {
        let mcp = "auth = \"api_key\"\nauthorization_servers = [\"https://auth.example.com/tenant\"]\n";
        let s = setup_with(driver, mcp, None, &[]);
        let url = format!("http://{}/mcp", s.gw.addr());
        let output = Command::new("python3")
            .arg(scripts_dir().join("discover.py"))
            .env("CF_URL", &url)
            .output()
            .expect("python3");
        let line = String::from_utf8_lossy(&output.stdout);
        let found: Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("{line} {}: {e}", String::from_utf8_lossy(&output.stderr)));
        assert_eq!(found["status"], 401, "{found}");
        // Found at the URL the challenge named, and valid for the SDK's model.
        let expected_from = format!("http://{}/.well-known/oauth-protected-resource/mcp", s.gw.addr());
        assert_eq!(found["from"], json!(expected_from), "{found}");
        assert_eq!(found["metadata"]["resource"], json!(url), "{found}");
        assert_eq!(found["metadata"]["authorization_servers"], json!(["https://auth.example.com/tenant"]), "{found}");
    }
}

/// The HS256 secret of the JWT tests (32 bytes: RFC 7518's minimum for HS256).
const MCP_JWT_HS: &str = "mcp-jwt-test-secret-0123456789ab";

on_default_driver! {
    fn jwt_auth_takes_tokens_for_this_resource_and_virtual_keys(driver) {
        let mcp = "auth = \"jwt\"\nresource = \"https://mcp.example.com/mcp\"\n\
            authorization_servers = [\"https://auth.example.com\"]\n\
            jwt = { hs_secret = \"env:MCP_JWT_HS\", issuer = \"https://auth.example.com\" }\n";
        let s = setup_with(driver, mcp, None, &[("MCP_JWT_HS", MCP_JWT_HS)]);
        // The configured resource and authorization server, at the path-suffixed URL too.
        let doc = http_get(s.gw.addr(), "/.well-known/oauth-protected-resource/mcp").json();
        assert_eq!(doc["resource"], "https://mcp.example.com/mcp", "{doc}");
        assert_eq!(doc["authorization_servers"], json!(["https://auth.example.com"]));
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
        let anonymous = roundtrip(s.gw.addr(), &request("POST", "/mcp",
            &[("accept", "application/json"), ("content-type", "application/json")],
            init.to_string().as_bytes()));
        assert_eq!(anonymous.status, 401);
        assert_eq!(
            anonymous.header("www-authenticate"),
            Some("Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\"")
        );

        let signer = jwt::Signer::hs256(MCP_JWT_HS.as_bytes());
        let claims = |aud: &str| json!({"sub": "robot", "iss": "https://auth.example.com", "aud": aud,
            "iat": jwt::now(), "exp": jwt::now() + 600});
        let good = jwt::token(&signer, &claims("https://mcp.example.com/mcp"));
        let wrong = jwt::token(&signer, &claims("https://other.example.com/mcp"));
        assert_eq!(post(&s.gw, &wrong, &[], &init).status, 401, "a token for another resource");
        assert_eq!(post(&s.gw, &good, &[], &init).status, 200);
        // A virtual key is a Bearer credential here too.
        let key = create_key(&s.gw, &json!({"name": "agent"}));
        assert_eq!(post(&s.gw, &key.secret, &[], &init).status, 200);

        // The SDK's client with the token: listing and a call through `auth = "jwt"`.
        let mut client = SdkClient::open(&s.gw, Some(&good));
        assert!(client.tools().contains(&"alpha__echo".to_string()));
        assert_eq!(client.call("alpha__echo", json!({"text": "jwt"}))["texts"], json!(["alpha:jwt"]));
        let refused = SdkClient::open(&s.gw, Some(&wrong));
        assert!(refused.opened.get("error").is_some(), "{}", refused.opened);
    }
}

/// Reads from `stream` until `needle` has arrived (or the read times out).
fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        match std::io::Read::read(stream, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// Starts `tools/call beta__slow` (50 steps of 100 ms, progress requested) on a raw
/// connection and returns it once the first progress event arrived.
fn start_slow_call(s: &Setup, key: &str, session: &str, id: u64) -> TcpStream {
    let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": "beta__slow", "arguments": {"steps": 50, "delay_ms": 100},
        "_meta": {"progressToken": format!("p{id}")}}});
    let auth = format!("Bearer {key}");
    let raw = request(
        "POST",
        "/mcp",
        &[
            ("authorization", &auth),
            ("accept", "application/json, text/event-stream"),
            ("content-type", "application/json"),
            ("mcp-session-id", session),
            ("mcp-protocol-version", "2025-11-25"),
        ],
        call.to_string().as_bytes(),
    );
    let mut stream = TcpStream::connect(s.gw.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&raw).unwrap();
    let first = read_until(&mut stream, "notifications/progress");
    assert!(first.contains("text/event-stream"), "{first}");
    stream
}

on_default_driver! {
    fn a_cancellation_reaches_the_server_and_so_does_a_client_gone_mid_call(driver) {
        let s = setup(driver);
        let key = create_key(&s.gw, &json!({"name": "canceller"}));
        let (session, _) = initialize(&s.gw, &key.secret, "2025-11-25");

        // The client's notifications/cancelled goes to the server running the call.
        let _running = start_slow_call(&s, &key.secret, &session, 7);
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": 7, "reason": "changed my mind"}});
        assert_eq!(post(&s.gw, &key.secret, &[("mcp-session-id", &session)], &cancel).status, 202);
        assert!(wait_until(Duration::from_secs(10), || s.beta.cancelled().len() == 1),
            "the server never saw the cancellation: {:?}", s.beta.cancelled());

        // A client that goes away mid-call: the gateway cancels the call upstream.
        let gone = start_slow_call(&s, &key.secret, &session, 8);
        drop(gone);
        assert!(wait_until(Duration::from_secs(10), || s.beta.cancelled().len() == 2),
            "the server never saw the disconnect as a cancellation: {:?}", s.beta.cancelled());
        // Each cancelled call stopped early.
        for c in s.beta.cancelled() {
            assert!(c["after_steps"].as_u64().unwrap() < 40, "{c}");
        }
    }
}

on_default_driver! {
    fn a_slow_server_is_left_out_of_a_listing_after_the_listing_wait(driver) {
        let dir = TempDir::new("mcp-slow-list");
        let fast = McpServer::start("fast", None, dir.path());
        let mut slow = McpServer::start("slow", None, dir.path());
        // Its tools/list answers after 8 s, within its 60 s timeout_ms but past the 5 s a
        // listing waits for one server.
        slow.slow_list_ms = 8000;
        slow.stop();
        slow.restart();
        let rest = format!(
            "\n[[mcp_server]]\nname = \"slow\"\nurl = \"{}\"\n\n[[mcp_server]]\nname = \"fast\"\nurl = \"{}\"\n\n[mcp]\nauth = \"api_key\"\n",
            slow.url(),
            fast.url()
        );
        let gw = Gateway::start(&config(&rest), driver);
        let key = create_key(&gw, &json!({"name": "lister"}));
        let mut client = SdkClient::open(&gw, Some(&key.secret));
        let started = std::time::Instant::now();
        let tools = client.tools();
        let took = started.elapsed();
        // The fast server's tools, without the slow one's, after about the listing wait (the
        // servers are asked at once, so the slow one, listed first, does not delay them).
        assert!(tools.contains(&"fast__echo".to_string()), "{tools:?}");
        assert!(tools.iter().all(|t| !t.starts_with("slow__")), "{tools:?}");
        assert!(took < Duration::from_millis(7500), "the listing took {took:?}");
        // Its tools can still be called.
        assert_eq!(client.call("slow__echo", json!({"text": "x"}))["texts"], json!(["slow:x"]));
    }
}

/// Added latency per tool call: a few hundred sequential calls through the gateway and
/// straight to the server, with the same SDK client; printed, not asserted (timings depend
/// on the machine).
#[test]
fn measure_added_latency_per_tool_call() {
    let dir = TempDir::new("mcp-latency");
    let beta = McpServer::start("beta", None, dir.path());
    let rest = format!(
        "\n[[mcp_server]]\nname = \"beta\"\nurl = \"{}\"\n\n[mcp]\nauth = \"api_key\"\n",
        beta.url()
    );
    let gw = Gateway::start(&config(&rest), Driver::Uring);
    let key = create_key(&gw, &json!({"name": "bench"}));
    let n = 300;
    let mut through = SdkClient::open(&gw, Some(&key.secret));
    let via =
        through.op(json!({"op": "calls", "name": "beta__add", "args": {"a": 1, "b": 2}, "n": n}));
    // Straight to the server: the same script, pointed at the server's own endpoint.
    let mut cmd = Command::new("python3");
    cmd.arg(scripts_dir().join("client.py"))
        .env("CF_URL", beta.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    lines.next();
    writeln!(
        stdin,
        "{}",
        json!({"op": "calls", "name": "add", "args": {"a": 1, "b": 2}, "n": n})
    )
    .unwrap();
    let direct: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let percentiles = |v: &Value| {
        let mut t: Vec<f64> = v["times_s"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() * 1e6)
            .collect();
        assert_eq!(t.len(), n);
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (t[t.len() / 2], t[t.len() * 99 / 100])
    };
    let (gw50, gw99) = percentiles(&via);
    let (d50, d99) = percentiles(&direct);
    println!(
        "MCP tools/call over {n} sequential calls (debug build): direct p50 {d50:.0} µs p99 {d99:.0} µs; \
         through the gateway p50 {gw50:.0} µs p99 {gw99:.0} µs; added p50 {:.0} µs p99 {:.0} µs",
        gw50 - d50,
        gw99 - d99
    );
}
