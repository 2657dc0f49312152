//! Prompt token estimates, made before a request goes upstream so that TPM limits and budgets
//! can admit it; the provider's reported usage corrects the reservation afterwards.
//!
//! OpenAI model families are counted exactly with their BPE encodings (`bpe-openai`, GitHub's
//! linear-time byte-pair encoder from rust-gems, encodings compiled into the binary: nothing is
//! downloaded). Its counts equal tiktoken's `encode_ordinary` on the same encodings
//! (`tests/token_counts.rs` checks a corpus and random strings against tiktoken-rs, kept as the
//! test oracle only), several times faster (`benches/ai.rs`). Any other model is estimated from its
//! UTF-8 length at 4 bytes per token, the usual ratio of English text under a ~100k-entry
//! BPE vocabulary (OpenAI's "a token is about 4 characters" rule of thumb). Claude, Gemini and
//! open models use different tokenizers, so for them this is an estimate whichever way it is
//! done; the settlement with reported usage makes it exact afterwards.
//!
//! The encoders are process-wide singletons (`&'static Tokenizer`, built once on first use)
//! and counting takes `&self`: no lock of ours on the count path (the pre-tokenizing regex
//! takes its scratch space from regex-automata's own pool). Loading the o200k encoder takes a noticeable fraction
//! of a second, so call [`warm_up`] at start-up rather than on a worker's first request.
//!
//! Only requests that a tokens-per-minute limit or a budget applies to are estimated before
//! they are sent (the pipeline's limits phase decides); the others are charged the provider's
//! reported usage.

use bpe_openai::Tokenizer;
use serde_json::Value;

/// Tokens counted for one image part: OpenAI's figure for a low-detail image. High-detail
/// images cost more (tiles of 170 tokens); the reported usage settles the difference.
pub const IMAGE_TOKENS: u64 = 85;

/// Tokens of framing around each chat message (`<|start|>{role}\n ... <|end|>\n`), from
/// OpenAI's cookbook "How to count tokens with tiktoken" for the gpt-4 and gpt-4o families.
pub const TOKENS_PER_MESSAGE: u64 = 3;

/// Extra token when a message carries a `name` (same cookbook).
pub const TOKENS_PER_NAME: u64 = 1;

/// Every reply is primed with `<|start|>assistant<|message|>` (same cookbook).
pub const REPLY_PRIMING_TOKENS: u64 = 3;

/// Bytes per token for models without a known tokenizer (see the module docs).
pub(super) const BYTES_PER_TOKEN: u64 = 4;

/// How a model's text is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCounter {
    /// OpenAI `o200k_base`: gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o-series, chatgpt-*.
    O200kBase,
    /// OpenAI `cl100k_base`: gpt-4 (not 4o/4.1/4.5), gpt-3.5, text-embedding-*.
    Cl100kBase,
    /// `ceil(bytes / 4)` for every other model.
    Bytes,
}

/// Families counted with `o200k_base`; checked before the `cl100k_base` ones because
/// `gpt-4o`/`gpt-4.1`/`gpt-4.5` also start with `gpt-4` (prefixes as in openai/tiktoken's
/// `model.py`).
const O200K_PREFIXES: &[&str] = &[
    "gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-",
];

/// Families counted with `cl100k_base` (`gpt-35-` is Azure's spelling of gpt-3.5).
const CL100K_PREFIXES: &[&str] = &["gpt-4", "gpt-3.5", "gpt-35", "text-embedding-"];

impl TokenCounter {
    /// The counter for an upstream model name. A `vendor/` prefix (as in `openai/gpt-4o`)
    /// is ignored; matching is by name prefix, so dated snapshots (`gpt-4o-2024-08-06`)
    /// are covered.
    pub fn for_model(model: &str) -> Self {
        let name = model.rsplit('/').next().unwrap_or(model);
        if O200K_PREFIXES.iter().any(|p| name.starts_with(p)) {
            Self::O200kBase
        } else if CL100K_PREFIXES.iter().any(|p| name.starts_with(p)) {
            Self::Cl100kBase
        } else {
            Self::Bytes
        }
    }

    /// Tokens in `text`, special-token markers counted as ordinary text (a user cannot
    /// inject control tokens through message content).
    pub fn count(self, text: &str) -> u64 {
        match self.encoder() {
            // The encoding has no special tokens to recognize: `count` is `encode_ordinary`'s
            // length. OpenAI's encodings do not normalize (NFC is off for them).
            Some(bpe) => bpe.count(text) as u64,
            None => (text.len() as u64).div_ceil(BYTES_PER_TOKEN),
        }
    }

    fn encoder(self) -> Option<&'static Tokenizer> {
        match self {
            Self::O200kBase => Some(bpe_openai::o200k_base()),
            Self::Cl100kBase => Some(bpe_openai::cl100k_base()),
            Self::Bytes => None,
        }
    }
}

/// Builds the shared encoders now, so no request pays for it. Call once at start-up.
pub fn warm_up() {
    let _ = bpe_openai::o200k_base();
    let _ = bpe_openai::cl100k_base();
}

/// Prompt tokens of an OpenAI chat-completions request body.
///
/// Counts, per message: [`TOKENS_PER_MESSAGE`], the role, the content (a string, or an array
/// of parts: `text` parts by their text, image parts as [`IMAGE_TOKENS`] each), the name (plus
/// [`TOKENS_PER_NAME`]), and each tool call's function name and arguments; then
/// [`REPLY_PRIMING_TOKENS`], plus the `tools` and `functions` definitions as JSON text. Other
/// part kinds (audio, files) count nothing: the reported usage settles them.
pub fn estimate_chat_prompt_tokens(model: &str, request: &Value) -> u64 {
    let counter = TokenCounter::for_model(model);
    let mut total = REPLY_PRIMING_TOKENS;
    for message in array(request.get("messages")) {
        total += TOKENS_PER_MESSAGE;
        total += count_str(counter, message.get("role"));
        if let Some(name) = message.get("name").and_then(Value::as_str) {
            total += counter.count(name) + TOKENS_PER_NAME;
        }
        total += openai_content_tokens(counter, message.get("content"));
        for call in array(message.get("tool_calls")) {
            let function = call.get("function");
            total += count_str(counter, function.and_then(|f| f.get("name")));
            total += count_str(counter, function.and_then(|f| f.get("arguments")));
        }
        // Legacy single `function_call` on an assistant message.
        if let Some(call) = message.get("function_call") {
            total += count_str(counter, call.get("name"));
            total += count_str(counter, call.get("arguments"));
        }
    }
    total
        + count_json(counter, request.get("tools"))
        + count_json(counter, request.get("functions"))
}

/// Prompt tokens of an Anthropic Messages request body.
///
/// Counts the `system` prompt (a string or text blocks), and per message
/// [`TOKENS_PER_MESSAGE`], the role and the content: a string, or blocks of `text`, `image`
/// ([`IMAGE_TOKENS`]), `tool_use` (name and input as JSON text), `tool_result` (its content,
/// itself a string or blocks) and `document` (its text source, if any); plus
/// [`REPLY_PRIMING_TOKENS`] and the `tools` definitions as JSON text. Anthropic publishes no
/// per-message framing figure; OpenAI's is used as a stand-in.
pub fn estimate_anthropic_prompt_tokens(model: &str, request: &Value) -> u64 {
    let counter = TokenCounter::for_model(model);
    let mut total = REPLY_PRIMING_TOKENS + anthropic_content_tokens(counter, request.get("system"));
    for message in array(request.get("messages")) {
        total += TOKENS_PER_MESSAGE;
        total += count_str(counter, message.get("role"));
        total += anthropic_content_tokens(counter, message.get("content"));
    }
    total + count_json(counter, request.get("tools"))
}

/// Input tokens of an embeddings request's `input`: a string, an array of strings, an array
/// of token ids (counted by length) or an array of token-id arrays.
pub fn estimate_embedding_tokens(model: &str, input: &Value) -> u64 {
    let counter = TokenCounter::for_model(model);
    match input {
        Value::String(text) => counter.count(text),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => counter.count(text),
                Value::Number(_) => 1,
                Value::Array(ids) => ids.len() as u64,
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// OpenAI message content: a string, or an array of parts.
fn openai_content_tokens(counter: TokenCounter, content: Option<&Value>) -> u64 {
    match content {
        Some(Value::String(text)) => counter.count(text),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") | Some("input_text") | Some("refusal") => {
                    count_str(counter, part.get("text").or_else(|| part.get("refusal")))
                }
                Some("image_url") | Some("input_image") | Some("image") => IMAGE_TOKENS,
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

/// Anthropic content: a string, or an array of blocks (also used for `system` and for a
/// `tool_result`'s content).
fn anthropic_content_tokens(counter: TokenCounter, content: Option<&Value>) -> u64 {
    match content {
        Some(Value::String(text)) => counter.count(text),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .map(|block| anthropic_block_tokens(counter, block))
            .sum(),
        _ => 0,
    }
}

fn anthropic_block_tokens(counter: TokenCounter, block: &Value) -> u64 {
    match block.get("type").and_then(Value::as_str) {
        Some("text") => count_str(counter, block.get("text")),
        Some("image") => IMAGE_TOKENS,
        Some("tool_use") => {
            count_str(counter, block.get("name")) + count_json(counter, block.get("input"))
        }
        Some("tool_result") => anthropic_content_tokens(counter, block.get("content")),
        Some("document") => {
            let source = block.get("source");
            match source.and_then(|s| s.get("type")).and_then(Value::as_str) {
                Some("text") => count_str(counter, source.and_then(|s| s.get("data"))),
                Some("content") => {
                    anthropic_content_tokens(counter, source.and_then(|s| s.get("content")))
                }
                _ => 0,
            }
        }
        _ => 0,
    }
}

fn array(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn count_str(counter: TokenCounter, value: Option<&Value>) -> u64 {
    value
        .and_then(Value::as_str)
        .map_or(0, |text| counter.count(text))
}

/// Tokens of a JSON value's compact text (tool definitions, tool inputs): the model reads a
/// rendering of them, whose size tracks the JSON's.
fn count_json(counter: TokenCounter, value: Option<&Value>) -> u64 {
    match value {
        None | Some(Value::Null) => 0,
        Some(value) => counter.count(&value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_tokens(model: &str, text: &str) -> u64 {
        TokenCounter::for_model(model).count(text)
    }
    use serde_json::json;

    #[test]
    fn gpt_4o_family_uses_o200k() {
        for model in [
            "gpt-4o",
            "gpt-4o-mini-2024-07-18",
            "gpt-4.1-nano",
            "gpt-5",
            "o1-mini",
            "o3",
            "o4-mini",
            "chatgpt-4o-latest",
        ] {
            assert_eq!(
                TokenCounter::for_model(model),
                TokenCounter::O200kBase,
                "{model}"
            );
        }
    }

    #[test]
    fn gpt_4_and_3_5_and_embeddings_use_cl100k() {
        for model in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-4-0613",
            "gpt-3.5-turbo",
            "gpt-35-turbo",
            "text-embedding-3-small",
        ] {
            assert_eq!(
                TokenCounter::for_model(model),
                TokenCounter::Cl100kBase,
                "{model}"
            );
        }
    }

    #[test]
    fn other_models_use_the_byte_estimate() {
        for model in [
            "claude-sonnet-4-5",
            "gemini-2.5-pro",
            "llama-3.1-70b",
            "",
            "gpt4o",
        ] {
            assert_eq!(
                TokenCounter::for_model(model),
                TokenCounter::Bytes,
                "{model}"
            );
        }
    }

    #[test]
    fn vendor_prefix_is_ignored() {
        assert_eq!(
            TokenCounter::for_model("openai/gpt-4o"),
            TokenCounter::O200kBase
        );
    }

    #[test]
    fn openai_encodings_count_known_strings_exactly() {
        // "hello world" is two tokens in both encodings; "tiktoken is great!" is 6 in cl100k.
        assert_eq!(text_tokens("gpt-4o", "hello world"), 2);
        assert_eq!(text_tokens("gpt-4", "hello world"), 2);
        assert_eq!(text_tokens("gpt-3.5-turbo", "tiktoken is great!"), 6);
    }

    #[test]
    fn special_token_text_is_counted_as_ordinary_text() {
        assert!(text_tokens("gpt-4o", "<|endoftext|>") > 1);
    }

    #[test]
    fn byte_estimate_rounds_up_to_a_whole_token_per_four_bytes() {
        assert_eq!(text_tokens("claude-3", ""), 0);
        assert_eq!(text_tokens("claude-3", "abcd"), 1);
        assert_eq!(text_tokens("claude-3", "abcde"), 2);
        // UTF-8 bytes, not characters: "é" is 2 bytes.
        assert_eq!(text_tokens("claude-3", "ééé"), 2);
    }

    #[test]
    fn chat_prompt_matches_the_openai_cookbook_arithmetic() {
        let request = json!({
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "hello world"},
                {"role": "user", "name": "bob", "content": "hello world"}
            ]
        });
        let counter = TokenCounter::O200kBase;
        let role_tokens = counter.count("system") + counter.count("user");
        let expected = 3 + 2 * 3 + role_tokens + 2 + 2 + counter.count("bob") + 1;
        assert_eq!(estimate_chat_prompt_tokens("gpt-4o", &request), expected);
    }

    #[test]
    fn chat_prompt_on_the_byte_path_has_the_same_framing() {
        let request = json!({"messages": [{"role": "user", "content": "abcdefgh"}]});
        // priming 3 + message 3 + "user" 1 + content 2
        assert_eq!(estimate_chat_prompt_tokens("mistral-large", &request), 9);
    }

    #[test]
    fn chat_content_parts_count_text_and_fixed_tokens_per_image() {
        let request = json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "abcdefgh"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
        ]}]});
        assert_eq!(
            estimate_chat_prompt_tokens("llama", &request),
            3 + 3 + 1 + 2 + 2 * IMAGE_TOKENS
        );
    }

    #[test]
    fn chat_tool_calls_count_function_name_and_arguments() {
        let request = json!({"messages": [{"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
        ]}]});
        let name_and_args =
            "get_weather".len().div_ceil(4) + "{\"city\":\"Paris\"}".len().div_ceil(4);
        let expected = 3 + 3 + "assistant".len().div_ceil(4) + name_and_args;
        assert_eq!(
            estimate_chat_prompt_tokens("llama", &request),
            expected as u64
        );
    }

    #[test]
    fn chat_tool_definitions_count_as_json_text() {
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
        let with_tools = json!({"messages": [], "tools": tools.clone()});
        let without = json!({"messages": []});
        let json_tokens = tools.to_string().len().div_ceil(4) as u64;
        assert_eq!(
            estimate_chat_prompt_tokens("llama", &with_tools)
                - estimate_chat_prompt_tokens("llama", &without),
            json_tokens
        );
        let with_functions = json!({"messages": [], "functions": tools});
        assert_eq!(
            estimate_chat_prompt_tokens("llama", &with_functions),
            3 + json_tokens
        );
    }

    #[test]
    fn chat_request_without_messages_counts_only_priming() {
        assert_eq!(
            estimate_chat_prompt_tokens("gpt-4o", &json!({})),
            REPLY_PRIMING_TOKENS
        );
    }

    #[test]
    fn anthropic_system_string_and_blocks_are_counted() {
        let as_string = json!({"system": "abcdefgh", "messages": []});
        let as_blocks = json!({"system": [{"type": "text", "text": "abcd"}, {"type": "text", "text": "efgh"}], "messages": []});
        assert_eq!(
            estimate_anthropic_prompt_tokens("claude-3", &as_string),
            3 + 2
        );
        assert_eq!(
            estimate_anthropic_prompt_tokens("claude-3", &as_blocks),
            3 + 2
        );
    }

    #[test]
    fn anthropic_blocks_count_text_images_tool_use_and_tool_results() {
        let request = json!({"messages": [
            {"role": "user", "content": "abcd"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "t1", "name": "calc", "input": {"x": 1}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "42"}]},
                {"type": "tool_result", "tool_use_id": "t1", "content": "abcdefgh"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
            ]}
        ]});
        let user = 1; // "user"
        let assistant = 3; // "assistant" = 9 bytes
        let tool_use = 1 + "{\"x\":1}".len().div_ceil(4) as u64;
        let results = 1 + 2;
        let expected = 3 + 3 * 3 + user + 1 + assistant + tool_use + user + results + IMAGE_TOKENS;
        assert_eq!(
            estimate_anthropic_prompt_tokens("claude-3", &request),
            expected
        );
    }

    #[test]
    fn anthropic_tools_count_as_json_text() {
        let tools = json!([{"name": "calc", "input_schema": {"type": "object"}}]);
        let request = json!({"messages": [], "tools": tools.clone()});
        let expected = 3 + tools.to_string().len().div_ceil(4) as u64;
        assert_eq!(
            estimate_anthropic_prompt_tokens("claude-3", &request),
            expected
        );
    }

    #[test]
    fn embedding_input_string_and_string_array_are_encoded() {
        assert_eq!(
            estimate_embedding_tokens("text-embedding-3-small", &json!("hello world")),
            2
        );
        assert_eq!(
            estimate_embedding_tokens("text-embedding-3-small", &json!(["hello world", "hello"])),
            3
        );
    }

    #[test]
    fn embedding_token_id_arrays_count_their_length() {
        assert_eq!(
            estimate_embedding_tokens("text-embedding-3-small", &json!([1, 2, 3])),
            3
        );
        assert_eq!(
            estimate_embedding_tokens("text-embedding-3-small", &json!([[1, 2], [3, 4, 5]])),
            5
        );
        assert_eq!(
            estimate_embedding_tokens("text-embedding-3-small", &json!(null)),
            0
        );
    }
}
