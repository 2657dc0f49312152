//! Per-route client IP allow and deny lists, evaluated before authentication.

use std::net::IpAddr;

use crate::config::Cidr;

/// A route's compiled `allow_ips` / `deny_ips`.
#[derive(Clone, Debug, Default)]
pub struct IpRules {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

impl IpRules {
    /// Parses the route's CIDR lists (`10.0.0.0/8`, `::1/128`, or a bare address). The error
    /// names the first entry that is not an address or CIDR.
    pub fn new(allow: &[String], deny: &[String]) -> Result<IpRules, String> {
        let parse = |list: &[String]| -> Result<Vec<Cidr>, String> {
            list.iter()
                .map(|text| text.trim().parse::<Cidr>())
                .collect()
        };
        Ok(IpRules {
            allow: parse(allow)?,
            deny: parse(deny)?,
        })
    }

    /// True when neither list has an entry, so every client passes without a check.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// Whether a client at `ip` may use the route: a deny match always refuses (as in nginx's
    /// `deny` before `allow`), then an empty allow list admits everyone, else `ip` must match
    /// an allow entry. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket
    /// reports for an IPv4 client) are treated as the IPv4 address they carry.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.deny.iter().any(|cidr| cidr.contains(ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|cidr| cidr.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str]) -> IpRules {
        let own = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        IpRules::new(&own(allow), &own(deny)).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn empty_lists_permit_every_client() {
        let rules = rules(&[], &[]);
        assert!(rules.is_empty());
        assert!(rules.permits(ip("203.0.113.9")));
        assert!(rules.permits(ip("2001:db8::1")));
    }

    #[test]
    fn allow_list_admits_only_its_networks() {
        let rules = rules(&["10.0.0.0/8", "2001:db8::/32"], &[]);
        assert!(rules.permits(ip("10.20.30.40")));
        assert!(rules.permits(ip("2001:db8:1::5")));
        assert!(!rules.permits(ip("192.168.1.1")));
        assert!(!rules.permits(ip("2001:db9::1")));
    }

    #[test]
    fn deny_wins_over_allow() {
        let rules = rules(&["10.0.0.0/8"], &["10.1.0.0/16"]);
        assert!(rules.permits(ip("10.2.0.1")));
        assert!(!rules.permits(ip("10.1.2.3")));
    }

    #[test]
    fn deny_alone_refuses_listed_and_admits_others() {
        let rules = rules(&[], &["192.0.2.7"]);
        assert!(!rules.permits(ip("192.0.2.7")));
        assert!(rules.permits(ip("192.0.2.8")));
    }

    #[test]
    fn ipv4_mapped_ipv6_client_is_treated_as_ipv4() {
        let rules = rules(&["127.0.0.0/8"], &["127.0.0.2"]);
        assert!(rules.permits(ip("::ffff:127.0.0.1")));
        assert!(!rules.permits(ip("::ffff:127.0.0.2")));
    }

    #[test]
    fn invalid_entry_is_an_error_naming_it() {
        let err = IpRules::new(&["10.0.0.0/33".to_string()], &[]).unwrap_err();
        assert!(err.contains("10.0.0.0/33"), "{err}");
        assert!(IpRules::new(&[], &["not-an-ip".to_string()]).is_err());
    }
}
