//! The config file (README, "Config reference"): its serde model, loading with every error
//! reported by key path and line, semantic validation, secret references and the built-in
//! default.
//!
//! - [`model`]: the structs, one per TOML table, with the contract's defaults.
//! - [`document`]: TOML text to structs, collecting all syntax/type/unknown-key errors.
//! - [`validate`]: cross-references, addresses, files, limits, secrets.
//! - [`secret`]: `env:`/`file:`/literal secrets, zeroized values, live-reloaded file secrets.
//! - [`address`]: listen addresses, `host:port` targets, CIDRs.
//! - [`url`]: `http(s)://` URLs of the endpoints the gateway calls, one parser for all.
//! - [`redact`]: URLs as error messages show them, without user info or query.
//! - [`cluster`]: `[cluster]`, the fleet's Redis.
//! - [`store`]: `[store]`, and the store commands' narrow view of a file ([`load_store`]).
//! - [`webhook`]: `[[webhook]]`, receivers of signed lifecycle events.
//! - [`mcp`]: `[[mcp_server]]` and `[mcp]`, the MCP gateway.
//! - [`default`]: the built-in config used when no file is given.
//!
//! The config is read and checked on a slow path (startup, reload, `check`); nothing here
//! runs per request except [`LiveSecret::current`] and [`Cidr::contains`].

pub mod address;
pub mod cluster;
mod default;
mod document;
mod error;
pub mod mcp;
mod model;
pub mod redact;
pub mod secret;
pub mod store;
pub mod url;
mod validate;
pub mod webhook;

use std::path::{Path, PathBuf};

pub use address::{parse_listen_addr, Cidr, HostPort};
pub use cluster::ClusterConfig;
pub use default::{
    builtin_default, resolve_default_path, BUILTIN_DEFAULT_TOML, DEFAULT_CONFIG_FILE,
};
pub use error::{CheckReport, ConfigError, ConfigErrors, ConfigWarning};
pub use mcp::{McpConfig, McpServerConfig};
pub use model::{
    bedrock_base_url, AccessPolicyConfig, AiConfig, AssumeRoleConfig, AuthKind, AutoApproveConfig,
    Config, CredentialConfig, EntraConfig, JwtConfig, LimitsConfig, LogFormat, LuaConfig,
    MetricsConfig, MockOptions, ModelConfig, OAuth2AuthMethod, OAuth2Config, PromptConfig,
    ProviderConfig, ProviderKind, RateLimitConfig, ResponsesApi, RouteConfig, ServerConfig,
    TeamConfig, TlsListenConfig, UpstreamConfig,
};
pub use model::{is_vertex_location, vertex_base_url};
pub use secret::{LiveSecret, Secret, SecretRef, SecretWatcher};
pub use store::{StoreBackend, StoreConfig, StoreSettings};
pub use url::HttpUrl;
pub use webhook::WebhookConfig;

/// Reads, parses and validates the config file at `path`. Warnings go to the log.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = read_file(path)?;
    parse(&text, &config_dir(path))
}

/// Parses and validates config text; relative paths in it resolve against `base_dir`.
/// Warnings go to the log.
pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let Analysis { config, report, .. } = analyse(text, base_dir);
    for warning in &report.warnings {
        log::warn!("config: {warning}");
    }
    match config {
        Some(config) if report.is_ok() => Ok(config),
        _ => Err(ConfigErrors(report.errors)),
    }
}

/// Reads only what the store commands (`keys`, `usage`, `audit`) need from the file at
/// `path`: `server.data_dir` and `[store]`, checked like `check` checks them, resolving no
/// secret but `[store]`'s. Every other section is ignored, so a config whose admin token or
/// provider keys are not in this shell's environment (or that `serve` would refuse for
/// another reason) still lets an operator work on the store. Warnings go to the log.
pub fn load_store(path: &Path) -> Result<StoreSettings, ConfigErrors> {
    let text = read_file(path)?;
    parse_store(&text, &config_dir(path))
}

/// [`load_store`] on config text whose relative paths start at `base_dir`.
pub fn parse_store(text: &str, base_dir: &Path) -> Result<StoreSettings, ConfigErrors> {
    let parsed = document::parse_store_text(text);
    let mut errors = parsed.errors;
    // After a parse error, checking what remains would only report defaults standing in
    // for the bad keys.
    let Some(mut store) = parsed.store.filter(|_| errors.is_empty()) else {
        return Err(ConfigErrors(errors));
    };
    store.anchor_secrets(base_dir);
    store.fill_node();
    let data_dir = model::resolve_against(base_dir, &parsed.data_dir);
    let findings = validate::validate_store(&data_dir, &store);
    for (path, message) in findings.warnings {
        let line = parsed.source.line_of_path(&path);
        let warning = ConfigWarning {
            path,
            line,
            message,
        };
        log::warn!("config: {warning}");
    }
    for (path, message) in findings.errors {
        let line = parsed.source.line_of_path(&path);
        errors.push(ConfigError {
            path,
            line,
            message,
        });
    }
    errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    if errors.is_empty() {
        Ok(StoreSettings { data_dir, store })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Loads the file at `path` and compiles it with `build`: the one path `check`, `serve` and
/// reload all take, so whatever one refuses the others refuse with the same lines. `build`
/// runs only on a config without errors; its errors (`key.path: message`) come back located
/// by line like the loader's. The value is `Some` when there is no error at all.
pub fn load_and_build<T>(
    path: &Path,
    build: impl FnOnce(Config) -> Result<T, Vec<String>>,
) -> (Option<T>, CheckReport) {
    let text = match read_file(path) {
        Ok(text) => text,
        Err(errors) => {
            let report = CheckReport {
                errors: errors.0,
                warnings: Vec::new(),
            };
            return (None, report);
        }
    };
    let analysis = analyse(&text, &config_dir(path));
    let mut report = analysis.report;
    let config = match analysis.config {
        Some(config) if report.is_ok() => config,
        _ => return (None, report),
    };
    match build(config) {
        Ok(built) => (Some(built), report),
        Err(errors) => {
            report.errors = errors
                .into_iter()
                .map(|e| locate(e, &analysis.source))
                .collect();
            (None, report)
        }
    }
}

/// A `key.path: message` error from compiling a config, with the line of its key path.
fn locate(error: String, source: &document::SourceMap) -> ConfigError {
    let key_path = error.split_once(": ").filter(|(path, _)| {
        path.starts_with(|c: char| c.is_ascii_alphabetic()) && !path.contains(char::is_whitespace)
    });
    match key_path {
        Some((path, message)) => ConfigError {
            line: source.line_of_path(path),
            path: path.to_string(),
            message: message.to_string(),
        },
        None => ConfigError {
            path: String::new(),
            line: None,
            message: error,
        },
    }
}

/// Everything `credentialflow check` reports for the file at `path`.
pub fn check(path: &Path) -> CheckReport {
    match read_file(path) {
        Ok(text) => check_text(&text, &config_dir(path)),
        Err(errors) => CheckReport {
            errors: errors.0,
            warnings: Vec::new(),
        },
    }
}

/// Everything `check` reports for config text whose relative paths start at `base_dir`.
pub fn check_text(text: &str, base_dir: &Path) -> CheckReport {
    analyse(text, base_dir).report
}

fn read_file(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single(format!("cannot read {}: {e}", path.display())))
}

/// The directory of the config file, absolute, so paths stay right whatever the process's
/// working directory is later.
fn config_dir(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// What parsing and validating config text found.
struct Analysis {
    /// `Some` when the config could be built (it may still have semantic errors).
    config: Option<Config>,
    report: CheckReport,
    /// Where each key path is written, to locate errors found later.
    source: document::SourceMap,
}

/// Parses and validates.
fn analyse(text: &str, base_dir: &Path) -> Analysis {
    let parsed = document::parse_text(text);
    let mut report = CheckReport {
        errors: parsed.errors,
        warnings: Vec::new(),
    };
    let Some(mut config) = parsed.config else {
        return Analysis {
            config: None,
            report,
            source: parsed.source,
        };
    };
    config.base_dir = base_dir.to_path_buf();
    config.fill_derived_defaults();
    config.anchor_secrets();

    let findings = validate::validate(&config);
    // A key dropped after a type error fell back to its default; checking that default
    // would only report the same mistake again.
    let damaged = |path: &str| {
        parsed.damaged.iter().any(|d| {
            path.strip_prefix(d.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    };
    for (path, message) in findings.errors {
        if !damaged(&path) {
            let line = parsed.source.line_of_path(&path);
            report.errors.push(ConfigError {
                path,
                line,
                message,
            });
        }
    }
    for (path, message) in findings.warnings {
        let line = parsed.source.line_of_path(&path);
        report.warnings.push(ConfigWarning {
            path,
            line,
            message,
        });
    }
    // File order reads best; errors without a line keep their place at the end.
    report.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    report
        .warnings
        .sort_by_key(|w| w.line.unwrap_or(usize::MAX));
    Analysis {
        config: Some(config),
        report,
        source: parsed.source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cf-config-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn paths(report: &CheckReport) -> Vec<&str> {
        report.errors.iter().map(|e| e.path.as_str()).collect()
    }

    const CONTRACT_EXAMPLE: &str = r#"
[server]
listen = ["127.0.0.1:8080"]
workers = 0
admin_listen = "127.0.0.1:9901"
admin_token = "env:CF_TEST_ADMIN_TOKEN"
data_dir = "./data"
access_log = "./data/access.log"

[limits]
max_header_bytes = 32768
max_body_bytes = 10485760
header_timeout_ms = 10000
idle_timeout_ms = 60000
upstream_connect_timeout_ms = 3000
upstream_timeout_ms = 300000

[[upstream]]
name = "backend"
targets = ["127.0.0.1:9000"]
tls = false
ca_file = ""
sni = ""
credential = { header = "authorization", value = "Bearer {secret}", secret = "env:CF_TEST_BACKEND_TOKEN" }

[[route]]
name = "api"
host = ""
path_prefix = "/api/"
strip_prefix = false
upstream = "backend"
auth = "api_key"
scopes = []
allow_ips = []
deny_ips = []
rate_limit = { rps = 0, burst = 0 }
hooks = ""
jwt = { issuer = "", audience = "", jwks_url = "", public_key = "", hs_secret = "", leeway_s = 30 }

[[provider]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com"
api_key = "file:openai.key"
ca_file = ""

[[model]]
name = "gpt-4o-mini"
provider = "openai"
upstream_model = "gpt-4o-mini"
input_price_per_mtok = 0.15
output_price_per_mtok = 0.60
cached_input_price_per_mtok = 0.075
fallbacks = []

[[prompt]]
name = "sentiment"
version = 1
model = "gpt-4o-mini"
system = "You classify sentiment."
template = "Classify the sentiment of: {{text}}"

[ai]
auth = "api_key"
hooks = ""

[lua]
hook_timeout_ms = 10
memory_limit_mb = 32
"#;

    #[test]
    fn contract_example_loads() {
        let dir = temp_dir("example");
        fs::write(dir.join("openai.key"), "sk-test\n").unwrap();
        let path = dir.join("credentialflow.toml");
        fs::write(&path, CONTRACT_EXAMPLE).unwrap();
        std::env::set_var("CF_TEST_ADMIN_TOKEN", "admin");
        std::env::set_var("CF_TEST_BACKEND_TOKEN", "backend");

        let config = load(&path).unwrap();
        assert_eq!(config.base_dir, dir);
        assert_eq!(config.route[0].auth, AuthKind::ApiKey);
        assert_eq!(
            config.provider[0].api_key,
            Some(SecretRef::File(dir.join("openai.key")))
        );
        assert_eq!(
            config.provider[0]
                .api_key
                .as_ref()
                .unwrap()
                .resolve()
                .unwrap()
                .expose(),
            "sk-test"
        );
        assert_eq!(
            config.resolve_path(&config.server.data_dir),
            dir.join("data")
        );
    }

    #[test]
    fn structural_and_semantic_errors_are_reported_together() {
        let text = "[server]\nlisten = [\"nohost\"]\nworkerz = 2\n\n\
                    [[route]]\nname = \"a\"\nupstream = \"ghost\"\n\n\
                    [[model]]\nname = \"m\"\nprovider = \"nope\"\nprice = 1\n";
        let report = check_text(text, Path::new("/nonexistent-cf"));
        assert_eq!(
            paths(&report),
            [
                "server.listen[0]",
                "server.workerz",
                "route[0].upstream",
                "model[0].provider",
                "model[0].price"
            ]
        );
        let lines: Vec<Option<usize>> = report.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [Some(2), Some(3), Some(7), Some(11), Some(12)]);
    }

    #[test]
    fn semantic_error_on_defaulted_key_points_at_its_table() {
        let report = check_text("\n[[route]]\nname = \"a\"\n", Path::new("/nonexistent-cf"));
        assert_eq!(paths(&report), ["route[0].upstream"]);
        assert_eq!(report.errors[0].line, Some(2));
    }

    #[test]
    fn key_dropped_after_type_error_is_not_reported_twice() {
        let report = check_text(
            "[[upstream]]\nname = 5\ntargets = [\"a:1\"]\n",
            Path::new("/x"),
        );
        assert_eq!(paths(&report), ["upstream[0].name"]);
    }

    #[test]
    fn literal_secret_gives_a_warning_line_naming_the_key_only() {
        let text = "[server]\nadmin_token = \"hunter2-literal\"\n";
        let report = check_text(text, Path::new("/x"));
        assert!(report.is_ok());
        let shown = report.to_string();
        assert_eq!(shown, "warning: server.admin_token (line 2): literal secret in the config file; use env:NAME or file:PATH\n");
        assert!(!shown.contains("hunter2"));
    }

    #[test]
    fn unresolvable_secret_fails_load_naming_the_reference() {
        let text = "[server]\nadmin_token = \"env:CF_TEST_SURELY_UNSET_TOKEN\"\n";
        let errors = parse(text, Path::new("/x")).unwrap_err();
        assert_eq!(errors[0].path, "server.admin_token");
        assert!(errors[0].message.contains("env:CF_TEST_SURELY_UNSET_TOKEN"));
    }

    #[test]
    fn hooks_path_is_relative_to_the_config_dir() {
        let dir = temp_dir("hooks");
        fs::create_dir_all(dir.join("hooks")).unwrap();
        fs::write(dir.join("hooks/ai.lua"), "").unwrap();
        let path = dir.join("cf.toml");
        fs::write(&path, "[ai]\nhooks = \"hooks/ai.lua\"\n").unwrap();
        assert!(check(&path).is_ok(), "{}", check(&path));
    }

    #[test]
    fn unreadable_config_file_is_one_error() {
        let report = check(Path::new("/nonexistent-cf/credentialflow.toml"));
        assert_eq!(report.errors.len(), 1);
        assert!(report.errors[0].message.contains("cannot read"));
    }

    #[test]
    fn syntax_error_is_reported_with_its_line() {
        let report = check_text("[server]\nworkers = = 1\n", Path::new("/x"));
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[0].line, Some(2));
        assert!(report
            .to_string()
            .starts_with("error: line 2: TOML syntax error"));
    }

    #[test]
    fn parse_fills_provider_base_url_from_kind() {
        let text =
            "[[provider]]\nname = \"g\"\nkind = \"gemini\"\napi_key = \"env:CF_TEST_GEMINI\"\n";
        std::env::set_var("CF_TEST_GEMINI", "k");
        let config = parse(text, Path::new("/x")).unwrap();
        assert_eq!(
            config.provider[0].base_url,
            "https://generativelanguage.googleapis.com"
        );
    }

    #[test]
    fn store_load_reads_data_dir_and_store_only() {
        let text = "[server]\nadmin_token = \"env:CF_TEST_SURELY_UNSET_TOKEN\"\n\
                    workers = \"many\"\ndata_dir = \"state\"\n\
                    [[route]]\nupstream = \"ghost\"\n[cluster]\nredis = 5\n\
                    [store]\nnode = \"edge-7\"\n";
        assert!(parse(text, Path::new("/etc/cf")).is_err());
        let settings = parse_store(text, Path::new("/etc/cf")).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("/etc/cf/state"));
        assert_eq!(settings.store.backend, StoreBackend::Sqlite);
        assert_eq!(settings.store.node, "edge-7");
    }

    #[test]
    fn store_load_of_a_file_without_store_is_the_default_sqlite_store() {
        let settings = parse_store("", Path::new("/srv")).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("/srv/data"));
        assert_eq!(settings.store.backend, StoreBackend::Sqlite);
        assert_eq!(Some(settings.store.node), store::host_name());
    }

    #[test]
    fn store_load_reports_store_and_data_dir_errors_by_path_and_line() {
        let text = "[server]\ndata_dir = 5\n[store]\nbackend = \"mysql\"\nnode = \"a b\"\n";
        let errors = parse_store(text, Path::new("/x")).unwrap_err();
        let found: Vec<(&str, Option<usize>)> =
            errors.iter().map(|e| (e.path.as_str(), e.line)).collect();
        assert_eq!(
            found,
            [("server.data_dir", Some(2)), ("store.backend", Some(4))]
        );
        let errors = parse_store("[store]\nnode = \"a b\"\n", Path::new("/x")).unwrap_err();
        assert_eq!(errors[0].path, "store.node");
        assert_eq!(errors[0].line, Some(2));
    }

    #[test]
    fn store_load_resolves_only_the_stores_secrets() {
        let text = "[store]\nbackend = \"postgres\"\nurl = \"env:CF_TEST_SURELY_UNSET_URL\"\n\
                    pepper = \"file:pepper\"\n";
        let errors = parse_store(text, Path::new("/nonexistent-cf")).unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["store.url", "store.pepper"]);
        assert!(errors[0].message.contains("env:CF_TEST_SURELY_UNSET_URL"));
        // A relative file: reference follows the config file, like every other secret.
        assert!(
            errors[1].message.contains("/nonexistent-cf/pepper"),
            "{}",
            errors[1]
        );
    }

    #[test]
    fn store_load_refuses_text_that_is_not_toml() {
        let errors = parse_store("[store\n", Path::new("/x")).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("TOML syntax error"));
    }

    #[test]
    fn sqlite_store_warns_that_url_and_pepper_are_ignored_and_does_not_resolve_them() {
        let text = "[store]\nurl = \"env:CF_TEST_SURELY_UNSET_URL\"\n";
        let report = check_text(text, Path::new("/x"));
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.warnings[0].path, "store.url");
        assert!(report.warnings[0].message.contains("ignored"));
    }

    #[test]
    fn postgres_store_url_is_checked_without_being_shown() {
        let text = "[store]\nbackend = \"postgres\"\n\
                    url = \"mysql://cf:hunter2@db/cf\"\npepper = \"env:CF_TEST_STORE_PEPPER\"\n";
        std::env::set_var("CF_TEST_STORE_PEPPER", "ab".repeat(32));
        let report = check_text(text, Path::new("/x"));
        let shown = report.to_string();
        assert!(
            !shown.contains("hunter2") && !shown.contains("db/cf"),
            "{shown}"
        );
        let paths: Vec<&str> = report.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["store.url"]);
        assert!(report.errors[0].message.contains("postgres://"));
        assert_eq!(report.warnings[0].path, "store.url");
        assert!(report.warnings[0].message.contains("literal secret"));
    }

    /// What the PostgreSQL test harness hands out: a URL whose `host` query parameter is
    /// the socket directory, no TCP port, no password.
    #[test]
    fn postgres_store_accepts_a_socket_directory_url_and_a_hex_pepper() {
        std::env::set_var(
            "CF_TEST_GOOD_URL",
            "postgres://postgres@/cf?host=/tmp/cf-pg-1-0",
        );
        std::env::set_var("CF_TEST_GOOD_PEPPER", "0f".repeat(32));
        let text = "[store]\nbackend = \"postgres\"\nurl = \"env:CF_TEST_GOOD_URL\"\n\
                    pepper = \"env:CF_TEST_GOOD_PEPPER\"\nnode = \"edge-1\"\n";
        let report = check_text(text, Path::new("/x"));
        assert!(report.is_ok(), "{report}");
        assert!(report.warnings.is_empty(), "{report}");
    }

    /// The pepper is exactly the pepper file's format, 64 hex characters: anything else is
    /// refused by `check` (as `serve` would refuse it), without showing the value.
    #[test]
    fn postgres_store_pepper_must_be_64_hex_characters_and_is_never_shown() {
        std::env::set_var("CF_TEST_PEPPER_URL", "postgres://postgres@/cf?host=/tmp/x");
        let text = "[store]\nbackend = \"postgres\"\nurl = \"env:CF_TEST_PEPPER_URL\"\n\
                    pepper = \"env:CF_TEST_BAD_PEPPER\"\nnode = \"edge-1\"\n";
        let long_enough_but_not_hex = format!("secretpepper{}", "z".repeat(52));
        for bad in [
            long_enough_but_not_hex.as_str(),
            &"ab".repeat(31),
            &"ab".repeat(33),
            &"ab".repeat(512),
        ] {
            std::env::set_var("CF_TEST_BAD_PEPPER", bad);
            let report = check_text(text, Path::new("/x"));
            let paths: Vec<&str> = report.errors.iter().map(|e| e.path.as_str()).collect();
            assert_eq!(paths, ["store.pepper"], "{report}");
            assert!(report.errors[0].message.contains("64 hex"), "{report}");
            assert!(!report.to_string().contains(bad), "{report}");
        }
    }

    #[test]
    fn cluster_errors_are_each_named_with_their_line_and_never_show_the_password() {
        std::env::set_var("CF_TEST_BAD_REDIS", "http://cf:hunter2-redis@cache:6379/0");
        let text = "[cluster]\nredis = \"env:CF_TEST_BAD_REDIS\"\n\
                    sync_interval_ms = 5\ncolour = \"blue\"\n";
        let report = check_text(text, Path::new("/x"));
        let found: Vec<(&str, Option<usize>)> = report
            .errors
            .iter()
            .map(|e| (e.path.as_str(), e.line))
            .collect();
        assert_eq!(
            found,
            [
                ("cluster.redis", Some(2)),
                ("cluster.sync_interval_ms", Some(3)),
                ("cluster.colour", Some(4)),
            ],
            "{report}"
        );
        let shown = report.to_string();
        assert!(!shown.contains("hunter2-redis"), "{shown}");
        assert!(shown.contains("redis+unix://"), "{shown}");

        let too_slow = check_text("[cluster]\nsync_interval_ms = 10001\n", Path::new("/x"));
        assert_eq!(paths(&too_slow), ["cluster.sync_interval_ms"]);
        let unresolved = check_text(
            "[cluster]\nredis = \"env:CF_TEST_SURELY_UNSET_REDIS\"\n",
            Path::new("/x"),
        );
        assert_eq!(paths(&unresolved), ["cluster.redis"]);
    }

    #[test]
    fn cluster_accepts_both_redis_forms_and_the_interval_bounds() {
        std::env::set_var(
            "CF_TEST_GOOD_REDIS",
            "redis+unix:///tmp/r.sock?pass=pw-123456",
        );
        for interval in [10, 100, 10_000] {
            let text = format!(
                "[store]\nnode = \"edge-1\"\n[cluster]\nredis = \"env:CF_TEST_GOOD_REDIS\"\n\
                 sync_interval_ms = {interval}\n"
            );
            let config = parse(&text, Path::new("/x")).unwrap();
            assert!(config.cluster.enabled());
            assert_eq!(config.cluster.sync_interval_ms, interval);
        }
        // A literal URL is accepted with the usual warning, which does not quote it.
        let report = check_text(
            "[cluster]\nredis = \"redis://cf:hunter3-redis@cache:6379/2\"\n",
            Path::new("/x"),
        );
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.warnings[0].path, "cluster.redis");
        assert!(!report.to_string().contains("hunter3-redis"));
        // Without the section fleet mode is off, and the store commands never read it.
        assert!(!parse("", Path::new("/x")).unwrap().cluster.enabled());
    }

    #[test]
    fn debug_of_config_never_shows_literal_secrets() {
        let text = "[server]\nadmin_token = \"lit-admin-value\"\n\
                    [[upstream]]\nname = \"u\"\ntargets = [\"a:1\"]\n\
                    credential = { header = \"x-key\", secret = \"lit-upstream-value\" }\n";
        let config = parse(text, Path::new("/x")).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("lit-admin-value") && !shown.contains("lit-upstream-value"));
        assert!(shown.contains("SecretRef(literal, redacted)"));
    }
}
