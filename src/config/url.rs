//! `http://` and `https://` URLs: every endpoint the gateway is told to call (provider
//! `base_url`, `jwks_url`, the bench target) goes through the one parser here, so they all
//! refuse the same things with the same words.
//!
//! The grammar is RFC 3986 §3, narrowed to what an HTTP client sends:
//!
//! ```text
//! http-url  = ("http" / "https") "://" host [ ":" port ] path-abempty [ "?" query ]
//! host      = DNS name / IPv4address / "[" IPv6address "]"
//! ```
//!
//! Refused: user info (§3.2.1; it would put a credential where URLs get logged, and it is
//! never sent in an HTTP/1.1 request, RFC 9110 §4.2.4), fragments (§3.5; never sent
//! either), empty hosts, ports outside 1..=65535, other schemes, and path or query bytes
//! that §3.3/§3.4 do not allow unencoded (spaces and control bytes among them, which would
//! otherwise end up in a request line). Scheme comparison is case-insensitive (§3.1).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use rustls::pki_types::ServerName;

use super::address::{is_dns_name, HostPort};
use super::redact::{has_userinfo, redact_url, CREDENTIALS_IN_URL};

/// Longest URL accepted. Config files and command lines are not bounded otherwise, and a URL
/// ends up in request lines and log lines; 8 KiB is what common servers accept as a whole
/// request line.
pub const MAX_URL_BYTES: usize = 8192;

/// A parsed `http://` or `https://` URL: where to connect, what to send as `Host` and as
/// the request target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    tls: bool,
    /// Host (IPv6 without brackets) and port, the scheme's default port filled in.
    authority: HostPort,
    /// The authority as written: the `Host` header value (RFC 9110 §7.2).
    host_header: String,
    /// The path as written; `""` when the URL has none.
    path: String,
    /// The query without its `?`; `Some("")` for a bare `?`.
    query: Option<String>,
}

impl HttpUrl {
    /// Parses `text`. Errors name the URL redacted ([`redact_url`]): user info, query and
    /// fragment are where secrets hide, and a refused URL must not print them.
    pub fn parse(text: &str) -> Result<HttpUrl, String> {
        if text.len() > MAX_URL_BYTES {
            return Err(format!(
                "a URL of {} bytes is longer than the {MAX_URL_BYTES} accepted",
                text.len()
            ));
        }
        // Any `@`, not only one in the authority: see `has_userinfo`.
        if has_userinfo(text) {
            return Err(format!("`{}`: {CREDENTIALS_IN_URL}", shown(text)));
        }
        let bad = |why: &str| format!("`{}` {why}", shown(text));
        let (tls, rest) = if let Some(rest) = strip_prefix_ignore_case(text, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(text, "http://") {
            (false, rest)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        if rest.contains('#') {
            return Err(bad(
                "has a fragment (#...), which is never sent in a request",
            ));
        }
        // §3.2: the authority ends at the first `/` or `?` (`#` is refused above).
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (written_authority, path_and_query) = rest.split_at(authority_end);
        if written_authority.is_empty() {
            return Err(bad("has no host"));
        }
        let (host, port) = split_host_port(written_authority).ok_or_else(|| {
            bad("has a bad host: it must be a DNS name, an IPv4 address or an [IPv6] address")
        })?;
        let port = match port {
            None if tls => 443,
            None => 80,
            Some(port) => parse_port(port)
                .ok_or_else(|| bad("has a bad port: it must be a number from 1 to 65535"))?,
        };
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        if !is_encoded(path, b"/") || !query.is_none_or(|q| is_encoded(q, b"/?")) {
            return Err(bad(
                "has a character that must be percent-encoded (RFC 3986 §2.1), \
                 such as a space, a control or a non-ASCII byte",
            ));
        }
        Ok(HttpUrl {
            tls,
            authority: HostPort {
                host: host.to_string(),
                port,
            },
            host_header: written_authority.to_string(),
            path: path.to_string(),
            query: query.map(str::to_string),
        })
    }

    /// Whether the scheme is `https`.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// `"https"` or `"http"`, lower case whatever was written.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }

    /// The host: a DNS name, an IPv4 address or an IPv6 address without brackets.
    pub fn host(&self) -> &str {
        &self.authority.host
    }

    /// The port, explicit or the scheme's default (80, 443; RFC 9110 §4.2).
    pub fn port(&self) -> u16 {
        self.authority.port
    }

    /// Host and port, to connect to; its `Display` brackets an IPv6 host.
    pub fn host_port(&self) -> &HostPort {
        &self.authority
    }

    /// The `Host` header value: the authority as written, a port only when the URL has one
    /// (RFC 9110 §7.2).
    pub fn host_header(&self) -> &str {
        &self.host_header
    }

    /// The path as written, `""` when there is none.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query without its `?`, when the URL has one.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The request target in origin form (RFC 9112 §3.2.1): path and query, the path `/`
    /// when the URL has none.
    pub fn request_target(&self) -> String {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        match &self.query {
            Some(query) => format!("{path}?{query}"),
            None => path.to_string(),
        }
    }

    /// The TLS server name: SNI and the name the certificate must match (an IP address is
    /// matched against the certificate's IP SANs and not sent as SNI, RFC 6066 §3).
    pub fn server_name(&self) -> Result<ServerName<'static>, String> {
        ServerName::try_from(self.authority.host.clone())
            .map_err(|e| format!("{} is not a valid TLS server name: {e}", self.host()))
    }
}

impl FromStr for HttpUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<HttpUrl, String> {
        HttpUrl::parse(text)
    }
}

/// For logs and messages: scheme, authority and path, with a query shown as `?***` (it may
/// carry a token).
impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme(), self.host_header, self.path)?;
        if self.query.is_some() {
            f.write_str("?***")?;
        }
        Ok(())
    }
}

/// `text` as an error message shows it: redacted, and with control characters escaped so a
/// URL cannot forge a log line.
fn shown(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in redact_url(text).chars() {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// Splits an authority without user info into host and port text (§3.2.2, §3.2.3), the
/// host checked and unbracketed. `None` when the host is not a DNS name, an IPv4 address or
/// a bracketed IPv6 address, or something other than `:port` follows it.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        host.parse::<Ipv6Addr>().ok()?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    (is_dns_name(host) || host.parse::<Ipv4Addr>().is_ok()).then_some((host, port))
}

/// A port: digits only (`u16::from_str` would take a `+`), 1..=65535.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|&port| port != 0)
}

/// Whether `text` holds only what RFC 3986 lets a path (§3.3) or query (§3.4) carry
/// unencoded: unreserved characters, sub-delims, `:`, `@`, `extra`, and `%` followed by two
/// hex digits.
fn is_encoded(text: &str, extra: &[u8]) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        let allowed = b.is_ascii_alphanumeric()
            || b"-._~".contains(&b)
            || b"!$&'()*+,;=".contains(&b)
            || b":@".contains(&b)
            || extra.contains(&b);
        if !allowed {
            return false;
        }
        i += 1;
    }
    true
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    // `get` is `None` when the prefix length falls inside a multi-byte character.
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> HttpUrl {
        HttpUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn refused(text: &str) -> String {
        match HttpUrl::parse(text) {
            Ok(parsed) => panic!("{text} was accepted as {parsed:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn http_url_without_port_or_path_defaults_to_80_and_slash() {
        let u = url("http://example.com");
        assert!(!u.tls());
        assert_eq!((u.host(), u.port()), ("example.com", 80));
        assert_eq!(u.host_header(), "example.com");
        assert_eq!((u.path(), u.query()), ("", None));
        assert_eq!(u.request_target(), "/");
    }

    #[test]
    fn https_url_defaults_to_443() {
        let u = url("https://api.openai.com");
        assert!(u.tls());
        assert_eq!(u.host_port().to_string(), "api.openai.com:443");
        let u = url("https://example.com/v1/models");
        assert_eq!(u.port(), 443);
        assert_eq!(u.request_target(), "/v1/models");
    }

    #[test]
    fn explicit_port_path_and_query_are_split() {
        let u = url("http://127.0.0.1:9000/a?b=c");
        assert_eq!((u.host(), u.port()), ("127.0.0.1", 9000));
        assert_eq!(u.host_header(), "127.0.0.1:9000");
        assert_eq!((u.path(), u.query()), ("/a", Some("b=c")));
        assert_eq!(u.request_target(), "/a?b=c");
    }

    #[test]
    fn query_without_path_gets_a_slash() {
        let u = url("http://h?x=1");
        assert_eq!(u.request_target(), "/?x=1");
        assert_eq!(url("http://h/?").query(), Some(""));
    }

    #[test]
    fn path_is_kept_as_written() {
        let u = url("http://h:1/openai/v1//");
        assert_eq!(u.path(), "/openai/v1//");
        assert_eq!(u.request_target(), "/openai/v1//");
        assert_eq!(url("http://h/a%20b").path(), "/a%20b");
    }

    #[test]
    fn bracketed_ipv6_host_is_unbracketed() {
        let u = url("http://[::1]:8080/jwks");
        assert_eq!((u.host(), u.port()), ("::1", 8080));
        assert_eq!(u.host_header(), "[::1]:8080");
        assert_eq!(u.host_port().to_string(), "[::1]:8080");
        let u = url("http://[::1]/x");
        assert_eq!(u.host_port().to_string(), "[::1]:80");
        assert_eq!(u.host_header(), "[::1]");
    }

    #[test]
    fn scheme_is_case_insensitive() {
        assert!(url("HTTPS://h/").tls());
        let u = url("HTTP://[::1]:8080/a/b//");
        assert!(!u.tls());
        assert_eq!(u.scheme(), "http");
    }

    #[test]
    fn other_schemes_are_refused() {
        for text in [
            "ftp://h/",
            "localhost:8080",
            "http:/h",
            "",
            "httpx://h",
            "http:é//h",
        ] {
            let error = refused(text);
            assert!(
                error.contains("must start with http:// or https://"),
                "{error}"
            );
        }
    }

    #[test]
    fn bad_ports_are_refused() {
        for text in [
            "http://h:0/",
            "http://h:70000/",
            "http://h:99999",
            "http://h:x/",
            "http://h:/",
            "http://h:+80/",
            "http://[::1]:/",
        ] {
            let error = refused(text);
            assert!(error.contains("bad port"), "{text}: {error}");
        }
    }

    #[test]
    fn empty_hosts_are_refused() {
        for text in ["http:///x", "http://", "https://?q", "http://:80/"] {
            let error = refused(text);
            assert!(
                error.contains("no host") || error.contains("bad host"),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn hosts_that_are_no_name_or_address_are_refused() {
        for text in [
            "http://exa mple.com/",
            "http://a!b/",
            "http://[]/",
            "http://[zzz]/",
            "http://[::1]junk/",
            "http://[::1/",
            "http://::1:80/",
            "http://[fe80::1%25eth0]/",
            "http://-h/",
        ] {
            let error = refused(text);
            assert!(error.contains("bad host"), "{text}: {error}");
        }
    }

    #[test]
    fn user_info_is_refused_without_being_shown() {
        for text in [
            "http://user:PW-planted@idp/jwks",
            "http://user@h:1",
            "https://u:pa/PW-planted@h/",
            "http://h/PW-planted@x",
            "http://h/?k=PW-planted@x",
        ] {
            let error = refused(text);
            assert!(
                error.contains("credentials in URLs are not allowed"),
                "{error}"
            );
            assert!(!error.contains("PW-planted"), "{error}");
        }
    }

    #[test]
    fn fragments_are_refused_without_being_shown() {
        for text in ["http://h/#x", "http://127.0.0.1:8081/keys?x=1#PW-planted"] {
            let error = refused(text);
            assert!(error.contains("fragment"), "{error}");
            assert!(!error.contains("PW-planted"), "{error}");
        }
    }

    #[test]
    fn unencoded_bytes_in_path_or_query_are_refused() {
        for text in [
            "http://h/a b",
            "http://h/a\r\nHost: evil",
            "http://h/a\tb",
            "http://h/\u{7f}",
            "http://h/ä",
            "http://h/a\"b",
            "http://h/{x}",
            "http://h/a|b",
            "http://h/a\\b",
            "http://h/%zz",
            "http://h/%4",
            "http://h/?q=a b",
            "http://h/?q=[1]",
        ] {
            let error = refused(text);
            assert!(error.contains("percent-encoded"), "{text:?}: {error}");
            assert!(!error.contains('\n') && !error.contains('\r'), "{error}");
        }
    }

    #[test]
    fn a_refused_query_is_not_shown() {
        let error = refused("http://h/p?key=PW-planted with space");
        assert!(!error.contains("PW-planted"), "{error}");
        assert!(error.contains("`http://h/p?***`"), "{error}");
    }

    #[test]
    fn length_is_bounded_and_an_overlong_url_is_not_shown() {
        let path = "a".repeat(MAX_URL_BYTES - "http://h/".len());
        assert!(HttpUrl::parse(&format!("http://h/{path}")).is_ok());
        let error = refused(&format!("http://h/{path}PW-planted"));
        assert!(error.contains("longer than the 8192 accepted"), "{error}");
        assert!(!error.contains("PW-planted"), "{error}");
    }

    #[test]
    fn display_hides_the_query() {
        assert_eq!(
            url("https://idp/jwks?token=abc").to_string(),
            "https://idp/jwks?***"
        );
        assert_eq!(url("HTTP://h:8/p").to_string(), "http://h:8/p");
    }

    #[test]
    fn server_name_is_the_host() {
        let name = url("https://idp.example.com/jwks").server_name().unwrap();
        assert_eq!(name.to_str(), "idp.example.com");
        let name = url("https://[::1]:8443/").server_name().unwrap();
        assert!(matches!(name, ServerName::IpAddress(_)));
    }
}
