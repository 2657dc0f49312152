//! Idle keep-alive connections (issue 21): a plain connection gives its read buffer back
//! while it waits for its next request and takes one again when bytes arrive. These tests
//! prove the waiting connections are all still served afterwards, whatever shape the next
//! request arrives in. (What an idle connection costs is measured by
//! `scripts/bench/idle_conns.py`, not asserted here.)

mod common;

use std::thread::sleep;
use std::time::Duration;

use common::*;

/// Longer than the moment a connection keeps its read in flight after a response, so every
/// connection below has parked without a buffer before its next request comes.
const PARKED: Duration = Duration::from_millis(700);

/// One worker (so every connection shares one buffer pool) proxying to an echo upstream.
fn gateway(driver: Driver) -> (Upstream, Gateway) {
    let upstream = Upstream::echo("backend");
    let cfg = config_with(
        1,
        "connections_per_worker = 5000",
        &proxy_config(&upstream.target()),
    );
    (upstream, Gateway::start(&cfg, driver))
}

on_both_drivers! {
    fn two_thousand_idle_connections_are_all_served_afterwards(driver) {
        const CONNECTIONS: usize = 2000;
        let (upstream, gw) = gateway(driver);
        let mut clients: Vec<Client> = (0..CONNECTIONS)
            .map(|i| {
                let mut client = Client::connect(gw.addr());
                client.send(&get(&format!("/first/{i}")));
                client
            })
            .collect();
        for (i, client) in clients.iter_mut().enumerate() {
            let response = client.read_final_response();
            assert_eq!(response.status, 200);
            assert_eq!(Echo::of(&response).path, format!("/first/{i}"));
        }
        sleep(PARKED);
        // In waves of many at once (each wave's connections wake together and take buffers
        // from the pool together), few enough that the test upstream is not the bottleneck.
        for (wave, clients) in clients.chunks_mut(100).enumerate() {
            for (i, client) in clients.iter_mut().enumerate() {
                client.send(&get(&format!("/again/{}", wave * 100 + i)));
            }
            for (i, client) in clients.iter_mut().enumerate() {
                let i = wave * 100 + i;
                let response = client.read_final_response();
                assert_eq!(response.status, 200, "connection {i}");
                assert_eq!(Echo::of(&response).path, format!("/again/{i}"));
            }
        }
        assert_eq!(upstream.request_count(), 2 * CONNECTIONS);
    }
}

on_both_drivers! {
    fn a_head_trickling_into_a_parked_connection_is_read_whole(driver) {
        let (_upstream, gw) = gateway(driver);
        let mut client = Client::connect(gw.addr());
        client.send(&get("/one"));
        assert_eq!(client.read_final_response().status, 200);
        sleep(PARKED);
        // The first byte wakes the connection; the rest comes in pieces after it.
        let raw = get("/two");
        client.send_trickle(&raw, Duration::from_millis(2));
        let response = client.read_final_response();
        assert_eq!(response.status, 200);
        assert_eq!(Echo::of(&response).path, "/two");
    }
}

on_both_drivers! {
    fn pipelined_requests_sent_to_a_parked_connection_are_answered_in_order(driver) {
        let (_upstream, gw) = gateway(driver);
        let mut client = Client::connect(gw.addr());
        client.send(&get("/one"));
        assert_eq!(client.read_final_response().status, 200);
        sleep(PARKED);
        let mut both = get("/two");
        both.extend_from_slice(&get("/three"));
        client.send(&both);
        assert_eq!(Echo::of(&client.read_final_response()).path, "/two");
        assert_eq!(Echo::of(&client.read_final_response()).path, "/three");
    }
}

on_both_drivers! {
    fn a_connection_whose_buffer_grew_for_a_body_is_served_after_idling(driver) {
        let (_upstream, gw) = gateway(driver);
        let mut client = Client::connect(gw.addr());
        let body = vec![b'b'; 100 * 1024];
        client.send(&request("POST", "/upload", &[], &body));
        let response = client.read_final_response();
        assert_eq!(response.status, 200);
        assert_eq!(Echo::of(&response).body_len, body.len() as u64);
        sleep(PARKED);
        client.send(&get("/after"));
        assert_eq!(Echo::of(&client.read_final_response()).path, "/after");
    }
}

on_both_drivers! {
    fn a_parked_connection_that_the_client_closes_frees_its_slot(driver) {
        let upstream = Upstream::echo("backend");
        let cfg = config_with(1, "connections_per_worker = 1", &proxy_config(&upstream.target()));
        let gw = Gateway::start(&cfg, driver);
        let mut client = Client::connect(gw.addr());
        client.send(&get("/one"));
        assert_eq!(client.read_final_response().status, 200);
        sleep(PARKED);
        drop(client);
        // With room for one connection, the next is served only if the parked one noticed
        // the close while it held no read and let its task end.
        let mut next = Client::connect(gw.addr());
        next.send(&get("/next"));
        assert_eq!(Echo::of(&next.read_final_response()).path, "/next");
    }
}
