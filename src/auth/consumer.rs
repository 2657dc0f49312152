//! The per-request identity that authentication establishes.

use std::sync::Arc;

use super::glob::tool_glob_match;
use crate::store::KeyRecord;

/// Who is making a request: set by the auth phase (a virtual key, a JWT's claims or a Lua
/// `ctx:set_consumer`) and read by limits, hooks, the usage ledger and the access log.
#[derive(Clone, Debug, Default)]
pub struct Consumer {
    /// The virtual key's id; `None` for a consumer without a key (for example from a JWT).
    pub id: Option<String>,
    /// Display name (the key's name, or a JWT's subject claim).
    pub name: String,
    /// The team spend and limits are grouped under; may be empty.
    pub team: String,
    /// Scopes granted, checked against a route's required `scopes`.
    pub scopes: Vec<String>,
    /// Free-form metadata, exposed to Lua as `ctx.consumer.metadata`.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The key whose limits and budgets apply to this request, if any.
    pub key: Option<Arc<KeyRecord>>,
}

impl Consumer {
    /// The consumer a virtual key stands for: its id, name, team, scopes and metadata, with
    /// the key itself kept for the limits and budget phases.
    pub fn from_key(key: &Arc<KeyRecord>) -> Consumer {
        Consumer {
            id: Some(key.id.clone()),
            name: key.name.clone(),
            team: key.team.clone(),
            scopes: key.scopes.clone(),
            metadata: key.metadata.clone(),
            key: Some(Arc::clone(key)),
        }
    }

    /// Whether this consumer may list and call the MCP tool exposed as `exposed_name`
    /// (`<prefix>__<tool>`): its key's `mcp_tools` globs (`*`, `?`; case-sensitive, as MCP
    /// tool names are) name it, or the list is empty, which permits every exposed tool.
    /// A consumer without a key (a JWT naming none) has no tool list and so may use every
    /// exposed tool; which tools are exposed at all is the server's `tools` setting.
    ///
    /// Pure and allocation-free: the MCP endpoint calls it for every tool of a listing.
    pub fn may_call_tool(&self, exposed_name: &str) -> bool {
        let Some(key) = &self.key else {
            return true;
        };
        key.mcp_tools.is_empty()
            || key
                .mcp_tools
                .iter()
                .any(|glob| tool_glob_match(glob, exposed_name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_key_copies_identity_and_keeps_the_key() {
        let mut record = crate::auth::test_support::record("key_c1", "alice");
        record.team = "research".into();
        record.scopes = vec!["chat".into()];
        record
            .metadata
            .insert("tier".into(), serde_json::Value::from("gold"));
        let key = Arc::new(record);

        let consumer = Consumer::from_key(&key);
        assert_eq!(consumer.id.as_deref(), Some("key_c1"));
        assert_eq!(consumer.name, "alice");
        assert_eq!(consumer.team, "research");
        assert_eq!(consumer.scopes, vec!["chat".to_string()]);
        assert_eq!(consumer.metadata["tier"], "gold");
        assert!(Arc::ptr_eq(consumer.key.as_ref().unwrap(), &key));
    }

    fn with_tools(globs: &[&str]) -> Consumer {
        let mut record = crate::auth::test_support::record("key_t1", "agent");
        record.mcp_tools = globs.iter().map(|g| (*g).to_owned()).collect();
        Consumer::from_key(&Arc::new(record))
    }

    #[test]
    fn an_empty_tool_list_permits_every_exposed_tool() {
        let consumer = with_tools(&[]);
        assert!(consumer.may_call_tool("github__search_code"));
        assert!(consumer.may_call_tool("fs__write_file"));
    }

    #[test]
    fn a_consumer_without_a_key_may_call_every_exposed_tool() {
        let consumer = Consumer {
            name: "jwt-subject".into(),
            ..Consumer::default()
        };
        assert!(consumer.may_call_tool("fs__delete_file"));
    }

    #[test]
    fn prefix_globs_permit_the_tools_they_start() {
        let consumer = with_tools(&["github__search_*", "fs__read_*"]);
        assert!(consumer.may_call_tool("github__search_code"));
        assert!(consumer.may_call_tool("github__search_"));
        assert!(consumer.may_call_tool("fs__read_file"));
        assert!(!consumer.may_call_tool("github__create_issue"));
        assert!(!consumer.may_call_tool("fs__write_file"));
    }

    #[test]
    fn an_exact_name_permits_only_that_tool() {
        let consumer = with_tools(&["github__get_issue"]);
        assert!(consumer.may_call_tool("github__get_issue"));
        assert!(!consumer.may_call_tool("github__get_issues"));
        assert!(!consumer.may_call_tool("github__get_issu"));
        assert!(!consumer.may_call_tool("other__github__get_issue"));
    }

    #[test]
    fn question_mark_stands_for_one_character() {
        let consumer = with_tools(&["fs__read_v?"]);
        assert!(consumer.may_call_tool("fs__read_v1"));
        assert!(consumer.may_call_tool("fs__read_v2"));
        assert!(!consumer.may_call_tool("fs__read_v"));
        assert!(!consumer.may_call_tool("fs__read_v10"));
    }

    #[test]
    fn no_matching_glob_refuses_the_tool() {
        let consumer = with_tools(&["github__*"]);
        assert!(!consumer.may_call_tool("gitlab__search"));
        assert!(!consumer.may_call_tool(""));
    }

    #[test]
    fn tool_names_are_case_sensitive() {
        let consumer = with_tools(&["github__search_*", "fs__ReadFile"]);
        assert!(!consumer.may_call_tool("GitHub__search_code"));
        assert!(!consumer.may_call_tool("github__SEARCH_code"));
        assert!(consumer.may_call_tool("fs__ReadFile"));
        assert!(!consumer.may_call_tool("fs__readfile"));
    }
}
