//! frontgate's one test kit: the peers a gateway talks to, shared by the loopback tests
//! (`tests/common`, which adds only the in-process gateway) and the MTProto load client
//! (`integration/bench-mtproto-client`). Written against the protocol crates directly and
//! never against frontgate, so a bug shared with the crate under test cannot make both
//! sides agree.
//!
//! - [`backend`]: a fake backend that names itself and echoes (optionally behind a PROXY
//!   header), and a raw echo server.
//! - [`fake_dc`]: a fake Telegram DC speaking obfuscated2.
//! - [`fake_middle`]: a fake Telegram middle proxy (RPC protocol) and its config server.
//! - [`mtproto_client`]: a Telegram client: fake-TLS hello, server flight check,
//!   obfuscated2, TLS-record framing.
//! - [`net`]: the client side of a test: connect and identify the backend, reads and waits
//!   with a bound, and a port that refuses connections.
//! - [`hello`]: ClientHello bytes as a TLS client sends them, and re-framed.
//! - [`test_ca`]: a throwaway certificate authority (feature `tls`).

#![warn(missing_docs)]

pub mod backend;
pub mod fake_dc;
pub mod fake_middle;
pub mod hello;
pub mod mtproto_client;
pub mod net;
#[cfg(feature = "tls")]
pub mod test_ca;

use std::time::Duration;

pub use backend::{Backend, Seen};
pub use hello::*;
pub use net::*;

/// Generous bound for anything that should happen "soon" on loopback.
pub const SOON: Duration = Duration::from_secs(10);
