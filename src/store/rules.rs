//! The rules a key record obeys before it is written, whichever backend writes it: field
//! bounds and patch application. Both the SQLite store (`store::keys`) and the PostgreSQL
//! store (`store::postgres`) call these, so both accept and refuse exactly the same input;
//! `tests/store_postgres.rs` runs one suite against both.

use zeroize::Zeroizing;

use crate::clock::parse_duration;
use crate::store::ids::{display_prefix, new_key_id, new_secret};
use crate::store::{KeyPatch, KeyRecord, NewKey, Pepper, StoreError};

/// Longest accepted name, team, glob, scope, actor or node name, in bytes.
pub(crate) const MAX_TEXT: usize = 256;
const MAX_LIST: usize = 256;
/// Most globs in a key's `mcp_tools`.
pub(crate) const MAX_MCP_TOOLS: usize = 64;
/// Longest `mcp_tools` glob, in bytes: MCP allows tool names of up to 128 characters.
pub(crate) const MAX_MCP_TOOL_GLOB: usize = 128;
const MAX_METADATA_JSON: usize = 16 * 1024;

/// The expiry instant (unix milliseconds) of a key created or re-timed at `now_ms` with
/// lifetime `expires_in`: to the millisecond, so `2s` is two seconds from the request, not
/// from the start of its second.
pub(crate) fn expiry(expires_in: Option<&str>, now_ms: i64) -> Result<Option<i64>, StoreError> {
    expires_in
        .map(|text| {
            parse_duration(text)
                .map(|d| deadline_after(now_ms, d))
                .map_err(|e| StoreError::invalid("expires_in", e))
        })
        .transpose()
}

/// `now_ms` plus `span`, in unix milliseconds, saturating (a lifetime of centuries is
/// accepted and simply never reached).
pub(crate) fn deadline_after(now_ms: i64, span: std::time::Duration) -> i64 {
    now_ms.saturating_add(i64::try_from(span.as_millis()).unwrap_or(i64::MAX))
}

/// Applies a partial update to `record` at `now_ms` (unix milliseconds).
pub(crate) fn apply(
    record: &mut KeyRecord,
    patch: KeyPatch,
    now_ms: i64,
) -> Result<(), StoreError> {
    let KeyPatch {
        name,
        team,
        models,
        routes,
        scopes,
        mcp_tools,
        rps,
        rpm,
        tpm,
        max_concurrency,
        budget_usd,
        budget_tokens,
        budget_period,
        expires_in,
        metadata,
    } = patch;
    fn set<T>(slot: &mut T, value: Option<T>) {
        if let Some(value) = value {
            *slot = value;
        }
    }
    set(&mut record.name, name);
    set(&mut record.team, team);
    set(&mut record.models, models);
    set(&mut record.routes, routes);
    set(&mut record.scopes, scopes);
    set(&mut record.mcp_tools, mcp_tools);
    set(&mut record.rps, rps);
    set(&mut record.rpm, rpm);
    set(&mut record.tpm, tpm);
    set(&mut record.max_concurrency, max_concurrency);
    set(&mut record.budget_usd, budget_usd);
    set(&mut record.budget_tokens, budget_tokens);
    set(&mut record.budget_period, budget_period);
    set(&mut record.metadata, metadata);
    if let Some(expires_in) = expires_in {
        record.expires_at_ms = expiry(expires_in.as_deref(), now_ms)?;
    }
    Ok(())
}

/// Checks a record's fields before it is written; errors name the API field.
pub(crate) fn validate(r: &KeyRecord) -> Result<(), StoreError> {
    if r.name.trim().is_empty() {
        return Err(StoreError::invalid("name", "must not be empty"));
    }
    check_text("name", &r.name)?;
    check_text("team", &r.team)?;
    for (field, list) in [
        ("models", &r.models),
        ("routes", &r.routes),
        ("scopes", &r.scopes),
    ] {
        if list.len() > MAX_LIST {
            return Err(StoreError::invalid(
                field,
                format!("at most {MAX_LIST} entries"),
            ));
        }
        for item in list {
            if item.is_empty() {
                return Err(StoreError::invalid(field, "entries must not be empty"));
            }
            check_text(field, item)?;
        }
    }
    check_mcp_tools(&r.mcp_tools).map_err(|message| StoreError::invalid("mcp_tools", message))?;
    for (field, value) in [
        ("rpm", r.rpm),
        ("tpm", r.tpm),
        ("budget_tokens", r.budget_tokens),
    ] {
        // SQLite's INTEGER and PostgreSQL's BIGINT are both signed 64-bit.
        if value.is_some_and(|v| v > i64::MAX as u64) {
            return Err(StoreError::invalid(field, "is too large"));
        }
    }
    for (field, value) in [("rps", r.rps), ("budget_usd", r.budget_usd)] {
        if value.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err(StoreError::invalid(field, "must be a number >= 0"));
        }
    }
    if let Some(period) = &r.budget_period {
        if !matches!(period.as_str(), "day" | "month" | "total") {
            return Err(StoreError::invalid(
                "budget_period",
                "must be \"day\", \"month\" or \"total\"",
            ));
        }
    }
    if serde_json::to_string(&r.metadata).map_or(0, |s| s.len()) > MAX_METADATA_JSON {
        return Err(StoreError::invalid(
            "metadata",
            format!("at most {MAX_METADATA_JSON} bytes as JSON"),
        ));
    }
    Ok(())
}

/// Bounds a list of MCP tool globs (a key's or an access request's `mcp_tools`): at most
/// [`MAX_MCP_TOOLS`] entries, each 1 to [`MAX_MCP_TOOL_GLOB`] bytes of the characters MCP
/// tool names are made of (ASCII letters, digits, `_`, `-`, `.`, `/`) and the wildcards `*`
/// and `?`. A glob of other characters could never match an exposed name, so it is refused
/// rather than kept as a permission that silently grants nothing. Returns why not.
pub(crate) fn check_mcp_tools(globs: &[String]) -> Result<(), String> {
    if globs.len() > MAX_MCP_TOOLS {
        return Err(format!("at most {MAX_MCP_TOOLS} entries"));
    }
    for glob in globs {
        if glob.is_empty() {
            return Err("entries must not be empty".into());
        }
        if glob.len() > MAX_MCP_TOOL_GLOB {
            return Err(format!("entries must be at most {MAX_MCP_TOOL_GLOB} bytes"));
        }
        let allowed = |b: u8| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b'*' | b'?')
        };
        if !glob.bytes().all(allowed) {
            return Err(
                "entries may hold only ASCII letters, digits, '_', '-', '.', '/' and the \
                 wildcards '*' and '?'"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Bounds a short text (names end up in logs, headers and terminal output): at most
/// [`MAX_TEXT`] bytes and no control characters.
pub(crate) fn check_text(field: &'static str, text: &str) -> Result<(), StoreError> {
    if text.len() > MAX_TEXT {
        return Err(StoreError::invalid(
            field,
            format!("at most {MAX_TEXT} bytes"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(StoreError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// A new key from `new`, created at `now_ms` (unix milliseconds): its record (checked by [`validate`]) and its secret,
/// drawn at random and kept only as its HMAC under `pepper`. The secret is returned to be
/// shown once; neither store ever writes it.
pub(crate) fn issue(
    new: NewKey,
    pepper: &Pepper,
    now_ms: i64,
) -> Result<(KeyRecord, Zeroizing<String>), StoreError> {
    let now = now_ms.div_euclid(1000);
    let mut record = KeyRecord {
        id: new_key_id(),
        name: new.name,
        team: new.team,
        prefix: String::new(),
        models: new.models,
        routes: new.routes,
        scopes: new.scopes,
        mcp_tools: new.mcp_tools,
        rps: new.rps,
        rpm: new.rpm,
        tpm: new.tpm,
        max_concurrency: new.max_concurrency,
        budget_usd: new.budget_usd,
        budget_tokens: new.budget_tokens,
        budget_period: new.budget_period,
        metadata: new.metadata,
        created_at: now,
        updated_at: now,
        expires_at_ms: expiry(new.expires_in.as_deref(), now_ms)?,
        revoked_at: None,
        hash: [0; 32],
        previous_hash: None,
        previous_valid_until_ms: None,
        seq: 0,
    };
    validate(&record)?;
    let secret = new_secret();
    record.prefix = display_prefix(&secret);
    record.hash = pepper.hash(secret.as_bytes());
    Ok((record, secret))
}
