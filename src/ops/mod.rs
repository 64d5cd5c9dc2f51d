//! What the operator sees: the metrics endpoint ([`metrics`]) and `frontgate check`'s route
//! summary ([`summary`]).

pub mod metrics;
pub mod summary;
