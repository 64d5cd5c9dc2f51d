//! What the operator sees: the metrics endpoint ([`metrics`]), `frontgate check`'s route
//! summary ([`summary`]), the QR codes of `frontgate link` ([`qr`]), the users' usage on
//! disk ([`usage_store`]) and shared by a fleet through Redis ([`fleet_usage`]).

pub mod fleet_usage;
pub mod metrics;
pub mod qr;
pub mod summary;
pub mod usage_store;
