//! Connection threads: every proxied connection lives on one of N single-threaded runtimes
//! (N = the CPUs this process may use), handed out in turn when it is accepted.
//!
//! Why not the daemon's work-stealing runtime: a connection's readiness events, its task
//! and its socket buffers then stay on one thread, as in haproxy's per-thread event loops,
//! instead of waking another worker and migrating. Measured with `hapair lab bench
//! balancer` on 2 cores (keep-alive, wrk -c50): 0.86×–0.87× haproxy's req/s on the shared
//! runtime, 1.04×–1.15× here (with the syscall savings of the same change).
//!
//! Accepting stays on the daemon's runtime (maxconn, reload and listener hand-over live
//! there); the accepted socket moves to its thread's epoll.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::OnceLock;

use tokio::runtime::Handle;

pub(crate) struct Shards {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl Shards {
    /// The process's connection threads, started on first use; they live as long as the
    /// process (a stopped balancer cancels its connections through its own token).
    pub fn get() -> &'static Shards {
        static SHARDS: OnceLock<Shards> = OnceLock::new();
        SHARDS.get_or_init(|| {
            let n = std::thread::available_parallelism().map_or(2, |n| n.get());
            let handles = (0..n).filter_map(start).collect::<Vec<_>>();
            Shards {
                handles,
                next: AtomicUsize::new(0),
            }
        })
    }

    /// The thread for the next connection, or `None` if none could be started (the
    /// caller then runs the connection on its own runtime).
    pub fn next(&self) -> Option<&Handle> {
        if self.handles.is_empty() {
            return None;
        }
        Some(&self.handles[self.next.fetch_add(1, Relaxed) % self.handles.len()])
    }
}

fn start(i: usize) -> Option<Handle> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("hapair-conn-{i}"))
        .spawn(move || {
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
