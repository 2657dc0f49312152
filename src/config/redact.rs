//! URLs and `host:port` targets as error messages may show them: the parts that can carry a
//! secret (user info, query, fragment) replaced by `***`, so a refused setting can be named
//! without leaking what it was refused for.

/// What every config error about credentials written into a URL says.
pub const CREDENTIALS_IN_URL: &str = "credentials in URLs are not allowed; use api_key/credential";

/// `url` (or a bare `host:port`) with user info, query and fragment replaced by `***`:
/// `http://user:pw@host/p?key=k` shows as `http://***@host/p?***`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    // Everything up to the last `@` goes, wherever it stands (see `has_userinfo`).
    let (hidden, rest) = match rest.rfind('@') {
        Some(at) => ("***@", &rest[at + 1..]),
        None => ("", rest),
    };
    // The path is kept: without it the message could not say which URL is meant; a path is
    // where an endpoint lives, not where a key goes (that is api_key/credential).
    let mut shown = format!("{scheme}{hidden}");
    match rest.find(['?', '#']) {
        Some(at) => {
            shown.push_str(&rest[..=at]);
            shown.push_str("***");
        }
        None => shown.push_str(rest),
    }
    shown
}

/// Whether `url` (or a bare `host:port`) may carry user info: any `@` counts, not only one
/// inside the authority, because a password written with an unescaped `/`, `?` or `#`
/// would end the authority early and a narrower test would let it through (and print it).
pub fn has_userinfo(url: &str) -> bool {
    url.contains('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_query_and_fragment_are_hidden() {
        assert_eq!(
            redact_url("http://user:PW@host:8080/v1?key=SECRET#frag"),
            "http://***@host:8080/v1?***"
        );
        assert_eq!(redact_url("https://h/p#tok=SECRET"), "https://h/p#***");
        assert_eq!(redact_url("user:PW@host:443"), "***@host:443");
    }

    #[test]
    fn a_url_without_secrets_is_shown_as_it_is() {
        assert_eq!(
            redact_url("https://api.openai.com/v1"),
            "https://api.openai.com/v1"
        );
        assert_eq!(redact_url("[::1]:8080"), "[::1]:8080");
    }

    #[test]
    fn a_password_with_unescaped_delimiters_is_still_hidden() {
        assert!(has_userinfo("http://u:pa/ss@h"));
        assert_eq!(redact_url("http://u:pa/ss?x@h:1/p"), "http://***@h:1/p");
        assert_eq!(redact_url("http://u:p#w@h?k=v"), "http://***@h?***");
    }
}
