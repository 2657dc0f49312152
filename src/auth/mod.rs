//! Authentication and edge authorization: who is calling, and may they.
//!
//! - [`CredentialCache`]: the lock-free in-memory replica of the key table that every worker
//!   checks presented keys against; admin API writes are applied to it before they are
//!   answered, and a watcher thread brings in other processes' changes every 100 ms.
//! - [`presented_key`]: the client's credential from `Authorization: Bearer` or `x-api-key`.
//! - [`Consumer`]: the identity a request runs as once authenticated.
//! - [`IpRules`], [`key_permits_route`], [`key_permits_model`], [`has_scopes`]: the checks
//!   that turn into 403 `permission_error`.
//! - [`glob_match`]: the `*` globs of key route and model lists; [`tool_glob_match`] adds `?`
//!   for `mcp_tools`.
//! - [`jwt`]: JWT verification for `auth = "jwt"` routes, keys from PEM or a JWKS URL.

mod cache;
mod consumer;
mod credential;
mod glob;
mod ip;
pub mod jwt;
mod permit;
#[doc(hidden)]
pub mod test_support;

pub use cache::{CredentialCache, POLL_INTERVAL};
pub use consumer::Consumer;
pub use credential::presented_key;
pub use glob::{glob_match, tool_glob_match};
pub use ip::IpRules;
pub use permit::{has_scopes, key_permits_model, key_permits_route};
