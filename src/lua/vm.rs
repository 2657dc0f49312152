//! One sandboxed Luau VM and the scripts loaded into it.
//!
//! Sandbox (built here, once per VM):
//! - Standard libraries: base, `string`, `table`, `math`, `utf8`, `bit32`, `buffer`,
//!   `coroutine`. Not loaded: `os`, `debug`, `io` (Luau has none). Removed from the base
//!   library: `require` (mlua's default reads any file; ours is below), `loadstring` (runtime
//!   compilation), `getfenv`/`setfenv` (they reach other functions' environments). `print`
//!   writes to the gateway log like `cf.log`.
//! - `Lua::sandbox(true)`: globals, libraries and built-in metatables become read-only;
//!   `collectgarbage` only counts.
//! - Each script (and each module it requires) runs in its own environment table that reads
//!   through to the globals; after the script's top level has run, that table is frozen, so
//!   a hook cannot keep request data in globals from one request to the next (state that
//!   should persist goes in top-level `local`s or `cf.cache_*`, per-request state in
//!   `ctx.vars`). Scripts on different routes cannot see each other's functions.
//! - `require(name)` loads `<scripts folder>/<name>.lua` (`.` or `/` between path segments),
//!   from sources read and compiled when the config was loaded: never from disk at run time.
//! - Memory: `Lua::set_memory_limit`. Time: the Luau interrupt callback, which the VM calls on
//!   loop back-edges, calls and at every step of the string pattern matcher, compares the
//!   clock with the call's deadline. Because it runs so often, the callback is our own plain
//!   function ([`interrupt_gate`]) that counts and reads the clock; mlua's wrapper (which can
//!   raise a Lua error safely) is only entered to stop a call that ran out of time.

use std::cell::{Cell, RefCell};
use std::ffi::c_int;
use std::ptr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::chunk::ChunkMode;
use mlua::{
    ffi, AnyUserData, Function, Lua, LuaOptions, MultiValue, StdLib, Table, Value, VmState,
};

use super::cache::Cache;
use super::ctx::{CtxHandle, HookRequest, RespHandle, ResponseInfo};
use super::error::{is_memory_error, HookError, HookErrorKind};
use super::redact::Redactor;
use super::scripts::{module_relative_path, ScriptId, ScriptSet};
use super::{caps, cf, Hook, LuaLimits};

/// Interrupts between two clock reads: the interrupt fires very often (every loop iteration),
/// so reading the clock each time would cost more than the loops it guards.
const TICKS_PER_CLOCK_READ: u32 = 16;
/// However little CPU a call got (an overloaded machine), it is stopped after this many
/// budgets of wall-clock time, so a hook never holds a request much longer than configured.
const WALL_CLOCK_BUDGETS: u32 = 10;
/// Named registry slot of the table of loaded modules, by module index.
const LOADED_MODULES: &str = "credentialflow.loaded_modules";

/// The state the interrupt callback, `cf.log` and the runtime share during a call.
///
/// The budget is CPU time of the worker thread, not wall-clock time: when the machine is
/// busy and the thread is preempted, a hook must not fail for time it did not use. Reading
/// thread CPU time is a system call, so the interrupt compares the (cheap) wall clock with
/// the deadline and only when that has passed asks for the CPU time actually used, moving
/// the deadline on by what is left of the budget. The CPU baseline is taken at the first
/// clock read, which a short hook never reaches, so a trivial call makes no system call.
pub(crate) struct CallState {
    budget: Cell<Duration>,
    started: Cell<Instant>,
    deadline: Cell<Option<Instant>>,
    hard_deadline: Cell<Instant>,
    cpu_baseline: Cell<Option<(Option<Duration>, Instant)>>,
    timed_out: Cell<bool>,
    /// Set once an allocation of this call failed under the VM memory limit; sticky like
    /// `timed_out`, so a script that catches the error (`pcall`) still fails the call.
    memory_hit: Cell<bool>,
    /// The refusal of a library call over a sandbox cap (`caps`), sticky like `memory_hit`:
    /// a script cannot catch it and go on.
    cap_hit: RefCell<Option<String>>,
    script: RefCell<Rc<str>>,
    /// Applied to everything the hooks of this VM log.
    redactor: Rc<Redactor>,
}

/// Why a call was stopped by the VM's limits, if it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The call ran to its end (or failed with an ordinary error).
    No,
    /// The time budget ran out.
    Timeout,
    /// An allocation failed under the memory limit (even if the script caught the error).
    Memory,
    /// A library call was over a sandbox cap (even if the script caught the error).
    Cap,
}

impl CallState {
    fn new(redactor: Rc<Redactor>) -> CallState {
        let now = Instant::now();
        CallState {
            budget: Cell::new(Duration::ZERO),
            started: Cell::new(now),
            deadline: Cell::new(None),
            hard_deadline: Cell::new(now),
            cpu_baseline: Cell::new(None),
            timed_out: Cell::new(false),
            memory_hit: Cell::new(false),
            cap_hit: RefCell::new(None),
            script: RefCell::new(Rc::from("")),
            redactor,
        }
    }

    /// The redaction of what hooks log.
    pub(crate) fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The script being run, for log lines.
    pub(crate) fn script_name(&self) -> Rc<str> {
        Rc::clone(&self.script.borrow())
    }

    fn begin(&self, script: &Rc<str>, budget: Duration) {
        let now = Instant::now();
        self.timed_out.set(false);
        self.memory_hit.set(false);
        *self.cap_hit.borrow_mut() = None;
        self.cpu_baseline.set(None);
        *self.script.borrow_mut() = Rc::clone(script);
        self.budget.set(budget);
        self.started.set(now);
        self.deadline.set(Some(now + budget));
        self.hard_deadline.set(now + budget * WALL_CLOCK_BUDGETS);
    }

    /// Ends a call; says whether (and why) the limits cut it off.
    fn end(&self) -> Cut {
        self.deadline.set(None);
        if self.timed_out.get() {
            Cut::Timeout
        } else if self.memory_hit.get() {
            Cut::Memory
        } else if self.cap_hit.borrow().is_some() {
            Cut::Cap
        } else {
            Cut::No
        }
    }

    /// Records a library call refused over a sandbox cap, and returns the error to raise.
    /// Like a memory failure, it fails the call whatever the script does with the error.
    pub(crate) fn note_cap(&self, message: String) -> mlua::Error {
        if self.deadline.get().is_some() {
            *self.cap_hit.borrow_mut() = Some(message.clone());
            TICKS_LEFT.set(1);
        }
        mlua::Error::runtime(message)
    }

    /// Records that an allocation of the running call failed under the memory limit. The
    /// next interrupt raises again and the call fails at its end, whatever the script does
    /// with the error.
    pub(crate) fn note_memory_limit(&self) {
        if self.deadline.get().is_some() {
            self.memory_hit.set(true);
            TICKS_LEFT.set(1);
        }
    }

    /// The check after a library call returns: Luau interrupts never fire inside C
    /// functions, so a long one is cut here, as soon as it is back, the same way the
    /// interrupt cuts a loop. Reads the clock every time (a library call is rare next to
    /// loop iterations).
    pub(crate) fn check_after_library_call(&self) -> mlua::Result<()> {
        if self.keep_going() {
            return Ok(());
        }
        // Every later interrupt raises too, so `pcall` cannot swallow the stop.
        TICKS_LEFT.set(1);
        self.raise_if_stopped().map(drop)
    }

    /// The interrupt check, called by [`interrupt_gate`]: false once the call is out of time
    /// or hit the memory limit. Once the budget is spent it stays false, so a script that
    /// catches the error with `pcall` is stopped at its next step.
    fn keep_going(&self) -> bool {
        if self.timed_out.get() || self.memory_hit.get() || self.cap_hit.borrow().is_some() {
            return false;
        }
        let Some(deadline) = self.deadline.get() else {
            return true;
        };
        let now = Instant::now();
        if self.cpu_baseline.get().is_none() {
            self.cpu_baseline.set(Some((thread_cpu_time(), now)));
        }
        if now < deadline {
            return true;
        }
        if let Some(remaining) = self.cpu_budget_left() {
            if now < self.hard_deadline.get() {
                self.deadline.set(Some(now + remaining));
                return true;
            }
        }
        self.timed_out.set(true);
        false
    }

    /// What mlua's interrupt callback does once [`keep_going`](Self::keep_going) said no:
    /// raise the timeout (or the memory failure) as a Lua error.
    fn raise_if_stopped(&self) -> mlua::Result<VmState> {
        if self.timed_out.get() {
            Err(mlua::Error::runtime("hook ran past its time budget"))
        } else if self.memory_hit.get() {
            Err(mlua::Error::MemoryError(
                "hook ran past the VM memory limit".into(),
            ))
        } else if let Some(message) = self.cap_hit.borrow().as_ref() {
            Err(mlua::Error::runtime(message.clone()))
        } else {
            Ok(VmState::Continue)
        }
    }

    /// What is left of the budget in CPU time, `None` when it is spent (or the CPU clock is
    /// unavailable: then the budget is plain wall-clock time). The time between the call's
    /// start and the CPU baseline is counted as if it were all CPU.
    fn cpu_budget_left(&self) -> Option<Duration> {
        let (cpu_at_baseline, wall_at_baseline) = self.cpu_baseline.get()?;
        let used = (wall_at_baseline - self.started.get())
            + thread_cpu_time()?.saturating_sub(cpu_at_baseline?);
        let left = self.budget.get().checked_sub(used)?;
        (!left.is_zero()).then_some(left)
    }
}

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`), if the clock exists.
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass, which outlives the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// An interrupt callback as Luau stores it.
type InterruptFn = unsafe extern "C-unwind" fn(*mut ffi::lua_State, c_int);

thread_local! {
    /// The call running on this thread's VM (set by [`Vm::call`] for its duration) and mlua's
    /// interrupt callback of that VM, which raises the timeout error.
    static RUNNING: Cell<(*const CallState, Option<InterruptFn>)> =
        const { Cell::new((ptr::null(), None)) };
    /// Interrupts left before the gate next reads the clock.
    static TICKS_LEFT: Cell<u32> = const { Cell::new(TICKS_PER_CLOCK_READ) };
}

/// The VM's interrupt callback. Luau calls it at every loop iteration, call and pattern
/// matcher step, so it must cost a few nanoseconds: it counts and reads the clock itself,
/// and enters mlua's callback (which turns an error into a Lua error without unwinding
/// through C++ frames) only to stop a call that is out of time.
///
/// # Safety
/// Called by Luau only; the `CallState` pointer is valid while it is set (see [`Vm::call`]).
unsafe extern "C-unwind" fn interrupt_gate(state: *mut ffi::lua_State, gc: c_int) {
    if gc >= 0 {
        return; // a garbage-collector step, not running code
    }
    let left = TICKS_LEFT.get();
    if left > 1 {
        TICKS_LEFT.set(left - 1);
        return;
    }
    TICKS_LEFT.set(TICKS_PER_CLOCK_READ);
    let (call, raise) = RUNNING.get();
    // SAFETY: Vm::call sets the pointer from an Rc it holds and clears it before returning.
    if call.is_null() || unsafe { (*call).keep_going() } {
        return;
    }
    // Out of time: every later interrupt raises too, so `pcall` cannot swallow the stop.
    TICKS_LEFT.set(1);
    if let Some(raise) = raise {
        // SAFETY: mlua's own callback for this VM, called as Luau would call it.
        unsafe { raise(state, gc) };
    }
}

/// A script's hook functions inside one VM.
struct LoadedScript {
    name: Rc<str>,
    hooks: [Option<Function>; Hook::ALL.len()],
}

/// One VM with a [`ScriptSet`] loaded. Dropped and rebuilt after a timeout or memory error.
pub(crate) struct Vm {
    lua: Lua,
    state: Rc<CallState>,
    limits: LuaLimits,
    ctx: AnyUserData,
    ctx_slot: Rc<RefCell<HookRequest>>,
    resp: AnyUserData,
    resp_slot: Rc<RefCell<ResponseInfo>>,
    scripts: Vec<Result<LoadedScript, HookError>>,
    /// mlua's interrupt callback, entered by [`interrupt_gate`] to raise a timeout.
    mlua_interrupt: Option<InterruptFn>,
}

impl Vm {
    /// A sandboxed VM with `cf`, `ctx` and `resp`, no scripts yet.
    pub(crate) fn new(
        limits: LuaLimits,
        cache: Rc<RefCell<Cache>>,
        redactor: Rc<Redactor>,
    ) -> mlua::Result<Vm> {
        let libs = StdLib::STRING
            | StdLib::TABLE
            | StdLib::MATH
            | StdLib::UTF8
            | StdLib::BIT
            | StdLib::BUFFER
            | StdLib::COROUTINE;
        let lua = Lua::new_with(libs, LuaOptions::default())?;
        let state = Rc::new(CallState::new(redactor));
        let globals = lua.globals();
        for name in [
            "require",
            "loadstring",
            "load",
            "getfenv",
            "setfenv",
            "dofile",
            "loadfile",
        ] {
            globals.raw_set(name, Value::Nil)?;
        }
        let print_state = Rc::clone(&state);
        globals.raw_set(
            "print",
            lua.create_function(move |_, args: MultiValue| {
                cf::log_line(&print_state, &args);
                Ok(())
            })?,
        )?;
        globals.raw_set("cf", cf::module(&lua, Rc::clone(&state), cache)?)?;
        caps::install(&lua, &state)?;
        lua.set_named_registry_value(LOADED_MODULES, lua.create_table()?)?;
        lua.sandbox(true)?;

        let ctx_slot = Rc::new(RefCell::new(HookRequest::default()));
        let ctx = lua.create_userdata(CtxHandle {
            slot: Rc::clone(&ctx_slot),
        })?;
        let resp_slot = Rc::new(RefCell::new(ResponseInfo::default()));
        let resp = lua.create_userdata(RespHandle {
            slot: Rc::clone(&resp_slot),
        })?;

        let interrupt_state = Rc::clone(&state);
        lua.set_interrupt(move |_| interrupt_state.raise_if_stopped());
        let mut mlua_interrupt = None;
        // SAFETY: only swaps the interrupt field of this VM's callbacks; `exec_raw` runs the
        // closure on the VM's own state.
        unsafe {
            lua.exec_raw::<()>((), |l| {
                let callbacks = ffi::lua_callbacks(l);
                mlua_interrupt = (*callbacks).interrupt;
                (*callbacks).interrupt = Some(interrupt_gate);
            })?;
        }
        lua.set_memory_limit(limits.memory_limit_bytes)?;
        Ok(Vm {
            lua,
            state,
            limits,
            ctx,
            ctx_slot,
            resp,
            resp_slot,
            scripts: Vec::new(),
            mlua_interrupt,
        })
    }

    /// The VM, for building call arguments.
    pub(crate) fn lua(&self) -> &Lua {
        &self.lua
    }

    /// Runs the top level of every script of `set` (each under the hook time budget) and
    /// records its hook functions. A script that fails keeps its error, returned by every
    /// call to it; the others load regardless.
    pub(crate) fn load_scripts(&mut self, set: &Arc<ScriptSet>) {
        self.scripts = (0..set.len()).map(|id| self.load_script(set, id)).collect();
    }

    /// The load result of each script, for the config check.
    pub(crate) fn load_errors(&self) -> impl Iterator<Item = (ScriptId, &HookError)> {
        self.scripts
            .iter()
            .enumerate()
            .filter_map(|(id, r)| r.as_ref().err().map(|e| (id, e)))
    }

    /// Whether script `id` defines `hook` in this VM.
    pub(crate) fn defines(&self, id: ScriptId, hook: Hook) -> bool {
        matches!(self.scripts.get(id), Some(Ok(s)) if s.hooks[hook.index()].is_some())
    }

    /// Runs `run` under the hook time budget; also says whether the limits cut it off.
    fn timed<R>(&self, script: &Rc<str>, run: impl FnOnce() -> R) -> (R, Cut) {
        /// Puts the outer call back even if `run` unwinds, so no pointer outlives its call.
        struct Restore((*const CallState, Option<InterruptFn>));
        impl Drop for Restore {
            fn drop(&mut self) {
                RUNNING.set(self.0);
            }
        }
        self.state.begin(script, self.limits.hook_timeout);
        let _restore = Restore(RUNNING.replace((Rc::as_ptr(&self.state), self.mlua_interrupt)));
        TICKS_LEFT.set(TICKS_PER_CLOCK_READ);
        let result = run();
        drop(_restore);
        (result, self.state.end())
    }

    fn load_script(&self, set: &Arc<ScriptSet>, id: ScriptId) -> Result<LoadedScript, HookError> {
        let script = set.script(id);
        let name: Rc<str> = Rc::from(script.name.as_str());
        let require = make_require(&self.lua, set, id).map_err(|e| self.error(&name, &e))?;
        let (result, cut) = self.timed(&name, || {
            run_chunk(&self.lua, &script.name, &script.bytecode, require)
        });
        let (env, _) = self.settle(&name, result, cut)?;
        let mut hooks: [Option<Function>; Hook::ALL.len()] = Default::default();
        for hook in Hook::ALL {
            match env.raw_get::<Value>(hook.function_name()) {
                Ok(Value::Nil) => {}
                Ok(Value::Function(f)) => hooks[hook.index()] = Some(f),
                _ => {
                    return Err(HookError::new(
                        &name,
                        HookErrorKind::Error,
                        format!("global {} is not a function", hook.function_name()),
                    ))
                }
            }
        }
        Ok(LoadedScript { name, hooks })
    }

    /// Calls `hook` of script `id` with `ctx` (backed by `req`) and `args` after it (the chat
    /// table, `resp`, the log entry, a tool call or a tool result and its call). `resp_data` backs the `resp` userdata for `on_response`.
    /// Returns the hook's first return value; a script without the hook returns `nil`.
    pub(crate) fn call(
        &mut self,
        id: ScriptId,
        hook: Hook,
        req: &mut HookRequest,
        resp_data: Option<&mut ResponseInfo>,
        args: Vec<Value>,
    ) -> Result<Value, HookError> {
        let script = match self.scripts.get(id) {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Err(e.clone()),
            None => {
                return Err(HookError::new(
                    "?",
                    HookErrorKind::Error,
                    format!("no script with id {id} is loaded"),
                ))
            }
        };
        let Some(function) = script.hooks[hook.index()].clone() else {
            return Ok(Value::Nil);
        };
        let name = Rc::clone(&script.name);

        std::mem::swap(&mut *self.ctx_slot.borrow_mut(), req);
        let mut resp_data = resp_data;
        if let Some(r) = resp_data.as_deref_mut() {
            std::mem::swap(&mut *self.resp_slot.borrow_mut(), r);
        }
        let args: mlua::Variadic<Value> = args.into_iter().collect();
        let (result, cut) = self.timed(&name, || function.call::<Value>((&self.ctx, args)));
        std::mem::swap(&mut *self.ctx_slot.borrow_mut(), req);
        if let Some(r) = resp_data {
            std::mem::swap(&mut *self.resp_slot.borrow_mut(), r);
        }
        self.settle(&name, result, cut)
    }

    /// Compiles `source` (text, not bytecode) and runs it as a chunk under the hook limits,
    /// in its own environment like a script's top level. For [`crate::lua::fuzz_library_call`].
    pub(crate) fn run_source(&self, name: &str, source: &str) -> Result<(), HookError> {
        let name: Rc<str> = Rc::from(name);
        let (result, cut) = self.timed(&name, || {
            let env = script_env(&self.lua)?;
            self.lua
                .load(source)
                .set_name(format!("@{name}"))
                .set_mode(ChunkMode::Text)
                .set_environment(env)
                .call::<()>(())
        });
        self.settle(&name, result, cut)
    }

    /// The outcome of a call: a call the limits cut off fails even when the script caught
    /// the error and returned normally.
    fn settle<T>(&self, script: &str, result: mlua::Result<T>, cut: Cut) -> Result<T, HookError> {
        match (result, cut) {
            (Ok(v), Cut::No) => Ok(v),
            (Err(e), cut) => Err(self.classify(script, &e, cut)),
            (Ok(_), cut) => {
                let placeholder = mlua::Error::runtime("");
                Err(self.classify(script, &placeholder, cut))
            }
        }
    }

    /// The `resp` userdata, to pass as `on_response`'s second argument.
    pub(crate) fn resp_value(&self) -> Value {
        Value::UserData(self.resp.clone())
    }

    /// Maps an error raised while building arguments or reading results.
    pub(crate) fn error(&self, script: &str, err: &mlua::Error) -> HookError {
        self.classify(script, err, Cut::No)
    }

    fn classify(&self, script: &str, err: &mlua::Error, cut: Cut) -> HookError {
        if cut == Cut::Timeout {
            let mut e =
                HookError::from_lua(script, HookErrorKind::Timeout, err, &Redactor::default());
            e.message = format!(
                "ran past its time budget of {} ms",
                self.limits.hook_timeout.as_millis()
            );
            e
        } else if cut == Cut::Memory || is_memory_error(err) {
            let mut e =
                HookError::from_lua(script, HookErrorKind::Memory, err, &Redactor::default());
            e.message = format!(
                "ran past the VM memory limit of {} MiB",
                self.limits.memory_limit_bytes >> 20
            );
            e
        } else if let (Cut::Cap, Some(message)) = (cut, self.state.cap_hit.borrow().as_ref()) {
            HookError::new(script, HookErrorKind::Error, message.clone())
        } else {
            HookError::from_lua(script, HookErrorKind::Error, err, self.state.redactor())
        }
    }
}

/// Runs a compiled chunk in a fresh environment (with its own `require`), then freezes the
/// environment. Returns the environment and what the chunk returned.
fn run_chunk(
    lua: &Lua,
    name: &str,
    bytecode: &[u8],
    require: Function,
) -> mlua::Result<(Table, MultiValue)> {
    let env = script_env(lua)?;
    env.raw_set("require", require)?;
    let results = lua
        .load(bytecode)
        .set_name(format!("@{name}"))
        .set_mode(ChunkMode::Binary)
        .set_environment(env.clone())
        .call::<MultiValue>(())?;
    env.set_readonly(true);
    // The compiler only emits fast paths for builtins the chunk does not assign, and the
    // environment can no longer change: safe to let the VM take them.
    env.set_safeenv(true);
    Ok((env, results))
}

/// A fresh environment table that reads through to the (read-only) globals.
fn script_env(lua: &Lua) -> mlua::Result<Table> {
    let env = lua.create_table()?;
    let meta = lua.create_table()?;
    meta.raw_set("__index", lua.globals())?;
    meta.set_readonly(true);
    env.set_metatable(Some(meta))?;
    Ok(env)
}

/// The `require` of script `id`: modules under the script's folder, loaded once per VM.
fn make_require(lua: &Lua, set: &Arc<ScriptSet>, id: ScriptId) -> mlua::Result<Function> {
    let set = Arc::clone(set);
    lua.create_function(move |lua, name: String| {
        let rel = module_relative_path(&name).ok_or_else(|| {
            mlua::Error::runtime(format!(
                "require: invalid module name {name:?} (segments of letters, digits, '_' or '-' \
                 separated by '.' or '/')"
            ))
        })?;
        let root = set.script(id).root.as_path();
        let index = set.module_index(&root.join(&rel)).ok_or_else(|| {
            mlua::Error::runtime(format!(
                "require: module {name:?} is not in the scripts folder (only literal \
                 require(\"name\") calls are loaded with the config)"
            ))
        })?;
        let loaded: Table = lua.named_registry_value(LOADED_MODULES)?;
        match loaded.raw_get::<Value>(index + 1)? {
            Value::Nil => {}
            Value::Boolean(false) => {
                return Err(mlua::Error::runtime(format!(
                    "require: {name:?} requires itself"
                )))
            }
            done => return Ok(done),
        }
        loaded.raw_set(index + 1, false)?;
        let module = set.module(index);
        let inner_require = make_require(lua, &set, id)?;
        let (_, results) = match run_chunk(lua, &module.name, &module.bytecode, inner_require) {
            Ok(r) => r,
            Err(e) => {
                loaded.raw_set(index + 1, Value::Nil)?;
                return Err(e);
            }
        };
        let value = match results.into_iter().next() {
            None | Some(Value::Nil) => Value::Boolean(true),
            Some(v) => v,
        };
        loaded.raw_set(index + 1, &value)?;
        Ok(value)
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::lua::test_support::{runtime, runtime_with, test_limits};
    use crate::lua::{Hook, HookErrorKind, HookRequest, LuaLimits};

    /// Runs `body` as `on_access` and returns the call's result.
    fn access(body: &str) -> Result<HookRequest, crate::lua::HookError> {
        let mut rt = runtime(&format!("function on_access(ctx)\n{body}\nend"));
        let mut req = HookRequest::default();
        rt.call(0, Hook::Access, &mut req).map(|_| req)
    }

    fn short_limits() -> LuaLimits {
        LuaLimits {
            hook_timeout: Duration::from_millis(20),
            memory_limit_bytes: 8 << 20,
        }
    }

    #[test]
    fn io_os_debug_and_package_are_absent() {
        let req = access(
            "if io or os or debug or package then error('library present') end \
             ctx:set_consumer('ok')",
        )
        .unwrap();
        assert_eq!(req.set_consumer.as_deref(), Some("ok"));
    }

    #[test]
    fn load_loadstring_getfenv_and_setfenv_are_absent() {
        let req = access(
            "if load or loadstring or getfenv or setfenv or dofile then error('present') end \
             ctx:set_consumer('ok')",
        )
        .unwrap();
        assert_eq!(req.set_consumer.as_deref(), Some("ok"));
    }

    #[test]
    fn globals_and_libraries_are_read_only_at_run_time() {
        let err = access("string.rep = nil").unwrap_err();
        assert!(err.message.contains("readonly"), "{err}");
        let err = access("leaked = ctx.path").unwrap_err();
        assert!(err.message.contains("readonly"), "{err}");
    }

    #[test]
    fn ctx_metatable_is_hidden_from_scripts() {
        let req = access(
            "if type(getmetatable(ctx)) == 'table' then error('exposed') end \
             ctx:set_consumer('ok')",
        )
        .unwrap();
        assert_eq!(req.set_consumer.as_deref(), Some("ok"));
    }

    #[test]
    fn collectgarbage_can_only_count() {
        assert!(access("collectgarbage('count')").is_ok());
        assert!(access("collectgarbage('stop')").is_err());
    }

    #[test]
    fn infinite_loop_is_cut_off_near_the_timeout() {
        let mut rt = runtime_with(
            "function on_access(ctx) while true do end end",
            short_limits(),
        );
        let started = Instant::now();
        let err = rt
            .call(0, Hook::Access, &mut HookRequest::default())
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.kind, HookErrorKind::Timeout);
        assert_eq!(err.script, "hook.lua");
        assert!(took < Duration::from_millis(200), "took {took:?}");
    }

    #[test]
    fn pcall_does_not_escape_the_timeout() {
        let mut rt = runtime_with(
            "function on_access(ctx) while true do pcall(function() while true do end end) end end",
            short_limits(),
        );
        let err = rt
            .call(0, Hook::Access, &mut HookRequest::default())
            .unwrap_err();
        assert_eq!(err.kind, HookErrorKind::Timeout);
    }

    #[test]
    fn catastrophic_pattern_is_cut_off_by_the_timeout() {
        let mut rt = runtime_with(
            "function on_access(ctx) string.rep('a', 1e5):find('.-.-.-.-.-.-.-.-b') end",
            short_limits(),
        );
        let started = Instant::now();
        let err = rt
            .call(0, Hook::Access, &mut HookRequest::default())
            .unwrap_err();
        assert_eq!(err.kind, HookErrorKind::Timeout);
        // Uncut, the search would run for hours; the bound only has to tell the two apart
        // on a loaded machine, not time the cut.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn string_rep_bomb_fails_with_memory() {
        let mut rt = runtime_with(
            "function on_access(ctx) local s = string.rep('x', 4e6) local t = {} \
             for i = 1, 8 do t[i] = s .. i end end",
            short_limits(),
        );
        let err = rt
            .call(0, Hook::Access, &mut HookRequest::default())
            .unwrap_err();
        assert_eq!(err.kind, HookErrorKind::Memory);
    }

    #[test]
    fn table_growth_fails_with_memory() {
        let limits = LuaLimits {
            memory_limit_bytes: 4 << 20,
            ..test_limits()
        };
        let mut rt = runtime_with(
            "function on_access(ctx) local t = {} for i = 1, 1e8 do t[i] = {i} end end",
            limits,
        );
        let err = rt
            .call(0, Hook::Access, &mut HookRequest::default())
            .unwrap_err();
        assert_eq!(err.kind, HookErrorKind::Memory);
        assert!(err.message.contains("4 MiB"), "{err}");
    }

    #[test]
    fn a_runtime_error_reports_script_and_line() {
        let err = access("local x = nil\nreturn x.field").unwrap_err();
        assert_eq!(err.kind, HookErrorKind::Error);
        assert_eq!((err.script.as_str(), err.line), ("hook.lua", Some(3)));
        assert!(err.message.contains("attempt to index nil"), "{err}");
    }
}
