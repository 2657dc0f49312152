//! The command line (README, "Commands"). Exit codes: 0 ok, 1 bad input, 2 runtime
//! failure; errors go to stderr as one line.

mod access;
mod keys;
mod store;
mod usage;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config;
use crate::serve::{self, DriverChoice, EXIT_BAD_INPUT};
use crate::snapshot::{Purpose, Snapshot};

#[derive(Parser, Debug)]
#[command(
    name = "credentialflow",
    version,
    about = "API and AI gateway with gateway-issued credentials"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file (default: ./credentialflow.toml, else the built-in default).
        #[arg(long)]
        config: Option<PathBuf>,
        /// I/O driver for the workers.
        #[arg(long, value_enum, default_value_t = DriverChoice::Auto)]
        driver: DriverChoice,
    },
    /// Load-test a URL: closed loop (-c, -d/-n) or open loop (--rate), HTTP/1.1 or HTTPS.
    Bench(Box<crate::bench::load::BenchArgs>),
    /// A fixed-response HTTP upstream for load tests.
    BenchUpstream {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// Response body size in bytes.
        #[arg(long, default_value_t = 128)]
        size: usize,
        /// Worker threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Delay before each response, in milliseconds.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Send the body with chunked transfer coding instead of Content-Length.
        #[arg(long, conflicts_with = "sse")]
        chunked: bool,
        /// Answer with a server-sent event stream of this many events (each of --size bytes
        /// of data), then end it.
        #[arg(long)]
        sse: Option<u32>,
        /// Milliseconds between two events of --sse.
        #[arg(long, default_value_t = 0, requires = "sse")]
        sse_interval_ms: u64,
    },
    /// Validate a config file and print every error with its key path.
    Check {
        /// Config file to validate (default: ./credentialflow.toml, as for `serve`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print configs: `config default` is the built-in one `serve` runs without a file.
    Config(ConfigArgs),
    /// Print a shell completion script: `credentialflow completions bash > ...`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Issue, list, show, update, revoke and rotate virtual keys.
    Keys(Box<keys::KeysArgs>),
    /// Print the audit log of admin actions.
    Audit(keys::AuditArgs),
    /// Just-in-time access: request, list, approve, deny and claim time-bound keys.
    Access(Box<access::AccessArgs>),
    /// Spend report from the usage ledger.
    Usage(usage::UsageArgs),
    /// Work on the store as a whole: copy a single host's store into PostgreSQL.
    Store(store::StoreArgs),
}

/// `credentialflow config`.
#[derive(clap::Args, Debug)]
struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the built-in config (what `serve` runs with no file): redirected into
    /// `credentialflow.toml`, a starting point that `check` accepts.
    Default,
}

/// clap's multi-line usage error as the one line the contract asks for: the message and
/// its details (a missing argument's name, say), without the usage block and help hint.
fn one_line_error(rendered: &str) -> String {
    let message: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:"))
        .filter(|line| !line.is_empty() && !line.starts_with("For more information"))
        .collect();
    format!("{} (see --help)", message.join(" "))
}

/// Parses the arguments, runs the command and returns the process exit code.
pub fn main() -> i32 {
    crate::logging::init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return 0;
            }
            eprintln!("{}", one_line_error(&e.render().to_string()));
            return EXIT_BAD_INPUT;
        }
    };
    match cli.command {
        Command::Serve { config, driver } => serve::run(config, driver),
        Command::Check { config } => check_command(config),
        Command::Config(ConfigArgs {
            command: ConfigCommand::Default,
        }) => {
            print!("{}", config::BUILTIN_DEFAULT_TOML);
            0
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "credentialflow",
                &mut std::io::stdout().lock(),
            );
            0
        }
        Command::Keys(args) => keys::run_keys(*args),
        Command::Audit(args) => keys::run_audit(args),
        Command::Access(args) => access::run_access(*args),
        Command::Usage(args) => match keys::store_settings_or_exit(args.config.as_deref()) {
            Ok(settings) => {
                let code = usage::run_usage(args, &settings);
                keys::hand_over_new_files(&settings);
                code
            }
            Err(code) => code,
        },
        Command::Store(args) => store::run_store(args),
        Command::Bench(args) => crate::bench::load::main(*args),
        Command::BenchUpstream {
            listen,
            size,
            workers,
            delay_ms,
            chunked,
            sse,
            sse_interval_ms,
        } => {
            use crate::bench::upstream::Body;
            let body = match (sse, chunked) {
                (Some(events), _) => Body::Sse {
                    events,
                    interval: std::time::Duration::from_millis(sse_interval_ms),
                },
                (None, true) => Body::Chunked,
                (None, false) => Body::Fixed,
            };
            let opts = crate::bench::upstream::Options {
                listen,
                body_bytes: size,
                workers,
                delay: std::time::Duration::from_millis(delay_ms),
                body,
            };
            match crate::bench::upstream::run(opts) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: bench-upstream: {e}");
                    serve::EXIT_RUNTIME
                }
            }
        }
    }
}

/// `check [--config FILE]`: without `--config`, the file `serve` would use
/// (`./credentialflow.toml`); when there is none, says so rather than checking nothing.
fn check_command(config_path: Option<PathBuf>) -> i32 {
    match config_path.or_else(config::resolve_default_path) {
        Some(path) => check(&path),
        None => {
            eprintln!(
                "error: no --config given and no ./{} in {}: nothing to check (`serve` would run \
                 the built-in default; `credentialflow config default` prints it)",
                config::DEFAULT_CONFIG_FILE,
                std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|_| "the working directory".to_owned())
            );
            EXIT_BAD_INPUT
        }
    }
}

/// Builds everything `serve` builds from the file except sockets, threads and fetches, so
/// `check` refuses exactly what `serve` and reload refuse, with the same error lines.
/// Errors and warnings go to stderr (the contract's place for them); stdout carries only
/// the `ok:` line, so a script can tell a clean file by its output too.
fn check(path: &std::path::Path) -> i32 {
    // Nothing is watched for long: the watcher only resolves `file:` secrets here.
    let secrets = config::SecretWatcher::start();
    let admission = crate::limits::Admission::default();
    let (_, report) = Snapshot::load(path, &secrets, &admission, Purpose::Check);
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if report.errors.is_empty() {
        println!("ok: {}", path.display());
        0
    } else {
        eprintln!("{}: {} error(s)", path.display(), report.errors.len());
        EXIT_BAD_INPUT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_error(args: &[&str]) -> String {
        let Err(err) = Cli::try_parse_from(args) else {
            panic!("{args:?} should be refused");
        };
        one_line_error(&err.render().to_string())
    }

    #[test]
    fn unknown_flag_is_one_line_naming_it() {
        let line = parse_error(&["credentialflow", "serve", "--bogus"]);
        assert_eq!(
            line,
            "error: unexpected argument '--bogus' found (see --help)"
        );
    }

    #[test]
    fn missing_argument_is_one_line_naming_it() {
        let line = parse_error(&["credentialflow", "keys", "create"]);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--name"), "{line}");
    }

    #[test]
    fn check_takes_its_config_file_optionally() {
        let parsed = Cli::try_parse_from(["credentialflow", "check"]).unwrap();
        assert!(matches!(parsed.command, Command::Check { config: None }));
        let parsed =
            Cli::try_parse_from(["credentialflow", "check", "--config", "a.toml"]).unwrap();
        let Command::Check { config: Some(path) } = parsed.command else {
            panic!("check --config a.toml");
        };
        assert_eq!(path, PathBuf::from("a.toml"));
    }

    #[test]
    fn completions_take_the_shell_by_name() {
        for shell in ["bash", "zsh", "fish"] {
            let parsed = Cli::try_parse_from(["credentialflow", "completions", shell]).unwrap();
            assert!(
                matches!(parsed.command, Command::Completions { .. }),
                "{shell}"
            );
        }
        let line = parse_error(&["credentialflow", "completions", "cmd.exe"]);
        assert!(line.contains("cmd.exe"), "{line}");
    }

    #[test]
    fn unknown_command_is_one_line() {
        let line = parse_error(&["credentialflow", "frob"]);
        assert!(!line.contains('\n') && line.contains("'frob'"), "{line}");
    }
}
