//! credentialflow: an API and AI gateway on a thread-per-core io_uring data plane.
//!
//! Module map (one owner per piece of state):
//! - `config`: the TOML file, validation, secret references, the built-in default.
//! - `http1`: strict HTTP/1.1 parsing and body framing (request heads, chunked, responses).
//! - `upstream`: per-worker connection pools, balancing, passive health, TLS toward upstreams.
//! - `tls`: rustls server and client configurations.
//! - `metrics`: Prometheus counters and histograms, lock-free on the hot path.
//! - `admin`: the admin listener (`/healthz`, `/metrics`, `/admin/*`) on its own thread.

pub mod accesslog;
pub mod admin;
pub mod config;
pub mod http1;
pub mod metrics;
pub mod tls;
pub mod upstream;
pub mod cli;
pub mod error;
pub mod logging;
pub mod pipeline;
pub mod router;
pub mod serve;
pub mod snapshot;
pub mod worker;
