//! SigV4 signatures compared byte for byte with botocore's `SigV4Auth`, the signer of the AWS
//! SDK for Python (`tests/reference/botocore_sigv4.py`): Bedrock-like and STS-like requests,
//! long-lived and temporary credentials, the payload hash as a header, paths that need
//! normalizing and double encoding, at fixed times.

#[path = "reference/run.rs"]
mod run;

use credentialflow::identity::sigv4::{Credentials, Payload, Request, Signer, SigningOptions};
use run::run_reference;
use serde_json::{json, Value};

/// AWS's documentation example keys (not real).
const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// A session token shaped like STS's (base64 with `/`, `+` and `=`).
const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLE//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+token=";

/// One request signed by both.
struct Case {
    name: &'static str,
    method: &'static str,
    host: &'static str,
    /// The path and query as sent on the wire.
    path: &'static str,
    query: &'static str,
    /// Signed headers other than host.
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
    temporary: bool,
    /// Send the payload hash as `x-amz-content-sha256` too.
    content_sha256_header: bool,
    region: &'static str,
    service: &'static str,
    unix_time: i64,
}

/// A Converse request body of about 1 KB.
fn converse_body() -> Vec<u8> {
    let text = "Summarize the gateway's credential flow in one paragraph. ".repeat(16);
    json!({
        "messages": [{"role": "user", "content": [{"text": text}]}],
        "inferenceConfig": {"maxTokens": 512, "temperature": 0.5}
    })
    .to_string()
    .into_bytes()
}

fn cases() -> Vec<Case> {
    let bedrock = |name, temporary, content_sha256_header| Case {
        name,
        method: "POST",
        host: "bedrock-runtime.us-east-1.amazonaws.com",
        // The model id's `:` is percent-encoded on the wire, so signed as %253A.
        path: "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
        query: "",
        headers: vec![
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        ],
        body: converse_body(),
        temporary,
        content_sha256_header,
        region: "us-east-1",
        service: "bedrock",
        unix_time: 1_735_689_599, // 2024-12-31T23:59:59Z
    };
    vec![
        bedrock("bedrock converse, temporary credentials", true, false),
        bedrock("bedrock converse, long-lived credentials", false, false),
        bedrock("bedrock converse, x-amz-content-sha256", true, true),
        Case {
            name: "sts assume-role query",
            method: "GET",
            host: "sts.amazonaws.com",
            path: "/",
            query: "Version=2011-06-15&Action=AssumeRole&RoleSessionName=credentialflow\
                    &RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fgateway&DurationSeconds=3600",
            headers: vec![],
            body: vec![],
            temporary: false,
            content_sha256_header: false,
            region: "us-east-1",
            service: "sts",
            unix_time: 1_709_251_199, // 2024-02-29T23:59:59Z, a leap day
        },
        Case {
            name: "dot segments, repeated slashes, encoded space, blank runs",
            method: "PUT",
            host: "example.eu-west-3.amazonaws.com",
            path: "/a/./b/../c//d%20e/",
            query: "z=last&a=first&a=again",
            headers: vec![
                ("X-Custom", "  several   blanks\tand a tab  "),
                ("content-type", "text/plain; charset=utf-8"),
            ],
            body: "héllo".as_bytes().to_vec(),
            temporary: true,
            content_sha256_header: false,
            region: "eu-west-3",
            service: "execute-api",
            unix_time: 1_440_938_160,
        },
    ]
}

/// Our signature of `case`: the canonical request, string to sign and headers to send.
fn ours(case: &Case) -> Value {
    let credentials = if case.temporary {
        Credentials::with_session_token(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)
    } else {
        Credentials::new(ACCESS_KEY, SECRET_KEY)
    };
    let options = SigningOptions {
        content_sha256_header: case.content_sha256_header,
        ..SigningOptions::default()
    };
    let signer = Signer::new(credentials, case.region, case.service, options).expect("signer");
    let mut headers = vec![("host", case.host)];
    headers.extend(case.headers.iter().copied());
    let request = Request {
        method: case.method,
        path: case.path,
        query: case.query,
        headers: &headers,
        payload: Payload::Body(&case.body),
    };
    let signature = signer.sign(&request, case.unix_time).expect("sign");
    let mut sent: serde_json::Map<String, Value> = case
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), json!(v)))
        .collect();
    for (name, value) in signature.headers() {
        sent.insert(name.to_string(), json!(value));
    }
    json!({
        "name": case.name,
        "canonical_request": signature.canonical_request(),
        "string_to_sign": signature.string_to_sign(),
        "headers": sent,
    })
}

/// What botocore is given for `case`: the same request, its host taken from the URL.
fn botocore_input(case: &Case) -> Value {
    let mut headers: Vec<(&str, String)> = case
        .headers
        .iter()
        .map(|(n, v)| (*n, v.to_string()))
        .collect();
    if case.content_sha256_header {
        // botocore's SigV4Auth signs a given X-Amz-Content-SHA256 as the payload hash; the
        // value is the body's SHA-256, worked out here without our signer.
        use sha2::Digest;
        let hash: String = sha2::Sha256::digest(&case.body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        headers.push(("X-Amz-Content-SHA256", hash));
    }
    let query = if case.query.is_empty() {
        String::new()
    } else {
        format!("?{}", case.query)
    };
    json!({
        "name": case.name,
        "method": case.method,
        "url": format!("https://{}{}{query}", case.host, case.path),
        "headers": headers,
        "body_hex": case.body.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "token": if case.temporary { Some(SESSION_TOKEN) } else { None },
        "region": case.region,
        "service": case.service,
        "unix_time": case.unix_time,
    })
}

#[test]
fn signatures_match_botocore_byte_for_byte() {
    let cases = cases();
    let input: Vec<Value> = cases.iter().map(botocore_input).collect();
    let theirs = run_reference("botocore_sigv4", &[], &Value::Array(input));
    let theirs = theirs.as_array().expect("a list of signed requests");
    assert_eq!(theirs.len(), cases.len());
    for (case, theirs) in cases.iter().zip(theirs) {
        let ours = ours(case);
        for field in ["canonical_request", "string_to_sign"] {
            assert_eq!(
                ours[field], theirs[field],
                "{}: {field} differs from botocore",
                case.name
            );
        }
        // Every header botocore sends (the ones it adds included) is what we send.
        let their_headers = theirs["headers"].as_object().expect("headers");
        let our_headers = ours["headers"].as_object().expect("headers");
        assert_eq!(
            our_headers, their_headers,
            "{}: headers differ from botocore",
            case.name
        );
        let authorization = their_headers["authorization"].as_str().unwrap_or_default();
        assert!(
            authorization.starts_with(&format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")),
            "{}: {authorization}",
            case.name
        );
        assert_eq!(
            their_headers.contains_key("x-amz-security-token"),
            case.temporary,
            "{}",
            case.name
        );
    }
}
