//! The MTProto proxy core: Telegram clients reach their datacenters through frontgate,
//! disguised as TLS to the route's domain (fake-TLS) or as plain obfuscated2.
//!
//! The router verifies a ClientHello with [`faketls::verify_client_hello`], checks the
//! [`replay::ReplayCache`], and hands the connection to [`session::serve_faketls`] (or
//! [`session::serve_plain`] for non-TLS clients). Anything that turns out not to be MTProto
//! before the session commits (a fake-TLS session commits with its fake server flight) comes
//! back as [`session::SessionOutcome::Fallback`] with every byte read, so the route's real
//! backend can answer it; after the commit, failures close the client. Byte-level rules live
//! in `PROTOCOL.md`.
//!
//! # Layout
//! - [`gate`]: the check of `mtproto: true` routes and the hand-off to a session or back.
//! - [`faketls`]: ClientHello digest check and the fake ServerHello flight.
//! - [`mimic`]: the fake flight shaped like the route's real site, learned from its answer.
//! - [`mirror`]: the live mirror: the backend's answer to the client's own hello.
//! - [`probe`]: asking each route's backend up front whether it can be mirrored.
//! - [`records`]: the TLS record layer after the handshake, in place.
//! - [`record_sizing`]: the sizes of the records sent to a client, shaped like the site's.
//! - [`replay`]: bounded memory of accepted handshakes.
//! - [`replay_guard`]: the replay check: the local cache, then the fleet's in Redis.
//! - [`shared_state`]: the fleet-wide state in Redis (`state.redis`) and its outages.
//! - [`obfuscated2`]: the 64-byte init, key derivation and AES-256-CTR on both legs.
//! - [`aes_ctr`]: the AES-256-CTR keystream in batches, and re-encryption in one pass.
//! - [`site_sample`]: one HTTPS download from a route's site, to learn its record sizes.
//! - [`session`]: one client session: handshake, DC connect, relay, counters.
//! - [`dc_health`]: which DC addresses answer, and how fast: the order a session dials them.
//! - [`users`]: each user's running state and the enforcement of their policy.
//! - [`state`]: the replay cache and the users' counters, kept across reloads.
//! - [`links`]: the users' `tg://` / `t.me` links and QR codes.
//! - [`middle`]: middle-proxy mode (ad_tag sessions through Telegram's middle proxies).

pub mod aes_ctr;
pub mod dc_health;
pub mod faketls;
pub mod gate;
pub mod links;
pub mod middle;
pub mod mimic;
pub mod mirror;
pub mod obfuscated2;
pub mod probe;
pub mod record_sizing;
pub mod records;
pub mod replay;
pub mod replay_guard;
pub mod session;
pub mod shared_state;
pub mod site_sample;
pub mod state;
pub mod upstreams;
pub mod users;

/// Test vectors vendored under `tests/data` (see its README and the licence beside them).
#[cfg(test)]
pub(crate) mod test_vectors {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    use std::path::PathBuf;

    /// Path of a file under the repository's `tests/data`.
    pub(crate) fn testdata(rel: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(rel)
    }

    /// Decodes a JSON string field in standard or URL-safe base64, padding optional.
    pub(crate) fn b64(value: &serde_json::Value) -> Vec<u8> {
        let text = value.as_str().expect("string field").trim_end_matches('=');
        STANDARD_NO_PAD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text))
            .expect("base64 field")
    }
}
