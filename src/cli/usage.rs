//! `credentialflow usage`: the spend report from the usage ledger the config's `[store]`
//! names (the embedded one in `server.data_dir`, or on PostgreSQL the whole fleet's), as an
//! aligned table or (`--json`) the same array as `GET /admin/usage`. Only `[store]` and
//! `data_dir` are read from the config: the report needs none of the gateway's other secrets.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;

use crate::config::StoreSettings;
use crate::serve::{EXIT_BAD_INPUT, EXIT_RUNTIME};
use crate::store::usage::{self, GroupBy, UsageRow};

/// `credentialflow usage`.
#[derive(Args, Debug)]
pub(crate) struct UsageArgs {
    /// Config file whose `[store]` (and `server.data_dir`) names the ledger (default:
    /// ./credentialflow.toml, else the built-in default).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// What to add up by: key, team or model.
    #[arg(long, default_value = "key")]
    group_by: String,
    /// How far back: a duration (24h, 30m, 7d) or an RFC 3339 time; default all time.
    #[arg(long)]
    since: Option<String>,
    /// Print the JSON array the admin API answers.
    #[arg(long)]
    json: bool,
}

/// Runs `usage` on the ledger `settings` name, printing to stdout; returns the exit code
/// (1 for a bad `--group-by` or `--since`, 2 when the ledger cannot be reached or read).
pub(crate) fn run_usage(args: UsageArgs, settings: &StoreSettings) -> i32 {
    let now_ms = crate::clock::unix_now_ms();
    match run_usage_to(&args, settings, now_ms, &mut io::stdout().lock()) {
        Ok(()) => 0,
        Err((code, message)) => {
            eprintln!("error: {message}");
            code
        }
    }
}

/// The command's work, writing to `out`; a failure is its exit code and one line.
fn run_usage_to(
    args: &UsageArgs,
    settings: &StoreSettings,
    now_ms: i64,
    out: &mut dyn Write,
) -> Result<(), (i32, String)> {
    let group_by: GroupBy = args
        .group_by
        .parse()
        .map_err(|e| (EXIT_BAD_INPUT, format!("--group-by: {e}")))?;
    let since_ms = match &args.since {
        Some(text) => usage::parse_since(text, now_ms)
            .map_err(|e| (EXIT_BAD_INPUT, format!("--since: {e}")))?,
        None => 0,
    };
    // Ledger errors never hold the URL's password (see `store::postgres`).
    let rows = usage::report_for(settings, group_by, since_ms)
        .map_err(|e| (EXIT_RUNTIME, e.to_string()))?;
    let written = if args.json {
        let json = serde_json::to_string(&rows).expect("usage rows serialize");
        writeln!(out, "{json}")
    } else {
        print_table(out, &rows)
    };
    written.map_err(|e| (EXIT_RUNTIME, e.to_string()))
}

/// The rows under a header, columns aligned: the group left, the numbers right. A group
/// with no name (keys without a team) shows as `-`.
fn print_table(out: &mut dyn Write, rows: &[UsageRow]) -> io::Result<()> {
    let header = [
        "GROUP",
        "REQUESTS",
        "PROMPT_TOKENS",
        "COMPLETION_TOKENS",
        "COST_USD",
    ]
    .map(str::to_owned);
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|row| {
            let group = if row.group.is_empty() {
                "-"
            } else {
                &row.group
            };
            [
                group.to_owned(),
                row.requests.to_string(),
                row.prompt_tokens.to_string(),
                row.completion_tokens.to_string(),
                format!("{:.6}", row.cost_usd),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.len());
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for line in std::iter::once(&header).chain(&cells) {
        let mut text = format!("{:<width$}", line[0], width = widths[0]);
        for (cell, width) in line.iter().zip(widths).skip(1) {
            text.push_str(&format!("  {cell:>width$}"));
        }
        writeln!(out, "{}", text.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::usage::{Ledger, UsageEvent};
    use clap::Parser;

    /// Just this command's arguments, parsed the way the top-level CLI parses them.
    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        args: UsageArgs,
    }

    /// A data directory with a small ledger; removed on drop.
    struct Setup(PathBuf);

    impl Setup {
        fn new() -> Setup {
            let dir = std::env::temp_dir()
                .join(format!("cf-cli-usage-{}", crate::store::ids::new_key_id()));
            let (ledger, sender) = Ledger::start(&dir).unwrap();
            for (ts_ms, key, team, cost) in [
                (1_000, "key_a", "research", 1_500_000_000),
                (2_000, "key_a", "research", 500_000_000),
                (3_000, "key_long_name", "", 250_000),
            ] {
                sender.record(UsageEvent {
                    ts_ms,
                    request_id: format!("req-{ts_ms}"),
                    key_id: Some(key.into()),
                    team: team.into(),
                    model: Some("gpt-4o".into()),
                    prompt: None,
                    route: None,
                    status: 200,
                    prompt_tokens: 1200,
                    completion_tokens: 34,
                    cached_tokens: 0,
                    cost_nano_usd: cost,
                });
            }
            ledger.stop();
            Setup(dir)
        }

        /// Runs `usage <flags>` at `now_ms` = 10 000; returns the exit code and stdout.
        fn run(&self, flags: &[&str]) -> (i32, String) {
            let args =
                Harness::try_parse_from(std::iter::once("usage").chain(flags.iter().copied()))
                    .unwrap()
                    .args;
            let mut out = Vec::new();
            let settings = crate::store::sqlite_settings(&self.0);
            let code = match run_usage_to(&args, &settings, 10_000, &mut out) {
                Ok(()) => 0,
                Err((code, message)) => {
                    assert!(!message.contains('\n'), "{message}");
                    code
                }
            };
            (code, String::from_utf8(out).unwrap())
        }
    }

    impl Drop for Setup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn table_has_a_header_and_aligned_columns() {
        let setup = Setup::new();
        let (code, out) = setup.run(&[]);
        assert_eq!(code, 0);
        assert_eq!(
            out,
            "GROUP          REQUESTS  PROMPT_TOKENS  COMPLETION_TOKENS  COST_USD\n\
             key_a                 2           2400                 68  2.000000\n\
             key_long_name         1           1200                 34  0.000250\n"
        );
    }

    #[test]
    fn json_prints_the_admin_api_array() {
        let setup = Setup::new();
        let (code, out) = setup.run(&["--group-by", "team", "--json"]);
        assert_eq!(code, 0);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"group": "research", "requests": 2, "prompt_tokens": 2400,
                 "completion_tokens": 68, "cost_usd": 2.0},
                {"group": "", "requests": 1, "prompt_tokens": 1200,
                 "completion_tokens": 34, "cost_usd": 0.00025},
            ])
        );
    }

    #[test]
    fn team_without_a_name_shows_as_a_dash_in_the_table() {
        let setup = Setup::new();
        let (_, out) = setup.run(&["--group-by", "team"]);
        assert!(out.lines().any(|line| line.starts_with("-    ")), "{out}");
    }

    #[test]
    fn since_limits_the_report() {
        let setup = Setup::new();
        // now is 10 000 ms, so 8s back is 2 000 ms: the first request is left out.
        let (code, out) = setup.run(&["--since", "8s", "--json"]);
        assert_eq!(code, 0);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json[0]["group"], "key_a");
        assert_eq!(json[0]["requests"], 1);
        assert_eq!(json[0]["cost_usd"], 0.5);
        let (_, out) = setup.run(&["--since", "1970-01-01T00:00:02.5Z", "--json"]);
        assert_eq!(
            out.trim(),
            r#"[{"group":"key_long_name","requests":1,"prompt_tokens":1200,"completion_tokens":34,"cost_usd":0.00025}]"#
        );
    }

    #[test]
    fn empty_ledger_prints_only_the_header() {
        let dir = std::env::temp_dir().join(format!(
            "cf-cli-usage-none-{}",
            crate::store::ids::new_key_id()
        ));
        let args = Harness::try_parse_from(["usage"]).unwrap().args;
        let mut out = Vec::new();
        run_usage_to(
            &args,
            &crate::store::sqlite_settings(&dir),
            10_000,
            &mut out,
        )
        .unwrap();
        assert!(!dir.exists(), "a report creates no ledger");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GROUP  REQUESTS  PROMPT_TOKENS  COMPLETION_TOKENS  COST_USD\n"
        );
    }

    #[test]
    fn bad_group_by_exits_1() {
        let setup = Setup::new();
        assert_eq!(
            setup.run(&["--group-by", "route"]),
            (EXIT_BAD_INPUT, String::new())
        );
    }

    #[test]
    fn bad_since_exits_1() {
        let setup = Setup::new();
        assert_eq!(
            setup.run(&["--since", "yesterday"]),
            (EXIT_BAD_INPUT, String::new())
        );
    }

    #[test]
    fn since_without_a_unit_exits_1() {
        let setup = Setup::new();
        for bare in ["24", "0", "1.5h"] {
            assert_eq!(
                setup.run(&["--since", bare]),
                (EXIT_BAD_INPUT, String::new()),
                "{bare:?}"
            );
        }
    }

    #[test]
    fn unreachable_fleet_ledger_exits_2_without_quoting_the_password() {
        use crate::config::{Secret, SecretRef, StoreBackend, StoreConfig};
        // Nothing listens on port 1 of loopback: the connection is refused at once.
        let settings = StoreSettings {
            data_dir: std::env::temp_dir().join("cf-cli-usage-unreached"),
            store: StoreConfig {
                backend: StoreBackend::Postgres,
                url: Some(SecretRef::Literal(Secret::new(
                    "postgres://cf:s3cr3t-pw@127.0.0.1:1/cf?connect_timeout=2",
                ))),
                pepper: None,
                node: "edge-1".into(),
            },
        };
        let args = Harness::try_parse_from(["usage"]).unwrap().args;
        let mut out = Vec::new();
        let Err((code, message)) = run_usage_to(&args, &settings, 10_000, &mut out) else {
            panic!("a report from an unreachable database cannot succeed");
        };
        assert_eq!(code, EXIT_RUNTIME);
        assert!(!message.contains("s3cr3t-pw"), "{message}");
        assert!(!message.contains('\n'), "{message}");
        assert!(out.is_empty());
    }

    #[test]
    fn unreadable_ledger_exits_2() {
        let setup = Setup::new();
        std::fs::write(
            setup.0.join(crate::store::usage::DB_FILE),
            b"not a database at all, no",
        )
        .unwrap();
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(setup.0.join(format!("usage.db{suffix}")));
        }
        assert_eq!(setup.run(&[]).0, EXIT_RUNTIME);
    }
}
