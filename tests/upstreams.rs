//! The upstream side: balancing, passive health, errors toward the client,
//! connection reuse and TLS toward upstreams.

mod common;

use std::time::Duration;

use common::*;

/// An `[[upstream]] backend` over `targets` and a route `api` on `/` to it.
fn balanced_config(targets: &[String], upstream_extra: &str) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "\n[[upstream]]\nname = \"backend\"\ntargets = [{}]\n{upstream_extra}\n{}",
        list.join(", "),
        route_toml("api", "/", "backend", "")
    )
}

on_both_drivers! {
    fn two_targets_are_balanced_round_robin(driver) {
        let a = Upstream::echo("a");
        let b = Upstream::echo("b");
        // One worker: one balancer, so the order is observable.
        let cfg = config_with(1, "", &balanced_config(&[a.target(), b.target()], ""));
        let gw = Gateway::start(&cfg, driver);
        let mut client = Client::connect(gw.addr());
        let answered: Vec<String> = (0..10)
            .map(|_| {
                client.send(&get("/rr"));
                Echo::of(&client.read_final_response()).upstream
            })
            .collect();
        assert_eq!(a.request_count(), 5, "order: {answered:?}");
        assert_eq!(b.request_count(), 5, "order: {answered:?}");
        assert!(
            answered.windows(2).all(|w| w[0] != w[1]),
            "not alternating: {answered:?}"
        );
    }
}

on_both_drivers! {
    fn refused_target_is_skipped_and_requests_succeed_on_the_other(driver) {
        let alive = Upstream::echo("alive");
        let cfg = config(&balanced_config(
            &[refused_addr().to_string(), alive.target()],
            "",
        ));
        let gw = Gateway::start(&cfg, driver);
        for i in 0..10 {
            let response = http_get(gw.addr(), &format!("/try/{i}"));
            assert_eq!(Echo::of(&response).upstream, "alive", "request {i}");
        }
        assert_eq!(alive.request_count(), 10);
    }
}

on_both_drivers! {
    fn all_targets_down_is_a_502_upstream_error(driver) {
        let cfg = config(&balanced_config(
            &[refused_addr().to_string(), refused_addr().to_string()],
            "",
        ));
        let gw = Gateway::start(&cfg, driver);
        http_get(gw.addr(), "/down").assert_error(502, "upstream_error");
    }
}

on_both_drivers! {
    fn upstream_slower_than_upstream_timeout_is_a_504_timeout_error(driver) {
        let slow = Upstream::replying(
            "slow",
            Reply::Delayed(Duration::from_secs(5), Box::new(Reply::Echo)),
        );
        let cfg = config(&format!(
            "[limits]\nupstream_timeout_ms = 500\n{}",
            proxy_config(&slow.target())
        ));
        let gw = Gateway::start(&cfg, driver);
        http_get(gw.addr(), "/slow").assert_error(504, "timeout_error");
    }
}

on_both_drivers! {
    fn upstream_connections_are_reused_across_requests(driver) {
        let upstream = Upstream::echo("backend");
        let cfg = config_with(1, "", &proxy_config(&upstream.target()));
        let gw = Gateway::start(&cfg, driver);
        for i in 0..10 {
            assert_eq!(http_get(gw.addr(), &format!("/reuse/{i}")).status, 200);
        }
        assert_eq!(upstream.request_count(), 10);
        assert!(
            upstream.connection_count() < 10,
            "{} upstream connections for 10 requests: no reuse",
            upstream.connection_count()
        );
    }
}

/// A TLS echo upstream whose certificate (for localhost and 127.0.0.1) is
/// signed by `ca`.
fn tls_upstream(ca: &TestCa) -> Upstream {
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    Upstream::builder("secure")
        .tls(leaf.server_config())
        .start(|_| Reply::Echo)
}

on_both_drivers! {
    fn tls_upstream_verified_with_ca_file_is_proxied(driver) {
        let ca = TestCa::new();
        let upstream = tls_upstream(&ca);
        let files = TempDir::new("ca");
        let ca_path = files.join("ca.pem");
        ca.write_pem(&ca_path);
        let tls = format!(
            "tls = true\nca_file = \"{}\"\nsni = \"localhost\"",
            ca_path.display()
        );
        let cfg = config(&balanced_config(&[upstream.target()], &tls));
        let gw = Gateway::start(&cfg, driver);
        let echo = Echo::of(&http_get(gw.addr(), "/over-tls"));
        assert_eq!(echo.upstream, "secure");
        assert_eq!(echo.path, "/over-tls");
    }
}

on_both_drivers! {
    fn tls_upstream_with_an_untrusted_certificate_is_a_502_upstream_error(driver) {
        let ca = TestCa::new();
        let upstream = tls_upstream(&ca);
        // No ca_file: the system roots do not trust the test CA.
        let cfg = config(&balanced_config(
            &[upstream.target()],
            "tls = true\nsni = \"localhost\"",
        ));
        let gw = Gateway::start(&cfg, driver);
        http_get(gw.addr(), "/over-tls").assert_error(502, "upstream_error");
        assert_eq!(upstream.request_count(), 0);
    }
}
