//! [`RedisTarget`]: where the fleet's Redis is, parsed once from the `[cluster] redis` URL and
//! never shown with its password.
//!
//! Two forms are accepted: `redis://[user:password@]host:port[/db]` for a server over TCP and
//! `redis+unix:///path/to.sock` for a local socket. The URL is a secret (it may carry the
//! password), so it is kept as a [`Secret`] and only [`RedisTarget::shown`], the redacted form,
//! ever reaches a log line or an error.

use std::fmt;

use crate::config::redact::redact_url;
use crate::config::Secret;

/// The longest URL accepted: far above any real one, low enough that a mistaken value (a
/// whole file pasted into the variable) is refused rather than carried around.
pub const MAX_URL_LEN: usize = 2048;

/// A validated Redis location.
pub struct RedisTarget {
    url: Secret,
    shown: String,
}

impl RedisTarget {
    /// Checks `url`'s form. The error names the URL only in its redacted form.
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        let shown = redact_url(url);
        if url.len() > MAX_URL_LEN {
            return Err(format!("the Redis URL is longer than {MAX_URL_LEN} bytes"));
        }
        let well_formed = if let Some(rest) = url.strip_prefix("redis://") {
            // host[:port][/db]: a host is required, the db (if any) is a number.
            let authority_and_path = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
            let (host, db) = authority_and_path
                .split_once('/')
                .map_or((authority_and_path, ""), |(h, d)| (h, d));
            !host.is_empty() && (db.is_empty() || db.bytes().all(|b| b.is_ascii_digit()))
        } else if let Some(path) = url.strip_prefix("redis+unix://") {
            path.starts_with('/') && path.len() > 1
        } else {
            false
        };
        if !well_formed {
            return Err(format!(
                "the Redis URL {shown:?} is not redis://host:port/db or redis+unix:///path"
            ));
        }
        Ok(RedisTarget {
            url: Secret::new(url),
            shown,
        })
    }

    /// The URL with any password and query replaced by `***`: the only form to print.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A client for the target. The crate's own parse error is not passed on: it may quote
    /// the URL it refused.
    pub(crate) fn client(&self) -> Result<redis::Client, String> {
        redis::Client::open(self.url.expose())
            .map_err(|_| format!("the Redis URL {:?} is not usable", self.shown))
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisTarget").field(&self.shown).finish()
    }
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_are_accepted_and_shown_without_the_password() {
        let tcp = RedisTarget::parse("redis://cf:S3CRET@cache.internal:6379/2").unwrap();
        assert_eq!(tcp.shown(), "redis://***@cache.internal:6379/2");
        assert!(!format!("{tcp:?} {tcp}").contains("S3CRET"));
        assert!(tcp.client().is_ok());

        let unix = RedisTarget::parse("redis+unix:///run/redis/redis.sock").unwrap();
        assert_eq!(unix.shown(), "redis+unix:///run/redis/redis.sock");
        assert!(unix.client().is_ok());
    }

    #[test]
    fn other_forms_are_refused_without_quoting_the_password() {
        for bad in [
            "http://cf:S3CRET@cache:6379",
            "redis://cf:S3CRET@",
            "redis://cf:S3CRET@cache:6379/x",
            "redis+unix://relative.sock",
            "cache:6379",
        ] {
            let error = RedisTarget::parse(bad).unwrap_err();
            assert!(!error.contains("S3CRET"), "{error}");
        }
    }

    #[test]
    fn an_overlong_url_is_refused() {
        let long = format!("redis://h:1/{}", "0".repeat(MAX_URL_LEN));
        let error = RedisTarget::parse(&long).unwrap_err();
        assert!(error.contains("longer than"), "{error}");
        assert!(RedisTarget::parse(&long[..MAX_URL_LEN]).is_ok());
    }
}
