//! The `cf` module scripts call: JSON, hashes, base64, clock, log and the per-worker cache.
//!
//! Decoders (`json_decode`, `base64_decode`) return `nil, message` on bad input, because their
//! input usually comes from clients and a script should be able to deny rather than fail;
//! everything else raises on misuse.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use mlua::{Lua, LuaSerdeExt, MultiValue, Table, Value};
use sha2::{Digest, Sha256};

use super::cache::{Cache, CacheValue};
use super::vm::CallState;

/// Longest `cf.log` message written; the rest is cut so a script cannot flood the log.
const MAX_LOG_BYTES: usize = 4096;
/// Longest TTL `cf.cache_set` accepts (one year), so `Instant + ttl` cannot overflow.
const MAX_TTL_S: f64 = 365.0 * 24.0 * 3600.0;

/// Options for Lua -> JSON: nesting deeper than 128 is refused (the conversion recurses on the
/// worker's stack), functions and userdata are errors rather than silently dropped.
fn json_out_options() -> mlua::serde::de::Options {
    mlua::serde::de::Options::new()
        .deny_unsupported_types(true)
        .deny_recursive_tables(true)
}

/// Builds the `cf` table. It becomes a read-only global when the VM is sandboxed.
pub(crate) fn module(
    lua: &Lua,
    state: Rc<CallState>,
    cache: Rc<RefCell<Cache>>,
) -> mlua::Result<Table> {
    let cf = lua.create_table()?;
    cf.raw_set("null", lua.null())?;
    cf.raw_set(
        "json_encode",
        lua.create_function(|lua, v: Value| {
            let json: serde_json::Value = lua.from_value_with(v, json_out_options())?;
            serde_json::to_string(&json).map_err(mlua::Error::external)
        })?,
    )?;
    cf.raw_set(
        "json_decode",
        lua.create_function(|lua, s: mlua::LuaString| {
            match serde_json::from_slice::<serde_json::Value>(&s.as_bytes()) {
                Ok(v) => Ok((json_to_lua(lua, &v)?, Value::Nil)),
                Err(e) => Ok((Value::Nil, Value::String(lua.create_string(e.to_string())?))),
            }
        })?,
    )?;
    cf.raw_set(
        "sha256_hex",
        lua.create_function(|_, s: mlua::LuaString| Ok(hex(&Sha256::digest(s.as_bytes()))))?,
    )?;
    cf.raw_set(
        "hmac_sha256_hex",
        lua.create_function(|_, (secret, msg): (mlua::LuaString, mlua::LuaString)| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&secret.as_bytes())
                .map_err(mlua::Error::external)?;
            mac.update(&msg.as_bytes());
            Ok(hex(&mac.finalize().into_bytes()))
        })?,
    )?;
    cf.raw_set(
        "base64_encode",
        lua.create_function(|_, s: mlua::LuaString| {
            Ok(base64::engine::general_purpose::STANDARD.encode(s.as_bytes()))
        })?,
    )?;
    cf.raw_set(
        "base64_decode",
        lua.create_function(|lua, s: mlua::LuaString| {
            match base64::engine::general_purpose::STANDARD.decode(s.as_bytes()) {
                Ok(bytes) => Ok((Value::String(lua.create_string(bytes)?), Value::Nil)),
                Err(e) => Ok((Value::Nil, Value::String(lua.create_string(e.to_string())?))),
            }
        })?,
    )?;
    cf.raw_set(
        "now_ms",
        lua.create_function(|_, ()| {
            let since_epoch = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            Ok(since_epoch.as_millis() as f64)
        })?,
    )?;
    let log_state = Rc::clone(&state);
    cf.raw_set(
        "log",
        lua.create_function(move |_, args: MultiValue| {
            log_line(&log_state, &args);
            Ok(())
        })?,
    )?;
    let get_cache = Rc::clone(&cache);
    cf.raw_set(
        "cache_get",
        lua.create_function(move |lua, key: mlua::LuaString| {
            let found = get_cache.borrow_mut().get(&key.as_bytes(), Instant::now());
            match found {
                Some(CacheValue::Bytes(b)) => Ok(Value::String(lua.create_string(b)?)),
                Some(CacheValue::Number(n)) => Ok(Value::Number(n)),
                None => Ok(Value::Nil),
            }
        })?,
    )?;
    cf.raw_set(
        "cache_set",
        lua.create_function(
            move |_, (key, value, ttl_s): (mlua::LuaString, Value, Option<f64>)| {
                let key = key.as_bytes();
                let value = match value {
                    Value::Nil => {
                        cache.borrow_mut().remove(&key);
                        return Ok(());
                    }
                    Value::String(s) => CacheValue::Bytes(s.as_bytes().to_vec()),
                    Value::Number(n) => CacheValue::Number(n),
                    Value::Integer(n) => CacheValue::Number(n as f64),
                    other => {
                        return Err(mlua::Error::runtime(format!(
                            "cf.cache_set stores strings and numbers, not {}",
                            other.type_name()
                        )))
                    }
                };
                let ttl_s = ttl_s.unwrap_or(60.0);
                if !(ttl_s > 0.0 && ttl_s <= MAX_TTL_S) {
                    return Err(mlua::Error::runtime(
                        "cf.cache_set ttl_s must be in (0, 31536000]",
                    ));
                }
                cache
                    .borrow_mut()
                    .set(&key, value, Duration::from_secs_f64(ttl_s), Instant::now())
                    .map_err(mlua::Error::runtime)
            },
        )?,
    )?;
    Ok(cf)
}

/// `print` and `cf.log`: one line to the gateway log, target "lua", prefixed with the script.
pub(crate) fn log_line(state: &CallState, args: &MultiValue) {
    let mut line = String::new();
    for (i, v) in args.iter().enumerate() {
        if i > 0 {
            line.push('\t');
        }
        match v {
            Value::String(s) => line.push_str(&String::from_utf8_lossy(&s.as_bytes())),
            other => line.push_str(
                &other
                    .to_string()
                    .unwrap_or_else(|_| other.type_name().into()),
            ),
        }
        if line.len() > MAX_LOG_BYTES {
            break;
        }
    }
    // Redacted whole, before the cut, so no prefix of a secret is left at the end.
    let mut line = state.redactor().redact(&line).into_owned();
    if line.len() > MAX_LOG_BYTES {
        let mut cut = MAX_LOG_BYTES;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    // One event, one log line: a script must not be able to forge further log lines.
    let line: String = line
        .chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect();
    log::info!(target: "lua", "{}: {}", state.script_name(), line);
}

/// A JSON value as a Lua value: objects and arrays become tables (arrays marked so they encode
/// back as arrays, even when empty), `null` becomes `cf.null`.
pub(crate) fn json_to_lua(lua: &Lua, v: &serde_json::Value) -> mlua::Result<Value> {
    lua.to_value(v)
}

/// A Lua value as JSON, for `cf.json_encode`, `on_prompt` results and `on_log` entries.
pub(crate) fn lua_to_json(lua: &Lua, v: Value) -> mlua::Result<serde_json::Value> {
    lua.from_value_with(v, json_out_options())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::lua::test_support::runtime;
    use crate::lua::{Hook, HookRequest};

    /// The JSON of `expr` evaluated inside a hook (via `on_log`'s entry).
    fn eval(expr: &str) -> serde_json::Value {
        let mut rt = runtime(&format!(
            "function on_log(ctx, entry)\nentry.out = {expr}\nend"
        ));
        let mut req = HookRequest::default();
        rt.call(0, Hook::Log, &mut req).unwrap();
        req.log_fields
            .get("out")
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    #[test]
    fn json_encode_writes_objects_arrays_and_integers() {
        let got = eval("cf.json_encode({n = 3, list = {1, 2}, ok = true})");
        let parsed: serde_json::Value = serde_json::from_str(got.as_str().unwrap()).unwrap();
        assert_eq!(parsed, json!({"n": 3, "list": [1, 2], "ok": true}));
    }

    #[test]
    fn json_decode_reads_values_and_keeps_empty_arrays_as_arrays() {
        let got = eval(r#"cf.json_encode(cf.json_decode('{"a":[],"b":null,"c":[1,"x"]}'))"#);
        let parsed: serde_json::Value = serde_json::from_str(got.as_str().unwrap()).unwrap();
        assert_eq!(parsed, json!({"a": [], "b": null, "c": [1, "x"]}));
    }

    #[test]
    fn json_decode_returns_nil_and_message_on_bad_input() {
        let got = eval(
            "(function() local v, err = cf.json_decode('{') return {v == nil, type(err)} end)()",
        );
        assert_eq!(got, json!([true, "string"]));
    }

    #[test]
    fn sha256_hex_matches_the_known_digest() {
        assert_eq!(
            eval("cf.sha256_hex('abc')"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hmac_sha256_hex_matches_rfc_4231_case_2() {
        assert_eq!(
            eval("cf.hmac_sha256_hex('Jefe', 'what do ya want for nothing?')"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn base64_round_trips_and_bad_input_gives_nil() {
        assert_eq!(eval("cf.base64_encode('user:pass')"), "dXNlcjpwYXNz");
        assert_eq!(eval("cf.base64_decode('dXNlcjpwYXNz')"), "user:pass");
        assert_eq!(eval("cf.base64_decode('***') == nil"), true);
    }

    #[test]
    fn now_ms_is_the_wall_clock_in_milliseconds() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as f64;
        let got = eval("cf.now_ms()").as_f64().unwrap();
        assert!(got >= before && got < before + 5_000.0, "{got} vs {before}");
    }

    #[test]
    fn log_accepts_messages_without_failing_the_hook() {
        assert_eq!(
            eval("(function() cf.log('hello', 42) print('x') return true end)()"),
            true
        );
    }

    #[test]
    fn cache_set_then_get_returns_strings_and_numbers() {
        let got = eval(
            "(function() cf.cache_set('s', 'v', 60) cf.cache_set('n', 7, 60) \
             return {cf.cache_get('s'), cf.cache_get('n'), cf.cache_get('none') == nil} end)()",
        );
        assert_eq!(got, json!(["v", 7, true]));
    }

    #[test]
    fn cache_refuses_tables_and_deletes_on_nil() {
        let got = eval(
            "(function() local ok = pcall(cf.cache_set, 't', {}, 60) \
             cf.cache_set('k', 'v', 60) cf.cache_set('k', nil) \
             return {ok, cf.cache_get('k') == nil} end)()",
        );
        assert_eq!(got, json!([false, true]));
    }

    #[test]
    fn cache_is_shared_by_the_calls_of_one_worker() {
        let mut rt = runtime(
            "function on_access(ctx) cf.cache_set('hits', (cf.cache_get('hits') or 0) + 1, 60) end
             function on_log(ctx, entry) entry.hits = cf.cache_get('hits') end",
        );
        let mut req = HookRequest::default();
        rt.call(0, Hook::Access, &mut req).unwrap();
        rt.call(0, Hook::Access, &mut req).unwrap();
        rt.call(0, Hook::Log, &mut req).unwrap();
        assert_eq!(req.log_fields["hits"], 2);
    }
}
