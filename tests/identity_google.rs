//! Google service-account tokens (`credentialflow::identity::google`, RFC 7523 JWT-bearer)
//! against a fake Google token endpoint that checks assertions as Google does
//! (`tests/common/fake_google.rs`), and both of them against pyjwt
//! (`tests/reference/google_jwt.py`), so neither side merely agrees with our own code.
//!
//! python3 with pyjwt and cryptography is required for the reference tests: CI installs them
//! (see [`PIP_INSTALL`]); without them those tests fail with that line, they do not skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::fake_google::{
    service_account_json, FakeGoogle, CLOUD_PLATFORM, OTHER_KEY_PEM, TIMEFRAME_ERROR, TOKEN_PATH,
};
use common::fake_server::unix_now;
use common::*;
use credentialflow::identity::google::{
    parse_token_response, AccessToken, ServiceAccount, TokenError, TokenRequest,
};
use serde_json::{json, Value};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// What CI installs so the reference tests can run (the versions they were written against).
const PIP_INSTALL: &str = "pip install pyjwt[crypto]==2.15.1 cryptography==48.0.0";

/// Longest the reference script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

fn account_for(fake: &FakeGoogle) -> ServiceAccount {
    ServiceAccount::from_json(fake.service_account_json().as_bytes()).expect("service account")
}

/// Sends a token request to the fake as a token client would (the path of the request's URL).
fn send(fake: &FakeGoogle, request: &TokenRequest) -> Response {
    let path = request
        .url()
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .expect("URL with a path");
    post_form(fake, path, request.body())
}

fn post_form(fake: &FakeGoogle, path: &str, body: &[u8]) -> Response {
    let raw = request(
        "POST",
        path,
        &[("content-type", "application/x-www-form-urlencoded")],
        body,
    );
    roundtrip(fake.addr(), &raw)
}

/// The form body for `assertion`, as the module sends it.
fn form_body(assertion: &str) -> Vec<u8> {
    format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    )
    .into_bytes()
}

fn token_from(response: &Response) -> Result<AccessToken, TokenError> {
    parse_token_response(response.status, &response.body)
}

/// Asserts the fake refused with Google's shape (400, `error`) and `description`, and that
/// the module surfaces the code only.
fn assert_refused(fake: &FakeGoogle, response: &Response, error: &str, description: &str) {
    assert_eq!(response.status, 400, "{}", response.text());
    let body = response.json();
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_description"], description, "{body}");
    assert_eq!(
        fake.refusals().last().map(String::as_str),
        Some(description)
    );
    let err = token_from(response).unwrap_err();
    assert_eq!(
        err,
        TokenError::Refused {
            status: 400,
            error: Some(error.to_string())
        }
    );
    assert!(!err.to_string().contains(description), "{err}");
    assert_eq!(fake.issued_count(), 0);
}

#[test]
fn our_assertion_through_the_fake_yields_a_token() {
    let fake = FakeGoogle::start();
    fake.set_token_lifetime(2);
    let account = account_for(&fake);
    assert_eq!(account.token_uri(), fake.token_uri());
    let request = account.token_request(&[], unix_now()).unwrap();
    assert_eq!(request.url(), fake.token_uri());
    let response = send(&fake, &request);
    assert_eq!(response.status, 200, "{}", response.text());
    let token = token_from(&response).expect("a token");
    assert!(fake.is_valid_token(token.secret()));
    assert_eq!(token.lifetime(), Duration::from_secs(2));
    assert_eq!(fake.hits(), 1);
    assert_eq!(fake.issued_count(), 1);
    assert!(fake.refusals().is_empty());
    // Each exchange is a new token, and the fake forgets them as they expire.
    let second = token_from(&send(
        &fake,
        &account.token_request(&[], unix_now()).unwrap(),
    ))
    .expect("a second token");
    assert_ne!(second.secret(), token.secret());
    assert_eq!(fake.hits(), 2);
    assert!(wait_until(Duration::from_secs(5), || !fake
        .is_valid_token(token.secret())));
}

#[test]
fn a_tampered_signature_is_refused() {
    let fake = FakeGoogle::start();
    let assertion = account_for(&fake).assertion(&[], unix_now()).unwrap();
    let (signed, signature) = assertion.as_str().rsplit_once('.').unwrap();
    // A character in the middle of the signature: still base64url, no longer the signature.
    let mut signature = signature.to_string().into_bytes();
    signature[100] = if signature[100] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{signed}.{}", String::from_utf8(signature).unwrap());
    let response = post_form(&fake, TOKEN_PATH, &form_body(&tampered));
    assert_refused(&fake, &response, "invalid_grant", "Invalid JWT Signature.");
}

#[test]
fn claims_changed_after_signing_are_refused() {
    let fake = FakeGoogle::start();
    let assertion = account_for(&fake).assertion(&[], unix_now()).unwrap();
    let parts: Vec<&str> = assertion.as_str().split('.').collect();
    // The same signature over other claims: the issuer swapped.
    let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap())
        .unwrap()
        .replace("gateway@cf-test-project", "intruder@cf-test-project");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        common::jwt::b64url(claims.as_bytes()),
        parts[2]
    );
    let response = post_form(&fake, TOKEN_PATH, &form_body(&forged));
    assert_refused(&fake, &response, "invalid_grant", "Invalid JWT Signature.");
}

#[test]
fn a_wrong_audience_is_refused() {
    let fake = FakeGoogle::start();
    // The same account, its token_uri another endpoint: the assertion is for that one.
    let json = service_account_json("http://127.0.0.1:9/token", None);
    let account = ServiceAccount::from_json(json.as_bytes()).unwrap();
    let request = account.token_request(&[], unix_now()).unwrap();
    let response = post_form(&fake, TOKEN_PATH, request.body());
    assert_refused(
        &fake,
        &response,
        "invalid_grant",
        "Invalid JWT: Failed audience check.",
    );
}

#[test]
fn an_expired_assertion_is_refused() {
    let fake = FakeGoogle::start();
    let account = account_for(&fake);
    // Issued two hours ago: it expired an hour ago.
    let request = account.token_request(&[], unix_now() - 7200).unwrap();
    let response = send(&fake, &request);
    assert_refused(&fake, &response, "invalid_grant", TIMEFRAME_ERROR);
    // Issued an hour ahead: not yet valid.
    let request = account.token_request(&[], unix_now() + 3600).unwrap();
    let response = send(&fake, &request);
    assert_refused(&fake, &response, "invalid_grant", TIMEFRAME_ERROR);
}

#[test]
fn an_assertion_signed_with_another_key_is_refused() {
    let fake = FakeGoogle::start();
    let json = service_account_json(&fake.token_uri(), Some(OTHER_KEY_PEM));
    let account = ServiceAccount::from_json(json.as_bytes()).unwrap();
    let response = send(&fake, &account.token_request(&[], unix_now()).unwrap());
    assert_refused(&fake, &response, "invalid_grant", "Invalid JWT Signature.");
}

#[test]
fn an_assertion_without_the_required_scope_is_refused() {
    let fake = FakeGoogle::start();
    let account = account_for(&fake);
    let request = account
        .token_request(
            &["https://www.googleapis.com/auth/userinfo.email"],
            unix_now(),
        )
        .unwrap();
    let response = send(&fake, &request);
    assert_refused(
        &fake,
        &response,
        "invalid_scope",
        "Invalid OAuth scope or ID token audience provided.",
    );
    // Given scopes are sent as they are: with cloud-platform among them it passes.
    let request = account
        .token_request(
            &[
                "https://www.googleapis.com/auth/userinfo.email",
                CLOUD_PLATFORM,
            ],
            unix_now(),
        )
        .unwrap();
    assert_eq!(send(&fake, &request).status, 200);
}

#[test]
fn an_endpoint_that_is_down_is_a_refusal_without_its_text() {
    let fake = FakeGoogle::start();
    fake.fail_next(&[503]);
    let account = account_for(&fake);
    let response = send(&fake, &account.token_request(&[], unix_now()).unwrap());
    assert_eq!(response.status, 503);
    let err = token_from(&response).unwrap_err();
    assert_eq!(
        err,
        TokenError::Refused {
            status: 503,
            error: Some("internal_failure".to_string())
        }
    );
    // The failure was one request long.
    let response = send(&fake, &account.token_request(&[], unix_now()).unwrap());
    assert!(token_from(&response).is_ok());
    assert_eq!(fake.hits(), 2);
}

#[test]
fn secrets_appear_in_no_debug_or_error_text() {
    let fake = FakeGoogle::start();
    let account = account_for(&fake);
    let request = account.token_request(&[], unix_now()).unwrap();
    let assertion = request.form()[1].1.to_string();
    let response = send(&fake, &request);
    let token = token_from(&response).unwrap();
    let pem: Value = serde_json::from_str(&fake.service_account_json()).unwrap();
    let pem = pem["private_key"].as_str().unwrap().to_string();
    let signature = assertion.rsplit('.').next().unwrap().to_string();
    let texts = [
        format!("{account:?}"),
        format!("{request:?}"),
        format!("{token:?}"),
        format!("{:?}", account.assertion(&[], unix_now()).unwrap()),
    ];
    for text in &texts {
        assert!(!text.contains(&signature), "assertion in {text}");
        assert!(!text.contains(token.secret()), "token in {text}");
        assert!(!text.contains("-----BEGIN"), "key in {text}");
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!text.contains(line), "key material in {text}");
        }
    }
    // A refusal that echoes the assertion and the key (as a broken endpoint might) surfaces
    // neither.
    let echo = json!({"error": "invalid_grant", "error_description": format!("{assertion} {pem}")});
    let err = parse_token_response(400, echo.to_string().as_bytes()).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains(&signature) && !text.contains("BEGIN"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// Reference checks with pyjwt
// ---------------------------------------------------------------------------

/// Fails the test, once per test binary, unless python3 can import pyjwt with its crypto.
fn require_pyjwt() {
    static CHECK: OnceLock<Result<String, String>> = OnceLock::new();
    let check = CHECK.get_or_init(|| {
        let output = Command::new("python3")
            .args([
                "-c",
                "import jwt, cryptography; print(jwt.__version__, cryptography.__version__)",
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run python3 ({e})"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(format!(
                "python3 cannot import pyjwt: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    });
    if let Err(why) = check {
        panic!("{why}\nthe reference tests need python3 with pyjwt: {PIP_INSTALL}");
    }
}

/// Runs `python3 tests/reference/google_jwt.py MODE` with `env`; its JSON line.
fn pyjwt(mode: &str, env: &[(&str, String)]) -> Value {
    require_pyjwt();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = TempDir::new("pyjwt");
    let stdout_path = out.join("stdout");
    let stderr_path = out.join("stderr");
    let mut child = Command::new("python3")
        .arg(root.join("tests/reference/google_jwt.py"))
        .arg(mode)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {PIP_INSTALL}"));
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("google_jwt.py {mode} ran past {SCRIPT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(
        status.success(),
        "google_jwt.py {mode} failed ({status}):\n{stderr}\n{stdout}"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("google_jwt.py {mode} printed no JSON line ({e}): {stdout}"))
}

/// The service-account file the fake knows, written where python can read it.
fn write_account(dir: &TempDir, name: &str, json: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, json).unwrap();
    path_string(&path)
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn verify_with_pyjwt(account_file: &str, assertion: &str, audience: &str) -> Value {
    pyjwt(
        "verify",
        &[
            ("CF_SERVICE_ACCOUNT", account_file.to_string()),
            ("CF_ASSERTION", assertion.to_string()),
            ("CF_AUDIENCE", audience.to_string()),
            (
                "CF_ISSUER",
                "gateway@cf-test-project.iam.gserviceaccount.com".to_string(),
            ),
        ],
    )
}

#[test]
fn pyjwt_verifies_our_assertions() {
    let fake = FakeGoogle::start();
    let dir = TempDir::new("google-ref");
    let file = write_account(&dir, "service-account.json", &fake.service_account_json());
    let account = account_for(&fake);
    let issued_at = unix_now();
    let assertion = account.assertion(&[], issued_at).unwrap();

    let verified = verify_with_pyjwt(&file, assertion.as_str(), &fake.token_uri());
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(
        verified["header"],
        json!({"alg": "RS256", "typ": "JWT", "kid": account.private_key_id()})
    );
    assert_eq!(
        verified["claims"],
        json!({
            "iss": account.client_email(),
            "scope": CLOUD_PLATFORM,
            "aud": fake.token_uri(),
            "iat": issued_at,
            "exp": issued_at + 3600,
        })
    );

    // pyjwt is not agreeing blindly: a tampered signature, another audience and another key
    // are refused by it too.
    let (signed, signature) = assertion.as_str().rsplit_once('.').unwrap();
    let mut signature = signature.to_string().into_bytes();
    signature[100] = if signature[100] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{signed}.{}", String::from_utf8(signature).unwrap());
    let refused = verify_with_pyjwt(&file, &tampered, &fake.token_uri());
    assert_eq!(
        refused,
        json!({"ok": false, "error": "InvalidSignatureError"})
    );
    let refused = verify_with_pyjwt(&file, assertion.as_str(), "https://elsewhere.example/token");
    assert_eq!(
        refused,
        json!({"ok": false, "error": "InvalidAudienceError"})
    );
    let other_file = write_account(
        &dir,
        "other.json",
        &service_account_json(&fake.token_uri(), Some(OTHER_KEY_PEM)),
    );
    let refused = verify_with_pyjwt(&other_file, assertion.as_str(), &fake.token_uri());
    assert_eq!(
        refused,
        json!({"ok": false, "error": "InvalidSignatureError"})
    );
}

/// Has pyjwt sign `claims` with the service account's key.
fn pyjwt_sign(account_file: &str, claims: &Value) -> String {
    let signed = pyjwt(
        "sign",
        &[
            ("CF_SERVICE_ACCOUNT", account_file.to_string()),
            ("CF_CLAIMS", claims.to_string()),
        ],
    );
    signed["assertion"]
        .as_str()
        .expect("an assertion")
        .to_string()
}

#[test]
fn the_fake_accepts_assertions_pyjwt_signs_and_checks_their_claims() {
    let fake = FakeGoogle::start();
    let dir = TempDir::new("google-ref-sign");
    let file = write_account(&dir, "service-account.json", &fake.service_account_json());
    let now = unix_now();
    let claims = |aud: &str, iat: u64, exp: u64| {
        json!({
            "iss": "gateway@cf-test-project.iam.gserviceaccount.com",
            "scope": CLOUD_PLATFORM,
            "aud": aud,
            "iat": iat,
            "exp": exp,
        })
    };

    let assertion = pyjwt_sign(&file, &claims(&fake.token_uri(), now, now + 3600));
    let response = post_form(&fake, TOKEN_PATH, &form_body(&assertion));
    assert_eq!(response.status, 200, "{}", response.text());
    let token = token_from(&response).expect("a token for pyjwt's assertion");
    assert!(fake.is_valid_token(token.secret()));

    // The fake's claim checks hold for pyjwt's tokens too.
    let cases = [
        (
            claims("https://oauth2.googleapis.com/token", now, now + 3600),
            "Invalid JWT: Failed audience check.",
        ),
        (claims(&fake.token_uri(), now, now + 7200), TIMEFRAME_ERROR),
        (
            claims(&fake.token_uri(), now - 7200, now - 3600),
            TIMEFRAME_ERROR,
        ),
    ];
    for (claims, description) in cases {
        let assertion = pyjwt_sign(&file, &claims);
        let response = post_form(&fake, TOKEN_PATH, &form_body(&assertion));
        assert_eq!(response.status, 400, "{claims}");
        assert_eq!(
            response.json()["error_description"],
            description,
            "{claims}"
        );
    }
    // Signed by pyjwt with another key: the signature check is real.
    let other = write_account(
        &dir,
        "other.json",
        &service_account_json(&fake.token_uri(), Some(OTHER_KEY_PEM)),
    );
    let assertion = pyjwt_sign(&other, &claims(&fake.token_uri(), now, now + 3600));
    let response = post_form(&fake, TOKEN_PATH, &form_body(&assertion));
    assert_eq!(
        response.json()["error_description"],
        "Invalid JWT Signature."
    );
    assert_eq!(fake.issued_count(), 1);
    assert_eq!(fake.hits(), 5);
}
