//! The URL under test: `http://` or `https://`, a host (name, IPv4 or bracketed IPv6), an
//! optional port and an optional path and query (RFC 3986 section 3). Userinfo and fragments
//! are refused: neither is sent in an HTTP/1.1 request line (RFC 9110 section 4.2.4, 7.1).

use std::net::{SocketAddr, ToSocketAddrs};

use rustls::pki_types::ServerName;

/// A parsed `http://` or `https://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Whether the scheme is `https`.
    pub tls: bool,
    /// The host as written, without brackets for IPv6.
    pub host: String,
    /// The port, explicit or the scheme's default (80 or 443).
    pub port: u16,
    /// The `Host` header value (RFC 9110 section 7.2): the authority as written, port
    /// included only when the URL has one.
    pub authority: String,
    /// The request target in origin form: path and query, `/` when the URL has no path
    /// (RFC 9112 section 3.2.1).
    pub path_and_query: String,
}

impl Target {
    /// Parses `url`; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<Target, String> {
        let bad = |why: &str| format!("bad URL {url:?}: {why}");
        let (tls, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
            (false, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
            (true, rest)
        } else {
            return Err(bad("it must start with http:// or https://"));
        };
        if rest.contains('#') {
            return Err(bad("fragments (#...) are not sent in requests"));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        if authority.contains('@') {
            return Err(bad(
                "userinfo (user@) is not supported; send credentials with -H",
            ));
        }
        let (host, port_text) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the host"))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(bad("junk after the IPv6 address")),
                },
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:%".contains(&b))
        {
            return Err(bad("the host has characters a host name cannot have"));
        }
        let port = match port_text {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(text) => text
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
        };
        let path_and_query = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        if path_and_query
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || !b.is_ascii())
        {
            return Err(bad(
                "spaces, control and non-ASCII bytes must be percent-encoded",
            ));
        }
        Ok(Target {
            tls,
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            path_and_query,
        })
    }

    /// Resolves the host once, before the run (the first address is used for every
    /// connection, so name resolution never runs on the load threads).
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("cannot resolve {}: no address", self.host))
    }

    /// The TLS server name: SNI and the name the certificate must match (an IP address
    /// is matched against the certificate's IP SANs and not sent as SNI, RFC 6066 section 3).
    pub fn server_name(&self) -> Result<ServerName<'static>, String> {
        ServerName::try_from(self.host.clone())
            .map_err(|e| format!("{} is not a valid TLS server name: {e}", self.host))
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_url_without_port_or_path_defaults_to_80_and_slash() {
        let t = Target::parse("http://example.com").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.authority.as_str()),
            (false, "example.com", 80, "example.com")
        );
        assert_eq!(t.path_and_query, "/");
    }

    #[test]
    fn https_url_defaults_to_443() {
        let t = Target::parse("https://example.com/v1/models").unwrap();
        assert!(t.tls);
        assert_eq!(t.port, 443);
        assert_eq!(t.path_and_query, "/v1/models");
    }

    #[test]
    fn explicit_port_is_kept_in_the_host_header() {
        let t = Target::parse("http://127.0.0.1:9000/a?b=c").unwrap();
        assert_eq!(t.port, 9000);
        assert_eq!(t.authority, "127.0.0.1:9000");
        assert_eq!(t.path_and_query, "/a?b=c");
    }

    #[test]
    fn query_without_path_gets_a_slash() {
        let t = Target::parse("http://h?x=1").unwrap();
        assert_eq!(t.path_and_query, "/?x=1");
    }

    #[test]
    fn bracketed_ipv6_host_is_unbracketed() {
        let t = Target::parse("http://[::1]:8080/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert_eq!(t.authority, "[::1]:8080");
    }

    #[test]
    fn scheme_is_case_insensitive() {
        assert!(Target::parse("HTTPS://h/").unwrap().tls);
    }

    #[test]
    fn other_schemes_are_refused() {
        let err = Target::parse("ftp://h/").unwrap_err();
        assert!(err.contains("http:// or https://"), "{err}");
        assert!(Target::parse("localhost:8080").is_err());
    }

    #[test]
    fn bad_ports_are_refused() {
        for url in [
            "http://h:0/",
            "http://h:70000/",
            "http://h:x/",
            "http://h:/",
        ] {
            assert!(Target::parse(url).is_err(), "{url}");
        }
    }

    #[test]
    fn userinfo_fragment_and_empty_host_are_refused() {
        for url in ["http://u:p@h/", "http://h/#x", "http:///x", "http://:80/"] {
            assert!(Target::parse(url).is_err(), "{url}");
        }
    }

    #[test]
    fn unencoded_spaces_in_the_path_are_refused() {
        assert!(Target::parse("http://h/a b").is_err());
    }

    #[test]
    fn localhost_resolves() {
        let t = Target::parse("http://127.0.0.1:1/").unwrap();
        assert_eq!(t.resolve().unwrap(), "127.0.0.1:1".parse().unwrap());
    }
}
