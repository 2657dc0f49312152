//! Spend budgets per key and per team, in tokens and/or money, over a UTC calendar period.
//!
//! Admission is by reservation: before a request goes upstream, its estimated tokens and cost
//! are reserved against each budget that applies ([`BudgetTable::try_reserve`]); when the
//! response is done, the reservation is replaced by the actual spend ([`BudgetTable::settle`]).
//! The spend may then exceed the budget (a stream that crosses it finishes); the next request
//! is refused.
//!
//! Exactness: per dimension, the state keeps one counter of *committed* spend, settled plus
//! in-flight reservations. Admission is a compare-and-swap loop on it (`committed + request <=
//! limit`), so concurrent requests can never all pass on the same headroom; settlement is one
//! atomic add of `actual - reserved` (plus one add to the settled-spend counter, which only
//! reporting reads). With both a token and a money limit, the token counter
//! is reserved first and rolled back if money refuses: never an over-admission, but for that
//! instant a third request may see the rolled-back tokens and be refused too.
//!
//! Periods: a state moves forward to a later period, never back. A request stamped a hair
//! before midnight by another worker's clock counts in the new period; a reload that changes
//! a budget to a longer period (day to month) keeps counting from the current spend, which
//! then under-counts until the next start-up seeds it from the ledger.
//!
//! Fleet: with [`BudgetTable::set_fleet`] (`[cluster] redis`), an admitted request is also
//! reserved on the scope's fleet share (`cluster::budgets`), which refuses with the same
//! [`BudgetExceeded`] when the fleet's budget has no room for this node; the local exact check
//! stays first (it is the single-node budget). Unset, nothing here touches the fleet.
//!
//! Memory: there is one entry per scope (`"key:<id>"`, `"team:<name>"`) that has a budget, so
//! the table is bounded by the configuration and needs no sweep; [`BudgetTable::remove`]
//! drops the entry of a deleted key.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, OnceLock};

use papaya::{HashMap, ResizeMode};
use rustc_hash::FxBuildHasher;

use crate::clock::calendar;
use crate::cluster::{FleetBudgetDecision, FleetBudgets, FleetReservation};

const MS_PER_DAY: i64 = 86_400_000;

/// The span a budget covers before it starts again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Period {
    /// A UTC calendar day: resets at 00:00 UTC.
    Day,
    /// A UTC calendar month: resets on the 1st at 00:00 UTC.
    Month,
    /// Never resets. A key or team with no `budget_period` has a total budget.
    #[default]
    Total,
}

/// A `budget_period` that is not `day`, `month` or `total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPeriod(pub String);

impl fmt::Display for UnknownPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown budget period {:?} (expected day, month or total)",
            self.0
        )
    }
}

impl std::error::Error for UnknownPeriod {}

impl FromStr for Period {
    type Err = UnknownPeriod;

    /// `"day"`, `"month"` or `"total"`, exactly; anything else (the empty string too) is an
    /// error. An absent setting is [`Period::Total`]: see [`Period::from_setting`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" => Ok(Self::Day),
            "month" => Ok(Self::Month),
            "total" => Ok(Self::Total),
            other => Err(UnknownPeriod(other.to_owned())),
        }
    }
}

impl Period {
    /// The period of an optional `budget_period` setting: absent means [`Period::Total`].
    pub fn from_setting(setting: Option<&str>) -> Result<Self, UnknownPeriod> {
        setting.map_or(Ok(Self::Total), str::parse)
    }

    /// The setting's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
            Self::Total => "total",
        }
    }
}

thread_local! {
    /// The last day number seen on this thread and the start of its month: the calendar
    /// math then runs once per day per thread instead of twice per metered request.
    static MONTH_START: Cell<(i64, i64)> = const { Cell::new((i64::MIN, 0)) };
}

/// Start of the period containing `now_ms` (milliseconds since the Unix epoch, UTC), in the
/// same unit; 0 for [`Period::Total`].
pub fn period_start_ms(period: Period, now_ms: i64) -> i64 {
    let day = now_ms.div_euclid(MS_PER_DAY);
    match period {
        Period::Total => 0,
        Period::Day => calendar::day_start_ms(now_ms),
        Period::Month => MONTH_START.with(|cache| {
            let (cached_day, cached_start) = cache.get();
            if cached_day == day {
                return cached_start;
            }
            let start = calendar::month_start_ms(now_ms);
            cache.set((day, start));
            start
        }),
    }
}

/// One budget: limits in tokens and/or nano-USD (`None` = that dimension unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BudgetLimit {
    /// Most tokens (prompt + completion) per period.
    pub tokens: Option<u64>,
    /// Most spend per period, in nano-USD (1e-9 USD).
    pub nano_usd: Option<u64>,
    /// When the spend starts again from zero.
    pub period: Period,
}

impl BudgetLimit {
    /// Whether any dimension is limited; a caller skips budgets entirely when not.
    pub fn is_limited(&self) -> bool {
        self.tokens.is_some() || self.nano_usd.is_some()
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetDimension {
    /// The token budget.
    Tokens,
    /// The money budget (values in nano-USD).
    Cost,
}

/// A refusal: the budget's spend plus in-flight reservations leave no room for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetExceeded {
    /// The limit that refused.
    pub dimension: BudgetDimension,
    /// That limit (tokens, or nano-USD).
    pub limit: u64,
    /// Settled spend plus in-flight reservations when refused.
    pub committed: u64,
    /// What this request asked to reserve.
    pub requested: u64,
}

impl fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dimension {
            BudgetDimension::Tokens => write!(
                f,
                "token budget exceeded: {} of {} tokens used or reserved, request needs {}",
                self.committed, self.limit, self.requested
            ),
            BudgetDimension::Cost => write!(
                f,
                "spend budget exceeded: ${:.6} of ${:.6} used or reserved, request needs ${:.6}",
                nano_to_usd(self.committed),
                nano_to_usd(self.limit),
                nano_to_usd(self.requested)
            ),
        }
    }
}

impl std::error::Error for BudgetExceeded {}

/// The shares of a limit whose crossing is reported: 80 % (a warning) and 100 %.
pub const THRESHOLD_PERCENTS: [u8; 2] = [80, 100];

/// A settlement that took a budget's settled spend across one of [`THRESHOLD_PERCENTS`] of
/// a limit. Spend only grows within a period, so each threshold is crossed at most once
/// per period on a node; the webhook queue de-duplicates across restarts and nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetCrossing {
    /// `key:<id>` or `team:<name>`.
    pub scope: String,
    /// The budget's period.
    pub period: Period,
    /// Start of the period the spend was counted in (ms since the epoch; 0 for total).
    pub period_start_ms: i64,
    /// Which limit.
    pub dimension: BudgetDimension,
    /// 80 or 100.
    pub percent: u8,
    /// Settled spend after the settlement (tokens, or nano-USD).
    pub spent: u64,
    /// The limit (tokens, or nano-USD).
    pub limit: u64,
}

/// The thresholds crossed by adding `added` to `before` under `limit`.
fn crossed(limit: u64, before: u64, added: u64) -> impl Iterator<Item = u8> {
    let after = u128::from(before) + u128::from(added);
    THRESHOLD_PERCENTS.into_iter().filter(move |&percent| {
        // spend * 100 >= limit * percent, in integers.
        let mark = u128::from(limit) * u128::from(percent);
        added > 0 && u128::from(before) * 100 < mark && after * 100 >= mark
    })
}

/// One scope's spend in its current period.
#[derive(Debug, Default)]
struct BudgetState {
    /// The scope this state counts (`key:<id>`, `team:<name>`), to name it in a
    /// [`BudgetCrossing`].
    scope: String,
    /// Start (ms since epoch) of the period the counters below belong to.
    period_start_ms: AtomicI64,
    /// Settled tokens plus in-flight reserved tokens: what admission compares to the limit.
    committed_tokens: AtomicU64,
    /// Settled plus in-flight reserved nano-USD.
    committed_nano: AtomicU64,
    /// Settled tokens alone, for reporting (admission never reads it).
    settled_tokens: AtomicU64,
    /// Settled nano-USD alone, for reporting.
    settled_nano: AtomicU64,
    /// The period [`BudgetTable::seed`] gave (0 = not seeded), so a fleet set later can be
    /// seeded with the ledger's spend too.
    seeded_period: AtomicU8,
}

impl BudgetState {
    /// Moves the state into the period starting at `start` if that is later than its own,
    /// and returns the state's period start afterwards.
    ///
    /// The thread that wins the compare-and-swap on the period zeroes the counters. A
    /// reservation racing that instant (made by a thread that already saw the new period,
    /// before the zeroing) is wiped from the new period's count and its later release
    /// saturates at zero: the new period under-counts by at most the reservations taken in
    /// those few instructions, once per period. In-flight reservations of the old period are
    /// not carried over; their actual spend is added to the period they settle in (the same
    /// period the ledger will file it under).
    fn roll_to(&self, start: i64) -> i64 {
        let mut current = self.period_start_ms.load(Ordering::Acquire);
        while start > current {
            match self.period_start_ms.compare_exchange_weak(
                current,
                start,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.committed_tokens.store(0, Ordering::Release);
                    self.committed_nano.store(0, Ordering::Release);
                    self.settled_tokens.store(0, Ordering::Release);
                    self.settled_nano.store(0, Ordering::Release);
                    return start;
                }
                Err(actual) => current = actual,
            }
        }
        current
    }

    /// Settled spend of the current period.
    fn spent(&self) -> (u64, u64) {
        (
            self.settled_tokens.load(Ordering::Acquire),
            self.settled_nano.load(Ordering::Acquire),
        )
    }

    /// In-flight reservations of the current period (committed minus settled; a racy
    /// snapshot, for reporting).
    fn reserved(&self) -> (u64, u64) {
        let (tokens, nano) = self.spent();
        (
            self.committed_tokens
                .load(Ordering::Acquire)
                .saturating_sub(tokens),
            self.committed_nano
                .load(Ordering::Acquire)
                .saturating_sub(nano),
        )
    }

    /// Drops a reservation made in period `period_start_ms` and adds `actual` spend to the
    /// current period. Returns the settled spend just before.
    fn settle(&self, period_start_ms: i64, amounts: Amounts, actual: Amounts) -> Amounts {
        let same_period = self.period_start_ms.load(Ordering::Acquire) == period_start_ms;
        let reserved = if same_period {
            amounts
        } else {
            // The rollover wiped this reservation already; only the spend is added.
            Amounts::default()
        };
        add_signed(&self.committed_tokens, actual.tokens, reserved.tokens);
        add_signed(&self.committed_nano, actual.nano, reserved.nano);
        Amounts {
            tokens: add(&self.settled_tokens, actual.tokens),
            nano: add(&self.settled_nano, actual.nano),
        }
    }
}

/// `counter += add - sub`, in one atomic step, floored at 0 (see [`BudgetState::roll_to`]).
fn add_signed(counter: &AtomicU64, add: u64, sub: u64) {
    if add >= sub {
        if add > sub {
            counter.fetch_add(add - sub, Ordering::AcqRel);
        }
    } else {
        sub_saturating(counter, sub - add);
    }
}

/// `counter += amount`; returns the value before.
fn add(counter: &AtomicU64, amount: u64) -> u64 {
    if amount != 0 {
        counter.fetch_add(amount, Ordering::AcqRel)
    } else {
        counter.load(Ordering::Acquire)
    }
}

fn sub_saturating(counter: &AtomicU64, sub: u64) {
    if sub == 0 {
        return;
    }
    // Never fails: the closure always returns Some.
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        Some(v.saturating_sub(sub))
    });
}

/// Reserves `amount` on `counter` if it stays within `limit`; the compare-and-swap loop that
/// makes admission exact.
fn reserve_one(
    counter: &AtomicU64,
    limit: u64,
    amount: u64,
    dimension: BudgetDimension,
) -> Result<(), BudgetExceeded> {
    let mut committed = counter.load(Ordering::Acquire);
    loop {
        if committed.saturating_add(amount) > limit {
            return Err(BudgetExceeded {
                dimension,
                limit,
                committed,
                requested: amount,
            });
        }
        match counter.compare_exchange_weak(
            committed,
            committed + amount,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return Ok(()),
            Err(actual) => committed = actual,
        }
    }
}

/// Tokens and nano-USD together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Amounts {
    tokens: u64,
    nano: u64,
}

/// An admitted request's hold on one budget; settle it with [`BudgetTable::settle`].
///
/// Dropping it unsettled (the client vanished before the upstream answered) releases the
/// reservation with no spend, as `settle(r, now, 0, 0)` would; settling explicitly is still
/// preferred, since it also rolls the period over when due.
#[derive(Debug)]
#[must_use = "dropping a reservation releases it at once"]
pub struct Reservation {
    /// `None` when nothing was limited (nothing to settle).
    state: Option<Arc<BudgetState>>,
    /// The budget's period, to roll over at settlement.
    period: Period,
    /// Start of the period the reservation was counted in.
    period_start_ms: i64,
    /// Reserved amounts; 0 in a dimension without a limit.
    amounts: Amounts,
    /// Which dimensions this budget counts (the limited ones).
    counts_tokens: bool,
    counts_nano: bool,
    /// The limits, for reporting a threshold crossed at settlement.
    limit: BudgetLimit,
    /// The same reservation on the fleet's share, in cluster mode; dropped with this one.
    fleet: Option<FleetReservation>,
}

impl Reservation {
    /// Tokens reserved (0 when the budget has no token limit).
    pub fn tokens(&self) -> u64 {
        self.amounts.tokens
    }

    /// Nano-USD reserved (0 when the budget has no money limit).
    pub fn nano_usd(&self) -> u64 {
        self.amounts.nano
    }

    /// Whether this reservation is counted against a budget.
    pub fn is_tracked(&self) -> bool {
        self.state.is_some()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            let _ = state.settle(self.period_start_ms, self.amounts, Amounts::default());
        }
    }
}

/// Budget state of every scope that has a budget, shared by all workers; lock-free.
///
/// Hashed with FxHash rather than SipHash: scope names are key ids the gateway generated and
/// team names from the configuration, so no client can pick colliding names, and the lookup
/// is on every metered request.
pub struct BudgetTable {
    map: HashMap<String, Arc<BudgetState>, FxBuildHasher>,
    /// The fleet's budgets, once cluster mode is on; unset = this node's budgets only.
    fleet: OnceLock<Arc<FleetBudgets>>,
    /// Where threshold crossings go (the webhook thread), once set.
    thresholds: OnceLock<SyncSender<BudgetCrossing>>,
}

impl Default for BudgetTable {
    fn default() -> Self {
        Self::new()
    }
}

impl BudgetTable {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            // Blocking resizes, as in `limits::table`: an incremental resize left half-done
            // makes every lookup probe two tables (measured here: ~190 ns instead of 80-100 ns
            // per reserve+settle on a 1 000-scope table). Scopes are inserted rarely.
            map: HashMap::builder()
                .hasher(FxBuildHasher)
                .resize_mode(ResizeMode::Blocking)
                .build(),
            fleet: OnceLock::new(),
            thresholds: OnceLock::new(),
        }
    }

    /// Turns fleet budgets on: from now on admission also reserves on `fleet`. Scopes already
    /// seeded from the ledger seed the fleet's view too (with their spend so far). Called
    /// once, at start-up, before the workers serve; a second call is refused (the first
    /// fleet stays).
    pub fn set_fleet(&self, fleet: Arc<FleetBudgets>) -> Result<(), String> {
        self.fleet
            .set(fleet)
            .map_err(|_| "fleet budgets are already set".to_string())?;
        let fleet = self.fleet.get().expect("set above");
        for (scope, state) in self.map.pin().iter() {
            let period = match state.seeded_period.load(Ordering::Acquire) {
                1 => Period::Day,
                2 => Period::Month,
                3 => Period::Total,
                _ => continue,
            };
            let (tokens, nano) = state.spent();
            let start = state.period_start_ms.load(Ordering::Acquire);
            fleet.seed(scope, period, start, tokens, nano);
        }
        Ok(())
    }

    /// The fleet's budgets, when fleet mode is on.
    pub fn fleet(&self) -> Option<&Arc<FleetBudgets>> {
        self.fleet.get()
    }

    /// Admission: refuses when settled spend + in-flight reservations + this reservation
    /// would exceed a limit of `limit`. On success records the reservation and returns the
    /// handle to settle later. A limit with no dimension set admits without touching the
    /// table (callers normally skip the call instead).
    ///
    /// `scope` names the budget: `"key:<id>"` or `"team:<name>"`. `now_ms` is wall-clock
    /// milliseconds since the Unix epoch (UTC), for the calendar period.
    pub fn try_reserve(
        &self,
        scope: &str,
        limit: &BudgetLimit,
        now_ms: i64,
        tokens: u64,
        nano_usd: u64,
    ) -> Result<Reservation, BudgetExceeded> {
        if !limit.is_limited() {
            return Ok(Reservation {
                state: None,
                period: limit.period,
                period_start_ms: 0,
                amounts: Amounts::default(),
                counts_tokens: false,
                counts_nano: false,
                limit: *limit,
                fleet: None,
            });
        }
        let state = self.state_for(scope);
        let period_start_ms = state.roll_to(period_start_ms(limit.period, now_ms));
        // Only limited dimensions are counted: each counted one costs atomic operations on
        // every request, and an unlimited one has nothing to enforce.
        let amounts = Amounts {
            tokens: if limit.tokens.is_some() { tokens } else { 0 },
            nano: if limit.nano_usd.is_some() {
                nano_usd
            } else {
                0
            },
        };
        if let Some(max) = limit.tokens {
            reserve_one(
                &state.committed_tokens,
                max,
                amounts.tokens,
                BudgetDimension::Tokens,
            )?;
        }
        if let Some(max) = limit.nano_usd {
            if let Err(refused) = reserve_one(
                &state.committed_nano,
                max,
                amounts.nano,
                BudgetDimension::Cost,
            ) {
                sub_saturating(&state.committed_tokens, amounts.tokens);
                return Err(refused);
            }
        }
        let fleet = match self.fleet.get() {
            None => None,
            Some(fleet) => {
                match fleet.reserve(scope, limit, now_ms, amounts.tokens, amounts.nano) {
                    FleetBudgetDecision::Admitted(reservation) => Some(reservation),
                    FleetBudgetDecision::Refused(refused) => {
                        sub_saturating(&state.committed_tokens, amounts.tokens);
                        sub_saturating(&state.committed_nano, amounts.nano);
                        return Err(refused);
                    }
                }
            }
        };
        Ok(Reservation {
            state: Some(state),
            period: limit.period,
            period_start_ms,
            amounts,
            counts_tokens: limit.tokens.is_some(),
            counts_nano: limit.nano_usd.is_some(),
            limit: *limit,
            fleet,
        })
    }

    /// Settlement: drops the reservation and adds the actual spend, which may take the budget
    /// past its limit (a stream that crosses the budget finishes; the next request is
    /// refused). When `now_ms` is past the period the reservation was made in, the new
    /// period starts first and the actual spend is counted in it.
    pub fn settle(
        &self,
        mut r: Reservation,
        now_ms: i64,
        actual_tokens: u64,
        actual_nano_usd: u64,
    ) {
        if let Some(fleet) = r.fleet.take() {
            fleet.settle(actual_tokens, actual_nano_usd);
        }
        let Some(state) = r.state.take() else {
            return;
        };
        let current_start = state.roll_to(period_start_ms(r.period, now_ms));
        let actual = Amounts {
            tokens: if r.counts_tokens { actual_tokens } else { 0 },
            nano: if r.counts_nano { actual_nano_usd } else { 0 },
        };
        let before = state.settle(r.period_start_ms, r.amounts, actual);
        if let Some(sink) = self.thresholds.get() {
            let dimensions = [
                (
                    BudgetDimension::Tokens,
                    r.limit.tokens,
                    before.tokens,
                    actual.tokens,
                ),
                (
                    BudgetDimension::Cost,
                    r.limit.nano_usd,
                    before.nano,
                    actual.nano,
                ),
            ];
            for (dimension, limit, before, added) in dimensions {
                let Some(limit) = limit else { continue };
                for percent in crossed(limit, before, added) {
                    // Never blocks: a full channel loses the report (counted), not the
                    // request's time.
                    let sent = sink.try_send(BudgetCrossing {
                        scope: state.scope.clone(),
                        period: r.period,
                        period_start_ms: current_start,
                        dimension,
                        percent,
                        spent: before.saturating_add(added),
                        limit,
                    });
                    if sent.is_err() {
                        crate::metrics::global()
                            .webhooks()
                            .record_crossing_dropped();
                    }
                }
            }
        }
    }

    /// Reports every settlement that takes a budget's spend across 80 % or 100 % of a
    /// limit to `sink` (the webhook thread), from then on. Called once, at start-up; a
    /// second call is refused. Unset, settlement reports nothing.
    pub fn set_threshold_sink(&self, sink: SyncSender<BudgetCrossing>) -> Result<(), String> {
        self.thresholds
            .set(sink)
            .map_err(|_| "the budget threshold sink is already set".to_string())
    }

    /// Start-up: sets the settled spend of `scope` for the period containing `now_ms` to
    /// what the ledger recorded since that period's start.
    pub fn seed(&self, scope: &str, period: Period, now_ms: i64, tokens: u64, nano_usd: u64) {
        if let Some(fleet) = self.fleet.get() {
            fleet.seed(scope, period, now_ms, tokens, nano_usd);
        }
        let state = self.state_for(scope);
        state.seeded_period.store(
            match period {
                Period::Day => 1,
                Period::Month => 2,
                Period::Total => 3,
            },
            Ordering::Release,
        );
        state.roll_to(period_start_ms(period, now_ms));
        // Nothing is normally in flight at start-up; keep whatever is, to stay exact.
        let (in_flight_tokens, in_flight_nano) = state.reserved();
        state.settled_tokens.store(tokens, Ordering::Release);
        state.settled_nano.store(nano_usd, Ordering::Release);
        state
            .committed_tokens
            .store(tokens.saturating_add(in_flight_tokens), Ordering::Release);
        state
            .committed_nano
            .store(nano_usd.saturating_add(in_flight_nano), Ordering::Release);
    }

    /// Settled spend `(tokens, nano_usd)` of `scope` in the period containing `now_ms`
    /// (zero if that period has not been entered yet, or the scope is unknown). A dimension
    /// the budget does not limit is not counted and reads 0 (the ledger has the full usage).
    pub fn spent(&self, scope: &str, period: Period, now_ms: i64) -> (u64, u64) {
        let guard = self.map.guard();
        match self.map.get(scope, &guard) {
            Some(state)
                if state.period_start_ms.load(Ordering::Acquire)
                    >= period_start_ms(period, now_ms) =>
            {
                state.spent()
            }
            _ => (0, 0),
        }
    }

    /// In-flight reservations `(tokens, nano_usd)` of `scope` in its current period.
    pub fn reserved(&self, scope: &str) -> (u64, u64) {
        let guard = self.map.guard();
        self.map
            .get(scope, &guard)
            .map_or((0, 0), |state| state.reserved())
    }

    /// Forgets `scope` (its key or team was deleted). Outstanding reservations settle
    /// against the detached state harmlessly.
    pub fn remove(&self, scope: &str) {
        self.map.pin().remove(scope);
        if let Some(fleet) = self.fleet.get() {
            fleet.remove(scope);
        }
    }

    /// Scopes held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no scope is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn state_for(&self, scope: &str) -> Arc<BudgetState> {
        let guard = self.map.guard();
        if let Some(state) = self.map.get(scope, &guard) {
            return Arc::clone(state);
        }
        Arc::clone(self.map.get_or_insert_with(
            scope.to_owned(),
            || {
                Arc::new(BudgetState {
                    scope: scope.to_owned(),
                    ..BudgetState::default()
                })
            },
            &guard,
        ))
    }
}

/// Model prices in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Prices {
    /// Uncached prompt tokens.
    pub input_per_mtok: f64,
    /// Completion tokens.
    pub output_per_mtok: f64,
    /// Prompt tokens read from a prompt cache; `None` = billed as input.
    pub cached_input_per_mtok: Option<f64>,
}

/// Cost in nano-USD, rounded to nearest: `cached_tokens` (the part of `prompt_tokens` read
/// from a prompt cache, clamped to it) at the cached price, the rest of the prompt at the
/// input price, the completion at the output price. Negative or NaN prices count as 0.
pub fn cost_nano_usd(
    prices: &Prices,
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
) -> u64 {
    let cached = cached_tokens.min(prompt_tokens);
    let uncached = prompt_tokens - cached;
    let cached_price = prices
        .cached_input_per_mtok
        .unwrap_or(prices.input_per_mtok);
    // USD per million tokens = 1e9 nano-USD per 1e6 tokens = 1_000 nano-USD per token.
    let nano = uncached as f64 * nano_per_token(prices.input_per_mtok)
        + cached as f64 * nano_per_token(cached_price)
        + completion_tokens as f64 * nano_per_token(prices.output_per_mtok);
    // `as` saturates (and maps NaN to 0).
    nano.round() as u64
}

fn nano_per_token(usd_per_mtok: f64) -> f64 {
    if usd_per_mtok > 0.0 {
        usd_per_mtok * 1_000.0
    } else {
        0.0
    }
}

/// USD to nano-USD, rounded to nearest; negative or NaN gives 0.
pub fn usd_to_nano(usd: f64) -> u64 {
    // `as` saturates: negative to 0, NaN to 0, huge to u64::MAX.
    (usd * 1e9).round() as u64
}

/// Nano-USD to USD, for display and the ledger's `cost_usd`.
pub fn nano_to_usd(nano: u64) -> f64 {
    nano as f64 / 1e9
}

/// A budget from its settings (a key's or a `[[team]]`'s); `None` when nothing is capped.
/// An unknown period counts as `total`: config validation and the key store refuse them.
pub fn budget_limit(
    usd: Option<f64>,
    tokens: Option<u64>,
    period: Option<&str>,
) -> Option<BudgetLimit> {
    let limit = BudgetLimit {
        tokens,
        nano_usd: usd.map(usd_to_nano),
        period: Period::from_setting(period).unwrap_or(Period::Total),
    };
    limit.is_limited().then_some(limit)
}

/// Budget scope names in the [`BudgetTable`].
pub fn key_scope(id: &str) -> String {
    format!("key:{id}")
}

/// See [`key_scope`].
pub fn team_scope(team: &str) -> String {
    format!("team:{team}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-15T12:34:56.789Z
    const MID_MARCH_2026: i64 = 1_773_578_096_789;
    /// 2026-03-01T00:00:00Z
    const MARCH_1_2026: i64 = 1_772_323_200_000;

    fn tokens_limit(tokens: u64, period: Period) -> BudgetLimit {
        BudgetLimit {
            tokens: Some(tokens),
            nano_usd: None,
            period,
        }
    }

    #[test]
    fn period_parses_the_three_settings_and_defaults_to_total() {
        assert_eq!("day".parse(), Ok(Period::Day));
        assert_eq!("month".parse(), Ok(Period::Month));
        assert_eq!("total".parse(), Ok(Period::Total));
        assert_eq!(Period::from_setting(None), Ok(Period::Total));
        assert_eq!(Period::from_setting(Some("month")), Ok(Period::Month));
        assert!("".parse::<Period>().is_err());
        assert!("weekly".parse::<Period>().is_err());
    }

    #[test]
    fn day_starts_at_midnight_utc() {
        assert_eq!(
            period_start_ms(Period::Day, MID_MARCH_2026),
            MARCH_1_2026 + 14 * MS_PER_DAY
        );
        assert_eq!(period_start_ms(Period::Day, MARCH_1_2026), MARCH_1_2026);
        assert_eq!(
            period_start_ms(Period::Day, MARCH_1_2026 - 1),
            MARCH_1_2026 - MS_PER_DAY
        );
    }

    #[test]
    fn month_starts_on_the_first_at_midnight_utc() {
        assert_eq!(period_start_ms(Period::Month, MID_MARCH_2026), MARCH_1_2026);
        assert_eq!(period_start_ms(Period::Month, MARCH_1_2026), MARCH_1_2026);
        // The last millisecond of February 2026 (28 days).
        assert_eq!(
            period_start_ms(Period::Month, MARCH_1_2026 - 1),
            MARCH_1_2026 - 28 * MS_PER_DAY
        );
    }

    #[test]
    fn month_start_handles_leap_february_and_year_end() {
        // 2024-03-01T00:00:00Z; 2024 is a leap year, so February has 29 days.
        let march_1_2024 = 1_709_251_200_000;
        assert_eq!(
            period_start_ms(Period::Month, march_1_2024 - 1),
            march_1_2024 - 29 * MS_PER_DAY
        );
        // 2025-12-31T23:59:59.999Z is in December, which started 2025-12-01.
        let jan_1_2026 = 1_767_225_600_000;
        assert_eq!(
            period_start_ms(Period::Month, jan_1_2026 - 1),
            jan_1_2026 - 31 * MS_PER_DAY
        );
        assert_eq!(period_start_ms(Period::Month, jan_1_2026), jan_1_2026);
        assert_eq!(period_start_ms(Period::Month, 0), 0);
    }

    #[test]
    fn month_start_is_right_for_every_day_of_two_years() {
        // Also exercises the per-thread cache across day changes, in and out of order.
        let jan_1_2024 = 1_704_067_200_000;
        for day in (0..731).chain((0..731).rev()) {
            let now = jan_1_2024 + day * MS_PER_DAY + 12 * 3_600_000;
            let expected = calendar::month_start_ms(now);
            assert_eq!(period_start_ms(Period::Month, now), expected);
            let start = jiff::Timestamp::from_millisecond(expected).unwrap();
            let start = jiff::tz::Offset::UTC.to_datetime(start);
            assert_eq!((start.day(), start.hour(), start.minute()), (1, 0, 0));
            assert!(now - expected < 31 * MS_PER_DAY);
        }
    }

    #[test]
    fn total_period_starts_at_zero() {
        assert_eq!(period_start_ms(Period::Total, MID_MARCH_2026), 0);
    }

    #[test]
    fn reserve_admits_within_the_limit_and_refuses_beyond_it() {
        let table = BudgetTable::new();
        let limit = tokens_limit(1_000, Period::Total);
        let first = table.try_reserve("key:a", &limit, 0, 600, 0).unwrap();
        let refused = table.try_reserve("key:a", &limit, 0, 401, 0).unwrap_err();
        assert_eq!(
            refused,
            BudgetExceeded {
                dimension: BudgetDimension::Tokens,
                limit: 1_000,
                committed: 600,
                requested: 401
            }
        );
        let second = table.try_reserve("key:a", &limit, 0, 400, 0).unwrap();
        assert_eq!(table.reserved("key:a"), (1_000, 0));
        table.settle(first, 0, 0, 0);
        table.settle(second, 0, 0, 0);
    }

    #[test]
    fn settle_replaces_the_reservation_with_actual_spend() {
        let table = BudgetTable::new();
        let limit = tokens_limit(1_000, Period::Total);
        let r = table.try_reserve("key:a", &limit, 0, 800, 0).unwrap();
        table.settle(r, 0, 300, 0);
        assert_eq!(table.spent("key:a", Period::Total, 0), (300, 0));
        assert_eq!(table.reserved("key:a"), (0, 0));
        assert!(table.try_reserve("key:a", &limit, 0, 700, 0).is_ok());
    }

    #[test]
    fn settle_may_exceed_the_limit_and_the_next_request_is_refused() {
        let table = BudgetTable::new();
        let limit = tokens_limit(1_000, Period::Total);
        let r = table.try_reserve("key:a", &limit, 0, 500, 0).unwrap();
        table.settle(r, 0, 1_200, 0);
        assert_eq!(table.spent("key:a", Period::Total, 0), (1_200, 0));
        assert!(table.try_reserve("key:a", &limit, 0, 1, 0).is_err());
    }

    #[test]
    fn dropped_reservation_is_released() {
        let table = BudgetTable::new();
        let limit = tokens_limit(100, Period::Total);
        let r = table.try_reserve("key:a", &limit, 0, 100, 0).unwrap();
        drop(r);
        assert_eq!(table.reserved("key:a"), (0, 0));
        assert_eq!(table.spent("key:a", Period::Total, 0), (0, 0));
        assert!(table.try_reserve("key:a", &limit, 0, 100, 0).is_ok());
    }

    #[test]
    fn cost_limit_refuses_and_rolls_back_the_token_reservation() {
        let table = BudgetTable::new();
        let limit = BudgetLimit {
            tokens: Some(1_000),
            nano_usd: Some(usd_to_nano(0.01)),
            period: Period::Total,
        };
        let refused = table
            .try_reserve("team:r", &limit, 0, 10, usd_to_nano(0.02))
            .unwrap_err();
        assert_eq!(refused.dimension, BudgetDimension::Cost);
        assert_eq!(table.reserved("team:r"), (0, 0));
        assert!(table.try_reserve("team:r", &limit, 0, 1_000, 0).is_ok());
    }

    #[test]
    fn unlimited_budget_admits_without_state() {
        let table = BudgetTable::new();
        let r = table
            .try_reserve("key:a", &BudgetLimit::default(), 0, u64::MAX, u64::MAX)
            .unwrap();
        assert!(!r.is_tracked());
        assert!(table.is_empty());
    }

    #[test]
    fn unlimited_dimension_is_not_counted() {
        let table = BudgetTable::new();
        let limit = tokens_limit(1_000, Period::Total);
        let r = table.try_reserve("key:a", &limit, 0, 10, 5_000).unwrap();
        assert_eq!((r.tokens(), r.nano_usd()), (10, 0));
        table.settle(r, 0, 10, 4_000);
        assert_eq!(table.spent("key:a", Period::Total, 0), (10, 0));
    }

    #[test]
    fn money_only_budget_refuses_on_cost() {
        let table = BudgetTable::new();
        let limit = BudgetLimit {
            tokens: None,
            nano_usd: Some(1_000),
            period: Period::Total,
        };
        let r = table
            .try_reserve("key:a", &limit, 0, 1_000_000, 600)
            .unwrap();
        table.settle(r, 0, 1_000_000, 700);
        let refused = table.try_reserve("key:a", &limit, 0, 1, 301).unwrap_err();
        assert_eq!(refused.dimension, BudgetDimension::Cost);
        assert_eq!(refused.committed, 700);
        assert!(table.try_reserve("key:a", &limit, 0, 1, 300).is_ok());
    }

    #[test]
    fn daily_budget_resets_at_midnight_utc() {
        let table = BudgetTable::new();
        let limit = tokens_limit(100, Period::Day);
        let midnight = MARCH_1_2026 + MS_PER_DAY;
        let r = table
            .try_reserve("key:a", &limit, midnight - 1, 100, 0)
            .unwrap();
        table.settle(r, midnight - 1, 100, 0);
        assert!(table
            .try_reserve("key:a", &limit, midnight - 1, 1, 0)
            .is_err());
        assert_eq!(table.spent("key:a", Period::Day, midnight), (0, 0));
        let r = table
            .try_reserve("key:a", &limit, midnight, 100, 0)
            .unwrap();
        table.settle(r, midnight, 40, 0);
        assert_eq!(table.spent("key:a", Period::Day, midnight), (40, 0));
    }

    #[test]
    fn monthly_budget_resets_on_the_first() {
        let table = BudgetTable::new();
        let limit = tokens_limit(100, Period::Month);
        let r = table
            .try_reserve("key:a", &limit, MARCH_1_2026 - 1, 100, 0)
            .unwrap();
        table.settle(r, MARCH_1_2026 - 1, 100, 0);
        assert!(table
            .try_reserve("key:a", &limit, MARCH_1_2026 - 1, 1, 0)
            .is_err());
        let r = table
            .try_reserve("key:a", &limit, MID_MARCH_2026, 100, 0)
            .unwrap();
        table.settle(r, MID_MARCH_2026, 100, 0);
        assert_eq!(
            table.spent("key:a", Period::Month, MID_MARCH_2026),
            (100, 0)
        );
    }

    #[test]
    fn request_stamped_in_an_earlier_period_counts_in_the_current_one() {
        // Wall clocks of two workers may differ by a hair around midnight: the state never
        // moves back to an older period.
        let table = BudgetTable::new();
        let limit = tokens_limit(100, Period::Day);
        let midnight = MARCH_1_2026;
        let r = table.try_reserve("key:a", &limit, midnight, 60, 0).unwrap();
        table.settle(r, midnight, 60, 0);
        assert!(table
            .try_reserve("key:a", &limit, midnight - 1, 41, 0)
            .is_err());
    }

    #[test]
    fn reservation_spanning_a_rollover_charges_its_spend_to_the_new_period() {
        let table = BudgetTable::new();
        let limit = tokens_limit(1_000, Period::Day);
        let midnight = MARCH_1_2026;
        let r = table
            .try_reserve("key:a", &limit, midnight - 10, 500, 0)
            .unwrap();
        table.settle(r, midnight + 10, 300, 0);
        assert_eq!(table.spent("key:a", Period::Day, midnight + 10), (300, 0));
        assert_eq!(table.reserved("key:a"), (0, 0));
    }

    #[test]
    fn seed_sets_settled_spend_for_the_current_period() {
        let table = BudgetTable::new();
        let limit = tokens_limit(1_000, Period::Month);
        table.seed("key:a", Period::Month, MID_MARCH_2026, 900, 7);
        assert_eq!(
            table.spent("key:a", Period::Month, MID_MARCH_2026),
            (900, 7)
        );
        assert!(table
            .try_reserve("key:a", &limit, MID_MARCH_2026, 101, 0)
            .is_err());
        assert!(table
            .try_reserve("key:a", &limit, MID_MARCH_2026, 100, 0)
            .is_ok());
    }

    #[test]
    fn with_a_fleet_a_fleet_refusal_refuses_and_rolls_the_local_reservation_back() {
        let table = BudgetTable::new();
        table.seed("key:a", Period::Total, 0, 100, 0);
        let fleet = FleetBudgets::new(10);
        assert!(table.set_fleet(Arc::clone(&fleet)).is_ok());
        assert!(table.set_fleet(FleetBudgets::new(10)).is_err());
        assert_eq!(
            fleet.snapshot("key:a").unwrap().tokens.fleet_spent,
            100,
            "the fleet's first view is the ledger's spend"
        );
        let limit = tokens_limit(1_000, Period::Total);
        // Never synced: the first request is admitted on credit; the second is refused by
        // the fleet although the local budget has room.
        let first = table.try_reserve("key:a", &limit, 0, 200, 0).unwrap();
        let refused = table.try_reserve("key:a", &limit, 0, 200, 0).unwrap_err();
        assert_eq!(refused.dimension, BudgetDimension::Tokens);
        assert_eq!(
            table.reserved("key:a"),
            (200, 0),
            "the refusal holds nothing"
        );
        assert_eq!(fleet.snapshot("key:a").unwrap().tokens.in_flight, 200);
        table.settle(first, 0, 150, 0);
        let share = fleet.snapshot("key:a").unwrap().tokens;
        assert_eq!(
            (share.in_flight, share.settled, share.allowance),
            (0, 150, -150)
        );
        assert_eq!(table.spent("key:a", Period::Total, 0), (250, 0));
        // A dropped reservation is released on both.
        drop(table.try_reserve("key:b", &limit, 0, 10, 0).unwrap());
        assert_eq!(fleet.snapshot("key:b").unwrap().tokens.in_flight, 0);
        assert_eq!(table.reserved("key:b"), (0, 0));
        table.remove("key:b");
        assert!(fleet.snapshot("key:b").is_none());
    }

    #[test]
    fn remove_forgets_a_scope() {
        let table = BudgetTable::new();
        table.seed("key:a", Period::Total, 0, 5, 0);
        table.remove("key:a");
        assert!(table.is_empty());
        assert_eq!(table.spent("key:a", Period::Total, 0), (0, 0));
    }

    #[test]
    fn two_threads_never_admit_past_the_limit() {
        let table = Arc::new(BudgetTable::new());
        let limit = tokens_limit(10_000, Period::Total);
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let table = Arc::clone(&table);
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for _ in 0..10_000 {
                        if let Ok(r) = table.try_reserve("team:hot", &limit, 0, 7, 0) {
                            held.push(r);
                        }
                    }
                    held
                })
            })
            .collect();
        let held: Vec<Reservation> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(held.len(), 10_000 / 7);
        assert_eq!(table.reserved("team:hot"), (7 * (10_000 / 7), 0));
        for r in held {
            table.settle(r, 0, 1, 0);
        }
        assert_eq!(table.spent("team:hot", Period::Total, 0), (10_000 / 7, 0));
    }

    #[test]
    fn cost_prices_prompt_completion_and_cached_tokens() {
        let prices = Prices {
            input_per_mtok: 2.5,
            output_per_mtok: 10.0,
            cached_input_per_mtok: Some(1.25),
        };
        // 1000 uncached * 2500 + 1000 cached * 1250 + 500 * 10000 nano-USD.
        assert_eq!(cost_nano_usd(&prices, 2_000, 500, 1_000), 8_750_000);
    }

    #[test]
    fn cached_tokens_without_a_cached_price_pay_the_input_price() {
        let prices = Prices {
            input_per_mtok: 3.0,
            output_per_mtok: 15.0,
            cached_input_per_mtok: None,
        };
        assert_eq!(
            cost_nano_usd(&prices, 1_000, 0, 400),
            cost_nano_usd(&prices, 1_000, 0, 0)
        );
        // Cached tokens beyond the prompt are clamped to it.
        assert_eq!(cost_nano_usd(&prices, 10, 0, 50), 30_000);
    }

    #[test]
    fn cost_rounds_to_the_nearest_nano_usd() {
        let prices = Prices {
            input_per_mtok: 0.0015,
            output_per_mtok: 0.0,
            cached_input_per_mtok: None,
        };
        // 1.5 nano-USD per token.
        assert_eq!(cost_nano_usd(&prices, 1, 0, 0), 2);
        assert_eq!(cost_nano_usd(&prices, 3, 0, 0), 5);
    }

    #[test]
    fn negative_prices_cost_nothing() {
        let prices = Prices {
            input_per_mtok: -1.0,
            output_per_mtok: f64::NAN,
            cached_input_per_mtok: None,
        };
        assert_eq!(cost_nano_usd(&prices, 100, 100, 0), 0);
    }

    #[test]
    fn usd_converts_to_nano_usd() {
        assert_eq!(usd_to_nano(1.0), 1_000_000_000);
        assert_eq!(usd_to_nano(0.000_000_001_4), 1);
        assert_eq!(usd_to_nano(-5.0), 0);
        assert_eq!(usd_to_nano(f64::NAN), 0);
        assert_eq!(nano_to_usd(2_500_000_000), 2.5);
    }

    #[test]
    fn settlement_reports_80_and_100_percent_once_each() {
        let table = BudgetTable::new();
        let (sink, crossings) = std::sync::mpsc::sync_channel(16);
        table.set_threshold_sink(sink).unwrap();
        let limit = BudgetLimit {
            tokens: Some(100),
            nano_usd: None,
            period: Period::Day,
        };
        let now = 1_700_000_000_000;
        let settle = |tokens| {
            let r = table.try_reserve("key:k", &limit, now, 1, 0).unwrap();
            table.settle(r, now, tokens, 0);
        };
        settle(79);
        assert!(crossings.try_recv().is_err());
        settle(1);
        let first = crossings.try_recv().unwrap();
        assert_eq!(
            (first.scope.as_str(), first.percent, first.spent),
            ("key:k", 80, 80)
        );
        assert_eq!(first.period_start_ms, period_start_ms(Period::Day, now));
        settle(5);
        assert!(crossings.try_recv().is_err());
        settle(30);
        let full = crossings.try_recv().unwrap();
        assert_eq!(
            (full.percent, full.limit, full.dimension),
            (100, 100, BudgetDimension::Tokens)
        );
        assert!(crossings.try_recv().is_err());
    }

    #[test]
    fn a_crossing_the_full_channel_cannot_take_is_counted_as_dropped() {
        let table = BudgetTable::new();
        // No room at all: every report is refused without blocking the settlement.
        let (sink, _crossings) = std::sync::mpsc::sync_channel(0);
        table.set_threshold_sink(sink).unwrap();
        let limit = BudgetLimit {
            tokens: Some(100),
            nano_usd: None,
            period: Period::Day,
        };
        let now = 1_700_000_000_000;
        let dropped = || {
            crate::metrics::global()
                .webhooks()
                .count("budget.threshold", "dropped")
        };
        let before = dropped();
        let r = table.try_reserve("key:full", &limit, now, 1, 0).unwrap();
        table.settle(r, now, 100, 0);
        // Both thresholds crossed at once, both lost (other tests may add their own).
        assert!(dropped() >= before + 2, "{} -> {}", before, dropped());
    }

    #[test]
    fn one_settlement_may_cross_both_thresholds() {
        assert_eq!(crossed(1000, 0, 1000).collect::<Vec<_>>(), [80, 100]);
        assert_eq!(crossed(1000, 799, 1).collect::<Vec<_>>(), [80]);
        assert_eq!(crossed(1000, 800, 0).count(), 0);
        assert_eq!(
            crossed(u64::MAX, u64::MAX - 1, 1).collect::<Vec<_>>(),
            [100]
        );
    }
}
