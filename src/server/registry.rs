//! The runtime resources a configuration needs, kept across reloads: a `tls:` route's
//! terminator (and so its ACME state) while its settings stay the same, the MTProto users'
//! counters while the user stays, the replay cache while its size stays; and the networks of
//! its `deny_file`, read from disk for each snapshot; and each route's backend pool (its
//! servers' health, live counts and active checks) while the pool's settings stay the same. [`build`] makes the [`Snapshot`] for a
//! new configuration from the running one.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::config::netpolicy::{self, DenyFileError, DENY_FILE_MAX_BYTES};
use crate::config::pool::PoolSettings;
use crate::config::{Action, AddressSet, Config, Forward, Route, TlsSettings};
use crate::conn::context::Snapshot;
use crate::forward::health_check;
use crate::forward::pool::Pool;
use crate::mtproto::middle::MiddleProxy;
use crate::mtproto::shared_state::SharedState;
use crate::mtproto::state::MtprotoState;
use crate::tls::{TlsError, TlsTerminator};

/// A `tls:` route's terminator could not start.
#[derive(Debug, thiserror::Error)]
#[error("route {route}: {source}")]
pub struct TerminatorError {
    /// The route's label.
    pub route: String,
    /// The key path of the route file's node the error is about (`routes[2].tls.cert`).
    pub key: String,
    /// Why (boxed: TLS errors are large and this one is rare).
    pub source: Box<TlsError>,
}

impl TerminatorError {
    fn new(index: usize, route: &Route, settings: &TlsSettings, source: TlsError) -> Self {
        TerminatorError {
            route: route.label.clone(),
            key: format!("routes[{index}].{}", source.route_key(&settings.source)),
            source: Box::new(source),
        }
    }
}

/// Why a configuration's runtime resources could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A `tls:` route's terminator could not start.
    #[error(transparent)]
    Tls(#[from] TerminatorError),
    /// The `deny_file` could not be read or has a bad line.
    #[error(transparent)]
    DenyFile(#[from] DenyFileError),
}

/// Checks what the configuration names on disk (certificate files, ACME cache directories,
/// the deny file) as starting it would, without starting anything: `frontgate check`'s disk
/// probe.
pub fn probe(config: &Config) -> Result<(), BuildError> {
    read_deny_file(config)?;
    // Named routes are in file order: the index is the one of `routes:`.
    for (index, route) in config.routes.routes().iter().enumerate() {
        if let Action::Terminate(terminate) = &route.action {
            TlsTerminator::check(&terminate.settings)
                .map_err(|e| TerminatorError::new(index, route, &terminate.settings, e))?;
        }
    }
    Ok(())
}

/// The snapshot serving `config`, reusing what `running` (the snapshot serving now, if any)
/// already has for equal settings. Blocking file I/O: call it off the async runtime.
pub fn build(config: Config, running: Option<&Snapshot>) -> Result<Snapshot, BuildError> {
    let deny_file = read_deny_file(&config)?;
    let mut terminators = HashMap::new();
    for (index, route) in config.routes.routes().iter().enumerate() {
        let Action::Terminate(terminate) = &route.action else {
            continue;
        };
        let reused = running.and_then(|r| r.terminators.get(&terminate.settings));
        let terminator = match reused {
            Some(existing) => existing.clone(),
            None => Arc::new(
                TlsTerminator::start(terminate.settings.clone())
                    .map_err(|e| TerminatorError::new(index, route, &terminate.settings, e))?,
            ),
        };
        terminators.insert(terminate.settings.clone(), terminator);
    }
    let mtproto = config.mtproto.as_ref().map(|settings| {
        let previous =
            running.and_then(|r| Some((r.config.mtproto.as_ref()?, r.mtproto.as_ref()?)));
        let state = match previous {
            Some((old_settings, old_state)) => {
                MtprotoState::follow(settings, old_settings, old_state)
            }
            None => MtprotoState::new(settings),
        };
        if MiddleProxy::wanted(settings) {
            state.middle.start();
        }
        state.sharing(settings, shared_state(&config, running))
    });
    let pools = pools(&config, running);
    Ok(Snapshot {
        config: Arc::new(config),
        terminators,
        pools,
        mtproto,
        deny_file,
    })
}

/// The fleet-wide state for `config`'s `state.redis`: the running one when its settings are
/// the same (its connection and outage bookkeeping carry on), else a new one (which needs
/// the tokio runtime; without one, as in `frontgate check`, there is none).
fn shared_state(config: &Config, running: Option<&Snapshot>) -> Option<Arc<SharedState>> {
    let settings = config.redis.as_ref()?;
    let running = running
        .and_then(|r| r.mtproto.as_ref()?.shared().cloned())
        .filter(|shared| shared.settings() == settings);
    if running.is_some() {
        return running;
    }
    tokio::runtime::Handle::try_current().ok()?;
    match SharedState::start(settings) {
        Ok(shared) => Some(shared),
        Err(error) => {
            tracing::error!(redis = %settings.shown(), %error, "Redis cannot be used; state stays local");
            None
        }
    }
}

/// The forward settings of every route of `config`, `default:` and `non_tls:` included.
pub fn forwards(config: &Config) -> impl Iterator<Item = (&str, &Forward)> {
    let table = &config.routes;
    let extra = table.default_route().into_iter().chain(table.for_non_tls());
    table.routes().iter().chain(extra).map(|route| {
        let forward = match &route.action {
            Action::Forward(forward) => forward,
            Action::Terminate(terminate) => &terminate.forward,
            Action::Mtproto(mtproto) => &mtproto.forward,
        };
        (route.label.as_str(), forward)
    })
}

/// A pool for every distinct pool setting of `config`: the running one when `running` has
/// it (its health and counts carry on), else a new one whose checks start now (on the
/// current tokio runtime; without one, as in `frontgate check`, none are started).
fn pools(config: &Config, running: Option<&Snapshot>) -> HashMap<PoolSettings, Arc<Pool>> {
    let mut pools = HashMap::new();
    let can_spawn = tokio::runtime::Handle::try_current().is_ok();
    for (_, forward) in forwards(config) {
        if pools.contains_key(&forward.pool) {
            continue;
        }
        let pool = match running.and_then(|r| r.pools.get(&forward.pool)) {
            Some(existing) => existing.clone(),
            None => {
                let pool = Pool::new(forward.pool.clone());
                if can_spawn {
                    health_check::spawn(&pool);
                }
                pool
            }
        };
        pools.insert(forward.pool.clone(), pool);
    }
    pools
}

/// The networks of `config`'s deny file, if it names one (blocking file I/O).
fn read_deny_file(config: &Config) -> Result<Option<AddressSet>, DenyFileError> {
    let Some(path) = &config.deny_file else {
        return Ok(None);
    };
    let bytes = read_bounded(path)?;
    netpolicy::parse_netset(&bytes, &path.display().to_string()).map(Some)
}

/// A configuration input file's bytes (the deny file; the reload watcher reads the users
/// file so too), refused past [`DENY_FILE_MAX_BYTES`] without reading further
/// (blocking file I/O).
pub(crate) fn read_bounded(path: &Path) -> Result<Vec<u8>, DenyFileError> {
    let failed = |source| DenyFileError::Read {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(failed)?;
    let mut bytes = Vec::new();
    file.take(DENY_FILE_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > DENY_FILE_MAX_BYTES {
        return Err(DenyFileError::TooLarge {
            path: path.display().to_string(),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deny_file_is_read_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deny.netset");
        let missing = read_bounded(&path).unwrap_err().to_string();
        assert!(missing.starts_with("cannot read deny_file "), "{missing}");
        let file = std::fs::File::create(&path).unwrap();
        // Sparse: no disk is spent on the zeros.
        file.set_len(DENY_FILE_MAX_BYTES).unwrap();
        assert_eq!(
            read_bounded(&path).unwrap().len() as u64,
            DENY_FILE_MAX_BYTES
        );
        file.set_len(DENY_FILE_MAX_BYTES + 1).unwrap();
        assert!(matches!(
            read_bounded(&path),
            Err(DenyFileError::TooLarge { .. })
        ));
    }
}
