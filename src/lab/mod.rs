//! lab

pub mod client;
pub mod plot;
pub mod sniff;
pub mod standin;
pub mod timeline;
