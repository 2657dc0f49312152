//! `GET /admin/providers`: each AI provider of the serving config with its attempts, error
//! rate, p50/p99 latency, time to first token and circuit state (the dashboard's providers
//! view).
//!
//! Every figure comes from counters the data plane keeps anyway: attempts, first tokens and
//! breakers from the AI metrics (per-worker cells, summed here), latency from the access-log
//! writer's histograms ([`crate::accesslog::LiveFeed`], `upstream_ms` of each request's
//! final attempt, or the request's `duration_us` for an in-process provider; only while the
//! access log is on). Nothing is added to the request path.
//! Counts are since the gateway started; quantiles are estimated within the metrics' latency
//! buckets, like Prometheus' `histogram_quantile`.

use serde_json::{json, Value};

use super::http::Response;
use super::routes::json_response;
use crate::metrics::{Histogram, ProviderStats};

/// `GET /admin/providers`: 200 with `[{"provider","requests","errors","error_rate",
/// "latency_ms":{"p50","p99"},"first_token_ms":{"p50","p99"},"circuit"}]`, in config order;
/// a quantile without observations is `null`.
pub(crate) fn list() -> Response {
    let now_ms = crate::clock::unix_now_ms();
    let stats = crate::metrics::global().ai().provider_stats(now_ms);
    let latency = |name: &str| crate::accesslog::live().provider_latency(name);
    let body: Vec<Value> = stats
        .iter()
        .map(|s| provider_json(s, latency(&s.provider).as_ref()))
        .collect();
    json_response(200, &Value::Array(body))
}

fn provider_json(stats: &ProviderStats, latency: Option<&Histogram>) -> Value {
    let error_rate = if stats.attempts == 0 {
        0.0
    } else {
        stats.failed_attempts as f64 / stats.attempts as f64
    };
    json!({
        "provider": stats.provider,
        "requests": stats.attempts,
        "errors": stats.failed_attempts,
        "error_rate": error_rate,
        "latency_ms": quantiles(latency),
        "first_token_ms": quantiles(Some(&stats.first_token)),
        "circuit": if stats.circuit_open { "open" } else { "closed" },
    })
}

fn quantiles(histogram: Option<&Histogram>) -> Value {
    let at = |q| histogram.and_then(|h| h.quantile_ms(q));
    json!({ "p50": at(0.5), "p99": at(0.99) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn provider_json_names_rates_quantiles_and_circuit() {
        let mut first_token = Histogram::default();
        first_token.observe(Duration::from_millis(3));
        let stats = ProviderStats {
            provider: "openai".into(),
            attempts: 4,
            failed_attempts: 1,
            first_token,
            circuit_open: true,
        };
        let body = provider_json(&stats, None);
        assert_eq!(body["provider"], "openai");
        assert_eq!(body["requests"], 4);
        assert_eq!(body["errors"], 1);
        assert_eq!(body["error_rate"], 0.25);
        assert_eq!(body["circuit"], "open");
        assert_eq!(body["latency_ms"], json!({ "p50": null, "p99": null }));
        let p50 = body["first_token_ms"]["p50"].as_f64().unwrap();
        assert!(p50 > 2.5 && p50 <= 5.0, "{p50}");
    }

    #[test]
    fn a_provider_without_attempts_has_no_error_rate_to_divide() {
        let stats = ProviderStats {
            provider: "idle".into(),
            attempts: 0,
            failed_attempts: 0,
            first_token: Histogram::default(),
            circuit_open: false,
        };
        let body = provider_json(&stats, None);
        assert_eq!(body["error_rate"], 0.0);
        assert_eq!(body["circuit"], "closed");
        assert_eq!(body["first_token_ms"]["p99"], Value::Null);
    }
}
