//! Fleet-wide limits on Redis (`[cluster] redis`; README, "Fleet").
//!
//! - `target`: the Redis URL, validated, never shown with its password.
//! - `backoff`: reconnect waits, 100 ms doubling to 5 s.
//! - `link`: the `cf-cluster` thread owning the connection: scripts loaded once, one
//!   pipelined round trip per tick, reconnects, the degraded flag and counters.
//! - `leases`: `max_concurrency` across the fleet as expiring leases, with a node-side
//!   allowance the hot path reads without waiting, shared fairly among the nodes busy on a
//!   key (at least `floor(limit / busy nodes)` each, all of it for a node busy alone).
//! - `rates`: per-key and per-team `rps`/`rpm`/`tpm` across the fleet: a token bucket per
//!   rate in Redis handing out grants, a node-side allowance the hot path takes from with one
//!   CAS, a bounded borrow, and this node's share of the rate while Redis is unreachable.
//! - `fleet`: fleet mode switched on: the participants built, the link started, the request
//!   path pointed at them; stopped gracefully on the drain.
//! - `budgets`: spend budgets across the fleet as allowances granted from Redis, with one
//!   request on credit per node and tick: spend <= budget + nodes x one request's reservation.

pub mod backoff;
pub mod budgets;
pub mod fleet;
pub mod leases;
pub mod link;
pub mod rates;
pub mod target;

pub use budgets::{
    BudgetShare, BudgetSync, DimensionSnapshot, FleetBudgetDecision, FleetBudgets,
    FleetReservation, ShareSnapshot,
};
pub use fleet::Fleet;
pub use leases::{lease_ttl, FleetLeases, LeasePermit, LeaseSync};
pub use link::{Link, LinkSettings, LinkStatus};
pub use rates::{FleetDecision, FleetRates, FleetRefusal, RateKind, RateShare, RateSync};
pub use target::RedisTarget;
