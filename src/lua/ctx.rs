//! What a hook sees (`ctx`, `resp`) and the changes it makes, which the pipeline applies.
//!
//! The VM holds one `ctx` and one `resp` userdata for its whole life. For a call, the
//! runtime swaps the caller's [`HookRequest`] / [`ResponseInfo`] into the userdata's slot and
//! swaps it back afterwards: no per-call allocation, and nothing is copied into Lua until a
//! script reads it (`ctx.path` makes one Lua string; an unread header costs nothing).

use std::cell::RefCell;
use std::rc::Rc;

use mlua::{
    Lua, LuaSerdeExt, RegistryKey, Table, UserData, UserDataFields, UserDataMethods, Value,
};
use serde_json::Map;

use crate::auth::Consumer;

/// The consumer a hook sees as `ctx.consumer`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConsumerInfo {
    /// The virtual key's id (`nil` in Lua for a consumer without a key, e.g. from a JWT).
    pub id: Option<String>,
    /// Display name.
    pub name: String,
    /// Team; may be empty.
    pub team: String,
    /// Free-form metadata of the key.
    pub metadata: Map<String, serde_json::Value>,
}

impl From<&Consumer> for ConsumerInfo {
    fn from(c: &Consumer) -> Self {
        ConsumerInfo {
            id: c.id.clone(),
            name: c.name.clone(),
            team: c.team.clone(),
            metadata: c.metadata.clone(),
        }
    }
}

/// Spend against the budget that applies to the request, for `ctx:budget()`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BudgetInfo {
    /// USD spent in the current period.
    pub used_usd: f64,
    /// USD limit; `None` (Lua `nil`) when unlimited.
    pub limit_usd: Option<f64>,
    /// Tokens spent in the current period.
    pub used_tokens: u64,
    /// Token limit; `None` (Lua `nil`) when unlimited.
    pub limit_tokens: Option<u64>,
}

/// Everything a hook may read and change about one request. The pipeline fills it in before
/// the first hook, keeps it for the request's later hooks and applies the changes after each
/// call; [`crate::lua::LuaRuntime::end_request`] frees its Lua side.
#[derive(Debug, Default)]
pub struct HookRequest {
    /// Request method (`ctx.method`).
    pub method: String,
    /// Request path without the query (`ctx.path`; `on_request` may assign it).
    pub path: String,
    /// Query without the `?` (`ctx.query`; `nil` when absent; `on_request` may assign it).
    pub query: Option<String>,
    /// Client address (`ctx.client_ip`).
    pub client_ip: String,
    /// Name of the matched route (`ctx.route`).
    pub route: Option<String>,
    /// The authenticated consumer, if any (`ctx.consumer`).
    pub consumer: Option<ConsumerInfo>,
    /// Request headers, lowercase names, in order; `ctx:set_header`/`remove_header` edit this.
    pub headers: Vec<(String, String)>,
    /// Set when a hook changed `headers`.
    pub headers_changed: bool,
    /// Set when a hook assigned `ctx.path` or `ctx.query`.
    pub target_changed: bool,
    /// `ctx:deny(status, msg)`: answer with this status and message instead of proceeding.
    pub deny: Option<(u16, String)>,
    /// `ctx:set_consumer(key_id_or_name)`: the pipeline resolves and applies it.
    pub set_consumer: Option<String>,
    /// Data for `ctx:budget()`; `nil` in Lua when `None`.
    pub budget: Option<BudgetInfo>,
    /// Fields `on_log` added to `entry`, merged in call order.
    pub log_fields: Map<String, serde_json::Value>,
    /// The per-request `ctx.vars` table, created on first use.
    pub(crate) vars: Option<RegistryKey>,
}

impl HookRequest {
    /// A request with its method, path and query; the other fields start empty.
    pub fn new(method: &str, path: &str, query: Option<&str>) -> HookRequest {
        HookRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.map(str::to_owned),
            ..HookRequest::default()
        }
    }

    /// The value of header `name` (any case); several field lines are joined with ", " as
    /// RFC 9110 5.3 allows.
    pub fn header(&self, name: &str) -> Option<String> {
        header_value(&self.headers, name)
    }
}

/// The response an `on_response` hook sees as `resp` and may change.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResponseInfo {
    /// Status code (`resp.status`, assignable).
    pub status: u16,
    /// Response headers, lowercase names (`resp:header`, `resp:set_header`, `resp:remove_header`).
    pub headers: Vec<(String, String)>,
    /// The full text of a non-streamed AI response (`resp.text`, assignable); `None` otherwise.
    pub text: Option<String>,
    /// Set when a hook changed `headers`.
    pub headers_changed: bool,
    /// Set when a hook assigned `resp.text`.
    pub text_changed: bool,
}

/// The `ctx` userdata: a view of the [`HookRequest`] currently swapped into `slot`.
pub(crate) struct CtxHandle {
    pub(crate) slot: Rc<RefCell<HookRequest>>,
}

/// The `resp` userdata: a view of the [`ResponseInfo`] currently swapped into `slot`.
pub(crate) struct RespHandle {
    pub(crate) slot: Rc<RefCell<ResponseInfo>>,
}

impl UserData for CtxHandle {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("method", |lua, this| {
            lua.create_string(&this.slot.borrow().method)
        });
        fields.add_field_method_get("path", |lua, this| {
            lua.create_string(&this.slot.borrow().path)
        });
        fields.add_field_method_set("path", |_, this, path: String| {
            check_target_part(&path, true)?;
            let mut req = this.slot.borrow_mut();
            req.path = path;
            req.target_changed = true;
            Ok(())
        });
        fields.add_field_method_get("query", |lua, this| {
            opt_string(lua, this.slot.borrow().query.as_deref())
        });
        fields.add_field_method_set("query", |_, this, query: Option<String>| {
            if let Some(q) = &query {
                check_target_part(q, false)?;
            }
            let mut req = this.slot.borrow_mut();
            req.query = query;
            req.target_changed = true;
            Ok(())
        });
        fields.add_field_method_get("client_ip", |lua, this| {
            lua.create_string(&this.slot.borrow().client_ip)
        });
        fields.add_field_method_get("route", |lua, this| {
            opt_string(lua, this.slot.borrow().route.as_deref())
        });
        fields.add_field_method_get("consumer", |lua, this| match &this.slot.borrow().consumer {
            Some(c) => consumer_table(lua, c).map(Value::Table),
            None => Ok(Value::Nil),
        });
        fields.add_field_method_get("vars", |lua, this| {
            let mut req = this.slot.borrow_mut();
            if let Some(key) = req.vars.as_ref().filter(|k| lua.owns_registry_value(k)) {
                return lua.registry_value::<Table>(key);
            }
            let vars = lua.create_table()?;
            req.vars = Some(lua.create_registry_value(&vars)?);
            Ok(vars)
        });
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("header", |lua, this, name: mlua::LuaString| {
            let name = name.to_str()?;
            opt_string(
                lua,
                header_value(&this.slot.borrow().headers, &name).as_deref(),
            )
        });
        methods.add_method(
            "set_header",
            |_, this, (name, value): (mlua::LuaString, mlua::LuaString)| {
                let (name, value) = checked_header(&name, &value)?;
                let mut req = this.slot.borrow_mut();
                set_header(&mut req.headers, name, value);
                req.headers_changed = true;
                Ok(())
            },
        );
        methods.add_method("remove_header", |_, this, name: mlua::LuaString| {
            let name = name.to_str()?;
            let mut req = this.slot.borrow_mut();
            if remove_header(&mut req.headers, &name) {
                req.headers_changed = true;
            }
            Ok(())
        });
        methods.add_method(
            "deny",
            |_, this, (status, message): (u16, Option<String>)| {
                // Only error statuses: a 1xx, 204 or 304 cannot carry the error body, and a 2xx
                // or 3xx "denial" would be a hook pretending to be the upstream.
                if !(400..=599).contains(&status) {
                    return Err(mlua::Error::runtime(format!(
                        "ctx:deny status must be 400-599, got {status}"
                    )));
                }
                let message = message.unwrap_or_else(|| "denied by hook".to_owned());
                this.slot.borrow_mut().deny = Some((status, message));
                Ok(())
            },
        );
        methods.add_method("set_consumer", |_, this, key: String| {
            if key.is_empty() {
                return Err(mlua::Error::runtime(
                    "ctx:set_consumer needs a key id or name",
                ));
            }
            this.slot.borrow_mut().set_consumer = Some(key);
            Ok(())
        });
        methods.add_method("budget", |lua, this, ()| match this.slot.borrow().budget {
            Some(b) => {
                let t = lua.create_table_with_capacity(0, 4)?;
                t.raw_set("used_usd", b.used_usd)?;
                t.raw_set("limit_usd", b.limit_usd)?;
                // Token counts stay exact as Lua numbers up to 2^53.
                t.raw_set("used_tokens", b.used_tokens as f64)?;
                t.raw_set("limit_tokens", b.limit_tokens.map(|n| n as f64))?;
                Ok(Value::Table(t))
            }
            None => Ok(Value::Nil),
        });
    }
}

impl UserData for RespHandle {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("status", |_, this| Ok(this.slot.borrow().status));
        fields.add_field_method_set("status", |_, this, status: u16| {
            if !(200..=599).contains(&status) {
                return Err(mlua::Error::runtime(format!(
                    "resp.status must be 200-599, got {status}"
                )));
            }
            this.slot.borrow_mut().status = status;
            Ok(())
        });
        fields.add_field_method_get("text", |lua, this| {
            opt_string(lua, this.slot.borrow().text.as_deref())
        });
        fields.add_field_method_set("text", |_, this, text: Option<String>| {
            let mut resp = this.slot.borrow_mut();
            resp.text = text;
            resp.text_changed = true;
            Ok(())
        });
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method("header", |lua, this, name: mlua::LuaString| {
            let name = name.to_str()?;
            opt_string(
                lua,
                header_value(&this.slot.borrow().headers, &name).as_deref(),
            )
        });
        methods.add_method(
            "set_header",
            |_, this, (name, value): (mlua::LuaString, mlua::LuaString)| {
                let (name, value) = checked_header(&name, &value)?;
                let mut resp = this.slot.borrow_mut();
                set_header(&mut resp.headers, name, value);
                resp.headers_changed = true;
                Ok(())
            },
        );
        methods.add_method("remove_header", |_, this, name: mlua::LuaString| {
            let name = name.to_str()?;
            let mut resp = this.slot.borrow_mut();
            if remove_header(&mut resp.headers, &name) {
                resp.headers_changed = true;
            }
            Ok(())
        });
    }
}

fn opt_string(lua: &Lua, s: Option<&str>) -> mlua::Result<Value> {
    match s {
        Some(s) => lua.create_string(s).map(Value::String),
        None => Ok(Value::Nil),
    }
}

fn consumer_table(lua: &Lua, c: &ConsumerInfo) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(0, 4)?;
    t.raw_set("id", c.id.as_deref())?;
    t.raw_set("name", c.name.as_str())?;
    t.raw_set("team", c.team.as_str())?;
    t.raw_set("metadata", lua.to_value(&c.metadata)?)?;
    Ok(t)
}

fn header_value(headers: &[(String, String)], name: &str) -> Option<String> {
    let mut values = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str());
    let first = values.next()?;
    let mut joined = first.to_owned();
    for v in values {
        joined.push_str(", ");
        joined.push_str(v);
    }
    Some(joined)
}

/// Replaces every field line named `name` with one line `name: value`.
fn set_header(headers: &mut Vec<(String, String)>, name: String, value: String) {
    headers.retain(|(n, _)| *n != name);
    headers.push((name, value));
}

fn remove_header(headers: &mut Vec<(String, String)>, name: &str) -> bool {
    let before = headers.len();
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    headers.len() != before
}

/// A header a script wants to set, validated so a hook cannot smuggle a second header or a
/// response split through it: the name must be a token (RFC 9110 5.6.2), the value may hold
/// no CR, LF, NUL or other control byte except HTAB (RFC 9110 5.5), and its surrounding
/// whitespace is dropped as the RFC's field-value grammar does.
fn checked_header(
    name: &mlua::LuaString,
    value: &mlua::LuaString,
) -> mlua::Result<(String, String)> {
    let name = name.as_bytes();
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(mlua::Error::runtime("invalid header name"));
    }
    let value = value.as_bytes();
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(mlua::Error::runtime(
            "invalid header value (control character)",
        ));
    }
    let value = std::str::from_utf8(&value)
        .map_err(|_| mlua::Error::runtime("header value must be UTF-8"))?
        .trim_matches([' ', '\t']);
    let name = String::from_utf8_lossy(&name).to_ascii_lowercase();
    Ok((name, value.to_owned()))
}

/// A path or query a script assigns, checked so it cannot break the request line it is
/// written into: origin-form (RFC 9112 3.2.1) is visible ASCII, the path starts with `/` and
/// holds no `?`, neither holds `#` (a fragment is never sent, RFC 9110 4.2.4).
fn check_target_part(s: &str, is_path: bool) -> mlua::Result<()> {
    let visible = s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'#');
    let ok = if is_path {
        visible && s.starts_with('/') && !s.contains('?')
    } else {
        visible || s.is_empty()
    };
    if ok {
        Ok(())
    } else if is_path {
        Err(mlua::Error::runtime(
            "ctx.path must be '/' then visible ASCII, without '?' or '#'",
        ))
    } else {
        Err(mlua::Error::runtime(
            "ctx.query must be visible ASCII without '#'",
        ))
    }
}

/// `tchar` of RFC 9110 5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_ignores_case_and_joins_repeated_lines() {
        let mut req = HookRequest::new("GET", "/", None);
        req.headers = vec![
            ("accept".into(), "a".into()),
            ("x-tag".into(), "1".into()),
            ("x-tag".into(), "2".into()),
        ];
        assert_eq!(req.header("Accept").as_deref(), Some("a"));
        assert_eq!(req.header("x-tag").as_deref(), Some("1, 2"));
        assert_eq!(req.header("missing"), None);
    }

    #[test]
    fn consumer_info_copies_identity_from_the_consumer() {
        let mut consumer = Consumer {
            id: Some("key_1".into()),
            name: "alice".into(),
            team: "research".into(),
            ..Consumer::default()
        };
        consumer.metadata.insert("tier".into(), "gold".into());
        let info = ConsumerInfo::from(&consumer);
        assert_eq!(info.id.as_deref(), Some("key_1"));
        assert_eq!(
            (info.name.as_str(), info.team.as_str()),
            ("alice", "research")
        );
        assert_eq!(info.metadata["tier"], "gold");
    }

    use crate::lua::test_support::runtime;
    use crate::lua::Hook;

    fn request() -> HookRequest {
        let mut req = HookRequest::new("POST", "/api/items", Some("a=1"));
        req.client_ip = "10.0.0.7".into();
        req.route = Some("api".into());
        req.headers = vec![
            ("host".into(), "example.com".into()),
            ("x-tenant".into(), "acme".into()),
        ];
        req
    }

    /// Runs `body` as `on_access(ctx)` and returns the request afterwards.
    fn run_access(body: &str, mut req: HookRequest) -> Result<HookRequest, crate::lua::HookError> {
        let mut rt = runtime(&format!("function on_access(ctx)\n{body}\nend"));
        rt.call(0, Hook::Access, &mut req)?;
        Ok(req)
    }

    /// Runs `body` and returns what it stored into `ctx.vars.out` via `on_log`'s entry.
    fn read_back(expr: &str, req: HookRequest) -> serde_json::Value {
        let mut rt = runtime(&format!(
            "function on_log(ctx, entry)\nentry.out = {expr}\nend"
        ));
        let mut req = req;
        rt.call(0, Hook::Log, &mut req).unwrap();
        req.log_fields
            .get("out")
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    #[test]
    fn ctx_exposes_method_path_query_client_ip_and_route() {
        let got = read_back(
            "table.concat({ctx.method, ctx.path, ctx.query, ctx.client_ip, ctx.route}, ' ')",
            request(),
        );
        assert_eq!(got, "POST /api/items a=1 10.0.0.7 api");
    }

    #[test]
    fn absent_query_route_and_consumer_are_nil() {
        let req = HookRequest::new("GET", "/", None);
        let got = read_back(
            "{ctx.query == nil, ctx.route == nil, ctx.consumer == nil}",
            req,
        );
        assert_eq!(got, serde_json::json!([true, true, true]));
    }

    #[test]
    fn ctx_consumer_has_id_name_team_and_metadata() {
        let mut req = request();
        let mut metadata = Map::new();
        metadata.insert("tier".into(), "gold".into());
        req.consumer = Some(ConsumerInfo {
            id: Some("key_1".into()),
            name: "alice".into(),
            team: "research".into(),
            metadata,
        });
        let got = read_back(
            "{ctx.consumer.id, ctx.consumer.name, ctx.consumer.team, ctx.consumer.metadata.tier}",
            req,
        );
        assert_eq!(
            got,
            serde_json::json!(["key_1", "alice", "research", "gold"])
        );
    }

    #[test]
    fn ctx_header_reads_any_case_and_nil_when_absent() {
        let got = read_back(
            "{ctx:header('X-Tenant'), ctx:header('missing') == nil}",
            request(),
        );
        assert_eq!(got, serde_json::json!(["acme", true]));
    }

    #[test]
    fn ctx_set_header_replaces_and_marks_headers_changed() {
        let req = run_access("ctx:set_header('X-Tenant', ' other ')", request()).unwrap();
        assert!(req.headers_changed);
        assert_eq!(req.header("x-tenant").as_deref(), Some("other"));
        assert_eq!(
            req.headers.iter().filter(|(n, _)| n == "x-tenant").count(),
            1
        );
    }

    #[test]
    fn ctx_set_header_refuses_header_injection() {
        let err = run_access("ctx:set_header('x-a', 'v\\r\\nx-admin: 1')", request()).unwrap_err();
        assert!(err.message.contains("invalid header value"), "{err}");
        let err = run_access("ctx:set_header('bad name', 'v')", request()).unwrap_err();
        assert!(err.message.contains("invalid header name"), "{err}");
    }

    #[test]
    fn ctx_remove_header_removes_every_line() {
        let req = run_access("ctx:remove_header('X-TENANT')", request()).unwrap();
        assert!(req.headers_changed);
        assert_eq!(req.header("x-tenant"), None);
        assert_eq!(req.header("host").as_deref(), Some("example.com"));
    }

    #[test]
    fn ctx_deny_records_status_and_message() {
        let req = run_access("return ctx:deny(403, 'tenant blocked')", request()).unwrap();
        assert_eq!(req.deny, Some((403, "tenant blocked".to_owned())));
    }

    #[test]
    fn ctx_deny_refuses_non_error_statuses() {
        let err = run_access("ctx:deny(200, 'fine')", request()).unwrap_err();
        assert!(err.message.contains("400-599"), "{err}");
    }

    #[test]
    fn ctx_set_consumer_records_the_key() {
        let req = run_access("ctx:set_consumer('key_abc')", request()).unwrap();
        assert_eq!(req.set_consumer.as_deref(), Some("key_abc"));
    }

    #[test]
    fn ctx_path_and_query_are_assignable() {
        let req = run_access("ctx.path = '/v2/items'; ctx.query = nil", request()).unwrap();
        assert!(req.target_changed);
        assert_eq!(
            (req.path.as_str(), req.query.as_deref()),
            ("/v2/items", None)
        );
    }

    #[test]
    fn ctx_path_refuses_values_that_would_break_the_request_line() {
        for bad in ["no-slash", "/a b", "/a\\r\\nx: y", "/a?b=1", "/a#frag"] {
            let err = run_access(&format!("ctx.path = '{bad}'"), request()).unwrap_err();
            assert!(err.message.contains("ctx.path must be"), "{bad}: {err}");
        }
        let err = run_access("ctx.query = 'a b'", request()).unwrap_err();
        assert!(err.message.contains("ctx.query must be"), "{err}");
    }

    #[test]
    fn ctx_budget_gives_spend_and_nil_limits_when_unlimited() {
        let mut req = request();
        req.budget = Some(BudgetInfo {
            used_usd: 4.5,
            limit_usd: Some(5.0),
            used_tokens: 1200,
            limit_tokens: None,
        });
        let got = read_back(
            "(function() local b = ctx:budget() return {b.used_usd, b.limit_usd, b.used_tokens, b.limit_tokens == nil} end)()",
            req,
        );
        assert_eq!(got, serde_json::json!([4.5, 5, 1200, true]));
        assert_eq!(read_back("ctx:budget() == nil", request()), true);
    }
}
