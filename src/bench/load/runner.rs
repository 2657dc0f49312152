//! The run: load threads (one monoio runtime each, like the gateway's workers), each with
//! its share of the connections and, in open loop, of the rate; a shared request budget for
//! `-n`; a live progress line; and the merge of every thread's stats at the end.
//!
//! Open loop follows the "no coordinated omission" rule (as wrk2 does): each thread has a
//! fixed schedule of intended send times. A connection that becomes free claims the next
//! slot, waits for it if it is in the future, and measures the latency from the slot's time,
//! so a request that had to wait for a busy connection counts its wait.

use std::cell::{Cell, RefCell};
use std::io::IsTerminal;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::Histogram;

use crate::worker::ring::build_with_fallback;

use super::client::{ConnectSettings, Connection, ErrorKind, Failure, Response};
use super::report::{progress_line, RunInfo, Summary};
use super::request::KeyRotation;
use super::stats::Stats;
use super::Options;

/// Runs the load described by `opts` and returns its summary. Fails (before sending
/// anything) only when the target cannot be resolved or a runtime cannot be built.
pub fn run(opts: Options) -> Result<Summary, String> {
    let addr = super::target::resolve(&opts.target)?;
    let tls = match &opts.tls {
        Some(config) => Some((config.clone(), opts.target.server_name()?)),
        None => None,
    };
    let settings = ConnectSettings {
        addr,
        tls,
        timeout: opts.timeout,
    };
    let threads = thread_count(opts.threads, opts.connections);
    let progress = opts.progress && std::io::stderr().is_terminal();
    let (tick_tx, tick_rx) = crossbeam_channel::unbounded();
    let shared = Arc::new(Shared {
        budget: Budget::new(opts.requests),
        barrier: Barrier::new(threads),
        epoch: OnceLock::new(),
        ticks: progress.then_some(tick_tx),
        settings,
        opts,
    });

    let mut handles = Vec::with_capacity(threads);
    for index in 0..threads {
        let shared = shared.clone();
        let connections = share(shared.opts.connections, threads, index);
        let handle = std::thread::Builder::new()
            .name(format!("cf-bench-{index}"))
            .spawn(move || run_thread(index, threads, connections, shared))
            .map_err(|e| format!("cannot start a load thread: {e}"))?;
        handles.push(handle);
    }
    if progress {
        show_progress(&shared, &handles, &tick_rx);
    }
    let mut stats = Stats::default();
    let mut last_done: Option<Instant> = None;
    for handle in handles {
        let result = handle
            .join()
            .map_err(|_| "a load thread panicked".to_string())??;
        stats.merge(&result.stats);
        last_done = last_done.max(result.last_done);
    }

    let opts = &shared.opts;
    let epoch = *shared.epoch.get_or_init(Instant::now);
    let warm_end = epoch + opts.warmup;
    let window_end = match (last_done, opts.duration) {
        (Some(done), _) => done,
        (None, Some(d)) => warm_end + d,
        (None, None) => Instant::now(),
    };
    let info = RunInfo {
        url: opts.url.clone(),
        open_loop: opts.rate.is_some(),
        connections: opts.connections,
        threads,
        rate: opts.rate,
        warmup: opts.warmup,
        measured: window_end.saturating_duration_since(warm_end),
        stream: opts.stream,
    };
    Ok(Summary::new(&info, &stats))
}

/// Load threads: the requested count (0 = one per core), never more than the connections.
pub fn thread_count(requested: usize, connections: usize) -> usize {
    let wanted = match requested {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    wanted.clamp(1, connections.max(1))
}

/// Thread `index`'s share of `total` split over `parts`: the first `total % parts` threads
/// get one more.
pub fn share(total: usize, parts: usize, index: usize) -> usize {
    total / parts + usize::from(index < total % parts)
}

/// State every load thread reads.
struct Shared {
    opts: Options,
    settings: ConnectSettings,
    /// Recorded requests still allowed (`-n`).
    budget: Budget,
    /// Every thread has opened its connections: the clock starts.
    barrier: Barrier,
    /// The run's start, set by the first thread past the barrier.
    epoch: OnceLock<Instant>,
    /// Where threads send progress once a second, when the progress line is shown.
    ticks: Option<Sender<Tick>>,
}

/// The `-n` budget of recorded requests, shared by every thread (one atomic decrement per
/// request; no lock).
#[derive(Debug)]
pub struct Budget(Option<AtomicU64>);

impl Budget {
    /// `Some(n)`: `n` requests; `None`: unlimited.
    pub fn new(requests: Option<u64>) -> Budget {
        Budget(requests.map(AtomicU64::new))
    }

    /// Takes one request; false when the budget is spent.
    pub fn take(&self) -> bool {
        match &self.0 {
            None => true,
            Some(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

/// One thread's result.
struct ThreadResult {
    stats: Stats,
    /// When its last recorded request ended.
    last_done: Option<Instant>,
}

/// A thread's progress so far, sent once a second.
struct Tick {
    thread: usize,
    /// Responses and errors, warm-up included (for the rate).
    completed: u64,
    /// Recorded errors.
    errors: u64,
    /// Recorded latencies so far.
    latency: Histogram<u64>,
}

/// The time window of the run.
#[derive(Clone, Copy, Debug)]
struct Window {
    warm_end: Instant,
    /// No request starts at or after this (`-d`).
    end: Option<Instant>,
}

impl Window {
    fn ended(&self, at: Instant) -> bool {
        self.end.is_some_and(|end| at >= end)
    }
}

/// Open loop: a thread's schedule of intended send times, `interval` apart from `origin`.
#[derive(Debug)]
pub struct Schedule {
    origin: Instant,
    interval: Duration,
    next: Cell<u64>,
}

impl Schedule {
    /// A schedule of `rate` requests per second starting at `origin`.
    pub fn new(origin: Instant, rate: f64) -> Schedule {
        Schedule {
            origin,
            interval: Duration::from_secs_f64(1.0 / rate),
            next: Cell::new(0),
        }
    }

    /// The next slot's intended send time.
    pub fn claim(&self) -> Instant {
        let slot = self.next.get();
        self.next.set(slot + 1);
        self.at(slot)
    }

    /// Slot `k`'s intended send time.
    pub fn at(&self, slot: u64) -> Instant {
        self.origin + self.interval.mul_f64(slot as f64)
    }

    /// How many slots fall in `[from, to)`.
    pub fn due_between(&self, from: Instant, to: Instant) -> u64 {
        self.slots_before(to)
            .saturating_sub(self.slots_before(from))
    }

    /// How many slots fall before `t`.
    fn slots_before(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.origin).as_secs_f64();
        (since / self.interval.as_secs_f64()).ceil() as u64
    }
}

/// A thread's own state, shared by its connection tasks (one thread: no locks).
struct Local {
    stats: RefCell<Stats>,
    rotation: RefCell<KeyRotation>,
    schedule: Option<Schedule>,
    last_done: Cell<Option<Instant>>,
    completed: Cell<u64>,
    finished: Cell<bool>,
}

fn run_thread(
    index: usize,
    threads: usize,
    connections: usize,
    shared: Arc<Shared>,
) -> Result<ThreadResult, String> {
    // A kernel without the tuned ring's flags refuses them: then the default ring, or epoll
    // where io_uring is unavailable (the fusion driver's own fallback).
    let runtime = build_with_fallback(|urb| {
        let builder = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer();
        match urb {
            Some(urb) => builder.uring_builder(urb).build(),
            None => builder.build(),
        }
    });
    match runtime {
        Ok((mut rt, _)) => Ok(rt.block_on(load_thread(index, threads, connections, shared))),
        Err(e) => {
            // Release the other threads waiting at the start line.
            shared.barrier.wait();
            Err(format!("cannot build a runtime: {e}"))
        }
    }
}

async fn load_thread(
    index: usize,
    threads: usize,
    connections: usize,
    shared: Arc<Shared>,
) -> ThreadResult {
    let opts = &shared.opts;
    // Open the connections first, so the measured run does not start with handshakes. One
    // that fails is retried by its first request (and the failure counted then).
    let opening: Vec<_> = (0..connections)
        .map(|_| {
            let settings = shared.settings.clone();
            monoio::spawn(async move {
                let mut conn = Connection::new();
                let _ = conn.ensure_open(&settings).await;
                conn
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(connections);
    for handle in opening {
        conns.push(handle.await);
    }
    // Nothing else runs on this thread yet, so blocking here stalls nothing.
    shared.barrier.wait();
    let epoch = *shared.epoch.get_or_init(Instant::now);
    let window = Window {
        warm_end: epoch + opts.warmup,
        end: opts.duration.map(|d| epoch + opts.warmup + d),
    };
    let schedule = opts.rate.map(|rate| {
        let thread_rate = rate * connections as f64 / opts.connections as f64;
        // Threads start a slot apart, so their schedules interleave instead of bursting.
        let offset = Duration::from_secs_f64(index as f64 / rate);
        Schedule::new(epoch + offset, thread_rate)
    });
    let rotation_start = share_start(opts.encoded.len(), threads, index);
    let local = Rc::new(Local {
        stats: RefCell::new(Stats::default()),
        rotation: RefCell::new(KeyRotation::new(rotation_start, opts.encoded.len())),
        schedule,
        last_done: Cell::new(None),
        completed: Cell::new(0),
        finished: Cell::new(false),
    });
    if let Some(ticks) = &shared.ticks {
        monoio::spawn(send_ticks(index, ticks.clone(), local.clone()));
    }
    let loops: Vec<_> = conns
        .into_iter()
        .map(|conn| monoio::spawn(connection_loop(conn, local.clone(), shared.clone(), window)))
        .collect();
    for handle in loops {
        handle.await;
    }
    local.finished.set(true);

    let mut stats = local.stats.replace(Stats::default());
    if let (Some(schedule), Some(end)) = (&local.schedule, window.end) {
        stats.unsent = schedule
            .due_between(window.warm_end, end)
            .saturating_sub(stats.requests);
    }
    ThreadResult {
        stats,
        last_done: local.last_done.get(),
    }
}

/// Where thread `index` starts its key rotation: spread evenly over the keys.
fn share_start(keys: usize, threads: usize, index: usize) -> usize {
    keys * index / threads.max(1)
}

/// One connection's requests, one at a time, with `--timeout` kept by a watchdog rather
/// than a timer per request: each request only notes its deadline, and the watchdog, which
/// sleeps until the noted deadline and wakes at most once per `--timeout`, drops the
/// requests' future when a request is still unanswered at its deadline. The connection is
/// closed, the request counted as a timeout, and the requests go on. The clock is read once
/// per request: the end of one response is the start of the next in closed loop.
async fn connection_loop(
    mut conn: Connection,
    local: Rc<Local>,
    shared: Arc<Shared>,
    window: Window,
) {
    let timeout = shared.opts.timeout;
    let state = LoopState {
        now: Cell::new(Instant::now()),
        in_flight: Cell::new(None),
    };
    loop {
        let finished = {
            let requests = send_requests(&mut conn, &local, &shared, window, &state);
            // Fixed order: the requests first (the watchdog rarely has anything to say), and
            // no random number drawn on every wake.
            monoio::select! {
                biased;
                () = requests => true,
                () = watchdog(&state, timeout) => false,
            }
        };
        if finished {
            break;
        }
        conn.close();
        let now = Instant::now();
        state.now.set(now);
        if let Some(request) = state.in_flight.take() {
            let outcome = Err(Failure {
                kind: ErrorKind::Timeout,
                message: format!("no complete response within {timeout:?}"),
            });
            local.finish(&request, &outcome, now);
        }
    }
}

/// What a connection's requests share with its watchdog.
struct LoopState {
    /// The last reading of the clock.
    now: Cell<Instant>,
    /// The request awaiting its response.
    in_flight: Cell<Option<InFlight>>,
}

/// A request sent and not yet answered.
#[derive(Clone, Copy)]
struct InFlight {
    /// Its (intended) start, which its latency counts from.
    start: Instant,
    /// When it times out.
    deadline: Instant,
    /// It falls after the warm-up.
    recorded: bool,
}

impl Local {
    /// Counts a request that ended at `done`, and records it unless in the warm-up.
    fn finish(&self, request: &InFlight, outcome: &Result<Response, Failure>, done: Instant) {
        self.completed.set(self.completed.get() + 1);
        if request.recorded {
            let start = request.start;
            self.stats
                .borrow_mut()
                .record(outcome, done.saturating_duration_since(start), |t| {
                    t.saturating_duration_since(start)
                });
            self.last_done.set(Some(done));
        }
    }
}

/// Sends requests on `conn` until the window closes or the budget is spent.
async fn send_requests(
    conn: &mut Connection,
    local: &Local,
    shared: &Shared,
    window: Window,
    state: &LoopState,
) {
    let opts = &shared.opts;
    loop {
        let now = state.now.get();
        if window.ended(now) {
            return;
        }
        let start = match &local.schedule {
            None => now,
            Some(schedule) => {
                let intended = schedule.claim();
                if window.ended(intended) {
                    return;
                }
                intended
            }
        };
        let recorded = start >= window.warm_end;
        if recorded && !shared.budget.take() {
            return;
        }
        let sent = if start > now {
            monoio::time::sleep_until(start.into()).await;
            Instant::now()
        } else {
            now
        };
        let request = InFlight {
            start,
            deadline: sent + opts.timeout,
            recorded,
        };
        state.in_flight.set(Some(request));
        let index = local.rotation.borrow_mut().next_index();
        let outcome = conn
            .exchange(
                &shared.settings,
                index,
                &opts.encoded[index],
                opts.head_request,
                opts.stream,
            )
            .await;
        state.in_flight.set(None);
        let done = Instant::now();
        state.now.set(done);
        local.finish(&request, &outcome, done);
    }
}

/// Returns once the request in flight is past its deadline; sleeps until the deadline it
/// saw, then looks again (by then the deadline has usually moved on with later requests).
async fn watchdog(state: &LoopState, timeout: Duration) {
    loop {
        let wake = match state.in_flight.get() {
            Some(request) if Instant::now() >= request.deadline => return,
            Some(request) => request.deadline,
            // Between requests (an open-loop wait): look again a timeout later.
            None => Instant::now() + timeout,
        };
        monoio::time::sleep_until(wake.into()).await;
    }
}

/// Sends this thread's progress once a second until its connections are done.
async fn send_ticks(thread: usize, ticks: Sender<Tick>, local: Rc<Local>) {
    while !local.finished.get() {
        monoio::time::sleep(Duration::from_secs(1)).await;
        let tick = {
            let stats = local.stats.borrow();
            Tick {
                thread,
                completed: local.completed.get(),
                errors: stats.error_count(),
                latency: stats.latency.clone(),
            }
        };
        if ticks.send(tick).is_err() {
            return;
        }
    }
}

/// Prints the progress line on stderr once a second until every thread has finished.
fn show_progress(
    shared: &Shared,
    handles: &[std::thread::JoinHandle<Result<ThreadResult, String>>],
    ticks: &Receiver<Tick>,
) {
    let mut latest: Vec<Option<Tick>> = (0..handles.len()).map(|_| None).collect();
    let mut last_print = Instant::now();
    let mut last_completed = 0u64;
    let mut printed = false;
    while !handles.iter().all(|h| h.is_finished()) {
        if let Ok(tick) = ticks.recv_timeout(Duration::from_millis(100)) {
            let thread = tick.thread;
            latest[thread] = Some(tick);
        }
        let since = last_print.elapsed();
        let Some(epoch) = shared.epoch.get() else {
            continue;
        };
        // Nothing to show before the first tick, or more often than once a second.
        if since < Duration::from_secs(1) || latest.iter().all(Option::is_none) {
            continue;
        }
        last_print = Instant::now();
        let mut completed = 0;
        let mut errors = 0;
        let mut latency = super::stats::new_histogram();
        for tick in latest.iter().flatten() {
            completed += tick.completed;
            errors += tick.errors;
            let _ = latency.add(&tick.latency);
        }
        let rate = (completed - last_completed.min(completed)) as f64 / since.as_secs_f64();
        last_completed = completed;
        let p99 =
            (!latency.is_empty()).then(|| Duration::from_micros(latency.value_at_quantile(0.99)));
        let elapsed = epoch.elapsed();
        let line = progress_line(elapsed, rate, errors, p99, elapsed < shared.opts.warmup);
        eprint!("\r\x1b[2K{line}");
        printed = true;
    }
    if printed {
        eprintln!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_shared_out_with_the_remainder_first() {
        let shares: Vec<usize> = (0..3).map(|i| share(10, 3, i)).collect();
        assert_eq!(shares, vec![4, 3, 3]);
    }

    #[test]
    fn never_more_threads_than_connections() {
        assert_eq!(thread_count(8, 3), 3);
        assert_eq!(thread_count(2, 100), 2);
        assert!(thread_count(0, 1) == 1);
    }

    #[test]
    fn schedule_slots_are_evenly_spaced_from_the_origin() {
        let origin = Instant::now();
        let schedule = Schedule::new(origin, 100.0);
        assert_eq!(schedule.claim(), origin);
        assert_eq!(schedule.claim(), origin + Duration::from_millis(10));
        assert_eq!(schedule.at(100), origin + Duration::from_secs(1));
    }

    #[test]
    fn schedule_counts_the_slots_due_in_a_window() {
        let origin = Instant::now();
        let schedule = Schedule::new(origin, 500.0);
        let three_s = origin + Duration::from_secs(3);
        assert_eq!(schedule.due_between(origin, three_s), 1500);
        let one_s = origin + Duration::from_secs(1);
        assert_eq!(schedule.due_between(one_s, three_s), 1000);
    }

    #[test]
    fn budget_allows_exactly_n_requests() {
        let budget = Budget::new(Some(2));
        assert_eq!(
            (budget.take(), budget.take(), budget.take()),
            (true, true, false)
        );
    }

    #[test]
    fn no_budget_is_unlimited() {
        let budget = Budget::new(None);
        assert!((0..1000).all(|_| budget.take()));
    }

    #[test]
    fn key_rotation_starts_are_spread_over_threads() {
        assert_eq!(share_start(4, 2, 0), 0);
        assert_eq!(share_start(4, 2, 1), 2);
        assert_eq!(share_start(1, 2, 1), 0);
    }
}
