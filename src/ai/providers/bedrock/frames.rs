//! Event-stream frames as events for a stream stage: Bedrock's `ConverseStream` answer is AWS
//! event-stream framing, not server-sent events, and each decoded frame becomes one
//! [`SseEvent`] so that the stage interface (and the relay around it) stays one.

use serde_json::json;

use crate::ai::sse::SseEvent;
use crate::identity::eventstream::Message;

/// The event name an `exception` frame gets, followed by its `:exception-type`
/// (`exception:throttlingException`).
pub const EXCEPTION_PREFIX: &str = "exception:";

/// One decoded frame as an event: an `event` frame named by its `:event-type` with its
/// payload as data; an `exception` frame named [`EXCEPTION_PREFIX`] and its
/// `:exception-type`, its payload (`{"message": ...}`) as data; an `error` frame (the
/// framing's own, with `:error-code` and `:error-message` headers) as an
/// `internalServerException` carrying that message.
pub fn event_from_message(message: &Message) -> SseEvent {
    let payload = || String::from_utf8_lossy(&message.payload).into_owned();
    let (event, data) = match message.header_str(":message-type") {
        Some("exception") => {
            let kind = message
                .header_str(":exception-type")
                .unwrap_or("internalServerException");
            (format!("{EXCEPTION_PREFIX}{kind}"), payload())
        }
        Some("error") => {
            let text = message.header_str(":error-message").unwrap_or_default();
            let data = json!({ "message": text }).to_string();
            (format!("{EXCEPTION_PREFIX}internalServerException"), data)
        }
        _ => (
            message
                .header_str(":event-type")
                .unwrap_or_default()
                .to_string(),
            payload(),
        ),
    };
    SseEvent {
        event: Some(event),
        data,
        has_data: true,
        raw: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::eventstream::{Header, HeaderValue};

    fn message(headers: &[(&str, &str)], payload: &str) -> Message {
        Message {
            headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: n.to_string(),
                    value: HeaderValue::String(v.to_string()),
                })
                .collect(),
            payload: payload.as_bytes().to_vec(),
        }
    }

    #[test]
    fn events_exceptions_and_errors_are_named_for_the_stage() {
        let event = event_from_message(&message(
            &[(":message-type", "event"), (":event-type", "metadata")],
            "{\"usage\":{}}",
        ));
        assert_eq!(event.event.as_deref(), Some("metadata"));
        assert_eq!(event.data, "{\"usage\":{}}");
        let exception = event_from_message(&message(
            &[
                (":message-type", "exception"),
                (":exception-type", "validationException"),
            ],
            "{\"message\":\"bad\"}",
        ));
        assert_eq!(
            exception.event.as_deref(),
            Some("exception:validationException")
        );
        let error = event_from_message(&message(
            &[
                (":message-type", "error"),
                (":error-code", "X"),
                (":error-message", "broke"),
            ],
            "",
        ));
        assert_eq!(
            error.event.as_deref(),
            Some("exception:internalServerException")
        );
        assert_eq!(error.data, "{\"message\":\"broke\"}");
    }
}
