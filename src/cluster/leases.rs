//! Fleet concurrency: a key's `max_concurrency` held across the fleet as leases in Redis.
//!
//! **In Redis** each key has a sorted set `cf:lease:<key>` whose members are leases
//! (`node:incarnation:id`) scored by their expiry on Redis's own clock, and two sets of nodes
//! (`node:incarnation`, same expiry as the leases): `cf:busy:<key>`, the nodes holding a lease
//! or asking for one, and `cf:wait:<key>`, the nodes that wanted more than they held after
//! their last call. One script (`lua/lease_sync.lua`) does a node's whole traffic for a key
//! atomically: drop expired entries, remove what the node releases, extend what it keeps,
//! add new members only while the set is below the limit, and update the node's busy and
//! waiting marks. So the leases alive in Redis never exceed the limit, at any moment.
//!
//! **On the node** each key has an [`Allowance`]: one `AtomicU64` packing the slots the node
//! holds (leases Redis granted it) and the slots in use. The hot path
//! ([`FleetLeases::try_acquire`]) only raises "in use" while it is below "held", by
//! compare-and-swap, exactly like the local `max_concurrency` (a request beyond the holdings
//! is refused with 429); it never waits on the network. The link thread's [`LeaseSync`]
//! keeps holdings a little ahead of need: every tick it asks for `in use + 1` (plus one per
//! request refused since the last tick; the spare only while the fleet's set has room and
//! nobody waits), and gives back what it no longer wants. Held only rises after Redis
//! granted, and falls (by CAS) before a release is sent; a lease is released only once no
//! request in flight needs it, so the node's in-use count is always covered by its leases.
//!
//! **Fairness.** With `B` nodes busy on a key (holding or waiting, not all live nodes), each
//! node's fair share is `floor(limit / B)`, plus one for the first `limit mod B` of them in
//! name order, so the shares add up to the limit. While no other node waits, a node may hold
//! anything up to the whole limit (work-conserving: one busy node uses every slot). While
//! another node waits, the script grants nobody past its share, and a node above its share
//! lowers "held" to the share at once (no new request takes the extra slots) and releases
//! those leases as their requests finish: the slots reach the waiters within a tick or two.
//! In ticks: a refused node is marked waiting at its next call (1), every holder sees the
//! mark at its next call (1) and releases what it holds past its share then or, if those
//! slots are still in use, at the first tick after their requests finish, and the waiter
//! takes them at its next call (1): at most 3 ticks plus the longest request in flight.
//! So every busy node gets at least `floor(limit / B)` slots, at least one whenever
//! `limit >= B`; with more busy nodes than slots, some get none until others go idle.
//! A node that goes idle gives its slots back and leaves the busy set, so the others' shares
//! grow again.
//!
//! **Lease TTL = 3 ticks** ([`lease_ttl`]): a live node renews every tick, so two ticks can
//! be lost or late before a lease lapses; a node that dies (`kill -9`) stops renewing and
//! its leases expire within the TTL, after which another node's next tick takes them.
//!
//! **Redis unreachable**: for the first TTL the node keeps its holdings (the leases are
//! still alive in Redis). After that they may have lapsed, so the node falls back to its
//! share, `max(1, limit / live nodes it last knew)`. When Redis answers again the node
//! renews its leases, re-adding them if Redis lost its memory (there is room: every node
//! re-registers at most what it held), and holdings follow what Redis granted. While
//! holdings shrink below what is in use, in-flight requests finish and new ones are refused:
//! the fleet's overshoot is bounded by the requests in flight when the fleet view was lost.
//!
//! **First use**: the gateway builds its table [`FleetLeases::with_first_use_credit`], so a
//! key's first request on a node runs on credit (one per node per key, see there) instead
//! of being refused until the node's next tick.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use papaya::HashMap;
use redis::Value;

use super::link::{check_node_name, Batch, Participant, Reply, Script, TickContext, KEY_PREFIX};

/// The longest key name tracked (key ids are far shorter): it becomes part of a Redis key.
pub const MAX_KEY_LEN: usize = 256;

/// The most new leases one key asks for in one tick, so a burst of refusals cannot make one
/// script call unbounded.
pub const MAX_ACQUIRE_PER_TICK: u32 = 64;

/// Ticks a key stays "active" after its last use or refusal: while active, the node keeps one
/// spare slot ahead of need; after, it gives the spare back, and a key with nothing held or
/// in use is forgotten.
pub const IDLE_TICKS: u32 = 10;

/// The lease script.
static LEASE_SYNC: Script = Script {
    name: "lease_sync",
    source: include_str!("lua/lease_sync.lua"),
};

static SCRIPTS: [&Script; 1] = [&LEASE_SYNC];

/// How long a lease lives without renewal: three ticks (see the module doc).
pub fn lease_ttl(tick: Duration) -> Duration {
    tick * 3
}

/// One key's slots on this node: held (granted by Redis) and in use, packed in one atomic so
/// "in use never exceeds held" is kept by a single compare-and-swap (the one exception is
/// the first-use credit, see [`FleetLeases::with_first_use_credit`]).
#[derive(Debug, Default)]
pub struct Allowance {
    /// High 32 bits: held; low 32 bits: in use.
    state: AtomicU64,
    /// The key's limit as the hot path last gave it.
    limit: AtomicU32,
    /// Requests refused since the link last looked: demand for more slots.
    refused: AtomicU32,
    /// Whether the key was ever synced with Redis (an answer about it applied, or the
    /// fallback share set): until then a first-use credit may be given.
    synced: AtomicBool,
    /// Whether the one first-use credit of this allowance was given.
    credited: AtomicBool,
}

fn pack(held: u32, in_use: u32) -> u64 {
    (u64::from(held) << 32) | u64::from(in_use)
}

fn unpack(state: u64) -> (u32, u32) {
    ((state >> 32) as u32, state as u32)
}

impl Allowance {
    /// `(held, in use)` right now.
    pub fn load(&self) -> (u32, u32) {
        unpack(self.state.load(Ordering::Acquire))
    }

    /// Takes a slot if one held is free.
    fn try_take(&self) -> bool {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let (held, in_use) = unpack(current);
            if in_use >= held {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            match self.state.compare_exchange_weak(
                current,
                pack(held, in_use + 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Takes a slot on credit, above held, once per allowance and only while the key was
    /// never synced: the request a node sees first for a key is not refused just because
    /// the link has not asked Redis for it yet. The next tick asks for a lease covering it.
    fn take_first_use_credit(&self) -> bool {
        if self.synced.load(Ordering::Acquire) || self.credited.swap(true, Ordering::AcqRel) {
            return false;
        }
        // In use rises without a lease behind it; it cannot carry into held (in use stays
        // far below 2^32).
        self.state.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Gives back a slot taken by `try_take` (in use is at least 1, so no borrow reaches the
    /// held half).
    fn put_back(&self) {
        self.state.fetch_sub(1, Ordering::AcqRel);
    }

    /// Lowers held to at most `ceiling`, keeping in use (which may then exceed it until
    /// requests finish: no new request is admitted meanwhile). Returns in use as it was at
    /// that moment: it cannot rise past `max(ceiling, that)` until held is raised again.
    fn lower_held(&self, ceiling: u32) -> u32 {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let (held, in_use) = unpack(current);
            if held <= ceiling {
                return in_use;
            }
            match self.state.compare_exchange_weak(
                current,
                pack(ceiling, in_use),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return in_use,
                Err(actual) => current = actual,
            }
        }
    }

    /// Sets held, keeping in use (which may then exceed it until requests finish).
    fn set_held(&self, held: u32) {
        let mut current = self.state.load(Ordering::Acquire);
        loop {
            let (_, in_use) = unpack(current);
            match self.state.compare_exchange_weak(
                current,
                pack(held, in_use),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }
}

/// One in-flight request's fleet slot; gives it back on drop.
#[derive(Debug)]
#[must_use = "the slot is given back as soon as the permit is dropped"]
pub struct LeasePermit {
    allowance: Arc<Allowance>,
}

impl Drop for LeasePermit {
    fn drop(&mut self) {
        self.allowance.put_back();
    }
}

/// This node's allowances, shared by the hot path and the link thread.
#[derive(Debug)]
pub struct FleetLeases {
    keys: HashMap<Box<str>, Arc<Allowance>>,
    max_keys: usize,
    untracked: AtomicU64,
    /// Whether a key's first request on this node is admitted on credit.
    first_use_credit: bool,
}

impl FleetLeases {
    /// An empty table tracking at most `max_keys` keys at once, admitting nothing beyond
    /// the leases Redis granted: a key seen for the first time is refused until the next
    /// tick has obtained slots for it.
    pub fn new(max_keys: usize) -> Arc<FleetLeases> {
        FleetLeases::build(max_keys, false)
    }

    /// Like [`FleetLeases::new`], but a key's first request on this node is admitted on
    /// credit (in use 1, held 0; the next tick acquires a lease for it), so a client's first
    /// call through a node is not refused merely because the node never synced its key.
    ///
    /// **The bound this adds**: at most one request per node per key, at the key's first
    /// use on that node (again after the node forgot the key: [`IDLE_TICKS`] quiet ticks
    /// with nothing held or in use). So with `N` nodes the fleet may run at most
    /// `limit + N` of a key's requests at once, and only while those first requests last;
    /// a request on credit is covered by a lease from the next tick on when the fleet has
    /// room. Once a key was synced (or fell back to its share), no credit is given.
    pub fn with_first_use_credit(max_keys: usize) -> Arc<FleetLeases> {
        FleetLeases::build(max_keys, true)
    }

    fn build(max_keys: usize, first_use_credit: bool) -> Arc<FleetLeases> {
        Arc::new(FleetLeases {
            keys: HashMap::new(),
            max_keys,
            untracked: AtomicU64::new(0),
            first_use_credit,
        })
    }

    /// The hot path: a slot of `key` (whose fleet-wide limit is `limit`) if this node holds
    /// a free one; `None` means answer 429. Never waits: a key seen for the first time is
    /// registered (and, with the first-use credit, admitted once) and the next tick asks
    /// Redis for slots. A key over [`MAX_KEY_LEN`] or beyond the table's bound is refused
    /// and counted.
    pub fn try_acquire(&self, key: &str, limit: u32) -> Option<LeasePermit> {
        let keys = self.keys.pin();
        let allowance = match keys.get(key) {
            Some(allowance) => Arc::clone(allowance),
            None => {
                if key.len() > MAX_KEY_LEN || keys.len() >= self.max_keys {
                    self.untracked.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Arc::clone(keys.get_or_insert_with(key.into(), || Arc::new(Allowance::default())))
            }
        };
        if allowance.limit.load(Ordering::Relaxed) != limit {
            allowance.limit.store(limit, Ordering::Relaxed);
        }
        // Not `then_some`: it would build (and drop, giving back a slot never taken) the
        // permit on a refusal too.
        if allowance.try_take()
            || (self.first_use_credit && limit > 0 && allowance.take_first_use_credit())
        {
            Some(LeasePermit { allowance })
        } else {
            None
        }
    }

    /// `(held, in use)` of `key`, if tracked.
    pub fn holdings(&self, key: &str) -> Option<(u32, u32)> {
        self.keys.pin().get(key).map(|a| a.load())
    }

    /// Requests refused because their key could not be tracked.
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    /// Keys tracked right now.
    pub fn tracked(&self) -> usize {
        self.keys.len()
    }
}

/// What the lease script last said about sharing a key (see the module doc).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Fairness {
    /// This node's fair share: the limit over the nodes busy on the key, the remainder going
    /// to the first nodes in name order.
    share: u32,
    /// Whether another node wanted more than it held at its last call.
    others_wait: bool,
}

/// What the link thread knows of one key's leases.
#[derive(Debug, Default)]
struct KeyLeases {
    /// This node's lease members believed alive in Redis.
    members: Vec<String>,
    /// Ticks since the key was last used or refused.
    idle_ticks: u32,
    /// Whether the fleet's set was full at the last answer.
    saturated: bool,
    /// The sharing as of the last answer.
    fairness: Fairness,
    /// The slots wanted at the last call: held never goes above it.
    target: u32,
}

/// A call sent this tick, waiting for its reply.
#[derive(Debug)]
struct Pending {
    key: Box<str>,
    renewed: usize,
    acquiring: Vec<String>,
}

/// The link participant keeping this node's allowances backed by leases in Redis.
#[derive(Debug)]
pub struct LeaseSync {
    leases: Arc<FleetLeases>,
    /// `node:incarnation`: this node's name in the busy and waiting sets.
    node_id: String,
    member_prefix: String,
    next_id: u64,
    ttl_ms: u64,
    ttl: Duration,
    keys: std::collections::HashMap<Box<str>, KeyLeases>,
    pending: Vec<Pending>,
    falling_back: bool,
}

impl LeaseSync {
    /// The participant for node `node` ticking every `tick`. Its members carry a random
    /// incarnation, so a restarted node with the same name never renews its previous life's
    /// leases (they expire).
    pub fn new(leases: Arc<FleetLeases>, node: &str, tick: Duration) -> Result<LeaseSync, String> {
        check_node_name(node)?;
        let mut incarnation = [0u8; 8];
        getrandom::getrandom(&mut incarnation)
            .map_err(|e| format!("no randomness for the lease ids: {e}"))?;
        let ttl = lease_ttl(tick);
        let node_id = format!("{node}:{:016x}", u64::from_le_bytes(incarnation));
        Ok(LeaseSync {
            leases,
            member_prefix: format!("{node_id}:"),
            node_id,
            next_id: 0,
            ttl_ms: ttl.as_millis().max(1) as u64,
            ttl,
            keys: std::collections::HashMap::new(),
            pending: Vec::new(),
            falling_back: false,
        })
    }
}

/// How many slots a key asks for before any fair-share cap: what is in use, one spare while
/// it is active and the fleet has room (the set is not full and no other node waits: a spare
/// held then would be a slot kept from a waiter), one more per refusal, within the limit.
/// This is the demand the lease script compares with what the node holds to tell whether it
/// waits.
fn demand(in_use: u32, refused: u32, active: bool, roomy: bool, limit: u32) -> u32 {
    let spare = u32::from(active && roomy);
    let extra = refused.min(MAX_ACQUIRE_PER_TICK);
    in_use
        .saturating_add(spare)
        .saturating_add(extra)
        .min(limit)
}

/// How many slots a key should hold: its demand, capped at the node's fair share while
/// another node waits for a slot. Alone (nobody waiting) a node may use the whole limit; when
/// others wait, a node above its share keeps only its share, so the slots it frees go back to
/// Redis and on to the waiters instead of being taken again here.
fn wanted(demand: u32, fairness: Fairness) -> u32 {
    if fairness.others_wait {
        demand.min(fairness.share)
    } else {
        demand
    }
}

/// The share a node falls back on without Redis: the limit split over the live nodes it last
/// knew, at least one slot so the key is not shut off.
fn fallback_share(limit: u32, live_nodes: u32) -> u32 {
    (limit / live_nodes.max(1)).max(1).min(limit)
}

impl Participant for LeaseSync {
    fn scripts(&self) -> &'static [&'static Script] {
        &SCRIPTS
    }

    fn collect(&mut self, _ctx: &TickContext, batch: &mut Batch) {
        self.pending.clear();
        let leases = Arc::clone(&self.leases);
        let tracked = leases.keys.pin();
        let mut forget = Vec::new();
        for (key, allowance) in tracked.iter() {
            let (held, in_use) = allowance.load();
            let refused = allowance.refused.swap(0, Ordering::Relaxed);
            let limit = allowance.limit.load(Ordering::Relaxed);
            let state = self.keys.entry(key.clone()).or_default();
            if in_use > 0 || refused > 0 {
                state.idle_ticks = 0;
            } else {
                state.idle_ticks = state.idle_ticks.saturating_add(1);
            }
            let active = state.idle_ticks < IDLE_TICKS;
            let roomy = !state.saturated && !state.fairness.others_wait;
            let demand = demand(in_use, refused, active, roomy, limit);
            let want = wanted(demand, state.fairness);
            let mut released = Vec::new();
            // Give back what is beyond the want: first held comes down to it, so no new
            // request takes those slots, then every lease not covering a request still in
            // flight goes; the rest go at a later tick, once their requests finish. After a
            // fallback, held is the share, not the leases (it may be above them): nothing is
            // released until the first answer sets held from the leases again.
            if !self.falling_back && held as usize <= state.members.len() {
                let in_flight = allowance.lower_held(want);
                let keep = want.max(in_flight) as usize;
                while state.members.len() > keep {
                    released.extend(state.members.pop());
                }
            }
            state.target = want;
            let missing = (want as usize).saturating_sub(state.members.len());
            // A node that wants a slot calls even when its share is none, so the fleet
            // still counts it as busy and waiting.
            if released.is_empty() && state.members.is_empty() && missing == 0 && demand == 0 {
                if !active && in_use == 0 && held == 0 {
                    forget.push(key.clone());
                }
                continue;
            }
            let state_members = state.members.clone();
            let acquiring: Vec<String> = (0..missing)
                .map(|_| {
                    self.next_id += 1;
                    format!("{}{}", self.member_prefix, self.next_id)
                })
                .collect();
            let mut args =
                Vec::with_capacity(6 + released.len() + state_members.len() + acquiring.len());
            args.push(limit.to_string());
            args.push(self.ttl_ms.to_string());
            args.push(released.len().to_string());
            args.push(state_members.len().to_string());
            args.push(demand.to_string());
            args.push(self.node_id.clone());
            args.extend(released);
            args.extend(state_members.iter().cloned());
            args.extend(acquiring.iter().cloned());
            batch.call(&LEASE_SYNC, lease_keys(key), args);
            self.pending.push(Pending {
                key: key.clone(),
                renewed: state_members.len(),
                acquiring,
            });
        }
        for key in forget {
            // A request racing with this removal holds the old allowance and is refused as if
            // the node held no slot; the next request registers the key again.
            tracked.remove(&key);
            self.keys.remove(&key);
        }
    }

    fn apply(&mut self, _ctx: &TickContext, replies: Vec<Reply>) {
        self.falling_back = false;
        let tracked = self.leases.keys.pin();
        for (pending, reply) in self.pending.drain(..).zip(replies) {
            let Some(state) = self.keys.get_mut(&pending.key) else {
                continue;
            };
            let Some(allowance) = tracked.get(&pending.key) else {
                continue;
            };
            let Some(answer) = parse_reply(reply, pending.renewed) else {
                // Not run (NOSCRIPT, an error): released leases lapse by TTL, new ones were
                // not added, kept ones are renewed next tick. Holdings stay as they are.
                continue;
            };
            allowance.synced.store(true, Ordering::Release);
            let mut flags = answer.kept.into_iter();
            state.members.retain(|_| flags.next().unwrap_or(false));
            state
                .members
                .extend(pending.acquiring.into_iter().take(answer.granted as usize));
            let limit = allowance.limit.load(Ordering::Relaxed);
            state.saturated = answer.count >= limit;
            state.fairness = answer.fairness;
            // Held follows the leases, but stays at the target while leases beyond it still
            // cover requests in flight.
            allowance.set_held((state.members.len() as u32).min(state.target));
        }
    }

    fn unanswered(&mut self, ctx: &TickContext) {
        self.pending.clear();
        let lapsed = ctx
            .last_answer
            .is_none_or(|answered| ctx.now.duration_since(answered) >= self.ttl);
        if !lapsed {
            return;
        }
        // The leases may have expired in Redis: fall back to this node's share.
        self.falling_back = true;
        for (_, allowance) in self.leases.keys.pin().iter() {
            let limit = allowance.limit.load(Ordering::Relaxed);
            allowance.synced.store(true, Ordering::Release);
            allowance.set_held(fallback_share(limit, ctx.live_nodes));
        }
    }

    fn farewell(&mut self, batch: &mut Batch) {
        for (key, state) in self.keys.drain() {
            if state.members.is_empty() {
                continue;
            }
            let mut args = vec![
                "0".to_string(),
                self.ttl_ms.to_string(),
                state.members.len().to_string(),
                "0".to_string(),
                "0".to_string(),
                self.node_id.clone(),
            ];
            args.extend(state.members);
            batch.call(&LEASE_SYNC, lease_keys(&key), args);
        }
    }
}

/// The Redis keys of `key`'s leases: the lease set, the busy nodes, the waiting nodes. Each
/// kind has its own prefix, so no key name can make one collide with another's.
fn lease_keys(key: &str) -> Vec<String> {
    vec![
        format!("{KEY_PREFIX}lease:{key}"),
        format!("{KEY_PREFIX}busy:{key}"),
        format!("{KEY_PREFIX}wait:{key}"),
    ]
}

/// The lease script's answer to one call.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    /// Leases in the fleet's set after the call.
    count: u32,
    /// New leases granted to this node.
    granted: u32,
    /// Whether each renewed lease is still alive.
    kept: Vec<bool>,
    fairness: Fairness,
}

/// `{count, granted, share, others wait, kept flags...}` from the lease script, checked
/// against the renewals sent.
fn parse_reply(reply: Reply, renewed: usize) -> Option<Answer> {
    let Ok(Value::Array(items)) = reply else {
        return None;
    };
    if items.len() != 4 + renewed {
        return None;
    }
    let numbers: Vec<i64> = items
        .into_iter()
        .map(|item| redis::from_redis_value::<i64>(item).ok())
        .collect::<Option<_>>()?;
    Some(Answer {
        count: u32::try_from(numbers[0]).ok()?,
        granted: u32::try_from(numbers[1]).ok()?,
        kept: numbers[4..].iter().map(|&k| k == 1).collect(),
        fairness: Fairness {
            share: u32::try_from(numbers[2]).ok()?,
            others_wait: numbers[3] == 1,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_use_never_passes_held_and_shrinking_keeps_used_slots() {
        let allowance = Allowance::default();
        assert!(!allowance.try_take(), "nothing held yet");
        assert_eq!(allowance.refused.load(Ordering::Relaxed), 1);
        allowance.set_held(2);
        assert!(allowance.try_take());
        assert!(allowance.try_take());
        assert!(!allowance.try_take());
        assert_eq!(allowance.load(), (2, 2));
        assert_eq!(allowance.lower_held(3), 2, "never raises held");
        assert_eq!(allowance.load(), (2, 2));
        assert_eq!(allowance.lower_held(1), 2, "in use may stay above held");
        assert_eq!(allowance.load(), (1, 2));
        assert!(
            !allowance.try_take(),
            "nothing is admitted above the lowered held"
        );
        allowance.put_back();
        assert_eq!(allowance.load(), (1, 1));
        allowance.set_held(0);
        assert_eq!(
            allowance.load(),
            (0, 1),
            "lost holdings leave in-flight requests be"
        );
        assert!(!allowance.try_take());
        allowance.put_back();
        assert_eq!(allowance.load(), (0, 0));
    }

    #[test]
    fn concurrent_takers_never_exceed_held() {
        let allowance = Arc::new(Allowance::default());
        allowance.set_held(3);
        let peak = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let allowance = Arc::clone(&allowance);
                let peak = Arc::clone(&peak);
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if allowance.try_take() {
                            peak.fetch_max(allowance.load().1, Ordering::Relaxed);
                            allowance.put_back();
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(peak.load(Ordering::Relaxed) <= 3);
        assert_eq!(allowance.load(), (3, 0));
    }

    #[test]
    fn holdings_run_one_ahead_of_need_within_the_limit() {
        // demand(in use, refused, active, roomy, limit)
        let spare = "an active key keeps a spare while the fleet has room";
        assert_eq!(demand(0, 0, true, true, 4), 1, "{spare}");
        assert_eq!(demand(2, 0, true, true, 4), 3, "{spare}");
        assert_eq!(
            demand(0, 0, false, true, 4),
            0,
            "an idle key gives all back"
        );
        assert_eq!(demand(1, 5, true, true, 4), 4, "refusals ask for more");
        assert_eq!(
            demand(0, u32::MAX, true, true, 1000),
            1 + MAX_ACQUIRE_PER_TICK
        );
        let no_room = "no spare while the set is full or another node waits";
        assert_eq!(demand(1, 0, true, false, 4), 1, "{no_room}");
        assert_eq!(demand(0, 0, true, false, 4), 0, "{no_room}");
    }

    #[test]
    fn a_node_keeps_at_most_its_share_only_while_another_waits() {
        let alone = Fairness {
            share: 1,
            others_wait: false,
        };
        let contended = Fairness {
            share: 1,
            others_wait: true,
        };
        assert_eq!(wanted(4, alone), 4, "nobody waits: the whole limit");
        assert_eq!(wanted(4, contended), 1, "others wait: the share");
        assert_eq!(wanted(0, contended), 0, "never more than the demand");
        let none = Fairness {
            share: 0,
            others_wait: true,
        };
        assert_eq!(
            wanted(3, none),
            0,
            "more busy nodes than slots: some get none"
        );
    }

    #[test]
    fn the_fallback_share_splits_the_limit_over_live_nodes() {
        assert_eq!(fallback_share(4, 3), 1);
        assert_eq!(fallback_share(12, 3), 4);
        assert_eq!(fallback_share(2, 3), 1, "never shut off");
        assert_eq!(fallback_share(5, 0), 5);
        assert_eq!(fallback_share(0, 1), 0, "a zero limit stays zero");
    }

    #[test]
    fn keys_are_bounded_in_length_and_number() {
        let leases = FleetLeases::new(2);
        assert!(leases
            .try_acquire(&"k".repeat(MAX_KEY_LEN + 1), 4)
            .is_none());
        assert_eq!(leases.untracked(), 1);
        assert_eq!(leases.tracked(), 0);
        assert!(
            leases.try_acquire("a", 4).is_none(),
            "registered, nothing held yet"
        );
        assert!(leases.try_acquire("b", 4).is_none());
        assert!(leases.try_acquire("c", 4).is_none());
        assert_eq!(leases.tracked(), 2);
        assert_eq!(
            leases.holdings("a"),
            Some((0, 0)),
            "a refusal gives nothing back"
        );
        assert_eq!(leases.untracked(), 2);
    }

    #[test]
    fn a_reply_is_checked_against_the_renewals_sent() {
        let reply = |items: Vec<i64>| Ok(Value::Array(items.into_iter().map(Value::Int).collect()));
        assert_eq!(
            parse_reply(reply(vec![3, 1, 2, 1, 1, 0]), 2),
            Some(Answer {
                count: 3,
                granted: 1,
                kept: vec![true, false],
                fairness: Fairness {
                    share: 2,
                    others_wait: true
                },
            })
        );
        assert_eq!(parse_reply(reply(vec![3, 1, 2, 0, 1]), 2), None);
        assert_eq!(parse_reply(reply(vec![-1, 0, 1, 0]), 0), None);
        assert_eq!(parse_reply(reply(vec![1, 0, -1, 0]), 0), None);
        assert_eq!(
            parse_reply(Err(super::super::link::CallError::NoScript), 0),
            None
        );
    }

    #[test]
    fn a_never_synced_key_gets_one_request_on_credit_and_no_more() {
        let leases = FleetLeases::with_first_use_credit(10);
        let first = leases
            .try_acquire("k", 4)
            .expect("first use runs on credit");
        assert_eq!(leases.holdings("k"), Some((0, 1)), "in use 1, held 0");
        assert!(leases.try_acquire("k", 4).is_none(), "one credit only");
        drop(first);
        assert_eq!(leases.holdings("k"), Some((0, 0)));
        assert!(
            leases.try_acquire("k", 4).is_none(),
            "a credit given back is not given again"
        );
        assert!(
            leases.try_acquire("zero", 0).is_none(),
            "a zero limit gets no credit"
        );

        // A key the link has synced gets no credit, even if it never took one.
        let synced = FleetLeases::with_first_use_credit(10);
        assert!(synced.try_acquire("s", 0).is_none(), "registers the key");
        synced
            .keys
            .pin()
            .get("s")
            .unwrap()
            .synced
            .store(true, Ordering::Release);
        assert!(synced.try_acquire("s", 4).is_none());

        let exact = FleetLeases::new(10);
        assert!(
            exact.try_acquire("k", 4).is_none(),
            "no credit without asking"
        );
    }

    #[test]
    fn each_kind_of_lease_key_has_its_own_prefix() {
        assert_eq!(
            lease_keys("k"),
            ["cf:lease:k", "cf:busy:k", "cf:wait:k"].map(String::from)
        );
    }
}
