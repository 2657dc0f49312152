//! A key created, rotated, revoked or changed through a node's admin API is in
//! force on that node on the very next request (README, "Admin API"): the admin
//! handler applies the committed change to the credential cache before it
//! answers, so a script that creates a key and then uses it never sees 401.
//!
//! Every request here follows the admin answer with no wait at all, on a fresh
//! connection (fresh connections spread over the two workers).

mod common;

use common::keys::*;
use common::*;
use serde_json::json;

/// How many create-then-use rounds must all succeed. The watcher alone lands a
/// change 0-100 ms after the admin answer, so 50 immediate uses would see
/// several 401s if any admin path still relied on it.
const ROUNDS: usize = 50;

/// An echo upstream and a 2-worker gateway with one `auth = "api_key"` route on `/`.
fn keyed_gateway(driver: Driver) -> (Upstream, Gateway) {
    let upstream = Upstream::echo("backend");
    let rest = format!(
        "{}\n[[route]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"backend\"\n\
         auth = \"api_key\"\n",
        upstream_toml("backend", &upstream.target(), "")
    );
    let gw = Gateway::start(&config(&rest), driver);
    (upstream, gw)
}

/// The status of `GET /probe` presenting `secret`, on a new connection.
fn status_with(gw: &Gateway, secret: &str) -> u16 {
    get_with_key(gw.addr(), "/probe", Some(secret)).status
}

on_both_drivers! {
    fn created_key_works_on_the_very_next_request(driver) {
        let (upstream, gw) = keyed_gateway(driver);
        let mut refused = Vec::new();
        for round in 0..ROUNDS {
            let key = create_key(&gw, &json!({ "name": format!("script-{round}") }));
            let status = status_with(&gw, &key.secret);
            if status != 200 {
                refused.push((round, status));
            }
        }
        assert!(
            refused.is_empty(),
            "{} of {ROUNDS} keys were not in force on the next request (round, status): {refused:?}",
            refused.len()
        );
        assert_eq!(upstream.request_count(), ROUNDS);
    }
}

on_both_drivers! {
    fn revoked_key_is_refused_on_the_very_next_request(driver) {
        let (_upstream, gw) = keyed_gateway(driver);
        let mut accepted = Vec::new();
        for round in 0..ROUNDS / 2 {
            let key = create_key(&gw, &json!({ "name": format!("leaver-{round}") }));
            assert_eq!(status_with(&gw, &key.secret), 200, "round {round}: before revoke");
            revoke_key(&gw, &key.id);
            let response = get_with_key(gw.addr(), "/probe", Some(&key.secret));
            if response.status != 401 {
                accepted.push((round, response.status));
            } else {
                assert_unauthenticated(&response);
            }
        }
        assert!(
            accepted.is_empty(),
            "revoked keys still answered on the next request (round, status): {accepted:?}"
        );
    }
}

on_both_drivers! {
    fn rotated_key_new_secret_works_at_once_and_old_one_during_grace(driver) {
        let (_upstream, gw) = keyed_gateway(driver);
        for round in 0..ROUNDS / 5 {
            let first = create_key(&gw, &json!({ "name": format!("rotor-{round}") }));
            let second = rotate_key(&gw, &first.id, "1h");
            assert_eq!(status_with(&gw, &second.secret), 200, "round {round}: new secret");
            assert_eq!(status_with(&gw, &first.secret), 200, "round {round}: old secret in grace");

            // A rotation without grace ends the old secret on the next request,
            // and a secret from an earlier rotation dies with it.
            let third = rotate_key(&gw, &first.id, "0s");
            assert_eq!(status_with(&gw, &third.secret), 200, "round {round}: newest secret");
            assert_eq!(status_with(&gw, &second.secret), 401, "round {round}: no grace");
            assert_eq!(status_with(&gw, &first.secret), 401, "round {round}: two rotations ago");
        }
    }
}

on_both_drivers! {
    fn limit_change_is_in_force_on_the_very_next_request(driver) {
        let (_upstream, gw) = keyed_gateway(driver);
        let key = create_key(&gw, &json!({ "name": "metered" }));
        // No limit yet: more requests than the coming limit all pass.
        for n in 0..4 {
            assert_eq!(status_with(&gw, &key.secret), 200, "unlimited request {n}");
        }

        let patched = admin(&gw, "PATCH", &format!("/admin/keys/{}", key.id), Some(&json!({ "rpm": 2 })));
        assert_eq!(patched.status, 200, "PATCH rpm: {}", patched.text());
        // rpm = 2 admits a burst of two, then refuses for the rest of the minute.
        assert_eq!(status_with(&gw, &key.secret), 200, "first request under rpm = 2");
        assert_eq!(status_with(&gw, &key.secret), 200, "second request under rpm = 2");
        let third = get_with_key(gw.addr(), "/probe", Some(&key.secret));
        assert_eq!(third.status, 429, "third request under rpm = 2: {}", third.text());

        // Narrowing the key's routes is a 403 on the next request.
        let narrowed = admin(
            &gw,
            "PATCH",
            &format!("/admin/keys/{}", key.id),
            Some(&json!({ "rpm": null, "routes": ["elsewhere"] })),
        );
        assert_eq!(narrowed.status, 200, "PATCH routes: {}", narrowed.text());
        assert_forbidden(&get_with_key(gw.addr(), "/probe", Some(&key.secret)));
    }
}

on_default_driver! {
    fn cli_changes_arrive_through_the_watcher_without_undoing_admin_changes(driver) {
        let (_upstream, gw) = keyed_gateway(driver);
        // Another process (the CLI) writes the store: the watcher carries it,
        // within its poll bound.
        let by_cli = cli_create_key(&gw, "from-cli", &[]);
        assert!(
            wait_until(KEY_PROPAGATION, || status_with(&gw, &by_cli.secret) == 200),
            "a key made by the CLI never worked within {KEY_PROPAGATION:?}"
        );

        // The admin API changes that key; the watcher later reads the same row
        // (and, on its pass, possibly older ones): the change must stay.
        let narrowed = admin(
            &gw,
            "PATCH",
            &format!("/admin/keys/{}", by_cli.id),
            Some(&json!({ "routes": ["elsewhere"] })),
        );
        assert_eq!(narrowed.status, 200, "PATCH routes: {}", narrowed.text());
        assert_forbidden(&get_with_key(gw.addr(), "/probe", Some(&by_cli.secret)));

        // A later CLI change is applied after the admin one, so once it is seen
        // the watcher has passed the admin change's row too.
        let marker = cli_create_key(&gw, "marker", &[]);
        assert!(
            wait_until(KEY_PROPAGATION, || status_with(&gw, &marker.secret) == 200),
            "the marker key never worked within {KEY_PROPAGATION:?}"
        );
        assert_forbidden(&get_with_key(gw.addr(), "/probe", Some(&by_cli.secret)));

        cli_revoke_key(&gw, &by_cli.id);
        assert!(
            wait_until(KEY_PROPAGATION, || status_with(&gw, &by_cli.secret) == 401),
            "a key revoked by the CLI still answered after {KEY_PROPAGATION:?}"
        );
    }
}
