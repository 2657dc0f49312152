//! Phase limits: request rates per client address, route, key and team, and the key's
//! concurrency. Every check is one CAS on shared state (see [`crate::limits`]); what each
//! decided is kept in the request context for the `x-ratelimit-*` headers.
//!
//! A request refused by one limit gives back what earlier limits of the same phase counted
//! for it, so a rejected request consumes no quota anywhere. The counting, giving back and
//! settling is [`crate::limits::hold`]'s; this file decides which limits apply to a request,
//! records each decision for the `x-ratelimit-*` headers and maps a refusal to its error.

use super::ThreadState;
use super::{ConcurrencySlot, RequestCtx};
use crate::auth::Consumer;
use crate::cluster::RateKind;
use crate::error::GatewayError;
use crate::limits::{
    budget_limit, gcra_per_minute, gcra_per_second, key_scope, team_scope, BudgetLimit, Decision,
    Gcra, RequestCounts, TokenHold, TokenScope,
};
use crate::snapshot::{Route, Snapshot, TeamLimits};

/// Phase access, second half: the route's per-client-address limit. It runs before auth and
/// counts every request that reaches it (the flood guard), whatever happens to it later.
pub(super) fn client_address(
    worker: &ThreadState,
    route: &Route,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let Some(gcra) = &route.ip_rate_limit else {
        return Ok(());
    };
    let admission = &worker.shared.admission;
    let d = route
        .limiter
        .per_ip
        .check(&ctx.client_addr.ip(), gcra, admission.now());
    ctx.rate.requests(d);
    if !d.allowed {
        return Err(rate_limited("client address", &d));
    }
    Ok(())
}

/// Phase limits: the route's `rate_limit`, the key's `rps`/`rpm`, the team's `rpm` (each also
/// taken from the fleet's allowance when the cluster is on), then the key's `max_concurrency`
/// (its slot is held in `ctx.permit` until the request ends).
pub(crate) fn requests<'a>(
    worker: &'a ThreadState,
    snapshot: &'a Snapshot,
    route: Option<&'a Route>,
    ctx: &mut RequestCtx,
) -> Result<RequestCounts<'a>, GatewayError> {
    let admission = &worker.shared.admission;
    let now = admission.now();
    let mut counts = RequestCounts::new();
    let mut refused: Option<(&'static str, Decision)> = None;

    if let Some(route) = route {
        if let Some(gcra) = &route.rate_limit {
            let d = counts.check(gcra, &route.limiter.tat, now);
            ctx.rate.requests(d);
            if !d.allowed {
                refused = Some(("route", d));
            }
        }
    }
    // Owned copies: the counts outlive the borrow of `ctx`.
    let key = ctx.consumer.as_ref().and_then(|c| c.key.clone());
    let team: &'a str = match ctx.consumer.as_ref() {
        Some(c) if !c.team.is_empty() => snapshot
            .teams
            .get_key_value(c.team.as_str())
            .map_or("", |(name, _)| name.as_str()),
        _ => "",
    };
    if let Some(key) = &key {
        let per_second = key.rps.and_then(|rps| gcra_per_second(rps, 0));
        let per_minute = key.rpm.and_then(gcra_per_minute);
        for (kind, gcra) in [
            (RateKind::KeyRps, per_second),
            (RateKind::KeyRpm, per_minute),
        ] {
            let Some(gcra) = gcra else { continue };
            if refused.is_some() {
                break;
            }
            let d = counts.check_rate(admission, kind, key.id.clone(), gcra, now);
            ctx.rate.requests(d);
            if !d.allowed {
                refused = Some(("key", d));
            }
        }
    }
    if refused.is_none() && !team.is_empty() {
        if let Some(gcra) = snapshot.teams.get(team).and_then(|t| t.rpm) {
            let d = counts.check_rate(admission, RateKind::TeamRpm, team, gcra, now);
            ctx.rate.requests(d);
            if !d.allowed {
                refused = Some(("team", d));
            }
        }
    }
    if refused.is_none() {
        if let Some(key) = &key {
            if let Some(max) = key.max_concurrency {
                // In fleet mode the slot is a lease of the fleet's (never waits on Redis:
                // the node's allowance is local); otherwise it is counted on this node.
                let slot = match admission.fleet_leases() {
                    Some(fleet) => fleet
                        .try_acquire(key.id.as_str(), max)
                        .map(ConcurrencySlot::Fleet),
                    None => admission
                        .key_second
                        .try_acquire(key.id.as_str(), max, now)
                        .map(ConcurrencySlot::Local),
                };
                match slot {
                    Some(slot) => ctx.permit = Some(slot),
                    None => {
                        counts.give_back(now);
                        return Err(GatewayError::RateLimited {
                            code: "concurrency_limit_exceeded",
                            scope: "key concurrency",
                            retry_after_secs: 1,
                        });
                    }
                }
            }
        }
    }
    match refused {
        None => Ok(counts),
        Some((scope, d)) => {
            counts.give_back(now);
            Err(rate_limited(scope, &d))
        }
    }
}

/// The 429 for a refused rate check.
pub(super) fn rate_limited(scope: &'static str, d: &Decision) -> GatewayError {
    GatewayError::RateLimited {
        code: "rate_limit_exceeded",
        scope,
        retry_after_secs: d.retry_after_secs().max(1),
    }
}

/// What an AI request asks of the token limits and budgets before it is sent: its estimated
/// prompt plus its completion reservation, and that priced with the model's prices.
pub(super) struct TokenAsk {
    pub tokens: u64,
    pub nano_usd: u64,
}

/// Phase limits for an AI request: [`requests`], then [`tokens`] on what it asks. A refusal
/// by the token limits gives back the request counts and the concurrency slot too: a refused
/// request consumes no quota.
pub(super) fn ai_request(
    worker: &ThreadState,
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    ask: &TokenAsk,
) -> Result<TokenHold, GatewayError> {
    let counts = requests(worker, snapshot, None, ctx)?;
    tokens(worker, snapshot, ctx, ask).inspect_err(|_| {
        counts.give_back(worker.shared.admission.now());
        ctx.permit = None;
    })
}

/// The token limits and budgets that apply to a caller: its key's and its team's tokens per
/// minute and budgets. One reading of the settings serves both admission ([`tokens`]) and the
/// decision whether a prompt is worth estimating at all ([`TokenLimits::is_empty`]), so the
/// two cannot disagree.
#[derive(Debug, Default)]
pub(super) struct TokenLimits<'a> {
    /// The key's id, when the caller has a key (its limits are keyed by it).
    key_id: Option<&'a str>,
    key_tpm: Option<Gcra>,
    key_budget: Option<BudgetLimit>,
    /// The caller's team, when it names one that is configured.
    team: Option<&'a str>,
    team_tpm: Option<Gcra>,
    team_budget: Option<BudgetLimit>,
}

impl<'a> TokenLimits<'a> {
    /// What applies to `consumer`, whose team's limits are `team` (`None` when the consumer
    /// has no team or its team is not configured). Reads settings only: no allocation.
    pub(super) fn of(consumer: &'a Consumer, team: Option<&'a TeamLimits>) -> TokenLimits<'a> {
        let mut limits = TokenLimits::default();
        if let (Some(key), Some(id)) = (&consumer.key, &consumer.id) {
            limits.key_id = Some(id.as_str());
            limits.key_tpm = key.tpm.and_then(gcra_per_minute);
            limits.key_budget = budget_limit(
                key.budget_usd,
                key.budget_tokens,
                key.budget_period.as_deref(),
            );
        }
        if let Some(team) = team.filter(|_| !consumer.team.is_empty()) {
            limits.team = Some(consumer.team.as_str());
            limits.team_tpm = team.tpm;
            limits.team_budget = team.budget;
        }
        limits
    }

    /// What applies to the caller of `ctx`: nothing for an anonymous caller.
    pub(super) fn of_request(snapshot: &'a Snapshot, ctx: &'a RequestCtx) -> TokenLimits<'a> {
        match &ctx.consumer {
            Some(consumer) => TokenLimits::of(consumer, snapshot.teams.get(&consumer.team)),
            None => TokenLimits::default(),
        }
    }

    /// Whether no tokens-per-minute limit and no budget applies. A request of such a caller
    /// reserves nothing, so its prompt need not be estimated before it is sent: what it is
    /// charged comes from the provider's reported usage (and only when none is reported is
    /// the estimate made, at settlement).
    pub(super) fn is_empty(&self) -> bool {
        self.key_tpm.is_none()
            && self.team_tpm.is_none()
            && self.key_budget.is_none()
            && self.team_budget.is_none()
    }
}

/// Phase limits, AI part: the key's and team's tokens per minute, then their budgets, on the
/// request's reservation. A refusal gives back whatever this phase had taken.
fn tokens(
    worker: &ThreadState,
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    ask: &TokenAsk,
) -> Result<TokenHold, GatewayError> {
    let admission = &worker.shared.admission;
    let now = admission.now();
    let mut hold = TokenHold::new(ask.tokens);
    let limits = TokenLimits::of_request(snapshot, ctx);
    if limits.is_empty() {
        return Ok(hold);
    }
    let mut scopes = Vec::new();
    if let (Some(id), Some(gcra)) = (limits.key_id, limits.key_tpm) {
        scopes.push((TokenScope::Key(id.to_string()), gcra, "key token"));
    }
    if let (Some(team), Some(gcra)) = (limits.team, limits.team_tpm) {
        scopes.push((TokenScope::Team(team.to_string()), gcra, "team token"));
    }
    let mut wanted = Vec::new();
    if let (Some(id), Some(limit)) = (limits.key_id, limits.key_budget) {
        wanted.push((key_scope(id), limit, "key"));
    }
    if let (Some(team), Some(limit)) = (limits.team, limits.team_budget) {
        wanted.push((team_scope(team), limit, "team"));
    }
    for (scope, gcra, name) in scopes {
        let d = hold.check_tokens(admission, scope, gcra, now);
        ctx.rate.tokens(d);
        if !d.allowed {
            hold.release(admission, now);
            return Err(GatewayError::RateLimited {
                code: "tokens_limit_exceeded",
                scope: name,
                retry_after_secs: d.retry_after_secs().max(1),
            });
        }
    }

    let now_ms = crate::clock::unix_now_ms();
    let budgets = &worker.shared.budgets;
    for (scope, limit, name) in wanted {
        if hold
            .reserve_budget(budgets, &scope, &limit, now_ms, ask.nano_usd)
            .is_err()
        {
            hold.release(admission, now);
            return Err(GatewayError::InsufficientQuota(name));
        }
    }
    Ok(hold)
}

/// Phase settle: corrects the token limits and budgets from the reservation to what was
/// really used.
pub(super) fn settle_tokens(
    worker: &ThreadState,
    hold: TokenHold,
    used_tokens: u64,
    used_nano_usd: u64,
) {
    let admission = &worker.shared.admission;
    hold.settle(
        admission,
        &worker.shared.budgets,
        admission.now(),
        crate::clock::unix_now_ms(),
        used_tokens,
        used_nano_usd,
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::test_support::record;
    use crate::store::KeyRecord;

    fn keyed(key: KeyRecord) -> Consumer {
        Consumer::from_key(&Arc::new(key))
    }

    fn in_team(mut key: KeyRecord, team: &str) -> KeyRecord {
        key.team = team.to_string();
        key
    }

    #[test]
    fn a_key_without_tpm_or_budget_outside_a_team_reserves_nothing() {
        let consumer = keyed(record("key_a", "a"));
        assert!(TokenLimits::of(&consumer, None).is_empty());
    }

    #[test]
    fn a_key_with_tpm_or_a_budget_reserves() {
        let mut tpm = record("key_a", "a");
        tpm.tpm = Some(10_000);
        let mut usd = record("key_a", "a");
        usd.budget_usd = Some(5.0);
        let mut budget_tokens = record("key_a", "a");
        budget_tokens.budget_tokens = Some(1_000_000);
        for key in [tpm, usd, budget_tokens] {
            let consumer = keyed(key.clone());
            assert!(!TokenLimits::of(&consumer, None).is_empty(), "{key:?}");
        }
    }

    #[test]
    fn a_zero_tpm_is_no_limit_as_at_admission() {
        // `gcra_per_minute(0)` is no rate: admission checks nothing, so nothing is reserved.
        let mut key = record("key_a", "a");
        key.tpm = Some(0);
        let consumer = keyed(key);
        assert!(TokenLimits::of(&consumer, None).is_empty());
    }

    #[test]
    fn a_team_tpm_or_budget_applies_to_its_keys() {
        let consumer = keyed(in_team(record("key_a", "a"), "ml"));
        let tpm = TeamLimits {
            tpm: gcra_per_minute(50_000),
            ..TeamLimits::default()
        };
        let budget = TeamLimits {
            budget: budget_limit(Some(100.0), None, Some("month")),
            ..TeamLimits::default()
        };
        let rpm_only = TeamLimits {
            rpm: gcra_per_minute(600),
            ..TeamLimits::default()
        };
        assert!(!TokenLimits::of(&consumer, Some(&tpm)).is_empty());
        assert!(!TokenLimits::of(&consumer, Some(&budget)).is_empty());
        // A request rate is checked in the request phase: it needs no token estimate.
        assert!(TokenLimits::of(&consumer, Some(&rpm_only)).is_empty());
    }

    #[test]
    fn a_consumer_without_a_team_name_gets_no_team_limits() {
        let consumer = keyed(record("key_a", "a"));
        let tpm = TeamLimits {
            tpm: gcra_per_minute(50_000),
            ..TeamLimits::default()
        };
        assert!(TokenLimits::of(&consumer, Some(&tpm)).is_empty());
    }
}
