//! AWS STS `AssumeRole` as a credential source (`credentialflow::identity::sts`) against a
//! fake STS that verifies SigV4 by recomputing it (`tests/common/fake_sts.rs`), and the fake
//! against botocore's own STS client (`tests/reference/botocore_sts.py`), so the fake's
//! signature check and XML are AWS's, not merely our signer's.
//!
//! python3 with botocore is required for the reference test: CI installs it
//! ([`run::PIP_INSTALL`]); without it that test fails with that line, it does not skip.

mod common;

#[path = "reference/run.rs"]
mod run;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_server::{status_line, FakeServer};
use common::fake_sts::{FakeSts, StsMode, ROLE_ARN};
use credentialflow::config::{SecretRef, SecretWatcher};
use credentialflow::identity::sigv4::{Credentials, Payload, Request, Signer, SigningOptions};
use credentialflow::identity::source::{CredentialSource, Fetch, SourceTiming};
use credentialflow::identity::sts::{self, AssumeRole, AssumeRoleSettings, BaseKeys};
use credentialflow::metrics::CredentialStats;
use run::run_reference;
use serde_json::{json, Value};

/// AWS's documentation example keys (not real).
const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// A base session token, for base keys that are themselves temporary.
const BASE_TOKEN: &str = "FwoGZXIvYXdzEBaseSessionToken//////////wEaDH7pIqIdcK9base+token=";

fn settings(fake: &FakeSts) -> AssumeRoleSettings {
    AssumeRoleSettings {
        sts_url: fake.url(),
        role_arn: ROLE_ARN.to_string(),
        session_name: String::new(),
        duration_s: 0,
        fallback_region: Some("us-east-1".to_string()),
    }
}

fn base(secret: &str, token: Option<&str>) -> BaseKeys {
    BaseKeys {
        access_key_id: SecretRef::parse(ACCESS_KEY).unwrap(),
        secret_access_key: SecretRef::parse(secret).unwrap(),
        session_token: token.map(|t| SecretRef::parse(t).unwrap()),
    }
}

fn fetcher(cfg: &AssumeRoleSettings, keys: &BaseKeys) -> AssumeRole {
    let secrets = SecretWatcher::start();
    sts::settings(cfg, keys, &secrets, &SourceTiming::default()).unwrap()
}

/// The session token of `credentials`, as a signer sends it.
fn session_token(credentials: Credentials) -> String {
    let signer = Signer::new(
        credentials,
        "us-east-1",
        "bedrock",
        SigningOptions::default(),
    )
    .expect("a signer");
    let signature = signer
        .sign(
            &Request {
                method: "GET",
                path: "/",
                query: "",
                headers: &[("host", "bedrock.example")],
                payload: Payload::Body(b""),
            },
            1_735_689_599,
        )
        .unwrap();
    signature
        .headers()
        .into_iter()
        .find(|(name, _)| *name == "x-amz-security-token")
        .map(|(_, value)| value.to_string())
        .expect("temporary credentials carry a session token")
}

#[test]
fn botocore_assumes_a_role_at_the_fake_and_wrong_keys_are_refused() {
    let fake = FakeSts::start(ACCESS_KEY, SECRET_KEY, 900);
    let case = |name: &str, secret: &str, role: &str| {
        json!({"name": name, "access_key": ACCESS_KEY, "secret_key": secret, "token": null,
               "role_arn": role, "session_name": "botocore-check", "duration": 900})
    };
    let results = run_reference(
        "botocore_sts",
        &[],
        &json!({"endpoint": fake.url(), "cases": [
            case("right keys", SECRET_KEY, ROLE_ARN),
            case("wrong secret", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYWRONGKEY00", ROLE_ARN),
            case("unknown role", SECRET_KEY, "arn:aws:iam::123456789012:role/someone-else"),
        ]}),
    );
    let by_name = |name: &str| -> Value {
        results
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {results}"))
    };
    // botocore read the fake's XML into the credentials the fake issued.
    let got = by_name("right keys");
    let issued = fake.book().issued();
    assert_eq!(issued.len(), 1, "{got}");
    let credentials = &got["credentials"];
    assert_eq!(
        credentials["access_key_id"],
        issued[0].access_key_id.as_str()
    );
    assert_eq!(
        credentials["secret_access_key"],
        issued[0].secret_access_key.as_str()
    );
    assert_eq!(
        credentials["session_token"],
        issued[0].session_token.as_str()
    );
    assert_eq!(credentials["expiration"], issued[0].expiration.as_str());
    assert!(fake.book().is_valid(
        credentials["access_key_id"].as_str().unwrap(),
        credentials["session_token"].as_str().unwrap()
    ));
    assert!(fake
        .last_form()
        .contains(&("RoleSessionName".into(), "botocore-check".into())));
    // The fake's refusals are errors botocore recognizes by AWS's codes.
    assert_eq!(
        by_name("wrong secret")["error"],
        json!({"code": "SignatureDoesNotMatch", "status": 403})
    );
    assert_eq!(
        by_name("unknown role")["error"],
        json!({"code": "AccessDenied", "status": 403})
    );
    assert_eq!(fake.request_count(), 3);

    // Temporary base keys: botocore sends the session token, and the fake insists on it.
    let fake = FakeSts::start(ACCESS_KEY, SECRET_KEY, 900);
    fake.require_base_session_token(BASE_TOKEN);
    let mut with_token = case("with the base token", SECRET_KEY, ROLE_ARN);
    with_token["token"] = json!(BASE_TOKEN);
    let results = run_reference(
        "botocore_sts",
        &[],
        &json!({"endpoint": fake.url(), "cases": [
            with_token,
            case("without the base token", SECRET_KEY, ROLE_ARN),
        ]}),
    );
    assert!(
        results[0]["credentials"]["session_token"].is_string(),
        "{results}"
    );
    assert_eq!(
        results[1]["error"],
        json!({"code": "InvalidClientTokenId", "status": 403})
    );
    assert_eq!(fake.book().issued().len(), 1);
}

#[test]
fn assume_role_gets_the_temporary_credentials_the_fake_issued() {
    let fake = FakeSts::start(ACCESS_KEY, SECRET_KEY, 900);
    let mut source = fetcher(&settings(&fake), &base(SECRET_KEY, None));
    let fetched = source.fetch().expect("credentials");
    // Expiration minus Date: both whole seconds of the same clock.
    assert_eq!(fetched.lifetime, Duration::from_secs(900));
    let key_id = fetched.credential.access_key_id().to_string();
    assert!(key_id.starts_with("ASIA"), "{key_id}");
    let token = session_token(fetched.credential);
    assert!(fake.book().is_valid(&key_id, &token));
    let form = fake.last_form();
    for (name, value) in [
        ("Action", "AssumeRole"),
        ("Version", "2011-06-15"),
        ("RoleArn", ROLE_ARN),
        ("RoleSessionName", sts::DEFAULT_SESSION_NAME),
        ("DurationSeconds", "3600"),
    ] {
        assert!(
            form.contains(&(name.to_string(), value.to_string())),
            "{name}={value} not in {form:?}"
        );
    }
    let request = fake.last_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/")
    );
    // The XML answer, not the JSON one the Query API gives to clients asking for it.
    assert_eq!(request.header("accept"), Some("text/xml"));
    assert_eq!(request.header("x-amz-security-token"), None);
    let authorization = request.header("authorization").unwrap();
    assert!(
        authorization.contains(&format!("Credential={ACCESS_KEY}/"))
            && authorization.contains("/us-east-1/sts/aws4_request"),
        "{authorization}"
    );
}

#[test]
fn signing_with_a_base_session_token_sends_x_amz_security_token() {
    let fake = FakeSts::start(ACCESS_KEY, SECRET_KEY, 900);
    fake.require_base_session_token(BASE_TOKEN);
    let mut source = fetcher(&settings(&fake), &base(SECRET_KEY, Some(BASE_TOKEN)));
    let fetched = source
        .fetch()
        .expect("credentials with temporary base keys");
    assert!(fetched.credential.has_session_token());
    let request = fake.last_request();
    assert_eq!(request.header("x-amz-security-token"), Some(BASE_TOKEN));
    let authorization = request.header("authorization").unwrap();
    assert!(
        authorization.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"),
        "{authorization}"
    );
    // The same keys without their token are refused: the fake does check it.
    let mut tokenless = fetcher(&settings(&fake), &base(SECRET_KEY, None));
    let err = tokenless.fetch().unwrap_err();
    assert!(err.contains("403 InvalidClientTokenId"), "{err}");
}

#[test]
fn error_codes_are_surfaced_without_secrets() {
    let fake = FakeSts::start(ACCESS_KEY, SECRET_KEY, 900);
    let wrong_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYWRONGKEY00";
    let no_secret = |text: &str| {
        for secret in [SECRET_KEY, wrong_secret, BASE_TOKEN, &BASE_TOKEN[..16]] {
            assert!(!text.contains(secret), "{text}");
        }
    };

    let mut source = fetcher(&settings(&fake), &base(wrong_secret, None));
    let debug = format!("{source:?}");
    no_secret(&debug);
    let err = source.fetch().unwrap_err();
    assert_eq!(
        err,
        "STS answered 403 SignatureDoesNotMatch: The request signature we calculated does \
         not match the signature you provided."
    );

    // With a base session token the fake's message quotes it (in the canonical request):
    // the message is left out whole.
    fake.require_base_session_token(BASE_TOKEN);
    let mut source = fetcher(&settings(&fake), &base(wrong_secret, Some(BASE_TOKEN)));
    let err = source.fetch().unwrap_err();
    assert_eq!(err, "STS answered 403 SignatureDoesNotMatch");
    let refused = fake.requests().pop().unwrap();
    assert!(refused.header("x-amz-security-token").is_some());

    let mut source = fetcher(&settings(&fake), &base(SECRET_KEY, Some(BASE_TOKEN)));
    fake.set_mode(StsMode::Fail {
        status: 500,
        code: "InternalFailure".into(),
        message: format!("failure while handling token {BASE_TOKEN}"),
    });
    let err = source.fetch().unwrap_err();
    assert_eq!(err, "STS answered 500 InternalFailure");
    fake.set_mode(StsMode::Fail {
        status: 400,
        code: "RegionDisabledException".into(),
        message: "STS is not activated in this region for account:123456789012.".into(),
    });
    let err = source.fetch().unwrap_err();
    assert!(
        err.starts_with("STS answered 400 RegionDisabledException: STS is not"),
        "{err}"
    );
    fake.set_mode(StsMode::Issue);

    let unknown_role = AssumeRoleSettings {
        role_arn: "arn:aws:iam::123456789012:role/someone-else".into(),
        ..settings(&fake)
    };
    let err = fetcher(&unknown_role, &base(SECRET_KEY, Some(BASE_TOKEN)))
        .fetch()
        .unwrap_err();
    assert!(
        err.starts_with("STS answered 403 AccessDenied: User: "),
        "{err}"
    );
    no_secret(&err);

    let fetched = source.fetch().unwrap();
    let debug = format!("{fetched:?}");
    let issued = fake.book().issued().pop().unwrap();
    assert!(
        !debug.contains(&issued.secret_access_key) && !debug.contains(&issued.session_token),
        "{debug}"
    );
    no_secret(&debug);
}

#[test]
fn an_oversized_or_truncated_answer_is_refused() {
    for (body_len, declared) in [(sts::MAX_RESPONSE_BYTES + 1, None), (100, Some(200))] {
        let server = FakeServer::start(Box::new(move |conn, _, _, _| {
            let body = "<".repeat(body_len);
            let head = format!(
                "{}Content-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                status_line(200),
                declared.unwrap_or(body_len)
            );
            conn.send(head.as_bytes()) && conn.send(body.as_bytes()) && {
                conn.close();
                true
            }
        }));
        let cfg = AssumeRoleSettings {
            sts_url: server.base_url(),
            role_arn: ROLE_ARN.to_string(),
            session_name: String::new(),
            duration_s: 0,
            fallback_region: Some("us-east-1".into()),
        };
        let err = fetcher(&cfg, &base(SECRET_KEY, None)).fetch().unwrap_err();
        let expected = if declared.is_none() {
            "too large"
        } else {
            "before the end"
        };
        assert!(err.contains(expected), "{err}");
    }
}

fn quick_timing() -> SourceTiming {
    SourceTiming {
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(200),
        fetch_timeout: Duration::from_secs(5),
        ..SourceTiming::default()
    }
}

#[test]
fn two_second_credentials_are_always_valid_under_reads_and_fetched_in_proportion() {
    let fake = FakeSts::start(ACCESS_KEY, SECRET_KEY, 2);
    let stats = Arc::new(CredentialStats::default());
    let source = CredentialSource::start(
        "bedrock",
        fetcher(&settings(&fake), &base(SECRET_KEY, None)),
        SourceTiming::default(),
        Arc::clone(&stats),
    )
    .unwrap();
    let book = fake.book();
    let run = Duration::from_secs(6);
    let started = Instant::now();
    let (mut reads, mut gaps, mut refused) = (0u64, 0u64, 0u64);
    while started.elapsed() < run {
        reads += 1;
        match source.current() {
            // What a Bedrock fake would check: the key is one the fake issued and not expired.
            Some(current) if book.valid(current.credential.access_key_id()).is_some() => {}
            Some(_) => refused += 1,
            None => gaps += 1,
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let hits = fake.request_count();
    // A fetch at start, then every 80% of 2 s.
    let expected = run.as_secs_f64() / 1.6 + 1.0;
    println!(
        "{:.0} s of reads, 2 s credentials: {reads} reads, {gaps} without credentials, \
         {refused} with credentials the fake no longer takes, {hits} AssumeRole calls \
         (expected about {expected:.1}), {} successes recorded",
        run.as_secs_f64(),
        stats.successes()
    );
    assert_eq!((gaps, refused), (0, 0), "every read had valid credentials");
    assert!(
        (4..=6).contains(&hits),
        "{hits} AssumeRole calls in 6 s of 2 s credentials"
    );
    assert_eq!(stats.successes(), hits as u64);
}

#[test]
fn sts_down_keeps_the_valid_credentials_then_none() {
    let fake = FakeSts::start(ACCESS_KEY, SECRET_KEY, 2);
    let stats = Arc::new(CredentialStats::default());
    let source = CredentialSource::start(
        "bedrock",
        fetcher(&settings(&fake), &base(SECRET_KEY, None)),
        quick_timing(),
        Arc::clone(&stats),
    )
    .unwrap();
    let first = source.current().expect("the first credentials");
    fake.set_mode(StsMode::Down);
    // Past the refresh point (1.6 s), before the expiry: the failed refresh keeps them.
    std::thread::sleep(Duration::from_millis(1800));
    let kept = source.current().expect("still valid while STS is down");
    assert_eq!(kept.generation, first.generation);
    assert!(stats.failures() >= 1, "the refresh failed");
    // Past the expiry: none, which the provider answers with 502.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        source.current().is_none(),
        "expired credentials are not used"
    );
    // STS back: new credentials within a backoff or two.
    fake.set_mode(StsMode::Issue);
    let deadline = Instant::now() + Duration::from_secs(3);
    let recovered = loop {
        if let Some(current) = source.current() {
            break current;
        }
        assert!(
            Instant::now() < deadline,
            "no credentials after STS came back"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(recovered.generation > first.generation);
    assert!(fake
        .book()
        .valid(recovered.credential.access_key_id())
        .is_some());
}
