//! [`PgChangeListener`]: a connection of its own that `LISTEN`s on [`super::CHANNEL`], so a
//! watcher thread can sleep until a key changes anywhere in the fleet and then read
//! `changes_since` at once instead of polling.

use std::time::Duration;

use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::Client;

use super::connect::connect;
use super::error::{PgError, PgErrorKind};
use super::CHANNEL;
use crate::store::StoreError;

/// Waits for key-change notifications on its own connection.
pub struct PgChangeListener {
    client: Client,
}

impl std::fmt::Debug for PgChangeListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgChangeListener").finish_non_exhaustive()
    }
}

impl PgChangeListener {
    /// Connects to `url` and starts listening. Errors never hold the URL's password.
    pub fn connect(url: &str) -> Result<PgChangeListener, StoreError> {
        let mut client = connect(url)?;
        client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
        Ok(PgChangeListener { client })
    }

    /// Blocks until a change notification arrives (`Ok(true)`) or `timeout` passes without
    /// one (`Ok(false)`). Notifications already received with it are consumed with it, so
    /// a burst of writes wakes the caller once or a few times, not once per write. An error means the connection is gone: the caller reconnects
    /// and reads `changes_since` to catch up on what it missed meanwhile.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, StoreError> {
        {
            let mut notifications = self.client.notifications();
            if notifications.timeout_iter(timeout).next()?.is_some() {
                while notifications.iter().next()?.is_some() {}
                return Ok(true);
            }
        }
        // `None` is both "timed out" and "the server hung up".
        if self.client.is_closed() {
            return Err(PgError::new(
                PgErrorKind::Unreachable,
                "the change listener's connection closed",
            )
            .into());
        }
        Ok(false)
    }
}
