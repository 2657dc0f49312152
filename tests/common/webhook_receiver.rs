//! A local webhook receiver: a [`FakeServer`] that answers each POST with the next queued
//! status (200 once the queue is empty) and checks every delivery the way a receiver
//! should: `content-type: application/json`, `x-credentialflow-signature: sha256=<hex
//! HMAC-SHA256 of the raw body>` under the shared secret, `x-credentialflow-timestamp`
//! equal to the signed body's `timestamp`, and `x-credentialflow-event` equal to its
//! `type`. A delivery that fails a check fails the test that reads it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::fake_server::{send_json, FakeServer, RecordedRequest};

/// One verified delivery.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The body, parsed.
    pub body: Value,
    /// The raw body as received.
    pub raw: String,
    /// `x-credentialflow-event`.
    pub event: String,
    /// The status the receiver answered it with.
    pub status: u16,
    /// The request's header fields, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Delivery {
    /// The body's `id` (the same on every attempt of one event).
    pub fn id(&self) -> &str {
        self.body["id"].as_str().expect("an id")
    }
}

/// The receiver; see the module doc.
pub struct WebhookReceiver {
    server: FakeServer,
    secret: String,
    statuses: Arc<Mutex<VecDeque<u16>>>,
    /// The status answered to each request, in arrival order.
    answered: Arc<Mutex<Vec<u16>>>,
    /// How long each answer waits before it is sent.
    delay: Arc<Mutex<Duration>>,
}

impl WebhookReceiver {
    /// A receiver checking signatures made with `secret`.
    pub fn start(secret: &str) -> WebhookReceiver {
        let statuses: Arc<Mutex<VecDeque<u16>>> = Arc::default();
        let answered: Arc<Mutex<Vec<u16>>> = Arc::default();
        let delay: Arc<Mutex<Duration>> = Arc::default();
        let server = {
            let statuses = statuses.clone();
            let answered = answered.clone();
            let delay = delay.clone();
            FakeServer::start_planned(
                move |_request| {
                    let status = statuses.lock().unwrap().pop_front().unwrap_or(200);
                    answered.lock().unwrap().push(status);
                    status
                },
                move |conn, _request, status, _ordinal, keep_alive| {
                    let wait = *delay.lock().unwrap();
                    std::thread::sleep(wait);
                    send_json(conn, status, &json!({}), keep_alive, &[])
                },
            )
        };
        WebhookReceiver {
            server,
            secret: secret.to_string(),
            statuses,
            answered,
            delay,
        }
    }

    /// Makes every later answer wait `delay` (a slow receiver).
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    /// `http://127.0.0.1:PORT/hooks/credentialflow`.
    pub fn url(&self) -> String {
        format!("{}/hooks/credentialflow", self.server.base_url())
    }

    /// Answers the next requests with `statuses`, in order.
    pub fn answer_next(&self, statuses: &[u16]) {
        self.statuses.lock().unwrap().extend(statuses);
    }

    /// Every delivery so far, each verified (panics on a bad one).
    pub fn deliveries(&self) -> Vec<Delivery> {
        let answered = self.answered.lock().unwrap().clone();
        self.server
            .requests()
            .iter()
            .zip(answered)
            .map(|(request, status)| self.verify(request, status))
            .collect()
    }

    /// The deliveries accepted (answered 2xx).
    pub fn accepted(&self) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| (200..300).contains(&d.status))
            .collect()
    }

    /// The accepted deliveries of type `event`.
    pub fn accepted_of(&self, event: &str) -> Vec<Delivery> {
        self.accepted()
            .into_iter()
            .filter(|d| d.event == event)
            .collect()
    }

    /// Waits until `done` holds for the deliveries so far, or fails after `limit`.
    pub fn wait_until(&self, limit: Duration, what: &str, done: impl Fn(&[Delivery]) -> bool) {
        let start = Instant::now();
        loop {
            let deliveries = self.deliveries();
            if done(&deliveries) {
                return;
            }
            if start.elapsed() > limit {
                let seen: Vec<String> = deliveries
                    .iter()
                    .map(|d| format!("{} {} ({})", d.status, d.event, d.raw))
                    .collect();
                panic!("webhook receiver: waited {limit:?} for {what}; saw {seen:#?}");
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn verify(&self, request: &RecordedRequest, status: u16) -> Delivery {
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("delivery without {name}: {:?}", request.headers))
        };
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hooks/credentialflow");
        assert_eq!(header("content-type"), "application/json");
        let expected = signature(self.secret.as_bytes(), &request.body);
        assert_eq!(
            header("x-credentialflow-signature"),
            expected,
            "bad signature on {}",
            String::from_utf8_lossy(&request.body)
        );
        let body: Value = serde_json::from_slice(&request.body).expect("a JSON body");
        assert_eq!(
            header("x-credentialflow-timestamp"),
            body["timestamp"].to_string(),
            "the timestamp header must be the signed body's"
        );
        let event = header("x-credentialflow-event");
        assert_eq!(body["type"], event.as_str());
        assert!(
            body["id"].as_str().is_some_and(|id| id.starts_with("evt_")),
            "{body}"
        );
        assert!(body["created_at"].is_string(), "{body}");
        Delivery {
            raw: String::from_utf8_lossy(&request.body).into_owned(),
            body,
            event,
            status,
            headers: request.headers.clone(),
        }
    }
}

/// `sha256=<hex HMAC-SHA256(secret, body)>`, computed here independently of the gateway.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}
