//! Load-test tools shipped in the product: the fixed-response upstream (`bench-upstream`).
//! The load generator (`bench`) arrives with the load-test issue.

pub mod upstream;
