//! Moving bytes to a backend: connecting ([`upstream`]), a route's pool of servers with
//! balancing and health ([`pool`]) and its active checks ([`health_check`]), the outbound PROXY header
//! ([`proxy_out`]), the relay with half-close ([`relay`]; on Linux moved by `splice(2)`, [`splice`]), its idle clock ([`idle`]) and the
//! buffer policy of every relay direction ([`buffer`]), the stream that replays peeked bytes
//! ([`prefixed`]), shutdown as every connection and relay sees it ([`shutdown`]), and the
//! TLS client of frontgate's own backend probes ([`any_chain`]).

pub mod any_chain;
pub mod buffer;
pub mod health_check;
pub mod idle;
pub mod pool;
pub mod prefixed;
pub mod proxy_out;
pub mod relay;
pub mod shutdown;
#[cfg(target_os = "linux")]
pub mod splice;
pub mod upstream;
