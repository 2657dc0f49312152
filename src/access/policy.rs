//! `[[access_policy]]`: per team, the longest ttl a request may ask for, and the envelope
//! (models, ttl, budget) inside which a request is approved at once by `policy`.
//!
//! The envelope names no MCP tools, so a request that asks for `mcp_tools` is never inside
//! it: which tools an agent may call is a person's decision. (A request naming none gets a
//! key with the empty list, as every key had before tool permissions existed.)
//!
//! Durations were checked by `credentialflow check` before a config is live; one that does
//! not parse here anyway (a config built in code) refuses every request of its team rather
//! than letting any through unbounded.

use std::time::Duration;

use crate::auth::glob_match;
use crate::clock::parse_duration;
use crate::config::AccessPolicyConfig;

use super::NewAccessRequest;

/// What a policy makes of a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// No policy, or outside its envelope: an approver decides.
    Pending,
    /// Inside the envelope: approved at once. `budget_usd` is the budget the key gets when
    /// the request named none (the envelope's).
    AutoApprove { budget_usd: Option<f64> },
    /// The ttl is beyond the team's `max_ttl`; the message says the limit.
    Refused(String),
}

/// Judges `request` (whose ttl is `ttl`) by the policy of its team, if `policies` has one.
pub fn judge(
    policies: &[AccessPolicyConfig],
    request: &NewAccessRequest,
    ttl: Duration,
) -> Verdict {
    let Some(policy) = policies.iter().find(|p| p.team == request.team) else {
        return Verdict::Pending;
    };
    let Ok(max_ttl) = parse_duration(&policy.max_ttl) else {
        return Verdict::Refused(format!(
            "the access policy of team {:?} has an unusable max_ttl; ask an operator",
            policy.team
        ));
    };
    if ttl > max_ttl {
        return Verdict::Refused(format!(
            "ttl {} exceeds the max_ttl of {} for team {:?}",
            request.ttl, policy.max_ttl, policy.team
        ));
    }
    let Some(auto) = &policy.auto_approve else {
        return Verdict::Pending;
    };
    let auto_ttl = match &auto.max_ttl {
        Some(text) => match parse_duration(text) {
            Ok(d) => d,
            Err(_) => return Verdict::Pending,
        },
        None => max_ttl,
    };
    // An empty model list asks for every model: never inside an envelope that names models.
    let models_inside = !request.models.is_empty()
        && request
            .models
            .iter()
            .all(|asked| auto.models.iter().any(|allowed| glob_match(allowed, asked)));
    let budget = match (request.limits.budget_usd, auto.budget_usd) {
        (Some(asked), Some(cap)) if asked <= cap => Some(asked),
        (Some(_), Some(_)) => return Verdict::Pending,
        (None, cap) => cap,
        (asked, None) => asked,
    };
    // Access to the access workflow itself is always a person's decision.
    let grants_access_scopes = request.scopes.iter().any(|s| s.starts_with("access:"));
    // No envelope bounds tools (see the module doc).
    let names_tools = !request.mcp_tools.is_empty();
    if models_inside && ttl <= auto_ttl && !grants_access_scopes && !names_tools {
        Verdict::AutoApprove { budget_usd: budget }
    } else {
        Verdict::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AutoApproveConfig;

    fn policies() -> Vec<AccessPolicyConfig> {
        vec![AccessPolicyConfig {
            team: "ml".into(),
            max_ttl: "8h".into(),
            auto_approve: Some(AutoApproveConfig {
                models: vec!["gpt-4o-mini".into(), "mock-*".into()],
                max_ttl: Some("1h".into()),
                budget_usd: Some(5.0),
            }),
        }]
    }

    fn request(models: &[&str], ttl: &str, budget: Option<f64>) -> (NewAccessRequest, Duration) {
        let request = NewAccessRequest {
            name: "n".into(),
            team: "ml".into(),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            ttl: ttl.into(),
            reason: "r".into(),
            limits: super::super::KeyLimits {
                budget_usd: budget,
                ..Default::default()
            },
            ..Default::default()
        };
        let ttl = request.check().unwrap();
        (request, ttl)
    }

    #[test]
    fn inside_the_envelope_is_approved_with_the_envelope_budget() {
        let (r, ttl) = request(&["gpt-4o-mini", "mock-small"], "30m", None);
        assert_eq!(
            judge(&policies(), &r, ttl),
            Verdict::AutoApprove {
                budget_usd: Some(5.0)
            }
        );
        let (r, ttl) = request(&["gpt-4o-mini"], "1h", Some(2.0));
        assert_eq!(
            judge(&policies(), &r, ttl),
            Verdict::AutoApprove {
                budget_usd: Some(2.0)
            }
        );
    }

    #[test]
    fn outside_the_envelope_waits_for_a_person() {
        for (models, ttl, budget) in [
            (&["gpt-4o"][..], "30m", None),
            (&[][..], "30m", None),
            (&["gpt-4o-mini"][..], "2h", None),
            (&["gpt-4o-mini"][..], "30m", Some(6.0)),
        ] {
            let (r, d) = request(models, ttl, budget);
            assert_eq!(
                judge(&policies(), &r, d),
                Verdict::Pending,
                "{models:?} {ttl}"
            );
        }
        let (mut r, d) = request(&["gpt-4o-mini"], "30m", None);
        r.scopes = vec!["access:request".into()];
        assert_eq!(judge(&policies(), &r, d), Verdict::Pending);
    }

    #[test]
    fn a_request_naming_mcp_tools_waits_for_a_person() {
        let (mut r, d) = request(&["gpt-4o-mini"], "30m", None);
        assert!(matches!(
            judge(&policies(), &r, d),
            Verdict::AutoApprove { .. }
        ));
        r.mcp_tools = vec!["github__search_*".into()];
        assert_eq!(judge(&policies(), &r, d), Verdict::Pending);
    }

    #[test]
    fn beyond_max_ttl_is_refused_naming_the_limit() {
        let (r, ttl) = request(&["gpt-4o-mini"], "9h", None);
        let Verdict::Refused(message) = judge(&policies(), &r, ttl) else {
            panic!("9h must be refused");
        };
        assert_eq!(message, "ttl 9h exceeds the max_ttl of 8h for team \"ml\"");
    }

    #[test]
    fn teams_without_a_policy_wait_for_a_person() {
        let (mut r, ttl) = request(&["gpt-4o-mini"], "30d", None);
        r.team = "web".into();
        assert_eq!(judge(&policies(), &r, ttl), Verdict::Pending);
    }
}
