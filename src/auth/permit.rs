//! What an authenticated key may do: its routes, models and scopes (403 `permission_error`
//! when refused).

use super::glob::glob_match;
use crate::store::KeyRecord;

/// Whether `key` may use the route named `route_name`: its `routes` globs, empty = every route.
pub fn key_permits_route(key: &KeyRecord, route_name: &str) -> bool {
    permits_any(&key.routes, route_name)
}

/// Whether `key` may ask for the client-facing model `model`: its `models` globs, empty = every
/// model (as a key without a model list in LiteLLM or Portkey may call every model).
pub fn key_permits_model(key: &KeyRecord, model: &str) -> bool {
    permits_any(&key.models, model)
}

/// Whether `granted` holds every scope in `required` (exact, case-sensitive names, as OAuth
/// scope tokens are, RFC 6749 3.3). Nothing required is always satisfied.
pub fn has_scopes(granted: &[String], required: &[String]) -> bool {
    required
        .iter()
        .all(|need| granted.iter().any(|have| have == need))
}

fn permits_any(patterns: &[String], name: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|pattern| glob_match(pattern, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn key(routes: &[&str], models: &[&str]) -> KeyRecord {
        KeyRecord {
            routes: strings(routes),
            models: strings(models),
            ..crate::auth::test_support::record("key_permits", "permits")
        }
    }

    #[test]
    fn empty_route_list_permits_every_route() {
        assert!(key_permits_route(&key(&[], &[]), "anything"));
    }

    #[test]
    fn route_globs_limit_the_routes() {
        let key = key(&["api", "billing-*"], &[]);
        assert!(key_permits_route(&key, "api"));
        assert!(key_permits_route(&key, "billing-v2"));
        assert!(!key_permits_route(&key, "admin"));
    }

    #[test]
    fn empty_model_list_permits_every_model() {
        assert!(key_permits_model(&key(&[], &[]), "gpt-4o"));
    }

    #[test]
    fn model_globs_limit_the_models() {
        let key = key(&[], &["gpt-4o-mini", "claude-*"]);
        assert!(key_permits_model(&key, "gpt-4o-mini"));
        assert!(key_permits_model(&key, "claude-3-5-sonnet"));
        assert!(!key_permits_model(&key, "gpt-4o"));
    }

    #[test]
    fn scopes_require_every_listed_scope() {
        let granted = strings(&["read", "write"]);
        assert!(has_scopes(&granted, &strings(&["read"])));
        assert!(has_scopes(&granted, &strings(&["write", "read"])));
        assert!(!has_scopes(&granted, &strings(&["read", "admin"])));
    }

    #[test]
    fn no_required_scopes_is_always_satisfied() {
        assert!(has_scopes(&[], &[]));
    }

    #[test]
    fn scope_names_are_exact_and_case_sensitive() {
        let granted = strings(&["Read"]);
        assert!(!has_scopes(&granted, &strings(&["read"])));
        assert!(!has_scopes(&strings(&["read:all"]), &strings(&["read"])));
    }
}
