//! Response heads from upstreams.
//!
//! Upstreams are ours, so a little leniency is allowed where it cannot change
//! framing: bare-LF line endings (RFC 9112 2.2) and identical repeated
//! Content-Length values (RFC 9110 8.6). Everything that decides where the body
//! ends, or could inject into the client's response, is still checked; any error
//! here means 502 for the client.

use super::fields::{start_line, ConnectionOptions, Fields, Span};
use super::framing::{parse_content_length_list, CodingVerdict, TransferCodings};
use super::request::MAX_HEADERS;
use super::scan::{HeadScanner, LineEndings};
use super::syntax::{is_field_value_byte, is_underscore_spelling};
use super::{HeadError, Version};

/// How a response's body is delimited (RFC 9112 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseBody {
    /// No body: a response to HEAD, or status 1xx, 204 or 304.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked: decode with [`super::ChunkedDecoder`].
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// Reads one response head that may arrive over many reads; the same contract
/// as [`super::HeadParser`], with the leniencies described in this module.
#[derive(Clone, Debug, Default)]
pub struct ResponseParser {
    scanner: HeadScanner,
}

impl ResponseParser {
    /// A parser at the start of a response.
    pub fn new() -> Self {
        Self::default()
    }

    /// `Ok(None)`: need more bytes; `Ok(Some((head, consumed)))`: a complete head
    /// in `buf[..consumed]`. A head longer than `max_head` is `TooLarge`.
    pub fn parse(
        &mut self,
        buf: &[u8],
        max_head: usize,
    ) -> Result<Option<(ResponseHead, usize)>, HeadError> {
        let Some(bounds) = self.scanner.scan(buf, max_head, LineEndings::CrLfOrLf)? else {
            return Ok(None);
        };
        let bytes = buf[bounds.start..bounds.end].into();
        let head = ResponseHead::parse(bytes, bounds.lines.saturating_sub(1))?;
        Ok(Some((head, bounds.end)))
    }

    /// Forgets any partial progress.
    pub fn reset(&mut self) {
        self.scanner.reset();
    }
}

/// Parses a response head from the start of `buf`, scanning it whole; use a
/// [`ResponseParser`] to resume across reads without rescanning. `Ok(None)`: need
/// more bytes. A 1xx head is returned like any other: read the next head after it.
pub fn parse_response(
    buf: &[u8],
    max_head: usize,
) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    ResponseParser::new().parse(buf, max_head)
}

/// A complete response head from an upstream. It owns a copy of the head bytes;
/// the accessors return slices into it.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    fields: Fields,
    version: Version,
    status: u16,
    reason: Span,
    /// The framing for any request method but HEAD.
    framing: ResponseBody,
    keep_alive: bool,
}

impl ResponseHead {
    /// The status code, 100 to 599.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase as sent; empty when absent or not valid UTF-8.
    pub fn reason(&self) -> &str {
        std::str::from_utf8(self.reason.get(self.fields.bytes())).unwrap_or("")
    }

    /// The protocol version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Every header field, names as sent, in order; values trimmed of OWS.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields.iter()
    }

    /// The first value of the field `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.fields.get(name)
    }

    /// Every value of the field `name` (case-insensitive), in order.
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields.get_all(name)
    }

    /// Whether the upstream connection may be reused after this response: per
    /// version and Connection (RFC 9112 9.3), and never when the body runs until
    /// close or Content-Length came with Transfer-Encoding (RFC 9112 6.3 rule 3).
    /// A length-less response to HEAD is conservatively counted as until-close.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Whether the field `name` must not be forwarded to the client (see
    /// [`super::RequestHead::is_hop_by_hop`]).
    pub fn is_hop_by_hop(&self, name: &str) -> bool {
        self.fields.is_hop_by_hop(name)
    }

    /// How the body is delimited, given the method of the request it answers
    /// (RFC 9112 6.3): HEAD, 1xx, 204 and 304 have none; then chunked; then
    /// Content-Length; else until the connection closes.
    pub fn body(&self, request_method: &str) -> ResponseBody {
        if request_method == "HEAD" {
            ResponseBody::None
        } else {
            self.framing
        }
    }

    /// The head as received, from the status line to the final empty line.
    pub fn as_bytes(&self) -> &[u8] {
        self.fields.bytes()
    }

    fn parse(bytes: Box<[u8]>, field_lines: usize) -> Result<ResponseHead, HeadError> {
        let (line, fields_start) = start_line(&bytes);
        let line = StatusLine::parse(line)?;
        let mut seen = SeenFields::default();
        let fields = Fields::parse(bytes, fields_start, field_lines, MAX_HEADERS, |n, v, _| {
            seen.visit(n, v).map_err(HeadError::Malformed)
        })?;
        let framing = seen.framing(line.version, line.status)?;
        let both_framings = seen.codings.present() && seen.content_length.is_some();
        Ok(ResponseHead {
            version: line.version,
            status: line.status,
            reason: line.reason,
            framing,
            keep_alive: seen.connection.keep_alive(line.version)
                && !both_framings
                && framing != ResponseBody::UntilClose,
            fields,
        })
    }
}

/// `HTTP-version SP status-code SP [ reason-phrase ]` (RFC 9112 4); the second
/// space may be missing when there is no reason.
struct StatusLine {
    version: Version,
    status: u16,
    reason: Span,
}

impl StatusLine {
    fn parse(line: &[u8]) -> Result<StatusLine, HeadError> {
        let bad = HeadError::Malformed("invalid status line");
        let (Some(version), Some(b' ')) = (line.get(..8).and_then(Version::parse), line.get(8))
        else {
            return Err(bad);
        };
        let status = match line.get(9..12) {
            Some(&[a, b, c]) if [a, b, c].iter().all(u8::is_ascii_digit) => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return Err(bad),
        };
        if !(100..=599).contains(&status) {
            return Err(HeadError::Malformed("status code out of range"));
        }
        let reason = match line.get(12..) {
            Some([]) | None => Span::default(),
            Some([b' ', reason @ ..]) => {
                if !reason.iter().all(|&b| is_field_value_byte(b)) {
                    return Err(HeadError::Malformed("control character in reason phrase"));
                }
                if std::str::from_utf8(reason).is_ok() {
                    Span::new(13, line.len())
                } else {
                    Span::default()
                }
            }
            Some(_) => return Err(bad),
        };
        Ok(StatusLine {
            version,
            status,
            reason,
        })
    }
}

/// The framing and connection fields of a response.
#[derive(Default)]
struct SeenFields {
    content_length: Option<u64>,
    codings: TransferCodings,
    connection: ConnectionOptions,
}

impl SeenFields {
    fn visit(&mut self, name: &[u8], value: &[u8]) -> Result<(), &'static str> {
        match name.len() {
            10 if name.eq_ignore_ascii_case(b"connection") => self.connection.add(value)?,
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let length = parse_content_length_list(value).ok_or("invalid Content-Length")?;
                if self.content_length.is_some_and(|l| l != length) {
                    return Err("conflicting Content-Length headers");
                }
                self.content_length = Some(length);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => self.codings.add(value)?,
            // A client that maps `_` to `-` would frame the body we forward by these.
            14 if is_underscore_spelling(name, b"content-length") => {
                return Err("underscore spelling of Content-Length");
            }
            17 if is_underscore_spelling(name, b"transfer-encoding") => {
                return Err("underscore spelling of Transfer-Encoding");
            }
            _ => {}
        }
        Ok(())
    }

    /// RFC 9112 6.3, for any request method but HEAD.
    fn framing(&self, version: Version, status: u16) -> Result<ResponseBody, HeadError> {
        if (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(ResponseBody::None);
        }
        if self.codings.present() {
            if version == Version::Http10 {
                // RFC 9112 6.1: TE in HTTP/1.0 means the framing is faulty.
                return Err(HeadError::Malformed(
                    "Transfer-Encoding in an HTTP/1.0 response",
                ));
            }
            // With Content-Length too, TE wins (RFC 9112 6.3 rule 3) and the
            // connection is not reused (see `keep_alive`). Codings other than
            // chunked cannot be forwarded once TE is stripped, so they are errors.
            return match self.codings.verdict() {
                CodingVerdict::Chunked => Ok(ResponseBody::Chunked),
                _ => Err(HeadError::Malformed(
                    "unsupported Transfer-Encoding in response",
                )),
            };
        }
        Ok(self
            .content_length
            .map_or(ResponseBody::UntilClose, ResponseBody::Length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Result<ResponseHead, HeadError> {
        let (response, consumed) = parse_response(head.as_bytes(), 8192)?.expect("complete head");
        assert_eq!(consumed, head.len());
        Ok(response)
    }

    fn with(fields: &str) -> Result<ResponseHead, HeadError> {
        parse(&format!("HTTP/1.1 200 OK\r\n{fields}\r\n"))
    }

    #[test]
    fn typical_response_exposes_its_parts() {
        let head = with("Content-Type: application/json\r\nContent-Length: 12\r\n").unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.reason(), "OK");
        assert_eq!(head.version(), Version::Http11);
        assert_eq!(head.header("content-type"), Some(&b"application/json"[..]));
        assert_eq!(head.headers().count(), 2);
        assert_eq!(head.body("GET"), ResponseBody::Length(12));
        assert!(head.keep_alive());
    }

    #[test]
    fn bare_lf_line_endings_are_accepted() {
        let head = parse("HTTP/1.1 200 OK\nContent-Length: 0\n\n").unwrap();
        assert_eq!(head.body("GET"), ResponseBody::Length(0));
    }

    #[test]
    fn incomplete_response_needs_more_bytes() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le", 8192)
            .unwrap()
            .is_none());
    }

    #[test]
    fn response_parser_resumes_across_reads() {
        let buf = b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n";
        let mut parser = ResponseParser::new();
        for len in 0..buf.len() {
            assert!(parser.parse(&buf[..len], 8192).unwrap().is_none());
        }
        assert_eq!(parser.parse(buf, 8192).unwrap().unwrap().0.status(), 204);
    }

    #[test]
    fn response_head_over_the_limit_is_too_large() {
        let head = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "v".repeat(100));
        assert_eq!(
            parse_response(head.as_bytes(), 64).err(),
            Some(HeadError::TooLarge)
        );
    }

    #[test]
    fn empty_or_missing_reason_is_accepted() {
        assert_eq!(parse("HTTP/1.1 200 \r\n\r\n").unwrap().reason(), "");
        assert_eq!(parse("HTTP/1.1 200\r\n\r\n").unwrap().reason(), "");
    }

    #[test]
    fn non_utf8_reason_reads_as_empty() {
        let (head, _) = parse_response(b"HTTP/1.1 200 \xff\r\n\r\n", 8192)
            .unwrap()
            .unwrap();
        assert_eq!(head.reason(), "");
    }

    #[test]
    fn invalid_status_lines_are_refused() {
        for head in [
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 099 X\r\n\r\n",
            "HTTP/1.1 600 X\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1  200 OK\r\n\r\n",
            "ICY 200 OK\r\n\r\n",
            "HTTP/1.1 200 O\x00K\r\n\r\n",
        ] {
            assert!(parse(head).is_err(), "{head:?}");
        }
    }

    #[test]
    fn head_request_response_has_no_body() {
        let head = with("Content-Length: 10\r\n").unwrap();
        assert_eq!(head.body("HEAD"), ResponseBody::None);
    }

    #[test]
    fn informational_204_and_304_responses_have_no_body() {
        for status in [
            "100 Continue",
            "101 Switching Protocols",
            "204 No Content",
            "304 Not Modified",
        ] {
            let head = parse(&format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\n\r\n")).unwrap();
            assert_eq!(head.body("GET"), ResponseBody::None, "{status}");
            assert!(head.keep_alive(), "{status}");
        }
    }

    #[test]
    fn chunked_response_is_chunked() {
        assert_eq!(
            with("Transfer-Encoding: chunked\r\n").unwrap().body("GET"),
            ResponseBody::Chunked
        );
    }

    #[test]
    fn content_length_with_transfer_encoding_is_chunked_and_not_kept_alive() {
        let head = with("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n").unwrap();
        assert_eq!(head.body("GET"), ResponseBody::Chunked);
        assert!(!head.keep_alive());
    }

    #[test]
    fn unsupported_transfer_codings_in_a_response_are_refused() {
        assert!(with("Transfer-Encoding: gzip, chunked\r\n").is_err());
        assert!(with("Transfer-Encoding: gzip\r\n").is_err());
    }

    #[test]
    fn transfer_encoding_in_an_http10_response_is_refused() {
        assert!(parse("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }

    #[test]
    fn response_without_length_runs_until_close() {
        let head = with("").unwrap();
        assert_eq!(head.body("GET"), ResponseBody::UntilClose);
        assert!(!head.keep_alive());
    }

    #[test]
    fn invalid_content_length_in_a_response_is_refused() {
        assert!(with("Content-Length: -1\r\n").is_err());
        assert!(with("Content-Length: 5, 6\r\n").is_err());
        assert!(with("Content-Length: 5\r\nContent-Length: 6\r\n").is_err());
    }

    #[test]
    fn identical_repeated_content_lengths_in_a_response_are_accepted() {
        let head = with("Content-Length: 5, 5\r\nContent-Length: 5\r\n").unwrap();
        assert_eq!(head.body("GET"), ResponseBody::Length(5));
    }

    #[test]
    fn underscore_framing_names_in_a_response_are_refused() {
        assert!(with("Content_Length: 5\r\n").is_err());
        assert!(with("Transfer_Encoding: chunked\r\n").is_err());
    }

    #[test]
    fn obs_fold_in_a_response_is_refused() {
        assert!(with("X: a\r\n b\r\n").is_err());
    }

    #[test]
    fn control_bytes_in_a_response_value_are_refused() {
        assert!(with("X: a\rb\r\n").is_err());
        assert!(with("X: a\x00b\r\n").is_err());
    }

    #[test]
    fn connection_close_ends_keep_alive() {
        assert!(!with("Content-Length: 0\r\nConnection: close\r\n")
            .unwrap()
            .keep_alive());
    }

    #[test]
    fn http10_response_keeps_alive_only_when_asked() {
        let plain = parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(!plain.keep_alive());
        let asked = parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        assert!(asked.keep_alive());
    }

    #[test]
    fn response_hop_by_hop_includes_connection_options() {
        let head = with("Connection: X-Trace\r\nContent-Length: 0\r\n").unwrap();
        assert!(head.is_hop_by_hop("x-trace"));
        assert!(head.is_hop_by_hop("transfer-encoding"));
        assert!(!head.is_hop_by_hop("content-type"));
    }
}
