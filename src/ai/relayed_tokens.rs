//! Completion tokens counted from a stream's text as it passes through the gateway.
//!
//! A stream the provider never finishes (it closed early, or the gateway stopped reading after
//! the client left) carries no final usage, so the gateway charges what it saw instead: the
//! tokens of the text and tool-call deltas that went through it, counted with the same
//! estimator as prompts ([`TokenCounter`]).
//!
//! Counting must stay cheap on a stream that does finish (nearly all of them), where the count
//! is never used: for byte-estimated models it is a running sum of lengths; for BPE-counted
//! models the text is kept and only encoded when it passes [`ENCODE_BATCH_BYTES`] or when the
//! count is asked for, so a short answer is never encoded at all and memory stays bounded.

use super::tokens::{TokenCounter, BYTES_PER_TOKEN};

/// Text kept before it is encoded (BPE counters only). Encoding in batches rather than per
/// delta also avoids counting every word boundary as a split token.
pub const ENCODE_BATCH_BYTES: usize = 64 * 1024;

/// Running count of the completion tokens in the deltas of one stream.
#[derive(Debug, Clone)]
pub struct RelayedTokens {
    counter: TokenCounter,
    /// Tokens of the text already encoded (BPE) ...
    counted: u64,
    /// ... and bytes of the text not yet counted: all of it for [`TokenCounter::Bytes`].
    pending_bytes: u64,
    /// The text not yet encoded (BPE counters only; empty for byte estimates).
    pending: String,
}

impl Default for RelayedTokens {
    /// Byte-estimated counting (4 bytes per token).
    fn default() -> Self {
        RelayedTokens::new(TokenCounter::Bytes)
    }
}

impl RelayedTokens {
    /// A count with `counter`, the upstream model's estimator.
    pub fn new(counter: TokenCounter) -> Self {
        RelayedTokens {
            counter,
            counted: 0,
            pending_bytes: 0,
            pending: String::new(),
        }
    }

    /// Counts `text`, one piece of the completion (a content delta, tool-call arguments).
    pub fn add(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.pending_bytes += text.len() as u64;
        if self.counter == TokenCounter::Bytes {
            return;
        }
        self.pending.push_str(text);
        if self.pending.len() >= ENCODE_BATCH_BYTES {
            self.counted += self.counter.count(&self.pending);
            self.pending.clear();
            self.pending_bytes = 0;
        }
    }

    /// Tokens of everything counted so far.
    pub fn tokens(&self) -> u64 {
        if self.counter == TokenCounter::Bytes {
            return self.pending_bytes.div_ceil(BYTES_PER_TOKEN);
        }
        self.counted + self.counter.count(&self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_relayed_is_zero_tokens() {
        assert_eq!(RelayedTokens::default().tokens(), 0);
        assert_eq!(RelayedTokens::new(TokenCounter::O200kBase).tokens(), 0);
    }

    #[test]
    fn byte_estimate_is_over_the_whole_text_not_per_delta() {
        let mut relayed = RelayedTokens::default();
        // 10 deltas of 2 bytes: 20 bytes are 5 tokens (not 10 rounded-up halves).
        for _ in 0..10 {
            relayed.add("ab");
        }
        assert_eq!(relayed.tokens(), 5);
        relayed.add("c");
        assert_eq!(relayed.tokens(), 6, "21 bytes round up");
    }

    #[test]
    fn bpe_count_of_deltas_matches_the_count_of_the_whole_text() {
        let text = "Hello there, this is a streamed answer in a few pieces.";
        let mut relayed = RelayedTokens::new(TokenCounter::O200kBase);
        for word in text.split_inclusive(' ') {
            relayed.add(word);
        }
        let whole = TokenCounter::O200kBase.count(text);
        assert!(whole > 5);
        assert_eq!(relayed.tokens(), whole);
    }

    #[test]
    fn long_bpe_text_is_encoded_in_batches_with_bounded_memory() {
        let mut relayed = RelayedTokens::new(TokenCounter::Cl100kBase);
        let word = "token ";
        let words = 3 * ENCODE_BATCH_BYTES / word.len();
        for _ in 0..words {
            relayed.add(word);
            assert!(relayed.pending.len() < ENCODE_BATCH_BYTES);
        }
        let whole = TokenCounter::Cl100kBase.count(&word.repeat(words));
        // Batch edges may split one token in two: a handful at most.
        let counted = relayed.tokens();
        assert!(
            counted >= whole && counted <= whole + 4,
            "{counted} vs {whole}"
        );
    }

    #[test]
    fn empty_deltas_count_nothing() {
        let mut relayed = RelayedTokens::new(TokenCounter::O200kBase);
        relayed.add("");
        assert_eq!(relayed.tokens(), 0);
    }
}
