//! Signatures and receiver ids.
//!
//! The signature is `sha256=` and the lowercase hex HMAC-SHA256 of the raw body under the
//! receiver's secret. The body carries `timestamp` (unix seconds of this attempt), also
//! sent as `x-credentialflow-timestamp`: being inside the signed bytes, it cannot be changed
//! without breaking the signature, so a receiver that checks it is recent (and that the
//! header agrees) refuses a replayed delivery; the event `id` lets it ignore a repeat.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// `sha256=<hex HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// A receiver's id in the queue (`delivered_to`, `target`): the first 16 hex characters of
/// SHA-256 of its URL. Stable across restarts and nodes with the same config, and no URL
/// (which may carry a token in its path) is stored.
pub fn target_id(url: &str) -> String {
    hex(&Sha256::digest(url.as_bytes())[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc_4231_test_case_2() {
        // RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn target_ids_differ_by_url_and_hide_it() {
        let a = target_id("https://a.example/hook?token=T");
        assert_eq!(a.len(), 16);
        assert_ne!(a, target_id("https://b.example/hook"));
        assert!(!a.contains("token"));
    }
}
