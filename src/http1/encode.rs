//! Writing what we send: chunked framing, and checks for fields we generate
//! (for example ones set by Lua hooks), so nothing we emit can split a message.

use super::syntax::{is_field_value_byte, is_token};

/// Appends `data` as one chunk (RFC 9112 7.1): hex size, CRLF, data, CRLF.
/// Empty `data` writes nothing, because a zero-size chunk would end the body;
/// use [`encode_last_chunk`] for that.
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let mut digits = [0u8; 16];
    let mut size = data.len();
    let mut start = digits.len();
    while size > 0 {
        start -= 1;
        digits[start] = b"0123456789abcdef"[size & 0xf];
        size >>= 4;
    }
    out.reserve(digits.len() - start + data.len() + 4);
    out.extend_from_slice(&digits[start..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends the last chunk and an empty trailer section: `0\r\n\r\n`.
pub fn encode_last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

/// Whether `name` may be sent as a field name: a non-empty token (RFC 9110 5.1).
pub fn is_valid_field_name(name: &str) -> bool {
    is_token(name.as_bytes())
}

/// Whether `value` may be sent as a field value: no CR, LF, NUL or other
/// control bytes except HTAB, and no leading or trailing whitespace
/// (RFC 9110 5.5).
pub fn is_valid_field_value(value: &[u8]) -> bool {
    value.iter().all(|&b| is_field_value_byte(b))
        && !value.first().is_some_and(|&b| b == b' ' || b == b'\t')
        && !value.last().is_some_and(|&b| b == b' ' || b == b'\t')
}

/// `fmt::Write` into a byte buffer, so numbers are formatted without a temporary String.
pub struct StrBuf<'a>(pub &'a mut Vec<u8>);

impl std::fmt::Write for StrBuf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Appends one `name: value\r\n` header line.
pub fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::ChunkedDecoder;

    #[test]
    fn chunk_is_hex_size_crlf_data_crlf() {
        let mut out = Vec::new();
        encode_chunk(&[b'x'; 26], &mut out);
        assert_eq!(out, [&b"1a\r\n"[..], &[b'x'; 26], b"\r\n"].concat());
    }

    #[test]
    fn empty_chunk_writes_nothing() {
        let mut out = Vec::new();
        encode_chunk(b"", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn last_chunk_ends_the_body() {
        let mut out = Vec::new();
        encode_last_chunk(&mut out);
        assert_eq!(out, b"0\r\n\r\n");
    }

    #[test]
    fn encoded_chunks_round_trip_through_the_decoder() {
        let mut wire = Vec::new();
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        for piece in data.chunks(1024) {
            encode_chunk(piece, &mut wire);
        }
        encode_last_chunk(&mut wire);
        let mut out = Vec::new();
        let decoded = ChunkedDecoder::new().decode(&wire, &mut out).unwrap();
        assert!(decoded.done);
        assert_eq!(out, data);
    }

    #[test]
    fn field_names_must_be_tokens() {
        assert!(is_valid_field_name("x-request-id"));
        assert!(!is_valid_field_name(""));
        assert!(!is_valid_field_name("bad name"));
        assert!(!is_valid_field_name("x:y"));
    }

    #[test]
    fn field_values_refuse_line_breaks_and_controls() {
        assert!(is_valid_field_value(b"Bearer abc\tdef"));
        assert!(is_valid_field_value(b""));
        assert!(!is_valid_field_value(b"a\r\nX-Injected: 1"));
        assert!(!is_valid_field_value(b"a\nb"));
        assert!(!is_valid_field_value(b"a\x00b"));
        assert!(!is_valid_field_value(b" padded"));
        assert!(!is_valid_field_value(b"padded\t"));
    }
}
