//! What an admitted request holds until it ends: the request counts it took (given back if a
//! later check refuses it, so a refused request consumes no quota anywhere) and the tokens
//! and budget it reserved (corrected to what it really used when it is settled).
//!
//! With the cluster on, a key's or team's rate is also taken from this node's fleet allowance
//! ([`FleetRates`](crate::cluster::FleetRates)) once the local check admits; a fleet refusal
//! is a refusal like the local one, and giving back, releasing and settling correct the fleet
//! allowance too.
//!
//! These types only count against [`Admission`] and [`BudgetTable`]; which limits apply to a
//! request, and what a refusal answers, is the caller's business.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::admission::Admission;
use super::budget::{BudgetExceeded, BudgetLimit, BudgetTable, Reservation};
use super::gcra::{Decision, Gcra};
use super::table::LimiterTable;
use crate::cluster::{FleetDecision, FleetRefusal, RateKind, RateShare};

/// One limit a request was counted in.
enum Counted<'a> {
    /// A standalone limiter state (a route's `rate_limit`).
    Single(&'a Gcra, &'a AtomicU64),
    /// An entry of a keyed table (a key's or a team's rate).
    Keyed(&'a LimiterTable<String>, Cow<'a, str>, Gcra),
    /// One unit of a fleet-wide rate's allowance on this node.
    Fleet(Arc<RateShare>),
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

    /// Checks one request of `key`'s `kind` rate (`gcra`, the rate as configured): the local
    /// check in the kind's table (at this node's share while the fleet is unreachable), then,
    /// with the cluster on, the fleet's allowance. Kept when both admit; a fleet refusal gives
    /// the local count back and is answered like a local one.
    pub fn check_rate(
        &mut self,
        admission: &'a Admission,
        kind: RateKind,
        key: impl Into<Cow<'a, str>>,
        gcra: Gcra,
        now: u64,
    ) -> Decision {
        let key = key.into();
        let table = admission.rate_table(kind);
        let local = admission.local_gcra(gcra);
        let d = table.check(key.as_ref(), &local, now);
        if !d.allowed {
            return d;
        }
        if let Some(fleet) = admission.fleet_rates() {
            match fleet.take(kind, key.as_ref(), &gcra, 1) {
                FleetDecision::Admitted(share) => self.counted.push(Counted::Fleet(share)),
                FleetDecision::Refused(refusal) => {
                    table.adjust(key.as_ref(), &local, now, -1);
                    return fleet_refused(d, refusal);
                }
                FleetDecision::NotConsulted => {}
            }
        }
        self.counted.push(Counted::Keyed(table, key, local));
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
                Counted::Fleet(share) => share.give_back(1),
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

    fn kind(&self) -> RateKind {
        match self {
            TokenScope::Key(_) => RateKind::KeyTpm,
            TokenScope::Team(_) => RateKind::TeamTpm,
        }
    }
}

/// A local admission refused by the fleet: nothing remains, and the wait is the fleet's.
fn fleet_refused(local: Decision, refusal: FleetRefusal) -> Decision {
    Decision {
        allowed: false,
        remaining: 0,
        retry_after_ns: refusal.retry_after_ns,
        ..local
    }
}

/// One tokens-per-minute scope a hold counts in: the local rate it was checked at, and its
/// fleet allowance when the fleet took the reservation too.
struct TokenCount {
    scope: TokenScope,
    local: Gcra,
    fleet: Option<Arc<RateShare>>,
}

/// The tokens and budgets an admitted AI request holds until it is settled: one reservation
/// of `reserved` tokens (its estimated prompt plus its completion reservation) in each
/// tokens-per-minute scope, and a reservation on each budget.
#[must_use = "settle it with the usage the provider reported, or release it"]
pub struct TokenHold {
    reserved: u64,
    per_minute: Vec<TokenCount>,
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

    /// Checks the reservation against `scope`'s tokens per minute (`gcra`, the rate as
    /// configured): locally (at this node's share while the fleet is unreachable), then, with
    /// the cluster on, against the fleet's allowance. Held when allowed; a refusal takes
    /// nothing.
    pub fn check_tokens(
        &mut self,
        admission: &Admission,
        scope: TokenScope,
        gcra: Gcra,
        now: u64,
    ) -> Decision {
        let (table, id) = scope.table(admission);
        let local = admission.local_gcra(gcra);
        let d = table.check_n(id, &local, now, self.reserved);
        if !d.allowed {
            return d;
        }
        let mut fleet = None;
        if let Some(rates) = admission.fleet_rates() {
            match rates.take(scope.kind(), id, &gcra, self.reserved) {
                FleetDecision::Admitted(share) => fleet = Some(share),
                FleetDecision::Refused(refusal) => {
                    table.adjust(id, &local, now, -(self.reserved as i64));
                    return fleet_refused(d, refusal);
                }
                FleetDecision::NotConsulted => {}
            }
        }
        self.per_minute.push(TokenCount {
            scope,
            local,
            fleet,
        });
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
        for count in &self.per_minute {
            let (table, id) = count.scope.table(admission);
            table.adjust(id, &count.local, now, -(self.reserved as i64));
            if let Some(share) = &count.fleet {
                share.give_back(self.reserved);
            }
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
        for count in &self.per_minute {
            let (table, id) = count.scope.table(admission);
            table.adjust(id, &count.local, now, delta);
            if let Some(share) = &count.fleet {
                share.settle(delta);
            }
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

    fn fleet_admission() -> (Admission, Arc<crate::cluster::FleetRates>) {
        let admission = admission();
        let fleet = crate::cluster::FleetRates::new(10, std::time::Duration::from_millis(100));
        assert!(admission.set_fleet_rates(Arc::clone(&fleet)).is_ok());
        (admission, fleet)
    }

    #[test]
    fn a_fleet_refusal_gives_back_the_local_count() {
        let (admission, fleet) = fleet_admission();
        let now = admission.now();
        let gcra = gcra_per_second(20.0, 0).unwrap();
        // Never synced: the fleet lends one sync interval's worth (2 at 20/s over 100 ms).
        let mut admitted = Vec::new();
        for _ in 0..2 {
            let mut counts = RequestCounts::new();
            assert!(
                counts
                    .check_rate(&admission, RateKind::KeyRps, "k1", gcra, now)
                    .allowed
            );
            assert_eq!(counts.len(), 2, "counted locally and in the fleet");
            admitted.push(counts);
        }
        let mut refused = RequestCounts::new();
        let d = refused.check_rate(&admission, RateKind::KeyRps, "k1", gcra, now);
        assert!(!d.allowed);
        assert_eq!((d.limit, d.remaining), (20, 0));
        assert_eq!(d.retry_after_ns, 100_000_000, "one sync interval");
        assert_eq!(refused.len(), 0, "a fleet refusal counts nothing");
        // Locally only the two admitted requests are counted: this third check leaves 17.
        assert_eq!(admission.key_second.check("k1", &gcra, now).remaining, 17);

        let share = fleet.share(RateKind::KeyRps, "k1").unwrap();
        assert_eq!(share.allowance(), -2);
        admitted.pop().unwrap().give_back(now);
        assert_eq!(
            share.allowance(),
            -1,
            "a later refusal gives the fleet unit back"
        );
    }

    #[test]
    fn token_holds_correct_the_fleet_allowance_when_settled_or_released() {
        let (admission, fleet) = fleet_admission();
        let now = admission.now();
        // 6000 a minute: 10 tokens per 100 ms sync interval may be borrowed.
        let gcra = gcra_per_minute(6000).unwrap();
        let mut first = TokenHold::new(50);
        assert!(
            first
                .check_tokens(&admission, TokenScope::Key("k1".into()), gcra, now)
                .allowed,
            "one reservation goes on credit while nothing is borrowed"
        );
        let share = fleet.share(RateKind::KeyTpm, "k1").unwrap();
        assert_eq!(share.allowance(), -50);
        first.settle(&admission, &BudgetTable::new(), now, 0, 20, 0);
        assert_eq!(share.allowance(), -20, "charged what was used");

        let mut second = TokenHold::new(5);
        let d = second.check_tokens(&admission, TokenScope::Key("k1".into()), gcra, now);
        assert!(!d.allowed, "in debt past the floor");
        // Locally only the 20 used are counted.
        assert_eq!(
            admission.key_tokens.check_n("k1", &gcra, now, 1).remaining,
            6000 - 21
        );

        share.give_back(40);
        let mut third = TokenHold::new(5);
        assert!(
            third
                .check_tokens(&admission, TokenScope::Key("k1".into()), gcra, now)
                .allowed
        );
        assert_eq!(share.allowance(), 15);
        third.release(&admission, now);
        assert_eq!(
            share.allowance(),
            20,
            "a released hold gives its tokens back"
        );
    }
}
