//! The gate of `mtproto: true` routes: is this connection a Telegram client with a valid
//! fake-TLS digest for one of our users, fresh and never seen before? If so the MTProto core
//! serves it; anything else — a browser, a prober, a replayed or stale handshake — comes back
//! as [`Gate::Fallback`] with every byte read, so the route's real backend answers it and the
//! prober sees the real site. A client that passed the digest check got our fake server flight
//! and cannot be fronted any more: if it then breaks the protocol it is closed
//! ([`Gate::Rejected`]), never shown the site's ServerHello after ours.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpStream;

use crate::admission::loop_guard::OutboundAddrs;
use crate::config::users::MtprotoUser;
use crate::config::{MimicMode, MtprotoRoute, MtprotoSettings};
use crate::forward::pool::Pool;
use crate::forward::shutdown::Shutdown;
use crate::mtproto::faketls::{random_cert_len, verify_client_hello, FakeTlsClient, FakeTlsReject};
use crate::mtproto::mimic::{FlightProfile, HelloShape, MimicError};
use crate::mtproto::mirror::{self, MirrorError};
use crate::mtproto::record_sizing::RecordSizing;
use crate::mtproto::session::{
    serve_faketls, serve_plain, Committed, FallbackReason, RejectReason, SessionOutcome,
};
use crate::mtproto::state::{Learned, MtprotoState, ProfileStore, ServingMode};
use crate::mtproto::users::{self, Refusal};

/// A learned answer older than this is refreshed in the background by the next hello (and a
/// backend known to be unmatchable is asked again).
const REFRESH_LEARNED: Duration = Duration::from_secs(600);

/// What the gate needs to shape the fake flight like the route's backend (PROTOCOL.md §8).
#[derive(Debug, Clone)]
pub struct Mirror<'a> {
    /// The route's label: in logs, and the key of its learned profile.
    pub route: &'a str,
    /// The route: its backend and mimic mode.
    pub target: &'a MtprotoRoute,
    /// The PROXY header the route sends its backend (empty for none).
    pub head: Vec<u8>,
    /// Time allowed for a live mirror's connect and answer together.
    pub budget: Duration,
    /// The fronting-loop guard the mirror's backend connection registers with.
    pub outbound: Arc<OutboundAddrs>,
    /// The route's running pool: the mirror asks the server the client's fronting would reach.
    pub pool: Arc<Pool>,
    /// The client the hello came from (the pool's `client_hash` key).
    pub client: IpAddr,
}

/// The MTProto core a connection is checked against: the route file's settings and the
/// running state (replay cache, counters, learned profiles).
#[derive(Debug, Clone, Copy)]
pub struct Core<'a> {
    /// `mtproto:` of the route file.
    pub settings: &'a MtprotoSettings,
    /// The state the gateway keeps across reloads.
    pub state: &'a MtprotoState,
}

/// What the gate needs of a parsed ClientHello (the peek stage's `ClientHello` lends it).
#[derive(Debug, Clone, Copy)]
pub struct HelloView<'a> {
    /// The hello as one TLS record, what the digest covers.
    pub single_record: &'a [u8],
    /// How many raw bytes the hello took on the wire (bytes past it came after the hello).
    pub raw_len: usize,
    /// The legacy session id, echoed in the fake ServerHello.
    pub session_id: &'a [u8],
    /// The offered cipher suites, in order.
    pub cipher_suites: &'a [u16],
    /// The SNI host name as sent, if any.
    pub server_name: Option<&'a str>,
}

/// What the gate did with a connection.
#[derive(Debug)]
pub enum Gate {
    /// Served as MTProto until the session ended.
    Served {
        /// The user's name from the route file.
        user: String,
        /// The DC index the client asked for.
        dc: i16,
        /// The DC address the session was relayed to.
        dc_addr: Option<SocketAddr>,
        /// Client bytes read after the ClientHello.
        from_client: u64,
        /// Bytes written to the client.
        to_client: u64,
        /// Why the session ended.
        end: String,
    },
    /// A client with a valid digest that failed its handshake after the fake server flight;
    /// the connection was closed.
    Rejected {
        /// The user's name whose digest the hello carried.
        user: String,
        /// Why.
        reason: RejectReason,
        /// Client bytes read after the ClientHello.
        from_client: u64,
        /// Bytes written to the client.
        to_client: u64,
    },
    /// A valid client whose DC could not be reached (the client was closed).
    DcUnreachable {
        /// The user's name.
        user: String,
        /// The DC index.
        dc: i16,
        /// The last connect error.
        error: std::io::Error,
    },
    /// Not (or no longer) MTProto: forward `bytes` — every byte read from the client, in
    /// order — to the route's backend, then relay `client` to it.
    Fallback {
        /// The client connection.
        client: TcpStream,
        /// Everything read from it so far.
        bytes: Vec<u8>,
    },
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Logs a refused user: a valid secret, but the user may not be served now. Not the line
/// fail2ban reads (no attack); never the secret.
fn user_refused(user: &str, refusal: Refusal, client: IpAddr) {
    tracing::info!(%client, user, reason = %refusal, "mtproto user refused: {refusal} user={user} from {client}");
}

/// Logs a failed digest check in the line fail2ban reads; never a secret, never the digest.
fn auth_failed(client: IpAddr, reason: &str) {
    tracing::info!(%client, reason, "mtproto auth failed from {client}");
}

/// The digest check of a hello on an `mtproto: true` route: which of `users` (if any) signed
/// `record`, trying only the users who may use `server_name` (which also bounds the digest
/// work). [`FakeTlsClient::user`] is an index into `users`. This is the whole decision
/// between the MTProto core and the route's backend, short of the replay cache.
///
/// From [`PARALLEL_FROM`](crate::mtproto::faketls::PARALLEL_FROM) candidates for this name
/// on (not users in the whole list), the check runs off the runtime's worker and over the
/// cores ([`verify_client_hello`]).
pub fn check_hello(
    users: &[MtprotoUser],
    record: &[u8],
    server_name: Option<&str>,
    now_unix: u64,
    max_skew: Duration,
) -> Result<FakeTlsClient, FakeTlsReject> {
    let name = server_name.map(|n| n.trim_end_matches('.').to_ascii_lowercase());
    let allowed = |user: &&MtprotoUser| user.policy.allows_name(name.as_deref());
    let mut auth = verify_client_hello(
        record,
        users.iter().filter(allowed).map(|user| &user.secret),
        now_unix,
        max_skew,
    )?;
    // From the position among the candidates back to the index in `users` (no list of
    // candidates is kept: one more pass over the policies, on success only).
    auth.user = users
        .iter()
        .enumerate()
        .filter(|(_, user)| allowed(user))
        .nth(auth.user)
        .map_or(auth.user, |(index, _)| index);
    Ok(auth)
}

/// Checks a TLS ClientHello that reached an `mtproto: true` route and serves it if it is a
/// fake-TLS client. `peeked` holds every byte read so far (the hello and anything after it);
/// the session ends when `shutdown` finds it quiet.
pub async fn fake_tls(
    client: TcpStream,
    client_ip: IpAddr,
    hello: HelloView<'_>,
    peeked: Vec<u8>,
    mirror: Mirror<'_>,
    core: Core<'_>,
    shutdown: &Shutdown,
) -> Gate {
    let Core { settings, state } = core;
    let verified = check_hello(
        &settings.users,
        hello.single_record,
        hello.server_name,
        unix_now(),
        settings.max_clock_skew,
    );
    let auth = match verified {
        Ok(auth) => auth,
        Err(reject) => {
            if !matches!(reject, FakeTlsReject::Malformed) {
                auth_failed(client_ip, &reject.to_string());
            }
            return Gate::Fallback {
                client,
                bytes: peeked,
            };
        }
    };
    if !state.replay.insert_if_new(&auth.random).await {
        auth_failed(client_ip, "replayed handshake");
        return Gate::Fallback {
            client,
            bytes: peeked,
        };
    }
    let user = &settings.users[auth.user];
    let Some(runtime) = state.users.get(auth.user) else {
        return Gate::Fallback {
            client,
            bytes: peeked,
        };
    };
    let admission = match runtime.admit(&user.policy, client_ip, users::unix_now()) {
        Ok(admission) => admission,
        Err(refusal) => {
            user_refused(&user.name, refusal, client_ip);
            return Gate::Fallback {
                client,
                bytes: peeked,
            };
        }
    };
    let raw_hello = peeked.get(..hello.raw_len).unwrap_or_default();
    let shape = flight_shape(&mirror, raw_hello, hello, &state.profiles).await;
    let after_hello = peeked.get(hello.raw_len..).unwrap_or_default().to_vec();
    let outcome = serve_faketls(
        client,
        after_hello,
        &auth,
        hello.session_id,
        &shape,
        record_sizing(&mirror, &state.profiles),
        settings,
        admission,
        &state.middle,
        shutdown,
    )
    .await;
    let mut hello_bytes = peeked;
    hello_bytes.truncate(hello.raw_len);
    finish(outcome, hello_bytes, settings)
}

/// The sizes of the records after the fake flight: the site's as learned from a download
/// ([`crate::mtproto::site_sample`]), unless the route's `mimic` is `off`.
fn record_sizing(mirror: &Mirror<'_>, store: &ProfileStore) -> RecordSizing {
    if mirror.target.mimic == MimicMode::Off {
        return RecordSizing::default();
    }
    store.sizing(mirror.route)
}

/// The shape of the fake flight for this hello, by the route's `mimic` mode: the backend's
/// live answer to the client's own hello (`raw_hello`, as the client sent it), the profile
/// learned from its last answer to a hello of the same shape, or the fixed shape. A backend
/// known not to be mirrorable (TLS 1.2, no TLS) is not asked again for [`REFRESH_LEARNED`].
/// Which shape serves is logged once per route and change, with the reason; a fixed shape is
/// never used silently.
async fn flight_shape(
    mirror: &Mirror<'_>,
    raw_hello: &[u8],
    hello: HelloView<'_>,
    store: &Arc<ProfileStore>,
) -> FlightProfile {
    let fixed = || FlightProfile::fixed(hello.cipher_suites, random_cert_len());
    let route = mirror.route;
    if mirror.target.mimic == MimicMode::Off {
        announce(store, route, ServingMode::Fixed, "mimic: off");
        return fixed();
    }
    let shape = HelloShape::of(hello.single_record, hello.cipher_suites);
    let learned = store.get(route, &shape);
    let fresh = learned
        .as_ref()
        .is_some_and(|l| l.at.elapsed() <= REFRESH_LEARNED);
    // Learned mode serves what it has; either mode skips a backend known to be unmatchable.
    let use_learned = match &learned {
        Some(l) => mirror.target.mimic == MimicMode::Learned || (l.answer.is_err() && fresh),
        None => false,
    };
    if let (true, Some(learned)) = (use_learned, &learned) {
        if !fresh {
            refresh_in_background(mirror, raw_hello, hello.session_id, learned, &shape, store);
        }
        return match &learned.answer {
            Ok(profile) => {
                announce(store, route, ServingMode::Learned, "mimic: learned");
                profile.clone()
            }
            Err(why) => {
                announce(store, route, ServingMode::Fixed, why);
                fixed()
            }
        };
    }
    let serving = match mirror.target.mimic {
        MimicMode::Live => ServingMode::Live,
        _ => ServingMode::Learned,
    };
    match live_profile(mirror, raw_hello, hello.session_id).await {
        Ok(profile) => {
            store.learn(route, &shape, Ok(profile.clone()));
            announce(store, route, serving, "the backend answered");
            profile
        }
        Err(error) => {
            let why = format!("the backend's answer cannot be mirrored: {error}");
            // What the backend is (TLS 1.2, not TLS) is remembered; a failed connect is not.
            if matches!(error, LiveError::Mimic(_)) {
                store.learn(route, &shape, Err(why.clone()));
            }
            match learned.and_then(|l| l.answer.ok()) {
                Some(profile) => {
                    announce(store, route, ServingMode::Learned, &why);
                    profile
                }
                None => {
                    announce(store, route, ServingMode::Fixed, &why);
                    fixed()
                }
            }
        }
    }
}

/// Why a live mirror gave no profile.
#[derive(Debug, thiserror::Error)]
enum LiveError {
    #[error("{0}")]
    Mirror(#[from] MirrorError),
    #[error("{0}")]
    Mimic(#[from] MimicError),
}

/// The backend's answer to `raw_hello`, as a profile.
async fn live_profile(
    mirror: &Mirror<'_>,
    raw_hello: &[u8],
    session_id: &[u8],
) -> Result<FlightProfile, LiveError> {
    let answer = mirror::backend_flight(
        &mirror.pool,
        mirror.client,
        &mirror.head,
        raw_hello,
        mirror.budget,
        &mirror.outbound,
    )
    .await?;
    Ok(FlightProfile::from_backend(&answer, session_id)?)
}

/// Re-learns the route's answer to hellos of `shape` with this one, without holding the
/// client up. The old answer is stamped fresh first, so the hellos that follow do not start
/// refreshes of their own; if the backend cannot be reached the old answer serves another
/// period.
fn refresh_in_background(
    mirror: &Mirror<'_>,
    raw_hello: &[u8],
    session_id: &[u8],
    learned: &Learned,
    shape: &HelloShape,
    store: &Arc<ProfileStore>,
) {
    store.learn(mirror.route, shape, learned.answer.clone());
    let (route, target, shape) = (
        mirror.route.to_string(),
        mirror.target.clone(),
        shape.clone(),
    );
    let (head, budget, outbound) = (mirror.head.clone(), mirror.budget, mirror.outbound.clone());
    let (pool, client) = (mirror.pool.clone(), mirror.client);
    let (raw_hello, session_id, store) = (raw_hello.to_vec(), session_id.to_vec(), store.clone());
    tokio::spawn(async move {
        let mirror = Mirror {
            route: &route,
            target: &target,
            head,
            budget,
            outbound,
            pool,
            client,
        };
        match live_profile(&mirror, &raw_hello, &session_id).await {
            Ok(profile) => store.learn(&route, &shape, Ok(profile)),
            Err(error @ LiveError::Mimic(_)) => {
                let why = format!("the backend's answer cannot be mirrored: {error}");
                store.learn(&route, &shape, Err(why));
            }
            Err(why) => {
                tracing::debug!(route, %why, "refreshing the learned flight profile failed")
            }
        }
    });
}

/// Logs which shape `route`'s fake flights have, when that changed.
fn announce(store: &ProfileStore, route: &str, mode: ServingMode, why: &str) {
    if !store.serving(route, mode) {
        return;
    }
    match mode {
        ServingMode::Fixed if why != "mimic: off" => tracing::warn!(
            route,
            mode = %mode,
            "MTProto fake flights use the FIXED shape, a known fingerprint: {why}"
        ),
        _ => tracing::info!(route, mode = %mode, "MTProto fake flights are shaped {mode}: {why}"),
    }
}

/// Tries a non-TLS connection as a plain obfuscated2 client; only for settings with
/// `allow_plain` on (the driver checks, the session does not). The session ends when
/// `shutdown` finds it quiet.
pub async fn plain(
    client: TcpStream,
    client_ip: IpAddr,
    peeked: Vec<u8>,
    core: Core<'_>,
    shutdown: &Shutdown,
) -> Gate {
    let Core { settings, state } = core;
    let outcome = serve_plain(client, peeked, settings, state, client_ip, shutdown).await;
    if let SessionOutcome::Fallback {
        reason: FallbackReason::Refused { user, refusal },
        ..
    } = &outcome
    {
        if let Some(user) = settings.users.get(*user) {
            user_refused(&user.name, *refusal, client_ip);
        }
    }
    finish(outcome, Vec::new(), settings)
}

/// Turns a session outcome into the gate's answer; `before` are the bytes read before the
/// session started (the hello), which a fallback must replay first.
fn finish(outcome: SessionOutcome, before: Vec<u8>, settings: &MtprotoSettings) -> Gate {
    let name = |user: usize| {
        settings
            .users
            .get(user)
            .map_or_else(String::new, |user| user.name.clone())
    };
    match outcome {
        SessionOutcome::Fallback {
            client,
            client_bytes,
            reason,
        } => {
            tracing::debug!(%reason, "not an MTProto session, forwarding to the route's backend");
            let mut bytes = before;
            bytes.extend_from_slice(&client_bytes);
            Gate::Fallback { client, bytes }
        }
        SessionOutcome::Committed(Committed::Rejected {
            user,
            reason,
            bytes_from_client,
            bytes_to_client,
        }) => Gate::Rejected {
            user: name(user),
            reason,
            from_client: bytes_from_client,
            to_client: bytes_to_client,
        },
        SessionOutcome::Committed(Committed::DcUnreachable { user, dc, error }) => {
            Gate::DcUnreachable {
                user: name(user),
                dc,
                error,
            }
        }
        SessionOutcome::Committed(Committed::Finished {
            user,
            dc,
            dc_addr,
            bytes_from_client,
            bytes_to_client,
            reason,
        }) => Gate::Served {
            user: name(user),
            dc,
            dc_addr,
            from_client: bytes_from_client,
            to_client: bytes_to_client,
            end: reason.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::users::UserPolicy;
    use crate::config::Secret;
    use crate::mtproto::faketls::PARALLEL_FROM;
    use frontgate_testkit::mtproto_client::build_hello;

    fn user(name: &str, byte: u8, routes: Option<&[&str]>) -> MtprotoUser {
        MtprotoUser {
            name: name.into(),
            secret: Secret::from_bytes([byte; 16]),
            policy: UserPolicy {
                routes: routes.map(|r| r.iter().map(|s| s.to_string()).collect()),
                ..UserPolicy::default()
            },
        }
    }

    #[test]
    fn the_signer_is_found_among_the_users_of_the_name_and_named_by_its_index() {
        let users = [
            user("a", 1, Some(&["other.example"])),
            user("b", 2, None),
            user("c", 3, Some(&["tg.example"])),
            user("d", 4, Some(&["other.example"])),
            user("e", 5, None),
        ];
        let now = 1_800_000_000;
        let skew = Duration::from_secs(600);
        for (index, sni) in [(2, "tg.example"), (4, "TG.example."), (1, "tg.example")] {
            let hello = build_hello(users[index].secret.as_bytes(), sni, &[0x1301], now as u32);
            let auth = check_hello(&users, &hello.record, Some(sni), now, skew).unwrap();
            assert_eq!(auth.user, index, "{sni}");
            assert_eq!(auth.secret, users[index].secret);
        }
        // A user bound to another name is not tried: its valid hello goes to the site.
        let hello = build_hello(
            users[3].secret.as_bytes(),
            "tg.example",
            &[0x1301],
            now as u32,
        );
        assert_eq!(
            check_hello(&users, &hello.record, Some("tg.example"), now, skew),
            Err(FakeTlsReject::NoUserMatched)
        );
        let auth = check_hello(&users, &hello.record, Some("other.example"), now, skew).unwrap();
        assert_eq!(auth.user, 3);
        // No SNI: only the users bound to no name.
        let hello = build_hello(users[2].secret.as_bytes(), "", &[0x1301], now as u32);
        assert_eq!(
            check_hello(&users, &hello.record, None, now, skew),
            Err(FakeTlsReject::NoUserMatched)
        );
        let hello = build_hello(users[4].secret.as_bytes(), "", &[0x1301], now as u32);
        assert_eq!(
            check_hello(&users, &hello.record, None, now, skew).map(|a| a.user),
            Ok(4)
        );
    }

    /// `users` users, of whom the first `candidates` may use `tg.example` and the rest only
    /// `other.example`; each secret's first four bytes carry the user's index.
    fn crowd(users: usize, candidates: usize) -> Vec<MtprotoUser> {
        (0..users)
            .map(|i| {
                let mut bytes = [7u8; 16];
                bytes[..4].copy_from_slice(&(i as u32).to_le_bytes());
                let routes = (i >= candidates).then(|| vec!["other.example".to_string()]);
                MtprotoUser {
                    name: format!("u{i}"),
                    secret: Secret::from_bytes(bytes),
                    policy: UserPolicy {
                        routes,
                        ..UserPolicy::default()
                    },
                }
            })
            .collect()
    }

    /// The large-set path hands the worker over (`block_in_place`) only where a runtime can:
    /// on a multi-thread worker, not on a current-thread runtime (where `block_in_place`
    /// panics), and the signer is found either way, with few or many candidates.
    #[test]
    fn large_sets_are_checked_on_every_kind_of_runtime() {
        let now = 1_800_000_000;
        let skew = Duration::from_secs(600);
        for candidates in [3, PARALLEL_FROM + 5] {
            let users = crowd(2 * PARALLEL_FROM + candidates, candidates);
            let signer = candidates - 1;
            let hello = build_hello(
                users[signer].secret.as_bytes(),
                "tg.example",
                &[0x1301],
                now as u32,
            );
            let check = || check_hello(&users, &hello.record, Some("tg.example"), now, skew);
            let multi = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .build()
                .unwrap();
            let current = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            for runtime in [&multi, &current] {
                let found = runtime.block_on(async { check() });
                assert_eq!(found.map(|a| a.user), Ok(signer), "{candidates} candidates");
            }
            assert_eq!(check().map(|a| a.user), Ok(signer), "no runtime");
        }
    }
}
