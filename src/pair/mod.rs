//! The pair protocol. Pure: no sockets, no clocks. See `machine` for the state
//! machine and `types` for what it exchanges.

pub mod machine;
pub mod types;

pub use types::{Heartbeat, Kind, Role, Time};

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
