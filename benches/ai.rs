//! AI path benchmarks: server-sent event parsing, per-event stream translation, request
//! translation between the OpenAI, Anthropic and Gemini formats, and prompt token counts
//! (the shipped BPE against tiktoken-rs) and estimates.
//!
//! Fixtures are what the gateway sees in practice: a ~2 KiB multi-turn chat with a tool
//! definition and a tool round trip, and one typical mid-stream event per provider (a short
//! text delta). Stream translators are primed with the stream's opening events first, so the
//! figures are the steady state that every further event of a reply pays.
//!
//! Kept short on purpose (small samples, 1 s measurement): `cargo bench --bench ai`.

use std::hint::black_box;
use std::time::Duration;

use credentialflow::ai::openai::{parse_chat_request, upstream_chat_body};
use credentialflow::ai::providers::{anthropic, gemini};
use credentialflow::ai::tokens::estimate_chat_prompt_tokens;
use credentialflow::ai::tokens::warm_up;
use credentialflow::ai::{ChatStreamRelay, SseEvent, SseParser, TokenCounter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Value};

/// The event size limit the pipeline gives its parsers.
const MAX_EVENT: usize = 4 * 1024 * 1024;

/// `created` of the translated chunks (2026-03-15T12:00:00Z).
const CREATED: i64 = 1_773_576_000;

/// One mid-stream OpenAI chunk as an upstream sends it when asked for usage
/// (`stream_options.include_usage`: every chunk but the last carries `"usage":null`).
const OPENAI_CHUNK: &[u8] = b"data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\",\"created\":1773576000,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" the\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n";

/// The first OpenAI chunk of a reply: the assistant role, no content yet.
const OPENAI_ROLE_CHUNK: &[u8] = b"data: {\"id\":\"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT\",\"object\":\"chat.completion.chunk\",\"created\":1773576000,\"model\":\"gpt-4o-2024-08-06\",\"service_tier\":\"default\",\"system_fingerprint\":\"fp_f9f4fb6dbf\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n";

/// The opening events of an Anthropic Messages stream, up to the first text block.
const ANTHROPIC_OPENING: &[u8] = b"event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01XFDUDYJgAACzvnptvVoYEL\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-20250929\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":512,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n";

/// One mid-stream Anthropic text delta.
const ANTHROPIC_DELTA: &[u8] = b"event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" the reservation is corrected\"}}\n\n";

/// One mid-stream Gemini `streamGenerateContent?alt=sse` event: a text part and the running
/// usage (Gemini sends bigger pieces per event than OpenAI does).
const GEMINI_EVENT: &[u8] = b"data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" it counts the prompt with the model's tokenizer where one is known, reserves the\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 512,\"totalTokenCount\": 512,\"promptTokensDetails\": [{\"modality\": \"TEXT\",\"tokenCount\": 512}]},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"e6vLaNCYOYeBmNAPv5-T2QI\"}\n\n";

/// The single event in `bytes`, parsed.
fn event_of(bytes: &[u8]) -> SseEvent {
    let events = events_of(bytes);
    assert_eq!(events.len(), 1, "one event expected");
    events.into_iter().next().expect("one event")
}

/// Every event in `bytes`, parsed.
fn events_of(bytes: &[u8]) -> Vec<SseEvent> {
    let mut parser = SseParser::new(MAX_EVENT);
    parser.push(bytes).expect("valid event stream");
    std::iter::from_fn(|| parser.next_event()).collect()
}

/// Checks that `out` holds exactly one event whose data contains `marker`: the steady state
/// being measured is the one intended.
fn assert_one_event_with(out: &[u8], marker: &str) {
    let events = events_of(out);
    assert_eq!(events.len(), 1, "{}", String::from_utf8_lossy(out));
    assert!(events[0].data.contains(marker), "{}", events[0].data);
}

/// A streaming OpenAI chat request of about 2 KiB: a system prompt, a user question, an
/// assistant tool call with its result, the assistant's answer, a follow-up, and the tool's
/// definition.
fn openai_chat() -> Vec<u8> {
    let body = json!({
        "model": "gpt-4o",
        "stream": true,
        "stream_options": {"include_usage": true},
        "temperature": 0.3,
        "max_completion_tokens": 512,
        "user": "team-platform",
        "messages": [
            {"role": "system", "content": "You are a concise assistant for an internal engineering team. Answer in plain English, cite the handbook section you rely on, and say so when you are unsure. Prefer short paragraphs over lists."},
            {"role": "user", "content": "Our gateway limits tokens per minute per key. How should it estimate the prompt size before the provider reports usage, and what happens when the estimate is wrong?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_5jq0Gx0Ch1sWYyE2PyLEpZx8", "type": "function", "function": {"name": "search_handbook", "arguments": "{\"query\":\"token estimate rate limit reservation\",\"max_results\":3}"}}]},
            {"role": "tool", "tool_call_id": "call_5jq0Gx0Ch1sWYyE2PyLEpZx8", "content": "[{\"section\":\"4.2 Token budgets\",\"text\":\"Prompt tokens are estimated with the model's tokenizer when known, else at four bytes per token. The requested completion cap is reserved on top.\"},{\"section\":\"4.3 Settlement\",\"text\":\"When the provider reports usage, the reservation is corrected: unused tokens are refunded, overruns are charged.\"}]"},
            {"role": "assistant", "content": "It counts the prompt with the model's tokenizer where one is known (4.2), reserves the requested completion cap, and corrects the reservation with the reported usage afterwards, refunding or charging the difference (4.3)."},
            {"role": "user", "content": "And for models whose tokenizer we do not ship? Is the byte estimate close enough in practice, and can a client game it by sending a huge max_tokens?"}
        ],
        "tools": [{"type": "function", "function": {
            "name": "search_handbook",
            "description": "Search the engineering handbook and return the best matching sections with their text.",
            "parameters": {"type": "object", "properties": {
                "query": {"type": "string", "description": "What to look for, in plain words."},
                "max_results": {"type": "integer", "minimum": 1, "maximum": 10}
            }, "required": ["query"]}
        }}],
        "tool_choice": "auto"
    });
    let bytes = serde_json::to_vec(&body).expect("serialize fixture");
    assert!(
        (1_900..2_300).contains(&bytes.len()),
        "{} bytes",
        bytes.len()
    );
    bytes
}

/// The same conversation as an Anthropic Messages request (about 2 KiB).
fn anthropic_messages() -> Vec<u8> {
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 512,
        "stream": true,
        "temperature": 0.3,
        "metadata": {"user_id": "team-platform"},
        "system": "You are a concise assistant for an internal engineering team. Answer in plain English, cite the handbook section you rely on, and say so when you are unsure. Prefer short paragraphs over lists.",
        "messages": [
            {"role": "user", "content": "Our gateway limits tokens per minute per key. How should it estimate the prompt size before the provider reports usage, and what happens when the estimate is wrong?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look that up in the handbook."},
                {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "search_handbook", "input": {"query": "token estimate rate limit reservation", "max_results": 3}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": "[{\"section\":\"4.2 Token budgets\",\"text\":\"Prompt tokens are estimated with the model's tokenizer when known, else at four bytes per token. The requested completion cap is reserved on top.\"},{\"section\":\"4.3 Settlement\",\"text\":\"When the provider reports usage, the reservation is corrected: unused tokens are refunded, overruns are charged.\"}]"}
            ]},
            {"role": "assistant", "content": "It counts the prompt with the model's tokenizer where one is known (4.2), reserves the requested completion cap, and corrects the reservation with the reported usage afterwards, refunding or charging the difference (4.3)."},
            {"role": "user", "content": [{"type": "text", "text": "And for models whose tokenizer we do not ship? Is the byte estimate close enough in practice, and can a client game it by sending a huge max_tokens?"}]}
        ],
        "tools": [{
            "name": "search_handbook",
            "description": "Search the engineering handbook and return the best matching sections with their text.",
            "input_schema": {"type": "object", "properties": {
                "query": {"type": "string", "description": "What to look for, in plain words."},
                "max_results": {"type": "integer", "minimum": 1, "maximum": 10}
            }, "required": ["query"]}
        }],
        "tool_choice": {"type": "auto"}
    });
    let bytes = serde_json::to_vec(&body).expect("serialize fixture");
    assert!(
        (1_900..2_300).contains(&bytes.len()),
        "{} bytes",
        bytes.len()
    );
    bytes
}

/// SSE parsing: one typical chunk event (push + next_event), then a 64 KiB read of such
/// events parsed and drained in one go. The parser is reused, as it is for a whole stream.
fn sse_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("ai_sse");
    group.throughput(Throughput::Bytes(OPENAI_CHUNK.len() as u64));
    group.bench_function("one_chunk_event", |b| {
        let mut parser = SseParser::new(MAX_EVENT);
        b.iter(|| {
            parser.push(black_box(OPENAI_CHUNK)).expect("valid event");
            black_box(parser.next_event().expect("complete event"))
        });
    });

    let mut buffer = Vec::with_capacity(64 * 1024 + OPENAI_CHUNK.len());
    while buffer.len() + OPENAI_CHUNK.len() <= 64 * 1024 {
        buffer.extend_from_slice(OPENAI_CHUNK);
    }
    let events_in_buffer = buffer.len() / OPENAI_CHUNK.len();
    group.throughput(Throughput::Bytes(buffer.len() as u64));
    group.bench_function("buffer_64k", |b| {
        let mut parser = SseParser::new(MAX_EVENT);
        b.iter(|| {
            parser.push(black_box(&buffer)).expect("valid events");
            let mut events = 0;
            while let Some(event) = parser.next_event() {
                black_box(&event);
                events += 1;
            }
            assert_eq!(events, events_in_buffer);
        });
    });
    group.finish();
}

/// Per-event stream translation of one parsed mid-stream event, translator primed with the
/// stream's opening events: the OpenAI relay (unchanged, and with `"usage":null` stripped for a
/// client that did not ask for usage), Anthropic delta → OpenAI chunk, OpenAI chunk →
/// Anthropic delta, Gemini event → OpenAI chunk.
fn stream_events(c: &mut Criterion) {
    let mut group = c.benchmark_group("ai_stream_event");
    let chunk = event_of(OPENAI_CHUNK);
    let mut out = Vec::with_capacity(1024);

    for (name, client_wants_usage, marker) in [
        ("openai_relay_passthrough", true, "\"usage\":null"),
        (
            "openai_relay_strip_usage",
            false,
            "\"finish_reason\":null}]}",
        ),
    ] {
        group.bench_function(name, |b| {
            let mut relay = ChatStreamRelay::new(client_wants_usage);
            out.clear();
            relay.on_event(&chunk, &mut out);
            assert_one_event_with(&out, marker);
            b.iter(|| {
                out.clear();
                relay.on_event(black_box(&chunk), &mut out);
                black_box(out.len())
            });
        });
    }

    let delta = event_of(ANTHROPIC_DELTA);
    group.bench_function("anthropic_delta_to_openai_chunk", |b| {
        let mut translator = anthropic::StreamToOpenAi::new("claude-sonnet-4-5", CREATED, true);
        for opening in events_of(ANTHROPIC_OPENING) {
            translator.on_event(&opening, &mut out);
        }
        out.clear();
        translator.on_event(&delta, &mut out);
        assert_one_event_with(&out, "\"content\":\" the reservation is corrected\"");
        b.iter(|| {
            out.clear();
            translator.on_event(black_box(&delta), &mut out);
            black_box(out.len())
        });
    });

    let role = event_of(OPENAI_ROLE_CHUNK);
    group.bench_function("openai_chunk_to_anthropic_delta", |b| {
        let mut translator =
            anthropic::StreamFromOpenAi::new("claude-sonnet-4-5", "msg_chatcmpl-B9MBs8Cj");
        translator.on_event(&role, &mut out);
        // The first text chunk opens the text block; later ones are deltas only.
        translator.on_event(&chunk, &mut out);
        out.clear();
        translator.on_event(&chunk, &mut out);
        assert_one_event_with(&out, "\"text_delta\"");
        b.iter(|| {
            out.clear();
            translator.on_event(black_box(&chunk), &mut out);
            black_box(out.len())
        });
    });

    let gemini_event = event_of(GEMINI_EVENT);
    group.bench_function("gemini_event_to_openai_chunk", |b| {
        let mut translator =
            gemini::StreamToOpenAi::new("gemini-2.5-flash", "chatcmpl-gem", CREATED, true);
        // The first event also sends the role chunk; later ones are content deltas only.
        translator.on_event(&gemini_event, &mut out);
        out.clear();
        translator.on_event(&gemini_event, &mut out);
        assert_one_event_with(&out, "\"content\":\" it counts the prompt");
        b.iter(|| {
            out.clear();
            translator.on_event(black_box(&gemini_event), &mut out);
            black_box(out.len())
        });
    });
    group.finish();
}

/// Request translation of the 2 KiB chat: the OpenAI front door's check and upstream body
/// (from bytes), OpenAI → Anthropic and OpenAI → Gemini (from the checked body, as the
/// pipeline calls them), and the Anthropic front door's check and translation (from bytes).
fn requests(c: &mut Criterion) {
    let mut group = c.benchmark_group("ai_request");
    let chat = openai_chat();
    let messages = anthropic_messages();

    group.throughput(Throughput::Bytes(chat.len() as u64));
    group.bench_function("openai_parse_and_upstream_body", |b| {
        b.iter(|| {
            let request = parse_chat_request(black_box(&chat)).expect("valid chat request");
            black_box(upstream_chat_body(&request, "gpt-4o-2024-08-06"))
        });
    });

    let checked = parse_chat_request(&chat).expect("valid chat request");
    group.bench_function("openai_to_anthropic", |b| {
        b.iter(|| {
            let body = anthropic::request_from_openai(
                black_box(&checked.body),
                "claude-sonnet-4-5-20250929",
                4_096,
            );
            black_box(body.expect("translatable request"))
        });
    });

    group.bench_function("openai_to_gemini", |b| {
        b.iter(|| {
            let body = gemini::request_from_openai(black_box(&checked.body));
            black_box(body.expect("translatable request"))
        });
    });

    group.throughput(Throughput::Bytes(messages.len() as u64));
    group.bench_function("anthropic_parse_and_to_openai", |b| {
        b.iter(|| {
            let request =
                anthropic::parse_messages_request(black_box(&messages)).expect("valid request");
            black_box(anthropic::request_to_openai(&request).expect("translatable request"))
        });
    });
    group.finish();
}

/// A 1 KiB prompt text: the fixture chat's system and user turns, repeated and cut at a
/// character boundary.
fn prompt_1k() -> String {
    let text = "You are a concise assistant for an internal engineering team. Answer in plain \
        English, cite the handbook section you rely on, and say so when you are unsure. Our \
        gateway limits tokens per minute per key. How should it estimate the prompt size \
        before the provider reports usage, and what happens when the estimate is wrong? ";
    let mut prompt = text.repeat(1024 / text.len() + 1);
    let mut cut = 1024;
    while !prompt.is_char_boundary(cut) {
        cut -= 1;
    }
    prompt.truncate(cut);
    prompt
}

/// Prompt token counts: a 1 KiB text with each tokenizer on the same encodings (the shipped
/// linear-time BPE, `bpe-openai`, against tiktoken-rs, the reference it replaced), after
/// checking they agree; then the whole estimate of the 2 KiB chat, exact with `o200k_base`
/// (gpt-4o) and with the bytes/4 estimate used for models without a shipped tokenizer.
fn token_estimates(c: &mut Criterion) {
    warm_up();
    let prompt = prompt_1k();
    let mut group = c.benchmark_group("ai_tokens");
    group.throughput(Throughput::Bytes(prompt.len() as u64));
    for (encoding, ours, tiktoken) in [
        (
            "o200k",
            TokenCounter::O200kBase,
            tiktoken_rs::o200k_base_singleton(),
        ),
        (
            "cl100k",
            TokenCounter::Cl100kBase,
            tiktoken_rs::cl100k_base_singleton(),
        ),
    ] {
        assert_eq!(
            ours.count(&prompt),
            tiktoken.encode_ordinary(&prompt).len() as u64,
            "{encoding}: the tokenizers disagree"
        );
        group.bench_function(format!("prompt_1k_{encoding}_bpe"), |b| {
            b.iter(|| black_box(ours.count(black_box(&prompt))))
        });
        group.bench_function(format!("prompt_1k_{encoding}_tiktoken"), |b| {
            b.iter(|| black_box(tiktoken.encode_ordinary(black_box(&prompt)).len()))
        });
    }

    let chat: Value = serde_json::from_slice(&openai_chat()).expect("valid JSON");
    group.throughput(Throughput::Elements(1));
    for (name, model) in [
        ("chat_2k_o200k", "gpt-4o"),
        ("chat_2k_bytes", "claude-sonnet-4-5"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(estimate_chat_prompt_tokens(black_box(model), &chat)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = sse_parse, stream_events, requests, token_estimates
}
criterion_main!(benches);
