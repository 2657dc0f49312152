//! The delivery thread, `cf-ledger-deliver`: moves journaled segments to PostgreSQL, oldest
//! first, deleting each only after its insert committed.
//!
//! It runs apart from the writer so that an unreachable database (a connect can take the
//! 5 s connect timeout) never delays journaling: the writer keeps appending segments and
//! nudges this thread. After a failure it waits [`MIN_BACKOFF`], doubling up to
//! [`MAX_BACKOFF`], ignoring nudges meanwhile so an outage is not hammered. A segment
//! delivered but not deleted (a crash in between) is delivered again on the next pass and
//! stores nothing twice: rows are keyed by the record's own id.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{select, Receiver};

use super::backend::UsageBackend;
use super::journal::{read_segment, segments, JournalLevel};
use super::ledger::LedgerStats;
use super::LedgerError;

/// The first wait after a failed delivery.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between delivery attempts while the database stays unreachable.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The thread's state.
pub(super) struct Delivery {
    /// The journal directory.
    pub dir: PathBuf,
    pub backend: Box<dyn UsageBackend>,
    pub level: Arc<JournalLevel>,
    pub stats: LedgerStats,
}

/// The next wait after a failure that followed a wait of `previous` (none: the first).
fn next_backoff(previous: Option<Duration>) -> Duration {
    previous.map_or(MIN_BACKOFF, |d| (d * 2).min(MAX_BACKOFF))
}

impl Delivery {
    /// Starts the thread. `wake` is nudged by the writer after each segment; disconnecting
    /// `stop` makes it try one last pass and exit.
    pub fn spawn(self, wake: Receiver<()>, stop: Receiver<()>) -> std::io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name("cf-ledger-deliver".into())
            .spawn(move || self.run(&wake, &stop))
    }

    fn run(mut self, wake: &Receiver<()>, stop: &Receiver<()>) {
        // Leftover segments from a previous process go first: this pass runs before any
        // nudge, so they are delivered before anything journaled now.
        let mut backoff: Option<Duration> = None;
        loop {
            match self.deliver_all() {
                Ok(()) => {
                    if backoff.take().is_some() {
                        log::info!("usage ledger: PostgreSQL is back; journal delivered");
                    }
                }
                Err(e) => {
                    if backoff.is_none() {
                        // Once per outage, not once per attempt.
                        log::warn!(
                            "usage ledger: delivery to PostgreSQL failed, journaling under \
                             {} and retrying: {e}",
                            self.dir.display()
                        );
                    }
                    self.stats.count_write_error();
                    backoff = Some(next_backoff(backoff));
                }
            }
            let wait = match backoff {
                Some(delay) => crossbeam_channel::after(delay),
                None => crossbeam_channel::never(),
            };
            let nudge = if backoff.is_some() {
                crossbeam_channel::never()
            } else {
                wake.clone()
            };
            select! {
                recv(nudge) -> message => if message.is_err() {
                    // The writer is gone (it only ends at stop); the stop signal follows.
                    let _ = stop.recv();
                    return self.finish();
                },
                recv(stop) -> _ => return self.finish(),
                recv(wait) -> _ => {},
            }
            // Nudges that came while delivering are covered by the next pass.
            while wake.try_recv().is_ok() {}
        }
    }

    /// At stop: one last attempt; what it cannot deliver stays journaled for the next start.
    fn finish(mut self) {
        if let Err(e) = self.deliver_all() {
            log::warn!(
                "usage ledger: {} records stay journaled under {} for the next start: {e}",
                self.level.records.load(Ordering::Relaxed),
                self.dir.display()
            );
        }
    }

    /// Delivers every segment on disk, oldest first; stops at the first failure.
    fn deliver_all(&mut self) -> Result<(), LedgerError> {
        for segment in segments(&self.dir)? {
            let (records, skipped) = read_segment(&segment)?;
            if skipped > 0 {
                log::error!(
                    "usage ledger: {skipped} damaged lines in journal segment {} skipped",
                    segment.path.display()
                );
                self.stats.count_dropped(skipped);
            }
            self.backend.write_batch(&records)?;
            // Committed. If the deletion fails (or the process dies first), the segment is
            // delivered again later, which stores nothing twice.
            fs::remove_file(&segment.path)?;
            self.level
                .records
                .fetch_sub(segment.records, Ordering::Relaxed);
            self.level.bytes.fetch_sub(segment.bytes, Ordering::Relaxed);
            self.stats.count_written(records.len() as u64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100_ms_to_5_s() {
        let mut delays = Vec::new();
        let mut delay = None;
        for _ in 0..9 {
            delay = Some(next_backoff(delay));
            delays.push(delay.unwrap().as_millis());
        }
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }
}
