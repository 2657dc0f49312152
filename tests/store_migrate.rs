//! `credentialflow store migrate --config FILE --from-sqlite DIR`: a single host's store
//! copied into a fleet's PostgreSQL store, run as the real binary against a private
//! PostgreSQL (`common::postgres`). Every key arrives field for field and its secret still
//! authenticates under the fleet's pepper; the usage ledger arrives with the same totals per
//! key and team; a second run copies nothing; a wrong pepper and a conflicting key are
//! refused without writing; the URL's password is never printed; access requests arrive row
//! for row and one decided on the fleet since is never overwritten.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::postgres::PgServer;
use common::TempDir;
use credentialflow::auth::CredentialCache;
use credentialflow::store::audit::{self, AuditEntry};
use credentialflow::store::postgres::PgStore;
use credentialflow::store::usage::{
    GroupBy, Ledger, PgUsage, SqliteUsage, UsageBackend, UsageEvent,
};
use credentialflow::store::{unix_now, KeyBackend, KeyPatch, KeyRecord, KeyStore, NewKey, Pepper};

/// The environment variables the test config takes `[store] url` and `pepper` from.
const URL_VAR: &str = "CF_MIGRATE_TEST_URL";
const PEPPER_VAR: &str = "CF_MIGRATE_TEST_PEPPER";

/// A host's store in a temporary data directory, with the secrets it issued.
struct Host {
    dir: TempDir,
    /// Secrets that must authenticate after the copy: (key id, secret).
    live: Vec<(String, String)>,
    /// Secrets that must not: revoked, expired, or rotated out of their grace.
    dead: Vec<String>,
}

impl Host {
    /// A store holding an active key with every limit set, a revoked key, an expired key, a
    /// key rotated with its old secret still in grace, and one rotated with no grace; and
    /// the audit entries those actions wrote.
    fn populated() -> Host {
        let dir = TempDir::new("migrate-host");
        let mut store = KeyStore::open(dir.path()).unwrap();
        let mut live = Vec::new();
        let mut dead = Vec::new();

        let (full, secret) = store
            .create(
                NewKey {
                    name: "billing".into(),
                    team: "platform".into(),
                    models: vec!["gpt-*".into()],
                    routes: vec!["api".into()],
                    scopes: vec!["chat".into(), "embed".into()],
                    mcp_tools: vec!["github__search_*".into(), "fs__read_?".into()],
                    rps: Some(2.5),
                    rpm: Some(120),
                    tpm: Some(50_000),
                    max_concurrency: Some(4),
                    budget_usd: Some(12.75),
                    budget_tokens: Some(1_000_000),
                    budget_period: Some("month".into()),
                    expires_in: Some("30d".into()),
                    metadata: serde_json::from_str(r#"{"owner":"ops","tier":3,"z":[1,2]}"#)
                        .unwrap(),
                },
                "cli:test",
            )
            .unwrap();
        live.push((full.id.clone(), secret));

        let (revoked, secret) = store.create(named("old-ci"), "admin").unwrap();
        store.revoke(&revoked.id, "admin").unwrap();
        dead.push(secret);

        let (expired, secret) = store.create(named("trial"), "admin").unwrap();
        dead.push(secret);

        let (rotated, old_secret) = store.create(named("deploy"), "admin").unwrap();
        let (_, new_secret) = store
            .rotate(&rotated.id, Duration::from_secs(3600), "admin")
            .unwrap();
        live.push((rotated.id.clone(), old_secret));
        live.push((rotated.id.clone(), new_secret));

        let (cut, old_secret) = store.create(named("cut"), "admin").unwrap();
        let (_, new_secret) = store.rotate(&cut.id, Duration::ZERO, "admin").unwrap();
        dead.push(old_secret);
        live.push((cut.id.clone(), new_secret));

        store
            .update(
                &full.id,
                KeyPatch {
                    rpm: Some(Some(240)),
                    ..KeyPatch::default()
                },
                "admin",
            )
            .unwrap();
        // An entry that is not a key write, as a gateway's reload writes it.
        KeyBackend::append_audit(&mut store, "admin", "reload", None, None, None).unwrap();
        drop(store);

        // Expire `trial` a minute ago, as time would have: the store refuses a lifetime in
        // the past, so the row is changed directly.
        let db = rusqlite::Connection::open(dir.path().join("keys.db")).unwrap();
        db.execute(
            "UPDATE keys SET expires_at_ms = ?1 WHERE id = ?2",
            rusqlite::params![(unix_now() - 60) * 1000, expired.id],
        )
        .unwrap();
        drop(db);

        Host { dir, live, dead }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The store's keys, read the way the command reads them.
    fn keys(&self) -> Vec<KeyRecord> {
        KeyStore::open_read_only(self.path())
            .unwrap()
            .list()
            .unwrap()
    }

    fn audit(&self) -> Vec<AuditEntry> {
        audit::read(self.path()).unwrap()
    }

    /// The pepper file's text: what an operator sets as `[store] pepper` for the fleet.
    fn pepper_hex(&self) -> String {
        std::fs::read_to_string(self.path().join("pepper"))
            .unwrap()
            .trim()
            .to_owned()
    }
}

fn named(name: &str) -> NewKey {
    NewKey {
        name: name.into(),
        ..NewKey::default()
    }
}

/// A fleet config naming the PostgreSQL store by environment variables, in its own
/// directory.
struct Fleet {
    dir: TempDir,
}

impl Fleet {
    fn new() -> Fleet {
        let dir = TempDir::new("migrate-fleet");
        std::fs::write(
            dir.path().join("fleet.toml"),
            format!(
                r#"
[server]
data_dir = "journal"

[store]
backend = "postgres"
url = "env:{URL_VAR}"
pepper = "env:{PEPPER_VAR}"
node = "edge-1"
"#
            ),
        )
        .unwrap();
        Fleet { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("fleet.toml")
    }
}

/// What a run printed and how it exited.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    fn assert_code(&self, code: i32) {
        assert_eq!(
            self.code,
            Some(code),
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `credentialflow store migrate` with `url` and `pepper` in the environment.
fn migrate(fleet: &Fleet, host: &Path, url: &str, pepper: &str) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_credentialflow"))
        .args(["store", "migrate", "--config"])
        .arg(fleet.config())
        .arg("--from-sqlite")
        .arg(host)
        .env(URL_VAR, url)
        .env(PEPPER_VAR, pepper)
        .env("USER", "operator")
        .stdin(Stdio::null())
        .output()
        .expect("run credentialflow");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The `postgres://` URL of the server's default database over its Unix socket.
fn url_of(server: &PgServer, password: Option<&str>) -> String {
    let user = match password {
        Some(password) => format!("postgres:{password}"),
        None => "postgres".to_owned(),
    };
    format!(
        "postgres://{user}@/postgres?host={}",
        server.socket_dir().display()
    )
}

fn open_fleet(server: &PgServer, host: &Host) -> PgStore {
    PgStore::open(
        &server.url(),
        Pepper::from_hex(&host.pepper_hex()).unwrap(),
        "inspector",
    )
    .unwrap()
}

/// Records as compared across stores: everything but the change number, which each store
/// draws from its own sequence.
fn without_seq(records: &[KeyRecord]) -> Vec<KeyRecord> {
    records
        .iter()
        .cloned()
        .map(|mut r| {
            r.seq = 0;
            r
        })
        .collect()
}

/// A host store with a key and two access requests holding MCP tool globs (one approved,
/// so its minted key holds them too, one pending), or, `before_tools`, the same store as a
/// binary from before tool permissions left it (no `mcp_tools` columns).
fn host_with_tools(before_tools: bool) -> (Host, String) {
    use credentialflow::access::flow::{self, Requester};
    use credentialflow::access::NewAccessRequest;

    let dir = TempDir::new("migrate-tools");
    let now = credentialflow::clock::unix_now_ms();
    let mut store = KeyStore::open(dir.path()).unwrap();
    let tools = if before_tools {
        Vec::new()
    } else {
        vec!["github__search_*".to_owned(), "fs__read_?".to_owned()]
    };
    let (agent, _) = store
        .create(
            NewKey {
                mcp_tools: tools.clone(),
                ..named("agent")
            },
            "admin",
        )
        .unwrap();
    let asked = |name: &str| NewAccessRequest {
        name: name.into(),
        mcp_tools: tools.clone(),
        ttl: "1h".into(),
        reason: "tools".into(),
        ..NewAccessRequest::default()
    };
    let bob = Requester::Operator("cli:bob".into());
    let approved = flow::submit(&mut store, asked("jit-agent"), &bob, &[], now).unwrap();
    flow::approve(&mut store, &approved.request.id, "cli:carol", None, now).unwrap();
    flow::submit(&mut store, asked("jit-pending"), &bob, &[], now).unwrap();
    drop(store);
    if before_tools {
        rusqlite::Connection::open(dir.path().join("keys.db"))
            .unwrap()
            .execute_batch(
                "ALTER TABLE keys DROP COLUMN mcp_tools;
                 ALTER TABLE access_requests DROP COLUMN mcp_tools;
                 PRAGMA user_version = 2;",
            )
            .unwrap();
    }
    let host = Host {
        dir,
        live: Vec::new(),
        dead: Vec::new(),
    };
    (host, agent.id)
}

/// `store migrate` carries `mcp_tools`: of keys (the one created with them and the one an
/// approved request minted) and of access requests, field for field; a host store from
/// before tool permissions is read as it is (without a column to read, every key and
/// request permits every tool, as it did there) and stays untouched.
#[test]
fn mcp_tools_of_keys_and_access_requests_are_carried() {
    let server = PgServer::start();
    let (host, agent_id) = host_with_tools(false);
    let fleet = Fleet::new();
    let run = migrate(
        &fleet,
        host.path(),
        &url_of(&server, None),
        &host.pepper_hex(),
    );
    run.assert_code(0);
    let pg = open_fleet(&server, &host);
    let pg_keys = pg.list().unwrap();
    assert_eq!(without_seq(&pg_keys), without_seq(&host.keys()));
    let globs = ["github__search_*", "fs__read_?"];
    let agent = pg_keys.iter().find(|k| k.id == agent_id).unwrap();
    assert_eq!(agent.mcp_tools, globs);
    let minted = pg_keys.iter().find(|k| k.name == "jit-agent").unwrap();
    assert_eq!(minted.mcp_tools, globs);
    let mut pg = pg;
    let requests = pg.access_list(None).unwrap();
    assert_eq!(requests.len(), 2);
    assert!(
        requests.iter().all(|r| r.mcp_tools == globs),
        "{requests:?}"
    );

    let old_server = PgServer::start();
    let (old_host, old_agent) = host_with_tools(true);
    let source_files = snapshot(old_host.path());
    let run = migrate(
        &Fleet::new(),
        old_host.path(),
        &url_of(&old_server, None),
        &old_host.pepper_hex(),
    );
    run.assert_code(0);
    assert_eq!(
        snapshot(old_host.path()),
        source_files,
        "the host store is untouched"
    );
    let mut pg = open_fleet(&old_server, &old_host);
    let keys = pg.list().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.mcp_tools.is_empty()));
    assert!(keys.iter().any(|k| k.id == old_agent));
    let requests = pg.access_list(None).unwrap();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.mcp_tools.is_empty()));
}

/// Hex of a hash, to look for in output.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_key_is_copied_field_for_field_and_its_secret_authenticates() {
    let server = PgServer::start();
    let host = Host::populated();
    let fleet = Fleet::new();
    let source_files = snapshot(host.path());

    let run = migrate(
        &fleet,
        host.path(),
        &url_of(&server, None),
        &host.pepper_hex(),
    );
    run.assert_code(0);
    let sqlite_keys = host.keys();
    let sqlite_audit = host.audit();
    assert_eq!(sqlite_keys.len(), 5);
    assert!(
        run.stdout.contains(&format!(
            "copied 5 keys (0 already present), {} audit entries (0 already present)",
            sqlite_audit.len()
        )),
        "{}",
        run.output()
    );
    assert!(
        run.stdout.contains(", 0 usage records (0 already present)"),
        "{}",
        run.output()
    );

    let pg = open_fleet(&server, &host);
    let pg_keys = pg.list().unwrap();
    assert_eq!(without_seq(&pg_keys), without_seq(&sqlite_keys));
    // Hashes are not in a record's serde form: compared one by one, they are the host's.
    for (pg, sqlite) in pg_keys.iter().zip(&sqlite_keys) {
        assert_eq!(pg.hash, sqlite.hash, "{}", pg.id);
        assert_eq!(pg.previous_hash, sqlite.previous_hash, "{}", pg.id);
    }
    // Each copied key has a number of the shared store's sequence, as a write there would.
    let mut seqs: Vec<u64> = pg_keys.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), pg_keys.len());
    assert_eq!(pg.max_seq().unwrap(), *seqs.last().unwrap());
    assert!(seqs[0] >= 1);

    // The host's audit log, in order, then the run's own entry.
    let pg_audit = pg.audit_entries().unwrap();
    assert_eq!(pg_audit.len(), sqlite_audit.len() + 1);
    assert_eq!(pg_audit[..sqlite_audit.len()], sqlite_audit[..]);
    let own = pg_audit.last().unwrap();
    assert_eq!(own.action, "migrate");
    assert_eq!(own.actor, "cli:operator");
    assert_eq!((own.key_id.as_ref(), own.before.as_ref()), (None, None));

    // The credential cache a node builds from the shared store, hashing presented secrets
    // under the fleet's pepper, accepts exactly the host's live secrets.
    let cache = CredentialCache::from_records(
        Pepper::from_hex(&host.pepper_hex()).unwrap(),
        pg_keys.clone(),
    );
    let now_ms = credentialflow::clock::unix_now_ms();
    for (id, secret) in &host.live {
        let key = cache.authenticate_at_ms(secret.as_bytes(), now_ms);
        assert_eq!(
            key.map(|k| k.id.clone()).as_ref(),
            Some(id),
            "live secret of {id}"
        );
    }
    for secret in &host.dead {
        assert!(cache
            .authenticate_at_ms(secret.as_bytes(), now_ms)
            .is_none());
    }

    // The host's store was only read.
    assert_eq!(snapshot(host.path()), source_files);
}

#[test]
fn a_second_run_copies_nothing_and_a_new_key_alone() {
    let server = PgServer::start();
    let host = Host::populated();
    let fleet = Fleet::new();
    let url = url_of(&server, None);
    migrate(&fleet, host.path(), &url, &host.pepper_hex()).assert_code(0);
    let pg = open_fleet(&server, &host);
    let (keys, audit, seq) = (
        pg.list().unwrap(),
        pg.audit_entries().unwrap(),
        pg.max_seq().unwrap(),
    );
    let host_audit = host.audit().len();

    let again = migrate(&fleet, host.path(), &url, &host.pepper_hex());
    again.assert_code(0);
    assert!(
        again.stdout.contains(&format!(
            "copied 0 keys (5 already present), 0 audit entries ({host_audit} already present)"
        )),
        "{}",
        again.output()
    );
    // Not a row more, not a change number drawn: watchers have nothing to pick up.
    assert_eq!(pg.list().unwrap(), keys);
    assert_eq!(pg.audit_entries().unwrap(), audit);
    assert_eq!(pg.max_seq().unwrap(), seq);

    // A key the host issued since is copied on its own, with its audit entry.
    let (late, secret) = KeyStore::open(host.path())
        .unwrap()
        .create(named("late"), "admin")
        .unwrap();
    let third = migrate(&fleet, host.path(), &url, &host.pepper_hex());
    third.assert_code(0);
    assert!(
        third.stdout.contains(&format!(
            "copied 1 keys (5 already present), 1 audit entries ({host_audit} already present)"
        )),
        "{}",
        third.output()
    );
    let copied = pg.get(&late.id).unwrap().expect("the late key is copied");
    assert!(copied.seq > seq);
    assert_eq!(pg.changes_since(seq).unwrap().len(), 1);
    assert_eq!(pg.list().unwrap().len(), 6);
    let cache = CredentialCache::from_records(
        Pepper::from_hex(&host.pepper_hex()).unwrap(),
        pg.list().unwrap(),
    );
    assert!(cache
        .authenticate_at_ms(secret.as_bytes(), credentialflow::clock::unix_now_ms())
        .is_some());
}

#[test]
fn a_pepper_that_is_not_the_hosts_is_refused_before_the_database_is_touched() {
    let server = PgServer::start();
    let host = Host::populated();
    let fleet = Fleet::new();
    let url = url_of(&server, None);
    let own = host.pepper_hex();
    // Another 32-byte pepper, and a passphrase that is no pepper file's form.
    let other = own
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect::<String>();
    let passphrase = "the-fleet-passphrase-nobody-can-guess-42";

    for (wrong, why) in [
        (other.as_str(), "never authenticate"),
        // Not in the pepper file's form: the config load refuses it already.
        (passphrase, "64 hex"),
    ] {
        let run = migrate(&fleet, host.path(), &url, wrong);
        run.assert_code(1);
        let output = run.output();
        assert!(output.contains("store.pepper"), "{output}");
        assert!(output.contains(why), "{output}");
        assert!(
            !output.contains(wrong),
            "the given pepper is shown: {output}"
        );
        assert!(
            !output.contains(&own),
            "the host's pepper is shown: {output}"
        );
        assert!(!output.contains("copied "), "{output}");
    }
    // Not even the schema was created (so no pepper verifier was recorded either).
    let created: Option<String> = server
        .client()
        .query_one("SELECT to_regclass('keys')::TEXT", &[])
        .unwrap()
        .get(0);
    assert_eq!(created, None);
}

#[test]
fn a_key_stored_with_other_content_is_a_conflict_and_nothing_is_written() {
    let server = PgServer::start();
    let host = Host::populated();
    let fleet = Fleet::new();
    let url = url_of(&server, None);
    migrate(&fleet, host.path(), &url, &host.pepper_hex()).assert_code(0);

    // The fleet changes a copied key; the host issues a new one.
    let mut pg = open_fleet(&server, &host);
    let target = host
        .keys()
        .into_iter()
        .find(|k| k.name == "billing")
        .unwrap();
    let changed = pg
        .update(
            &target.id,
            KeyPatch {
                team: Some("finance".into()),
                ..KeyPatch::default()
            },
            "admin",
        )
        .unwrap();
    let (late, _) = KeyStore::open(host.path())
        .unwrap()
        .create(named("late"), "admin")
        .unwrap();
    let (keys, audit) = (pg.list().unwrap(), pg.audit_entries().unwrap());

    let run = migrate(&fleet, host.path(), &url, &host.pepper_hex());
    run.assert_code(1);
    let output = run.output();
    assert!(
        output.contains(&format!("conflict: key {}", target.id)),
        "{output}"
    );
    assert!(output.contains("not overwritten"), "{output}");
    assert!(output.contains("nothing was copied"), "{output}");
    assert!(
        !output.contains(&late.id),
        "only conflicts are named: {output}"
    );
    for hash in [target.hash, changed.hash] {
        assert!(!output.contains(&hex(&hash)), "a hash is printed: {output}");
    }
    // The fleet's version stands, and the run left nothing behind: not the new key, not
    // an audit entry.
    assert_eq!(pg.get(&target.id).unwrap().unwrap().team, "finance");
    assert_eq!(pg.list().unwrap(), keys);
    assert_eq!(pg.audit_entries().unwrap(), audit);
}

#[test]
fn the_url_password_never_appears_in_output() {
    let mut server = PgServer::start();
    let password = "Pw-0f-The-Fl33t";
    server.require_password(password);
    let host = Host::populated();
    let fleet = Fleet::new();

    let run = migrate(
        &fleet,
        host.path(),
        &url_of(&server, Some(password)),
        &host.pepper_hex(),
    );
    run.assert_code(0);
    assert!(!run.output().contains(password), "{}", run.output());
    assert!(!run.output().contains("Fl33t"), "{}", run.output());

    let wrong = format!("{password}x");
    let run = migrate(
        &fleet,
        host.path(),
        &url_of(&server, Some(&wrong)),
        &host.pepper_hex(),
    );
    run.assert_code(2);
    assert!(
        run.output().contains("password authentication failed"),
        "{}",
        run.output()
    );
    assert!(!run.output().contains("Fl33t"), "{}", run.output());
}

#[test]
fn access_requests_are_copied_once_and_one_decided_since_is_a_conflict() {
    use credentialflow::access::flow::{self, Requester};
    use credentialflow::access::{AccessStatus, NewAccessRequest};

    let server = PgServer::start();
    let host = Host::populated();
    let now = credentialflow::clock::unix_now_ms();
    let asked = |name: &str| NewAccessRequest {
        name: name.into(),
        team: "ml".into(),
        models: vec!["gpt-4o-mini".into()],
        ttl: "1h".into(),
        reason: "migration".into(),
        ..NewAccessRequest::default()
    };
    let bob = Requester::Operator("cli:bob".into());
    let (approved_id, token, pending_id) = {
        let mut store = KeyStore::open(host.path()).unwrap();
        let approved = flow::submit(&mut store, asked("jit-approved"), &bob, &[], now).unwrap();
        flow::approve(&mut store, &approved.request.id, "cli:carol", None, now).unwrap();
        let pending = flow::submit(&mut store, asked("jit-pending"), &bob, &[], now).unwrap();
        let denied = flow::submit(&mut store, asked("jit-denied"), &bob, &[], now).unwrap();
        flow::deny(&mut store, &denied.request.id, "cli:carol", None, now).unwrap();
        (
            approved.request.id,
            approved.claim_token.expose().to_owned(),
            pending.request.id,
        )
    };
    let host_requests = KeyStore::open_read_only(host.path())
        .unwrap()
        .access_list(None)
        .unwrap();
    assert_eq!(host_requests.len(), 3);
    let fleet = Fleet::new();
    let url = url_of(&server, None);

    let run = migrate(&fleet, host.path(), &url, &host.pepper_hex());
    run.assert_code(0);
    assert!(
        run.stdout
            .contains(", 3 access requests (0 already present)"),
        "{}",
        run.output()
    );
    // Row for row, the claim token's hash included (AccessRequest's equality compares it).
    let mut pg = open_fleet(&server, &host);
    assert_eq!(pg.access_list(None).unwrap(), host_requests);
    let steps: Vec<(String, String)> = pg
        .audit_entries()
        .unwrap()
        .into_iter()
        .filter(|e| e.request_id.as_deref() == Some(approved_id.as_str()))
        .map(|e| (e.action, e.actor))
        .collect();
    assert_eq!(
        steps,
        [
            ("access.request".to_owned(), "cli:bob".to_owned()),
            ("access.approve".to_owned(), "cli:carol".to_owned()),
        ]
    );

    let again = migrate(&fleet, host.path(), &url, &host.pepper_hex());
    again.assert_code(0);
    assert!(
        again
            .stdout
            .contains(", 0 access requests (3 already present)"),
        "{}",
        again.output()
    );
    assert_eq!(pg.access_list(None).unwrap(), host_requests);

    // The fleet decides the pending request; the host's copy is now older, and a run that
    // would overwrite the decision is refused whole.
    flow::deny(&mut pg, &pending_id, "cli:dave", None, now).unwrap();
    let decided = pg.access_list(None).unwrap();
    let conflict = migrate(&fleet, host.path(), &url, &host.pepper_hex());
    conflict.assert_code(1);
    let output = conflict.output();
    assert!(
        output.contains(&format!("conflict: access request {pending_id}")),
        "{output}"
    );
    assert!(output.contains("nothing was copied"), "{output}");
    assert_eq!(pg.access_list(None).unwrap(), decided);
    let status = pg.access_get(&pending_id).unwrap().unwrap().status;
    assert_eq!(status, AccessStatus::Denied);

    // The copied approval is claimed on the fleet with the token the host handed out.
    let (claimed, key, secret) = flow::claim(&mut pg, &approved_id, &token, now).unwrap();
    assert_eq!(claimed.status, AccessStatus::Claimed);
    assert_eq!(key.hash, pg.pepper().hash(secret.as_bytes()));
    assert!(!output.contains(&token), "{output}");
}

/// `n` metered requests spread over the host's live keys and two teams, with costs and
/// token counts that differ per request, as the gateway's ledger writer stores them.
fn meter(host: &Host, first: usize, n: usize) {
    let (ledger, sender) = Ledger::start(host.path()).unwrap();
    for i in first..first + n {
        sender.record(UsageEvent {
            ts_ms: 1_700_000_000_000 + i as i64,
            // Every tenth request reuses one id, as a client that sets its own would.
            request_id: if i % 10 == 0 {
                "client-fixed-id".into()
            } else {
                format!("req-{i}")
            },
            key_id: Some(host.live[i % host.live.len()].0.clone()),
            team: ["platform", ""][i % 2].into(),
            model: Some("gpt-4o-mini".into()),
            prompt: None,
            route: Some("api".into()),
            status: 200,
            prompt_tokens: 10 + i as u64 % 7,
            completion_tokens: 5 + i as u64 % 3,
            cached_tokens: 0,
            cost_nano_usd: 1_500 + 37 * i as u64,
        });
    }
    ledger.stop();
}

/// The fleet ledger's rows: how many, and how many of them `node` wrote.
fn fleet_ledger_rows(server: &PgServer, node: &str) -> (i64, i64) {
    let row = server
        .client()
        .query_one(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE node = $1) FROM usage",
            &[&node],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// Usage per key and per team in the host's ledger and in the fleet's: they must be equal.
fn assert_same_totals(server: &PgServer, host: &Host) {
    let mut fleet = PgUsage::new(&server.url(), "inspector");
    let mut source = SqliteUsage::new(host.path());
    for group_by in [GroupBy::Key, GroupBy::Team] {
        let expected = source.report(group_by, 0).unwrap();
        assert!(!expected.is_empty());
        assert_eq!(
            fleet.report(group_by, 0).unwrap(),
            expected,
            "by {group_by}"
        );
    }
}

#[test]
fn the_ledger_is_copied_once_however_many_runs_and_totals_per_key_are_the_hosts() {
    let server = PgServer::start();
    let host = Host::populated();
    // More than one batch of the copy (1000 rows), with repeated request ids.
    meter(&host, 0, 2_500);
    let fleet = Fleet::new();
    let url = url_of(&server, None);
    let source_files = snapshot(host.path());

    let run = migrate(&fleet, host.path(), &url, &host.pepper_hex());
    run.assert_code(0);
    assert!(
        run.stdout.contains("copied 5 keys (0 already present), ")
            && run
                .stdout
                .contains(", 2500 usage records (0 already present)"),
        "{}",
        run.output()
    );
    assert_eq!(fleet_ledger_rows(&server, "edge-1"), (2_500, 2_500));
    assert_same_totals(&server, &host);
    assert_eq!(snapshot(host.path()), source_files);

    // Twice: nothing more.
    let again = migrate(&fleet, host.path(), &url, &host.pepper_hex());
    again.assert_code(0);
    assert!(
        again
            .stdout
            .contains(", 0 usage records (2500 already present)"),
        "{}",
        again.output()
    );
    assert_eq!(fleet_ledger_rows(&server, "edge-1").0, 2_500);
    assert_same_totals(&server, &host);

    // What the host metered since is copied on its own.
    meter(&host, 2_500, 3);
    let third = migrate(&fleet, host.path(), &url, &host.pepper_hex());
    third.assert_code(0);
    assert!(
        third
            .stdout
            .contains(", 3 usage records (2500 already present)"),
        "{}",
        third.output()
    );
    assert_eq!(fleet_ledger_rows(&server, "edge-1").0, 2_503);
    assert_same_totals(&server, &host);
}

#[test]
fn a_ledger_row_the_gateway_never_writes_stops_the_ledger_copy_whole() {
    let server = PgServer::start();
    let host = Host::populated();
    meter(&host, 0, 1_200);
    // A row past the first batch: the batch before it must not stay behind.
    let db = rusqlite::Connection::open(host.path().join("usage.db")).unwrap();
    db.execute("UPDATE usage SET prompt_tokens = -1 WHERE rowid = 1100", [])
        .unwrap();
    drop(db);
    let fleet = Fleet::new();

    let run = migrate(
        &fleet,
        host.path(),
        &url_of(&server, None),
        &host.pepper_hex(),
    );
    run.assert_code(1);
    assert!(
        run.stdout.contains("copied 5 keys") && run.stdout.contains("usage ledger not copied"),
        "{}",
        run.output()
    );
    assert!(
        run.stderr
            .contains("row 1100: prompt_tokens is negative (-1)"),
        "{}",
        run.output()
    );
    assert_eq!(fleet_ledger_rows(&server, "edge-1").0, 0);
    assert_eq!(open_fleet(&server, &host).list().unwrap().len(), 5);
}

#[test]
fn a_config_on_the_embedded_store_or_a_directory_without_one_is_refused() {
    let host = Host::populated();
    let sqlite = TempDir::new("migrate-sqlite-config");
    let config = sqlite.path().join("one-host.toml");
    std::fs::write(&config, "[server]\ndata_dir = \"data\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_credentialflow"))
        .args(["store", "migrate", "--config"])
        .arg(&config)
        .arg("--from-sqlite")
        .arg(host.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("store.backend must be \"postgres\""),
        "{stderr}"
    );

    // A directory that holds no store: refused, and left empty.
    let server = PgServer::start();
    let empty = TempDir::new("migrate-empty");
    let run = migrate(
        &Fleet::new(),
        empty.path(),
        &url_of(&server, None),
        &"ab".repeat(32),
    );
    run.assert_code(1);
    assert!(
        run.stderr.contains("not a credentialflow data directory"),
        "{}",
        run.output()
    );
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}

/// The names and contents of the files in `dir`, but SQLite's WAL side files (a reader may
/// create its shared-memory index), to show a directory was only read.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            !name.ends_with("-shm") && !name.ends_with("-wal")
        })
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}
