use super::*;
use crate::store::audit;
use crate::store::ids::new_key_id;
use std::path::PathBuf;

/// A fresh data directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("cf-keys-{}", new_key_id()));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn open() -> (TempDir, KeyStore) {
    let dir = TempDir::new();
    let store = KeyStore::open(&dir.0).unwrap();
    (dir, store)
}

fn named(name: &str) -> NewKey {
    NewKey {
        name: name.into(),
        ..NewKey::default()
    }
}

#[test]
fn create_returns_a_cf_secret_whose_hmac_is_stored() {
    let (_dir, mut store) = open();
    let (record, secret) = store.create(named("ci"), "test").unwrap();
    assert!(secret.starts_with("cf_") && secret.len() >= 46);
    assert!(record.id.starts_with("key_"));
    assert_eq!(record.prefix, &secret[..12]);
    assert_eq!(record.hash, store.pepper().hash(secret.as_bytes()));
    assert_eq!(store.get(&record.id).unwrap(), Some(record));
}

#[test]
fn create_stores_every_field() {
    let (_dir, mut store) = open();
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
    let (record, _) = store.create(new, "test").unwrap();
    let stored = store.get(&record.id).unwrap().unwrap();
    assert_eq!(stored.team, "platform");
    assert_eq!(stored.models, ["gpt-*"]);
    assert_eq!(stored.routes, ["api"]);
    assert_eq!(stored.scopes, ["chat", "embed"]);
    assert_eq!(stored.mcp_tools, ["github__search_*"]);
    assert_eq!(stored.rps, Some(2.5));
    assert_eq!(stored.rpm, Some(100));
    assert_eq!(stored.tpm, Some(50_000));
    assert_eq!(stored.max_concurrency, Some(4));
    assert_eq!(stored.budget_usd, Some(12.5));
    assert_eq!(stored.budget_tokens, Some(1_000_000));
    assert_eq!(stored.budget_period.as_deref(), Some("month"));
    assert_eq!(stored.metadata, metadata);
    // Thirty days from the moment of creation, which lies within its stamped second.
    let created_ms = stored.expires_at_ms.unwrap() - 30 * 86_400_000;
    assert!((stored.created_at * 1000..(stored.created_at + 1) * 1000).contains(&created_ms));
}

#[test]
fn get_unknown_id_is_none() {
    let (_dir, store) = open();
    assert_eq!(store.get("key_nope").unwrap(), None);
}

#[test]
fn list_returns_every_key_including_revoked() {
    let (_dir, mut store) = open();
    let (a, _) = store.create(named("a"), "test").unwrap();
    let (b, _) = store.create(named("b"), "test").unwrap();
    store.revoke(&a.id, "test").unwrap();
    let ids: Vec<String> = store.list().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&a.id) && ids.contains(&b.id));
}

#[test]
fn create_without_name_is_invalid_naming_the_field() {
    let (_dir, mut store) = open();
    let err = store.create(named("  "), "test").unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid { field: "name", .. }),
        "{err}"
    );
}

#[test]
fn bad_fields_are_invalid_naming_the_field() {
    let (_dir, mut store) = open();
    let cases: [(NewKey, &str); 4] = [
        (
            NewKey {
                rps: Some(-1.0),
                ..named("x")
            },
            "rps",
        ),
        (
            NewKey {
                budget_period: Some("week".into()),
                ..named("x")
            },
            "budget_period",
        ),
        (
            NewKey {
                expires_in: Some("30x".into()),
                ..named("x")
            },
            "expires_in",
        ),
        (
            NewKey {
                models: vec![String::new()],
                ..named("x")
            },
            "models",
        ),
    ];
    for (new, expected) in cases {
        match store.create(new, "test") {
            Err(StoreError::Invalid { field, .. }) => assert_eq!(field, expected),
            other => panic!("{expected}: {other:?}"),
        }
    }
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn duplicate_active_name_is_a_conflict_but_a_revoked_name_is_reusable() {
    let (_dir, mut store) = open();
    let (first, _) = store.create(named("ci"), "test").unwrap();
    assert!(matches!(
        store.create(named("ci"), "test"),
        Err(StoreError::Conflict(_))
    ));
    store.revoke(&first.id, "test").unwrap();
    assert!(store.create(named("ci"), "test").is_ok());
}

#[test]
fn update_changes_only_the_given_fields() {
    let (_dir, mut store) = open();
    let new = NewKey {
        team: "a".into(),
        rpm: Some(10),
        ..named("ci")
    };
    let (before, _) = store.create(new, "test").unwrap();
    let patch = KeyPatch {
        team: Some("b".into()),
        tpm: Some(Some(500)),
        ..KeyPatch::default()
    };
    let after = store.update(&before.id, patch, "test").unwrap();
    assert_eq!(after.team, "b");
    assert_eq!(after.tpm, Some(500));
    assert_eq!(after.rpm, Some(10));
    assert_eq!(after.name, "ci");
    assert_eq!(after.hash, before.hash);
    assert!(after.seq > before.seq);
    assert_eq!(store.get(&before.id).unwrap(), Some(after));
}

#[test]
fn update_with_null_clears_an_optional_field() {
    let (_dir, mut store) = open();
    let new = NewKey {
        rpm: Some(10),
        expires_in: Some("1h".into()),
        ..named("ci")
    };
    let (before, _) = store.create(new, "test").unwrap();
    let patch = KeyPatch {
        rpm: Some(None),
        expires_in: Some(None),
        ..KeyPatch::default()
    };
    let after = store.update(&before.id, patch, "test").unwrap();
    assert_eq!(after.rpm, None);
    assert_eq!(after.expires_at_ms, None);
}

#[test]
fn update_unknown_id_is_not_found() {
    let (_dir, mut store) = open();
    let err = store
        .update("key_nope", KeyPatch::default(), "test")
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)));
    assert!(err.is_bad_input());
}

#[test]
fn update_with_invalid_value_changes_nothing() {
    let (_dir, mut store) = open();
    let (before, _) = store.create(named("ci"), "test").unwrap();
    let patch = KeyPatch {
        team: Some("b".into()),
        budget_period: Some(Some("fortnight".into())),
        ..KeyPatch::default()
    };
    assert!(store.update(&before.id, patch, "test").is_err());
    assert_eq!(store.get(&before.id).unwrap(), Some(before));
}

#[test]
fn revoke_sets_revoked_at_and_deactivates() {
    let (_dir, mut store) = open();
    let (before, _) = store.create(named("ci"), "test").unwrap();
    let now_ms = unix_now_ms();
    assert!(before.is_active_at_ms(now_ms));
    let after = store.revoke(&before.id, "test").unwrap();
    assert!(after.revoked_at.is_some());
    assert!(!after.is_active_at_ms(now_ms));
    assert!(after.seq > before.seq);
}

#[test]
fn revoke_unknown_id_is_not_found() {
    let (_dir, mut store) = open();
    assert!(matches!(
        store.revoke("key_nope", "test"),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn rotate_issues_a_new_secret_and_keeps_the_old_for_the_grace() {
    let (_dir, mut store) = open();
    let (before, old_secret) = store.create(named("ci"), "test").unwrap();
    let (after, new_secret) = store
        .rotate(&before.id, Duration::from_secs(3600), "test")
        .unwrap();
    assert_eq!(after.id, before.id);
    assert_ne!(new_secret, old_secret);
    assert_eq!(after.hash, store.pepper().hash(new_secret.as_bytes()));
    assert_eq!(
        after.previous_hash,
        Some(store.pepper().hash(old_secret.as_bytes()))
    );
    let now_ms = unix_now_ms();
    assert!(after.previous_valid_until_ms.unwrap() > now_ms + 3_599_000);
    assert!(after.previous_is_valid_at_ms(now_ms));
    assert_eq!(after.prefix, &new_secret[..12]);
}

#[test]
fn rotate_with_zero_grace_ends_the_old_secret_now() {
    let (_dir, mut store) = open();
    let (before, _) = store.create(named("ci"), "test").unwrap();
    let (after, _) = store.rotate(&before.id, Duration::ZERO, "test").unwrap();
    assert!(!after.previous_is_valid_at_ms(unix_now_ms()));
}

#[test]
fn rotating_a_revoked_key_is_a_conflict() {
    let (_dir, mut store) = open();
    let (before, _) = store.create(named("ci"), "test").unwrap();
    store.revoke(&before.id, "test").unwrap();
    assert!(matches!(
        store.rotate(&before.id, Duration::ZERO, "test"),
        Err(StoreError::Conflict(_))
    ));
}

#[test]
fn expired_key_is_inactive() {
    let (_dir, mut store) = open();
    let new = NewKey {
        expires_in: Some("90m".into()),
        ..named("ci")
    };
    let before_ms = unix_now_ms();
    let (record, _) = store.create(new, "test").unwrap();
    let after_ms = unix_now_ms();
    let expires = record.expires_at_ms.unwrap();
    assert!((before_ms + 90 * 60_000..=after_ms + 90 * 60_000).contains(&expires));
    assert!(record.is_active_at_ms(expires - 1));
    assert!(!record.is_active_at_ms(expires));
}

/// A lifetime and a grace are counted from the moment of the write to the millisecond,
/// not from the start of its second (a `2s` key used to die up to a second early).
#[test]
fn expiry_and_grace_are_kept_to_the_millisecond() {
    let (_dir, mut store) = open();
    let new = NewKey {
        expires_in: Some("2500ms".into()),
        ..named("short")
    };
    let before_ms = unix_now_ms();
    let (record, _) = store.create(new, "test").unwrap();
    let after_ms = unix_now_ms();
    let expires = record.expires_at_ms.unwrap();
    assert!(
        (before_ms + 2_500..=after_ms + 2_500).contains(&expires),
        "{before_ms} {expires} {after_ms}"
    );
    assert_eq!(
        store.get(&record.id).unwrap().unwrap().expires_at_ms,
        Some(expires)
    );

    let before_ms = unix_now_ms();
    let (rotated, _) = store
        .rotate(&record.id, Duration::from_millis(4_250), "test")
        .unwrap();
    let after_ms = unix_now_ms();
    let until = rotated.previous_valid_until_ms.unwrap();
    assert!((before_ms + 4_250..=after_ms + 4_250).contains(&until));
    assert!(rotated.previous_is_valid_at_ms(until - 1));
    assert!(!rotated.previous_is_valid_at_ms(until));

    // The JSON form keeps unix seconds, rounded down, like created_at.
    let json = serde_json::json!(rotated);
    assert_eq!(json["expires_at"], expires.div_euclid(1000));
    assert_eq!(json["previous_valid_until"], until.div_euclid(1000));
}

/// Turns a store of this schema back into the one that kept expiry and grace in whole
/// seconds under their old names, as every store made before had them.
fn downgrade_to_seconds(dir: &Path) {
    let conn = Connection::open(dir.join(DB_FILE)).unwrap();
    conn.execute_batch(
        "ALTER TABLE keys RENAME COLUMN expires_at_ms TO expires_at;
         ALTER TABLE keys RENAME COLUMN previous_valid_until_ms TO previous_valid_until;
         UPDATE keys SET expires_at = expires_at / 1000,
             previous_valid_until = previous_valid_until / 1000;
         ALTER TABLE keys DROP COLUMN mcp_tools;
         PRAGMA user_version = 0;",
    )
    .unwrap();
}

#[test]
fn a_store_in_seconds_is_migrated_to_milliseconds_on_open() {
    let dir = TempDir::new();
    let (id, expires_s, until_s) = {
        let mut store = KeyStore::open(&dir.0).unwrap();
        let new = NewKey {
            expires_in: Some("1h".into()),
            ..named("old")
        };
        let (record, _) = store.create(new, "test").unwrap();
        let (rotated, _) = store
            .rotate(&record.id, Duration::from_secs(600), "test")
            .unwrap();
        (
            record.id,
            rotated.expires_at_ms.unwrap() / 1000,
            rotated.previous_valid_until_ms.unwrap() / 1000,
        )
    };
    downgrade_to_seconds(&dir.0);

    // Read-only (as `store migrate` reads a host's store): converted, the file untouched.
    let read_only = KeyStore::open_read_only(&dir.0).unwrap();
    let seen = read_only.get(&id).unwrap().unwrap();
    assert_eq!(seen.expires_at_ms, Some(expires_s * 1000));
    assert_eq!(seen.previous_valid_until_ms, Some(until_s * 1000));
    assert_eq!(read_only.list().unwrap(), vec![seen]);
    assert!(in_seconds(&read_only.conn).unwrap());
    drop(read_only);

    // Opened for writing: migrated once, in place.
    let store = KeyStore::open(&dir.0).unwrap();
    assert!(!in_seconds(&store.conn).unwrap());
    let version: i64 = store
        .conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, i64::from(USER_VERSION));
    let migrated = store.get(&id).unwrap().unwrap();
    assert_eq!(migrated.expires_at_ms, Some(expires_s * 1000));
    assert_eq!(migrated.previous_valid_until_ms, Some(until_s * 1000));
    drop(store);
    let reopened = KeyStore::open(&dir.0).unwrap();
    assert_eq!(
        reopened.get(&id).unwrap().unwrap().expires_at_ms,
        Some(expires_s * 1000),
        "a second open must not convert again"
    );
}

#[test]
fn seq_increases_with_every_mutation() {
    let (_dir, mut store) = open();
    assert_eq!(store.max_seq().unwrap(), 0);
    let (r, _) = store.create(named("ci"), "test").unwrap();
    assert_eq!(store.max_seq().unwrap(), 1);
    store.update(&r.id, KeyPatch::default(), "test").unwrap();
    store.rotate(&r.id, Duration::ZERO, "test").unwrap();
    store.revoke(&r.id, "test").unwrap();
    assert_eq!(store.max_seq().unwrap(), 4);
    // A failed mutation leaves the sequence alone.
    let _ = store.create(named(""), "test");
    assert_eq!(store.max_seq().unwrap(), 4);
}

#[test]
fn changes_since_returns_newer_rows_in_seq_order_including_revoked() {
    let (_dir, mut store) = open();
    let (a, _) = store.create(named("a"), "test").unwrap();
    let (b, _) = store.create(named("b"), "test").unwrap();
    let mark = store.max_seq().unwrap();
    store.revoke(&a.id, "test").unwrap();
    let (c, _) = store.create(named("c"), "test").unwrap();

    let changed = store.changes_since(mark).unwrap();
    let ids: Vec<&str> = changed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [a.id.as_str(), c.id.as_str()]);
    assert!(changed[0].revoked_at.is_some());
    assert!(changed.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(store.changes_since(0).unwrap().len(), 3);
    assert!(store
        .changes_since(store.max_seq().unwrap())
        .unwrap()
        .is_empty());
    assert!(b.seq <= mark);
}

#[test]
fn a_second_connection_sees_changes_from_the_first() {
    let (dir, mut writer) = open();
    let reader = KeyStore::open(&dir.0).unwrap();
    let (r, _) = writer.create(named("ci"), "test").unwrap();
    assert_eq!(reader.max_seq().unwrap(), 1);
    assert_eq!(reader.changes_since(0).unwrap()[0].id, r.id);
    // Both connections hash with the same pepper.
    assert_eq!(reader.pepper().hash(b"x"), writer.pepper().hash(b"x"));
}

#[test]
fn the_secret_is_never_stored() {
    let (dir, mut store) = open();
    let (r, created) = store.create(named("ci"), "test").unwrap();
    let (_, rotated) = store
        .rotate(&r.id, Duration::from_secs(60), "test")
        .unwrap();
    drop(store);
    for entry in fs::read_dir(&dir.0).unwrap() {
        let bytes = fs::read(entry.unwrap().path()).unwrap();
        for secret in [&created, &rotated] {
            // The whole secret, and the part of it past the display prefix.
            for needle in [secret.as_bytes(), &secret.as_bytes()[12..]] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "secret found in the data directory"
                );
            }
        }
    }
}

#[test]
fn every_mutation_is_audited_with_actor_and_before_after() {
    let (dir, mut store) = open();
    let (r, _) = store.create(named("ci"), "cli:alice").unwrap();
    store
        .update(
            &r.id,
            KeyPatch {
                team: Some("b".into()),
                ..KeyPatch::default()
            },
            "admin",
        )
        .unwrap();
    store.rotate(&r.id, Duration::ZERO, "admin").unwrap();
    store.revoke(&r.id, "admin").unwrap();
    let entries = audit::read(&dir.0).unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["create", "update", "rotate", "revoke"]);
    assert_eq!(entries[0].actor, "cli:alice");
    assert!(entries[0].before.is_none());
    assert_eq!(entries[1].before.as_ref().unwrap().team, "");
    assert_eq!(entries[1].after.as_ref().unwrap().team, "b");
    assert!(entries
        .iter()
        .all(|e| e.key_id.as_deref() == Some(r.id.as_str())));
}

#[test]
fn record_json_has_no_hash_or_seq() {
    let (_dir, mut store) = open();
    let (r, _) = store.create(named("ci"), "test").unwrap();
    let json = serde_json::to_value(&r).unwrap();
    let object = json.as_object().unwrap();
    for hidden in ["hash", "previous_hash", "seq", "key", "secret"] {
        assert!(!object.contains_key(hidden), "{hidden} shown");
    }
    for shown in [
        "id",
        "name",
        "team",
        "prefix",
        "created_at",
        "expires_at",
        "revoked_at",
    ] {
        assert!(object.contains_key(shown), "{shown} missing");
    }
}

#[test]
fn open_creates_the_data_dir_with_a_wal_database() {
    let dir = TempDir::new();
    let nested = dir.0.join("nested");
    let store = KeyStore::open(&nested).unwrap();
    let mode: String = store
        .conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert!(nested.join(DB_FILE).is_file());
    assert!(nested.join(crate::store::pepper::PEPPER_FILE).is_file());
}

#[test]
fn debug_redacts_the_hashes() {
    let (_dir, mut store) = open();
    let (r, secret) = store.create(named("ci"), "test").unwrap();
    let (r, _) = store
        .rotate(&r.id, Duration::from_secs(60), "test")
        .unwrap();
    let shown = format!("{r:?}");
    assert!(shown.contains("<redacted>"));
    assert!(!shown.contains(&format!("{:?}", r.hash)));
    assert!(!shown.contains(&format!("{:?}", r.previous_hash.unwrap())));
    assert!(!shown.contains(&secret));
}

#[test]
fn concurrent_writers_on_separate_connections_get_distinct_seqs() {
    let dir = TempDir::new();
    KeyStore::open(&dir.0).unwrap();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let path = dir.0.clone();
            std::thread::spawn(move || {
                let mut store = KeyStore::open(&path).unwrap();
                for i in 0..20 {
                    store.create(named(&format!("w{w}-{i}")), "test").unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let store = KeyStore::open(&dir.0).unwrap();
    let seqs: Vec<u64> = store
        .changes_since(0)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, (1..=80).collect::<Vec<u64>>());
    assert_eq!(store.max_seq().unwrap(), 80);
}

#[test]
fn read_only_open_reads_every_key_and_changes_nothing() {
    let (dir, mut store) = open();
    let (created, _) = store.create(named("ci"), "test").unwrap();
    drop(store);
    let files_before: Vec<_> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let pepper_before = fs::read(dir.0.join(super::super::pepper::PEPPER_FILE)).unwrap();

    let mut reader = KeyStore::open_read_only(&dir.0).unwrap();
    assert_eq!(reader.list().unwrap(), vec![created.clone()]);
    assert_eq!(
        reader.pepper().hash(b"cf_x"),
        KeyStore::open(&dir.0).unwrap().pepper().hash(b"cf_x")
    );
    // A write through it is refused by SQLite, not performed.
    assert!(reader.revoke(&created.id, "test").is_err());
    assert!(reader
        .get(&created.id)
        .unwrap()
        .unwrap()
        .revoked_at
        .is_none());
    drop(reader);

    // Nothing new but SQLite's own WAL side files of keys.db.
    for entry in fs::read_dir(&dir.0).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            files_before.contains(&name) || name.to_string_lossy().starts_with("keys.db-"),
            "{name:?} appeared"
        );
    }
    assert_eq!(
        fs::read(dir.0.join(super::super::pepper::PEPPER_FILE)).unwrap(),
        pepper_before
    );
}

#[test]
fn read_only_open_of_a_directory_without_a_store_creates_nothing() {
    let dir = TempDir::new();
    fs::create_dir_all(&dir.0).unwrap();
    let err = KeyStore::open_read_only(&dir.0).unwrap_err();
    assert!(err.to_string().contains(DB_FILE), "{err}");
    assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 0);
}

#[test]
fn mcp_tools_are_stored_updated_and_read_back() {
    let (_dir, mut store) = open();
    let new = NewKey {
        mcp_tools: vec!["github__search_*".into(), "fs__read_?".into()],
        ..named("agent")
    };
    let (created, _) = store.create(new, "test").unwrap();
    assert_eq!(created.mcp_tools, ["github__search_*", "fs__read_?"]);
    assert_eq!(store.get(&created.id).unwrap().unwrap(), created);

    let patch = KeyPatch {
        mcp_tools: Some(vec!["fs__*".into()]),
        ..KeyPatch::default()
    };
    let updated = store.update(&created.id, patch, "test").unwrap();
    assert_eq!(updated.mcp_tools, ["fs__*"]);
    assert_eq!(store.changes_since(1).unwrap(), vec![updated.clone()]);

    // Rotation and revocation keep them.
    let (rotated, _) = store.rotate(&created.id, Duration::ZERO, "test").unwrap();
    assert_eq!(rotated.mcp_tools, ["fs__*"]);
    let revoked = store.revoke(&created.id, "test").unwrap();
    assert_eq!(
        store.get(&revoked.id).unwrap().unwrap().mcp_tools,
        ["fs__*"]
    );

    let refused = store.update(
        &created.id,
        KeyPatch {
            mcp_tools: Some(vec!["fs__read file".into()]),
            ..KeyPatch::default()
        },
        "test",
    );
    assert!(matches!(
        refused,
        Err(StoreError::Invalid {
            field: "mcp_tools",
            ..
        })
    ));
}

/// A store made before keys had tool permissions (no `mcp_tools` on keys or access
/// requests, `user_version` 2): read-only (as `store migrate` reads it), every key and
/// request reads as permitting every tool and the file is left alone; opened for writing,
/// it gains the columns once, keeps its rows, and takes tool globs.
#[test]
fn a_store_without_mcp_tools_gains_them_on_open() {
    let dir = TempDir::new();
    let (id, request_id) = {
        let mut store = KeyStore::open(&dir.0).unwrap();
        let (record, _) = store.create(named("old"), "test").unwrap();
        let asked = crate::access::NewAccessRequest {
            name: "jit".into(),
            ttl: "1h".into(),
            reason: "r".into(),
            ..Default::default()
        };
        let submitted = crate::access::flow::submit(
            &mut store,
            asked,
            &crate::access::flow::Requester::Operator("cli:bob".into()),
            &[],
            crate::clock::unix_now_ms(),
        )
        .unwrap();
        (record.id, submitted.request.id)
    };
    Connection::open(dir.0.join(DB_FILE))
        .unwrap()
        .execute_batch(
            "ALTER TABLE keys DROP COLUMN mcp_tools;
             ALTER TABLE access_requests DROP COLUMN mcp_tools;
             PRAGMA user_version = 2;",
        )
        .unwrap();

    let mut read_only = KeyStore::open_read_only(&dir.0).unwrap();
    assert!(read_only.get(&id).unwrap().unwrap().mcp_tools.is_empty());
    assert_eq!(read_only.list().unwrap().len(), 1);
    let request = read_only.access_get(&request_id).unwrap().unwrap();
    assert!(request.mcp_tools.is_empty());
    assert_eq!(read_only.access_list(None).unwrap().len(), 1);
    assert!(!has_column(&read_only.conn, "keys", "mcp_tools").unwrap());
    drop(read_only);

    let mut store = KeyStore::open(&dir.0).unwrap();
    assert!(has_column(&store.conn, "keys", "mcp_tools").unwrap());
    assert!(has_column(&store.conn, "access_requests", "mcp_tools").unwrap());
    let version: i32 = store
        .conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    assert_eq!(version, USER_VERSION);
    assert!(store.get(&id).unwrap().unwrap().mcp_tools.is_empty());
    assert!(store
        .access_get(&request_id)
        .unwrap()
        .unwrap()
        .mcp_tools
        .is_empty());
    let patch = KeyPatch {
        mcp_tools: Some(vec!["fs__*".into()]),
        ..KeyPatch::default()
    };
    store.update(&id, patch, "test").unwrap();
    drop(store);
    // A second open adds nothing and keeps what was written.
    let reopened = KeyStore::open(&dir.0).unwrap();
    assert_eq!(reopened.get(&id).unwrap().unwrap().mcp_tools, ["fs__*"]);
}
