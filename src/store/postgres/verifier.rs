//! The pepper verifier. The pepper itself never reaches the database (a stolen dump without
//! it gives nothing to test guesses against); what is stored is HMAC-SHA256(pepper, a fixed
//! label), which tells a node whether its pepper is the one the stored hashes were made with
//! and reveals nothing of the pepper.

use ::postgres::Client;
use subtle::ConstantTimeEq;

use super::error::{PgError, PgErrorKind};
use crate::store::{Pepper, StoreError};

/// The message whose HMAC under the pepper is the verifier. Fixed forever: changing it makes
/// every existing store refuse every node.
const LABEL: &[u8] = b"credentialflow pepper verifier v1";

/// The `store_meta` row holding the verifier.
const ROW: &str = "pepper_verifier";

/// The verifier of `pepper`.
pub(crate) fn verifier(pepper: &Pepper) -> [u8; 32] {
    pepper.hash(LABEL)
}

/// Stores `pepper`'s verifier if the store has none yet (the first node to open it), then
/// checks `pepper` against the stored one.
pub(crate) fn check(client: &mut Client, pepper: &Pepper) -> Result<(), StoreError> {
    let ours = verifier(pepper);
    // ON CONFLICT DO NOTHING: two first nodes racing leave exactly one verifier, and the
    // loser then checks against the winner's like any later node.
    client.execute(
        "INSERT INTO store_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        &[&ROW, &&ours[..]],
    )?;
    let stored: Vec<u8> = client
        .query_one("SELECT value FROM store_meta WHERE name = $1", &[&ROW])?
        .get(0);
    if !bool::from(stored.as_slice().ct_eq(&ours[..])) {
        return Err(PgError::new(
            PgErrorKind::PepperMismatch,
            "this node's pepper is not the one the store's keys were hashed under; every \
             node of a fleet must share one [store] pepper",
        )
        .into());
    }
    Ok(())
}
