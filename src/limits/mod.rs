//! Admission: every limit a request is counted against before it goes upstream, and the
//! settlement afterwards. One owner for rates, concurrency, tokens per minute and budgets.
//!
//! - [`gcra`]: the Generic Cell Rate Algorithm over one `AtomicU64` per limited thing, and
//!   the rates built from settings ([`gcra_per_second`], [`gcra_per_minute`]).
//! - [`concurrency`]: in-flight counters with RAII permits.
//! - [`table`]: keyed limiter state (key id, route, client IP) shared by every worker,
//!   bounded in memory and reclaimed when keys go quiet.
//! - [`admission`]: the process-wide [`Admission`] tables (keys, teams, routes) that survive
//!   reloads, and their sweeper thread.
//! - [`rate_headers`]: the `x-ratelimit-*` headers a response reports its decisions in.
//! - [`budget`]: per-key and per-team budgets in tokens and nano-USD over UTC calendar
//!   periods, with exact lock-free reservation and settlement; model prices to cost; budgets
//!   and their scope names from settings ([`budget_limit`], [`key_scope`], [`team_scope`]).
//! - [`charge`]: what an AI request reserves at admission and is charged when it ends
//!   (reported usage, or for a stream that was cut, the larger of what it relayed and what it
//!   reserved).
//! - [`hold`]: what an admitted request holds until it ends: the request counts it took
//!   ([`RequestCounts`], given back when a later check refuses it) and its token and budget
//!   reservations ([`TokenHold`], released on refusal, settled to the real usage).
//!
//! Tokens-per-minute limits are weighted GCRA checks ([`Gcra::check_n`] to admit a
//! reservation, [`Gcra::adjust`] to settle it). Token *estimates* live with the AI code
//! ([`crate::ai::tokens`]): counting a prompt means reading each provider's request format.
//! Time comes from [`crate::clock`]: injectable, so window and burst tests are exact and
//! instant.
//!
//! Nothing here locks, blocks or allocates on the check path for a key already known.

pub mod admission;
pub mod budget;
pub mod charge;
pub mod concurrency;
pub mod gcra;
pub mod hold;
pub mod rate_headers;
pub mod table;

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use admission::{Admission, RouteLimiter};
pub use budget::{
    budget_limit, cost_nano_usd, key_scope, nano_to_usd, period_start_ms, team_scope, usd_to_nano,
    BudgetCrossing, BudgetDimension, BudgetExceeded, BudgetLimit, BudgetTable, Period, Prices,
    Reservation, UnknownPeriod,
};
pub use charge::{charged_usage, completion_reservation, Metered};
pub use concurrency::{InFlight, Permit};
pub use gcra::{gcra_per_minute, gcra_per_second, Decision, Gcra};
pub use hold::{RequestCounts, TokenHold, TokenScope};
pub use rate_headers::RateReport;
pub use table::{KeyPermit, LimiterTable};
