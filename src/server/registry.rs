//! The runtime resources a configuration needs, kept across reloads: a `tls:` route's
//! terminator (and so its ACME state) while its settings stay the same, the MTProto users'
//! counters while the user stays, the replay cache while its size stays. [`build`] makes the
//! [`Snapshot`] for a new configuration from the running one.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Action, Config, Route, TlsSettings};
use crate::conn::context::Snapshot;
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

/// Checks what the `tls:` routes name on disk (certificate files, ACME cache directories)
/// as starting them would, without starting anything: `frontgate check`'s disk probe.
pub fn probe(config: &Config) -> Result<(), TerminatorError> {
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
/// already has for equal settings.
pub fn build(config: Config, running: Option<&Snapshot>) -> Result<Snapshot, TerminatorError> {
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
        match previous {
            Some((old_settings, old_state)) => {
                MtprotoState::follow(settings, old_settings, old_state)
            }
            None => MtprotoState::new(settings),
        }
    });
    Ok(Snapshot {
        config: Arc::new(config),
        terminators,
        mtproto,
    })
}
