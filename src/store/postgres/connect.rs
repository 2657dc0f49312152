//! Opening a connection from a store URL: `postgres://user:password@host:port/database` or
//! libpq's `key=value` form (`host=/run/postgresql user=cf dbname=cf`; a `host` starting with
//! `/` is a Unix socket directory). Every store connection is made here.
//!
//! TLS follows libpq's `sslmode` (`disable`, `prefer` by default, `require`, `verify-ca`,
//! `verify-full`) and `sslrootcert`; what each means is in [`super::tls`]. The client library
//! knows neither the verify modes nor `sslrootcert`, so both are taken out of the URL here
//! and carried out by our certificate verifier. Unix sockets never use TLS (as in libpq,
//! `sslmode` does not apply to them: the kernel is the channel).

use std::str::FromStr;
use std::time::Duration;

use ::postgres::config::{Host, SslMode as Negotiation};
use ::postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::{PgError, PgErrorKind};
use super::tls::{self, SslMode};

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
    let (rest, options) = take_tls_options(url);
    let mode = match options.sslmode.as_deref() {
        None => SslMode::Prefer,
        Some(value) => SslMode::parse(value).ok_or_else(|| {
            PgError::new(
                PgErrorKind::Config,
                "sslmode: expected disable, prefer, require, verify-ca or verify-full",
            )
        })?,
    };
    let mut config = Config::from_str(&rest).map_err(|e| {
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
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("credentialflow");
    let only_sockets = config.get_hostaddrs().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|host| matches!(host, Host::Unix(_)));
    if mode == SslMode::Disable || only_sockets {
        config.ssl_mode(Negotiation::Disable);
        return config.connect(NoTls).map_err(|e| from_connect_error(&e));
    }
    // Built per connection: connections are rare (open, reconnect after an outage), and a
    // rotated sslrootcert file is picked up on the next one.
    let tls = tls::client_config(mode, options.sslrootcert.as_deref())?;
    config.ssl_mode(mode.negotiation());
    config
        .connect(MakeRustlsConnect::new(tls))
        .map_err(|e| from_connect_error(&e))
}

/// A failed connection attempt. A TLS failure (the server refused TLS under `require`, or its
/// certificate failed the check) counts as unreachable, like a refused login: the store
/// cannot be used until the server or the URL changes, and a node keeps serving from its
/// replica meanwhile. Certificates never carry private material, so the text may name why
/// the certificate was refused.
fn from_connect_error(e: &::postgres::Error) -> PgError {
    let error = PgError::from_client(e);
    if error
        .to_string()
        .starts_with("PostgreSQL: error performing TLS handshake")
    {
        return PgError::new(PgErrorKind::Unreachable, without_prefix(&error));
    }
    error
}

fn without_prefix(error: &PgError) -> String {
    let text = error.to_string();
    text.strip_prefix("PostgreSQL: ")
        .unwrap_or(&text)
        .to_owned()
}

/// The TLS options of a connection string that the client library does not know.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsOptions {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

/// Splits `sslmode` and `sslrootcert` out of `url` (either form; the last of each wins, as in
/// libpq), returning the rest of the connection string for the client library. A string this
/// cannot read is returned whole, for the library to report.
fn take_tls_options(url: &str) -> (String, TlsOptions) {
    let mut options = TlsOptions::default();
    let trimmed = url.trim();
    let mut keep = |key: &str, value: String| match key {
        "sslmode" => {
            options.sslmode = Some(value);
            false
        }
        "sslrootcert" => {
            options.sslrootcert = Some(value);
            false
        }
        _ => true,
    };
    let rest = if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        // The query starts at the first `?` after the user information, which ends at the
        // first `@`: where the client library's URL parser looks for it.
        let after_userinfo = trimmed.find('@').map_or(0, |at| at + 1);
        match trimmed[after_userinfo..].find('?') {
            None => trimmed.to_owned(),
            Some(at) => {
                let (base, query) = trimmed.split_at(after_userinfo + at);
                let kept: Vec<&str> = query[1..]
                    .split('&')
                    .filter(|pair| {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        keep(&percent_decode(key), percent_decode(value))
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        match key_value_pairs(trimmed) {
            Some(pairs) => pairs
                .into_iter()
                .filter(|(key, value)| keep(key, value.clone()))
                .map(|(key, value)| {
                    let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
                    format!("{key}='{escaped}'")
                })
                .collect::<Vec<_>>()
                .join(" "),
            None => trimmed.to_owned(),
        }
    };
    (rest, options)
}

/// The `key = value` pairs of a libpq keyword/value string, read as the client library reads
/// them (values bare or single-quoted, `\` escaping the next character); `None` when the
/// string is malformed.
fn key_value_pairs(text: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            return chars.peek().is_none().then_some(pairs);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        chars.next_if_eq(&'=')?;
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let quoted = chars.next_if_eq(&'\'').is_some();
        let mut value = String::new();
        loop {
            match chars.peek() {
                None if quoted => return None,
                None => break,
                Some('\'') if quoted => {
                    chars.next();
                    break;
                }
                Some(c) if c.is_whitespace() && !quoted => break,
                Some(_) => {}
            }
            match chars.next() {
                Some('\\') => value.extend(chars.next()),
                Some(c) => value.push(c),
                None => break,
            }
        }
        if value.is_empty() && !quoted {
            return None;
        }
        pairs.push((key, value));
    }
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
    fn tls_options_are_taken_out_of_both_forms() {
        let (rest, options) = take_tls_options(
            "postgres://cf:pw@db:5432/cf?sslmode=verify-full&connect_timeout=3&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(rest, "postgres://cf:pw@db:5432/cf?connect_timeout=3");
        assert_eq!(options.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(options.sslrootcert.as_deref(), Some("/etc/ca.pem"));

        let (rest, options) = take_tls_options("postgres://cf:a?b@db/cf?sslmode=require");
        assert_eq!(rest, "postgres://cf:a?b@db/cf");
        assert_eq!(options.sslmode.as_deref(), Some("require"));

        let (rest, options) = take_tls_options(
            "host=db user=cf password='it\\'s x' sslmode = disable sslmode=verify-ca \
             sslrootcert='/etc/my ca.pem'",
        );
        assert_eq!(rest, "host='db' user='cf' password='it\\'s x'");
        assert_eq!(options.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(options.sslrootcert.as_deref(), Some("/etc/my ca.pem"));
        assert_eq!(
            Config::from_str(&rest).unwrap().get_password(),
            Some(&b"it's x"[..])
        );

        // Malformed: handed over whole, for the client library to report.
        assert_eq!(take_tls_options("host=db sslmode").0, "host=db sslmode");
        assert_eq!(take_tls_options("host='db").1, TlsOptions::default());
    }

    #[test]
    fn an_unknown_sslmode_is_refused_without_quoting_the_url() {
        for mode in ["allow", "verify_full", "hunter2"] {
            let err = connect(&format!(
                "postgres://cf:hunter2@127.0.0.1:1/cf?sslmode={mode}"
            ))
            .err()
            .unwrap();
            assert_eq!(err.kind(), PgErrorKind::Config);
            let text = err.to_string();
            assert!(text.contains("verify-full"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn tls_modes_need_a_readable_rootcert_before_dialing() {
        let err = connect(
            "postgres://cf:hunter2@127.0.0.1:1/cf?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .err()
        .unwrap();
        assert_eq!(err.kind(), PgErrorKind::Config);
        let text = err.to_string();
        assert!(text.contains("sslrootcert /nonexistent/ca.pem"), "{text}");
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
