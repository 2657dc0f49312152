//! The store contract, held against both backends: the embedded SQLite `KeyStore` and the
//! fleet's `PgStore`, each test run once per backend by `both_backends!`. Then what only the
//! PostgreSQL store has: the change listener, concurrent opens and migrations, the pepper
//! verifier, the node registry, and errors that never show the URL's password.
//!
//! Every PostgreSQL test starts its own private server (`common::postgres`).

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::postgres::PgServer;
use credentialflow::store::audit::{self, AuditEntry};
use credentialflow::store::postgres::{
    PgChangeListener, PgErrorKind, PgStore, CHANNEL, SCHEMA_VERSION,
};
use credentialflow::store::{
    ids::new_key_id, unix_now, KeyPatch, KeyStore, NewKey, Pepper, StoreError,
};

/// The fleet's pepper in these tests.
const PEPPER_HEX: &str = "5f1e0b9c2a7d4e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9011223344556677";

fn pepper() -> Pepper {
    Pepper::from_hex(PEPPER_HEX).unwrap()
}

fn named(name: &str) -> NewKey {
    NewKey {
        name: name.into(),
        ..NewKey::default()
    }
}

/// The embedded store in a temporary data directory.
struct SqliteFixture {
    dir: PathBuf,
}

impl SqliteFixture {
    fn new() -> SqliteFixture {
        SqliteFixture {
            dir: std::env::temp_dir().join(format!("cf-store-{}", new_key_id())),
        }
    }

    fn open(&self) -> KeyStore {
        KeyStore::open(&self.dir).unwrap()
    }

    fn audit(&self, _store: &KeyStore) -> Vec<AuditEntry> {
        audit::read(&self.dir).unwrap()
    }
}

impl Drop for SqliteFixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The shared store on a private PostgreSQL.
struct PgFixture {
    server: PgServer,
}

impl PgFixture {
    fn new() -> PgFixture {
        PgFixture {
            server: PgServer::start(),
        }
    }

    fn open(&self) -> PgStore {
        PgStore::open(&self.server.url(), pepper(), "edge-1").unwrap()
    }

    fn audit(&self, store: &PgStore) -> Vec<AuditEntry> {
        store.audit_entries().unwrap()
    }
}

/// Generates `NAME::sqlite` and `NAME::postgres`, running the same body with `$fx` bound to
/// each backend's fixture: one contract, two backends.
macro_rules! both_backends {
    ($(fn $name:ident($fx:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn sqlite() {
                let $fx = SqliteFixture::new();
                $body
            }

            #[test]
            fn postgres() {
                let $fx = PgFixture::new();
                $body
            }
        }
    )*};
}

both_backends! {
    fn create_stores_every_field_and_only_the_hmac_of_the_secret(fx) {
        let mut store = fx.open();
        let mut metadata = serde_json::Map::new();
        metadata.insert("owner".into(), "alice".into());
        let new = NewKey {
            name: "ci".into(),
            team: "platform".into(),
            models: vec!["gpt-*".into()],
            routes: vec!["api".into()],
            scopes: vec!["chat".into(), "embed".into()],
            mcp_tools: vec!["github__search_*".into()],
            rps: Some(2.5),
            rpm: Some(100),
            tpm: Some(50_000),
            max_concurrency: Some(4),
            budget_usd: Some(12.5),
            budget_tokens: Some(1_000_000),
            budget_period: Some("month".into()),
            expires_in: Some("30d".into()),
            metadata: metadata.clone(),
        };
        let (record, secret) = store.create(new, "test").unwrap();
        assert!(secret.starts_with("cf_") && secret.len() >= 46);
        assert_eq!(record.prefix, &secret[..12]);
        assert_eq!(record.hash, store.pepper().hash(secret.as_bytes()));
        let stored = store.get(&record.id).unwrap().unwrap();
        assert_eq!(stored, record);
        assert_eq!(stored.team, "platform");
        assert_eq!(stored.models, ["gpt-*"]);
        assert_eq!(stored.routes, ["api"]);
        assert_eq!(stored.scopes, ["chat", "embed"]);
        assert_eq!(stored.rps, Some(2.5));
        assert_eq!(stored.rpm, Some(100));
        assert_eq!(stored.tpm, Some(50_000));
        assert_eq!(stored.max_concurrency, Some(4));
        assert_eq!(stored.budget_usd, Some(12.5));
        assert_eq!(stored.budget_tokens, Some(1_000_000));
        assert_eq!(stored.budget_period.as_deref(), Some("month"));
        assert_eq!(stored.metadata, metadata);
        // Thirty days from the moment of creation, kept to the millisecond.
        let expires = stored.expires_at_ms.expect("expiry");
        let created_ms = expires - 30 * 86_400_000;
        assert!((stored.created_at * 1000..(stored.created_at + 1) * 1000).contains(&created_ms));
        assert!(stored.is_active_at_ms(expires - 1));
        assert!(!stored.is_active_at_ms(expires));
        assert_eq!(store.get("key_nope").unwrap(), None);
    }

    fn list_returns_every_key_including_revoked_oldest_first(fx) {
        let mut store = fx.open();
        let (a, _) = store.create(named("a"), "test").unwrap();
        let (b, _) = store.create(named("b"), "test").unwrap();
        store.revoke(&a.id, "test").unwrap();
        let listed = store.list().unwrap();
        let mut ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        let mut expected = [a.id.as_str(), b.id.as_str()];
        expected.sort_unstable();
        assert_eq!(ids, expected);
        assert!(listed.iter().any(|r| r.id == a.id && r.revoked_at.is_some()));
    }

    fn bad_fields_are_invalid_naming_the_field_and_change_nothing(fx) {
        let mut store = fx.open();
        let long = "n".repeat(257);
        let cases: Vec<(NewKey, &str)> = vec![
            (named("  "), "name"),
            (named(&long), "name"),
            (named("line\nbreak"), "name"),
            (NewKey { rps: Some(-1.0), ..named("x") }, "rps"),
            (NewKey { budget_usd: Some(f64::NAN), ..named("x") }, "budget_usd"),
            (NewKey { rpm: Some(u64::MAX), ..named("x") }, "rpm"),
            (NewKey { budget_period: Some("week".into()), ..named("x") }, "budget_period"),
            (NewKey { expires_in: Some("30x".into()), ..named("x") }, "expires_in"),
            (NewKey { models: vec![String::new()], ..named("x") }, "models"),
            (NewKey { scopes: vec!["s".into(); 257], ..named("x") }, "scopes"),
            (NewKey { mcp_tools: vec!["t__*".into(); 65], ..named("x") }, "mcp_tools"),
            (NewKey { mcp_tools: vec!["t".repeat(129)], ..named("x") }, "mcp_tools"),
            (NewKey { mcp_tools: vec!["fs__read file".into()], ..named("x") }, "mcp_tools"),
        ];
        for (new, expected) in cases {
            match store.create(new, "test") {
                Err(StoreError::Invalid { field, .. }) => assert_eq!(field, expected),
                other => panic!("{expected}: {other:?}"),
            }
        }
        assert!(store.list().unwrap().is_empty());
        assert_eq!(store.max_seq().unwrap(), 0);
    }

    fn active_names_are_unique_and_a_revoked_name_is_reusable(fx) {
        let mut store = fx.open();
        let (first, _) = store.create(named("ci"), "test").unwrap();
        let (other, _) = store.create(named("other"), "test").unwrap();
        assert!(matches!(store.create(named("ci"), "test"), Err(StoreError::Conflict(_))));
        let rename = KeyPatch { name: Some("ci".into()), ..KeyPatch::default() };
        assert!(matches!(store.update(&other.id, rename, "test"), Err(StoreError::Conflict(_))));
        store.revoke(&first.id, "test").unwrap();
        assert!(store.create(named("ci"), "test").is_ok());
    }

    fn update_changes_only_the_given_fields_and_null_clears(fx) {
        let mut store = fx.open();
        let new = NewKey { team: "a".into(), rpm: Some(10), expires_in: Some("1h".into()), ..named("ci") };
        let (before, _) = store.create(new, "test").unwrap();
        let patch = KeyPatch {
            team: Some("b".into()),
            tpm: Some(Some(500)),
            rpm: Some(None),
            expires_in: Some(None),
            ..KeyPatch::default()
        };
        let after = store.update(&before.id, patch, "test").unwrap();
        assert_eq!(after.team, "b");
        assert_eq!(after.tpm, Some(500));
        assert_eq!(after.rpm, None);
        assert_eq!(after.expires_at_ms, None);
        assert_eq!(after.name, "ci");
        assert_eq!(after.hash, before.hash);
        assert!(after.seq > before.seq);
        assert_eq!(store.get(&before.id).unwrap(), Some(after.clone()));

        let invalid = KeyPatch {
            team: Some("c".into()),
            budget_period: Some(Some("fortnight".into())),
            ..KeyPatch::default()
        };
        assert!(matches!(
            store.update(&before.id, invalid, "test"),
            Err(StoreError::Invalid { field: "budget_period", .. })
        ));
        assert_eq!(store.get(&before.id).unwrap(), Some(after));
    }

    fn mcp_tools_round_trip_through_create_update_and_access_requests(fx) {
        use credentialflow::access::flow::{self, Requester};
        use credentialflow::access::NewAccessRequest;

        let mut store = fx.open();
        let new = NewKey { mcp_tools: vec!["github__search_*".into(), "fs__read_?".into()], ..named("agent") };
        let (created, _) = store.create(new, "test").unwrap();
        assert_eq!(created.mcp_tools, ["github__search_*", "fs__read_?"]);
        assert_eq!(store.get(&created.id).unwrap(), Some(created.clone()));
        let patch = KeyPatch { mcp_tools: Some(vec!["fs__*".into()]), ..KeyPatch::default() };
        let updated = store.update(&created.id, patch, "test").unwrap();
        assert_eq!(store.list().unwrap(), vec![updated.clone()]);
        assert_eq!(store.changes_since(created.seq).unwrap(), vec![updated.clone()]);
        let audited = fx.audit(&store);
        let update = audited.iter().find(|e| e.action == "update").unwrap();
        assert_eq!(update.before.as_ref().unwrap().mcp_tools, ["github__search_*", "fs__read_?"]);
        assert_eq!(update.after.as_ref().unwrap().mcp_tools, ["fs__*"]);

        // Out of bounds: refused naming the field, nothing written.
        let long = NewKey { mcp_tools: vec!["t".repeat(129)], ..named("long") };
        assert!(matches!(store.create(long, "test"), Err(StoreError::Invalid { field: "mcp_tools", .. })));
        assert_eq!(store.list().unwrap().len(), 1);

        let now = credentialflow::clock::unix_now_ms();
        let asked = NewAccessRequest {
            name: "jit-agent".into(),
            mcp_tools: vec!["fs__read_*".into()],
            ttl: "1h".into(),
            reason: "tools".into(),
            ..NewAccessRequest::default()
        };
        let bob = Requester::Operator("cli:bob".into());
        let submitted = flow::submit(&mut store, asked, &bob, &[], now).unwrap();
        let id = submitted.request.id;
        assert_eq!(store.access_get(&id).unwrap().unwrap().mcp_tools, ["fs__read_*"]);
        let (approved, key) = flow::approve(&mut store, &id, "cli:carol", None, now).unwrap();
        assert_eq!(approved.mcp_tools, ["fs__read_*"]);
        assert_eq!(store.get(&key.id).unwrap().unwrap().mcp_tools, ["fs__read_*"]);
        assert_eq!(store.access_list(None).unwrap(), vec![approved]);
    }

    fn unknown_ids_are_not_found(fx) {
        let mut store = fx.open();
        let err = store.update("key_nope", KeyPatch::default(), "test").unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)) && err.is_bad_input());
        assert!(matches!(store.revoke("key_nope", "test"), Err(StoreError::NotFound(_))));
        assert!(matches!(
            store.rotate("key_nope", Duration::ZERO, "test"),
            Err(StoreError::NotFound(_))
        ));
    }

    fn revoke_deactivates_once_and_is_idempotent(fx) {
        let mut store = fx.open();
        let (before, _) = store.create(named("ci"), "test").unwrap();
        let now_ms = unix_now() * 1000;
        assert!(before.is_active_at_ms(now_ms));
        let after = store.revoke(&before.id, "test").unwrap();
        assert!(after.revoked_at.is_some() && !after.is_active_at_ms(now_ms));
        assert!(after.seq > before.seq);
        let again = store.revoke(&before.id, "test").unwrap();
        assert_eq!(again, after);
        assert_eq!(store.max_seq().unwrap(), after.seq);
    }

    fn rotate_keeps_the_old_secret_for_the_grace_only(fx) {
        let mut store = fx.open();
        let (before, old_secret) = store.create(named("ci"), "test").unwrap();
        let (after, new_secret) = store.rotate(&before.id, Duration::from_secs(3600), "test").unwrap();
        assert_eq!(after.id, before.id);
        assert_ne!(new_secret, old_secret);
        assert_eq!(after.hash, store.pepper().hash(new_secret.as_bytes()));
        assert_eq!(after.previous_hash, Some(store.pepper().hash(old_secret.as_bytes())));
        assert_eq!(after.prefix, &new_secret[..12]);
        let now_ms = unix_now() * 1000;
        assert!(after.previous_valid_until_ms.unwrap() >= now_ms + 3_599_000);
        assert!(after.previous_is_valid_at_ms(now_ms));
        assert_eq!(store.get(&before.id).unwrap(), Some(after.clone()));

        // A second rotation with no grace: the first secret is gone, the second dies now.
        let (third, _) = store.rotate(&before.id, Duration::ZERO, "test").unwrap();
        assert_eq!(third.previous_hash, Some(after.hash));
        assert!(!third.previous_is_valid_at_ms((unix_now() + 1) * 1000));

        store.revoke(&before.id, "test").unwrap();
        assert!(matches!(
            store.rotate(&before.id, Duration::ZERO, "test"),
            Err(StoreError::Conflict(_))
        ));
    }

    fn seq_counts_every_mutation_and_nothing_else(fx) {
        let mut store = fx.open();
        assert_eq!(store.max_seq().unwrap(), 0);
        let (r, _) = store.create(named("ci"), "test").unwrap();
        assert_eq!(store.max_seq().unwrap(), 1);
        store.update(&r.id, KeyPatch::default(), "test").unwrap();
        store.rotate(&r.id, Duration::ZERO, "test").unwrap();
        store.revoke(&r.id, "test").unwrap();
        assert_eq!(store.max_seq().unwrap(), 4);
        let _ = store.create(named(""), "test");
        assert!(store.update("key_nope", KeyPatch::default(), "test").is_err());
        assert_eq!(store.max_seq().unwrap(), 4);
    }

    fn changes_since_sees_every_write_in_order(fx) {
        let mut store = fx.open();
        let (a, _) = store.create(named("a"), "test").unwrap();
        let (b, _) = store.create(named("b"), "test").unwrap();
        let mark = store.max_seq().unwrap();
        store.revoke(&a.id, "test").unwrap();
        let (c, _) = store.create(named("c"), "test").unwrap();
        store.rotate(&b.id, Duration::ZERO, "test").unwrap();

        let changed = store.changes_since(mark).unwrap();
        let ids: Vec<&str> = changed.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, [a.id.as_str(), c.id.as_str(), b.id.as_str()]);
        assert!(changed[0].revoked_at.is_some());
        assert!(changed.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(changed.last().unwrap().seq, store.max_seq().unwrap());
        assert_eq!(store.changes_since(0).unwrap().len(), 3);
        assert!(store.changes_since(store.max_seq().unwrap()).unwrap().is_empty());
    }

    fn a_second_connection_sees_changes_from_the_first(fx) {
        let mut writer = fx.open();
        let reader = fx.open();
        let (r, _) = writer.create(named("ci"), "test").unwrap();
        assert_eq!(reader.max_seq().unwrap(), 1);
        assert_eq!(reader.changes_since(0).unwrap()[0].id, r.id);
        assert_eq!(reader.pepper().hash(b"x"), writer.pepper().hash(b"x"));
    }

    fn every_mutation_is_audited_with_actor_and_before_after(fx) {
        let mut store = fx.open();
        let (r, _) = store.create(named("ci"), "cli:alice").unwrap();
        let team = KeyPatch { team: Some("b".into()), ..KeyPatch::default() };
        store.update(&r.id, team, "admin").unwrap();
        store.rotate(&r.id, Duration::ZERO, "admin").unwrap();
        store.revoke(&r.id, "admin").unwrap();
        let entries = fx.audit(&store);
        let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["create", "update", "rotate", "revoke"]);
        assert_eq!(entries[0].actor, "cli:alice");
        assert!(entries[0].before.is_none());
        assert_eq!(entries[0].after.as_ref().unwrap().name, "ci");
        assert_eq!(entries[1].before.as_ref().unwrap().team, "");
        assert_eq!(entries[1].after.as_ref().unwrap().team, "b");
        assert!(entries[3].after.as_ref().unwrap().revoked_at.is_some());
        assert!(entries.iter().all(|e| e.key_id.as_deref() == Some(r.id.as_str())));
        assert!(entries.iter().all(|e| e.time.ends_with('Z')));
        // The serde form of a record has no hash: the entries hold none.
        assert!(entries.iter().all(|e| e.after.as_ref().unwrap().hash == [0; 32]));
    }

    fn concurrent_writers_never_slip_behind_a_reader(fx) {
        // Four writers on their own connections, and a reader doing what the credential
        // cache's watcher does: apply changes_since(mark), move the mark to the last seq seen.
        // If a write could commit with a seq below one already seen, the reader would miss it.
        let writers = 4;
        let per_writer = 20;
        let fx = &fx;
        // The store exists before the race: concurrent first opens are not what this tests.
        fx.open();
        let done = std::sync::atomic::AtomicBool::new(false);
        let seen = std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let store = fx.open();
                let mut mark = 0;
                let mut seen = std::collections::HashSet::new();
                loop {
                    let finished = done.load(std::sync::atomic::Ordering::Acquire);
                    for r in store.changes_since(mark).unwrap() {
                        mark = r.seq;
                        seen.insert(r.id);
                    }
                    if finished {
                        return seen;
                    }
                }
            });
            let handles: Vec<_> = (0..writers)
                .map(|w| {
                    scope.spawn(move || {
                        let mut store = fx.open();
                        for i in 0..per_writer {
                            store.create(named(&format!("w{w}-{i}")), "test").unwrap();
                        }
                    })
                })
                .collect();
            for handle in handles {
                handle.join().unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Release);
            reader.join().unwrap()
        });
        let store = fx.open();
        let seqs: Vec<u64> = store.changes_since(0).unwrap().iter().map(|r| r.seq).collect();
        let total = (writers * per_writer) as u64;
        assert_eq!(seqs, (1..=total).collect::<Vec<u64>>());
        assert_eq!(store.max_seq().unwrap(), total);
        assert_eq!(seen.len() as u64, total, "the reader missed a write");
    }
}

// ---- PostgreSQL only ----

#[test]
fn a_notification_wakes_the_listener_after_a_write_from_another_connection() {
    let fx = PgFixture::new();
    let mut store = fx.open();
    let mut listener = PgChangeListener::connect(&fx.server.url()).unwrap();
    assert!(
        !listener.wait(Duration::from_millis(100)).unwrap(),
        "woke with no write"
    );

    let url = fx.server.url();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let mut other = PgStore::open(&url, pepper(), "edge-2").unwrap();
        other.create(named("ci"), "test").unwrap()
    });
    let started = Instant::now();
    assert!(
        listener.wait(Duration::from_secs(10)).unwrap(),
        "no notification"
    );
    let (created, _) = writer.join().unwrap();
    // Woken by the write, not by the timeout; and the write is readable at once.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(store.changes_since(0).unwrap()[0].id, created.id);

    // A burst of three writes wakes the listener at most three times, then it sleeps again
    // (notifications that arrived together are consumed together).
    for name in ["a", "b", "c"] {
        store.create(named(name), "test").unwrap();
    }
    assert!(listener.wait(Duration::from_secs(10)).unwrap());
    let extra_wakes = (0..4)
        .take_while(|_| listener.wait(Duration::from_millis(200)).unwrap())
        .count();
    assert!(extra_wakes <= 2, "{extra_wakes} extra wakes for 3 writes");

    // The channel carries the sequence number of each write.
    let mut client = fx.server.client();
    client.batch_execute(&format!("LISTEN {CHANNEL}")).unwrap();
    store.revoke(&created.id, "test").unwrap();
    let mut notifications = client.notifications();
    let note = postgres::fallible_iterator::FallibleIterator::next(
        &mut notifications.timeout_iter(Duration::from_secs(10)),
    )
    .unwrap()
    .expect("a notification");
    assert_eq!(note.payload(), store.max_seq().unwrap().to_string());
}

#[test]
fn the_listener_reports_a_lost_server_as_unreachable() {
    let mut fx = PgFixture::new();
    fx.open();
    let mut listener = PgChangeListener::connect(&fx.server.url()).unwrap();
    fx.server.stop();
    let err = listener.wait(Duration::from_secs(10)).unwrap_err();
    match err {
        StoreError::Postgres(e) => assert!(e.is_unreachable(), "{e}"),
        other => panic!("{other}"),
    }
    let err = PgStore::open(&fx.server.url(), pepper(), "edge-1").unwrap_err();
    assert!(
        matches!(&err, StoreError::Postgres(e) if e.is_unreachable()),
        "{err}"
    );
    fx.server.start_again();
    assert!(PgStore::open(&fx.server.url(), pepper(), "edge-1").is_ok());
}

/// Migration 6 on a store of version 5 (made before keys had MCP tool permissions): its keys
/// and access requests are kept, read back with an empty `mcp_tools` (every tool, as
/// before), and take tool globs from then on.
#[test]
fn migration_6_gives_existing_keys_and_requests_an_empty_tool_list() {
    use credentialflow::access::flow::{self, Requester};
    use credentialflow::access::NewAccessRequest;

    let server = PgServer::start();
    let url = server.url();
    let (key_id, request_id) = {
        let mut store = PgStore::open(&url, pepper(), "edge-1").unwrap();
        let (key, _) = store.create(named("old"), "test").unwrap();
        let asked = NewAccessRequest {
            name: "jit".into(),
            ttl: "1h".into(),
            reason: "r".into(),
            ..NewAccessRequest::default()
        };
        let bob = Requester::Operator("cli:bob".into());
        let now = credentialflow::clock::unix_now_ms();
        let submitted = flow::submit(&mut store, asked, &bob, &[], now).unwrap();
        (key.id, submitted.request.id)
    };
    // Back to version 5, as a binary before this one left the database (with the later
    // migrations 7 and 8 undone as well).
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute(
            "ALTER TABLE keys DROP COLUMN mcp_tools;
             ALTER TABLE access_requests DROP COLUMN mcp_tools;
             DROP TABLE key_last_used;
             DROP TABLE usage_rollup;
             DELETE FROM schema_migrations WHERE version >= 6;",
        )
        .unwrap();

    let mut store = PgStore::open(&url, pepper(), "edge-2").unwrap();
    // Migrations 7 and 8 (after 6) were undone too, so all three run again.
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    let row = client
        .query_one(
            "SELECT name, applied_by FROM schema_migrations WHERE version = 6",
            &[],
        )
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("key mcp tools".to_owned(), "edge-2".to_owned())
    );
    let key = store.get(&key_id).unwrap().unwrap();
    assert!(key.mcp_tools.is_empty());
    assert_eq!(key.name, "old");
    let request = store.access_get(&request_id).unwrap().unwrap();
    assert!(request.mcp_tools.is_empty());

    let patch = KeyPatch {
        mcp_tools: Some(vec!["github__*".into()]),
        ..KeyPatch::default()
    };
    store.update(&key_id, patch, "test").unwrap();
    drop(store);
    let reopened = PgStore::open(&url, pepper(), "edge-3").unwrap();
    assert_eq!(
        reopened.get(&key_id).unwrap().unwrap().mcp_tools,
        ["github__*"]
    );
    let stored: String = client
        .query_one("SELECT mcp_tools FROM keys WHERE id = $1", &[&key_id])
        .unwrap()
        .get(0);
    assert_eq!(stored, r#"["github__*"]"#);
}

#[test]
fn nodes_opening_at_once_all_succeed_and_the_schema_is_applied_once() {
    let server = PgServer::start();
    let url = server.create_database("fleet");
    let nodes = 4;
    let barrier = Arc::new(Barrier::new(nodes));
    let opened: Vec<_> = (0..nodes)
        .map(|n| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PgStore::open(&url, pepper(), &format!("edge-{n}"))
                    .map(|s| s.schema_version().unwrap())
            })
        })
        .collect();
    for handle in opened {
        assert_eq!(handle.join().unwrap().unwrap(), SCHEMA_VERSION);
    }
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let rows = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<i32>>());
    let verifiers: i64 = client
        .query_one(
            "SELECT count(*) FROM store_meta WHERE name = 'pepper_verifier'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(verifiers, 1);
}

#[test]
fn a_newer_schema_is_refused_naming_both_versions() {
    let fx = PgFixture::new();
    let mut store = fx.open();
    let (kept, _) = store.create(named("ci"), "test").unwrap();
    drop(store);
    let newer = SCHEMA_VERSION + 1;
    fx.server
        .client()
        .execute(
            "INSERT INTO schema_migrations (version, name, applied_at, applied_by) \
             VALUES ($1, 'from the future', 0, 'edge-9')",
            &[&newer],
        )
        .unwrap();
    let err = PgStore::open(&fx.server.url(), pepper(), "edge-1").unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, StoreError::Postgres(e) if e.kind() == PgErrorKind::SchemaTooNew),
        "{text}"
    );
    assert!(text.contains(&format!("version {newer}")), "{text}");
    assert!(
        text.contains(&format!("version {SCHEMA_VERSION}")),
        "{text}"
    );
    // Refused without touching anything.
    let count: i64 = fx
        .server
        .client()
        .query_one("SELECT count(*) FROM keys WHERE id = $1", &[&kept.id])
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

#[test]
fn a_node_with_another_pepper_is_refused_without_showing_either() {
    let fx = PgFixture::new();
    fx.open();
    let other_hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let err = PgStore::open(
        &fx.server.url(),
        Pepper::from_hex(other_hex).unwrap(),
        "edge-2",
    )
    .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        matches!(&err, StoreError::Postgres(e) if e.kind() == PgErrorKind::PepperMismatch),
        "{text}"
    );
    assert!(text.contains("pepper"), "{text}");
    for hex in [PEPPER_HEX, other_hex] {
        assert!(!text.contains(&hex[..16]), "{text}");
    }
    // The right pepper still opens it.
    assert!(PgStore::open(&fx.server.url(), pepper(), "edge-2").is_ok());
}

#[test]
fn the_database_holds_neither_secrets_nor_the_pepper() {
    let fx = PgFixture::new();
    let mut store = fx.open();
    let (r, created) = store.create(named("ci"), "test").unwrap();
    let (_, rotated) = store
        .rotate(&r.id, Duration::from_secs(60), "test")
        .unwrap();
    let mut client = fx.server.client();
    let mut dump = String::new();
    for table in [
        "keys",
        "audit_log",
        "store_meta",
        "nodes",
        "schema_migrations",
        "webhook_queue",
    ] {
        for row in client
            .query(&format!("SELECT t::text FROM {table} t"), &[])
            .unwrap()
        {
            dump.push_str(row.get::<_, &str>(0));
        }
    }
    assert!(dump.contains(&r.id), "the dump is not of the store");
    for secret in [&created, &rotated] {
        assert!(!dump.contains(secret.as_str()) && !dump.contains(&secret[12..]));
    }
    // Neither the pepper as text nor as bytea's hex.
    assert!(!dump.to_lowercase().contains(&PEPPER_HEX[..16]));
}

#[test]
fn the_url_password_never_appears_in_an_error() {
    let mut server = PgServer::start();
    let password = "Hunter2-s3cret";
    server.require_password(password);
    let dir = server.socket_dir().display().to_string();
    let good = format!("host={dir} user=postgres dbname=postgres password={password}");
    if let Err(e) = PgStore::open(&good, pepper(), "edge-1") {
        panic!("the right password: {e}");
    }

    let failing = [
        // Wrong password (the server refuses the login).
        format!("host={dir} user=postgres dbname=postgres password={password}x"),
        // Right password, no such database.
        format!("host={dir} user=postgres dbname=nope password={password}"),
        // URL form, nothing listening there.
        format!(
            "postgres://postgres:{password}@/postgres?host=/nonexistent-{}",
            new_key_id()
        ),
        // URL form, percent-encoded, TLS demanded.
        format!(
            "postgres://postgres:{}@localhost/postgres?sslmode=require",
            password.replace('-', "%2D")
        ),
        // Malformed.
        format!("postgres://postgres:{password}@localhost:notaport/postgres"),
    ];
    for url in &failing {
        let err = PgStore::open(url, pepper(), "edge-1").unwrap_err();
        let text = format!("{err} | {err:?}");
        assert!(
            !text.contains(password) && !text.contains("s3cret"),
            "{text}"
        );
        let err = PgChangeListener::connect(url).unwrap_err();
        let text = format!("{err} | {err:?}");
        assert!(
            !text.contains(password) && !text.contains("s3cret"),
            "{text}"
        );
    }
    let err = PgStore::open(&failing[0], pepper(), "edge-1").unwrap_err();
    assert!(
        matches!(&err, StoreError::Postgres(e) if e.is_unreachable()),
        "{err}"
    );
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );
    // TLS is supported: demanding it of a server that is not there is an outage.
    let err = PgStore::open(&failing[3], pepper(), "edge-1").unwrap_err();
    assert!(
        matches!(&err, StoreError::Postgres(e) if e.is_unreachable()),
        "{err}"
    );
}

#[test]
fn heartbeats_upsert_one_row_per_node() {
    let fx = PgFixture::new();
    let store = fx.open();
    assert!(store.nodes().unwrap().is_empty());
    store.heartbeat("edge-1", "0.1.0", 1).unwrap();
    store.heartbeat("edge-2", "0.1.0", 1).unwrap();
    store.heartbeat("edge-1", "0.1.1", 2).unwrap();
    let nodes = store.nodes().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0].node, "edge-1");
    assert_eq!(nodes[0].version, "0.1.1");
    assert_eq!(nodes[0].config_generation, 2);
    assert!((nodes[0].last_seen - unix_now()).abs() <= 5);
    assert_eq!(nodes[1].node, "edge-2");

    // Bounded and printable, like every stored name.
    for (node, version, generation, field) in [
        ("", "1", 1, "node"),
        ("edge\n1", "1", 1, "node"),
        (&*"n".repeat(257), "1", 1, "node"),
        ("edge-1", "\u{7}", 1, "version"),
        ("edge-1", "1", u64::MAX, "config_generation"),
    ] {
        match store.heartbeat(node, version, generation) {
            Err(StoreError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert_eq!(store.nodes().unwrap().len(), 2);
    let err = PgStore::open(&fx.server.url(), pepper(), "bad\nnode").unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid { field: "node", .. }),
        "{err}"
    );
}

#[test]
fn actors_are_bounded_and_non_key_actions_are_audited() {
    let fx = PgFixture::new();
    let mut store = fx.open();
    store
        .audit_append("admin", "reload", None, None, None)
        .unwrap();
    assert!(matches!(
        store.audit_append(&"a".repeat(300), "reload", None, None, None),
        Err(StoreError::Invalid { field: "actor", .. })
    ));
    assert!(matches!(
        store.create(named("ci"), "bad\nactor"),
        Err(StoreError::Invalid { field: "actor", .. })
    ));
    assert_eq!(store.max_seq().unwrap(), 0);
    // A sequence number past every row (past BIGINT, even) has no changes after it.
    assert!(store.changes_since(u64::MAX).unwrap().is_empty());
    let entries = store.audit_entries().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].actor.as_str(), entries[0].action.as_str()),
        ("admin", "reload")
    );
    assert_eq!(entries[0].key_id, None);
}
