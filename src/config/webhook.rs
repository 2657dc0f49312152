//! `[[webhook]]`: where lifecycle events are POSTed, signed with a shared secret.
//!
//! Each entry names a receiver URL, the secret its signatures are made with (a secret
//! reference, never shown), and the event types it wants. Delivery tuning (`max_attempts`,
//! `backoff`, `timeout`) has defaults that suit a receiver on the internet; tests shorten
//! them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::redact::redact_url;
use super::secret::SecretRef;
use crate::clock::duration::parse_duration;

/// Every event type a webhook may subscribe to, as written in `events`.
pub const EVENT_TYPES: &[&str] = &[
    "key.created",
    "key.rotated",
    "key.revoked",
    "key.expiring",
    "budget.threshold",
    "access.requested",
    "access.approved",
    "access.denied",
];

/// Most `[[webhook]]` entries: every event is delivered to each subscriber in turn from one
/// thread, so the list is kept short.
pub const MAX_WEBHOOKS: usize = 16;

/// Most delivery attempts an entry may ask for.
pub const MAX_ATTEMPTS: u32 = 50;

/// One `[[webhook]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The receiver: `http://` or `https://`, no user info.
    #[serde(default)]
    pub url: String,
    /// The HMAC-SHA256 key of `x-credentialflow-signature` (`env:NAME`, `file:PATH`).
    #[serde(default)]
    pub secret: Option<SecretRef>,
    /// Event types delivered to this receiver (see [`EVENT_TYPES`]).
    #[serde(default)]
    pub events: Vec<String>,
    /// How long before a key's `expires_at` its `key.expiring` event is sent.
    #[serde(default = "default_key_expiring_before")]
    pub key_expiring_before: String,
    /// Attempts before an event is given up on (and the give-up audited).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubled after each further one (capped at an
    /// hour).
    #[serde(default = "default_backoff")]
    pub backoff: String,
    /// Connect, send and read the answer of one attempt together.
    #[serde(default = "default_timeout")]
    pub timeout: String,
}

fn default_key_expiring_before() -> String {
    "24h".into()
}

fn default_max_attempts() -> u32 {
    8
}

fn default_backoff() -> String {
    "1s".into()
}

fn default_timeout() -> String {
    "5s".into()
}

impl WebhookConfig {
    /// The URL as log lines and errors may show it (no user info, no query).
    pub fn shown_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Whether this receiver wants events of type `event`.
    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }

    /// `key_expiring_before`, parsed (validation has refused a bad one; 24 h otherwise).
    pub fn expiring_window(&self) -> Duration {
        parse_duration(&self.key_expiring_before).unwrap_or(Duration::from_secs(86_400))
    }

    /// `backoff`, parsed (1 s when unparsable; validation refuses that).
    pub fn backoff_base(&self) -> Duration {
        parse_duration(&self.backoff).unwrap_or(Duration::from_secs(1))
    }

    /// `timeout`, parsed (5 s when unparsable; validation refuses that).
    pub fn attempt_timeout(&self) -> Duration {
        parse_duration(&self.timeout).unwrap_or(Duration::from_secs(5))
    }
}

/// `(key path, message)` for every problem of `webhooks`: a URL the client cannot call,
/// a missing secret, unknown or duplicate event names, durations outside the grammar. The
/// URL is only ever shown redacted; the secret never.
pub(crate) fn check(webhooks: &[WebhookConfig]) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    if webhooks.len() > MAX_WEBHOOKS {
        errors.push((
            "webhook".to_string(),
            format!("at most {MAX_WEBHOOKS} entries (got {})", webhooks.len()),
        ));
    }
    for (i, hook) in webhooks.iter().enumerate() {
        let at = |key: &str| format!("webhook[{i}].{key}");
        if hook.url.trim().is_empty() {
            errors.push((at("url"), "is required and must not be empty".into()));
        } else if super::redact::has_userinfo(&hook.url) {
            errors.push((
                at("url"),
                format!(
                    "{}: credentials in URLs are not allowed; the secret signs the body",
                    hook.shown_url()
                ),
            ));
        } else if let Err(e) = super::url::HttpUrl::parse(&hook.url) {
            errors.push((at("url"), format!("{}: {e}", hook.shown_url())));
        }
        if hook.secret.is_none() {
            errors.push((
                at("secret"),
                "is required: the key receivers check x-credentialflow-signature with".into(),
            ));
        }
        if hook.events.is_empty() {
            errors.push((
                at("events"),
                format!("must name at least one of {}", EVENT_TYPES.join(", ")),
            ));
        }
        let mut seen = Vec::new();
        for (j, event) in hook.events.iter().enumerate() {
            if !EVENT_TYPES.contains(&event.as_str()) {
                // Only known names are echoed in full; an unknown one is cut short.
                let shown: String = event.chars().take(40).collect();
                errors.push((
                    format!("webhook[{i}].events[{j}]"),
                    format!(
                        "unknown event {shown:?}: expected one of {}",
                        EVENT_TYPES.join(", ")
                    ),
                ));
            } else if seen.contains(&event) {
                errors.push((
                    format!("webhook[{i}].events[{j}]"),
                    format!("{event} is listed twice"),
                ));
            }
            seen.push(event);
        }
        for (key, text) in [
            ("key_expiring_before", &hook.key_expiring_before),
            ("backoff", &hook.backoff),
            ("timeout", &hook.timeout),
        ] {
            match parse_duration(text) {
                Ok(d) if d.is_zero() => errors.push((at(key), "must be longer than 0".into())),
                Ok(_) => {}
                Err(e) => errors.push((at(key), e)),
            }
        }
        if !(1..=MAX_ATTEMPTS).contains(&hook.max_attempts) {
            errors.push((
                at("max_attempts"),
                format!("must be 1 to {MAX_ATTEMPTS} (got {})", hook.max_attempts),
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(text: &str) -> WebhookConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_follow_the_contract() {
        let h = hook(
            "url = \"https://hooks.example/cf\"\nsecret = \"env:S\"\nevents = [\"key.created\"]",
        );
        assert_eq!(h.expiring_window(), Duration::from_secs(86_400));
        assert_eq!(h.max_attempts, 8);
        assert!(h.wants("key.created"));
        assert!(!h.wants("key.revoked"));
        assert!(check(&[h]).is_empty());
    }

    #[test]
    fn every_problem_is_named_by_its_key_path() {
        let h = hook(
            "url = \"ftp://x\"\nevents = [\"key.created\", \"key.nope\", \"key.created\"]\n\
             key_expiring_before = \"soon\"\nmax_attempts = 0\nbackoff = \"0s\"",
        );
        let paths: Vec<String> = check(&[h]).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "webhook[0].url",
                "webhook[0].secret",
                "webhook[0].events[1]",
                "webhook[0].events[2]",
                "webhook[0].key_expiring_before",
                "webhook[0].backoff",
                "webhook[0].max_attempts",
            ]
        );
    }

    #[test]
    fn a_url_with_credentials_is_refused_without_showing_them() {
        let h = hook("url = \"https://u:PASSWORD@h/x?token=QUERYSECRET\"\nsecret = \"env:S\"\nevents = [\"key.created\"]");
        let errors = check(&[h]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "webhook[0].url");
        assert!(!errors[0].1.contains("PASSWORD"));
        assert!(!errors[0].1.contains("QUERYSECRET"));
    }

    #[test]
    fn no_events_and_too_many_entries_are_refused() {
        let h = hook("url = \"http://127.0.0.1:9/x\"\nsecret = \"env:S\"");
        let errors = check(&vec![h; MAX_WEBHOOKS + 1]);
        assert_eq!(errors[0].0, "webhook");
        assert!(errors.iter().any(|(p, _)| p == "webhook[0].events"));
    }

    #[test]
    fn a_literal_secret_is_never_serialized() {
        let h =
            hook("url = \"http://h/x\"\nsecret = \"hunter2-literal\"\nevents = [\"key.created\"]");
        let shown = serde_json::to_string(&h).unwrap();
        assert!(!shown.contains("hunter2"));
        assert!(!format!("{h:?}").contains("hunter2"));
    }
}
