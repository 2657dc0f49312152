//! Each worker's idle keep-alive connections to upstream targets.
//!
//! Per worker thread, never shared: plain `RefCell`, no locks. Keyed by target address and
//! TLS server name, not by upstream, so a reload that keeps a target keeps its connections.
//! How many connections each key keeps, and for how long, is the config's (`keepalive`,
//! `keepalive_timeout_ms` of the upstream or provider naming the target): the worker hands
//! every config load's settings to [`Pool::configure`].

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::stream::UpstreamStream;

/// Default cap of idle connections kept per [`PoolKey`].
pub const DEFAULT_MAX_IDLE_PER_KEY: usize = 128;
/// Default time an idle connection is kept before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many idle connections a worker keeps for one target, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Idle connections kept per target and worker; 0 = every connection is closed after
    /// its exchange (no reuse).
    pub max_idle: usize,
    /// How long an idle connection is kept before it is closed.
    pub idle_timeout: Duration,
}

impl Default for PoolSettings {
    /// [`DEFAULT_MAX_IDLE_PER_KEY`] and [`DEFAULT_IDLE_TIMEOUT`].
    fn default() -> PoolSettings {
        PoolSettings {
            max_idle: DEFAULT_MAX_IDLE_PER_KEY,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// What makes two connections interchangeable: the same address, and the same TLS server
/// name (`None` = cleartext). Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The target's resolved address.
    pub addr: SocketAddr,
    /// The TLS server name the connection was verified for; `None` for cleartext.
    pub tls_name: Option<Arc<str>>,
}

impl PoolKey {
    /// A key for `addr`, verified for `tls_name` when TLS.
    pub fn new(addr: SocketAddr, tls_name: Option<String>) -> PoolKey {
        PoolKey {
            addr,
            tls_name: tls_name.map(Arc::from),
        }
    }
}

/// A connection back in the pool for less than this is reused without the `poll(2)` that
/// checks it is still open: under load connections come back within milliseconds, and a
/// system call per request is a real share of a proxied request's cost. Upstreams close idle
/// keep-alive connections after seconds, not milliseconds; one that closes sooner meets the
/// same path as a close in flight (idempotent requests are resent on a fresh connection).
const TRUSTED_IDLE: Duration = Duration::from_millis(100);

struct IdleConn {
    stream: UpstreamStream,
    since: Instant,
}

/// One key's idle connections and the settings they are kept by.
struct KeyPool {
    /// Oldest first.
    conns: VecDeque<IdleConn>,
    settings: PoolSettings,
    /// Whether the current config names this key; an entry the config no longer names is
    /// forgotten once its last connection is gone (it keeps its last settings until then).
    configured: bool,
}

impl KeyPool {
    fn new(settings: PoolSettings, configured: bool) -> KeyPool {
        KeyPool {
            conns: VecDeque::new(),
            settings,
            configured,
        }
    }

    /// Closes the connections the settings no longer allow: expired ones, then the oldest
    /// past the cap. Returns how many.
    fn trim(&mut self, now: Instant) -> usize {
        let expired = drop_expired(&mut self.conns, now, self.settings.idle_timeout);
        let over = self.conns.len().saturating_sub(self.settings.max_idle);
        self.conns.drain(..over);
        expired + over
    }
}

/// One worker's idle upstream connections. Reuse is LIFO: the most recently used connection
/// is the least likely to have been closed by the upstream's own idle timeout, and the oldest
/// ones age out.
pub struct Pool {
    idle: RefCell<HashMap<PoolKey, KeyPool>>,
    /// The settings of keys no config load has named (a pool used without [`Pool::configure`]).
    default: PoolSettings,
}

impl Default for Pool {
    /// [`PoolSettings::default`] for every key.
    fn default() -> Pool {
        Pool::new(PoolSettings::default())
    }
}

impl Pool {
    /// An empty pool keeping connections by `default` until [`Pool::configure`] says
    /// otherwise for a key.
    pub fn new(default: PoolSettings) -> Pool {
        Pool {
            idle: RefCell::new(HashMap::new()),
            default,
        }
    }

    /// Applies a config load's settings, one per target the config names; connections the
    /// new settings do not allow (past a lowered cap, older than a shortened timeout) are
    /// closed now. A key named twice (two upstreams with the same target) keeps the first
    /// settings given. Keys no longer named keep their settings until their connections
    /// expire.
    pub fn configure(&self, settings: impl IntoIterator<Item = (PoolKey, PoolSettings)>) {
        self.configure_at(settings, Instant::now());
    }

    /// The most recently returned idle connection for `key` that is still usable, if any.
    /// Expired connections and ones the peer has closed are dropped on the way.
    pub fn checkout(&self, key: &PoolKey) -> Option<UpstreamStream> {
        self.checkout_at(key, Instant::now())
    }

    /// Returns a connection whose last exchange ended cleanly (response fully read, both sides
    /// keep-alive). When the key is at its cap, the oldest idle connection is closed.
    pub fn checkin(&self, key: PoolKey, stream: UpstreamStream) {
        self.checkin_at(key, stream, Instant::now());
    }

    /// Closes every expired idle connection and forgets empty keys; returns how many were
    /// closed. Call now and then (e.g. every few seconds from the worker), so idle
    /// connections to targets no longer used do not linger.
    pub fn evict_expired(&self) -> usize {
        self.evict_expired_at(Instant::now())
    }

    /// How many idle connections are held, over all keys.
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(|k| k.conns.len()).sum()
    }

    /// The settings `key`'s connections are kept by.
    pub fn settings(&self, key: &PoolKey) -> PoolSettings {
        self.idle
            .borrow()
            .get(key)
            .map_or(self.default, |k| k.settings)
    }

    fn configure_at(
        &self,
        settings: impl IntoIterator<Item = (PoolKey, PoolSettings)>,
        now: Instant,
    ) {
        let mut idle = self.idle.borrow_mut();
        for entry in idle.values_mut() {
            entry.configured = false;
        }
        for (key, wanted) in settings {
            let entry = idle
                .entry(key)
                .or_insert_with(|| KeyPool::new(wanted, false));
            if entry.configured {
                continue;
            }
            entry.configured = true;
            entry.settings = wanted;
            entry.trim(now);
        }
        idle.retain(|_, k| k.configured || !k.conns.is_empty());
    }

    fn checkout_at(&self, key: &PoolKey, now: Instant) -> Option<UpstreamStream> {
        let mut idle = self.idle.borrow_mut();
        let entry = idle.get_mut(key)?;
        let queue = &mut entry.conns;
        drop_expired(queue, now, entry.settings.idle_timeout);
        while let Some(conn) = queue.pop_back() {
            let fresh = now.saturating_duration_since(conn.since) < TRUSTED_IDLE;
            if fresh || conn.stream.is_reusable() {
                return Some(conn.stream);
            }
        }
        None
    }

    fn checkin_at(&self, key: PoolKey, stream: UpstreamStream, now: Instant) {
        let mut idle = self.idle.borrow_mut();
        let default = self.default;
        let entry = idle
            .entry(key)
            .or_insert_with(|| KeyPool::new(default, false));
        let max_idle = entry.settings.max_idle;
        if max_idle == 0 {
            // Dropping the stream closes it: `keepalive = 0` reuses nothing.
            return;
        }
        let queue = &mut entry.conns;
        if queue.len() >= max_idle {
            queue.pop_front();
        }
        queue.push_back(IdleConn { stream, since: now });
    }

    fn evict_expired_at(&self, now: Instant) -> usize {
        let mut idle = self.idle.borrow_mut();
        let mut closed = 0;
        idle.retain(|_, k| {
            closed += drop_expired(&mut k.conns, now, k.settings.idle_timeout);
            k.configured || !k.conns.is_empty()
        });
        closed
    }
}

/// Drops the expired connections at the old end of `queue`; returns how many.
fn drop_expired(queue: &mut VecDeque<IdleConn>, now: Instant, idle_timeout: Duration) -> usize {
    let mut dropped = 0;
    while queue
        .front()
        .is_some_and(|c| now.saturating_duration_since(c.since) >= idle_timeout)
    {
        queue.pop_front();
        dropped += 1;
    }
    dropped
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use monoio::net::TcpStream;

    use super::*;
    use crate::upstream::test_support::{on_each_driver, serve_one, wait_readable};

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn key(addr: SocketAddr) -> PoolKey {
        PoolKey::new(addr, None)
    }

    fn settings(max_idle: usize, idle_timeout: Duration) -> PoolSettings {
        PoolSettings {
            max_idle,
            idle_timeout,
        }
    }

    /// A pool keeping `max_idle` connections per key for [`TIMEOUT`].
    fn capped(max_idle: usize) -> Pool {
        Pool::new(settings(max_idle, TIMEOUT))
    }

    /// A connection to `listener`: the kernel completes it without an accept.
    async fn conn_to(listener: &TcpListener) -> UpstreamStream {
        let addr = listener.local_addr().unwrap();
        UpstreamStream::Plain(TcpStream::connect_addr(addr).await.expect("connect"))
    }

    fn port_of(stream: &UpstreamStream) -> u16 {
        stream.local_addr().unwrap().port()
    }

    #[test]
    fn checkout_of_an_unknown_key_is_none() {
        let pool = Pool::default();
        assert!(pool
            .checkout(&key("127.0.0.1:1".parse().unwrap()))
            .is_none());
    }

    #[test]
    fn checked_in_connection_is_checked_out_again() {
        on_each_driver(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let k = key(listener.local_addr().unwrap());
            let pool = Pool::default();
            let conn = conn_to(&listener).await;
            let port = port_of(&conn);
            pool.checkin(k.clone(), conn);
            assert_eq!(pool.idle_count(), 1);
            let again = pool.checkout(&k).expect("pooled connection");
            assert_eq!(port_of(&again), port);
            assert_eq!(pool.idle_count(), 0);
        });
    }

    #[test]
    fn checkout_reuses_the_most_recent_connection_first() {
        on_each_driver(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let k = key(listener.local_addr().unwrap());
            let pool = Pool::default();
            let (first, second) = (conn_to(&listener).await, conn_to(&listener).await);
            let (first_port, second_port) = (port_of(&first), port_of(&second));
            pool.checkin(k.clone(), first);
            pool.checkin(k.clone(), second);
            assert_eq!(port_of(&pool.checkout(&k).unwrap()), second_port);
            assert_eq!(port_of(&pool.checkout(&k).unwrap()), first_port);
        });
    }

    #[test]
    fn expired_connection_is_not_reused() {
        on_each_driver(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let k = key(listener.local_addr().unwrap());
            let pool = capped(8);
            let t0 = Instant::now();
            pool.checkin_at(k.clone(), conn_to(&listener).await, t0);
            assert!(pool.checkout_at(&k, t0 + TIMEOUT).is_none());
            assert_eq!(pool.idle_count(), 0);
        });
    }

    #[test]
    fn connection_just_under_the_idle_timeout_is_reused() {
        on_each_driver(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let k = key(listener.local_addr().unwrap());
            let pool = capped(8);
            let t0 = Instant::now();
            pool.checkin_at(k.clone(), conn_to(&listener).await, t0);
            let almost = t0 + TIMEOUT - Duration::from_millis(1);
            assert!(pool.checkout_at(&k, almost).is_some());
        });
    }

    #[test]
    fn cap_closes_the_oldest_idle_connection() {
        on_each_driver(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let k = key(listener.local_addr().unwrap());
            let pool = capped(2);
            let mut ports = Vec::new();
            for _ in 0..3 {
                let conn = conn_to(&listener).await;
                ports.push(port_of(&conn));
                pool.checkin(k.clone(), conn);
            }
            assert_eq!(pool.idle_count(), 2);
            assert_eq!(port_of(&pool.checkout(&k).unwrap()), ports[2]);
            assert_eq!(port_of(&pool.checkout(&k).unwrap()), ports[1]);
            assert!(pool.checkout(&k).is_none());
        });
    }

    #[test]
    fn zero_cap_keeps_nothing() {
        on_each_driver(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let k = key(listener.local_addr().unwrap());
            let pool = capped(0);
            pool.checkin(k.clone(), conn_to(&listener).await);
            assert_eq!(pool.idle_count(), 0);
            assert!(pool.checkout(&k).is_none());
        });
    }

    #[test]
    fn keys_with_different_tls_names_do_not_share_connections() {
        on_each_driver(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let pool = Pool::default();
            pool.checkin(
                PoolKey::new(addr, Some("a.example".into())),
                conn_to(&listener).await,
            );
            assert!(pool
                .checkout(&PoolKey::new(addr, Some("b.example".into())))
                .is_none());
            assert!(pool.checkout(&PoolKey::new(addr, None)).is_none());
            assert!(pool
                .checkout(&PoolKey::new(addr, Some("a.example".into())))
                .is_some());
        });
    }

    /// A connection whose upstream has closed it (the close already seen by the kernel).
    async fn closed_by_the_upstream() -> (PoolKey, UpstreamStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let k = key(listener.local_addr().unwrap());
        let conn = conn_to(&listener).await;
        let fd = conn.raw_fd();
        serve_one(listener, b"", true).join().unwrap();
        wait_readable(fd);
        (k, conn)
    }

    #[test]
    fn connection_closed_by_the_upstream_is_not_reused() {
        on_each_driver(|| async {
            let (k, conn) = closed_by_the_upstream().await;
            let pool = Pool::default();
            pool.checkin(k.clone(), conn);
            assert!(pool
                .checkout_at(&k, Instant::now() + TRUSTED_IDLE)
                .is_none());
            assert_eq!(pool.idle_count(), 0);
        });
    }

    #[test]
    fn plain_connection_with_unsolicited_bytes_is_not_reused() {
        on_each_driver(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let k = key(listener.local_addr().unwrap());
            let pool = Pool::default();
            let conn = conn_to(&listener).await;
            let fd = conn.raw_fd();
            let server = serve_one(listener, b"HTTP/1.1 408 Request Timeout\r\n\r\n", false);
            let _held_open = server.join().unwrap();
            wait_readable(fd);
            pool.checkin(k.clone(), conn);
            assert!(pool
                .checkout_at(&k, Instant::now() + TRUSTED_IDLE)
                .is_none());
        });
    }

    #[test]
    fn connection_back_for_a_moment_is_reused_without_the_check() {
        on_each_driver(|| async {
            let (k, conn) = closed_by_the_upstream().await;
            let pool = Pool::default();
            let t0 = Instant::now();
            pool.checkin_at(k.clone(), conn, t0);
            // Closed, but trusted: the request on it meets the close and is resent if it can be.
            assert!(pool.checkout_at(&k, t0 + TRUSTED_IDLE / 2).is_some());
        });
    }

    #[test]
    fn evict_expired_closes_old_connections_and_keeps_fresh_ones() {
        on_each_driver(|| async {
            let old_listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let fresh_listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let pool = capped(8);
            let t0 = Instant::now();
            let old_key = key(old_listener.local_addr().unwrap());
            let fresh_key = key(fresh_listener.local_addr().unwrap());
            pool.checkin_at(old_key.clone(), conn_to(&old_listener).await, t0);
            let later = t0 + Duration::from_secs(20);
            pool.checkin_at(fresh_key.clone(), conn_to(&fresh_listener).await, later);
            assert_eq!(pool.evict_expired_at(t0 + TIMEOUT), 1);
            assert_eq!(pool.idle_count(), 1);
            assert!(!pool.idle.borrow().contains_key(&old_key));
            assert!(pool.idle.borrow().contains_key(&fresh_key));
        });
    }

    #[test]
    fn configure_lowering_the_cap_closes_the_oldest_connections_now() {
        on_each_driver(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let k = key(listener.local_addr().unwrap());
            let pool = capped(8);
            let mut ports = Vec::new();
            for _ in 0..3 {
                let conn = conn_to(&listener).await;
                ports.push(port_of(&conn));
                pool.checkin(k.clone(), conn);
            }
            pool.configure([(k.clone(), settings(1, TIMEOUT))]);
            assert_eq!(pool.idle_count(), 1);
            assert_eq!(port_of(&pool.checkout(&k).unwrap()), ports[2]);
            assert_eq!(pool.settings(&k), settings(1, TIMEOUT));
        });
    }

    #[test]
    fn configure_to_zero_closes_idle_connections_and_keeps_no_new_ones() {
        on_each_driver(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let k = key(listener.local_addr().unwrap());
            let pool = capped(8);
            pool.checkin(k.clone(), conn_to(&listener).await);
            pool.configure([(k.clone(), settings(0, TIMEOUT))]);
            assert_eq!(pool.idle_count(), 0);
            pool.checkin(k.clone(), conn_to(&listener).await);
            assert_eq!(pool.idle_count(), 0);
            assert!(pool.checkout(&k).is_none());
        });
    }

    #[test]
    fn configure_shortening_the_idle_timeout_expires_older_connections() {
        on_each_driver(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let k = key(listener.local_addr().unwrap());
            let pool = capped(8);
            let t0 = Instant::now();
            pool.checkin_at(k.clone(), conn_to(&listener).await, t0);
            let short = Duration::from_secs(1);
            pool.configure_at([(k.clone(), settings(8, short))], t0);
            assert!(pool.checkout_at(&k, t0 + short).is_none());
        });
    }

    #[test]
    fn configure_raising_the_cap_applies_to_later_checkins() {
        on_each_driver(|| async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let k = key(listener.local_addr().unwrap());
            let pool = capped(0);
            pool.configure([(k.clone(), settings(2, TIMEOUT))]);
            for _ in 0..3 {
                pool.checkin(k.clone(), conn_to(&listener).await);
            }
            assert_eq!(pool.idle_count(), 2);
        });
    }

    #[test]
    fn a_key_named_twice_keeps_the_first_settings() {
        let k = key("127.0.0.1:9000".parse().unwrap());
        let pool = Pool::default();
        pool.configure([
            (k.clone(), settings(3, TIMEOUT)),
            (k.clone(), settings(9, TIMEOUT)),
        ]);
        assert_eq!(pool.settings(&k), settings(3, TIMEOUT));
    }

    #[test]
    fn a_key_no_longer_configured_is_forgotten_once_empty() {
        let k = key("127.0.0.1:9000".parse().unwrap());
        let pool = capped(8);
        pool.configure([(k.clone(), settings(3, TIMEOUT))]);
        assert_eq!(pool.settings(&k), settings(3, TIMEOUT));
        pool.configure([]);
        assert_eq!(
            pool.settings(&k),
            settings(8, TIMEOUT),
            "back to the default"
        );
    }
}
