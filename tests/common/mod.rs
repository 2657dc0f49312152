//! The integration-test harness: a real gateway process, a test upstream that
//! records every byte it receives, a raw HTTP/1.1 client and test certificates.
//!
//! Every test file does `mod common;` and uses what it needs, so helpers and
//! re-exports one file does not use are not dead for the suite as a whole.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod client;
pub mod cluster;
pub mod fake_anthropic;
pub mod fake_bedrock;
pub mod fake_gemini;
pub mod fake_google;
pub mod fake_oauth;
pub mod fake_openai;
pub mod fake_server;
pub mod fake_sts;
pub mod fake_tools;
pub mod fake_vertex;
pub mod gateway;
pub mod jwt;
pub mod keys;
pub mod limits;
pub mod postgres;
pub mod redis;
pub mod upstream;
pub mod webhook_receiver;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use certs::{Leaf, TestCa};
pub use client::{chunked_body, get, http_get, request, roundtrip, Client, Response};
pub use fake_anthropic::FakeAnthropic;
pub use fake_gemini::FakeGemini;
pub use fake_openai::{FakeOpenAi, FakeUsage};
pub use fake_server::FakeServer;
pub use gateway::{
    check_config, config, config_with, proxy_config, route_toml, upstream_toml, Driver, Gateway,
    ADMIN_TOKEN,
};
pub use upstream::{refused_addr, Echo, Gate, RecordedRequest, Reply, Upstream};

/// How long any single wait in a test may take before the test fails. Generous
/// on purpose: the suite runs on a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long a key change made by another process writing the store (the
/// `credentialflow keys ...` CLI) may take to reach every worker: the bound of
/// a `wait_until` poll after such a change. Changes made through the admin API
/// need no wait: they are in force when the admin API answers.
///
/// The credential cache's watcher applies other processes' changes every
/// [`credentialflow::auth::POLL_INTERVAL`], so a change lands within one
/// interval of being written; two intervals cover a watcher pass already under
/// way, and the slack covers a loaded 2-core machine scheduling the watcher
/// late. Derived rather than written out so a faster or slower watcher moves
/// every test's bound with it.
pub const KEY_PROPAGATION: Duration = Duration::from_millis(
    credentialflow::auth::POLL_INTERVAL.as_millis() as u64 * 2 + KEY_PROPAGATION_SLACK_MS,
);

/// The scheduling slack in [`KEY_PROPAGATION`], in milliseconds.
const KEY_PROPAGATION_SLACK_MS: u64 = 800;

/// Generates two tests, `NAME::uring` and `NAME::epoll`, running the same body
/// under each monoio driver. For suites whose subject is I/O (framing,
/// proxying, streaming, timeouts, TLS, connection limits): the drivers differ
/// exactly there. Logic-only tests use [`on_default_driver!`].
#[macro_export]
macro_rules! on_both_drivers {
    ($(#[$meta:meta])* fn $name:ident($driver:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($driver: $crate::common::Driver) $body

            #[test]
            fn uring() {
                run($crate::common::Driver::Uring)
            }

            #[test]
            fn epoll() {
                run($crate::common::Driver::Epoll)
            }
        }
    };
}

/// Generates one test, `NAME::uring`, running the body on the default driver
/// (io_uring). For tests whose subject is logic above the socket layer (auth,
/// translation, metering, error mapping, admission): both drivers hand the
/// same bytes to that logic, so a second run adds time, not coverage. The body
/// keeps its `driver` argument, so a test moves between this macro and
/// [`on_both_drivers!`] by changing the macro name alone.
#[macro_export]
macro_rules! on_default_driver {
    ($(#[$meta:meta])* fn $name:ident($driver:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn run($driver: $crate::common::Driver) $body

            #[test]
            fn uring() {
                run($crate::common::Driver::Uring)
            }
        }
    };
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh, uniquely named directory.
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "cf-test-{label}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A path inside the directory as a string, for config files.
    pub fn file(&self, name: &str) -> String {
        self.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes `contents` to `path` atomically (write a sibling, then rename), so a
/// gateway re-reading the file never sees half of it.
pub fn write_atomically(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

/// Polls `condition` every few milliseconds until it holds or `timeout`
/// passes; returns whether it held. Used only where the gateway offers no
/// readiness signal (e.g. after SIGHUP).
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// FNV-1a 64-bit checksum as 16 hex digits: enough to prove a body arrived
/// byte-for-byte without shipping it back.
pub fn checksum(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The test byte pattern: byte `i` is `i % 251`, so shifted or dropped
/// bytes show up as a mismatch.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A block of the pattern whose length is a multiple of 251, so repeating it
/// continues the pattern seamlessly.
pub fn pattern_block() -> Vec<u8> {
    pattern(251 * 4096)
}
