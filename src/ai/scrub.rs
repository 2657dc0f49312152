//! Makes a provider's error message safe to show a client: credentials removed, length bounded.
//!
//! Providers put secrets in their error messages: OpenAI's 401 quotes a fragment of the key
//! ("Incorrect API key provided: sk-proj-****abcd"), Google's errors can quote a request URL
//! with `?key=AIza...`, and a misbehaving provider may echo a whole key or an `Authorization`
//! header. The message is cut into tokens (runs of the characters credentials are made of);
//! a token that looks like a credential, or that follows a name that announces one
//! (`key=`, `Authorization:`, `Bearer`), is replaced by [`REDACTED`] whole.

use std::collections::HashSet;

/// What replaces a credential-looking token.
pub const REDACTED: &str = "[redacted]";

/// Longest message kept, in characters (after scrubbing).
pub const MAX_MESSAGE_CHARS: usize = 512;

/// Longest part of a message looked at, in bytes: what is past it would be cut anyway, and the
/// scan stays cheap however long the provider's message is.
const MAX_SCAN_BYTES: usize = 4 * MAX_MESSAGE_CHARS;

/// Shortest key fragment (a prefix or suffix of a configured key) that is redacted.
const MIN_EDGE_FRAGMENT: usize = 4;

/// Length of the key windows looked for anywhere in a token: any 8 consecutive characters of a
/// configured key give it away.
const WINDOW: usize = 8;

/// Runs of base64 or hex characters longer than this are taken for secrets.
const LONG_RUN: usize = 32;

/// Last parts of parameter and header names whose value is a credential (`key=`,
/// `x-goog-api-key:`, `access_token=`, `Authorization:`).
const SENSITIVE_NAME_ENDINGS: &[&str] = &[
    "key",
    "token",
    "secret",
    "password",
    "authorization",
    "signature",
    "credential",
    "credentials",
];

/// Authorization schemes: the token after one is a credential.
const SCHEMES: &[&str] = &["bearer", "basic"];

/// `text` with every credential-looking token replaced by [`REDACTED`], control characters
/// turned into spaces, and cut to [`MAX_MESSAGE_CHARS`] characters (`…` marks a cut).
/// `secrets` are the values the gateway knows to be secret (the provider's configured key):
/// they are removed wherever they appear, and so is any token holding 8 of their consecutive
/// characters, or a 4+ character prefix or suffix of one.
pub fn scrub_message(text: &str, secrets: &[&str]) -> String {
    let text = cut_at_char_boundary(text, MAX_SCAN_BYTES);
    // A "secret" shorter than a fragment would blank ordinary words; no real key is that short.
    let secrets: Vec<&str> = secrets
        .iter()
        .copied()
        .filter(|s| s.len() >= MIN_EDGE_FRAGMENT)
        .collect();
    let mut whole = text.to_string();
    for secret in &secrets {
        if whole.contains(secret) {
            whole = whole.replace(secret, REDACTED);
        }
    }
    let known = KnownSecrets::new(&secrets);
    let scrubbed = redact_tokens(&whole, &known);
    bound(&scrubbed)
}

/// The configured secrets, ready for fragment look-ups.
struct KnownSecrets<'a> {
    secrets: Vec<&'a [u8]>,
    windows: HashSet<&'a [u8]>,
}

impl<'a> KnownSecrets<'a> {
    fn new(secrets: &[&'a str]) -> KnownSecrets<'a> {
        let secrets: Vec<&[u8]> = secrets
            .iter()
            .map(|s| s.as_bytes())
            .filter(|s| s.len() >= WINDOW)
            .collect();
        let windows = secrets.iter().flat_map(|s| s.windows(WINDOW)).collect();
        KnownSecrets { secrets, windows }
    }

    /// Whether `part` gives away part of a configured secret.
    fn leaks(&self, part: &[u8]) -> bool {
        if part.windows(WINDOW).any(|w| self.windows.contains(w)) {
            return true;
        }
        part.len() >= MIN_EDGE_FRAGMENT
            && self
                .secrets
                .iter()
                .any(|s| s.starts_with(part) || s.ends_with(part))
    }
}

/// Characters a credential (or a URL holding one) is made of. `=` is not one, so that `key=`
/// and its value are two tokens (base64 padding is no secret).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'/' | b'.' | b'*' | b'~' | b'%')
}

/// What the text just before a token says about it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Before {
    Nothing,
    /// A sensitive name and `=` or `:`, or an authorization scheme: this token is a value.
    CredentialFollows,
}

fn redact_tokens(text: &str, known: &KnownSecrets) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut before = Before::Nothing;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        if !is_token_byte(bytes[i]) {
            while i < bytes.len() && !is_token_byte(bytes[i]) {
                i += 1;
            }
            // Token bytes are ASCII, so both ends are character boundaries.
            out.push_str(&text[start..i]);
            continue;
        }
        while i < bytes.len() && is_token_byte(bytes[i]) {
            i += 1;
        }
        // A sentence's full stop is not part of the token.
        let mut end = i;
        while end > start + 1 && bytes[end - 1] == b'.' {
            end -= 1;
        }
        let token = &text[start..end];
        let lower = token.to_ascii_lowercase();
        let is_scheme = SCHEMES.contains(&lower.as_str());
        if is_scheme || (before != Before::CredentialFollows && !is_secret(token, known)) {
            out.push_str(token);
        } else {
            out.push_str(REDACTED);
        }
        out.push_str(&text[end..i]);
        let gap_end = bytes[i..]
            .iter()
            .position(|&b| is_token_byte(b))
            .map_or(bytes.len(), |n| i + n);
        let gap = &bytes[i..gap_end];
        // `Bearer <credential>`, or `key=<credential>`, `"api-key": "<credential>"`.
        let scheme_then_value =
            is_scheme && !gap.is_empty() && gap.iter().all(|&b| b == b' ' || b == b'\t');
        let name_then_value = end == i && names_a_credential(&lower) && introduces_value(gap);
        before = if scheme_then_value || name_then_value {
            Before::CredentialFollows
        } else {
            Before::Nothing
        };
    }
    out
}

/// Whether a name (lower case) is one whose value is a credential.
fn names_a_credential(lower: &str) -> bool {
    SENSITIVE_NAME_ENDINGS.iter().any(|e| lower.ends_with(e))
}

/// Whether the text between a name and the next token assigns a value to the name:
/// `=`, `: `, `": "` and the like.
fn introduces_value(gap: &[u8]) -> bool {
    gap.iter().any(|&b| b == b'=' || b == b':')
        && gap
            .iter()
            .all(|&b| matches!(b, b'=' | b':' | b' ' | b'\t' | b'"' | b'\''))
}

/// Whether a token looks like a credential by itself.
fn is_secret(token: &str, known: &KnownSecrets) -> bool {
    let bytes = token.as_bytes();
    if known.leaks(bytes) || is_jwt(token) {
        return true;
    }
    // Each part between separators that keys do not contain, checked on its own:
    // "sk-proj-****abcd" is the parts "sk-proj-" and "abcd".
    let parts = token
        .split(['*', '.', '/', '+', '~', '%'])
        .filter(|p| !p.is_empty());
    for part in parts {
        if part.len() > 3 && has_vendor_prefix(part) {
            return true;
        }
        if known.leaks(part.as_bytes()) {
            return true;
        }
    }
    has_long_random_run(bytes)
}

/// Prefixes of well-known credentials: OpenAI and Anthropic keys (`sk-`, `sk-ant-`),
/// Google API keys (`AIza`) and OAuth access tokens (`ya29`), the gateway's own keys (`cf_`).
fn has_vendor_prefix(part: &str) -> bool {
    ["sk-", "sk_", "AIza", "ya29", "cf_"]
        .iter()
        .any(|p| part.starts_with(p))
}

/// `xxx.yyy.zzz` of base64url: a JWT (its header always starts `eyJ`, `{"` encoded), or three
/// long base64url parts.
fn is_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return false;
    }
    let base64url = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    parts.iter().all(|p| base64url(p))
        && (parts[0].starts_with("eyJ") || parts.iter().all(|p| p.len() >= 10))
}

/// A run of more than [`LONG_RUN`] base64 characters mixing upper and lower case letters
/// (random keys do; words, paths and model names do not), or of hex digits.
fn has_long_random_run(bytes: &[u8]) -> bool {
    let base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_');
    bytes
        .split(|&b| !base64(b))
        .filter(|run| run.len() > LONG_RUN)
        .any(|run| {
            let mixed_case =
                run.iter().any(u8::is_ascii_uppercase) && run.iter().any(u8::is_ascii_lowercase);
            let hex = run.iter().all(|b| b.is_ascii_hexdigit() || *b == b'-');
            mixed_case || hex
        })
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn cut_at_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Control characters as spaces, at most [`MAX_MESSAGE_CHARS`] characters.
fn bound(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE_CHARS * 2));
    for (n, c) in text.chars().enumerate() {
        if n == MAX_MESSAGE_CHARS {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-proj-Zx81QpLm0aT4vB7nR2wK9cYe5uH3jD6fG1sA";

    fn scrub(text: &str) -> String {
        scrub_message(text, &[KEY])
    }

    /// Fails when any 8 consecutive characters of `KEY` are in `text`.
    fn assert_no_key_part(text: &str) {
        for window in KEY.as_bytes().windows(8) {
            let window = std::str::from_utf8(window).unwrap();
            assert!(!text.contains(window), "{window:?} leaked in {text:?}");
        }
    }

    #[test]
    fn the_configured_key_is_removed_wherever_it_is() {
        for text in [
            format!("Incorrect API key provided: {KEY}."),
            format!("key{KEY}key"),
            format!("prefix-{KEY}-suffix and again {KEY}"),
            format!("\"{KEY}\""),
        ] {
            let out = scrub(&text);
            assert_no_key_part(&out);
            assert!(out.contains(REDACTED), "{out}");
        }
        assert_eq!(
            scrub(&format!("Incorrect API key provided: {KEY}.")),
            "Incorrect API key provided: [redacted]."
        );
    }

    #[test]
    fn fragments_of_the_configured_key_are_removed() {
        // OpenAI's own wording: the key's start and its last four characters.
        let openai = "Incorrect API key provided: sk-proj-****************************G1sA. \
                      You can find your API key at https://platform.openai.com/account/api-keys.";
        let out = scrub(openai);
        assert!(!out.contains("G1sA"), "{out}");
        assert!(
            out.starts_with("Incorrect API key provided: [redacted]. You can"),
            "{out}"
        );
        assert!(
            out.contains("https://platform.openai.com/account/api-keys."),
            "{out}"
        );
        // Any 8 characters from the middle, and edge fragments without the vendor prefix.
        for text in [
            "key ...0aT4vB7nR2... not valid",
            "ends with 3jD6fG1sA",
            "the key QpLm0aT4 is bad",
        ] {
            let out = scrub(text);
            assert_no_key_part(&out);
            assert!(out.contains(REDACTED), "{text} -> {out}");
        }
    }

    #[test]
    fn vendor_keys_are_removed_without_being_configured() {
        for (text, secret) in [
            ("bad key sk-ant-api03-abcDEF123", "sk-ant-api03"),
            ("bad key sk-abc...xyz", "sk-abc"),
            ("key AIzaSyA1b2C3d4E5f6 expired", "AIzaSy"),
            ("token ya29.a0AfH6SMBx expired", "a0AfH6"),
            ("virtual key cf_0123456789abcdef leaked", "cf_0123"),
        ] {
            let out = scrub_message(text, &[]);
            assert!(!out.contains(secret), "{text} -> {out}");
            assert!(out.contains(REDACTED), "{text} -> {out}");
        }
    }

    #[test]
    fn bearer_and_authorization_values_are_removed() {
        let out = scrub_message(
            "request had Authorization: Bearer opaque-token-123 and bearer xyz",
            &[],
        );
        assert_eq!(
            out,
            "request had Authorization: Bearer [redacted] and bearer [redacted]"
        );
        let out = scrub_message(r#"headers {"x-goog-api-key": "opaque123"}"#, &[]);
        assert_eq!(out, r#"headers {"x-goog-api-key": "[redacted]"}"#);
        let out = scrub_message("Authorization: Basic dXNlcjpwYXNz", &[]);
        assert_eq!(out, "Authorization: Basic [redacted]");
    }

    #[test]
    fn key_query_parameters_are_removed() {
        let out = scrub_message(
            "POST https://generativelanguage.googleapis.com/v1beta/models/m:generateContent\
             ?alt=sse&key=opaque-value-1&api_key=two&access_token=three failed",
            &[],
        );
        assert!(!out.contains("opaque-value-1"), "{out}");
        assert!(!out.contains("two"), "{out}");
        assert!(!out.contains("three"), "{out}");
        assert!(
            out.contains("?alt=sse&key=[redacted]&api_key=[redacted]"),
            "{out}"
        );
        assert!(out.ends_with("&access_token=[redacted] failed"), "{out}");
    }

    #[test]
    fn jwts_and_long_random_runs_are_removed() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlX2hlcmU";
        assert_eq!(
            scrub_message(&format!("token {jwt} expired"), &[]),
            "token [redacted] expired"
        );
        let base64 = "Q2hlY2tJZlRoaXNJc0FMb25nUmFuZG9tU2VjcmV0VmFsdWU";
        let hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        for secret in [base64, hex] {
            let out = scrub_message(&format!("secret {secret} seen"), &[]);
            assert_eq!(out, "secret [redacted] seen");
        }
    }

    #[test]
    fn ordinary_messages_are_kept() {
        for text in [
            "You exceeded your current quota, please check your plan and billing details.",
            "This model's maximum context length is 128000 tokens. However, your messages \
             resulted in 130512 tokens.",
            "models/gemini-1.5-flash-001 is not found for API version v1beta.",
            "projects/1234567890/locations/us-central1/publishers/google/models/gemini-pro",
            "max_tokens: 4096 > 1024, which is the maximum allowed for claude-3-haiku-20240307",
            "Rate limit reached for gpt-4o-mini in organization org-abc on requests per min (RPM).",
            "The task-sk-like word and a version 1.2.3 stay.",
        ] {
            assert_eq!(scrub(text), text);
        }
    }

    #[test]
    fn messages_are_bounded_and_control_characters_dropped() {
        let long = "a ".repeat(10_000);
        let out = scrub(&long);
        assert_eq!(out.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(out.ends_with('…'));
        assert_eq!(scrub("line\r\nbreak\tand\u{0}nul"), "line  break and nul");
        // Multi-byte characters at the scan bound do not split.
        let wide = "é".repeat(MAX_SCAN_BYTES);
        assert_eq!(scrub(&wide).chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn short_or_empty_secrets_do_not_blank_the_message() {
        assert_eq!(
            scrub_message("a plain message", &["", "ab"]),
            "a plain message"
        );
        assert_eq!(
            scrub_message("the key abc1 is bad", &["abc1"]),
            "the key [redacted] is bad"
        );
    }
}
