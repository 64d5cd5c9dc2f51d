//! A background task tied to its owner's lifetime.
//!
//! Each ACME route owns one task, its driver. When a reload removes the route, its
//! `TlsTerminator` is dropped, and so must be the task: otherwise an ACME state would go on
//! renewing a certificate nobody serves.

use std::future::Future;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::tls::TlsError;

/// A spawned tokio task that is aborted when this value is dropped.
#[derive(Debug)]
pub(crate) struct BackgroundTask(JoinHandle<()>);

impl BackgroundTask {
    /// Spawns `task` on the current tokio runtime; fails (instead of panicking) outside one.
    pub(crate) fn spawn<F>(task: F) -> Result<Self, TlsError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let runtime = Handle::try_current().map_err(|_| TlsError::NoRuntime)?;
        Ok(Self(runtime.spawn(task)))
    }
}

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}
