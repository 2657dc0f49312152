//! What an admitted request holds until it ends: the request counts it took (given back if a
//! later check refuses it, so a refused request consumes no quota anywhere) and the tokens
//! and budget it reserved (corrected to what it really used when it is settled).
//!
//! These types only count against [`Admission`] and [`BudgetTable`]; which limits apply to a
//! request, and what a refusal answers, is the caller's business.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

use super::admission::Admission;
use super::budget::{BudgetExceeded, BudgetLimit, BudgetTable, Reservation};
use super::gcra::{Decision, Gcra};
use super::table::LimiterTable;

/// One limit a request was counted in.
enum Counted<'a> {
    /// A standalone limiter state (a route's `rate_limit`).
    Single(&'a Gcra, &'a AtomicU64),
    /// An entry of a keyed table (a key's or a team's rate).
    Keyed(&'a LimiterTable<String>, Cow<'a, str>, Gcra),
}

/// The request counts an admitted request took, to give back if a later check refuses it.
#[derive(Default)]
#[must_use = "keep it to give the quota back if a later check refuses the request"]
pub struct RequestCounts<'a> {
    counted: Vec<Counted<'a>>,
}

impl<'a> RequestCounts<'a> {
    /// No counts yet.
    pub fn new() -> Self {
        RequestCounts::default()
    }

    /// Checks one request against `gcra` over the standalone state `tat`; kept when allowed.
    pub fn check(&mut self, gcra: &'a Gcra, tat: &'a AtomicU64, now: u64) -> Decision {
        let d = gcra.check(tat, now);
        if d.allowed {
            self.counted.push(Counted::Single(gcra, tat));
        }
        d
    }

    /// Checks one request against `gcra` for `key` in `table`; kept when allowed.
    pub fn check_keyed(
        &mut self,
        table: &'a LimiterTable<String>,
        key: impl Into<Cow<'a, str>>,
        gcra: Gcra,
        now: u64,
    ) -> Decision {
        let key = key.into();
        let d = table.check(key.as_ref(), &gcra, now);
        if d.allowed {
            self.counted.push(Counted::Keyed(table, key, gcra));
        }
        d
    }

    /// How many limits the request was counted in.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.counted.len()
    }

    /// Gives back every count taken (a later limit refused the request).
    pub fn give_back(self, now: u64) {
        for c in &self.counted {
            match c {
                Counted::Single(gcra, tat) => gcra.adjust(tat, now, -1),
                Counted::Keyed(table, key, gcra) => table.adjust(key.as_ref(), gcra, now, -1),
            }
        }
    }
}

/// Whose tokens-per-minute table a reservation is counted in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenScope {
    /// A key, by id.
    Key(String),
    /// A team, by name.
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

/// The tokens and budgets an admitted AI request holds until it is settled: one reservation
/// of `reserved` tokens (its estimated prompt plus its completion reservation) in each
/// tokens-per-minute scope, and a reservation on each budget.
#[must_use = "settle it with the usage the provider reported, or release it"]
pub struct TokenHold {
    reserved: u64,
    per_minute: Vec<(TokenScope, Gcra)>,
    budgets: Vec<Reservation>,
}

impl TokenHold {
    /// A hold of `reserved` tokens in nothing yet.
    pub fn new(reserved: u64) -> TokenHold {
        TokenHold {
            reserved,
            per_minute: Vec::new(),
            budgets: Vec::new(),
        }
    }

    /// The tokens reserved in each scope.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Checks the reservation against `scope`'s tokens per minute; held when allowed (a
    /// refusal takes nothing).
    pub fn check_tokens(
        &mut self,
        admission: &Admission,
        scope: TokenScope,
        gcra: Gcra,
        now: u64,
    ) -> Decision {
        let (table, id) = scope.table(admission);
        let d = table.check_n(id, &gcra, now, self.reserved);
        if d.allowed {
            self.per_minute.push((scope, gcra));
        }
        d
    }

    /// Reserves the tokens and `nano_usd` on the budget `scope` (see
    /// [`BudgetTable::try_reserve`]); held when it fits.
    pub fn reserve_budget(
        &mut self,
        budgets: &BudgetTable,
        scope: &str,
        limit: &BudgetLimit,
        now_ms: i64,
        nano_usd: u64,
    ) -> Result<(), BudgetExceeded> {
        let reservation = budgets.try_reserve(scope, limit, now_ms, self.reserved, nano_usd)?;
        self.budgets.push(reservation);
        Ok(())
    }

    /// Gives everything back (a later check refused the request): the tokens per minute
    /// reserved, and the budget reservations (released by dropping them).
    pub fn release(self, admission: &Admission, now: u64) {
        for (scope, gcra) in &self.per_minute {
            let (table, id) = scope.table(admission);
            table.adjust(id, gcra, now, -(self.reserved as i64));
        }
    }

    /// Corrects every scope from the reservation to what was really used: the tokens per
    /// minute up or down by the difference, the budgets to `used_tokens` and `used_nano_usd`.
    pub fn settle(
        self,
        admission: &Admission,
        budgets: &BudgetTable,
        now: u64,
        now_ms: i64,
        used_tokens: u64,
        used_nano_usd: u64,
    ) {
        let delta = used_tokens as i64 - self.reserved as i64;
        for (scope, gcra) in &self.per_minute {
            let (table, id) = scope.table(admission);
            table.adjust(id, gcra, now, delta);
        }
        for reservation in self.budgets {
            budgets.settle(reservation, now_ms, used_tokens, used_nano_usd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::limits::{budget_limit, gcra_per_minute, gcra_per_second, key_scope};
    use std::sync::Arc;

    fn admission() -> Admission {
        Admission::new(Arc::new(ManualClock::new(1_000_000_000)))
    }

    #[test]
    fn refused_later_check_gives_back_earlier_counts() {
        let admission = admission();
        let now = admission.now();
        let route_gcra = gcra_per_second(1.0, 0).unwrap();
        let route_tat = AtomicU64::new(0);
        let key_gcra = gcra_per_minute(1).unwrap();
        // The key's one request a minute is already used by an earlier request.
        assert!(admission.key_minute.check("k1", &key_gcra, now).allowed);

        let mut counts = RequestCounts::new();
        assert!(counts.check(&route_gcra, &route_tat, now).allowed);
        let refused = counts.check_keyed(&admission.key_minute, "k1", key_gcra, now);
        assert!(!refused.allowed);
        assert_eq!(counts.len(), 1, "a refused check counts nothing");
        counts.give_back(now);

        // The route's single slot is free again: the refused request consumed nothing.
        let mut again = RequestCounts::new();
        assert!(again.check(&route_gcra, &route_tat, now).allowed);
        assert!(!route_gcra.check(&route_tat, now).allowed);
    }

    #[test]
    fn given_back_keyed_count_frees_the_key_again() {
        let admission = admission();
        let now = admission.now();
        let gcra = gcra_per_minute(1).unwrap();
        let mut counts = RequestCounts::new();
        assert!(
            counts
                .check_keyed(&admission.team_minute, String::from("research"), gcra, now)
                .allowed
        );
        assert!(!admission.team_minute.check("research", &gcra, now).allowed);
        counts.give_back(now);
        assert!(admission.team_minute.check("research", &gcra, now).allowed);
    }

    /// Tokens per minute: 600 a minute, so a burst of 600 and 10 a second after that.
    fn tpm() -> Gcra {
        gcra_per_minute(600).unwrap()
    }

    #[test]
    fn settle_corrects_the_reservation_down_to_the_usage() {
        let admission = admission();
        let now = admission.now();
        let mut hold = TokenHold::new(500);
        assert!(
            hold.check_tokens(&admission, TokenScope::Key("k1".into()), tpm(), now)
                .allowed
        );
        // 500 of 600 held: another 200 does not fit.
        assert!(!admission.key_tokens.check_n("k1", &tpm(), now, 200).allowed);
        hold.settle(&admission, &BudgetTable::new(), now, 0, 100, 0);
        // Only the 100 used stay counted: 500 more now fit.
        assert!(admission.key_tokens.check_n("k1", &tpm(), now, 500).allowed);
        assert!(!admission.key_tokens.check_n("k1", &tpm(), now, 1).allowed);
    }

    #[test]
    fn settle_corrects_the_reservation_up_to_the_usage() {
        let admission = admission();
        let now = admission.now();
        let mut hold = TokenHold::new(100);
        assert!(
            hold.check_tokens(&admission, TokenScope::Team("research".into()), tpm(), now)
                .allowed
        );
        hold.settle(&admission, &BudgetTable::new(), now, 0, 550, 0);
        // 550 of 600 used: 50 fit, 51 do not.
        assert!(
            !admission
                .team_tokens
                .check_n("research", &tpm(), now, 51)
                .allowed
        );
        assert!(
            admission
                .team_tokens
                .check_n("research", &tpm(), now, 50)
                .allowed
        );
    }

    #[test]
    fn settle_charges_the_budget_what_was_used() {
        let admission = admission();
        let budgets = BudgetTable::new();
        let limit = budget_limit(None, Some(1_000), Some("total")).unwrap();
        let scope = key_scope("k1");
        let mut hold = TokenHold::new(400);
        hold.reserve_budget(&budgets, &scope, &limit, 0, 0).unwrap();
        assert_eq!(budgets.reserved(&scope).0, 400);
        hold.settle(&admission, &budgets, admission.now(), 0, 900, 0);
        assert_eq!(budgets.reserved(&scope).0, 0);
        assert_eq!(budgets.spent(&scope, limit.period, 0).0, 900);
    }

    #[test]
    fn released_hold_gives_back_tokens_and_budget() {
        let admission = admission();
        let now = admission.now();
        let budgets = BudgetTable::new();
        let limit = budget_limit(None, Some(1_000), Some("total")).unwrap();
        let scope = key_scope("k1");
        let mut hold = TokenHold::new(600);
        assert!(
            hold.check_tokens(&admission, TokenScope::Key("k1".into()), tpm(), now)
                .allowed
        );
        hold.reserve_budget(&budgets, &scope, &limit, 0, 0).unwrap();
        // A second budget that cannot take 600 tokens refuses, and the caller releases.
        let small = budget_limit(None, Some(100), Some("total")).unwrap();
        assert!(hold
            .reserve_budget(&budgets, "team:research", &small, 0, 0)
            .is_err());
        hold.release(&admission, now);
        assert_eq!(budgets.reserved(&scope), (0, 0));
        assert_eq!(budgets.spent(&scope, limit.period, 0), (0, 0));
        assert!(admission.key_tokens.check_n("k1", &tpm(), now, 600).allowed);
    }
}
