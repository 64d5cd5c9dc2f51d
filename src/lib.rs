//! frontgate: one process on :443 that routes TLS connections by SNI without terminating them,
//! serves Telegram's MTProto fake-TLS clients itself, and terminates TLS for chosen names.
//!
//! # Layout
//! A connection flows one way through these modules:
//! - [`listener`]: binds the listen addresses, accepts, enforces connection limits, reads an
//!   inbound PROXY header from trusted balancers, refuses connections that loop back.
//! - [`hello`]: reads the TLS ClientHello into a bounded buffer without losing a byte.
//! - [`router`]: the immutable [`router::RouteTable`] that maps a server name to a route.
//! - [`connection`]: one connection's path from peek to relay, and its single log line.
//! - [`upstream`]: connects to a route's backends, in order, with a timeout.
//! - [`relay`]: copies bytes both ways with half-close and an idle timeout ([`idle`]).
//! - [`mtproto_gate`]: the fake-TLS check of `mtproto: true` routes and the hand-off to the
//!   [`mtproto`] core, or back to the route's backend (domain fronting).
//! - [`tls`]: TLS termination for `tls:` routes (static files or ACME TLS-ALPN-01), fed by
//!   a [`prefixed::PrefixedStream`] that replays the peeked hello.
//! - [`proxy_protocol`]: PROXY v1/v2 headers in and out.
//! - [`limits`] and [`loop_guard`]: admission of a connection before any work is done.
//!
//! Around them: [`config`] reads and validates the route file (the only module that knows
//! YAML), [`gateway`] owns the listeners and the hot-swappable table, [`reload`] watches the
//! file and SIGHUP, [`shutdown`] carries the stop signal, [`metrics`] serves `/metrics` and
//! `/stats`, [`summary`] renders `frontgate check`'s route list, [`links`] makes the users'
//! `tg://` links and QR codes.

pub mod config;
pub mod connection;
pub mod gateway;
pub mod hello;
pub mod idle;
pub mod limits;
pub mod links;
pub mod listener;
pub mod loop_guard;
pub mod metrics;
pub mod mtproto;
pub mod mtproto_gate;
pub mod prefixed;
pub mod proxy_protocol;
pub mod relay;
pub mod reload;
pub mod router;
pub mod shutdown;
pub mod summary;
pub mod tls;
pub mod upstream;
