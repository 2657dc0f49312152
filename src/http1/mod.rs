//! Strict HTTP/1.1 message parsing and body framing (RFC 9110, RFC 9112).
//!
//! We are the edge: a message that two implementations could read differently
//! (the shapes behind request smuggling and header injection) is refused, never
//! repaired. Requests are held to the strict grammar; responses come from our own
//! upstreams and may use bare-LF line endings, but their framing is still checked.
//!
//! - [`HeadParser`] reads a request head that may arrive in many reads, keeping a
//!   resume offset so no byte is scanned twice, and validates it once complete. The
//!   data plane, the admin API and `bench-upstream` all read request heads with it;
//!   single-host servers turn off [`HeadParser::require_host`].
//! - [`RequestHead`] / [`ResponseHead`] own a copy of the head bytes; accessors
//!   return slices into it (one allocation for the bytes, one for the field index).
//! - [`normalize_path`] gives the one spelling of a request path that routing, auth and the
//!   upstream all see (dot segments resolved, unreserved escapes decoded), or refuses it.
//! - [`BufConn`] is a connection with its read buffer (monoio's owned-buffer I/O): the
//!   parsers above read from it and say how much they used.
//! - [`ChunkedDecoder`] decodes `Transfer-Encoding: chunked` bodies, resumably and
//!   strictly; [`encode_chunk`] and [`encode_last_chunk`] write them.
//!
//! Error mapping: [`HeadError::status`] gives the status for a request head (400,
//! 431, 501); for an upstream's head or body any error means 502.

mod bufconn;
mod chunked;
mod encode;
mod fields;
mod framing;
mod path;
mod request;
mod response;
mod scan;
mod syntax;

pub use bufconn::{BufConn, ReadError};
pub use chunked::{ChunkError, ChunkedDecoder, Decoded, MAX_CHUNK_LINE, MAX_TRAILER_BYTES};
pub use encode::{
    encode_chunk, encode_last_chunk, is_valid_field_name, is_valid_field_value, push_header, StrBuf,
};
pub use path::{normalize_path, PathError};
pub use request::{HeadParser, RequestHead, MAX_HEADERS};
pub use response::{parse_response, ResponseBody, ResponseHead, ResponseParser};

use std::fmt;

/// The protocol version of a message. Only HTTP/1.0 and HTTP/1.1 are spoken here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    /// `HTTP/1.0`
    Http10,
    /// `HTTP/1.1`
    Http11,
}

impl Version {
    /// The version as it appears on the wire, e.g. `HTTP/1.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }

    /// Parses the exact `HTTP-version` bytes; the name is case-sensitive (RFC 9112 2.3).
    pub(crate) fn parse(bytes: &[u8]) -> Option<Version> {
        match bytes {
            b"HTTP/1.1" => Some(Version::Http11),
            b"HTTP/1.0" => Some(Version::Http10),
            _ => None,
        }
    }
}

/// How a request's body is delimited (RFC 9112 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// Neither Content-Length nor Transfer-Encoding: no body (RFC 9112 6.3, rule 7).
    None,
    /// Content-Length: exactly this many bytes follow (may be 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`: decode with [`ChunkedDecoder`].
    Chunked,
}

/// Why a message head was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Invalid or ambiguous syntax or framing: 400 for a request (then close the
    /// connection), 502 for a response. The text says what was wrong.
    Malformed(&'static str),
    /// The head is longer than `max_header_bytes` or has more than [`MAX_HEADERS`]
    /// fields: 431 (RFC 6585 5).
    TooLarge,
    /// Valid but unsupported (CONNECT, transfer codings other than chunked): 501.
    NotImplemented(&'static str),
}

impl HeadError {
    /// The status code to answer a request with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::TooLarge => 431,
            HeadError::NotImplemented(_) => 501,
        }
    }

    /// A short human-readable explanation, fit for an error body's `message`.
    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::Malformed(reason) | HeadError::NotImplemented(reason) => reason,
            HeadError::TooLarge => "request header fields too large",
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status())
    }
}

impl std::error::Error for HeadError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_errors_map_to_their_status_codes() {
        assert_eq!(HeadError::Malformed("x").status(), 400);
        assert_eq!(HeadError::TooLarge.status(), 431);
        assert_eq!(HeadError::NotImplemented("x").status(), 501);
    }

    #[test]
    fn head_error_reason_is_the_detail_text() {
        assert_eq!(
            HeadError::Malformed("bare LF line ending").reason(),
            "bare LF line ending"
        );
        assert_eq!(
            HeadError::TooLarge.reason(),
            "request header fields too large"
        );
    }

    #[test]
    fn version_parse_is_exact_and_case_sensitive() {
        assert_eq!(Version::parse(b"HTTP/1.1"), Some(Version::Http11));
        assert_eq!(Version::parse(b"HTTP/1.0"), Some(Version::Http10));
        assert_eq!(Version::parse(b"http/1.1"), None);
        assert_eq!(Version::parse(b"HTTP/2.0"), None);
        assert_eq!(Version::Http11.as_str(), "HTTP/1.1");
    }
}
