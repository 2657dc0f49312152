//! `GET /admin/nodes`: the fleet's nodes as the store's registry last heard from them
//! (README, "Fleet"). A store without a registry (SQLite, one host) lists only this node.

use serde_json::json;

use super::http::Response;
use super::keys::store_error;
use super::routes::json_response;
use super::AdminState;

/// `GET /admin/nodes`: `{"nodes":[{"node","version","last_seen","config_generation"}]}`,
/// by node name.
pub(crate) fn list(state: &AdminState) -> Response {
    let listed = state.store.lock().nodes();
    match listed {
        Ok(Some(nodes)) => json_response(200, &json!({ "nodes": nodes })),
        Ok(None) => json_response(200, &json!({ "nodes": [(state.this_node)()] })),
        Err(e) => store_error(state, &e),
    }
}
