//! The credential the gateway injects toward an upstream (`[[upstream]].credential`): a header
//! whose value is a template around the current value of a live secret.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::LiveSecret;

/// The placeholder in a credential value template.
pub const SECRET_PLACEHOLDER: &str = "{secret}";

/// A header injected into every request toward one upstream.
pub struct InjectedCredential {
    /// Header name, lowercased.
    header: String,
    /// The template's literal text around each `{secret}` (one more piece than placeholders).
    pieces: Vec<String>,
    secret: LiveSecret,
    /// Set once a bad secret value has been logged, so a broken secret does not flood the log.
    warned: AtomicBool,
}

impl std::fmt::Debug for InjectedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret; the template's literal text is not secret but is left out too.
        f.debug_struct("InjectedCredential")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl InjectedCredential {
    /// Compiles `header` and the value `template` (which must contain `{secret}` at least once).
    ///
    /// The header must be an RFC 9110 5.1 field name (a token) and the template's literal text
    /// valid field-value characters (RFC 9110 5.5: no control characters but HTAB), so that
    /// nothing configured can split or smuggle a header.
    pub fn new(header: &str, template: &str, secret: LiveSecret) -> Result<Self, String> {
        if header.is_empty() || !header.bytes().all(is_tchar) {
            return Err(format!(
                "credential.header {header:?}: not a valid header name"
            ));
        }
        if !template.contains(SECRET_PLACEHOLDER) {
            return Err(format!(
                "credential.value must contain {SECRET_PLACEHOLDER}"
            ));
        }
        if !is_field_value(template) {
            return Err("credential.value: control characters are not allowed".to_string());
        }
        Ok(InjectedCredential {
            header: header.to_ascii_lowercase(),
            pieces: template
                .split(SECRET_PLACEHOLDER)
                .map(str::to_string)
                .collect(),
            secret,
            warned: AtomicBool::new(false),
        })
    }

    /// The lowercased header name.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// The header value with the secret's current value, or `None` (logged once) when that
    /// value holds characters a header value cannot carry (CR, LF, NUL, other controls): it is
    /// never sent rather than sent broken.
    pub fn value(&self) -> Option<String> {
        let current = self.secret.current();
        let secret = current.expose();
        if !is_field_value(secret) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                log::error!(
                    "credential for header {}: the secret's value contains control characters; not injected",
                    self.header
                );
            }
            return None;
        }
        Some(render(&self.pieces, secret))
    }
}

/// Joins the template's pieces with `secret` in place of each placeholder.
fn render(pieces: &[String], secret: &str) -> String {
    let literal: usize = pieces.iter().map(String::len).sum();
    let mut value = String::with_capacity(literal + secret.len() * (pieces.len() - 1));
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            value.push_str(secret);
        }
        value.push_str(piece);
    }
    value
}

/// RFC 9110 5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 5.5: a field value is visible characters, SP, HTAB and obs-text; no other controls.
fn is_field_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(template: &str) -> Vec<String> {
        template
            .split(SECRET_PLACEHOLDER)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn render_puts_the_secret_in_place_of_the_placeholder() {
        assert_eq!(render(&pieces("Bearer {secret}"), "abc"), "Bearer abc");
    }

    #[test]
    fn render_keeps_text_after_the_placeholder() {
        assert_eq!(render(&pieces("key={secret};v=2"), "abc"), "key=abc;v=2");
    }

    #[test]
    fn render_fills_every_placeholder() {
        assert_eq!(render(&pieces("{secret}:{secret}"), "s"), "s:s");
    }

    #[test]
    fn header_names_must_be_tokens() {
        assert!("x-api-key".bytes().all(is_tchar));
        assert!(!"x api key".bytes().all(is_tchar));
        assert!(!"x-api-key:".bytes().all(is_tchar));
    }

    #[test]
    fn field_values_refuse_cr_lf_and_nul() {
        assert!(is_field_value("Bearer a\tb"));
        assert!(!is_field_value("a\r\nx-evil: 1"));
        assert!(!is_field_value("a\nb"));
        assert!(!is_field_value("a\0b"));
    }
}
