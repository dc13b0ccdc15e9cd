//! End to end: a tiny `hapair lab bench balancer` (1 trial, 1 s per measure) runs hapair and
//! haproxy side by side in a lab namespace and gets numbers for both, with every byte intact.
//!
//! Needs root, haproxy, iperf3 and wrk (`.ci/run` installs them). Outside CI a missing one
//! skips with a message; with `CI=true` a skip is a failure. It asserts that the bench works,
//! never a speed ratio.

use std::path::PathBuf;

use hapair::lab::lbbench::{self, Opts, Path3};
use hapair::lab::netns::require_root;

fn require_tools(test: &str) -> bool {
    let missing = lbbench::missing_tools();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{test}: {} not installed, and CI=true forbids skipping",
            missing.join(", ")
        );
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{test}: SKIPPED: {} not installed (apt-get install -y haproxy iperf3 wrk)",
        missing.join(", ")
    );
    false
}

#[test]
fn bench_balancer_smoke() {
    if !require_root("bench_balancer_smoke") || !require_tools("bench_balancer_smoke") {
        return;
    }
    let opts = Opts {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_hapair")),
        trials: 1,
        secs: 1,
        verbose: false,
        hold: None,
    };
    let r = lbbench::run_with(&opts).expect("bench balancer runs");
    eprintln!("{}", r.table);
    for p in Path3::ALL {
        let s = r.path(p);
        let name = p.name();
        assert!(s.integrity_ok, "{name}: 8 MiB echo came back different");
        assert!(
            s.iperf_errors.is_empty(),
            "{name}: iperf3: {:?}",
            s.iperf_errors
        );
        assert_eq!(s.http_errors, 0, "{name}: wrk saw errors");
        assert_eq!(s.conn_failures, 0, "{name}: new connections failed");
        for (what, v) in [
            ("1-stream Gbit/s", &s.gbit_1),
            ("4-stream Gbit/s", &s.gbit_4),
            ("req/s", &s.rps),
            ("req/s, haproxy backend", &s.rps_hx),
            ("p99, haproxy backend", &s.p99_hx_ms),
            ("p99", &s.p99_ms),
            ("conns/s", &s.conns_per_s),
        ] {
            assert_eq!(v.len(), 1, "{name}: {what}: {v:?}");
            assert!(v[0] > 0.0, "{name}: {what}: {v:?}");
        }
    }
    assert!(r.rss_hapair.idle_kb > 0 && r.rss_haproxy.idle_kb > 0);
    for row in [
        "throughput 1 stream",
        "keep-alive req/s",
        "to haproxy backend: req/s",
        "new connections/s",
        "RSS idle",
    ] {
        assert!(r.table.contains(row), "table lacks {row:?}:\n{}", r.table);
    }
    // Six verdicts against haproxy, each saying in how many trials it held.
    let goals = r.table.lines().find(|l| l.starts_with("goals: ")).unwrap();
    assert_eq!(goals.matches("/1 trials)").count(), 6, "{goals}");
}
