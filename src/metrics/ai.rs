//! The AI families of `/metrics`: requests, tokens and cost by model, provider and team, time
//! to first token, provider attempts by outcome, circuit state, limit refusals by kind, and
//! (with `[metrics] per_key = true`) the same per virtual key.
//!
//! # Why the counters are laid out this way
//!
//! Every AI request bumps a dozen counters. Shared atomics would bounce one cache line between
//! the cores on every request, so each worker has its own [`Shard`] of counters and a scrape
//! sums the shards. A counter is a *cell*: an index into a shard. Label sets are interned into
//! contiguous *blocks* of cells at config load (the only place the interner's lock is taken),
//! and a snapshot's [`AiSeries`] maps names to those blocks, so an increment on the request
//! path is a hash lookup of a config name and one uncontended atomic add in the worker's own
//! memory: no lock, no shared cache line.
//!
//! A block, once interned, keeps its cells for the life of the process, so counters survive
//! reloads (a model removed and added back carries on counting where it stopped).
//!
//! # Cardinality
//!
//! Every label value comes from the config (models, providers, configured teams; a caller's
//! team that is not a `[[team]]` is `""`), from a fixed list (status classes, attempt
//! outcomes, limit kinds) or, for the per-key families, from at most `[metrics] max_keys`
//! key ids, every later key folded into `key="other"`. The cells of all blocks together are
//! capped at [`MAX_CELLS`]; a label set past the cap is not counted (and logged once).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use super::{escape_label_value, family_header, BUCKETS};
use crate::accesslog::AttemptLog;
use crate::ai::breaker::Breaker;
use crate::ai::{Catalog, Usage};
use crate::error::GatewayError;

/// Cells per lazily allocated segment of a shard (4 KiB).
const SEGMENT_CELLS: usize = 512;

/// Segments a shard may have.
const MAX_SEGMENTS: usize = 2048;

/// Most cells all blocks together may take (1 Mi: 8 MiB per worker if every one is used).
pub const MAX_CELLS: usize = SEGMENT_CELLS * MAX_SEGMENTS;

/// Longest key id given its own per-key series; a longer one (only a Lua hook can name one)
/// is counted as `key="other"`.
pub const MAX_KEY_ID_BYTES: usize = 128;

/// The `status` label of `credentialflow_ai_requests_total`: the class of the status sent to
/// the client; `none` when the client got no status at all (it left first).
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

/// The attempt outcomes other than a provider's HTTP status, named as the access log's
/// `attempts` name them; any other outcome is `other`.
const NAMED_OUTCOMES: [&str; 10] = [
    "circuit open",
    "upstream timed out",
    "upstream error: connect failed",
    "upstream error: TLS handshake failed",
    "upstream error: invalid or missing response",
    "upstream error: write failed",
    "upstream error: response body cut short",
    "upstream error: response body too large",
    "upstream error: provider has no address",
    "other",
];

/// Provider statuses with their own `outcome` (RFC 9110 §15: 100 to 599).
const OUTCOME_STATUSES: usize = 500;

/// Why a request was refused by a limit: the `kind` label of
/// `credentialflow_limit_rejections_total`, one per scope that can refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// A route's per-client-address `ip_rate_limit`.
    ClientAddress,
    /// A route's `rate_limit`.
    RouteRate,
    /// A key's `rps` or `rpm`.
    KeyRate,
    /// A team's `rpm`.
    TeamRate,
    /// A key's `max_concurrency`.
    Concurrency,
    /// A key's `tpm`.
    KeyTokens,
    /// A team's `tpm`.
    TeamTokens,
    /// A key's budget.
    KeyBudget,
    /// A team's budget.
    TeamBudget,
}

impl LimitKind {
    /// Every kind, in rendering order.
    pub const ALL: [LimitKind; 9] = [
        LimitKind::ClientAddress,
        LimitKind::RouteRate,
        LimitKind::KeyRate,
        LimitKind::TeamRate,
        LimitKind::Concurrency,
        LimitKind::KeyTokens,
        LimitKind::TeamTokens,
        LimitKind::KeyBudget,
        LimitKind::TeamBudget,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            LimitKind::ClientAddress => "client_address",
            LimitKind::RouteRate => "route_rate",
            LimitKind::KeyRate => "key_rate",
            LimitKind::TeamRate => "team_rate",
            LimitKind::Concurrency => "concurrency",
            LimitKind::KeyTokens => "key_tokens",
            LimitKind::TeamTokens => "team_tokens",
            LimitKind::KeyBudget => "key_budget",
            LimitKind::TeamBudget => "team_budget",
        }
    }

    /// The kind of limit that refused with `error`, if a limit did (the scopes are the ones
    /// the limits phase names in its 429 and 402 answers).
    pub fn of(error: &GatewayError) -> Option<LimitKind> {
        match error {
            GatewayError::RateLimited { scope, .. } => match *scope {
                "client address" => Some(LimitKind::ClientAddress),
                "route" => Some(LimitKind::RouteRate),
                "key" => Some(LimitKind::KeyRate),
                "team" => Some(LimitKind::TeamRate),
                "key concurrency" => Some(LimitKind::Concurrency),
                "key token" => Some(LimitKind::KeyTokens),
                "team token" => Some(LimitKind::TeamTokens),
                _ => None,
            },
            GatewayError::InsufficientQuota("key") => Some(LimitKind::KeyBudget),
            GatewayError::InsufficientQuota("team") => Some(LimitKind::TeamBudget),
            _ => None,
        }
    }

    fn slot(self) -> usize {
        LimitKind::ALL
            .iter()
            .position(|&k| k == self)
            .expect("every kind is listed")
    }
}

/// 512 counters of one worker, on cache lines of their own.
#[repr(align(64))]
struct Segment([AtomicU64; SEGMENT_CELLS]);

/// One worker's counters: segments allocated on first write, so the cells of label sets that
/// are never used cost nothing.
struct Shard {
    segments: Box<[OnceLock<Box<Segment>>]>,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            segments: (0..MAX_SEGMENTS).map(|_| OnceLock::new()).collect(),
        }
    }

    fn add(&self, cell: usize, n: u64) {
        let Some(segment) = self.segments.get(cell / SEGMENT_CELLS) else {
            return;
        };
        let segment =
            segment.get_or_init(|| Box::new(Segment(std::array::from_fn(|_| AtomicU64::new(0)))));
        // Only this worker writes its shard, so the add never contends; it is still an atomic
        // add because a worker index past the shard count shares a shard.
        segment.0[cell % SEGMENT_CELLS].fetch_add(n, Relaxed);
    }

    fn get(&self, cell: usize) -> u64 {
        self.segments
            .get(cell / SEGMENT_CELLS)
            .and_then(OnceLock::get)
            .map_or(0, |s| s.0[cell % SEGMENT_CELLS].load(Relaxed))
    }
}

/// What a block of cells counts, with its label values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum BlockKey {
    /// Refusals by [`LimitKind`].
    Limits,
    /// Requests by status class, tokens by kind and cost of one model, provider and team.
    Series {
        model: String,
        provider: String,
        team: String,
    },
    /// The time-to-first-token histogram of one model.
    FirstToken { model: String },
    /// One provider's attempts by outcome.
    Attempts { provider: String },
    /// Requests, tokens and cost of one key (`None`: every key past the cap).
    Key { id: Option<String> },
}

/// Cell offsets in a `Series` block.
const SERIES_PROMPT: usize = STATUS_CLASSES.len();
const SERIES_COMPLETION: usize = SERIES_PROMPT + 1;
const SERIES_CACHED: usize = SERIES_PROMPT + 2;
const SERIES_COST: usize = SERIES_PROMPT + 3;

/// Cell offsets in a `Key` block.
const KEY_REQUESTS: usize = 0;
const KEY_PROMPT: usize = 1;
const KEY_COMPLETION: usize = 2;
const KEY_CACHED: usize = 3;
const KEY_COST: usize = 4;

/// Cell offset of the sum (microseconds) in a `FirstToken` block, after its buckets.
const FIRST_TOKEN_SUM: usize = BUCKETS.len() + 1;

impl BlockKey {
    fn cells(&self) -> usize {
        match self {
            BlockKey::Limits => LimitKind::ALL.len(),
            BlockKey::Series { .. } => SERIES_COST + 1,
            BlockKey::FirstToken { .. } => FIRST_TOKEN_SUM + 1,
            BlockKey::Attempts { .. } => OUTCOME_STATUSES + NAMED_OUTCOMES.len(),
            BlockKey::Key { .. } => KEY_COST + 1,
        }
    }
}

/// Label sets to blocks of cells. Taken at config load and at scrape, never per request
/// (except the first request of each of at most `max_keys` keys).
#[derive(Default)]
struct Interner {
    /// Every block in the order it was interned, with its first cell.
    blocks: Vec<(BlockKey, usize)>,
    index: HashMap<BlockKey, usize>,
    next: usize,
    /// Whether a refused block was logged already.
    warned: bool,
}

impl Interner {
    /// The first cell of `key`'s block, interned now if new; `None` past [`MAX_CELLS`].
    fn intern(&mut self, key: BlockKey) -> Option<usize> {
        if let Some(&base) = self.index.get(&key) {
            return Some(base);
        }
        let cells = key.cells();
        if self.next + cells > MAX_CELLS {
            if !self.warned {
                log::warn!("metrics: more label sets than {MAX_CELLS} counters hold; new ones are not counted");
                self.warned = true;
            }
            return None;
        }
        let base = self.next;
        self.next += cells;
        self.index.insert(key.clone(), base);
        self.blocks.push((key, base));
        Some(base)
    }
}

/// One model's blocks in a snapshot.
#[derive(Debug)]
struct ModelSeries {
    /// The `Series` block per team index (0 = no configured team).
    by_team: Box<[Option<usize>]>,
    first_token: Option<usize>,
}

/// The per-key setting of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerKey {
    /// Most keys with series of their own.
    pub max_keys: usize,
}

/// One config's label sets resolved to blocks: built at config load by
/// [`AiMetrics::series`], read per request. Lookups are by name, so a request still in
/// flight across a reload counts against the new config's blocks.
#[derive(Debug, Default)]
pub struct AiSeries {
    /// Configured team names to their index (from 1).
    teams: FxHashMap<String, usize>,
    models: FxHashMap<String, ModelSeries>,
    /// `Attempts` block per provider name.
    providers: FxHashMap<String, usize>,
    /// Every provider's breaker, for `credentialflow_circuit_open`.
    breakers: Vec<(String, Arc<Breaker>)>,
    per_key: Option<PerKey>,
}

/// What one settled AI request used, as [`AiMetrics::settled`] counts it.
pub struct Settled<'a> {
    /// The client-facing model that served it.
    pub model: &'a str,
    /// The caller's team (counted only when configured).
    pub team: &'a str,
    /// The caller's key id, if any.
    pub key: Option<&'a str>,
    /// The status sent to the client (0: none).
    pub status: u16,
    /// The tokens charged (the ledger's).
    pub usage: Usage,
    /// The cost charged, in nano-USD (the ledger's).
    pub cost_nano_usd: u64,
    /// From the request head to the first byte of the answer, for a 2xx answer.
    pub first_byte: Option<Duration>,
    /// Every provider attempt, as the access log has them.
    pub attempts: &'a [AttemptLog],
}

/// A latency histogram over the metrics' [`BUCKETS`] (the last slot: above every bound).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket.
    pub counts: [u64; BUCKETS.len() + 1],
}

impl Histogram {
    /// Counts one observation of `elapsed`.
    pub fn observe(&mut self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let slot = BUCKETS
            .iter()
            .position(|&(bound, _)| nanos <= bound)
            .unwrap_or(BUCKETS.len());
        self.counts[slot] += 1;
    }

    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0 < q <= 1) in milliseconds, interpolated linearly inside its
    /// bucket as Prometheus' `histogram_quantile` does; the open top bucket answers its lower
    /// bound. `None` without observations.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (slot, &n) in self.counts.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let lower = if slot == 0 { 0 } else { BUCKETS[slot - 1].0 };
                let Some(&(upper, _)) = BUCKETS.get(slot) else {
                    return Some(lower as f64 / 1e6);
                };
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some((lower as f64 + (upper - lower) as f64 * within) / 1e6);
            }
            below += n;
        }
        None
    }
}

/// One provider's figures, as [`AiMetrics::provider_stats`] reads them.
#[derive(Debug, Clone)]
pub struct ProviderStats {
    /// The provider's name in the config.
    pub provider: String,
    /// Attempts on it since start (retries and fallbacks each count).
    pub attempts: u64,
    /// Attempts that did not get a 2xx answer (provider errors, timeouts, open circuit).
    pub failed_attempts: u64,
    /// Time to first token of successful answers by its models.
    pub first_token: Histogram,
    /// Whether its circuit breaker is open now.
    pub circuit_open: bool,
}

/// The registry of the AI families; one per [`super::Metrics`].
pub struct AiMetrics {
    shards: OnceLock<Box<[Shard]>>,
    interner: Mutex<Interner>,
    /// First cell of the `Limits` block.
    limits: usize,
    /// Key ids with their own block, to it.
    keys: papaya::HashMap<String, usize>,
    /// How many ids `keys` holds (papaya's own count is approximate under races).
    tracked_keys: AtomicUsize,
    /// Serializes adding a key (at most `max_keys` times for the process).
    key_lock: Mutex<()>,
    /// Whether `key="other"` has counted anything (so it is rendered).
    other_key_used: AtomicBool,
    /// The serving snapshot's series, for the circuit gauge.
    current: ArcSwapOption<AiSeries>,
}

impl Default for AiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AiMetrics {
    /// An empty registry with the `Limits` block interned.
    pub fn new() -> AiMetrics {
        let mut interner = Interner::default();
        let limits = interner
            .intern(BlockKey::Limits)
            .expect("the first block fits");
        AiMetrics {
            shards: OnceLock::new(),
            interner: Mutex::new(interner),
            limits,
            keys: papaya::HashMap::new(),
            tracked_keys: AtomicUsize::new(0),
            key_lock: Mutex::new(()),
            other_key_used: AtomicBool::new(false),
            current: ArcSwapOption::empty(),
        }
    }

    /// Gives each of `n` workers its own shard. Only the first call (before the workers
    /// serve) sizes them; until then, and for a worker index past `n`, workers share.
    pub fn set_workers(&self, n: usize) {
        let _ = self
            .shards
            .set((0..n.max(1)).map(|_| Shard::new()).collect());
    }

    fn shard(&self, worker: usize) -> &Shard {
        let shards = self.shards.get_or_init(|| Box::new([Shard::new()]));
        &shards[worker % shards.len()]
    }

    fn add(&self, worker: usize, cell: usize, n: u64) {
        if n != 0 {
            self.shard(worker).add(cell, n);
        }
    }

    fn sum(&self, cell: usize) -> u64 {
        self.shards.get().map_or(0, |shards| {
            shards.iter().fold(0u64, |t, s| t.wrapping_add(s.get(cell)))
        })
    }

    /// Interns the label sets of `catalog`'s models and providers with every team of
    /// `teams`, for the snapshot being built. Takes the interner's lock: config load only.
    pub fn series<'t>(
        &self,
        catalog: &Catalog,
        teams: impl IntoIterator<Item = &'t str>,
        per_key: Option<PerKey>,
    ) -> AiSeries {
        let mut team_names = vec![String::new()];
        team_names.extend(
            teams
                .into_iter()
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
        );
        let mut interner = self.interner.lock();
        let models = catalog
            .models()
            .iter()
            .map(|model| {
                let provider = &catalog.provider(model.provider).name;
                let by_team = team_names
                    .iter()
                    .map(|team| {
                        interner.intern(BlockKey::Series {
                            model: model.name.clone(),
                            provider: provider.clone(),
                            team: team.clone(),
                        })
                    })
                    .collect();
                let first_token = interner.intern(BlockKey::FirstToken {
                    model: model.name.clone(),
                });
                let series = ModelSeries {
                    by_team,
                    first_token,
                };
                (model.name.clone(), series)
            })
            .collect();
        let mut providers = FxHashMap::default();
        let mut breakers = Vec::new();
        for provider in catalog.providers() {
            let attempts = BlockKey::Attempts {
                provider: provider.name.clone(),
            };
            if let Some(base) = interner.intern(attempts) {
                providers.insert(provider.name.clone(), base);
            }
            breakers.push((provider.name.clone(), Arc::clone(&provider.breaker)));
        }
        let teams = team_names.into_iter().enumerate().skip(1);
        AiSeries {
            teams: teams.map(|(i, name)| (name, i)).collect(),
            models,
            providers,
            breakers,
            per_key,
        }
    }

    /// Makes `series` the serving snapshot's: its providers' breakers are the ones
    /// `credentialflow_circuit_open` shows.
    pub fn set_current(&self, series: Arc<AiSeries>) {
        self.current.store(Some(series));
    }

    /// Counts one refusal by a limit of `kind`, on `worker`'s shard.
    pub fn limit_rejected(&self, worker: usize, kind: LimitKind) {
        self.add(worker, self.limits + kind.slot(), 1);
    }

    /// Counts a settled AI request on `worker`'s shard: its status, tokens, cost and time to
    /// first token on its model's series, each attempt on its provider's, and with per-key
    /// series on, the key's.
    pub fn settled(&self, worker: usize, series: &AiSeries, settled: &Settled) {
        for attempt in settled.attempts {
            if let Some(&base) = series.providers.get(&attempt.provider) {
                self.add(worker, base + outcome_slot(&attempt.outcome), 1);
            }
        }
        let usage = settled.usage;
        if let Some(model) = series.models.get(settled.model) {
            let team = match settled.team {
                "" => 0,
                team => series.teams.get(team).copied().unwrap_or(0),
            };
            if let Some(base) = model.by_team.get(team).copied().flatten() {
                self.add(worker, base + status_slot(settled.status), 1);
                self.add(worker, base + SERIES_PROMPT, usage.prompt_tokens);
                self.add(worker, base + SERIES_COMPLETION, usage.completion_tokens);
                self.add(worker, base + SERIES_CACHED, usage.cached_tokens);
                self.add(worker, base + SERIES_COST, settled.cost_nano_usd);
            }
            if let (Some(base), Some(elapsed)) = (model.first_token, settled.first_byte) {
                let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
                let slot = BUCKETS
                    .iter()
                    .position(|&(bound, _)| nanos <= bound)
                    .unwrap_or(BUCKETS.len());
                self.add(worker, base + slot, 1);
                let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
                self.add(worker, base + FIRST_TOKEN_SUM, micros);
            }
        }
        if let (Some(per_key), Some(id)) = (series.per_key, settled.key) {
            if let Some(base) = self.key_block(id, per_key.max_keys) {
                self.add(worker, base + KEY_REQUESTS, 1);
                self.add(worker, base + KEY_PROMPT, usage.prompt_tokens);
                self.add(worker, base + KEY_COMPLETION, usage.completion_tokens);
                self.add(worker, base + KEY_CACHED, usage.cached_tokens);
                self.add(worker, base + KEY_COST, settled.cost_nano_usd);
            }
        }
    }

    /// The block of key `id`: its own while fewer than `max_keys` keys have one, else the
    /// shared `key="other"` block. Lock-free for a key seen before and once the cap is
    /// reached; the lock is taken only to add one of the first `max_keys` keys.
    fn key_block(&self, id: &str, max_keys: usize) -> Option<usize> {
        let keys = self.keys.pin();
        if let Some(&base) = keys.get(id) {
            return Some(base);
        }
        if id.len() <= MAX_KEY_ID_BYTES && self.tracked_keys.load(Relaxed) < max_keys {
            let _one_at_a_time = self.key_lock.lock();
            if let Some(&base) = keys.get(id) {
                return Some(base);
            }
            if self.tracked_keys.load(Relaxed) < max_keys {
                let key = BlockKey::Key {
                    id: Some(id.to_owned()),
                };
                let base = self.interner.lock().intern(key)?;
                keys.insert(id.to_owned(), base);
                self.tracked_keys.fetch_add(1, Relaxed);
                return Some(base);
            }
        }
        self.other_key_used.store(true, Relaxed);
        self.interner.lock().intern(BlockKey::Key { id: None })
    }

    /// Renders every AI family. Takes the interner's lock for the scrape.
    pub fn render(&self, out: &mut String, now_ms: i64) {
        let interner = self.interner.lock();
        self.render_requests(out, &interner);
        self.render_tokens_and_cost(out, &interner);
        self.render_first_token(out, &interner);
        self.render_attempts(out, &interner);
        drop(interner);
        self.render_circuits(out, now_ms);
        self.render_limits(out);
        self.render_keys(out);
    }

    /// `credentialflow_ai_requests_total{model,provider,status}`, summed over teams.
    fn render_requests(&self, out: &mut String, interner: &Interner) {
        family_header(
            out,
            "credentialflow_ai_requests_total",
            "counter",
            "AI requests that reached a model, by the model that served them, its provider and the class of the status sent.",
        );
        let mut totals: BTreeMap<(&str, &str), [u64; STATUS_CLASSES.len()]> = BTreeMap::new();
        for (key, base) in &interner.blocks {
            if let BlockKey::Series {
                model, provider, ..
            } = key
            {
                let row = totals.entry((model, provider)).or_default();
                for (slot, total) in row.iter_mut().enumerate() {
                    *total += self.sum(base + slot);
                }
            }
        }
        for ((model, provider), row) in totals {
            for (class, count) in STATUS_CLASSES.iter().zip(row) {
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "credentialflow_ai_requests_total{{model=\"{}\",provider=\"{}\",status=\"{class}\"}} {count}",
                        escape_label_value(model),
                        escape_label_value(provider)
                    );
                }
            }
        }
    }

    /// `credentialflow_ai_tokens_total{model,provider,team,kind}` and
    /// `credentialflow_ai_cost_usd_total{model,provider,team}` of every series that counted
    /// a request.
    fn render_tokens_and_cost(&self, out: &mut String, interner: &Interner) {
        let used: Vec<(String, usize)> = interner
            .blocks
            .iter()
            .filter_map(|(key, base)| match key {
                BlockKey::Series {
                    model,
                    provider,
                    team,
                } => Some((
                    format!(
                        "model=\"{}\",provider=\"{}\",team=\"{}\"",
                        escape_label_value(model),
                        escape_label_value(provider),
                        escape_label_value(team)
                    ),
                    *base,
                )),
                _ => None,
            })
            .filter(|(_, base)| (0..STATUS_CLASSES.len()).any(|s| self.sum(base + s) > 0))
            .collect();
        family_header(
            out,
            "credentialflow_ai_tokens_total",
            "counter",
            "Tokens charged for AI requests (the ledger's), by model, provider, team and kind; prompt tokens include cached ones.",
        );
        for (labels, base) in &used {
            for (kind, offset) in [
                ("prompt", SERIES_PROMPT),
                ("completion", SERIES_COMPLETION),
                ("cached", SERIES_CACHED),
            ] {
                let n = self.sum(base + offset);
                let _ = writeln!(
                    out,
                    "credentialflow_ai_tokens_total{{{labels},kind=\"{kind}\"}} {n}"
                );
            }
        }
        family_header(
            out,
            "credentialflow_ai_cost_usd_total",
            "counter",
            "Cost charged for AI requests in USD (the ledger's), by model, provider and team.",
        );
        for (labels, base) in &used {
            let usd = usd_text(self.sum(base + SERIES_COST));
            let _ = writeln!(out, "credentialflow_ai_cost_usd_total{{{labels}}} {usd}");
        }
    }

    /// `credentialflow_ai_time_to_first_token_seconds{model}` of every model observed.
    fn render_first_token(&self, out: &mut String, interner: &Interner) {
        family_header(
            out,
            "credentialflow_ai_time_to_first_token_seconds",
            "histogram",
            "Time from the request head to the first byte of a successful answer's content (the first event of a stream, the whole body otherwise), by model.",
        );
        for (key, base) in &interner.blocks {
            let BlockKey::FirstToken { model } = key else {
                continue;
            };
            let buckets: Vec<u64> = (0..=BUCKETS.len()).map(|s| self.sum(base + s)).collect();
            let count: u64 = buckets.iter().sum();
            if count == 0 {
                continue;
            }
            let model = escape_label_value(model);
            let mut cumulative = 0u64;
            let bounds = BUCKETS.iter().map(|&(_, le)| le).chain(["+Inf"]);
            for (le, n) in bounds.zip(&buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "credentialflow_ai_time_to_first_token_seconds_bucket{{model=\"{model}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let micros = self.sum(base + FIRST_TOKEN_SUM);
            let _ = writeln!(
                out,
                "credentialflow_ai_time_to_first_token_seconds_sum{{model=\"{model}\"}} {}.{:06}",
                micros / 1_000_000,
                micros % 1_000_000
            );
            let _ = writeln!(
                out,
                "credentialflow_ai_time_to_first_token_seconds_count{{model=\"{model}\"}} {count}"
            );
        }
    }

    /// `credentialflow_provider_attempts_total{provider,outcome}`, outcomes seen only.
    fn render_attempts(&self, out: &mut String, interner: &Interner) {
        family_header(
            out,
            "credentialflow_provider_attempts_total",
            "counter",
            "Attempts on AI providers, by provider and outcome (the provider's status, or what went wrong, as the access log names it).",
        );
        for (key, base) in &interner.blocks {
            let BlockKey::Attempts { provider } = key else {
                continue;
            };
            let provider = escape_label_value(provider);
            for slot in 0..OUTCOME_STATUSES + NAMED_OUTCOMES.len() {
                let n = self.sum(base + slot);
                if n == 0 {
                    continue;
                }
                let outcome = match slot.checked_sub(OUTCOME_STATUSES) {
                    None => (slot + 100).to_string(),
                    Some(named) => NAMED_OUTCOMES[named].to_string(),
                };
                let _ = writeln!(
                    out,
                    "credentialflow_provider_attempts_total{{provider=\"{provider}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
    }

    /// Per provider of the serving config: attempts, failed attempts, the time-to-first-token
    /// histogram of its models and whether its circuit is open, for `GET /admin/providers`.
    /// Reads the same per-worker counters a scrape sums (the request path is untouched);
    /// takes the interner's lock once, off the data plane.
    pub fn provider_stats(&self, now_ms: i64) -> Vec<ProviderStats> {
        let Some(series) = self.current.load_full() else {
            return Vec::new();
        };
        let interner = self.interner.lock();
        let mut stats: Vec<ProviderStats> = series
            .breakers
            .iter()
            .map(|(name, breaker)| ProviderStats {
                provider: name.clone(),
                attempts: 0,
                failed_attempts: 0,
                first_token: Histogram::default(),
                circuit_open: breaker.is_open(now_ms),
            })
            .collect();
        let index: HashMap<&str, usize> = series
            .breakers
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (name.as_str(), i))
            .collect();
        // A model's provider is named by its `Series` blocks (a reload may move a model, so
        // the serving config's catalog decides, through `series.models`' first block).
        let mut model_provider: HashMap<&str, &str> = HashMap::new();
        for (key, _) in &interner.blocks {
            if let BlockKey::Series {
                model, provider, ..
            } = key
            {
                if series.models.contains_key(model) {
                    model_provider.insert(model, provider);
                }
            }
        }
        for (key, base) in &interner.blocks {
            match key {
                BlockKey::Attempts { provider } => {
                    let Some(&i) = index.get(provider.as_str()) else {
                        continue;
                    };
                    for slot in 0..OUTCOME_STATUSES + NAMED_OUTCOMES.len() {
                        let n = self.sum(base + slot);
                        stats[i].attempts += n;
                        // Slots 100..200 are the provider's 2xx statuses.
                        if !(100..200).contains(&slot) {
                            stats[i].failed_attempts += n;
                        }
                    }
                }
                BlockKey::FirstToken { model } => {
                    let Some(&i) = model_provider
                        .get(model.as_str())
                        .and_then(|p| index.get(p))
                    else {
                        continue;
                    };
                    for slot in 0..=BUCKETS.len() {
                        stats[i].first_token.counts[slot] += self.sum(base + slot);
                    }
                }
                _ => {}
            }
        }
        stats
    }

    /// `credentialflow_circuit_open{provider}` of the serving config's providers.
    fn render_circuits(&self, out: &mut String, now_ms: i64) {
        family_header(
            out,
            "credentialflow_circuit_open",
            "gauge",
            "Whether a provider's circuit breaker is open (1: its models fall back at once) or not (0).",
        );
        if let Some(series) = self.current.load_full() {
            for (name, breaker) in &series.breakers {
                let open = u8::from(breaker.is_open(now_ms));
                let _ = writeln!(
                    out,
                    "credentialflow_circuit_open{{provider=\"{}\"}} {open}",
                    escape_label_value(name)
                );
            }
        }
    }

    /// `credentialflow_limit_rejections_total{kind}`, every kind.
    fn render_limits(&self, out: &mut String) {
        family_header(
            out,
            "credentialflow_limit_rejections_total",
            "counter",
            "Requests refused by a limit, by kind of limit.",
        );
        for kind in LimitKind::ALL {
            let n = self.sum(self.limits + kind.slot());
            let _ = writeln!(
                out,
                "credentialflow_limit_rejections_total{{kind=\"{}\"}} {n}",
                kind.label()
            );
        }
    }

    /// The `credentialflow_key_*` families, when any key was counted.
    fn render_keys(&self, out: &mut String) {
        let interner = self.interner.lock();
        let keys: Vec<(String, usize)> = interner
            .blocks
            .iter()
            .filter_map(|(key, base)| match key {
                BlockKey::Key { id: Some(id) } => Some((escape_label_value(id), *base)),
                BlockKey::Key { id: None } if self.other_key_used.load(Relaxed) => {
                    Some(("other".to_owned(), *base))
                }
                _ => None,
            })
            .collect();
        drop(interner);
        if keys.is_empty() {
            return;
        }
        family_header(
            out,
            "credentialflow_key_requests_total",
            "counter",
            "AI requests that reached a model, by virtual key id (keys past [metrics] max_keys are key=\"other\").",
        );
        for (key, base) in &keys {
            let n = self.sum(base + KEY_REQUESTS);
            let _ = writeln!(
                out,
                "credentialflow_key_requests_total{{key=\"{key}\"}} {n}"
            );
        }
        family_header(
            out,
            "credentialflow_key_tokens_total",
            "counter",
            "Tokens charged for AI requests, by virtual key id and kind.",
        );
        for (key, base) in &keys {
            for (kind, offset) in [
                ("prompt", KEY_PROMPT),
                ("completion", KEY_COMPLETION),
                ("cached", KEY_CACHED),
            ] {
                let n = self.sum(base + offset);
                let _ = writeln!(
                    out,
                    "credentialflow_key_tokens_total{{key=\"{key}\",kind=\"{kind}\"}} {n}"
                );
            }
        }
        family_header(
            out,
            "credentialflow_key_cost_usd_total",
            "counter",
            "Cost charged for AI requests in USD, by virtual key id.",
        );
        for (key, base) in &keys {
            let usd = usd_text(self.sum(base + KEY_COST));
            let _ = writeln!(
                out,
                "credentialflow_key_cost_usd_total{{key=\"{key}\"}} {usd}"
            );
        }
    }
}

/// The names of every family [`AiMetrics::render`] may write.
pub const FAMILIES: [&str; 10] = [
    "credentialflow_ai_requests_total",
    "credentialflow_ai_tokens_total",
    "credentialflow_ai_cost_usd_total",
    "credentialflow_ai_time_to_first_token_seconds",
    "credentialflow_provider_attempts_total",
    "credentialflow_circuit_open",
    "credentialflow_limit_rejections_total",
    "credentialflow_key_requests_total",
    "credentialflow_key_tokens_total",
    "credentialflow_key_cost_usd_total",
];

/// The status-class slot of `status`.
fn status_slot(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => STATUS_CLASSES.len() - 1,
    }
}

/// The slot of an attempt's access-log outcome: a provider status has its own, a named
/// outcome its own, anything else `other`.
fn outcome_slot(outcome: &str) -> usize {
    if let Ok(status @ 100..=599) = outcome.parse::<u16>() {
        if outcome.len() == 3 {
            return usize::from(status - 100);
        }
    }
    let named = NAMED_OUTCOMES
        .iter()
        .position(|&n| n == outcome)
        .unwrap_or(NAMED_OUTCOMES.len() - 1);
    OUTCOME_STATUSES + named
}

/// Nano-USD as a decimal USD amount, exactly (`1500` → `0.000001500`).
fn usd_text(nano_usd: u64) -> String {
    format!(
        "{}.{:09}",
        nano_usd / 1_000_000_000,
        nano_usd % 1_000_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(provider: &str, outcome: &str) -> AttemptLog {
        AttemptLog {
            model: "m".into(),
            provider: provider.into(),
            outcome: outcome.into(),
        }
    }

    /// A catalog of `mini` on `openai` and `claude` on `anthropic`, through the config.
    fn catalog() -> Catalog {
        let toml = r#"
[[provider]]
name = "openai"
kind = "mock"
[[provider]]
name = "anthropic"
kind = "mock"
[[model]]
name = "mini"
provider = "openai"
[[model]]
name = "claude"
provider = "anthropic"
"#;
        let config: crate::config::Config = toml::from_str(toml).unwrap();
        let secrets = crate::config::SecretWatcher::with_poll_interval(Duration::from_secs(60));
        Catalog::build(&config, &secrets).unwrap()
    }

    fn settled<'a>(model: &'a str, team: &'a str, attempts: &'a [AttemptLog]) -> Settled<'a> {
        Settled {
            model,
            team,
            key: None,
            status: 200,
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                cached_tokens: 2,
            },
            cost_nano_usd: 1_500,
            first_byte: Some(Duration::from_millis(3)),
            attempts,
        }
    }

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn provider_stats_count_attempts_failures_and_first_tokens_per_provider() {
        let ai = AiMetrics::new();
        ai.set_workers(2);
        let series = Arc::new(ai.series(&catalog(), ["eng"], None));
        assert!(ai.provider_stats(0).is_empty(), "no serving config yet");
        ai.set_current(Arc::clone(&series));
        let failed_then_ok = [attempt("openai", "503"), attempt("openai", "200")];
        ai.settled(0, &series, &settled("mini", "eng", &failed_then_ok));
        let timed_out = [attempt("anthropic", "upstream timed out")];
        ai.settled(1, &series, &settled("claude", "", &timed_out));
        let stats = ai.provider_stats(0);
        let openai = stats.iter().find(|s| s.provider == "openai").unwrap();
        assert_eq!((openai.attempts, openai.failed_attempts), (2, 1));
        assert_eq!(openai.first_token.count(), 1);
        assert!(!openai.circuit_open);
        let anthropic = stats.iter().find(|s| s.provider == "anthropic").unwrap();
        assert_eq!((anthropic.attempts, anthropic.failed_attempts), (1, 1));
        // `settled` counts a first token for the model whatever its attempts say.
        assert_eq!(anthropic.first_token.count(), 1);
    }

    #[test]
    fn histogram_quantiles_interpolate_within_their_bucket() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for _ in 0..99 {
            h.observe(Duration::from_millis(3)); // (2.5 ms, 5 ms]
        }
        h.observe(Duration::from_secs(60)); // above every bound
        let p50 = h.quantile_ms(0.5).unwrap();
        assert!(p50 > 2.5 && p50 <= 5.0, "{p50}");
        assert_eq!(h.quantile_ms(0.99).unwrap(), 5.0);
        assert_eq!(h.quantile_ms(1.0).unwrap(), 10_000.0);
    }

    #[test]
    fn settled_requests_sum_over_workers_into_their_series() {
        let ai = AiMetrics::new();
        ai.set_workers(2);
        let series = ai.series(&catalog(), ["eng"], None);
        ai.settled(0, &series, &settled("mini", "eng", &[]));
        ai.settled(1, &series, &settled("mini", "eng", &[]));
        ai.settled(1, &series, &settled("mini", "unconfigured", &[]));
        let mut out = String::new();
        ai.render(&mut out, 0);
        for line in [
            r#"credentialflow_ai_requests_total{model="mini",provider="openai",status="2xx"} 3"#,
            r#"credentialflow_ai_tokens_total{model="mini",provider="openai",team="eng",kind="prompt"} 20"#,
            r#"credentialflow_ai_tokens_total{model="mini",provider="openai",team="eng",kind="completion"} 10"#,
            r#"credentialflow_ai_tokens_total{model="mini",provider="openai",team="eng",kind="cached"} 4"#,
            r#"credentialflow_ai_tokens_total{model="mini",provider="openai",team="",kind="prompt"} 10"#,
            r#"credentialflow_ai_cost_usd_total{model="mini",provider="openai",team="eng"} 0.000003000"#,
            r#"credentialflow_ai_cost_usd_total{model="mini",provider="openai",team=""} 0.000001500"#,
            r#"credentialflow_ai_time_to_first_token_seconds_bucket{model="mini",le="0.0025"} 0"#,
            r#"credentialflow_ai_time_to_first_token_seconds_bucket{model="mini",le="0.005"} 3"#,
            r#"credentialflow_ai_time_to_first_token_seconds_count{model="mini"} 3"#,
            r#"credentialflow_ai_time_to_first_token_seconds_sum{model="mini"} 0.009000"#,
        ] {
            assert!(has_line(&out, line), "{line} in\n{out}");
        }
        assert!(
            !out.contains(r#"team="unconfigured""#),
            "unconfigured teams are folded into team=\"\""
        );
        assert!(
            !out.contains(r#"model="claude""#),
            "series never used are not rendered"
        );
    }

    #[test]
    fn status_classes_and_unknown_models() {
        let ai = AiMetrics::new();
        let series = ai.series(&catalog(), [], None);
        let mut failed = settled("claude", "", &[]);
        failed.status = 503;
        ai.settled(0, &series, &failed);
        failed.status = 0;
        ai.settled(0, &series, &failed);
        ai.settled(0, &series, &settled("not-configured", "", &[]));
        let mut out = String::new();
        ai.render(&mut out, 0);
        assert!(has_line(
            &out,
            r#"credentialflow_ai_requests_total{model="claude",provider="anthropic",status="5xx"} 1"#
        ));
        assert!(has_line(
            &out,
            r#"credentialflow_ai_requests_total{model="claude",provider="anthropic",status="none"} 1"#
        ));
        assert!(!out.contains("not-configured"));
    }

    #[test]
    fn attempts_are_counted_by_provider_and_bounded_outcome() {
        let ai = AiMetrics::new();
        let series = ai.series(&catalog(), [], None);
        let attempts = [
            attempt("openai", "503"),
            attempt("openai", "503"),
            attempt("openai", "circuit open"),
            attempt("openai", "a message no list has, with \"quotes\""),
            attempt("openai", "0503"),
            attempt("anthropic", "200"),
            attempt("unknown-provider", "200"),
        ];
        ai.settled(0, &series, &settled("claude", "", &attempts));
        let mut out = String::new();
        ai.render(&mut out, 0);
        for line in [
            r#"credentialflow_provider_attempts_total{provider="openai",outcome="503"} 2"#,
            r#"credentialflow_provider_attempts_total{provider="openai",outcome="circuit open"} 1"#,
            r#"credentialflow_provider_attempts_total{provider="openai",outcome="other"} 2"#,
            r#"credentialflow_provider_attempts_total{provider="anthropic",outcome="200"} 1"#,
        ] {
            assert!(has_line(&out, line), "{line} in\n{out}");
        }
        assert!(!out.contains("unknown-provider"));
        assert!(!out.contains("quotes"));
    }

    #[test]
    fn limit_kinds_follow_the_refusals() {
        let ai = AiMetrics::new();
        let refusals = [
            GatewayError::RateLimited {
                code: "rate_limit_exceeded",
                scope: "client address",
                retry_after_secs: 1,
            },
            GatewayError::RateLimited {
                code: "concurrency_limit_exceeded",
                scope: "key concurrency",
                retry_after_secs: 1,
            },
            GatewayError::RateLimited {
                code: "tokens_limit_exceeded",
                scope: "team token",
                retry_after_secs: 1,
            },
            GatewayError::InsufficientQuota("key"),
            GatewayError::InsufficientQuota("key"),
        ];
        for error in &refusals {
            ai.limit_rejected(0, LimitKind::of(error).expect("a limit refused"));
        }
        assert_eq!(LimitKind::of(&GatewayError::Unauthorized), None);
        let mut out = String::new();
        ai.render(&mut out, 0);
        for (kind, n) in [
            ("client_address", 1),
            ("concurrency", 1),
            ("team_tokens", 1),
            ("key_budget", 2),
            ("route_rate", 0),
            ("team_budget", 0),
        ] {
            let line = format!(r#"credentialflow_limit_rejections_total{{kind="{kind}"}} {n}"#);
            assert!(has_line(&out, &line), "{line} in\n{out}");
        }
    }

    #[test]
    fn circuit_gauge_reads_the_current_breakers() {
        let ai = AiMetrics::new();
        let catalog = catalog();
        ai.set_current(Arc::new(ai.series(&catalog, [], None)));
        let mut out = String::new();
        ai.render(&mut out, 1_000);
        assert!(has_line(
            &out,
            r#"credentialflow_circuit_open{provider="openai"} 0"#
        ));
        for _ in 0..crate::ai::breaker::FAILURES_TO_OPEN {
            catalog.provider(0).breaker.record_failure(1_000);
        }
        let mut out = String::new();
        ai.render(&mut out, 1_000);
        assert!(has_line(
            &out,
            r#"credentialflow_circuit_open{provider="openai"} 1"#
        ));
        assert!(has_line(
            &out,
            r#"credentialflow_circuit_open{provider="anthropic"} 0"#
        ));
    }

    #[test]
    fn per_key_series_only_when_on_and_capped() {
        let ai = AiMetrics::new();
        let off = ai.series(&catalog(), [], None);
        let mut one = settled("mini", "", &[]);
        one.key = Some("key-a");
        ai.settled(0, &off, &one);
        let mut out = String::new();
        ai.render(&mut out, 0);
        assert!(
            !out.contains("credentialflow_key_"),
            "off: no per-key series"
        );

        let on = ai.series(&catalog(), [], Some(PerKey { max_keys: 2 }));
        let long = "k".repeat(MAX_KEY_ID_BYTES + 1);
        for id in ["key-a", "key-b", "key-a", "key-c", "key-d", long.as_str()] {
            let mut one = settled("mini", "", &[]);
            one.key = Some(id);
            ai.settled(0, &on, &one);
        }
        let mut out = String::new();
        ai.render(&mut out, 0);
        for line in [
            r#"credentialflow_key_requests_total{key="key-a"} 2"#,
            r#"credentialflow_key_requests_total{key="key-b"} 1"#,
            r#"credentialflow_key_requests_total{key="other"} 3"#,
            r#"credentialflow_key_tokens_total{key="key-a",kind="completion"} 10"#,
            r#"credentialflow_key_cost_usd_total{key="other"} 0.000004500"#,
        ] {
            assert!(has_line(&out, line), "{line} in\n{out}");
        }
        assert!(!out.contains("key-c") && !out.contains(&long));
    }

    #[test]
    fn interning_is_stable_across_configs_and_bounded() {
        let ai = AiMetrics::new();
        let first = ai.series(&catalog(), ["eng"], None);
        ai.settled(0, &first, &settled("mini", "eng", &[]));
        // A reload interns the same label sets to the same cells: counting goes on.
        let second = ai.series(&catalog(), ["eng", "ops"], None);
        ai.settled(0, &second, &settled("mini", "eng", &[]));
        let mut out = String::new();
        ai.render(&mut out, 0);
        assert!(has_line(
            &out,
            r#"credentialflow_ai_tokens_total{model="mini",provider="openai",team="eng",kind="prompt"} 20"#
        ));
        let mut interner = Interner {
            next: MAX_CELLS - 1,
            ..Interner::default()
        };
        assert_eq!(interner.intern(BlockKey::Limits), None, "past the cap");
    }

    #[test]
    fn concurrent_workers_sum_exactly() {
        let ai = Arc::new(AiMetrics::new());
        ai.set_workers(2);
        let series = Arc::new(ai.series(&catalog(), [], None));
        let per_thread = 20_000u64;
        let threads: Vec<_> = (0..3)
            .map(|worker| {
                let (ai, series) = (Arc::clone(&ai), Arc::clone(&series));
                // Three threads on two shards: two of them share one.
                std::thread::spawn(move || {
                    for _ in 0..per_thread {
                        ai.settled(worker, &series, &settled("mini", "", &[]));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut out = String::new();
        ai.render(&mut out, 0);
        let line = format!(
            r#"credentialflow_ai_requests_total{{model="mini",provider="openai",status="2xx"}} {}"#,
            3 * per_thread
        );
        assert!(has_line(&out, &line), "{line}");
    }

    #[test]
    fn usd_text_is_exact() {
        assert_eq!(usd_text(0), "0.000000000");
        assert_eq!(usd_text(1_500), "0.000001500");
        assert_eq!(usd_text(12_345_000_000_001), "12345.000000001");
    }
}
