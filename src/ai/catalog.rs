//! The model catalog: `[[provider]]` and `[[model]]` compiled into what the AI front doors
//! look up per request (a model by its client-facing name, its provider's upstream and key).
//!
//! Built on the slow path (startup, reload) with every error collected; read without locks
//! on the hot path.

use std::collections::HashMap;
use std::sync::Arc;

use super::breaker::Breaker;
use super::providers::bedrock::AwsSigning;
use crate::config::{
    Config, HttpUrl, LiveSecret, MockOptions, ProviderConfig, ProviderKind, ResponsesApi,
    SecretWatcher,
};
use crate::identity::oauth2::TokenSource;
use crate::identity::sigv4::Credentials;
use crate::identity::source::{CredentialSource, SourceTiming};
use crate::identity::sts;
use crate::upstream::{pool_settings, TlsSettings, Upstream};

/// One `[[provider]]`, ready to be sent requests.
#[derive(Debug)]
pub struct Provider {
    /// The `[[provider]].name`.
    pub name: String,
    /// The API dialect it speaks.
    pub kind: ProviderKind,
    /// The implementation of that dialect: everything the pipeline asks of a provider.
    pub api: &'static dyn super::providers::Provider,
    /// Where its requests go; `None` for `kind = "mock"` (served in-process, no network).
    pub upstream: Option<Arc<Upstream>>,
    /// The path part of `base_url` without a trailing slash: `""` for
    /// `https://api.openai.com`, `"/openai"` for `http://h:1/openai/`. Provider paths such as
    /// `/v1/chat/completions` are appended to it.
    pub base_path: String,
    /// The provider's API key; the caller injects it in the provider's header.
    pub api_key: Option<LiveSecret>,
    /// The source of the bearer token sent instead of a key (`entra`): read per request,
    /// asked for a fresh token when the provider answers 401.
    pub token: Option<Arc<TokenSource>>,
    /// How each request is SigV4-signed (`bedrock`): the credential source and region.
    pub aws: Option<Arc<AwsSigning>>,
    /// Azure's `api-version`.
    pub api_version: String,
    /// The mock's pacing.
    pub mock: MockOptions,
    /// Whether `POST /v1/responses` is sent to the provider's own Responses API rather than
    /// translated (`[[provider]] responses`, see [`ProviderConfig::responses_api`]).
    pub responses_native: bool,
    /// Skips the provider after repeated failures; carried across reloads by provider name
    /// and endpoint (see [`Provider::endpoint`]).
    pub breaker: Arc<Breaker>,
}

impl Provider {
    /// What the provider's state belongs to besides its name: where its requests go
    /// (`host:port` and base path; `""` for the in-process mock). A reload that points the
    /// provider elsewhere starts it with a fresh circuit breaker.
    pub fn endpoint(&self) -> String {
        match &self.upstream {
            Some(up) => format!("{}{}", up.targets[0].authority, self.base_path),
            None => String::new(),
        }
    }

    /// The implementation that serves `upstream_model` on this provider: [`Provider::api`],
    /// or the one a provider hosting several APIs picks for the model (Vertex AI's
    /// publishers).
    pub fn api_for(&self, upstream_model: &str) -> &'static dyn super::providers::Provider {
        self.api.for_model(upstream_model).unwrap_or(self.api)
    }

    /// Where a call for `upstream_model` goes on this provider.
    pub fn target<'a>(&'a self, upstream_model: &'a str) -> super::providers::Target<'a> {
        super::providers::Target {
            base_path: &self.base_path,
            upstream_model,
            api_version: &self.api_version,
        }
    }
}

/// One `[[model]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// What clients ask for.
    pub name: String,
    /// Index of its provider (see [`Catalog::provider`]).
    pub provider: usize,
    /// The model name sent to the provider (the config's `upstream_model`, else `name`).
    pub upstream_model: String,
    /// USD per million input tokens.
    pub input_price_per_mtok: f64,
    /// USD per million output tokens.
    pub output_price_per_mtok: f64,
    /// USD per million prompt-cache-read tokens; `None` = the input price.
    pub cached_input_price_per_mtok: Option<f64>,
    /// Models to try in order when this one fails, as indexes into [`Catalog::models`].
    pub fallbacks: Vec<usize>,
}

/// Every provider and model of one config.
#[derive(Debug, Default)]
pub struct Catalog {
    providers: Vec<Provider>,
    models: Vec<Model>,
    by_name: HashMap<String, usize>,
}

impl Catalog {
    /// Compiles the config's providers and models: parses each `base_url`, resolves its host
    /// (blocking DNS: this runs off the data plane), builds TLS settings, registers API keys
    /// with `secrets` and resolves model references. Returns every error, each prefixed with
    /// its key path (`provider[0].base_url: ...`, `model[2].fallbacks[0]: ...`).
    pub fn build(config: &Config, secrets: &SecretWatcher) -> Result<Catalog, Vec<String>> {
        Catalog::build_with(config, secrets, Some(SourceTiming::default()))
    }

    /// [`Catalog::build`] with the timing of the providers' token sources; `None` checks
    /// their settings without starting them (`credentialflow check` contacts nothing).
    pub fn build_with(
        config: &Config,
        secrets: &SecretWatcher,
        sources: Option<SourceTiming>,
    ) -> Result<Catalog, Vec<String>> {
        let mut errors = Vec::new();
        let mut providers = Vec::with_capacity(config.provider.len());
        let mut provider_index = HashMap::new();
        for (i, cfg) in config.provider.iter().enumerate() {
            if provider_index.insert(cfg.name.as_str(), i).is_some() {
                errors.push(format!(
                    "provider[{i}].name: duplicate provider name `{}`",
                    cfg.name
                ));
            }
            match build_provider(i, cfg, config, secrets, sources) {
                Ok(provider) => providers.push(provider),
                Err(mut e) => errors.append(&mut e),
            }
        }

        let mut by_name = HashMap::with_capacity(config.model.len());
        for (i, model) in config.model.iter().enumerate() {
            if model.name.is_empty() {
                errors.push(format!("model[{i}].name: is required"));
            } else if by_name.insert(model.name.clone(), i).is_some() {
                errors.push(format!(
                    "model[{i}].name: duplicate model name `{}`",
                    model.name
                ));
            }
        }
        let mut models = Vec::with_capacity(config.model.len());
        for (i, cfg) in config.model.iter().enumerate() {
            let provider = match provider_index.get(cfg.provider.as_str()) {
                Some(&p) => p,
                None => {
                    errors.push(format!(
                        "model[{i}].provider: no [[provider]] named `{}`",
                        cfg.provider
                    ));
                    continue;
                }
            };
            let mut fallbacks = Vec::with_capacity(cfg.fallbacks.len());
            for (f, fallback) in cfg.fallbacks.iter().enumerate() {
                match by_name.get(fallback) {
                    Some(&m) if m == i => errors.push(format!(
                        "model[{i}].fallbacks[{f}]: a model cannot fall back to itself"
                    )),
                    Some(&m) => fallbacks.push(m),
                    None => errors.push(format!(
                        "model[{i}].fallbacks[{f}]: no [[model]] named `{fallback}`"
                    )),
                }
            }
            let upstream_model = if cfg.upstream_model.is_empty() {
                cfg.name.clone()
            } else {
                cfg.upstream_model.clone()
            };
            models.push(Model {
                name: cfg.name.clone(),
                provider,
                upstream_model,
                input_price_per_mtok: cfg.input_price_per_mtok,
                output_price_per_mtok: cfg.output_price_per_mtok,
                cached_input_price_per_mtok: cfg.cached_input_price_per_mtok,
                fallbacks,
            });
        }

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Catalog {
            providers,
            models,
            by_name,
        })
    }

    /// True when the config has no `[[model]]`: the AI front doors are not mounted.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The model a client asked for, with its index.
    pub fn model(&self, name: &str) -> Option<(usize, &Model)> {
        let &index = self.by_name.get(name)?;
        Some((index, &self.models[index]))
    }

    /// Every model, in config order.
    pub fn models(&self) -> &[Model] {
        &self.models
    }

    /// The provider at `index` (a [`Model::provider`]). Panics on an index not from this
    /// catalog.
    pub fn provider(&self, index: usize) -> &Provider {
        &self.providers[index]
    }

    /// Every provider, in config order.
    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// Every provider, for handing them their carried-over state while the catalog is being
    /// built into a snapshot.
    pub fn providers_mut(&mut self) -> &mut [Provider] {
        &mut self.providers
    }
}

/// Compiles `provider[i]`.
fn build_provider(
    i: usize,
    cfg: &ProviderConfig,
    config: &Config,
    secrets: &SecretWatcher,
    sources: Option<SourceTiming>,
) -> Result<Provider, Vec<String>> {
    let mut errors = Vec::new();
    let derived = match (cfg.base_url.is_empty(), cfg.kind) {
        (true, ProviderKind::Vertex) => crate::config::vertex_base_url(&cfg.region),
        (true, ProviderKind::Bedrock) => Some(crate::config::bedrock_base_url(&cfg.region)),
        (true, kind) => kind.default_base_url().map(str::to_string),
        (false, _) => None,
    };
    let base_url = derived.as_deref().unwrap_or(&cfg.base_url);
    let parsed = parse_base_url(base_url);
    let api = super::providers::for_kind(cfg.kind);
    let api_key = match &cfg.api_key {
        None => None,
        Some(secret) => match secrets.watch(secret) {
            Ok(live) => Some(live),
            Err(e) => {
                errors.push(format!("provider[{i}].api_key: {e}"));
                None
            }
        },
    };
    let token = match &cfg.entra {
        None => None,
        Some(entra) => {
            match crate::identity::entra::token_source(&cfg.name, entra, secrets, sources) {
                Ok(source) => Some(source),
                Err(e) => {
                    errors.push(format!("provider[{i}].entra.{e}"));
                    None
                }
            }
        }
    };
    let aws = match cfg.kind {
        ProviderKind::Bedrock => match aws_signing(cfg, secrets, sources) {
            Ok(signing) => Some(Arc::new(signing)),
            Err(e) => {
                errors.push(format!("provider[{i}].{e}"));
                None
            }
        },
        _ => None,
    };
    // Vertex AI: the service account's tokens (`entra` and `service_account` are each
    // refused on the other's kind by the config check).
    let token = match (&cfg.service_account, token) {
        (Some(account), None) if cfg.kind == ProviderKind::Vertex => {
            match crate::identity::google_source::token_source(&cfg.name, account, sources) {
                Ok(source) => Some(source),
                Err(e) => {
                    errors.push(format!("provider[{i}].service_account: {e}"));
                    None
                }
            }
        }
        (_, token) => token,
    };
    let (upstream, base_path) = match parsed {
        Err(e) => {
            errors.push(format!("provider[{i}].base_url: {e}"));
            (None, String::new())
        }
        // A provider served in-process (the mock): its base_url is never connected to.
        Ok(_) if api.is_local() => (None, String::new()),
        Ok(url) => match build_upstream(i, cfg, config, &url) {
            // Provider paths (`/v1/...`) are appended to it: a trailing slash would double.
            Ok(upstream) => {
                let mut base_path = url.path().trim_end_matches('/').to_string();
                if cfg.kind == ProviderKind::Vertex {
                    // Every Vertex call is under the project's location.
                    base_path.push_str(&super::providers::vertex::location_path(
                        &cfg.project,
                        &cfg.region,
                    ));
                }
                (Some(Arc::new(upstream)), base_path)
            }
            Err(e) => {
                errors.push(e);
                (None, String::new())
            }
        },
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Provider {
        name: cfg.name.clone(),
        kind: cfg.kind,
        api,
        upstream,
        base_path,
        api_key,
        token,
        aws,
        api_version: if cfg.api_version.is_empty() {
            super::providers::DEFAULT_API_VERSION.to_string()
        } else {
            cfg.api_version.clone()
        },
        mock: cfg.mock.clone(),
        responses_native: cfg.responses_api() == ResponsesApi::Native,
        breaker: Arc::new(Breaker::default()),
    })
}

/// The signing of a `bedrock` provider: its region and a credential source. With
/// `assume_role`, the temporary credentials of the role, from the STS source shared by every
/// holder of the same settings (started with `sources`; without, the settings and base keys
/// are only checked and a source that never has credentials stands in: `credentialflow
/// check` contacts nothing). Otherwise its static keys, as a source that never expires.
/// Errors name the key at fault, never a value.
fn aws_signing(
    cfg: &ProviderConfig,
    secrets: &SecretWatcher,
    sources: Option<SourceTiming>,
) -> Result<AwsSigning, String> {
    let source = match &cfg.assume_role {
        Some(role) => assumed_role_source(cfg, role, secrets, sources)?,
        None => Arc::new(CredentialSource::fixed(static_keys(cfg, secrets)?)),
    };
    AwsSigning::new(source, &cfg.region)
        .map_err(|_| "region: must be an AWS region name such as us-east-1".to_string())
}

/// The provider's own keys as written (`access_key_id`, `secret_access_key`, optional
/// `session_token`).
fn static_keys(cfg: &ProviderConfig, secrets: &SecretWatcher) -> Result<Credentials, String> {
    let value = |name: &str, secret: &Option<crate::config::SecretRef>| match secret {
        None => Ok(None),
        Some(secret) => secrets
            .watch(secret)
            .map(|live| Some(arc_swap::Guard::into_inner(live.current())))
            .map_err(|e| format!("{name}: {e}")),
    };
    let key_id = value("access_key_id", &cfg.access_key_id)?
        .ok_or("access_key_id: is required for kind = \"bedrock\"")?;
    let secret = value("secret_access_key", &cfg.secret_access_key)?
        .ok_or("secret_access_key: is required for kind = \"bedrock\"")?;
    Ok(match value("session_token", &cfg.session_token)? {
        None => Credentials::new(key_id.expose(), secret.expose()),
        Some(token) => {
            Credentials::with_session_token(key_id.expose(), secret.expose(), token.expose())
        }
    })
}

/// The STS `AssumeRole` source of `role`, signed with the provider's keys (which then only
/// ever sign STS requests). The STS endpoint's signing region, when its host names none (a
/// private endpoint), is the provider's.
fn assumed_role_source(
    cfg: &ProviderConfig,
    role: &crate::config::AssumeRoleConfig,
    secrets: &SecretWatcher,
    sources: Option<SourceTiming>,
) -> Result<Arc<CredentialSource<Credentials>>, String> {
    let settings = sts::AssumeRoleSettings {
        sts_url: role.sts_url.clone(),
        role_arn: role.role_arn.clone(),
        session_name: role.session_name.clone(),
        // Out of u32's range is out of STS's too: `check` refuses it by its range.
        duration_s: u32::try_from(role.duration_s).unwrap_or(u32::MAX),
        fallback_region: Some(cfg.region.clone()),
    };
    sts::check(&settings).map_err(|e| format!("assume_role.{e}"))?;
    let required = |name: &str, secret: &Option<crate::config::SecretRef>| {
        secret
            .clone()
            .ok_or_else(|| format!("{name}: is required for kind = \"bedrock\""))
    };
    let base = sts::BaseKeys {
        access_key_id: required("access_key_id", &cfg.access_key_id)?,
        secret_access_key: required("secret_access_key", &cfg.secret_access_key)?,
        session_token: cfg.session_token.clone(),
    };
    match sources {
        Some(timing) => sts::shared_source(&cfg.name, &settings, &base, secrets, timing),
        None => sts::settings(&settings, &base, secrets, &SourceTiming::default())
            .map(|_| Arc::new(CredentialSource::unstarted())),
    }
}

fn build_upstream(
    i: usize,
    cfg: &ProviderConfig,
    config: &Config,
    url: &HttpUrl,
) -> Result<Upstream, String> {
    let tls = if url.tls() {
        let ca_file = (!cfg.ca_file.is_empty()).then(|| config.resolve_path(&cfg.ca_file));
        let client = crate::tls::client_config(ca_file.as_deref())
            .map_err(|e| format!("provider[{i}].ca_file: {e}"))?;
        Some(TlsSettings {
            config: client,
            sni: None,
        })
    } else {
        None
    };
    Upstream::from_parts(&cfg.name, &[url.host_port().to_string()], tls, None)
        .map(|u| u.with_pool(pool_settings(cfg.keepalive, cfg.keepalive_timeout_ms)))
        .map_err(|e| format!("provider[{i}].base_url: {e}"))
}

/// Parses a provider's `base_url` with the one URL parser, then refuses a query: a provider
/// endpoint has no use for one, and a query is where a key would be smuggled in (keys go in
/// `api_key`).
fn parse_base_url(text: &str) -> Result<HttpUrl, String> {
    let url = HttpUrl::parse(text)?;
    if url.query().is_some() {
        return Err(format!("`{url}` must not have a query"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelConfig, SecretRef};
    use std::time::Duration;

    fn provider(name: &str, kind: ProviderKind, base_url: &str) -> ProviderConfig {
        ProviderConfig {
            name: name.into(),
            kind,
            base_url: base_url.into(),
            api_key: None,
            entra: None,
            project: String::new(),
            region: String::new(),
            service_account: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            assume_role: None,
            ca_file: String::new(),
            api_version: String::new(),
            mock: Default::default(),
            keepalive: 128,
            keepalive_timeout_ms: 30_000,
            responses: None,
        }
    }

    fn model(name: &str, provider: &str) -> ModelConfig {
        ModelConfig {
            name: name.into(),
            provider: provider.into(),
            ..ModelConfig::default()
        }
    }

    fn build(config: &Config) -> Result<Catalog, Vec<String>> {
        let secrets = SecretWatcher::with_poll_interval(Duration::from_secs(60));
        Catalog::build(config, &secrets)
    }

    fn two_providers() -> Config {
        let mut openai = provider("openai", ProviderKind::Openai, "http://127.0.0.1:9/openai/");
        openai.api_key = Some(SecretRef::parse("sk-test").unwrap());
        let mut fast = model("fast", "openai");
        fast.upstream_model = "gpt-4o-mini".into();
        fast.input_price_per_mtok = 0.15;
        fast.fallbacks = vec!["local".into()];
        Config {
            provider: vec![openai, provider("mock", ProviderKind::Mock, "")],
            model: vec![fast, model("local", "mock")],
            ..Config::default()
        }
    }

    #[test]
    fn models_are_found_by_name_with_resolved_provider_and_fallbacks() {
        let catalog = build(&two_providers()).unwrap();
        assert!(!catalog.is_empty());
        let (index, fast) = catalog.model("fast").unwrap();
        assert_eq!(index, 0);
        assert_eq!(fast.upstream_model, "gpt-4o-mini");
        assert_eq!(fast.input_price_per_mtok, 0.15);
        assert_eq!(fast.fallbacks, [1]);
        assert_eq!(catalog.provider(fast.provider).name, "openai");
        assert!(catalog.model("nope").is_none());
        assert_eq!(catalog.models().len(), 2);
    }

    #[test]
    fn upstream_model_defaults_to_the_name() {
        let catalog = build(&two_providers()).unwrap();
        assert_eq!(catalog.model("local").unwrap().1.upstream_model, "local");
    }

    #[test]
    fn http_provider_gets_an_upstream_its_base_path_and_key() {
        let catalog = build(&two_providers()).unwrap();
        let openai = catalog.provider(0);
        let upstream = openai.upstream.as_ref().unwrap();
        assert_eq!(upstream.targets[0].authority, "127.0.0.1:9");
        assert!(upstream.tls.is_none());
        assert_eq!(openai.base_path, "/openai");
        assert_eq!(
            openai.api_key.as_ref().unwrap().current().expose(),
            "sk-test"
        );
    }

    #[test]
    fn mock_provider_has_no_upstream() {
        let catalog = build(&two_providers()).unwrap();
        let mock = catalog.provider(1);
        assert_eq!(mock.kind, ProviderKind::Mock);
        assert!(mock.upstream.is_none());
        assert!(mock.api_key.is_none());
    }

    #[test]
    fn https_provider_gets_tls_and_the_default_port() {
        let config = Config {
            provider: vec![provider("p", ProviderKind::Openai, "https://127.0.0.1")],
            model: vec![model("m", "p")],
            ..Config::default()
        };
        let catalog = build(&config).unwrap();
        let upstream = catalog.provider(0).upstream.as_ref().unwrap();
        assert!(upstream.tls.is_some());
        assert_eq!(upstream.targets[0].authority, "127.0.0.1:443");
        assert_eq!(catalog.provider(0).base_path, "");
    }

    #[test]
    fn no_models_is_an_empty_catalog() {
        assert!(build(&Config::default()).unwrap().is_empty());
    }

    #[test]
    fn unknown_provider_and_fallback_and_duplicate_model_are_all_reported() {
        let mut config = two_providers();
        config.model.push(model("ghost", "nowhere"));
        config.model.push(model("fast", "mock"));
        config.model[1].fallbacks = vec!["missing".into()];
        let errors = build(&config).unwrap_err();
        assert_eq!(
            errors,
            [
                "model[3].name: duplicate model name `fast`",
                "model[1].fallbacks[0]: no [[model]] named `missing`",
                "model[2].provider: no [[provider]] named `nowhere`",
            ]
        );
    }

    #[test]
    fn bad_base_url_is_reported_with_its_key_path() {
        let config = Config {
            provider: vec![
                provider("a", ProviderKind::Openai, "ftp://x"),
                provider("b", ProviderKind::Openai, "http://user@h:1"),
                provider("c", ProviderKind::Openai, "http://h:99999"),
                // A line break would end the request line the base path is sent in.
                provider("d", ProviderKind::Openai, "http://h/v1\r\nx-injected: 1"),
            ],
            ..Config::default()
        };
        let errors = build(&config).unwrap_err();
        assert_eq!(errors.len(), 4);
        for (i, error) in errors.iter().enumerate() {
            assert!(
                error.starts_with(&format!("provider[{i}].base_url: ")),
                "{error}"
            );
        }
    }

    #[test]
    fn unreadable_api_key_is_reported_with_its_key_path() {
        let mut config = two_providers();
        config.provider[0].api_key =
            Some(SecretRef::parse("file:/nonexistent/credentialflow-key").unwrap());
        let errors = build(&config).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("provider[0].api_key: "),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn base_url_with_a_query_is_refused_without_showing_it() {
        let error = parse_base_url("http://h/v1?key=PW-planted").unwrap_err();
        assert_eq!(error, "`http://h/v1?***` must not have a query");
        let error = parse_base_url("http://h/?").unwrap_err();
        assert!(error.contains("must not have a query"), "{error}");
    }

    #[test]
    fn base_path_loses_its_trailing_slashes() {
        let config = Config {
            provider: vec![provider(
                "p",
                ProviderKind::Openai,
                "HTTP://[::1]:8080/a/b//",
            )],
            model: vec![model("m", "p")],
            ..Config::default()
        };
        let catalog = build(&config).unwrap();
        assert_eq!(catalog.provider(0).base_path, "/a/b");
        let upstream = catalog.provider(0).upstream.as_ref().unwrap();
        assert_eq!(upstream.targets[0].authority, "[::1]:8080");
    }
}
