//! Fleet-wide rates: a key's `rps`, `rpm` and `tpm` and a team's `rpm` and `tpm` held across
//! the fleet by a token bucket in Redis, while the hot path only touches atomics.
//!
//! **In Redis** each rate in use has a bucket `cf:rate:<kind>:<scope>` (a hash: the level, in
//! units, and when it was last brought up to date, on Redis's own clock) that refills at the
//! rate up to the burst, and a set of the nodes busy on it, `cf:rbusy:<kind>:<scope>`
//! (`kind` is `krps`, `krpm`, `ktpm`, `trpm` or `ttpm`). One script (`lua/rate_sync.lua`) does
//! a node's whole traffic for a rate atomically: refill, take the node's report (charge what it
//! admitted on credit, refund what it was granted and did not use, never above the burst),
//! mark the node busy if it asks, and grant it `min(ask, max(1, floor(level / busy)))` while
//! the level is at least 1: a fair share of what is there, at least one unit so a slow rate
//! still goes round. Both keys expire once idle (after three ticks, or once the bucket would
//! be full again, whichever is later), so Redis holds only the rates in use.
//!
//! **On the node** each rate in use has a [`RateShare`]: its *allowance* (units granted by
//! Redis and not yet used; negative while borrowed) and its *borrow limit*. The hot path
//! ([`FleetRates::take`]) takes from the allowance with one compare-and-swap and never waits:
//! it admits while the allowance stays at or above minus the borrow limit. Every tick the
//! link's [`RateSync`] swaps the allowance to zero and sends it as the report, with an ask of
//! the units wanted since the last tick (admitted or refused: the demand, at most the burst,
//! plus one while the rate is in use so a steady key always holds a grant); the reply's grant
//! is added to the allowance. A request refused by a later check gives its unit back
//! ([`RateShare::give_back`]); a token reservation corrected to the provider's usage moves
//! the allowance by the difference ([`RateShare::settle`]).
//!
//! **Borrowing.** A node may admit on credit, down to `-S`, only while its last view of the
//! bucket had room (level at least 1 after its grant) or before it has ever synced the rate
//! (so a key's first request on a node is not refused), with
//! `S = max(1, ceil(rate x sync_interval))`: one sync interval's worth. What it borrowed is
//! charged at its next tick, so the bucket goes negative and no node borrows again until the
//! refill has paid it back. A request of more units than `S` (a token reservation) is admitted
//! on credit only when nothing is borrowed yet, so a node's debt is at most `max(S, n)`.
//!
//! **The bound.** Grants are taken from the bucket before use and unused grants go back into
//! it, so the bucket's level plus every node's positive allowance never exceeds the burst, and
//! over a window `W` the bucket can hand out at most `burst + rate x W`. The only other source
//! of admissions is credit, at most `S` per node outstanding (each node's debt is charged at
//! its next tick). So over any window `W` the fleet admits at most
//!
//! ```text
//! burst + rate x W + N x S,        S = max(1, ceil(rate x sync_interval)), N = nodes
//! ```
//!
//! (for a token rate, `S` is `max(S, the largest single reservation)`, and as on one node a
//! request whose reported usage exceeds its reservation is charged the difference afterwards).
//! Example: `rps = 20`, 3 nodes, 100 ms ticks: `S = 2`; over 5 s at most
//! `20 + 20 x 5 + 3 x 2 = 126` requests.
//!
//! **Redis unreachable** (the link reports unanswered ticks): [`FleetRates::take`] answers
//! "not consulted" and the local check runs at this node's share ([`FleetRates::local_gcra`]:
//! the rate divided by the live nodes last known, the burst too, at least 1). A tick that went
//! unanswered puts its report back into the allowance, to be sent again. When Redis answers
//! again the node is back in fleet mode at once; a bucket Redis lost is rebuilt from the
//! level the calling node last saw (a restart is no windfall), or full if the node saw none.
//!
//! A scope longer than [`MAX_KEY_LEN`], or beyond the table's bound, is not tracked: the local
//! limit alone decides, and it is counted ([`FleetRates::untracked`]).

use std::collections::HashMap as StdHashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use papaya::HashMap;
use redis::Value;

use super::leases::MAX_KEY_LEN;
use super::link::{check_node_name, Batch, Participant, Reply, Script, TickContext, KEY_PREFIX};
use crate::limits::Gcra;

/// Ticks a rate stays in use after the last request asked for it: while in use the node asks
/// for one unit more than its demand; after, it gives its allowance back and forgets the rate.
pub const IDLE_TICKS: u32 = 5;

/// The rate script.
static RATE_SYNC: Script = Script {
    name: "rate_sync",
    source: include_str!("lua/rate_sync.lua"),
};

static SCRIPTS: [&Script; 1] = [&RATE_SYNC];

/// Which limit a rate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKind {
    /// A key's `rps`.
    KeyRps,
    /// A key's `rpm`.
    KeyRpm,
    /// A key's `tpm`.
    KeyTpm,
    /// A team's `rpm`.
    TeamRpm,
    /// A team's `tpm`.
    TeamTpm,
}

impl RateKind {
    /// Every kind, in table order.
    pub const ALL: [RateKind; 5] = [
        RateKind::KeyRps,
        RateKind::KeyRpm,
        RateKind::KeyTpm,
        RateKind::TeamRpm,
        RateKind::TeamTpm,
    ];

    /// The kind's part of its Redis keys.
    pub fn tag(self) -> &'static str {
        match self {
            RateKind::KeyRps => "krps",
            RateKind::KeyRpm => "krpm",
            RateKind::KeyTpm => "ktpm",
            RateKind::TeamRpm => "trpm",
            RateKind::TeamTpm => "ttpm",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The level value meaning "this node has not seen the fleet's bucket yet".
const NO_LEVEL: u64 = u64::MAX;

/// One rate's state on this node, shared by the hot path and the link thread.
#[derive(Debug)]
pub struct RateShare {
    /// Units granted and not used; negative = admitted on credit, charged at the next tick.
    allowance: AtomicI64,
    /// How far below zero the allowance may go: `S` while the last view had room or before
    /// the first sync, 0 otherwise.
    borrow_limit: AtomicI64,
    /// Units asked for since the last tick, admitted or refused: the demand.
    wanted: AtomicU64,
    /// The rate's emission interval as the hot path last gave it.
    emission_interval_ns: AtomicU64,
    /// The rate's burst as the hot path last gave it.
    burst: AtomicU64,
    /// The fleet's level at the last answer, as `f64` bits ([`NO_LEVEL`] before any).
    level: AtomicU64,
}

impl RateShare {
    fn new(gcra: &Gcra, tick: Duration) -> RateShare {
        RateShare {
            allowance: AtomicI64::new(0),
            // Never synced: a first request is not refused for want of a grant.
            borrow_limit: AtomicI64::new(sync_worth(gcra.emission_interval_ns(), tick)),
            wanted: AtomicU64::new(0),
            emission_interval_ns: AtomicU64::new(gcra.emission_interval_ns()),
            burst: AtomicU64::new(gcra.burst()),
            level: AtomicU64::new(NO_LEVEL),
        }
    }

    /// Units granted and not used (negative: borrowed).
    pub fn allowance(&self) -> i64 {
        self.allowance.load(Ordering::Acquire)
    }

    /// How far below zero the allowance may go right now.
    pub fn borrow_limit(&self) -> i64 {
        self.borrow_limit.load(Ordering::Acquire)
    }

    /// The fleet's level at the last answer, if any.
    pub fn last_level(&self) -> Option<f64> {
        match self.level.load(Ordering::Relaxed) {
            NO_LEVEL => None,
            bits => Some(f64::from_bits(bits)),
        }
    }

    /// Takes `n` units if the allowance, less what may be borrowed, covers them; else returns
    /// the units missing. One compare-and-swap loop.
    fn try_take(&self, n: u64) -> Result<(), u64> {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let floor = -self.borrow_limit.load(Ordering::Acquire);
        let mut current = self.allowance.load(Ordering::Acquire);
        loop {
            let after = current.saturating_sub(n);
            // One request larger than S may go on credit, but only with no debt yet: the
            // node's debt stays within max(S, n).
            let on_credit_alone = floor < 0 && current >= 0;
            if after < floor && !on_credit_alone {
                return Err(floor.saturating_sub(after).unsigned_abs());
            }
            match self.allowance.compare_exchange_weak(
                current,
                after,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives back `n` units taken for a request that a later check refused.
    pub fn give_back(&self, n: u64) {
        self.allowance
            .fetch_add(i64::try_from(n).unwrap_or(i64::MAX), Ordering::AcqRel);
    }

    /// Corrects a reservation by `delta` units (used minus reserved, either sign). The
    /// allowance may go below the borrow floor: what was really used is charged at the next
    /// tick.
    pub fn settle(&self, delta: i64) {
        self.allowance.fetch_sub(delta, Ordering::AcqRel);
    }

    /// Records the rate the hot path gives, if it changed (a reload).
    fn note_rate(&self, gcra: &Gcra) {
        let interval = gcra.emission_interval_ns();
        if self.emission_interval_ns.load(Ordering::Relaxed) != interval {
            self.emission_interval_ns.store(interval, Ordering::Relaxed);
        }
        let burst = gcra.burst();
        if self.burst.load(Ordering::Relaxed) != burst {
            self.burst.store(burst, Ordering::Relaxed);
        }
    }
}

/// `S`: one sync interval's worth of a rate, `max(1, ceil(tick / emission interval))`.
fn sync_worth(emission_interval_ns: u64, tick: Duration) -> i64 {
    let tick_ns = u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX);
    let worth = tick_ns.div_ceil(emission_interval_ns.max(1)).max(1);
    i64::try_from(worth).unwrap_or(i64::MAX)
}

/// The fleet's answer to one take.
#[derive(Debug)]
pub enum FleetDecision {
    /// Admitted: the share to give units back to (no lookup needed).
    Admitted(Arc<RateShare>),
    /// Refused: answer 429.
    Refused(FleetRefusal),
    /// The fleet was not asked (Redis unreachable, or the scope is not tracked): the local
    /// check alone decides.
    NotConsulted,
}

/// Why the fleet refused, for the 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetRefusal {
    /// When the same request may be admitted: the missing units at the rate, at least one
    /// sync interval (grants arrive once per tick).
    pub retry_after_ns: u64,
}

/// This node's fleet rates, shared by the hot path and the link thread.
#[derive(Debug)]
pub struct FleetRates {
    tables: [HashMap<Box<str>, Arc<RateShare>>; 5],
    max_scopes: usize,
    tick: Duration,
    untracked: AtomicU64,
    /// Whether Redis did not answer the last tick.
    degraded: AtomicBool,
    /// The live nodes at the last answer (at least 1).
    live_nodes: AtomicU32,
}

impl FleetRates {
    /// Empty tables, each tracking at most `max_scopes` scopes, synced every `tick`.
    pub fn new(max_scopes: usize, tick: Duration) -> Arc<FleetRates> {
        Arc::new(FleetRates {
            tables: std::array::from_fn(|_| HashMap::new()),
            max_scopes,
            tick,
            untracked: AtomicU64::new(0),
            // Not degraded until a tick goes unanswered: before the first sync every scope
            // may borrow one interval's worth, which keeps the fleet within its bound (a
            // node believing itself alone would admit a whole burst locally).
            degraded: AtomicBool::new(false),
            live_nodes: AtomicU32::new(1),
        })
    }

    /// The hot path: `n` units of `scope`'s `kind` rate (`gcra`, the fleet-wide rate) from
    /// this node's allowance. Never waits; no allocation for a scope already tracked.
    pub fn take(&self, kind: RateKind, scope: &str, gcra: &Gcra, n: u64) -> FleetDecision {
        if self.degraded() {
            return FleetDecision::NotConsulted;
        }
        let table = self.tables[kind.index()].pin();
        let share =
            match table.get(scope) {
                Some(share) => Arc::clone(share),
                None => {
                    if scope.len() > MAX_KEY_LEN || table.len() >= self.max_scopes {
                        self.untracked.fetch_add(1, Ordering::Relaxed);
                        return FleetDecision::NotConsulted;
                    }
                    Arc::clone(table.get_or_insert_with(scope.into(), || {
                        Arc::new(RateShare::new(gcra, self.tick))
                    }))
                }
            };
        share.note_rate(gcra);
        share.wanted.fetch_add(n, Ordering::Relaxed);
        match share.try_take(n) {
            Ok(()) => FleetDecision::Admitted(share),
            Err(missing) => {
                let tick_ns = u64::try_from(self.tick.as_nanos()).unwrap_or(u64::MAX);
                let retry_after_ns = missing
                    .saturating_mul(gcra.emission_interval_ns())
                    .max(tick_ns);
                FleetDecision::Refused(FleetRefusal { retry_after_ns })
            }
        }
    }

    /// The rate the local check should enforce: while degraded, this node's share (the rate
    /// divided by the live nodes last known, the burst too, at least 1); else `gcra` as is.
    pub fn local_gcra(&self, gcra: &Gcra) -> Gcra {
        if !self.degraded() {
            return *gcra;
        }
        let nodes = u64::from(self.live_nodes.load(Ordering::Relaxed).max(1));
        if nodes == 1 {
            return *gcra;
        }
        let interval = gcra.emission_interval_ns().saturating_mul(nodes);
        let burst = (gcra.burst() / nodes).max(1);
        Gcra::new(1, Duration::from_nanos(interval), burst).unwrap_or(*gcra)
    }

    /// Whether Redis did not answer the last tick: limits run at this node's share.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// The share of `scope`'s `kind` rate, if tracked.
    pub fn share(&self, kind: RateKind, scope: &str) -> Option<Arc<RateShare>> {
        self.tables[kind.index()].pin().get(scope).cloned()
    }

    /// Takes the fleet did not answer because their scope could not be tracked.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    /// Scopes tracked right now, over every kind.
    pub fn tracked(&self) -> usize {
        self.tables.iter().map(HashMap::len).sum()
    }
}

/// A call sent this tick, waiting for its reply.
#[derive(Debug)]
struct Pending {
    share: Arc<RateShare>,
    /// The allowance swapped out and reported: put back if the call was not answered.
    reported: i64,
}

/// The link participant keeping this node's rate allowances granted from Redis.
#[derive(Debug)]
pub struct RateSync {
    rates: Arc<FleetRates>,
    node: String,
    tick_ms: u64,
    /// Ticks since each tracked scope was last asked for.
    idle: StdHashMap<(RateKind, Box<str>), u32>,
    pending: Vec<Pending>,
}

impl RateSync {
    /// The participant for node `node` (a valid node name).
    pub fn new(rates: Arc<FleetRates>, node: &str) -> Result<RateSync, String> {
        check_node_name(node)?;
        let tick_ms = rates.tick.as_millis().max(1) as u64;
        Ok(RateSync {
            rates,
            node: node.to_string(),
            tick_ms,
            idle: StdHashMap::new(),
            pending: Vec::new(),
        })
    }

    /// Adds the call reporting `reported` and asking for `ask` units of `scope`'s rate.
    fn call(
        &self,
        batch: &mut Batch,
        kind: RateKind,
        scope: &str,
        share: &RateShare,
        reported: i64,
        ask: u64,
    ) {
        let interval_ms = share.emission_interval_ns.load(Ordering::Relaxed) as f64 / 1e6;
        let args = vec![
            reported.to_string(),
            ask.to_string(),
            share
                .last_level()
                .map_or_else(String::new, |level| level.to_string()),
            interval_ms.to_string(),
            share.burst.load(Ordering::Relaxed).to_string(),
            self.node.clone(),
            self.tick_ms.to_string(),
        ];
        batch.call(&RATE_SYNC, rate_keys(kind, scope), args);
    }
}

/// What a rate asks for in a tick: the demand since the last tick, at most the burst, plus
/// one unit while the rate is in use (so a steady key holds a grant before it needs it).
fn ask(wanted: u64, burst: u64, in_use: bool) -> u64 {
    wanted.min(burst) + u64::from(in_use)
}

impl Participant for RateSync {
    fn scripts(&self) -> &'static [&'static Script] {
        &SCRIPTS
    }

    fn collect(&mut self, _ctx: &TickContext, batch: &mut Batch) {
        self.pending.clear();
        let rates = Arc::clone(&self.rates);
        for kind in RateKind::ALL {
            let table = rates.tables[kind.index()].pin();
            let mut forget = Vec::new();
            for (scope, share) in table.iter() {
                let wanted = share.wanted.swap(0, Ordering::Relaxed);
                let idle = self.idle.entry((kind, scope.clone())).or_insert(0);
                *idle = if wanted > 0 {
                    0
                } else {
                    idle.saturating_add(1)
                };
                let in_use = *idle < IDLE_TICKS;
                if !in_use {
                    // Removed before the swap, so a request arriving now registers the scope
                    // again instead of taking from an allowance about to be given back.
                    forget.push(scope.clone());
                }
                let reported = share.allowance.swap(0, Ordering::AcqRel);
                let burst = share.burst.load(Ordering::Relaxed);
                let ask = ask(wanted, burst, in_use);
                if !in_use && reported == 0 {
                    continue;
                }
                self.call(batch, kind, scope, share, reported, ask);
                self.pending.push(Pending {
                    share: Arc::clone(share),
                    reported,
                });
            }
            for scope in forget {
                table.remove(&scope);
                self.idle.remove(&(kind, scope));
            }
        }
    }

    fn apply(&mut self, ctx: &TickContext, replies: Vec<Reply>) {
        self.rates
            .live_nodes
            .store(ctx.live_nodes.max(1), Ordering::Relaxed);
        self.rates.degraded.store(false, Ordering::Release);
        for (pending, reply) in self.pending.drain(..).zip(replies) {
            let share = &pending.share;
            let Some(answer) = parse_reply(reply) else {
                // Not run (NOSCRIPT, an error): the report is sent again next tick.
                share
                    .allowance
                    .fetch_add(pending.reported, Ordering::AcqRel);
                continue;
            };
            share.allowance.fetch_add(answer.granted, Ordering::AcqRel);
            let room = answer.level >= 1.0;
            let worth = sync_worth(
                share.emission_interval_ns.load(Ordering::Relaxed),
                self.rates.tick,
            );
            share
                .borrow_limit
                .store(if room { worth } else { 0 }, Ordering::Release);
            share.level.store(answer.level.to_bits(), Ordering::Relaxed);
        }
    }

    fn unanswered(&mut self, ctx: &TickContext) {
        self.rates
            .live_nodes
            .store(ctx.live_nodes.max(1), Ordering::Relaxed);
        self.rates.degraded.store(true, Ordering::Release);
        for pending in self.pending.drain(..) {
            pending
                .share
                .allowance
                .fetch_add(pending.reported, Ordering::AcqRel);
        }
    }

    fn farewell(&mut self, batch: &mut Batch) {
        let rates = Arc::clone(&self.rates);
        for kind in RateKind::ALL {
            for (scope, share) in rates.tables[kind.index()].pin().iter() {
                let reported = share.allowance.swap(0, Ordering::AcqRel);
                self.call(batch, kind, scope, share, reported, 0);
            }
        }
    }
}

/// The Redis keys of a rate: its bucket and its busy nodes. The kind's tag has no colon, so no
/// scope name can make one kind's key collide with another's.
fn rate_keys(kind: RateKind, scope: &str) -> Vec<String> {
    vec![
        format!("{KEY_PREFIX}rate:{}:{scope}", kind.tag()),
        format!("{KEY_PREFIX}rbusy:{}:{scope}", kind.tag()),
    ]
}

/// The rate script's answer to one call.
#[derive(Debug, PartialEq)]
struct Answer {
    granted: i64,
    level: f64,
}

/// `{granted, level after, busy}` from the rate script.
fn parse_reply(reply: Reply) -> Option<Answer> {
    let Ok(Value::Array(items)) = reply else {
        return None;
    };
    let [granted, level, _busy] = <[Value; 3]>::try_from(items).ok()?;
    let granted = redis::from_redis_value::<i64>(granted).ok()?;
    let level = redis::from_redis_value::<String>(level)
        .ok()?
        .parse::<f64>()
        .ok()?;
    (granted >= 0 && level.is_finite()).then_some(Answer { granted, level })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{gcra_per_minute, gcra_per_second};

    const TICK: Duration = Duration::from_millis(100);

    fn rps(rate: f64) -> Gcra {
        gcra_per_second(rate, 0).unwrap()
    }

    #[test]
    fn one_sync_interval_is_worth_at_least_one_unit() {
        // 20/s over 100 ms: 2; 10/min over 100 ms: less than one, so 1; 6000/min: 10.
        assert_eq!(sync_worth(rps(20.0).emission_interval_ns(), TICK), 2);
        let slow = gcra_per_minute(10).unwrap();
        assert_eq!(sync_worth(slow.emission_interval_ns(), TICK), 1);
        let tpm = gcra_per_minute(6000).unwrap();
        assert_eq!(sync_worth(tpm.emission_interval_ns(), TICK), 10);
    }

    #[test]
    fn a_never_synced_scope_borrows_one_interval_then_stops() {
        let rates = FleetRates::new(10, TICK);
        let gcra = rps(20.0);
        let took = |n| rates.take(RateKind::KeyRps, "k", &gcra, n);
        assert!(matches!(took(1), FleetDecision::Admitted(_)));
        assert!(matches!(took(1), FleetDecision::Admitted(_)));
        let FleetDecision::Refused(refusal) = took(1) else {
            panic!("S = 2 borrowed: the third is refused");
        };
        assert_eq!(refusal.retry_after_ns, TICK.as_nanos() as u64);
        let share = rates.share(RateKind::KeyRps, "k").unwrap();
        assert_eq!(share.allowance(), -2);
        assert_eq!(
            share.wanted.load(Ordering::Relaxed),
            3,
            "refusals are demand too"
        );
    }

    #[test]
    fn the_allowance_is_taken_down_to_the_borrow_floor_and_no_further() {
        let share = RateShare::new(&rps(20.0), TICK);
        share.borrow_limit.store(0, Ordering::Relaxed);
        share.allowance.store(3, Ordering::Relaxed);
        assert_eq!(share.try_take(2), Ok(()));
        assert_eq!(share.try_take(2), Err(1), "1 left, no credit");
        assert_eq!(share.try_take(1), Ok(()));
        assert_eq!(share.try_take(1), Err(1));
        share.borrow_limit.store(2, Ordering::Relaxed);
        assert_eq!(share.try_take(1), Ok(()));
        assert_eq!(share.try_take(1), Ok(()));
        assert_eq!(share.try_take(1), Err(1), "-2 is the floor");
        assert_eq!(share.allowance(), -2);
        share.give_back(1);
        assert_eq!(share.allowance(), -1);
        share.settle(5);
        assert_eq!(share.allowance(), -6, "a settlement may pass the floor");
        share.settle(-6);
        assert_eq!(share.allowance(), 0);
    }

    #[test]
    fn a_request_larger_than_the_floor_goes_on_credit_only_without_debt() {
        let share = RateShare::new(&gcra_per_minute(6000).unwrap(), TICK);
        assert_eq!(share.borrow_limit(), 10);
        assert_eq!(share.try_take(50), Ok(()), "a first reservation of 50");
        assert_eq!(share.allowance(), -50);
        assert_eq!(
            share.try_take(1),
            Err(41),
            "in debt: nothing more on credit"
        );
        share.borrow_limit.store(0, Ordering::Relaxed);
        share.allowance.store(0, Ordering::Relaxed);
        assert_eq!(share.try_take(50), Err(50), "no room: no credit at all");
    }

    #[test]
    fn concurrent_takers_never_pass_the_floor() {
        let share = Arc::new(RateShare::new(&rps(20.0), TICK));
        share.allowance.store(1000, Ordering::Relaxed);
        let admitted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (share, admitted) = (Arc::clone(&share), Arc::clone(&admitted));
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if share.try_take(1).is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 1002, "1000 granted + S");
        assert_eq!(share.allowance(), -2);
    }

    #[test]
    fn degraded_the_local_check_runs_at_this_nodes_share() {
        let rates = FleetRates::new(10, TICK);
        let gcra = rps(20.0);
        assert_eq!(rates.local_gcra(&gcra), gcra, "fleet mode: the rate as is");
        rates.degraded.store(true, Ordering::Relaxed);
        assert_eq!(rates.local_gcra(&gcra), gcra, "alone: the whole rate");
        rates.live_nodes.store(3, Ordering::Relaxed);
        let share = rates.local_gcra(&gcra);
        assert_eq!(
            share.emission_interval_ns(),
            gcra.emission_interval_ns() * 3
        );
        assert_eq!(share.burst(), 6, "20 / 3");
        let slow = gcra_per_second(1.0, 0).unwrap();
        assert_eq!(rates.local_gcra(&slow).burst(), 1, "at least 1");
        assert!(matches!(
            rates.take(RateKind::KeyRps, "k", &gcra, 1),
            FleetDecision::NotConsulted
        ));
        assert_eq!(rates.tracked(), 0, "nothing registered while degraded");
    }

    #[test]
    fn scopes_are_bounded_in_length_and_number() {
        let rates = FleetRates::new(2, TICK);
        let gcra = rps(20.0);
        let long = "k".repeat(MAX_KEY_LEN + 1);
        assert!(matches!(
            rates.take(RateKind::KeyRps, &long, &gcra, 1),
            FleetDecision::NotConsulted
        ));
        for scope in ["a", "b"] {
            assert!(matches!(
                rates.take(RateKind::KeyRps, scope, &gcra, 1),
                FleetDecision::Admitted(_)
            ));
        }
        assert!(matches!(
            rates.take(RateKind::KeyRps, "c", &gcra, 1),
            FleetDecision::NotConsulted
        ));
        assert!(matches!(
            rates.take(RateKind::TeamRpm, "c", &gcra, 1),
            FleetDecision::Admitted(_)
        ));
        assert_eq!(rates.untracked(), 2);
        assert_eq!(rates.tracked(), 3);
    }

    #[test]
    fn the_ask_is_the_demand_within_the_burst_plus_one_while_in_use() {
        assert_eq!(ask(0, 20, true), 1);
        assert_eq!(ask(7, 20, true), 8);
        assert_eq!(ask(10_000, 20, true), 21);
        assert_eq!(ask(0, 20, false), 0);
    }

    #[test]
    fn a_reply_is_checked() {
        let reply = |granted: i64, level: &str| {
            Ok(Value::Array(vec![
                Value::Int(granted),
                Value::BulkString(level.as_bytes().to_vec()),
                Value::Int(2),
            ]))
        };
        assert_eq!(
            parse_reply(reply(3, "-1.5")),
            Some(Answer {
                granted: 3,
                level: -1.5
            })
        );
        assert_eq!(parse_reply(reply(-1, "0")), None);
        assert_eq!(parse_reply(reply(1, "nan")), None);
        assert_eq!(parse_reply(reply(1, "x")), None);
        assert_eq!(
            parse_reply(Err(super::super::link::CallError::NoScript)),
            None
        );
    }

    #[test]
    fn each_kind_has_its_own_keys() {
        assert_eq!(
            rate_keys(RateKind::TeamTpm, "research"),
            ["cf:rate:ttpm:research", "cf:rbusy:ttpm:research"].map(String::from)
        );
    }
}
