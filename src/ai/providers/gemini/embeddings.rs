//! `POST /v1/embeddings` onto Gemini's `models.batchEmbedContents` (Gemini API reference,
//! "Embeddings"): one `EmbedContentRequest` per input, the vectors back in input order.
//!
//! Gemini reports no token usage for embeddings, so the usage in the OpenAI response is an
//! estimate made from the inputs: one token per 4 bytes of text, rounded up per input (the
//! gateway's estimate for models without a known tokenizer, [`crate::ai::tokens`]).

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::{given, model_resource};
use crate::ai::openai::RequestError;
use crate::ai::TokenCounter;
use crate::ai::TranslateError;

/// The path under the provider's `base_url` of an embeddings call on `upstream_model`:
/// `/v1beta/models/{model}:batchEmbedContents`.
pub fn embeddings_path(upstream_model: &str) -> String {
    format!("{}:batchEmbedContents", model_resource(upstream_model))
}

/// The `batchEmbedContents` body for an OpenAI embeddings request: each text of `input` (a
/// string or an array of strings) as one request on `models/{upstream_model}`, with
/// `dimensions` as `outputDimensionality`. Token-array inputs are refused: Gemini takes text
/// only. `encoding_format` is checked here and applied by [`embeddings_response_to_openai`].
pub fn embeddings_request_from_openai(
    req: &Map<String, Value>,
    upstream_model: &str,
) -> Result<Vec<u8>, RequestError> {
    let inputs = texts(req)?;
    let dimensions = match given(req, "dimensions") {
        None => None,
        Some(d) if d.as_u64().is_some_and(|d| d > 0) => Some(d.clone()),
        Some(_) => {
            return Err(RequestError::Invalid {
                field: "dimensions",
                expected: "an integer > 0",
            })
        }
    };
    encoding_is_base64(req)?;
    let name = upstream_model
        .strip_prefix("models/")
        .unwrap_or(upstream_model);
    let model = format!("models/{name}");
    let requests: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let mut request = json!({ "model": model, "content": { "parts": [{ "text": text }] } });
            if let Some(dimensions) = &dimensions {
                request["outputDimensionality"] = dimensions.clone();
            }
            request
        })
        .collect();
    let body = json!({ "requests": requests });
    Ok(serde_json::to_vec(&body).expect("serialize JSON value"))
}

/// The OpenAI embeddings response (`object: "list"` of `embedding` objects, in input order)
/// for a `batchEmbedContents` response to `req` (the client's request, which gives the
/// encoding and the inputs the usage is estimated from; see the module docs). `model` is the
/// client-facing name.
pub fn embeddings_response_to_openai(
    body: &[u8],
    model: &str,
    req: &Map<String, Value>,
) -> Result<Vec<u8>, TranslateError> {
    let response: Value = serde_json::from_slice(body)
        .map_err(|_| TranslateError("the Gemini embeddings response is not JSON".into()))?;
    let embeddings = response
        .get("embeddings")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError("the Gemini embeddings response has no embeddings".into()))?;
    let base64 = encoding_is_base64(req).unwrap_or(false);
    let mut data = Vec::with_capacity(embeddings.len());
    for (index, embedding) in embeddings.iter().enumerate() {
        let values = embedding
            .get("values")
            .and_then(Value::as_array)
            .ok_or_else(|| TranslateError("a Gemini embedding has no values".into()))?;
        let vector = if base64 {
            Value::String(base64_floats(values)?)
        } else {
            Value::Array(values.clone())
        };
        data.push(json!({ "object": "embedding", "index": index, "embedding": vector }));
    }
    let prompt_tokens = estimated_tokens(req);
    let out = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    });
    Ok(serde_json::to_vec(&out).expect("serialize JSON value"))
}

/// The texts of `input`: a string, or an array of strings.
fn texts(req: &Map<String, Value>) -> Result<Vec<&str>, RequestError> {
    const EXPECTED: &str = "a string or an array of strings (this provider takes no token arrays)";
    match given(req, "input") {
        None => Err(RequestError::Missing("input")),
        Some(Value::String(text)) => Ok(vec![text.as_str()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| {
                item.as_str().ok_or(RequestError::Invalid {
                    field: "input",
                    expected: EXPECTED,
                })
            })
            .collect(),
        Some(_) => Err(RequestError::Invalid {
            field: "input",
            expected: EXPECTED,
        }),
    }
}

/// Whether the client asked for `encoding_format: "base64"` (default `float`).
fn encoding_is_base64(req: &Map<String, Value>) -> Result<bool, RequestError> {
    match given(req, "encoding_format").map(Value::as_str) {
        None | Some(Some("float")) => Ok(false),
        Some(Some("base64")) => Ok(true),
        Some(_) => Err(RequestError::Invalid {
            field: "encoding_format",
            expected: "\"float\" or \"base64\"",
        }),
    }
}

/// OpenAI's base64 encoding of a vector: the little-endian bytes of each value as an `f32`,
/// in standard base64 (what OpenAI's SDKs decode).
fn base64_floats(values: &[Value]) -> Result<String, TranslateError> {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for value in values {
        let value = value
            .as_f64()
            .ok_or_else(|| TranslateError("a Gemini embedding value is not a number".into()))?;
        bytes.extend_from_slice(&(value as f32).to_le_bytes());
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Estimated prompt tokens of the request's inputs (Gemini reports none).
fn estimated_tokens(req: &Map<String, Value>) -> u64 {
    texts(req)
        .unwrap_or_default()
        .iter()
        .map(|text| TokenCounter::Bytes.count(text))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("test request must be an object"),
        }
    }

    fn request(req: Value) -> Result<Value, RequestError> {
        embeddings_request_from_openai(&object(req), "gemini-embedding-001")
            .map(|body| serde_json::from_slice(&body).unwrap())
    }

    #[test]
    fn path_names_batch_embed_contents() {
        assert_eq!(
            embeddings_path("gemini-embedding-001"),
            "/v1beta/models/gemini-embedding-001:batchEmbedContents"
        );
    }

    #[test]
    fn each_input_is_one_embed_request() {
        let out = request(json!({"model": "e", "input": ["a", "b"], "dimensions": 768})).unwrap();
        assert_eq!(
            out,
            json!({"requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 768},
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 768}
            ]})
        );
    }

    #[test]
    fn a_single_string_input_is_one_request() {
        let out = request(json!({"model": "e", "input": "hello"})).unwrap();
        assert_eq!(out["requests"].as_array().unwrap().len(), 1);
        assert!(out["requests"][0].get("outputDimensionality").is_none());
    }

    #[test]
    fn token_array_inputs_are_refused() {
        for input in [json!([1, 2, 3]), json!([[1, 2]]), json!(5), json!([])] {
            let err = request(json!({"model": "e", "input": input})).unwrap_err();
            assert_eq!(err.field(), Some("input"));
        }
        assert_eq!(
            request(json!({"model": "e"})).unwrap_err(),
            RequestError::Missing("input")
        );
    }

    #[test]
    fn bad_dimensions_and_encoding_are_named() {
        let err = request(json!({"model": "e", "input": "x", "dimensions": 0})).unwrap_err();
        assert_eq!(err.field(), Some("dimensions"));
        let err =
            request(json!({"model": "e", "input": "x", "encoding_format": "hex"})).unwrap_err();
        assert_eq!(err.field(), Some("encoding_format"));
    }

    /// A `batchEmbedContents` answer (Gemini API reference shape).
    const RESPONSE: &[u8] =
        br#"{"embeddings": [{"values": [0.5, -0.25, 1.0]}, {"values": [0.0, 0.125, -1.0]}]}"#;

    #[test]
    fn response_becomes_an_openai_list_with_estimated_usage() {
        let req = object(json!({"model": "e", "input": ["abcd", "abcde"]}));
        let out = embeddings_response_to_openai(RESPONSE, "embed", &req).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            out,
            json!({"object": "list", "model": "embed",
                   "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25, 1.0]},
                            {"object": "embedding", "index": 1, "embedding": [0.0, 0.125, -1.0]}],
                   "usage": {"prompt_tokens": 3, "total_tokens": 3}})
        );
    }

    #[test]
    fn estimated_usage_is_what_openai_metering_reads() {
        let req = object(json!({"model": "e", "input": "a text of twenty byte"}));
        let out = embeddings_response_to_openai(RESPONSE, "embed", &req).unwrap();
        let usage = crate::ai::openai::usage_from_embeddings_response(&out).unwrap();
        assert_eq!(usage.prompt_tokens, 6);
        assert_eq!(usage.completion_tokens, 0);
    }

    #[test]
    fn base64_encoding_packs_little_endian_f32() {
        let req = object(json!({"model": "e", "input": ["a", "b"], "encoding_format": "base64"}));
        let out = embeddings_response_to_openai(RESPONSE, "embed", &req).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        let encoded = out["data"][0]["embedding"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let floats: Vec<f32> = bytes
            .chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(floats, vec![0.5, -0.25, 1.0]);
    }

    #[test]
    fn untranslatable_responses_are_errors() {
        let req = object(json!({"model": "e", "input": "x"}));
        for body in [&b"nope"[..], b"{}", br#"{"embeddings":[{}]}"#] {
            assert!(embeddings_response_to_openai(body, "m", &req).is_err());
        }
    }
}
