//! The built-in config: what `credentialflow serve` runs with no `--config` and no
//! `./credentialflow.toml`, so a fresh machine gets a working gateway on the mock provider.

use std::path::{Path, PathBuf};

use super::model::Config;

/// The built-in config as TOML; `credentialflow` users can copy it as a starting point.
pub const BUILTIN_DEFAULT_TOML: &str = r#"# credentialflow built-in default: the in-process mock provider, no secrets needed.
[server]
listen = ["127.0.0.1:8080"]
workers = 0
admin_listen = "127.0.0.1:9901"
# no admin_token: every /admin/* call is refused with 401 until one is configured
data_dir = "./data"
access_log = "./data/access.log"

[[provider]]
name = "mock"
kind = "mock"
base_url = "http://mock.invalid"

[[model]]
name = "mock-gpt"
provider = "mock"
upstream_model = "mock-gpt"
input_price_per_mtok = 0.10
output_price_per_mtok = 0.40

[[model]]
name = "mock-claude"
provider = "mock"
upstream_model = "mock-claude"
input_price_per_mtok = 0.25
output_price_per_mtok = 1.25
cached_input_price_per_mtok = 0.025

[[prompt]]
name = "echo"
version = 1
model = "mock-gpt"
system = "Repeat the user's text."
template = "{{text}}"

[ai]
auth = "api_key"
"#;

/// File name looked up in the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "credentialflow.toml";

/// The built-in config; relative paths in it resolve against the working directory.
/// Checks that depend on the machine (e.g. `./data` being a file) are left to startup, so
/// this never fails; the text itself is validated by a unit test.
pub fn builtin_default() -> Config {
    super::analyse(BUILTIN_DEFAULT_TOML, Path::new("."))
        .config
        .expect("the built-in default config parses (checked by its unit test)")
}

/// `./credentialflow.toml` when it exists.
pub fn resolve_default_path() -> Option<PathBuf> {
    let path = PathBuf::from(".").join(DEFAULT_CONFIG_FILE);
    path.is_file().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{AuthKind, ProviderKind};

    #[test]
    fn builtin_default_validates_without_errors_or_warnings() {
        let report = crate::config::check_text(BUILTIN_DEFAULT_TOML, Path::new("."));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    }

    #[test]
    fn builtin_default_serves_the_mock_provider_locally() {
        let config = builtin_default();
        assert_eq!(config.server.listen, ["127.0.0.1:8080"]);
        assert_eq!(config.server.admin_listen, "127.0.0.1:9901");
        assert!(config.server.admin_token.is_none());
        assert_eq!(config.provider[0].kind, ProviderKind::Mock);
        let models: Vec<&str> = config.model.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(models, ["mock-gpt", "mock-claude"]);
        assert_eq!(config.prompt[0].name, "echo");
        assert_eq!(config.ai.auth, AuthKind::ApiKey);
        assert!(config.route.is_empty() && config.upstream.is_empty());
    }
}
