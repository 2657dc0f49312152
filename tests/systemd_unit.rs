//! The shipped systemd unit (`tuning/credentialflow.service`) and example config
//! (`tuning/credentialflow.toml`) work together: under `ProtectSystem=strict` only the
//! unit's `ReadWritePaths=` and `StateDirectory=` can be written, and every path the config
//! writes (`data_dir`, `access_log`), resolved as the gateway resolves it (relative paths
//! against the config file's folder), lies under one of them. `check` accepts the config,
//! and `systemd-analyze verify` accepts the unit.

mod common;

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use common::TempDir;

const UNIT: &str = include_str!("../tuning/credentialflow.service");
const CONFIG: &str = include_str!("../tuning/credentialflow.toml");

/// The values of `key=` lines in the unit's `[Service]` section, in order.
fn service_values(key: &str) -> Vec<String> {
    let mut in_service = false;
    let mut values = Vec::new();
    for line in UNIT.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        if !in_service || line.starts_with('#') {
            continue;
        }
        if let Some((name, value)) = line.split_once('=') {
            if name.trim() == key {
                values.push(value.trim().to_string());
            }
        }
    }
    values
}

/// The folders the service may write: `ReadWritePaths=` (a leading `-` only makes a
/// missing path no error) and `/var/lib/NAME` for each `StateDirectory=NAME`.
fn writable_folders() -> Vec<PathBuf> {
    let mut folders: Vec<PathBuf> = service_values("ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .map(|p| PathBuf::from(p.trim_start_matches('-')))
        .collect();
    for names in service_values("StateDirectory") {
        for name in names.split_whitespace() {
            folders.push(Path::new("/var/lib").join(name));
        }
    }
    folders
}

/// The `--config FILE` the unit's `ExecStart=` serves.
fn served_config_path() -> PathBuf {
    let exec = service_values("ExecStart");
    let words: Vec<&str> = exec[0].split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "--config")
        .expect("ExecStart gives --config");
    PathBuf::from(words[at + 1])
}

/// `path` as the gateway resolves it: relative to the config file's folder, `..` folded.
fn resolved(config_dir: &Path, path: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for component in config_dir.join(path).components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every path the config makes the gateway write, resolved.
fn written_paths(config_dir: &Path) -> Vec<(String, PathBuf)> {
    let doc: toml::Table = toml::from_str(CONFIG).expect("example config is TOML");
    let server = doc["server"].as_table().expect("[server]");
    let mut paths = Vec::new();
    let data_dir = server
        .get("data_dir")
        .and_then(|v| v.as_str())
        .unwrap_or("./data");
    paths.push((
        "server.data_dir".to_string(),
        resolved(config_dir, data_dir),
    ));
    // The default access log is `./data/access.log`; "" is off and "-" is stdout.
    let access_log = server
        .get("access_log")
        .and_then(|v| v.as_str())
        .unwrap_or("./data/access.log");
    if !access_log.is_empty() && access_log != "-" {
        paths.push((
            "server.access_log".to_string(),
            resolved(config_dir, access_log),
        ));
    }
    paths
}

#[test]
fn every_path_the_config_writes_is_writable_under_the_unit() {
    let folders = writable_folders();
    assert!(!folders.is_empty(), "the unit makes nothing writable");
    assert!(
        service_values("ProtectSystem").contains(&"strict".to_string()),
        "the unit is expected to protect the system strictly"
    );
    let config_path = served_config_path();
    let config_dir = config_path.parent().expect("config folder");
    for (key, path) in written_paths(config_dir) {
        assert!(
            folders.iter().any(|folder| path.starts_with(folder)),
            "{key} = {} is not under any of {folders:?}",
            path.display()
        );
    }
    // The working directory is the state folder, so the gateway's relative paths (none in
    // the shipped config) would not be what decides.
    assert_eq!(
        service_values("WorkingDirectory"),
        ["/var/lib/credentialflow"]
    );
}

#[test]
fn a_relative_data_dir_would_land_in_the_read_only_config_folder() {
    // What the check above guards against: `./data` in /etc/credentialflow/credentialflow.toml.
    let folders = writable_folders();
    let path = resolved(Path::new("/etc/credentialflow"), "./data");
    assert_eq!(path, Path::new("/etc/credentialflow/data"));
    assert!(!folders.iter().any(|folder| path.starts_with(folder)));
}

#[test]
fn check_accepts_the_example_config() {
    let dir = TempDir::new("systemd-config");
    let path = dir.join("credentialflow.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_credentialflow"))
        .args(["check", "--config"])
        .arg(&path)
        .env("CF_ADMIN_TOKEN", "systemd-test-admin-token-0123456789")
        .output()
        .expect("run check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    // scripts/test.sh installs it (Debian's `systemd`): a missing tool fails, it does not skip.
    let probe = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/test.sh installs it)");
    assert!(probe.status.success());
    // The unit names the installed binary; verify checks that it is executable, so point
    // it at the one just built.
    let dir = TempDir::new("systemd-unit");
    let unit = dir.join("credentialflow.service");
    let text = UNIT.replace(
        "/usr/local/bin/credentialflow",
        env!("CARGO_BIN_EXE_credentialflow"),
    );
    std::fs::write(&unit, text).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        !stderr.contains("credentialflow.service"),
        "systemd-analyze found problems: {stderr}"
    );
}
