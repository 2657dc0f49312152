//! Token meters and spend budgets for AI requests.
//!
//! - [`tokens`]: prompt token estimates (tiktoken for OpenAI model families, bytes/4
//!   otherwise) and the completion reservation, made before a request goes upstream.
//! - [`relayed`]: completion tokens counted from a stream's deltas as they pass.
//! - [`charge`]: what a request is charged when it ends (reported usage, or for a stream
//!   that was cut, the larger of what it relayed and what it reserved).
//! - [`budget`]: per-key and per-team budgets in tokens and nano-USD over UTC calendar
//!   periods, with exact lock-free reservation and settlement; model prices to cost.
//!
//! Tokens-per-minute limits themselves are weighted GCRA checks in
//! [`crate::limits`] ([`Gcra::check_n`](crate::limits::Gcra::check_n) to admit a
//! reservation, [`Gcra::adjust`](crate::limits::Gcra::adjust) to settle it).

pub mod budget;
pub mod charge;
pub mod relayed;
pub mod tokens;

pub use budget::{
    cost_nano_usd, nano_to_usd, period_start_ms, usd_to_nano, BudgetDimension, BudgetExceeded,
    BudgetLimit, BudgetTable, Period, Prices, Reservation, UnknownPeriod,
};
pub use charge::{charged_usage, Metered};
pub use relayed::RelayedTokens;
pub use tokens::{
    completion_reservation, estimate_anthropic_prompt_tokens, estimate_chat_prompt_tokens,
    estimate_embedding_tokens, estimate_text_tokens, requested_max_tokens, TokenCounter,
};
