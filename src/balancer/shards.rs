//! Connection threads: every proxied connection lives on one of N single-threaded runtimes
//! (N = the CPUs this process may use).
//!
//! Why not the daemon's work-stealing runtime: a connection's readiness events, its task
//! and its socket buffers then stay on one thread, as in haproxy's per-thread event loops,
//! instead of waking another worker and migrating. Measured with `hapair lab bench
//! balancer` on 2 cores (keep-alive, wrk -c50): 0.86×–0.87× haproxy's req/s on the shared
//! runtime, 1.04×–1.15× here (with the syscall savings of the same change).
//!
//! Every thread waits on every listening socket and accepts; a connection stays on the
//! thread that accepted it unless that thread already serves [`SLACK`] more connections than
//! the least loaded one (see [`Shards::place`]). Staying saves a cross-thread wake-up on
//! the way to the server: with the hand-over on every connection, new connections/s were
//! 0.89×–0.92× haproxy's; accepting where served, 0.97×–1.00×. The placement rule keeps
//! a burst of connections (wrk opening 50 at once) from piling up on one thread.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

use tokio::runtime::Handle;

/// How many more connections a thread may serve than the least loaded one before it hands a
/// new connection over.
pub const SLACK: usize = 2;

pub(crate) struct Shard {
    pub handle: Handle,
    /// Connections this thread serves now.
    conns: AtomicUsize,
}

pub(crate) struct Shards {
    shards: Vec<Shard>,
}

impl Shards {
    /// The process's connection threads, started on first use; they live as long as the
    /// process (a stopped balancer cancels its connections through its own token).
    pub fn get() -> &'static Shards {
        static SHARDS: OnceLock<Shards> = OnceLock::new();
        SHARDS.get_or_init(|| {
            let n = std::thread::available_parallelism().map_or(2, |n| n.get());
            let shards = (0..n)
                .filter_map(start)
                .map(|handle| Shard {
                    handle,
                    conns: AtomicUsize::new(0),
                })
                .collect();
            Shards { shards }
        })
    }

    /// Every connection thread; empty if none could be started (the caller then runs
    /// connections on its own runtime).
    pub fn all(&'static self) -> &'static [Shard] {
        &self.shards
    }

    /// Where a connection accepted on thread `here` runs: there, unless another thread
    /// serves at least [`SLACK`] fewer; then the least loaded. The returned guard counts the
    /// connection on that thread until dropped.
    pub fn place(&'static self, here: usize) -> (usize, Counted) {
        let at = placement(
            here,
            |i| self.shards[i].conns.load(Relaxed),
            self.shards.len(),
        );
        self.shards[at].conns.fetch_add(1, Relaxed);
        (at, Counted(&self.shards[at].conns))
    }
}

/// The rule of [`Shards::place`] over `n` threads with loads `load(i)`.
fn placement(here: usize, load: impl Fn(usize) -> usize, n: usize) -> usize {
    let least = (0..n).min_by_key(|&i| load(i)).unwrap_or(here);
    if load(here) >= load(least) + SLACK {
        least
    } else {
        here
    }
}

/// One connection counted on its thread.
pub(crate) struct Counted(&'static AtomicUsize);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

fn start(i: usize) -> Option<Handle> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("hapair-conn-{i}"))
        .spawn(move || {
            super::pool::Striped::use_stripe(i);
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("connection thread {i}: cannot build its runtime: {e}");
                    return;
                }
            };
            let _ = tx.send(rt.handle().clone());
            rt.block_on(std::future::pending::<()>());
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start connection thread {i}: {e}");
        return None;
    }
    rx.recv().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Places `k` connections that all arrive on thread 0 (a burst it accepts alone).
    fn burst(k: usize, n: usize) -> Vec<usize> {
        let mut loads = vec![0usize; n];
        for _ in 0..k {
            let at = placement(0, |i| loads[i], n);
            loads[at] += 1;
        }
        loads
    }

    #[test]
    fn a_burst_accepted_by_one_thread_is_spread_within_the_slack() {
        for n in [1, 2, 4] {
            let loads = burst(50, n);
            assert_eq!(loads.iter().sum::<usize>(), 50);
            let (lo, hi) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
            assert!(hi - lo <= SLACK, "{n} threads: {loads:?}");
        }
    }

    #[test]
    fn a_connection_stays_where_accepted_while_loads_are_close() {
        let loads = [3usize, 2];
        assert_eq!(placement(0, |i| loads[i], 2), 0);
        assert_eq!(placement(1, |i| loads[i], 2), 1);
        let loads = [4usize, 2];
        assert_eq!(placement(0, |i| loads[i], 2), 1);
    }
}
