//! Worker threads: one per core, each with its own monoio runtime, SO_REUSEPORT listeners,
//! upstream pool and buffers. Nothing here is shared between workers except [`Shared`].

mod conn;
mod notify;

pub use notify::LocalNotify;

use crate::lua::{LuaLimits, LuaRuntime};
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;

use crate::accesslog::AccessLog;
use crate::metrics;
use crate::snapshot::{Shared, Snapshot};
use crate::upstream::{Pool, PoolKey, PoolSettings};

/// The I/O driver a worker runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// io_uring (Linux 5.6+).
    Uring,
    /// epoll, for kernels or sandboxes where io_uring is unavailable.
    Epoll,
}

impl Driver {
    /// The name used in logs, metrics and the ready line.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Uring => "uring",
            Driver::Epoll => "epoll",
        }
    }
}

/// One listening address and whether it speaks TLS.
#[derive(Clone, Copy, Debug)]
pub struct ListenSpec {
    pub addr: SocketAddr,
    pub tls: bool,
}

/// How often a worker checks the process-wide shutdown flag. Cheap, and bounds how long an
/// idle worker takes to notice SIGTERM.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);

/// How often idle upstream connections past their idle timeout are closed.
const POOL_EVICTION: Duration = Duration::from_secs(5);

/// Per-worker state, owned by the worker thread and shared by its tasks through `Rc`.
pub struct Worker {
    /// Index of this worker (0-based), for metrics.
    pub id: usize,
    /// Process-wide state: the current snapshot and the shutdown flag.
    pub shared: Arc<Shared>,
    /// This worker's handle on the access-log writer.
    pub access_log: AccessLog,
    /// Idle keep-alive connections to upstream targets.
    pub pool: Pool,
    /// Fired once when shutdown begins: stops accept loops and closes idle connections.
    pub shutdown: LocalNotify,
    /// This worker's Lua VM for hooks (created on this thread, never shared).
    pub lua: RefCell<LuaRuntime>,
    slot_freed: LocalNotify,
    /// This worker's handle on the current snapshot: cloning an `Rc` per request instead of
    /// the shared `Arc` keeps the snapshot's reference count off the other cores' caches.
    #[allow(clippy::redundant_allocation)] // the extra Rc is the point: a core-local count
    snapshot: RefCell<(u64, Rc<Arc<Snapshot>>)>,
    open_connections: Cell<usize>,
    request_seq: Cell<u64>,
    request_id_seed: u64,
}

impl Worker {
    /// The snapshot for a new request: the current one, refreshed after a reload. A new
    /// snapshot's per-worker settings are applied here, before anything runs on it.
    #[allow(clippy::redundant_allocation)]
    pub fn snapshot(&self) -> Rc<Arc<Snapshot>> {
        let generation = self.shared.generation();
        let mut cached = self.snapshot.borrow_mut();
        if cached.0 != generation {
            let current = Rc::new(self.shared.snapshot());
            let applied = self.apply(&current);
            // Not applied (the VM was busy): the next call tries again.
            *cached = (if applied { generation } else { cached.0 }, current);
        }
        cached.1.clone()
    }

    /// Applies the sections of `snapshot` that live in this worker's own state: `[lua]`
    /// limits to its VM, `keepalive` settings to its upstream pool. Returns false when the VM
    /// was borrowed (a call from inside a hook), so the caller retries later.
    fn apply(&self, snapshot: &Snapshot) -> bool {
        self.pool.configure(pool_settings(snapshot));
        match self.lua.try_borrow_mut() {
            Ok(mut lua) => {
                // A no-op unless `[lua]` changed; otherwise the next call gets a VM built
                // with the new budget.
                lua.set_limits(LuaLimits::from_config(&snapshot.config.lua));
                true
            }
            Err(_) => false,
        }
    }

    /// A fresh request id: unique per process run, cheap, 32 hex digits.
    pub fn next_request_id(&self) -> String {
        let seq = self.request_seq.get().wrapping_add(1);
        self.request_seq.set(seq);
        format!("{:016x}{:016x}", self.request_id_seed, seq)
    }

    /// Whether the gateway is draining.
    pub fn shutting_down(&self) -> bool {
        self.shared.is_shutting_down()
    }
}

/// Runs one worker thread until shutdown has drained its connections.
///
/// `on_bound` is called once with the result of binding every listener, before serving.
pub fn run(
    id: usize,
    shared: Arc<Shared>,
    listeners: Vec<ListenSpec>,
    driver: Driver,
    access_log: AccessLog,
    on_bound: impl FnOnce(io::Result<()>),
) {
    let work = move || serve(id, shared, listeners, access_log, on_bound);
    let built = match driver {
        Driver::Uring => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(4096)
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(work())),
        Driver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(work())),
    };
    if let Err(e) = built {
        log::error!(
            "worker {id}: cannot build the {} runtime: {e}",
            driver.name()
        );
    }
}

async fn serve(
    id: usize,
    shared: Arc<Shared>,
    specs: Vec<ListenSpec>,
    access_log: AccessLog,
    on_bound: impl FnOnce(io::Result<()>),
) {
    let mut listeners = Vec::with_capacity(specs.len());
    for spec in &specs {
        match bind_reuseport(spec.addr) {
            Ok(l) => listeners.push((l, spec.tls)),
            Err(e) => {
                on_bound(Err(io::Error::new(e.kind(), format!("{}: {e}", spec.addr))));
                return;
            }
        }
    }
    let worker = Rc::new(Worker {
        id,
        shared: shared.clone(),
        access_log,
        pool: Pool::default(),
        shutdown: LocalNotify::default(),
        lua: RefCell::new(LuaRuntime::new(LuaLimits::from_config(
            &shared.snapshot().config.lua,
        ))),
        slot_freed: LocalNotify::default(),
        snapshot: RefCell::new((shared.generation(), Rc::new(shared.snapshot()))),
        open_connections: Cell::new(0),
        request_seq: Cell::new(0),
        request_id_seed: random_seed() ^ (id as u64).rotate_left(56),
    });
    worker.pool.configure(pool_settings(&worker.snapshot()));
    shared.worker_serving();
    on_bound(Ok(()));

    let mut accept_loops = Vec::new();
    for (listener, tls) in listeners {
        accept_loops.push(monoio::spawn(accept_loop(worker.clone(), listener, tls)));
    }
    // The worker's housekeeping loop: notice shutdown, and close idle upstream connections that
    // outlived the pool's idle timeout (targets no longer used would otherwise keep them).
    let mut last_eviction = Instant::now();
    while !worker.shutting_down() {
        monoio::time::sleep(SHUTDOWN_POLL).await;
        // Picks up a reload even when no request comes: new pool settings and Lua limits
        // apply now, not with the next request.
        let _ = worker.snapshot();
        if last_eviction.elapsed() >= POOL_EVICTION {
            worker.pool.evict_expired();
            last_eviction = Instant::now();
        }
    }
    worker.shutdown.notify_all();
    for handle in accept_loops {
        handle.await;
    }
    drain(&worker).await;
}

/// Every upstream and provider target of `snapshot` with the pool settings of its
/// `[[upstream]]` or `[[provider]]`, upstreams first.
fn pool_settings(snapshot: &Snapshot) -> Vec<(PoolKey, PoolSettings)> {
    let providers = snapshot
        .catalog
        .providers()
        .iter()
        .filter_map(|p| p.upstream.as_deref());
    snapshot
        .upstreams
        .iter()
        .map(|u| &**u)
        .chain(providers)
        .flat_map(|u| u.pool_settings())
        .collect()
}

/// Waits for open connections to finish, up to `drain_timeout_ms`.
async fn drain(worker: &Worker) {
    let timeout = Duration::from_millis(worker.snapshot().config.server.drain_timeout_ms);
    let deadline = Instant::now() + timeout;
    while worker.open_connections.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    if worker.open_connections.get() > 0 {
        log::warn!(
            "worker {}: drain timeout, closing {} connections",
            worker.id,
            worker.open_connections.get()
        );
    }
}

async fn accept_loop(worker: Rc<Worker>, listener: TcpListener, tls: bool) {
    loop {
        // Past the cap, stop accepting: new connections wait in the kernel backlog instead of
        // slowing the ones being served.
        loop {
            let cap = worker
                .shared
                .snapshot()
                .config
                .server
                .connections_per_worker;
            if worker.open_connections.get() < cap.max(1) || worker.shutting_down() {
                break;
            }
            monoio::select! {
                _ = worker.slot_freed.notified() => {},
                _ = worker.shutdown.notified() => {},
            }
        }
        if worker.shutting_down() {
            return;
        }
        let accepted = monoio::select! {
            r = listener.accept() => Some(r),
            _ = worker.shutdown.notified() => None,
        };
        match accepted {
            None => return,
            Some(Ok((stream, peer))) => {
                let _ = stream.set_nodelay(true);
                let guard = ConnectionSlot::open(worker.clone());
                monoio::spawn(async move {
                    conn::serve_connection(guard.worker.clone(), stream, peer, tls).await;
                    drop(guard);
                });
            }
            Some(Err(e)) => {
                // EMFILE and friends: back off briefly instead of spinning.
                log::warn!("worker {}: accept failed: {e}", worker.id);
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Counts a connection as open for its lifetime (cap, drain, metrics).
struct ConnectionSlot {
    worker: Rc<Worker>,
}

impl ConnectionSlot {
    fn open(worker: Rc<Worker>) -> ConnectionSlot {
        worker
            .open_connections
            .set(worker.open_connections.get() + 1);
        metrics::global().connection_opened(worker.id);
        ConnectionSlot { worker }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let w = &self.worker;
        w.open_connections.set(w.open_connections.get() - 1);
        metrics::global().connection_closed(w.id);
        w.slot_freed.notify_all();
    }
}

/// Binds this worker's own listener on `addr` with SO_REUSEPORT, so the kernel spreads
/// connections across workers with no accept thread and no hand-off.
fn bind_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// 64 bits from the OS, so request ids differ across restarts.
fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    u64::from_le_bytes(bytes) ^ std::process::id() as u64
}
