//! The credential families: `credentialflow_credential_refresh_total{credential,result}` and
//! `credentialflow_credential_expiry_seconds{credential}`, one series set per credential the
//! gateway obtains itself. Each source's thread owns its [`CredentialStats`] and updates them
//! per fetch; a scrape reads them. Sources that no snapshot holds any more drop out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use super::{escape_label_value, family_header};

/// Names of the families rendered here, which a registered counter may not take.
pub(super) const FAMILIES: [&str; 2] = [
    "credentialflow_credential_refresh_total",
    "credentialflow_credential_expiry_seconds",
];

/// One credential's fetch outcomes and current expiry.
#[derive(Debug, Default)]
pub struct CredentialStats {
    ok: AtomicU64,
    error: AtomicU64,
    /// Unix time (seconds) at which the current credential expires; 0 = none fetched yet.
    expiry_unix: AtomicI64,
}

impl CredentialStats {
    /// Counts a fetch that yielded a credential valid for `lifetime` from now.
    pub fn record_success(&self, lifetime: Duration) {
        self.ok.fetch_add(1, Relaxed);
        let lifetime = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        let now = crate::clock::unix_now_ms() / 1000;
        self.expiry_unix
            .store(now.saturating_add(lifetime), Relaxed);
    }

    /// Counts a failed fetch.
    pub fn record_failure(&self) {
        self.error.fetch_add(1, Relaxed);
    }

    /// Fetches that succeeded so far.
    pub fn successes(&self) -> u64 {
        self.ok.load(Relaxed)
    }

    /// Fetches that failed so far.
    pub fn failures(&self) -> u64 {
        self.error.load(Relaxed)
    }
}

/// Every credential source's stats, by credential name.
#[derive(Default)]
pub struct CredentialMetrics {
    sources: Mutex<BTreeMap<String, Weak<CredentialStats>>>,
}

impl CredentialMetrics {
    /// The stats of credential `name`: the live ones when a source of that name still runs
    /// (its counts continue), else new ones.
    pub fn register(&self, name: &str) -> Arc<CredentialStats> {
        let mut sources = self.sources.lock();
        if let Some(stats) = sources.get(name).and_then(Weak::upgrade) {
            return stats;
        }
        let stats = Arc::new(CredentialStats::default());
        sources.insert(name.to_string(), Arc::downgrade(&stats));
        stats
    }

    /// Writes both families; nothing when no credential is obtained by the gateway.
    pub(super) fn render(&self, out: &mut String) {
        let mut sources = self.sources.lock();
        sources.retain(|_, stats| stats.strong_count() > 0);
        let live: Vec<(&String, Arc<CredentialStats>)> = sources
            .iter()
            .filter_map(|(name, stats)| stats.upgrade().map(|s| (name, s)))
            .collect();
        if live.is_empty() {
            return;
        }
        family_header(
            out,
            FAMILIES[0],
            "counter",
            "Fetches of credentials the gateway obtains itself, by credential and result.",
        );
        for (name, stats) in &live {
            let name = escape_label_value(name);
            for (result, value) in [("ok", stats.successes()), ("error", stats.failures())] {
                let _ = writeln!(
                    out,
                    "{}{{credential=\"{name}\",result=\"{result}\"}} {value}",
                    FAMILIES[0]
                );
            }
        }
        family_header(
            out,
            FAMILIES[1],
            "gauge",
            "Unix time at which the current credential expires (0: none obtained yet).",
        );
        for (name, stats) in &live {
            let _ = writeln!(
                out,
                "{}{{credential=\"{}\"}} {}",
                FAMILIES[1],
                escape_label_value(name),
                stats.expiry_unix.load(Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_live_credential_has_both_families() {
        let metrics = CredentialMetrics::default();
        let stats = metrics.register("partner");
        stats.record_success(Duration::from_secs(100));
        stats.record_failure();
        stats.record_failure();
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(out.contains(
            "credentialflow_credential_refresh_total{credential=\"partner\",result=\"ok\"} 1\n"
        ));
        assert!(out.contains(
            "credentialflow_credential_refresh_total{credential=\"partner\",result=\"error\"} 2\n"
        ));
        let expiry: i64 = out
            .lines()
            .find_map(|l| {
                l.strip_prefix("credentialflow_credential_expiry_seconds{credential=\"partner\"} ")
            })
            .unwrap()
            .parse()
            .unwrap();
        let now = crate::clock::unix_now_ms() / 1000;
        assert!(
            (now + 99..=now + 101).contains(&expiry),
            "{expiry} vs {now}"
        );
    }

    #[test]
    fn a_dropped_source_leaves_the_scrape_and_a_live_one_keeps_its_counts() {
        let metrics = CredentialMetrics::default();
        let kept = metrics.register("kept");
        kept.record_failure();
        drop(metrics.register("gone"));
        assert_eq!(metrics.register("kept").failures(), 1);
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(!out.contains("gone"), "{out}");
        assert!(out.contains("credential=\"kept\""), "{out}");
    }
}
