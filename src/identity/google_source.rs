//! Google service-account tokens as a credential source: the JWT-bearer grant of
//! [`super::google`] run by a [`CredentialSource`] thread, for `vertex` providers.
//!
//! The key file is read again on every fetch (once per token, about every 48 minutes with
//! Google's hour-long tokens), so a rotated key takes effect with the next token and no key
//! is kept in memory between fetches. Sources are shared by settings in the process's
//! bearer-token registry ([`super::oauth2::registry`]): every worker and every provider naming
//! the same service account use one thread and one token.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::google::{parse_token_response, ServiceAccount, MAX_TOKEN_RESPONSE_BYTES};
use super::http::{Endpoint, Limits};
use super::oauth2::{registry, TokenSource};
use super::source::{BearerToken, CredentialSource, Fetch, FetchError, Fetched, SourceTiming};
use crate::config::SecretRef;

/// Where the service-account JSON is read from.
#[derive(Clone, Debug)]
pub enum KeyFile {
    /// A file (`file:sa.json`, anchored to the config's directory).
    File(PathBuf),
    /// An environment variable holding the JSON itself (`env:NAME`).
    Env(String),
}

impl KeyFile {
    /// The config's reference, refused when it is a literal: a private key written into the
    /// config file would be copied wherever the config goes.
    pub fn from_ref(reference: &SecretRef) -> Result<KeyFile, String> {
        match reference {
            SecretRef::File(path) => Ok(KeyFile::File(path.clone())),
            SecretRef::Env(name) => Ok(KeyFile::Env(name.clone())),
            SecretRef::Literal(_) => Err(
                "must be file:PATH (the service-account JSON) or env:NAME holding it".to_string(),
            ),
        }
    }

    /// Reads and parses the service account; the error names the file or variable and the
    /// field at fault, never a value.
    pub fn load(&self) -> Result<ServiceAccount, String> {
        match self {
            KeyFile::File(path) => ServiceAccount::from_file(path).map_err(|e| e.to_string()),
            KeyFile::Env(name) => {
                let json = std::env::var(name).map_err(|_| {
                    format!("env:{name}: environment variable is not set or not UTF-8")
                })?;
                let json = zeroize::Zeroizing::new(json);
                ServiceAccount::from_json(json.as_bytes()).map_err(|e| format!("env:{name}: {e}"))
            }
        }
    }

    /// The reference as written (`file:PATH` or `env:NAME`), for log lines and settings keys.
    fn describe(&self) -> String {
        match self {
            KeyFile::File(path) => format!("file:{}", path.display()),
            KeyFile::Env(name) => format!("env:{name}"),
        }
    }
}

/// Checks that the service account loads and its key signs, without contacting anything
/// (what `credentialflow check` and every reload verify).
pub fn check(key_file: &KeyFile) -> Result<(), String> {
    let account = key_file.load()?;
    account
        .assertion(&[], 0)
        .map(drop)
        .map_err(|_| "service-account file's `private_key` cannot sign".to_string())
}

/// Fetches access tokens for one service account with the cloud-platform scope.
pub struct ServiceAccountTokens {
    key_file: KeyFile,
    /// The token endpoint of the last fetch, kept while the file names the same one (its TLS
    /// configuration is built once).
    endpoint: Option<Endpoint>,
    timeout: Duration,
}

impl ServiceAccountTokens {
    /// A fetcher for `key_file`, each token request bounded by `timeout`.
    pub fn new(key_file: KeyFile, timeout: Duration) -> ServiceAccountTokens {
        ServiceAccountTokens {
            key_file,
            endpoint: None,
            timeout,
        }
    }

    fn endpoint_for(&mut self, token_uri: &str) -> Result<&Endpoint, FetchError> {
        let same = self
            .endpoint
            .as_ref()
            .is_some_and(|e| e.url().to_string() == token_uri);
        if !same {
            let endpoint =
                Endpoint::new(token_uri).map_err(|e| format!("service account token_uri: {e}"))?;
            self.endpoint = Some(endpoint);
        }
        Ok(self.endpoint.as_ref().expect("set above"))
    }
}

impl Fetch for ServiceAccountTokens {
    type Credential = BearerToken;

    fn fetch(&mut self) -> Result<Fetched<BearerToken>, FetchError> {
        let account = self.key_file.load()?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let request = account.token_request(&[], now).map_err(|e| e.to_string())?;
        let limits = Limits {
            timeout: self.timeout,
            max_body: MAX_TOKEN_RESPONSE_BYTES,
        };
        let endpoint = self.endpoint_for(request.url())?;
        let response = endpoint.post_form(&request.form(), None, limits)?;
        let token =
            parse_token_response(response.status, &response.body).map_err(|e| e.to_string())?;
        Ok(Fetched {
            credential: BearerToken::new(token.secret().to_string()),
            lifetime: token.lifetime(),
        })
    }

    fn describe(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("{} for {}", endpoint.url(), self.key_file.describe()),
            None => self.key_file.describe(),
        }
    }
}

/// What makes two service-account sources the same: the grant, the scope and where the key
/// is read from (a reference, never the key).
fn settings_key(key_file: &KeyFile) -> String {
    let mut digest = Sha256::new();
    for field in [
        "google-service-account",
        super::google::CLOUD_PLATFORM_SCOPE,
        &key_file.describe(),
    ] {
        digest.update((field.len() as u64).to_be_bytes());
        digest.update(field.as_bytes());
    }
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The token source of a `vertex` provider named `name`: with `timing`, the running one
/// shared by every holder of the same service account, started when none runs; without, the
/// account is only checked (it loads and its key signs) and a source that never has a token
/// is returned (for `credentialflow check`, which contacts nothing).
pub fn token_source(
    name: &str,
    reference: &SecretRef,
    timing: Option<SourceTiming>,
) -> Result<Arc<TokenSource>, String> {
    let key_file = KeyFile::from_ref(reference)?;
    check(&key_file)?;
    let Some(timing) = timing else {
        return Ok(Arc::new(TokenSource::unstarted()));
    };
    registry().get_or_start(settings_key(&key_file), || {
        let stats = crate::metrics::global().credentials().register(name);
        let fetcher = ServiceAccountTokens::new(key_file, timing.fetch_timeout);
        CredentialSource::start(name, fetcher, timing, stats)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SA_JSON: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/google/service-account.json"
    ));

    #[test]
    fn a_literal_service_account_is_refused() {
        let literal = SecretRef::parse("{\"type\":\"service_account\"}").unwrap();
        let err = KeyFile::from_ref(&literal).unwrap_err();
        assert!(err.contains("file:PATH"), "{err}");
        assert!(!err.contains("service_account\""), "{err}");
    }

    #[test]
    fn the_json_may_come_from_an_environment_variable() {
        let name = "CF_TEST_GOOGLE_SOURCE_SA_JSON";
        std::env::set_var(name, SA_JSON);
        let key_file = KeyFile::from_ref(&SecretRef::Env(name.into())).unwrap();
        check(&key_file).unwrap();
        let account = key_file.load().unwrap();
        assert!(account.client_email().contains('@'));
        std::env::set_var(name, "{\"type\":\"service_account\"}");
        let err = check(&key_file).unwrap_err();
        assert!(
            err.starts_with("env:CF_TEST_GOOGLE_SOURCE_SA_JSON: "),
            "{err}"
        );
        std::env::remove_var(name);
    }

    #[test]
    fn an_unreadable_file_is_named_and_settings_keys_follow_the_reference() {
        let missing = KeyFile::File(PathBuf::from("/nonexistent/sa.json"));
        let err = check(&missing).unwrap_err();
        assert!(err.contains("/nonexistent/sa.json"), "{err}");
        let other = KeyFile::File(PathBuf::from("/other/sa.json"));
        assert_eq!(settings_key(&missing), settings_key(&missing.clone()));
        assert_ne!(settings_key(&missing), settings_key(&other));
        assert_ne!(
            settings_key(&missing),
            settings_key(&KeyFile::Env("SA".into()))
        );
    }
}
