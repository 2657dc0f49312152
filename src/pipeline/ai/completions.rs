//! `POST /v1/completions`, the legacy text completion API, for models on providers that
//! have it (`kind = "openai"`; any other model is refused with a 400 that names it and says
//! why). Its phases after auth, in the order of the chat doors':
//!
//! - prompt: the body checked ([`openai::parse_completion_request`]); `on_prompt` sees the
//!   request as a chat, each prompt one user message (`{model, messages, max_tokens,
//!   stream}`), and what it returns is read back the same way: `model`, the user messages'
//!   text as the prompts, `max_tokens`. The estimate is the prompts' tokens; the
//!   reservation, the completion reservation per completion made (prompts × `n`).
//! - limits: request rates, concurrency, tokens per minute and budgets, as for chat.
//! - upstream: the provider's `/v1/completions` with the upstream model name; one attempt
//!   (fallbacks may be chat-only models, and this API has no translation).
//! - response: the provider's answer with the client-facing model name, whole or streamed.
//! - settle: metered from the usage the provider reports (the gateway asks for it in
//!   streams with `stream_options.include_usage`), as chat is.

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use serde_json::{json, Map, Value};

use super::relay::{relay, Relayed};
use super::stream::Translation;
use super::{admit, attempt_log, call, hooks, pick_model, reply, settle_metered, Reserved};
use crate::ai::model_name::rename_body;
use crate::ai::openai::{self, CompletionRequest, MAX_COMPLETION_PROMPTS};
use crate::ai::TokenCounter;
use crate::error::{Dialect, GatewayError};
use crate::http1::{BufConn, RequestHead};
use crate::limits::{completion_reservation, Metered};
use crate::pipeline::{exchange, Failure, Outcome, RequestCtx, ThreadState};
use crate::snapshot::Snapshot;

/// Largest whole completion answer read from a provider.
const MAX_PROVIDER_BODY: usize = 64 * 1024 * 1024;

/// Answers `POST /v1/completions`.
pub(crate) async fn completions<S>(
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
    let invalid = |e: openai::RequestError| GatewayError::InvalidRequest(e.to_string());
    let mut request = openai::parse_completion_request(body).map_err(invalid)?;
    prompt_hook(worker, snapshot, ctx, &mut request)?;
    let model = pick_model(snapshot, ctx, &request.model)?;
    let provider = snapshot.catalog.provider(model.provider);
    let target = provider.target(&model.upstream_model);
    let (Some((path, upstream_body)), Some(upstream)) = (
        provider.api.completions_request(&request, &target),
        provider.upstream.as_ref(),
    ) else {
        return Err(GatewayError::InvalidRequest(format!(
            "the model `{}` is served by provider `{}`, which has no legacy completions API; \
             /v1/completions reaches models on `kind = \"openai\"` providers only \
             (use /v1/chat/completions for this model)",
            model.name, provider.name
        ))
        .into());
    };
    let counter = TokenCounter::for_model(&model.upstream_model);
    let reserved = Reserved {
        prompt_tokens: Some(request.prompts.iter().map(|p| counter.count(p)).sum()),
        completion_tokens: completion_reservation(
            request.max_tokens,
            snapshot.config.ai.default_max_tokens,
        )
        .saturating_mul(request.prompts.len() as u64 * request.choices_per_prompt),
    };
    call::token_in_force(provider)?;
    let hold = admit(
        worker,
        snapshot,
        ctx,
        model,
        reserved.prompt_tokens.unwrap_or(0),
        reserved.completion_tokens,
    )?;
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
    let (result, metered) = match sent {
        Err(e) => {
            ctx.attempts
                .push(attempt_log(model, provider, &e.message()));
            (Err(e.into()), Metered::whole(None))
        }
        Ok(mut exchange) => {
            let status = exchange.response.status();
            ctx.attempts
                .push(attempt_log(model, provider, &status.to_string()));
            if !(200..300).contains(&status) {
                let error = call::read_provider_error(
                    worker,
                    upstream,
                    provider,
                    exchange,
                    &snapshot.limits,
                )
                .await;
                let r =
                    call::answer_provider_error(client, head, ctx, Dialect::OpenAi, &error).await;
                (r, Metered::whole(None))
            } else if request.stream && call::is_event_stream(&exchange) {
                let id = format!("cmpl-{}", ctx.request_id);
                let mut translation = Translation::new(
                    provider.api,
                    Dialect::OpenAi,
                    &model.name,
                    &id,
                    crate::clock::unix_now_ms() / 1000,
                    request.client_wants_usage,
                    counter,
                )
                .with_secrets(call::provider_secrets(provider));
                let Relayed {
                    result,
                    metered,
                    body_complete,
                } = relay(
                    worker,
                    snapshot,
                    client,
                    head,
                    ctx,
                    &mut exchange,
                    &mut translation,
                )
                .await;
                if body_complete {
                    exchange.finish(worker, upstream, true);
                }
                (result, metered)
            } else {
                let read = exchange::read_response_body(
                    &mut exchange,
                    "POST",
                    MAX_PROVIDER_BODY,
                    snapshot.limits.upstream_timeout,
                )
                .await;
                exchange.finish(worker, upstream, read.is_ok());
                match read {
                    Err(e) => (Err(e.into()), Metered::whole(None)),
                    Ok(body) => {
                        let usage = openai::usage_from_chat_response(&body);
                        let body = rename_body(body, &model.name);
                        let r =
                            reply::answer(worker, snapshot, client, head, ctx, status, body).await;
                        (r, Metered::whole(usage))
                    }
                }
            }
        }
    };
    settle_metered(worker, ctx, model, hold, metered, reserved, || 0, None);
    result
}

/// The request as `on_prompt` sees it: a chat, each prompt one user message.
fn as_chat(request: &CompletionRequest) -> Value {
    let messages: Vec<Value> = request
        .prompts
        .iter()
        .map(|p| json!({ "role": "user", "content": p }))
        .collect();
    let mut chat = Map::new();
    chat.insert("model".into(), Value::String(request.model.clone()));
    chat.insert("messages".into(), Value::Array(messages));
    if let Some(max) = request.max_tokens {
        chat.insert("max_tokens".into(), max.into());
    }
    chat.insert("stream".into(), request.stream.into());
    Value::Object(chat)
}

/// Runs `on_prompt` on the request shown as a chat, and takes back what it changed.
fn prompt_hook(
    worker: &ThreadState,
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    request: &mut CompletionRequest,
) -> Result<(), GatewayError> {
    let Some(changed) = hooks::prompt(worker, snapshot, ctx, &as_chat(request))? else {
        return Ok(());
    };
    let refused = |why: &str| {
        GatewayError::InvalidRequest(format!("on_prompt returned an invalid request: {why}"))
    };
    let model = changed
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| refused("`model` must be a non-empty string"))?;
    let prompts: Option<Vec<String>> = changed
        .get("messages")
        .and_then(Value::as_array)
        .map(|messages| {
            messages
                .iter()
                .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                .map(|m| m.get("content").and_then(Value::as_str).map(str::to_string))
                .collect::<Option<Vec<String>>>()
        })
        .unwrap_or_default();
    let prompts = prompts
        .filter(|p| !p.is_empty() && p.len() <= MAX_COMPLETION_PROMPTS)
        .ok_or_else(|| refused("`messages` must hold 1 to 64 user messages with text content"))?;
    request.model = model.to_string();
    request.prompts = prompts;
    if let Some(max) = changed.get("max_tokens").and_then(Value::as_u64) {
        request.max_tokens = Some(max);
        request.body.insert("max_tokens".into(), max.into());
    }
    Ok(())
}
