//! Fleet-wide limits on Redis: the building blocks. Not yet switched on: the request path
//! and the config (`[cluster]`) do not use this module yet.
//!
//! - `target`: the Redis URL, validated, never shown with its password.
//! - `backoff`: reconnect waits, 100 ms doubling to 5 s.
//! - `link`: the `cf-cluster` thread owning the connection: scripts loaded once, one
//!   pipelined round trip per tick, reconnects, the degraded flag and counters.
//! - `leases`: `max_concurrency` across the fleet as expiring leases, with a node-side
//!   allowance the hot path reads without waiting, shared fairly among the nodes busy on a
//!   key (at least `floor(limit / busy nodes)` each, all of it for a node busy alone).
//! - `budgets`: spend budgets across the fleet as allowances granted from Redis, with one
//!   request on credit per node and tick: spend <= budget + nodes x one request's reservation.

pub mod backoff;
pub mod budgets;
pub mod leases;
pub mod link;
pub mod target;

pub use budgets::{
    BudgetShare, BudgetSync, DimensionSnapshot, FleetBudgetDecision, FleetBudgets,
    FleetReservation, ShareSnapshot,
};
pub use leases::{lease_ttl, FleetLeases, LeasePermit, LeaseSync};
pub use link::{Link, LinkSettings, LinkStatus};
pub use target::RedisTarget;
