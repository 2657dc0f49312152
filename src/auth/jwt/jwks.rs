//! A JWKS endpoint kept fresh by a background thread, read lock-free on the hot path.
//!
//! The thread fetches the key set at start, again when it expires (`Cache-Control: max-age`,
//! else every 5 minutes) and when a verifier asks because a token named an unknown `kid`
//! (key rotation at the IdP). Asking is rate-limited on the hot path (one atomic, at most
//! one request per minimum interval), so a flood of made-up `kid`s cannot turn the gateway
//! into a load generator against the IdP. A failed fetch keeps the last good keys and
//! retries with backoff.
//!
//! The HTTP client is the background threads' one ([`crate::identity::http`]): one request
//! per connection, no redirects, bounded in size and time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::keys::{keys_from_jwks, PublicKey};
use crate::identity::http::{Endpoint, Limits};

/// Timing of a JWKS source. [`JwksTiming::default`] is what the gateway uses; tests shorten it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JwksTiming {
    /// Least time between two refresh requests from the hot path (unknown `kid`), and the
    /// first retry delay after a failed fetch; also the floor of a server-given `max-age`.
    pub min_refresh: Duration,
    /// Refresh period when the response has no usable `Cache-Control: max-age`.
    pub default_ttl: Duration,
    /// Upper bound on a server-given `max-age`.
    pub max_ttl: Duration,
    /// Connect, read and write timeout of one fetch.
    pub io_timeout: Duration,
    /// How long starting a source waits for the first fetch, so the first requests after
    /// start find keys. A slower or failed fetch does not fail the start.
    pub startup_wait: Duration,
}

impl Default for JwksTiming {
    fn default() -> Self {
        JwksTiming {
            min_refresh: Duration::from_secs(10),
            default_ttl: Duration::from_secs(300),
            max_ttl: Duration::from_secs(24 * 3600),
            io_timeout: Duration::from_secs(5),
            startup_wait: Duration::from_secs(5),
        }
    }
}

/// Largest JWKS response accepted; real ones are a few KiB.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// The hot-path side of a JWKS endpoint: the current keys and a way to ask for a refresh.
/// Dropping it stops the fetch thread (at its next wake-up).
pub struct JwksSource {
    keys: Arc<ArcSwap<Vec<PublicKey>>>,
    wake: Sender<()>,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last refresh request, plus one (0 = never).
    last_request_ms: AtomicU64,
    min_refresh_ms: u64,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource")
            .field("keys", &self.keys.load().len())
            .finish()
    }
}

impl JwksSource {
    /// Checks `url`, starts the fetch thread and waits up to `timing.startup_wait` for the
    /// first fetch. Errors are about the URL or the TLS setup, never about the fetch itself.
    pub fn start(url: &str, timing: JwksTiming) -> Result<JwksSource, String> {
        let target = Endpoint::new(url)?;
        let keys = Arc::new(ArcSwap::from_pointee(Vec::new()));
        let (wake, woken) = crossbeam_channel::bounded(1);
        let (first_done, first_seen) = crossbeam_channel::bounded(1);
        let fetcher = Fetcher {
            target,
            timing,
            keys: Arc::clone(&keys),
            woken,
        };
        std::thread::Builder::new()
            .name("cf-jwks".to_string())
            .spawn(move || fetcher.run(first_done))
            .map_err(|e| format!("cannot start the JWKS thread: {e}"))?;
        let _ = first_seen.recv_timeout(timing.startup_wait);
        Ok(JwksSource {
            keys,
            wake,
            epoch: Instant::now(),
            last_request_ms: AtomicU64::new(0),
            min_refresh_ms: u64::try_from(timing.min_refresh.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// A source for `url` with the same checks as [`JwksSource::start`] but no fetch thread:
    /// it never has keys. For `credentialflow check`, which must refuse what `serve` refuses
    /// without reaching out to the network.
    pub fn unstarted(url: &str) -> Result<JwksSource, String> {
        Endpoint::new(url)?;
        let (wake, _) = crossbeam_channel::bounded(1);
        Ok(JwksSource {
            keys: Arc::new(ArcSwap::from_pointee(Vec::new())),
            wake,
            epoch: Instant::now(),
            last_request_ms: AtomicU64::new(0),
            min_refresh_ms: u64::MAX,
        })
    }

    /// The current keys: one atomic load.
    pub fn keys(&self) -> Guard<Arc<Vec<PublicKey>>> {
        self.keys.load()
    }

    /// Asks the thread to fetch now; ignored when the last request is younger than the
    /// minimum interval. Never blocks.
    pub fn request_refresh(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last_request_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.min_refresh_ms {
            return;
        }
        // One winner per interval even when several workers miss at the same moment.
        if self
            .last_request_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let _ = self.wake.try_send(());
        }
    }
}

/// The thread side: fetches, parses and swaps in key sets.
struct Fetcher {
    target: Endpoint,
    timing: JwksTiming,
    keys: Arc<ArcSwap<Vec<PublicKey>>>,
    woken: Receiver<()>,
}

impl Fetcher {
    fn run(self, first_done: Sender<()>) {
        let mut first_done = Some(first_done);
        let mut next_due = Instant::now();
        let mut failures = 0u32;
        loop {
            let now = Instant::now();
            if now >= next_due {
                if let Err(TryRecvError::Disconnected) = self.woken.try_recv() {
                    return;
                }
                match self.fetch_once() {
                    Ok(ttl) => {
                        failures = 0;
                        next_due = now + ttl;
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        log::warn!(
                            "jwks {}: {e}; keeping the last {} key(s)",
                            self.target.url(),
                            self.keys.load().len()
                        );
                        next_due = now + self.backoff(failures);
                    }
                }
                if let Some(done) = first_done.take() {
                    let _ = done.send(());
                }
                continue;
            }
            match self.woken.recv_timeout(next_due - now) {
                // Requests are already rate-limited by `request_refresh`.
                Ok(()) => next_due = now,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Retry delay after `failures` failed fetches in a row: the minimum interval doubling
    /// up to the normal refresh period.
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.timing
            .min_refresh
            .saturating_mul(factor)
            .min(self.timing.default_ttl)
    }

    /// One fetch; on success the keys are live and the time to the next refresh returned.
    fn fetch_once(&self) -> Result<Duration, String> {
        let limits = Limits {
            timeout: self.timing.io_timeout,
            max_body: MAX_RESPONSE_BYTES,
        };
        let response = self.target.get(limits)?;
        if response.status != 200 {
            return Err(format!("HTTP status {}", response.status));
        }
        let (keys, skipped) = keys_from_jwks(&response.body)?;
        for why in &skipped {
            log::debug!("jwks {}: skipped {why}", self.target.url());
        }
        if keys.is_empty() {
            log::warn!("jwks {}: no usable signing key", self.target.url());
        }
        let ttl = response
            .max_age
            .unwrap_or(self.timing.default_ttl)
            .clamp(self.timing.min_refresh, self.timing.max_ttl);
        log::info!(
            "jwks {}: {} key(s), next refresh in {}s",
            self.target.url(),
            keys.len(),
            ttl.as_secs()
        );
        self.keys.store(Arc::new(keys));
        Ok(ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_url_fails_the_start_before_any_thread() {
        for url in [
            "ftp://idp/jwks",
            "http://idp/jwks#k",
            "http://u:pw@idp/jwks",
        ] {
            assert!(JwksSource::unstarted(url).is_err(), "{url}");
        }
        assert!(JwksSource::unstarted("https://idp.example.com/jwks?x=1").is_ok());
    }
}
