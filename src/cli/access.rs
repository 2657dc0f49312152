//! `credentialflow access request|list|approve|deny|claim`: just-in-time access worked
//! directly on the store, as `keys` commands are, through the same steps as the admin API
//! (`crate::access::flow`). The CLI acts as the operator running it (`cli:<user>`), so its
//! requests may name any team. Of the config it reads the store settings and
//! `[[access_policy]]`, nothing else (no secret needs resolving), so a request the CLI takes
//! is judged by the same policies as one the admin API takes: approved at once inside a
//! team's `auto_approve` envelope, refused beyond its `max_ttl`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::keys::{actor, hand_over_new_files, store_settings_or_exit};
use crate::access::flow::{self, AccessError, Requester};
use crate::access::{AccessRequest, AccessStatus, KeyLimits, NewAccessRequest};
use crate::clock::{calendar, unix_now_ms};
use crate::config::{self, AccessPolicyConfig};
use crate::serve::{EXIT_BAD_INPUT, EXIT_RUNTIME};
use crate::store;

/// `credentialflow access`.
#[derive(Args, Debug)]
pub(crate) struct AccessArgs {
    #[command(subcommand)]
    command: AccessCommand,
    /// Config file whose `server.data_dir` (or `[store]`) holds the store.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum AccessCommand {
    /// Ask for a key that expires `--ttl` after approval; prints the claim token once.
    Request(Box<RequestFlags>),
    /// List access requests, oldest first (unclaimed approvals past their ttl are expired).
    List {
        /// Only requests in this status.
        #[arg(long, value_parser = ["pending", "approved", "denied", "claimed", "expired"])]
        status: Option<String>,
    },
    /// Approve a pending request: its key is minted and waits to be claimed.
    Approve {
        /// Request id (`req_...`).
        id: String,
        /// A note kept with the decision.
        #[arg(long)]
        note: Option<String>,
    },
    /// Deny a pending request.
    Deny {
        /// Request id (`req_...`).
        id: String,
        /// A note kept with the decision.
        #[arg(long)]
        note: Option<String>,
    },
    /// Claim an approved request's key with its claim token; the key is printed once.
    Claim {
        /// Request id (`req_...`).
        id: String,
        /// The claim token printed when the request was made.
        #[arg(long)]
        claim_token: String,
    },
}

/// What `access request` asks for.
#[derive(Args, Debug)]
struct RequestFlags {
    /// Name of the key to mint.
    #[arg(long)]
    name: String,
    /// Team the key belongs to.
    #[arg(long, default_value = "")]
    team: String,
    /// Model-name globs (comma-separated; none = all).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// Route-name globs (comma-separated; none = all).
    #[arg(long, value_delimiter = ',')]
    routes: Vec<String>,
    /// Scopes for the key (comma-separated).
    #[arg(long, value_delimiter = ',')]
    scopes: Vec<String>,
    /// Globs of the MCP tools the key may use, as exposed (`github__search_*`;
    /// comma-separated; none = all). A request naming any waits for an approver.
    #[arg(long, value_delimiter = ',')]
    mcp_tools: Vec<String>,
    /// How long the key lives after approval (`30m`, `8h`; at most `90d`).
    #[arg(long)]
    ttl: String,
    /// Why the access is needed.
    #[arg(long)]
    reason: String,
    /// Requests per second.
    #[arg(long)]
    rps: Option<f64>,
    /// Requests per minute.
    #[arg(long)]
    rpm: Option<u64>,
    /// Tokens per minute.
    #[arg(long)]
    tpm: Option<u64>,
    /// Requests in flight at once.
    #[arg(long)]
    max_concurrency: Option<u32>,
    /// Spend limit in USD per budget period.
    #[arg(long)]
    budget_usd: Option<f64>,
    /// Token limit per budget period.
    #[arg(long)]
    budget_tokens: Option<u64>,
    /// Budget period.
    #[arg(long, value_parser = ["day", "month", "total"])]
    budget_period: Option<String>,
}

impl RequestFlags {
    fn into_request(self) -> NewAccessRequest {
        let list = |v: Vec<String>| v.into_iter().filter(|s| !s.is_empty()).collect();
        NewAccessRequest {
            name: self.name,
            team: self.team,
            models: list(self.models),
            routes: list(self.routes),
            scopes: list(self.scopes),
            mcp_tools: list(self.mcp_tools),
            limits: KeyLimits {
                rps: self.rps,
                rpm: self.rpm,
                tpm: self.tpm,
                max_concurrency: self.max_concurrency,
                budget_usd: self.budget_usd,
                budget_tokens: self.budget_tokens,
                budget_period: self.budget_period,
            },
            ttl: self.ttl,
            reason: self.reason,
        }
    }
}

/// Runs `access ...`, printing to stdout; returns the exit code.
pub(crate) fn run_access(args: AccessArgs) -> i32 {
    let settings = match store_settings_or_exit(args.config.as_deref()) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let policies = match access_policies(args.config.as_deref()) {
        Ok(policies) => policies,
        Err(message) => {
            eprintln!("error: {message}");
            return EXIT_BAD_INPUT;
        }
    };
    let result = store::open(&settings)
        .map_err(|e| {
            let code = if e.is_bad_input() {
                EXIT_BAD_INPUT
            } else {
                EXIT_RUNTIME
            };
            (code, e.to_string())
        })
        .and_then(|mut store| {
            let json = args.json;
            let out = &mut io::stdout().lock();
            command(&mut *store, args.command, &policies, json, out)
        });
    hand_over_new_files(&settings);
    match result {
        Ok(()) => 0,
        Err((code, message)) => {
            eprintln!("error: {message}");
            code
        }
    }
}

/// `[[access_policy]]` of `--config`, or of `./credentialflow.toml` (the file the store
/// settings came from); none for the built-in default. Only that array is read; a policy
/// whose durations do not parse refuses its team's requests (see `access::policy`), and
/// `credentialflow check` names it.
fn access_policies(config_path: Option<&Path>) -> Result<Vec<AccessPolicyConfig>, String> {
    /// The one part of a config this command judges requests by; other sections are left
    /// unread.
    #[derive(serde::Deserialize)]
    struct Policies {
        #[serde(default)]
        access_policy: Vec<AccessPolicyConfig>,
    }
    let Some(path) = config_path
        .map(Path::to_path_buf)
        .or_else(config::resolve_default_path)
    else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str::<Policies>(&text)
        .map(|p| p.access_policy)
        // The message alone: the parser's excerpt of the file could quote any line of it.
        .map_err(|e| format!("{}: access_policy: {}", path.display(), e.message()))
}

/// One `access` command on an open store; requests are judged by `policies`.
fn command(
    store: &mut dyn store::KeyBackend,
    command: AccessCommand,
    policies: &[AccessPolicyConfig],
    json: bool,
    out: &mut dyn Write,
) -> Result<(), (i32, String)> {
    let now_ms = unix_now_ms();
    let actor = actor();
    let text = match command {
        AccessCommand::Request(flags) => {
            let requester = Requester::Operator(actor);
            let submitted = flow::submit(store, flags.into_request(), &requester, policies, now_ms)
                .map_err(failure)?;
            let request = &submitted.request;
            if json {
                let mut answer = serde_json::json!({
                    "id": request.id,
                    "status": request.status,
                    "claim_token": submitted.claim_token.expose(),
                });
                // As the admin API answers a request a policy approved at once.
                if request.status == AccessStatus::Approved {
                    answer["key_id"] = serde_json::json!(request.key_id);
                    answer["expires_at"] =
                        serde_json::json!(request.expires_at_ms.map(|ms| ms.div_euclid(1000)));
                }
                answer.to_string()
            } else {
                format!(
                    "id: {}\nstatus: {}\nclaim_token: {}",
                    request.id,
                    request.status.as_str(),
                    submitted.claim_token.expose()
                )
            }
        }
        AccessCommand::List { status } => {
            let status = status.as_deref().and_then(AccessStatus::parse);
            let requests = flow::list(store, status, now_ms).map_err(failure)?;
            if json {
                serde_json::json!(requests).to_string()
            } else {
                table(&requests)
            }
        }
        AccessCommand::Approve { id, note } => {
            let (request, key) =
                flow::approve(store, &id, &actor, note, now_ms).map_err(failure)?;
            if json {
                serde_json::json!(request).to_string()
            } else {
                format!(
                    "approved: {}\nkey_id: {}\nexpires_at: {}",
                    request.id,
                    key.id,
                    time(request.expires_at_ms)
                )
            }
        }
        AccessCommand::Deny { id, note } => {
            let request = flow::deny(store, &id, &actor, note, now_ms).map_err(failure)?;
            if json {
                serde_json::json!(request).to_string()
            } else {
                format!("denied: {}", request.id)
            }
        }
        AccessCommand::Claim { id, claim_token } => {
            let (_, key, secret) =
                flow::claim(store, &id, &claim_token, now_ms).map_err(failure)?;
            if json {
                serde_json::json!({
                    "id": key.id,
                    "key": secret,
                    "expires_at": key.expires_at_ms.map(|ms| ms.div_euclid(1000)),
                })
                .to_string()
            } else {
                format!(
                    "id: {}\nkey: {secret}\nexpires_at: {}",
                    key.id,
                    time(key.expires_at_ms)
                )
            }
        }
    };
    writeln!(out, "{text}").map_err(|e| (EXIT_RUNTIME, e.to_string()))
}

/// The exit code and line of a refused step: the caller's fault exits 1, the machine's 2.
fn failure(e: AccessError) -> (i32, String) {
    let code = match &e {
        AccessError::Store(inner) if !inner.is_bad_input() => EXIT_RUNTIME,
        _ => EXIT_BAD_INPUT,
    };
    (code, e.to_string())
}

fn time(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| calendar::rfc3339(ms.div_euclid(1000)),
    )
}

/// The requests in the column style of `keys list`.
fn table(requests: &[AccessRequest]) -> String {
    let rows: Vec<[String; 7]> = requests
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.status.as_str().to_owned(),
                r.name.clone(),
                r.team.clone(),
                r.ttl.clone(),
                r.requester.clone(),
                r.key_id.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    let header = ["ID", "STATUS", "NAME", "TEAM", "TTL", "REQUESTER", "KEY"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    std::iter::once(&header)
        .chain(&rows)
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}
