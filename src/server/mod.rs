//! The running process: the [`gateway::Gateway`] that owns the listeners, the hot-swappable
//! configuration and the runtime resources; the accept loops; reload; shutdown.

pub mod gateway;
pub mod listener;
pub mod port_holder;
pub mod registry;
pub mod reload;
pub mod shutdown;
pub mod usage;
