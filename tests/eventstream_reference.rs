//! The AWS event-stream framing checked both ways against botocore's decoder
//! (`tests/reference/botocore_eventstream.py`): frames we encode, fed to botocore in pieces,
//! decode to what we put in; frames built by an encoder independent of ours, which botocore
//! decodes, decode with ours to the same messages at every split; and a corrupted frame is
//! refused by both.

#[path = "reference/run.rs"]
mod run;

use credentialflow::identity::eventstream::{DecodeError, Decoder, Header, HeaderValue, Message};
use run::run_reference;
use serde_json::{json, Map, Value};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A message as the reference script writes it.
fn message_json(message: &Message) -> Value {
    let headers: Map<String, Value> = message
        .headers
        .iter()
        .map(|h| {
            let value = match &h.value {
                HeaderValue::Bool(b) => json!(b),
                HeaderValue::Byte(v) => json!(v),
                HeaderValue::Short(v) => json!(v),
                HeaderValue::Int(v) => json!(v),
                HeaderValue::Long(v) | HeaderValue::Timestamp(v) => json!(v),
                HeaderValue::Bytes(v) => json!({ "hex": hex(v) }),
                HeaderValue::String(v) => json!(v),
                HeaderValue::Uuid(v) => json!({ "hex": hex(v) }),
            };
            (h.name.clone(), value)
        })
        .collect();
    json!({ "headers": headers, "payload_hex": hex(&message.payload) })
}

fn header(name: &str, value: HeaderValue) -> Header {
    Header {
        name: name.into(),
        value,
    }
}

/// Messages like Bedrock's ConverseStream, and one with every header type.
fn messages() -> Vec<Message> {
    let event = |kind: &str, payload: Value| Message {
        headers: vec![
            header(":event-type", HeaderValue::String(kind.into())),
            header(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ),
            header(":message-type", HeaderValue::String("event".into())),
        ],
        payload: payload.to_string().into_bytes(),
    };
    vec![
        event("messageStart", json!({"role": "assistant"})),
        event(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Grüß Gott ☃"}}),
        ),
        event("messageStop", json!({"stopReason": "end_turn"})),
        event(
            "metadata",
            json!({"usage": {"inputTokens": 12, "outputTokens": 34, "totalTokens": 46}}),
        ),
        Message {
            headers: vec![
                header("yes", HeaderValue::Bool(true)),
                header("no", HeaderValue::Bool(false)),
                header("byte", HeaderValue::Byte(i8::MIN)),
                header("short", HeaderValue::Short(i16::MAX)),
                header("int", HeaderValue::Int(-123_456_789)),
                header("long", HeaderValue::Long(i64::MIN + 1)),
                header("bytes", HeaderValue::Bytes((0..=255).collect())),
                header("string", HeaderValue::String("é☃".into())),
                header("time", HeaderValue::Timestamp(1_700_000_000_123)),
                header(
                    "uuid",
                    HeaderValue::Uuid(
                        *b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff",
                    ),
                ),
            ],
            payload: vec![0, 159, 146, 150, 255],
        },
        Message::default(),
    ]
}

#[test]
fn botocore_decodes_what_we_encode_in_pieces() {
    let messages = messages();
    let stream: Vec<u8> = messages
        .iter()
        .flat_map(|m| m.encode().expect("encode"))
        .collect();
    // Pieces of 1, 2, 3, ... bytes: every message is split somewhere, several at a time.
    let mut chunks = Vec::new();
    let mut at = 0;
    let mut size = 1;
    while at < stream.len() {
        let end = (at + size).min(stream.len());
        chunks.push(hex(&stream[at..end]));
        at = end;
        size = size % 97 + 1;
    }
    let theirs = run_reference(
        "botocore_eventstream",
        &["decode"],
        &json!({ "chunks": chunks }),
    );
    assert_eq!(theirs.get("error"), None, "botocore refused: {theirs}");
    let expected: Vec<Value> = messages.iter().map(message_json).collect();
    assert_eq!(theirs["messages"], Value::Array(expected));
}

#[test]
fn we_decode_what_an_independent_encoder_builds_as_botocore_does() {
    let built = run_reference("botocore_eventstream", &["build"], &json!({}));
    let stream = unhex(built["stream"].as_str().expect("stream"));
    let theirs = built["messages"].as_array().expect("messages");
    assert_eq!(theirs.len(), 5, "{built}");
    for split in 0..=stream.len() {
        let mut decoder = Decoder::new();
        let mut ours = Vec::new();
        for piece in [&stream[..split], &stream[split..]] {
            decoder.push(piece);
            while let Some(message) = decoder.next_message().expect("decodes") {
                ours.push(message_json(&message));
            }
        }
        decoder.finish().expect("ends on a message boundary");
        assert_eq!(&ours, theirs, "split at byte {split}");
    }
}

#[test]
fn a_corrupted_frame_is_refused_by_both() {
    let good = messages()[0].encode().expect("encode");
    let mut bad_payload = messages()[1].encode().expect("encode");
    let at = bad_payload.len() - 6;
    bad_payload[at] ^= 0x20;
    let mut bad_prelude = messages()[2].encode().expect("encode");
    bad_prelude[7] ^= 0x01;
    for (bad, is_expected) in [
        (
            bad_payload,
            (|e: &DecodeError| matches!(e, DecodeError::MessageCrc { .. }))
                as fn(&DecodeError) -> bool,
        ),
        (bad_prelude, |e: &DecodeError| {
            matches!(e, DecodeError::PreludeCrc { .. })
        }),
    ] {
        let stream = [good.clone(), bad].concat();
        let theirs = run_reference(
            "botocore_eventstream",
            &["decode"],
            &json!({ "chunks": [hex(&stream)] }),
        );
        assert_eq!(theirs["error"], json!("ChecksumMismatch"), "{theirs}");
        assert_eq!(theirs["messages"].as_array().map(Vec::len), Some(1));

        let mut decoder = Decoder::new();
        decoder.push(&stream);
        assert_eq!(
            decoder
                .next_message()
                .expect("first frame is good")
                .map(|m| message_json(&m)),
            Some(theirs["messages"][0].clone())
        );
        let error = decoder.next_message().expect_err("second frame is corrupt");
        assert!(is_expected(&error), "{error}");
    }
}
