//! The MCP gateway's families: `credentialflow_mcp_calls_total{server,tool,outcome}` and
//! `credentialflow_mcp_call_duration_seconds{server}`.
//!
//! Label values are bounded: servers come from the config, outcomes from a fixed set, and
//! tools only from names the configured servers listed or answered a call to
//! ([`McpMetrics::note_tools`]), at most
//! [`MAX_TOOL_LABELS`] of them; any other name a client sends is counted as `other`.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use parking_lot::Mutex;

use super::{escape_label_value, family_header, BUCKETS};

/// Names of the families rendered here, which a registered counter may not take.
pub(super) const FAMILIES: [&str; 2] = [
    "credentialflow_mcp_calls_total",
    "credentialflow_mcp_call_duration_seconds",
];

/// Most distinct `tool` label values across servers; later names fold into `other`.
pub const MAX_TOOL_LABELS: usize = 1000;

/// Most distinct `server` label values (a reload may rename servers; the old series stay).
pub const MAX_SERVER_LABELS: usize = 256;

#[derive(Default)]
struct Inner {
    calls: BTreeMap<(String, String, &'static str), u64>,
    /// Per server: non-cumulative bucket counts (the last is `+Inf`) and the sum in µs.
    durations: BTreeMap<String, (Vec<u64>, u64)>,
    known_tools: HashSet<(String, String)>,
}

/// Tool-call outcomes by server, tool and outcome, and call latency by server.
#[derive(Default)]
pub struct McpMetrics {
    inner: Mutex<Inner>,
}

impl McpMetrics {
    /// Remembers `tools` as names `server` listed, so calls to them get their own label.
    pub fn note_tools<'a>(&self, server: &str, tools: impl Iterator<Item = &'a str>) {
        let mut inner = self.inner.lock();
        for tool in tools {
            if inner.known_tools.len() >= MAX_TOOL_LABELS {
                break;
            }
            if !inner
                .known_tools
                .contains(&(server.to_string(), tool.to_string()))
            {
                inner
                    .known_tools
                    .insert((server.to_string(), tool.to_string()));
            }
        }
    }

    /// Counts one call of `tool` on `server` (`None`: no configured server) and its time.
    pub fn record(&self, server: Option<&str>, tool: &str, outcome: &'static str, took: Duration) {
        let mut inner = self.inner.lock();
        let server = server.unwrap_or("other");
        let known_server = server == "other"
            || inner.durations.contains_key(server)
            || inner.durations.len() < MAX_SERVER_LABELS;
        let server = if known_server { server } else { "other" };
        let tool = if inner
            .known_tools
            .contains(&(server.to_string(), tool.to_string()))
        {
            tool
        } else {
            "other"
        };
        *inner
            .calls
            .entry((server.to_string(), tool.to_string(), outcome))
            .or_insert(0) += 1;
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let slot = BUCKETS
            .iter()
            .position(|&(bound, _)| nanos <= bound)
            .unwrap_or(BUCKETS.len());
        let (buckets, sum) = inner
            .durations
            .entry(server.to_string())
            .or_insert_with(|| (vec![0; BUCKETS.len() + 1], 0));
        buckets[slot] += 1;
        *sum += u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    }

    /// The count of calls so far with these labels.
    pub fn count(&self, server: &str, tool: &str, outcome: &str) -> u64 {
        let inner = self.inner.lock();
        inner
            .calls
            .iter()
            .filter(|((s, t, o), _)| s == server && t == tool && *o == outcome)
            .map(|(_, n)| n)
            .sum()
    }

    pub(super) fn render(&self, out: &mut String) {
        let inner = self.inner.lock();
        if inner.calls.is_empty() {
            return;
        }
        family_header(
            out,
            FAMILIES[0],
            "counter",
            "MCP calls (tools/call, prompts/get, resources/read) by server, tool and outcome.",
        );
        for ((server, tool, outcome), count) in &inner.calls {
            let _ = writeln!(
                out,
                "{}{{server=\"{}\",tool=\"{}\",outcome=\"{outcome}\"}} {count}",
                FAMILIES[0],
                escape_label_value(server),
                escape_label_value(tool)
            );
        }
        family_header(
            out,
            FAMILIES[1],
            "histogram",
            "Time of MCP calls through the gateway, by server.",
        );
        for (server, (buckets, sum)) in &inner.durations {
            let label = escape_label_value(server);
            let mut cumulative = 0;
            let bounds = BUCKETS.iter().map(|&(_, le)| le).chain(["+Inf"]);
            for (le, n) in bounds.zip(buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "{}_bucket{{server=\"{label}\",le=\"{le}\"}} {cumulative}",
                    FAMILIES[1]
                );
            }
            let _ = writeln!(
                out,
                "{}_sum{{server=\"{label}\"}} {}.{:06}",
                FAMILIES[1],
                sum / 1_000_000,
                sum % 1_000_000
            );
            let _ = writeln!(
                out,
                "{}_count{{server=\"{label}\"}} {cumulative}",
                FAMILIES[1]
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_tools_fold_into_other() {
        let m = McpMetrics::default();
        m.note_tools("gh", ["search"].into_iter());
        m.record(Some("gh"), "search", "ok", Duration::from_millis(3));
        m.record(Some("gh"), "made-up-1", "refused", Duration::from_millis(1));
        m.record(Some("gh"), "made-up-2", "refused", Duration::from_millis(1));
        assert_eq!(m.count("gh", "search", "ok"), 1);
        assert_eq!(m.count("gh", "other", "refused"), 2);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains(
            "credentialflow_mcp_calls_total{server=\"gh\",tool=\"other\",outcome=\"refused\"} 2"
        ));
        assert!(out.contains("credentialflow_mcp_call_duration_seconds_count{server=\"gh\"} 3"));
        assert!(!out.contains("made-up"));
    }

    #[test]
    fn tool_labels_are_capped() {
        let m = McpMetrics::default();
        let names: Vec<String> = (0..MAX_TOOL_LABELS + 50).map(|i| format!("t{i}")).collect();
        m.note_tools("s", names.iter().map(String::as_str));
        m.record(
            Some("s"),
            &names[MAX_TOOL_LABELS + 10],
            "ok",
            Duration::ZERO,
        );
        assert_eq!(m.count("s", "other", "ok"), 1);
    }
}
