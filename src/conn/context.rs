//! What every connection needs from the running gateway: the [`Snapshot`] it is served with
//! (taken once at accept) and the process-wide counters and guards.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::admission::limits::ConnectionCounts;
use crate::admission::loop_guard::OutboundAddrs;
use crate::config::{AddressSet, Config, TlsSettings};
use crate::forward::pool::Pools;
use crate::mtproto::state::MtprotoState;
use crate::ops::metrics::Metrics;
use crate::tls::TlsTerminator;

/// One configuration and the runtime resources the gateway built for it. Immutable: a reload
/// builds a new snapshot (reusing the resources whose settings did not change) and swaps it in;
/// connections already running keep the one they took.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated route file.
    pub config: Arc<Config>,
    /// The running terminator of every `tls:` route, by its settings.
    pub terminators: HashMap<TlsSettings, Arc<TlsTerminator>>,
    /// The health and counts of every route's backends, by pool settings (routes with equal
    /// pools share one).
    pub pools: Pools,
    /// The MTProto core's replay cache and counters, when `mtproto:` is configured.
    pub mtproto: Option<MtprotoState>,
    /// The networks of the configuration's `deny_file`, as read when the snapshot was built.
    pub deny_file: Option<AddressSet>,
}

/// Shared by the gateway and every connection task.
#[derive(Debug)]
pub struct Context {
    /// The snapshot new connections take.
    pub current: ArcSwap<Snapshot>,
    /// Live connection counts for `limits:`.
    pub counts: Arc<ConnectionCounts>,
    /// Our own backend connections, to refuse fronting loops.
    pub outbound: Arc<OutboundAddrs>,
    /// Counters exported on `metrics.listen`.
    pub metrics: Arc<Metrics>,
}
