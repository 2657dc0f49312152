//! credentialflow: an API and AI gateway on a thread-per-core io_uring data plane.
//!
//! Module map (one owner per piece of state):
//! - `config`: the TOML file, validation, secret references, the built-in default.
//! - `http1`: strict HTTP/1.1 parsing and body framing (request heads, chunked, responses) and
//!   `BufConn`, the connection read buffer.
//! - `upstream`: per-worker connection pools, balancing, passive health, TLS toward upstreams.
//! - `tls`: rustls server and client configurations.
//! - `metrics`: Prometheus counters and histograms, lock-free on the hot path.
//! - `admin`: the admin listener (`/healthz`, `/metrics`, `/admin/*`) on its own thread.
//! - `worker`: threads, runtimes, listeners, the keep-alive loop, connection cap and drain; it
//!   builds the pipeline's per-thread `ThreadState` and nothing imports it back.
//! - `pipeline`: one request's phases in order, from route to log.
//! - `router`: exact host, then longest path prefix.
//! - `clock`: injectable monotonic time, the one duration grammar, UTC dates (jiff).
//! - `cluster`: fleet-wide limits, concurrency and budgets on Redis (`[cluster]`).
//! - `limits`: all admission: lock-free GCRA rates, concurrency permits, keyed limiter
//!   tables, tokens per minute, spend budgets and what a request is charged.
//! - `snapshot`: the compiled config, swapped atomically on reload; process-wide state.
//! - `store`: the embedded SQLite key store in `data_dir`, its pepper, the audit log and the
//!   usage ledger.
//! - `error`: every gateway-made error response.
//! - `identity`: credentials the gateway obtains itself: OAuth2 client credentials for
//!   upstreams, refreshed on their own threads; Entra ID, Google service accounts, AWS SigV4
//!   and the AWS event-stream framing as building blocks not yet wired into providers; the
//!   blocking HTTP client of background threads.
//! - `serve`, `cli`: the process lifecycle and the command line.
//! - `lua`: sandboxed Luau hook scripts, one VM per worker.
//! - `accesslog`, `logging`: the access log writer and the gateway's own log.
//! - `bench`: load-test tools shipped in the product.

pub mod access;
pub mod accesslog;
pub mod admin;
pub mod ai;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod http1;
pub mod identity;
pub mod limits;
pub mod logging;
pub mod lua;
pub mod mcp;
pub mod metrics;
pub mod pipeline;
pub mod router;
pub mod serve;
pub mod snapshot;
pub mod store;
pub mod tls;
pub mod upstream;
pub mod webhook;
pub mod worker;
