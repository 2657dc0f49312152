//! `credentialflow keys ...` and `credentialflow audit`: the key life cycle and the audit log,
//! worked directly on the store in the config's `server.data_dir`. A running gateway sees the
//! changes through its credential cache, within a second.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::clock::{calendar, parse_duration};
use crate::config;
use crate::serve::{EXIT_BAD_INPUT, EXIT_RUNTIME};
use crate::store::{self, KeyPatch, KeyRecord, NewKey, StoreError};

/// `credentialflow keys`.
#[derive(Args, Debug)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
    /// Config file whose `server.data_dir` holds the store (default: ./credentialflow.toml,
    /// else the built-in default).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Issue a key; its secret is printed once.
    Create {
        /// Name of the key (unique among keys not revoked).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        fields: KeyFlags,
    },
    /// List every key, revoked ones included.
    List,
    /// Show one key.
    Show {
        /// Key id (`key_...`).
        id: String,
    },
    /// Change a key's fields; flags not given stay as they are.
    Update {
        /// Key id (`key_...`).
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        fields: KeyFlags,
    },
    /// Revoke a key; it stays listed.
    Revoke {
        /// Key id (`key_...`).
        id: String,
    },
    /// Give a key a new secret, printed once; the old one works until the grace ends.
    Rotate {
        /// Key id (`key_...`).
        id: String,
        /// How long the old secret keeps working (`0s`, `90m`, `1h`, `7d`).
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        grace: Duration,
    },
}

/// A limit flag's value: a number, or `none` to remove the limit.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Setting<T> {
    Set(T),
    Clear,
}

impl<T> Setting<T> {
    fn into_option(self) -> Option<T> {
        match self {
            Setting::Set(v) => Some(v),
            Setting::Clear => None,
        }
    }
}

fn setting<T: FromStr>(text: &str) -> Result<Setting<T>, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Setting::Clear);
    }
    text.parse()
        .map(Setting::Set)
        .map_err(|_| format!("{text:?} is not a valid number (or \"none\")"))
}

/// Key fields shared by `create` and `update`. List flags take comma-separated values; an
/// empty value (`--routes ""`) means none (for models and routes: all allowed).
#[derive(Args, Debug, Default)]
struct KeyFlags {
    /// Team the key belongs to.
    #[arg(long)]
    team: Option<String>,
    /// Model-name globs the key may use (empty = all).
    #[arg(long, value_delimiter = ',')]
    models: Option<Vec<String>>,
    /// Route-name globs the key may use (empty = all).
    #[arg(long, value_delimiter = ',')]
    routes: Option<Vec<String>>,
    /// Scopes granted to the key.
    #[arg(long, value_delimiter = ',')]
    scopes: Option<Vec<String>>,
    /// Globs of the MCP tools the key may list and call, as exposed (`github__search_*`,
    /// `fs__read_?`; empty = all).
    #[arg(long, value_delimiter = ',')]
    mcp_tools: Option<Vec<String>>,
    /// Requests per second (`none` removes the limit).
    #[arg(long, value_parser = setting::<f64>)]
    rps: Option<Setting<f64>>,
    /// Requests per minute.
    #[arg(long, value_parser = setting::<u64>)]
    rpm: Option<Setting<u64>>,
    /// Tokens per minute.
    #[arg(long, value_parser = setting::<u64>)]
    tpm: Option<Setting<u64>>,
    /// Requests in flight at once.
    #[arg(long, value_parser = setting::<u32>)]
    max_concurrency: Option<Setting<u32>>,
    /// Spend limit in USD per budget period.
    #[arg(long, value_parser = setting::<f64>)]
    budget_usd: Option<Setting<f64>>,
    /// Token limit per budget period.
    #[arg(long, value_parser = setting::<u64>)]
    budget_tokens: Option<Setting<u64>>,
    /// Budget period: day, month or total (`none` removes it).
    #[arg(long, value_parser = ["day", "month", "total", "none"])]
    budget_period: Option<String>,
    /// Lifetime from now (`30d`, `12h`, `90m`, `3600s`); `never` removes the expiry.
    #[arg(long)]
    expires: Option<String>,
    /// Metadata as a JSON object (replaces the whole object).
    #[arg(long, value_parser = parse_metadata)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

fn parse_metadata(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err("must be a JSON object, like '{\"owner\":\"alice\"}'".into()),
    }
}

fn list(values: Vec<String>) -> Vec<String> {
    values.into_iter().filter(|v| !v.is_empty()).collect()
}

impl KeyFlags {
    fn into_patch(self, name: Option<String>) -> KeyPatch {
        let period = self.budget_period.map(|p| (p != "none").then_some(p));
        let expires = self
            .expires
            .map(|e| (!e.eq_ignore_ascii_case("never")).then_some(e));
        KeyPatch {
            name,
            team: self.team,
            models: self.models.map(list),
            routes: self.routes.map(list),
            scopes: self.scopes.map(list),
            mcp_tools: self.mcp_tools.map(list),
            rps: self.rps.map(Setting::into_option),
            rpm: self.rpm.map(Setting::into_option),
            tpm: self.tpm.map(Setting::into_option),
            max_concurrency: self.max_concurrency.map(Setting::into_option),
            budget_usd: self.budget_usd.map(Setting::into_option),
            budget_tokens: self.budget_tokens.map(Setting::into_option),
            budget_period: period,
            expires_in: expires,
            metadata: self.metadata,
        }
    }

    fn into_new_key(self, name: String) -> NewKey {
        let patch = self.into_patch(Some(name.clone()));
        NewKey::from_patch(name, patch)
    }
}

/// `credentialflow audit`.
#[derive(Args, Debug)]
pub(crate) struct AuditArgs {
    /// Config file whose `server.data_dir` holds the audit log.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the entries as JSON lines.
    #[arg(long)]
    json: bool,
}

/// A command's failure: what to print on stderr and the exit code.
struct Failure {
    code: i32,
    message: String,
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let code = if e.is_bad_input() {
            EXIT_BAD_INPUT
        } else {
            EXIT_RUNTIME
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

fn runtime(e: io::Error) -> Failure {
    Failure {
        code: EXIT_RUNTIME,
        message: e.to_string(),
    }
}

/// Runs `keys ...`, printing to stdout; returns the exit code.
pub(crate) fn run_keys(args: KeysArgs) -> i32 {
    report(run_keys_to(args, &mut io::stdout().lock()))
}

/// Runs `audit`, printing to stdout; returns the exit code.
pub(crate) fn run_audit(args: AuditArgs) -> i32 {
    report(run_audit_to(args, &mut io::stdout().lock()))
}

fn report(result: Result<(), Failure>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            failure.code
        }
    }
}

fn run_keys_to(args: KeysArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let settings = store_settings(args.config.as_deref())?;
    let result = keys_command(args, &settings, out);
    // The store is closed by now: SQLite has removed or finished its -wal and -shm files.
    hand_over_new_files(&settings);
    result
}

/// One `keys` command on the store `settings` name; the store is closed on return.
fn keys_command(
    args: KeysArgs,
    settings: &config::StoreSettings,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let mut store = store::open(settings)?;
    let actor = actor();
    let json = args.json;
    match args.command {
        KeysCommand::Create { name, fields } => {
            let (record, secret) = store.create(fields.into_new_key(name), &actor)?;
            print_secret(out, &record, &secret, json)
        }
        KeysCommand::List => {
            let records = store.list()?;
            if json {
                print_json(out, &serde_json::json!(records))
            } else {
                print_table(out, &records)
            }
        }
        KeysCommand::Show { id } => {
            let record = store.get(&id)?.ok_or(StoreError::NotFound(id))?;
            print_record(out, &record, json)
        }
        KeysCommand::Update { id, name, fields } => {
            let record = store.update(&id, fields.into_patch(name), &actor)?;
            print_record(out, &record, json)
        }
        KeysCommand::Revoke { id } => {
            let record = store.revoke(&id, &actor)?;
            if json {
                print_json(out, &serde_json::json!(record))
            } else {
                writeln!(out, "revoked: {}", record.id).map_err(runtime)
            }
        }
        KeysCommand::Rotate { id, grace } => {
            let (record, secret) = store.rotate(&id, grace, &actor)?;
            print_secret(out, &record, &secret, json)?;
            if !json {
                if let Some(until) = record.previous_valid_until_ms.filter(|_| !grace.is_zero()) {
                    writeln!(
                        out,
                        "previous key valid until: {}",
                        calendar::rfc3339(until.div_euclid(1000))
                    )
                    .map_err(runtime)?;
                }
            }
            Ok(())
        }
    }
}

fn run_audit_to(args: AuditArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let settings = store_settings(args.config.as_deref())?;
    let entries = store::open(&settings).and_then(|mut store| store.read_audit());
    hand_over_new_files(&settings);
    let entries = entries?;
    for entry in entries {
        let line = if args.json {
            serde_json::to_string(&entry).expect("audit entries serialize")
        } else {
            let key = entry.key_id.as_deref().unwrap_or("-");
            let changed = changed_fields(entry.before.as_ref(), entry.after.as_ref());
            let mut detail = if changed.is_empty() {
                String::new()
            } else {
                format!(" changed: {}", changed.join(", "))
            };
            if let Some(request) = &entry.request_id {
                detail.push_str(&format!(" request: {request}"));
            }
            format!(
                "{} {} {} {key}{detail}",
                entry.time, entry.actor, entry.action
            )
        };
        writeln!(out, "{line}").map_err(runtime)?;
    }
    Ok(())
}

/// Names of the fields that differ between two versions of a record.
fn changed_fields(before: Option<&KeyRecord>, after: Option<&KeyRecord>) -> Vec<String> {
    let (Some(before), Some(after)) = (before, after) else {
        return Vec::new();
    };
    let (serde_json::Value::Object(b), serde_json::Value::Object(a)) =
        (serde_json::json!(before), serde_json::json!(after))
    else {
        return Vec::new();
    };
    let mut names: Vec<String> = a
        .iter()
        .filter(|(name, value)| b.get(*name) != Some(value) && name.as_str() != "updated_at")
        .map(|(name, _)| name.clone())
        .chain(b.keys().filter(|name| !a.contains_key(*name)).cloned())
        .collect();
    names.sort();
    names
}

/// `server.data_dir` and `[store]` of the config at `config_path` (or the default config),
/// for the other commands that read the store; on failure, the exit code after printing
/// the error.
pub(super) fn store_settings_or_exit(
    config_path: Option<&Path>,
) -> Result<config::StoreSettings, i32> {
    store_settings(config_path).map_err(|failure| report(Err(failure)))
}

/// `server.data_dir` and `[store]` of `--config`, of `./credentialflow.toml`, or of the
/// built-in default. Only these are read (see [`config::load_store`]): the store commands
/// must work in a shell that has none of the gateway's other secrets, as when an operator
/// revokes a key in an emergency.
///
/// The store found is named on stderr ([`store_line`]), so an operator sees which store a
/// key went into. A SQLite store whose `data_dir` does not exist is refused rather than
/// created: the gateway makes its own on `serve`, and a new empty store somewhere else
/// would print keys the gateway never sees.
fn store_settings(config_path: Option<&Path>) -> Result<config::StoreSettings, Failure> {
    let path = config_path
        .map(Path::to_path_buf)
        .or_else(config::resolve_default_path);
    let loaded = match &path {
        Some(path) => config::load_store(path),
        None => config::parse_store(config::BUILTIN_DEFAULT_TOML, Path::new(".")),
    };
    let mut settings = loaded.map_err(|errors| Failure {
        code: EXIT_BAD_INPUT,
        // One line, as every command error is.
        message: errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    if let Ok(absolute) = std::path::absolute(&settings.data_dir) {
        settings.data_dir = absolute;
    }
    if settings.store.backend == config::StoreBackend::Sqlite && !settings.data_dir.is_dir() {
        let config = path.map_or_else(
            || "the built-in default config".to_owned(),
            |p| p.display().to_string(),
        );
        return Err(Failure {
            code: EXIT_BAD_INPUT,
            message: format!(
                "server.data_dir {} (from {config}) does not exist: no store there to work on \
                 (the gateway creates its data_dir on its first `serve`; give the gateway's \
                 own config with --config)",
                settings.data_dir.display()
            ),
        });
    }
    eprintln!("{}", store_line(&settings));
    Ok(settings)
}

/// `store: sqlite at /var/lib/credentialflow/data` or `store: postgres (edge-a)`: which
/// store a command used, never the PostgreSQL URL (it may hold a password).
fn store_line(settings: &config::StoreSettings) -> String {
    match settings.store.backend {
        config::StoreBackend::Sqlite => {
            format!("store: sqlite at {}", settings.data_dir.display())
        }
        config::StoreBackend::Postgres => format!("store: postgres ({})", settings.store.node),
    }
}

/// After a store command run as root, the files it created in `data_dir` go to the
/// directory's owner (see [`store::ownership`]), so the gateway's service user can still
/// open them. Failing to do so is reported, not fatal: the command itself succeeded.
pub(super) fn hand_over_new_files(settings: &config::StoreSettings) {
    if !settings.data_dir.is_dir() {
        return;
    }
    if let Err(e) = store::ownership::give_to_directory_owner(&settings.data_dir) {
        eprintln!(
            "warning: could not give the files in {} to its owner: {e}",
            settings.data_dir.display()
        );
    }
}

/// Who the audit log records for CLI actions: `cli:<$USER>`, else `cli:<uid>`.
pub(super) fn actor() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty() && u.chars().all(|c| c.is_ascii_graphic()))
        // SAFETY: getuid has no preconditions and cannot fail (POSIX).
        .unwrap_or_else(|| unsafe { libc::getuid() }.to_string());
    format!("cli:{user}")
}

fn print_secret(
    out: &mut dyn Write,
    record: &KeyRecord,
    secret: &str,
    json: bool,
) -> Result<(), Failure> {
    if json {
        print_json(out, &serde_json::json!({ "id": record.id, "key": secret }))
    } else {
        writeln!(out, "id: {}\nkey: {secret}", record.id).map_err(runtime)
    }
}

fn print_record(out: &mut dyn Write, record: &KeyRecord, json: bool) -> Result<(), Failure> {
    let value = serde_json::json!(record);
    let text = if json {
        value.to_string()
    } else {
        serde_json::to_string_pretty(&value).expect("records serialize")
    };
    writeln!(out, "{text}").map_err(runtime)
}

fn print_json(out: &mut dyn Write, value: &serde_json::Value) -> Result<(), Failure> {
    writeln!(out, "{value}").map_err(runtime)
}

fn print_table(out: &mut dyn Write, records: &[KeyRecord]) -> Result<(), Failure> {
    let now_ms = crate::clock::unix_now_ms();
    let rows: Vec<[String; 6]> = records
        .iter()
        .map(|r| {
            let status = if r.revoked_at.is_some() {
                "revoked"
            } else if !r.is_active_at_ms(now_ms) {
                "expired"
            } else {
                "active"
            };
            [
                r.id.clone(),
                r.name.clone(),
                r.team.clone(),
                r.prefix.clone(),
                status.to_owned(),
                r.expires_at_ms.map_or_else(
                    || "-".to_owned(),
                    |ms| calendar::rfc3339(ms.div_euclid(1000)),
                ),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "TEAM", "PREFIX", "STATUS", "EXPIRES"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end()).map_err(runtime)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
