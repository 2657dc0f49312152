//! Rate and concurrency limiting: the lock-free limiter core.
//!
//! - [`Clock`] (from [`crate::clock`]): injectable monotonic time, so window and burst tests
//!   are exact and instant.
//! - [`gcra`]: the Generic Cell Rate Algorithm over one `AtomicU64` per limited thing.
//! - [`concurrency`]: in-flight counters with RAII permits.
//! - [`table`]: keyed limiter state (key id, route, client IP) shared by every worker,
//!   bounded in memory and reclaimed when keys go quiet.
//!
//! Nothing here locks, blocks or allocates on the check path for a key already known.

pub mod concurrency;
pub mod gcra;
pub mod table;

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use concurrency::{InFlight, Permit};
pub use gcra::{Decision, Gcra};
pub use table::{KeyPermit, LimiterTable};
