//! Byte classes and small grammar helpers shared by the head and body parsers.
//!
//! The classes are 256-entry tables so that each byte costs one load; they follow
//! RFC 9110 section 5 (field syntax) and RFC 3986 (URI syntax).

/// `tchar` from RFC 9110 5.6.2: the characters of a `token` (methods, field names,
/// transfer codings, connection options).
static TCHAR: [bool; 256] = build_tchar();

/// Bytes allowed inside a field value: `field-vchar` (VCHAR / obs-text) plus SP and
/// HTAB (RFC 9110 5.5). Everything else, notably CR, LF and NUL, is refused.
static FIELD_VALUE: [bool; 256] = build_field_value();

const fn build_tchar() -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    table
}

const fn build_field_value() -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b == b'\t' || b == b' ' || (b >= 0x21 && b != 0x7f);
        i += 1;
    }
    table
}

/// Whether `b` is a `tchar` (RFC 9110 5.6.2).
#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[b as usize]
}

/// Whether `s` is a non-empty `token` (RFC 9110 5.6.2).
#[inline]
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Whether `b` may appear inside a field value (RFC 9110 5.5).
#[inline]
pub(crate) fn is_field_value_byte(b: u8) -> bool {
    FIELD_VALUE[b as usize]
}

/// Eight copies of a byte, for word-at-a-time (SWAR) scans.
const fn splat(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}

/// The high bit of each byte of `word` whose byte is below `n` (`n <= 0x80`).
/// Borrows can flag bytes above a true match, never below it, so the lowest
/// flag is exact and a zero result means no byte matched.
#[inline]
fn bytes_below(word: u64, n: u8) -> u64 {
    word.wrapping_sub(splat(n)) & !word & splat(0x80)
}

/// Position of the first LF in `bytes`, eight bytes at a time: the head scanner
/// and the field parser both look for line ends, and heads are mostly long lines.
#[inline]
pub(crate) fn find_lf(bytes: &[u8]) -> Option<usize> {
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
        let hits = bytes_below(word ^ splat(b'\n'), 1);
        if hits != 0 {
            return Some(offset + (hits.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| offset + i)
}

/// Position of the first byte in `value` that may not appear in a field value
/// (see [`is_field_value_byte`]). Words without any control byte or DEL are
/// skipped whole; a word with one (usually just an HTAB) is checked bytewise.
#[inline]
pub(crate) fn find_invalid_value_byte(value: &[u8]) -> Option<usize> {
    let mut chunks = value.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
        if bytes_below(word, 0x20) | bytes_below(word ^ splat(0x7f), 1) != 0 {
            if let Some(i) = chunk.iter().position(|&b| !is_field_value_byte(b)) {
                return Some(offset + i);
            }
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| !is_field_value_byte(b))
        .map(|i| offset + i)
}

/// Whether `b` is optional whitespace (OWS, RFC 9110 5.6.3): SP or HTAB.
#[inline]
pub(crate) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `s` without leading and trailing OWS.
pub(crate) fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_ows(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

/// The elements of a comma-separated list value (`#element`, RFC 9110 5.6.1), each
/// trimmed of OWS. Empty elements are yielded too: each caller decides whether an
/// empty element is tolerable.
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

/// The value of one hexadecimal digit.
#[inline]
pub(crate) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `name` spells `canonical` (a lower-case, hyphenated field name) with at
/// least one underscore in place of a hyphen, e.g. `Content_Length`. Some servers
/// normalise `_` to `-`, so such a name could carry framing past us unseen.
pub(crate) fn is_underscore_spelling(name: &[u8], canonical: &[u8]) -> bool {
    name.len() == canonical.len()
        && name.contains(&b'_')
        && name.iter().zip(canonical).all(|(&n, &c)| {
            let n = if n == b'_' { b'-' } else { n };
            n.eq_ignore_ascii_case(&c)
        })
}

/// `bytes` as `&str`. Every caller passes bytes that were already validated as
/// ASCII (tokens, request-targets, hosts), so the fallback is never taken.
pub(crate) fn ascii_str(bytes: &[u8]) -> &str {
    debug_assert!(bytes.is_ascii());
    std::str::from_utf8(bytes).unwrap_or("")
}

/// Whether `host` is a valid `uri-host [ ":" port ]` (RFC 9110 7.2, RFC 3986 3.2.2).
///
/// Stricter than RFC 3986 on purpose: a reg-name may hold only unreserved
/// characters and percent-encodings (no sub-delims such as `,` or `;`, which no DNS
/// name contains and which other hops may read as separators), an IP-literal only
/// hex digits, `:` and `.`, and a port, when its colon is present, 1 to 5 digits no
/// larger than 65535.
pub(crate) fn is_valid_host(host: &[u8]) -> bool {
    let (name, port) = if host.first() == Some(&b'[') {
        let Some(close) = host.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &host[1..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match &host[close + 1..] {
            [] => return true,
            [b':', port @ ..] => (&host[..=close], Some(port)),
            _ => return false,
        }
    } else {
        match host.iter().position(|&b| b == b':') {
            Some(colon) => (&host[..colon], Some(&host[colon + 1..])),
            None => (host, None),
        }
    };
    if name.is_empty() || (name[0] != b'[' && !is_reg_name(name)) {
        return false;
    }
    port.is_none_or(is_valid_port)
}

fn is_reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => i += 1,
            b'%' if name.len() > i + 2
                && name[i + 1].is_ascii_hexdigit()
                && name[i + 2].is_ascii_hexdigit() =>
            {
                i += 3
            }
            _ => return false,
        }
    }
    true
}

fn is_valid_port(port: &[u8]) -> bool {
    !port.is_empty()
        && port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= 65535
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tchar_accepts_token_punctuation_and_refuses_separators() {
        assert!(b"!#$%&'*+-.^_`|~azAZ09".iter().all(|&b| is_tchar(b)));
        assert!(b"()<>@,;:\\\"/[]?={} \t\x00\x7f\x80"
            .iter()
            .all(|&b| !is_tchar(b)));
    }

    #[test]
    fn field_value_bytes_refuse_controls_but_allow_tab_and_obs_text() {
        assert!(is_field_value_byte(b'\t'));
        assert!(is_field_value_byte(b' '));
        assert!(is_field_value_byte(0x80));
        assert!(!is_field_value_byte(b'\r'));
        assert!(!is_field_value_byte(b'\n'));
        assert!(!is_field_value_byte(0));
        assert!(!is_field_value_byte(0x7f));
    }

    #[test]
    fn find_lf_finds_the_first_lf_at_every_position() {
        for len in 0..40 {
            for at in 0..len {
                let mut bytes = vec![b'a'; len];
                bytes[at] = b'\n';
                if at + 1 < len {
                    bytes[len - 1] = b'\n';
                }
                assert_eq!(find_lf(&bytes), Some(at), "len {len} at {at}");
            }
            assert_eq!(find_lf(&vec![0x8a; len]), None);
        }
    }

    #[test]
    fn find_invalid_value_byte_agrees_with_the_byte_table() {
        for bad in 0..=255u8 {
            for at in 0..20 {
                let mut value = vec![b'v'; 20];
                value[at] = bad;
                let expected = (!is_field_value_byte(bad)).then_some(at);
                assert_eq!(
                    find_invalid_value_byte(&value),
                    expected,
                    "byte {bad:#x} at {at}"
                );
            }
        }
        assert_eq!(find_invalid_value_byte(b"\t\t\t\t\t\t\t\t\t\x00"), Some(9));
    }

    #[test]
    fn trim_ows_removes_spaces_and_tabs_at_both_ends_only() {
        assert_eq!(trim_ows(b" \ta b\t "), b"a b");
        assert_eq!(trim_ows(b" \t "), b"");
    }

    #[test]
    fn list_elements_splits_on_commas_and_keeps_empty_elements() {
        let elements: Vec<&[u8]> = list_elements(b" a ,, b").collect();
        assert_eq!(elements, [&b"a"[..], b"", b"b"]);
    }

    #[test]
    fn underscore_spelling_matches_only_names_with_an_underscore() {
        assert!(is_underscore_spelling(b"Content_Length", b"content-length"));
        assert!(!is_underscore_spelling(
            b"Content-Length",
            b"content-length"
        ));
        assert!(!is_underscore_spelling(b"X_Content_Len", b"content-length"));
    }

    #[test]
    fn valid_hosts_include_names_ipv4_ipv6_and_ports() {
        for host in [
            &b"example.com"[..],
            b"EXAMPLE.com:8080",
            b"127.0.0.1",
            b"[::1]",
            b"[::1]:443",
            b"xn--bcher-kva.example",
            b"a%41b",
        ] {
            assert!(is_valid_host(host), "{:?}", String::from_utf8_lossy(host));
        }
    }

    #[test]
    fn invalid_hosts_are_refused() {
        for host in [
            &b""[..],
            b":80",
            b"example.com:",
            b"example.com:65536",
            b"example.com:123456",
            b"example.com:8a",
            b"a b",
            b"a,b",
            b"user@host",
            b"[::1",
            b"[]",
            b"[::1]x",
            b"[v1.x]",
            b"a%4",
            b"a/b",
        ] {
            assert!(!is_valid_host(host), "{:?}", String::from_utf8_lossy(host));
        }
    }
}
