//! URL pieces several providers build: a name from the configuration (a model, a
//! deployment, an API version) put into a request path.

/// `text` percent-encoded so it stays one path segment (or one query value): every byte but
/// RFC 3986's unreserved characters (ALPHA, DIGIT, `-`, `.`, `_`, `~`; section 2.3) becomes
/// `%XX` (section 2.1), so `/`, `?`, `#`, `:`, `%` and spaces cannot change the URL's shape.
/// The dot-segments `.` and `..` are encoded whole (`%2E`), so no server resolves them
/// (section 5.2.4).
pub(crate) fn encode_path_segment(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if text == "." || text == ".." {
        return "%2E".repeat(text.len());
    }
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0xF)] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_encoded() {
        assert_eq!(encode_path_segment(".."), "%2E%2E");
        assert_eq!(encode_path_segment("."), "%2E");
        assert_eq!(encode_path_segment("a..b"), "a..b");
    }

    #[test]
    fn encoding_keeps_unreserved_characters_and_escapes_utf8_bytes() {
        assert_eq!(encode_path_segment("aZ09-._~"), "aZ09-._~");
        assert_eq!(encode_path_segment("é:"), "%C3%A9%3A");
    }
}
