//! Worker threads: one per core, each with its own monoio runtime, SO_REUSEPORT listeners,
//! upstream pool and buffers. Nothing here is shared between workers except [`Shared`].
//!
//! The worker owns threads, listeners, the accept loop, the connection cap and the drain; it
//! builds the pipeline's per-thread [`ThreadState`] and hands it to each request. The
//! pipeline never imports this module back.

mod buffers;
mod conn;
pub mod ring;

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpListener;

use crate::accesslog::AccessLog;
use crate::metrics;
use crate::pipeline::{LocalNotify, ThreadState};
use crate::snapshot::Shared;

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

/// What the connection loop needs besides the pipeline's [`ThreadState`]: the connection
/// count behind the cap and the drain, and the signal that a slot freed. Owned by the worker
/// thread and shared by its tasks through `Rc`.
pub(crate) struct Worker {
    /// The per-thread state handed to every request.
    pub(crate) state: ThreadState,
    slot_freed: LocalNotify,
    open_connections: Cell<usize>,
    /// Client read buffers, lent to connections only while bytes arrive.
    read_buffers: buffers::BufferPool,
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
    let work = move || bind_and_serve(id, shared, listeners, access_log, on_bound);
    if let Err(e) = block_on(driver, work) {
        log::error!(
            "worker {id}: cannot build the {} runtime: {e}",
            driver.name()
        );
    }
}

/// Runs `work` to completion on a new monoio runtime with `driver` on this thread.
///
/// An io_uring runtime gets [`ring::ring_setup`]'s flags, or the kernel's default ring where
/// the kernel refuses them; hosts without io_uring at all were given the epoll driver when
/// the driver was picked.
pub fn block_on<F: Future>(driver: Driver, work: impl FnOnce() -> F) -> io::Result<F::Output> {
    match driver {
        Driver::Uring => {
            let (mut rt, setup) = ring::build_with_fallback(uring_runtime)?;
            match setup {
                ring::RingSetup::Tuned => log::debug!("io_uring runtime: {}", setup.describe()),
                ring::RingSetup::Default(_) => log::info!("io_uring runtime: {}", setup.describe()),
            }
            Ok(rt.block_on(work()))
        }
        Driver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(work())),
    }
}

/// A worker's io_uring runtime: 4096 entries, timers, and `urb` as its ring set-up
/// (`None`: monoio's default).
pub(crate) fn uring_runtime(
    urb: Option<io_uring::Builder>,
) -> io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
    let builder = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(4096)
        .enable_timer();
    match urb {
        Some(urb) => builder.uring_builder(urb).build(),
        None => builder.build(),
    }
}

async fn bind_and_serve(
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
    serve(id, shared, access_log, listeners, || on_bound(Ok(()))).await;
}

/// Serves already-bound `listeners` (each with whether it speaks TLS) as worker `id` until
/// `shared` begins shutdown, then drains this worker's connections and returns.
///
/// Builds the worker's [`ThreadState`] and hands it to every request. `on_serving` is called
/// once the worker counts as serving (readiness), before the first accept. Must run inside a
/// monoio runtime with timers (see [`block_on`]); a test can call it on a port-0 listener.
pub async fn serve(
    id: usize,
    shared: Arc<Shared>,
    access_log: AccessLog,
    listeners: Vec<(TcpListener, bool)>,
    on_serving: impl FnOnce(),
) {
    let worker = Rc::new(Worker {
        state: ThreadState::new(id, shared.clone(), access_log),
        slot_freed: LocalNotify::default(),
        open_connections: Cell::new(0),
        read_buffers: buffers::BufferPool::new(conn::READ_BUFFER, conn::POOLED_READ_BUFFERS),
    });
    shared.worker_serving();
    on_serving();

    let mut accept_loops = Vec::new();
    for (listener, tls) in listeners {
        accept_loops.push(monoio::spawn(accept_loop(worker.clone(), listener, tls)));
    }
    // The worker's housekeeping loop: notice shutdown, and close idle upstream connections that
    // outlived the pool's idle timeout (targets no longer used would otherwise keep them).
    let state = &worker.state;
    let mut last_eviction = Instant::now();
    while !state.shutting_down() {
        monoio::time::sleep(SHUTDOWN_POLL).await;
        // Picks up a reload even when no request comes: new pool settings and Lua limits
        // apply now, not with the next request.
        let _ = state.snapshot();
        if last_eviction.elapsed() >= POOL_EVICTION {
            state.pool.evict_expired();
            last_eviction = Instant::now();
        }
    }
    state.shutdown.notify_all();
    for handle in accept_loops {
        handle.await;
    }
    drain(&worker).await;
}

/// Waits for open connections to finish, up to `drain_timeout_ms`.
async fn drain(worker: &Worker) {
    let timeout = Duration::from_millis(worker.state.snapshot().config.server.drain_timeout_ms);
    let deadline = Instant::now() + timeout;
    while worker.open_connections.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    if worker.open_connections.get() > 0 {
        log::warn!(
            "worker {}: drain timeout, closing {} connections",
            worker.state.id,
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
                .state
                .shared
                .snapshot()
                .config
                .server
                .connections_per_worker;
            if worker.open_connections.get() < cap.max(1) || worker.state.shutting_down() {
                break;
            }
            monoio::select! {
                _ = worker.slot_freed.notified() => {},
                _ = worker.state.shutdown.notified() => {},
            }
        }
        if worker.state.shutting_down() {
            return;
        }
        let accepted = monoio::select! {
            r = listener.accept() => Some(r),
            _ = worker.state.shutdown.notified() => None,
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
                log::warn!("worker {}: accept failed: {e}", worker.state.id);
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
        metrics::global().connection_opened(worker.state.id);
        ConnectionSlot { worker }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let w = &self.worker;
        w.open_connections.set(w.open_connections.get() - 1);
        metrics::global().connection_closed(w.state.id);
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

#[cfg(test)]
mod tests;
