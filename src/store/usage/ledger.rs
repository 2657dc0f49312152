//! The ledger writer: workers push [`UsageEvent`]s onto an unbounded channel and one thread,
//! `cf-ledger`, writes them to `usage.db` in batches.
//!
//! A batch is written in one transaction when its oldest event is [`FLUSH_INTERVAL`] old or
//! when it holds [`MAX_BATCH`] events, whichever comes first, so a `kill -9` loses at most
//! the last second. [`Ledger::stop`] drains the channel and writes what is left, so a clean
//! stop loses nothing.
//!
//! The channel is unbounded so that a worker never blocks or waits: the writer empties it
//! every second, so it only grows while the disk refuses writes. A failed write keeps the
//! batch and is retried a second later; after [`MAX_WRITE_ATTEMPTS`] failures in a row the
//! pending events are dropped and counted ([`LedgerStats::failed`]), which bounds memory to
//! about that many seconds of traffic.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use rusqlite::{params, Connection, TransactionBehavior};

use super::{open_for_writing, LedgerError, UsageEvent, BUSY_TIMEOUT};

/// Longest an event waits in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Events written at once when they arrive faster than one batch a second.
pub const MAX_BATCH: usize = 1000;

/// Failed writes in a row after which the pending events are dropped.
pub const MAX_WRITE_ATTEMPTS: u32 = 10;

const INSERT: &str = "INSERT INTO usage (ts_ms, request_id, key_id, team, model, prompt, route, \
    status, prompt_tokens, completion_tokens, cached_tokens, cost_nano_usd) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// A worker's handle for reporting usage: cheap to clone (one per worker), never blocks.
#[derive(Clone, Debug)]
pub struct UsageSender {
    events: Sender<UsageEvent>,
}

impl UsageSender {
    /// Hands `event` to the ledger thread. Never blocks; an event sent after the ledger has
    /// stopped is dropped.
    pub fn record(&self, event: UsageEvent) {
        // The only possible error is a stopped ledger, which happens only at shutdown, after
        // the workers have finished.
        let _ = self.events.send(event);
    }

    /// A sender whose ledger is gone: every event is dropped. For tests and for a gateway
    /// running without a ledger.
    pub fn disconnected() -> UsageSender {
        let (events, _) = crossbeam_channel::unbounded();
        UsageSender { events }
    }
}

/// The ledger's counters, shared with the writer thread; cheap to clone, for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct LedgerStats {
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    flushed: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    write_errors: Arc<AtomicU64>,
}

impl LedgerStats {
    /// Counters that `/metrics` exports (the process's one ledger uses these).
    fn exported() -> LedgerStats {
        let m = crate::metrics::global();
        LedgerStats {
            counters: Arc::new(Counters {
                flushed: m.counter(
                    "credentialflow_usage_records_written_total",
                    "Usage records written to the ledger.",
                ),
                failed: m.counter(
                    "credentialflow_usage_records_dropped_total",
                    "Usage records dropped after repeated ledger write failures.",
                ),
                write_errors: m.counter(
                    "credentialflow_usage_write_errors_total",
                    "Failed ledger write attempts (retried or not).",
                ),
            }),
        }
    }
}

impl LedgerStats {
    /// Events written to the database.
    pub fn flushed(&self) -> u64 {
        self.counters.flushed.load(Ordering::Relaxed)
    }

    /// Events dropped because their writes kept failing.
    pub fn failed(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }

    /// Write attempts (transactions) that failed, retried or not.
    pub fn write_errors(&self) -> u64 {
        self.counters.write_errors.load(Ordering::Relaxed)
    }
}

/// Timings of the writer; tests shorten them.
#[derive(Clone, Copy, Debug)]
struct Settings {
    flush_interval: Duration,
    max_attempts: u32,
    busy_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            flush_interval: FLUSH_INTERVAL,
            max_attempts: MAX_WRITE_ATTEMPTS,
            busy_timeout: BUSY_TIMEOUT,
        }
    }
}

/// The usage ledger: owns the writer thread. Dropping it stops it as [`Ledger::stop`] does.
pub struct Ledger {
    /// Dropped to tell the writer to drain, write and exit.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    stats: LedgerStats,
}

impl Ledger {
    /// Opens (or creates) `data_dir/usage.db` and starts the `cf-ledger` writer thread.
    /// Returns the ledger and the first sender; clone it for each worker.
    ///
    /// # Errors
    /// If the directory or the database cannot be created or opened, or the thread cannot
    /// start.
    pub fn start(data_dir: &Path) -> Result<(Ledger, UsageSender), LedgerError> {
        Ledger::start_counted(data_dir, Settings::default(), LedgerStats::exported())
    }

    #[cfg(test)]
    fn start_with(
        data_dir: &Path,
        settings: Settings,
    ) -> Result<(Ledger, UsageSender), LedgerError> {
        Ledger::start_counted(data_dir, settings, LedgerStats::default())
    }

    fn start_counted(
        data_dir: &Path,
        settings: Settings,
        stats: LedgerStats,
    ) -> Result<(Ledger, UsageSender), LedgerError> {
        let conn = open_for_writing(data_dir)?;
        conn.busy_timeout(settings.busy_timeout)?;
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let writer = Writer {
            conn,
            settings,
            stats: stats.clone(),
            pending: Vec::new(),
            oldest: None,
            failed_attempts: 0,
            retry_at: None,
        };
        let thread = thread::Builder::new()
            .name("cf-ledger".into())
            .spawn(move || writer.run(&events_rx, &stop_rx))?;
        let ledger = Ledger {
            stop: Some(stop_tx),
            thread: Some(thread),
            stats,
        };
        Ok((ledger, UsageSender { events: events_tx }))
    }

    /// Writes every event already sent, then joins the writer thread. Stop the workers
    /// first: events sent after this are dropped.
    pub fn stop(mut self) {
        self.shut_down();
    }

    /// Events written so far.
    pub fn flushed(&self) -> u64 {
        self.stats.flushed()
    }

    /// Events dropped because their writes kept failing.
    pub fn failed(&self) -> u64 {
        self.stats.failed()
    }

    /// A handle on the counters that outlives borrows of the ledger (for `/metrics`).
    pub fn stats(&self) -> LedgerStats {
        self.stats.clone()
    }

    fn shut_down(&mut self) {
        // Disconnecting the stop channel wakes the writer.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                log::error!("usage ledger: the writer thread panicked; unwritten usage is lost");
            }
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    settings: Settings,
    stats: LedgerStats,
    /// Events received and not yet written.
    pending: Vec<UsageEvent>,
    /// When the oldest pending event arrived.
    oldest: Option<Instant>,
    /// Failed writes in a row of the current pending events.
    failed_attempts: u32,
    /// After a failed write: when to try again.
    retry_at: Option<Instant>,
}

impl Writer {
    fn run(mut self, events: &Receiver<UsageEvent>, stop: &Receiver<()>) {
        loop {
            let deadline = match self.next_write_at() {
                Some(at) => crossbeam_channel::at(at),
                None => crossbeam_channel::never(),
            };
            select! {
                recv(events) -> event => match event {
                    Ok(event) => {
                        self.push(event);
                        self.take_waiting(events);
                    }
                    // Every sender is gone: nothing more can arrive.
                    Err(_) => return self.finish(),
                },
                recv(stop) -> _ => {
                    for event in events.try_iter() {
                        self.push(event);
                    }
                    return self.finish();
                },
                recv(deadline) -> _ => {},
            }
            if self.is_due(Instant::now()) {
                self.write();
            }
        }
    }

    fn push(&mut self, event: UsageEvent) {
        self.oldest.get_or_insert_with(Instant::now);
        self.pending.push(event);
    }

    /// Takes events already queued, up to a full batch, without waiting.
    fn take_waiting(&mut self, events: &Receiver<UsageEvent>) {
        while self.pending.len() < MAX_BATCH {
            match events.try_recv() {
                Ok(event) => self.push(event),
                Err(_) => break,
            }
        }
    }

    /// When the pending events must be written: a second after the oldest arrived, or
    /// after a failure, a second after that failure.
    fn next_write_at(&self) -> Option<Instant> {
        self.retry_at
            .or_else(|| self.oldest.map(|t| t + self.settings.flush_interval))
    }

    fn is_due(&self, now: Instant) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        // A full batch is written at once, unless writes are failing: then only the retry
        // timer writes, so a broken disk is not hammered on every event.
        (self.retry_at.is_none() && self.pending.len() >= MAX_BATCH)
            || self.next_write_at().is_some_and(|at| now >= at)
    }

    /// Writes the pending events in one transaction; on failure keeps them for a retry, or
    /// drops them after too many failures in a row.
    fn write(&mut self) {
        let count = self.pending.len() as u64;
        match write_batch(&mut self.conn, &self.pending) {
            Ok(()) => {
                self.stats
                    .counters
                    .flushed
                    .fetch_add(count, Ordering::Relaxed);
                self.clear();
            }
            Err(e) => {
                self.stats
                    .counters
                    .write_errors
                    .fetch_add(1, Ordering::Relaxed);
                self.failed_attempts += 1;
                if self.failed_attempts >= self.settings.max_attempts {
                    log::error!(
                        "usage ledger: dropping {count} usage events after {} failed writes: {e}",
                        self.failed_attempts
                    );
                    self.stats
                        .counters
                        .failed
                        .fetch_add(count, Ordering::Relaxed);
                    self.clear();
                } else {
                    log::warn!(
                        "usage ledger: write of {count} usage events failed (attempt {} of {}), \
                         retrying: {e}",
                        self.failed_attempts,
                        self.settings.max_attempts
                    );
                    self.retry_at = Some(Instant::now() + self.settings.flush_interval);
                }
            }
        }
    }

    fn clear(&mut self) {
        self.pending.clear();
        self.oldest = None;
        self.failed_attempts = 0;
        self.retry_at = None;
    }

    /// The last write, at stop: one attempt; what it cannot write is counted as failed.
    fn finish(mut self) {
        if self.pending.is_empty() {
            return;
        }
        self.failed_attempts = self.settings.max_attempts.saturating_sub(1);
        self.write();
    }
}

/// Inserts `events` in one transaction with one prepared statement.
fn write_batch(conn: &mut Connection, events: &[UsageEvent]) -> rusqlite::Result<()> {
    // IMMEDIATE takes the write lock up front, so waiting for another writer goes through
    // the busy timeout rather than failing on a lock upgrade (sqlite.org/lang_transaction.html).
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(INSERT)?;
        for e in events {
            insert.execute(params![
                e.ts_ms,
                e.request_id,
                e.key_id,
                e.team,
                e.model,
                e.prompt,
                e.route,
                e.status,
                sql_integer(e.prompt_tokens),
                sql_integer(e.completion_tokens),
                sql_integer(e.cached_tokens),
                sql_integer(e.cost_nano_usd),
            ])?;
        }
    }
    tx.commit()
}

/// SQLite integers are signed 64-bit; a count past that (never seen in practice) is clamped
/// rather than failing the whole batch.
fn sql_integer(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::usage::DB_FILE;
    use std::path::PathBuf;

    /// A fresh data directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("cf-ledger-{}", crate::store::ids::new_key_id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn event(n: u64) -> UsageEvent {
        UsageEvent {
            ts_ms: 1_700_000_000_000 + n as i64,
            request_id: format!("req-{n}"),
            key_id: Some("key_a".into()),
            team: "research".into(),
            model: Some("gpt-4o".into()),
            prompt: None,
            route: Some("ai".into()),
            status: 200,
            prompt_tokens: 10 + n,
            completion_tokens: 5,
            cached_tokens: 2,
            cost_nano_usd: 1_500,
        }
    }

    fn rows(dir: &Path) -> i64 {
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        conn.query_row("SELECT COUNT(*) FROM usage", [], |row| row.get(0))
            .unwrap()
    }

    /// Polls until `check` holds, for up to `limit`.
    fn eventually(limit: Duration, check: impl Fn() -> bool) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if check() {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        check()
    }

    #[test]
    fn start_creates_usage_db_in_data_dir() {
        let dir = TempDir::new();
        let data_dir = dir.0.join("nested");
        let (ledger, _sender) = Ledger::start(&data_dir).unwrap();
        assert!(data_dir.join(DB_FILE).exists());
        assert_eq!(rows(&data_dir), 0);
        ledger.stop();
    }

    #[test]
    fn events_are_written_within_a_second_without_stop() {
        let dir = TempDir::new();
        let (ledger, sender) = Ledger::start_with(&dir.0, Settings::default()).unwrap();
        sender.record(event(1));
        assert!(eventually(Duration::from_secs(3), || rows(&dir.0) == 1));
        assert_eq!(ledger.flushed(), 1);
        ledger.stop();
    }

    #[test]
    fn stop_writes_every_event_already_sent() {
        let dir = TempDir::new();
        let (ledger, sender) = Ledger::start_with(&dir.0, Settings::default()).unwrap();
        let stats = ledger.stats();
        for n in 0..10 {
            sender.record(event(n));
        }
        ledger.stop();
        assert_eq!(rows(&dir.0), 10);
        assert_eq!(stats.flushed(), 10);
        assert_eq!(stats.failed(), 0);
    }

    #[test]
    fn more_events_than_one_batch_all_arrive() {
        let dir = TempDir::new();
        let (ledger, sender) = Ledger::start(&dir.0).unwrap();
        let workers: Vec<_> = (0..5)
            .map(|w| {
                let sender = sender.clone();
                thread::spawn(move || {
                    for n in 0..500 {
                        sender.record(event(w * 1000 + n));
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        ledger.stop();
        assert_eq!(rows(&dir.0), 2500);
    }

    #[test]
    fn a_full_batch_is_written_before_the_second_is_up() {
        let dir = TempDir::new();
        let settings = Settings {
            flush_interval: Duration::from_secs(3600),
            ..Settings::default()
        };
        let (ledger, sender) = Ledger::start_with(&dir.0, settings).unwrap();
        for n in 0..MAX_BATCH as u64 + 1 {
            sender.record(event(n));
        }
        assert!(eventually(Duration::from_secs(3), || rows(&dir.0) >= MAX_BATCH as i64));
        assert_eq!(rows(&dir.0), MAX_BATCH as i64);
        ledger.stop();
        assert_eq!(rows(&dir.0), MAX_BATCH as i64 + 1);
    }

    #[test]
    fn stored_row_holds_every_field() {
        let dir = TempDir::new();
        let (ledger, sender) = Ledger::start(&dir.0).unwrap();
        let sent = UsageEvent {
            key_id: None,
            prompt: Some("summarize".into()),
            status: 429,
            cost_nano_usd: u64::MAX,
            ..event(7)
        };
        sender.record(sent.clone());
        ledger.stop();
        let conn = Connection::open(dir.0.join(DB_FILE)).unwrap();
        let stored = conn
            .query_row("SELECT * FROM usage", [], |row| {
                Ok(UsageEvent {
                    ts_ms: row.get("ts_ms")?,
                    request_id: row.get("request_id")?,
                    key_id: row.get("key_id")?,
                    team: row.get("team")?,
                    model: row.get("model")?,
                    prompt: row.get("prompt")?,
                    route: row.get("route")?,
                    status: row.get("status")?,
                    prompt_tokens: row.get("prompt_tokens")?,
                    completion_tokens: row.get("completion_tokens")?,
                    cached_tokens: row.get("cached_tokens")?,
                    cost_nano_usd: row.get::<_, i64>("cost_nano_usd")? as u64,
                })
            })
            .unwrap();
        assert_eq!(
            stored,
            UsageEvent {
                cost_nano_usd: i64::MAX as u64,
                ..sent
            }
        );
    }

    #[test]
    fn writer_ends_when_every_sender_is_dropped() {
        let dir = TempDir::new();
        let (mut ledger, sender) = Ledger::start(&dir.0).unwrap();
        let worker = sender.clone();
        worker.record(event(1));
        drop((sender, worker));
        let thread = ledger.thread.take().unwrap();
        assert!(eventually(Duration::from_secs(3), || thread.is_finished()));
        thread.join().unwrap();
        assert_eq!(rows(&dir.0), 1);
    }

    #[test]
    fn failed_write_is_retried_and_loses_nothing() {
        let dir = TempDir::new();
        let settings = Settings {
            flush_interval: Duration::from_millis(50),
            max_attempts: 1000,
            busy_timeout: Duration::ZERO,
        };
        let (ledger, sender) = Ledger::start_with(&dir.0, settings).unwrap();
        // Another connection holding the write lock makes every write fail with SQLITE_BUSY.
        let blocker = Connection::open(dir.0.join(DB_FILE)).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        sender.record(event(1));
        assert!(eventually(Duration::from_secs(3), || ledger
            .stats()
            .write_errors()
            >= 2));
        blocker.execute_batch("COMMIT").unwrap();
        assert!(eventually(Duration::from_secs(3), || ledger.flushed() == 1));
        assert_eq!(ledger.failed(), 0);
        ledger.stop();
        assert_eq!(rows(&dir.0), 1);
    }

    #[test]
    fn events_are_dropped_and_counted_after_too_many_failed_writes() {
        let dir = TempDir::new();
        let settings = Settings {
            flush_interval: Duration::from_millis(20),
            max_attempts: 3,
            busy_timeout: Duration::ZERO,
        };
        let (ledger, sender) = Ledger::start_with(&dir.0, settings).unwrap();
        let blocker = Connection::open(dir.0.join(DB_FILE)).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        sender.record(event(1));
        sender.record(event(2));
        assert!(eventually(Duration::from_secs(3), || ledger.failed() == 2));
        assert_eq!(ledger.stats().write_errors(), 3);
        blocker.execute_batch("COMMIT").unwrap();
        sender.record(event(3));
        ledger.stop();
        assert_eq!(rows(&dir.0), 1);
    }

    #[test]
    fn recording_on_a_disconnected_sender_drops_the_event() {
        let sender = UsageSender::disconnected();
        sender.record(event(1));
        assert!(sender.events.is_empty());
    }
}
