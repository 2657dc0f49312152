//! The names clients see: `<prefix>__<name>` for tools and prompts, and a reversible scheme
//! for resource URIs.
//!
//! Prefixes hold no `_` (`check` refuses one), so a prefixed name splits at its first `__`
//! whatever the upstream name holds. A resource URI `u` of the server with prefix `p` is
//! shown as `mcpgw://p/u` (the original URI verbatim after the first `/` of the path), and
//! `resources/read` of such a URI goes to `p`'s server with `u`.

use crate::config::mcp::PREFIX_SEPARATOR;

/// The scheme of resource URIs the gateway shows.
pub const RESOURCE_SCHEME: &str = "mcpgw://";

/// `<prefix>__<name>`.
pub fn prefixed(prefix: &str, name: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 2 + name.len());
    out.push_str(prefix);
    out.push_str(PREFIX_SEPARATOR);
    out.push_str(name);
    out
}

/// `(prefix, name)` of a name clients sent; `None` when it has no prefix.
pub fn split(shown: &str) -> Option<(&str, &str)> {
    let (prefix, name) = shown.split_once(PREFIX_SEPARATOR)?;
    (!prefix.is_empty() && !name.is_empty()).then_some((prefix, name))
}

/// The URI clients see for `uri` of the server with `prefix`.
pub fn resource_uri(prefix: &str, uri: &str) -> String {
    format!("{RESOURCE_SCHEME}{prefix}/{uri}")
}

/// `(prefix, upstream URI)` of a resource URI clients sent.
pub fn split_resource_uri(shown: &str) -> Option<(&str, &str)> {
    let rest = shown.strip_prefix(RESOURCE_SCHEME)?;
    let (prefix, uri) = rest.split_once('/')?;
    (!prefix.is_empty() && !uri.is_empty()).then_some((prefix, uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_split_at_the_first_separator() {
        assert_eq!(prefixed("gh", "search"), "gh__search");
        assert_eq!(split("gh__search__issues"), Some(("gh", "search__issues")));
        assert_eq!(split("gh_search"), None);
        assert_eq!(split("__x"), None);
        assert_eq!(split("gh__"), None);
    }

    #[test]
    fn resource_uris_round_trip() {
        for uri in ["note://a/hello", "file:///etc/x?y=1", "https://h/p#f"] {
            let shown = resource_uri("fs", uri);
            assert_eq!(split_resource_uri(&shown), Some(("fs", uri)));
        }
        assert_eq!(split_resource_uri("note://a/hello"), None);
    }
}
