//! `credentialflow store migrate --config FILE --from-sqlite DIR`: a single host's store (its
//! `data_dir`: `keys.db`, `pepper`, `audit.log`, `usage.db`) copied into the PostgreSQL store
//! a fleet shares, idempotently ([`crate::store::postgres::import`] does the copying).
//!
//! `DIR` is opened read-only and left as it was. Only `[store]` of `FILE` is read (like the
//! other store commands), and its secrets (the URL's password, the pepper) never appear in
//! what this prints.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::config::{self, StoreBackend, StoreConfig};
use crate::serve::{EXIT_BAD_INPUT, EXIT_RUNTIME};
use crate::store::postgres::import::{ImportReport, UsageImport, UsageImportError};
use crate::store::postgres::PgStore;
use crate::store::usage::source::{LedgerSource, SourceError};
use crate::store::{audit, KeyStore, Pepper, StoreError};

/// `credentialflow store`.
#[derive(Args, Debug)]
pub(crate) struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Copy a single host's keys, access requests, audit log and usage ledger into the
    /// PostgreSQL store, idempotently.
    Migrate {
        /// Config file whose `[store]` names the PostgreSQL store (`backend = "postgres"`,
        /// `url`, `pepper`, `node`); nothing else in it is read.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The host's data directory (its `server.data_dir`); only read.
        #[arg(long, value_name = "DIR")]
        from_sqlite: PathBuf,
    },
}

/// Why `store migrate` stopped, and with which exit code.
#[derive(Debug)]
struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    fn bad_input(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_BAD_INPUT,
            message: message.into(),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::Postgres(pg) if !pg.is_unreachable() => {
                use crate::store::postgres::PgErrorKind;
                match pg.kind() {
                    PgErrorKind::Config
                    | PgErrorKind::PepperMismatch
                    | PgErrorKind::SchemaTooNew => EXIT_BAD_INPUT,
                    _ => EXIT_RUNTIME,
                }
            }
            e if e.is_bad_input() => EXIT_BAD_INPUT,
            _ => EXIT_RUNTIME,
        };
        // Store errors never hold the URL's password or a hash (see `store::postgres`).
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

/// The words for a pepper that is not the host's. Neither value is shown.
const PEPPER_MISMATCH: &str = "store.pepper is not the pepper of --from-sqlite DIR (its \
    `pepper` file): keys hashed under another pepper would never authenticate; set \
    [store] pepper to the 64 hex characters of DIR/pepper. Nothing was copied";

/// Runs `store ...`; returns the exit code.
pub(crate) fn run_store(args: StoreArgs) -> i32 {
    match args.command {
        StoreCommand::Migrate {
            config,
            from_sqlite,
        } => {
            let actor = super::keys::actor();
            match migrate(&config, &from_sqlite, &actor, &mut io::stdout().lock()) {
                Ok(()) => 0,
                Err(failure) => {
                    eprintln!("error: {}", failure.message);
                    failure.code
                }
            }
        }
    }
}

/// `store migrate`, printing its report to `out`.
fn migrate(
    config_path: &Path,
    from: &Path,
    actor: &str,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let settings = config::load_store(config_path).map_err(|errors| {
        Failure::bad_input(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let store = settings.store;
    if store.backend != StoreBackend::Postgres {
        return Err(Failure::bad_input(format!(
            "{}: store.backend must be \"postgres\": store migrate copies into the PostgreSQL \
             store that [store] names",
            config_path.display()
        )));
    }
    let (url, pepper) = postgres_secrets(&store)?;

    // Everything about the source is checked before the database is touched: opening the
    // shared store records its pepper verifier on first use.
    let mut source = KeyStore::open_read_only(from).map_err(|e| {
        Failure::bad_input(format!(
            "--from-sqlite {}: not a credentialflow data directory ({e})",
            from.display()
        ))
    })?;
    if !same_pepper(&pepper, source.pepper()) {
        return Err(Failure::bad_input(PEPPER_MISMATCH));
    }
    let keys = source.list()?;
    let requests = source.access_list(None)?;
    let entries = audit::read(from).map_err(runtime)?;

    // Read now, so that a ledger that cannot be read stops the run before anything is
    // written; its records are named after this node, the host's name in the fleet.
    let mut ledger = LedgerSource::open(from, &store.node).map_err(|e| {
        Failure::bad_input(format!(
            "--from-sqlite {}: usage ledger: {e}; nothing was copied",
            from.display()
        ))
    })?;

    let mut target = PgStore::open(url.expose(), pepper, &store.node)?;
    let report = target.import(&keys, &requests, &entries, actor)?;
    if !report.conflicts.is_empty() {
        for conflict in &report.conflicts {
            writeln!(
                out,
                "conflict: {} {}: {}",
                conflict.what, conflict.id, conflict.reason
            )
            .map_err(runtime)?;
        }
        let ids: Vec<&str> = report.conflicts.iter().map(|c| c.id.as_str()).collect();
        return Err(Failure::bad_input(format!(
            "{} record(s) conflict with the PostgreSQL store ({}); nothing was copied",
            ids.len(),
            ids.join(", ")
        )));
    }
    match target.import_usage(&mut ledger) {
        Ok(usage) => writeln!(out, "{}", summary(&report, &usage)).map_err(runtime),
        Err(e) => {
            // The keys and audit are in (their transaction committed); the ledger's rolled
            // back as a whole, and a second run copies it without copying anything twice.
            writeln!(
                out,
                "copied {} keys ({} already present), {} audit entries ({} already present); \
                 usage ledger not copied",
                report.keys_copied, report.keys_present, report.audit_copied, report.audit_present
            )
            .map_err(runtime)?;
            let mut failure = match e {
                UsageImportError::Source(e) => Failure {
                    code: match e {
                        SourceError::Invalid { .. } => EXIT_BAD_INPUT,
                        SourceError::Db(_) => EXIT_RUNTIME,
                    },
                    message: format!("--from-sqlite {}: {e}", from.display()),
                },
                UsageImportError::Store(e) => Failure::from(e),
            };
            failure.message = format!(
                "usage ledger: {}; none of its records were copied (the keys and audit log \
                 were); run again to copy it",
                failure.message
            );
            Err(failure)
        }
    }
}

/// The resolved `url` and the fleet's pepper of a `[store]` whose references loading has
/// already checked. The pepper must be given in the pepper file's own form (64 hex
/// characters): only then can it be the host's.
fn postgres_secrets(store: &StoreConfig) -> Result<(config::Secret, Pepper), Failure> {
    let resolve = |secret: &Option<config::SecretRef>, path: &str| {
        secret
            .as_ref()
            .ok_or_else(|| Failure::bad_input(format!("{path}: is required")))?
            .resolve()
            .map_err(|e| Failure::bad_input(format!("{path}: {e}")))
    };
    let url = resolve(&store.url, "store.url")?;
    let pepper_text = resolve(&store.pepper, "store.pepper")?;
    let pepper =
        Pepper::from_hex(pepper_text.expose()).map_err(|_| Failure::bad_input(PEPPER_MISMATCH))?;
    Ok((url, pepper))
}

/// Whether two peppers are the same secret, compared by what they do (one HMAC each)
/// rather than by their bytes, which a `Pepper` never shows.
fn same_pepper(a: &Pepper, b: &Pepper) -> bool {
    const PROBE: &[u8] = b"credentialflow store migrate: same pepper?";
    a.hash(PROBE) == b.hash(PROBE)
}

/// `copied N keys (M already present), K audit entries (L already present), U usage
/// records (V already present), A access requests (B already present)`.
fn summary(report: &ImportReport, usage: &UsageImport) -> String {
    format!(
        "copied {} keys ({} already present), {} audit entries ({} already present), \
         {} usage records ({} already present), {} access requests ({} already present)",
        report.keys_copied,
        report.keys_present,
        report.audit_copied,
        report.audit_present,
        usage.copied,
        usage.present,
        report.access_copied,
        report.access_present
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Harness {
        #[command(subcommand)]
        command: StoreCommand,
    }

    #[test]
    fn migrate_takes_a_config_and_a_source_directory() {
        let parsed = Harness::try_parse_from([
            "store",
            "migrate",
            "--config",
            "fleet.toml",
            "--from-sqlite",
            "/var/lib/credentialflow",
        ])
        .unwrap();
        let StoreCommand::Migrate {
            config,
            from_sqlite,
        } = parsed.command;
        assert_eq!(config, PathBuf::from("fleet.toml"));
        assert_eq!(from_sqlite, PathBuf::from("/var/lib/credentialflow"));
        for missing in [
            &["store", "migrate", "--config", "fleet.toml"][..],
            &["store", "migrate", "--from-sqlite", "/d"][..],
        ] {
            assert!(Harness::try_parse_from(missing).is_err(), "{missing:?}");
        }
    }

    #[test]
    fn the_summary_says_what_was_copied_and_what_was_there() {
        let report = ImportReport {
            keys_copied: 0,
            keys_present: 4,
            audit_copied: 0,
            audit_present: 9,
            access_copied: 1,
            access_present: 3,
            conflicts: Vec::new(),
        };
        let usage = UsageImport {
            copied: 2,
            present: 7,
        };
        assert_eq!(
            summary(&report, &usage),
            "copied 0 keys (4 already present), 0 audit entries (9 already present), \
             2 usage records (7 already present), 1 access requests (3 already present)"
        );
    }

    #[test]
    fn peppers_are_told_apart_by_what_they_hash() {
        let a = Pepper::from_hex(&"0b".repeat(32)).unwrap();
        let same = Pepper::from_hex(&"0B".repeat(32)).unwrap();
        let other = Pepper::from_hex(&"0c".repeat(32)).unwrap();
        assert!(same_pepper(&a, &same));
        assert!(!same_pepper(&a, &other));
    }

    #[test]
    fn a_pepper_not_in_the_pepper_files_form_is_refused_without_quoting_it() {
        let store = StoreConfig {
            backend: StoreBackend::Postgres,
            url: Some(config::SecretRef::Literal(config::Secret::new(
                "postgres://u:pw@h/db",
            ))),
            pepper: Some(config::SecretRef::Literal(config::Secret::new(
                "a-passphrase-that-is-not-hex-but-long-enough",
            ))),
            node: "edge-1".into(),
        };
        let Err(failure) = postgres_secrets(&store) else {
            panic!("a non-hex pepper cannot be the host's");
        };
        assert_eq!(failure.code, EXIT_BAD_INPUT);
        assert!(
            !failure.message.contains("passphrase"),
            "{}",
            failure.message
        );
        assert!(!failure.message.contains("pw@"), "{}", failure.message);
    }
}
