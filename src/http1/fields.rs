//! The header section shared by requests and responses: field-line syntax, the
//! owned copy of the head with an index of its fields, and connection options.

use super::syntax::{
    ascii_str, find_invalid_value_byte, find_lf, is_ows, is_tchar, is_token, list_elements,
};
use super::HeadError;

/// A byte range inside a head. Heads are bounded by `max_header_bytes`, so `u32`
/// offsets suffice and keep the field index small (16 bytes per field).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        debug_assert!(start <= end && end <= u32::MAX as usize);
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    pub fn get(self, bytes: &[u8]) -> &[u8] {
        &bytes[self.start as usize..self.end as usize]
    }

    pub fn start(self) -> usize {
        self.start as usize
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }

    /// This span moved `by` bytes further into the head.
    pub fn offset(self, by: usize) -> Span {
        Span::new(self.start as usize + by, self.end as usize + by)
    }
}

/// One field line: where its name and (OWS-trimmed) value lie.
#[derive(Clone, Copy, Debug)]
struct Field {
    name: Span,
    value: Span,
}

/// Fields that are hop-by-hop whatever Connection says: RFC 9110 7.6.1 names
/// Connection, Proxy-Connection, Keep-Alive, TE, Transfer-Encoding and Upgrade; the
/// proxy authentication fields (RFC 9110 11.7) are meant for the first proxy only.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Fields that carry the message's framing or routing. Naming one in Connection
/// would make a hop drop it (RFC 9110 7.6.1 forbids sending such options), so they
/// are never treated as hop-by-hop; a request that tries is refused.
const NEVER_HOP_BY_HOP: [&str; 2] = ["content-length", "host"];

/// A copy of a head's bytes and the index of its fields, in the order sent.
#[derive(Clone, Debug)]
pub(crate) struct Fields {
    bytes: Box<[u8]>,
    list: Vec<Field>,
}

impl Fields {
    /// Parses the field lines of `bytes` from `pos` (the byte after the start-line)
    /// to the empty line that ends the head. `visit` sees each name and value as
    /// they are read (with the value's span in `bytes`), to collect the fields that
    /// carry meaning. `capacity` sizes the index once; more than `max_fields`
    /// fields is `TooLarge`. `bytes` must end with the head's empty line, which
    /// the scanner guarantees.
    pub fn parse(
        bytes: Box<[u8]>,
        mut pos: usize,
        capacity: usize,
        max_fields: usize,
        mut visit: impl FnMut(&[u8], &[u8], Span) -> Result<(), HeadError>,
    ) -> Result<Fields, HeadError> {
        let mut list = Vec::with_capacity(capacity.min(max_fields));
        while !bytes[pos..].starts_with(b"\r\n") && !bytes[pos..].starts_with(b"\n") {
            if list.len() == max_fields {
                return Err(HeadError::TooLarge);
            }
            let (field, next) = parse_field_line(&bytes, pos).map_err(HeadError::Malformed)?;
            visit(field.name.get(&bytes), field.value.get(&bytes), field.value)?;
            list.push(field);
            pos = next;
        }
        Ok(Fields { bytes, list })
    }

    /// The whole head as received (start-line included, leading empty lines not).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Every field, names as sent, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.list
            .iter()
            .map(|f| (ascii_str(f.name.get(&self.bytes)), f.value.get(&self.bytes)))
    }

    /// The value of the first field called `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.list
            .iter()
            .find(|f| {
                f.name
                    .get(&self.bytes)
                    .eq_ignore_ascii_case(name.as_bytes())
            })
            .map(|f| f.value.get(&self.bytes))
    }

    /// The values of every field called `name` (case-insensitive), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.list
            .iter()
            .filter(move |f| {
                f.name
                    .get(&self.bytes)
                    .eq_ignore_ascii_case(name.as_bytes())
            })
            .map(|f| f.value.get(&self.bytes))
    }

    /// Whether `name` must not be forwarded: the fixed hop-by-hop set, or a name
    /// listed in this message's Connection fields (RFC 9110 7.6.1).
    pub fn is_hop_by_hop(&self, name: &str) -> bool {
        let is = |set: &[&str]| set.iter().any(|s| s.eq_ignore_ascii_case(name));
        if is(&HOP_BY_HOP) {
            return true;
        }
        if is(&NEVER_HOP_BY_HOP) {
            return false;
        }
        self.get_all("connection")
            .flat_map(list_elements)
            .any(|option| option.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// The start-line at the front of a head (without its line ending), and where
/// the next line starts. The scanner has already found the head's terminator,
/// so an LF always follows; a CR just before it belongs to the line ending.
pub(crate) fn start_line(bytes: &[u8]) -> (&[u8], usize) {
    let lf = find_lf(bytes).unwrap_or(bytes.len());
    let end = if lf > 0 && bytes[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    (&bytes[..end], lf + 1)
}

/// Parses the field line starting at `pos` (RFC 9112 5): `field-name ":" OWS
/// field-value OWS`, then the line ending. Returns the field, value trimmed of
/// OWS, and where the next line starts. One pass: the value check stops at the
/// line ending, so lines are not searched separately. A bare LF can only be here
/// when the scanner allowed it (responses).
#[inline(always)]
fn parse_field_line(bytes: &[u8], pos: usize) -> Result<(Field, usize), &'static str> {
    let line = &bytes[pos..];
    if is_ows(line[0]) {
        // obs-fold, or whitespace between the start-line and the first field:
        // both must be refused or repaired (RFC 9112 2.2, 5.2); we refuse.
        return Err("line folding (obs-fold) or leading whitespace in a header line");
    }
    let name_end = line
        .iter()
        .position(|&b| !is_tchar(b))
        .unwrap_or(line.len());
    match line.get(name_end) {
        Some(b':') if name_end > 0 => {}
        Some(b':') => return Err("empty header name"),
        // RFC 9112 5.1: whitespace between name and colon MUST be answered with 400.
        Some(&b) if is_ows(b) => return Err("whitespace between header name and colon"),
        Some(b'\r' | b'\n') | None => return Err("header line without a colon"),
        Some(_) => return Err("invalid character in header name"),
    }
    let rest = &line[name_end + 1..];
    let lead = rest.iter().position(|&b| !is_ows(b)).unwrap_or(rest.len());
    let value = &rest[lead..];
    let stop = find_invalid_value_byte(value).ok_or("header line without a line ending")?;
    let next = match &value[stop..] {
        [b'\r', b'\n', ..] => stop + 2,
        [b'\n', ..] => stop + 1,
        [b'\r', ..] => return Err("bare CR in header value"),
        _ => return Err("control character in header value"),
    };
    let value = &value[..stop];
    let trail = value.iter().rev().take_while(|&&b| is_ows(b)).count();
    let value_start = pos + name_end + 1 + lead;
    let field = Field {
        name: Span::new(pos, pos + name_end),
        value: Span::new(value_start, value_start + value.len() - trail),
    };
    Ok((field, value_start + next))
}

/// What the Connection fields of a message ask for (RFC 9110 7.6.1, RFC 9112 9.3).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ConnectionOptions {
    /// `close` was listed.
    pub close: bool,
    /// `keep-alive` was listed (meaningful for HTTP/1.0).
    pub keep_alive: bool,
    /// `upgrade` was listed (RFC 9110 7.8).
    pub upgrade: bool,
    /// An end-to-end framing or routing field (Content-Length, Host) was listed.
    pub lists_end_to_end: bool,
}

impl ConnectionOptions {
    /// Adds the options of one Connection field value. Each non-empty element
    /// must be a token; empty list elements are tolerated (RFC 9110 5.6.1).
    pub fn add(&mut self, value: &[u8]) -> Result<(), &'static str> {
        for option in list_elements(value) {
            if option.is_empty() {
                continue;
            }
            if !is_token(option) {
                return Err("invalid Connection option");
            }
            if option.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if option.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if option.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else if NEVER_HOP_BY_HOP
                .iter()
                .any(|n| option.eq_ignore_ascii_case(n.as_bytes()))
            {
                self.lists_end_to_end = true;
            }
        }
        Ok(())
    }

    /// Whether the connection persists after this message (RFC 9112 9.3): HTTP/1.1
    /// unless `close`; HTTP/1.0 only with `keep-alive` and without `close`.
    pub fn keep_alive(&self, version: super::Version) -> bool {
        match version {
            super::Version::Http11 => !self.close,
            super::Version::Http10 => self.keep_alive && !self.close,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::Version;

    fn parse(head: &[u8]) -> Result<Fields, HeadError> {
        Fields::parse(head.into(), 0, 4, 8, |_, _, _| Ok(()))
    }

    /// Name and value of `line` followed by CRLF.
    fn spans(line: &[u8]) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
        let bytes = [line, b"\r\n"].concat();
        let (field, next) = parse_field_line(&bytes, 0)?;
        assert_eq!(next, bytes.len());
        Ok((
            field.name.get(&bytes).to_vec(),
            field.value.get(&bytes).to_vec(),
        ))
    }

    fn ok(name: &[u8], value: &[u8]) -> Result<(Vec<u8>, Vec<u8>), &'static str> {
        Ok((name.to_vec(), value.to_vec()))
    }

    #[test]
    fn field_line_value_is_trimmed_of_ows() {
        assert_eq!(spans(b"Name: \t v a \t"), ok(b"Name", b"v a"));
    }

    #[test]
    fn field_line_allows_an_empty_value() {
        assert_eq!(spans(b"Name:"), ok(b"Name", b""));
        assert_eq!(spans(b"Name:   "), ok(b"Name", b""));
    }

    #[test]
    fn field_line_allows_obs_text_in_values() {
        assert_eq!(spans(b"N: caf\xc3\xa9"), ok(b"N", b"caf\xc3\xa9"));
    }

    #[test]
    fn field_line_refuses_whitespace_before_colon() {
        assert!(spans(b"Name : v").is_err());
        assert!(spans(b"Name\t: v").is_err());
    }

    #[test]
    fn field_line_refuses_obs_fold() {
        assert!(spans(b" continued").is_err());
        assert!(spans(b"\tcontinued").is_err());
    }

    #[test]
    fn field_line_refuses_a_missing_colon() {
        assert!(spans(b"Name").is_err());
    }

    #[test]
    fn field_line_refuses_an_empty_or_invalid_name() {
        assert!(spans(b": v").is_err());
        assert!(spans(b"Na(me: v").is_err());
        assert!(spans(b"N\x00: v").is_err());
    }

    #[test]
    fn field_line_refuses_bare_cr_nul_and_controls_in_values() {
        assert!(spans(b"N: a\rb").is_err());
        assert!(spans(b"N: a\x00b").is_err());
        assert!(spans(b"N: a\x1bb").is_err());
        assert!(spans(b"N: a\x7fb").is_err());
    }

    #[test]
    fn field_line_allows_htab_inside_values() {
        assert_eq!(spans(b"N: a\tb"), ok(b"N", b"a\tb"));
    }

    #[test]
    fn fields_are_kept_in_order_with_names_as_sent() {
        let fields = parse(b"A: 1\r\nb: 2\r\nA: 3\r\n\r\n").unwrap();
        let all: Vec<_> = fields.iter().collect();
        assert_eq!(all, [("A", &b"1"[..]), ("b", b"2"), ("A", b"3")]);
    }

    #[test]
    fn field_lookup_is_case_insensitive_and_returns_the_first() {
        let fields = parse(b"X-Key: 1\r\nx-key: 2\r\n\r\n").unwrap();
        assert_eq!(fields.get("X-KEY"), Some(&b"1"[..]));
        assert_eq!(fields.get_all("x-key").count(), 2);
        assert_eq!(fields.get("missing"), None);
    }

    #[test]
    fn more_fields_than_the_limit_is_too_large() {
        let head = [b"A: 1\r\n".repeat(9), b"\r\n".to_vec()].concat();
        assert_eq!(parse(&head).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn fixed_hop_by_hop_fields_are_recognised_case_insensitively() {
        let fields = parse(b"\r\n").unwrap();
        for name in [
            "Connection",
            "keep-alive",
            "TE",
            "Transfer-Encoding",
            "Upgrade",
            "Proxy-Connection",
        ] {
            assert!(fields.is_hop_by_hop(name), "{name}");
        }
        assert!(!fields.is_hop_by_hop("authorization"));
    }

    #[test]
    fn fields_named_in_connection_are_hop_by_hop() {
        let fields = parse(b"Connection: close, X-Foo\r\nconnection: x-bar\r\n\r\n").unwrap();
        assert!(fields.is_hop_by_hop("x-foo"));
        assert!(fields.is_hop_by_hop("X-Bar"));
        assert!(!fields.is_hop_by_hop("x-baz"));
    }

    #[test]
    fn content_length_and_host_are_never_hop_by_hop() {
        let fields = parse(b"Connection: content-length, host\r\n\r\n").unwrap();
        assert!(!fields.is_hop_by_hop("Content-Length"));
        assert!(!fields.is_hop_by_hop("host"));
    }

    #[test]
    fn connection_options_collect_close_keep_alive_and_upgrade() {
        let mut options = ConnectionOptions::default();
        options.add(b"Keep-Alive, , Upgrade").unwrap();
        options.add(b"CLOSE").unwrap();
        assert!(options.keep_alive && options.upgrade && options.close);
    }

    #[test]
    fn connection_options_refuse_non_tokens() {
        assert!(ConnectionOptions::default().add(b"close; x").is_err());
    }

    #[test]
    fn connection_options_flag_end_to_end_fields() {
        let mut options = ConnectionOptions::default();
        options.add(b"Content-Length").unwrap();
        assert!(options.lists_end_to_end);
    }

    #[test]
    fn keep_alive_defaults_differ_by_version() {
        let none = ConnectionOptions::default();
        assert!(none.keep_alive(Version::Http11));
        assert!(!none.keep_alive(Version::Http10));
        let keep = ConnectionOptions {
            keep_alive: true,
            ..Default::default()
        };
        assert!(keep.keep_alive(Version::Http10));
        let close = ConnectionOptions {
            close: true,
            keep_alive: true,
            ..Default::default()
        };
        assert!(!close.keep_alive(Version::Http10));
        assert!(!close.keep_alive(Version::Http11));
    }
}
