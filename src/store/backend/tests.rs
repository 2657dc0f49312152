//! The interface over the embedded backend: everything goes through `Box<dyn KeyBackend>`
//! from [`open`], as the admin API, the CLI and the watcher use it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;
use crate::store::audit::AUDIT_FILE;
use crate::store::ids::new_key_id;
use crate::store::unix_now;

/// A fresh data directory, removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        TempDir(std::env::temp_dir().join(format!("cf-backend-{}", new_key_id())))
    }

    fn open(&self) -> Box<dyn KeyBackend> {
        open(&sqlite_settings(&self.0)).unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn named(name: &str) -> NewKey {
    NewKey {
        name: name.to_owned(),
        ..NewKey::default()
    }
}

#[test]
fn sqlite_config_opens_the_store_in_its_data_dir() {
    let dir = TempDir::new();
    let mut backend = dir.open();
    let (record, secret) = backend.create(named("ci"), "test").unwrap();

    // The same rows and the same pepper as the store opened directly on that directory.
    let direct = KeyStore::open(&dir.0).unwrap();
    assert_eq!(direct.get(&record.id).unwrap(), Some(record.clone()));
    assert_eq!(backend.pepper().hash(secret.as_bytes()), record.hash);
    assert_eq!(direct.pepper().hash(secret.as_bytes()), record.hash);
    assert!(dir.0.join(crate::store::keys::DB_FILE).is_file());
}

#[test]
fn key_life_cycle_goes_through_the_interface_in_sequence_order() {
    let dir = TempDir::new();
    let mut backend = dir.open();
    assert_eq!(backend.max_seq().unwrap(), 0);

    let (created, first) = backend.create(named("ci"), "cli:alice").unwrap();
    let patch = KeyPatch {
        rpm: Some(Some(60)),
        ..KeyPatch::default()
    };
    let updated = backend.update(&created.id, patch, "admin").unwrap();
    assert_eq!(updated.rpm, Some(60));
    let (rotated, second) = backend
        .rotate(&created.id, Duration::from_secs(60), "admin")
        .unwrap();
    assert_ne!(first, second);
    assert_eq!(rotated.previous_hash, Some(created.hash));
    let revoked = backend.revoke(&created.id, "admin").unwrap();
    assert!(revoked.revoked_at.is_some());

    assert_eq!(backend.max_seq().unwrap(), revoked.seq);
    let seqs: Vec<u64> = backend
        .changes_since(created.seq - 1)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    // Only the last row of each key is kept, at its last change's sequence.
    assert_eq!(seqs, [revoked.seq]);
    assert!(backend.changes_since(revoked.seq).unwrap().is_empty());
    assert_eq!(backend.list().unwrap(), std::slice::from_ref(&revoked));
    assert_eq!(backend.get(&created.id).unwrap(), Some(revoked));
    assert_eq!(backend.get("key_missing").unwrap(), None);
    assert!(matches!(
        backend.revoke("key_missing", "admin"),
        Err(StoreError::NotFound(_))
    ));

    // Each write was audited by the backend with its actor, in order.
    let audited: Vec<(String, String)> = backend
        .read_audit()
        .unwrap()
        .into_iter()
        .map(|e| (e.actor, e.action))
        .collect();
    let expected = [
        ("cli:alice", "create"),
        ("admin", "update"),
        ("admin", "rotate"),
        ("admin", "revoke"),
    ]
    .map(|(actor, action)| (actor.to_owned(), action.to_owned()));
    assert_eq!(audited, expected);
}

#[test]
fn audit_entries_appended_through_the_interface_are_read_back() {
    let dir = TempDir::new();
    let mut backend = dir.open();
    assert!(backend.read_audit().unwrap().is_empty());
    backend
        .append_audit("signal:SIGHUP", "reload", None, None, None)
        .unwrap();
    let entries = backend.read_audit().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].actor, "signal:SIGHUP");
    assert_eq!(entries[0].action, "reload");
    assert_eq!(entries[0].key_id, None);
    // The embedded backend's log is the JSON-lines file beside the key database.
    let text = std::fs::read_to_string(dir.0.join(AUDIT_FILE)).unwrap();
    assert_eq!(text.lines().count(), 1);
}

/// SQLite has no change notifications: the watcher's wait is a plain sleep of the poll
/// interval, reporting no notification.
#[test]
fn sqlite_wait_for_change_sleeps_the_whole_timeout() {
    let dir = TempDir::new();
    let mut backend = dir.open();
    let started = Instant::now();
    assert!(!backend.wait_for_change(Duration::from_millis(30)));
    assert!(started.elapsed() >= Duration::from_millis(30));
}

#[test]
fn settings_of_a_config_take_data_dir_relative_to_the_file_and_its_store_section() {
    let base = Path::new("/etc/credentialflow");
    let text = "[server]\ndata_dir = \"state\"\n[store]\nnode = \"edge-7\"\n";
    let config = crate::config::parse(text, base).unwrap();
    let settings = settings_of(&config);
    assert_eq!(settings.data_dir, base.join("state"));
    assert_eq!(settings.store.backend, StoreBackend::Sqlite);
    assert_eq!(settings.store.node, "edge-7");
}

/// PostgreSQL settings that cannot work are refused as the `store.*` field at fault, before
/// any connection is tried, and never quote the pepper.
#[test]
fn postgres_without_usable_settings_is_refused_by_field() {
    let dir = TempDir::new();
    let settings = |url: Option<&str>, pepper: Option<&str>| StoreSettings {
        data_dir: dir.0.clone(),
        store: StoreConfig {
            backend: StoreBackend::Postgres,
            url: url.map(|u| crate::config::SecretRef::parse(u).unwrap()),
            pepper: pepper.map(|p| crate::config::SecretRef::parse(p).unwrap()),
            node: "edge-1".into(),
        },
    };
    std::env::set_var("CF_TEST_BACKEND_URL", "postgres://cf@/cf?host=/nonexistent");
    std::env::set_var("CF_TEST_BACKEND_PEPPER", "not-hex-not-hex-not-hex");
    let cases = [
        (
            settings(None, Some("env:CF_TEST_BACKEND_PEPPER")),
            "store.url",
        ),
        (
            settings(Some("env:CF_TEST_BACKEND_URL"), None),
            "store.pepper",
        ),
        (
            settings(
                Some("env:CF_TEST_BACKEND_URL"),
                Some("env:CF_TEST_BACKEND_PEPPER"),
            ),
            "store.pepper",
        ),
    ];
    for (settings, expected) in cases {
        let error = open(&settings).err().expect("refused");
        match &error {
            StoreError::Invalid { field, .. } => assert_eq!(*field, expected, "{error}"),
            other => panic!("expected an invalid {expected}, got {other:?}"),
        }
        assert!(!error.to_string().contains("not-hex-not-hex"), "{error}");
        assert!(error.is_bad_input());
    }
    assert!(!dir.0.exists());
}

#[test]
fn open_fails_as_a_machine_error_when_data_dir_is_a_file() {
    let dir = TempDir::new();
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = dir.0.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let error = open(&sqlite_settings(file.join("sub")))
        .err()
        .expect("a file is no data directory");
    assert!(matches!(error, StoreError::Io(_)), "{error:?}");
    assert!(!error.is_bad_input());
}

#[test]
fn a_shared_backend_serves_threads_in_turn() {
    let dir = TempDir::new();
    let shared = open_shared(&sqlite_settings(&dir.0)).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                shared
                    .lock()
                    .create(named(&format!("k{i}")), "admin")
                    .unwrap()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .map(|t| t.join().unwrap().0.seq)
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [1, 2, 3, 4]);
    let now = unix_now();
    let listed = shared.lock().list().unwrap();
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|r| r.is_active_at_ms(now * 1000)));
}
