//! The route table: exact host, then longest path prefix. Built once per config load and
//! shared read-only by every worker.

use std::collections::HashMap;

/// Maps a request's host and path to the index of a route in the config's `[[route]]` list.
#[derive(Debug, Default)]
pub struct Router {
    /// Routes with a `host`, keyed by lowercased host; each list sorted longest prefix first.
    by_host: HashMap<String, Vec<(String, usize)>>,
    /// Routes without a `host`, longest prefix first.
    any_host: Vec<(String, usize)>,
}

/// What a route needs to be placed in the table.
pub struct RouteEntry<'a> {
    /// Exact host to match ("" = any host).
    pub host: &'a str,
    /// Path prefix; the longest matching one wins.
    pub path_prefix: &'a str,
}

impl Router {
    /// Builds the table; `routes[i]` becomes route index `i`.
    pub fn new<'a>(routes: impl IntoIterator<Item = RouteEntry<'a>>) -> Router {
        let mut router = Router::default();
        for (idx, route) in routes.into_iter().enumerate() {
            let entry = (route.path_prefix.to_string(), idx);
            if route.host.is_empty() {
                router.any_host.push(entry);
            } else {
                router
                    .by_host
                    .entry(route.host.to_ascii_lowercase())
                    .or_default()
                    .push(entry);
            }
        }
        // Stable sort keeps config order among equal-length prefixes, so the first wins.
        let longest_first = |a: &(String, usize), b: &(String, usize)| b.0.len().cmp(&a.0.len());
        router.any_host.sort_by(longest_first);
        for list in router.by_host.values_mut() {
            list.sort_by(longest_first);
        }
        router
    }

    /// Finds the route for `host` (the Host header, port ignored, any case) and `path`.
    /// Host-specific routes are tried first; a host with no matching prefix falls back to the
    /// host-agnostic routes, as a default server would in nginx.
    pub fn route(&self, host: &str, path: &str) -> Option<usize> {
        if !self.by_host.is_empty() {
            let name = strip_port(host);
            let found = if name.bytes().any(|b| b.is_ascii_uppercase()) {
                self.by_host.get(&name.to_ascii_lowercase())
            } else {
                self.by_host.get(name)
            };
            if let Some(idx) = found.and_then(|list| longest_prefix(list, path)) {
                return Some(idx);
            }
        }
        longest_prefix(&self.any_host, path)
    }
}

fn longest_prefix(list: &[(String, usize)], path: &str) -> Option<usize> {
    list.iter()
        .find(|(prefix, _)| path.starts_with(prefix.as_str()))
        .map(|(_, idx)| *idx)
}

/// `example.com:8080` -> `example.com`; `[::1]:80` -> `[::1]`.
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => &host[..colon],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&'static str, &'static str)]) -> Router {
        Router::new(
            routes
                .iter()
                .map(|(host, path_prefix)| RouteEntry { host, path_prefix }),
        )
    }

    #[test]
    fn longest_prefix_wins_regardless_of_order() {
        let r = router(&[("", "/"), ("", "/api/v1/"), ("", "/api/")]);
        assert_eq!(r.route("x", "/api/v1/users"), Some(1));
        assert_eq!(r.route("x", "/api/users"), Some(2));
        assert_eq!(r.route("x", "/other"), Some(0));
    }

    #[test]
    fn exact_host_beats_any_host_and_ignores_port_and_case() {
        let r = router(&[("", "/"), ("api.example.com", "/")]);
        assert_eq!(r.route("API.example.com:8443", "/x"), Some(1));
        assert_eq!(r.route("other.example.com", "/x"), Some(0));
    }

    #[test]
    fn host_without_matching_prefix_falls_back_to_any_host() {
        let r = router(&[("a.test", "/admin/"), ("", "/")]);
        assert_eq!(r.route("a.test", "/public"), Some(1));
    }

    #[test]
    fn no_route_is_none() {
        let r = router(&[("", "/api/")]);
        assert_eq!(r.route("x", "/"), None);
    }

    #[test]
    fn ipv6_host_keeps_brackets() {
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("h:1"), "h");
    }
}
