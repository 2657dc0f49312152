//! Round-robin balancing over an upstream's targets, skipping targets in passive cool-down.

use std::sync::atomic::Ordering;

use super::health::now_ms;
use super::Upstream;

impl Upstream {
    /// The target for the next request: the next one in round-robin order that is not
    /// cooling down; when every target is cooling, the round-robin one anyway (a cool-down is
    /// a guess, and refusing all traffic would turn a blip into an outage).
    pub fn pick(&self) -> usize {
        let n = self.targets.len();
        let start = self.cursor.0.fetch_add(1, Ordering::Relaxed) % n;
        self.first_available(start, n).unwrap_or(start)
    }

    /// Another target to retry on after `failed` did not work: the next one after it that is
    /// not cooling down, else simply the next one. `None` when there is only one target.
    pub fn next_after(&self, failed: usize) -> Option<usize> {
        let n = self.targets.len();
        if n < 2 {
            return None;
        }
        let next = (failed + 1) % n;
        Some(self.first_available(next, n - 1).unwrap_or(next))
    }

    /// Starts the cool-down of target `idx` (it refused or failed a connection).
    pub fn mark_failed(&self, idx: usize) {
        self.targets[idx].health.mark_failed();
    }

    /// Clears the cool-down of target `idx` (a connection to it succeeded).
    pub fn mark_ok(&self, idx: usize) {
        self.targets[idx].health.mark_ok();
    }

    /// The first of `count` targets from `start` (wrapping) that is not cooling down.
    fn first_available(&self, start: usize, count: usize) -> Option<usize> {
        let n = self.targets.len();
        // Read the clock only if some target has a deadline: usually none has.
        let mut now = None;
        (0..count).map(|i| (start + i) % n).find(|&idx| {
            let health = &self.targets[idx].health;
            !health.has_deadline() || !health.is_cooling_at(*now.get_or_insert_with(now_ms))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(n: usize) -> Upstream {
        let targets: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", 9000 + i)).collect();
        Upstream::from_parts("u", &targets, None, None).unwrap()
    }

    #[test]
    fn pick_goes_round_robin() {
        let up = upstream(3);
        let picks: Vec<usize> = (0..6).map(|_| up.pick()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn pick_skips_a_cooling_target() {
        let up = upstream(3);
        up.mark_failed(1);
        let picks: Vec<usize> = (0..6).map(|_| up.pick()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert!(picks.contains(&0) && picks.contains(&2), "{picks:?}");
    }

    #[test]
    fn pick_uses_a_target_again_once_marked_ok() {
        let up = upstream(2);
        up.mark_failed(1);
        up.mark_ok(1);
        let picks: Vec<usize> = (0..2).map(|_| up.pick()).collect();
        assert_eq!(picks, vec![0, 1]);
    }

    #[test]
    fn pick_still_picks_when_all_targets_are_cooling() {
        let up = upstream(2);
        up.mark_failed(0);
        up.mark_failed(1);
        let picks: Vec<usize> = (0..4).map(|_| up.pick()).collect();
        assert_eq!(picks, vec![0, 1, 0, 1]);
    }

    #[test]
    fn single_target_is_always_picked() {
        let up = upstream(1);
        up.mark_failed(0);
        assert_eq!(up.pick(), 0);
        assert_eq!(up.pick(), 0);
    }

    #[test]
    fn next_after_is_none_with_one_target() {
        assert_eq!(upstream(1).next_after(0), None);
    }

    #[test]
    fn next_after_gives_the_following_target() {
        let up = upstream(3);
        assert_eq!(up.next_after(0), Some(1));
        assert_eq!(up.next_after(2), Some(0));
    }

    #[test]
    fn next_after_skips_a_cooling_target() {
        let up = upstream(3);
        up.mark_failed(1);
        assert_eq!(up.next_after(0), Some(2));
    }

    #[test]
    fn next_after_never_returns_the_failed_target() {
        let up = upstream(2);
        up.mark_failed(0);
        up.mark_failed(1);
        assert_eq!(up.next_after(0), Some(1));
    }
}
