//! Lua hooks: sandboxed Luau scripts that run inside the request pipeline.
//!
//! Why Luau: its VM has an interrupt callback that fires on loop back-edges, function calls and
//! inside the string pattern matcher, so a hook's time budget is enforced by the VM itself
//! (`while true do end` is cut off); its sandbox mode makes the globals and libraries read-only;
//! its `load`/`loadstring` compile source only and never accept bytecode. LuaJIT is not used:
//! its compiled traces skip debug hooks, so a hot loop could not be interrupted.
//!
//! Shape:
//! - [`ScriptSet`] (`scripts`): the hook scripts of one config load, read and compiled to Luau
//!   bytecode once, on the loading thread. `Send + Sync`, shared by every worker.
//! - [`LuaRuntime`] (`runtime`): one per worker thread, `!Send`. Owns that thread's VM (`vm`),
//!   rebuilds it after an out-of-memory or timeout, and calls the hooks.
//! - [`HookRequest`] / [`ResponseInfo`] (`ctx`): what a hook sees as `ctx` and `resp`, and the
//!   changes it made, which the pipeline applies after the call.
//! - `cf`: the `cf` module (JSON, hashes, base64, clock, log, a per-worker cache in `cache`).
//! - [`HookError`] (`error`): a failed call, with script, line and a message free of request data.

mod cache;
mod caps;
mod cf;
mod ctx;
mod error;
mod redact;
mod runtime;
mod scripts;
mod vm;

#[cfg(test)]
mod test_support;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use crate::config::LuaConfig;

pub use caps::{MAX_BUILT_BYTES, MAX_PACK_FORMAT_BYTES, MAX_SORT_ELEMENTS, MAX_TABLE_SPAN};
pub use ctx::{BudgetInfo, ConsumerInfo, HookRequest, ResponseInfo};
pub use error::{HookError, HookErrorKind};
pub use redact::{Redactor, REDACTED};
pub use runtime::{LuaRuntime, ToolCallVerdict, MAX_DENY_MESSAGE_CHARS};
pub use scripts::{ScriptId, ScriptSet};

/// The global functions a script may define, one per pipeline phase (README, "Lua hooks").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `on_access(ctx)`: after routing, before auth limits; may deny or set the consumer.
    Access,
    /// `on_request(ctx)`: before forwarding; may rewrite headers, path and query.
    Request,
    /// `on_prompt(ctx, chat)`: AI requests after auth; may return a changed chat table.
    Prompt,
    /// `on_response(ctx, resp)`: the response head (and text of a non-streamed AI response).
    Response,
    /// `on_log(ctx, entry)`: after the response; may add fields to the access-log entry.
    Log,
    /// `on_tool_call(ctx, call)`: an MCP `tools/call`, permitted and limited, before it
    /// reaches its server; may deny it or rewrite `call.arguments`.
    ToolCall,
    /// `on_tool_result(ctx, result, call)`: a tool's result, before the client sees it; may
    /// change it in place or return a replacement.
    ToolResult,
}

impl Hook {
    /// Every hook, in pipeline order.
    pub const ALL: [Hook; 7] = [
        Hook::Access,
        Hook::Request,
        Hook::Prompt,
        Hook::Response,
        Hook::Log,
        Hook::ToolCall,
        Hook::ToolResult,
    ];

    /// The name of the global function a script defines for this hook (`"on_access"`, ...).
    pub fn function_name(self) -> &'static str {
        match self {
            Hook::Access => "on_access",
            Hook::Request => "on_request",
            Hook::Prompt => "on_prompt",
            Hook::Response => "on_response",
            Hook::Log => "on_log",
            Hook::ToolCall => "on_tool_call",
            Hook::ToolResult => "on_tool_result",
        }
    }

    /// Position in [`Hook::ALL`], for per-hook arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The budgets of one worker's VM, from `[lua]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LuaLimits {
    /// Wall-clock budget of one hook call; past it the VM interrupts the call.
    pub hook_timeout: Duration,
    /// Cap on the memory of one VM (scripts, their data and per-request tables).
    pub memory_limit_bytes: usize,
}

impl LuaLimits {
    /// The limits `[lua]` asks for.
    pub fn from_config(c: &LuaConfig) -> Self {
        LuaLimits {
            hook_timeout: Duration::from_millis(c.hook_timeout_ms),
            memory_limit_bytes: usize::try_from(c.memory_limit_mb.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
        }
    }
}

impl Default for LuaLimits {
    /// The contract's defaults: 10 ms per call, 32 MiB per VM.
    fn default() -> Self {
        LuaLimits::from_config(&LuaConfig::default())
    }
}

/// Limits of the VM behind [`fuzz_library_call`]: short, so that every input ends quickly.
const FUZZ_LIMITS: LuaLimits = LuaLimits {
    hook_timeout: Duration::from_millis(20),
    memory_limit_bytes: 8 << 20,
};

/// Longest snippet [`fuzz_library_call`] compiles: compiling is linear in the source, and
/// hook scripts are far smaller.
pub const MAX_FUZZ_SOURCE_BYTES: usize = 64 * 1024;

/// Runs `script` as a chunk in a hook sandbox (the same libraries, caps and redaction as a
/// worker's VM) with short limits (20 ms, 8 MiB); the entry point of the library fuzz target
/// and of the tests of the caps. `Ok` when the chunk ran to its end, else the hook error as
/// text (over a cap, out of time or memory, a script error). Never panics, and returns within
/// about the time budget (plus the ~1 ms a capped library call may take) for any input.
///
/// The VM is built once per thread and rebuilt after a timeout or memory failure, as a
/// worker does.
pub fn fuzz_library_call(script: &str) -> Result<(), String> {
    thread_local! {
        static VM: RefCell<Option<vm::Vm>> = const { RefCell::new(None) };
    }
    if script.len() > MAX_FUZZ_SOURCE_BYTES {
        return Err(format!(
            "snippet of {} bytes is over {MAX_FUZZ_SOURCE_BYTES}",
            script.len()
        ));
    }
    VM.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            let cache = Rc::new(RefCell::new(cache::Cache::new(1 << 20)));
            let vm = vm::Vm::new(FUZZ_LIMITS, cache, Rc::new(Redactor::default()))
                .map_err(|e| format!("cannot create the VM: {e}"))?;
            *slot = Some(vm);
        }
        let Some(vm) = slot.as_ref() else {
            return Err("no VM".into());
        };
        let result = vm.run_source("snippet.lua", script);
        if matches!(&result, Err(e) if e.kind != HookErrorKind::Error) {
            *slot = None; // possibly half-updated: rebuilt for the next snippet
        }
        result.map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_come_from_the_lua_section() {
        let limits = LuaLimits::from_config(&LuaConfig {
            hook_timeout_ms: 25,
            memory_limit_mb: 4,
        });
        assert_eq!(limits.hook_timeout, Duration::from_millis(25));
        assert_eq!(limits.memory_limit_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn hook_function_names_follow_the_contract() {
        let names: Vec<_> = Hook::ALL.iter().map(|h| h.function_name()).collect();
        assert_eq!(
            names,
            [
                "on_access",
                "on_request",
                "on_prompt",
                "on_response",
                "on_log",
                "on_tool_call",
                "on_tool_result"
            ]
        );
        assert!(Hook::ALL.iter().enumerate().all(|(i, h)| h.index() == i));
    }
}
