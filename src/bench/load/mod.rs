//! `credentialflow bench URL [options]`: the bundled HTTP/1.1 load generator.
//!
//! Built like the gateway: load threads with one monoio runtime each (io_uring, else epoll),
//! the connections spread over them, nothing shared on the request path but one atomic
//! counter for `-n`.
//!
//! - Closed loop (default): `-c` keep-alive connections, each sending its next request when
//!   the last one is answered, for `-d` (default 10 s) or until `-n` requests.
//! - Open loop (`--rate R`): R requests per second in total on a fixed schedule, latency
//!   measured from each request's intended send time, so queueing behind a slow server is
//!   counted (no coordinated omission). At most `-c` requests are in flight; a request due
//!   while every connection is busy waits for one. With `-d`, requests still due at the end
//!   are reported as `unsent`.
//! - `--warmup D`: requests sent for D first are not recorded; `-d` and `-n` count after it.
//! - `--stream`: responses are server-sent events; time to the first and to the last event.
//! - Request: `-m`, `-H 'k: v'` (repeatable), `-b` or `--body-file`, and `--keys FILE` (one
//!   API key per line, rotated across requests as `Authorization: Bearer <key>`).
//! - HTTPS with rustls: webpki roots, `--ca-file` for a private CA, `--insecure` to accept any
//!   certificate.
//! - Output: a progress line once a second on stderr when it is a terminal, then a summary;
//!   `--json` prints the summary as one JSON object on stdout (fields: [`Summary`]).
//!
//! Exit codes: 0 when the run completed and at least one request got a response (whatever
//! its status); 1 for bad arguments (URL, flags, unreadable files), with one line on stderr;
//! 2 when requests were made but none got a response (refused, TLS failure, all timed out),
//! after printing the summary, or when the target cannot be resolved.

mod args;
mod client;
mod framing;
mod report;
mod request;
mod runner;
mod stats;
mod target;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use crate::config::HttpUrl;

pub use args::BenchArgs;
pub use client::{ErrorKind, Failure, Response};
pub use report::{Percentiles, StreamSummary, Summary};
pub use request::{encode_requests, parse_keys, KeyRotation, RequestSpec};
pub use runner::{run, Budget, Schedule};

use crate::serve::{EXIT_BAD_INPUT, EXIT_RUNTIME};

/// A checked, ready-to-run load description (see [`BenchArgs::into_options`]).
#[derive(Clone, Debug)]
pub struct Options {
    /// The URL as given.
    pub url: String,
    /// The parsed URL.
    pub target: HttpUrl,
    /// Connections.
    pub connections: usize,
    /// Load threads (0 = one per core); never more than the connections.
    pub threads: usize,
    /// How long to measure after the warm-up; `None` with `-n` alone.
    pub duration: Option<Duration>,
    /// Requests to record.
    pub requests: Option<u64>,
    /// Open loop: requests per second in total.
    pub rate: Option<f64>,
    /// Warm-up before recording.
    pub warmup: Duration,
    /// Per-request limit, connect included.
    pub timeout: Duration,
    /// The requests to send, one per API key (or one), in rotation order.
    pub encoded: Vec<Box<[u8]>>,
    /// The method is HEAD: responses have no body.
    pub head_request: bool,
    /// Count server-sent events and time them.
    pub stream: bool,
    /// TLS client configuration for `https://`.
    pub tls: Option<Arc<ClientConfig>>,
    /// Show the progress line (only ever when stderr is a terminal).
    pub progress: bool,
}

/// Runs `credentialflow bench` and returns the process exit code.
pub fn main(args: BenchArgs) -> i32 {
    let json = args.json;
    let opts = match args.into_options() {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("error: bench: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let summary = match run(opts) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("error: bench: {e}");
            return EXIT_RUNTIME;
        }
    };
    if json {
        println!("{}", summary.to_json());
    } else {
        print!("{}", summary.to_text());
    }
    let code = summary.exit_code();
    if code != 0 {
        eprintln!(
            "error: bench: no request got a response ({})",
            summary.first_error.as_deref().unwrap_or("no detail")
        );
    }
    code
}
