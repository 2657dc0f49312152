//! What the gateway answers itself: `initialize`, and the listings merged from every server
//! (`tools/list`, `prompts/list`, `resources/list`) with the gateway's own cursor.
//!
//! Each listing asks every server at once (following the server's cursors for at most
//! [`MAX_PAGES`] pages and [`MAX_ITEMS_PER_SERVER`] items, within [`LISTING_WAIT`]), renames what it lists
//! ([`super::names`]), and hides tools outside the server's globs. A server that fails is
//! left out of the listing (logged), so one server down does not break the others. The
//! merged list is served in pages of [`PAGE_SIZE`]; the gateway's cursor is the offset into
//! it, so it works on any worker.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::client::{self, CallError};
use super::names;
use super::revision::Revision;
use super::{McpGateway, McpServer};
use crate::auth::Consumer;
use crate::pipeline::ThreadState;

/// Most pages of one server's listing followed.
pub const MAX_PAGES: usize = 10;

/// Most items taken from one server's listing.
pub const MAX_ITEMS_PER_SERVER: usize = 1000;

/// Items per page of the gateway's listing.
pub const PAGE_SIZE: usize = 500;

/// A listing method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Tools,
    Prompts,
    Resources,
}

impl Listing {
    /// The listing of `method`, if it is one.
    pub fn of(method: &str) -> Option<Listing> {
        match method {
            "tools/list" => Some(Listing::Tools),
            "prompts/list" => Some(Listing::Prompts),
            "resources/list" => Some(Listing::Resources),
            _ => None,
        }
    }

    fn method(self) -> &'static str {
        match self {
            Listing::Tools => "tools/list",
            Listing::Prompts => "prompts/list",
            Listing::Resources => "resources/list",
        }
    }

    /// The result's array field.
    fn field(self) -> &'static str {
        match self {
            Listing::Tools => "tools",
            Listing::Prompts => "prompts",
            Listing::Resources => "resources",
        }
    }
}

/// The `initialize` result: the negotiated revision and the union of the capabilities the
/// servers report, among those the gateway aggregates (tools, prompts, resources). Each
/// server's capabilities come from this worker's session with it (opened now when there is
/// none, within [`LISTING_WAIT`], every server at once).
pub async fn initialize_result(
    worker: &ThreadState,
    gateway: &McpGateway,
    revision: Revision,
) -> Value {
    json!({
        "protocolVersion": revision.as_str(),
        "capabilities": capabilities(worker, gateway).await,
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    })
}

/// The `server/discover` result of the stateless revision: every revision served, the same
/// capabilities as `initialize`, the gateway named in `_meta`.
pub async fn discover_result(worker: &ThreadState, gateway: &McpGateway) -> Value {
    json!({
        "supportedVersions": super::revision::all_names(),
        "capabilities": capabilities(worker, gateway).await,
        "instructions": INSTRUCTIONS,
        "_meta": {super::revision::SERVER_INFO_META_KEY: server_info()},
    })
}

const INSTRUCTIONS: &str =
    "Tools, prompts and resources of several MCP servers, named <server>__<name>.";

fn server_info() -> Value {
    json!({"name": "credentialflow", "version": env!("CARGO_PKG_VERSION")})
}

/// The union of the servers' capabilities ([`union_capabilities`]), each asked at once.
async fn capabilities(worker: &ThreadState, gateway: &McpGateway) -> Value {
    let asks = gateway
        .servers
        .iter()
        .map(|server| client::capabilities(worker, server, LISTING_WAIT))
        .collect();
    let answers = super::join_all(asks).await;
    let mut reports = Vec::with_capacity(answers.len());
    for (server, answer) in gateway.servers.iter().zip(answers) {
        match answer {
            Ok(capabilities) => reports.push(Some(capabilities)),
            Err(e) => {
                log::warn!(
                    "mcp_server {}: capabilities unknown at initialize: {}",
                    server.name,
                    e.reason()
                );
                reports.push(None);
            }
        }
    }
    union_capabilities(&reports)
}

/// The capabilities the gateway offers for servers that reported `reports` (`None`: a server
/// that could not be asked). A server not asked counts as offering everything the gateway
/// aggregates, so a server down at `initialize` does not hide its tools for the whole
/// session. Lists never announce changes: the gateway does not relay `list_changed`.
pub fn union_capabilities(reports: &[Option<Value>]) -> Value {
    let offers = |listing: Listing| {
        reports.iter().any(|r| match r {
            Some(capabilities) => capabilities
                .get(listing.field())
                .is_some_and(Value::is_object),
            None => true,
        })
    };
    let mut capabilities = Map::new();
    if offers(Listing::Tools) {
        capabilities.insert("tools".into(), json!({"listChanged": false}));
    }
    if offers(Listing::Prompts) {
        capabilities.insert("prompts".into(), json!({"listChanged": false}));
    }
    if offers(Listing::Resources) {
        capabilities.insert(
            "resources".into(),
            json!({"listChanged": false, "subscribe": false}),
        );
    }
    Value::Object(capabilities)
}

/// Longest wait for one server's part of a listing (or its capabilities): a slow server is
/// left out of that listing after this, rather than holding it for its whole `timeout_ms`.
pub const LISTING_WAIT: Duration = Duration::from_secs(5);

/// Why a listing cannot be answered.
#[derive(Debug, PartialEq, Eq)]
pub enum ListError {
    /// The client's cursor is not one the gateway issued.
    BadCursor,
}

/// The page of the merged `listing` at the client's `cursor`; tools the `consumer` may not
/// call (its key's `mcp_tools`) are left out, so they look like tools that do not exist.
pub async fn list(
    worker: &ThreadState,
    gateway: &McpGateway,
    listing: Listing,
    cursor: Option<&str>,
    consumer: Option<&Consumer>,
) -> Result<Value, ListError> {
    let offset = match cursor {
        None => 0,
        Some(c) => parse_cursor(c).ok_or(ListError::BadCursor)?,
    };
    // Every server at once: the listing takes as long as its slowest server, at most
    // [`LISTING_WAIT`].
    let asks = gateway
        .servers
        .iter()
        .map(|server| server_items(worker, server, listing))
        .collect();
    let answers = super::join_all(asks).await;
    let mut merged = Vec::new();
    for (server, answer) in gateway.servers.iter().zip(answers) {
        match answer {
            Ok(items) => merged.extend(items),
            Err(e) => log::warn!(
                "mcp_server {}: left out of {}: {}",
                server.name,
                listing.method(),
                e.reason()
            ),
        }
    }
    if listing == Listing::Tools {
        merged.retain(|tool| {
            let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
            consumer.is_none_or(|c| c.may_call_tool(name))
        });
    }
    Ok(page(listing, merged, offset))
}

/// One page of `merged` from `offset`, with the next cursor when more remain.
pub fn page(listing: Listing, merged: Vec<Value>, offset: usize) -> Value {
    let total = merged.len();
    let items: Vec<Value> = merged.into_iter().skip(offset).take(PAGE_SIZE).collect();
    let mut result = Map::new();
    result.insert(listing.field().to_string(), Value::Array(items));
    if offset + PAGE_SIZE < total {
        result.insert(
            "nextCursor".into(),
            Value::String(cursor_at(offset + PAGE_SIZE)),
        );
    }
    Value::Object(result)
}

fn cursor_at(offset: usize) -> String {
    format!("gw1.{offset}")
}

fn parse_cursor(cursor: &str) -> Option<usize> {
    let offset: usize = cursor.strip_prefix("gw1.")?.parse().ok()?;
    (offset <= super::config_max_items()).then_some(offset)
}

/// `server`'s items of `listing`, renamed and filtered.
async fn server_items(
    worker: &ThreadState,
    server: &McpServer,
    listing: Listing,
) -> Result<Vec<Value>, CallError> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let deadline = Instant::now() + LISTING_WAIT;
    for _ in 0..MAX_PAGES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CallError::Unavailable("the listing took too long"));
        }
        let mut params = Map::new();
        if let Some(c) = cursor.take() {
            params.insert("cursor".into(), Value::String(c));
        }
        let answer = client::request_within(worker, server, listing.method(), params, left)
            .await?
            .response(worker)
            .await?;
        let Some(result) = answer.get("result") else {
            // The server does not list these (no such capability): nothing to merge.
            return Ok(items);
        };
        let Some(listed) = result.get(listing.field()).and_then(Value::as_array) else {
            return Err(CallError::Bad("a listing without its array"));
        };
        for item in listed {
            if items.len() >= MAX_ITEMS_PER_SERVER {
                log::warn!(
                    "mcp_server {}: {} cut at {MAX_ITEMS_PER_SERVER} items",
                    server.name,
                    listing.method()
                );
                return Ok(finish(server, listing, items));
            }
            if let Some(renamed) = rename(server, listing, item) {
                items.push(renamed);
            }
        }
        match result.get("nextCursor").and_then(Value::as_str) {
            Some(next) if !next.is_empty() && next.len() <= 1024 => cursor = Some(next.to_string()),
            _ => break,
        }
    }
    Ok(finish(server, listing, items))
}

/// Remembers a server's listed tool names for the metrics' labels.
fn finish(server: &McpServer, listing: Listing, items: Vec<Value>) -> Vec<Value> {
    if listing == Listing::Tools {
        let upstream_names = items.iter().filter_map(|t| {
            t.get("name")
                .and_then(Value::as_str)
                .and_then(names::split)
                .map(|(_, n)| n)
        });
        crate::metrics::global()
            .mcp()
            .note_tools(&server.name, upstream_names);
    }
    items
}

/// An item as clients see it: its name prefixed (a resource's URI too), `None` when hidden
/// (a tool outside the globs) or malformed.
pub fn rename(server: &McpServer, listing: Listing, item: &Value) -> Option<Value> {
    let mut item = item.as_object()?.clone();
    match listing {
        Listing::Tools | Listing::Prompts => {
            let name = item.get("name")?.as_str()?.to_string();
            if listing == Listing::Tools && !server.exposes(&name) {
                return None;
            }
            item.insert(
                "name".into(),
                Value::String(names::prefixed(&server.prefix, &name)),
            );
        }
        Listing::Resources => {
            let uri = item.get("uri")?.as_str()?.to_string();
            item.insert(
                "uri".into(),
                Value::String(names::resource_uri(&server.prefix, &uri)),
            );
            if let Some(name) = item.get("name").and_then(Value::as_str) {
                let shown = names::prefixed(&server.prefix, name);
                item.insert("name".into(), Value::String(shown));
            }
        }
    }
    Some(Value::Object(item))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_carry_a_cursor_until_the_end() {
        let merged: Vec<Value> = (0..PAGE_SIZE + 3).map(|i| json!({"name": i})).collect();
        let first = page(Listing::Tools, merged.clone(), 0);
        assert_eq!(first["tools"].as_array().unwrap().len(), PAGE_SIZE);
        let next = first["nextCursor"].as_str().unwrap();
        let offset = parse_cursor(next).unwrap();
        let second = page(Listing::Tools, merged, offset);
        assert_eq!(second["tools"].as_array().unwrap().len(), 3);
        assert!(second.get("nextCursor").is_none());
        assert_eq!(parse_cursor("made-up"), None);
        assert_eq!(parse_cursor("gw1.99999999999"), None);
    }

    #[test]
    fn capabilities_are_the_union_of_the_servers_reports() {
        let tools_only = json!({"tools": {"listChanged": true}});
        let prompts_only = json!({"prompts": {}, "logging": {}});
        let union = union_capabilities(&[Some(tools_only.clone()), Some(prompts_only)]);
        assert_eq!(
            union,
            json!({"tools": {"listChanged": false}, "prompts": {"listChanged": false}})
        );
        assert_eq!(
            union_capabilities(&[Some(tools_only.clone())]),
            json!({"tools": {"listChanged": false}})
        );
        // A server that could not be asked may offer anything.
        let unknown = union_capabilities(&[Some(tools_only), None]);
        assert!(unknown.get("resources").is_some() && unknown.get("prompts").is_some());
        assert_eq!(union_capabilities(&[]), json!({}));
    }
}
