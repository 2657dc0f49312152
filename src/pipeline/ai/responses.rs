//! `POST /v1/responses`, the OpenAI Responses API: its body rewritten as the canonical chat
//! request (see [`crate::ai::responses`]), so from the prompt phase on it is a chat (the
//! same `on_prompt`, limits, budgets, fallbacks and meters, for every provider kind), and
//! the answer rewritten as a Response object or the Responses event stream.
//!
//! On a provider that has the Responses API (`[[provider]] responses = "native"`) the
//! client's body goes to it as it is instead, model renamed, and its answer comes back as it
//! is, but for the client-facing model name ([`crate::ai::responses::ResponsesRelay`]).
//! An `on_prompt` hook keeps the request on the translation even there: its edits are made
//! to the chat, which only the translated request carries. A request with built-in tools
//! or input items with no chat equivalent (`reasoning`, `web_search_call`, ...) cannot be
//! translated, so it reaches native models only.

use serde_json::{Map, Value};

use super::call::Call;
use crate::ai::providers::ClientStage;
use crate::ai::responses::{self, Echo, Naming, ResponsesStream};
use crate::ai::{openai, Provider, TranslateError, Usage};
use crate::error::{Dialect, GatewayError};

/// How a call's answer is rewritten for the Responses front door.
#[derive(Debug, Clone)]
pub(super) struct ResponsesDoor {
    echo: Echo,
    /// The client's body, for providers with the Responses API; `None` once the request
    /// must be translated wherever it goes.
    native: Option<Map<String, Value>>,
    /// Why the request cannot be translated (it offers a built-in tool or carries an item
    /// only the Responses API takes), if it cannot.
    untranslatable: Option<String>,
}

/// The Responses body as a chat call, and what its answer repeats of it.
pub(super) fn parse(body: &[u8]) -> Result<(Call, ResponsesDoor), GatewayError> {
    let request =
        responses::parse_request(body).map_err(|e| GatewayError::InvalidRequest(e.to_string()))?;
    let untranslatable = request.untranslatable().map(|e| e.0);
    let chat = serde_json::to_vec(&request.chat).expect("JSON maps serialize");
    // A chat left empty by items only a native provider takes is refused for those items.
    let request_chat = openai::parse_chat_request(&chat).map_err(|e| {
        GatewayError::InvalidRequest(untranslatable.clone().unwrap_or_else(|| e.to_string()))
    })?;
    let call = Call {
        front: Dialect::OpenAi,
        request: request_chat,
        anthropic_body: None,
    };
    let door = ResponsesDoor {
        echo: request.echo,
        native: Some(request.native),
        untranslatable,
    };
    Ok((call, door))
}

impl ResponsesDoor {
    /// Sends the request translated wherever it goes: an `on_prompt` hook saw (and may have
    /// changed) the chat, which only the translation carries.
    pub fn translate_only(&mut self) {
        self.native = None;
    }

    /// The client's body to send to `provider` as it is, when the provider has the
    /// Responses API and the request is not bound to the translation.
    pub fn native_body(&self, provider: &Provider) -> Option<&Map<String, Value>> {
        self.native.as_ref().filter(|_| provider.responses_native)
    }

    /// Why the request cannot go to a provider through the translation, if it cannot.
    pub fn translation_refused(&self) -> Option<GatewayError> {
        self.untranslatable
            .as_ref()
            .map(|why| GatewayError::InvalidRequest(why.clone()))
    }

    /// A whole canonical chat completion as the Response object.
    pub fn answer(
        &self,
        chat: &[u8],
        usage: Option<Usage>,
        naming: &Naming<'_>,
    ) -> Result<Vec<u8>, TranslateError> {
        responses::response_from_chat(chat, usage, &self.echo, naming)
    }

    /// The stage that turns canonical chunks into the Responses event stream.
    pub fn stage(&self, naming: &Naming<'_>) -> Box<dyn ClientStage> {
        Box::new(ResponsesStream::new(naming, self.echo.clone()))
    }
}
