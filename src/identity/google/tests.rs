use super::*;

use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

/// The committed test service account (tests/data/google: test material, guards nothing).
const SA_JSON: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/google/service-account.json"
));
const OTHER_KEY_PKCS1: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/google/other-key-pkcs1.pem"
));
const EC_KEY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/google/ec-key.pem"
));

fn sa_fields() -> Map<String, Value> {
    match serde_json::from_str(SA_JSON).unwrap() {
        Value::Object(fields) => fields,
        _ => panic!("test file is not an object"),
    }
}

fn with_field(name: &str, value: Value) -> Vec<u8> {
    let mut fields = sa_fields();
    fields.insert(name.to_string(), value);
    serde_json::to_vec(&Value::Object(fields)).unwrap()
}

fn without_field(name: &str) -> Vec<u8> {
    let mut fields = sa_fields();
    fields.remove(name);
    serde_json::to_vec(&Value::Object(fields)).unwrap()
}

fn account() -> ServiceAccount {
    ServiceAccount::from_json(SA_JSON.as_bytes()).expect("test service account parses")
}

/// Every 16-character run of a PEM's base64 body: none may appear in a message.
fn key_fragments(pem: &str) -> Vec<String> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    body.as_bytes()
        .windows(16)
        .map(|w| String::from_utf8(w.to_vec()).unwrap())
        .collect()
}

fn assert_no_key_material(text: &str, pem: &str) {
    assert!(!text.contains("-----"), "PEM armour in {text:?}");
    for fragment in key_fragments(pem) {
        assert!(
            !text.contains(&fragment),
            "key material {fragment:?} in {text:?}"
        );
    }
}

fn sa_private_pem() -> String {
    sa_fields()["private_key"].as_str().unwrap().to_string()
}

fn decode_json(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

#[test]
fn parses_the_service_account_file() {
    let account = account();
    assert_eq!(
        account.client_email(),
        "gateway@cf-test-project.iam.gserviceaccount.com"
    );
    assert_eq!(
        account.private_key_id(),
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(account.token_uri(), "https://oauth2.googleapis.com/token");
    assert_eq!(account.project_id(), "cf-test-project");
}

#[test]
fn debug_shows_the_account_but_not_its_key() {
    let shown = format!("{:?}", account());
    assert!(shown.contains("gateway@cf-test-project.iam.gserviceaccount.com"));
    assert!(shown.contains("<redacted>"));
    assert_no_key_material(&shown, &sa_private_pem());
}

#[test]
fn assertion_has_google_header_and_claims_and_verifies_rs256() {
    let account = account();
    let assertion = account.assertion(&[], 1_700_000_000).unwrap();
    let parts: Vec<&str> = assertion.as_str().split('.').collect();
    assert_eq!(parts.len(), 3);
    assert!(
        !assertion.as_str().contains('='),
        "base64url without padding"
    );
    assert_eq!(
        decode_json(parts[0]),
        json!({"alg": "RS256", "typ": "JWT", "kid": "0123456789abcdef0123456789abcdef01234567"})
    );
    assert_eq!(
        decode_json(parts[1]),
        json!({
            "iss": "gateway@cf-test-project.iam.gserviceaccount.com",
            "scope": CLOUD_PLATFORM_SCOPE,
            "aud": "https://oauth2.googleapis.com/token",
            "iat": 1_700_000_000u64,
            "exp": 1_700_003_600u64,
        })
    );
    // Verified with the public half of the key as loaded independently of the module.
    let pem = sa_private_pem();
    let der = match rustls_pemfile::read_one_from_slice(pem.as_bytes())
        .unwrap()
        .unwrap()
        .0
    {
        rustls_pemfile::Item::Pkcs8Key(key) => key.secret_pkcs8_der().to_vec(),
        _ => panic!("test key is PKCS#8"),
    };
    let public = RsaKeyPair::from_pkcs8(&der)
        .unwrap()
        .public()
        .as_ref()
        .to_vec();
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    assert_eq!(signature.len(), 256, "2048-bit RSA signature");
    let signed = format!("{}.{}", parts[0], parts[1]);
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
        .verify(signed.as_bytes(), &signature)
        .expect("RS256 signature verifies");
    let mut tampered = signed.clone().into_bytes();
    tampered[5] ^= 1;
    assert!(UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
        .verify(&tampered, &signature)
        .is_err());
}

#[test]
fn assertion_joins_given_scopes_and_refuses_bad_ones() {
    let account = account();
    let assertion = account
        .assertion(&["https://a.example/x", "https://b.example/y"], 5)
        .unwrap();
    let claims = decode_json(assertion.as_str().split('.').nth(1).unwrap());
    assert_eq!(claims["scope"], "https://a.example/x https://b.example/y");
    assert_eq!(claims["exp"], 5 + ASSERTION_LIFETIME_SECS);
    for bad in [&[""][..], &["two words"], &["tab\there"]] {
        assert_eq!(
            account.assertion(bad, 5).unwrap_err(),
            AssertionError::InvalidScope
        );
    }
    let long = "s".repeat(MAX_SCOPE_BYTES + 1);
    assert_eq!(
        account.assertion(&[long.as_str()], 5).unwrap_err(),
        AssertionError::InvalidScope
    );
}

#[test]
fn token_request_is_the_jwt_bearer_form_and_hides_its_body() {
    let account = account();
    let request = account.token_request(&[], 1_700_000_000).unwrap();
    assert_eq!(request.url(), "https://oauth2.googleapis.com/token");
    assert_eq!(request.content_type(), "application/x-www-form-urlencoded");
    let body = std::str::from_utf8(request.body()).unwrap();
    let (grant, assertion) = body.split_once('&').unwrap();
    assert_eq!(
        grant,
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
    );
    let form = request.form();
    assert_eq!(form[0], ("grant_type", JWT_BEARER_GRANT_TYPE));
    assert_eq!(form[1].0, "assertion");
    // base64url and dots need no escaping: the form carries the assertion as it is.
    assert_eq!(assertion, format!("assertion={}", form[1].1));
    let shown = format!("{request:?}");
    assert!(!shown.contains(form[1].1.split('.').nth(2).unwrap()));
    assert!(!shown.contains("assertion="));
    let assertion = account.assertion(&[], 1).unwrap();
    assert_eq!(format!("{assertion:?}"), "Assertion(<redacted>)");
}

#[test]
fn form_encoding_escapes_reserved_bytes() {
    let mut out = String::new();
    form_encode_into("a b&c=d/é*-._~", &mut out);
    assert_eq!(out, "a+b%26c%3Dd%2F%C3%A9*-._%7E");
}

#[test]
fn missing_fields_are_named() {
    for field in [
        "type",
        "client_email",
        "private_key_id",
        "private_key",
        "token_uri",
        "project_id",
    ] {
        let err = ServiceAccount::from_json(&without_field(field)).unwrap_err();
        assert_eq!(err, ServiceAccountError::Missing(field));
        assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
        let err = ServiceAccount::from_json(&with_field(field, Value::Null)).unwrap_err();
        assert_eq!(err, ServiceAccountError::Missing(field));
    }
}

#[test]
fn a_private_key_that_is_not_pkcs8_rsa_is_named_without_echoing_it() {
    let cases = [
        (Value::from(OTHER_KEY_PKCS1), "PKCS#1", OTHER_KEY_PKCS1),
        (Value::from(EC_KEY), "not an RSA key", EC_KEY),
    ];
    for (value, expected, pem) in cases {
        let err = ServiceAccount::from_json(&with_field("private_key", value)).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("`private_key`"), "{message}");
        assert!(message.contains(expected), "{message}");
        assert_no_key_material(&message, pem);
        assert_no_key_material(&format!("{err:?}"), pem);
    }
    // Damaged base64 inside the armour: the decoder's message (which names the byte) is not
    // passed on.
    let damaged = sa_private_pem().replacen("MII", "M!I", 1);
    let err = ServiceAccount::from_json(&with_field("private_key", Value::from(damaged.clone())))
        .unwrap_err();
    assert!(err.to_string().contains("base64"), "{err}");
    assert_no_key_material(&format!("{err} {err:?}"), &sa_private_pem());
    // Truncated DER: ring refuses it, and only ring's fixed reason is passed on.
    let pem = sa_private_pem();
    let mut lines: Vec<&str> = pem.lines().collect();
    lines.drain(3..10);
    let truncated = lines.join("\n");
    let err =
        ServiceAccount::from_json(&with_field("private_key", Value::from(truncated))).unwrap_err();
    assert!(err.to_string().contains("`private_key` is not"), "{err}");
    assert_no_key_material(&format!("{err} {err:?}"), &pem);
    let err =
        ServiceAccount::from_json(&with_field("private_key", Value::from("hunter2"))).unwrap_err();
    assert!(!err.to_string().contains("hunter2"));
    let err = ServiceAccount::from_json(&with_field("private_key", json!(42))).unwrap_err();
    assert_eq!(err, ServiceAccountError::NotAString("private_key"));
}

#[test]
fn type_must_be_service_account() {
    let err =
        ServiceAccount::from_json(&with_field("type", Value::from("authorized_user"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service-account file's `type` is \"authorized_user\", not \"service_account\""
    );
    // A value that is not a plain credential type is not quoted.
    let odd = "Bearer sk-0123456789";
    let err = ServiceAccount::from_json(&with_field("type", Value::from(odd))).unwrap_err();
    assert!(err.to_string().contains("`type` is not"), "{err}");
    assert!(!err.to_string().contains("sk-0123456789"));
}

#[test]
fn token_uri_must_not_send_the_assertion_in_clear() {
    for good in [
        "https://oauth2.googleapis.com/token",
        "http://127.0.0.1:8080/token",
        "http://localhost/token",
        "http://[::1]:9/token",
    ] {
        assert!(
            ServiceAccount::from_json(&with_field("token_uri", Value::from(good))).is_ok(),
            "{good}"
        );
    }
    for (bad, reason) in [
        ("http://oauth2.googleapis.com/token", "not loopback"),
        ("ftp://x/token", "not an https:// URL"),
        ("https://user:pw@idp.example/token", "user information"),
        ("https:///token", "no host"),
        ("https://idp.example/a token", "white space"),
    ] {
        let err =
            ServiceAccount::from_json(&with_field("token_uri", Value::from(bad))).unwrap_err();
        assert!(err.to_string().contains("`token_uri`"), "{err}");
        assert!(err.to_string().contains(reason), "{bad}: {err}");
    }
}

#[test]
fn other_field_problems_are_named() {
    let err =
        ServiceAccount::from_json(&with_field("client_email", Value::from("gateway"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service-account file's `client_email` is not an email address"
    );
    let err = ServiceAccount::from_json(&with_field("project_id", Value::from(""))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service-account file's `project_id` is empty"
    );
    let err = ServiceAccount::from_json(&with_field("private_key_id", json!(["x"]))).unwrap_err();
    assert_eq!(err, ServiceAccountError::NotAString("private_key_id"));
    let long = "p".repeat(MAX_FIELD_BYTES + 1);
    let err = ServiceAccount::from_json(&with_field("project_id", Value::from(long))).unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err}");
    let err = ServiceAccount::from_json(b"{\"type\": ").unwrap_err();
    assert!(
        matches!(err, ServiceAccountError::NotJson { line: 1, .. }),
        "{err:?}"
    );
    assert_eq!(
        ServiceAccount::from_json(b"[1]").unwrap_err(),
        ServiceAccountError::NotAnObject
    );
    let mut big = SA_JSON.as_bytes().to_vec();
    big.resize(MAX_SERVICE_ACCOUNT_BYTES + 1, b' ');
    assert_eq!(
        ServiceAccount::from_json(&big).unwrap_err(),
        ServiceAccountError::TooLarge
    );
}

#[test]
fn check_reads_the_file_and_names_what_is_wrong() {
    let dir = std::env::temp_dir().join(format!("cf-google-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("sa.json");
    std::fs::write(&good, SA_JSON).unwrap();
    assert_eq!(check_service_account_file(&good), Ok(()));
    let bad = dir.join("bad.json");
    std::fs::write(&bad, without_field("private_key")).unwrap();
    assert_eq!(
        check_service_account_file(&bad),
        Err(ServiceAccountError::Missing("private_key"))
    );
    let absent = dir.join("absent.json");
    let err = check_service_account_file(&absent).unwrap_err();
    assert!(err.to_string().contains("absent.json"), "{err}");
    let huge = dir.join("huge.json");
    std::fs::write(&huge, vec![b' '; MAX_SERVICE_ACCOUNT_BYTES + 1]).unwrap();
    assert_eq!(
        check_service_account_file(&huge),
        Err(ServiceAccountError::TooLarge)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn token_response_gives_the_token_and_its_lifetime() {
    let body = br#"{"access_token":"ya29.c.abc-DEF_123","expires_in":3599,"token_type":"Bearer"}"#;
    let token = parse_token_response(200, body).unwrap();
    assert_eq!(token.secret(), "ya29.c.abc-DEF_123");
    assert_eq!(token.lifetime(), Duration::from_secs(3599));
    let shown = format!("{token:?}");
    assert!(!shown.contains("ya29"), "{shown}");
    // expires_in as a string is read; a huge one is shortened to the bound.
    let body = br#"{"access_token":"t","expires_in":"999999999","token_type":"bearer"}"#;
    let token = parse_token_response(200, body).unwrap();
    assert_eq!(
        token.lifetime(),
        Duration::from_secs(MAX_TOKEN_LIFETIME_SECS)
    );
}

#[test]
fn token_refusal_surfaces_only_the_error_code() {
    let assertion = account().assertion(&[], 1).unwrap();
    let body = json!({
        "error": "invalid_grant",
        "error_description": format!("Invalid JWT Signature: {}", assertion.as_str()),
    })
    .to_string();
    let err = parse_token_response(400, body.as_bytes()).unwrap_err();
    assert_eq!(
        err,
        TokenError::Refused {
            status: 400,
            error: Some("invalid_grant".to_string())
        }
    );
    assert_eq!(
        err.to_string(),
        "token endpoint refused (HTTP 400, error invalid_grant)"
    );
    // An `error` that is not a plain code is dropped, whatever it holds.
    for odd in [
        json!({"error": assertion.as_str()}),
        json!({"error": "Invalid_Grant"}),
        json!({"error": "x".repeat(65)}),
        json!({"error": {"code": 401}}),
    ] {
        let err = parse_token_response(401, odd.to_string().as_bytes()).unwrap_err();
        assert_eq!(
            err,
            TokenError::Refused {
                status: 401,
                error: None
            }
        );
    }
    let err = parse_token_response(503, b"<html>Service Unavailable</html>").unwrap_err();
    assert_eq!(err.to_string(), "token endpoint refused (HTTP 503)");
    // A 200 that carries an error is a refusal too.
    let err = parse_token_response(200, br#"{"error":"invalid_scope"}"#).unwrap_err();
    assert_eq!(
        err,
        TokenError::Refused {
            status: 200,
            error: Some("invalid_scope".to_string())
        }
    );
}

#[test]
fn unusable_token_answers_are_refused() {
    let cases: [(&[u8], &str); 9] = [
        (b"not json", "is not a JSON object"),
        (
            br#"{"expires_in":3600,"token_type":"Bearer"}"#,
            "has no access_token",
        ),
        (
            br#"{"access_token":"","expires_in":3600,"token_type":"Bearer"}"#,
            "empty",
        ),
        (
            br#"{"access_token":5,"expires_in":3600,"token_type":"Bearer"}"#,
            "not a string",
        ),
        (
            br#"{"access_token":"a\r\nX-Evil: 1","expires_in":3600,"token_type":"Bearer"}"#,
            "characters",
        ),
        (
            br#"{"access_token":"t","expires_in":3600,"token_type":"mac"}"#,
            "other than Bearer",
        ),
        (
            br#"{"access_token":"t","expires_in":3600}"#,
            "no token_type",
        ),
        (
            br#"{"access_token":"t","expires_in":0,"token_type":"Bearer"}"#,
            "already expired",
        ),
        (
            br#"{"access_token":"t","expires_in":-5,"token_type":"Bearer"}"#,
            "whole number",
        ),
    ];
    for (body, expected) in cases {
        let err = parse_token_response(200, body).unwrap_err();
        assert!(
            err.to_string().contains(expected),
            "{err} for {:?}",
            String::from_utf8_lossy(body)
        );
        assert!(!err.to_string().contains("X-Evil"));
    }
    let long = json!({"access_token": "a".repeat(MAX_ACCESS_TOKEN_BYTES + 1), "expires_in": 60, "token_type": "Bearer"});
    let err = parse_token_response(200, long.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err}");
    let huge = vec![b' '; MAX_TOKEN_RESPONSE_BYTES + 1];
    assert_eq!(
        parse_token_response(200, &huge).unwrap_err(),
        TokenError::TooLarge
    );
}
