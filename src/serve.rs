//! `credentialflow serve`: start the workers and the admin API, then wait for signals.
//!
//! The main thread owns the process lifecycle: SIGHUP reloads, SIGUSR1 reopens the access
//! log, SIGTERM/SIGINT drain and stop.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use crate::admin::{self, AdminState};
use crate::auth::CredentialCache;
use crate::cluster::Fleet;
use crate::config::{self, Config, SecretWatcher};
use crate::limits::{budget_limit, key_scope, team_scope, Admission};
use crate::limits::{period_start_ms, BudgetTable, Period};
use crate::metrics;
use crate::snapshot::{Carried, Purpose, Services, Shared, Snapshot};
use crate::store::usage::Ledger;
use crate::store::{self, NodeRecord, SharedBackend, StoreHealth};
use crate::worker::{self, Driver, ListenSpec};

/// `--driver`: which I/O driver the workers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DriverChoice {
    /// io_uring where the kernel allows it, else epoll.
    Auto,
    /// io_uring, or fail.
    Uring,
    /// epoll.
    Epoll,
}

/// Exit code for bad input (invalid config).
pub const EXIT_BAD_INPUT: i32 = 1;
/// Exit code for runtime failures (for example an address in use).
pub const EXIT_RUNTIME: i32 = 2;

/// Runs the gateway until a stop signal; returns the process exit code.
pub fn run(config_path: Option<PathBuf>, driver: DriverChoice) -> i32 {
    let config_path = config_path.or_else(config::resolve_default_path);
    let secrets = SecretWatcher::start();
    let admission = Arc::new(Admission::default());
    let carried = Arc::new(Carried::default());
    // The same load as `check` and reload: what one refuses, all refuse, with the same lines.
    let built = match &config_path {
        Some(path) => {
            let (snapshot, report) =
                Snapshot::load_carrying(path, &secrets, &admission, &carried, Purpose::Serve);
            for warning in &report.warnings {
                log::warn!("config: {warning}");
            }
            snapshot.ok_or(report.errors)
        }
        None => {
            log::info!("no --config and no ./credentialflow.toml: using the built-in default");
            Snapshot::build(config::builtin_default(), &secrets, &admission, &carried).map_err(
                |errors| {
                    errors
                        .into_iter()
                        .map(|message| config::ConfigError {
                            path: String::new(),
                            line: None,
                            message,
                        })
                        .collect()
                },
            )
        }
    };
    let snapshot = match built {
        Ok(snapshot) => snapshot,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return EXIT_BAD_INPUT;
        }
    };
    crate::logging::set_format(snapshot.config.server.log_format);
    let config = snapshot.config.clone();
    let services = Started { admission, carried };
    match start(config, snapshot, config_path, secrets, services, driver) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            EXIT_RUNTIME
        }
    }
}

/// The state the first snapshot was built with, handed on to [`Shared`].
struct Started {
    admission: Arc<Admission>,
    carried: Arc<Carried>,
}

fn start(
    config: Config,
    snapshot: Snapshot,
    config_path: Option<PathBuf>,
    secrets: SecretWatcher,
    started: Started,
    choice: DriverChoice,
) -> Result<i32, String> {
    // Handlers go in before anything is announced: a SIGHUP that arrives right after the ready
    // line must reload, not kill the process (SIGHUP's default action).
    let signals = Signals::new([SIGHUP, SIGUSR1, SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let driver = pick_driver(choice)?;
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    let mut specs = Vec::new();
    // Held until every worker has bound, so no other process can take a port picked for us.
    let mut reservations = Vec::new();
    let tls_listen = config.server.tls.iter().flat_map(|t| t.listen.iter());
    let all_listen = config.server.listen.iter().map(|a| (a, false));
    for (addr, tls) in all_listen.chain(tls_listen.map(|a| (a, true))) {
        let (addr, reservation) = reserve_port(addr)?;
        reservations.push(reservation);
        specs.push(ListenSpec { addr, tls });
    }
    let admin_listener = TcpListener::bind(&config.server.admin_listen)
        .map_err(|e| format!("admin_listen {}: {e}", config.server.admin_listen))?;
    let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;

    let access_log_path = match config.server.access_log.as_str() {
        "" | "-" => PathBuf::from(&config.server.access_log),
        path => config.resolve_path(path),
    };
    let (access_log, access_log_writer) = crate::accesslog::start(&access_log_path)
        .map_err(|e| format!("access_log {}: {e}", access_log_path.display()))?;

    let data_dir = config.resolve_path(&config.server.data_dir);
    let store_settings = store::settings_of(&config);
    let credentials = CredentialCache::start(&store_settings)
        .map_err(|e| format!("key store in {}: {e}", data_dir.display()))?;
    // The admin API and the signal handler share one more backend: the watcher owns the
    // cache's and never lends it out, so a slow admin call cannot delay a change's arrival.
    let store = store::open_shared(&store_settings)
        .map_err(|e| format!("key store in {}: {e}", data_dir.display()))?;

    metrics::global().set_driver(driver.name());
    metrics::global().set_workers(workers);
    metrics::global().set_store_health(Arc::clone(credentials.store_health()));
    if !snapshot.catalog.is_empty() {
        // Building the tokenizers takes a moment; do it now, off the workers, so the first
        // AI request does not pay for it.
        let _ = std::thread::Builder::new()
            .name("cf-warm-up".into())
            .spawn(crate::ai::tokens::warm_up);
    }
    let (ledger, usage) = Ledger::start_for(&store_settings)
        .map_err(|e| format!("usage ledger in {}: {e}", data_dir.display()))?;
    let budgets = Arc::new(BudgetTable::new());
    resume_budgets(&store_settings, &credentials, &snapshot, &budgets)?;
    // Settlement reports threshold crossings only when a receiver wants them: otherwise
    // the request path does not even check.
    let (crossings_tx, crossings) = mpsc::sync_channel(WEBHOOK_CROSSINGS_CAPACITY);
    if config.webhook.iter().any(|w| w.wants("budget.threshold")) {
        budgets.set_threshold_sink(crossings_tx)?;
    } else {
        drop(crossings_tx);
    }
    let webhooks = crate::webhook::Delivery::start(&store_settings, &config.webhook, crossings)?;
    // Fleet mode: after the store (the budgets it seeds are what the fleet starts from),
    // before the workers (the request path must see the fleet's tables from its first
    // request). A changed [cluster] takes effect only after a restart.
    let fleet = match Fleet::settings(&config.cluster, &store_settings.store.node)? {
        Some(settings) => {
            let fleet = Fleet::start(settings, &started.admission, &budgets)?;
            metrics::global().set_cluster_status(Arc::clone(fleet.status()));
            Some(fleet)
        }
        None => None,
    };
    let cluster_status = fleet.as_ref().map(|f| Arc::clone(f.status()));
    let shared = Arc::new(Shared::new(
        snapshot,
        config_path,
        secrets,
        Services {
            credentials,
            admission: started.admission,
            budgets,
            usage,
            carried: started.carried,
        },
        workers,
    ));
    let sweeper_stop = Arc::new(AtomicBool::new(false));
    let sweeper = shared.admission.start_sweeper(sweeper_stop.clone());

    let (bound_tx, bound_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(workers);
    for id in 0..workers {
        let shared = shared.clone();
        let specs = specs.clone();
        let bound_tx = bound_tx.clone();
        let access_log = access_log.clone();
        let thread = std::thread::Builder::new()
            .name(format!("cf-worker-{id}"))
            .spawn(move || {
                pin_to_core(id);
                worker::run(id, shared, specs, driver, access_log, |r| {
                    let _ = bound_tx.send(r);
                })
            })
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        threads.push(thread);
    }
    drop(bound_tx);
    for _ in 0..workers {
        match bound_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shared.begin_shutdown();
                return Err(format!("listen {e}"));
            }
            Err(_) => {
                shared.begin_shutdown();
                return Err("a worker failed to start".into());
            }
        }
    }

    drop(reservations);

    let this_node: Arc<dyn Fn() -> NodeRecord + Send + Sync> = {
        let shared = shared.clone();
        let node = store_settings.store.node.clone();
        Arc::new(move || NodeRecord {
            node: node.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            last_seen: store::unix_now(),
            // 1 for the config loaded at start, one more per reload.
            config_generation: shared.generation() + 1,
        })
    };
    let admin_shutdown = Arc::new(AtomicBool::new(false));
    let heartbeat = spawn_heartbeat(
        store.clone(),
        Arc::clone(shared.credentials.store_health()),
        this_node.clone(),
        admin_shutdown.clone(),
    )?;
    let admin_thread = {
        let ready_shared = shared.clone();
        let reload_shared = shared.clone();
        let token = match &config.server.admin_token {
            Some(r) => Some(shared_secret(&shared, r)?),
            None => None,
        };
        admin::spawn(
            admin_listener,
            AdminState {
                token,
                ready: Arc::new(move || ready_shared.all_serving()),
                reload: Arc::new(move || reload_shared.reload()),
                store: store.clone(),
                usage: Arc::new(
                    admin::UsageReader::new(&store_settings)
                        .map_err(|e| format!("usage ledger: {e}"))?,
                ),
                credentials: shared.credentials.clone(),
                this_node,
                cluster: cluster_status,
                access_policies: {
                    let shared = shared.clone();
                    Arc::new(move || shared.snapshot().config.access_policy.clone())
                },
            },
            admin_shutdown.clone(),
        )
    };

    let join = |kind: bool, list: &[ListenSpec]| {
        list.iter()
            .filter(|s| s.tls == kind)
            .map(|s| s.addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let tls_part = if specs.iter().any(|s| s.tls) {
        format!(" tls={}", join(true, &specs))
    } else {
        String::new()
    };
    eprintln!(
        "credentialflow ready listen={}{} admin={} driver={} workers={}",
        join(false, &specs),
        tls_part,
        admin_addr,
        driver.name(),
        workers
    );

    wait_for_signals(&shared, &store, access_log_writer.as_ref(), signals);
    admin_shutdown.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    let _ = admin_thread.join();
    let _ = heartbeat.join();
    sweeper_stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = sweeper.join();
    // Every request has finished, so no lease covers one any more: give them all back.
    if let Some(fleet) = fleet {
        fleet.stop();
    }
    // Every request has finished: write the last usage records before exiting.
    ledger.stop();
    // And the keys' last uses of the final interval, which the watcher writes every few
    // seconds.
    if let Err(e) = shared.credentials.write_last_used(&mut **store.lock()) {
        log::warn!("cannot write keys' last use at stop: {e}");
    }
    // Undelivered events stay queued in the store for the next start.
    webhooks.stop();
    // Every worker's sender is gone; dropping ours lets the writer finish the queue.
    drop(access_log);
    if let Some(writer) = access_log_writer {
        writer.finish();
    }
    log::info!("stopped");
    Ok(0)
}

/// Threshold crossings waiting for the webhook thread; past it a crossing is lost rather
/// than make a request wait (80 % and 100 % per budget per period, so it is never close).
const WEBHOOK_CROSSINGS_CAPACITY: usize = 1024;

/// How often a node records itself in the store's node registry (`GET /admin/nodes`).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// Starts the thread that records this node in the store's registry at once and every
/// [`HEARTBEAT_INTERVAL`] until `stop` is set. It takes its turn with the admin API's
/// backend (no extra connection), and skips beats while the store is known to be
/// unreachable so an admin call never waits behind a doomed connection attempt.
fn spawn_heartbeat(
    store: SharedBackend,
    health: Arc<StoreHealth>,
    this_node: Arc<dyn Fn() -> NodeRecord + Send + Sync>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name("cf-heartbeat".into())
        .spawn(move || {
            let mut failing = false;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if health.is_up() {
                    let node = this_node();
                    let beat =
                        store
                            .lock()
                            .heartbeat(&node.node, &node.version, node.config_generation);
                    match beat {
                        Ok(()) => failing = false,
                        Err(e) if !failing => {
                            log::warn!("cannot record this node in the store: {e}");
                            failing = true;
                        }
                        Err(_) => {}
                    }
                }
                // Sleep in short steps so shutdown is not held up by a whole interval.
                let until = Instant::now() + HEARTBEAT_INTERVAL;
                while Instant::now() < until && !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
        .map_err(|e| format!("cannot start the heartbeat thread: {e}"))
}

/// Seeds every key and team budget with what the ledger recorded since its period began, so
/// a restart does not hand out a fresh budget.
fn resume_budgets(
    settings: &config::StoreSettings,
    credentials: &CredentialCache,
    snapshot: &Snapshot,
    budgets: &BudgetTable,
) -> Result<(), String> {
    let now_ms = crate::clock::unix_now_ms();
    let failed = |e: crate::store::usage::LedgerError| {
        format!("usage ledger in {}: {e}", settings.data_dir.display())
    };
    for period in [Period::Day, Period::Month, Period::Total] {
        let since = period_start_ms(period, now_ms);
        for (id, spent) in
            crate::store::usage::totals_by_key_for(settings, since).map_err(failed)?
        {
            let Some(key) = credentials.by_id(&id) else {
                continue;
            };
            let limit = budget_limit(
                key.budget_usd,
                key.budget_tokens,
                key.budget_period.as_deref(),
            );
            if limit.is_some_and(|l| l.period == period) {
                budgets.seed(
                    &key_scope(&id),
                    period,
                    now_ms,
                    spent.tokens,
                    spent.cost_nano_usd,
                );
            }
        }
        for (team, spent) in
            crate::store::usage::totals_by_team_for(settings, since).map_err(failed)?
        {
            let limit = snapshot.teams.get(&team).and_then(|t| t.budget);
            if limit.is_some_and(|l| l.period == period) {
                budgets.seed(
                    &team_scope(&team),
                    period,
                    now_ms,
                    spent.tokens,
                    spent.cost_nano_usd,
                );
            }
        }
    }
    Ok(())
}

/// Blocks the main thread: SIGHUP reloads; SIGUSR1 reopens the access log (logrotate's
/// `postrotate`); SIGTERM or SIGINT begins the drain and returns. A reload by SIGHUP is
/// audited through `store`.
fn wait_for_signals(
    shared: &Shared,
    store: &SharedBackend,
    access_log: Option<&crate::accesslog::Writer>,
    mut signals: Signals,
) {
    for signal in signals.forever() {
        if signal == SIGUSR1 {
            match access_log {
                Some(writer) => writer.reopen(),
                None => log::info!("SIGUSR1: no access log to reopen"),
            }
        } else if signal == SIGHUP {
            if shared.reload().is_ok() {
                let logged = store
                    .lock()
                    .append_audit("signal:SIGHUP", "reload", None, None, None);
                if let Err(e) = logged {
                    log::warn!("audit log: {e}");
                }
            }
        } else {
            log::info!("stopping: draining connections");
            shared.begin_shutdown();
            return;
        }
    }
}

/// Resolves the address a listener will use and holds it. Port 0 becomes a concrete free port
/// here, so that every worker's SO_REUSEPORT socket joins the same port; the returned socket is
/// bound with SO_REUSEPORT but never listens (so it gets no connections) and keeps the port ours
/// until the workers have bound. A plain bind first catches an address already in use by another
/// process (a SO_REUSEPORT bind alone could silently share it).
fn reserve_port(addr: &str) -> Result<(SocketAddr, socket2::Socket), String> {
    let fail = |e: std::io::Error| format!("listen {addr}: {e}");
    let requested: SocketAddr = addr.parse().map_err(|e| format!("listen {addr}: {e}"))?;
    if requested.port() != 0 {
        drop(TcpListener::bind(requested).map_err(fail)?);
    }
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(requested),
        socket2::Type::STREAM,
        None,
    )
    .map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    socket.set_reuse_port(true).map_err(fail)?;
    if requested.is_ipv6() {
        socket.set_only_v6(true).map_err(fail)?;
    }
    socket.bind(&requested.into()).map_err(fail)?;
    let bound = socket
        .local_addr()
        .map_err(fail)?
        .as_socket()
        .ok_or_else(|| format!("listen {addr}: not an IP address"))?;
    Ok((bound, socket))
}

/// Chooses the driver: io_uring when asked or available; otherwise epoll, logged once.
fn pick_driver(choice: DriverChoice) -> Result<Driver, String> {
    let available = monoio::utils::detect_uring();
    match choice {
        DriverChoice::Uring if available => Ok(Driver::Uring),
        DriverChoice::Uring => Err("io_uring is not available on this host (kernel, seccomp, io_uring_disabled or RLIMIT_MEMLOCK); use --driver epoll".into()),
        DriverChoice::Epoll => Ok(Driver::Epoll),
        DriverChoice::Auto if available => Ok(Driver::Uring),
        DriverChoice::Auto => {
            log::warn!("io_uring is not available on this host; using the epoll driver");
            Ok(Driver::Epoll)
        }
    }
}

fn shared_secret(
    shared: &Shared,
    reference: &config::SecretRef,
) -> Result<config::LiveSecret, String> {
    shared
        .secrets()
        .watch(reference)
        .map_err(|e| format!("server.admin_token: {e}"))
}

/// Pins worker `id` to core `id` when there are at least that many cores, so each worker's
/// caches stay warm; harmless to skip when the affinity call is not allowed.
fn pin_to_core(id: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills the local set,
    // CPU_ISSET/CPU_SET only read and write it, and sched_setaffinity only reads it.
    unsafe {
        // The CPUs this process may use (taskset, systemd CPUAffinity=): worker N goes to the
        // Nth of them, never outside the mask.
        let mut allowed: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut allowed) != 0 {
            return;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &allowed))
            .collect();
        let Some(&cpu) = cpus.get(id) else {
            return;
        };
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let _ = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
