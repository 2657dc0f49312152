//! Server-sent events: an incremental parser and an encoder, per the WHATWG HTML Living
//! Standard, section 9.2 "Server-sent events" (the "event stream interpretation" rules).
//!
//! The parser is built for relaying: every event keeps its exact bytes (`raw`), so a relay
//! that forwards events unchanged forwards the upstream's stream byte for byte, comments and
//! keep-alives included. The concatenation of every returned event's `raw` followed by
//! [`SseParser::finish`]'s leftover is exactly the bytes pushed.
//!
//! Memory: the parser holds at most the event in progress (bounded by `max_event_bytes`) plus
//! the complete events of the last [`SseParser::push`] that the caller has not taken yet.

use std::collections::VecDeque;
use std::fmt;

/// One event block of an event stream: the lines up to and including the blank line that
/// ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The last `event:` field's value; `None` when absent or empty (the spec's "message").
    pub event: Option<String>,
    /// The `data:` lines' values joined with `\n` (the spec's data buffer without its last LF).
    pub data: String,
    /// True when the block had at least one `data` field. The spec dispatches only such
    /// blocks; the others (comments such as keep-alives, lone blank lines) carry no event
    /// but are still returned so a relay can forward their bytes.
    pub has_data: bool,
    /// The exact bytes of the block, its blank line included.
    pub raw: Vec<u8>,
}

impl SseEvent {
    /// True for the OpenAI end-of-stream sentinel, `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.has_data && self.data == "[DONE]"
    }
}

/// Why a stream cannot be parsed further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// One event grew past the parser's `max_event_bytes` before its blank line.
    EventTooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::EventTooLarge { limit } => {
                write!(f, "a server-sent event is larger than {limit} bytes")
            }
        }
    }
}

impl std::error::Error for SseError {}

/// Incremental event-stream parser: feed byte slices split anywhere, take complete events.
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    /// Complete events not yet taken.
    ready: VecDeque<SseEvent>,
    /// Bytes of the event in progress.
    raw: Vec<u8>,
    /// Offset in `raw` where the line in progress starts.
    line_start: usize,
    /// The previous line ended with CR: an LF right after it belongs to that line end.
    skip_lf: bool,
    /// `raw` starts with the LF of a CRLF split across pushes whose CR ended the previous
    /// event: that byte is the previous event's, so it does not count toward this one's limit
    /// (the limit must not depend on where the reads were split).
    carried_lf: bool,
    /// Nothing seen yet: a leading byte order mark is skipped (spec: one U+FEFF at the start).
    at_stream_start: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseParser {
    /// A parser refusing events larger than `max_event_bytes` (raw bytes, blank line included
    /// except the LF of a final CRLF, so that the verdict does not depend on read boundaries).
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            max_event_bytes,
            ready: VecDeque::new(),
            raw: Vec::new(),
            line_start: 0,
            skip_lf: false,
            carried_lf: false,
            at_stream_start: true,
            event: None,
            data: String::new(),
            has_data: false,
        }
    }

    /// Parses `bytes`; complete events become available from [`SseParser::next_event`].
    /// Fails when the event in progress exceeds the size limit; the stream cannot go on then.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), SseError> {
        while !bytes.is_empty() {
            if self.skip_lf {
                self.skip_lf = false;
                if bytes[0] == b'\n' {
                    // The LF of a CRLF split across pushes: part of the line end already
                    // handled. If that line ended an event, the LF starts the next block's
                    // bytes (harmless: a client sees it as the same CRLF).
                    if self.raw.is_empty() {
                        self.carried_lf = true;
                    }
                    self.raw.push(b'\n');
                    self.line_start = self.raw.len();
                    bytes = &bytes[1..];
                    continue;
                }
            }
            let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.raw.extend_from_slice(bytes);
                break;
            };
            // Line end: LF, CRLF, or a lone CR (the spec accepts all three).
            let terminator = match (bytes[end], bytes.get(end + 1)) {
                (b'\r', Some(b'\n')) => 2,
                (b'\r', None) => {
                    self.skip_lf = true;
                    1
                }
                _ => 1,
            };
            let line_end_in_raw = self.raw.len() + end;
            self.raw.extend_from_slice(&bytes[..end + terminator]);
            bytes = &bytes[end + terminator..];
            // The LF of a CRLF ending the event is not counted: when a read splits that CRLF the
            // LF arrives after the event was taken (see `carried_lf`), and the limit must not
            // depend on where the reads were split.
            let final_lf = terminator == 2 && self.is_blank(line_end_in_raw);
            self.check_size(usize::from(final_lf))?;
            self.end_line(line_end_in_raw);
        }
        self.check_size(0)
    }

    /// The next complete event, in stream order.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.ready.pop_front()
    }

    /// Ends the stream. Complete events not yet taken stay available from
    /// [`SseParser::next_event`]. An event without its blank line is discarded, as the spec
    /// requires at end of stream; its bytes are returned so a relay can still forward them.
    pub fn finish(&mut self) -> Vec<u8> {
        self.line_start = 0;
        self.skip_lf = false;
        self.carried_lf = false;
        self.event = None;
        self.data.clear();
        self.has_data = false;
        std::mem::take(&mut self.raw)
    }

    /// Fails when the event in progress, less `uncounted` bytes at its end and a carried LF at
    /// its start, is over the limit.
    fn check_size(&self, uncounted: usize) -> Result<(), SseError> {
        let counted = self.raw.len() - usize::from(self.carried_lf) - uncounted;
        if counted > self.max_event_bytes {
            return Err(SseError::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    /// Whether the line `raw[line_start..line_end]` is blank (ends the event), as
    /// [`SseParser::end_line`] reads it.
    fn is_blank(&self, line_end: usize) -> bool {
        let line = &self.raw[self.line_start..line_end];
        line.is_empty() || (self.at_stream_start && line == BOM)
    }

    /// Interprets the line `raw[line_start..line_end]`; a blank line completes the event.
    fn end_line(&mut self, line_end: usize) {
        let mut line = &self.raw[self.line_start..line_end];
        if self.at_stream_start {
            self.at_stream_start = false;
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch();
            return;
        }
        self.line_start = self.raw.len();
        // A line starting with a colon is a comment; "field: value" drops one space after the
        // colon; a line without a colon is a field with an empty value (spec, 9.2.6).
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return,
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.has_data = true;
                self.data.push_str(&String::from_utf8_lossy(value));
            }
            b"event" => {
                self.event = (!value.is_empty()).then(|| String::from_utf8_lossy(value).into());
            }
            // `id` and `retry` matter to a reconnecting client, not to a relay; they stay in
            // `raw`. Unknown fields are ignored (spec).
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        let event = SseEvent {
            event: self.event.take(),
            data: std::mem::take(&mut self.data),
            has_data: std::mem::replace(&mut self.has_data, false),
            raw: std::mem::take(&mut self.raw),
        };
        self.line_start = 0;
        self.carried_lf = false;
        self.ready.push_back(event);
    }
}

/// Appends one event: `event: <name>` when given, one `data:` line per line of `data` (split
/// at LF, CRLF or CR, which a data line cannot contain), then the blank line.
pub fn encode_event(event: Option<&str>, data: &str, out: &mut Vec<u8>) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        for part in line.strip_suffix('\r').unwrap_or(line).split('\r') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(part.as_bytes());
            out.push(b'\n');
        }
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> (Vec<SseEvent>, Vec<u8>) {
        let mut parser = SseParser::new(1 << 20);
        let mut events = Vec::new();
        for chunk in chunks {
            parser.push(chunk).unwrap();
            while let Some(event) = parser.next_event() {
                events.push(event);
            }
        }
        let leftover = parser.finish();
        (events, leftover)
    }

    fn datas(events: &[SseEvent]) -> Vec<(Option<&str>, &str)> {
        events
            .iter()
            .filter(|e| e.has_data)
            .map(|e| (e.event.as_deref(), e.data.as_str()))
            .collect()
    }

    const STREAM: &[u8] = b": hello\n\nevent: add\ndata: {\"a\":1}\n\ndata: line one\ndata: line two\nid: 7\n\ndata: [DONE]\n\n";

    #[test]
    fn events_are_parsed_with_their_type_and_data() {
        let (events, leftover) = parse_all(&[STREAM]);
        assert_eq!(
            datas(&events),
            [
                (Some("add"), "{\"a\":1}"),
                (None, "line one\nline two"),
                (None, "[DONE]")
            ]
        );
        assert!(leftover.is_empty());
    }

    #[test]
    fn raw_is_the_exact_bytes_of_each_block() {
        let (events, _) = parse_all(&[STREAM]);
        let raws: Vec<&[u8]> = events.iter().map(|e| e.raw.as_slice()).collect();
        assert_eq!(
            raws,
            [
                &b": hello\n\n"[..],
                b"event: add\ndata: {\"a\":1}\n\n",
                b"data: line one\ndata: line two\nid: 7\n\n",
                b"data: [DONE]\n\n"
            ]
        );
    }

    #[test]
    fn splitting_at_every_byte_position_gives_the_same_events() {
        let (whole, _) = parse_all(&[STREAM]);
        for cut in 0..=STREAM.len() {
            let (split, leftover) = parse_all(&[&STREAM[..cut], &STREAM[cut..]]);
            assert_eq!(split, whole, "cut at {cut}");
            assert!(leftover.is_empty());
        }
    }

    #[test]
    fn size_limit_does_not_depend_on_a_crlf_split_between_events() {
        // The second event is exactly at the limit; the LF of the first event's last CRLF
        // arriving in the next read must not push it over, also when a CRLF inside the second
        // event is split as well.
        let second = format!("data: {}\r\nid: 1\n\n", "x".repeat(24));
        let stream = format!("data: a\r\n\r\n{second}");
        let bytes = stream.as_bytes();
        let first_cut = "data: a\r\n\r".len();
        let inner_cut = stream.len() - "\nid: 1\n\n".len();
        let splits = [
            vec![bytes],
            vec![&bytes[..first_cut], &bytes[first_cut..]],
            vec![
                &bytes[..first_cut],
                &bytes[first_cut..inner_cut],
                &bytes[inner_cut..],
            ],
        ];
        for chunks in splits {
            let mut parser = SseParser::new(second.len());
            for chunk in chunks {
                parser.push(chunk).expect("every event is within the limit");
            }
            let events: Vec<SseEvent> = std::iter::from_fn(|| parser.next_event()).collect();
            assert_eq!(
                datas(&events),
                [(None, "a"), (None, "x".repeat(24).as_str())]
            );
        }
    }

    #[test]
    fn size_limit_does_not_depend_on_a_split_final_crlf() {
        // With its final CRLF the event is one byte over the limit: the LF does not count,
        // whether it arrives in the same read as the CR or in the next one.
        let stream = format!("data: {}\r\n\r\n", "x".repeat(20));
        let limit = stream.len() - 1;
        let (head, tail) = stream.as_bytes().split_at(limit);
        for chunks in [vec![stream.as_bytes()], vec![head, tail]] {
            let mut parser = SseParser::new(limit);
            for chunk in chunks {
                parser.push(chunk).expect("the final LF is not counted");
            }
            assert_eq!(parser.next_event().map(|e| e.data), Some("x".repeat(20)));
        }
        assert!(SseParser::new(limit - 1).push(stream.as_bytes()).is_err());
    }

    #[test]
    fn byte_by_byte_feeding_gives_the_same_events() {
        let (whole, _) = parse_all(&[STREAM]);
        let chunks: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(parse_all(&chunks).0, whole);
    }

    #[test]
    fn crlf_and_cr_line_ends_are_accepted() {
        let crlf = b"event: x\r\ndata: a\r\ndata: b\r\n\r\ndata: c\r\rdata: d\n\n";
        let (events, _) = parse_all(&[crlf]);
        assert_eq!(
            datas(&events),
            [(Some("x"), "a\nb"), (None, "c"), (None, "d")]
        );
        assert_eq!(events[0].raw, b"event: x\r\ndata: a\r\ndata: b\r\n\r\n");
    }

    #[test]
    fn crlf_split_at_every_position_keeps_events_and_bytes() {
        let crlf: &[u8] = b"data: a\r\n\r\nevent: e\r\ndata: b\r\n\r\n";
        let (whole, _) = parse_all(&[crlf]);
        for cut in 0..=crlf.len() {
            let (split, leftover) = parse_all(&[&crlf[..cut], &crlf[cut..]]);
            assert_eq!(datas(&split), datas(&whole), "cut at {cut}");
            let mut bytes: Vec<u8> = split.iter().flat_map(|e| e.raw.clone()).collect();
            bytes.extend_from_slice(&leftover);
            assert_eq!(bytes, crlf, "cut at {cut}");
        }
    }

    #[test]
    fn comments_stay_in_raw_but_not_in_data() {
        let (events, _) = parse_all(&[b": keep-alive\ndata: x\n: mid\n\n"]);
        assert_eq!(events[0].data, "x");
        assert_eq!(events[0].raw, b": keep-alive\ndata: x\n: mid\n\n");
    }

    #[test]
    fn comment_only_block_is_returned_without_data() {
        let (events, _) = parse_all(&[b": ping\n\n"]);
        assert_eq!(events.len(), 1);
        assert!(!events[0].has_data);
        assert_eq!(events[0].raw, b": ping\n\n");
    }

    #[test]
    fn blocks_with_fields_but_no_data_carry_no_event() {
        let (events, _) = parse_all(&[b"event: ping\n\nretry: 5\n\nid: 3\n\n"]);
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| !e.has_data));
    }

    #[test]
    fn fields_that_only_start_like_data_are_not_data() {
        let (events, _) = parse_all(&[b"datum: 1\n\ndat: 1\n\ndatas: 1\n\ndata: 2\n\n"]);
        assert_eq!(datas(&events), [(None, "2")]);
    }

    #[test]
    fn empty_data_field_is_an_event_with_empty_data() {
        let (events, _) = parse_all(&[b"data\n\ndata:\n\n"]);
        assert_eq!(datas(&events), [(None, ""), (None, "")]);
    }

    #[test]
    fn only_one_space_after_the_colon_is_removed() {
        let (events, _) = parse_all(&[b"data:  two\ndata:none\n\n"]);
        assert_eq!(events[0].data, " two\nnone");
    }

    #[test]
    fn leading_byte_order_mark_is_ignored() {
        let (events, _) = parse_all(&[b"\xEF\xBB\xBFdata: x\n\n"]);
        assert_eq!(datas(&events), [(None, "x")]);
        assert_eq!(events[0].raw, b"\xEF\xBB\xBFdata: x\n\n");
    }

    #[test]
    fn event_without_blank_line_at_end_is_discarded_but_its_bytes_are_returned() {
        let (events, leftover) = parse_all(&[b"data: a\n\ndata: partial\n"]);
        assert_eq!(datas(&events), [(None, "a")]);
        assert_eq!(leftover, b"data: partial\n");
    }

    #[test]
    fn event_larger_than_the_limit_is_an_error() {
        let mut parser = SseParser::new(16);
        assert_eq!(parser.push(b"data: 0123456"), Ok(()));
        assert_eq!(
            parser.push(b"789abcdef"),
            Err(SseError::EventTooLarge { limit: 16 })
        );
    }

    #[test]
    fn many_small_events_in_one_push_do_not_count_against_the_limit() {
        let mut parser = SseParser::new(16);
        parser.push(b"data: a\n\ndata: b\n\ndata: c\n\n").unwrap();
        let mut count = 0;
        while parser.next_event().is_some() {
            count += 1;
        }
        assert_eq!(count, 3);
    }

    #[test]
    fn done_sentinel_is_recognised() {
        let (events, _) = parse_all(&[b"data: [DONE]\n\ndata: x\n\n"]);
        assert!(events[0].is_done());
        assert!(!events[1].is_done());
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let (events, _) = parse_all(&[b"data: a\xFFb\n\n"]);
        assert_eq!(events[0].data, "a\u{FFFD}b");
    }

    #[test]
    fn encode_event_writes_type_and_one_data_line_per_line() {
        let mut out = Vec::new();
        encode_event(Some("delta"), "a\nb", &mut out);
        encode_event(None, "{}", &mut out);
        assert_eq!(out, b"event: delta\ndata: a\ndata: b\n\ndata: {}\n\n");
    }

    #[test]
    fn encoded_events_parse_back_to_the_same_data() {
        let mut out = Vec::new();
        encode_event(Some("e"), "x\r\ny\rz", &mut out);
        encode_event(None, "", &mut out);
        let (events, _) = parse_all(&[&out]);
        assert_eq!(datas(&events), [(Some("e"), "x\ny\nz"), (None, "")]);
    }
}
