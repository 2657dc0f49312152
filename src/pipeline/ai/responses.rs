//! `POST /v1/responses`, the OpenAI Responses API: its body rewritten as the canonical chat
//! request (see [`crate::ai::responses`]), so from the prompt phase on it is a chat (the
//! same `on_prompt`, limits, budgets, fallbacks and meters, for every provider kind), and
//! the answer rewritten as a Response object or the Responses event stream.

use super::call::Call;
use crate::ai::providers::ClientStage;
use crate::ai::responses::{self, Echo, Naming, ResponsesStream};
use crate::ai::{openai, TranslateError, Usage};
use crate::error::{Dialect, GatewayError};

/// How a call's answer is rewritten for the Responses front door.
#[derive(Debug, Clone)]
pub(super) struct ResponsesDoor {
    echo: Echo,
}

/// The Responses body as a chat call, and what its answer repeats of it.
pub(super) fn parse(body: &[u8]) -> Result<(Call, ResponsesDoor), GatewayError> {
    let request =
        responses::parse_request(body).map_err(|e| GatewayError::InvalidRequest(e.to_string()))?;
    let chat = serde_json::to_vec(&request.chat).expect("JSON maps serialize");
    let request_chat = openai::parse_chat_request(&chat)
        .map_err(|e| GatewayError::InvalidRequest(e.to_string()))?;
    let call = Call {
        front: Dialect::OpenAi,
        request: request_chat,
        anthropic_body: None,
    };
    Ok((call, ResponsesDoor { echo: request.echo }))
}

impl ResponsesDoor {
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
