//! Opening a connection from a store URL: `postgres://user:password@host:port/database` or
//! libpq's `key=value` form (`host=/run/postgresql user=cf dbname=cf`; a `host` starting with
//! `/` is a Unix socket directory).
//!
//! Connections are plaintext for now (`NoTls`): run PostgreSQL on a private network or a Unix
//! socket. `sslmode=require` is refused rather than quietly sent in the clear; `prefer` (the
//! default) and `disable` both mean plaintext here.

use std::str::FromStr;
use std::time::Duration;

use ::postgres::config::SslMode;
use ::postgres::{Client, Config, NoTls};

use super::error::{PgError, PgErrorKind};

/// How long a connection attempt may take before the store counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest accepted URL, in bytes: it comes from configuration, and is parsed before use.
const MAX_URL: usize = 4096;

/// Connects to the store at `url`. Errors never hold the URL's password.
pub(crate) fn connect(url: &str) -> Result<Client, PgError> {
    let secrets = url_secrets(url);
    connect_inner(url).map_err(|e| e.scrub(&secrets))
}

fn connect_inner(url: &str) -> Result<Client, PgError> {
    if url.len() > MAX_URL {
        return Err(PgError::new(
            PgErrorKind::Config,
            format!("the store URL is longer than {MAX_URL} bytes"),
        ));
    }
    let mut config = Config::from_str(url).map_err(|e| {
        // The parser's own text may quote a character of the URL; keep only what names the
        // option at fault.
        let detail = std::error::Error::source(&e)
            .map(ToString::to_string)
            .filter(|text| {
                text.starts_with("invalid value for option") || text.starts_with("unknown option")
            })
            .map(|text| format!(" ({text})"))
            .unwrap_or_default();
        PgError::new(
            PgErrorKind::Config,
            format!(
                "the store URL is not a PostgreSQL connection string{detail}: expected \
                 postgres://user:password@host:port/database or key=value pairs"
            ),
        )
    })?;
    if config.get_ssl_mode() == SslMode::Require {
        return Err(PgError::new(
            PgErrorKind::Config,
            "sslmode=require: TLS to PostgreSQL is not supported yet; connect over a private \
             network or a Unix socket with sslmode=disable",
        ));
    }
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("credentialflow");
    config.connect(NoTls).map_err(|e| PgError::from_client(&e))
}

/// The password in `url` as written and percent-decoded: the texts to keep out of errors.
/// Found by reading the URL itself, so it works even when the URL does not parse.
pub(crate) fn url_secrets(url: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    let trimmed = url.trim();
    if let Some(rest) = trimmed
        .strip_prefix("postgres://")
        .or_else(|| trimmed.strip_prefix("postgresql://"))
    {
        // The user information ends at the last `@` of the authority.
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = match rest[..authority_end].rfind('@') {
            Some(_) => &rest[..authority_end],
            // An unencoded `/` or `?` in the password: the authority runs to the last `@`.
            None => rest.rfind('@').map_or("", |at| &rest[..=at]),
        };
        if let Some(at) = authority.rfind('@') {
            if let Some((_, password)) = authority[..at].split_once(':') {
                secrets.push(password.to_owned());
                secrets.push(percent_decode(password));
            }
        }
    } else {
        // key=value form: `password=secret` or `password='se cret'`.
        let mut search = trimmed;
        while let Some(found) = search.find("password") {
            let after = search[found + "password".len()..].trim_start();
            if let Some(value) = after.strip_prefix('=') {
                let value = value.trim_start();
                let password = match value.strip_prefix('\'') {
                    Some(quoted) => quoted.split('\'').next().unwrap_or(""),
                    None => value.split_whitespace().next().unwrap_or(""),
                };
                secrets.push(password.to_owned());
            }
            search = &search[found + "password".len()..];
        }
    }
    // Longest first, so a password containing another is redacted whole.
    secrets.retain(|s| !s.is_empty());
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_secrets_finds_the_password_in_both_forms() {
        assert_eq!(
            url_secrets("postgres://cf:s3cr%40t@db.internal:5432/cf"),
            ["s3cr%40t", "s3cr@t"]
        );
        assert_eq!(url_secrets("postgresql://cf:a/b?c@db/cf"), ["a/b?c"]);
        assert_eq!(
            url_secrets("host=/run/pg user=cf password='two words' dbname=cf"),
            ["two words"]
        );
        assert_eq!(url_secrets("host=db password=hunter2"), ["hunter2"]);
        assert!(url_secrets("postgres://cf@db/cf").is_empty());
    }

    #[test]
    fn require_tls_is_refused_without_quoting_the_url() {
        let err = connect("postgres://cf:hunter2@127.0.0.1:1/cf?sslmode=require")
            .err()
            .unwrap();
        assert_eq!(err.kind(), PgErrorKind::Config);
        let text = err.to_string();
        assert!(text.contains("sslmode=require"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn a_malformed_url_is_a_config_error_without_the_password() {
        let err = connect("postgres://cf:hunter2@db:notaport/cf")
            .err()
            .unwrap();
        assert_eq!(err.kind(), PgErrorKind::Config);
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = connect(&"x".repeat(MAX_URL + 1)).err().unwrap();
        assert!(err.to_string().contains("longer than"), "{err}");
    }
}
