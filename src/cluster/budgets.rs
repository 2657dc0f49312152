//! Fleet budgets: a key's or team's spend budget (tokens and/or nano-USD per UTC day, month
//! or in total) held across the fleet through Redis, without the hot path waiting on it.
//!
//! **On the node** each scope (`key:<id>`, `team:<name>`) has a [`BudgetShare`] for its
//! current period, with per limited dimension an *allowance*: budget Redis granted this node
//! and no request has reserved yet. A request reserves from it by compare-and-swap
//! ([`FleetBudgets::reserve`]); settling puts back what the request did not use (or takes
//! what it used beyond its reservation). When the allowance is short, the request may still
//! be admitted **on credit, once per tick** (the `may_borrow` flag is swapped off), and only
//! while the node's last fleet view had budget remaining; the allowance then goes negative.
//! Otherwise it is refused (`insufficient_quota`, as a single node's budget refuses).
//!
//! **Every tick** the link's [`BudgetSync`] sends, per active scope, one call of
//! `lua/budget_sync.lua` that reports the node's cumulative settled spend and its *hold*
//! (in-flight reservations + unused allowance: what it may still spend without asking), and
//! asks for a grant sized by the demand of the last tick (what requests asked, admitted or
//! not). Redis keeps, per scope and period, the fleet's settled spend and each live node's
//! hold; `remaining = limit - spent - live holds`, and a grant is a fair part of it:
//! `min(ask, max(remaining / busy nodes, min(one request, remaining)))`. So grants never
//! exceed what is left, and a node can only spend past the budget by borrowing.
//!
//! **The bound.** Budget spend over the fleet <= budget + N x (one request's reservation),
//! plus any request's actual usage above its reservation (as on one node: a stream that
//! crosses the budget finishes). Why: everything a node may spend without asking is in its
//! hold, which Redis counts at the node's next call; what is outside it is the one borrowed
//! request per node per tick, admitted only while the node's last view had room. Each
//! borrowed request is in the hold from the next call on, so once the view shows the fleet at
//! or past the budget, nobody borrows again until spend falls back under it (it never does
//! within a period). Across the nodes that is at most N requests past what was left.
//!
//! **Lost replies.** Spend is reported as a cumulative counter per node and period, and Redis
//! adds only the part beyond what it last applied for that node; a hold is a level that
//! replaces the last one. So a call Redis applied but whose reply was lost counts nothing
//! twice: its spend is not added again when the next call repeats it, and its grant, which
//! the node never received, stays counted in the node's hold only until the next call
//! reports the real hold (the budget is under-used for one tick, never over-spent).
//!
//! **A node that vanishes** (`kill -9`) stops calling; Redis drops its hold after three
//! ticks. Its in-flight requests never settle anywhere, so no spend is lost; what it settled
//! was reported at its previous calls (at most the last tick's settlements are lost with it,
//! as they would be from the ledger's point of view too until its journal is delivered).
//!
//! **Redis unreachable** (learnt from `unanswered`): on entering the outage each node tops up
//! its allowance once per scope with `remaining / live nodes` of the remaining it last saw,
//! and goes on admitting from the allowance, without borrowing, until Redis answers; then
//! the top-up is taken back out of the allowance and the report carries what was spent. The
//! fleet's spend during the outage is therefore at most its holds plus the remaining at its
//! start (plus the borrowed requests above), except that the nodes' views are up to a tick
//! apart: a view taken before another node's last grant still counts that grant as
//! remaining, so the grants of the last tick before the outage may be shared out twice
//! (measured in `tests/cluster_budgets.rs`: usually none of it shows and the total stays
//! within the budget + N requests; on a loaded machine, whose ticks run late, one more
//! request has been seen: $2.04 of $2.00 with 3 nodes). **Redis restarted empty**: the script never lets the fleet spend
//! fall below a calling node's last view plus what it settled since, so the first calls
//! rebuild the hash from the nodes' views; a node's first view is the ledger's spend it was
//! seeded with at start-up ([`FleetBudgets::seed`]), so no fresh budget appears. What the
//! rebuild can miss is what other nodes reported in the last tick before the restart, after
//! the first caller's view (measured: up to 8 requests of $0.01 at ~120 requests/s, 3 nodes).
//!
//! **Periods.** A share belongs to one period; a request in a later period replaces it with a
//! fresh share (the Redis hash is per period, `cf:budget:<scope>:<period_start_ms>`, expiring
//! a day after the period ends; `total` budgets have one hash that never expires). The link
//! keeps reporting a replaced share until its in-flight requests have settled, so their spend
//! is filed under the period they were admitted in.
//!
//! **Memory**: at most `max_scopes` shares (budgets are configured per key and team, so the
//! bound is set from the configuration); a scope beyond it, or with an over-long name, is not
//! tracked fleet-wide and counted ([`FleetBudgets::untracked`]): its node's own budget check
//! still applies. Amounts are clamped to 2^53 - 1 so Redis's Lua numbers stay exact.

use std::collections::HashMap as StdHashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use papaya::HashMap;
use redis::Value;

use super::link::{check_node_name, Batch, Participant, Reply, Script, TickContext, KEY_PREFIX};
use crate::clock::calendar;
use crate::limits::budget::{
    period_start_ms, BudgetDimension, BudgetExceeded, BudgetLimit, Period,
};

/// The longest scope name tracked (key ids and team names are far shorter): it becomes part
/// of a Redis key.
pub const MAX_SCOPE_LEN: usize = 256;

/// Ticks without demand after which a scope gives its unused allowance back to the fleet.
pub const IDLE_TICKS: u32 = 10;

/// The largest amount sent to Redis: Lua numbers are doubles, exact up to 2^53.
pub const MAX_AMOUNT: u64 = (1 << 53) - 1;

const MS_PER_DAY: i64 = 86_400_000;

/// The budget script.
static BUDGET_SYNC: Script = Script {
    name: "budget_sync",
    source: include_str!("lua/budget_sync.lua"),
};

static SCRIPTS: [&Script; 1] = [&BUDGET_SYNC];

/// Index of the token dimension in the per-dimension arrays.
const TOKENS: usize = 0;
/// Index of the money dimension (nano-USD).
const NANO: usize = 1;

const DIMENSIONS: [BudgetDimension; 2] = [BudgetDimension::Tokens, BudgetDimension::Cost];

/// One limited dimension of a share.
#[derive(Debug)]
struct Dimension {
    /// The limit as the hot path last gave it; `u64::MAX` = not limited.
    limit: AtomicU64,
    /// Granted by Redis and not yet reserved; negative = used on credit (or a request used
    /// more than it reserved).
    allowance: AtomicI64,
    /// Reservations admitted and not yet settled.
    in_flight: AtomicU64,
    /// Settled spend on this node in this period (cumulative; the link reports it).
    settled: AtomicU64,
    /// What requests asked since the link last looked, admitted or not: the demand.
    wanted: AtomicU64,
    /// The largest single reservation asked in this period (the script grants at least one).
    largest: AtomicU64,
    /// The fleet's settled spend at the last answer (at first: the ledger's seed).
    view_spent: AtomicU64,
    /// What the fleet had left after the last answer's grant (limit - spent - holds).
    view_remaining: AtomicI64,
    /// The top-up this outage added to the allowance, taken back when Redis answers.
    degraded_share: AtomicI64,
}

impl Default for Dimension {
    fn default() -> Self {
        Dimension {
            limit: AtomicU64::new(u64::MAX),
            allowance: AtomicI64::new(0),
            in_flight: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            wanted: AtomicU64::new(0),
            largest: AtomicU64::new(0),
            view_spent: AtomicU64::new(0),
            view_remaining: AtomicI64::new(0),
            degraded_share: AtomicI64::new(0),
        }
    }
}

impl Dimension {
    fn limit(&self) -> Option<u64> {
        let limit = self.limit.load(Ordering::Relaxed);
        (limit != u64::MAX).then_some(limit)
    }

    /// Takes `amount` from the allowance if it covers it.
    fn take(&self, amount: u64) -> bool {
        let amount = amount as i64;
        let mut current = self.allowance.load(Ordering::Acquire);
        loop {
            if current < amount {
                return false;
            }
            match self.allowance.compare_exchange_weak(
                current,
                current - amount,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// The hold the node reports: in-flight reservations plus unused allowance (a negative
    /// allowance is budget already used: the requests it covers are in flight or settled).
    fn hold(&self) -> u64 {
        let allowance = self.allowance.load(Ordering::Acquire).max(0) as u64;
        self.in_flight
            .load(Ordering::Acquire)
            .saturating_add(allowance)
            .min(MAX_AMOUNT)
    }

    /// What the fleet had left as this node last knew it: the last answer's remaining, or,
    /// before any answer, the limit minus the ledger's spend.
    fn last_remaining(&self, synced: bool) -> i64 {
        if synced {
            self.view_remaining.load(Ordering::Acquire)
        } else {
            let limit = self.limit().unwrap_or(0).min(MAX_AMOUNT) as i64;
            limit - self.view_spent.load(Ordering::Acquire).min(MAX_AMOUNT) as i64
        }
    }
}

/// One scope's fleet budget state for one period, shared by the hot path and the link.
#[derive(Debug)]
pub struct BudgetShare {
    /// Start (ms since epoch, UTC) of the period this share counts.
    period_start_ms: i64,
    /// The budget's period, for the Redis hash's expiry.
    period: Period,
    /// Tokens, then nano-USD.
    dims: [Dimension; 2],
    /// Whether one request may be admitted on credit before the next answer.
    may_borrow: AtomicBool,
    /// Whether Redis has answered for this share at least once.
    synced: AtomicBool,
    /// Whether this outage's degraded top-up was given.
    degraded_given: AtomicBool,
}

impl BudgetShare {
    fn new(period_start_ms: i64, period: Period, may_borrow: bool) -> BudgetShare {
        BudgetShare {
            period_start_ms,
            period,
            dims: Default::default(),
            may_borrow: AtomicBool::new(may_borrow),
            synced: AtomicBool::new(false),
            degraded_given: AtomicBool::new(false),
        }
    }

    /// Records the limits the hot path gave (a reload may change them).
    fn set_limits(&self, limit: &BudgetLimit) {
        for (dim, value) in self.dims.iter().zip([limit.tokens, limit.nano_usd]) {
            let value = value.unwrap_or(u64::MAX);
            if dim.limit.load(Ordering::Relaxed) != value {
                dim.limit.store(value, Ordering::Relaxed);
            }
        }
    }

    /// The admission: from the allowance, else on credit once per tick while allowed.
    /// `amounts` are 0 in a dimension without a limit. Returns the dimension that refused.
    fn admit(&self, amounts: [u64; 2]) -> Result<bool, usize> {
        let mut refused = None;
        for (d, dim) in self.dims.iter().enumerate() {
            if dim.limit().is_none() {
                continue;
            }
            if !dim.take(amounts[d]) {
                refused = Some(d);
                // Put back what an earlier dimension took.
                for (earlier, dim) in self.dims.iter().enumerate().take(d) {
                    if dim.limit().is_some() {
                        dim.allowance
                            .fetch_add(amounts[earlier] as i64, Ordering::AcqRel);
                    }
                }
                break;
            }
        }
        let Some(refused) = refused else {
            return Ok(false);
        };
        if !self.may_borrow.swap(false, Ordering::AcqRel) {
            return Err(refused);
        }
        for (d, dim) in self.dims.iter().enumerate() {
            if dim.limit().is_some() {
                dim.allowance.fetch_sub(amounts[d] as i64, Ordering::AcqRel);
            }
        }
        Ok(true)
    }

    /// Ends a reservation of `reserved`, with `actual` spend.
    fn settle(&self, reserved: [u64; 2], actual: [u64; 2]) {
        for (d, dim) in self.dims.iter().enumerate() {
            if reserved[d] == 0 && actual[d] == 0 {
                continue;
            }
            dim.in_flight.fetch_sub(reserved[d], Ordering::AcqRel);
            if actual[d] != 0 {
                dim.settled.fetch_add(actual[d], Ordering::AcqRel);
            }
            dim.allowance
                .fetch_add(reserved[d] as i64 - actual[d] as i64, Ordering::AcqRel);
        }
    }

    /// Enters an outage: tops the allowance up once with this node's part of what the fleet
    /// had left, `remaining / live_nodes`, and stops borrowing. A share with no limit known
    /// yet waits for its first request (which gives it then).
    fn top_up_degraded(&self, live_nodes: u32) {
        if self.dims.iter().all(|dim| dim.limit().is_none()) {
            return;
        }
        self.may_borrow.store(false, Ordering::Release);
        if self.degraded_given.swap(true, Ordering::AcqRel) {
            return;
        }
        let synced = self.synced.load(Ordering::Acquire);
        for dim in &self.dims {
            if dim.limit().is_none() {
                continue;
            }
            let give = dim.last_remaining(synced).max(0) / i64::from(live_nodes.max(1));
            dim.degraded_share.store(give, Ordering::Release);
            dim.allowance.fetch_add(give, Ordering::AcqRel);
        }
    }

    /// Leaves an outage: takes the top-up back (what was spent from it is in the reports).
    fn end_degraded(&self) {
        if !self.degraded_given.swap(false, Ordering::AcqRel) {
            return;
        }
        for dim in &self.dims {
            let given = dim.degraded_share.swap(0, Ordering::AcqRel);
            dim.allowance.fetch_sub(given, Ordering::AcqRel);
        }
    }

    /// A consistent-enough copy of the share's counters, for tests and diagnostics.
    fn snapshot(&self) -> ShareSnapshot {
        let dim = |d: &Dimension| DimensionSnapshot {
            limit: d.limit(),
            allowance: d.allowance.load(Ordering::Acquire),
            in_flight: d.in_flight.load(Ordering::Acquire),
            settled: d.settled.load(Ordering::Acquire),
            fleet_spent: d.view_spent.load(Ordering::Acquire),
            fleet_remaining: d.view_remaining.load(Ordering::Acquire),
        };
        ShareSnapshot {
            period_start_ms: self.period_start_ms,
            synced: self.synced.load(Ordering::Acquire),
            tokens: dim(&self.dims[TOKENS]),
            nano_usd: dim(&self.dims[NANO]),
        }
    }
}

/// One dimension of a [`ShareSnapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DimensionSnapshot {
    /// The limit (`None` = not limited).
    pub limit: Option<u64>,
    /// Granted and not reserved; negative = used on credit.
    pub allowance: i64,
    /// Reserved by requests in flight.
    pub in_flight: u64,
    /// Settled on this node this period.
    pub settled: u64,
    /// The fleet's settled spend at the last answer.
    pub fleet_spent: u64,
    /// What the fleet had left after the last answer.
    pub fleet_remaining: i64,
}

/// A copy of a share's counters ([`FleetBudgets::snapshot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareSnapshot {
    /// The period the share counts.
    pub period_start_ms: i64,
    /// Whether Redis has answered for it.
    pub synced: bool,
    /// Tokens.
    pub tokens: DimensionSnapshot,
    /// Nano-USD.
    pub nano_usd: DimensionSnapshot,
}

/// An admitted request's hold on a fleet budget; settle it with [`FleetReservation::settle`].
/// Dropping it unsettled releases it with no spend.
#[derive(Debug)]
#[must_use = "dropping a fleet reservation releases it at once"]
pub struct FleetReservation {
    /// `None` when the scope is not tracked fleet-wide.
    share: Option<Arc<BudgetShare>>,
    amounts: [u64; 2],
    /// Which dimensions were limited when reserved: only they count the spend.
    counts: [bool; 2],
    on_credit: bool,
}

impl FleetReservation {
    /// Whether the request was admitted on credit (the allowance did not cover it).
    pub fn on_credit(&self) -> bool {
        self.on_credit
    }

    /// Whether the reservation counts in a fleet share.
    pub fn is_tracked(&self) -> bool {
        self.share.is_some()
    }

    /// Replaces the reservation with the actual spend: it leaves in-flight, the spend is
    /// reported at the next tick, and the difference goes back to (or is taken from) the
    /// allowance. Only limited dimensions count (the others were reserved as 0).
    pub fn settle(mut self, actual_tokens: u64, actual_nano_usd: u64) {
        if let Some(share) = self.share.take() {
            let actual = [actual_tokens, actual_nano_usd];
            let counted = [TOKENS, NANO].map(|d| {
                if self.counts[d] {
                    actual[d].min(MAX_AMOUNT)
                } else {
                    0
                }
            });
            share.settle(self.amounts, counted);
        }
    }
}

impl Drop for FleetReservation {
    fn drop(&mut self) {
        if let Some(share) = self.share.take() {
            share.settle(self.amounts, [0, 0]);
        }
    }
}

/// What the fleet says about one request.
#[derive(Debug)]
pub enum FleetBudgetDecision {
    /// Admitted: from the allowance, on credit, or untracked.
    Admitted(FleetReservation),
    /// Refused: the fleet's budget has no room this node may use (the figures are the
    /// node's last view of the fleet).
    Refused(BudgetExceeded),
}

/// This node's fleet budget shares, shared by the hot path and the link thread; lock-free.
#[derive(Debug)]
pub struct FleetBudgets {
    shares: HashMap<Box<str>, Arc<BudgetShare>>,
    max_scopes: usize,
    untracked: AtomicU64,
    /// Whether Redis is unreachable (set by the link participant).
    degraded: AtomicBool,
    /// The live nodes the link last counted (at least 1).
    live_nodes: AtomicU32,
}

impl FleetBudgets {
    /// An empty table tracking at most `max_scopes` scopes at once.
    pub fn new(max_scopes: usize) -> Arc<FleetBudgets> {
        Arc::new(FleetBudgets {
            shares: HashMap::new(),
            max_scopes,
            untracked: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            live_nodes: AtomicU32::new(1),
        })
    }

    /// The hot path: reserves `tokens` and `nano_usd` (0 in a dimension `limit` does not
    /// cap) on `scope`'s fleet share for the period containing `now_ms`. Never waits.
    pub fn reserve(
        &self,
        scope: &str,
        limit: &BudgetLimit,
        now_ms: i64,
        tokens: u64,
        nano_usd: u64,
    ) -> FleetBudgetDecision {
        let untracked = || {
            FleetBudgetDecision::Admitted(FleetReservation {
                share: None,
                amounts: [0, 0],
                counts: [false; 2],
                on_credit: false,
            })
        };
        if !limit.is_limited() {
            return untracked();
        }
        let Some(share) = self.share_for(scope, limit.period, now_ms) else {
            self.untracked.fetch_add(1, Ordering::Relaxed);
            return untracked();
        };
        share.set_limits(limit);
        if self.degraded.load(Ordering::Acquire) {
            // A scope first seen during an outage gets its part at once, not at the next
            // (backed-off) tick: no request fails because Redis is down.
            share.top_up_degraded(self.live_nodes.load(Ordering::Relaxed));
        }
        let amounts = [
            if limit.tokens.is_some() {
                tokens.min(MAX_AMOUNT)
            } else {
                0
            },
            if limit.nano_usd.is_some() {
                nano_usd.min(MAX_AMOUNT)
            } else {
                0
            },
        ];
        for (d, dim) in share.dims.iter().enumerate() {
            if dim.limit().is_some() {
                dim.wanted.fetch_add(amounts[d], Ordering::Relaxed);
                dim.largest.fetch_max(amounts[d], Ordering::Relaxed);
            }
        }
        match share.admit(amounts) {
            Ok(on_credit) => {
                for (d, dim) in share.dims.iter().enumerate() {
                    if amounts[d] != 0 {
                        dim.in_flight.fetch_add(amounts[d], Ordering::AcqRel);
                    }
                }
                FleetBudgetDecision::Admitted(FleetReservation {
                    share: Some(share),
                    amounts,
                    counts: [limit.tokens.is_some(), limit.nano_usd.is_some()],
                    on_credit,
                })
            }
            Err(d) => {
                let dim = &share.dims[d];
                let max = dim.limit().unwrap_or(u64::MAX);
                let remaining = dim.last_remaining(share.synced.load(Ordering::Acquire));
                FleetBudgetDecision::Refused(BudgetExceeded {
                    dimension: DIMENSIONS[d],
                    limit: max,
                    committed: max.saturating_sub(remaining.max(0) as u64),
                    requested: amounts[d],
                })
            }
        }
    }

    /// Start-up: the fleet spend of `scope` in the period containing `now_ms` as the ledger
    /// knows it. It is this node's view until Redis answers, and what rebuilds the fleet's
    /// spend in Redis if Redis has none. Ignored once Redis has answered for the scope.
    pub fn seed(&self, scope: &str, period: Period, now_ms: i64, tokens: u64, nano_usd: u64) {
        let Some(share) = self.share_for(scope, period, now_ms) else {
            return;
        };
        if share.synced.load(Ordering::Acquire) {
            return;
        }
        for (dim, value) in share.dims.iter().zip([tokens, nano_usd]) {
            dim.view_spent
                .fetch_max(value.min(MAX_AMOUNT), Ordering::AcqRel);
        }
    }

    /// Forgets `scope` (its key or team was deleted). The link still reports what its
    /// in-flight requests settle.
    pub fn remove(&self, scope: &str) {
        self.shares.pin().remove(scope);
    }

    /// A copy of `scope`'s current share, if tracked.
    pub fn snapshot(&self, scope: &str) -> Option<ShareSnapshot> {
        self.shares.pin().get(scope).map(|share| share.snapshot())
    }

    /// Requests whose scope could not be tracked (over-long name, or the table was full).
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    /// Scopes tracked right now.
    pub fn tracked(&self) -> usize {
        self.shares.len()
    }

    /// The share of `scope` for the period containing `now_ms`: the current one, a fresh one
    /// when a later period starts (a state never moves back to an earlier period), or `None`
    /// when the scope cannot be tracked.
    fn share_for(&self, scope: &str, period: Period, now_ms: i64) -> Option<Arc<BudgetShare>> {
        let start = period_start_ms(period, now_ms);
        let shares = self.shares.pin();
        let existing = shares.get(scope);
        if let Some(share) = existing {
            if share.period_start_ms >= start {
                return Some(Arc::clone(share));
            }
        }
        if existing.is_none() && (scope.len() > MAX_SCOPE_LEN || shares.len() >= self.max_scopes) {
            return None;
        }
        let may_borrow = !self.degraded.load(Ordering::Acquire);
        let fresh = move || Arc::new(BudgetShare::new(start, period, may_borrow));
        let share = shares.update_or_insert_with(
            scope.into(),
            |old| {
                if old.period_start_ms >= start {
                    Arc::clone(old)
                } else {
                    fresh()
                }
            },
            fresh,
        );
        Some(Arc::clone(share))
    }
}

/// What the link knows of one share it reports.
#[derive(Debug)]
struct Tracked {
    share: Arc<BudgetShare>,
    /// The share's cumulative settled spend as of the last answered call.
    at_view: [u64; 2],
    /// Whether Redis may count a hold for this node (the last call sent or granted one).
    holds_in_redis: bool,
    /// Ticks since requests last asked for budget.
    idle_ticks: u32,
    /// Whether the share is still the scope's current one in the table.
    current: bool,
}

/// A call sent this tick, waiting for its reply.
#[derive(Debug)]
struct Pending {
    key: (Box<str>, i64),
    cum: [u64; 2],
    hold: [u64; 2],
}

/// The link participant reconciling this node's budget shares with Redis.
#[derive(Debug)]
pub struct BudgetSync {
    budgets: Arc<FleetBudgets>,
    /// `node:incarnation`: a restarted node starts its cumulative counters from zero, so it
    /// must not be taken for its previous life.
    node_id: String,
    ttl_ms: u64,
    tracked: StdHashMap<(Box<str>, i64), Tracked>,
    pending: Vec<Pending>,
    degraded: bool,
}

impl BudgetSync {
    /// The participant for node `node` ticking every `tick`.
    pub fn new(
        budgets: Arc<FleetBudgets>,
        node: &str,
        tick: Duration,
    ) -> Result<BudgetSync, String> {
        check_node_name(node)?;
        let mut incarnation = [0u8; 8];
        getrandom::getrandom(&mut incarnation)
            .map_err(|e| format!("no randomness for the node incarnation: {e}"))?;
        Ok(BudgetSync {
            budgets,
            node_id: format!("{node}:{:016x}", u64::from_le_bytes(incarnation)),
            ttl_ms: (tick * 3).as_millis().max(1) as u64,
            tracked: StdHashMap::new(),
            pending: Vec::new(),
            degraded: false,
        })
    }

    /// Adds the table's current shares to the tracked ones and marks which are current.
    fn refresh(&mut self) {
        for tracked in self.tracked.values_mut() {
            tracked.current = false;
        }
        for (scope, share) in self.budgets.shares.pin().iter() {
            let key = (scope.clone(), share.period_start_ms);
            let tracked = self.tracked.entry(key).or_insert_with(|| Tracked {
                share: Arc::clone(share),
                at_view: [0; 2],
                holds_in_redis: false,
                idle_ticks: 0,
                current: true,
            });
            if !Arc::ptr_eq(&tracked.share, share) {
                // The scope was removed and registered again within the period: report the
                // new share from its own zero (the old one's unreported spend is dropped).
                tracked.share = Arc::clone(share);
                tracked.at_view = [0; 2];
            }
            tracked.current = true;
        }
    }
}

/// The grant a dimension asks for: the last tick's demand beyond the allowance left (a debt
/// from credit is asked for too), nothing when no request asked.
fn ask(wanted: u64, allowance: i64) -> u64 {
    if wanted == 0 {
        return 0;
    }
    (i128::from(wanted.min(MAX_AMOUNT)) - i128::from(allowance)).clamp(0, i128::from(MAX_AMOUNT))
        as u64
}

/// When a period's hash may go: a day after the period ends; never for `total`.
fn hash_expiry_ms(period: Period, start: i64) -> i64 {
    match period {
        Period::Total => 0,
        Period::Day => start + 2 * MS_PER_DAY,
        Period::Month => calendar::month_start_ms(start + 32 * MS_PER_DAY) + MS_PER_DAY,
    }
}

/// The Redis keys of a scope's period: its hash and its live nodes. Each kind has its own
/// prefix, so no scope name can make one collide with another's.
fn budget_keys(scope: &str, period_start_ms: i64) -> Vec<String> {
    vec![
        format!("{KEY_PREFIX}budget:{scope}:{period_start_ms}"),
        format!("{KEY_PREFIX}bnodes:{scope}:{period_start_ms}"),
    ]
}

/// The budget script's answer to one call, per dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    spent: [u64; 2],
    remaining: [i64; 2],
    granted: [u64; 2],
    busy: u32,
}

/// `{spent_t, remaining_t, granted_t, spent_n, remaining_n, granted_n, busy}`, checked.
fn parse_reply(reply: Reply) -> Option<Answer> {
    let Ok(Value::Array(items)) = reply else {
        return None;
    };
    if items.len() != 7 {
        return None;
    }
    let n: Vec<i64> = items
        .into_iter()
        .map(|item| redis::from_redis_value::<i64>(item).ok())
        .collect::<Option<_>>()?;
    Some(Answer {
        spent: [u64::try_from(n[0]).ok()?, u64::try_from(n[3]).ok()?],
        remaining: [n[1], n[4]],
        granted: [u64::try_from(n[2]).ok()?, u64::try_from(n[5]).ok()?],
        busy: u32::try_from(n[6]).ok()?,
    })
}

/// The script's arguments for one call.
#[allow(clippy::too_many_arguments)]
fn call_args(
    node_id: &str,
    ttl_ms: u64,
    expire_at: i64,
    leaving: bool,
    limits: [Option<u64>; 2],
    cum: [u64; 2],
    at_view: [u64; 2],
    view: [u64; 2],
    hold: [u64; 2],
    asks: [u64; 2],
    one: [u64; 2],
) -> Vec<String> {
    let mut args = vec![
        node_id.to_string(),
        ttl_ms.to_string(),
        expire_at.to_string(),
        if leaving { "1" } else { "0" }.to_string(),
    ];
    for d in [TOKENS, NANO] {
        args.push(limits[d].map_or("-1".to_string(), |l| l.min(MAX_AMOUNT).to_string()));
        for value in [cum[d], at_view[d], view[d], hold[d], asks[d], one[d]] {
            args.push(value.min(MAX_AMOUNT).to_string());
        }
    }
    args
}

impl Participant for BudgetSync {
    fn scripts(&self) -> &'static [&'static Script] {
        &SCRIPTS
    }

    fn collect(&mut self, _ctx: &TickContext, batch: &mut Batch) {
        self.pending.clear();
        self.refresh();
        let mut finished = Vec::new();
        for (key, tracked) in &mut self.tracked {
            let share = &tracked.share;
            let wanted = share
                .dims
                .each_ref()
                .map(|d| d.wanted.swap(0, Ordering::Relaxed));
            if wanted.iter().any(|&w| w > 0) {
                tracked.idle_ticks = 0;
            } else {
                tracked.idle_ticks = tracked.idle_ticks.saturating_add(1);
            }
            if !tracked.current || tracked.idle_ticks >= IDLE_TICKS {
                // Idle or replaced: give the unused allowance back (a debt stays: it is
                // budget already used, and no request is asking to pay it).
                for dim in &share.dims {
                    let _ = dim
                        .allowance
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                            (a > 0).then_some(0)
                        });
                }
            }
            let cum = share
                .dims
                .each_ref()
                .map(|d| d.settled.load(Ordering::Acquire));
            let hold = share.dims.each_ref().map(Dimension::hold);
            let limits = share.dims.each_ref().map(Dimension::limit);
            let asks = [TOKENS, NANO].map(|d| {
                if limits[d].is_some() && tracked.current {
                    ask(wanted[d], share.dims[d].allowance.load(Ordering::Acquire))
                } else {
                    0
                }
            });
            let holds = hold.iter().any(|&h| h > 0);
            let unreported = cum != tracked.at_view;
            let active = asks.iter().any(|&a| a > 0) || wanted.iter().any(|&w| w > 0);
            if !(active || holds || unreported || tracked.holds_in_redis) {
                if !tracked.current {
                    finished.push(key.clone());
                }
                continue;
            }
            if limits.iter().all(Option::is_none) {
                // Seeded but never requested: nothing to enforce yet.
                continue;
            }
            let view = share
                .dims
                .each_ref()
                .map(|d| d.view_spent.load(Ordering::Acquire));
            let one = share
                .dims
                .each_ref()
                .map(|d| d.largest.load(Ordering::Relaxed));
            let args = call_args(
                &self.node_id,
                self.ttl_ms,
                hash_expiry_ms(share.period, share.period_start_ms),
                false,
                limits,
                cum,
                tracked.at_view,
                view,
                hold,
                asks,
                one,
            );
            batch.call(&BUDGET_SYNC, budget_keys(&key.0, key.1), args);
            // Until answered, Redis may count what was sent.
            tracked.holds_in_redis |= holds;
            self.pending.push(Pending {
                key: key.clone(),
                cum,
                hold,
            });
        }
        for key in finished {
            self.tracked.remove(&key);
        }
    }

    fn apply(&mut self, ctx: &TickContext, replies: Vec<Reply>) {
        self.budgets
            .live_nodes
            .store(ctx.live_nodes.max(1), Ordering::Relaxed);
        if self.degraded {
            self.degraded = false;
            self.budgets.degraded.store(false, Ordering::Release);
            for tracked in self.tracked.values() {
                tracked.share.end_degraded();
            }
            for (_, share) in self.budgets.shares.pin().iter() {
                share.end_degraded();
            }
        }
        for (pending, reply) in self.pending.drain(..).zip(replies) {
            let Some(tracked) = self.tracked.get_mut(&pending.key) else {
                continue;
            };
            let Some(answer) = parse_reply(reply) else {
                // Not run (NOSCRIPT, an error): the next call reports the same counters.
                continue;
            };
            let share = &tracked.share;
            let mut room = true;
            for (d, dim) in share.dims.iter().enumerate() {
                if dim.limit().is_none() {
                    continue;
                }
                dim.allowance
                    .fetch_add(answer.granted[d] as i64, Ordering::AcqRel);
                dim.view_spent.store(answer.spent[d], Ordering::Release);
                dim.view_remaining
                    .store(answer.remaining[d], Ordering::Release);
                room &= answer.remaining[d] > 0;
            }
            share.synced.store(true, Ordering::Release);
            share
                .may_borrow
                .store(room && tracked.current, Ordering::Release);
            tracked.at_view = pending.cum;
            tracked.holds_in_redis =
                pending.hold.iter().any(|&h| h > 0) || answer.granted.iter().any(|&g| g > 0);
            log::trace!(
                "cluster: budget granted {:?}, {} nodes busy",
                answer.granted,
                answer.busy
            );
        }
    }

    fn unanswered(&mut self, ctx: &TickContext) {
        self.pending.clear();
        let live_nodes = ctx.live_nodes.max(1);
        self.budgets.live_nodes.store(live_nodes, Ordering::Relaxed);
        self.degraded = true;
        self.budgets.degraded.store(true, Ordering::Release);
        // Once per outage and share (the flag in the share); later ticks only reach shares
        // that appeared since, which the hot path normally served already.
        for (_, share) in self.budgets.shares.pin().iter() {
            share.top_up_degraded(live_nodes);
        }
    }

    fn farewell(&mut self, batch: &mut Batch) {
        for (key, tracked) in self.tracked.drain() {
            let share = &tracked.share;
            let limits = share.dims.each_ref().map(Dimension::limit);
            if limits.iter().all(Option::is_none) {
                continue;
            }
            let cum = share
                .dims
                .each_ref()
                .map(|d| d.settled.load(Ordering::Acquire));
            let view = share
                .dims
                .each_ref()
                .map(|d| d.view_spent.load(Ordering::Acquire));
            let args = call_args(
                &self.node_id,
                self.ttl_ms,
                hash_expiry_ms(share.period, share.period_start_ms),
                true,
                limits,
                cum,
                tracked.at_view,
                view,
                [0; 2],
                [0; 2],
                [0; 2],
            );
            batch.call(&BUDGET_SYNC, budget_keys(&key.0, key.1), args);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-01T00:00:00Z
    const MARCH_1_2026: i64 = 1_772_323_200_000;

    fn dollars(nano: u64) -> BudgetLimit {
        BudgetLimit {
            tokens: None,
            nano_usd: Some(nano),
            period: Period::Total,
        }
    }

    fn tokens(limit: u64, period: Period) -> BudgetLimit {
        BudgetLimit {
            tokens: Some(limit),
            nano_usd: None,
            period,
        }
    }

    fn admitted(decision: FleetBudgetDecision) -> FleetReservation {
        match decision {
            FleetBudgetDecision::Admitted(r) => r,
            FleetBudgetDecision::Refused(refused) => panic!("refused: {refused}"),
        }
    }

    fn refused(decision: FleetBudgetDecision) -> BudgetExceeded {
        match decision {
            FleetBudgetDecision::Refused(refused) => refused,
            FleetBudgetDecision::Admitted(r) => panic!("admitted {r:?}"),
        }
    }

    fn share(budgets: &FleetBudgets, scope: &str) -> Arc<BudgetShare> {
        Arc::clone(budgets.shares.pin().get(scope).unwrap())
    }

    /// What an answer with `granted` and `remaining` does, as `BudgetSync::apply` does it.
    fn grant(share: &BudgetShare, d: usize, granted: i64, remaining: i64) {
        share.dims[d].allowance.fetch_add(granted, Ordering::AcqRel);
        share.dims[d]
            .view_remaining
            .store(remaining, Ordering::Release);
        share.synced.store(true, Ordering::Release);
        share.may_borrow.store(remaining > 0, Ordering::Release);
    }

    #[test]
    fn a_new_scope_admits_one_request_on_credit_then_refuses_until_granted() {
        let budgets = FleetBudgets::new(10);
        let limit = dollars(1_000);
        let first = admitted(budgets.reserve("key:a", &limit, 0, 0, 100));
        assert!(
            first.on_credit(),
            "never synced: the first request is not refused"
        );
        let second = refused(budgets.reserve("key:a", &limit, 0, 0, 100));
        assert_eq!(second.dimension, BudgetDimension::Cost);
        assert_eq!(second.requested, 100);
        let s = budgets.snapshot("key:a").unwrap();
        assert_eq!((s.nano_usd.allowance, s.nano_usd.in_flight), (-100, 100));
        assert_eq!(s.nano_usd.limit, Some(1_000));
        assert_eq!(s.tokens.limit, None);
        // The grant repays the credit and covers what was asked.
        grant(&share(&budgets, "key:a"), NANO, 300, 500);
        let third = admitted(budgets.reserve("key:a", &limit, 0, 0, 100));
        assert!(!third.on_credit());
        assert_eq!(budgets.snapshot("key:a").unwrap().nano_usd.allowance, 100);
        drop((first, third));
    }

    #[test]
    fn credit_is_given_once_per_tick_and_only_while_the_view_had_room() {
        let budgets = FleetBudgets::new(10);
        let limit = tokens(1_000, Period::Total);
        let share_of = |budgets: &FleetBudgets| share(budgets, "key:a");
        let mut held = vec![admitted(budgets.reserve("key:a", &limit, 0, 50, 0))];
        // A tick with room: one more on credit, then refusals.
        grant(&share_of(&budgets), TOKENS, 0, 10);
        for _ in 0..5 {
            if let FleetBudgetDecision::Admitted(r) = budgets.reserve("key:a", &limit, 0, 50, 0) {
                assert!(r.on_credit());
                held.push(r);
            }
        }
        assert_eq!(held.len(), 2, "one on credit per tick");
        // A tick whose view has no room: none.
        grant(&share_of(&budgets), TOKENS, 0, 0);
        assert!(matches!(
            budgets.reserve("key:a", &limit, 0, 50, 0),
            FleetBudgetDecision::Refused(_)
        ));
        grant(&share_of(&budgets), TOKENS, 0, -40);
        let refusal = refused(budgets.reserve("key:a", &limit, 0, 50, 0));
        assert_eq!(refusal.committed, 1_000, "the view: nothing left");
    }

    #[test]
    fn settlement_moves_the_reservation_to_spend_and_corrects_the_allowance() {
        let budgets = FleetBudgets::new(10);
        let limit = BudgetLimit {
            tokens: Some(10_000),
            nano_usd: Some(10_000),
            period: Period::Total,
        };
        drop(admitted(budgets.reserve("team:t", &limit, 0, 0, 0)));
        let s = share(&budgets, "team:t");
        grant(&s, TOKENS, 1_000, 5_000);
        grant(&s, NANO, 1_000, 5_000);
        let r = admitted(budgets.reserve("team:t", &limit, 0, 400, 300));
        assert!(!r.on_credit());
        let snap = budgets.snapshot("team:t").unwrap();
        assert_eq!((snap.tokens.allowance, snap.tokens.in_flight), (600, 400));
        assert_eq!(s.dims[TOKENS].hold(), 1_000);
        // Used less than reserved: the difference goes back.
        r.settle(100, 500);
        let snap = budgets.snapshot("team:t").unwrap();
        assert_eq!(
            (
                snap.tokens.allowance,
                snap.tokens.in_flight,
                snap.tokens.settled
            ),
            (900, 0, 100)
        );
        // Used more than reserved: taken from the allowance.
        assert_eq!(
            (
                snap.nano_usd.allowance,
                snap.nano_usd.in_flight,
                snap.nano_usd.settled
            ),
            (500, 0, 500)
        );
        // Dropped unsettled: released, no spend.
        drop(admitted(budgets.reserve("team:t", &limit, 0, 900, 500)));
        let snap = budgets.snapshot("team:t").unwrap();
        assert_eq!((snap.tokens.allowance, snap.tokens.settled), (900, 100));
        assert_eq!((snap.nano_usd.allowance, snap.nano_usd.in_flight), (500, 0));
    }

    #[test]
    fn a_dimension_short_of_allowance_gives_back_what_the_other_took() {
        let budgets = FleetBudgets::new(10);
        let limit = BudgetLimit {
            tokens: Some(10_000),
            nano_usd: Some(10_000),
            period: Period::Total,
        };
        drop(admitted(budgets.reserve("key:a", &limit, 0, 1, 1)));
        let s = share(&budgets, "key:a");
        grant(&s, TOKENS, 500, 0);
        grant(&s, NANO, 10, 0);
        let refusal = refused(budgets.reserve("key:a", &limit, 0, 100, 100));
        assert_eq!(refusal.dimension, BudgetDimension::Cost);
        let snap = budgets.snapshot("key:a").unwrap();
        assert_eq!((snap.tokens.allowance, snap.tokens.in_flight), (500, 0));
    }

    #[test]
    fn a_later_period_starts_a_fresh_share_and_never_goes_back() {
        let budgets = FleetBudgets::new(10);
        let limit = tokens(1_000, Period::Day);
        let old = admitted(budgets.reserve("key:a", &limit, MARCH_1_2026 - 1, 10, 0));
        let old_share = share(&budgets, "key:a");
        grant(&old_share, TOKENS, 0, 0);
        assert!(matches!(
            budgets.reserve("key:a", &limit, MARCH_1_2026 - 1, 10, 0),
            FleetBudgetDecision::Refused(_)
        ));
        // Midnight: a new share, which may borrow its first request again.
        let new = admitted(budgets.reserve("key:a", &limit, MARCH_1_2026, 10, 0));
        assert!(new.on_credit());
        let snap = budgets.snapshot("key:a").unwrap();
        assert_eq!(snap.period_start_ms, MARCH_1_2026);
        assert_eq!(snap.tokens.in_flight, 10);
        // A request stamped before midnight by a late clock counts in the new period.
        assert!(matches!(
            budgets.reserve("key:a", &limit, MARCH_1_2026 - 1, 10, 0),
            FleetBudgetDecision::Refused(_)
        ));
        assert_eq!(
            budgets.snapshot("key:a").unwrap().period_start_ms,
            MARCH_1_2026
        );
        // The old period's reservation settles into its own share.
        old.settle(7, 0);
        assert_eq!(old_share.dims[TOKENS].settled.load(Ordering::Relaxed), 7);
        assert_eq!(budgets.snapshot("key:a").unwrap().tokens.settled, 0);
        drop(new);
    }

    #[test]
    fn the_degraded_share_is_the_remaining_over_live_nodes_once_per_outage() {
        let budgets = FleetBudgets::new(10);
        let limit = tokens(1_000, Period::Total);
        drop(admitted(budgets.reserve("key:a", &limit, 0, 10, 0)));
        let s = share(&budgets, "key:a");
        grant(&s, TOKENS, 100, 600);
        s.top_up_degraded(3);
        s.top_up_degraded(3);
        assert_eq!(s.dims[TOKENS].allowance.load(Ordering::Relaxed), 300);
        assert!(
            !s.may_borrow.load(Ordering::Relaxed),
            "no borrowing while degraded"
        );
        let r = admitted(budgets.reserve("key:a", &limit, 0, 250, 0));
        r.settle(250, 0);
        // Redis answers: the top-up is taken back, what was spent stays in the report.
        s.end_degraded();
        assert_eq!(s.dims[TOKENS].allowance.load(Ordering::Relaxed), -150);
        assert_eq!(s.dims[TOKENS].settled.load(Ordering::Relaxed), 250);
    }

    #[test]
    fn a_scope_first_seen_in_an_outage_gets_its_part_of_the_ledgers_remaining() {
        let budgets = FleetBudgets::new(10);
        budgets.seed("key:a", Period::Total, 0, 400, 0);
        budgets.degraded.store(true, Ordering::Relaxed);
        budgets.live_nodes.store(2, Ordering::Relaxed);
        let limit = tokens(1_000, Period::Total);
        let r = admitted(budgets.reserve("key:a", &limit, 0, 300, 0));
        assert!(!r.on_credit(), "from the degraded share: (1000 - 400) / 2");
        assert!(matches!(
            budgets.reserve("key:a", &limit, 0, 1, 0),
            FleetBudgetDecision::Refused(_)
        ));
        drop(r);
    }

    #[test]
    fn scopes_are_bounded_in_length_and_number() {
        let budgets = FleetBudgets::new(2);
        let limit = tokens(10, Period::Total);
        let long = format!("key:{}", "k".repeat(MAX_SCOPE_LEN));
        assert!(!admitted(budgets.reserve(&long, &limit, 0, 100, 0)).is_tracked());
        drop(admitted(budgets.reserve("key:a", &limit, 0, 1, 0)));
        drop(admitted(budgets.reserve("key:b", &limit, 0, 1, 0)));
        assert!(!admitted(budgets.reserve("key:c", &limit, 0, 1, 0)).is_tracked());
        assert_eq!((budgets.tracked(), budgets.untracked()), (2, 2));
        // Amounts are clamped to what Redis counts exactly.
        let refusal = refused(budgets.reserve("key:a", &limit, 0, u64::MAX, 0));
        assert_eq!(refusal.requested, MAX_AMOUNT);
    }

    #[test]
    fn the_ask_is_the_demand_beyond_the_allowance() {
        assert_eq!(ask(0, -50), 0, "no request asked: nothing");
        assert_eq!(ask(100, 30), 70);
        assert_eq!(ask(100, 300), 0);
        assert_eq!(ask(100, -50), 150, "a debt is asked for too");
        assert_eq!(ask(u64::MAX, i64::MIN), MAX_AMOUNT);
    }

    #[test]
    fn hashes_expire_a_day_after_their_period() {
        assert_eq!(hash_expiry_ms(Period::Total, 0), 0);
        assert_eq!(
            hash_expiry_ms(Period::Day, MARCH_1_2026),
            MARCH_1_2026 + 2 * MS_PER_DAY
        );
        // March has 31 days: April 1st, plus a day.
        assert_eq!(
            hash_expiry_ms(Period::Month, MARCH_1_2026),
            MARCH_1_2026 + 32 * MS_PER_DAY
        );
    }

    #[test]
    fn a_reply_is_checked() {
        let reply = |items: Vec<i64>| Ok(Value::Array(items.into_iter().map(Value::Int).collect()));
        assert_eq!(
            parse_reply(reply(vec![5, -3, 0, 7, 100, 50, 2])),
            Some(Answer {
                spent: [5, 7],
                remaining: [-3, 100],
                granted: [0, 50],
                busy: 2
            })
        );
        assert_eq!(parse_reply(reply(vec![5, 1, 0, 7, 100, 50])), None);
        assert_eq!(parse_reply(reply(vec![5, 1, -1, 7, 100, 50, 2])), None);
        assert_eq!(
            parse_reply(Err(super::super::link::CallError::NoScript)),
            None
        );
    }

    #[test]
    fn call_arguments_are_clamped_and_unlimited_is_minus_one() {
        let args = call_args(
            "n:1",
            300,
            0,
            false,
            [None, Some(u64::MAX)],
            [1, u64::MAX],
            [0; 2],
            [0; 2],
            [0; 2],
            [0; 2],
            [0; 2],
        );
        assert_eq!(args.len(), 18);
        assert_eq!(args[4], "-1");
        assert_eq!(args[11], MAX_AMOUNT.to_string());
        assert_eq!(args[12], MAX_AMOUNT.to_string());
        assert_eq!(
            budget_keys("key:a", 5),
            ["cf:budget:key:a:5", "cf:bnodes:key:a:5"].map(String::from)
        );
    }
}
