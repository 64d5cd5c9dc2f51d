//! What the operator sees: the metrics endpoint ([`metrics`]), `frontgate check`'s route
//! summary ([`summary`]), the QR codes of `frontgate link` ([`qr`]) and the users' usage on
//! disk ([`usage_store`]).

pub mod metrics;
pub mod qr;
pub mod summary;
pub mod usage_store;
