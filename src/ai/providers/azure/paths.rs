//! Azure OpenAI (`kind = "azure_openai"`): OpenAI-format bodies on Azure's deployment URLs.
//!
//! Azure addresses a model by the *deployment* the resource owner created, not by model name,
//! and every call names the REST API version: `POST {endpoint}/openai/deployments/
//! {deployment-id}/chat/completions?api-version={version}` (Azure OpenAI REST API reference,
//! "Data plane – inference"). The key goes in the `api-key` header (the caller sends it).
//! Request and response bodies are OpenAI's, so the functions of [`crate::ai::openai`] apply
//! unchanged; the `model` member Azure ignores (the deployment decides).

use crate::ai::providers::segment::encode_path_segment;

/// The `api-version` used when a provider sets none: `2024-10-21`, the latest generally
/// available version of the inference API when this was written (chat completions with tools,
/// `stream_options.include_usage`, structured outputs, embeddings).
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// The path of a chat completions call on `deployment` (the model's `upstream_model`):
/// `/openai/deployments/{deployment}/chat/completions?api-version={api_version}`.
pub fn chat_path(deployment: &str, api_version: &str) -> String {
    deployment_path(deployment, "chat/completions", api_version)
}

/// The path of an embeddings call on `deployment`:
/// `/openai/deployments/{deployment}/embeddings?api-version={api_version}`.
pub fn embeddings_path(deployment: &str, api_version: &str) -> String {
    deployment_path(deployment, "embeddings", api_version)
}

fn deployment_path(deployment: &str, operation: &str, api_version: &str) -> String {
    let version = if api_version.is_empty() {
        DEFAULT_API_VERSION
    } else {
        api_version
    };
    format!(
        "/openai/deployments/{}/{operation}?api-version={}",
        encode_path_segment(deployment),
        encode_path_segment(version)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_path_names_deployment_and_api_version() {
        assert_eq!(
            chat_path("gpt-4o-prod", "2024-10-21"),
            "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
        );
    }

    #[test]
    fn embeddings_path_names_deployment_and_api_version() {
        assert_eq!(
            embeddings_path("embed-small", "2024-06-01"),
            "/openai/deployments/embed-small/embeddings?api-version=2024-06-01"
        );
    }

    #[test]
    fn empty_api_version_takes_the_default() {
        assert_eq!(
            chat_path("d", ""),
            format!("/openai/deployments/d/chat/completions?api-version={DEFAULT_API_VERSION}")
        );
    }

    #[test]
    fn deployment_name_cannot_escape_its_segment() {
        assert_eq!(
            chat_path("../x/y?z#w %", "v&1"),
            "/openai/deployments/..%2Fx%2Fy%3Fz%23w%20%25/chat/completions?api-version=v%261"
        );
    }
}
