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
//!
//! The threads run as SCHED_BATCH (see [`batch_policy`]): when the CPUs are busy, a woken
//! connection thread waits for the running task's slice instead of preempting it.

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
            if let Err(e) = batch_policy() {
                tracing::debug!("connection thread {i}: stays SCHED_OTHER: {e}");
            }
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

/// Puts the calling thread in SCHED_BATCH: same share of the CPU as SCHED_OTHER, but its
/// wake-ups do not preempt the task running on that CPU (the tick still does).
///
/// Why: with every CPU busy, an event-loop thread that preempts on each wake-up may run for
/// one or two requests, sleep, and be woken again, and the thread it preempted (a backend,
/// the client) loses its batch too. Seen in the bench lab (2 cores, wrk -c50, haproxy in
/// HTTP mode as the backend): hapair's connection threads slept 0.68 times per request
/// against haproxy's 0.04, at 23–31 k req/s against 34–42 k. Over six interleaved rounds
/// there: SCHED_OTHER median 33 k req/s, p99 6.5 ms; SCHED_BATCH 34.5 k, p99 4.5 ms
/// (haproxy 38.5 k, 3.1 ms). Where the threads did not fall into that pattern, req/s, new
/// conns/s and iperf3 measured the same, but the p99 behind the haproxy backend was 4.2 ms
/// against 3.75 (8 rounds), likely because with both CPUs held by threads that rarely sleep,
/// a woken batch thread waits for the tick (4 ms at HZ=250). That bounded cost is taken for
/// the worst case it removes. An idle CPU still runs a woken batch thread at once, so an
/// unloaded proxy answers as fast as before. The heartbeat thread keeps SCHED_OTHER.
fn batch_policy() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; param is a valid sched_param. Unprivileged
    // threads may switch between SCHED_OTHER and SCHED_BATCH.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
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
