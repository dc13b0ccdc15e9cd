//! The namespace lab: network namespaces for the two proxies, a client and a
//! witness; stand-in Impala daemons; drills and benchmarks.

pub mod bench;
pub mod cli;
pub mod client;
pub mod keepalived;
pub mod lbbench;
pub mod netns;
pub mod pairlab;
pub mod plot;
pub mod sniff;
pub mod standin;
pub mod timeline;
