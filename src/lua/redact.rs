//! Redaction of secrets in the text hooks log: `cf.log`/`print` lines, the messages of
//! failed hooks, and the fields `on_log` adds to the access log.
//!
//! A hook sees the client's request headers, so a script that logs `ctx:header(
//! "authorization")` would put a client's key in the gateway log. Everything a hook writes to
//! a log passes through [`Redactor::redact`] first, which replaces with `[redacted]`:
//! - gateway keys: `cf_` followed by a run of at least [`MIN_KEY_BODY`] letters and digits
//!   (keys are `cf_` and 43 base62 digits, see `store::ids`; a shorter run still hides a
//!   key cut short by the log's length limit);
//! - the token of `Bearer <token>` (any case);
//! - the config's resolved secret values (upstream credentials, provider API keys, the admin
//!   token, JWT HMAC secrets) of at least [`MIN_SECRET_BYTES`] bytes.
//!
//! Only hook text is scanned: the gateway's own log lines never hold secrets, and the
//! request path does not pay for this unless a hook logs.

use std::borrow::Cow;

use crate::config::{Config, Secret};

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Shortest `cf_` body treated as a key. Ordinary identifiers such as `cf_cache_set` stop at
/// the underscore; ten base62 digits are already far more than any word.
pub const MIN_KEY_BODY: usize = 10;

/// Shortest configured secret that is searched for: a value of a few bytes would blank
/// ordinary words in every line, and is no secret worth the name.
pub const MIN_SECRET_BYTES: usize = 6;

/// The secrets of one config load, and the redaction of text against them.
#[derive(Default)]
pub struct Redactor {
    secrets: Vec<Secret>,
}

impl Redactor {
    /// A redactor for the key and bearer shapes and the given secret values.
    pub fn new(secrets: impl IntoIterator<Item = Secret>) -> Redactor {
        let mut secrets: Vec<Secret> = secrets
            .into_iter()
            .filter(|s| s.expose().len() >= MIN_SECRET_BYTES)
            .collect();
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.expose().len()));
        Redactor { secrets }
    }

    /// A redactor for `config`: its secret references resolved now (an unresolvable one is
    /// skipped: the config check reports it, and the gateway does not use it).
    pub fn for_config(config: &Config) -> Redactor {
        Redactor::new(
            config
                .secrets()
                .into_iter()
                .filter_map(|(_, secret)| secret.resolve().ok()),
        )
    }

    /// `text` with every secret replaced by [`REDACTED`]; borrowed when there was none.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in &self.secrets {
            let value = secret.expose();
            if out.contains(value) {
                out = Cow::Owned(out.replace(value, REDACTED));
            }
        }
        if let Some(clean) = redact_shapes(&out) {
            out = Cow::Owned(clean);
        }
        out
    }

    /// Redacts every string (names included) in a JSON value, in place.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => {
                if let Cow::Owned(clean) = self.redact(s) {
                    *s = clean;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => {
                let entries = std::mem::take(map);
                for (name, mut v) in entries {
                    self.redact_json(&mut v);
                    map.insert(self.redact(&name).into_owned(), v);
                }
            }
            _ => {}
        }
    }
}

/// `text` with key shapes and bearer tokens replaced, `None` when it has neither.
fn redact_shapes(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let cut = key_at(bytes, i).or_else(|| bearer_token_at(bytes, i));
        match cut {
            Some((start, end)) => {
                out.push_str(&text[copied..start]);
                out.push_str(REDACTED);
                copied = end;
                i = end;
            }
            None => i += 1,
        }
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&text[copied..]);
    Some(out)
}

/// A gateway key starting at `i`: the byte range to replace (the whole `cf_...`).
fn key_at(bytes: &[u8], i: usize) -> Option<(usize, usize)> {
    if !bytes[i..].starts_with(b"cf_") {
        return None;
    }
    // Not the tail of a longer identifier (`xcf_...`).
    if i > 0 && bytes[i - 1].is_ascii_alphanumeric() {
        return None;
    }
    let body = bytes[i + 3..]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    (body >= MIN_KEY_BODY).then_some((i, i + 3 + body))
}

/// `Bearer <token>` starting at `i`: the byte range of the token.
fn bearer_token_at(bytes: &[u8], i: usize) -> Option<(usize, usize)> {
    const BEARER: &[u8] = b"bearer";
    let word = bytes.get(i..i + BEARER.len())?;
    if !word.eq_ignore_ascii_case(BEARER) || (i > 0 && bytes[i - 1].is_ascii_alphanumeric()) {
        return None;
    }
    let gap = bytes[i + BEARER.len()..]
        .iter()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count();
    if gap == 0 {
        return None;
    }
    let start = i + BEARER.len() + gap;
    let token = bytes[start..]
        .iter()
        .take_while(|b| !b.is_ascii_whitespace() && **b != b'"' && **b != b'\'')
        .count();
    (token > 0).then_some((start, start + token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_secrets(secrets: &[&str]) -> Redactor {
        Redactor::new(secrets.iter().map(|s| Secret::new(*s)))
    }

    const KEY: &str = "cf_4Zq8Lk2Vw9Rt4Zk8Mn3Bc6Hd1Xy7Pa0Qs5Ue2Wg8Jf";

    #[test]
    fn gateway_keys_are_redacted_anywhere_in_the_text() {
        let r = Redactor::default();
        assert_eq!(
            r.redact(&format!("key={KEY}; next")),
            "key=[redacted]; next"
        );
        assert_eq!(r.redact(KEY), REDACTED);
    }

    #[test]
    fn identifiers_that_merely_start_with_cf_are_kept() {
        let r = Redactor::default();
        for text in [
            "cf_cache_set",
            "cf_log",
            "use cf_short",
            "xcf_0123456789abc",
        ] {
            assert_eq!(r.redact(text), text);
        }
    }

    #[test]
    fn bearer_tokens_are_redacted_in_any_case() {
        let r = Redactor::default();
        assert_eq!(
            r.redact("Authorization: Bearer abc.def-ghi rest"),
            "Authorization: Bearer [redacted] rest"
        );
        assert_eq!(r.redact("bearer\tX"), "bearer\t[redacted]");
        assert_eq!(r.redact("a bearer of news"), "a bearer [redacted] news");
        assert_eq!(r.redact("Bearer"), "Bearer");
    }

    #[test]
    fn configured_secrets_are_redacted_and_short_ones_ignored() {
        let r = with_secrets(&["upstream-secret-123", "ab"]);
        assert_eq!(r.redact("x upstream-secret-123 y ab"), "x [redacted] y ab");
    }

    #[test]
    fn a_secret_containing_another_is_replaced_whole() {
        let r = with_secrets(&["secret", "secret-longer"]);
        assert_eq!(r.redact("secret-longer"), REDACTED);
    }

    #[test]
    fn text_without_secrets_is_borrowed() {
        assert!(matches!(
            Redactor::default().redact("plain"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn json_strings_and_names_are_redacted() {
        let r = with_secrets(&["admin-token-xyz"]);
        let mut v = serde_json::json!({
            "auth": format!("Bearer {KEY}"),
            "list": ["admin-token-xyz", 1],
            KEY: true,
        });
        r.redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "auth": "Bearer [redacted]",
                "list": ["[redacted]", 1],
                "[redacted]": true,
            })
        );
    }
}
