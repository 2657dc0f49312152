//! Request-path normalization: the one spelling of a path that routing, auth, limits, hooks,
//! the access log and the upstream all see.
//!
//! An upstream framework resolves `..`, decodes `%2e` and often strips `;` parameters before
//! it looks a path up. If the gateway routed on the raw path, `/public/../api/secret` would
//! pass the auth of `/public/` and reach `/api/secret`. So before routing the path is brought
//! to a normal form (RFC 3986 §6.2.2): percent-encoded unreserved characters are decoded
//! (§2.3), other escapes keep their encoding with upper-case hex digits (§6.2.2.1), dot
//! segments are removed (§5.2.4) and, optionally, runs of `/` are folded into one. What can
//! not be normalized without guessing how the upstream would read it is refused instead: a
//! path climbing above the root, an encoded slash or backslash, a raw backslash, an encoded
//! NUL, and `;` parameters on a dot segment (`/..;/` is `..` to Tomcat and Spring).

use std::borrow::Cow;
use std::fmt;

use super::syntax::hex_value;

/// Why a request path was refused. Every variant is a 400 `invalid_request_error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// A byte outside visible ASCII (the request-target grammar allows none).
    InvalidCharacter,
    /// A `%` not followed by two hex digits.
    InvalidEscape,
    /// `%2f` or `%5c`: an upstream that decodes first would see another segment boundary.
    EncodedSlash,
    /// A raw `\`, a segment separator to some servers.
    Backslash,
    /// `%00`, which ends the path early in C-based upstreams.
    Nul,
    /// A `..` with no segment left to remove.
    AboveRoot,
    /// `;` parameters on a `.` or `..` segment (`/..;/`), which servers that strip
    /// parameters resolve as a dot segment.
    DotSegmentParameters,
}

impl PathError {
    /// A short explanation, fit for an error body's `message` (never echoes the path).
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "request path does not start with /",
            PathError::InvalidCharacter => "invalid character in request path",
            PathError::InvalidEscape => "invalid percent-encoding in request path",
            PathError::EncodedSlash => "encoded slash or backslash in request path",
            PathError::Backslash => "backslash in request path",
            PathError::Nul => "encoded NUL in request path",
            PathError::AboveRoot => "request path climbs above the root",
            PathError::DotSegmentParameters => "parameters on a dot segment in request path",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for PathError {}

/// The normal form of an origin-form `path` (no query), or why it is refused.
///
/// Borrows `path` when it is already normal, which is the case for ordinary paths: a single
/// scan looks for `%`, `\`, `;`, dot segments and (with `merge_slashes`) empty segments, and
/// only a path holding one of those is rebuilt. An empty path is `/` (RFC 9110 §4.2.3).
/// Total: any `&str` gives `Ok` or `Err`, never a panic; the output is never longer than the
/// input (or `/`), so it needs no bound of its own.
///
/// Properties of every `Ok` output: it starts with `/`, holds no `.` or `..` segment, no
/// escape of an unreserved character, no lower-case escape, no `//` when `merge_slashes`, and
/// normalizing it again returns it unchanged (borrowed).
pub fn normalize_path(path: &str, merge_slashes: bool) -> Result<Cow<'_, str>, PathError> {
    if path.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    if is_normal(path.as_bytes(), merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }
    let normal = rebuild(path, merge_slashes)?;
    if normal == path {
        // Only needed a closer look (a `;` or an escape that stays as it is).
        Ok(Cow::Borrowed(path))
    } else {
        Ok(Cow::Owned(normal))
    }
}

/// The fast scan: true when `path` is certainly already normal. False means "look closer",
/// not "refused".
fn is_normal(path: &[u8], merge_slashes: bool) -> bool {
    let Some((b'/', rest)) = path.split_first() else {
        return false;
    };
    let mut segments = rest.split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let plain = match segment {
            b"" => last || !merge_slashes,
            b"." | b".." => false,
            _ => segment
                .iter()
                .all(|&b| matches!(b, 0x21..=0x7e) && !matches!(b, b'%' | b'\\' | b';')),
        };
        if !plain {
            return false;
        }
    }
    true
}

/// The slow path: decodes, checks and resolves segment by segment into a new string.
///
/// `out` always holds the resolved segments so far, each as `/segment`, so removing the
/// last one for `..` is a truncation at its `/`, and the whole is linear in the input.
fn rebuild(path: &str, merge_slashes: bool) -> Result<String, PathError> {
    let rest = path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut out = String::with_capacity(path.len());
    let mut segment = String::new();
    let mut raw_segments = rest.split('/').peekable();
    while let Some(raw) = raw_segments.next() {
        let last = raw_segments.peek().is_none();
        decode_segment(raw.as_bytes(), &mut segment)?;
        match dot_segment(&segment)? {
            Some(Dot::Current) => {
                // `/a/.` is `/a/`: a final dot segment leaves the trailing slash (§5.2.4 B).
                if last {
                    out.push('/');
                }
            }
            Some(Dot::Parent) => {
                let cut = out.rfind('/').ok_or(PathError::AboveRoot)?;
                out.truncate(cut);
                if last {
                    out.push('/');
                }
            }
            None if segment.is_empty() && merge_slashes && !last => {}
            None => {
                out.push('/');
                out.push_str(&segment);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// A dot segment (RFC 3986 §3.3).
enum Dot {
    /// `.`
    Current,
    /// `..`
    Parent,
}

/// Whether a decoded segment is a dot segment; a dot segment carrying `;` parameters
/// (raw `;` or a kept `%3B`) is refused, since servers that strip parameters read it as one.
fn dot_segment(segment: &str) -> Result<Option<Dot>, PathError> {
    let name_end = [segment.find(';'), segment.find("%3B")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(segment.len());
    let dot = match &segment[..name_end] {
        "." => Dot::Current,
        ".." => Dot::Parent,
        _ => return Ok(None),
    };
    if name_end < segment.len() {
        return Err(PathError::DotSegmentParameters);
    }
    Ok(Some(dot))
}

/// Decodes one raw segment into `out` (cleared first): unreserved escapes become their
/// character, other escapes stay with upper-case hex, forbidden bytes and escapes are refused.
fn decode_segment(raw: &[u8], out: &mut String) -> Result<(), PathError> {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    raw.get(i + 1).copied().and_then(hex_value),
                    raw.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(PathError::InvalidEscape);
                };
                let byte = (hi << 4) | lo;
                match byte {
                    0 => return Err(PathError::Nul),
                    b'/' | b'\\' => return Err(PathError::EncodedSlash),
                    b if is_unreserved(b) => out.push(char::from(b)),
                    b => {
                        const HEX: &[u8; 16] = b"0123456789ABCDEF";
                        out.push('%');
                        out.push(char::from(HEX[usize::from(b >> 4)]));
                        out.push(char::from(HEX[usize::from(b & 0x0f)]));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b @ 0x21..=0x7e => {
                out.push(char::from(b));
                i += 1;
            }
            _ => return Err(PathError::InvalidCharacter),
        }
    }
    Ok(())
}

/// `unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"` (RFC 3986 §2.3).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(path: &str) -> String {
        normalize_path(path, true)
            .unwrap_or_else(|e| panic!("{path:?} refused: {e}"))
            .into_owned()
    }

    fn refused(path: &str) -> PathError {
        match normalize_path(path, true) {
            Err(e) => e,
            Ok(p) => panic!("{path:?} was accepted as {p:?}"),
        }
    }

    #[test]
    fn ordinary_paths_are_borrowed_unchanged() {
        for path in [
            "/",
            "/v1/chat/completions",
            "/a/b/",
            "/a.b/c..d/...",
            "/~user/x-y_z",
        ] {
            assert!(
                matches!(normalize_path(path, true), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn paths_needing_only_a_closer_look_are_still_borrowed() {
        for path in ["/a;b/c", "/a%20b", "/%3A", "/a/%25"] {
            assert!(
                matches!(normalize_path(path, true), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn empty_path_is_the_root() {
        assert_eq!(normal(""), "/");
    }

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_says() {
        let cases = [
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/../", "/a/"),
            ("/a/b/../c", "/a/c"),
            ("/a/.", "/a/"),
            ("/.", "/"),
            ("/./", "/"),
            ("/a/..", "/"),
            ("/a/b/c/./../../g", "/a/g"),
            ("/a/.../b", "/a/.../b"),
            ("/a/b..", "/a/b.."),
            ("/a/..b/.c", "/a/..b/.c"),
        ];
        for (input, expected) in cases {
            assert_eq!(normal(input), expected, "{input}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_others_kept_upper_case() {
        let cases = [
            ("/%7euser", "/~user"),
            ("/%41%62%2D%5F%30", "/Ab-_0"),
            ("/a/%2E%2e/b", "/b"),
            ("/a/.%2e/b", "/b"),
            ("/a/%2e/b", "/a/b"),
            ("/a%3ab", "/a%3Ab"),
            ("/a%20b%c3%a9", "/a%20b%C3%A9"),
            ("/%25", "/%25"),
            ("/%252e%252e/x", "/%252e%252e/x"),
        ];
        for (input, expected) in cases {
            assert_eq!(normal(input), expected, "{input}");
        }
    }

    #[test]
    fn slashes_are_merged_only_when_asked() {
        assert_eq!(normal("/a//b"), "/a/b");
        assert_eq!(normal("//a///b//"), "/a/b/");
        assert_eq!(normal("//"), "/");
        assert_eq!(normalize_path("/a//b", false).unwrap(), "/a//b");
        assert_eq!(normalize_path("/a//b/..", false).unwrap(), "/a//");
        assert_eq!(normalize_path("/a//.", false).unwrap(), "/a//");
        assert_eq!(normalize_path("//..", false).unwrap(), "/");
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        for path in [
            "/..",
            "/../",
            "/../a",
            "/a/../..",
            "/a/../../b",
            "/%2e%2e",
            "/.%2E/x",
        ] {
            assert_eq!(refused(path), PathError::AboveRoot, "{path}");
        }
    }

    #[test]
    fn encoded_slashes_backslashes_and_nul_are_refused() {
        assert_eq!(refused("/a%2fb"), PathError::EncodedSlash);
        assert_eq!(refused("/a/..%2F.."), PathError::EncodedSlash);
        assert_eq!(refused("/a%5cb"), PathError::EncodedSlash);
        assert_eq!(refused("/a%5Cb"), PathError::EncodedSlash);
        assert_eq!(refused("/a\\b"), PathError::Backslash);
        assert_eq!(refused("/a/%00"), PathError::Nul);
    }

    #[test]
    fn parameters_on_dot_segments_are_refused() {
        for path in [
            "/a/..;/b",
            "/a/.;x/b",
            "/a/%2e%2e;/b",
            "/a/..;",
            "/..%3b/a",
            "/.%3Bx",
        ] {
            assert_eq!(refused(path), PathError::DotSegmentParameters, "{path}");
        }
        // Parameters on an ordinary segment are the upstream's business.
        assert_eq!(normal("/a;v=1/..b;x"), "/a;v=1/..b;x");
    }

    #[test]
    fn malformed_input_is_refused_not_panicked_on() {
        assert_eq!(refused("a/b"), PathError::NotAbsolute);
        assert_eq!(refused("*"), PathError::NotAbsolute);
        assert_eq!(refused("/a%2"), PathError::InvalidEscape);
        assert_eq!(refused("/a%"), PathError::InvalidEscape);
        assert_eq!(refused("/a%zz"), PathError::InvalidEscape);
        assert_eq!(refused("/caf\u{e9}"), PathError::InvalidCharacter);
        assert_eq!(refused("/a b"), PathError::InvalidCharacter);
        assert_eq!(refused("/a\u{0}"), PathError::InvalidCharacter);
        assert_eq!(refused("/%e9%"), PathError::InvalidEscape);
    }

    /// Every path of up to `len` characters over an alphabet chosen to hit every rule.
    fn all_paths(len: usize) -> Vec<String> {
        const PIECES: [&str; 10] = ["/", ".", "a", "%2e", "%2E", ";", "%3b", "%2f", "%7E", "\\"];
        let mut paths = vec![String::new()];
        let mut frontier = vec![String::new()];
        for _ in 0..len {
            let mut next = Vec::new();
            for prefix in &frontier {
                for piece in PIECES {
                    next.push(format!("{prefix}{piece}"));
                }
            }
            paths.extend(next.iter().cloned());
            frontier = next;
        }
        paths
    }

    #[test]
    fn every_output_is_rooted_dot_free_and_a_fixed_point() {
        for merge_slashes in [true, false] {
            for input in all_paths(5) {
                let path = format!("/{input}");
                let Ok(out) = normalize_path(&path, merge_slashes) else {
                    continue;
                };
                assert!(out.starts_with('/'), "{path:?} -> {out:?}");
                assert!(out.len() <= path.len(), "{path:?} -> {out:?}");
                for segment in out.split('/') {
                    assert!(segment != "." && segment != "..", "{path:?} -> {out:?}");
                }
                assert!(!out.contains("%2E") && !out.contains("%7E"), "{out:?}");
                if merge_slashes {
                    assert!(!out.contains("//"), "{path:?} -> {out:?}");
                }
                let again = normalize_path(&out, merge_slashes);
                assert!(
                    matches!(&again, Ok(Cow::Borrowed(p)) if *p == out.as_ref()),
                    "{path:?} -> {out:?} -> {again:?}"
                );
            }
        }
    }

    #[test]
    fn output_never_climbs_above_the_root() {
        // Resolving the output against a deep base must stay under it: a `..` that
        // survived (or one the upstream could rebuild) would climb out.
        for input in all_paths(5) {
            let path = format!("/{input}");
            let Ok(out) = normalize_path(&path, true) else {
                continue;
            };
            let mut depth = 0i32;
            for segment in out.split('/').skip(1) {
                match segment {
                    ".." => depth -= 1,
                    "." => {}
                    _ => depth += 1,
                }
                assert!(depth >= 0, "{path:?} -> {out:?}");
            }
        }
    }

    #[test]
    fn arbitrary_strings_give_a_rooted_path_or_a_reason() {
        let samples = [
            "",
            "/",
            "%",
            "%%",
            "/%",
            "/%%2",
            "/..%",
            "é",
            "/é/..",
            "/\u{0}",
            "/\u{7f}",
            "\\",
            "/;",
            "/.;",
            "/..;",
            ";/..",
            "/%c0%ae%c0%ae/",
            "////",
            "/./../",
        ];
        let inputs = samples.iter().map(|s| s.to_string()).chain(all_paths(4));
        for input in inputs {
            for merge_slashes in [true, false] {
                match normalize_path(&input, merge_slashes) {
                    Ok(out) => assert!(out.starts_with('/'), "{input:?} -> {out:?}"),
                    Err(e) => assert!(!e.reason().is_empty()),
                }
            }
        }
    }
}
