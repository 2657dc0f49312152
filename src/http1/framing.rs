//! The two framing fields, Content-Length and Transfer-Encoding, read strictly:
//! they decide where one message ends and the next begins, so any doubt about
//! them is a smuggling vector (RFC 9112 6.3, 11.2).

use super::syntax::{is_token, list_elements};

/// Parses a Content-Length value: `1*DIGIT` that fits in a u64 (RFC 9110 8.6).
/// Signs, hex, spaces, lists and empty values are refused.
pub(crate) fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Parses a Content-Length value that may be a list of identical lengths, such as
/// `42, 42`, which RFC 9110 8.6 lets a recipient accept. Used for responses only.
pub(crate) fn parse_content_length_list(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for element in list_elements(value) {
        let n = parse_content_length(element)?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

/// The transfer codings named by all Transfer-Encoding fields of a message, which
/// together form one list (RFC 9110 5.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TransferCodings {
    /// How many codings were listed.
    pub count: u32,
    /// How many of them were `chunked`.
    pub chunked: u32,
    /// Whether the last one was `chunked`.
    pub last_is_chunked: bool,
}

/// What the Transfer-Encoding list amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CodingVerdict {
    /// No Transfer-Encoding field.
    Absent,
    /// Exactly `chunked`.
    Chunked,
    /// Other codings applied before a final `chunked`: valid, but we decode none.
    Unsupported,
    /// `chunked` is not last, or is applied twice (RFC 9112 6.1, 6.3 rule 4).
    Invalid,
}

impl TransferCodings {
    /// Adds the codings of one Transfer-Encoding field value. Every element must
    /// be a bare token: empty elements (a leading comma), parameters, quotes and
    /// control bytes are refused.
    pub fn add(&mut self, value: &[u8]) -> Result<(), &'static str> {
        for coding in list_elements(value) {
            if coding.is_empty() {
                return Err("empty element in Transfer-Encoding");
            }
            if !is_token(coding) {
                return Err("invalid Transfer-Encoding");
            }
            // Coding names are case-insensitive (RFC 9112 7).
            let chunked = coding.eq_ignore_ascii_case(b"chunked");
            self.count += 1;
            self.chunked += u32::from(chunked);
            self.last_is_chunked = chunked;
        }
        Ok(())
    }

    /// Whether any Transfer-Encoding field was seen.
    pub fn present(&self) -> bool {
        self.count > 0
    }

    /// Judges the complete list.
    pub fn verdict(&self) -> CodingVerdict {
        match *self {
            TransferCodings { count: 0, .. } => CodingVerdict::Absent,
            TransferCodings {
                last_is_chunked: false,
                ..
            } => CodingVerdict::Invalid,
            TransferCodings { chunked: 2.., .. } => CodingVerdict::Invalid,
            TransferCodings { count: 1, .. } => CodingVerdict::Chunked,
            _ => CodingVerdict::Unsupported,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(values: &[&[u8]]) -> Result<CodingVerdict, &'static str> {
        let mut codings = TransferCodings::default();
        for value in values {
            codings.add(value)?;
        }
        Ok(codings.verdict())
    }

    #[test]
    fn content_length_accepts_digits_with_leading_zeros() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b"0042"), Some(42));
        assert_eq!(
            parse_content_length(b"18446744073709551615"),
            Some(u64::MAX)
        );
    }

    #[test]
    fn content_length_refuses_sign_hex_spaces_empty_lists_and_overflow() {
        for bad in [
            &b"+5"[..],
            b"-5",
            b"0x10",
            b"1a",
            b"1 0",
            b"",
            b"5, 5",
            b"18446744073709551616",
        ] {
            assert_eq!(
                parse_content_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn content_length_list_accepts_identical_values_only() {
        assert_eq!(parse_content_length_list(b"5, 5,5"), Some(5));
        assert_eq!(parse_content_length_list(b"5, 10"), None);
        assert_eq!(parse_content_length_list(b"5,"), None);
    }

    #[test]
    fn single_chunked_coding_is_chunked_in_any_case() {
        assert_eq!(verdict(&[b"chunked"]), Ok(CodingVerdict::Chunked));
        assert_eq!(verdict(&[b"Chunked"]), Ok(CodingVerdict::Chunked));
    }

    #[test]
    fn other_codings_before_final_chunked_are_unsupported() {
        assert_eq!(verdict(&[b"gzip, chunked"]), Ok(CodingVerdict::Unsupported));
        assert_eq!(
            verdict(&[b"gzip", b"chunked"]),
            Ok(CodingVerdict::Unsupported)
        );
    }

    #[test]
    fn chunked_not_last_is_invalid() {
        assert_eq!(verdict(&[b"chunked, gzip"]), Ok(CodingVerdict::Invalid));
        assert_eq!(verdict(&[b"xchunked"]), Ok(CodingVerdict::Invalid));
        assert_eq!(verdict(&[b"identity"]), Ok(CodingVerdict::Invalid));
    }

    #[test]
    fn chunked_applied_twice_is_invalid() {
        assert_eq!(
            verdict(&[b"chunked", b"chunked"]),
            Ok(CodingVerdict::Invalid)
        );
    }

    #[test]
    fn empty_elements_and_non_tokens_are_refused() {
        assert!(verdict(&[b", chunked"]).is_err());
        assert!(verdict(&[b""]).is_err());
        assert!(verdict(&[b"chunked;q=1"]).is_err());
        assert!(verdict(&[b"\"chunked\""]).is_err());
        assert!(verdict(&[b"chun\tked"]).is_err());
    }
}
