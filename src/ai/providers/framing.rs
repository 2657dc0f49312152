//! How a provider's streamed answer is framed on the wire: server-sent events (every provider
//! but one), or AWS event-stream binary frames (Bedrock's ConverseStream). Either way the
//! relay gets [`SseEvent`]s, one per event or frame, for the provider's stream stage.

use super::bedrock::frames::event_from_message;
use super::bedrock::EVENT_STREAM_CONTENT_TYPE;
use crate::ai::sse::{SseEvent, SseParser};
use crate::identity::eventstream::{Decoder, Limits};

/// An incremental reader of one streamed answer.
pub enum StreamFraming {
    /// `text/event-stream`.
    Sse(SseParser),
    /// `application/vnd.amazon.eventstream`: prelude, header and message CRCs checked.
    AwsEventStream(Decoder),
}

impl StreamFraming {
    /// The reader for an answer of `content_type`, no event or frame larger than `max_event`.
    pub fn for_content_type(content_type: Option<&[u8]>, max_event: usize) -> StreamFraming {
        if is_aws_event_stream(content_type) {
            let max = u32::try_from(max_event).unwrap_or(u32::MAX);
            let defaults = Limits::default();
            StreamFraming::AwsEventStream(Decoder::with_limits(Limits {
                max_message_len: max,
                max_headers_len: defaults.max_headers_len.min(max),
            }))
        } else {
            StreamFraming::Sse(SseParser::new(max_event))
        }
    }

    /// Adds bytes that arrived; an error means the stream cannot be read further (an event
    /// over the bound; for event streams, also a bad frame, which is found on
    /// [`StreamFraming::next_event`]).
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), String> {
        match self {
            StreamFraming::Sse(parser) => parser.push(bytes).map_err(|e| format!("{e:?}")),
            StreamFraming::AwsEventStream(decoder) => {
                decoder.push(bytes);
                Ok(())
            }
        }
    }

    /// The next complete event; `Ok(None)` when more bytes are needed, an error when a frame
    /// is broken (bad CRC, over a bound): the stream is then cut.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, String> {
        match self {
            StreamFraming::Sse(parser) => Ok(parser.next_event()),
            StreamFraming::AwsEventStream(decoder) => match decoder.next_message() {
                Ok(message) => Ok(message.as_ref().map(event_from_message)),
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

/// Whether `content_type` is AWS event-stream framing.
pub fn is_aws_event_stream(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|v| v.starts_with(EVENT_STREAM_CONTENT_TYPE.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::eventstream::{Header, HeaderValue, Message};

    #[test]
    fn the_content_type_picks_the_framing_and_frames_become_events() {
        let mut sse = StreamFraming::for_content_type(Some(b"text/event-stream"), 1024);
        sse.push(b"data: {}\n\n").unwrap();
        assert_eq!(sse.next_event().unwrap().unwrap().data, "{}");
        let mut aws =
            StreamFraming::for_content_type(Some(b"application/vnd.amazon.eventstream"), 1024);
        let frame = Message {
            headers: vec![
                Header {
                    name: ":message-type".into(),
                    value: HeaderValue::String("event".into()),
                },
                Header {
                    name: ":event-type".into(),
                    value: HeaderValue::String("messageStart".into()),
                },
            ],
            payload: b"{\"role\":\"assistant\"}".to_vec(),
        }
        .encode()
        .unwrap();
        let (head, tail) = frame.split_at(9);
        aws.push(head).unwrap();
        assert!(aws.next_event().unwrap().is_none(), "a split frame waits");
        aws.push(tail).unwrap();
        let event = aws.next_event().unwrap().unwrap();
        assert_eq!(event.event.as_deref(), Some("messageStart"));
        // A corrupted frame cuts the stream.
        let mut broken = frame.clone();
        *broken.last_mut().unwrap() ^= 1;
        aws.push(&broken).unwrap();
        assert!(aws.next_event().is_err());
    }

    #[test]
    fn a_frame_over_the_bound_is_refused_from_its_prelude() {
        let mut aws =
            StreamFraming::for_content_type(Some(b"application/vnd.amazon.eventstream"), 64);
        let frame = Message {
            headers: Vec::new(),
            payload: vec![b'x'; 100],
        }
        .encode()
        .unwrap();
        aws.push(&frame[..12]).unwrap();
        assert!(aws.next_event().is_err());
    }
}
