//! Admission: what is decided about a connection before any of its bytes are interpreted:
//! connection limits, fronting-loop refusal, the inbound PROXY header of trusted balancers
//! and the network policies (`allow`/`deny`/`deny_file`).

pub mod limits;
pub mod loop_guard;
pub mod netpolicy;
pub mod proxy_in;
