//! Finding where a message head ends, resumably.
//!
//! A head may arrive in many small reads. The scanner remembers how far it has
//! looked, so each byte is examined once however the head is split; the full parse
//! runs once, on the complete head.

use super::syntax::find_lf;
use super::HeadError;

/// Which line endings a head may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineEndings {
    /// CRLF only: a bare LF is refused (requests; RFC 9112 2.2 allows a recipient
    /// to accept bare LF, but two hops that disagree on it can be smuggled past).
    CrLf,
    /// CRLF or bare LF (responses from our own upstreams, RFC 9112 2.2).
    CrLfOrLf,
}

/// Where a complete head lies in the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeadBounds {
    /// First byte of the start-line (after skipped empty lines).
    pub start: usize,
    /// One past the LF of the empty line that ends the head: bytes consumed.
    pub end: usize,
    /// Non-empty lines in the head (start-line included): a capacity hint.
    pub lines: usize,
}

/// Resumable search for the empty line that ends a head.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeadScanner {
    /// `buf[..scanned]` has been searched for LF already.
    scanned: usize,
    /// Where the current, not yet terminated, line begins.
    line_start: usize,
    /// Where the start-line begins: leading empty lines are skipped (RFC 9112 2.2).
    head_start: usize,
    /// Non-empty lines seen so far.
    lines: usize,
}

impl HeadScanner {
    /// Forgets all progress, for the next message.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Looks for the end of the head in `buf`, which must start at the same byte on
    /// every call and may only have grown since the last one. `Ok(None)` means more
    /// bytes are needed. A head (leading empty lines included) longer than
    /// `max_head` is `TooLarge`, even before its end has arrived. The scanner resets
    /// itself when it returns a head or an error.
    pub fn scan(
        &mut self,
        buf: &[u8],
        max_head: usize,
        endings: LineEndings,
    ) -> Result<Option<HeadBounds>, HeadError> {
        if self.scanned > buf.len() {
            // The caller broke the contract (the buffer shrank): start over rather
            // than index out of bounds.
            self.reset();
        }
        let result = self.scan_inner(buf, max_head, endings);
        if !matches!(result, Ok(None)) {
            self.reset();
        }
        result
    }

    fn scan_inner(
        &mut self,
        buf: &[u8],
        max_head: usize,
        endings: LineEndings,
    ) -> Result<Option<HeadBounds>, HeadError> {
        // A head that ends past `max_head` is too large, so never look further.
        let limit = buf.len().min(max_head);
        while self.scanned < limit {
            let Some(offset) = find_lf(&buf[self.scanned..limit]) else {
                self.scanned = limit;
                break;
            };
            let lf = self.scanned + offset;
            self.scanned = lf + 1;
            let has_cr = lf > self.line_start && buf[lf - 1] == b'\r';
            if !has_cr && endings == LineEndings::CrLf {
                return Err(HeadError::Malformed("bare LF line ending"));
            }
            let content_end = if has_cr { lf - 1 } else { lf };
            if content_end == self.line_start {
                if self.line_start == self.head_start {
                    // An empty line before the start-line: skip it (RFC 9112 2.2).
                    self.head_start = lf + 1;
                } else {
                    return Ok(Some(HeadBounds {
                        start: self.head_start,
                        end: lf + 1,
                        lines: self.lines,
                    }));
                }
            } else {
                self.lines += 1;
            }
            self.line_start = lf + 1;
        }
        if buf.len() > max_head {
            return Err(HeadError::TooLarge);
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_once(buf: &[u8], endings: LineEndings) -> Result<Option<HeadBounds>, HeadError> {
        HeadScanner::default().scan(buf, 1024, endings)
    }

    #[test]
    fn finds_the_empty_line_that_ends_the_head() {
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody";
        let bounds = scan_once(buf, LineEndings::CrLf).unwrap().unwrap();
        assert_eq!(
            bounds,
            HeadBounds {
                start: 0,
                end: buf.len() - 4,
                lines: 2
            }
        );
    }

    #[test]
    fn incomplete_head_needs_more_bytes() {
        assert_eq!(
            scan_once(b"GET / HTTP/1.1\r\nHost: a\r\n", LineEndings::CrLf),
            Ok(None)
        );
    }

    #[test]
    fn leading_empty_lines_are_skipped_but_counted_as_consumed() {
        let buf = b"\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let bounds = scan_once(buf, LineEndings::CrLf).unwrap().unwrap();
        assert_eq!(bounds.start, 4);
        assert_eq!(bounds.end, buf.len());
    }

    #[test]
    fn bare_lf_is_refused_in_crlf_mode() {
        assert!(scan_once(b"GET / HTTP/1.1\nHost: a\r\n\r\n", LineEndings::CrLf).is_err());
        assert!(scan_once(b"\nGET / HTTP/1.1\r\n\r\n", LineEndings::CrLf).is_err());
    }

    #[test]
    fn bare_lf_ends_lines_in_lenient_mode() {
        let buf = b"HTTP/1.1 200 OK\nA: b\n\n";
        let bounds = scan_once(buf, LineEndings::CrLfOrLf).unwrap().unwrap();
        assert_eq!(bounds.end, buf.len());
    }

    #[test]
    fn resumes_where_it_stopped_when_fed_byte_by_byte() {
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut scanner = HeadScanner::default();
        for len in 1..buf.len() {
            assert_eq!(scanner.scan(&buf[..len], 1024, LineEndings::CrLf), Ok(None));
            assert_eq!(scanner.scanned, len);
        }
        let bounds = scanner.scan(buf, 1024, LineEndings::CrLf).unwrap().unwrap();
        assert_eq!(bounds.end, buf.len());
    }

    #[test]
    fn head_longer_than_the_limit_is_too_large_even_while_incomplete() {
        let mut scanner = HeadScanner::default();
        assert_eq!(
            scanner.scan(b"GET / HTTP/1.1\r\nA: bbbb", 16, LineEndings::CrLf),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn head_of_exactly_the_limit_is_accepted() {
        let buf = b"GET / HTTP/1.1\r\n\r\n";
        let bounds = HeadScanner::default()
            .scan(buf, buf.len(), LineEndings::CrLf)
            .unwrap();
        assert!(bounds.is_some());
    }

    #[test]
    fn head_ending_one_byte_past_the_limit_is_too_large() {
        let buf = b"GET / HTTP/1.1\r\n\r\n";
        let result = HeadScanner::default().scan(buf, buf.len() - 1, LineEndings::CrLf);
        assert_eq!(result, Err(HeadError::TooLarge));
    }

    #[test]
    fn scanner_resets_after_returning_a_head() {
        let mut scanner = HeadScanner::default();
        scanner
            .scan(b"GET / HTTP/1.1\r\n\r\n", 1024, LineEndings::CrLf)
            .unwrap();
        assert_eq!(scanner.scanned, 0);
    }
}
