//! The per-worker hook runtime: one VM, created on the worker thread, rebuilt when damaged.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mlua::Value;
use serde_json::Value as Json;

use super::cache::Cache;
use super::cf::{json_to_lua, lua_to_json};
use super::ctx::{HookRequest, ResponseInfo};
use super::error::{HookError, HookErrorKind};
use super::redact::Redactor;
use super::scripts::{ScriptId, ScriptSet};
use super::vm::Vm;
use super::{Hook, LuaLimits};

/// Longest denial message of `on_tool_call` kept (in characters); the rest is cut.
pub const MAX_DENY_MESSAGE_CHARS: usize = 512;

/// What `on_tool_call` decided about one call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallVerdict {
    /// The denial message, when the hook denied the call.
    pub denied: Option<String>,
    /// The arguments the server gets (`None` = none were given and the hook set none).
    pub arguments: Option<Json>,
}

/// Counters of failed hook calls, one per kind.
struct ErrorCounters {
    error: Arc<AtomicU64>,
    timeout: Arc<AtomicU64>,
    memory: Arc<AtomicU64>,
}

impl ErrorCounters {
    fn new() -> Self {
        let m = crate::metrics::global();
        ErrorCounters {
            error: m.counter(
                "credentialflow_lua_hook_errors_total",
                "Lua hook calls that raised an error.",
            ),
            timeout: m.counter(
                "credentialflow_lua_hook_timeouts_total",
                "Lua hook calls interrupted at [lua] hook_timeout_ms.",
            ),
            memory: m.counter(
                "credentialflow_lua_hook_memory_errors_total",
                "Lua hook calls that ran past [lua] memory_limit_mb.",
            ),
        }
    }

    fn count(&self, kind: HookErrorKind) {
        let counter = match kind {
            HookErrorKind::Error => &self.error,
            HookErrorKind::Timeout => &self.timeout,
            HookErrorKind::Memory => &self.memory,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One worker's Lua VM and the scripts loaded into it. `!Send`: create it on the worker
/// thread and keep it there. After a call that ran out of memory or time, the VM may be left
/// in a half-updated state, so it is dropped and rebuilt (scripts reloaded) before the next
/// call; `cf.cache_*` data lives outside the VM and survives.
pub struct LuaRuntime {
    limits: LuaLimits,
    scripts: Arc<ScriptSet>,
    vm: Option<Vm>,
    cache: Rc<RefCell<Cache>>,
    counters: ErrorCounters,
    rebuilds: u64,
    redactor: Rc<Redactor>,
}

impl LuaRuntime {
    /// A runtime with no scripts; call [`LuaRuntime::sync`] to load some.
    pub fn new(limits: LuaLimits) -> LuaRuntime {
        LuaRuntime {
            limits,
            scripts: Arc::new(ScriptSet::empty()),
            vm: None,
            // Half the VM's budget again for the cache: it is script data kept outside.
            cache: Rc::new(RefCell::new(Cache::new(limits.memory_limit_bytes / 2))),
            counters: ErrorCounters::new(),
            rebuilds: 0,
            redactor: Rc::new(Redactor::default()),
        }
    }

    /// Makes `scripts` current (no-op if it already is): the VM is rebuilt with them, so
    /// nothing of the previous config's scripts stays behind.
    pub fn sync(&mut self, scripts: &Arc<ScriptSet>) {
        if Arc::ptr_eq(&self.scripts, scripts) {
            return;
        }
        self.scripts = Arc::clone(scripts);
        self.vm = None;
        if !scripts.is_empty() {
            // Build now rather than on the first request, so that request does not pay for it.
            let _ = self.vm();
        }
    }

    /// Whether `scripts` is the current script set (then [`LuaRuntime::sync`] is a no-op).
    pub fn is_current(&self, scripts: &Arc<ScriptSet>) -> bool {
        Arc::ptr_eq(&self.scripts, scripts)
    }

    /// Sets the redaction of what hooks log (the config's secrets); takes effect with the
    /// next VM, so call it before [`LuaRuntime::sync`] with a new config's scripts.
    pub fn set_redactor(&mut self, redactor: Redactor) {
        self.redactor = Rc::new(redactor);
        self.vm = None;
    }

    /// Changes the limits (a reload may change `[lua]`); takes effect with the next VM.
    pub fn set_limits(&mut self, limits: LuaLimits) {
        if self.limits != limits {
            self.limits = limits;
            self.vm = None;
        }
    }

    /// How many times the VM was built (the first build included); for tests and metrics.
    pub fn vm_builds(&self) -> u64 {
        self.rebuilds
    }

    /// Calls `on_access`, `on_request` or `on_log` of script `id` (a no-op when the script
    /// does not define it). For `on_log`, the fields the hook sets on `entry` are merged into
    /// `req.log_fields`. Use [`LuaRuntime::call_prompt`] and [`LuaRuntime::call_response`]
    /// for the two hooks with a second argument to read back.
    pub fn call(
        &mut self,
        id: ScriptId,
        hook: Hook,
        req: &mut HookRequest,
    ) -> Result<(), HookError> {
        match hook {
            Hook::Log => self.call_log(id, req),
            Hook::Prompt => self
                .call_prompt(id, req, &Json::Object(Default::default()))
                .map(drop),
            Hook::Response => self.call_response(id, req, &mut ResponseInfo::default()),
            Hook::ToolCall => self
                .call_tool(id, req, &Json::Object(Default::default()))
                .map(drop),
            Hook::ToolResult => {
                let empty = Json::Object(Default::default());
                self.call_tool_result(id, req, &empty, &empty).map(drop)
            }
            Hook::Access | Hook::Request => {
                let result = self.vm()?.call(id, hook, req, None, Vec::new());
                self.finish(result).map(drop)
            }
        }
    }

    /// Calls `on_prompt(ctx, chat)` with `chat` (the OpenAI chat request) as a Lua table.
    /// Returns `Some(new chat)` when the hook returned a table, `None` when it returned
    /// nothing (edits made in place without returning the table are ignored).
    pub fn call_prompt(
        &mut self,
        id: ScriptId,
        req: &mut HookRequest,
        chat: &Json,
    ) -> Result<Option<Json>, HookError> {
        if !self.scripts.defines(id, Hook::Prompt) {
            return Ok(None);
        }
        let name = script_name(&self.scripts, id);
        let vm = self.vm()?;
        let arg = json_to_lua(vm.lua(), chat).map_err(|e| vm.error(&name, &e));
        let result = arg.and_then(|arg| {
            let vm = self.vm.as_mut().expect("built above");
            match vm.call(id, Hook::Prompt, req, None, vec![arg])? {
                Value::Nil => Ok(None),
                v @ Value::Table(_) => lua_to_json(vm.lua(), v)
                    .map(Some)
                    .map_err(|e| vm.error(&name, &e)),
                other => Err(HookError::new(
                    &name,
                    HookErrorKind::Error,
                    format!(
                        "on_prompt must return a table or nil, not {}",
                        other.type_name()
                    ),
                )),
            }
        });
        self.finish(result)
    }

    /// Calls `on_response(ctx, resp)`; the hook's changes to status, headers and text are
    /// written back to `resp`.
    pub fn call_response(
        &mut self,
        id: ScriptId,
        req: &mut HookRequest,
        resp: &mut ResponseInfo,
    ) -> Result<(), HookError> {
        if !self.scripts.defines(id, Hook::Response) {
            return Ok(());
        }
        let vm = self.vm()?;
        let arg = vm.resp_value();
        let result = vm.call(id, Hook::Response, req, Some(resp), vec![arg]);
        self.finish(result).map(drop)
    }

    /// Calls `on_tool_call(ctx, call)` with `call` (`{server, tool, name, arguments}`) as a
    /// Lua table that also has `call:deny(msg)`. The hook denies by calling it or by returning
    /// a string; otherwise `call.arguments` as the hook left them are what the server gets.
    pub fn call_tool(
        &mut self,
        id: ScriptId,
        req: &mut HookRequest,
        call: &Json,
    ) -> Result<ToolCallVerdict, HookError> {
        let unchanged = ToolCallVerdict {
            denied: None,
            arguments: call.get("arguments").cloned(),
        };
        if !self.scripts.defines(id, Hook::ToolCall) {
            return Ok(unchanged);
        }
        let name = script_name(&self.scripts, id);
        let vm = self.vm()?;
        let lua_err = |vm: &Vm, e: mlua::Error| vm.error(&name, &e);
        let table = match json_to_lua(vm.lua(), call) {
            Ok(Value::Table(t)) => t,
            Ok(_) => return Ok(unchanged),
            Err(e) => return Err(lua_err(vm, e)),
        };
        // `call:deny(msg)` records the denial on the Rust side, where the hook cannot undo it
        // by editing the table afterwards.
        let denied: Rc<RefCell<Option<String>>> = Rc::default();
        let sink = Rc::clone(&denied);
        let deny = vm
            .lua()
            .create_function(move |_, (_this, msg): (Value, Option<String>)| {
                *sink.borrow_mut() = Some(msg.unwrap_or_default());
                Ok(())
            })
            .and_then(|f| table.raw_set("deny", f));
        if let Err(e) = deny {
            return Err(lua_err(vm, e));
        }
        let result = vm
            .call(
                id,
                Hook::ToolCall,
                req,
                None,
                vec![Value::Table(table.clone())],
            )
            .and_then(|returned| {
                let vm = self.vm.as_ref().expect("built above");
                let mut verdict = ToolCallVerdict {
                    denied: denied.borrow_mut().take(),
                    arguments: None,
                };
                match returned {
                    Value::Nil => {}
                    Value::String(s) => verdict.denied = Some(s.to_string_lossy()),
                    other => {
                        return Err(HookError::new(
                            &name,
                            HookErrorKind::Error,
                            format!(
                                "on_tool_call must return nil or a denial message, not {}",
                                other.type_name()
                            ),
                        ))
                    }
                }
                if let Some(message) = &mut verdict.denied {
                    if let Some((cut, _)) = message.char_indices().nth(MAX_DENY_MESSAGE_CHARS) {
                        message.truncate(cut);
                    }
                    return Ok(verdict);
                }
                let arguments = table
                    .raw_get::<Value>("arguments")
                    .map_err(|e| lua_err(vm, e))?;
                verdict.arguments = match arguments {
                    Value::Nil => None,
                    v @ Value::Table(_) => match lua_to_json(vm.lua(), v) {
                        Ok(Json::Object(map)) => Some(Json::Object(map)),
                        // An empty Lua table reads as an empty array: no arguments.
                        Ok(Json::Array(a)) if a.is_empty() => {
                            Some(Json::Object(Default::default()))
                        }
                        Ok(_) => {
                            return Err(HookError::new(
                                &name,
                                HookErrorKind::Error,
                                "call.arguments must be a table with string keys",
                            ))
                        }
                        Err(e) => return Err(lua_err(vm, e)),
                    },
                    other => {
                        return Err(HookError::new(
                            &name,
                            HookErrorKind::Error,
                            format!("call.arguments must be a table, not {}", other.type_name()),
                        ))
                    }
                };
                Ok(verdict)
            });
        self.finish(result)
    }

    /// Calls `on_tool_result(ctx, result, call)` with the tool's `result` (the JSON-RPC result:
    /// `content`, `isError`, `structuredContent`) and `call` (`{server, tool, name}`) as Lua
    /// tables. Returns the result the client gets: the table the hook returned, else `result`
    /// as the hook left it.
    pub fn call_tool_result(
        &mut self,
        id: ScriptId,
        req: &mut HookRequest,
        call: &Json,
        result: &Json,
    ) -> Result<Json, HookError> {
        if !self.scripts.defines(id, Hook::ToolResult) {
            return Ok(result.clone());
        }
        let name = script_name(&self.scripts, id);
        let vm = self.vm()?;
        let args = json_to_lua(vm.lua(), result)
            .and_then(|r| Ok((r, json_to_lua(vm.lua(), call)?)))
            .map_err(|e| vm.error(&name, &e));
        let outcome = args.and_then(|(result_value, call_value)| {
            let vm = self.vm.as_mut().expect("built above");
            let returned = vm.call(
                id,
                Hook::ToolResult,
                req,
                None,
                vec![result_value.clone(), call_value],
            )?;
            let shown = match returned {
                Value::Nil => result_value,
                v @ Value::Table(_) => v,
                other => {
                    return Err(HookError::new(
                        &name,
                        HookErrorKind::Error,
                        format!(
                            "on_tool_result must return a table or nil, not {}",
                            other.type_name()
                        ),
                    ))
                }
            };
            match lua_to_json(vm.lua(), shown) {
                Ok(Json::Object(map)) => Ok(Json::Object(map)),
                Ok(_) => Err(HookError::new(
                    &name,
                    HookErrorKind::Error,
                    "a tool result must be a table with string keys",
                )),
                Err(e) => Err(vm.error(&name, &e)),
            }
        });
        self.finish(outcome)
    }

    /// Frees the per-request `ctx.vars` table. Call once the request's last hook has run.
    pub fn end_request(&mut self, req: &mut HookRequest) {
        if let Some(key) = req.vars.take() {
            if let Some(vm) = &self.vm {
                if vm.lua().owns_registry_value(&key) {
                    let _ = vm.lua().remove_registry_value(key);
                }
            }
        }
    }

    fn call_log(&mut self, id: ScriptId, req: &mut HookRequest) -> Result<(), HookError> {
        if !self.scripts.defines(id, Hook::Log) {
            return Ok(());
        }
        let name = script_name(&self.scripts, id);
        let redactor = Rc::clone(&self.redactor);
        let vm = self.vm()?;
        let result = vm
            .lua()
            .create_table()
            .map_err(|e| vm.error(&name, &e))
            .and_then(|entry| {
                vm.call(id, Hook::Log, req, None, vec![Value::Table(entry.clone())])?;
                let fields =
                    lua_to_json(vm.lua(), Value::Table(entry)).map_err(|e| vm.error(&name, &e))?;
                let mut fields = fields;
                // The fields go to the access log: no secret a hook copied into them.
                redactor.redact_json(&mut fields);
                match fields {
                    Json::Object(map) => req.log_fields.extend(map),
                    // An empty table converts to `{}`; anything else means the hook stored a
                    // sequence in `entry`, which has no field names to log under.
                    Json::Array(a) if a.is_empty() => {}
                    _ => {
                        return Err(HookError::new(
                            &name,
                            HookErrorKind::Error,
                            "on_log entry fields must have string names",
                        ))
                    }
                }
                Ok(Value::Nil)
            });
        self.finish(result).map(drop)
    }

    /// The VM, built (with the current scripts) if there is none.
    fn vm(&mut self) -> Result<&mut Vm, HookError> {
        if self.vm.is_none() {
            let vm = Vm::new(
                self.limits,
                Rc::clone(&self.cache),
                Rc::clone(&self.redactor),
            );
            let mut vm = vm.map_err(|e| {
                self.counters.count(HookErrorKind::Error);
                HookError::new(
                    "lua",
                    HookErrorKind::Error,
                    format!("cannot create the VM: {e}"),
                )
            })?;
            vm.load_scripts(&self.scripts);
            self.rebuilds += 1;
            self.vm = Some(vm);
        }
        Ok(self.vm.as_mut().expect("set above"))
    }

    /// Counts a failure and drops a VM that may be damaged.
    fn finish<T>(&mut self, result: Result<T, HookError>) -> Result<T, HookError> {
        if let Err(e) = &result {
            self.counters.count(e.kind);
            if e.kind != HookErrorKind::Error {
                self.vm = None;
            }
        }
        result
    }
}

fn script_name(scripts: &ScriptSet, id: ScriptId) -> String {
    scripts.name(id).unwrap_or("?").to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::lua::test_support::{load, runtime, runtime_with, test_limits};

    fn tool_call() -> Json {
        json!({"server": "fs", "tool": "read", "name": "fs__read", "arguments": {"path": "/etc/passwd"}})
    }

    #[test]
    fn on_tool_call_denies_by_method_or_by_returning_a_message() {
        let mut rt = runtime(
            "function on_tool_call(ctx, call)
               if call.tool == 'read' then call:deny('no reading ' .. call.arguments.path) end
             end",
        );
        let verdict = rt
            .call_tool(0, &mut HookRequest::default(), &tool_call())
            .unwrap();
        assert_eq!(verdict.denied.as_deref(), Some("no reading /etc/passwd"));

        let mut rt = runtime("function on_tool_call(ctx, call) return 'not today' end");
        let verdict = rt
            .call_tool(0, &mut HookRequest::default(), &tool_call())
            .unwrap();
        assert_eq!(verdict.denied.as_deref(), Some("not today"));

        let mut rt = runtime(&format!(
            "function on_tool_call(ctx, call) return string.rep('x', {}) end",
            MAX_DENY_MESSAGE_CHARS * 2
        ));
        let verdict = rt
            .call_tool(0, &mut HookRequest::default(), &tool_call())
            .unwrap();
        assert_eq!(verdict.denied.unwrap().len(), MAX_DENY_MESSAGE_CHARS);
    }

    #[test]
    fn on_tool_call_rewrites_the_arguments_the_server_gets() {
        let mut rt = runtime(
            "function on_tool_call(ctx, call)
               call.arguments.path = '/srv/' .. call.arguments.path:gsub('^/+', '')
               call.arguments.by = ctx.consumer and ctx.consumer.name or 'anonymous'
             end",
        );
        let verdict = rt
            .call_tool(0, &mut HookRequest::default(), &tool_call())
            .unwrap();
        assert_eq!(verdict.denied, None);
        assert_eq!(
            verdict.arguments,
            Some(json!({"path": "/srv/etc/passwd", "by": "anonymous"}))
        );
        // Emptied arguments stay an object, never an array.
        let mut rt = runtime("function on_tool_call(ctx, call) call.arguments = {} end");
        let verdict = rt
            .call_tool(0, &mut HookRequest::default(), &tool_call())
            .unwrap();
        assert_eq!(verdict.arguments, Some(json!({})));
        let mut rt = runtime("function on_tool_call(ctx, call) call.arguments = 'x' end");
        assert!(rt
            .call_tool(0, &mut HookRequest::default(), &tool_call())
            .is_err());
    }

    #[test]
    fn on_tool_result_changes_or_replaces_the_result() {
        let result =
            json!({"content": [{"type": "text", "text": "token=abc123"}], "isError": false});
        let call = json!({"server": "fs", "tool": "read", "name": "fs__read"});
        let mut rt = runtime(
            "function on_tool_result(ctx, result, call)
               for _, c in ipairs(result.content) do
                 c.text = c.text:gsub('token=%w+', 'token=[redacted]') .. ' via ' .. call.name
               end
             end",
        );
        let shown = rt
            .call_tool_result(0, &mut HookRequest::default(), &call, &result)
            .unwrap();
        assert_eq!(
            shown,
            json!({"content": [{"type": "text", "text": "token=[redacted] via fs__read"}], "isError": false})
        );
        let mut rt = runtime(
            "function on_tool_result(ctx, result)
               return {content = {{type = 'text', text = 'withheld'}}, isError = true}
             end",
        );
        let shown = rt
            .call_tool_result(0, &mut HookRequest::default(), &call, &result)
            .unwrap();
        assert_eq!(
            shown,
            json!({"content": [{"type": "text", "text": "withheld"}], "isError": true})
        );
        let mut rt = runtime("function on_tool_result(ctx, result) return 42 end");
        assert!(rt
            .call_tool_result(0, &mut HookRequest::default(), &call, &result)
            .is_err());
    }

    #[test]
    fn vars_are_shared_by_the_hooks_of_one_request_and_fresh_for_the_next() {
        let mut rt = runtime(
            "function on_access(ctx) ctx.vars.seen = (ctx.vars.seen or 0) + 1 end
             function on_log(ctx, entry) entry.seen = ctx.vars.seen end",
        );
        let mut first = HookRequest::default();
        rt.call(0, Hook::Access, &mut first).unwrap();
        rt.call(0, Hook::Access, &mut first).unwrap();
        rt.call(0, Hook::Log, &mut first).unwrap();
        rt.end_request(&mut first);
        assert_eq!(first.log_fields["seen"], 2);

        let mut second = HookRequest::default();
        rt.call(0, Hook::Access, &mut second).unwrap();
        rt.call(0, Hook::Log, &mut second).unwrap();
        assert_eq!(second.log_fields["seen"], 1);
    }

    #[test]
    fn end_request_frees_the_vars_table() {
        let mut rt = runtime("function on_access(ctx) ctx.vars.x = 1 end");
        let mut req = HookRequest::default();
        rt.call(0, Hook::Access, &mut req).unwrap();
        assert!(req.vars.is_some());
        rt.end_request(&mut req);
        assert!(req.vars.is_none());
    }

    #[test]
    fn on_prompt_returning_a_table_replaces_the_chat() {
        let mut rt = runtime(
            "function on_prompt(ctx, chat)
               chat.model = 'gpt-4o-mini'
               chat.messages[1].content = chat.messages[1].content:gsub('%d', '#')
               return chat
             end",
        );
        let chat = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "call 555"}], "tools": []});
        let new = rt
            .call_prompt(0, &mut HookRequest::default(), &chat)
            .unwrap();
        assert_eq!(
            new,
            Some(
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "call ###"}], "tools": []})
            )
        );
    }

    #[test]
    fn on_prompt_returning_nil_keeps_the_chat() {
        let mut rt = runtime("function on_prompt(ctx, chat) end");
        let got = rt
            .call_prompt(0, &mut HookRequest::default(), &json!({"model": "m"}))
            .unwrap();
        assert_eq!(got, None);
    }

    #[test]
    fn on_prompt_may_deny() {
        let mut rt = runtime("function on_prompt(ctx, chat) return ctx:deny(400, 'no pii') end");
        let mut req = HookRequest::default();
        assert_eq!(rt.call_prompt(0, &mut req, &json!({})).unwrap(), None);
        assert_eq!(req.deny, Some((400, "no pii".into())));
    }

    #[test]
    fn on_prompt_returning_a_non_table_is_an_error() {
        let mut rt = runtime("function on_prompt(ctx, chat) return 'x' end");
        let err = rt
            .call_prompt(0, &mut HookRequest::default(), &json!({}))
            .unwrap_err();
        assert!(err.message.contains("must return a table or nil"), "{err}");
    }

    #[test]
    fn on_response_changes_status_headers_and_text() {
        let mut rt = runtime(
            "function on_response(ctx, resp)
               if resp.status == 200 and resp:header('content-type') == 'application/json' then
                 resp.status = 203
                 resp:set_header('x-filtered', 'yes')
                 resp:remove_header('server')
                 resp.text = resp.text:upper()
               end
             end",
        );
        let mut resp = ResponseInfo {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("server".into(), "up".into()),
            ],
            text: Some("hello".into()),
            ..ResponseInfo::default()
        };
        rt.call_response(0, &mut HookRequest::default(), &mut resp)
            .unwrap();
        assert_eq!(resp.status, 203);
        assert!(resp.headers_changed && resp.text_changed);
        assert_eq!(
            resp.headers,
            vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("x-filtered".to_string(), "yes".to_string())
            ]
        );
        assert_eq!(resp.text.as_deref(), Some("HELLO"));
    }

    #[test]
    fn on_log_fields_are_added_to_the_entry() {
        let mut rt =
            runtime("function on_log(ctx, entry) entry.tenant = 'acme'; entry.tags = {'a'} end");
        let mut req = HookRequest::default();
        req.log_fields.insert("earlier".into(), json!(1));
        rt.call(0, Hook::Log, &mut req).unwrap();
        assert_eq!(
            json!(req.log_fields),
            json!({"earlier": 1, "tenant": "acme", "tags": ["a"]})
        );
    }

    #[test]
    fn a_hook_the_script_does_not_define_is_a_no_op() {
        let mut rt = runtime("function on_log(ctx, entry) end");
        let mut req = HookRequest::default();
        rt.call(0, Hook::Access, &mut req).unwrap();
        let mut resp = ResponseInfo::default();
        rt.call_response(0, &mut req, &mut resp).unwrap();
        assert_eq!(rt.call_prompt(0, &mut req, &json!({})).unwrap(), None);
    }

    #[test]
    fn memory_error_rebuilds_the_vm_and_the_next_call_is_served() {
        let limits = LuaLimits {
            memory_limit_bytes: 4 << 20,
            ..test_limits()
        };
        let mut rt = runtime_with(
            "local calls = 0
             function on_access(ctx)
               calls += 1
               if ctx.path == '/bomb' then local s = string.rep('x', 3e6) .. string.rep('y', 3e6) end
               ctx:set_consumer(tostring(calls))
             end",
            limits,
        );
        let mut bomb = HookRequest::new("GET", "/bomb", None);
        assert_eq!(
            rt.call(0, Hook::Access, &mut bomb).unwrap_err().kind,
            HookErrorKind::Memory
        );
        let mut next = HookRequest::new("GET", "/", None);
        rt.call(0, Hook::Access, &mut next).unwrap();
        // A fresh VM: the script's top-level state started over.
        assert_eq!(next.set_consumer.as_deref(), Some("1"));
        assert_eq!(rt.vm_builds(), 2);
    }

    #[test]
    fn timeout_rebuilds_the_vm_and_a_script_error_does_not() {
        let limits = LuaLimits {
            hook_timeout: Duration::from_millis(20),
            ..test_limits()
        };
        let mut rt = runtime_with(
            "function on_access(ctx)
               if ctx.path == '/loop' then while true do end end
               if ctx.path == '/fail' then error('nope') end
             end",
            limits,
        );
        let mut fail = HookRequest::new("GET", "/fail", None);
        let err = rt.call(0, Hook::Access, &mut fail).unwrap_err();
        assert_eq!(
            (err.kind, err.line, err.message.as_str()),
            (HookErrorKind::Error, Some(3), "nope")
        );
        assert_eq!(rt.vm_builds(), 1);
        let mut looping = HookRequest::new("GET", "/loop", None);
        assert_eq!(
            rt.call(0, Hook::Access, &mut looping).unwrap_err().kind,
            HookErrorKind::Timeout
        );
        rt.call(0, Hook::Access, &mut HookRequest::new("GET", "/", None))
            .unwrap();
        assert_eq!(rt.vm_builds(), 2);
    }

    #[test]
    fn hook_errors_are_counted() {
        let counter = crate::metrics::global().counter("credentialflow_lua_hook_errors_total", "");
        let before = counter.load(Ordering::Relaxed);
        let mut rt = runtime("function on_access(ctx) error('x') end");
        let _ = rt.call(0, Hook::Access, &mut HookRequest::default());
        assert!(counter.load(Ordering::Relaxed) > before);
    }

    #[test]
    fn sync_with_the_same_set_keeps_the_vm_and_a_new_set_replaces_it() {
        let set =
            Arc::new(load(&[("a.lua", "function on_access(ctx) end")], test_limits()).unwrap());
        let mut rt = LuaRuntime::new(test_limits());
        rt.sync(&set);
        rt.sync(&set);
        assert_eq!(rt.vm_builds(), 1);
        let other =
            Arc::new(load(&[("b.lua", "function on_access(ctx) end")], test_limits()).unwrap());
        rt.sync(&other);
        assert_eq!(rt.vm_builds(), 2);
    }

    #[test]
    fn the_request_is_handed_back_after_the_call() {
        let mut rt = runtime("function on_access(ctx) end");
        let mut req = HookRequest::new("GET", "/kept", Some("q=1"));
        req.headers.push(("a".into(), "b".into()));
        rt.call(0, Hook::Access, &mut req).unwrap();
        assert_eq!(
            (req.method.as_str(), req.path.as_str(), req.query.as_deref()),
            ("GET", "/kept", Some("q=1"))
        );
        assert_eq!(req.headers.len(), 1);
    }
}
