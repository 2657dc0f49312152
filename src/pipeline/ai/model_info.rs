//! `GET /v1/models/{id}`: one model of the catalog, by the rule `GET /v1/models` lists them
//! by: a model the caller's key may not use does not exist for that caller (404, as for a
//! name the catalog lacks), so a key cannot probe which models others may use.
//!
//! Model names may hold `/` and `:` (`meta-llama/Llama-3.1-8B`, `llama3:8b`). Everything
//! after `/v1/models/` is the id, raw `/` included; escapes the path normalization kept
//! (`%20`, say) are decoded, so the id is compared in the same spelling as the names in
//! `[[model]]` and in the list. An encoded slash (`%2F`) never gets here: the path rules
//! refuse it for every path before routing.

use monoio::io::{AsyncReadRent, AsyncWriteRent};

use super::respond;
use crate::ai::openai;
use crate::auth;
use crate::error::GatewayError;
use crate::http1::{BufConn, RequestHead};
use crate::pipeline::{Failure, Outcome, RequestCtx};
use crate::snapshot::Snapshot;

/// The path prefix of the door.
pub(super) const PREFIX: &str = "/v1/models/";

/// Longest model id accepted, in bytes as it appears in the path: well past any provider's
/// model names, and a bound on what the error message echoes.
pub(super) const MAX_MODEL_ID_BYTES: usize = 256;

/// The model id in `path` (`/v1/models/{id}`), percent-decoded; `None` when it is not valid
/// UTF-8 once decoded (no model can be named so).
fn model_id(path: &str) -> Result<Option<String>, GatewayError> {
    let raw = path.strip_prefix(PREFIX).unwrap_or_default();
    if raw.len() > MAX_MODEL_ID_BYTES {
        return Err(GatewayError::InvalidRequest(format!(
            "the model id is longer than {MAX_MODEL_ID_BYTES} bytes"
        )));
    }
    if raw.is_empty() {
        return Err(GatewayError::InvalidRequest(
            "the model id is missing from the path".to_string(),
        ));
    }
    Ok(percent_decode(raw.as_bytes()).and_then(|b| String::from_utf8(b).ok()))
}

/// `%XX` escapes decoded; `None` for an escape that is not two hex digits (the path rules
/// refuse those before routing, so this is belt and braces).
fn percent_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = std::str::from_utf8(raw.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Answers `GET /v1/models/{id}` with the `model` object, or 404 `model_not_found`.
pub(crate) async fn retrieve<S>(
    snapshot: &Snapshot,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let id = model_id(head.path())?;
    let key = ctx.consumer.as_ref().and_then(|c| c.key.as_deref());
    let found = id.as_deref().and_then(|id| {
        snapshot
            .catalog
            .model(id)
            .map(|(_, m)| m.name.as_str())
            .filter(|name| key.is_none_or(|k| auth::key_permits_model(k, name)))
    });
    let Some(name) = found else {
        let shown = id.unwrap_or_else(|| head.path()[PREFIX.len()..].to_string());
        return Err(GatewayError::UnknownModel(shown).into());
    };
    let body = openai::model_body(name, crate::clock::unix_now_ms() / 1000);
    respond(client, head, ctx, 200, "application/json", &body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_everything_after_the_prefix_decoded() {
        assert_eq!(
            model_id("/v1/models/gpt-4o-mini").unwrap().as_deref(),
            Some("gpt-4o-mini")
        );
        assert_eq!(
            model_id("/v1/models/meta-llama/Llama-3:8b")
                .unwrap()
                .as_deref(),
            Some("meta-llama/Llama-3:8b")
        );
        assert_eq!(
            model_id("/v1/models/my%20model").unwrap().as_deref(),
            Some("my model")
        );
        // Not UTF-8 once decoded: no model can have that name.
        assert_eq!(model_id("/v1/models/%FF").unwrap(), None);
    }

    #[test]
    fn a_missing_or_too_long_id_is_refused() {
        assert!(model_id("/v1/models/").is_err());
        let long = format!("/v1/models/{}", "m".repeat(MAX_MODEL_ID_BYTES + 1));
        assert!(model_id(&long).is_err());
        let longest = format!("/v1/models/{}", "m".repeat(MAX_MODEL_ID_BYTES));
        assert!(model_id(&longest).is_ok());
    }
}
