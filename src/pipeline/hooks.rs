//! The Lua hook points of the request path. Each runs on the worker's own VM
//! ([`crate::lua::LuaRuntime`]); a request whose route (or front door) has no script pays
//! nothing here. A hook that fails answers 500 `hook_error` (its details go to the log,
//! never to the client), and the worker goes on serving.

use serde_json::Value;

use super::RequestCtx;
use super::ThreadState;
use crate::auth::Consumer;
use crate::error::GatewayError;
use crate::http1::RequestHead;
use crate::limits::{budget_limit, key_scope, nano_to_usd, team_scope};
use crate::lua::{
    BudgetInfo, Hook, HookError, HookRequest, LuaRuntime, Redactor, ResponseInfo, ScriptId,
    ToolCallVerdict,
};
use crate::snapshot::Snapshot;

/// A request's hook state: its script and what the hooks see and changed.
pub struct Hooked {
    /// The script of the route or front door.
    pub script: ScriptId,
    /// The hooks' view of the request, with their edits.
    pub req: HookRequest,
}

/// Starts hook state for a request whose route has `script`: the request as the hooks see it.
pub(super) fn begin(
    script: Option<ScriptId>,
    head: &RequestHead,
    ctx: &RequestCtx,
    route: Option<&str>,
) -> Option<Box<Hooked>> {
    let script = script?;
    let mut req = HookRequest::new(head.method(), head.path(), head.query());
    req.client_ip = ctx.client_addr.ip().to_string();
    req.route = route.map(str::to_string);
    req.headers = head
        .headers()
        .map(|(name, value)| {
            (
                name.to_ascii_lowercase(),
                String::from_utf8_lossy(value).into_owned(),
            )
        })
        .collect();
    Some(Box::new(Hooked { script, req }))
}

/// Makes the snapshot's scripts current on this worker's runtime; on a new config load, first
/// gives it the redaction of that config's secrets (resolved here, once per load and worker,
/// not per request).
fn sync(lua: &mut LuaRuntime, snapshot: &Snapshot) {
    if !lua.is_current(&snapshot.scripts) {
        lua.set_redactor(Redactor::for_config(&snapshot.config));
    }
    lua.sync(&snapshot.scripts);
}

/// Logs a failed hook. The message is already redacted ([`HookError`] messages are).
fn failed(err: HookError, hook: Hook) -> GatewayError {
    log::warn!(target: "lua", "{} failed: {err}", hook.function_name());
    GatewayError::HookFailed
}

/// Runs `hook` (on_access or on_request) if the script defines it, with the caller known so far.
fn run(
    worker: &ThreadState,
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    hook: Hook,
) -> Result<(), GatewayError> {
    let Some(hooked) = ctx.hooked.as_deref_mut() else {
        return Ok(());
    };
    if !snapshot.scripts.defines(hooked.script, hook) {
        return Ok(());
    }
    hooked.req.consumer = ctx.consumer.as_ref().map(Into::into);
    let mut lua = worker.lua.borrow_mut();
    sync(&mut lua, snapshot);
    lua.call(hooked.script, hook, &mut hooked.req)
        .map_err(|e| failed(e, hook))?;
    if let Some((status, message)) = hooked.req.deny.take() {
        return Err(GatewayError::Denied { status, message });
    }
    Ok(())
}

/// Phase access, Lua part: `on_access` may deny, set headers, or name the consumer
/// (`ctx:set_consumer`), which the auth phase then uses.
pub(super) fn access(
    worker: &ThreadState,
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    run(worker, snapshot, ctx, Hook::Access)
}

/// The consumer an `on_access` hook named with `ctx:set_consumer(key_id_or_name)`:
/// `Ok(None)` when it named none; a name that matches no live key fails closed (401).
pub(super) fn chosen_consumer(
    worker: &ThreadState,
    ctx: &mut RequestCtx,
    now_ms: i64,
) -> Result<Option<Consumer>, GatewayError> {
    let Some(name) = ctx
        .hooked
        .as_deref_mut()
        .and_then(|h| h.req.set_consumer.take())
    else {
        return Ok(None);
    };
    let credentials = &worker.shared.credentials;
    let key = credentials
        .by_id(&name)
        .or_else(|| credentials.by_name(&name))
        .filter(|k| k.is_active_at_ms(now_ms))
        .ok_or(GatewayError::Unauthorized)?;
    Ok(Some(Consumer::from_key(&key)))
}

/// Before forwarding: `on_request` may rewrite headers, path and query.
pub(super) fn request(
    worker: &ThreadState,
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    run(worker, snapshot, ctx, Hook::Request)
}

/// AI requests after auth: `on_prompt` gets the chat request and may return a changed one.
pub(super) fn prompt(
    worker: &ThreadState,
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    chat: &Value,
) -> Result<Option<Value>, GatewayError> {
    let consumer = ctx.consumer.as_ref().map(Into::into);
    let ctx_consumer = ctx.consumer.as_ref();
    let Some(hooked) = ctx.hooked.as_deref_mut() else {
        return Ok(None);
    };
    if !snapshot.scripts.defines(hooked.script, Hook::Prompt) {
        return Ok(None);
    }
    hooked.req.consumer = consumer;
    hooked.req.budget = budget_info(worker, snapshot, ctx_consumer);
    let mut lua = worker.lua.borrow_mut();
    sync(&mut lua, snapshot);
    let changed = lua
        .call_prompt(hooked.script, &mut hooked.req, chat)
        .map_err(|e| failed(e, Hook::Prompt))?;
    if let Some((status, message)) = hooked.req.deny.take() {
        return Err(GatewayError::Denied { status, message });
    }
    Ok(changed)
}

/// Spend against the caller's budget for `ctx:budget()`: the key's budget, else its team's.
fn budget_info(
    worker: &ThreadState,
    snapshot: &Snapshot,
    consumer: Option<&Consumer>,
) -> Option<BudgetInfo> {
    let consumer = consumer?;
    let key_budget = consumer.key.as_ref().and_then(|k| {
        budget_limit(k.budget_usd, k.budget_tokens, k.budget_period.as_deref())
            .map(|limit| (key_scope(&k.id), limit))
    });
    let (scope, limit) = key_budget.or_else(|| {
        let limit = snapshot.teams.get(&consumer.team)?.budget?;
        Some((team_scope(&consumer.team), limit))
    })?;
    let (tokens, nano) =
        worker
            .shared
            .budgets
            .spent(&scope, limit.period, crate::clock::unix_now_ms());
    Some(BudgetInfo {
        used_usd: nano_to_usd(nano),
        limit_usd: limit.nano_usd.map(nano_to_usd),
        used_tokens: tokens,
        limit_tokens: limit.tokens,
    })
}

/// Whether the request's script has an `on_prompt` hook.
pub(super) fn wants_prompt(snapshot: &Snapshot, ctx: &RequestCtx) -> bool {
    ctx.hooked
        .as_deref()
        .is_some_and(|h| snapshot.scripts.defines(h.script, Hook::Prompt))
}

/// Whether the request's script has an `on_response` hook.
pub(super) fn wants_response(snapshot: &Snapshot, ctx: &RequestCtx) -> bool {
    ctx.hooked
        .as_deref()
        .is_some_and(|h| snapshot.scripts.defines(h.script, Hook::Response))
}

/// The response head (and the text of a non-streamed AI answer): `on_response` may change
/// status, headers and text.
pub(super) fn response(
    worker: &ThreadState,
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    resp: &mut ResponseInfo,
) -> Result<(), GatewayError> {
    let Some(hooked) = ctx.hooked.as_deref_mut() else {
        return Ok(());
    };
    let mut lua = worker.lua.borrow_mut();
    sync(&mut lua, snapshot);
    lua.call_response(hooked.script, &mut hooked.req, resp)
        .map_err(|e| failed(e, Hook::Response))
}

/// After the response: `on_log` adds fields to the access-log entry (returned); a failure
/// here is logged and counted, the response being already sent. Frees the request's Lua state.
pub(super) fn log(
    worker: &ThreadState,
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
) -> serde_json::Map<String, Value> {
    let Some(hooked) = ctx.hooked.as_deref_mut() else {
        return serde_json::Map::new();
    };
    let mut lua = worker.lua.borrow_mut();
    if snapshot.scripts.defines(hooked.script, Hook::Log) {
        sync(&mut lua, snapshot);
        if let Err(e) = lua.call(hooked.script, Hook::Log, &mut hooked.req) {
            failed(e, Hook::Log);
        }
    }
    lua.end_request(&mut hooked.req);
    let mut fields = std::mem::take(&mut hooked.req.log_fields);
    fields.retain(|name, _| !crate::accesslog::OWN_FIELDS.contains(&name.as_str()));
    fields
}

/// An MCP `tools/call`, permitted and limited: `on_tool_call` may deny it or rewrite its
/// arguments. `None` when the endpoint's script has no such hook (nothing to apply).
pub(crate) fn tool_call(
    worker: &ThreadState,
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    call: &Value,
) -> Result<Option<ToolCallVerdict>, GatewayError> {
    let consumer = ctx.consumer.as_ref().map(Into::into);
    let Some(hooked) = ctx.hooked.as_deref_mut() else {
        return Ok(None);
    };
    if !snapshot.scripts.defines(hooked.script, Hook::ToolCall) {
        return Ok(None);
    }
    hooked.req.consumer = consumer;
    let mut lua = worker.lua.borrow_mut();
    sync(&mut lua, snapshot);
    lua.call_tool(hooked.script, &mut hooked.req, call)
        .map(Some)
        .map_err(|e| failed(e, Hook::ToolCall))
}

/// A tool's result before the client sees it: `on_tool_result` may change or replace it.
/// `None` when the endpoint's script has no such hook.
pub(crate) fn tool_result(
    worker: &ThreadState,
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    call: &Value,
    result: &Value,
) -> Result<Option<Value>, GatewayError> {
    let Some(hooked) = ctx.hooked.as_deref_mut() else {
        return Ok(None);
    };
    if !snapshot.scripts.defines(hooked.script, Hook::ToolResult) {
        return Ok(None);
    }
    let mut lua = worker.lua.borrow_mut();
    sync(&mut lua, snapshot);
    lua.call_tool_result(hooked.script, &mut hooked.req, call, result)
        .map(Some)
        .map_err(|e| failed(e, Hook::ToolResult))
}
