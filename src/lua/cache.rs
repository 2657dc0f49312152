//! `cf.cache_get` / `cf.cache_set`: a small per-worker key-value cache with TTLs.
//!
//! It lives outside the VM (so it survives a VM rebuild and a config reload) and holds only
//! strings and numbers: no tables, which would have to be copied or tied to one VM. Its size
//! is bounded in entries and bytes; when full it drops expired entries (swept at most once a
//! second, so a full cache does not rescan on every insert) and then arbitrary ones, which is
//! good enough for a cache whose callers must always cope with a miss.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A cached value: what `cf.cache_set` accepts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum CacheValue {
    /// A Lua string (bytes, not necessarily UTF-8).
    Bytes(Vec<u8>),
    /// A Lua number.
    Number(f64),
}

impl CacheValue {
    fn size(&self) -> usize {
        match self {
            CacheValue::Bytes(b) => b.len(),
            CacheValue::Number(_) => 8,
        }
    }
}

/// Most entries one worker's cache keeps.
pub(crate) const MAX_ENTRIES: usize = 10_000;
/// Longest key accepted.
pub(crate) const MAX_KEY_BYTES: usize = 1024;
/// Largest single value accepted.
pub(crate) const MAX_VALUE_BYTES: usize = 64 * 1024;

struct Entry {
    value: CacheValue,
    expires: Instant,
}

/// The per-worker cache.
pub(crate) struct Cache {
    entries: HashMap<Vec<u8>, Entry>,
    bytes: usize,
    max_bytes: usize,
    next_sweep: Instant,
}

impl Cache {
    /// An empty cache holding at most `max_bytes` of keys and values.
    pub(crate) fn new(max_bytes: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            bytes: 0,
            max_bytes,
            next_sweep: Instant::now(),
        }
    }

    /// The value under `key`, unless absent or expired at `now`.
    pub(crate) fn get(&mut self, key: &[u8], now: Instant) -> Option<CacheValue> {
        let entry = self.entries.get(key)?;
        if entry.expires > now {
            return Some(entry.value.clone());
        }
        self.remove(key);
        None
    }

    /// Stores `value` under `key` for `ttl`, evicting to stay within bounds. Keys and values
    /// past their size limits are refused with a message for the script.
    pub(crate) fn set(
        &mut self,
        key: &[u8],
        value: CacheValue,
        ttl: Duration,
        now: Instant,
    ) -> Result<(), &'static str> {
        if key.len() > MAX_KEY_BYTES {
            return Err("cache key longer than 1024 bytes");
        }
        if value.size() > MAX_VALUE_BYTES {
            return Err("cache value larger than 64 KiB");
        }
        self.remove(key);
        let size = key.len() + value.size();
        while !self.entries.is_empty()
            && (self.entries.len() >= MAX_ENTRIES || self.bytes + size > self.max_bytes)
        {
            self.evict_one(now);
        }
        if size > self.max_bytes {
            return Err("cache value larger than the cache");
        }
        self.bytes += size;
        self.entries.insert(
            key.to_vec(),
            Entry {
                value,
                expires: now + ttl,
            },
        );
        Ok(())
    }

    /// Removes `key` if present.
    pub(crate) fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= key.len() + old.value.size();
        }
    }

    /// Number of entries, expired ones included until they are swept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn evict_one(&mut self, now: Instant) {
        if now >= self.next_sweep {
            self.next_sweep = now + Duration::from_secs(1);
            let before = self.entries.len();
            let mut freed = 0;
            self.entries.retain(|k, e| {
                let keep = e.expires > now;
                if !keep {
                    freed += k.len() + e.value.size();
                }
                keep
            });
            self.bytes -= freed;
            if self.entries.len() < before {
                return;
            }
        }
        // HashMap iteration order is unspecified: this is random eviction.
        if let Some(key) = self.entries.keys().next().cloned() {
            self.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> CacheValue {
        CacheValue::Bytes(s.as_bytes().to_vec())
    }

    #[test]
    fn value_is_returned_until_its_ttl_passes() {
        let mut cache = Cache::new(1 << 20);
        let t0 = Instant::now();
        cache
            .set(b"k", text("v"), Duration::from_secs(5), t0)
            .unwrap();
        assert_eq!(
            cache.get(b"k", t0 + Duration::from_secs(4)),
            Some(text("v"))
        );
        assert_eq!(cache.get(b"k", t0 + Duration::from_secs(5)), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn entry_count_is_bounded() {
        let mut cache = Cache::new(usize::MAX);
        let t0 = Instant::now();
        for i in 0..MAX_ENTRIES + 50 {
            let key = i.to_string();
            cache
                .set(
                    key.as_bytes(),
                    CacheValue::Number(i as f64),
                    Duration::from_secs(60),
                    t0,
                )
                .unwrap();
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
    }

    #[test]
    fn byte_size_is_bounded_and_expired_entries_go_first() {
        let mut cache = Cache::new(100);
        let t0 = Instant::now();
        cache
            .set(b"old", text(&"a".repeat(60)), Duration::from_secs(1), t0)
            .unwrap();
        cache
            .set(b"live", text("b"), Duration::from_secs(60), t0)
            .unwrap();
        let later = t0 + Duration::from_secs(2);
        cache
            .set(
                b"new",
                text(&"c".repeat(60)),
                Duration::from_secs(60),
                later,
            )
            .unwrap();
        assert_eq!(cache.get(b"live", later), Some(text("b")));
        assert!(cache.bytes <= 100);
    }

    #[test]
    fn oversized_keys_and_values_are_refused() {
        let mut cache = Cache::new(usize::MAX);
        let t0 = Instant::now();
        let long_key = vec![b'k'; MAX_KEY_BYTES + 1];
        assert!(cache
            .set(&long_key, text("v"), Duration::from_secs(1), t0)
            .is_err());
        let big = CacheValue::Bytes(vec![0; MAX_VALUE_BYTES + 1]);
        assert!(cache.set(b"k", big, Duration::from_secs(1), t0).is_err());
    }
}
