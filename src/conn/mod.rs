//! One client connection: the driver that takes it from accept to its single log line
//! ([`driver`]), the snapshot and counters it is served with ([`context`]), and the
//! ClientHello peek ([`hello`]) and the routing decision ([`router`]).

pub mod context;
pub mod driver;
pub mod hello;
pub mod router;
