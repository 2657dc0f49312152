//! Request heads: the resumable [`HeadParser`] and the validated [`RequestHead`].

use super::fields::{start_line, ConnectionOptions, Fields, Span};
use super::framing::{parse_content_length, CodingVerdict, TransferCodings};
use super::path::{normalize_path, PathError};
use super::scan::{HeadScanner, LineEndings};
use super::syntax::{
    ascii_str, hex_value, is_tchar, is_underscore_spelling, is_valid_host, list_elements,
};
use super::{BodyFraming, HeadError, Version};

/// Most header fields a request head may carry; more is 431. Bounds the field
/// index (16 bytes a field) and the work of every later linear lookup.
pub const MAX_HEADERS: usize = 256;

/// Reads one request head that may arrive over many reads.
///
/// Feed it the connection's read buffer after every read; the buffer must start
/// at the same byte each time (the start of this request) and only grow. It
/// remembers how far it has scanned, so a head trickling in byte by byte costs
/// linear time. After it returns a head or an error it is reset, ready for the
/// next request; [`HeadParser::reset`] does the same explicitly (for example
/// after the caller drops or compacts the buffer).
///
/// [`HeadParser::new`] holds a request to the rules for the gateway's listeners; the
/// builder methods relax or tighten the ones that depend on the server's role.
#[derive(Clone, Debug)]
pub struct HeadParser {
    scanner: HeadScanner,
    /// Whether the request-line of the head in progress was already checked.
    line_checked: bool,
    /// How far the early request-line check has looked for its line feed, so a line
    /// trickling in byte by byte is searched once in all, not once per read.
    line_scanned: usize,
    rules: HeadRules,
}

/// The checks that depend on what kind of server reads the head; the grammar and the
/// framing rules never do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct HeadRules {
    /// Refuse an HTTP/1.1 request without Host (RFC 9112 3.2).
    require_host: bool,
    /// Most header fields accepted; more is 431.
    max_headers: usize,
}

impl Default for HeadParser {
    fn default() -> Self {
        HeadParser {
            scanner: HeadScanner::default(),
            line_checked: false,
            line_scanned: 0,
            rules: HeadRules {
                require_host: true,
                max_headers: MAX_HEADERS,
            },
        }
    }
}

impl HeadParser {
    /// A parser at the start of a request, with the gateway's rules: Host required on
    /// HTTP/1.1, at most [`MAX_HEADERS`] fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an HTTP/1.1 request without a Host field is refused (the default).
    ///
    /// RFC 9112 3.2 makes Host mandatory because a server may answer for many
    /// hosts. Servers that answer for exactly one, whatever name the client used
    /// (the admin API, the load-test upstream), turn this off and see an empty
    /// [`RequestHead::host`] instead. A Host that is present is still validated,
    /// and an absolute-form target still supplies it.
    pub fn require_host(mut self, required: bool) -> Self {
        self.rules.require_host = required;
        self
    }

    /// Lowers the cap on header fields from [`MAX_HEADERS`] to `max` (a larger `max`
    /// is held to [`MAX_HEADERS`]); a head with more fields is `TooLarge`.
    pub fn max_headers(mut self, max: usize) -> Self {
        self.rules.max_headers = max.min(MAX_HEADERS);
        self
    }

    /// `Ok(None)`: need more bytes. `Ok(Some((head, consumed)))`: a complete,
    /// valid head occupying `buf[..consumed]` (leading empty lines included); the
    /// body, if any, starts at `consumed`. `max_head` is `[limits].max_header_bytes`:
    /// a head longer than that is `TooLarge`, even while still incomplete.
    pub fn parse(
        &mut self,
        buf: &[u8],
        max_head: usize,
    ) -> Result<Option<(RequestHead, usize)>, HeadError> {
        let Some(bounds) = self.scanner.scan(buf, max_head, LineEndings::CrLf)? else {
            self.check_request_line_early(buf)?;
            return Ok(None);
        };
        self.line_checked = false;
        self.line_scanned = 0;
        let bytes = buf[bounds.start..bounds.end].into();
        let head = RequestHead::parse(bytes, bounds.lines.saturating_sub(1), self.rules)?;
        Ok(Some((head, bounds.end)))
    }

    /// Forgets any partial progress.
    pub fn reset(&mut self) {
        self.scanner.reset();
        self.line_checked = false;
        self.line_scanned = 0;
    }

    /// Refuses a bad request-line as soon as it is complete, rather than waiting for a
    /// blank line that an HTTP/0.9 client (`GET /` CRLF) will never send.
    fn check_request_line_early(&mut self, buf: &[u8]) -> Result<(), HeadError> {
        if self.line_checked {
            return Ok(());
        }
        // Leading empty lines may precede the request-line (RFC 9112 2.2); the scanner has
        // already refused bare LFs among them.
        let mut start = 0;
        while buf[start..].starts_with(b"\r\n") {
            start += 2;
        }
        let from = self.line_scanned.max(start);
        if !buf[from..].contains(&b'\n') {
            self.line_scanned = buf.len();
            return Ok(());
        }
        let (line, _) = start_line(&buf[start..]);
        let result = RequestLine::parse(line).map(|_| ());
        if result.is_err() {
            self.reset();
        } else {
            self.line_checked = true;
        }
        result
    }
}

/// A complete, validated request head. It owns a copy of the head bytes; the
/// accessors return slices into it.
#[derive(Clone, Debug)]
pub struct RequestHead {
    fields: Fields,
    method: Span,
    target: Span,
    /// Empty for an absolute-form target with an empty path, which means `/`.
    path: Span,
    /// The normalized path, set by [`RequestHead::normalize_path`] only when it differs
    /// from the raw one, so an ordinary path costs no allocation.
    normalized: Option<Box<str>>,
    query: Option<Span>,
    version: Version,
    /// The Host value; for an HTTP/1.0 absolute-form request without Host, the
    /// target's authority; otherwise empty when absent.
    host: Span,
    body: BodyFraming,
    keep_alive: bool,
    expects_continue: bool,
    upgrade: bool,
}

impl RequestHead {
    /// The method, case-sensitive as sent (RFC 9110 9.1).
    pub fn method(&self) -> &str {
        ascii_str(self.method.get(self.fields.bytes()))
    }

    /// The raw request-target, exactly as sent.
    pub fn target(&self) -> &str {
        ascii_str(self.target.get(self.fields.bytes()))
    }

    /// The path without the query: the normalized one once [`RequestHead::normalize_path`]
    /// has run (what routing, auth and the upstream see), the raw one before. For an
    /// absolute-form target it is the path part (`/` when empty); for `OPTIONS *` it is `*`.
    pub fn path(&self) -> &str {
        match &self.normalized {
            Some(normalized) => normalized,
            None => self.raw_path(),
        }
    }

    /// The path exactly as sent (percent-encoding and dot segments untouched).
    pub fn raw_path(&self) -> &str {
        if self.path.is_empty() {
            "/"
        } else {
            ascii_str(self.path.get(self.fields.bytes()))
        }
    }

    /// Brings the path to its normal form (see [`normalize_path`]) so that [`RequestHead::path`]
    /// returns it from now on; the query is left untouched. The asterisk-form `*` of
    /// `OPTIONS *` has no path to normalize. On error the path is left as sent.
    pub fn normalize_path(&mut self, merge_slashes: bool) -> Result<(), PathError> {
        let raw = self.raw_path();
        if raw == "*" {
            return Ok(());
        }
        self.normalized = match normalize_path(raw, merge_slashes)? {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(normal) => Some(normal.into_boxed_str()),
        };
        Ok(())
    }

    /// The query after the first `?` (possibly empty), or `None` without a `?`.
    pub fn query(&self) -> Option<&str> {
        self.query.map(|q| ascii_str(q.get(self.fields.bytes())))
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

    /// The validated Host value (`uri-host [":" port]`), as sent. Empty when an
    /// HTTP/1.1 client sent an empty Host (RFC 9112 3.2 allows it) or a client sent
    /// none where none is required (HTTP/1.0, or [`HeadParser::require_host`] off);
    /// for an absolute-form target without Host, the authority.
    pub fn host(&self) -> &str {
        ascii_str(self.host.get(self.fields.bytes()))
    }

    /// How the body is framed. A request without Content-Length or
    /// Transfer-Encoding has no body (RFC 9112 6.3, rule 7).
    pub fn body(&self) -> BodyFraming {
        self.body
    }

    /// Whether the connection may carry another request after this one
    /// (RFC 9112 9.3): HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
    /// `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Whether the client waits for `100 Continue` before sending the body
    /// (RFC 9110 10.1.1; ignored for HTTP/1.0 as that section requires).
    pub fn expects_continue(&self) -> bool {
        self.expects_continue
    }

    /// Whether this is an HTTP/1.1 upgrade request: an Upgrade field together with
    /// the `upgrade` connection option (RFC 9110 7.8).
    pub fn is_upgrade(&self) -> bool {
        self.upgrade
    }

    /// Whether the field `name` must not be forwarded: Connection, Proxy-Connection,
    /// Keep-Alive, TE, Transfer-Encoding, Upgrade, Proxy-Authenticate,
    /// Proxy-Authorization, and any name listed in Connection (RFC 9110 7.6.1).
    pub fn is_hop_by_hop(&self, name: &str) -> bool {
        self.fields.is_hop_by_hop(name)
    }

    /// Whether the method is idempotent (RFC 9110 9.2.2), so safe to retry.
    pub fn is_idempotent(&self) -> bool {
        matches!(
            self.method(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        )
    }

    /// The head exactly as received, from the request-line to the final CRLF.
    pub fn as_bytes(&self) -> &[u8] {
        self.fields.bytes()
    }

    /// Validates a complete head (`bytes` ends with the empty line).
    fn parse(
        bytes: Box<[u8]>,
        field_lines: usize,
        rules: HeadRules,
    ) -> Result<RequestHead, HeadError> {
        let (line, fields_start) = start_line(&bytes);
        let line = RequestLine::parse(line)?;
        let method = line.method.get(&bytes);
        if method == b"CONNECT" {
            // Tunnels are out of scope for this gateway.
            return Err(HeadError::NotImplemented("CONNECT is not supported"));
        }
        let target = Target::parse(line.target.get(&bytes), method)?;
        let target_start = line.target.start();

        let mut seen = SeenFields::default();
        let fields = Fields::parse(
            bytes,
            fields_start,
            field_lines,
            rules.max_headers,
            |n, v, s| seen.visit(n, v, s).map_err(HeadError::Malformed),
        )?;

        let body = seen.framing(line.version)?;
        let authority = target.authority.map(|a| a.offset(target_start));
        let host = match (seen.host, authority) {
            (None, _) if rules.require_host && line.version == Version::Http11 => {
                return Err(HeadError::Malformed("missing Host header"));
            }
            (Some(host), Some(authority))
                if !host
                    .get(fields.bytes())
                    .eq_ignore_ascii_case(authority.get(fields.bytes())) =>
            {
                // RFC 9112 3.2.2 lets a proxy ignore Host here; an origin-facing
                // gateway that routes on Host must not see two different answers.
                return Err(HeadError::Malformed(
                    "Host does not match the request-target authority",
                ));
            }
            (Some(host), _) => host,
            (None, authority) => authority.unwrap_or_default(),
        };
        if seen.connection.lists_end_to_end {
            return Err(HeadError::Malformed(
                "Connection lists Content-Length or Host",
            ));
        }
        let http11 = line.version == Version::Http11;
        Ok(RequestHead {
            method: line.method,
            target: line.target,
            path: target.path.offset(target_start),
            normalized: None,
            query: target.query.map(|q| q.offset(target_start)),
            version: line.version,
            host,
            body,
            keep_alive: seen.connection.keep_alive(line.version),
            expects_continue: http11 && seen.expects_continue,
            upgrade: http11 && seen.upgrade && seen.connection.upgrade,
            fields,
        })
    }
}

/// `method SP request-target SP HTTP-version` (RFC 9112 3), single spaces only.
struct RequestLine {
    method: Span,
    target: Span,
    version: Version,
}

impl RequestLine {
    fn parse(line: &[u8]) -> Result<RequestLine, HeadError> {
        let method_end = line
            .iter()
            .position(|&b| !is_tchar(b))
            .unwrap_or(line.len());
        match line.get(method_end) {
            Some(b' ') if method_end > 0 => {}
            None if method_end > 0 => {
                return Err(HeadError::Malformed(
                    "request line without a request-target",
                ));
            }
            _ => return Err(HeadError::Malformed("invalid method")),
        }
        let target_start = method_end + 1;
        let Some(target_len) = line[target_start..].iter().position(|&b| b == b' ') else {
            // `GET /` alone is an HTTP/0.9 request line.
            return Err(HeadError::Malformed("request line without an HTTP version"));
        };
        if target_len == 0 {
            return Err(HeadError::Malformed("empty request-target"));
        }
        let target_end = target_start + target_len;
        let version = &line[target_end + 1..];
        let version = Version::parse(version).ok_or(HeadError::Malformed(
            if matches!(version, [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit())
            {
                "unsupported HTTP version"
            } else {
                "invalid HTTP version"
            },
        ))?;
        Ok(RequestLine {
            method: Span::new(0, method_end),
            target: Span::new(target_start, target_end),
            version,
        })
    }
}

/// The parts of a request-target, as spans relative to the target's start.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    path: Span,
    query: Option<Span>,
    /// The authority of an absolute-form target.
    authority: Option<Span>,
}

impl Target {
    /// Accepts origin-form, absolute-form with an `http`/`https` scheme, and
    /// asterisk-form for OPTIONS (RFC 9112 3.2). Authority-form belongs to CONNECT,
    /// which is refused before this.
    fn parse(target: &[u8], method: &[u8]) -> Result<Target, HeadError> {
        check_target_bytes(target)?;
        if target[0] == b'/' {
            return Ok(Target::split_path(target, 0, None));
        }
        if target == b"*" {
            if method != b"OPTIONS" {
                return Err(HeadError::Malformed(
                    "asterisk-form request-target is only for OPTIONS",
                ));
            }
            return Ok(Target {
                path: Span::new(0, 1),
                query: None,
                authority: None,
            });
        }
        let scheme_end = target.iter().position(|&b| b == b':').unwrap_or(0);
        if !target[scheme_end..].starts_with(b"://") || !is_scheme(&target[..scheme_end]) {
            return Err(HeadError::Malformed(
                "request-target is neither origin-form nor absolute-form",
            ));
        }
        let scheme = &target[..scheme_end];
        if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
            return Err(HeadError::Malformed(
                "request-target scheme is not http or https",
            ));
        }
        let authority_start = scheme_end + 3;
        let authority_end = target[authority_start..]
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .map_or(target.len(), |i| authority_start + i);
        let authority = &target[authority_start..authority_end];
        if authority.contains(&b'@') {
            // RFC 9110 4.2.4: userinfo in an http(s) URI is an error.
            return Err(HeadError::Malformed("userinfo in request-target"));
        }
        if !is_valid_host(authority) {
            // Includes an empty host, which RFC 9110 4.2.1 says to reject.
            return Err(HeadError::Malformed("invalid authority in request-target"));
        }
        Ok(Target::split_path(
            target,
            authority_end,
            Some(Span::new(authority_start, authority_end)),
        ))
    }

    fn split_path(target: &[u8], path_start: usize, authority: Option<Span>) -> Target {
        match target[path_start..].iter().position(|&b| b == b'?') {
            Some(q) => Target {
                path: Span::new(path_start, path_start + q),
                query: Some(Span::new(path_start + q + 1, target.len())),
                authority,
            },
            None => Target {
                path: Span::new(path_start, target.len()),
                query: None,
                authority,
            },
        }
    }
}

/// `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` (RFC 3986 3.1).
fn is_scheme(scheme: &[u8]) -> bool {
    scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// Request-target bytes: visible ASCII only (RFC 3986 allows no raw spaces,
/// controls or non-ASCII), no fragment (`#` is never sent, RFC 9112 3.2), and
/// every `%` followed by two hex digits (RFC 3986 2.1), so that we and the
/// upstream cannot decode the same target differently.
fn check_target_bytes(target: &[u8]) -> Result<(), HeadError> {
    let mut i = 0;
    while i < target.len() {
        match target[i] {
            b'#' => return Err(HeadError::Malformed("fragment in request-target")),
            b'%' => {
                let valid = target.len() > i + 2
                    && hex_value(target[i + 1]).is_some()
                    && hex_value(target[i + 2]).is_some();
                if !valid {
                    return Err(HeadError::Malformed(
                        "invalid percent-encoding in request-target",
                    ));
                }
                i += 3;
            }
            0x21..=0x7e => i += 1,
            _ => return Err(HeadError::Malformed("invalid character in request-target")),
        }
    }
    Ok(())
}

/// The fields that carry meaning for framing, routing and the connection,
/// collected while the field lines are read.
#[derive(Default)]
struct SeenFields {
    content_length: Option<u64>,
    codings: TransferCodings,
    host: Option<Span>,
    connection: ConnectionOptions,
    expects_continue: bool,
    upgrade: bool,
}

impl SeenFields {
    fn visit(&mut self, name: &[u8], value: &[u8], value_span: Span) -> Result<(), &'static str> {
        // Dispatch on length first: most fields are none of these.
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                if self.host.is_some() {
                    return Err("multiple Host headers");
                }
                if !value.is_empty() && !is_valid_host(value) {
                    return Err("invalid Host header");
                }
                self.host = Some(value_span);
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                self.expects_continue |=
                    list_elements(value).any(|e| e.eq_ignore_ascii_case(b"100-continue"));
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => self.upgrade |= !value.is_empty(),
            10 if name.eq_ignore_ascii_case(b"connection") => self.connection.add(value)?,
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                // Repeats are refused even when identical (RFC 9110 8.6 allows
                // either); a list like `5, 10` fails the digit check.
                if self.content_length.is_some() {
                    return Err("multiple Content-Length headers");
                }
                self.content_length =
                    Some(parse_content_length(value).ok_or("invalid Content-Length")?);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => self.codings.add(value)?,
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

    /// The body framing, from RFC 9112 6.1 and 6.3, refusing every ambiguity.
    fn framing(&self, version: Version) -> Result<BodyFraming, HeadError> {
        if !self.codings.present() {
            return Ok(self
                .content_length
                .map_or(BodyFraming::None, BodyFraming::Length));
        }
        if self.content_length.is_some() {
            // RFC 9112 6.3 rule 3 lets a server prefer TE; two hops that disagree
            // on this are the classic smuggling shape, so refuse it.
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if version == Version::Http10 {
            // RFC 9112 6.1: an HTTP/1.0 message with TE has faulty framing.
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        match self.codings.verdict() {
            CodingVerdict::Chunked => Ok(BodyFraming::Chunked),
            CodingVerdict::Unsupported => Err(HeadError::NotImplemented(
                "transfer coding other than chunked",
            )),
            // RFC 9112 6.3 rule 4: chunked not final in a request is a 400.
            CodingVerdict::Invalid | CodingVerdict::Absent => Err(HeadError::Malformed(
                "Transfer-Encoding must end with a single chunked",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8192;

    fn parse(head: &str) -> Result<RequestHead, HeadError> {
        parse_bytes(head.as_bytes())
    }

    fn parse_bytes(head: &[u8]) -> Result<RequestHead, HeadError> {
        let (request, consumed) = HeadParser::new()
            .parse(head, MAX)?
            .expect("test heads are complete");
        assert_eq!(consumed, head.len());
        Ok(request)
    }

    #[test]
    fn http_0_9_request_line_is_refused_before_the_head_ends() {
        let mut parser = HeadParser::new();
        assert!(matches!(parser.parse(b"GET /", MAX), Ok(None)));
        assert!(matches!(
            parser.parse(b"GET /\r\n", MAX),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn request_line_trickled_byte_by_byte_is_checked_once_complete() {
        for (line, refused) in [
            (&b"GET /a/b?c=d HTTP/1.1\r\n"[..], false),
            (&b"\r\nGET / HTTP/1.1\r\n"[..], false),
            (&b"GET /only-http-0.9\r\n"[..], true),
        ] {
            let mut parser = HeadParser::new();
            let mut outcome = Ok(None);
            for end in 1..=line.len() {
                outcome = parser.parse(&line[..end], 8192);
                if outcome.is_err() {
                    assert_eq!(end, line.len(), "refused before the line ended");
                }
            }
            assert_eq!(
                outcome.is_err(),
                refused,
                "{:?}",
                String::from_utf8_lossy(line)
            );
            if !refused {
                assert!(parser.line_checked, "a complete good line is remembered");
            }
        }
    }

    #[test]
    fn valid_request_line_waits_for_the_rest_of_the_head() {
        let mut parser = HeadParser::new();
        assert!(matches!(
            parser.parse(b"\r\nGET / HTTP/1.1\r\n", MAX),
            Ok(None)
        ));
        let done = parser.parse(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", MAX);
        assert!(matches!(done, Ok(Some(_))));
    }

    /// A GET with `Host: a` and the given extra field lines.
    fn get_with(fields: &str) -> Result<RequestHead, HeadError> {
        parse(&format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n"))
    }

    fn assert_malformed(result: Result<RequestHead, HeadError>) {
        match result {
            Err(HeadError::Malformed(_)) => {}
            other => panic!(
                "expected a 400, got {:?}",
                other.map(|h| h.as_bytes().to_vec())
            ),
        }
    }

    fn assert_not_implemented(result: Result<RequestHead, HeadError>) {
        assert!(
            matches!(result, Err(HeadError::NotImplemented(_))),
            "{:?}",
            result.err()
        );
    }

    // --- what a valid head yields ---

    #[test]
    fn typical_get_exposes_its_parts() {
        let head = parse(
            "GET /v1/models?limit=5&x=%20 HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n\r\n",
        )
        .unwrap();
        assert_eq!(head.method(), "GET");
        assert_eq!(head.target(), "/v1/models?limit=5&x=%20");
        assert_eq!(head.path(), "/v1/models");
        assert_eq!(head.query(), Some("limit=5&x=%20"));
        assert_eq!(head.version(), Version::Http11);
        assert_eq!(head.host(), "api.example.com");
        assert_eq!(head.body(), BodyFraming::None);
        assert!(head.keep_alive());
        assert!(!head.expects_continue());
        assert!(!head.is_upgrade());
    }

    #[test]
    fn headers_keep_order_and_names_as_sent() {
        let head = get_with("X-One: 1\r\nx-two:2\r\n").unwrap();
        let all: Vec<_> = head.headers().collect();
        assert_eq!(all, [("Host", &b"a"[..]), ("X-One", b"1"), ("x-two", b"2")]);
        assert_eq!(head.header("X-TWO"), Some(&b"2"[..]));
    }

    #[test]
    fn empty_query_is_some_empty_string() {
        let head = parse("GET /a? HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(head.path(), "/a");
        assert_eq!(head.query(), Some(""));
    }

    #[test]
    fn content_length_frames_the_body() {
        let head = get_with("Content-Length: 42\r\n").unwrap();
        assert_eq!(head.body(), BodyFraming::Length(42));
    }

    #[test]
    fn chunked_frames_the_body_case_insensitively() {
        let head = get_with("Transfer-Encoding: Chunked\r\n").unwrap();
        assert_eq!(head.body(), BodyFraming::Chunked);
    }

    #[test]
    fn consumed_includes_skipped_leading_empty_lines() {
        let buf = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nBODY";
        let (head, consumed) = HeadParser::new().parse(buf, MAX).unwrap().unwrap();
        assert_eq!(consumed, buf.len() - 4);
        assert_eq!(head.method(), "GET");
        assert!(head.as_bytes().starts_with(b"GET"));
    }

    #[test]
    fn head_split_over_many_reads_parses_once_complete() {
        let buf = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        let mut parser = HeadParser::new();
        let head_len = buf.len() - 3;
        for len in 0..head_len {
            assert!(
                parser.parse(&buf[..len], MAX).unwrap().is_none(),
                "at {len}"
            );
        }
        let (head, consumed) = parser.parse(buf, MAX).unwrap().unwrap();
        assert_eq!(consumed, head_len);
        assert_eq!(head.body(), BodyFraming::Length(3));
    }

    #[test]
    fn parser_is_ready_for_the_next_request_after_a_head() {
        let mut parser = HeadParser::new();
        let first = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
        let second = b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
        parser.parse(first, MAX).unwrap().unwrap();
        let (head, _) = parser.parse(second, MAX).unwrap().unwrap();
        assert_eq!(head.path(), "/2");
    }

    #[test]
    fn reset_forgets_partial_progress() {
        let mut parser = HeadParser::new();
        assert!(parser.parse(b"GET /1 HTTP/1.1\r\n", MAX).unwrap().is_none());
        parser.reset();
        let (head, _) = parser
            .parse(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n", MAX)
            .unwrap()
            .unwrap();
        assert_eq!(head.path(), "/2");
    }

    #[test]
    fn http10_without_host_is_accepted() {
        let head = parse("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(head.version(), Version::Http10);
        assert_eq!(head.host(), "");
    }

    #[test]
    fn empty_host_on_http11_is_accepted_for_origin_form() {
        let head = parse("GET / HTTP/1.1\r\nHost:\r\n\r\n").unwrap();
        assert_eq!(head.host(), "");
    }

    #[test]
    fn absolute_form_yields_path_query_and_matching_host() {
        let head =
            parse("GET http://Example.com:8080/p/q?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n")
                .unwrap();
        assert_eq!(head.path(), "/p/q");
        assert_eq!(head.query(), Some("x=1"));
        assert_eq!(head.host(), "example.com:8080");
        assert_eq!(head.target(), "http://Example.com:8080/p/q?x=1");
    }

    #[test]
    fn absolute_form_with_empty_path_has_path_slash() {
        let head = parse("GET https://a?x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(head.path(), "/");
        assert_eq!(head.query(), Some("x"));
    }

    #[test]
    fn absolute_form_on_http10_without_host_takes_host_from_authority() {
        let head = parse("GET http://a.example/ HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(head.host(), "a.example");
    }

    #[test]
    fn asterisk_form_is_accepted_for_options() {
        let head = parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(head.path(), "*");
        assert_eq!(head.query(), None);
    }

    #[test]
    fn normalized_path_replaces_the_raw_one_and_leaves_the_query() {
        let mut head =
            parse("GET /public/%2e%2E/api/x?a=/../b HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(head.path(), "/public/%2e%2E/api/x");
        head.normalize_path(true).unwrap();
        assert_eq!(head.path(), "/api/x");
        assert_eq!(head.raw_path(), "/public/%2e%2E/api/x");
        assert_eq!(head.query(), Some("a=/../b"));
        assert_eq!(head.target(), "/public/%2e%2E/api/x?a=/../b");
    }

    #[test]
    fn ordinary_path_needs_no_normalized_copy() {
        let mut head = get_with("").unwrap();
        head.normalize_path(true).unwrap();
        assert!(head.normalized.is_none());
        assert_eq!(head.path(), "/");
    }

    #[test]
    fn absolute_form_path_part_is_normalized() {
        let mut head = parse("GET http://a/x/./y/../z?q HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        head.normalize_path(true).unwrap();
        assert_eq!(head.path(), "/x/z");
        assert_eq!(head.query(), Some("q"));
        let mut head = parse("GET http://a HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        head.normalize_path(true).unwrap();
        assert_eq!(head.path(), "/");
    }

    #[test]
    fn asterisk_form_is_left_alone_by_normalization() {
        let mut head = parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        head.normalize_path(true).unwrap();
        assert_eq!(head.path(), "*");
    }

    #[test]
    fn refused_path_keeps_the_raw_path() {
        let mut head = parse("GET /a/..;/b HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(
            head.normalize_path(true),
            Err(PathError::DotSegmentParameters)
        );
        assert_eq!(head.path(), "/a/..;/b");
    }

    #[test]
    fn connection_close_ends_keep_alive_on_http11() {
        assert!(!get_with("Connection: close\r\n").unwrap().keep_alive());
    }

    #[test]
    fn http10_keeps_alive_only_when_asked() {
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive());
        let head = parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(head.keep_alive());
    }

    #[test]
    fn expect_100_continue_is_recognised_on_http11_only() {
        assert!(get_with("Expect: 100-Continue\r\n")
            .unwrap()
            .expects_continue());
        let head =
            parse("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").unwrap();
        assert!(!head.expects_continue());
    }

    #[test]
    fn upgrade_needs_the_upgrade_connection_option() {
        assert!(get_with("Connection: Upgrade\r\nUpgrade: websocket\r\n")
            .unwrap()
            .is_upgrade());
        assert!(!get_with("Upgrade: websocket\r\n").unwrap().is_upgrade());
    }

    #[test]
    fn upgrade_is_ignored_on_http10() {
        let head =
            parse("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").unwrap();
        assert!(!head.is_upgrade());
    }

    #[test]
    fn hop_by_hop_covers_fixed_names_and_connection_options() {
        let head = get_with("Connection: X-Private\r\n").unwrap();
        assert!(head.is_hop_by_hop("x-private"));
        assert!(head.is_hop_by_hop("Keep-Alive"));
        assert!(!head.is_hop_by_hop("Authorization"));
    }

    #[test]
    fn idempotent_methods_follow_rfc_9110() {
        for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            let head = parse(&format!("{method} / HTTP/1.1\r\nHost: a\r\n\r\n")).unwrap();
            assert!(head.is_idempotent(), "{method}");
        }
        for method in ["POST", "PATCH", "get"] {
            let head = parse(&format!("{method} / HTTP/1.1\r\nHost: a\r\n\r\n")).unwrap();
            assert!(!head.is_idempotent(), "{method}");
        }
    }

    #[test]
    fn underscore_names_other_than_framing_fields_pass() {
        let head = get_with("X_Custom: 1\r\n").unwrap();
        assert_eq!(head.header("x_custom"), Some(&b"1"[..]));
    }

    #[test]
    fn obs_text_in_a_header_value_is_accepted() {
        let head = parse_bytes(b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n").unwrap();
        assert_eq!(head.header("x"), Some("café".as_bytes()));
    }

    // --- framing refusals ---

    #[test]
    fn content_length_with_transfer_encoding_is_refused() {
        assert_malformed(get_with(
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        ));
    }

    #[test]
    fn two_different_content_lengths_are_refused() {
        assert_malformed(get_with("Content-Length: 5\r\nContent-Length: 10\r\n"));
    }

    #[test]
    fn repeated_identical_content_lengths_are_refused() {
        assert_malformed(get_with("Content-Length: 5\r\nContent-Length: 5\r\n"));
    }

    #[test]
    fn content_length_list_is_refused() {
        assert_malformed(get_with("Content-Length: 5, 10\r\n"));
        assert_malformed(get_with("Content-Length: 5, 5\r\n"));
    }

    #[test]
    fn content_length_with_a_sign_is_refused() {
        assert_malformed(get_with("Content-Length: +5\r\n"));
        assert_malformed(get_with("Content-Length: -5\r\n"));
    }

    #[test]
    fn content_length_in_hex_is_refused() {
        assert_malformed(get_with("Content-Length: 0x10\r\n"));
    }

    #[test]
    fn content_length_with_inner_space_is_refused() {
        assert_malformed(get_with("Content-Length: 1 0\r\n"));
    }

    #[test]
    fn empty_content_length_is_refused() {
        assert_malformed(get_with("Content-Length:\r\n"));
    }

    #[test]
    fn overflowing_content_length_is_refused() {
        assert_malformed(get_with("Content-Length: 18446744073709551616\r\n"));
    }

    #[test]
    fn coding_list_ending_in_chunked_is_not_implemented() {
        assert_not_implemented(get_with("Transfer-Encoding: gzip, chunked\r\n"));
    }

    #[test]
    fn coding_list_split_over_fields_is_one_list() {
        assert_not_implemented(get_with(
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        ));
        assert_malformed(get_with(
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
        ));
    }

    #[test]
    fn chunked_not_last_is_refused() {
        assert_malformed(get_with("Transfer-Encoding: chunked, gzip\r\n"));
    }

    #[test]
    fn chunked_twice_is_refused() {
        assert_malformed(get_with("Transfer-Encoding: chunked, chunked\r\n"));
    }

    #[test]
    fn xchunked_is_refused() {
        assert_malformed(get_with("Transfer-Encoding: xchunked\r\n"));
    }

    #[test]
    fn transfer_encoding_with_control_bytes_is_refused() {
        assert_malformed(parse_bytes(
            b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n",
        ));
        assert_malformed(get_with("Transfer-Encoding: chun\tked\r\n"));
    }

    #[test]
    fn transfer_encoding_with_a_leading_comma_is_refused() {
        assert_malformed(get_with("Transfer-Encoding: , chunked\r\n"));
    }

    #[test]
    fn empty_transfer_encoding_is_refused() {
        assert_malformed(get_with("Transfer-Encoding:\r\n"));
    }

    #[test]
    fn transfer_encoding_on_http10_is_refused() {
        assert_malformed(parse(
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ));
    }

    #[test]
    fn underscore_transfer_encoding_is_refused() {
        assert_malformed(get_with("Transfer_Encoding: chunked\r\n"));
    }

    #[test]
    fn underscore_content_length_is_refused() {
        assert_malformed(get_with("Content_Length: 5\r\n"));
    }

    #[test]
    fn connection_naming_content_length_is_refused() {
        assert_malformed(get_with(
            "Connection: Content-Length\r\nContent-Length: 1\r\n",
        ));
    }

    #[test]
    fn invalid_connection_option_is_refused() {
        assert_malformed(get_with("Connection: close;x\r\n"));
    }

    // --- field-line refusals ---

    #[test]
    fn whitespace_between_name_and_colon_is_refused() {
        assert_malformed(get_with("Transfer-Encoding : chunked\r\n"));
    }

    #[test]
    fn obs_fold_is_refused() {
        assert_malformed(get_with("X-A: 1\r\n  continued\r\n"));
    }

    #[test]
    fn whitespace_before_the_first_field_is_refused() {
        assert_malformed(parse("GET / HTTP/1.1\r\n Host: a\r\n\r\n"));
    }

    #[test]
    fn bare_lf_after_a_field_is_refused() {
        assert_malformed(parse("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"));
    }

    #[test]
    fn bare_lf_after_the_request_line_is_refused() {
        assert_malformed(parse("GET / HTTP/1.1\nHost: a\r\n\r\n"));
    }

    #[test]
    fn bare_lf_terminating_the_head_is_refused() {
        assert_malformed(parse("GET / HTTP/1.1\r\nHost: a\r\n\n"));
    }

    #[test]
    fn bare_cr_in_a_header_value_is_refused() {
        assert_malformed(get_with("X: a\rb\r\n"));
    }

    #[test]
    fn nul_in_a_header_value_is_refused() {
        assert_malformed(parse_bytes(
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
        ));
    }

    #[test]
    fn other_control_bytes_in_a_header_value_are_refused() {
        assert_malformed(parse_bytes(
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
        ));
        assert_malformed(parse_bytes(
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n",
        ));
    }

    #[test]
    fn htab_in_a_header_value_is_accepted() {
        assert_eq!(
            get_with("X: a\tb\r\n").unwrap().header("x"),
            Some(&b"a\tb"[..])
        );
    }

    #[test]
    fn header_line_without_colon_is_refused() {
        assert_malformed(get_with("NoColonHere\r\n"));
    }

    #[test]
    fn header_name_that_is_not_a_token_is_refused() {
        assert_malformed(get_with("X(Y): 1\r\n"));
        assert_malformed(parse_bytes(
            b"GET / HTTP/1.1\r\nHost: a\r\nX\xc3\xa9: 1\r\n\r\n",
        ));
    }

    // --- Host refusals ---

    #[test]
    fn missing_host_on_http11_is_refused() {
        assert_malformed(parse("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"));
    }

    #[test]
    fn duplicate_host_is_refused() {
        assert_malformed(parse("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"));
        assert_malformed(parse("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n"));
    }

    #[test]
    fn invalid_host_value_is_refused() {
        assert_malformed(parse("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"));
        assert_malformed(parse("GET / HTTP/1.1\r\nHost: a,b\r\n\r\n"));
        assert_malformed(parse("GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n"));
        assert_malformed(parse("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n"));
    }

    #[test]
    fn absolute_form_host_differing_from_host_header_is_refused() {
        assert_malformed(parse(
            "GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n",
        ));
    }

    #[test]
    fn absolute_form_without_host_on_http11_is_refused() {
        assert_malformed(parse("GET http://a.example/ HTTP/1.1\r\n\r\n"));
    }

    #[test]
    fn absolute_form_with_empty_host_header_is_refused() {
        assert_malformed(parse("GET http://a.example/ HTTP/1.1\r\nHost:\r\n\r\n"));
    }

    // --- per-server rules ---

    #[test]
    fn missing_host_on_http11_is_accepted_when_not_required() {
        let mut parser = HeadParser::new().require_host(false);
        let (head, _) = parser
            .parse(b"GET /healthz HTTP/1.1\r\n\r\n", MAX)
            .unwrap()
            .unwrap();
        assert_eq!(head.host(), "");
        assert_eq!(head.path(), "/healthz");
        // The relaxed rule survives the reset after each head.
        assert!(parser
            .parse(b"GET / HTTP/1.1\r\n\r\n", MAX)
            .unwrap()
            .is_some());
    }

    #[test]
    fn present_host_is_still_checked_when_not_required() {
        let mut parser = HeadParser::new().require_host(false);
        let invalid = parser.parse(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", MAX);
        assert!(matches!(invalid, Err(HeadError::Malformed(_))));
        let absolute = parser.parse(b"GET http://a.example/ HTTP/1.1\r\n\r\n", MAX);
        assert_eq!(absolute.unwrap().unwrap().0.host(), "a.example");
    }

    #[test]
    fn lowered_header_cap_refuses_one_field_past_it() {
        let at_cap = format!("GET / HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(64));
        let past_cap = format!("GET / HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(65));
        let mut parser = HeadParser::new().require_host(false).max_headers(64);
        assert!(parser.parse(at_cap.as_bytes(), MAX).unwrap().is_some());
        assert_eq!(
            parser.parse(past_cap.as_bytes(), MAX).err(),
            Some(HeadError::TooLarge)
        );
    }

    #[test]
    fn header_cap_cannot_be_raised_past_max_headers() {
        let fields = "X: 1\r\n".repeat(MAX_HEADERS);
        let head = format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n");
        let mut parser = HeadParser::new().max_headers(usize::MAX);
        assert_eq!(
            parser.parse(head.as_bytes(), 1 << 20).err(),
            Some(HeadError::TooLarge)
        );
    }

    // --- request-line refusals ---

    #[test]
    fn http09_request_line_is_refused() {
        assert_malformed(parse("GET /\r\n\r\n"));
    }

    #[test]
    fn request_line_with_method_only_is_refused() {
        assert_malformed(parse("GET\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn http2_version_in_a_request_line_is_refused() {
        assert_malformed(parse("GET / HTTP/2.0\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn other_versions_are_refused() {
        assert_malformed(parse("GET / HTTP/1.2\r\nHost: a\r\n\r\n"));
        assert_malformed(parse("GET / http/1.1\r\nHost: a\r\n\r\n"));
        assert_malformed(parse("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn double_spaces_in_the_request_line_are_refused() {
        assert_malformed(parse("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_malformed(parse("GET /  HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn method_that_is_not_a_token_is_refused() {
        assert_malformed(parse("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_malformed(parse(" GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn tab_as_request_line_separator_is_refused() {
        assert_malformed(parse("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn connect_is_not_implemented() {
        assert_not_implemented(parse(
            "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
        ));
    }

    #[test]
    fn authority_form_for_other_methods_is_refused() {
        assert_malformed(parse(
            "GET a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
        ));
    }

    #[test]
    fn asterisk_form_for_other_methods_is_refused() {
        assert_malformed(parse("GET * HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn relative_target_is_refused() {
        assert_malformed(parse("GET foo/bar HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn absolute_form_with_other_scheme_is_refused() {
        assert_malformed(parse("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn absolute_form_with_userinfo_is_refused() {
        assert_malformed(parse("GET http://u:p@a/ HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn absolute_form_with_empty_authority_is_refused() {
        assert_malformed(parse("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn fragment_in_the_target_is_refused() {
        assert_malformed(parse("GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn invalid_percent_encoding_in_the_target_is_refused() {
        assert_malformed(parse("GET /a%2 HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_malformed(parse("GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn control_and_non_ascii_bytes_in_the_target_are_refused() {
        assert_malformed(parse_bytes(b"GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_malformed(parse_bytes(b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_malformed(parse_bytes(b"GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn bare_cr_in_the_request_line_is_refused() {
        assert_malformed(parse("GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert_malformed(parse("GET / HTTP/1.1\r\r\nHost: a\r\n\r\n"));
    }

    // --- leading empty lines and size ---

    #[test]
    fn leading_crlf_lines_are_skipped() {
        assert_eq!(
            parse("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap()
                .method(),
            "GET"
        );
    }

    #[test]
    fn leading_bare_lf_lines_are_refused() {
        assert_malformed(parse("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    }

    #[test]
    fn head_larger_than_the_limit_is_too_large() {
        let head = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "v".repeat(100)
        );
        let result = HeadParser::new().parse(head.as_bytes(), 64);
        assert_eq!(result.err(), Some(HeadError::TooLarge));
    }

    #[test]
    fn incomplete_head_past_the_limit_is_too_large_across_reads() {
        let mut parser = HeadParser::new();
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        assert!(parser.parse(&buf, 64).unwrap().is_none());
        buf.extend_from_slice(&[b'v'; 30]);
        assert!(parser.parse(&buf, 64).unwrap().is_none());
        buf.extend_from_slice(&[b'v'; 30]);
        assert_eq!(parser.parse(&buf, 64).err(), Some(HeadError::TooLarge));
    }

    #[test]
    fn more_than_max_headers_fields_is_too_large() {
        let fields = "X: 1\r\n".repeat(MAX_HEADERS);
        assert_eq!(get_with(&fields).err(), Some(HeadError::TooLarge));
    }
}
