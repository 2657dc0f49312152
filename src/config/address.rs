//! Addresses written in the config: listen sockets, upstream targets and client CIDRs.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use super::redact::{has_userinfo, redact_url, CREDENTIALS_IN_URL};

/// Parses a listen address: an IP literal and a port, IPv6 in brackets (`[::1]:8080`).
/// Host names are refused: what a name resolves to can change between check and bind.
pub fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>().map_err(|_| {
        format!("`{text}` is not an ip:port address (e.g. 127.0.0.1:8080 or [::1]:8080)")
    })
}

/// An upstream target, `host:port`: the host may be a DNS name, an IPv4 address or a
/// bracketed IPv6 address (RFC 3986 §3.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Name or address, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;

    /// Errors show the text redacted ([`redact_url`]): a target is refused for holding
    /// credentials, and must not print them while saying so.
    fn from_str(text: &str) -> Result<HostPort, String> {
        if has_userinfo(text) {
            return Err(CREDENTIALS_IN_URL.to_string());
        }
        let shown = redact_url(text);
        let bad = || format!("`{shown}` is not host:port (e.g. 10.0.0.5:8000 or api.internal:443)");
        if text.contains("://") {
            return Err(format!("`{shown}` has a scheme; write host:port only"));
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
        let host = if let Some(inner) = host.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or_else(bad)?;
            inner.parse::<Ipv6Addr>().map_err(|_| bad())?;
            inner
        } else if is_dns_name(host) || host.parse::<Ipv4Addr>().is_ok() {
            host
        } else {
            return Err(bad());
        };
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A DNS host name: dot-separated labels of letters, digits, `-` and `_` (RFC 1123 §2.1,
/// with `_` because internal service names use it), each 1..=63 long, 253 in all.
pub fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// An IP network, `10.0.0.0/8` or `2001:db8::/32`; a bare address means just that host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// Number of leading bits that must match.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// True when `ip` is in this network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what
    /// a dual-stack socket reports for IPv4 clients) match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(u32::from(ip), self.prefix_len) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(u128::from(ip), self.prefix_len) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// Clears the bits after the first `prefix_len` (a shift by the full width would overflow).
fn mask_v4(bits: u32, prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => bits & (u32::MAX << (32 - u32::from(n))),
    }
}

fn mask_v6(bits: u128, prefix_len: u8) -> u128 {
    match prefix_len {
        0 => 0,
        n => bits & (u128::MAX << (128 - u32::from(n))),
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Host bits after the prefix are cleared (`10.1.2.3/8` is `10.0.0.0/8`), as nginx does.
    fn from_str(text: &str) -> Result<Cidr, String> {
        let bad = || format!("`{text}` is not an IP address or CIDR (e.g. 10.0.0.0/8, ::1/128)");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
        };
        let network = match addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(mask_v4(u32::from(v4), prefix_len))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(mask_v6(u128::from(v6), prefix_len))),
        };
        Ok(Cidr {
            network,
            prefix_len,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn listen_addr_accepts_ipv4_and_bracketed_ipv6() {
        assert!(parse_listen_addr("127.0.0.1:8080").is_ok());
        assert!(parse_listen_addr("[::1]:8080").is_ok());
    }

    #[test]
    fn listen_addr_rejects_host_names_and_missing_port() {
        assert!(parse_listen_addr("localhost:8080").is_err());
        assert!(parse_listen_addr("127.0.0.1").is_err());
        assert!(parse_listen_addr("::1:8080").is_err());
    }

    #[test]
    fn target_with_user_info_is_refused_without_showing_it() {
        for text in [
            "user:PW-planted@api.internal:443",
            "http://u:PW-planted@h:80",
        ] {
            let error = text.parse::<HostPort>().unwrap_err();
            assert!(
                error.contains("credentials in URLs are not allowed"),
                "{error}"
            );
            assert!(!error.contains("PW-planted"), "{error}");
        }
        let error = "h:80?key=PW-planted".parse::<HostPort>().unwrap_err();
        assert!(!error.contains("PW-planted"), "{error}");
    }

    #[test]
    fn target_accepts_name_ipv4_and_ipv6() {
        let t: HostPort = "api.internal:443".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("api.internal", 443));
        let t: HostPort = "[2001:db8::1]:80".parse().unwrap();
        assert_eq!(t.host, "2001:db8::1");
        assert_eq!(t.to_string(), "[2001:db8::1]:80");
        assert!("10.0.0.5:8000".parse::<HostPort>().is_ok());
    }

    #[test]
    fn target_rejects_scheme_missing_port_and_port_zero() {
        assert!("http://a:80".parse::<HostPort>().is_err());
        assert!("backend".parse::<HostPort>().is_err());
        assert!("backend:0".parse::<HostPort>().is_err());
        assert!(":80".parse::<HostPort>().is_err());
        assert!("bad host:80".parse::<HostPort>().is_err());
    }

    #[test]
    fn ipv4_cidr_contains_its_hosts_only() {
        let net: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains(ip("10.200.0.1")));
        assert!(!net.contains(ip("11.0.0.1")));
    }

    #[test]
    fn ipv6_cidr_contains_its_hosts_only() {
        let net: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(net.contains(ip("2001:db8:ffff::1")));
        assert!(!net.contains(ip("2001:db9::1")));
    }

    #[test]
    fn bare_address_is_a_single_host() {
        let net: Cidr = "192.168.1.7".parse().unwrap();
        assert_eq!(net.prefix_len(), 32);
        assert!(net.contains(ip("192.168.1.7")));
        assert!(!net.contains(ip("192.168.1.8")));
    }

    #[test]
    fn zero_prefix_matches_every_address_of_its_family() {
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert!(!all.contains(ip("::1")));
    }

    #[test]
    fn ipv4_mapped_client_matches_ipv4_network() {
        let net: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn malformed_cidrs_are_rejected() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0/8",
            "abc",
            "10.0.0.0/+8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
