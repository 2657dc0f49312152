//! [`Backoff`]: how long the cluster link waits between attempts to reach Redis: 100 ms after
//! the first failure, doubling up to 5 s, back to the start after a success. A fleet of nodes
//! that lost Redis together then retries at a rate that does not load it when it returns,
//! while a short blip is retried within a tick or two.

use std::time::Duration;

/// The first wait after a failure.
pub const FIRST: Duration = Duration::from_millis(100);

/// The longest wait between attempts.
pub const MAX: Duration = Duration::from_secs(5);

/// Doubling waits between [`FIRST`] and [`MAX`].
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// A backoff whose next wait is [`FIRST`].
    pub fn new() -> Backoff {
        Backoff { next: FIRST }
    }

    /// The wait before the next attempt; each call doubles the one after, up to [`MAX`].
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX);
        wait
    }

    /// After a success: the next failure waits [`FIRST`] again.
    pub fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_100ms_to_5s_and_resets() {
        let mut backoff = Backoff::new();
        let waits: Vec<u64> = (0..9)
            .map(|_| backoff.next_wait().as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), FIRST);
    }
}
