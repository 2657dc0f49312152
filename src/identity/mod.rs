//! Credentials the gateway obtains itself for upstreams and providers (the contract's
//! "Upstream and provider identities"): tokens fetched from identity providers and refreshed
//! before they expire, so that nothing long-lived is handed to clients.
//!
//! - `google`: Google service accounts, the OAuth 2.0 JWT-bearer grant (RFC 7523): the key
//!   file, the signed assertion, the token request and the token endpoint's answer.
//! - `sigv4`: AWS Signature Version 4 request signing (Bedrock, STS), with the signing key
//!   derived once per day and cached.
//! - `eventstream`: the AWS event-stream binary framing (`application/vnd.amazon.eventstream`)
//!   that Bedrock's streaming answers use, decoded incrementally as bytes arrive.
//!
//! None is wired into a provider yet: they are the building blocks the `vertex` and `bedrock`
//! providers and the STS credential source are built on.

pub mod eventstream;
pub mod google;
pub mod sigv4;
