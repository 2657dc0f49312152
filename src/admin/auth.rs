//! The admin token check: `Authorization: Bearer <admin_token>` (RFC 6750 §2.1), compared in
//! constant time so response timing does not reveal how much of a guess was right.

use subtle::ConstantTimeEq;

/// Whether `a` and `b` are equal, in time that depends only on their lengths, never on where
/// they first differ. (Unequal lengths answer `false` at once: the length of the admin token
/// is not what protects it.)
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The token of an `Authorization` header value using the Bearer scheme. The scheme name is
/// case-insensitive (RFC 9110 §11.1); one or more spaces separate it from the token.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim_matches(' ');
    (!token.is_empty()).then_some(token)
}

/// Whether a request with this `Authorization` header may use `/admin/*`. With no token
/// configured (`None`), or an empty one, nothing is authorized: an empty token would
/// otherwise let `Bearer ` with nothing after it in.
pub fn is_authorized(configured: Option<&str>, authorization: Option<&str>) -> bool {
    let Some(expected) = configured.filter(|t| !t.is_empty()) else {
        return false;
    };
    let Some(presented) = authorization.and_then(bearer_token) else {
        return false;
    };
    constant_time_eq(presented.as_bytes(), expected.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_bytes_compare_equal() {
        assert!(constant_time_eq(b"s3cret-token", b"s3cret-token"));
    }

    #[test]
    fn bytes_differing_anywhere_compare_unequal() {
        assert!(!constant_time_eq(b"s3cret-token", b"s3cret-tokeN"));
        assert!(!constant_time_eq(b"s3cret-token", b"X3cret-token"));
    }

    #[test]
    fn different_lengths_compare_unequal() {
        assert!(!constant_time_eq(b"s3cret", b"s3cret-token"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
    }

    #[test]
    fn other_schemes_carry_no_bearer_token() {
        assert_eq!(bearer_token("Basic YWJjOmRlZg=="), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer   "), None);
    }

    #[test]
    fn right_token_is_authorized() {
        assert!(is_authorized(Some("t0ken"), Some("Bearer t0ken")));
    }

    #[test]
    fn wrong_or_missing_token_is_not_authorized() {
        assert!(!is_authorized(Some("t0ken"), Some("Bearer t0kem")));
        assert!(!is_authorized(Some("t0ken"), None));
        assert!(!is_authorized(Some("t0ken"), Some("t0ken")));
    }

    #[test]
    fn nothing_is_authorized_without_a_configured_token() {
        assert!(!is_authorized(None, Some("Bearer anything")));
        assert!(!is_authorized(Some(""), Some("Bearer ")));
    }
}
