//! Credentials the gateway obtains itself, for upstreams and providers that take no static
//! key (README, "Credentials the gateway obtains").
//!
//! - [`http`]: the blocking HTTP client of background threads (also the JWKS fetcher's).
//! - [`source`]: a credential kept fresh by its own thread and read lock-free on the hot path.
//! - [`oauth2`]: OAuth2 client credentials; [`entra`]: the same grant at Entra ID.
//!
//! Static credentials are the upstream's injected header ([`crate::upstream::InjectedCredential`]),
//! read from a live secret.

pub mod entra;
pub mod http;
pub mod oauth2;
pub mod source;
