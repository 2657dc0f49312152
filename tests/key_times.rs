//! Key expiry and rotation grace are kept and enforced to the millisecond (issue 17, "The
//! operator's day"): a key made to live 2 s works for 2 s, not until the end of the second
//! it was made in plus one (it used to be refused after 1.4 s), and a 4 s rotation grace
//! lasts 4 s (it used to end after 3.08 s).
//!
//! The gateway is probed on fresh connections every few milliseconds; each probe's send and
//! answer times are measured from just before the admin call that set the deadline, so the
//! assertions hold however slow the machine is, except the two that a probe must land in a
//! 100 ms window (accepted at 1.9 s; refused within 100 ms of the grace's end).

mod common;

use std::time::{Duration, Instant};

use common::keys::*;
use common::*;
use serde_json::json;

/// One probe: when it was sent and answered (since the admin call began) and its status.
#[derive(Debug, Clone, Copy)]
struct Probe {
    sent: Duration,
    answered: Duration,
    status: u16,
}

/// An echo upstream and a gateway whose route `/` wants a virtual key.
fn gateway(driver: Driver) -> (Upstream, Gateway) {
    let upstream = Upstream::echo("backend");
    let rest = format!(
        "{}\n[[route]]\nname = \"api\"\npath_prefix = \"/\"\nupstream = \"backend\"\n\
         auth = \"api_key\"\n",
        upstream_toml("backend", &upstream.target(), "")
    );
    let gw = Gateway::start(&config(&rest), driver);
    (upstream, gw)
}

/// Probes `GET /` with `key` from `start` (since `origin`) until a few probes after the
/// first refusal, or until `give_up`.
fn probe_until_refused(
    gw: &Gateway,
    key: &str,
    origin: Instant,
    start: Duration,
    give_up: Duration,
) -> Vec<Probe> {
    if let Some(wait) = start.checked_sub(origin.elapsed()) {
        std::thread::sleep(wait);
    }
    let mut probes = Vec::new();
    let mut refusals = 0;
    while origin.elapsed() < give_up && refusals < 5 {
        let sent = origin.elapsed();
        let status = get_with_key(gw.addr(), "/", Some(key)).status;
        probes.push(Probe {
            sent,
            answered: origin.elapsed(),
            status,
        });
        if status == 401 {
            refusals += 1;
        }
        // Leave the shared CPU to the gateway between probes.
        std::thread::sleep(Duration::from_millis(5));
    }
    probes
}

/// Checks the shape every run must have, whatever the machine's speed: every probe
/// answered before `deadline` was accepted; once refused, always refused. Returns the last
/// accepted probe and the first refused one.
fn accepted_then_refused(probes: &[Probe], deadline: Duration) -> (Probe, Probe) {
    let first_refusal = probes
        .iter()
        .position(|p| p.status == 401)
        .unwrap_or_else(|| panic!("never refused: {probes:?}"));
    for probe in &probes[..first_refusal] {
        assert_eq!(probe.status, 200, "{probe:?}");
    }
    for probe in &probes[first_refusal..] {
        assert_eq!(
            probe.status, 401,
            "accepted again after a refusal: {probe:?}"
        );
    }
    let refused = probes[first_refusal];
    assert!(
        refused.answered >= deadline,
        "refused before its time ({deadline:?}): {refused:?}"
    );
    let accepted = *probes[..first_refusal]
        .last()
        .unwrap_or_else(|| panic!("refused from the first probe: {probes:?}"));
    (accepted, refused)
}

on_default_driver! {
    fn a_2s_key_is_accepted_at_1_9s_and_refused_by_3s(driver) {
        let (_upstream, gw) = gateway(driver);
        let origin = Instant::now();
        let key = create_key(&gw, &json!({ "name": "brief", "expires_in": "2s" }));
        let created = origin.elapsed();

        let probes = probe_until_refused(
            &gw,
            &key.secret,
            origin,
            created + Duration::from_millis(1_700),
            Duration::from_secs(4),
        );
        let (accepted, refused) = accepted_then_refused(&probes, Duration::from_secs(2));
        assert!(
            accepted.sent >= created + Duration::from_millis(1_900),
            "no probe accepted at 1.9 s: last accepted {accepted:?}, created by {created:?}"
        );
        assert!(
            refused.answered <= Duration::from_secs(3),
            "not refused by 3 s: {refused:?}"
        );
    }
}

on_default_driver! {
    fn a_4s_rotation_grace_ends_within_100ms_of_4s(driver) {
        let (_upstream, gw) = gateway(driver);
        let old = create_key(&gw, &json!({ "name": "rotated" }));
        let origin = Instant::now();
        let new = rotate_key(&gw, &old.id, "4s");
        let rotated = origin.elapsed();

        let probes = probe_until_refused(
            &gw,
            &old.secret,
            origin,
            rotated + Duration::from_millis(3_700),
            Duration::from_secs(6),
        );
        let (accepted, refused) = accepted_then_refused(&probes, Duration::from_secs(4));
        assert!(
            accepted.sent >= rotated + Duration::from_millis(3_900),
            "old secret not accepted at 3.9 s: {accepted:?}, rotated by {rotated:?}"
        );
        assert!(
            refused.answered <= rotated + Duration::from_millis(4_100),
            "old secret still accepted 100 ms past the grace: {refused:?}, rotated by \
             {rotated:?}"
        );
        assert_eq!(get_with_key(gw.addr(), "/", Some(&new.secret)).status, 200);
    }
}
