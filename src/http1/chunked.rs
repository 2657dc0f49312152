//! Strict, resumable decoding of the chunked transfer coding (RFC 9112 7.1).
//!
//! ```text
//! chunked-body = *chunk last-chunk trailer-section CRLF
//! chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-ext    = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
//! ```
//!
//! The decoder is a byte-at-a-time state machine (chunk data is copied in bulk),
//! so input may be split anywhere. It is stricter than the grammar where
//! leniency has been used for smuggling: no whitespace anywhere in the chunk-size
//! line (BWS included), CRLF only, at most 16 hex digits. Extensions are checked
//! and ignored; trailer fields are checked and dropped, never merged into the head.

use std::fmt;

use super::syntax::{hex_value, is_field_value_byte, is_tchar};

/// Longest chunk-size line (size digits and extensions, without CRLF).
pub const MAX_CHUNK_LINE: usize = 4096;

/// Longest trailer section (field lines and their CRLFs).
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Most hex digits in a chunk size: 16 digits always fit in a u64.
const MAX_SIZE_DIGITS: u8 = 16;

/// Why a chunked body was refused. For a request body the answer is 400 (then
/// close the connection); for an upstream's body, 502.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// A chunk size that is empty or not plain hex digits (`0x`, signs, `_`,
    /// whitespace before or after it).
    InvalidSize,
    /// A chunk size of more than 16 hex digits.
    SizeOverflow,
    /// A bare LF, or a CR not followed by LF, in a chunk-size line or trailer.
    InvalidLineEnding,
    /// A chunk extension that does not follow the grammar, or holds CR, NUL or
    /// another control byte.
    InvalidExtension,
    /// A chunk-size line longer than [`MAX_CHUNK_LINE`].
    LineTooLong,
    /// Chunk data not followed by CRLF: the chunk is longer than declared.
    MissingDataCrlf,
    /// A trailer field line that is malformed (obs-fold, no colon, whitespace
    /// before the colon, control bytes).
    InvalidTrailer,
    /// A trailer section longer than [`MAX_TRAILER_BYTES`].
    TrailersTooLarge,
}

impl ChunkError {
    /// A short human-readable explanation, fit for an error body's `message`.
    pub fn reason(&self) -> &'static str {
        match self {
            ChunkError::InvalidSize => "invalid chunk size",
            ChunkError::SizeOverflow => "chunk size too large",
            ChunkError::InvalidLineEnding => "invalid line ending in chunked body",
            ChunkError::InvalidExtension => "invalid chunk extension",
            ChunkError::LineTooLong => "chunk-size line too long",
            ChunkError::MissingDataCrlf => "chunk data not followed by CRLF",
            ChunkError::InvalidTrailer => "invalid trailer field",
            ChunkError::TrailersTooLarge => "trailer section too large",
        }
    }
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ChunkError {}

/// The result of one [`ChunkedDecoder::decode`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input used; the rest (when `done`) belongs to the next message.
    pub consumed: usize,
    /// Whether the last chunk and the trailer section have been read.
    pub done: bool,
}

/// Where the decoder is in the grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading chunk-size hex digits (`digits` so far).
    Size,
    /// After `;`: the first character of an extension name.
    ExtNameStart,
    /// Inside an extension name.
    ExtName,
    /// After `=`: the first character of a token or a `"`.
    ExtValueStart,
    /// Inside a token extension value.
    ExtToken,
    /// Inside a quoted-string extension value.
    ExtQuoted,
    /// After `\` inside a quoted string.
    ExtQuotedPair,
    /// After the closing `"`: `;` or CR.
    ExtAfterQuoted,
    /// After the CR that ends a chunk-size line.
    SizeLf,
    /// Copying chunk data; `remaining` bytes to go.
    Data,
    /// After chunk data: CR expected.
    DataCr,
    /// After chunk data and CR: LF expected.
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value.
    TrailerValue,
    /// After the CR that ends a trailer field line.
    TrailerLf,
    /// After the CR of the final empty line.
    EndLf,
    /// The body is complete.
    Done,
    /// An error was returned; it is returned again.
    Failed(ChunkError),
}

/// Decodes one chunked body, across as many reads as it takes.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// The chunk size while reading it, then the data bytes still to copy.
    remaining: u64,
    digits: u8,
    /// Bytes of the current chunk-size line so far.
    line_len: usize,
    /// Bytes of the trailer section so far.
    trailer_len: usize,
    body_bytes: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body.
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            remaining: 0,
            digits: 0,
            line_len: 0,
            trailer_len: 0,
            body_bytes: 0,
        }
    }

    /// Decodes from `input`, appending chunk data to `out`. Returns how much of
    /// `input` was consumed and whether the last chunk and trailers were read;
    /// nothing past the end of the body is consumed. Trailers are checked and
    /// discarded. After an error, every later call returns the same error.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Decoded, ChunkError> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                State::Done => break,
                State::Failed(error) => return Err(error),
                State::Data => {
                    let available = input.len() - pos;
                    let take =
                        usize::try_from(self.remaining).map_or(available, |r| r.min(available));
                    out.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    self.remaining -= take as u64;
                    self.body_bytes = self.body_bytes.saturating_add(take as u64);
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    if let Err(error) = self.step(input[pos]) {
                        self.state = State::Failed(error);
                        return Err(error);
                    }
                    pos += 1;
                }
            }
        }
        match self.state {
            State::Failed(error) => Err(error),
            state => Ok(Decoded {
                consumed: pos,
                done: state == State::Done,
            }),
        }
    }

    /// Chunk data decoded so far, to enforce the body size limit (413).
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// Chunk data decoded so far plus what the current chunk still declares: lets
    /// the body limit be enforced as soon as a too-large chunk size is read.
    pub fn declared_bytes(&self) -> u64 {
        match self.state {
            State::Data => self.body_bytes.saturating_add(self.remaining),
            _ => self.body_bytes,
        }
    }

    /// Whether the first chunk-size line is still being read: until it is complete, a body
    /// could still turn out malformed before a single data byte (a proxy waits for it before
    /// contacting an upstream).
    pub fn in_first_size_line(&self) -> bool {
        self.body_bytes == 0 && (self.in_size_line() || self.state == State::SizeLf)
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Advances by one byte outside chunk data.
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        if self.in_size_line() && b != b'\r' {
            self.line_len += 1;
            if self.line_len > MAX_CHUNK_LINE {
                return Err(ChunkError::LineTooLong);
            }
        } else if self.in_trailers() {
            self.trailer_len += 1;
            if self.trailer_len > MAX_TRAILER_BYTES {
                return Err(ChunkError::TrailersTooLarge);
            }
        }
        self.state = match (self.state, b) {
            (State::Size, _) => return self.size_byte(b),

            (State::ExtNameStart, b) if is_tchar(b) => State::ExtName,
            (State::ExtNameStart, _) => return Err(ext_error(b)),
            (State::ExtName, b) if is_tchar(b) => State::ExtName,
            (State::ExtName, b'=') => State::ExtValueStart,
            (State::ExtValueStart, b) if is_tchar(b) => State::ExtToken,
            (State::ExtValueStart, b'"') => State::ExtQuoted,
            (State::ExtToken, b) if is_tchar(b) => State::ExtToken,
            (State::ExtQuoted, b'"') => State::ExtAfterQuoted,
            (State::ExtQuoted, b'\\') => State::ExtQuotedPair,
            // qdtext and quoted-pair: HTAB, SP, VCHAR, obs-text (RFC 9110 5.6.4).
            (State::ExtQuoted | State::ExtQuotedPair, b) if is_field_value_byte(b) => {
                State::ExtQuoted
            }
            (State::ExtName | State::ExtToken | State::ExtAfterQuoted, b';') => State::ExtNameStart,
            (State::ExtName | State::ExtToken | State::ExtAfterQuoted, b'\r') => State::SizeLf,
            (
                State::ExtName
                | State::ExtValueStart
                | State::ExtToken
                | State::ExtQuoted
                | State::ExtQuotedPair
                | State::ExtAfterQuoted,
                _,
            ) => return Err(ext_error(b)),

            (State::SizeLf, b'\n') if self.remaining == 0 => State::TrailerStart,
            (State::SizeLf, b'\n') => {
                self.line_len = 0;
                State::Data
            }
            (State::SizeLf, _) => return Err(ChunkError::InvalidLineEnding),

            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => {
                self.digits = 0;
                State::Size
            }
            (State::DataCr | State::DataLf, _) => return Err(ChunkError::MissingDataCrlf),

            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart, b) if is_tchar(b) => State::TrailerName,
            (State::TrailerName, b) if is_tchar(b) => State::TrailerName,
            (State::TrailerName, b':') => State::TrailerValue,
            (State::TrailerValue, b) if is_field_value_byte(b) => State::TrailerValue,
            (State::TrailerValue, b'\r') => State::TrailerLf,
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::EndLf, b'\n') => State::Done,
            (State::TrailerStart | State::TrailerName | State::TrailerValue, b'\n') => {
                return Err(ChunkError::InvalidLineEnding);
            }
            (State::TrailerLf | State::EndLf, _) => return Err(ChunkError::InvalidLineEnding),
            // obs-fold, whitespace before the colon, a line without a colon,
            // control bytes: all refused (RFC 9112 5.1, 5.2).
            (State::TrailerStart | State::TrailerName | State::TrailerValue, _) => {
                return Err(ChunkError::InvalidTrailer);
            }

            (State::Data | State::Done | State::Failed(_), _) => {
                unreachable!("handled by decode")
            }
        };
        Ok(())
    }

    /// One byte of the chunk-size line before any extension.
    fn size_byte(&mut self, b: u8) -> Result<(), ChunkError> {
        if let Some(digit) = hex_value(b) {
            if self.digits == MAX_SIZE_DIGITS {
                return Err(ChunkError::SizeOverflow);
            }
            // `remaining` is 0 here: a new decoder, or the previous chunk fully copied.
            self.digits += 1;
            self.remaining = (self.remaining << 4) | u64::from(digit);
            return Ok(());
        }
        if self.digits == 0 {
            return Err(if b == b'\n' {
                ChunkError::InvalidLineEnding
            } else {
                ChunkError::InvalidSize
            });
        }
        self.state = match b {
            b';' => State::ExtNameStart,
            b'\r' => State::SizeLf,
            b'\n' => return Err(ChunkError::InvalidLineEnding),
            // `0x`, `_`, and whitespace before `;` (BWS, which RFC 9112 7.1.1
            // tolerates but we refuse) all land here.
            _ => return Err(ChunkError::InvalidSize),
        };
        Ok(())
    }

    fn in_size_line(&self) -> bool {
        matches!(
            self.state,
            State::Size
                | State::ExtNameStart
                | State::ExtName
                | State::ExtValueStart
                | State::ExtToken
                | State::ExtQuoted
                | State::ExtQuotedPair
                | State::ExtAfterQuoted
        )
    }

    fn in_trailers(&self) -> bool {
        matches!(
            self.state,
            State::TrailerStart
                | State::TrailerName
                | State::TrailerValue
                | State::TrailerLf
                | State::EndLf
        )
    }
}

/// The error for an unexpected byte inside a chunk extension.
fn ext_error(b: u8) -> ChunkError {
    if b == b'\n' {
        ChunkError::InvalidLineEnding
    } else {
        ChunkError::InvalidExtension
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_size_line_is_pending_until_its_line_ends() {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        assert!(decoder.in_first_size_line());
        decoder.decode(b"5;ext=1", &mut out).unwrap();
        assert!(decoder.in_first_size_line());
        decoder.decode(b"\r\nhel", &mut out).unwrap();
        assert!(!decoder.in_first_size_line());
        let mut empty = ChunkedDecoder::new();
        empty.decode(b"0\r\n", &mut out).unwrap();
        assert!(!empty.in_first_size_line());
    }

    /// Decodes `input` in one call.
    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, Decoded), ChunkError> {
        let mut out = Vec::new();
        let decoded = ChunkedDecoder::new().decode(input, &mut out)?;
        Ok((out, decoded))
    }

    /// Decodes `input` one byte per call, as the slowest client would send it.
    fn decode_bytewise(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut consumed = 0;
        for byte in input.chunks(1) {
            let decoded = decoder.decode(byte, &mut out)?;
            consumed += decoded.consumed;
            if decoded.done {
                return Ok((out, consumed, true));
            }
        }
        Ok((out, consumed, false))
    }

    fn assert_error(input: &[u8], expected: ChunkError) {
        assert_eq!(
            decode_all(input).err(),
            Some(expected),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(
            decode_bytewise(input).err(),
            Some(expected),
            "bytewise {:?}",
            String::from_utf8_lossy(input)
        );
    }

    const BODY: &[u8] =
        b"5\r\nhello\r\n7;ext=1;q=\"a \\\"b\\\"\";x\r\n, world\r\n0\r\nTrailer-A: 1\r\n\r\n";

    #[test]
    fn decodes_chunks_with_extensions_and_trailers() {
        let (out, decoded) = decode_all(BODY).unwrap();
        assert_eq!(out, b"hello, world");
        assert_eq!(
            decoded,
            Decoded {
                consumed: BODY.len(),
                done: true
            }
        );
    }

    #[test]
    fn decodes_when_split_at_every_byte_boundary() {
        let (out, consumed, done) = decode_bytewise(BODY).unwrap();
        assert_eq!(
            (out.as_slice(), consumed, done),
            (&b"hello, world"[..], BODY.len(), true)
        );
    }

    #[test]
    fn decodes_when_split_in_two_at_every_position() {
        for split in 0..=BODY.len() {
            let mut decoder = ChunkedDecoder::new();
            let mut out = Vec::new();
            let first = decoder.decode(&BODY[..split], &mut out).unwrap();
            assert_eq!(first.consumed, split);
            let second = decoder.decode(&BODY[split..], &mut out).unwrap();
            assert!(second.done, "split at {split}");
            assert_eq!(out, b"hello, world");
        }
    }

    #[test]
    fn stops_at_the_end_of_the_body() {
        let input = b"1\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (out, decoded) = decode_all(input).unwrap();
        assert_eq!(out, b"a");
        assert_eq!(
            decoded,
            Decoded {
                consumed: 11,
                done: true
            }
        );
    }

    #[test]
    fn empty_body_is_just_the_last_chunk() {
        assert!(decode_all(b"0\r\n\r\n").unwrap().1.done);
    }

    #[test]
    fn last_chunk_may_have_several_zeros_and_extensions() {
        assert!(decode_all(b"000;x=y\r\n\r\n").unwrap().1.done);
    }

    #[test]
    fn hex_sizes_are_case_insensitive() {
        let mut input = b"aA\r\n".to_vec();
        input.extend_from_slice(&[b'x'; 0xaa]);
        input.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(decode_all(&input).unwrap().0.len(), 0xaa);
    }

    #[test]
    fn counts_body_bytes_as_they_are_decoded() {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        decoder.decode(b"a\r\n01234", &mut out).unwrap();
        assert_eq!(decoder.body_bytes(), 5);
        assert_eq!(decoder.declared_bytes(), 10);
    }

    #[test]
    fn incomplete_body_is_not_done() {
        let decoded = decode_all(b"5\r\nhel").unwrap().1;
        assert_eq!(
            decoded,
            Decoded {
                consumed: 6,
                done: false
            }
        );
    }

    #[test]
    fn errors_are_sticky() {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        assert!(decoder.decode(b"z", &mut out).is_err());
        assert_eq!(
            decoder.decode(b"0\r\n\r\n", &mut out),
            Err(ChunkError::InvalidSize)
        );
    }

    #[test]
    fn size_with_0x_prefix_is_refused() {
        assert_error(b"0x5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize);
    }

    #[test]
    fn size_with_a_sign_is_refused() {
        assert_error(b"+5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize);
        assert_error(b"-5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize);
    }

    #[test]
    fn whitespace_before_the_size_is_refused() {
        assert_error(b" 5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize);
        assert_error(b"\t5\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize);
    }

    #[test]
    fn whitespace_after_the_size_is_refused() {
        assert_error(b"5 \r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize);
        assert_error(b"5\t\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize);
    }

    #[test]
    fn whitespace_before_an_extension_is_refused() {
        assert_error(b"5 ;x\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidSize);
        assert_error(b"5; x\r\nhello\r\n0\r\n\r\n", ChunkError::InvalidExtension);
        assert_error(
            b"5;x =1\r\nhello\r\n0\r\n\r\n",
            ChunkError::InvalidExtension,
        );
    }

    #[test]
    fn underscore_in_the_size_is_refused() {
        assert_error(b"1_0\r\n", ChunkError::InvalidSize);
    }

    #[test]
    fn non_hex_size_is_refused() {
        assert_error(b"g\r\n", ChunkError::InvalidSize);
        assert_error(b"5g\r\n", ChunkError::InvalidSize);
    }

    #[test]
    fn empty_size_line_is_refused() {
        assert_error(b"\r\nhello\r\n", ChunkError::InvalidSize);
        assert_error(b";x\r\n", ChunkError::InvalidSize);
    }

    #[test]
    fn size_over_16_hex_digits_is_refused() {
        assert_error(b"10000000000000000\r\n", ChunkError::SizeOverflow);
        assert_error(b"00000000000000001\r\n", ChunkError::SizeOverflow);
    }

    #[test]
    fn largest_16_digit_size_is_accepted_as_a_header() {
        let mut decoder = ChunkedDecoder::new();
        let decoded = decoder
            .decode(b"ffffffffffffffff\r\n", &mut Vec::new())
            .unwrap();
        assert!(!decoded.done);
        assert_eq!(decoder.declared_bytes(), u64::MAX);
    }

    #[test]
    fn bare_lf_after_the_size_is_refused() {
        assert_error(b"5\nhello\r\n0\r\n\r\n", ChunkError::InvalidLineEnding);
    }

    #[test]
    fn bare_lf_in_an_extension_is_refused() {
        assert_error(b"5;x\nhello\r\n", ChunkError::InvalidLineEnding);
        assert_error(b"5;x=y\nhello\r\n", ChunkError::InvalidLineEnding);
        assert_error(b"5;x=\"y\n\"\r\n", ChunkError::InvalidLineEnding);
    }

    #[test]
    fn bare_lf_as_the_whole_size_line_is_refused() {
        assert_error(b"\n", ChunkError::InvalidLineEnding);
    }

    #[test]
    fn bare_cr_in_the_size_line_is_refused() {
        assert_error(b"5\rhello\r\n", ChunkError::InvalidLineEnding);
        assert_error(b"5;x\rhello\r\n", ChunkError::InvalidLineEnding);
    }

    #[test]
    fn cr_inside_an_extension_value_is_refused() {
        assert_error(b"5;x=\"a\rb\"\r\nhello\r\n", ChunkError::InvalidExtension);
    }

    #[test]
    fn nul_in_the_size_line_is_refused() {
        assert_error(b"5\x00\r\nhello\r\n", ChunkError::InvalidSize);
        assert_error(b"5;x\x00\r\nhello\r\n", ChunkError::InvalidExtension);
        assert_error(b"5;x=\"\x00\"\r\nhello\r\n", ChunkError::InvalidExtension);
    }

    #[test]
    fn malformed_extensions_are_refused() {
        for ext in [
            &b";"[..],
            b";=1",
            b";x=",
            b";x=\"open",
            b";x=\"a\"b",
            b";x=a=b",
            b";x=(",
            b";x;;",
        ] {
            let mut input = b"5".to_vec();
            input.extend_from_slice(ext);
            input.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
            assert!(
                decode_all(&input).is_err(),
                "{:?}",
                String::from_utf8_lossy(ext)
            );
        }
    }

    #[test]
    fn extensions_up_to_4_kib_are_accepted() {
        let mut input = b"5;x=".to_vec();
        input.resize(MAX_CHUNK_LINE, b'a');
        input.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        assert_eq!(decode_all(&input).unwrap().0, b"hello");
    }

    #[test]
    fn extensions_over_4_kib_are_refused() {
        let mut input = b"5;x=".to_vec();
        input.resize(MAX_CHUNK_LINE + 1, b'a');
        input.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        assert_error(&input, ChunkError::LineTooLong);
    }

    #[test]
    fn line_limit_applies_per_line() {
        let mut ext = b";x=".to_vec();
        ext.resize(MAX_CHUNK_LINE - 1, b'a');
        let mut input = Vec::new();
        for _ in 0..3 {
            input.push(b'1');
            input.extend_from_slice(&ext);
            input.extend_from_slice(b"\r\nz\r\n");
        }
        input.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(decode_all(&input).unwrap().0, b"zzz");
    }

    #[test]
    fn data_longer_than_declared_is_refused() {
        assert_error(b"3\r\nhello\r\n0\r\n\r\n", ChunkError::MissingDataCrlf);
    }

    #[test]
    fn data_without_its_crlf_is_refused() {
        assert_error(b"5\r\nhello0\r\n\r\n", ChunkError::MissingDataCrlf);
        assert_error(b"5\r\nhello\n0\r\n\r\n", ChunkError::MissingDataCrlf);
        assert_error(b"5\r\nhello\rX", ChunkError::MissingDataCrlf);
    }

    #[test]
    fn trailer_with_bare_lf_is_refused() {
        assert_error(b"0\r\nA: 1\n\r\n", ChunkError::InvalidLineEnding);
        assert_error(b"0\r\nA: 1\r\n\n", ChunkError::InvalidLineEnding);
    }

    #[test]
    fn final_line_with_bare_cr_is_refused() {
        assert_error(b"0\r\n\rX", ChunkError::InvalidLineEnding);
    }

    #[test]
    fn trailer_with_obs_fold_is_refused() {
        assert_error(
            b"0\r\nA: 1\r\n continued\r\n\r\n",
            ChunkError::InvalidTrailer,
        );
    }

    #[test]
    fn trailer_without_colon_is_refused() {
        assert_error(b"0\r\nNoColon\r\n\r\n", ChunkError::InvalidTrailer);
    }

    #[test]
    fn trailer_with_whitespace_before_colon_is_refused() {
        assert_error(b"0\r\nA : 1\r\n\r\n", ChunkError::InvalidTrailer);
    }

    #[test]
    fn trailer_with_control_bytes_is_refused() {
        assert_error(b"0\r\nA: 1\x00\r\n\r\n", ChunkError::InvalidTrailer);
        assert_error(b"0\r\nA: 1\rx\r\n\r\n", ChunkError::InvalidLineEnding);
    }

    #[test]
    fn framing_and_credential_trailers_are_dropped_not_merged() {
        let input =
            b"3\r\nabc\r\n0\r\nContent-Length: 99\r\nHost: evil\r\nAuthorization: x\r\n\r\n";
        let (out, decoded) = decode_all(input).unwrap();
        assert_eq!(out, b"abc");
        assert!(decoded.done);
    }

    #[test]
    fn trailers_over_the_limit_are_refused() {
        let mut input = b"0\r\n".to_vec();
        while input.len() < MAX_TRAILER_BYTES + 16 {
            input.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        input.extend_from_slice(b"\r\n");
        assert_error(&input, ChunkError::TrailersTooLarge);
    }
}
