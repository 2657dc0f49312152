//! Where each response ends, read straight from the connection's buffer: the status line and
//! the three fields that decide framing (`Content-Length`, `Transfer-Encoding`, `Connection`),
//! then the body by that framing (RFC 9112 section 6.3). Nothing is allocated or copied: the
//! load generator only counts bytes, so a response costs one pass over its head and, for
//! chunked bodies, one pass over the chunk framing.
//!
//! The server is not trusted: the head, a chunk-size line and the trailers are bounded, a
//! length that overflows is refused, and anything that could make two readings of the framing
//! disagree (two different lengths, `Transfer-Encoding` in HTTP/1.0, a coding after
//! `chunked`) is a protocol error rather than a guess.

use std::fmt;

pub use crate::http1::{MAX_CHUNK_LINE, MAX_TRAILER_BYTES};

/// The longest response head accepted, status line to the empty line.
pub const MAX_HEAD: usize = 64 * 1024;

/// Why a response could not be framed; its text goes into the summary's `first_error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramingError(pub &'static str);

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// How the body of a response is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: the answer to HEAD, or status 1xx, 204 or 304.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked: follow it with a [`ChunkedBody`].
    Chunked,
    /// Everything until the server closes the connection.
    UntilClose,
}

/// What the generator needs of a response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The status code, 100 to 599.
    pub status: u16,
    /// How the body is delimited.
    pub body: BodyFraming,
    /// Whether the connection may carry the next request (RFC 9112 section 9.3).
    pub keep_alive: bool,
}

/// Parses the head at the start of `buf`. `Ok(None)`: the head is not complete yet (and
/// shorter than [`MAX_HEAD`]); `Ok(Some((head, len)))`: the head is `buf[..len]`.
/// `head_request` says the request was HEAD, whose response has no body whatever it says.
///
/// One pass over the head, a line at a time: only lines that could name a framing field
/// (they start with `c` or `t`) are looked at closely; the others need only not be folded.
pub fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<(Head, usize)>, FramingError> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let mut fields = FramingFields::default();
    let mut status_line: Option<(bool, u16)> = None;
    let mut at = 0;
    let len = loop {
        let Some(lf) = memchr::memchr(b'\n', &window[at..]) else {
            if buf.len() >= MAX_HEAD {
                return Err(FramingError("the response head is longer than 64 KiB"));
            }
            return Ok(None);
        };
        let line = &window[at..at + lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        at += lf + 1;
        match status_line {
            None => status_line = Some(parse_status_line(line)?),
            Some(_) if line.is_empty() => break at,
            Some(_) => fields.visit(line)?,
        }
    };
    let (http11, status) = status_line.expect("a head has a status line");
    fields
        .head(http11, status, head_request)
        .map(|head| Some((head, len)))
}

/// What the framing fields of a head said so far.
#[derive(Default)]
struct FramingFields {
    content_length: Option<u64>,
    /// Transfer codings listed.
    codings: u32,
    /// Whether the last coding listed was chunked.
    last_is_chunked: bool,
    /// `Connection: close`.
    close: bool,
    /// `Connection: keep-alive` (HTTP/1.0).
    keep_alive_token: bool,
}

impl FramingFields {
    /// Looks at one field line.
    fn visit(&mut self, line: &[u8]) -> Result<(), FramingError> {
        let first = line.first().map(u8::to_ascii_lowercase);
        if matches!(first, Some(b' ' | b'\t')) {
            return Err(FramingError("obsolete line folding in the response head"));
        }
        if !matches!(first, Some(b'c' | b't')) {
            return Ok(());
        }
        let colon =
            memchr::memchr(b':', line).ok_or(FramingError("a header line without a colon"))?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.last().is_some_and(|&b| b == b' ' || b == b'\t') {
            // RFC 9112 section 5.1: `Content-Length : 5` must not pass for another field.
            return Err(FramingError("whitespace before the colon of a header name"));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length_list(value).ok_or(FramingError("a malformed Content-Length"))?;
            if self.content_length.is_some_and(|l| l != n) {
                return Err(FramingError("two different Content-Length values"));
            }
            self.content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for coding in value.split(|&b| b == b',').map(trim) {
                if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) {
                    return Err(FramingError("a malformed Transfer-Encoding"));
                }
                if self.last_is_chunked {
                    // RFC 9112 section 6.1: chunked is final and applied once.
                    return Err(FramingError("a coding after chunked in Transfer-Encoding"));
                }
                self.codings += 1;
                self.last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in value.split(|&b| b == b',').map(trim) {
                self.close |= option.eq_ignore_ascii_case(b"close");
                self.keep_alive_token |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        Ok(())
    }

    /// The head these fields frame (RFC 9112 section 6.3).
    fn head(&self, http11: bool, status: u16, head_request: bool) -> Result<Head, FramingError> {
        let no_body =
            head_request || (100..200).contains(&status) || status == 204 || status == 304;
        let body = if no_body {
            BodyFraming::None
        } else if self.codings > 0 {
            if !http11 {
                return Err(FramingError("Transfer-Encoding in an HTTP/1.0 response"));
            }
            // Rule 4: a response whose final coding is not chunked is delimited by the close.
            if self.last_is_chunked {
                BodyFraming::Chunked
            } else {
                BodyFraming::UntilClose
            }
        } else {
            self.content_length
                .map_or(BodyFraming::UntilClose, BodyFraming::Length)
        };
        // With both framings, Transfer-Encoding won; the connection is not trusted further
        // (rule 3).
        let both_framings = self.codings > 0 && self.content_length.is_some();
        let keep_alive = !self.close
            && !both_framings
            && body != BodyFraming::UntilClose
            && (http11 || self.keep_alive_token);
        Ok(Head {
            status,
            body,
            keep_alive,
        })
    }
}

/// `HTTP/1.x SP 3DIGIT [SP reason]`; returns (HTTP/1.1, status).
fn parse_status_line(line: &[u8]) -> Result<(bool, u16), FramingError> {
    let bad = FramingError("a malformed status line");
    let http11 = match line.get(..8) {
        Some(b"HTTP/1.1") => true,
        Some(b"HTTP/1.0") => false,
        _ => return Err(bad),
    };
    let rest = &line[8..];
    if rest.len() < 4 || rest[0] != b' ' || rest.get(4).is_some_and(|&b| b != b' ') {
        return Err(bad);
    }
    let digits = &rest[1..4];
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    let status = digits
        .iter()
        .fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) {
        return Err(bad);
    }
    Ok((http11, status))
}

/// A token character (RFC 9110 section 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `s` without surrounding spaces and tabs.
fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t');
    let end = s.iter().rposition(|&b| b != b' ' && b != b'\t');
    match (start, end) {
        (Some(start), Some(end)) => &s[start..=end],
        _ => &[],
    }
}

/// A Content-Length value: digits that fit in a u64, or a list of identical ones
/// (RFC 9110 section 8.6 lets a recipient accept `42, 42`).
fn parse_length_list(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for element in value.split(|&b| b == b',').map(trim) {
        if element.is_empty() {
            return None;
        }
        let n = element.iter().try_fold(0u64, |n, &b| {
            if !b.is_ascii_digit() {
                return None;
            }
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        })?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

/// Where a chunked body's reader is (RFC 9112 section 7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Reading the chunk-size digits.
    Size,
    /// Past the digits: skipping whitespace and extensions to the line's end.
    Extension,
    /// After the CR of a chunk-size line.
    SizeLf,
    /// Inside a chunk's data: this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataCr,
    /// After the CR that follows a chunk's data.
    DataLf,
    /// After the last chunk: trailer lines up to an empty one.
    Trailer,
    /// The body is complete.
    Done,
}

/// Progress through a chunked body, fed whatever bytes have arrived; the data is handed to
/// the caller in place (never copied) and the framing is checked byte by byte.
#[derive(Clone, Debug)]
pub struct ChunkedBody {
    state: ChunkState,
    /// The chunk size read so far.
    size: u64,
    /// Whether the chunk-size line has a digit yet.
    has_digit: bool,
    /// Bytes of the current chunk-size line, bounded by [`MAX_CHUNK_LINE`].
    line_len: usize,
    /// Bytes of the current trailer line, excluding its CR.
    trailer_line: usize,
    /// Bytes of trailers so far, bounded by [`MAX_TRAILER_BYTES`].
    trailer_bytes: usize,
}

impl Default for ChunkedBody {
    fn default() -> Self {
        ChunkedBody::new()
    }
}

impl ChunkedBody {
    /// A reader at the start of a chunked body.
    pub fn new() -> ChunkedBody {
        ChunkedBody {
            state: ChunkState::Size,
            size: 0,
            has_digit: false,
            line_len: 0,
            trailer_line: 0,
            trailer_bytes: 0,
        }
    }

    /// Reads from `input`, handing each piece of chunk data to `on_data`. Returns how many
    /// bytes were consumed and whether the body is complete; bytes after the end are left
    /// unconsumed.
    pub fn advance(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<(usize, bool), FramingError> {
        let mut at = 0;
        while at < input.len() {
            if let ChunkState::Data(left) = self.state {
                let take =
                    usize::try_from(left).map_or(input.len() - at, |l| l.min(input.len() - at));
                on_data(&input[at..at + take]);
                at += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    ChunkState::DataCr
                } else {
                    ChunkState::Data(left)
                };
                continue;
            }
            if self.state == ChunkState::Done {
                break;
            }
            let b = input[at];
            at += 1;
            self.step(b)?;
        }
        Ok((at, self.state == ChunkState::Done))
    }

    /// One byte of framing (anything but chunk data).
    fn step(&mut self, b: u8) -> Result<(), FramingError> {
        match self.state {
            ChunkState::Size | ChunkState::Extension => {
                self.line_len += 1;
                if self.line_len > MAX_CHUNK_LINE {
                    return Err(FramingError("a chunk-size line is too long"));
                }
                match (self.state, b) {
                    (ChunkState::Size, _) if b.is_ascii_hexdigit() => {
                        let digit = u64::from((b as char).to_digit(16).unwrap_or(0) as u8);
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(digit))
                            .ok_or(FramingError("a chunk size overflows"))?;
                        self.has_digit = true;
                    }
                    (_, b'\r') if self.has_digit => self.state = ChunkState::SizeLf,
                    (_, b'\n') if self.has_digit => self.end_size_line(),
                    (_, b';' | b' ' | b'\t') if self.has_digit => {
                        self.state = ChunkState::Extension
                    }
                    (ChunkState::Extension, b) if b >= 0x20 && b != 0x7f || b == b'\t' => {}
                    _ => return Err(FramingError("a malformed chunk-size line")),
                }
            }
            ChunkState::SizeLf => match b {
                b'\n' => self.end_size_line(),
                _ => return Err(FramingError("a chunk-size line without its LF")),
            },
            ChunkState::DataCr => match b {
                b'\r' => self.state = ChunkState::DataLf,
                b'\n' => self.next_chunk(),
                _ => return Err(FramingError("chunk data longer than its size")),
            },
            ChunkState::DataLf => match b {
                b'\n' => self.next_chunk(),
                _ => return Err(FramingError("chunk data without its CRLF")),
            },
            ChunkState::Trailer => {
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return Err(FramingError("the trailers are too long"));
                }
                match b {
                    b'\n' if self.trailer_line == 0 => self.state = ChunkState::Done,
                    b'\n' => self.trailer_line = 0,
                    // A CR counts only when it is not the one ending the line.
                    b'\r' => {}
                    _ => self.trailer_line += 1,
                }
            }
            ChunkState::Data(_) | ChunkState::Done => unreachable!("handled by advance"),
        }
        Ok(())
    }

    fn end_size_line(&mut self) {
        self.state = if self.size == 0 {
            ChunkState::Trailer
        } else {
            ChunkState::Data(self.size)
        };
    }

    fn next_chunk(&mut self) {
        self.state = ChunkState::Size;
        self.size = 0;
        self.has_digit = false;
        self.line_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &[u8]) -> Head {
        let (head, len) = parse_head(text, false).unwrap().unwrap();
        assert_eq!(len, text.len());
        head
    }

    fn refused(text: &[u8]) -> FramingError {
        parse_head(text, false).unwrap_err()
    }

    #[test]
    fn content_length_response_keeps_the_connection() {
        let h = head(b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 12\r\n\r\n");
        assert_eq!(
            h,
            Head {
                status: 200,
                body: BodyFraming::Length(12),
                keep_alive: true
            }
        );
    }

    #[test]
    fn the_head_ends_at_its_empty_line_and_the_body_is_left() {
        let buf = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let (_, len) = parse_head(buf, false).unwrap().unwrap();
        assert_eq!(&buf[len..], b"ok");
    }

    #[test]
    fn an_incomplete_head_asks_for_more_at_every_split() {
        let full = b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n";
        for split in 0..full.len() {
            assert_eq!(
                parse_head(&full[..split], false),
                Ok(None),
                "split at {split}"
            );
        }
        assert_eq!(head(full).body, BodyFraming::None);
    }

    #[test]
    fn bare_lf_lines_are_accepted() {
        let h = head(b"HTTP/1.1 200 OK\ncontent-length: 0\n\n");
        assert_eq!(h.body, BodyFraming::Length(0));
    }

    #[test]
    fn status_without_reason_phrase_is_accepted() {
        assert_eq!(
            head(b"HTTP/1.1 503\r\ncontent-length: 0\r\n\r\n").status,
            503
        );
    }

    #[test]
    fn chunked_wins_and_the_connection_is_not_reused_with_both_framings() {
        let h = head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!((h.body, h.keep_alive), (BodyFraming::Chunked, false));
    }

    #[test]
    fn a_final_coding_other_than_chunked_reads_until_close() {
        let h = head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
        assert_eq!((h.body, h.keep_alive), (BodyFraming::UntilClose, false));
    }

    #[test]
    fn no_length_reads_until_close() {
        let h = head(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.body, h.keep_alive), (BodyFraming::UntilClose, false));
    }

    #[test]
    fn connection_close_and_http10_defaults_end_the_connection() {
        let close = head(b"HTTP/1.1 200 OK\r\nConnection: foo, close\r\ncontent-length: 0\r\n\r\n");
        assert!(!close.keep_alive);
        assert!(!head(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").keep_alive);
        assert!(
            head(b"HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n")
                .keep_alive
        );
    }

    #[test]
    fn bodyless_statuses_and_head_requests_have_no_body() {
        for text in [
            &b"HTTP/1.1 100 Continue\r\n\r\n"[..],
            b"HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(head(text).body, BodyFraming::None);
        }
        let (h, _) = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!((h.body, h.keep_alive), (BodyFraming::None, true));
    }

    #[test]
    fn identical_repeated_lengths_are_one_length_and_different_ones_are_refused() {
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\ncontent-length: 3\r\n\r\n").body,
            BodyFraming::Length(3)
        );
        refused(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n");
        refused(b"HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\n");
    }

    #[test]
    fn malformed_and_overflowing_lengths_are_refused() {
        for value in ["", "-1", "+1", "0x10", "1 2", "18446744073709551616"] {
            let text = format!("HTTP/1.1 200 OK\r\ncontent-length: {value}\r\n\r\n");
            assert_eq!(
                refused(text.as_bytes()),
                FramingError("a malformed Content-Length"),
                "{value:?}"
            );
        }
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551615\r\n\r\n").body,
            BodyFraming::Length(u64::MAX)
        );
    }

    #[test]
    fn malformed_status_lines_are_refused() {
        for line in [
            &b"HTTP/9 nonsense"[..],
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1 099 Low",
            b"HTTP/1.1 600 High",
            b"http/1.1 200 OK",
            b"HTTP/1.1  200 OK",
            b"HTTP/2 200",
        ] {
            let mut text = line.to_vec();
            text.extend_from_slice(b"\r\n\r\n");
            assert_eq!(
                refused(&text),
                FramingError("a malformed status line"),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn header_lines_that_could_hide_framing_are_refused() {
        refused(b"HTTP/1.1 200 OK\r\ncontent-length : 5\r\n\r\n");
        refused(b"HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\n\r\n");
        refused(b"HTTP/1.1 200 OK\r\ncontent-length 5\r\n\r\n");
        refused(b"HTTP/1.1 200 OK\r\ncontent-length: 1\x002\r\n\r\n");
        refused(b"HTTP/1.1 200 OK\r\nTransfer-Encoding\t: chunked\r\n\r\n");
        refused(b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
        refused(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n");
        refused(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
        );
        refused(b"HTTP/1.1 200 OK\r\ntransfer-encoding: ,chunked\r\n\r\n");
    }

    #[test]
    fn lines_that_cannot_change_the_framing_are_not_judged() {
        let h = head(b"HTTP/1.1 200 OK\r\nx-a: a\x00b\r\nno colon\r\ncontent-length: 1\r\n\r\n");
        assert_eq!(h.body, BodyFraming::Length(1));
    }

    #[test]
    fn a_head_is_bounded_at_64_kib() {
        let mut text = b"HTTP/1.1 200 OK\r\nx-pad: ".to_vec();
        text.resize(MAX_HEAD - 4, b'a');
        text.extend_from_slice(b"\r\n\r\n");
        assert_eq!(text.len(), MAX_HEAD);
        assert!(parse_head(&text, false).unwrap().is_some());

        let mut endless = b"HTTP/1.1 200 OK\r\nx-pad: ".to_vec();
        endless.resize(MAX_HEAD, b'a');
        assert_eq!(
            parse_head(&endless[..MAX_HEAD - 1], false),
            Ok(None),
            "one byte short of the bound: still waiting"
        );
        assert_eq!(
            parse_head(&endless, false),
            Err(FramingError("the response head is longer than 64 KiB"))
        );
    }

    /// Feeds `body` to a reader in two pieces split at `split`; returns the data seen, the
    /// bytes consumed and whether the body completed.
    fn feed_split(body: &[u8], split: usize) -> Result<(Vec<u8>, usize, bool), FramingError> {
        let mut reader = ChunkedBody::new();
        let mut data = Vec::new();
        let (first, done) = reader.advance(&body[..split], |d| data.extend_from_slice(d))?;
        if done {
            return Ok((data, first, true));
        }
        assert_eq!(first, split, "everything before the end is consumed");
        let (second, done) = reader.advance(&body[split..], |d| data.extend_from_slice(d))?;
        Ok((data, first + second, done))
    }

    #[test]
    fn chunked_body_split_at_every_offset_yields_the_same_data() {
        let body = b"3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: t\r\n\r\n";
        for split in 0..=body.len() {
            let (data, consumed, done) = feed_split(body, split).unwrap();
            assert_eq!(data, b"abc0123456789abcdef", "split at {split}");
            assert_eq!((consumed, done), (body.len(), true), "split at {split}");
        }
    }

    #[test]
    fn chunked_body_fed_byte_by_byte_completes() {
        let body = b"5\r\nhello\r\n0\r\n\r\n";
        let mut reader = ChunkedBody::new();
        let mut data = Vec::new();
        for (i, b) in body.iter().enumerate() {
            let (n, done) = reader
                .advance(std::slice::from_ref(b), |d| data.extend_from_slice(d))
                .unwrap();
            assert_eq!(n, 1);
            assert_eq!(done, i == body.len() - 1);
        }
        assert_eq!(data, b"hello");
    }

    #[test]
    fn bytes_after_the_last_chunk_are_left_unconsumed() {
        let body = b"0\r\n\r\nHTTP/1.1 200 OK";
        let (consumed, done) = ChunkedBody::new().advance(body, |_| {}).unwrap();
        assert_eq!((consumed, done), (5, true));
    }

    #[test]
    fn bare_lf_chunk_framing_is_accepted() {
        let (consumed, done) = ChunkedBody::new().advance(b"2\nok\n0\n\n", |_| {}).unwrap();
        assert_eq!((consumed, done), (8, true));
    }

    #[test]
    fn malformed_chunk_framing_is_refused() {
        for body in [
            &b"\r\n"[..],
            b"x\r\n",
            b"3\r\nabcd\r\n",
            b"3\r\nabc\rX",
            b"3\rX",
            b";ext\r\n",
            b"3;ext\x00\r\n",
        ] {
            assert!(
                ChunkedBody::new().advance(body, |_| {}).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn chunk_sizes_that_overflow_are_refused() {
        let err = ChunkedBody::new()
            .advance(b"10000000000000000\r\n", |_| {})
            .unwrap_err();
        assert_eq!(err, FramingError("a chunk size overflows"));
        // The largest size is accepted; the data is then awaited.
        let (n, done) = ChunkedBody::new()
            .advance(b"ffffffffffffffff\r\nabc", |_| {})
            .unwrap();
        assert_eq!((n, done), (21, false));
    }

    #[test]
    fn a_chunk_line_and_the_trailers_are_bounded() {
        let mut line = b"1;".to_vec();
        line.resize(MAX_CHUNK_LINE, b'e');
        assert!(ChunkedBody::new().advance(&line, |_| {}).is_ok());
        line.push(b'e');
        assert_eq!(
            ChunkedBody::new().advance(&line, |_| {}).unwrap_err(),
            FramingError("a chunk-size line is too long")
        );

        let mut trailers = b"0\r\nx-t: ".to_vec();
        trailers.resize(3 + MAX_TRAILER_BYTES, b't');
        assert!(ChunkedBody::new().advance(&trailers, |_| {}).is_ok());
        trailers.push(b't');
        assert_eq!(
            ChunkedBody::new().advance(&trailers, |_| {}).unwrap_err(),
            FramingError("the trailers are too long")
        );
    }
}
