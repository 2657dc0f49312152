use super::flow::{self, AccessError, Requester};
use super::*;
use crate::clock::unix_now_ms;
use crate::store::{KeyBackend, KeyStore};

fn temp_store() -> (KeyStore, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("cf-access-{}", crate::store::ids::new_key_id()));
    (KeyStore::open(&dir).unwrap(), dir)
}

fn asked() -> NewAccessRequest {
    NewAccessRequest {
        name: "jit-alice".into(),
        team: "ml".into(),
        models: vec!["gpt-4o-mini".into()],
        ttl: "1h".into(),
        reason: "incident 42".into(),
        limits: KeyLimits {
            rpm: Some(60),
            budget_usd: Some(3.0),
            ..KeyLimits::default()
        },
        ..NewAccessRequest::default()
    }
}

fn operator(name: &str) -> Requester {
    Requester::Operator(name.into())
}

#[test]
fn every_requester_field_is_bounded() {
    let long = "x".repeat(MAX_TEXT + 1);
    let cases: Vec<(&str, NewAccessRequest)> = vec![
        (
            "name",
            NewAccessRequest {
                name: String::new(),
                ..asked()
            },
        ),
        (
            "name",
            NewAccessRequest {
                name: long.clone(),
                ..asked()
            },
        ),
        (
            "team",
            NewAccessRequest {
                team: long.clone(),
                ..asked()
            },
        ),
        (
            "models",
            NewAccessRequest {
                models: vec!["m".into(); MAX_LIST + 1],
                ..asked()
            },
        ),
        (
            "routes",
            NewAccessRequest {
                routes: vec![long.clone()],
                ..asked()
            },
        ),
        (
            "scopes",
            NewAccessRequest {
                scopes: vec![String::new()],
                ..asked()
            },
        ),
        (
            "reason",
            NewAccessRequest {
                reason: String::new(),
                ..asked()
            },
        ),
        (
            "reason",
            NewAccessRequest {
                reason: "r".repeat(MAX_REASON + 1),
                ..asked()
            },
        ),
        (
            "reason",
            NewAccessRequest {
                reason: "a\nb".into(),
                ..asked()
            },
        ),
        (
            "ttl",
            NewAccessRequest {
                ttl: String::new(),
                ..asked()
            },
        ),
        (
            "ttl",
            NewAccessRequest {
                ttl: "91d".into(),
                ..asked()
            },
        ),
        (
            "ttl",
            NewAccessRequest {
                ttl: "0s".into(),
                ..asked()
            },
        ),
        (
            "ttl",
            NewAccessRequest {
                ttl: "soon".into(),
                ..asked()
            },
        ),
        (
            "budget_usd",
            NewAccessRequest {
                limits: KeyLimits {
                    budget_usd: Some(-1.0),
                    ..KeyLimits::default()
                },
                ..asked()
            },
        ),
        (
            "rpm",
            NewAccessRequest {
                limits: KeyLimits {
                    rpm: Some(u64::MAX),
                    ..KeyLimits::default()
                },
                ..asked()
            },
        ),
        (
            "budget_period",
            NewAccessRequest {
                limits: KeyLimits {
                    budget_period: Some("week".into()),
                    ..KeyLimits::default()
                },
                ..asked()
            },
        ),
    ];
    for (field, request) in cases {
        let error = request.check().expect_err(field);
        assert_eq!(error.field, field, "{error}");
    }
    assert_eq!(
        asked().check().unwrap(),
        std::time::Duration::from_secs(3600)
    );
    assert_eq!(
        NewAccessRequest {
            ttl: "90d".into(),
            ..asked()
        }
        .check()
        .unwrap(),
        MAX_TTL
    );
}

#[test]
fn request_approve_claim_issues_the_secret_once() {
    let (mut store, dir) = temp_store();
    let now = unix_now_ms();
    let submitted = flow::submit(&mut store, asked(), &operator("cli:bob"), &[], now).unwrap();
    assert_eq!(submitted.request.status, AccessStatus::Pending);
    assert!(submitted.minted.is_none());
    let token = submitted.claim_token.expose().to_owned();
    assert!(token.starts_with(CLAIM_TOKEN_PREFIX) && token.len() > 40);
    let id = submitted.request.id.clone();

    // Too early: there is nothing to claim yet.
    assert!(matches!(
        flow::claim(&mut store, &id, &token, now),
        Err(AccessError::NotApproved)
    ));

    let (approved, key) =
        flow::approve(&mut store, &id, "cli:carol", Some("ok".into()), now).unwrap();
    assert_eq!(approved.status, AccessStatus::Approved);
    assert_eq!(approved.key_id.as_deref(), Some(key.id.as_str()));
    assert_eq!(key.models, ["gpt-4o-mini"]);
    assert_eq!((key.rpm, key.budget_usd), (Some(60), Some(3.0)));
    let lifetime = key.expires_at_ms.unwrap() - now;
    assert!((3_600_000..3_605_000).contains(&lifetime), "{lifetime}");

    assert!(matches!(
        flow::claim(&mut store, &id, "cfclaim_wrong", now),
        Err(AccessError::ClaimRefused)
    ));
    assert!(matches!(
        flow::claim(&mut store, "req_nosuchrequest", &token, now),
        Err(AccessError::ClaimRefused)
    ));
    let (claimed, rotated, secret) = flow::claim(&mut store, &id, &token, now).unwrap();
    assert_eq!(claimed.status, AccessStatus::Claimed);
    assert_eq!(rotated.id, key.id);
    assert_eq!(rotated.hash, store.pepper().hash(secret.as_bytes()));
    assert!(!rotated.previous_is_valid_at_ms(unix_now_ms()));
    assert!(matches!(
        flow::claim(&mut store, &id, &token, now),
        Err(AccessError::Gone("already_claimed"))
    ));

    let actions: Vec<(String, String)> = store
        .read_audit()
        .unwrap()
        .into_iter()
        .filter(|e| e.request_id.as_deref() == Some(id.as_str()))
        .map(|e| (e.action, e.actor))
        .collect();
    assert_eq!(
        actions,
        [
            ("access.request".to_owned(), "cli:bob".to_owned()),
            ("access.approve".to_owned(), "cli:carol".to_owned()),
            ("access.claim".to_owned(), "cli:bob".to_owned()),
        ]
    );
    let log = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    assert!(!log.contains(&token) && !log.contains(&secret));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_requester_cannot_approve_their_own_request() {
    let (mut store, dir) = temp_store();
    let now = unix_now_ms();
    let id = flow::submit(&mut store, asked(), &operator("cli:bob"), &[], now)
        .unwrap()
        .request
        .id;
    let refused = flow::approve(&mut store, &id, "cli:bob", None, now).unwrap_err();
    assert!(
        matches!(&refused, AccessError::Forbidden(m) if m.contains("own request")),
        "{refused}"
    );
    // The shared admin token is nobody in particular: it may approve what it asked for.
    let own = flow::submit(&mut store, asked(), &operator("admin"), &[], now)
        .unwrap()
        .request
        .id;
    flow::approve(&mut store, &own, "admin", None, now).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn denied_requests_mint_nothing_and_cannot_be_claimed() {
    let (mut store, dir) = temp_store();
    let now = unix_now_ms();
    let submitted = flow::submit(&mut store, asked(), &operator("cli:bob"), &[], now).unwrap();
    let id = submitted.request.id;
    let denied = flow::deny(&mut store, &id, "cli:carol", Some("no".into()), now).unwrap();
    assert_eq!(denied.status, AccessStatus::Denied);
    assert!(store.list().unwrap().is_empty());
    assert!(matches!(
        flow::approve(&mut store, &id, "cli:carol", None, now),
        Err(AccessError::AlreadyDecided(AccessStatus::Denied))
    ));
    assert!(matches!(
        flow::claim(&mut store, &id, submitted.claim_token.expose(), now),
        Err(AccessError::Gone("denied"))
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unclaimed_approvals_expire_with_their_key() {
    let (mut store, dir) = temp_store();
    let now = unix_now_ms();
    let submitted = flow::submit(&mut store, asked(), &operator("cli:bob"), &[], now).unwrap();
    let id = submitted.request.id;
    flow::approve(&mut store, &id, "cli:carol", None, now).unwrap();
    let later = now + 3_601_000;
    assert!(matches!(
        flow::claim(&mut store, &id, submitted.claim_token.expose(), later),
        Err(AccessError::Gone("expired"))
    ));
    assert_eq!(
        store.access_get(&id).unwrap().unwrap().status,
        AccessStatus::Expired
    );
    let expiries = store
        .read_audit()
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "access.expire" && e.actor == "system")
        .count();
    assert_eq!(expiries, 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_key_asks_only_for_its_own_team_and_a_bounded_number_of_times() {
    let (mut store, dir) = temp_store();
    let now = unix_now_ms();
    let key = Requester::Key {
        id: "key_aaaaaaaaaaaaaaaaaaaa".into(),
        team: "ml".into(),
    };
    let other_team = NewAccessRequest {
        team: "finance".into(),
        ..asked()
    };
    assert!(matches!(
        flow::submit(&mut store, other_team, &key, &[], now),
        Err(AccessError::Forbidden(_))
    ));
    let no_team = NewAccessRequest {
        team: String::new(),
        ..asked()
    };
    let made = flow::submit(&mut store, no_team, &key, &[], now).unwrap();
    assert_eq!(made.request.team, "ml");
    assert_eq!(made.request.requester, "key_aaaaaaaaaaaaaaaaaaaa");
    for _ in 1..MAX_PENDING_PER_REQUESTER {
        flow::submit(&mut store, asked(), &key, &[], now).unwrap();
    }
    assert!(matches!(
        flow::submit(&mut store, asked(), &key, &[], now),
        Err(AccessError::TooManyPending)
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn serde_form_has_no_claim_hash() {
    let (mut store, dir) = temp_store();
    let submitted =
        flow::submit(&mut store, asked(), &operator("admin"), &[], unix_now_ms()).unwrap();
    let json = serde_json::to_value(&submitted.request).unwrap();
    assert!(json.get("claim_hash").is_none());
    assert_eq!(json["status"], "pending");
    assert_eq!(json["rpm"], 60);
    assert!(!format!("{:?}", submitted.request).contains("claim_hash"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn pending_requests_expire_after_a_week_undecided() {
    let (mut store, dir) = temp_store();
    let now = unix_now_ms();
    let week = PENDING_TTL.as_millis() as i64;
    let bob = operator("cli:bob");
    let listed = flow::submit(&mut store, asked(), &bob, &[], now).unwrap();
    let approved = flow::submit(&mut store, asked(), &bob, &[], now).unwrap();
    let claimed = flow::submit(&mut store, asked(), &bob, &[], now).unwrap();
    let decided = flow::submit(&mut store, asked(), &bob, &[], now).unwrap();

    // A second short of a week it is still pending, and may be decided.
    let almost = now + week - 1_000;
    assert_eq!(flow::expire_due(&mut store, almost).unwrap(), 0);
    flow::approve(&mut store, &approved.request.id, "cli:carol", None, almost).unwrap();

    // A week on, the rest are stale: claiming, deciding and listing each expire one.
    let later = now + week + 1_000;
    assert!(matches!(
        flow::claim(
            &mut store,
            &claimed.request.id,
            claimed.claim_token.expose(),
            later
        ),
        Err(AccessError::Gone("expired"))
    ));
    assert!(matches!(
        flow::approve(&mut store, &decided.request.id, "cli:carol", None, later),
        Err(AccessError::AlreadyDecided(AccessStatus::Expired))
    ));
    let pending = flow::list(&mut store, Some(AccessStatus::Pending), later).unwrap();
    assert!(pending.is_empty(), "{pending:?}");
    for id in [&claimed.request.id, &decided.request.id, &listed.request.id] {
        let status = store.access_get(id).unwrap().unwrap().status;
        assert_eq!(status, AccessStatus::Expired, "{id}");
    }
    let expiries: Vec<String> = store
        .read_audit()
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "access.expire" && e.actor == flow::SYSTEM_ACTOR)
        .filter_map(|e| e.request_id)
        .collect();
    // Each expiry is on the record, by `system`.
    for id in [&claimed.request.id, &decided.request.id, &listed.request.id] {
        assert!(expiries.contains(id), "{id}: {expiries:?}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn stale_requests_no_longer_count_against_their_requester() {
    let (mut store, dir) = temp_store();
    let now = unix_now_ms();
    let key = Requester::Key {
        id: "key_bbbbbbbbbbbbbbbbbbbb".into(),
        team: "ml".into(),
    };
    for _ in 0..MAX_PENDING_PER_REQUESTER {
        flow::submit(&mut store, asked(), &key, &[], now).unwrap();
    }
    assert!(matches!(
        flow::submit(&mut store, asked(), &key, &[], now),
        Err(AccessError::TooManyPending)
    ));
    let later = now + PENDING_TTL.as_millis() as i64;
    let fresh = flow::submit(&mut store, asked(), &key, &[], later).unwrap();
    assert_eq!(fresh.request.status, AccessStatus::Pending);
    let statuses: Vec<AccessStatus> = store
        .access_list(None)
        .unwrap()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == AccessStatus::Expired)
            .count(),
        MAX_PENDING_PER_REQUESTER
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A request carrying `mcp_tools` keeps them (stored, listed, read back) and the key it
/// mints gets exactly them; a policy that would approve the same request without tools
/// leaves it to a person.
#[test]
fn a_request_naming_mcp_tools_mints_a_key_with_them() {
    let (mut store, dir) = temp_store();
    let now = unix_now_ms();
    let policies = vec![crate::config::AccessPolicyConfig {
        team: "ml".into(),
        max_ttl: "8h".into(),
        auto_approve: Some(crate::config::AutoApproveConfig {
            models: vec!["gpt-4o-mini".into()],
            max_ttl: Some("2h".into()),
            budget_usd: Some(5.0),
        }),
    }];
    let without_tools =
        flow::submit(&mut store, asked(), &operator("cli:bob"), &policies, now).unwrap();
    assert_eq!(without_tools.request.status, AccessStatus::Approved);

    let with_tools = NewAccessRequest {
        name: "jit-agent".into(),
        mcp_tools: vec!["github__search_*".into(), "fs__read_?".into()],
        ..asked()
    };
    let submitted =
        flow::submit(&mut store, with_tools, &operator("cli:bob"), &policies, now).unwrap();
    assert_eq!(submitted.request.status, AccessStatus::Pending);
    assert!(submitted.minted.is_none());
    let id = submitted.request.id.clone();
    let stored = store.access_get(&id).unwrap().unwrap();
    assert_eq!(stored.mcp_tools, ["github__search_*", "fs__read_?"]);
    let shown = serde_json::to_value(&stored).unwrap();
    assert_eq!(
        shown["mcp_tools"],
        serde_json::json!(["github__search_*", "fs__read_?"])
    );

    let (_, key) = flow::approve(&mut store, &id, "cli:carol", None, now).unwrap();
    assert_eq!(key.mcp_tools, ["github__search_*", "fs__read_?"]);
    assert_eq!(
        store.get(&key.id).unwrap().unwrap().mcp_tools,
        key.mcp_tools
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn mcp_tools_of_a_request_are_bounded_naming_the_field() {
    for globs in [
        vec!["t__*".to_owned(); 65],
        vec!["t".repeat(129)],
        vec![String::new()],
        vec!["fs__read file".to_owned()],
    ] {
        let request = NewAccessRequest {
            mcp_tools: globs,
            ..asked()
        };
        let err = request.check().unwrap_err();
        assert_eq!(err.field, "mcp_tools", "{err}");
    }
    let at_bounds = NewAccessRequest {
        mcp_tools: vec!["t".repeat(128); 64],
        ..asked()
    };
    assert!(at_bounds.check().is_ok());
}
