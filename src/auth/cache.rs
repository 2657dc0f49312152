//! The credential cache: a complete in-memory replica of the key table, read without locks.
//!
//! Workers look keys up here on every request; nothing on that path touches SQLite, takes a
//! lock or allocates. The indexes are `papaya` hash maps: readers only pin an epoch
//! (a thread-local counter) and follow atomic pointers, while a writer inserts and removes
//! entries one at a time, so a change costs O(1) however many keys the table holds, with no
//! rebuild and no swap of the whole table.
//!
//! A committed change enters the cache one way, [`CredentialCache::apply_change`], from two
//! callers:
//! - the admin API, right after its store commit and before it answers, so a key created,
//!   rotated, revoked or changed through a node's admin API is in force on that node's very
//!   next request;
//! - the watcher thread, which reads the store's change sequence every [`POLL_INTERVAL`], or
//!   at once when the store's backend pushes a change notification
//!   ([`KeyBackend::wait_for_change`]), for changes made by other processes writing the same
//!   store (the CLI, other nodes). With notifications (PostgreSQL's `NOTIFY`) it still reads
//!   every [`SAFETY_NET_INTERVAL`], so a lost notification delays a change by at most that:
//!   the reconciliation bound.
//!
//! When the store cannot be reached the replica stays as it is: known keys keep working and
//! expiry is still enforced, since [`KeyRecord::is_active`] is checked on every lookup. The
//! watcher marks the store down in its [`StoreHealth`], retries with a backoff from
//! [`RETRY_MIN`] doubling to [`RETRY_MAX`], and on reconnect reloads every key
//! ([`CredentialCache::reconcile`]), so changes made meanwhile elsewhere (revocations
//! included) take effect then.
//!
//! Both may deliver the same row, and in either order, so a change is applied only if its
//! store sequence is newer than the one the cache holds for that key: a duplicate is a no-op
//! and an older read never replaces a newer record. Expiry needs no writer:
//! [`KeyRecord::is_active`] is checked against the request's clock.
//!
//! When each key was last used is kept beside it in memory ([`LastUsed`]: one relaxed load
//! per request, a store only when the second changed) and written to the store by the
//! watcher every [`LAST_USED_INTERVAL`], one write per key used rather than one per request.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use subtle::{Choice, ConstantTimeEq};

use crate::clock::unix_now_ms;
use crate::config::StoreSettings;
use crate::store::{self, KeyBackend, KeyRecord, Pepper, StoreHealth};

/// How often the watcher asks the store for changes when the store has no change
/// notifications. Bounds how stale the cache can be.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How often the watcher reads the change feed of a store that notifies changes, whether
/// or not a notification came: a lost notification delays a change (a revocation) on this
/// node by at most this long.
pub const SAFETY_NET_INTERVAL: Duration = Duration::from_secs(1);

/// The first wait before retrying an unreachable store; it doubles on every failure.
pub const RETRY_MIN: Duration = Duration::from_millis(100);
/// The longest wait between retries of an unreachable store.
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// How often the watcher writes keys' last use to the store: the most a restart (or a crash)
/// can lose of it, and the longest another node's admin API shows it late.
pub const LAST_USED_INTERVAL: Duration = Duration::from_secs(2);

/// Every key the gateway issues starts with this.
const KEY_PREFIX: &[u8] = b"cf_";
/// Shortest plausible key: the prefix and at least 32 characters of encoded randomness (the
/// gateway issues 32 random bytes, 43 characters in base64url or base62).
const MIN_KEY_LEN: usize = KEY_PREFIX.len() + 32;
/// Longest plausible key; anything longer is refused before it is hashed.
const MAX_KEY_LEN: usize = 256;

/// An HMAC-SHA256 of a presented secret, as the hash index's key.
#[derive(Clone, Copy, PartialEq, Eq)]
struct SecretHash([u8; 32]);

impl Hash for SecretHash {
    /// The HMAC output is already uniformly distributed and unknowable without the pepper, so
    /// its first 8 bytes are a perfect hash: no SipHash pass on the hot path, and no way for a
    /// client to aim collisions at one bucket.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// Passes through the `u64` that [`SecretHash`] writes.
#[derive(Clone, Copy, Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached if something other than `SecretHash` is hashed; fold it in anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

#[derive(Clone, Copy, Default)]
struct BuildPassThroughHasher;

impl BuildHasher for BuildPassThroughHasher {
    type Hasher = PassThroughHasher;

    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

/// Declares an index key that reads its text (`id` or `name`) from the record it indexes, so a
/// million keys do not carry a second copy of every id and name (two million allocations
/// fewer at startup). Lookups by `&str` go through [`papaya::Equivalent`].
macro_rules! record_field_key {
    ($name:ident, $field:ident) => {
        #[derive(Clone)]
        struct $name(Arc<KeyRecord>);

        impl Hash for $name {
            fn hash<H: Hasher>(&self, state: &mut H) {
                // Must hash exactly as `str` does, for lookups by `&str`.
                self.0.$field.as_str().hash(state);
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.0.$field == other.0.$field
            }
        }

        impl Eq for $name {}

        impl papaya::Equivalent<$name> for str {
            fn equivalent(&self, key: &$name) -> bool {
                self == key.0.$field.as_str()
            }
        }
    };
}

record_field_key!(IdKey, id);
record_field_key!(NameKey, name);

/// When a key last authenticated, in unix seconds (0: not since the cache was loaded), and
/// what of it the store already has. Shared by every version of a key's record, so a
/// rotation or an edit keeps it.
#[derive(Default)]
struct LastUsed {
    /// Written by workers: relaxed, since only "about when" matters and a store that loses a
    /// race to a neighbouring second is harmless.
    seen: AtomicI64,
    /// The value last written to the store; only the watcher writes it.
    stored: AtomicI64,
}

impl LastUsed {
    /// Notes a use at `second`: one load, and a store only on the first use of a second.
    #[inline]
    fn touch(&self, second: i64) {
        if self.seen.load(Ordering::Relaxed) < second {
            self.seen.store(second, Ordering::Relaxed);
        }
    }
}

/// What the secret-hash index holds: the key and its last-use cell.
struct HashEntry {
    key: Arc<KeyRecord>,
    used: Arc<LastUsed>,
}

/// A rotated key's previous hash, indexed until its grace period ends.
struct Grace {
    /// Unix milliseconds, like the record's `previous_valid_until_ms`.
    valid_until: i64,
    hash: [u8; 32],
    key_id: String,
}

/// What only a writer touches, behind [`CredentialCache::writer`].
#[derive(Default)]
struct Writer {
    /// Previous hashes still indexed, for the watcher to drop when their grace ends.
    graces: Vec<Grace>,
}

/// The in-memory replica of the key table, shared by every worker (`Arc` in
/// `snapshot::Shared`) and the admin API. Lookups are lock-free; writers (the watcher, admin
/// connection threads) take turns.
pub struct CredentialCache {
    pepper: Pepper,
    /// HMAC of the current secret, and of the previous one while its grace lasts -> key.
    /// Revoked keys are not in this index.
    by_hash: papaya::HashMap<SecretHash, HashEntry, BuildPassThroughHasher>,
    /// Every key, revoked ones included (the record is the map's key), with its last use.
    by_id: papaya::HashMap<IdKey, Arc<LastUsed>>,
    /// Keys that are not revoked, by name (the store keeps names unique among them).
    by_name: papaya::HashMap<NameKey, ()>,
    /// Held for the whole of one change: applying a record reads the entry it replaces and
    /// then edits three indexes, which must not interleave with another writer's change to
    /// the same key. Readers never take it.
    writer: Mutex<Writer>,
    /// Set by [`CredentialCache::stop`]: the watcher exits at its next tick.
    stop: AtomicBool,
    /// Whether the store answered the watcher's (or the admin API's) last call.
    health: Arc<StoreHealth>,
}

impl CredentialCache {
    /// Opens the store `settings` name (an embedded one is created, with its pepper, on first
    /// start), loads every key, and starts the watcher thread that applies later changes
    /// (see [`CredentialCache::watch`]).
    pub fn start(settings: &StoreSettings) -> Result<Arc<CredentialCache>, String> {
        let where_ = settings.data_dir.display();
        let store = store::open(settings)
            .map_err(|e| format!("cannot open the key store in {where_}: {e}"))?;
        CredentialCache::watch(store)
    }

    /// Loads every key from `store` and starts the watcher thread, which owns `store` and
    /// applies later changes whenever [`KeyBackend::wait_for_change`] returns (every
    /// [`POLL_INTERVAL`] without change notifications). The watcher ends when the returned
    /// cache is dropped or [`CredentialCache::stop`] is called.
    pub fn watch(mut store: Box<dyn KeyBackend>) -> Result<Arc<CredentialCache>, String> {
        let records = store
            .changes_since(0)
            .map_err(|e| format!("cannot load keys from the key store: {e}"))?;
        // The sequence to resume from is that of the rows actually read: a change committed
        // after this read has a higher sequence and is picked up by the first poll.
        let last_seq = records.iter().map(|r| r.seq).max().unwrap_or(0);
        // The cache hashes presented secrets under the store's own pepper, so the two agree
        // on every key whichever backend holds them.
        let pepper = store.pepper().clone();
        let cache = Arc::new(CredentialCache::from_records(pepper, records));
        let watcher = Watcher {
            cache: Arc::downgrade(&cache),
            store,
            last_seq,
            retry: None,
            reconcile: false,
            last_used_written: Instant::now(),
        };
        thread::Builder::new()
            .name("cf-key-watcher".into())
            .spawn(move || watcher.run())
            .map_err(|e| format!("cannot start the key watcher thread: {e}"))?;
        Ok(cache)
    }

    /// A cache holding `records` (of several rows of an id, the one with the highest `seq`),
    /// with no store and no watcher: what [`CredentialCache::start`] builds from its first load, and
    /// what tests and benchmarks use to build a large table in memory.
    pub fn from_records(pepper: Pepper, records: Vec<KeyRecord>) -> CredentialCache {
        let capacity = records.len();
        let cache = CredentialCache {
            pepper,
            by_hash: papaya::HashMap::builder()
                .capacity(capacity)
                .hasher(BuildPassThroughHasher)
                .build(),
            by_id: papaya::HashMap::with_capacity(capacity),
            by_name: papaya::HashMap::with_capacity(capacity),
            writer: Mutex::new(Writer::default()),
            stop: AtomicBool::new(false),
            health: Arc::new(StoreHealth::new()),
        };
        let now = unix_now_ms();
        {
            let mut writer = cache.writer.lock();
            for record in records {
                cache.apply(&mut writer, record, now);
            }
        }
        cache
    }

    /// The key whose secret is `presented`, if it is known, not revoked and not expired at
    /// `now_ms` (unix milliseconds: expiry and grace are kept to the millisecond); a rotated
    /// key's previous secret only until its grace ends.
    ///
    /// Anything that does not look like a gateway key (`cf_` prefix, plausible length) is
    /// refused before hashing; otherwise the cost is one HMAC-SHA256, one hash-map probe and
    /// a constant-time compare, with no allocation, so a flood of unknown keys is cheap. A
    /// success notes the key's last use ([`CredentialCache::last_used`]).
    pub fn authenticate_at_ms(&self, presented: &[u8], now_ms: i64) -> Option<Arc<KeyRecord>> {
        if !is_plausible_key(presented) {
            return None;
        }
        let computed = self.pepper.hash(presented);
        let index = self.by_hash.pin();
        let entry = index.get(&SecretHash(computed))?;
        let key = &entry.key;
        // The probe compared the hash with `==`; the compare that decides is constant-time, so
        // response timing says nothing about how much of a guess was right.
        let current = key.hash.ct_eq(&computed);
        let previous = match key.previous_hash {
            Some(previous) => {
                previous.ct_eq(&computed)
                    & Choice::from(u8::from(key.previous_is_valid_at_ms(now_ms)))
            }
            None => Choice::from(0),
        };
        if !bool::from(current | previous) || !key.is_active_at_ms(now_ms) {
            return None;
        }
        entry.used.touch(now_ms.div_euclid(1000));
        Some(Arc::clone(key))
    }

    /// A 32-byte key for `purpose`, derived from the store's pepper (HMAC-SHA256 of the
    /// label): the same on every node sharing the store, unknowable without the pepper, and
    /// unrelated to any key hash (each purpose has its own label).
    pub fn derived_key(&self, purpose: &str) -> [u8; 32] {
        self.pepper
            .hash(format!("credentialflow derived key: {purpose}").as_bytes())
    }

    /// When the key with this id last authenticated on this node since the cache was
    /// loaded, in unix seconds (`None`: not since). The store's `last_used_at` has it across
    /// restarts and nodes, up to [`LAST_USED_INTERVAL`] late.
    pub fn last_used(&self, id: &str) -> Option<i64> {
        let seen = self.by_id.pin().get(id)?.seen.load(Ordering::Relaxed);
        (seen > 0).then_some(seen)
    }

    /// Writes to `store` the last use of every key used since the previous write, one row
    /// per key however many requests it served, and returns how many were written. On an
    /// error nothing is marked written, so the next call tries them again.
    pub fn write_last_used(&self, store: &mut dyn KeyBackend) -> Result<usize, store::StoreError> {
        let pending: Vec<(Arc<LastUsed>, String, i64)> = self
            .by_id
            .pin()
            .iter()
            .filter_map(|(key, used)| {
                let seen = used.seen.load(Ordering::Relaxed);
                (seen > used.stored.load(Ordering::Relaxed))
                    .then(|| (Arc::clone(used), key.0.id.clone(), seen))
            })
            .collect();
        if pending.is_empty() {
            return Ok(0);
        }
        let rows: Vec<(String, i64)> = pending
            .iter()
            .map(|(_, id, seen)| (id.clone(), *seen))
            .collect();
        store.record_last_used(&rows)?;
        for (used, _, seen) in &pending {
            used.stored.store(*seen, Ordering::Relaxed);
        }
        Ok(rows.len())
    }

    /// The key with this id, revoked or expired ones included (callers check
    /// [`KeyRecord::is_active`]).
    pub fn by_id(&self, id: &str) -> Option<Arc<KeyRecord>> {
        self.by_id
            .pin()
            .get_key_value(id)
            .map(|(key, _)| Arc::clone(&key.0))
    }

    /// The non-revoked key with this name (for Lua's `ctx:set_consumer`). Callers check
    /// [`KeyRecord::is_active`] for expiry.
    pub fn by_name(&self, name: &str) -> Option<Arc<KeyRecord>> {
        self.by_name
            .pin()
            .get_key_value(name)
            .map(|(key, ())| Arc::clone(&key.0))
    }

    /// How many keys the cache holds, revoked ones included.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when the cache holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the key store is reachable, as the watcher (or the admin API) last found it:
    /// shared with `/healthz`, `/metrics` and the admin API.
    pub fn store_health(&self) -> &Arc<StoreHealth> {
        &self.health
    }

    /// Replaces the replica with `records`, a full read of the store whose newest row has
    /// sequence `read_seq` or less: rows newer than the held ones are applied, and keys the
    /// store no longer has are dropped. A key held with a sequence above `read_seq` was
    /// committed (and applied by the admin API) after the read, so it is kept as it is.
    /// Returns how many keys the cache holds afterwards.
    pub fn reconcile(&self, records: Vec<KeyRecord>, read_seq: u64) -> usize {
        let now = unix_now_ms();
        let mut writer = self.writer.lock();
        let present: std::collections::HashSet<String> =
            records.iter().map(|r| r.id.clone()).collect();
        for record in records {
            self.apply(&mut writer, record, now);
        }
        let gone: Vec<Arc<KeyRecord>> = self
            .by_id
            .pin()
            .keys()
            .filter(|key| key.0.seq <= read_seq && !present.contains(&key.0.id))
            .map(|key| Arc::clone(&key.0))
            .collect();
        for record in gone {
            self.remove(&record);
        }
        self.len()
    }

    /// Drops every index entry of `record`'s key. The caller holds the writer lock.
    fn remove(&self, record: &KeyRecord) {
        let id = record.id.as_str();
        let hashes = self.by_hash.pin();
        for hash in [Some(record.hash), record.previous_hash]
            .into_iter()
            .flatten()
        {
            let _ = hashes.remove_if(&SecretHash(hash), |_, entry| entry.key.id == id);
        }
        let _ = self
            .by_name
            .pin()
            .remove_if(record.name.as_str(), |key, ()| key.0.id == id);
        self.by_id.pin().remove(id);
    }

    /// Asks the watcher thread to exit at its next tick; the cache keeps serving what it holds.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Applies one committed key row (as the store returned it from a write, or as the
    /// watcher read it): the new or changed record, a rotated key's grace for its previous
    /// secret, a revocation. Every worker sees it on its next lookup.
    ///
    /// Returns false, changing nothing, when the cache already holds this row or a newer one
    /// of the same key (by the store's change sequence): the admin API and the watcher may
    /// both deliver a change, in either order.
    pub fn apply_change(&self, record: KeyRecord) -> bool {
        let mut writer = self.writer.lock();
        self.apply(&mut writer, record, unix_now_ms())
    }

    /// Inserts or replaces one key row, unless the held row of that id is as new or newer,
    /// and drops index entries it no longer owns (a rotated key's old hash, a revoked key's
    /// hashes, a renamed key's old name). New entries go in before stale ones come out, so a
    /// reader never sees a live key missing. The caller holds the writer lock.
    fn apply(&self, writer: &mut Writer, record: KeyRecord, now: i64) -> bool {
        let ids = self.by_id.pin();
        let held = ids
            .get_key_value(record.id.as_str())
            .map(|(key, used)| (Arc::clone(&key.0), Arc::clone(used)));
        if held.as_ref().is_some_and(|(old, _)| old.seq >= record.seq) {
            return false;
        }
        let (old, used) = match held {
            Some((old, used)) => (Some(old), used),
            None => (None, Arc::default()),
        };
        let record = Arc::new(record);
        let id = record.id.as_str();
        ids.insert(IdKey(Arc::clone(&record)), Arc::clone(&used));

        let live = live_hashes(&record, now);
        let hashes = self.by_hash.pin();
        for hash in live.iter().flatten() {
            hashes.insert(
                SecretHash(*hash),
                HashEntry {
                    key: Arc::clone(&record),
                    used: Arc::clone(&used),
                },
            );
        }
        if let (Some(previous), Some(valid_until)) = (live[1], record.previous_valid_until_ms) {
            writer.graces.push(Grace {
                valid_until,
                hash: previous,
                key_id: id.to_owned(),
            });
        }
        if let Some(old) = &old {
            for stale in [Some(old.hash), old.previous_hash].into_iter().flatten() {
                if !live.contains(&Some(stale)) {
                    let _ = hashes.remove_if(&SecretHash(stale), |_, entry| entry.key.id == id);
                }
            }
        }

        let names = self.by_name.pin();
        let revoked = record.revoked_at.is_some();
        if let Some(old) = &old {
            if old.name != record.name || revoked {
                let _ = names.remove_if(old.name.as_str(), |key, ()| key.0.id == id);
            }
        }
        if !revoked {
            names.insert(NameKey(Arc::clone(&record)), ());
        }
        true
    }

    /// Drops previous-secret hashes whose grace ended by `now`. Lookups already refuse
    /// them; this only keeps the index from growing with every rotation.
    fn expire_graces(&self, now: i64) {
        let mut writer = self.writer.lock();
        if writer.graces.is_empty() {
            return;
        }
        let hashes = self.by_hash.pin();
        writer.graces.retain(|grace| {
            if grace.valid_until > now {
                return true;
            }
            // Only if the entry still belongs to that key as a previous secret.
            let _ = hashes.remove_if(&SecretHash(grace.hash), |_, entry| {
                entry.key.id == grace.key_id && entry.key.hash != grace.hash
            });
            false
        });
    }
}

impl fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialCache")
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

/// The hashes under which `record` must be found: none when revoked; the current one; the
/// previous one while its grace lasts.
fn live_hashes(record: &KeyRecord, now: i64) -> [Option<[u8; 32]>; 2] {
    if record.revoked_at.is_some() {
        return [None, None];
    }
    let previous = match (record.previous_hash, record.previous_valid_until_ms) {
        (Some(previous), Some(until)) if until > now && previous != record.hash => Some(previous),
        _ => None,
    };
    [Some(record.hash), previous]
}

/// Whether `presented` could be a gateway-issued key at all.
fn is_plausible_key(presented: &[u8]) -> bool {
    (MIN_KEY_LEN..=MAX_KEY_LEN).contains(&presented.len()) && presented.starts_with(KEY_PREFIX)
}

/// The background thread that replays store changes into the cache.
struct Watcher {
    cache: Weak<CredentialCache>,
    store: Box<dyn KeyBackend>,
    last_seq: u64,
    /// While the store is unreachable, how long to wait before the next attempt.
    retry: Option<Duration>,
    /// Whether the next successful read must be a full reload (after a failure: what was
    /// missed cannot be known).
    reconcile: bool,
    /// When keys' last use was last written ([`LAST_USED_INTERVAL`]).
    last_used_written: Instant,
}

impl Watcher {
    fn run(mut self) {
        loop {
            // Returns at once on a change notification, after the interval otherwise;
            // either way the tick reads whatever changed.
            let interval = match self.retry {
                Some(backoff) => backoff,
                None if self.store.notifies() => SAFETY_NET_INTERVAL,
                None => POLL_INTERVAL,
            };
            self.store.wait_for_change(interval);
            // Hold the cache only for the length of one tick, so dropping it ends the thread.
            let Some(cache) = self.cache.upgrade() else {
                return;
            };
            if cache.stop.load(Ordering::Acquire) {
                return;
            }
            self.tick(&cache, unix_now_ms());
        }
    }

    fn tick(&mut self, cache: &CredentialCache, now: i64) {
        let read = if self.reconcile {
            self.reload(cache)
        } else {
            self.catch_up(cache, now)
        };
        match read {
            Ok(()) => self.reached(cache),
            Err(e) => self.failed(cache, &e),
        }
        cache.expire_graces(now);
        if self.retry.is_none() && self.last_used_written.elapsed() >= LAST_USED_INTERVAL {
            self.last_used_written = Instant::now();
            // Kept in memory on failure and tried again next time; the outage itself is
            // reported by the change feed's reads.
            if let Err(e) = cache.write_last_used(self.store.as_mut()) {
                log::debug!("cannot write keys' last use: {e}");
            }
        }
    }

    /// Applies the rows changed since the last one seen. Rows the admin API already applied
    /// are skipped by sequence.
    fn catch_up(&mut self, cache: &CredentialCache, now: i64) -> Result<(), store::StoreError> {
        let rows = self.store.changes_since(self.last_seq)?;
        let mut writer = cache.writer.lock();
        for row in rows {
            self.last_seq = self.last_seq.max(row.seq);
            cache.apply(&mut writer, row, now);
        }
        Ok(())
    }

    /// Reads every key and replaces the replica with them.
    fn reload(&mut self, cache: &CredentialCache) -> Result<(), store::StoreError> {
        let records = self.store.changes_since(0)?;
        let read_seq = records.iter().map(|r| r.seq).max().unwrap_or(0);
        let held = cache.reconcile(records, read_seq);
        self.last_seq = self.last_seq.max(read_seq);
        self.reconcile = false;
        log::info!("key store reconciled: {held} keys in the credential cache");
        Ok(())
    }

    fn reached(&mut self, cache: &CredentialCache) {
        self.retry = None;
        if cache.health.set(true) {
            log::info!("key store reachable again");
        }
    }

    fn failed(&mut self, cache: &CredentialCache, e: &store::StoreError) {
        let next = match self.retry {
            None => {
                log::warn!(
                    "cannot read key changes: {e}; serving the {} keys held in memory, \
                     retrying from {} ms up to {} s apart",
                    cache.len(),
                    RETRY_MIN.as_millis(),
                    RETRY_MAX.as_secs()
                );
                RETRY_MIN
            }
            Some(backoff) => (backoff * 2).min(RETRY_MAX),
        };
        self.retry = Some(next);
        self.reconcile = true;
        if e.is_unavailable() && cache.health.set(false) {
            log::warn!("key store unreachable: admin writes answer 503 until it is back");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;
    use crate::auth::test_support;
    use crate::store::audit::AuditEntry;
    use crate::store::{KeyPatch, KeyStore, NewKey, StoreError};

    /// A fresh data directory, removed when the test ends.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(label: &str) -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("cf-auth-cache-{label}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn new_key(name: &str) -> NewKey {
        NewKey {
            name: name.to_owned(),
            ..NewKey::default()
        }
    }

    /// Polls `condition` until it holds or 1 s (the contract's bound) has passed; returns how
    /// long it took, or panics.
    fn within_one_second(what: &str, mut condition: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !condition() {
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "{what}: not seen by the cache within 1 s"
            );
            thread::sleep(Duration::from_millis(5));
        }
        start.elapsed()
    }

    fn in_memory(records: Vec<KeyRecord>) -> CredentialCache {
        CredentialCache::from_records(Pepper::from_bytes([7; 32]), records)
    }

    fn secret(label: &str) -> String {
        format!("cf_{label:x>43}")
    }

    /// Applies `record` as of `now`, as the watcher does; returns whether it changed the cache.
    fn apply_at(cache: &CredentialCache, record: KeyRecord, now: i64) -> bool {
        let mut writer = cache.writer.lock();
        cache.apply(&mut writer, record, now)
    }

    #[test]
    fn issued_key_authenticates_to_its_record() {
        let dir = TempDir::new("hit");
        let mut store = KeyStore::open(&dir.0).unwrap();
        let (record, key) = store.create(new_key("alice"), "test").unwrap();
        let cache = CredentialCache::start(&store::sqlite_settings(&dir.0)).unwrap();

        let found = cache
            .authenticate_at_ms(key.as_bytes(), unix_now_ms())
            .expect("hit");
        assert_eq!(found.id, record.id);
        assert_eq!(found.name, "alice");
    }

    #[test]
    fn last_use_is_written_once_per_key_and_second_not_once_per_request() {
        let dir = TempDir::new("last-used");
        let mut store = KeyStore::open(&dir.0).unwrap();
        let (used, secret) = store.create(new_key("used"), "test").unwrap();
        let (idle, _) = store.create(new_key("idle"), "test").unwrap();
        let cache = CredentialCache::from_records(store.pepper().clone(), store.list().unwrap());
        let second: i64 = 1_800_000_000;
        assert_eq!(cache.last_used(&used.id), None);

        // A thousand requests within one second.
        for ms in 0..1000 {
            assert!(cache
                .authenticate_at_ms(secret.as_bytes(), second * 1000 + ms)
                .is_some());
        }
        assert_eq!(cache.last_used(&used.id), Some(second));
        assert_eq!(cache.last_used(&idle.id), None);

        // SQLite counts every row a connection inserts or changes: one write for the key.
        let writes_before = store.connection().total_changes();
        assert_eq!(cache.write_last_used(&mut store).unwrap(), 1);
        assert_eq!(store.connection().total_changes() - writes_before, 1);
        // Nothing used since: nothing written.
        assert_eq!(cache.write_last_used(&mut store).unwrap(), 0);
        assert_eq!(store.connection().total_changes() - writes_before, 1);
        assert_eq!(store.last_used().unwrap().get(&used.id), Some(&second));

        // A rotation keeps the key's last use; a later second is written once more.
        let (rotated, new_secret) = store.rotate(&used.id, Duration::ZERO, "test").unwrap();
        assert!(cache.apply_change(rotated));
        assert_eq!(cache.last_used(&used.id), Some(second));
        assert!(cache
            .authenticate_at_ms(new_secret.as_bytes(), (second + 7) * 1000)
            .is_some());
        assert_eq!(cache.write_last_used(&mut store).unwrap(), 1);
        assert_eq!(
            store.last_used().unwrap().get(&used.id),
            Some(&(second + 7))
        );
        assert_eq!(store.last_used().unwrap().get(&idle.id), None);
    }

    #[test]
    fn unknown_key_is_refused() {
        let dir = TempDir::new("miss");
        let mut store = KeyStore::open(&dir.0).unwrap();
        let (_, key) = store.create(new_key("alice"), "test").unwrap();
        let cache = CredentialCache::start(&store::sqlite_settings(&dir.0)).unwrap();

        let mut other = key.into_bytes();
        let last = other.len() - 1;
        other[last] = if other[last] == b'A' { b'B' } else { b'A' };
        assert!(cache.authenticate_at_ms(&other, unix_now_ms()).is_none());
        assert!(cache
            .authenticate_at_ms(secret("unknown").as_bytes(), unix_now_ms())
            .is_none());
    }

    #[test]
    fn key_without_the_cf_prefix_or_of_implausible_length_is_refused() {
        let dir = TempDir::new("shape");
        let mut store = KeyStore::open(&dir.0).unwrap();
        let (_, key) = store.create(new_key("alice"), "test").unwrap();
        let cache = CredentialCache::start(&store::sqlite_settings(&dir.0)).unwrap();

        let wrong_prefix = format!("sk_{}", &key[3..]);
        assert!(cache
            .authenticate_at_ms(wrong_prefix.as_bytes(), unix_now_ms())
            .is_none());
        assert!(cache
            .authenticate_at_ms(b"cf_short", unix_now_ms())
            .is_none());
        let huge = format!("{key}{}", "a".repeat(MAX_KEY_LEN));
        assert!(cache
            .authenticate_at_ms(huge.as_bytes(), unix_now_ms())
            .is_none());
        assert!(cache.authenticate_at_ms(b"", unix_now_ms()).is_none());
    }

    #[test]
    fn revoke_by_another_connection_stops_the_key_within_one_second() {
        let dir = TempDir::new("revoke");
        let mut store = KeyStore::open(&dir.0).unwrap();
        let (record, key) = store.create(new_key("alice"), "test").unwrap();
        let cache = CredentialCache::start(&store::sqlite_settings(&dir.0)).unwrap();
        assert!(cache
            .authenticate_at_ms(key.as_bytes(), unix_now_ms())
            .is_some());

        // A second connection, as the CLI in another process would open.
        let mut other = KeyStore::open(&dir.0).unwrap();
        other.revoke(&record.id, "test").unwrap();
        within_one_second("revocation", || {
            cache
                .authenticate_at_ms(key.as_bytes(), unix_now_ms())
                .is_none()
        });
        let revoked = cache
            .by_id(&record.id)
            .expect("revoked keys stay known by id");
        assert!(revoked.revoked_at.is_some());
        assert!(cache.by_name("alice").is_none());
    }

    #[test]
    fn rotation_keeps_the_old_secret_until_the_grace_ends() {
        let dir = TempDir::new("rotate");
        let mut store = KeyStore::open(&dir.0).unwrap();
        let (record, old_key) = store.create(new_key("alice"), "test").unwrap();
        let cache = CredentialCache::start(&store::sqlite_settings(&dir.0)).unwrap();

        let (rotated, new_key) = KeyStore::open(&dir.0)
            .unwrap()
            .rotate(&record.id, Duration::from_secs(3600), "test")
            .unwrap();
        within_one_second("rotation", || {
            cache
                .authenticate_at_ms(new_key.as_bytes(), unix_now_ms())
                .is_some()
        });
        let now = unix_now_ms();
        let grace_end = rotated.previous_valid_until_ms.unwrap();
        let old = cache
            .authenticate_at_ms(old_key.as_bytes(), now)
            .expect("old key in grace");
        assert_eq!(old.id, record.id);
        assert!(cache
            .authenticate_at_ms(old_key.as_bytes(), grace_end - 1)
            .is_some());
        assert!(cache
            .authenticate_at_ms(old_key.as_bytes(), grace_end)
            .is_none());
        assert!(cache
            .authenticate_at_ms(new_key.as_bytes(), grace_end)
            .is_some());
    }

    #[test]
    fn rotation_without_grace_kills_the_old_secret_within_one_second() {
        let dir = TempDir::new("rotate0");
        let mut store = KeyStore::open(&dir.0).unwrap();
        let (record, old_key) = store.create(new_key("alice"), "test").unwrap();
        let cache = CredentialCache::start(&store::sqlite_settings(&dir.0)).unwrap();

        let (_, new_key) = store.rotate(&record.id, Duration::ZERO, "test").unwrap();
        within_one_second("rotation", || {
            cache
                .authenticate_at_ms(new_key.as_bytes(), unix_now_ms())
                .is_some()
        });
        assert!(cache
            .authenticate_at_ms(old_key.as_bytes(), unix_now_ms())
            .is_none());
    }

    #[test]
    fn second_rotation_drops_the_first_secret_from_the_index() {
        let first = secret("first");
        let second = secret("second");
        let third = secret("third");
        let cache = in_memory(Vec::new());
        let now = 1_000;
        let mut record = test_support::record("key_r", "r");
        record.hash = cache.pepper.hash(first.as_bytes());
        record.seq = 1;
        assert!(apply_at(&cache, record.clone(), now));

        record.previous_hash = Some(record.hash);
        record.previous_valid_until_ms = Some(now + 60);
        record.hash = cache.pepper.hash(second.as_bytes());
        record.seq = 2;
        assert!(apply_at(&cache, record.clone(), now));
        assert!(cache.authenticate_at_ms(first.as_bytes(), now).is_some());

        record.previous_hash = Some(record.hash);
        record.hash = cache.pepper.hash(third.as_bytes());
        record.seq = 3;
        assert!(apply_at(&cache, record, now));
        assert!(cache.authenticate_at_ms(first.as_bytes(), now).is_none());
        assert!(cache.authenticate_at_ms(second.as_bytes(), now).is_some());
        assert!(cache.authenticate_at_ms(third.as_bytes(), now).is_some());
        assert_eq!(cache.by_hash.len(), 2);
    }

    /// The race between the two writers: the watcher read a row, the admin API then
    /// committed and applied a newer one, and the watcher's older read arrives last.
    #[test]
    fn older_row_arriving_after_a_newer_one_changes_nothing() {
        let old = secret("old");
        let new = secret("new");
        let cache = in_memory(Vec::new());
        let now = unix_now_ms();
        let mut before = test_support::record("key_race", "race");
        before.hash = cache.pepper.hash(old.as_bytes());
        before.seq = 4;
        let mut after = before.clone();
        after.hash = cache.pepper.hash(new.as_bytes());
        after.rpm = Some(7);
        after.seq = 5;

        assert!(cache.apply_change(after));
        assert!(!cache.apply_change(before));
        let held = cache.by_id("key_race").unwrap();
        assert_eq!((held.seq, held.rpm), (5, Some(7)));
        assert!(cache.authenticate_at_ms(new.as_bytes(), now).is_some());
        assert!(cache.authenticate_at_ms(old.as_bytes(), now).is_none());

        // A revocation cannot be undone by a stale read of the live key either.
        let mut revoked = cache.by_id("key_race").unwrap().as_ref().clone();
        revoked.revoked_at = Some(now / 1000);
        revoked.seq = 6;
        let mut stale = revoked.clone();
        stale.revoked_at = None;
        stale.seq = 5;
        assert!(cache.apply_change(revoked));
        assert!(!cache.apply_change(stale));
        assert!(cache.authenticate_at_ms(new.as_bytes(), now).is_none());
        assert!(cache.by_name("race").is_none());
    }

    /// Both writers deliver the same committed row; the second delivery is a no-op and does
    /// not queue a second grace entry for the same previous secret.
    #[test]
    fn the_same_row_applied_twice_is_applied_once() {
        let old = secret("old");
        let new = secret("new");
        let cache = in_memory(Vec::new());
        let mut record = test_support::record("key_twice", "twice");
        record.hash = cache.pepper.hash(new.as_bytes());
        record.previous_hash = Some(cache.pepper.hash(old.as_bytes()));
        record.previous_valid_until_ms = Some(unix_now_ms() + 3_600_000);
        record.seq = 9;

        assert!(cache.apply_change(record.clone()));
        assert!(!cache.apply_change(record));
        assert_eq!(cache.writer.lock().graces.len(), 1);
        assert_eq!(cache.by_hash.len(), 2);
        assert_eq!(cache.len(), 1);
    }

    /// What the admin API relies on: a store write applied with `apply_change` is in force
    /// at once, with no watcher running at all; the watcher then finds nothing new to do.
    #[test]
    fn applied_store_writes_are_in_force_without_the_watcher() {
        let dir = TempDir::new("direct");
        let cache = CredentialCache::start(&store::sqlite_settings(&dir.0)).unwrap();
        cache.stop();
        let mut store = KeyStore::open(&dir.0).unwrap();

        let (created, first) = store.create(new_key("direct"), "test").unwrap();
        assert!(cache.apply_change(created.clone()));
        assert!(cache
            .authenticate_at_ms(first.as_bytes(), unix_now_ms())
            .is_some());

        let (rotated, second) = store
            .rotate(&created.id, Duration::from_secs(3600), "test")
            .unwrap();
        assert!(cache.apply_change(rotated));
        assert!(cache
            .authenticate_at_ms(second.as_bytes(), unix_now_ms())
            .is_some());
        assert!(cache
            .authenticate_at_ms(first.as_bytes(), unix_now_ms())
            .is_some());

        let patch = KeyPatch {
            rpm: Some(Some(3)),
            ..KeyPatch::default()
        };
        assert!(cache.apply_change(store.update(&created.id, patch, "test").unwrap()));
        assert_eq!(cache.by_id(&created.id).unwrap().rpm, Some(3));

        let revoked = store.revoke(&created.id, "test").unwrap();
        assert!(cache.apply_change(revoked.clone()));
        assert!(cache
            .authenticate_at_ms(second.as_bytes(), unix_now_ms())
            .is_none());
        assert!(cache
            .authenticate_at_ms(first.as_bytes(), unix_now_ms())
            .is_none());

        // A watcher pass over the same rows (every one already applied) changes nothing.
        let mut watcher = Watcher {
            cache: Weak::new(),
            store: Box::new(KeyStore::open(&dir.0).unwrap()),
            last_seq: 0,
            retry: None,
            reconcile: false,
            last_used_written: Instant::now(),
        };
        watcher.tick(&cache, unix_now_ms());
        assert_eq!(watcher.last_seq, revoked.seq);
        assert!(cache.by_id(&created.id).unwrap().revoked_at.is_some());
        assert!(cache
            .authenticate_at_ms(second.as_bytes(), unix_now_ms())
            .is_none());
    }

    /// The embedded store behind a change feed: it wakes its waiter only when notified, as a
    /// backend with push notifications does (it does not poll, so a change nobody announced
    /// stays unseen for the test's length).
    struct Notified {
        store: KeyStore,
        notifications: mpsc::Receiver<()>,
    }

    impl KeyBackend for Notified {
        fn access_insert(
            &mut self,
            request: &crate::access::AccessRequest,
            actor: &str,
        ) -> Result<(), StoreError> {
            self.store.access_insert(request, actor)
        }
        fn access_get(
            &mut self,
            id: &str,
        ) -> Result<Option<crate::access::AccessRequest>, StoreError> {
            self.store.access_get(id)
        }
        fn access_list(
            &mut self,
            status: Option<crate::access::AccessStatus>,
        ) -> Result<Vec<crate::access::AccessRequest>, StoreError> {
            self.store.access_list(status)
        }
        fn access_transition(
            &mut self,
            from: crate::access::AccessStatus,
            after: &crate::access::AccessRequest,
            action: &str,
            actor: &str,
        ) -> Result<bool, StoreError> {
            self.store.access_transition(from, after, action, actor)
        }
        fn pepper(&self) -> &Pepper {
            self.store.pepper()
        }
        fn create(&mut self, new: NewKey, actor: &str) -> Result<(KeyRecord, String), StoreError> {
            self.store.create(new, actor)
        }
        fn list(&mut self) -> Result<Vec<KeyRecord>, StoreError> {
            self.store.list()
        }
        fn get(&mut self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
            self.store.get(id)
        }
        fn update(
            &mut self,
            id: &str,
            patch: KeyPatch,
            actor: &str,
        ) -> Result<KeyRecord, StoreError> {
            self.store.update(id, patch, actor)
        }
        fn revoke(&mut self, id: &str, actor: &str) -> Result<KeyRecord, StoreError> {
            self.store.revoke(id, actor)
        }
        fn rotate(
            &mut self,
            id: &str,
            grace: Duration,
            actor: &str,
        ) -> Result<(KeyRecord, String), StoreError> {
            self.store.rotate(id, grace, actor)
        }
        fn changes_since(&mut self, seq: u64) -> Result<Vec<KeyRecord>, StoreError> {
            self.store.changes_since(seq)
        }
        fn max_seq(&mut self) -> Result<u64, StoreError> {
            self.store.max_seq()
        }
        fn append_audit(
            &mut self,
            actor: &str,
            action: &str,
            key_id: Option<&str>,
            before: Option<&KeyRecord>,
            after: Option<&KeyRecord>,
        ) -> Result<(), StoreError> {
            KeyBackend::append_audit(&mut self.store, actor, action, key_id, before, after)
        }
        fn read_audit(&mut self) -> Result<Vec<AuditEntry>, StoreError> {
            KeyBackend::read_audit(&mut self.store)
        }
        fn wait_for_change(&mut self, timeout: Duration) -> bool {
            match self.notifications.recv_timeout(Duration::from_secs(5)) {
                Ok(()) => true,
                Err(mpsc::RecvTimeoutError::Timeout) => false,
                // The test is over: fall back to polling until the cache is dropped.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    thread::sleep(timeout);
                    false
                }
            }
        }
    }

    /// The watcher waits on its backend, not on a timer of its own: a backend that pushes
    /// changes decides when the watcher reads, so an announced change is in force at once and
    /// nothing depends on the poll interval.
    #[test]
    fn a_change_notification_wakes_the_watcher() {
        let dir = TempDir::new("notify");
        let (notify, notifications) = mpsc::channel();
        let cache = CredentialCache::watch(Box::new(Notified {
            store: KeyStore::open(&dir.0).unwrap(),
            notifications,
        }))
        .unwrap();
        let (_, key) = KeyStore::open(&dir.0)
            .unwrap()
            .create(new_key("pushed"), "test")
            .unwrap();

        // Unannounced, the change is not read, however many poll intervals pass.
        thread::sleep(POLL_INTERVAL * 3);
        assert!(cache
            .authenticate_at_ms(key.as_bytes(), unix_now_ms())
            .is_none());

        notify.send(()).unwrap();
        within_one_second("notified change", || {
            cache
                .authenticate_at_ms(key.as_bytes(), unix_now_ms())
                .is_some()
        });
        cache.stop();
    }

    /// The embedded store behind a switch that makes it unreachable, as a PostgreSQL store
    /// is when its server is down; it says it notifies, and reports the waits it is asked
    /// for.
    struct Outage {
        store: KeyStore,
        down: Arc<AtomicBool>,
        waits: mpsc::Sender<Duration>,
    }

    impl Outage {
        fn check(&self) -> Result<(), StoreError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(StoreError::Postgres(store::postgres::PgError::new(
                    store::postgres::PgErrorKind::Unreachable,
                    "error connecting to server: No such file or directory",
                )));
            }
            Ok(())
        }
    }

    impl KeyBackend for Outage {
        fn access_insert(
            &mut self,
            request: &crate::access::AccessRequest,
            actor: &str,
        ) -> Result<(), StoreError> {
            self.store.access_insert(request, actor)
        }
        fn access_get(
            &mut self,
            id: &str,
        ) -> Result<Option<crate::access::AccessRequest>, StoreError> {
            self.store.access_get(id)
        }
        fn access_list(
            &mut self,
            status: Option<crate::access::AccessStatus>,
        ) -> Result<Vec<crate::access::AccessRequest>, StoreError> {
            self.store.access_list(status)
        }
        fn access_transition(
            &mut self,
            from: crate::access::AccessStatus,
            after: &crate::access::AccessRequest,
            action: &str,
            actor: &str,
        ) -> Result<bool, StoreError> {
            self.store.access_transition(from, after, action, actor)
        }
        fn pepper(&self) -> &Pepper {
            self.store.pepper()
        }
        fn create(&mut self, new: NewKey, actor: &str) -> Result<(KeyRecord, String), StoreError> {
            self.check()?;
            self.store.create(new, actor)
        }
        fn list(&mut self) -> Result<Vec<KeyRecord>, StoreError> {
            self.check()?;
            self.store.list()
        }
        fn get(&mut self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
            self.check()?;
            self.store.get(id)
        }
        fn update(
            &mut self,
            id: &str,
            patch: KeyPatch,
            actor: &str,
        ) -> Result<KeyRecord, StoreError> {
            self.check()?;
            self.store.update(id, patch, actor)
        }
        fn revoke(&mut self, id: &str, actor: &str) -> Result<KeyRecord, StoreError> {
            self.check()?;
            self.store.revoke(id, actor)
        }
        fn rotate(
            &mut self,
            id: &str,
            grace: Duration,
            actor: &str,
        ) -> Result<(KeyRecord, String), StoreError> {
            self.check()?;
            self.store.rotate(id, grace, actor)
        }
        fn changes_since(&mut self, seq: u64) -> Result<Vec<KeyRecord>, StoreError> {
            self.check()?;
            self.store.changes_since(seq)
        }
        fn max_seq(&mut self) -> Result<u64, StoreError> {
            self.check()?;
            self.store.max_seq()
        }
        fn append_audit(
            &mut self,
            actor: &str,
            action: &str,
            key_id: Option<&str>,
            before: Option<&KeyRecord>,
            after: Option<&KeyRecord>,
        ) -> Result<(), StoreError> {
            self.check()?;
            KeyBackend::append_audit(&mut self.store, actor, action, key_id, before, after)
        }
        fn read_audit(&mut self) -> Result<Vec<AuditEntry>, StoreError> {
            self.check()?;
            KeyBackend::read_audit(&mut self.store)
        }
        fn notifies(&self) -> bool {
            true
        }
        fn wait_for_change(&mut self, timeout: Duration) -> bool {
            let _ = self.waits.send(timeout);
            // Never notified: only the safety net reads.
            thread::sleep(timeout.min(Duration::from_millis(20)));
            false
        }
    }

    /// In an outage the replica stays as it is (known keys keep working, expiry still
    /// enforced), the store is marked down, retries back off from 100 ms doubling to 5 s,
    /// and the first read after reconnecting reloads every key, so a revocation made
    /// meanwhile is in force then.
    #[test]
    fn an_outage_keeps_the_replica_backs_off_and_reconciles_on_reconnect() {
        let dir = TempDir::new("outage");
        let mut writer = KeyStore::open(&dir.0).unwrap();
        let (leaver, leaver_key) = writer.create(new_key("leaver"), "test").unwrap();
        let (_, stayer_key) = writer.create(new_key("stayer"), "test").unwrap();
        let expiring = NewKey {
            expires_in: Some("1h".into()),
            ..new_key("expiring")
        };
        let (expiring, expiring_key) = writer.create(expiring, "test").unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let (waits, _) = mpsc::channel();
        let mut store = Outage {
            store: KeyStore::open(&dir.0).unwrap(),
            down: Arc::clone(&down),
            waits,
        };
        let records = store.changes_since(0).unwrap();
        let cache = CredentialCache::from_records(store.pepper().clone(), records);
        let mut watcher = Watcher {
            cache: Weak::new(),
            store: Box::new(store),
            last_seq: 3,
            retry: None,
            reconcile: false,
            last_used_written: Instant::now(),
        };
        let now = unix_now_ms();

        down.store(true, Ordering::SeqCst);
        watcher.tick(&cache, now);
        assert!(!cache.store_health().is_up());
        assert_eq!(watcher.retry, Some(RETRY_MIN));
        let mut backoffs = Vec::new();
        for _ in 0..8 {
            watcher.tick(&cache, now);
            backoffs.push(watcher.retry.unwrap().as_millis());
        }
        assert_eq!(backoffs, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        // Revoked elsewhere while this node cannot see it.
        writer.revoke(&leaver.id, "test").unwrap();
        for key in [&leaver_key, &stayer_key, &expiring_key] {
            assert!(cache.authenticate_at_ms(key.as_bytes(), now).is_some());
        }
        let expires_at = expiring.expires_at_ms.unwrap();
        assert!(cache
            .authenticate_at_ms(expiring_key.as_bytes(), expires_at)
            .is_none());

        down.store(false, Ordering::SeqCst);
        watcher.tick(&cache, now);
        assert!(cache.store_health().is_up());
        assert_eq!(watcher.retry, None);
        assert!(!watcher.reconcile);
        assert!(cache
            .authenticate_at_ms(leaver_key.as_bytes(), now)
            .is_none());
        assert!(cache
            .authenticate_at_ms(stayer_key.as_bytes(), now)
            .is_some());
    }

    /// A store that notifies is still read every SAFETY_NET_INTERVAL (1 s), so a lost
    /// notification delays a change by at most that; one that does not is polled every
    /// POLL_INTERVAL.
    #[test]
    fn a_notifying_store_is_still_read_every_second() {
        let dir = TempDir::new("safety-net");
        let (waits, asked) = mpsc::channel();
        let cache = CredentialCache::watch(Box::new(Outage {
            store: KeyStore::open(&dir.0).unwrap(),
            down: Arc::new(AtomicBool::new(false)),
            waits,
        }))
        .unwrap();
        let first = asked.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!(first, SAFETY_NET_INTERVAL);
        assert_eq!(SAFETY_NET_INTERVAL, Duration::from_secs(1));
        cache.stop();
    }

    /// A full reload replaces the replica: keys the store no longer has leave every index,
    /// but a key applied after the read (a higher sequence than the read saw) stays.
    #[test]
    fn reconcile_drops_keys_the_store_no_longer_has_but_keeps_newer_ones() {
        let cache = in_memory(Vec::new());
        let mut rows = Vec::new();
        for (n, name) in ["kept", "gone", "newer"].iter().enumerate() {
            let mut record = test_support::record(&format!("key_{name}"), name);
            record.hash = cache.pepper.hash(secret(name).as_bytes());
            record.seq = n as u64 + 1;
            assert!(cache.apply_change(record.clone()));
            rows.push(record);
        }
        // The read saw up to seq 2 and no longer has "gone"; "newer" (seq 3) came after it.
        let read: Vec<KeyRecord> = rows.iter().filter(|r| r.name == "kept").cloned().collect();
        assert_eq!(cache.reconcile(read, 2), 2);
        assert!(cache.by_id("key_gone").is_none());
        assert!(cache.by_name("gone").is_none());
        assert!(cache
            .authenticate_at_ms(secret("gone").as_bytes(), unix_now_ms())
            .is_none());
        assert!(cache
            .authenticate_at_ms(secret("kept").as_bytes(), unix_now_ms())
            .is_some());
        assert!(cache
            .authenticate_at_ms(secret("newer").as_bytes(), unix_now_ms())
            .is_some());
    }

    #[test]
    fn ended_grace_entries_leave_the_index() {
        let old = secret("old");
        let new = secret("new");
        let cache = in_memory(Vec::new());
        let mut record = test_support::record("key_g", "g");
        record.hash = cache.pepper.hash(new.as_bytes());
        record.previous_hash = Some(cache.pepper.hash(old.as_bytes()));
        record.previous_valid_until_ms = Some(1_060);
        record.seq = 1;
        assert!(apply_at(&cache, record, 1_000));
        assert_eq!(cache.by_hash.len(), 2);

        cache.expire_graces(1_059);
        assert_eq!(cache.by_hash.len(), 2);
        cache.expire_graces(1_060);
        assert_eq!(cache.by_hash.len(), 1);
        assert!(cache.authenticate_at_ms(new.as_bytes(), 1_060).is_some());
    }

    #[test]
    fn expired_key_is_refused_from_its_expiry_second() {
        let dir = TempDir::new("expiry");
        let mut store = KeyStore::open(&dir.0).unwrap();
        let new = NewKey {
            expires_in: Some("1h".into()),
            ..new_key("alice")
        };
        let (record, key) = store.create(new, "test").unwrap();
        let cache = CredentialCache::start(&store::sqlite_settings(&dir.0)).unwrap();

        let expires_at = record.expires_at_ms.expect("expiry set");
        assert!(cache
            .authenticate_at_ms(key.as_bytes(), expires_at - 1)
            .is_some());
        assert!(cache
            .authenticate_at_ms(key.as_bytes(), expires_at)
            .is_none());
    }

    #[test]
    fn limit_change_by_another_connection_reaches_the_cache_within_one_second() {
        let dir = TempDir::new("update");
        let mut store = KeyStore::open(&dir.0).unwrap();
        let (record, key) = store.create(new_key("alice"), "test").unwrap();
        let cache = CredentialCache::start(&store::sqlite_settings(&dir.0)).unwrap();

        let patch = KeyPatch {
            rpm: Some(Some(42)),
            name: Some("alice-2".into()),
            ..KeyPatch::default()
        };
        KeyStore::open(&dir.0)
            .unwrap()
            .update(&record.id, patch, "test")
            .unwrap();
        within_one_second("update", || {
            cache.by_id(&record.id).is_some_and(|k| k.rpm == Some(42))
        });
        let by_key = cache
            .authenticate_at_ms(key.as_bytes(), unix_now_ms())
            .unwrap();
        assert_eq!(by_key.rpm, Some(42));
        assert!(cache.by_name("alice").is_none());
        assert_eq!(cache.by_name("alice-2").unwrap().id, record.id);
    }

    #[test]
    fn thousand_keys_all_authenticate_including_ones_created_after_start() {
        let dir = TempDir::new("bulk");
        let mut store = KeyStore::open(&dir.0).unwrap();
        let mut issued = Vec::new();
        for i in 0..500 {
            issued.push(store.create(new_key(&format!("k{i}")), "test").unwrap());
        }
        let cache = CredentialCache::start(&store::sqlite_settings(&dir.0)).unwrap();
        for i in 500..1000 {
            issued.push(store.create(new_key(&format!("k{i}")), "test").unwrap());
        }
        within_one_second("bulk creation", || cache.len() == 1000);
        let now = unix_now_ms();
        for (record, key) in &issued {
            let found = cache
                .authenticate_at_ms(key.as_bytes(), now)
                .expect("every key hits");
            assert_eq!(found.id, record.id);
            assert_eq!(cache.by_name(&record.name).unwrap().id, record.id);
        }
    }

    #[test]
    fn stopped_watcher_applies_no_more_changes() {
        let dir = TempDir::new("stop");
        let mut store = KeyStore::open(&dir.0).unwrap();
        let cache = CredentialCache::start(&store::sqlite_settings(&dir.0)).unwrap();
        cache.stop();
        thread::sleep(POLL_INTERVAL * 2);
        store.create(new_key("late"), "test").unwrap();
        thread::sleep(POLL_INTERVAL * 3);
        assert!(cache.by_name("late").is_none());
    }

    #[test]
    fn dropping_the_cache_frees_it_so_the_watcher_ends() {
        let dir = TempDir::new("drop");
        let cache = CredentialCache::start(&store::sqlite_settings(&dir.0)).unwrap();
        let weak = Arc::downgrade(&cache);
        drop(cache);
        // The watcher holds only a Weak between ticks, so nothing keeps the cache alive.
        assert!(
            weak.upgrade().is_none() || {
                thread::sleep(POLL_INTERVAL * 2);
                weak.upgrade().is_none()
            }
        );
    }

    #[test]
    fn start_fails_with_a_message_when_the_data_dir_cannot_be_created() {
        let dir = TempDir::new("bad");
        let file = dir.0.join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = CredentialCache::start(&store::sqlite_settings(file.join("sub"))).unwrap_err();
        assert!(err.contains("key store"), "{err}");
    }
}
