//! SigV4 signing of a Bedrock-like request, on the hot path of every Bedrock call (target
//! under 5 µs): a Converse POST with a 1 KB JSON body and temporary credentials, with the
//! body hashed by the signer and with its hash given, the day's signing key cached; the
//! first request of a day (key derivation) for comparison; and decoding one ConverseStream
//! event-stream frame.

use credentialflow::identity::eventstream::{Decoder, Header, HeaderValue, Message};
use credentialflow::identity::sigv4::{Credentials, Payload, Request, Signer, SigningOptions};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use sha2::Digest;

/// The gateway binary's allocator, so the figures match what `serve` would see.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// 2024-12-31T12:00:00Z.
const NOW: i64 = 1_735_646_400;

fn signer() -> Signer {
    Signer::new(
        Credentials::with_session_token(
            "ASIAEXAMPLEEXAMPLE00",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "IQoJb3JpZ2luX2VjEXAMPLE".repeat(16),
        ),
        "us-east-1",
        "bedrock",
        SigningOptions::default(),
    )
    .expect("signer")
}

/// A Converse request body of 1,024 bytes.
fn body() -> Vec<u8> {
    let prefix = br#"{"messages":[{"role":"user","content":[{"text":""#;
    let suffix = br#""}]}],"inferenceConfig":{"maxTokens":512}}"#;
    let mut body = prefix.to_vec();
    body.resize(1024 - suffix.len(), b'a');
    body.extend_from_slice(suffix);
    assert_eq!(body.len(), 1024);
    body
}

const HEADERS: [(&str, &str); 3] = [
    ("host", "bedrock-runtime.us-east-1.amazonaws.com"),
    ("content-type", "application/json"),
    ("accept", "application/json"),
];
const PATH: &str = "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse";

fn request<'a>(payload: Payload<'a>) -> Request<'a> {
    Request {
        method: "POST",
        path: PATH,
        query: "",
        headers: &HEADERS,
        payload,
    }
}

fn sign(c: &mut Criterion) {
    let body = body();
    let body_hash: String = sha2::Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let signer = signer();
    signer
        .sign(&request(Payload::Body(&body)), NOW)
        .expect("sign");

    let mut group = c.benchmark_group("sigv4");
    group.bench_function("bedrock POST 1 KB, body hashed, key cached", |b| {
        b.iter(|| {
            signer
                .sign(black_box(&request(Payload::Body(&body))), NOW)
                .expect("sign")
                .authorization()
                .len()
        })
    });
    group.bench_function("bedrock POST 1 KB, body hash given, key cached", |b| {
        b.iter(|| {
            signer
                .sign(black_box(&request(Payload::Sha256Hex(&body_hash))), NOW)
                .expect("sign")
                .authorization()
                .len()
        })
    });
    group.bench_function(
        "bedrock POST 1 KB, body hashed, key derived (new day)",
        |b| {
            b.iter_batched(
                signer_for_bench,
                |fresh| {
                    fresh
                        .sign(black_box(&request(Payload::Body(&body))), NOW)
                        .expect("sign")
                        .authorization()
                        .len()
                },
                BatchSize::SmallInput,
            )
        },
    );
    // Every iteration above but the last signed with one derivation in all.
    assert_eq!(signer.key_derivations(), 1);
    group.finish();
}

fn signer_for_bench() -> Signer {
    signer()
}

fn eventstream(c: &mut Criterion) {
    let frame = Message {
        headers: vec![
            Header {
                name: ":event-type".into(),
                value: HeaderValue::String("contentBlockDelta".into()),
            },
            Header {
                name: ":content-type".into(),
                value: HeaderValue::String("application/json".into()),
            },
            Header {
                name: ":message-type".into(),
                value: HeaderValue::String("event".into()),
            },
        ],
        payload: br#"{"contentBlockIndex":0,"delta":{"text":"Hello there, this is one streamed piece."},"p":"abcdefghijkl"}"#.to_vec(),
    }
    .encode()
    .expect("encode");
    let mut decoder = Decoder::new();
    c.bench_function(
        &format!(
            "eventstream/decode one {}-byte ConverseStream frame",
            frame.len()
        ),
        |b| {
            b.iter(|| {
                decoder.push(black_box(&frame));
                decoder
                    .next_message()
                    .expect("decode")
                    .expect("a whole frame")
                    .payload
                    .len()
            })
        },
    );
}

criterion_group!(benches, sign, eventstream);
criterion_main!(benches);
