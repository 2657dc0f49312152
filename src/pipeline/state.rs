//! The per-thread state the phases read: the snapshot handle, the access log, the upstream
//! pool, the Lua VM, request ids and the shutdown signal.
//!
//! The worker builds one [`ThreadState`] per thread and hands it to every request; the
//! pipeline never reaches back into the worker for it. Nothing here is shared between threads
//! except the [`Shared`] it points to.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use super::LocalNotify;
use crate::accesslog::AccessLog;
use crate::lua::{LuaLimits, LuaRuntime};
use crate::snapshot::{Shared, Snapshot};
use crate::upstream::{Pool, PoolKey, PoolSettings};

/// One worker thread's state, owned by that thread and shared by its tasks through `Rc`.
pub struct ThreadState {
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
    /// This worker's handle on the current snapshot: cloning an `Rc` per request instead of
    /// the shared `Arc` keeps the snapshot's reference count off the other cores' caches.
    #[allow(clippy::redundant_allocation)] // the extra Rc is the point: a core-local count
    snapshot: RefCell<(u64, Rc<Arc<Snapshot>>)>,
    request_seq: Cell<u64>,
    request_id_seed: u64,
}

impl ThreadState {
    /// State for worker `id`, on the current snapshot of `shared`, with its pool configured
    /// for that snapshot. Must be called on the worker's own thread (the Lua VM stays there).
    pub fn new(id: usize, shared: Arc<Shared>, access_log: AccessLog) -> ThreadState {
        let snapshot = shared.snapshot();
        let state = ThreadState {
            id,
            access_log,
            pool: Pool::default(),
            shutdown: LocalNotify::default(),
            lua: RefCell::new(LuaRuntime::new(LuaLimits::from_config(
                &snapshot.config.lua,
            ))),
            snapshot: RefCell::new((shared.generation(), Rc::new(snapshot))),
            request_seq: Cell::new(0),
            request_id_seed: random_seed() ^ (id as u64).rotate_left(56),
            shared,
        };
        state.pool.configure(pool_settings(&state.snapshot()));
        state
    }

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

/// 64 bits from the OS, so request ids differ across restarts.
fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    u64::from_le_bytes(bytes) ^ std::process::id() as u64
}
