//! The audit log: one JSON line per admin action in `data_dir/audit.log`:
//! `{"time","actor","action","key_id","before","after"}`, where `before` and `after` are key
//! records in their serde form, which has no secret, hash or pepper in it.
//!
//! Lines are appended with `O_APPEND` in a single `write`, so the CLI and a running gateway can
//! log to the same file without interleaving lines (POSIX `write(2)` on a regular file opened
//! for appending positions and writes atomically).

use std::fs;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::keys::KeyRecord;
use super::unix_now;
use crate::clock::calendar::rfc3339;

/// File name of the audit log inside the data directory.
pub const AUDIT_FILE: &str = "audit.log";

/// One audit line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, as RFC 3339 UTC (`2026-11-30T05:59:14Z`).
    pub time: String,
    /// Who: `admin`, `cli:<user>`.
    pub actor: String,
    /// `create`, `update`, `rotate`, `revoke`, `reload`.
    pub action: String,
    pub key_id: Option<String>,
    pub before: Option<KeyRecord>,
    pub after: Option<KeyRecord>,
    /// The access request an `access.*` entry is about (absent on key entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Appends one entry for `action` by `actor` (creating the log, mode 0600, if needed).
pub fn append(
    data_dir: &Path,
    actor: &str,
    action: &str,
    key_id: Option<&str>,
    before: Option<&KeyRecord>,
    after: Option<&KeyRecord>,
) -> io::Result<()> {
    let entry = serde_json::json!({
        "time": rfc3339(unix_now()),
        "actor": actor,
        "action": action,
        "key_id": key_id,
        "before": before,
        "after": after,
    });
    write_line(data_dir, entry)
}

/// Appends `entry` as one line, in a single `write`.
fn write_line(data_dir: &Path, entry: serde_json::Value) -> io::Result<()> {
    let mut line = entry.to_string();
    line.push('\n');
    fs::create_dir_all(data_dir)?;
    let mut file = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(data_dir.join(AUDIT_FILE))?;
    file.write_all(line.as_bytes())
}

/// Appends one entry for a step of access request `request_id` (`access.request`,
/// `access.approve`, ...) by `actor`; `key_id` is the key the request minted, if any.
pub fn append_access(
    data_dir: &Path,
    actor: &str,
    action: &str,
    request_id: &str,
    key_id: Option<&str>,
) -> io::Result<()> {
    let entry = serde_json::json!({
        "time": rfc3339(unix_now()),
        "actor": actor,
        "action": action,
        "key_id": key_id,
        "before": null,
        "after": null,
        "request_id": request_id,
    });
    write_line(data_dir, entry)
}

/// Every entry in the log, oldest first; a missing log is empty. Lines that do not parse
/// (a torn write after a crash) are skipped with a warning.
pub fn read(data_dir: &Path) -> io::Result<Vec<AuditEntry>> {
    let file = match fs::File::open(data_dir.join(AUDIT_FILE)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries = Vec::new();
    for (number, line) in io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(entry) => entries.push(entry),
            Err(e) => log::warn!("{AUDIT_FILE} line {}: skipped: {e}", number + 1),
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ids::new_key_id;

    fn temp_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("cf-audit-{}", new_key_id()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn record() -> KeyRecord {
        KeyRecord {
            id: "key_aaaaaaaaaaaaaaaaaaaa".into(),
            name: "ci".into(),
            team: "platform".into(),
            prefix: "cf_AbCdEfGhI".into(),
            models: vec!["gpt-*".into()],
            routes: Vec::new(),
            scopes: vec!["chat".into()],
            mcp_tools: Vec::new(),
            rps: Some(5.0),
            rpm: None,
            tpm: None,
            max_concurrency: None,
            budget_usd: None,
            budget_tokens: None,
            budget_period: None,
            metadata: serde_json::Map::new(),
            created_at: 1_700_000_000,
            updated_at: 1_700_000_000,
            expires_at_ms: None,
            revoked_at: None,
            hash: [0x5a; 32],
            previous_hash: Some([0x6b; 32]),
            previous_valid_until_ms: Some(1_700_003_600_000),
            seq: 7,
        }
    }

    #[test]
    fn append_writes_one_json_line_per_action() {
        let dir = temp_dir();
        let before = record();
        let mut after = record();
        after.revoked_at = Some(1_700_000_100);
        append(
            &dir,
            "cli:alice",
            "create",
            Some(&before.id),
            None,
            Some(&before),
        )
        .unwrap();
        append(
            &dir,
            "admin",
            "revoke",
            Some(&before.id),
            Some(&before),
            Some(&after),
        )
        .unwrap();
        append(&dir, "admin", "reload", None, None, None).unwrap();

        let text = fs::read_to_string(dir.join(AUDIT_FILE)).unwrap();
        assert_eq!(text.lines().count(), 3);
        let second: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(second["actor"], "admin");
        assert_eq!(second["action"], "revoke");
        assert_eq!(second["key_id"], "key_aaaaaaaaaaaaaaaaaaaa");
        assert_eq!(second["before"]["revoked_at"], serde_json::Value::Null);
        assert_eq!(second["after"]["revoked_at"], 1_700_000_100);
        assert!(second["time"].as_str().unwrap().ends_with('Z'));

        let entries = read(&dir).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].action, "create");
        assert_eq!(entries[0].after.as_ref().unwrap().name, "ci");
        assert_eq!(entries[2].key_id, None);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn audit_lines_hold_no_hash() {
        let dir = temp_dir();
        let r = record();
        append(&dir, "admin", "rotate", Some(&r.id), Some(&r), Some(&r)).unwrap();
        let text = fs::read_to_string(dir.join(AUDIT_FILE)).unwrap();
        assert!(!text.contains("\"hash\""));
        assert!(!text.contains("previous_hash"));
        assert!(!text.contains("5a5a5a") && !text.contains("90,90,90"));
        assert!(!text.contains("\"seq\""));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_log_reads_as_empty() {
        let dir = temp_dir();
        assert!(read(&dir).unwrap().is_empty());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn torn_line_is_skipped() {
        let dir = temp_dir();
        append(&dir, "admin", "reload", None, None, None).unwrap();
        fs::OpenOptions::new()
            .append(true)
            .open(dir.join(AUDIT_FILE))
            .unwrap()
            .write_all(b"{\"time\":\"20")
            .unwrap();
        assert_eq!(read(&dir).unwrap().len(), 1);
        fs::remove_dir_all(dir).unwrap();
    }
}
