//! Phase limits: request rates per client address, route, key and team, and the key's
//! concurrency. Every check is one CAS on shared state (see [`crate::limits`]); what each
//! decided is kept in the request context for the `x-ratelimit-*` headers.
//!
//! A request refused by one limit gives back what earlier limits of the same phase counted
//! for it, so a rejected request consumes no quota anywhere.

use std::sync::atomic::AtomicU64;

use super::RequestCtx;
use super::ThreadState;
use crate::error::GatewayError;
use crate::limits::{
    budget_limit, gcra_per_minute, gcra_per_second, key_scope, team_scope, Admission, Decision,
    Gcra, LimiterTable, Reservation,
};
use crate::snapshot::{Route, Snapshot};

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

/// Something a request was counted in, to give back if a later limit refuses it.
enum Counted<'a> {
    Route(&'a Gcra, &'a AtomicU64),
    Keyed(&'a LimiterTable<String>, &'a str, Gcra),
    KeyOwned(&'a LimiterTable<String>, String, Gcra),
}

/// What [`requests`] counted an admitted request in.
#[must_use = "keep it to give the quota back if a later check refuses the request"]
pub(super) struct RequestCounts<'a>(Vec<Counted<'a>>);

impl RequestCounts<'_> {
    /// Gives back the quota this request took (a later limit refused it).
    pub fn give_back(self, worker: &ThreadState) {
        give_back(&self.0, worker.shared.admission.now());
    }
}

/// Phase limits: the route's `rate_limit`, the key's `rps`/`rpm`, the team's `rpm`, then the
/// key's `max_concurrency` (its slot is held in `ctx.permit` until the request ends).
pub(super) fn requests<'a>(
    worker: &'a ThreadState,
    snapshot: &'a Snapshot,
    route: Option<&'a Route>,
    ctx: &mut RequestCtx,
) -> Result<RequestCounts<'a>, GatewayError> {
    let admission = &worker.shared.admission;
    let now = admission.now();
    let mut counted: Vec<Counted> = Vec::new();
    let mut refused: Option<(&'static str, Decision)> = None;

    if let Some(route) = route {
        if let Some(gcra) = &route.rate_limit {
            let d = gcra.check(&route.limiter.tat, now);
            ctx.rate.requests(d);
            if d.allowed {
                counted.push(Counted::Route(gcra, &route.limiter.tat));
            } else {
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
        for (table, gcra) in [
            (&admission.key_second, per_second),
            (&admission.key_minute, per_minute),
        ] {
            let Some(gcra) = gcra else { continue };
            if refused.is_some() {
                break;
            }
            let d = table.check(key.id.as_str(), &gcra, now);
            ctx.rate.requests(d);
            if d.allowed {
                counted.push(Counted::KeyOwned(table, key.id.clone(), gcra));
            } else {
                refused = Some(("key", d));
            }
        }
    }
    if refused.is_none() && !team.is_empty() {
        if let Some(gcra) = snapshot.teams.get(team).and_then(|t| t.rpm) {
            let d = admission.team_minute.check(team, &gcra, now);
            ctx.rate.requests(d);
            if d.allowed {
                counted.push(Counted::Keyed(&admission.team_minute, team, gcra));
            } else {
                refused = Some(("team", d));
            }
        }
    }
    if refused.is_none() {
        if let Some(key) = &key {
            if let Some(max) = key.max_concurrency {
                match admission.key_second.try_acquire(key.id.as_str(), max, now) {
                    Some(permit) => ctx.permit = Some(permit),
                    None => {
                        give_back(&counted, now);
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
        None => Ok(RequestCounts(counted)),
        Some((scope, d)) => {
            give_back(&counted, now);
            Err(rate_limited(scope, &d))
        }
    }
}

fn give_back(counted: &[Counted], now: u64) {
    for c in counted {
        match c {
            Counted::Route(gcra, tat) => gcra.adjust(tat, now, -1),
            Counted::Keyed(table, key, gcra) => table.adjust(*key, gcra, now, -1),
            Counted::KeyOwned(table, key, gcra) => table.adjust(key.as_str(), gcra, now, -1),
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

/// The tokens and budget an admitted AI request holds until [`settle_tokens`].
#[must_use = "settle it with the usage the provider reported"]
pub(super) struct TokenHold {
    per_minute: Vec<(TokenScope, Gcra)>,
    reserved: u64,
    budgets: Vec<Reservation>,
}

enum TokenScope {
    Key(String),
    Team(String),
}

impl TokenScope {
    fn table<'a>(&self, admission: &'a Admission) -> (&'a LimiterTable<String>, &str) {
        match self {
            TokenScope::Key(id) => (&admission.key_tokens, id),
            TokenScope::Team(team) => (&admission.team_tokens, team),
        }
    }
}

/// Phase limits, AI part: the key's and team's tokens per minute, then their budgets, on the
/// request's reservation. A refusal gives back whatever this phase had taken.
pub(super) fn tokens(
    worker: &ThreadState,
    snapshot: &Snapshot,
    ctx: &mut RequestCtx,
    ask: &TokenAsk,
) -> Result<TokenHold, GatewayError> {
    let admission = &worker.shared.admission;
    let now = admission.now();
    let mut hold = TokenHold {
        per_minute: Vec::new(),
        reserved: ask.tokens,
        budgets: Vec::new(),
    };
    let Some(consumer) = ctx.consumer.clone() else {
        return Ok(hold);
    };
    let team = snapshot
        .teams
        .get(&consumer.team)
        .filter(|_| !consumer.team.is_empty());
    let mut scopes = Vec::new();
    if let (Some(key), Some(id)) = (&consumer.key, &consumer.id) {
        if let Some(gcra) = key.tpm.and_then(gcra_per_minute) {
            scopes.push((TokenScope::Key(id.clone()), gcra, "key"));
        }
    }
    if let Some(gcra) = team.and_then(|t| t.tpm) {
        scopes.push((TokenScope::Team(consumer.team.clone()), gcra, "team"));
    }
    for (scope, gcra, name) in scopes {
        let (table, id) = scope.table(admission);
        let d = table.check_n(id, &gcra, now, ask.tokens);
        ctx.rate.tokens(d);
        if !d.allowed {
            release(admission, &hold, now);
            return Err(GatewayError::RateLimited {
                code: "tokens_limit_exceeded",
                scope: if name == "key" {
                    "key token"
                } else {
                    "team token"
                },
                retry_after_secs: d.retry_after_secs().max(1),
            });
        }
        hold.per_minute.push((scope, gcra));
    }

    let now_ms = crate::clock::unix_now_ms();
    let budgets = &worker.shared.budgets;
    let mut wanted = Vec::new();
    if let (Some(key), Some(id)) = (&consumer.key, &consumer.id) {
        if let Some(limit) = budget_limit(
            key.budget_usd,
            key.budget_tokens,
            key.budget_period.as_deref(),
        ) {
            wanted.push((key_scope(id), limit, "key"));
        }
    }
    if let Some(limit) = team.and_then(|t| t.budget) {
        wanted.push((team_scope(&consumer.team), limit, "team"));
    }
    for (scope, limit, name) in wanted {
        match budgets.try_reserve(&scope, &limit, now_ms, ask.tokens, ask.nano_usd) {
            Ok(r) => hold.budgets.push(r),
            Err(_) => {
                // Dropping the reservations taken so far releases them.
                release(admission, &hold, now);
                return Err(GatewayError::InsufficientQuota(name));
            }
        }
    }
    Ok(hold)
}

/// Gives back the tokens-per-minute reservations of a refused request.
fn release(admission: &Admission, hold: &TokenHold, now: u64) {
    for (scope, gcra) in &hold.per_minute {
        let (table, id) = scope.table(admission);
        table.adjust(id, gcra, now, -(hold.reserved as i64));
    }
}

/// Corrects the token limits and budgets from the reservation to what was really used.
pub(super) fn settle_tokens(
    worker: &ThreadState,
    hold: TokenHold,
    used_tokens: u64,
    used_nano_usd: u64,
) {
    let admission = &worker.shared.admission;
    let now = admission.now();
    let delta = used_tokens as i64 - hold.reserved as i64;
    for (scope, gcra) in &hold.per_minute {
        let (table, id) = scope.table(admission);
        table.adjust(id, gcra, now, delta);
    }
    let now_ms = crate::clock::unix_now_ms();
    for reservation in hold.budgets {
        worker
            .shared
            .budgets
            .settle(reservation, now_ms, used_tokens, used_nano_usd);
    }
}
