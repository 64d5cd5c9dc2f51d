//! Admission: what is decided about a connection before any of its bytes are interpreted:
//! connection limits, fronting-loop refusal and the inbound PROXY header of trusted
//! balancers.

pub mod limits;
pub mod loop_guard;
pub mod proxy_in;
