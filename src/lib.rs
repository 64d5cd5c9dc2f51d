//! frontgate: one process on :443 that routes TLS connections by SNI without terminating them,
//! serves Telegram's MTProto fake-TLS clients itself, and terminates TLS for chosen names.
//!
//! # Layout
//! The folders follow a connection's pipeline. Each imports only the folders listed before it
//! (`config` imports none of them, `cli` may import all):
//! - [`config`]: the route file: YAML model, validation with `file:line:column` errors, and
//!   the pure values it compiles to (route table, upstreams, secrets, TLS and MTProto
//!   settings). The only module that knows the file format; no runtime state.
//! - [`forward`]: moving bytes to a backend: connect (through a route's pool: balancing,
//!   passive and active health checks), outbound PROXY header, the relay with
//!   half-close and idle timeout, the buffer policy of every relay direction, the stream that
//!   replays peeked bytes, and the shutdown value every connection and relay holds.
//! - [`admission`]: what is decided before a byte is interpreted: connection limits, the
//!   fronting-loop guard, the inbound PROXY header of trusted balancers, the network
//!   policies (`allow`/`deny`/`deny_file`).
//! - [`tls`]: TLS termination for `tls:` routes (certificate files or ACME TLS-ALPN-01).
//! - [`mtproto`]: the built-in MTProto proxy: the gate (digest check), fake-TLS, records,
//!   obfuscated2, the session relay to the DC, the users' running state, their links.
//! - [`ops`]: the metrics endpoint and `frontgate check`'s route summary.
//! - [`conn`]: one connection from accept to its single log line: ClientHello peek, the
//!   routing decision, and the hand-off to a relay, the MTProto core or TLS termination.
//! - [`server`]: the gateway that owns the listeners, the hot-swappable table and the
//!   runtime resources that outlive a reload; reload; shutdown.
//! - [`cli`]: the `frontgate` command line, one file per subcommand.

pub mod admission;
pub mod cli;
pub mod config;
pub mod conn;
pub mod forward;
pub mod mtproto;
pub mod ops;
pub mod server;
pub mod tls;
