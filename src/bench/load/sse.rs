//! Spotting where server-sent events end in a response body, without keeping the bytes.
//!
//! WHATWG HTML, section 9.2.6 "Interpreting an event stream": lines end with CRLF, LF or CR;
//! an empty line dispatches the event, but only when a `data` field was seen since the last
//! one (comments such as `: keep-alive` and other fields alone dispatch nothing). A `data`
//! line is `data:` or a bare `data` line (a field with an empty value).

/// Counts dispatched events across body pieces that may split anywhere, even inside CRLF.
#[derive(Clone, Debug, Default)]
pub struct EventCounter {
    /// The last byte was CR: a following LF belongs to the same line ending.
    after_cr: bool,
    /// No byte of the current line has been seen yet.
    at_line_start: bool,
    /// How the current line's field name compares with `data`.
    name: NameMatch,
    /// A `data` field was seen in the event in progress.
    event_has_data: bool,
    events: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NameMatch {
    /// The line's bytes so far are the first `n` bytes of `data`.
    Prefix(u8),
    /// The name ended (`:`) or stopped matching; whether it was `data`.
    Done(bool),
}

impl Default for NameMatch {
    fn default() -> Self {
        NameMatch::Prefix(0)
    }
}

impl EventCounter {
    /// A counter at the start of a stream.
    pub fn new() -> EventCounter {
        EventCounter {
            at_line_start: true,
            ..EventCounter::default()
        }
    }

    /// Reads `bytes`; returns how many events they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> u64 {
        let before = self.events;
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' => self.line_end(),
                b'\r' => {
                    self.after_cr = true;
                    self.line_end();
                }
                _ => {
                    self.after_cr = false;
                    self.at_line_start = false;
                    self.name = match self.name {
                        NameMatch::Done(d) => NameMatch::Done(d),
                        NameMatch::Prefix(n) if b == b':' => NameMatch::Done(n == 4),
                        NameMatch::Prefix(n) if n < 4 && b == b"data"[usize::from(n)] => {
                            NameMatch::Prefix(n + 1)
                        }
                        NameMatch::Prefix(_) => NameMatch::Done(false),
                    };
                }
            }
        }
        self.events - before
    }

    /// Events dispatched so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    fn line_end(&mut self) {
        if self.at_line_start {
            if self.event_has_data {
                self.events += 1;
            }
            self.event_has_data = false;
        } else if matches!(self.name, NameMatch::Done(true) | NameMatch::Prefix(4)) {
            self.event_has_data = true;
        }
        self.at_line_start = true;
        self.name = NameMatch::Prefix(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(stream: &[u8]) -> u64 {
        EventCounter::new().feed(stream)
    }

    #[test]
    fn counts_lf_terminated_events() {
        assert_eq!(count(b"data: a\n\ndata: b\n\n"), 2);
    }

    #[test]
    fn counts_crlf_and_cr_terminated_events() {
        assert_eq!(count(b"data: a\r\n\r\ndata: b\r\rdata: c\r\n\n"), 3);
    }

    #[test]
    fn multi_line_event_is_one_event() {
        assert_eq!(count(b"event: x\ndata: 1\ndata: 2\nid: 3\n\n"), 1);
    }

    #[test]
    fn comments_and_fields_without_data_dispatch_nothing() {
        assert_eq!(count(b": keep-alive\n\nevent: ping\n\nretry: 5\n\n"), 0);
    }

    #[test]
    fn bare_data_line_is_a_data_field() {
        assert_eq!(count(b"data\n\n"), 1);
    }

    #[test]
    fn names_that_only_start_like_data_are_not_data() {
        assert_eq!(count(b"datum: 1\n\ndat: 1\n\ndatas: 1\n\n"), 0);
    }

    #[test]
    fn unterminated_event_is_not_counted() {
        assert_eq!(count(b"data: a\n"), 0);
    }

    #[test]
    fn events_split_at_every_byte_are_counted_once() {
        let stream = b"data: a\r\n\r\n: c\r\n\r\ndata: b\n\n";
        for split in 0..=stream.len() {
            let mut counter = EventCounter::new();
            let n = counter.feed(&stream[..split]) + counter.feed(&stream[split..]);
            assert_eq!(n, 2, "split at {split}");
            assert_eq!(counter.events(), 2);
        }
    }
}
