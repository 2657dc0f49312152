//! Gateway session ids (`Mcp-Session-Id`): stateless and signed, so any worker of any
//! reload (and any node sharing the store's pepper) accepts them without a session table.
//!
//! An id is `<revision>.<issued_ms>.<consumer>.<mac>`: the index of the negotiated protocol
//! revision, when it was issued, a tag of the consumer it was issued to (a hash of the key id,
//! so a session cannot be taken over by another key), and an HMAC-SHA256 over the three under
//! a key derived from the store's pepper. Ids live [`MAX_AGE_MS`]; `DELETE` ends one early by
//! remembering it (bounded, until it would have expired anyway).

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::revision::Revision;

/// How long a session id is accepted after it was issued.
pub const MAX_AGE_MS: i64 = 24 * 3600 * 1000;

/// Most ended sessions remembered; beyond it the oldest are forgotten early (their ids still
/// expire at [`MAX_AGE_MS`]).
pub const MAX_ENDED: usize = 100_000;

/// What a valid session id says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub revision: Revision,
    pub issued_ms: i64,
}

/// Issues and checks session ids under one key.
pub struct SessionKeys {
    key: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

/// The tag of a consumer (its key id, or `-` when anonymous) in a session id.
fn consumer_tag(consumer: Option<&str>) -> String {
    let digest = Sha256::digest(consumer.unwrap_or("-").as_bytes());
    hex(&digest[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl SessionKeys {
    /// Keys derived from `key` (32 secret bytes).
    pub fn new(key: [u8; 32]) -> SessionKeys {
        SessionKeys { key }
    }

    fn mac(&self, signed: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        mac.update(signed.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// A new session id for `consumer` at `revision`.
    pub fn issue(&self, revision: Revision, consumer: Option<&str>, now_ms: i64) -> String {
        let signed = format!("{}.{now_ms}.{}", revision.index(), consumer_tag(consumer));
        let mac = self.mac(&signed);
        format!("{signed}.{mac}")
    }

    /// The session `id` names, if it is one this key issued to `consumer`, not expired and not
    /// ended.
    pub fn check(&self, id: &str, consumer: Option<&str>, now_ms: i64) -> Option<Session> {
        if id.len() > 200 {
            return None;
        }
        let (signed, mac) = id.rsplit_once('.')?;
        let expected = self.mac(signed);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            expected.as_bytes(),
            mac.as_bytes(),
        )) {
            return None;
        }
        let mut parts = signed.split('.');
        let revision = Revision::from_index(parts.next()?.parse().ok()?)?;
        let issued_ms: i64 = parts.next()?.parse().ok()?;
        if parts.next()? != consumer_tag(consumer) || parts.next().is_some() {
            return None;
        }
        if now_ms < issued_ms || now_ms - issued_ms > MAX_AGE_MS || is_ended(id) {
            return None;
        }
        Some(Session {
            revision,
            issued_ms,
        })
    }
}

/// Sessions ended by `DELETE`, with when each would have expired. Process-wide, so a reload
/// keeps them.
static ENDED: Mutex<Option<HashMap<String, i64>>> = Mutex::new(None);

/// Remembers that `id` (already checked) was ended.
pub fn end(id: &str, session: Session, now_ms: i64) {
    let mut ended = ENDED.lock();
    let ended = ended.get_or_insert_with(HashMap::new);
    if ended.len() >= MAX_ENDED {
        ended.retain(|_, expires| *expires > now_ms);
        if ended.len() >= MAX_ENDED {
            // Still full of live entries: forget the ones closest to expiring anyway.
            let mut expiries: Vec<i64> = ended.values().copied().collect();
            expiries.sort_unstable();
            let cut = expiries[expiries.len() / 2];
            ended.retain(|_, expires| *expires > cut);
        }
    }
    ended.insert(id.to_string(), session.issued_ms + MAX_AGE_MS);
}

fn is_ended(id: &str) -> bool {
    ENDED.lock().as_ref().is_some_and(|e| e.contains_key(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_id_checks_for_its_consumer_only() {
        let keys = SessionKeys::new([7; 32]);
        let id = keys.issue(Revision::V2025_06_18, Some("key_a"), 1_000);
        let session = keys.check(&id, Some("key_a"), 2_000).expect("valid");
        assert_eq!(session.revision, Revision::V2025_06_18);
        assert_eq!(keys.check(&id, Some("key_b"), 2_000), None, "another key");
        assert_eq!(keys.check(&id, None, 2_000), None, "anonymous");
    }

    #[test]
    fn forged_expired_and_foreign_ids_are_refused() {
        let keys = SessionKeys::new([7; 32]);
        let id = keys.issue(Revision::V2025_11_25, Some("k"), 1_000);
        let other = SessionKeys::new([8; 32]);
        assert_eq!(other.check(&id, Some("k"), 2_000), None, "another key's id");
        let tampered = id.replacen("2.", "0.", 1);
        assert_eq!(keys.check(&tampered, Some("k"), 2_000), None);
        assert_eq!(keys.check(&id, Some("k"), 1_000 + MAX_AGE_MS + 1), None);
        assert_eq!(keys.check("garbage", Some("k"), 2_000), None);
    }

    #[test]
    fn an_ended_session_is_refused() {
        let keys = SessionKeys::new([9; 32]);
        let id = keys.issue(Revision::V2025_11_25, Some("ended"), 5_000);
        let session = keys.check(&id, Some("ended"), 5_001).unwrap();
        end(&id, session, 5_001);
        assert_eq!(keys.check(&id, Some("ended"), 5_002), None);
    }
}
