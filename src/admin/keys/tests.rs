//! `/admin/keys*` over real sockets against a real store in a temporary data directory.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use crate::admin::{spawn, AdminState};
use crate::auth::CredentialCache;
use crate::config::{LiveSecret, Secret};
use crate::store::{self, audit, ids, KeyStore};

const TOKEN: &str = "keys-admin-t0ken";

/// An admin server over a fresh data directory; stopped and cleaned up on drop.
struct Admin {
    addr: SocketAddr,
    data_dir: PathBuf,
    /// The cache the handlers write to. Its watcher is stopped, so whatever it holds after
    /// a call, the admin handler put there.
    credentials: Arc<CredentialCache>,
    shutdown: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Admin {
    fn start() -> Admin {
        let data_dir = std::env::temp_dir().join(format!("cf-admin-keys-{}", ids::new_key_id()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Arc::new(AtomicBool::new(false));
        let config = store::sqlite_settings(&data_dir);
        let credentials = CredentialCache::start(&config).unwrap();
        credentials.stop();
        let state = AdminState {
            token: Some(LiveSecret::fixed(Secret::new(TOKEN))),
            ready: Arc::new(|| true),
            reload: Arc::new(|| Ok(())),
            store: store::open_shared(&config).unwrap(),
            usage: Arc::new(crate::admin::UsageReader::new(&config).unwrap()),
            credentials: credentials.clone(),
            cluster: None,
            access_policies: Arc::new(Vec::new),
            this_node: Arc::new(|| crate::store::NodeRecord {
                node: "edge-test".into(),
                version: "0.0.0".into(),
                last_seen: 0,
                config_generation: 1,
            }),
        };
        let handle = spawn(listener, state, shutdown.clone());
        Admin {
            addr,
            data_dir,
            credentials,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Sends one request with the admin token and reads the whole response.
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.call_with(
            method,
            path,
            body,
            &format!("Authorization: Bearer {TOKEN}\r\n"),
        )
    }

    fn call_with(&self, method: &str, path: &str, body: Option<&str>, headers: &str) -> Reply {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n{headers}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head[9..12].parse().unwrap();
        Reply {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }

    fn create(&self, body: Value) -> Value {
        let reply = self.call("POST", "/admin/keys", Some(&body.to_string()));
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.json()
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    fn error_type(&self) -> Value {
        self.json()["error"]["type"].clone()
    }
}

#[test]
fn post_creates_a_key_and_shows_the_secret_once() {
    let admin = Admin::start();
    let created = admin.create(json!({
        "name": "ci", "team": "platform", "models": ["gpt-*"], "scopes": ["chat"],
        "rpm": 60, "budget_usd": 5.0, "budget_period": "month", "expires_in": "30d",
        "metadata": {"owner": "alice"}
    }));
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("cf_"));
    assert!(created["id"].as_str().unwrap().starts_with("key_"));
    assert_eq!(created["name"], "ci");
    assert_eq!(created["team"], "platform");
    assert_eq!(created["rpm"], 60);
    assert_eq!(created["metadata"]["owner"], "alice");
    assert_eq!(created["prefix"], &key[..12]);
    assert!(created["expires_at"].is_i64());
    assert!(created.get("hash").is_none());

    let store = KeyStore::open(&admin.data_dir).unwrap();
    let stored = store.get(created["id"].as_str().unwrap()).unwrap().unwrap();
    assert_eq!(stored.hash, store.pepper().hash(key.as_bytes()));
}

/// Every write is in the workers' cache when its answer arrives: the cache's watcher is
/// stopped here, so nothing else could have put it there.
#[test]
fn every_key_write_is_in_the_cache_before_the_answer() {
    let admin = Admin::start();
    let cache = &admin.credentials;
    let created = admin.create(json!({ "name": "script" }));
    let id = created["id"].as_str().unwrap();
    let first = created["key"].as_str().unwrap().to_owned();
    let found = cache
        .authenticate_at_ms(first.as_bytes(), crate::clock::unix_now_ms())
        .expect("created key");
    assert_eq!(found.id, id);

    let patched = admin.call(
        "PATCH",
        &format!("/admin/keys/{id}"),
        Some(r#"{"rpm":5,"team":"ops"}"#),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    let held = cache.by_id(id).unwrap();
    assert_eq!((held.rpm, held.team.as_str()), (Some(5), "ops"));

    let rotated = admin.call(
        "POST",
        &format!("/admin/keys/{id}/rotate"),
        Some(r#"{"grace":"1h"}"#),
    );
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let second = rotated.json()["key"].as_str().unwrap().to_owned();
    assert!(cache
        .authenticate_at_ms(second.as_bytes(), crate::clock::unix_now_ms())
        .is_some());
    assert!(
        cache
            .authenticate_at_ms(first.as_bytes(), crate::clock::unix_now_ms())
            .is_some(),
        "old secret in grace"
    );

    let revoked = admin.call("DELETE", &format!("/admin/keys/{id}"), None);
    assert_eq!(revoked.status, 204);
    assert!(cache
        .authenticate_at_ms(second.as_bytes(), crate::clock::unix_now_ms())
        .is_none());
    assert!(cache
        .authenticate_at_ms(first.as_bytes(), crate::clock::unix_now_ms())
        .is_none());
    assert!(cache.by_id(id).unwrap().revoked_at.is_some());
}

/// A refused write leaves the cache alone.
#[test]
fn failed_key_writes_leave_the_cache_unchanged() {
    let admin = Admin::start();
    let created = admin.create(json!({ "name": "steady", "rpm": 9 }));
    let id = created["id"].as_str().unwrap();
    let before = admin.credentials.by_id(id).unwrap();

    let bad = admin.call("PATCH", &format!("/admin/keys/{id}"), Some(r#"{"rpm":-1}"#));
    assert_eq!(bad.status, 400);
    let taken = admin.create(json!({ "name": "other" }));
    let clash = admin.call(
        "PATCH",
        &format!("/admin/keys/{}", taken["id"].as_str().unwrap()),
        Some(r#"{"name":"steady"}"#),
    );
    assert_eq!(clash.status, 409);
    assert_eq!(
        admin.credentials.by_id(id).unwrap().as_ref(),
        before.as_ref()
    );
    assert_eq!(admin.credentials.by_name("steady").unwrap().id, id);
    assert_eq!(admin.credentials.len(), 2);
}

#[test]
fn get_lists_keys_without_secrets() {
    let admin = Admin::start();
    let a = admin.create(json!({ "name": "a" }));
    admin.create(json!({ "name": "b" }));
    let reply = admin.call("GET", "/admin/keys", None);
    assert_eq!(reply.status, 200);
    let list = reply.json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!reply.body.contains(a["key"].as_str().unwrap()));
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.get("key").is_none()));
}

#[test]
fn get_one_key_by_id() {
    let admin = Admin::start();
    let created = admin.create(json!({ "name": "ci" }));
    let id = created["id"].as_str().unwrap();
    let reply = admin.call("GET", &format!("/admin/keys/{id}"), None);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["id"], id);
    assert_eq!(reply.json()["name"], "ci");
    assert!(reply.json().get("key").is_none());
}

#[test]
fn unknown_id_is_404_not_found_error() {
    let admin = Admin::start();
    for (method, path) in [
        ("GET", "/admin/keys/key_nope"),
        ("PATCH", "/admin/keys/key_nope"),
        ("DELETE", "/admin/keys/key_nope"),
        ("POST", "/admin/keys/key_nope/rotate"),
    ] {
        let reply = admin.call(method, path, None);
        assert_eq!(reply.status, 404, "{method} {path}");
        assert_eq!(reply.error_type(), "not_found_error");
    }
}

#[test]
fn patch_changes_the_given_fields_and_null_clears() {
    let admin = Admin::start();
    let created = admin.create(json!({ "name": "ci", "rpm": 10, "tpm": 99 }));
    let id = created["id"].as_str().unwrap();
    let reply = admin.call(
        "PATCH",
        &format!("/admin/keys/{id}"),
        Some(r#"{"team":"ml","rpm":null,"scopes":["chat"]}"#),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let record = reply.json();
    assert_eq!(record["team"], "ml");
    assert_eq!(record["rpm"], Value::Null);
    assert_eq!(record["tpm"], 99);
    assert_eq!(record["scopes"], json!(["chat"]));
}

#[test]
fn bad_body_is_400_naming_the_field() {
    let admin = Admin::start();
    for (body, field) in [
        (r#"{"team":"x"}"#, "name"),
        (r#"{"name":"x","rpm":"ten"}"#, "rpm"),
        (r#"{"name":"x","models":"gpt-*"}"#, "models"),
        (r#"{"name":"x","budget_period":"week"}"#, "budget_period"),
        (r#"{"name":"x","expires_in":"soon"}"#, "expires_in"),
        (r#"{"name":"x","rps":-3}"#, "rps"),
        (r#"{"name":"x","colour":"red"}"#, "colour"),
        ("not json", "body"),
        ("[1,2]", "body"),
    ] {
        let reply = admin.call("POST", "/admin/keys", Some(body));
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.error_type(), "invalid_request_error");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(field), "{body}: {message}");
    }
    assert!(KeyStore::open(&admin.data_dir)
        .unwrap()
        .list()
        .unwrap()
        .is_empty());
}

#[test]
fn rotate_answers_the_same_id_and_a_new_key() {
    let admin = Admin::start();
    let created = admin.create(json!({ "name": "ci" }));
    let id = created["id"].as_str().unwrap();
    let reply = admin.call(
        "POST",
        &format!("/admin/keys/{id}/rotate"),
        Some(r#"{"grace":"1h"}"#),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let rotated = reply.json();
    assert_eq!(rotated["id"], id);
    let new_key = rotated["key"].as_str().unwrap();
    assert!(new_key.starts_with("cf_"));
    assert_ne!(new_key, created["key"].as_str().unwrap());

    let store = KeyStore::open(&admin.data_dir).unwrap();
    let record = store.get(id).unwrap().unwrap();
    assert_eq!(record.hash, store.pepper().hash(new_key.as_bytes()));
    let old = store
        .pepper()
        .hash(created["key"].as_str().unwrap().as_bytes());
    assert_eq!(record.previous_hash, Some(old));
    assert!(record.previous_is_valid_at_ms(crate::clock::unix_now_ms()));
}

#[test]
fn rotate_with_a_bad_grace_is_400() {
    let admin = Admin::start();
    let created = admin.create(json!({ "name": "ci" }));
    let id = created["id"].as_str().unwrap();
    let reply = admin.call(
        "POST",
        &format!("/admin/keys/{id}/rotate"),
        Some(r#"{"grace":"a while"}"#),
    );
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("grace"));
}

#[test]
fn bare_number_durations_are_400_naming_the_grammar() {
    let admin = Admin::start();
    let reply = admin.call(
        "POST",
        "/admin/keys",
        Some(r#"{"name":"x","expires_in":"30"}"#),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("expires_in") && reply.body.contains("needs a unit"));

    let created = admin.create(json!({ "name": "ci" }));
    let id = created["id"].as_str().unwrap();
    let reply = admin.call(
        "POST",
        &format!("/admin/keys/{id}/rotate"),
        Some(r#"{"grace":"1"}"#),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("grace") && reply.body.contains("needs a unit"));
    // The refused rotation left the key's secret alone.
    let store = KeyStore::open(&admin.data_dir).unwrap();
    assert_eq!(store.get(id).unwrap().unwrap().previous_hash, None);
}

#[test]
fn delete_revokes_with_204_and_the_key_stays_listed() {
    let admin = Admin::start();
    let created = admin.create(json!({ "name": "ci" }));
    let id = created["id"].as_str().unwrap();
    let reply = admin.call("DELETE", &format!("/admin/keys/{id}"), None);
    assert_eq!(reply.status, 204);
    assert!(reply.body.is_empty());
    assert!(!reply.head.to_ascii_lowercase().contains("content-length"));
    let shown = admin.call("GET", &format!("/admin/keys/{id}"), None).json();
    assert!(shown["revoked_at"].is_i64());
}

#[test]
fn key_calls_need_the_admin_token() {
    let admin = Admin::start();
    let reply = admin.call_with("GET", "/admin/keys", None, "");
    assert_eq!(reply.status, 401);
    let reply = admin.call_with(
        "POST",
        "/admin/keys",
        Some(r#"{"name":"x"}"#),
        "Authorization: Bearer wrong\r\n",
    );
    assert_eq!(reply.status, 401);
    // The cache opened the store at start; the refused call must have added nothing to it.
    let store = KeyStore::open(&admin.data_dir).unwrap();
    assert!(store.list().unwrap().is_empty());
    assert_eq!(store.max_seq().unwrap(), 0);
    assert!(admin.credentials.is_empty());
}

#[test]
fn wrong_method_on_keys_is_405_with_allow() {
    let admin = Admin::start();
    let reply = admin.call("PUT", "/admin/keys", None);
    assert_eq!(reply.status, 405);
    assert!(reply.head.contains("allow: GET, HEAD, POST"));
    let reply = admin.call("GET", "/admin/keys/key_x/rotate", None);
    assert_eq!(reply.status, 405);
    assert!(reply.head.contains("allow: POST"));
}

#[test]
fn admin_actions_are_audited_as_admin() {
    let admin = Admin::start();
    let created = admin.create(json!({ "name": "ci" }));
    let id = created["id"].as_str().unwrap();
    admin.call("DELETE", &format!("/admin/keys/{id}"), None);
    assert_eq!(admin.call("POST", "/admin/reload", None).status, 200);
    let entries = audit::read(&admin.data_dir).unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("admin", "create"),
            ("admin", "revoke"),
            ("admin", "reload")
        ]
    );
    let log = std::fs::read_to_string(admin.data_dir.join(audit::AUDIT_FILE)).unwrap();
    assert!(!log.contains(created["key"].as_str().unwrap()));
}

/// `mcp_tools` through the admin API: set by POST, shown by GET (list and one), replaced by
/// PATCH and emptied by `[]`; every write in the cache the MCP endpoint asks, and audited.
#[test]
fn mcp_tools_round_trip_through_post_get_and_patch() {
    let admin = Admin::start();
    let created = admin.create(json!({
        "name": "agent",
        "mcp_tools": ["github__search_*", "fs__read_?"]
    }));
    let id = created["id"].as_str().unwrap();
    let held = admin.credentials.by_id(id).unwrap();
    assert_eq!(held.mcp_tools, ["github__search_*", "fs__read_?"]);
    let consumer = crate::auth::Consumer::from_key(&held);
    assert!(consumer.may_call_tool("github__search_code"));
    assert!(!consumer.may_call_tool("github__create_issue"));

    let listed = admin.call("GET", "/admin/keys", None);
    assert_eq!(listed.status, 200, "{}", listed.body);
    let listed = listed.json();
    let keys = listed.as_array().unwrap();
    assert_eq!(keys.len(), 1, "{listed}");
    assert_eq!(
        keys[0]["mcp_tools"],
        json!(["github__search_*", "fs__read_?"])
    );

    let patched = admin.call(
        "PATCH",
        &format!("/admin/keys/{id}"),
        Some(r#"{"mcp_tools":["fs__*"]}"#),
    );
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.json()["mcp_tools"], json!(["fs__*"]));
    assert_eq!(admin.credentials.by_id(id).unwrap().mcp_tools, ["fs__*"]);
    let one = admin.call("GET", &format!("/admin/keys/{id}"), None);
    assert_eq!(one.json()["mcp_tools"], json!(["fs__*"]));

    // A PATCH that does not name the field leaves it alone; `[]` permits every tool again.
    let other = admin.call("PATCH", &format!("/admin/keys/{id}"), Some(r#"{"rpm":5}"#));
    assert_eq!(other.json()["mcp_tools"], json!(["fs__*"]));
    let emptied = admin.call(
        "PATCH",
        &format!("/admin/keys/{id}"),
        Some(r#"{"mcp_tools":[]}"#),
    );
    assert_eq!(emptied.json()["mcp_tools"], json!([]));
    assert!(admin.credentials.by_id(id).unwrap().mcp_tools.is_empty());

    let entries = audit::read(&admin.data_dir).unwrap();
    let update = entries
        .iter()
        .find(|e| e.action == "update")
        .expect("the first PATCH is audited");
    assert_eq!(
        update.before.as_ref().unwrap().mcp_tools,
        ["github__search_*", "fs__read_?"]
    );
    assert_eq!(update.after.as_ref().unwrap().mcp_tools, ["fs__*"]);
}

/// Every bound on `mcp_tools` is a 400 naming the field, on create and on update, and
/// nothing is written; the refused glob is not echoed.
#[test]
fn out_of_bounds_mcp_tools_are_400_naming_the_field() {
    let admin = Admin::start();
    let too_many: Vec<String> = (0..65).map(|i| format!("t{i}__*")).collect();
    let too_long = "a".repeat(129);
    let bodies = [
        json!({ "name": "x", "mcp_tools": too_many }),
        json!({ "name": "x", "mcp_tools": [too_long] }),
        json!({ "name": "x", "mcp_tools": [""] }),
        json!({ "name": "x", "mcp_tools": ["fs__read file"] }),
        json!({ "name": "x", "mcp_tools": ["fs__<script>"] }),
        json!({ "name": "x", "mcp_tools": ["fs__r\u{e9}ad"] }),
        json!({ "name": "x", "mcp_tools": "fs__*" }),
        json!({ "name": "x", "mcp_tools": [1] }),
    ];
    for body in &bodies {
        let reply = admin.call("POST", "/admin/keys", Some(&body.to_string()));
        assert_eq!(reply.status, 400, "{body}");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.starts_with("mcp_tools: "), "{body}: {message}");
        assert!(!message.contains("<script>"), "{message}");
    }
    assert!(KeyStore::open(&admin.data_dir)
        .unwrap()
        .list()
        .unwrap()
        .is_empty());

    // At the bounds exactly: accepted.
    let at_bounds: Vec<String> = (0..64).map(|i| format!("{i:0>128}")).collect();
    let created = admin.create(json!({ "name": "edge", "mcp_tools": at_bounds }));
    let id = created["id"].as_str().unwrap();
    let reply = admin.call(
        "PATCH",
        &format!("/admin/keys/{id}"),
        Some(r#"{"mcp_tools":["ok","not ok"]}"#),
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("mcp_tools"), "{}", reply.body);
    assert_eq!(admin.credentials.by_id(id).unwrap().mcp_tools.len(), 64);
}
