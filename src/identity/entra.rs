//! Microsoft Entra ID (Azure AD) application tokens: the OAuth2 client credentials grant at
//! `{authority}/{tenant_id}/oauth2/v2.0/token` (Microsoft identity platform, "OAuth 2.0
//! client credentials flow"), for Azure OpenAI with the scope
//! `https://cognitiveservices.azure.com/.default`. The secret goes in the body
//! (`client_secret_post`), as Microsoft documents it.

use std::sync::Arc;

use super::http::Endpoint;
use super::oauth2::{self, TokenSource};
use super::source::SourceTiming;
use crate::config::{EntraConfig, OAuth2AuthMethod, OAuth2Config, SecretWatcher};

/// Where Entra ID lives for the public cloud.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The scope of Azure OpenAI (Cognitive Services) tokens.
pub const COGNITIVE_SERVICES_SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// Entra ID application credentials (`[[provider]] entra`).
pub type EntraSettings = EntraConfig;

/// The token source of an `azure_openai` provider named `name`: with `timing`, the running
/// one shared by every holder of the same settings (the OAuth2 registry: an upstream with
/// the same token URL, client and scope uses the same thread and token), started when none
/// runs; without, the settings are only checked and a source that never has a token is
/// returned (for `credentialflow check`, which contacts nothing).
pub fn token_source(
    name: &str,
    entra: &EntraSettings,
    secrets: &SecretWatcher,
    timing: Option<SourceTiming>,
) -> Result<Arc<TokenSource>, String> {
    let cfg = oauth2_settings(entra)?;
    match timing {
        Some(timing) => oauth2::shared_source(name, &cfg, secrets, timing),
        None => oauth2::settings(&cfg, secrets, &SourceTiming::default())
            .map(|_| Arc::new(TokenSource::unstarted())),
    }
}

/// The client-credentials settings an Entra source runs on; checks the tenant (a path
/// segment: a GUID or a domain name, nothing that could change the URL) and the authority.
pub fn oauth2_settings(entra: &EntraSettings) -> Result<OAuth2Config, String> {
    let tenant = entra.tenant_id.trim();
    if tenant.is_empty()
        || !tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err("tenant_id: must be a tenant GUID or domain name".to_string());
    }
    let authority = match entra.authority.trim().trim_end_matches('/') {
        "" => DEFAULT_AUTHORITY,
        a => a,
    };
    let token_url = format!("{authority}/{tenant}/oauth2/v2.0/token");
    Endpoint::new(&token_url).map_err(|e| format!("authority: {e}"))?;
    if entra.client_id.trim().is_empty() {
        return Err("client_id: is required".to_string());
    }
    Ok(OAuth2Config {
        token_url,
        client_id: entra.client_id.trim().to_string(),
        client_secret: entra.client_secret.clone(),
        scope: COGNITIVE_SERVICES_SCOPE.to_string(),
        audience: String::new(),
        auth_method: OAuth2AuthMethod::Form,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretRef;

    fn entra(tenant: &str, authority: &str) -> EntraSettings {
        EntraSettings {
            tenant_id: tenant.into(),
            client_id: "app-id".into(),
            client_secret: SecretRef::Env("AZ_SECRET".into()),
            authority: authority.into(),
        }
    }

    #[test]
    fn the_token_url_and_scope_are_entras() {
        let cfg = oauth2_settings(&entra("72f988bf-86f1-41af-91ab-2d7cd011db47", "")).unwrap();
        assert_eq!(
            cfg.token_url,
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
        );
        assert_eq!(cfg.scope, COGNITIVE_SERVICES_SCOPE);
        assert_eq!(cfg.auth_method, OAuth2AuthMethod::Form);
        let cfg =
            oauth2_settings(&entra("contoso.onmicrosoft.com", "http://127.0.0.1:9/")).unwrap();
        assert_eq!(
            cfg.token_url,
            "http://127.0.0.1:9/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
    }

    #[test]
    fn a_tenant_that_would_change_the_url_is_refused() {
        for tenant in ["", "a/b", "x?y", "../common", "t#f"] {
            assert!(oauth2_settings(&entra(tenant, "")).is_err(), "{tenant:?}");
        }
    }
}
