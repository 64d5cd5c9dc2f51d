//! What the operator sees: the metrics endpoint ([`metrics`]), `frontgate check`'s route
//! summary ([`summary`]) and the QR codes of `frontgate link` ([`qr`]).

pub mod metrics;
pub mod qr;
pub mod summary;
