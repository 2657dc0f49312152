//! Caps on the standard-library functions whose cost is not bounded by the time budget.
//!
//! Luau's interrupt (which enforces `[lua] hook_timeout_ms`) fires on loop back-edges, calls
//! and pattern-matcher steps, never inside a C library function. A single call such as
//! `table.move({}, 1, 1e9, 1e9 + 10, {})` therefore ran for seconds with the worker stalled,
//! and a plain `string.find` of a long needle was quadratic. Each such function is replaced,
//! before the sandbox freezes the libraries, by a wrapper that:
//! - refuses arguments over the caps below with a Lua error (the hook fails, 500
//!   `hook_error`), so one call stays around a millisecond or less;
//! - checks the call's time budget as soon as the original returns (a call that used up the
//!   budget is cut there, exactly as the interrupt would cut a loop);
//! - records a failed allocation in the call state, so the call fails even if the script
//!   catches the error.
//!
//! `string.find` with a plain needle (and `string.split`) are reimplemented in Rust with a
//! linear substring search instead of Luau's `memchr` + `memcmp` loop.
//!
//! `pcall`, `xpcall` and `coroutine.resume` are wrapped (in Lua, so a call that succeeds
//! pays almost nothing) to record a memory failure they caught.
//!
//! Functions left as they are, and why they are bounded (one call's worst case at the default
//! 32 MiB memory limit, from `cargo bench --bench lua -- "library call"` and earlier runs, a release build on
//! a loaded 2-core machine): `string.char`, `utf8.char` (many arguments come only from
//! `unpack`, which is capped: 2^16 arguments take 1.3-1.6 ms) and `utf8.codepoint` (Luau's
//! stack check allows at most 8,000 results); `string.format` (Luau refuses widths and
//! precisions of more than two digits; the work is linear in the format and argument sizes:
//! `%q` of 4 MiB takes about 3 ms); `string.match`/`gmatch`/`gsub` and patterned `find` (the
//! pattern matcher runs the interrupt at every step); the `table.insert` fast path (appends
//! one element); `table.find`/`clear`/`clone`/`maxn`, `string.lower`/`upper`/`reverse`/`sub`,
//! `buffer.tostring`/`fromstring` (one linear pass over data the memory limit already
//! bounds). The string functions cost about as much as making the string: 7-16 ms for 8 MiB
//! (so up to roughly twice that for the largest string the limit allows), where `..` making
//! the same 8 MiB, a VM instruction no wrapper can cap, takes about 4 ms. Capping them would
//! refuse hooks that work on bodies of a few MiB (`[limits] max_body_bytes` is 10 MiB by
//! default) for a bound the memory limit already gives; a lower `memory_limit_mb` lowers it.
//! These calls still end with the budget check of the next interrupt.

use std::rc::Rc;

use mlua::{Function, Lua, MultiValue, Table, Value};

use super::error::is_memory_error;
use super::vm::CallState;

/// Elements one `table.move`, `table.create`, `table.concat`, `table.unpack`, positional
/// `table.insert`/`table.remove`, or bytes one `string.byte` may touch. Luau moves elements outside the array part at
/// about 15 ns each (16.5 s for 10^9), so 2^16 elements take a few milliseconds (measured:
/// 3-6 ms for a move into a hash part, about 3 ms for a concat of numbers); hooks work on
/// request-sized data, far below this.
pub const MAX_TABLE_SPAN: f64 = 65_536.0;

/// Elements `table.sort` may sort. Sorting costs about n log n comparisons; 2^15 elements
/// sort in about 1.3 ms. (With a Lua comparator the interrupt fires in each
/// comparison, but the cap applies regardless, for a predictable bound.)
pub const MAX_SORT_ELEMENTS: f64 = 32_768.0;

/// Bytes one call may build from small arguments: the result of `string.rep`, a size in a
/// `string.pack` format (`c` pads with one byte at a time), `buffer.create`, the count of
/// `buffer.fill`/`buffer.copy`. 4 MiB is copied in well under a millisecond and leaves the
/// default 32 MiB VM room for the request's own data.
pub const MAX_BUILT_BYTES: f64 = 4.0 * 1024.0 * 1024.0;

/// Longest `string.pack`/`string.unpack`/`string.packsize` format: each option is handled
/// one at a time in C (padding `x` adds one byte per option); real formats are a few dozen
/// options.
pub const MAX_PACK_FORMAT_BYTES: usize = 1024;

/// The characters that make a `string.find` pattern a pattern; without any, Luau searches
/// for the plain text (the quadratic path this module replaces).
const PATTERN_SPECIALS: &[u8] = b"^$*+?.([%-";

/// The error a capped call raises: which function, which argument, what the cap is.
fn over_cap(function: &str, what: &str, cap: f64) -> mlua::Error {
    mlua::Error::runtime(format!(
        "{function}: {what} is over the sandbox cap of {cap}"
    ))
}

/// Argument `i` (0-based) as a number, as Luau's `luaL_checkinteger` would read it
/// (numbers and numeric strings). `None` for anything else, left to the original function
/// to reject.
fn number_arg(lua: &Lua, args: &MultiValue, i: usize) -> Option<f64> {
    match args.get(i)? {
        Value::Integer(n) => Some(*n as f64),
        Value::Number(n) => Some(*n),
        v @ Value::String(_) => lua.coerce_number(v.clone()).ok().flatten(),
        _ => None,
    }
}

/// `#t` of argument `i` when it is a table.
fn table_len(args: &MultiValue, i: usize) -> Option<f64> {
    match args.get(i)? {
        Value::Table(t) => Some(t.raw_len() as f64),
        _ => None,
    }
}

/// Refuses `count` (of `what`) when it is over `cap`; NaN counts are refused too.
fn check_count(function: &str, what: &str, count: f64, cap: f64) -> mlua::Result<()> {
    if count <= cap {
        Ok(())
    } else if cap == MAX_BUILT_BYTES {
        Err(mlua::Error::runtime(format!(
            "{function}: {what} is over the sandbox cap of {cap} bytes (the memory limit of one \
             library call)"
        )))
    } else {
        Err(over_cap(function, what, cap))
    }
}

/// An argument check run before the original function.
type Check = fn(&Lua, &MultiValue) -> mlua::Result<()>;

fn check_table_move(lua: &Lua, args: &MultiValue) -> mlua::Result<()> {
    if let (Some(f), Some(e)) = (number_arg(lua, args, 1), number_arg(lua, args, 2)) {
        if e >= f {
            check_count("table.move", "the range", e - f + 1.0, MAX_TABLE_SPAN)?;
        }
    }
    Ok(())
}

fn check_table_create(lua: &Lua, args: &MultiValue) -> mlua::Result<()> {
    match number_arg(lua, args, 0) {
        Some(n) => check_count("table.create", "the size", n, MAX_TABLE_SPAN),
        None => Ok(()),
    }
}

fn check_table_insert(lua: &Lua, args: &MultiValue) -> mlua::Result<()> {
    // Only `table.insert(t, pos, v)` shifts elements; `table.insert(t, v)` appends.
    if args.len() == 3 {
        if let (Some(len), Some(pos)) = (table_len(args, 0), number_arg(lua, args, 1)) {
            if pos >= 1.0 && pos <= len {
                check_count("table.insert", "the shift", len - pos + 1.0, MAX_TABLE_SPAN)?;
            }
        }
    }
    Ok(())
}

fn check_table_remove(lua: &Lua, args: &MultiValue) -> mlua::Result<()> {
    if let (Some(len), Some(pos)) = (table_len(args, 0), number_arg(lua, args, 1)) {
        if pos >= 1.0 && pos <= len {
            check_count("table.remove", "the shift", len - pos, MAX_TABLE_SPAN)?;
        }
    }
    Ok(())
}

fn check_table_concat(lua: &Lua, args: &MultiValue) -> mlua::Result<()> {
    let Some(len) = table_len(args, 0) else {
        return Ok(());
    };
    let first = match args.get(2) {
        None | Some(Value::Nil) => Some(1.0),
        Some(_) => number_arg(lua, args, 2),
    };
    let last = match args.get(3) {
        None | Some(Value::Nil) => Some(len),
        Some(_) => number_arg(lua, args, 3),
    };
    if let (Some(first), Some(last)) = (first, last) {
        if last >= first {
            check_count(
                "table.concat",
                "the range",
                last - first + 1.0,
                MAX_TABLE_SPAN,
            )?;
        }
    }
    Ok(())
}

/// The span `first..=last` of arguments `first_arg` and `first_arg + 1` (defaults 1 and
/// `default_last`), refused over [`MAX_TABLE_SPAN`].
fn check_span(
    function: &str,
    lua: &Lua,
    args: &MultiValue,
    first_arg: usize,
    default_last: Option<f64>,
) -> mlua::Result<()> {
    let first = match args.get(first_arg) {
        None | Some(Value::Nil) => Some(1.0),
        Some(_) => number_arg(lua, args, first_arg),
    };
    let last = match args.get(first_arg + 1) {
        None | Some(Value::Nil) => default_last,
        Some(_) => number_arg(lua, args, first_arg + 1),
    };
    if let (Some(first), Some(last)) = (first, last) {
        if last >= first {
            check_count(function, "the range", last - first + 1.0, MAX_TABLE_SPAN)?;
        }
    }
    Ok(())
}

fn check_table_unpack(lua: &Lua, args: &MultiValue) -> mlua::Result<()> {
    check_span("table.unpack", lua, args, 1, table_len(args, 0))
}

fn check_string_byte(lua: &Lua, args: &MultiValue) -> mlua::Result<()> {
    // Negative positions count from the end: the span is at most the string's length.
    let len = match args.front() {
        Some(Value::String(s)) => s.as_bytes().len() as f64,
        _ => return Ok(()),
    };
    if len <= MAX_TABLE_SPAN {
        return Ok(());
    }
    let last = match args.get(2) {
        None | Some(Value::Nil) => number_arg(lua, args, 1).or(Some(1.0)),
        Some(_) => number_arg(lua, args, 2),
    };
    let first = number_arg(lua, args, 1).unwrap_or(1.0);
    let at = |p: f64| if p < 0.0 { len + p + 1.0 } else { p };
    if let Some(last) = last {
        let (first, last) = (at(first).max(1.0), at(last).min(len));
        if last >= first {
            check_count(
                "string.byte",
                "the range",
                last - first + 1.0,
                MAX_TABLE_SPAN,
            )?;
        }
    }
    Ok(())
}

fn check_table_sort(_: &Lua, args: &MultiValue) -> mlua::Result<()> {
    match table_len(args, 0) {
        Some(len) => check_count("table.sort", "the length", len, MAX_SORT_ELEMENTS),
        None => Ok(()),
    }
}

fn check_string_rep(lua: &Lua, args: &MultiValue) -> mlua::Result<()> {
    let len = match args.front() {
        Some(Value::String(s)) => s.as_bytes().len() as f64,
        // A number argument becomes its decimal text: at most a few dozen bytes.
        Some(Value::Integer(_) | Value::Number(_)) => 32.0,
        _ => return Ok(()),
    };
    match number_arg(lua, args, 1) {
        Some(n) if n > 0.0 => {
            check_count("string.rep", "the result size", len * n, MAX_BUILT_BYTES)
        }
        _ => Ok(()),
    }
}

fn check_pack_format(function: &'static str, args: &MultiValue) -> mlua::Result<()> {
    let Some(Value::String(format)) = args.front() else {
        return Ok(());
    };
    let format = format.as_bytes();
    if format.len() > MAX_PACK_FORMAT_BYTES {
        return Err(over_cap(
            function,
            "the format length",
            MAX_PACK_FORMAT_BYTES as f64,
        ));
    }
    // Sizes in the format (`c<n>`, `i<n>`, `!<n>`...): each run of digits.
    let mut size = 0.0f64;
    for &b in format.iter().chain(std::iter::once(&b' ')) {
        if b.is_ascii_digit() {
            size = size * 10.0 + f64::from(b - b'0');
        } else {
            check_count(function, "a size in the format", size, MAX_BUILT_BYTES)?;
            size = 0.0;
        }
    }
    Ok(())
}

fn check_string_pack(_: &Lua, args: &MultiValue) -> mlua::Result<()> {
    check_pack_format("string.pack", args)
}

fn check_string_unpack(_: &Lua, args: &MultiValue) -> mlua::Result<()> {
    check_pack_format("string.unpack", args)
}

fn check_string_packsize(_: &Lua, args: &MultiValue) -> mlua::Result<()> {
    check_pack_format("string.packsize", args)
}

fn check_buffer_create(lua: &Lua, args: &MultiValue) -> mlua::Result<()> {
    match number_arg(lua, args, 0) {
        Some(n) => check_count("buffer.create", "the size", n, MAX_BUILT_BYTES),
        None => Ok(()),
    }
}

fn check_buffer_fill(lua: &Lua, args: &MultiValue) -> mlua::Result<()> {
    match number_arg(lua, args, 3) {
        Some(n) => check_count("buffer.fill", "the count", n, MAX_BUILT_BYTES),
        None => Ok(()),
    }
}

fn check_buffer_copy(lua: &Lua, args: &MultiValue) -> mlua::Result<()> {
    match number_arg(lua, args, 4) {
        Some(n) => check_count("buffer.copy", "the count", n, MAX_BUILT_BYTES),
        None => Ok(()),
    }
}

/// The wrapped functions: library (`""` for a global), name, argument check.
const CAPPED: &[(&str, &str, Check)] = &[
    ("table", "move", check_table_move),
    ("table", "create", check_table_create),
    ("table", "insert", check_table_insert),
    ("table", "remove", check_table_remove),
    ("table", "concat", check_table_concat),
    ("table", "sort", check_table_sort),
    ("table", "unpack", check_table_unpack),
    ("", "unpack", check_table_unpack),
    ("string", "byte", check_string_byte),
    ("string", "rep", check_string_rep),
    ("string", "pack", check_string_pack),
    ("string", "unpack", check_string_unpack),
    ("string", "packsize", check_string_packsize),
    ("buffer", "create", check_buffer_create),
    ("buffer", "fill", check_buffer_fill),
    ("buffer", "copy", check_buffer_copy),
];

/// Replaces the library functions above (and `string.find`, `string.split`, `pcall`,
/// `xpcall`, `coroutine.resume`) in `lua`'s globals. Call before `Lua::sandbox`.
pub(crate) fn install(lua: &Lua, state: &Rc<CallState>) -> mlua::Result<()> {
    let globals = lua.globals();
    for &(library, name, check) in CAPPED {
        let table: Table = if library.is_empty() {
            globals.clone()
        } else {
            globals.raw_get(library)?
        };
        let original: Function = table.raw_get(name)?;
        let state = Rc::clone(state);
        let wrapper = lua.create_function(move |lua, args: MultiValue| {
            if let Err(refused) = check(lua, &args) {
                return Err(state.note_cap(refused.to_string()));
            }
            let result = original.call::<MultiValue>(args);
            finish(&state, result)
        })?;
        table.raw_set(name, wrapper)?;
    }

    let string: Table = globals.raw_get("string")?;
    let original_find: Function = string.raw_get("find")?;
    let find_state = Rc::clone(state);
    string.raw_set(
        "find",
        lua.create_function(move |_, args: MultiValue| {
            if let Some(found) = plain_find(&args) {
                return Ok(found);
            }
            let result = original_find.call::<MultiValue>(args);
            finish(&find_state, result)
        })?,
    )?;
    let original_split: Function = string.raw_get("split")?;
    let split_state = Rc::clone(state);
    string.raw_set(
        "split",
        lua.create_function(move |lua, args: MultiValue| {
            if let Some(parts) = split(lua, &args)? {
                return finish(
                    &split_state,
                    Ok(MultiValue::from_iter([Value::Table(parts)])),
                );
            }
            let result = original_split.call::<MultiValue>(args);
            finish(&split_state, result)
        })?,
    )?;

    install_catch_wrappers(lua, state)
}

/// After a wrapped call: note a memory failure, then cut the call if the budget is spent.
fn finish(state: &CallState, result: mlua::Result<MultiValue>) -> mlua::Result<MultiValue> {
    if let Err(e) = &result {
        if is_memory_error(e) {
            state.note_memory_limit();
        }
    }
    state.check_after_library_call()?;
    result
}

/// `string.find(s, needle, init, plain)` when it is a plain search (`plain` true, or a needle
/// without pattern characters) of two strings: a linear search. `None` when the call is not
/// one of those, for the original to handle (patterns, numbers, odd `init`s).
fn plain_find(args: &MultiValue) -> Option<MultiValue> {
    let (Some(Value::String(s)), Some(Value::String(needle))) = (args.front(), args.get(1)) else {
        return None;
    };
    let plain = matches!(args.get(3), Some(v) if !matches!(v, Value::Nil | Value::Boolean(false)));
    let needle = needle.as_bytes();
    if !plain && needle.iter().any(|b| PATTERN_SPECIALS.contains(b)) {
        return None;
    }
    let init = match args.get(2) {
        None | Some(Value::Nil) => 1,
        Some(Value::Integer(n)) if i32::try_from(*n).is_ok() => *n,
        Some(Value::Number(n)) if n.fract() == 0.0 && n.abs() <= f64::from(i32::MAX) => *n as i64,
        Some(_) => return None,
    };
    let s = s.as_bytes();
    let len = s.len() as i64;
    // Luau's posrelat: negative positions count from the end; before the start means 1.
    let init = match init {
        i if i >= 0 => i.max(1),
        i if -i > len => 1,
        i => len + i + 1,
    };
    if init > len + 1 {
        return Some(MultiValue::from_iter([Value::Nil]));
    }
    let from = (init - 1) as usize;
    let found = memchr::memmem::find(&s[from..], &needle);
    Some(match found {
        Some(at) => {
            let start = (from + at + 1) as i64;
            MultiValue::from_iter([
                Value::Integer(start),
                Value::Integer(start + needle.len() as i64 - 1),
            ])
        }
        None => MultiValue::from_iter([Value::Nil]),
    })
}

/// `string.split(s, sep)` with a separator of two or more bytes, which Luau compares with
/// `memcmp` at every position (quadratic): a linear search instead. `None` for the cases
/// Luau handles in linear time (no, empty or one-byte separator) or odd arguments.
fn split(lua: &Lua, args: &MultiValue) -> mlua::Result<Option<Table>> {
    let (Some(Value::String(s)), Some(Value::String(sep))) = (args.front(), args.get(1)) else {
        return Ok(None);
    };
    let sep = sep.as_bytes();
    if sep.len() < 2 {
        return Ok(None);
    }
    let s = s.as_bytes();
    let parts = lua.create_table()?;
    let mut start = 0;
    let mut n = 0;
    for at in memchr::memmem::find_iter(&s, &sep) {
        if at < start {
            continue; // overlapping match: Luau resumes after the previous separator
        }
        n += 1;
        parts.raw_set(n, lua.create_string(&s[start..at])?)?;
        start = at + sep.len();
    }
    parts.raw_set(n + 1, lua.create_string(&s[start..])?)?;
    Ok(Some(parts))
}

/// Wraps `pcall`, `xpcall` and `coroutine.resume` so an error they catch is shown to
/// `note`, which records a memory failure. Written in Lua: the success path is one extra Lua
/// call, no crossing into Rust.
fn install_catch_wrappers(lua: &Lua, state: &Rc<CallState>) -> mlua::Result<()> {
    let note_state = Rc::clone(state);
    let note = lua.create_function(move |_, error: Value| {
        if is_memory_error_value(&error) {
            note_state.note_memory_limit();
        }
        Ok(())
    })?;
    let globals = lua.globals();
    let coroutine: Table = globals.raw_get("coroutine")?;
    let make: Function = lua
        .load(
            r#"
            local raw_pcall, raw_xpcall, raw_resume, note = ...
            local function after(ok, ...)
              if not ok then note((...)) end
              return ok, ...
            end
            local function pcall(f, ...)
              return after(raw_pcall(f, ...))
            end
            local function xpcall(f, handler, ...)
              if type(handler) ~= "function" then return raw_xpcall(f, handler, ...) end
              return raw_xpcall(f, function(e) note(e) return handler(e) end, ...)
            end
            local function resume(co, ...)
              return after(raw_resume(co, ...))
            end
            return pcall, xpcall, resume
            "#,
        )
        .set_name("=sandbox")
        .into_function()?;
    let (pcall, xpcall, resume): (Function, Function, Function) = make.call((
        globals.raw_get::<Function>("pcall")?,
        globals.raw_get::<Function>("xpcall")?,
        coroutine.raw_get::<Function>("resume")?,
        note,
    ))?;
    globals.raw_set("pcall", pcall)?;
    globals.raw_set("xpcall", xpcall)?;
    coroutine.raw_set("resume", resume)?;
    Ok(())
}

/// Whether a caught error value is an allocation failure: Luau's own message for the VM's
/// failed allocations, or an mlua error (raised in a Rust function) that is one.
fn is_memory_error_value(error: &Value) -> bool {
    match error {
        Value::String(s) => s.as_bytes().as_ref() == b"not enough memory",
        Value::Error(e) => is_memory_error(e),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use crate::lua::fuzz_library_call as run;

    /// Runs `snippet`, asserting it fails over a cap (not by timeout or memory) within a few
    /// milliseconds.
    fn refused(snippet: &str, cap_message: &str) {
        // Caught or not, a refusal fails the call.
        let caught = run(&format!("pcall(function() {snippet} end)")).expect_err(snippet);
        assert!(caught.contains(cap_message), "{snippet}: {caught}");
        let started = Instant::now();
        let err = run(snippet).expect_err(snippet);
        let took = started.elapsed();
        assert!(err.contains(cap_message), "{snippet}: {err}");
        assert!(took < Duration::from_millis(50), "{snippet}: took {took:?}");
    }

    fn works(snippet: &str) {
        if let Err(e) = run(snippet) {
            panic!("{snippet}: {e}");
        }
    }

    #[test]
    fn table_move_over_the_span_is_refused_and_ordinary_moves_work() {
        refused(
            "table.move({}, 1, 1e9, 1e9 + 10, {})",
            "table.move: the range",
        );
        works("local t = table.move({1, 2, 3}, 1, 3, 2) assert(t[4] == 3 and t[2] == 1)");
    }

    #[test]
    fn table_create_insert_remove_and_concat_are_capped() {
        refused("table.create(1e8, 0)", "table.create: the size");
        works("local t = table.create(3, 'x') assert(#t == 3)");
        refused(
            "local t = {} for i = 1, 70000 do t[i] = i end table.insert(t, 1, 0)",
            "table.insert: the shift",
        );
        refused(
            "local t = {} for i = 1, 70000 do t[i] = i end table.remove(t, 1)",
            "table.remove: the shift",
        );
        works(
            "local t = {1, 2, 3} table.insert(t, 1, 0) assert(t[1] == 0 and #t == 4) \
             assert(table.remove(t, 1) == 0 and #t == 3) table.insert(t, 9) assert(t[4] == 9)",
        );
        refused("table.concat({}, ',', 1, 1e9)", "table.concat: the range");
        works("assert(table.concat({'a', 'b', 'c'}, ',') == 'a,b,c')");
        works("assert(table.concat({'a', 'b', 'c'}, '', 2, 3) == 'bc')");
    }

    #[test]
    fn table_sort_is_capped() {
        refused(
            "local t = {} for i = 1, 40000 do t[i] = -i end table.sort(t)",
            "table.sort: the length",
        );
        works("local t = {3, 1, 2} table.sort(t) assert(t[1] == 1 and t[3] == 3)");
    }

    #[test]
    fn unpack_and_string_byte_ranges_are_capped() {
        refused("table.unpack({}, 1, 1e6)", "table.unpack: the range");
        refused("unpack({}, 1, 1e6)", "table.unpack: the range");
        refused("string.rep('a', 1e6):byte(1, -1)", "string.byte: the range");
        works("assert(select('#', unpack({1, 2, 3})) == 3)");
        works("assert(select('#', table.unpack({1, 2, 3}, 2)) == 2)");
        works("local a, b = ('xyz'):byte(-2, -1) assert(a == 121 and b == 122)");
        works("assert(string.rep('a', 1e6):byte(-1) == 97)");
    }

    #[test]
    fn string_rep_pack_and_buffers_are_capped() {
        refused("string.rep('x', 1e9)", "string.rep: the result size");
        refused("string.rep('abcd', 2e6)", "string.rep: the result size");
        works("assert(string.rep('ab', 3) == 'ababab' and ('-'):rep(0) == '')");
        refused(
            "string.pack('c2000000000', '')",
            "string.pack: a size in the format",
        );
        refused(
            &format!("string.pack('{}')", "x".repeat(2000)),
            "the format length",
        );
        refused("string.unpack('c9000000', '')", "string.unpack: a size");
        works("assert(string.unpack('>i4', string.pack('>i4', 7)) == 7)");
        refused("buffer.create(1e9)", "buffer.create: the size");
        refused(
            "buffer.fill(buffer.create(10), 0, 0, 1e9)",
            "buffer.fill: the count",
        );
        works("local b = buffer.create(8) buffer.fill(b, 0, 65, 8) assert(buffer.tostring(b) == 'AAAAAAAA')");
    }

    #[test]
    fn plain_find_of_a_long_needle_is_linear() {
        // The needle nearly matches at every position: quadratic in Luau's own search.
        let snippet = "local n = string.rep('a', 200000) .. 'b' \
                       local s = string.rep('a', 400000) \
                       assert(s:find(n, 1, true) == nil) assert(s:find(n) == nil)";
        let started = Instant::now();
        works(snippet);
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn plain_find_keeps_luau_results() {
        works(
            "local s = 'hello world' \
             assert(s:find('o') == 5) \
             local a, b = s:find('o', 6) assert(a == 8 and b == 8) \
             assert(s:find('o', -3) == nil) \
             assert(s:find('o', -4) == 8) \
             assert(s:find('', 20) == nil) \
             assert(s:find('', 12) == 12) \
             assert(s:find('.', 1, true) == nil) \
             assert(s:find('w.r') == 7) \
             assert(('a.b'):find('.', 1, true) == 2) \
             assert(s:find('world', -100) == 7)",
        );
    }

    #[test]
    fn split_with_a_long_separator_is_linear_and_keeps_results() {
        works(
            "local t = ('a--b----c'):split('--') \
             assert(#t == 4 and t[1] == 'a' and t[2] == 'b' and t[3] == '' and t[4] == 'c') \
             local u = ('aaa'):split('aa') assert(#u == 2 and u[1] == '' and u[2] == 'a') \
             local v = ('x,y'):split(',') assert(#v == 2)",
        );
        let started = Instant::now();
        works(
            "local sep = string.rep('a', 100000) .. 'b' \
             local t = string.rep('a', 300000):split(sep) assert(#t == 1)",
        );
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_memory_failure_caught_by_pcall_still_fails_the_call() {
        for snippet in [
            "local ok = pcall(function() local t = {} for i = 1, 1e8 do t[i] = {i} end end)",
            "local co = coroutine.create(function() local t = {} for i = 1, 1e8 do t[i] = i end end) \
             coroutine.resume(co)",
            "xpcall(function() local t = {} for i = 1, 1e8 do t[i] = i end end, function(e) return e end)",
        ] {
            let err = run(snippet).expect_err(snippet);
            assert!(err.contains("memory limit"), "{snippet}: {err}");
        }
        // An ordinary error caught by pcall is the script's business.
        works("local ok, e = pcall(error, 'x') assert(not ok and e == 'x')");
        works(
            "local ok, e = xpcall(error, function(m) return 'h:' .. m end, 'x') assert(e == 'h:x')",
        );
    }

    #[test]
    fn a_timeout_caught_by_pcall_still_fails_the_call() {
        let err = run("pcall(function() while true do end end)").unwrap_err();
        assert!(err.contains("time budget"), "{err}");
    }

    #[test]
    fn snippets_over_the_source_cap_are_refused() {
        assert!(run(&"-".repeat(super::super::MAX_FUZZ_SOURCE_BYTES + 1)).is_err());
    }

    /// Prints how long each formerly pathological call takes to be stopped now
    /// (`cargo test --lib lua::caps -- --nocapture`).
    #[test]
    fn pathological_calls_are_stopped_quickly() {
        for snippet in [
            "table.move({}, 1, 1e9, 1e9 + 10, {})",
            "local n = string.rep('a', 200000) .. 'b' string.rep('a', 400000):find(n, 1, true)",
            "pcall(string.rep, 'x', 1e9)",
            "table.concat({}, '', 1, 1e9)",
            "table.unpack({}, 1, 1e9)",
            "string.format('%99d', 1)",
            "string.rep('a', 1e5):find('.-.-.-.-.-.-.-.-b')",
            "table.create(1e9, 1)",
            "local t = {} for i = 1, 1e6 do t[i] = i end table.sort(t)",
        ] {
            let started = Instant::now();
            let result = run(snippet);
            let took = started.elapsed();
            println!("{took:>12?}  {snippet}  -> {result:?}");
            assert!(took < Duration::from_millis(500), "{snippet}: {took:?}");
        }
    }
}
