//! The admin listener: `/healthz`, `/metrics` and the token-protected `/admin/*` API.
//!
//! It runs on its own threads, off the data plane: one accept thread, and a thread per
//! connection using plain blocking sockets. Nothing here is on a worker's hot path.
//!
//! The network must not be able to lock an operator out: connections are capped per client
//! and in total, and idle or slow ones make room for new ones (see [`slots`]); every read has
//! a deadline and every request a size bound (see [`http::Limits`]).

mod access;
mod auth;
mod http;
mod keys;
mod live;
mod nodes;
mod providers;
mod routes;
mod slots;
mod ui;
mod usage;

pub use auth::constant_time_eq;
pub use slots::{MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT};
pub use usage::UsageReader;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::auth::CredentialCache;
use crate::config;
use crate::store::{NodeRecord, SharedBackend};
use http::{Connection, Limits, ReadError, Response};
use slots::{Connections, Slot};

/// Most requests served on one keep-alive connection before it is closed (nginx's
/// `keepalive_requests` default): a client cannot pin one connection, and its thread, forever.
const MAX_REQUESTS_PER_CONNECTION: usize = 1000;

/// How long the accept thread sleeps when no connection is waiting; bounds how late it
/// notices shutdown.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// What the admin API needs from the rest of the gateway.
pub struct AdminState {
    /// The admin token. `None` means no token is configured, and every `/admin/*` call
    /// answers 401.
    pub token: Option<config::LiveSecret>,
    /// Whether every worker is serving (`/healthz`).
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Loads the config file again and returns once the new config is live on every worker,
    /// or returns its errors with the old config kept (`POST /admin/reload`). Called on the
    /// admin connection's thread; it may block.
    pub reload: Arc<dyn Fn() -> Result<(), Vec<String>> + Send + Sync>,
    /// The key store and audit log behind `/admin/keys*` and `POST /admin/reload`: one
    /// backend opened at start and shared by the connection threads, which take turns with
    /// it. One connection rather than one per request: a database backend would otherwise
    /// pay a connect and log-in on every call and could open as many server connections as
    /// there are admin threads; admin writes are serialised by the store anyway.
    pub store: SharedBackend,
    /// The usage ledger behind `/admin/usage`: the one `[store]` names (on PostgreSQL, the
    /// whole fleet's).
    pub usage: Arc<UsageReader>,
    /// The workers' credential cache over that store: every `/admin/keys*` write is applied
    /// to it before the answer is sent. Its [`CredentialCache::store_health`] says whether
    /// the store is reachable (`/healthz`, and admin writes answer 503 while it is not).
    pub credentials: Arc<CredentialCache>,
    /// This gateway as a fleet node (name, version, now, config generation): what
    /// `GET /admin/nodes` lists when the store keeps no registry of nodes.
    pub this_node: Arc<dyn Fn() -> NodeRecord + Send + Sync>,
    /// The cluster link's status in fleet mode (`None` without `[cluster] redis`): while
    /// Redis is unreachable `/healthz` says so (still 200: limits fall back to this node's
    /// share and the node serves).
    pub cluster: Option<Arc<crate::cluster::LinkStatus>>,
    /// The live config's `[[access_policy]]`, read on each access request (a reload
    /// changes them).
    pub access_policies: Arc<dyn Fn() -> Vec<config::AccessPolicyConfig> + Send + Sync>,
}

/// Serves the admin API on `listener` from a new thread until `shutdown` is set. The thread
/// then stops accepting, lets open connections finish the request they are on, and returns.
///
/// # Panics
/// If the operating system cannot start a thread.
pub fn spawn(
    listener: TcpListener,
    state: AdminState,
    shutdown: Arc<AtomicBool>,
) -> JoinHandle<()> {
    spawn_with_limits(listener, state, shutdown, Limits::default())
}

fn spawn_with_limits(
    listener: TcpListener,
    state: AdminState,
    shutdown: Arc<AtomicBool>,
    limits: Limits,
) -> JoinHandle<()> {
    thread::Builder::new()
        .name("cf-admin".into())
        .spawn(move || accept_loop(listener, Arc::new(state), shutdown, Arc::new(limits)))
        .expect("failed to start the admin thread")
}

/// Accepts connections until shutdown. The listener is non-blocking and polled, so a set
/// `shutdown` flag is seen within [`ACCEPT_POLL`] without needing a wake-up connection.
fn accept_loop(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: Arc<AtomicBool>,
    limits: Arc<Limits>,
) {
    if let Err(e) = listener.set_nonblocking(true) {
        log::error!("admin listener unusable: {e}");
        return;
    }
    let mut connections = Connections::default();
    while !shutdown.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let client = slots::client_of(peer.ip());
                if !connections.make_room(client) {
                    refuse(stream);
                    continue;
                }
                let slot = match stream.try_clone() {
                    Ok(socket) => Arc::new(Slot::new(socket)),
                    Err(e) => {
                        log::warn!("admin: cannot track a connection: {e}");
                        continue;
                    }
                };
                let (state, shutdown, limits) = (state.clone(), shutdown.clone(), limits.clone());
                let held = slot.clone();
                let serve = move || {
                    serve_connection(stream, &held, &state, &shutdown, &limits);
                    held.finish();
                };
                let spawned = thread::Builder::new()
                    .name("cf-admin-conn".into())
                    .spawn(serve);
                match spawned {
                    Ok(handle) => connections.insert(client, slot, handle),
                    Err(e) => log::warn!("admin: cannot start a connection thread: {e}"),
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(ACCEPT_POLL),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                log::warn!("admin accept failed: {e}");
                thread::sleep(ACCEPT_POLL);
            }
        }
    }
    connections.join_all();
}

/// Answers 503 on a connection there is no room for (every slot serves an authenticated
/// request). The accept thread does this itself, so the write is bounded by a short timeout.
fn refuse(stream: TcpStream) {
    let limits = Limits {
        write_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let Ok(mut connection) = Connection::new(stream, &limits) else {
        return;
    };
    let mut response = routes::error(
        503,
        "overloaded_error",
        "too_many_admin_connections",
        "too many admin connections; retry later",
    );
    response.close = true;
    let _ = connection.write_response(&response, &new_request_id(), false);
}

/// Serves requests on one connection until the client closes, asks to close, idles out, is
/// evicted, or shutdown begins. `slot` is protected from eviction while an authenticated
/// request is served.
fn serve_connection(
    stream: TcpStream,
    slot: &Slot,
    state: &AdminState,
    shutdown: &AtomicBool,
    limits: &Limits,
) {
    let Ok(mut connection) = Connection::new(stream, limits) else {
        return;
    };
    for served in 1..=MAX_REQUESTS_PER_CONNECTION {
        let request = match connection.read_request(limits, shutdown) {
            Ok(request) => request,
            Err(ReadError::Closed) => return,
            Err(ReadError::Reject { status, message }) => {
                let mut response = rejection(status, message);
                response.close = true;
                if connection
                    .write_response(&response, &new_request_id(), false)
                    .is_ok()
                {
                    connection.linger_close(limits.max_body_bytes);
                }
                return;
            }
        };
        // Only the token holder's requests are kept from eviction; `protect` fails if the
        // accept thread evicted this connection while the request was being read.
        let protected = routes::authorized(state, &request);
        if protected && !slot.protect() {
            return;
        }
        let request_id = request
            .header("x-request-id")
            .filter(|id| is_acceptable_request_id(id))
            .map_or_else(new_request_id, str::to_owned);
        if protected && live::is_live(&request) {
            // A stream is not a request in progress: it may be closed to make room.
            slot.release();
            live::stream(&mut connection, &request_id, shutdown);
            return;
        }
        // A panicking handler (say, in the reload callback) must not take the listener down
        // with it, and the client deserves an answer.
        let mut response =
            panic::catch_unwind(AssertUnwindSafe(|| routes::dispatch(state, &request)))
                .unwrap_or_else(|_| {
                    let mut failed =
                        routes::error(500, "api_error", "internal_error", "internal error");
                    failed.close = true;
                    failed
                });
        response.close |= !request.keep_alive
            || shutdown.load(Ordering::Relaxed)
            || served == MAX_REQUESTS_PER_CONNECTION;
        let head_only = request.method == "HEAD";
        let written = connection.write_response(&response, &request_id, head_only);
        if protected {
            slot.release();
        }
        if written.is_err() || response.close {
            return;
        }
    }
}

/// The error response for a request the reader refused.
fn rejection(status: u16, message: &str) -> Response {
    let (error_type, code) = match status {
        408 => ("timeout_error", "request_timeout"),
        411 => ("invalid_request_error", "length_required"),
        413 => ("invalid_request_error", "body_too_large"),
        431 => ("invalid_request_error", "headers_too_large"),
        501 => ("invalid_request_error", "not_implemented"),
        _ => ("invalid_request_error", "bad_request"),
    };
    routes::error(status, error_type, code, message)
}

/// Whether a client-supplied `x-request-id` is safe to echo back: short, and only characters
/// that cannot break a header line or a log line.
fn is_acceptable_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A new request id: 64 random bits fixed per process, then a counter, so ids never repeat
/// within a process and are unlikely to collide across processes.
fn new_request_id() -> String {
    static PROCESS_SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *PROCESS_SEED.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    format!("{seed:016x}{:016x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LiveSecret, Secret};
    use crate::store;
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::time::Instant;

    const TOKEN: &str = "admin-t0ken";

    /// A running admin server on an ephemeral port, stopped (and its data directory
    /// removed) on drop.
    struct Server {
        addr: SocketAddr,
        data_dir: PathBuf,
        shutdown: Arc<AtomicBool>,
        handle: Option<JoinHandle<()>>,
    }

    impl Server {
        fn start(state: AdminState) -> Server {
            Server::start_with(state, Limits::default())
        }

        fn start_with(state: AdminState, limits: Limits) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let shutdown = Arc::new(AtomicBool::new(false));
            let data_dir = state.usage.data_dir().to_owned();
            let handle = spawn_with_limits(listener, state, shutdown.clone(), limits);
            Server {
                addr,
                data_dir,
                shutdown,
                handle: Some(handle),
            }
        }

        fn connect(&self) -> TcpStream {
            let stream = TcpStream::connect(self.addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            stream
        }

        /// Sends `raw` on a new connection and reads one response.
        fn send(&self, raw: &[u8]) -> Reply {
            let mut stream = self.connect();
            stream.write_all(raw).unwrap();
            read_reply(&mut stream, &mut Vec::new())
        }

        fn get(&self, path: &str, headers: &str) -> Reply {
            self.send(format!("GET {path} HTTP/1.1\r\nHost: admin\r\n{headers}\r\n").as_bytes())
        }

        fn post(&self, path: &str, headers: &str) -> Reply {
            self.send(
                format!(
                    "POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n{headers}\r\n"
                )
                .as_bytes(),
            )
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.shutdown.store(true, Ordering::Relaxed);
            if let Some(handle) = self.handle.take() {
                let _ = handle.join();
            }
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }

    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }

        fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.body).unwrap()
        }
    }

    /// Reads one response (head, then `content-length` bytes) from `stream`; `buf` carries
    /// bytes past it to the next call.
    fn read_reply(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Reply {
        loop {
            if let Some((head, head_len)) = crate::http1::parse_response(buf, 64 * 1024).unwrap() {
                let status = head.status();
                let headers: Vec<(String, String)> = head
                    .headers()
                    .map(|(name, value)| {
                        (
                            name.to_ascii_lowercase(),
                            String::from_utf8(value.to_vec()).unwrap(),
                        )
                    })
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(n, _)| n == "content-length")
                    .map_or(0, |(_, v)| v.parse().unwrap());
                while buf.len() < head_len + length {
                    read_more(stream, buf);
                }
                let body = String::from_utf8(buf[head_len..head_len + length].to_vec()).unwrap();
                buf.drain(..head_len + length);
                return Reply {
                    status,
                    headers,
                    body,
                };
            }
            read_more(stream, buf);
        }
    }

    fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed before a full response");
        buf.extend_from_slice(&chunk[..n]);
    }

    fn state(ready: bool, reload: Result<(), Vec<String>>) -> AdminState {
        let data_dir =
            std::env::temp_dir().join(format!("cf-admin-test-{}", crate::store::ids::new_key_id()));
        AdminState {
            token: Some(LiveSecret::fixed(Secret::new(TOKEN))),
            ready: Arc::new(move || ready),
            reload: Arc::new(move || reload.clone()),
            store: store::open_shared(&store::sqlite_settings(&data_dir)).unwrap(),
            usage: Arc::new(UsageReader::new(&store::sqlite_settings(&data_dir)).unwrap()),
            credentials: Arc::new(CredentialCache::from_records(
                crate::store::Pepper::from_bytes([0; 32]),
                Vec::new(),
            )),
            cluster: None,
            access_policies: Arc::new(Vec::new),
            this_node: Arc::new(|| NodeRecord {
                node: "edge-test".into(),
                version: "1.2.3".into(),
                last_seen: 1_700_000_000,
                config_generation: 4,
            }),
        }
    }

    fn ready_state() -> AdminState {
        state(true, Ok(()))
    }

    fn bearer() -> String {
        format!("Authorization: Bearer {TOKEN}\r\n")
    }

    #[test]
    fn healthz_answers_ok_when_ready() {
        let server = Server::start(ready_state());
        let reply = server.get("/healthz", "");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json(), serde_json::json!({ "status": "ok" }));
        assert_eq!(reply.header("content-type"), Some("application/json"));
    }

    #[test]
    fn healthz_names_a_degraded_cluster_and_stays_200() {
        // A link to a Redis that is not there is degraded from its start.
        let link = crate::cluster::Link::start(
            crate::cluster::LinkSettings {
                target: crate::cluster::RedisTarget::parse("redis+unix:///nonexistent/cf.sock")
                    .unwrap(),
                node: "edge-test".into(),
                tick: Duration::from_millis(50),
            },
            Vec::new(),
        )
        .unwrap();
        let server = Server::start(AdminState {
            cluster: Some(Arc::clone(link.status())),
            ..ready_state()
        });
        let reply = server.get("/healthz", "");
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.json(),
            serde_json::json!({ "status": "degraded", "cluster": "degraded" })
        );
        link.abandon();
    }

    #[test]
    fn healthz_answers_503_while_starting() {
        let server = Server::start(state(false, Ok(())));
        let reply = server.get("/healthz", "");
        assert_eq!(reply.status, 503);
        assert_eq!(reply.json(), serde_json::json!({ "status": "starting" }));
    }

    #[test]
    fn metrics_serves_prometheus_text_without_token() {
        crate::metrics::global()
            .route("admin-metrics-test")
            .record(201, Duration::from_millis(1));
        let server = Server::start(ready_state());
        let reply = server.get("/metrics", "");
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert!(reply.body.contains(
            r#"credentialflow_requests_total{route="admin-metrics-test",status="201"} 1"#
        ));
    }

    #[test]
    fn reload_success_answers_reloaded() {
        let server = Server::start(ready_state());
        let reply = server.post("/admin/reload", &bearer());
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json(), serde_json::json!({ "status": "reloaded" }));
    }

    #[test]
    fn reload_failure_answers_400_with_every_error() {
        let errors = vec![
            "route[0].upstream: unknown upstream \"x\"".to_string(),
            "server.workers: must be a number".to_string(),
        ];
        let server = Server::start(state(true, Err(errors.clone())));
        let reply = server.post("/admin/reload", &bearer());
        assert_eq!(reply.status, 400);
        let json = reply.json();
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert_eq!(json["error"]["code"], "invalid_config");
        assert_eq!(json["error"]["message"], errors.join("; "));
        assert_eq!(json["errors"], serde_json::json!(errors));
    }

    #[test]
    fn admin_call_without_token_is_401() {
        let server = Server::start(ready_state());
        let reply = server.post("/admin/reload", "");
        assert_eq!(reply.status, 401);
        assert_eq!(reply.json()["error"]["type"], "authentication_error");
        assert_eq!(reply.json()["error"]["code"], "invalid_admin_token");
        assert!(reply.header("www-authenticate").is_some());
    }

    #[test]
    fn admin_call_with_wrong_token_is_401() {
        let server = Server::start(ready_state());
        let reply = server.post("/admin/reload", "Authorization: Bearer admin-t0kem\r\n");
        assert_eq!(reply.status, 401);
        assert_eq!(reply.json()["error"]["code"], "invalid_admin_token");
    }

    #[test]
    fn admin_call_with_right_token_is_served() {
        let reloads = Arc::new(Mutex::new(0));
        let counted = reloads.clone();
        let server = Server::start(AdminState {
            reload: Arc::new(move || {
                *counted.lock().unwrap() += 1;
                Ok(())
            }),
            ..ready_state()
        });
        let reply = server.post("/admin/reload", "authorization: bearer admin-t0ken\r\n");
        assert_eq!(reply.status, 200);
        assert_eq!(*reloads.lock().unwrap(), 1);
    }

    #[test]
    fn admin_calls_are_401_when_no_token_is_configured() {
        let server = Server::start(AdminState {
            token: None,
            ..ready_state()
        });
        let reply = server.post("/admin/reload", &bearer());
        assert_eq!(reply.status, 401);
    }

    #[test]
    fn unknown_admin_path_without_token_is_401_not_404() {
        let server = Server::start(ready_state());
        assert_eq!(server.get("/admin/nothing-here", "").status, 401);
    }

    #[test]
    fn unknown_path_is_404() {
        let server = Server::start(ready_state());
        let reply = server.get("/nothing-here", "");
        assert_eq!(reply.status, 404);
        assert_eq!(reply.json()["error"]["type"], "not_found_error");
        assert_eq!(server.get("/admin/nothing-here", &bearer()).status, 404);
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        let server = Server::start(ready_state());
        let reply = server.get("/admin/reload", &bearer());
        assert_eq!(reply.status, 405);
        assert_eq!(reply.header("allow"), Some("POST"));
        assert_eq!(server.post("/healthz", "").status, 405);
    }

    #[test]
    fn head_answers_headers_without_body() {
        let server = Server::start(ready_state());
        let mut stream = server.connect();
        stream
            .write_all(b"HEAD /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(raw.contains("content-length: 15\r\n"));
        assert!(raw.ends_with("\r\n\r\n"));
    }

    #[test]
    fn every_response_has_a_request_id() {
        let server = Server::start(ready_state());
        for reply in [
            server.get("/healthz", ""),
            server.get("/metrics", ""),
            server.get("/nothing-here", ""),
            server.post("/admin/reload", ""),
            server.send(b"GET /\x01 HTTP/1.1\r\n\r\n"),
        ] {
            let id = reply.header("x-request-id").unwrap_or_default();
            assert!(!id.is_empty(), "no x-request-id on {reply:?}");
        }
    }

    #[test]
    fn client_request_id_is_echoed() {
        let server = Server::start(ready_state());
        let reply = server.get("/healthz", "X-Request-Id: trace-42\r\n");
        assert_eq!(reply.header("x-request-id"), Some("trace-42"));
    }

    #[test]
    fn request_with_body_is_read_by_content_length() {
        let server = Server::start(ready_state());
        let mut stream = server.connect();
        let body = r#"{"note":"reload please"}"#;
        let request = format!(
            "POST /admin/reload HTTP/1.1\r\nHost: admin\r\n{}Content-Length: {}\r\n\r\n{body}",
            bearer(),
            body.len()
        );
        // The same connection then carries a second request: the body was consumed exactly.
        stream
            .write_all(format!("{request}GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n").as_bytes())
            .unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_reply(&mut stream, &mut buf).status, 200);
        let second = read_reply(&mut stream, &mut buf);
        assert_eq!(second.status, 200);
        assert_eq!(second.json()["status"], "ok");
    }

    #[test]
    fn keep_alive_serves_requests_one_after_another() {
        let server = Server::start(ready_state());
        let mut stream = server.connect();
        let mut buf = Vec::new();
        for _ in 0..3 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
                .unwrap();
            let reply = read_reply(&mut stream, &mut buf);
            assert_eq!(reply.status, 200);
            assert_eq!(reply.header("connection"), None);
        }
    }

    #[test]
    fn expect_continue_gets_an_interim_100() {
        let server = Server::start(ready_state());
        let mut stream = server.connect();
        stream
            .write_all(
                format!(
                    "POST /admin/reload HTTP/1.1\r\nHost: admin\r\n{}Expect: 100-continue\r\nContent-Length: 2\r\n\r\n",
                    bearer()
                )
                .as_bytes(),
            )
            .unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_reply(&mut stream, &mut buf).status, 100);
        stream.write_all(b"{}").unwrap();
        assert_eq!(read_reply(&mut stream, &mut buf).status, 200);
    }

    #[test]
    fn body_over_one_mebibyte_is_413() {
        let server = Server::start(ready_state());
        let reply = server.send(
            format!(
                "POST /admin/reload HTTP/1.1\r\nHost: admin\r\n{}Content-Length: {}\r\n\r\n",
                bearer(),
                1024 * 1024 + 1
            )
            .as_bytes(),
        );
        assert_eq!(reply.status, 413);
        assert_eq!(reply.header("connection"), Some("close"));
    }

    #[test]
    fn malformed_request_is_400_then_closed() {
        let server = Server::start(ready_state());
        let reply = server.send(b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n");
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
        assert_eq!(reply.header("connection"), Some("close"));
    }

    #[test]
    fn stalled_request_head_times_out_with_408() {
        let limits = Limits {
            request_timeout: Duration::from_millis(300),
            poll_interval: Duration::from_millis(20),
            ..Limits::default()
        };
        let server = Server::start_with(ready_state(), limits);
        let started = Instant::now();
        let reply = server.send(b"GET /healthz HTTP/1.1\r\nHost: adm");
        assert_eq!(reply.status, 408);
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn silent_new_connection_is_closed_after_first_byte_timeout() {
        let limits = Limits {
            first_byte_timeout: Duration::from_millis(200),
            poll_interval: Duration::from_millis(20),
            ..Limits::default()
        };
        let server = Server::start_with(ready_state(), limits);
        let mut stream = server.connect();
        let started = Instant::now();
        let mut rest = Vec::new();
        assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0);
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn keep_alive_connection_is_closed_after_idle_timeout() {
        let limits = Limits {
            idle_timeout: Duration::from_millis(200),
            poll_interval: Duration::from_millis(20),
            ..Limits::default()
        };
        let server = Server::start_with(ready_state(), limits);
        let mut stream = server.connect();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_reply(&mut stream, &mut buf).status, 200);
        let started = Instant::now();
        assert_eq!(stream.read_to_end(&mut buf).unwrap(), 0);
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn trickled_head_is_cut_at_head_timeout() {
        let limits = Limits {
            head_timeout: Duration::from_millis(400),
            poll_interval: Duration::from_millis(20),
            ..Limits::default()
        };
        let server = Server::start_with(ready_state(), limits);
        let mut stream = server.connect();
        let started = Instant::now();
        // Each byte arrives well inside every per-read wait; only the head deadline cuts it.
        for byte in b"GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaa" {
            if stream.write_all(&[*byte]).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(30));
        }
        let reply = read_reply(&mut stream, &mut Vec::new());
        assert_eq!(reply.status, 408);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn keep_alive_connection_closes_after_the_request_cap() {
        let server = Server::start(ready_state());
        let mut stream = server.connect();
        let mut writer = stream.try_clone().unwrap();
        // Exactly the cap, pipelined, written while the answers are read (more would be
        // unread at the close, and the reset could destroy answers in flight).
        let sender = thread::spawn(move || {
            let request = b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n";
            for _ in 0..MAX_REQUESTS_PER_CONNECTION {
                if writer.write_all(request).is_err() {
                    break;
                }
            }
        });
        let mut buf = Vec::new();
        for served in 1..=MAX_REQUESTS_PER_CONNECTION {
            let reply = read_reply(&mut stream, &mut buf);
            assert_eq!(reply.status, 200);
            let closing = reply.header("connection") == Some("close");
            assert_eq!(
                closing,
                served == MAX_REQUESTS_PER_CONNECTION,
                "at {served}"
            );
        }
        sender.join().unwrap();
        assert_eq!(stream.read_to_end(&mut buf).unwrap(), 0);
    }

    #[test]
    fn held_idle_connections_make_room_for_healthz() {
        let server = Server::start(ready_state());
        let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS + 8).map(|_| server.connect()).collect();
        assert_eq!(server.get("/healthz", "").status, 200);
        let reply = server.post("/admin/reload", &bearer());
        assert_eq!(reply.status, 200);
        drop(idle);
    }

    #[test]
    fn panicking_handler_answers_500() {
        let server = Server::start(AdminState {
            reload: Arc::new(|| panic!("reload exploded")),
            ..ready_state()
        });
        let reply = server.post("/admin/reload", &bearer());
        assert_eq!(reply.status, 500);
        assert_eq!(server.get("/healthz", "").status, 200);
    }

    #[test]
    fn shutdown_stops_the_listener() {
        let server = Server::start(ready_state());
        // A served keep-alive connection, now idle between requests.
        let mut idle_client = server.connect();
        idle_client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
            .unwrap();
        assert_eq!(read_reply(&mut idle_client, &mut Vec::new()).status, 200);
        server.shutdown.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let mut server = server;
        server.handle.take().unwrap().join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        // The idle keep-alive connection was closed rather than left hanging.
        let mut rest = Vec::new();
        assert_eq!(idle_client.read_to_end(&mut rest).unwrap(), 0);
    }

    #[test]
    fn request_ids_are_unique() {
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn unsafe_client_request_ids_are_replaced() {
        assert!(is_acceptable_request_id("abc-123_x.y:z"));
        assert!(!is_acceptable_request_id("evil\r\nset-cookie: x"));
        assert!(!is_acceptable_request_id(""));
        assert!(!is_acceptable_request_id(&"a".repeat(129)));
    }
}
