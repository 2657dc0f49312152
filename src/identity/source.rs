//! A credential the gateway obtains itself, kept fresh by a background thread and read
//! lock-free on the hot path (the same shape as the JWKS source, [`crate::auth::jwt`]).
//!
//! - The hot path reads the current credential with one atomic load ([`CredentialSource::current`]);
//!   it never fetches. An expired credential reads as none: the request then gets 502
//!   `upstream_credential_unavailable` rather than being sent with a credential the upstream
//!   will refuse.
//! - One thread per source fetches it ([`Fetch`]): at start, then at 80% of each credential's
//!   lifetime, so a fresh one is in place well before the old one expires. Sources are shared
//!   by settings ([`Registry`]), so every worker and every upstream naming the same settings
//!   use one thread and one token: a single flight per process.
//! - The hot path may ask for a fetch now ([`CredentialSource::request_refresh`]) after the
//!   upstream refused the credential (401). Asking is rate-limited with one atomic: at most
//!   one request per [`SourceTiming::min_forced_refresh`], so a misbehaving upstream cannot
//!   turn the gateway into a load generator against the token endpoint.
//! - A failed fetch keeps the current credential while it is still valid and retries with
//!   backoff; each failure is one log line naming the source and why, never a secret.
//!
//! What a source yields is generic: a bearer token for OAuth2-style sources, AWS
//! credentials for SigV4 signing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use parking_lot::Mutex;
use zeroize::Zeroizing;

use crate::metrics::CredentialStats;

/// What one successful fetch yields.
#[derive(Debug)]
pub struct Fetched<T> {
    /// The credential.
    pub credential: T,
    /// How long it is valid from the moment the fetch started.
    pub lifetime: Duration,
}

/// Why a fetch failed, in words fit for the log: no token, no secret, and no body of the
/// token endpoint beyond its OAuth2 `error` code.
pub type FetchError = String;

/// One way of obtaining a credential: a blocking fetch, run only on the source's own thread.
pub trait Fetch: Send + 'static {
    /// What is obtained.
    type Credential: Send + Sync + 'static;

    /// Obtains a fresh credential.
    fn fetch(&mut self) -> Result<Fetched<Self::Credential>, FetchError>;

    /// Where it is obtained from, for log lines (a URL without its query).
    fn describe(&self) -> String;
}

/// An OAuth2 access token (RFC 6749 §5.1), sent as `Authorization: Bearer` (RFC 6750 §2.1).
/// Its `Debug` never shows it, and its memory is wiped when dropped.
pub struct BearerToken(Zeroizing<String>);

impl BearerToken {
    /// Wraps a token already checked to be a valid header value.
    pub(crate) fn new(token: String) -> BearerToken {
        BearerToken(Zeroizing::new(token))
    }

    /// The token itself, to put in a request header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(***)")
    }
}

/// A credential in force, with when it stops being usable.
#[derive(Debug)]
pub struct Current<T> {
    /// The credential.
    pub credential: T,
    /// When it expires (monotonic).
    pub expires_at: Instant,
    /// Counts fetched credentials (1 for the first): a caller that saw one refused can tell a
    /// newer one from the one it used.
    pub generation: u64,
}

/// Timing of a source. [`SourceTiming::default`] is what the gateway uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceTiming {
    /// Share of a credential's lifetime after which the next fetch starts, in percent.
    pub refresh_percent: u32,
    /// Least time between two scheduled fetches, whatever lifetime the endpoint announces
    /// (a lifetime of 0 must not become a fetch loop).
    pub min_period: Duration,
    /// Least time between two refreshes asked for by the hot path.
    pub min_forced_refresh: Duration,
    /// First retry delay after a failed fetch; it doubles up to `max_backoff`.
    pub first_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Bound of one fetch, connect to last byte.
    pub fetch_timeout: Duration,
    /// How long starting a source waits for its first fetch, so the first requests find a
    /// credential. A slower or failed fetch does not fail the start.
    pub startup_wait: Duration,
}

impl Default for SourceTiming {
    fn default() -> Self {
        SourceTiming {
            refresh_percent: 80,
            min_period: Duration::from_secs(1),
            min_forced_refresh: Duration::from_secs(10),
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            fetch_timeout: Duration::from_secs(10),
            startup_wait: Duration::from_secs(5),
        }
    }
}

/// The hot-path side of a source: the current credential and a way to ask for a refresh.
/// Dropping the last handle stops the fetch thread (at once: it is woken by the drop).
pub struct CredentialSource<T> {
    current: Arc<ArcSwapOption<Current<T>>>,
    wake: Sender<()>,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last refresh request, plus one (0 = never).
    last_request_ms: AtomicU64,
    min_forced_refresh_ms: u64,
}

impl<T> std::fmt::Debug for CredentialSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialSource")
            .field(
                "generation",
                &self.current.load().as_ref().map(|c| c.generation),
            )
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> CredentialSource<T> {
    /// Starts the fetch thread for `fetcher`, counting into `stats`, and waits up to
    /// `timing.startup_wait` for the first fetch. `name` names the source in log lines.
    pub fn start<F: Fetch<Credential = T>>(
        name: &str,
        fetcher: F,
        timing: SourceTiming,
        stats: Arc<CredentialStats>,
    ) -> Result<CredentialSource<T>, String> {
        let current = Arc::new(ArcSwapOption::empty());
        let (wake, woken) = crossbeam_channel::bounded(1);
        let (first_done, first_seen) = crossbeam_channel::bounded(1);
        let refresher = Refresher {
            name: name.to_string(),
            fetcher,
            timing,
            current: Arc::clone(&current),
            woken,
            stats,
            generation: 0,
        };
        std::thread::Builder::new()
            .name("cf-credential".to_string())
            .spawn(move || refresher.run(first_done))
            .map_err(|e| format!("cannot start the credential thread: {e}"))?;
        let _ = first_seen.recv_timeout(timing.startup_wait);
        Ok(CredentialSource {
            current,
            wake,
            epoch: Instant::now(),
            last_request_ms: AtomicU64::new(0),
            // Below the sentinel of sources without a thread, whatever the timing says.
            min_forced_refresh_ms: millis(timing.min_forced_refresh).min(NEVER_REFRESHED - 1),
        })
    }

    /// A source without a fetch thread: it never has a credential. For `credentialflow
    /// check`, which must refuse what `serve` refuses without contacting anything.
    pub fn unstarted() -> CredentialSource<T> {
        let (wake, _) = crossbeam_channel::bounded(1);
        CredentialSource {
            current: Arc::new(ArcSwapOption::empty()),
            wake,
            epoch: Instant::now(),
            last_request_ms: AtomicU64::new(0),
            min_forced_refresh_ms: NEVER_REFRESHED,
        }
    }

    /// A source holding `credential` for good, without a thread: credentials written in the
    /// configuration (static AWS keys), behind the same interface as fetched ones so that the
    /// code reading them does not care which it has. It never expires and never refreshes.
    pub fn fixed(credential: T) -> CredentialSource<T> {
        let source = CredentialSource::unstarted();
        // A century: `Instant` has no "never", and adding more could overflow on some clocks.
        let far = Duration::from_secs(100 * 365 * 24 * 3600);
        let now = Instant::now();
        source.current.store(Some(Arc::new(Current {
            credential,
            expires_at: now
                .checked_add(far)
                .unwrap_or(now + Duration::from_secs(86_400)),
            generation: 1,
        })));
        source
    }

    /// Whether a fetch thread stands behind the source, so that [`CredentialSource::request_refresh`]
    /// can bring a newer credential: false for [`CredentialSource::fixed`] and
    /// [`CredentialSource::unstarted`], whose callers should not wait for one.
    pub fn refreshes(&self) -> bool {
        self.min_forced_refresh_ms != NEVER_REFRESHED
    }

    /// The credential in force, or `None` when there is none or it has expired. One atomic
    /// load and a clock read.
    pub fn current(&self) -> Option<Arc<Current<T>>> {
        let current = self.current.load_full()?;
        (Instant::now() < current.expires_at).then_some(current)
    }

    /// Asks the thread to fetch now; ignored when the last request is younger than the
    /// minimum interval. Never blocks.
    pub fn request_refresh(&self) {
        let now = millis(self.epoch.elapsed()).saturating_add(1);
        let last = self.last_request_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < self.min_forced_refresh_ms {
            return;
        }
        // One winner per interval even when several workers are refused at the same moment.
        if self
            .last_request_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let _ = self.wake.try_send(());
        }
    }
}

/// The forced-refresh interval of a source without a thread: no request is ever let through.
const NEVER_REFRESHED: u64 = u64::MAX;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The thread side: fetches and swaps in credentials.
struct Refresher<F: Fetch> {
    name: String,
    fetcher: F,
    timing: SourceTiming,
    current: Arc<ArcSwapOption<Current<F::Credential>>>,
    woken: Receiver<()>,
    stats: Arc<CredentialStats>,
    generation: u64,
}

impl<F: Fetch> Refresher<F> {
    fn run(mut self, first_done: Sender<()>) {
        let mut first_done = Some(first_done);
        let mut next_due = Instant::now();
        let mut failures = 0u32;
        loop {
            let now = Instant::now();
            if now >= next_due {
                if let Err(TryRecvError::Disconnected) = self.woken.try_recv() {
                    return;
                }
                next_due = match self.fetch_once(now) {
                    Ok(period) => {
                        failures = 0;
                        now + period
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        self.stats.record_failure();
                        let delay = self.backoff(failures);
                        log::warn!(
                            "credential {} ({}): fetch failed: {e}; {}, retrying in {}s",
                            self.name,
                            self.fetcher.describe(),
                            self.standing(now),
                            delay.as_secs_f64()
                        );
                        now + delay
                    }
                };
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

    /// What the failure leaves in force, for its log line.
    fn standing(&self, now: Instant) -> String {
        match self.current.load().as_ref() {
            Some(c) if c.expires_at > now => format!(
                "keeping the current credential, valid for {}s more",
                (c.expires_at - now).as_secs()
            ),
            _ => "no valid credential: requests needing it get 502".to_string(),
        }
    }

    /// Retry delay after `failures` failed fetches in a row: doubling from the first delay
    /// up to the longest.
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.timing
            .first_backoff
            .saturating_mul(factor)
            .min(self.timing.max_backoff)
    }

    /// One fetch; on success the credential is live and the time to the next fetch returned.
    fn fetch_once(&mut self, started: Instant) -> Result<Duration, FetchError> {
        let fetched = self.fetcher.fetch()?;
        self.generation += 1;
        // The lifetime counts from when the request left, so the expiry is never late.
        let expires_at = started + fetched.lifetime;
        let period =
            (fetched.lifetime * self.timing.refresh_percent / 100).max(self.timing.min_period);
        self.current.store(Some(Arc::new(Current {
            credential: fetched.credential,
            expires_at,
            generation: self.generation,
        })));
        self.stats.record_success(fetched.lifetime);
        log::info!(
            "credential {} ({}): new credential valid for {}s, next refresh in {:.1}s",
            self.name,
            self.fetcher.describe(),
            fetched.lifetime.as_secs(),
            period.as_secs_f64()
        );
        Ok(period)
    }
}

/// Sources by settings: the same settings always give the same running source while any
/// snapshot holds it, so workers, upstreams naming the same settings and a reload that kept
/// them share one thread and one credential. Locked only while building a snapshot.
pub struct Registry<T> {
    entries: Mutex<HashMap<String, Weak<CredentialSource<T>>>>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Send + Sync + 'static> Registry<T> {
    /// The running source for `key` (its settings, secrets by reference), or the one `start`
    /// makes when none runs.
    pub fn get_or_start(
        &self,
        key: String,
        start: impl FnOnce() -> Result<CredentialSource<T>, String>,
    ) -> Result<Arc<CredentialSource<T>>, String> {
        let mut entries = self.entries.lock();
        entries.retain(|_, source| source.strong_count() > 0);
        if let Some(source) = entries.get(&key).and_then(Weak::upgrade) {
            return Ok(source);
        }
        let source = Arc::new(start()?);
        entries.insert(key, Arc::downgrade(&source));
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Yields numbered tokens of a fixed lifetime, or fails while `failing` is set.
    struct Counting {
        fetches: Arc<AtomicUsize>,
        failing: Arc<std::sync::atomic::AtomicBool>,
        lifetime: Duration,
    }

    impl Fetch for Counting {
        type Credential = BearerToken;
        fn fetch(&mut self) -> Result<Fetched<BearerToken>, FetchError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err("token endpoint down".to_string());
            }
            let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(Fetched {
                credential: BearerToken::new(format!("token-{n}")),
                lifetime: self.lifetime,
            })
        }
        fn describe(&self) -> String {
            "test".to_string()
        }
    }

    fn quick() -> SourceTiming {
        SourceTiming {
            min_period: Duration::from_millis(10),
            min_forced_refresh: Duration::from_millis(200),
            first_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(40),
            ..SourceTiming::default()
        }
    }

    fn counting(
        lifetime: Duration,
    ) -> (
        Counting,
        Arc<AtomicUsize>,
        Arc<std::sync::atomic::AtomicBool>,
    ) {
        let fetches = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let fetcher = Counting {
            fetches: Arc::clone(&fetches),
            failing: Arc::clone(&failing),
            lifetime,
        };
        (fetcher, fetches, failing)
    }

    fn stats() -> Arc<CredentialStats> {
        Arc::new(CredentialStats::default())
    }

    #[test]
    fn the_first_credential_is_in_place_when_start_returns() {
        let (fetcher, fetches, _) = counting(Duration::from_secs(60));
        let source = CredentialSource::start("t", fetcher, quick(), stats()).unwrap();
        let current = source.current().expect("a credential");
        assert_eq!(current.credential.expose(), "token-1");
        assert_eq!(current.generation, 1);
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert!(source.refreshes());
    }

    #[test]
    fn refresh_happens_at_80_percent_of_the_lifetime() {
        let (fetcher, fetches, _) = counting(Duration::from_millis(500));
        let source = CredentialSource::start("t", fetcher, quick(), stats()).unwrap();
        // Fetches at 0, 400, 800 ms: three by 1000 ms, and the token never lapsed.
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(50));
            assert!(source.current().is_some(), "a gap without a valid token");
        }
        let n = fetches.load(Ordering::SeqCst);
        assert!((3..=4).contains(&n), "{n} fetches in 1 s of 500 ms tokens");
    }

    #[test]
    fn a_forced_refresh_is_rate_limited() {
        let (fetcher, fetches, _) = counting(Duration::from_secs(60));
        let source = CredentialSource::start("t", fetcher, quick(), stats()).unwrap();
        for _ in 0..50 {
            source.request_refresh();
        }
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(fetches.load(Ordering::SeqCst), 2, "one forced fetch");
        assert_eq!(source.current().unwrap().generation, 2);
        std::thread::sleep(Duration::from_millis(200));
        source.request_refresh();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            3,
            "allowed again after the interval"
        );
    }

    #[test]
    fn a_failing_endpoint_keeps_the_valid_token_until_it_expires() {
        let (fetcher, _, failing) = counting(Duration::from_millis(400));
        let counters = stats();
        let source = CredentialSource::start("t", fetcher, quick(), Arc::clone(&counters)).unwrap();
        failing.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(340));
        assert_eq!(
            source.current().expect("still valid").credential.expose(),
            "token-1"
        );
        std::thread::sleep(Duration::from_millis(150));
        assert!(source.current().is_none(), "expired: no credential");
        assert!(counters.failures() >= 1);
        failing.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(
            source.current().expect("recovered").credential.expose(),
            "token-2"
        );
    }

    #[test]
    fn the_registry_shares_a_running_source_and_forgets_a_dropped_one() {
        let registry = Registry::<BearerToken>::default();
        let (fetcher, fetches, _) = counting(Duration::from_secs(60));
        let a = registry
            .get_or_start("k".into(), || {
                CredentialSource::start("a", fetcher, quick(), stats())
            })
            .unwrap();
        let b = registry
            .get_or_start("k".into(), || panic!("must not start a second source"))
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        drop((a, b));
        let (fetcher, _, _) = counting(Duration::from_secs(60));
        let c = registry
            .get_or_start("k".into(), || {
                CredentialSource::start("c", fetcher, quick(), stats())
            })
            .unwrap();
        assert_eq!(c.current().unwrap().generation, 1);
    }

    #[test]
    fn a_fixed_source_always_has_its_one_credential() {
        let source = CredentialSource::fixed(BearerToken::new("static".into()));
        for _ in 0..3 {
            source.request_refresh();
        }
        let current = source.current().expect("a fixed credential");
        assert_eq!(current.credential.expose(), "static");
        assert_eq!(current.generation, 1, "never refreshed");
        assert!(!source.refreshes());
        assert!(current.expires_at > Instant::now() + Duration::from_secs(365 * 24 * 3600));
    }

    #[test]
    fn an_unstarted_source_has_no_credential() {
        let source = CredentialSource::<BearerToken>::unstarted();
        source.request_refresh();
        assert!(source.current().is_none());
        assert!(!source.refreshes());
    }
}
