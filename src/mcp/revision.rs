//! The MCP protocol revisions the endpoint speaks, all reached through the `initialize`
//! handshake: 2025-11-25 (the newest handshake revision), 2025-06-18 and 2025-03-26. The
//! stateless 2026-07-28 revision (no `initialize`, a per-request envelope, `server/discover`)
//! is not served yet: `server/discover` is answered "method not found", which is how
//! clients in auto mode recognise a handshake-era server and fall back to `initialize`.

/// A protocol revision the gateway negotiates.
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
    }
}
