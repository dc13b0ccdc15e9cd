//! hapair: an HA pair for the proxy hosts in front of an Impala cluster.
//!
//! - `pair`: the pure heartbeat state machine (no I/O, no clock).
//! - `wire`: the heartbeat packet format and its HMAC.
//! - `net`: the pair's side effects: UDP, VIPs over netlink, gratuitous ARP.
//! - `driver`: the tokio loop that feeds the machine and runs its actions.
//! - `balancer`, `health`: the embedded L4 balancer and its checks.
//! - `supervisor`: statestored/catalogd children that follow the role.
//! - `admin`: status page, JSON, metrics, control.
//! - `lab`: network-namespace lab, stand-in daemons, drills, benchmarks.
//! - `zk`: ZooKeeper service discovery (HiveServer2 format), kept by the master.
//! - `import`: haproxy.cfg and keepalived.conf → a hapair config.

pub mod admin;
pub mod balancer;
pub mod config;
pub mod daemon;
pub mod driver;
pub mod events;
pub mod health;
pub mod import;
pub mod lab;
pub mod net;
pub mod pair;
pub mod supervisor;
pub mod wire;
pub mod zk;
