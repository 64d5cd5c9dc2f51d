//! The routing decision: which route of the table a connection takes, from what its first
//! flight turned out to be.

use std::sync::Arc;

use crate::config::{Route, RouteTable};
use crate::conn::hello::FirstFlight;

/// The route for `flight`: by server name for a ClientHello, the no-SNI route (`default`)
/// for a hello that could not be parsed, `non_tls` for anything else. `None`: close it.
pub fn decide<'a>(table: &'a RouteTable, flight: &FirstFlight) -> Option<&'a Arc<Route>> {
    match flight {
        FirstFlight::Tls(hello) => table.for_server_name(hello.server_name.as_deref()),
        FirstFlight::Defective(defect) => {
            tracing::debug!(%defect, "unusable ClientHello, routing as no SNI");
            table.for_server_name(None)
        }
        FirstFlight::NotTls => table.for_non_tls(),
    }
}
