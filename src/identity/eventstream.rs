//! The AWS event-stream binary framing (`application/vnd.amazon.eventstream`), which
//! Bedrock's ConverseStream and other AWS streaming APIs answer with.
//!
//! One message on the wire, all integers big-endian:
//!
//! ```text
//! total length u32 | headers length u32 | prelude CRC32 u32     (the 12-byte prelude)
//! headers (headers length bytes)
//! payload (total - headers - 16 bytes)
//! message CRC32 u32                                              (over all bytes before it)
//! ```
//!
//! A header is a name length (u8), the name (UTF-8), a type byte and the value: 0 true, 1
//! false (no value bytes), 2 byte (i8), 3 short (i16), 4 integer (i32), 5 long (i64), 6 byte
//! array and 7 string (u16 length, then the bytes), 8 timestamp (i64 milliseconds), 9 UUID (16
//! bytes).
//!
//! A provider's stream is input an attacker can shape, so [`Decoder`] checks the prelude
//! (CRC and lengths, against [`Limits`]) as soon as its 12 bytes arrive, before buffering the
//! rest of the message, checks the message CRC before reading headers, and refuses malformed
//! or duplicate headers. After an error the stream's framing is lost and the decoder refuses
//! everything after. CRC32 is `crc32fast` (the IEEE polynomial the format uses, with the
//! SIMD paths of a well-kept crate).
//!
//! [`Message::encode`] writes the same framing (for fakes and tests). Checked against
//! botocore's `EventStreamBuffer` in `tests/eventstream_reference.rs`. Not wired into any
//! provider yet: the `bedrock` provider will decode ConverseStream with it.

use std::collections::HashSet;
use std::fmt;

/// Bytes before the headers: total length, headers length, prelude CRC.
pub const PRELUDE_LEN: usize = 12;

/// The smallest message: a prelude and a message CRC, no headers, no payload.
pub const MIN_MESSAGE_LEN: usize = PRELUDE_LEN + 4;

/// Default bound on one message's total length (16 MiB).
pub const MAX_MESSAGE_LEN: u32 = 16 * 1024 * 1024;

/// Default bound on one message's headers section (128 KiB, botocore's bound too).
pub const MAX_HEADERS_LEN: u32 = 128 * 1024;

/// Bounds on what one message may declare; anything larger is refused from its prelude.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes one message may have, prelude and CRCs included.
    pub max_message_len: u32,
    /// Most bytes its headers section may have.
    pub max_headers_len: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_len: MAX_MESSAGE_LEN,
            max_headers_len: MAX_HEADERS_LEN,
        }
    }
}

/// A header's value, one variant per wire type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderValue {
    /// Types 0 (true) and 1 (false).
    Bool(bool),
    /// Type 2.
    Byte(i8),
    /// Type 3.
    Short(i16),
    /// Type 4.
    Int(i32),
    /// Type 5.
    Long(i64),
    /// Type 6.
    Bytes(Vec<u8>),
    /// Type 7.
    String(String),
    /// Type 8: milliseconds since the Unix epoch.
    Timestamp(i64),
    /// Type 9.
    Uuid([u8; 16]),
}

impl HeaderValue {
    /// The wire type byte.
    fn type_byte(&self) -> u8 {
        match self {
            HeaderValue::Bool(true) => 0,
            HeaderValue::Bool(false) => 1,
            HeaderValue::Byte(_) => 2,
            HeaderValue::Short(_) => 3,
            HeaderValue::Int(_) => 4,
            HeaderValue::Long(_) => 5,
            HeaderValue::Bytes(_) => 6,
            HeaderValue::String(_) => 7,
            HeaderValue::Timestamp(_) => 8,
            HeaderValue::Uuid(_) => 9,
        }
    }
}

/// One header: a name and a typed value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The name (1 to 255 bytes of UTF-8).
    pub name: String,
    /// The value.
    pub value: HeaderValue,
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Message {
    /// The headers in wire order (names are unique).
    pub headers: Vec<Header>,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Message {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| &h.value)
    }

    /// The value of string header `name` (e.g. `:event-type`, `:message-type`).
    pub fn header_str(&self, name: &str) -> Option<&str> {
        match self.header(name) {
            Some(HeaderValue::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The message in wire form, within the default [`Limits`].
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut headers = Vec::new();
        for header in &self.headers {
            let name = header.name.as_bytes();
            if name.is_empty() || name.len() > u8::MAX as usize {
                return Err(EncodeError::HeaderName(header.name.clone()));
            }
            headers.push(name.len() as u8);
            headers.extend_from_slice(name);
            headers.push(header.value.type_byte());
            match &header.value {
                HeaderValue::Bool(_) => {}
                HeaderValue::Byte(v) => headers.extend_from_slice(&v.to_be_bytes()),
                HeaderValue::Short(v) => headers.extend_from_slice(&v.to_be_bytes()),
                HeaderValue::Int(v) => headers.extend_from_slice(&v.to_be_bytes()),
                HeaderValue::Long(v) | HeaderValue::Timestamp(v) => {
                    headers.extend_from_slice(&v.to_be_bytes())
                }
                HeaderValue::Bytes(v) => put_sized(&mut headers, v, &header.name)?,
                HeaderValue::String(v) => put_sized(&mut headers, v.as_bytes(), &header.name)?,
                HeaderValue::Uuid(v) => headers.extend_from_slice(v),
            }
        }
        let limits = Limits::default();
        let total = MIN_MESSAGE_LEN + headers.len() + self.payload.len();
        if headers.len() > limits.max_headers_len as usize
            || total > limits.max_message_len as usize
        {
            return Err(EncodeError::TooLarge);
        }
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&(total as u32).to_be_bytes());
        out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        let prelude_crc = crc32fast::hash(&out);
        out.extend_from_slice(&prelude_crc.to_be_bytes());
        out.extend_from_slice(&headers);
        out.extend_from_slice(&self.payload);
        let message_crc = crc32fast::hash(&out);
        out.extend_from_slice(&message_crc.to_be_bytes());
        Ok(out)
    }
}

/// Appends a u16 length and `bytes`.
fn put_sized(out: &mut Vec<u8>, bytes: &[u8], name: &str) -> Result<(), EncodeError> {
    let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::HeaderValue(name.into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// A header name is empty or longer than 255 bytes.
    HeaderName(String),
    /// A byte-array or string header value is longer than 65535 bytes.
    HeaderValue(String),
    /// The message or its headers exceed the default [`Limits`].
    TooLarge,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::HeaderName(n) => {
                write!(f, "event-stream header name {n:?} is empty or too long")
            }
            EncodeError::HeaderValue(n) => write!(f, "event-stream header {n:?} value is too long"),
            EncodeError::TooLarge => f.write_str("event-stream message exceeds the size limits"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Why a stream could not be decoded. Offsets are into the stream, counting from its first
/// byte, so a log line can point at the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The prelude's CRC does not match its first 8 bytes.
    PreludeCrc {
        /// Where the message starts.
        offset: u64,
        /// The CRC on the wire.
        expected: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// The message CRC does not match the message's bytes.
    MessageCrc {
        /// Where the message starts.
        offset: u64,
        /// The CRC on the wire.
        expected: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// The total length is below 16 or above the limit.
    MessageLength {
        /// Where the message starts.
        offset: u64,
        /// The declared total length.
        total: u32,
        /// The limit in force.
        max: u32,
    },
    /// The headers length is above the limit or does not fit in the message.
    HeadersLength {
        /// Where the message starts.
        offset: u64,
        /// The declared headers length.
        headers: u32,
        /// The declared total length.
        total: u32,
    },
    /// A header is malformed.
    MalformedHeader {
        /// Where the header starts.
        offset: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The stream ended inside a message.
    Truncated {
        /// Where the unfinished message starts.
        offset: u64,
        /// How many of its bytes arrived.
        buffered: usize,
    },
    /// An earlier error left the stream without framing.
    Failed,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::PreludeCrc { offset, expected, computed } => write!(
                f,
                "event-stream message at byte {offset}: prelude CRC {expected:#010x} does not match {computed:#010x}"
            ),
            DecodeError::MessageCrc { offset, expected, computed } => write!(
                f,
                "event-stream message at byte {offset}: message CRC {expected:#010x} does not match {computed:#010x}"
            ),
            DecodeError::MessageLength { offset, total, max } => write!(
                f,
                "event-stream message at byte {offset}: total length {total} is outside 16..={max}"
            ),
            DecodeError::HeadersLength { offset, headers, total } => write!(
                f,
                "event-stream message at byte {offset}: headers length {headers} does not fit a {total}-byte message or the limit"
            ),
            DecodeError::MalformedHeader { offset, reason } => {
                write!(f, "event-stream header at byte {offset}: {reason}")
            }
            DecodeError::Truncated { offset, buffered } => write!(
                f,
                "event-stream ended inside the message at byte {offset} ({buffered} bytes of it arrived)"
            ),
            DecodeError::Failed => f.write_str("event-stream decoder stopped at an earlier error"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// An incremental decoder: [`push`](Decoder::push) bytes as they arrive, then take whole
/// messages with [`next_message`](Decoder::next_message) until it answers `None`. A message
/// may be split across pushes at any byte, and one push may hold several messages.
///
/// The buffer holds at most the bytes pushed and not yet taken as messages: callers push one
/// read at a time and drain before the next, so it stays under one read plus one message.
#[derive(Debug, Default)]
pub struct Decoder {
    limits: Limits,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already decoded, dropped at the next push.
    consumed: usize,
    /// Stream offset of `buf[0]`, for error messages.
    base: u64,
    /// The current message's prelude has been checked (lengths and CRC).
    prelude_checked: bool,
    failed: bool,
}

impl Decoder {
    /// A decoder with the default [`Limits`].
    pub fn new() -> Self {
        Decoder::default()
    }

    /// A decoder with `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        Decoder {
            limits,
            ..Decoder::default()
        }
    }

    /// Adds bytes that arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.base += self.consumed as u64;
            self.consumed = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered that are not yet part of a returned message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.consumed
    }

    /// The next whole message, `Ok(None)` when more bytes are needed.
    pub fn next_message(&mut self) -> Result<Option<Message>, DecodeError> {
        if self.failed {
            return Err(DecodeError::Failed);
        }
        match self.decode_one() {
            Err(e) => {
                self.failed = true;
                Err(e)
            }
            ok => ok,
        }
    }

    /// Checks the stream ended on a message boundary.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.failed {
            return Err(DecodeError::Failed);
        }
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(DecodeError::Truncated {
                offset: self.base + self.consumed as u64,
                buffered,
            }),
        }
    }

    fn decode_one(&mut self) -> Result<Option<Message>, DecodeError> {
        let offset = self.base + self.consumed as u64;
        let rest = &self.buf[self.consumed..];
        if rest.len() < PRELUDE_LEN {
            return Ok(None);
        }
        let total = be_u32(&rest[0..4]);
        let headers_len = be_u32(&rest[4..8]);
        if !self.prelude_checked {
            // The CRC first: a length read from a corrupt prelude means nothing.
            let expected = be_u32(&rest[8..12]);
            let computed = crc32fast::hash(&rest[0..8]);
            if expected != computed {
                return Err(DecodeError::PreludeCrc {
                    offset,
                    expected,
                    computed,
                });
            }
            if (total as usize) < MIN_MESSAGE_LEN || total > self.limits.max_message_len {
                return Err(DecodeError::MessageLength {
                    offset,
                    total,
                    max: self.limits.max_message_len,
                });
            }
            if headers_len > self.limits.max_headers_len
                || headers_len as usize > total as usize - MIN_MESSAGE_LEN
            {
                return Err(DecodeError::HeadersLength {
                    offset,
                    headers: headers_len,
                    total,
                });
            }
            self.prelude_checked = true;
        }
        let total = total as usize;
        if rest.len() < total {
            return Ok(None);
        }
        let message = &rest[..total];
        let expected = be_u32(&message[total - 4..]);
        let computed = crc32fast::hash(&message[..total - 4]);
        if expected != computed {
            return Err(DecodeError::MessageCrc {
                offset,
                expected,
                computed,
            });
        }
        let headers_end = PRELUDE_LEN + headers_len as usize;
        let headers = parse_headers(
            &message[PRELUDE_LEN..headers_end],
            offset + PRELUDE_LEN as u64,
        )?;
        let payload = message[headers_end..total - 4].to_vec();
        self.consumed += total;
        self.prelude_checked = false;
        Ok(Some(Message { headers, payload }))
    }
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"))
}

/// Reads the headers section `bytes`, which starts at stream offset `base`.
fn parse_headers(bytes: &[u8], base: u64) -> Result<Vec<Header>, DecodeError> {
    let mut headers = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let start = at;
        let malformed = |reason| DecodeError::MalformedHeader {
            offset: base + start as u64,
            reason,
        };
        let take = |at: &mut usize, n: usize, reason| {
            let end = at
                .checked_add(n)
                .filter(|&end| end <= bytes.len())
                .ok_or_else(|| malformed(reason))?;
            let slice = &bytes[*at..end];
            *at = end;
            Ok::<&[u8], DecodeError>(slice)
        };
        let name_len = take(&mut at, 1, "name length past the headers")?[0] as usize;
        if name_len == 0 {
            return Err(malformed("empty header name"));
        }
        let name = take(&mut at, name_len, "name runs past the headers")?;
        let name = std::str::from_utf8(name).map_err(|_| malformed("name is not UTF-8"))?;
        if !seen.insert(name) {
            return Err(malformed("duplicate header name"));
        }
        let kind = take(&mut at, 1, "type byte past the headers")?[0];
        const PAST: &str = "value runs past the headers";
        let value = match kind {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(take(&mut at, 1, PAST)?[0] as i8),
            3 => HeaderValue::Short(i16::from_be_bytes(
                take(&mut at, 2, PAST)?.try_into().expect("2 bytes"),
            )),
            4 => HeaderValue::Int(i32::from_be_bytes(
                take(&mut at, 4, PAST)?.try_into().expect("4 bytes"),
            )),
            5 | 8 => {
                let v = i64::from_be_bytes(take(&mut at, 8, PAST)?.try_into().expect("8 bytes"));
                if kind == 5 {
                    HeaderValue::Long(v)
                } else {
                    HeaderValue::Timestamp(v)
                }
            }
            6 | 7 => {
                let len = u16::from_be_bytes(take(&mut at, 2, PAST)?.try_into().expect("2 bytes"));
                let raw = take(&mut at, len as usize, PAST)?;
                if kind == 6 {
                    HeaderValue::Bytes(raw.to_vec())
                } else {
                    let text = std::str::from_utf8(raw)
                        .map_err(|_| malformed("string value is not UTF-8"))?;
                    HeaderValue::String(text.to_string())
                }
            }
            9 => HeaderValue::Uuid(take(&mut at, 16, PAST)?.try_into().expect("16 bytes")),
            _ => return Err(malformed("unknown header value type")),
        };
        headers.push(Header {
            name: name.to_string(),
            value,
        });
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, value: HeaderValue) -> Header {
        Header {
            name: name.into(),
            value,
        }
    }

    /// A message with every header type.
    fn every_type() -> Message {
        Message {
            headers: vec![
                header(":message-type", HeaderValue::String("event".into())),
                header(
                    ":event-type",
                    HeaderValue::String("contentBlockDelta".into()),
                ),
                header("t", HeaderValue::Bool(true)),
                header("f", HeaderValue::Bool(false)),
                header("byte", HeaderValue::Byte(-7)),
                header("short", HeaderValue::Short(-300)),
                header("int", HeaderValue::Int(70_000)),
                header("long", HeaderValue::Long(-5_000_000_000)),
                header("bytes", HeaderValue::Bytes(vec![0, 1, 2, 255])),
                header("time", HeaderValue::Timestamp(1_700_000_000_123)),
                header("uuid", HeaderValue::Uuid(*b"0123456789abcdef")),
            ],
            payload: br#"{"delta":{"text":"Hello"},"contentBlockIndex":0}"#.to_vec(),
        }
    }

    fn plain(payload: &[u8]) -> Message {
        Message {
            headers: vec![header(":event-type", HeaderValue::String("x".into()))],
            payload: payload.to_vec(),
        }
    }

    /// Decodes `chunks` pushed one at a time, draining after each.
    fn decode_chunks(chunks: &[&[u8]]) -> Result<Vec<Message>, DecodeError> {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk);
            while let Some(m) = decoder.next_message()? {
                out.push(m);
            }
        }
        decoder.finish()?;
        Ok(out)
    }

    #[test]
    fn every_header_type_round_trips() {
        let message = every_type();
        let wire = message.encode().unwrap();
        assert_eq!(decode_chunks(&[&wire]).unwrap(), vec![message]);
    }

    #[test]
    fn empty_message_is_sixteen_bytes() {
        let wire = Message::default().encode().unwrap();
        assert_eq!(wire.len(), MIN_MESSAGE_LEN);
        assert_eq!(decode_chunks(&[&wire]).unwrap(), vec![Message::default()]);
    }

    #[test]
    fn frames_split_at_every_byte_offset() {
        let messages = vec![every_type(), plain(b""), plain(b"second")];
        let mut stream = Vec::new();
        for m in &messages {
            stream.extend(m.encode().unwrap());
        }
        for split in 0..=stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(
                decode_chunks(&[a, b]).unwrap(),
                messages,
                "split at byte {split}"
            );
        }
        // Three-way splits, and one byte per push.
        for first in (0..stream.len()).step_by(7) {
            for second in (first..stream.len()).step_by(5) {
                let chunks = [&stream[..first], &stream[first..second], &stream[second..]];
                assert_eq!(decode_chunks(&chunks).unwrap(), messages);
            }
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(decode_chunks(&bytes).unwrap(), messages);
    }

    #[test]
    fn several_frames_in_one_read() {
        let messages: Vec<Message> = (0..50).map(|i| plain(format!("{i}").as_bytes())).collect();
        let stream: Vec<u8> = messages.iter().flat_map(|m| m.encode().unwrap()).collect();
        assert_eq!(decode_chunks(&[&stream]).unwrap(), messages);
    }

    #[test]
    fn bad_prelude_crc_is_refused_from_the_prelude_alone() {
        let first = plain(b"ok").encode().unwrap();
        let mut second = plain(b"corrupt").encode().unwrap();
        second[1] ^= 0x40; // the total length, so only the prelude CRC can catch it
        let mut decoder = Decoder::new();
        decoder.push(&first);
        decoder.push(&second[..PRELUDE_LEN]);
        assert_eq!(decoder.next_message().unwrap(), Some(plain(b"ok")));
        match decoder.next_message() {
            Err(DecodeError::PreludeCrc { offset, .. }) => assert_eq!(offset, first.len() as u64),
            other => panic!("{other:?}"),
        }
        // The framing is lost: nothing after is decoded.
        decoder.push(&plain(b"later").encode().unwrap());
        assert_eq!(decoder.next_message(), Err(DecodeError::Failed));
    }

    #[test]
    fn bad_message_crc_is_refused() {
        let mut wire = every_type().encode().unwrap();
        let last = wire.len() - 5;
        wire[last] ^= 1; // a payload byte
        assert!(matches!(
            decode_chunks(&[&wire]),
            Err(DecodeError::MessageCrc { offset: 0, .. })
        ));
        let mut wire = every_type().encode().unwrap();
        let end = wire.len() - 1;
        wire[end] ^= 1; // the CRC itself
        assert!(matches!(
            decode_chunks(&[&wire]),
            Err(DecodeError::MessageCrc { .. })
        ));
    }

    #[test]
    fn truncated_input_is_reported_at_the_end() {
        let wire = every_type().encode().unwrap();
        for cut in [1, PRELUDE_LEN - 1, PRELUDE_LEN, wire.len() - 1] {
            assert_eq!(
                decode_chunks(&[&wire[..cut]]),
                Err(DecodeError::Truncated {
                    offset: 0,
                    buffered: cut
                }),
                "cut at {cut}"
            );
        }
    }

    /// A prelude with a valid CRC for the given lengths.
    fn prelude(total: u32, headers: u32) -> Vec<u8> {
        let mut out = total.to_be_bytes().to_vec();
        out.extend(headers.to_be_bytes());
        let crc = crc32fast::hash(&out);
        out.extend(crc.to_be_bytes());
        out
    }

    #[test]
    fn oversized_frames_are_refused_before_they_are_buffered() {
        let mut decoder = Decoder::new();
        decoder.push(&prelude(MAX_MESSAGE_LEN + 1, 0));
        assert_eq!(
            decoder.next_message(),
            Err(DecodeError::MessageLength {
                offset: 0,
                total: MAX_MESSAGE_LEN + 1,
                max: MAX_MESSAGE_LEN
            })
        );
        for (total, headers) in [
            (1_000_000, MAX_HEADERS_LEN + 1),
            (100, 100 - 15),
            (u32::MAX, 0),
        ] {
            let result = decode_chunks(&[&prelude(total, headers)]);
            assert!(
                matches!(
                    result,
                    Err(DecodeError::HeadersLength { .. } | DecodeError::MessageLength { .. })
                ),
                "{total}/{headers}: {result:?}"
            );
        }
        assert!(matches!(
            decode_chunks(&[&prelude(15, 0)]),
            Err(DecodeError::MessageLength { total: 15, .. })
        ));
        // Limits are the caller's to tighten.
        let mut small = Decoder::with_limits(Limits {
            max_message_len: 64,
            max_headers_len: 16,
        });
        small.push(&plain(&[b'x'; 64]).encode().unwrap());
        assert!(matches!(
            small.next_message(),
            Err(DecodeError::MessageLength { max: 64, .. })
        ));
    }

    /// A whole message around a raw headers section.
    fn with_raw_headers(headers: &[u8]) -> Vec<u8> {
        let total = (MIN_MESSAGE_LEN + headers.len()) as u32;
        let mut out = prelude(total, headers.len() as u32);
        out.extend_from_slice(headers);
        let crc = crc32fast::hash(&out);
        out.extend(crc.to_be_bytes());
        out
    }

    #[test]
    fn malformed_headers_are_refused_with_the_reason() {
        let cases: [(&[u8], &str); 8] = [
            (&[0, 0], "empty header name"),
            (&[5, b'a'], "name runs past the headers"),
            (&[1, 0xff, 0], "name is not UTF-8"),
            (&[1, b'a'], "type byte past the headers"),
            (&[1, b'a', 10], "unknown header value type"),
            (&[1, b'a', 4, 0, 0], "value runs past the headers"),
            (&[1, b'a', 7, 0, 3, b'x'], "value runs past the headers"),
            (&[1, b'a', 7, 0, 1, 0xc3], "string value is not UTF-8"),
        ];
        for (raw, reason) in cases {
            assert_eq!(
                decode_chunks(&[&with_raw_headers(raw)]),
                Err(DecodeError::MalformedHeader {
                    offset: PRELUDE_LEN as u64,
                    reason
                }),
                "{raw:?}"
            );
        }
        assert_eq!(
            decode_chunks(&[&with_raw_headers(&[1, b'a', 0, 1, b'a', 1])]),
            Err(DecodeError::MalformedHeader {
                offset: PRELUDE_LEN as u64 + 3,
                reason: "duplicate header name"
            })
        );
    }

    #[test]
    fn encoder_refuses_what_the_format_cannot_hold() {
        let long_name = Message {
            headers: vec![header(&"n".repeat(256), HeaderValue::Bool(true))],
            payload: vec![],
        };
        assert!(matches!(
            long_name.encode(),
            Err(EncodeError::HeaderName(_))
        ));
        let long_value = Message {
            headers: vec![header("v", HeaderValue::Bytes(vec![0; 65_536]))],
            payload: vec![],
        };
        assert!(matches!(
            long_value.encode(),
            Err(EncodeError::HeaderValue(_))
        ));
        let big = plain(&vec![0; MAX_MESSAGE_LEN as usize]);
        assert_eq!(big.encode(), Err(EncodeError::TooLarge));
    }

    #[test]
    fn decode_errors_read_clearly() {
        let e = DecodeError::PreludeCrc {
            offset: 32,
            expected: 1,
            computed: 2,
        };
        assert_eq!(
            e.to_string(),
            "event-stream message at byte 32: prelude CRC 0x00000001 does not match 0x00000002"
        );
    }
}
