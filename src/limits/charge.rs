//! What an AI request is charged once it ends, from what the gateway knows of its usage.
//!
//! The provider's reported usage is the truth when the answer was complete. A stream that did
//! not reach its end (the provider closed early, or the gateway stopped reading it after the
//! client left and the drain ran out of time or bytes) never carries its final usage, and a
//! client must not be able to escape its cost by leaving early: such a stream is charged the
//! larger of the completion tokens it relayed and the completion reservation made at
//! admission. A cut stream is therefore never settled at zero completion tokens.

use crate::ai::Usage;

/// What a finished request tells about its usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metered {
    /// A complete answer (or no answer at all): the provider's usage when it reported one,
    /// and the completion tokens counted from a stream's deltas (0 for a whole answer).
    Complete {
        /// Usage the provider reported.
        reported: Option<Usage>,
        /// Completion tokens counted from the stream's text.
        relayed_tokens: u64,
    },
    /// A stream that did not reach its end.
    Cut {
        /// Usage reported before the cut (an Anthropic `message_start`, Gemini's running
        /// `usageMetadata`): its prompt counts are right, its completion count is partial.
        reported: Option<Usage>,
        /// Completion tokens counted from the text and tool-call deltas seen.
        relayed_tokens: u64,
    },
}

impl Metered {
    /// A whole (not streamed) answer with the provider's `reported` usage.
    pub fn whole(reported: Option<Usage>) -> Metered {
        Metered::Complete {
            reported,
            relayed_tokens: 0,
        }
    }
}

/// Completion tokens to reserve: what the request asked for, else the configured default.
pub fn completion_reservation(requested: Option<u64>, default: u64) -> u64 {
    requested.unwrap_or(default)
}

/// The usage a request is charged.
///
/// - `answered`: the client got a successful answer (a 2xx status);
/// - `prompt_estimate`: the prompt tokens estimated at admission, or made now when nothing
///   needed them at admission (called at most once, and only when no reported prompt count
///   stands in: counting a prompt is the costly part of admission);
/// - `completion_reservation`: the completion tokens reserved at admission.
///
/// A complete answer is charged its reported usage; without one, a successful answer costs
/// its estimated prompt and the completion tokens relayed, a failed one nothing. A cut stream
/// costs its reported (else estimated) prompt and the largest of the completion tokens
/// reported, relayed and reserved.
pub fn charged_usage(
    metered: Metered,
    answered: bool,
    prompt_estimate: impl FnOnce() -> u64,
    completion_reservation: u64,
) -> Usage {
    match metered {
        Metered::Complete {
            reported: Some(usage),
            ..
        } => usage,
        Metered::Complete {
            reported: None,
            relayed_tokens,
        } => {
            if answered {
                Usage {
                    prompt_tokens: prompt_estimate(),
                    completion_tokens: relayed_tokens,
                    cached_tokens: 0,
                }
            } else {
                Usage::default()
            }
        }
        Metered::Cut {
            reported,
            relayed_tokens,
        } => {
            let reported = reported.unwrap_or_default();
            // A partial report may carry no prompt count yet (newer Anthropic versions send
            // the input counts in `message_delta` only): the estimate stands in.
            let prompt_tokens = match reported.prompt_tokens {
                0 => prompt_estimate(),
                n => n,
            };
            Usage {
                prompt_tokens,
                completion_tokens: reported
                    .completion_tokens
                    .max(relayed_tokens)
                    .max(completion_reservation),
                cached_tokens: reported.cached_tokens.min(prompt_tokens),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_reservation_prefers_the_requested_cap() {
        assert_eq!(completion_reservation(Some(200), 1024), 200);
        assert_eq!(completion_reservation(None, 1024), 1024);
    }

    fn usage(prompt: u64, completion: u64, cached: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: cached,
        }
    }

    #[test]
    fn complete_answer_is_charged_its_reported_usage() {
        let metered = Metered::Complete {
            reported: Some(usage(12, 40, 4)),
            relayed_tokens: 90,
        };
        assert_eq!(charged_usage(metered, true, || 30, 1024), usage(12, 40, 4));
    }

    #[test]
    fn complete_answer_without_usage_costs_its_prompt_estimate_and_the_relayed_tokens() {
        let metered = Metered::Complete {
            reported: None,
            relayed_tokens: 17,
        };
        assert_eq!(charged_usage(metered, true, || 30, 1024), usage(30, 17, 0));
        assert_eq!(
            charged_usage(Metered::whole(None), true, || 30, 1024),
            usage(30, 0, 0)
        );
    }

    #[test]
    fn failed_request_without_usage_costs_nothing() {
        assert_eq!(
            charged_usage(Metered::whole(None), false, || 30, 1024),
            usage(0, 0, 0)
        );
    }

    #[test]
    fn cut_stream_is_charged_at_least_its_reservation() {
        let metered = Metered::Cut {
            reported: None,
            relayed_tokens: 95,
        };
        assert_eq!(
            charged_usage(metered, true, || 30, 1024),
            usage(30, 1024, 0)
        );
    }

    #[test]
    fn cut_stream_that_relayed_more_than_its_reservation_is_charged_what_it_relayed() {
        let metered = Metered::Cut {
            reported: None,
            relayed_tokens: 5000,
        };
        assert_eq!(
            charged_usage(metered, true, || 30, 1024),
            usage(30, 5000, 0)
        );
    }

    #[test]
    fn cut_stream_is_never_settled_at_zero_even_without_a_reservation() {
        let metered = Metered::Cut {
            reported: None,
            relayed_tokens: 7,
        };
        let charged = charged_usage(metered, true, || 30, 0);
        assert_eq!(charged.completion_tokens, 7);
    }

    #[test]
    fn cut_stream_keeps_the_reported_prompt_but_not_a_partial_completion_count() {
        // Anthropic's `message_start` reports the input and 1 output token.
        let metered = Metered::Cut {
            reported: Some(usage(472, 1, 100)),
            relayed_tokens: 12,
        };
        assert_eq!(
            charged_usage(metered, true, || 30, 256),
            usage(472, 256, 100)
        );
    }

    #[test]
    fn cut_stream_with_a_zero_reported_prompt_uses_the_estimate() {
        let metered = Metered::Cut {
            reported: Some(usage(0, 0, 0)),
            relayed_tokens: 3,
        };
        assert_eq!(charged_usage(metered, true, || 30, 64), usage(30, 64, 0));
    }

    #[test]
    fn cut_stream_whose_partial_report_exceeds_the_rest_is_charged_the_report() {
        let metered = Metered::Cut {
            reported: Some(usage(20, 2000, 0)),
            relayed_tokens: 1500,
        };
        assert_eq!(
            charged_usage(metered, true, || 30, 1024),
            usage(20, 2000, 0)
        );
    }

    #[test]
    fn reported_usage_is_charged_without_making_an_estimate() {
        let reported = Some(usage(12, 40, 4));
        let no_estimate = || -> u64 { panic!("the estimate is not needed") };
        let whole = Metered::whole(reported);
        assert_eq!(
            charged_usage(whole, true, no_estimate, 32),
            usage(12, 40, 4)
        );
        // A cut stream whose partial report has its prompt count needs no estimate either.
        let cut = Metered::Cut {
            reported,
            relayed_tokens: 3,
        };
        assert_eq!(charged_usage(cut, true, no_estimate, 32), usage(12, 40, 4));
        // Nor does a failed request without a report: it costs nothing.
        let failed = Metered::whole(None);
        assert_eq!(
            charged_usage(failed, false, no_estimate, 32),
            usage(0, 0, 0)
        );
    }
}
