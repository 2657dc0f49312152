//! `[store]`: where keys, teams, the audit log and the usage ledger live. SQLite in
//! `server.data_dir` (one host, the default) or PostgreSQL shared by a fleet
//! (README, "Fleet").
//!
//! This module also gives the store commands (`keys`, `usage`, `audit`) their narrow view
//! of a config file, [`StoreSettings`]: `data_dir` and `[store]` only, so an operator can
//! work on the store without the gateway's other secrets (see [`super::load_store`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::secret::{self, SecretRef};

/// Longest `node` name: it is stored with every heartbeat and shown in `GET /admin/nodes`.
pub const MAX_NODE_LEN: usize = 64;

/// Longest `url` accepted, in bytes (a connection URL is far shorter; this only bounds what
/// an environment variable or file can make the gateway hold and parse).
pub const MAX_URL_BYTES: usize = 4096;

/// The schemes a PostgreSQL connection URL may have (libpq accepts both).
pub const POSTGRES_SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// Which store the gateway and the store commands use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// The embedded store in `server.data_dir`.
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by every node of a fleet.
    Postgres,
}

/// `[store]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite` (default) or `postgres`.
    #[serde(default)]
    pub backend: StoreBackend,
    /// PostgreSQL connection URL (`postgres://user:password@host:port/db`); required for
    /// `postgres`, ignored for `sqlite`. A secret: it usually carries a password.
    #[serde(default, deserialize_with = "secret::deserialize_optional")]
    pub url: Option<SecretRef>,
    /// The HMAC pepper every node of a fleet shares, as 64 hex characters (32 random bytes,
    /// the format of the pepper file SQLite keeps in `data_dir`, so a single host's keys stay
    /// valid when its store is migrated); required for `postgres`. Never stored in the
    /// database.
    #[serde(default, deserialize_with = "secret::deserialize_optional")]
    pub pepper: Option<SecretRef>,
    /// This gateway's name in the fleet; `""` in the file means the host name (filled in by
    /// the loader, see [`host_name`]).
    #[serde(default)]
    pub node: String,
}

impl StoreConfig {
    /// The secret references the gateway uses, with their key paths: `url` and `pepper` for
    /// PostgreSQL, none for SQLite (which ignores them, so they need not resolve).
    pub fn secrets(&self) -> Vec<(String, &SecretRef)> {
        if self.backend != StoreBackend::Postgres {
            return Vec::new();
        }
        [("store.url", &self.url), ("store.pepper", &self.pepper)]
            .into_iter()
            .filter_map(|(path, secret)| secret.as_ref().map(|s| (path.to_string(), s)))
            .collect()
    }

    /// Makes relative `file:` references relative to `base_dir` (the config file's
    /// directory), like every other secret.
    pub(crate) fn anchor_secrets(&mut self, base_dir: &std::path::Path) {
        for secret in [&mut self.url, &mut self.pepper].into_iter().flatten() {
            secret.anchor(base_dir);
        }
    }

    /// This gateway's node name: `node`, or the host name when `node` is empty (`None`
    /// when the host name cannot be read).
    pub fn node_name(&self) -> Option<String> {
        if self.node.is_empty() {
            host_name()
        } else {
            Some(self.node.clone())
        }
    }

    /// Fills `node` with the host name when the file leaves it out, so every reader of a
    /// loaded config sees the name in use.
    pub(crate) fn fill_node(&mut self) {
        self.node = self.node_name().unwrap_or_default();
    }
}

/// The host name (`/proc/sys/kernel/hostname`, else `gethostname(2)`), or `None` when
/// neither gives a non-empty UTF-8 name.
pub fn host_name() -> Option<String> {
    let from_proc = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty());
    from_proc.or_else(|| {
        // 256 holds any host name (POSIX HOST_NAME_MAX is at most 255).
        let mut buffer = [0u8; 256];
        // SAFETY: the pointer and length describe `buffer`, which outlives the call;
        // gethostname writes at most `len` bytes into it.
        let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
        if rc != 0 {
            return None;
        }
        let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
        std::str::from_utf8(&buffer[..end])
            .ok()
            .map(str::to_string)
            .filter(|name| !name.is_empty())
    })
}

/// Whether `node` is a usable node name: 1 to [`MAX_NODE_LEN`] letters, digits, `.`, `_`
/// or `-` (what a host name is made of), so it can be logged and shown as it is.
pub fn is_node_name(node: &str) -> bool {
    (1..=MAX_NODE_LEN).contains(&node.len())
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What the store commands read from a config file: `server.data_dir` (resolved against
/// the file's directory) and `[store]`, checked, its secret references known to resolve.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The embedded store's directory (SQLite) and the journal's (PostgreSQL).
    pub data_dir: PathBuf,
    /// `[store]`, with `node` filled in.
    pub store: StoreConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_section_is_sqlite_without_secrets() {
        let store = StoreConfig::default();
        assert_eq!(store.backend, StoreBackend::Sqlite);
        assert!(store.secrets().is_empty());
    }

    #[test]
    fn postgres_secrets_are_url_and_pepper() {
        let store = StoreConfig {
            backend: StoreBackend::Postgres,
            url: Some(SecretRef::Env("U".into())),
            pepper: Some(SecretRef::Env("P".into())),
            node: String::new(),
        };
        let paths: Vec<String> = store.secrets().into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["store.url", "store.pepper"]);
    }

    #[test]
    fn sqlite_ignores_url_and_pepper() {
        let store = StoreConfig {
            url: Some(SecretRef::Env("U".into())),
            pepper: Some(SecretRef::Env("P".into())),
            ..StoreConfig::default()
        };
        assert!(store.secrets().is_empty());
    }

    #[test]
    fn node_defaults_to_a_valid_host_name() {
        let mut store = StoreConfig::default();
        store.fill_node();
        assert_eq!(Some(store.node.clone()), host_name());
        assert!(is_node_name(&store.node), "{:?}", store.node);
    }

    #[test]
    fn a_written_node_is_kept() {
        let mut store = StoreConfig {
            node: "edge-1".into(),
            ..StoreConfig::default()
        };
        store.fill_node();
        assert_eq!(store.node, "edge-1");
    }

    #[test]
    fn node_names_are_bounded_and_plain() {
        assert!(is_node_name("edge-1.eu_west"));
        assert!(is_node_name(&"n".repeat(MAX_NODE_LEN)));
        for bad in [
            "",
            "edge 1",
            "edge\n1",
            "ünïcode",
            &"n".repeat(MAX_NODE_LEN + 1),
        ] {
            assert!(!is_node_name(bad), "{bad:?}");
        }
    }
}
