//! The admin listener's connection table: who holds which of the [`MAX_CONNECTIONS`] slots, and
//! whom to close when a new connection needs one.
//!
//! The policy is the one nginx applies when it runs out of connections (it closes idle
//! keep-alive connections to make room, `ngx_drain_connections`), made fair per client the way
//! Envoy's per-downstream connection limits are:
//!
//! - A connection that is not serving an authenticated request — waiting for its first byte,
//!   reading a head, answering `/healthz`, idle between requests — holds its slot only until
//!   someone needs it: it is *evictable*. A connection serving a request that carries the
//!   admin token is *protected* until its answer is written.
//! - One client address (an IPv4 address, an IPv6 /64) holds at most
//!   [`MAX_CONNECTIONS_PER_CLIENT`] slots. Its next connection closes its own oldest evictable
//!   one, never someone else's.
//! - When all [`MAX_CONNECTIONS`] slots are taken, the new connection closes the oldest
//!   evictable connection of the client holding the most slots.
//!
//! So a new connection is refused only when every slot of the relevant pool serves an
//! authenticated request, which needs the admin token. Idle or slow connections from the
//! network can never keep `/healthz` or a revocation from being served: they are the first to
//! go. Eviction closes the socket (`shutdown`), which wakes the connection's blocked read at
//! once, so its thread ends within moments; at most [`MAX_DRAINING`] such threads may still
//! be ending when new connections arrive.

use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most admin connections held at once, across all clients.
pub const MAX_CONNECTIONS: usize = 32;

/// Most admin connections one client address (IPv4 address or IPv6 /64) holds at once.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 8;

/// Evicted connections whose threads may still be ending, on top of [`MAX_CONNECTIONS`]: the
/// bound on admin threads is their sum.
pub const MAX_DRAINING: usize = MAX_CONNECTIONS;

/// How long a new connection waits for evicted connections' threads to end when the table is
/// full of them, before it is refused.
const DRAIN_WAIT: Duration = Duration::from_millis(500);

const EVICTABLE: u8 = 0;
const PROTECTED: u8 = 1;
const EVICTED: u8 = 2;

/// One connection's slot, shared by the accept thread (which may evict it) and the
/// connection's thread (which protects it while serving an authenticated request). The state
/// changes by compare-and-swap, so a connection is never evicted after it was protected, nor
/// protected after it was evicted.
pub(crate) struct Slot {
    state: AtomicU8,
    /// A second handle on the connection's socket, to close it from the accept thread; taken
    /// away by [`Slot::finish`] so that it does not keep the socket open after the connection
    /// ends.
    socket: Mutex<Option<TcpStream>>,
}

impl Slot {
    /// A slot for a new connection, evictable until it serves an authenticated request.
    pub fn new(socket: TcpStream) -> Slot {
        Slot {
            state: AtomicU8::new(EVICTABLE),
            socket: Mutex::new(Some(socket)),
        }
    }

    /// Lets go of the socket once the connection's thread is done with it: until this
    /// handle is dropped too, the client would not see the close.
    pub fn finish(&self) {
        drop(self.lock_socket().take());
    }

    fn lock_socket(&self) -> std::sync::MutexGuard<'_, Option<TcpStream>> {
        // A poisoned lock only means a panic elsewhere; the socket handle is still sound.
        self.socket.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the connection as serving an authenticated request. `false` means it was evicted
    /// first: drop the request and end the connection.
    pub fn protect(&self) -> bool {
        match self
            .state
            .compare_exchange(EVICTABLE, PROTECTED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(current) => current == PROTECTED,
        }
    }

    /// Makes the connection evictable again once its authenticated answer is written.
    pub fn release(&self) {
        let _ =
            self.state
                .compare_exchange(PROTECTED, EVICTABLE, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether the connection was evicted.
    pub fn is_evicted(&self) -> bool {
        self.state.load(Ordering::Acquire) == EVICTED
    }

    /// Evicts the connection if it is evictable, closing its socket so the connection's
    /// blocked read or write returns at once. Returns whether it was evicted.
    fn evict(&self) -> bool {
        let evicted = self
            .state
            .compare_exchange(EVICTABLE, EVICTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if evicted {
            if let Some(socket) = self.lock_socket().as_ref() {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        evicted
    }

    fn is_evictable(&self) -> bool {
        self.state.load(Ordering::Acquire) == EVICTABLE
    }
}

/// The client a connection counts against: its IPv4 address, or the /64 of its IPv6 address
/// (one host usually holds a whole /64). IPv4-mapped IPv6 addresses count as IPv4.
pub(crate) fn client_of(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

struct Entry {
    client: IpAddr,
    slot: Arc<Slot>,
    thread: JoinHandle<()>,
}

/// Every admin connection whose thread has not ended, oldest first. Owned by the accept
/// thread.
#[derive(Default)]
pub(crate) struct Connections {
    entries: Vec<Entry>,
}

impl Connections {
    /// Makes room for a new connection from `client` (see the module docs), evicting at most
    /// one connection. Returns `false` when there is no room: every slot the client could take
    /// serves an authenticated request, or too many evicted connections are still ending.
    pub fn make_room(&mut self, client: IpAddr) -> bool {
        if !self.reap_within(DRAIN_WAIT) {
            return false;
        }
        let held = |c: IpAddr| self.live().filter(|e| e.client == c).count();
        if held(client) >= MAX_CONNECTIONS_PER_CLIENT {
            // Over its own share: the client makes room among its own connections.
            return self
                .live()
                .filter(|e| e.client == client)
                .any(|e| e.slot.evict());
        }
        if self.live().count() < MAX_CONNECTIONS {
            return true;
        }
        // Full: the oldest evictable connection of the heaviest client goes. `max_by_key`
        // keeps the last of equals, so iterate newest first to end on the oldest.
        let victim = self
            .live()
            .rev()
            .filter(|e| e.slot.is_evictable())
            .max_by_key(|e| held(e.client));
        victim.is_some_and(|e| e.slot.evict())
    }

    /// Forgets connections whose threads have ended, waiting up to `wait` for evicted ones to
    /// end while the table is full. An evicted connection's socket is already closed, so its
    /// thread ends as soon as it is scheduled; on a loaded host that can take a while, and
    /// refusing meanwhile would let a flood of idle connections deny `/healthz`. Returns
    /// whether there is room for one more thread.
    fn reap_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            self.entries.retain(|e| !e.thread.is_finished());
            if self.entries.len() < MAX_CONNECTIONS + MAX_DRAINING {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Records a connection admitted by [`Connections::make_room`].
    pub fn insert(&mut self, client: IpAddr, slot: Arc<Slot>, thread: JoinHandle<()>) {
        self.entries.push(Entry {
            client,
            slot,
            thread,
        });
    }

    /// Waits for every connection's thread to end.
    pub fn join_all(self) {
        for entry in self.entries {
            let _ = entry.thread.join();
        }
    }

    /// Connections not evicted, oldest first.
    fn live(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.entries.iter().filter(|e| !e.slot.is_evicted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
    use std::thread;
    use std::time::Duration;

    /// A table filled with real loopback connections; each entry's thread lives until its
    /// connection is closed (as a connection thread does), so `is_finished` stays honest.
    struct Fixture {
        listener: TcpListener,
        table: Connections,
        /// The client ends of the connections, in insertion order.
        clients: Vec<TcpStream>,
        slots: Vec<Arc<Slot>>,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                listener: TcpListener::bind("127.0.0.1:0").unwrap(),
                table: Connections::default(),
                clients: Vec::new(),
                slots: Vec::new(),
            }
        }

        /// Asks for room for `client`; on success inserts a connection for it.
        fn admit(&mut self, client: IpAddr) -> bool {
            self.admit_lingering(client, Duration::ZERO)
        }

        /// Like [`Fixture::admit`], but the connection's thread goes on for `linger` after
        /// its connection is closed (a thread not yet scheduled on a loaded host).
        fn admit_lingering(&mut self, client: IpAddr, linger: Duration) -> bool {
            if !self.table.make_room(client) {
                return false;
            }
            let outgoing = TcpStream::connect(self.listener.local_addr().unwrap()).unwrap();
            let (incoming, _) = self.listener.accept().unwrap();
            let slot = Arc::new(Slot::new(incoming.try_clone().unwrap()));
            let mut reader = incoming;
            let thread = thread::spawn(move || {
                let _ = reader.read(&mut [0u8; 1]);
                thread::sleep(linger);
            });
            self.table.insert(client, slot.clone(), thread);
            self.clients.push(outgoing);
            self.slots.push(slot);
            true
        }

        fn evicted(&self) -> Vec<usize> {
            (0..self.slots.len())
                .filter(|&i| self.slots[i].is_evicted())
                .collect()
        }
    }

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn a_client_over_its_share_closes_its_own_oldest() {
        let mut fx = Fixture::new();
        assert!(fx.admit(v4(2)));
        for _ in 0..MAX_CONNECTIONS_PER_CLIENT {
            assert!(fx.admit(v4(1)));
        }
        assert!(fx.evicted().is_empty());
        assert!(fx.admit(v4(1)));
        // Index 0 is the other client's older connection: untouched.
        assert_eq!(fx.evicted(), vec![1]);
    }

    #[test]
    fn a_full_table_closes_the_heaviest_clients_oldest_evictable() {
        let mut fx = Fixture::new();
        // Client 1 holds one slot (the oldest); clients 2.. fill the rest, client 2 most.
        assert!(fx.admit(v4(1)));
        while fx.slots.len() < MAX_CONNECTIONS {
            let client = 2 + (fx.slots.len() - 1) / MAX_CONNECTIONS_PER_CLIENT;
            assert!(fx.admit(v4(client as u8)));
        }
        // Protect client 2's oldest: the next oldest of client 2 must go instead.
        assert!(fx.slots[1].protect());
        assert!(fx.admit(v4(200)));
        assert_eq!(fx.evicted(), vec![2]);
    }

    #[test]
    fn protected_connections_are_never_evicted() {
        let mut fx = Fixture::new();
        for _ in 0..MAX_CONNECTIONS_PER_CLIENT {
            assert!(fx.admit(v4(1)));
        }
        for slot in &fx.slots {
            assert!(slot.protect());
        }
        assert!(
            !fx.admit(v4(1)),
            "no room while every slot is authenticated"
        );
        assert!(fx.evicted().is_empty());
        fx.slots[3].release();
        assert!(fx.admit(v4(1)));
        assert_eq!(fx.evicted(), vec![3]);
    }

    #[test]
    fn an_evicted_connection_cannot_be_protected() {
        let mut fx = Fixture::new();
        for _ in 0..=MAX_CONNECTIONS_PER_CLIENT {
            assert!(fx.admit(v4(1)));
        }
        assert!(!fx.slots[0].protect());
        // Its socket was shut: the client sees the close.
        let mut rest = Vec::new();
        fx.clients[0]
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(fx.clients[0].read_to_end(&mut rest).unwrap(), 0);
    }

    #[test]
    fn ipv6_clients_count_per_slash_64() {
        let a: Ipv6Addr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_of(a.into()), client_of(b.into()));
        assert_ne!(client_of(a.into()), client_of(other.into()));
        let mapped: Ipv6Addr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(
            client_of(mapped.into()),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))
        );
    }

    #[test]
    fn evicted_threads_still_ending_delay_a_new_connection_instead_of_refusing_it() {
        let mut fx = Fixture::new();
        let linger = Duration::from_millis(300);
        // One client keeps connecting: each connection past its share evicts its oldest, whose
        // thread lingers, until the table holds as many ending threads as it may.
        for _ in 0..MAX_CONNECTIONS + MAX_DRAINING {
            assert!(fx.admit_lingering(v4(1), linger));
        }
        assert_eq!(fx.table.entries.len(), MAX_CONNECTIONS + MAX_DRAINING);
        // The next one waits for an evicted thread to end rather than being refused.
        assert!(fx.admit(v4(1)), "refused while evicted threads were ending");
    }
}
