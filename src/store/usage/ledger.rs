//! The ledger writer: workers push [`UsageEvent`]s onto an unbounded channel and one thread,
//! `cf-ledger`, stores them in batches.
//!
//! A batch is stored when its oldest event is [`FLUSH_INTERVAL`] old or when it holds
//! [`MAX_BATCH`] events, whichever comes first, so a `kill -9` loses at most the last second.
//! [`Ledger::stop`] drains the channel and stores what is left, so a clean stop loses nothing.
//!
//! Where a batch goes depends on the store ([`Ledger::start_for`]):
//! - SQLite: straight into `usage.db` through [`UsageBackend::write_batch`].
//! - PostgreSQL: appended to the local journal (fsync'd, [`super::journal`]), then moved to
//!   the database by the delivery thread ([`super::delivery`]), which retries with backoff
//!   while the database is unreachable. The writer itself never waits on the network. Past
//!   the journal's bound, new batches are dropped and counted (logged once per episode).
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

use super::backend::{node_for, SqliteUsage, UsageBackend};
use super::delivery::Delivery;
use super::journal::{Appended, Journal, JournalLevel, MAX_JOURNAL_BYTES};
use super::{LedgerError, PgUsage, UsageEvent, UsageRecord, BUSY_TIMEOUT};
use crate::config::{StoreBackend, StoreSettings};

/// Longest an event waits in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Events written at once when they arrive faster than one batch a second.
pub const MAX_BATCH: usize = 1000;

/// Failed writes in a row after which the pending events are dropped.
pub const MAX_WRITE_ATTEMPTS: u32 = 10;

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
    /// Records journaled and not yet delivered (a gauge; 0 on SQLite).
    journal_depth: Arc<AtomicU64>,
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
                    "Usage records dropped: repeated ledger write failures, a full journal, \
                     or damaged journal lines.",
                ),
                write_errors: m.counter(
                    "credentialflow_usage_write_errors_total",
                    "Failed ledger write and delivery attempts (retried or not).",
                ),
                journal_depth: m.gauge(
                    "credentialflow_usage_journal_depth",
                    "Usage records journaled and not yet delivered to PostgreSQL.",
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

    /// Write attempts (transactions) that failed, retried or not; on PostgreSQL, failed
    /// journal appends and delivery attempts.
    pub fn write_errors(&self) -> u64 {
        self.counters.write_errors.load(Ordering::Relaxed)
    }

    /// Records journaled and not yet delivered to PostgreSQL (always 0 on SQLite).
    pub fn journal_depth(&self) -> u64 {
        self.counters.journal_depth.load(Ordering::Relaxed)
    }

    pub(super) fn count_written(&self, records: u64) {
        self.counters.flushed.fetch_add(records, Ordering::Relaxed);
    }

    pub(super) fn count_dropped(&self, records: u64) {
        self.counters.failed.fetch_add(records, Ordering::Relaxed);
    }

    pub(super) fn count_write_error(&self) {
        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Knobs of a ledger started with [`Ledger::start_for_with`].
#[derive(Clone, Copy, Debug)]
pub struct LedgerOptions {
    /// The journal's bound in bytes (PostgreSQL only); default [`MAX_JOURNAL_BYTES`].
    pub journal_max_bytes: u64,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            journal_max_bytes: MAX_JOURNAL_BYTES,
        }
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

/// The usage ledger: owns the writer thread (and, on PostgreSQL, the delivery thread).
/// Dropping it stops it as [`Ledger::stop`] does.
pub struct Ledger {
    /// Dropped to tell the writer to drain, write and exit.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Dropped (after the writer has ended) to tell the delivery thread to make its last
    /// pass and exit.
    delivery_stop: Option<Sender<()>>,
    delivery: Option<JoinHandle<()>>,
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
        let settings = Settings::default();
        Ledger::start_counted(
            Destination::direct(data_dir, settings.busy_timeout)?,
            settings,
            LedgerStats::exported(),
            String::new(),
        )
    }

    /// Starts the ledger of the store `settings` name, its counters exported in `/metrics`:
    /// [`Ledger::start`] on SQLite; on PostgreSQL, the journal in
    /// `data_dir/usage-journal/` and the delivery thread, which first delivers any segments
    /// a previous process left. The database need not be reachable: records are journaled
    /// until it is.
    ///
    /// # Errors
    /// If the store settings are unusable, the journal or database cannot be created, or a
    /// thread cannot start.
    pub fn start_for(settings: &StoreSettings) -> Result<(Ledger, UsageSender), LedgerError> {
        Ledger::start_from(settings, LedgerOptions::default(), LedgerStats::exported())
    }

    /// [`Ledger::start_for`] with `options`, and counters of its own (not in `/metrics`), so
    /// that several ledgers in one process each count their own.
    ///
    /// # Errors
    /// As [`Ledger::start_for`].
    pub fn start_for_with(
        settings: &StoreSettings,
        options: LedgerOptions,
    ) -> Result<(Ledger, UsageSender), LedgerError> {
        Ledger::start_from(settings, options, LedgerStats::default())
    }

    fn start_from(
        settings: &StoreSettings,
        options: LedgerOptions,
        stats: LedgerStats,
    ) -> Result<(Ledger, UsageSender), LedgerError> {
        let node = node_for(settings);
        let timings = Settings::default();
        match settings.store.backend {
            StoreBackend::Sqlite => Ledger::start_counted(
                Destination::direct(&settings.data_dir, timings.busy_timeout)?,
                timings,
                stats,
                node,
            ),
            StoreBackend::Postgres => {
                let backend = PgUsage::from_settings(settings)?;
                let level = Arc::new(JournalLevel {
                    records: stats.counters.journal_depth.clone(),
                    ..JournalLevel::default()
                });
                let journal =
                    Journal::open(&settings.data_dir, options.journal_max_bytes, level.clone())?;
                let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
                let (delivery_stop, delivery_stop_rx) = crossbeam_channel::bounded(1);
                let delivery = Delivery {
                    dir: journal.dir().to_owned(),
                    backend: Box::new(backend),
                    level,
                    stats: stats.clone(),
                }
                .spawn(wake_rx, delivery_stop_rx)?;
                let destination = Destination::Journal {
                    journal,
                    wake: wake_tx,
                    full_logged: false,
                };
                let started = Ledger::start_counted(destination, timings, stats, node);
                let (mut ledger, sender) = match started {
                    Ok(started) => started,
                    Err(e) => {
                        drop(delivery_stop);
                        let _ = delivery.join();
                        return Err(e);
                    }
                };
                ledger.delivery_stop = Some(delivery_stop);
                ledger.delivery = Some(delivery);
                Ok((ledger, sender))
            }
        }
    }

    #[cfg(test)]
    fn start_with(
        data_dir: &Path,
        settings: Settings,
    ) -> Result<(Ledger, UsageSender), LedgerError> {
        Ledger::start_counted(
            Destination::direct(data_dir, settings.busy_timeout)?,
            settings,
            LedgerStats::default(),
            String::new(),
        )
    }

    fn start_counted(
        destination: Destination,
        settings: Settings,
        stats: LedgerStats,
        node: String,
    ) -> Result<(Ledger, UsageSender), LedgerError> {
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let writer = Writer {
            destination,
            settings,
            stats: stats.clone(),
            ids: RecordIds::new(),
            node,
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
            delivery_stop: None,
            delivery: None,
            stats,
        };
        Ok((ledger, UsageSender { events: events_tx }))
    }

    /// Stores every event already sent (on PostgreSQL: journals it, then delivers what it
    /// can), then joins the threads. Stop the workers first: events sent after this are
    /// dropped.
    pub fn stop(mut self) {
        self.shut_down();
    }

    /// Events stored so far (on PostgreSQL: delivered).
    pub fn flushed(&self) -> u64 {
        self.stats.flushed()
    }

    /// Events dropped because their writes kept failing or the journal was full.
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
        // The writer has journaled everything: now the delivery thread's last pass.
        drop(self.delivery_stop.take());
        if let Some(thread) = self.delivery.take() {
            if thread.join().is_err() {
                log::error!(
                    "usage ledger: the delivery thread panicked; the journal is delivered on \
                     the next start"
                );
            }
        }
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Where the writer stores a batch.
enum Destination {
    /// Straight into the store (SQLite).
    Direct(Box<dyn UsageBackend>),
    /// Into the journal, for the delivery thread (PostgreSQL).
    Journal {
        journal: Journal,
        /// Nudges the delivery thread; bounded(1) and sent with `try_send`, so the writer
        /// never waits on it (one pending nudge covers any number of segments).
        wake: Sender<()>,
        /// Whether "journal full" has been logged since the journal last had room.
        full_logged: bool,
    },
}

impl Destination {
    fn direct(data_dir: &Path, busy_timeout: Duration) -> Result<Destination, LedgerError> {
        let mut sqlite = SqliteUsage::open(data_dir)?;
        sqlite.set_busy_timeout(busy_timeout);
        Ok(Destination::Direct(Box::new(sqlite)))
    }

    /// Stores `records`; returns how many of them were dropped because the journal is full.
    fn store(&mut self, records: &[UsageRecord]) -> Result<u64, LedgerError> {
        match self {
            Destination::Direct(backend) => backend.write_batch(records).map(|()| 0),
            Destination::Journal {
                journal,
                wake,
                full_logged,
            } => match journal.append(records)? {
                Appended::Written => {
                    *full_logged = false;
                    let _ = wake.try_send(());
                    Ok(0)
                }
                Appended::Full => {
                    if !*full_logged {
                        *full_logged = true;
                        log::error!(
                            "usage ledger: the journal in {} is full; new usage records are \
                             dropped (counted in credentialflow_usage_records_dropped_total) \
                             until PostgreSQL takes the backlog",
                            journal.dir().display()
                        );
                    }
                    Ok(records.len() as u64)
                }
            },
        }
    }
}

/// Gives each record a unique id: a random 96-bit prefix per ledger and a counter. The
/// prefix keeps ids from two processes (or two nodes) apart without coordination.
struct RecordIds {
    prefix: String,
    next: u64,
}

impl RecordIds {
    fn new() -> RecordIds {
        let mut bytes = [0u8; 12];
        crate::store::ids::fill_random(&mut bytes);
        RecordIds {
            prefix: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            next: 0,
        }
    }

    fn next(&mut self) -> String {
        self.next += 1;
        format!("{}-{}", self.prefix, self.next)
    }
}

/// The writer thread's state.
struct Writer {
    destination: Destination,
    settings: Settings,
    stats: LedgerStats,
    ids: RecordIds,
    /// This gateway's node name, recorded with every record.
    node: String,
    /// Records received and not yet stored.
    pending: Vec<UsageRecord>,
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
        // The id is given here, once: a retried batch keeps its ids.
        self.pending.push(UsageRecord {
            id: self.ids.next(),
            node: self.node.clone(),
            event,
        });
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

    /// Stores the pending events in one transaction (or one journal segment); on failure
    /// keeps them for a retry, or drops them after too many failures in a row.
    fn write(&mut self) {
        let count = self.pending.len() as u64;
        match self.destination.store(&self.pending) {
            Ok(dropped) => {
                self.stats.count_dropped(dropped);
                // Journaled records are counted as written when delivered.
                if matches!(self.destination, Destination::Direct(_)) {
                    self.stats.count_written(count);
                }
                self.clear();
            }
            Err(e) => {
                self.stats.count_write_error();
                self.failed_attempts += 1;
                if self.failed_attempts >= self.settings.max_attempts {
                    log::error!(
                        "usage ledger: dropping {count} usage events after {} failed writes: {e}",
                        self.failed_attempts
                    );
                    self.stats.count_dropped(count);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::usage::DB_FILE;
    use rusqlite::Connection;
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
