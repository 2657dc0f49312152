//! Credentials the gateway obtains itself for upstreams and providers (the contract's
//! "Upstream and provider identities"): tokens fetched from identity providers and refreshed
//! before they expire, so that nothing long-lived is handed to clients.
//!
//! - `google`: Google service accounts, the OAuth 2.0 JWT-bearer grant (RFC 7523): the key
//!   file, the signed assertion, the token request and the token endpoint's answer.

pub mod google;
