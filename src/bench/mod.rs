//! Load-test tools shipped in the product: the load generator (`bench`, in [`load`]) and the
//! fixed-response upstream it is tested against (`bench-upstream`, in [`upstream`]).

pub mod load;
pub mod upstream;
