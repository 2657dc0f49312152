//! Per-route IP allow and deny lists (issue 3, "Authorization at the edge"):
//! CIDR matches on the client address, evaluated before authentication.

mod common;

use common::keys::*;
use common::*;

/// An echo upstream and a gateway with one route `api` on `/` whose auth is
/// `auth` and that carries `extra` lines (the IP lists).
fn gateway_with(auth: &str, extra: &str, driver: Driver) -> (Upstream, Gateway) {
    let upstream = Upstream::echo("backend");
    let rest = format!(
        "{}\n[[route]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"backend\"\n\
         auth = \"{auth}\"\n{extra}\n",
        upstream_toml("backend", &upstream.target(), "")
    );
    let gw = Gateway::start(&config(&rest), driver);
    (upstream, gw)
}

/// Fails unless `GET /` from 127.0.0.1 is a 403 `permission_error` that never
/// reached the upstream.
fn assert_denied(upstream: &Upstream, gw: &Gateway) {
    assert_forbidden(&http_get(gw.addr(), "/"));
    assert_forbidden(&get_with_key(gw.addr(), "/", Some("cf_not-a-real-key")));
    assert_eq!(
        upstream.request_count(),
        0,
        "a denied request was forwarded"
    );
}

on_both_drivers! {
    fn client_in_deny_list_is_403(driver) {
        let (upstream, gw) = gateway_with("none", "deny_ips = [\"127.0.0.1/32\"]", driver);
        assert_denied(&upstream, &gw);
    }
}

on_default_driver! {
    fn client_outside_allow_list_is_403(driver) {
        let (upstream, gw) = gateway_with("none", "allow_ips = [\"10.0.0.0/8\"]", driver);
        assert_denied(&upstream, &gw);
    }
}

on_both_drivers! {
    fn client_inside_allow_list_is_served(driver) {
        let lists = "allow_ips = [\"10.0.0.0/8\", \"127.0.0.0/8\"]";
        let (upstream, gw) = gateway_with("none", lists, driver);
        assert_eq!(Echo::of(&http_get(gw.addr(), "/in")).path, "/in");
        assert_eq!(upstream.request_count(), 1);
    }
}

on_default_driver! {
    fn deny_wins_over_allow(driver) {
        let (upstream, gw) = gateway_with(
            "none",
            "allow_ips = [\"127.0.0.0/8\"]\ndeny_ips = [\"127.0.0.1\"]",
            driver,
        );
        assert_denied(&upstream, &gw);
    }
}

on_default_driver! {
    fn ipv6_lists_do_not_match_an_ipv4_client(driver) {
        // Only an IPv6 range allowed: a 127.0.0.1 client is outside it.
        let (upstream, gw) = gateway_with("none", "allow_ips = [\"::1/128\"]", driver);
        assert_denied(&upstream, &gw);
        let (upstream, gw) = gateway_with("none", "deny_ips = [\"2001:db8::/32\"]", driver);
        assert_eq!(Echo::of(&http_get(gw.addr(), "/v6")).path, "/v6");
        assert_eq!(upstream.request_count(), 1);
    }
}

on_default_driver! {
    fn ip_lists_are_checked_before_authentication(driver) {
        // Without a key this route would answer 401; the IP rule answers first.
        let (upstream, gw) = gateway_with("api_key", "deny_ips = [\"127.0.0.0/8\"]", driver);
        assert_denied(&upstream, &gw);
        let (upstream, gw) = gateway_with("api_key", "allow_ips = [\"127.0.0.1/32\"]", driver);
        assert_unauthenticated(&http_get(gw.addr(), "/"));
        assert_eq!(upstream.request_count(), 0);
    }
}
