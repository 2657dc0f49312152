//! Credentials the gateway obtains itself, for upstreams and providers that take no static
//! key (README, "Credentials the gateway obtains"): tokens fetched from identity providers
//! and refreshed before they expire, so that nothing long-lived is handed to clients.
//!
//! - [`http`]: the blocking HTTP client of background threads (also the JWKS fetcher's).
//! - [`source`]: a credential kept fresh by its own thread and read lock-free on the hot path.
//! - [`oauth2`]: OAuth2 client credentials; [`entra`]: the same grant at Entra ID, for
//!   `azure_openai` providers.
//! - [`google`]: Google service accounts, the OAuth 2.0 JWT-bearer grant (RFC 7523): the key
//!   file, the signed assertion, the token request and the token endpoint's answer;
//!   [`google_source`]: those tokens kept fresh for `vertex` providers.
//! - [`sts`]: AWS STS `AssumeRole`, temporary credentials for SigV4 signing (Bedrock).
//! - [`sigv4`]: AWS Signature Version 4 request signing (Bedrock, STS), with the signing key
//!   derived once per day and cached.
//! - [`eventstream`]: the AWS event-stream binary framing (`application/vnd.amazon.eventstream`)
//!   that Bedrock's streaming answers use, decoded incrementally as bytes arrive.
//!
//! Static credentials are the upstream's injected header ([`crate::upstream::InjectedCredential`]),
//! read from a live secret; static AWS keys are a source that never expires
//! ([`source::CredentialSource::fixed`]).

pub mod entra;
pub mod eventstream;
pub mod google;
pub mod google_source;
pub mod http;
pub mod oauth2;
pub mod sigv4;
pub mod source;
pub mod sts;
