//! The MCP protocol revisions the endpoint speaks: the stateless 2026-07-28 ([`STATELESS`]:
//! no `initialize` and no session, every request carries its revision in `params._meta` and
//! `MCP-Protocol-Version`, `server/discover` describes the gateway), and the two handshake
//! revisions before it, 2025-11-25 and 2025-06-18, reached through `initialize`. 2025-03-26
//! is kept too: it differs only by batches, which the endpoint already bounds.

/// The stateless revision: no handshake, no session, a per-request envelope.
pub const STATELESS: &str = "2026-07-28";

/// Where a stateless request's `params._meta` names its revision.
pub const PROTOCOL_VERSION_META_KEY: &str = "io.modelcontextprotocol/protocolVersion";

/// Where a stateless request's `params._meta` carries the client's capabilities.
pub const CLIENT_CAPABILITIES_META_KEY: &str = "io.modelcontextprotocol/clientCapabilities";

/// Where a `server/discover` result's `_meta` names the server.
pub const SERVER_INFO_META_KEY: &str = "io.modelcontextprotocol/serverInfo";

/// Every revision served, oldest first, as `server/discover` and a -32022 error list them.
pub fn all_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = SUPPORTED.iter().rev().map(|r| r.as_str()).collect();
    names.push(STATELESS);
    names
}

/// A handshake protocol revision the gateway negotiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revision {
    /// Allows JSON-RPC batches; no `MCP-Protocol-Version` header yet.
    V2025_03_26,
    V2025_06_18,
    V2025_11_25,
}

/// Newest first: what `initialize` answers when the client asks for one not listed.
pub const SUPPORTED: [Revision; 3] = [
    Revision::V2025_11_25,
    Revision::V2025_06_18,
    Revision::V2025_03_26,
];

impl Revision {
    /// The revision's name, as in `protocolVersion` and `MCP-Protocol-Version`.
    pub fn as_str(self) -> &'static str {
        match self {
            Revision::V2025_03_26 => "2025-03-26",
            Revision::V2025_06_18 => "2025-06-18",
            Revision::V2025_11_25 => "2025-11-25",
        }
    }

    /// The revision named `name`, if supported.
    pub fn parse(name: &str) -> Option<Revision> {
        SUPPORTED.into_iter().find(|r| r.as_str() == name)
    }

    /// What `initialize` settles on when the client asks for `requested`: the same when
    /// supported, else the newest (the client then decides whether it can go on).
    pub fn negotiate(requested: &str) -> Revision {
        Revision::parse(requested).unwrap_or(SUPPORTED[0])
    }

    /// Whether JSON-RPC batches are allowed (2025-03-26 only; later revisions removed them).
    pub fn allows_batches(self) -> bool {
        self == Revision::V2025_03_26
    }

    pub(super) fn index(self) -> u8 {
        match self {
            Revision::V2025_03_26 => 0,
            Revision::V2025_06_18 => 1,
            Revision::V2025_11_25 => 2,
        }
    }

    pub(super) fn from_index(i: u8) -> Option<Revision> {
        SUPPORTED.into_iter().find(|r| r.index() == i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_keeps_a_supported_revision_and_counters_others_with_the_newest() {
        assert_eq!(Revision::negotiate("2025-03-26"), Revision::V2025_03_26);
        assert_eq!(Revision::negotiate("2024-11-05"), Revision::V2025_11_25);
        assert_eq!(Revision::negotiate("2026-07-28"), Revision::V2025_11_25);
        assert!(Revision::V2025_03_26.allows_batches());
        assert!(!Revision::V2025_11_25.allows_batches());
        assert_eq!(
            all_names(),
            ["2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"]
        );
        // The stateless revision is never reached through `initialize`.
        assert_eq!(Revision::parse(STATELESS), None);
    }
}
