//! Prompt endpoints: each `[[prompt]]` is a versioned template served at
//! `POST /prompts/{name}` (highest version) and `POST /prompts/{name}/v{N}`. A JSON object of
//! variables comes in; the rendered chat request goes to the prompt's model like any other.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::config::PromptConfig;

/// Every prompt of one config, by name, versions ascending.
#[derive(Debug, Default)]
pub struct Prompts {
    by_name: HashMap<String, Vec<PromptConfig>>,
}

/// Why a prompt call cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptError {
    /// The body is not a JSON object of variables.
    NotAnObject,
    /// The template uses a variable the body does not give.
    MissingVariable(String),
}

impl std::fmt::Display for PromptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PromptError::NotAnObject => {
                f.write_str("the request body must be a JSON object of template variables")
            }
            PromptError::MissingVariable(name) => {
                write!(f, "missing template variable: '{name}'")
            }
        }
    }
}

impl Prompts {
    /// Indexes `prompts` (validated: names and versions are unique).
    pub fn new(prompts: &[PromptConfig]) -> Prompts {
        let mut by_name: HashMap<String, Vec<PromptConfig>> = HashMap::new();
        for p in prompts {
            by_name.entry(p.name.clone()).or_default().push(p.clone());
        }
        for versions in by_name.values_mut() {
            versions.sort_by_key(|p| p.version);
        }
        Prompts { by_name }
    }

    /// The prompt `name` at `version`, or its highest version when `None`.
    pub fn get(&self, name: &str, version: Option<u32>) -> Option<&PromptConfig> {
        let versions = self.by_name.get(name)?;
        match version {
            None => versions.last(),
            Some(v) => versions.iter().find(|p| p.version == v),
        }
    }
}

/// The endpoint path `/prompts/{name}` or `/prompts/{name}/v{N}` split into name and version.
pub fn parse_path(path: &str) -> Option<(&str, Option<u32>)> {
    let rest = path.strip_prefix("/prompts/")?;
    let (name, version) = match rest.split_once('/') {
        None => (rest, None),
        Some((name, v)) => (name, Some(v.strip_prefix('v')?.parse::<u32>().ok()?)),
    };
    (!name.is_empty()).then_some((name, version))
}

/// The OpenAI chat request a prompt call stands for: the system message, then the template
/// with each `{{var}}` replaced by the variable's value (strings as they are, other JSON
/// values as JSON text). Variables the template does not use are ignored.
pub fn render(
    prompt: &PromptConfig,
    variables: &Value,
    stream: bool,
) -> Result<Map<String, Value>, PromptError> {
    let vars = variables.as_object().ok_or(PromptError::NotAnObject)?;
    let user = fill(&prompt.template, vars)?;
    let mut messages = Vec::with_capacity(2);
    if !prompt.system.is_empty() {
        messages
            .push(serde_json::json!({ "role": "system", "content": fill(&prompt.system, vars)? }));
    }
    messages.push(serde_json::json!({ "role": "user", "content": user }));
    let mut request = Map::new();
    request.insert("model".into(), prompt.model.clone().into());
    request.insert("messages".into(), messages.into());
    if stream {
        request.insert("stream".into(), true.into());
    }
    Ok(request)
}

/// Replaces every `{{ name }}` in `template`; unknown names are an error naming them.
fn fill(template: &str, vars: &Map<String, Value>) -> Result<String, PromptError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return Ok(out);
        };
        let name = after[..close].trim();
        match vars.get(name) {
            Some(Value::String(s)) => out.push_str(s),
            Some(other) => out.push_str(&other.to_string()),
            None => return Err(PromptError::MissingVariable(name.to_string())),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prompt(version: u32, template: &str) -> PromptConfig {
        PromptConfig {
            name: "sentiment".into(),
            version,
            model: "gpt-4o-mini".into(),
            system: "You classify sentiment.".into(),
            template: template.into(),
        }
    }

    #[test]
    fn highest_version_is_served_without_a_version() {
        let prompts = Prompts::new(&[prompt(2, "b"), prompt(1, "a"), prompt(3, "c")]);
        assert_eq!(prompts.get("sentiment", None).unwrap().version, 3);
        assert_eq!(prompts.get("sentiment", Some(1)).unwrap().template, "a");
        assert!(prompts.get("sentiment", Some(9)).is_none());
        assert!(prompts.get("other", None).is_none());
    }

    #[test]
    fn paths_name_the_prompt_and_optional_version() {
        assert_eq!(parse_path("/prompts/echo"), Some(("echo", None)));
        assert_eq!(parse_path("/prompts/echo/v2"), Some(("echo", Some(2))));
        assert_eq!(parse_path("/prompts/echo/2"), None);
        assert_eq!(parse_path("/prompts/echo/vx"), None);
        assert_eq!(parse_path("/prompts/"), None);
        assert_eq!(parse_path("/v1/chat"), None);
    }

    #[test]
    fn render_fills_variables_and_ignores_extras() {
        let p = prompt(1, "Classify: {{text}} ({{ n }})");
        let req = render(
            &p,
            &json!({"text": "great day", "n": 3, "extra": true}),
            false,
        )
        .unwrap();
        assert_eq!(req["model"], "gpt-4o-mini");
        assert_eq!(req["messages"][0]["role"], "system");
        assert_eq!(req["messages"][1]["content"], "Classify: great day (3)");
        assert!(req.get("stream").is_none());
        assert_eq!(
            render(&p, &json!({"text": "x", "n": 1}), true).unwrap()["stream"],
            true
        );
    }

    #[test]
    fn missing_variable_is_named() {
        let p = prompt(1, "Classify: {{text}}");
        assert_eq!(
            render(&p, &json!({"other": 1}), false),
            Err(PromptError::MissingVariable("text".into()))
        );
        assert_eq!(
            render(&p, &json!([1]), false),
            Err(PromptError::NotAnObject)
        );
    }
}
