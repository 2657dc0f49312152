//! `POST /v1/messages/count_tokens` (Anthropic's token counting, which Claude Code calls
//! before its requests): `{"input_tokens": N}` for a Messages body's `model`, `messages`,
//! `system` and `tools`.
//!
//! A model on an Anthropic-kind provider gets the provider's own count (the body forwarded
//! with the upstream model, the provider's key and headers); any other model gets the
//! gateway's estimate of the prompt ([`tokens::estimate_anthropic_prompt_tokens`], what the
//! limits reserve for the same body on `/v1/messages`). Authenticated and rate-limited as
//! the door is: the call counts toward request rates and concurrency, and consumes no
//! tokens and no budget (nothing is generated).

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use serde_json::Value;

use super::{attempt_log, call, pick_model, respond};
use crate::ai::providers::anthropic;
use crate::ai::tokens;
use crate::ai::{Model, Provider};
use crate::error::{Dialect, GatewayError};
use crate::http1::{BufConn, RequestHead};
use crate::pipeline::{exchange, limits, Failure, Outcome, RequestCtx, ThreadState};
use crate::snapshot::Snapshot;

/// Largest token-count answer read from a provider (it is a one-member object).
const MAX_COUNT_BODY: usize = 64 * 1024;

/// Answers `POST /v1/messages/count_tokens`.
pub(crate) async fn count_tokens<S>(
    worker: &ThreadState,
    snapshot: &Snapshot,
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    body: &[u8],
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    // Request rates and concurrency only, before the body is looked at (a flood of bad
    // bodies is throttled too): counting uses no tokens.
    let _counts = limits::requests(worker, snapshot, None, ctx)?;
    let request = anthropic::parse_count_tokens_request(body)
        .map_err(|e| GatewayError::InvalidRequest(e.to_string()))?;
    let model = pick_model(snapshot, ctx, &request.model)?;
    let provider = snapshot.catalog.provider(model.provider);
    let target = provider.target(&model.upstream_model);
    let forward = provider
        .api
        .count_tokens_request(&request.body, &target)
        .zip(provider.upstream.as_ref());
    let Some(((path, upstream_body), upstream)) = forward else {
        let estimate = tokens::estimate_anthropic_prompt_tokens(
            &model.upstream_model,
            &Value::Object(request.body),
        );
        return answer(client, head, ctx, estimate).await;
    };
    let sent = exchange::send(worker, upstream, &snapshot.limits, |target| {
        call::provider_request(
            provider,
            &target.authority,
            &path,
            &upstream_body,
            &ctx.request_id,
        )
    })
    .await;
    let mut exchange = match sent {
        Ok(exchange) => exchange,
        Err(e) => {
            ctx.attempts
                .push(attempt_log(model, provider, &e.message()));
            return Err(e.into());
        }
    };
    let status = exchange.response.status();
    ctx.attempts
        .push(attempt_log(model, provider, &status.to_string()));
    if !(200..300).contains(&status) {
        // Mapped as a Messages call's errors are: a provider 401 is the gateway's 502.
        let error =
            call::read_provider_error(worker, upstream, provider, exchange, &snapshot.limits).await;
        return call::answer_provider_error(client, head, ctx, Dialect::Anthropic, &error).await;
    }
    let answered = exchange::read_response_body(
        &mut exchange,
        "POST",
        MAX_COUNT_BODY,
        snapshot.limits.upstream_timeout,
    )
    .await;
    exchange.finish(worker, upstream, answered.is_ok());
    let counted = answered
        .map_err(Failure::from)
        .and_then(|body| provider_count(provider, model, &body).map_err(Failure::from))?;
    answer(client, head, ctx, counted).await
}

/// The provider's `input_tokens`, or why its answer is unusable.
fn provider_count(provider: &Provider, model: &Model, body: &[u8]) -> Result<u64, GatewayError> {
    provider.api.count_tokens_response(body).map_err(|e| {
        log::warn!(
            "provider {} counting for {}: {e}",
            provider.name,
            model.name
        );
        GatewayError::Upstream("untranslatable provider response")
    })
}

/// `{"input_tokens": n}`.
async fn answer<S>(
    client: &mut BufConn<S>,
    head: &RequestHead,
    ctx: &mut RequestCtx,
    input_tokens: u64,
) -> Result<Outcome, Failure>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let body = serde_json::json!({ "input_tokens": input_tokens }).to_string();
    respond(client, head, ctx, 200, "application/json", body.as_bytes()).await
}
