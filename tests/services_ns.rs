//! statestored and catalogd follow the master role, end to end: two real
//! `hapair run` processes in namespaces supervise stand-in daemons.
//! Root only (CI is root); with CI=true a skip is a failure.

use std::sync::Mutex;
use std::time::Duration;

use hapair::lab::netns::require_root;
use hapair::lab::pairlab::{LabOptions, PairLab};

static SERIAL: Mutex<()> = Mutex::new(());

fn lab(opts: LabOptions) -> PairLab {
    let mut l =
        PairLab::new(std::path::Path::new(env!("CARGO_BIN_EXE_hapair")), opts).expect("lab");
    l.start(0).unwrap();
    l.start(1).unwrap();
    l
}

fn opts() -> LabOptions {
    LabOptions {
        impala_services: true,
        ..LabOptions::default()
    }
}

/// Pids of stand-ins whose command line names `tag` (e.g. "proxy1-catalogd").
/// Read from /proc; the lab started them, nothing is signalled here.
fn pids(tag: &str) -> Vec<u32> {
    let mut out = vec![];
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_standin = args.contains(&&b"standin"[..]);
        if is_standin && args.contains(&tag.as_bytes()) {
            // Zombies are not running.
            let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if !st.contains(") Z ") {
                out.push(pid);
            }
        }
    }
    out
}

fn catalogds() -> (usize, usize) {
    (pids("proxy1-catalogd").len(), pids("proxy2-catalogd").len())
}

/// GET /healthz of catalogd inside node i's namespace.
fn catalogd_healthy(l: &PairLab, i: usize) -> bool {
    l.proxies[i]
        .in_ns(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(hapair::lab::standin::http_get(
                "127.0.0.1:25020".parse().unwrap(),
                "/healthz",
                Duration::from_millis(200),
            ))
            .map(|(code, _)| code == 200)
            .unwrap_or(false)
        })
        .unwrap_or(false)
}

#[test]
fn catalogd_runs_on_the_master_only_and_statestored_on_both() {
    if !require_root("services_follow_master") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let l = lab(opts());
    assert!(l.wait_for(Duration::from_secs(5), |l| catalogd_healthy(l, 0)));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(catalogds(), (1, 0), "catalogd on proxy1 (master) only");
    assert_eq!(pids("proxy1-statestored").len(), 1);
    assert_eq!(
        pids("proxy2-statestored").len(),
        1,
        "statestored warm on the backup"
    );
}

#[test]
fn link_down_failover_runs_catalogd_on_the_new_master_within_1s() {
    if !require_root("services_crash_takeover") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let l = lab(opts());
    assert!(l.wait_for(Duration::from_secs(5), |l| catalogd_healthy(l, 0)));
    l.set_link(0, false).unwrap();
    assert!(
        l.wait_for(Duration::from_secs(3), |l| catalogd_healthy(l, 1)),
        "catalogd healthy on proxy2"
    );
    let healthy_ms = l.now_ms();
    // When proxy2 took the role (and the VIP), from its own log.
    let claimed_ms = l.log_lines(1, "role backup => master")[0].at_ms;
    let took = healthy_ms - claimed_ms;
    println!("VIP claimed -> catalogd healthy on the new master: {took:.0} ms (healthz polled every ~10 ms)");
    assert!(took < 1000.0, "took {took} ms");
    // The cut-off node stopped its copy: it is in fault, not master.
    assert!(
        l.wait_for(Duration::from_secs(3), |_| catalogds() == (0, 1)),
        "{:?}",
        catalogds()
    );
}

#[test]
fn graceful_handover_never_runs_two_catalogds() {
    if !require_root("services_never_two") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut l = lab(opts());
    assert!(l.wait_for(Duration::from_secs(5), |l| catalogd_healthy(l, 0)));
    std::thread::sleep(Duration::from_millis(300));
    // Watch both nodes every 2 ms throughout the handover.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let watcher = std::thread::spawn(move || {
        let (mut samples, mut worst) = (0usize, 0usize);
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let (a, b) = catalogds();
            worst = worst.max(a + b);
            samples += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        (samples, worst)
    });
    l.terminate(0, Duration::from_secs(10)).unwrap();
    assert!(l.wait_for(Duration::from_secs(3), |l| catalogd_healthy(l, 1)));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (samples, worst) = watcher.join().unwrap();
    println!("{samples} samples during the handover, at most {worst} catalogd running");
    assert!(samples > 20, "watched throughout");
    assert_eq!(worst, 1, "never two catalogds");
    assert_eq!(catalogds(), (0, 1));
    assert!(l.holds_vip(1));
}

#[test]
fn crash_looping_catalogd_moves_the_master_to_the_healthy_peer() {
    if !require_root("services_crash_loop") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut o = opts();
    o.catalogd_args[0] = vec!["--crash-after".into(), "20ms".into()];
    let l = lab(o);
    assert!(
        l.wait_for(Duration::from_secs(8), |l| l.holds_vip(1)
            && catalogd_healthy(l, 1)),
        "proxy2 took over and runs a healthy catalogd"
    );
    assert!(
        l.wait_for(Duration::from_millis(500), |l| !l.holds_vip(0)),
        "proxy1 released after its linger"
    );
    let reasons = l.log_lines(0, "restarting in");
    assert!(!reasons.is_empty(), "proxy1 logs why catalogd restarts");
    assert!(
        reasons[0].message.contains("exit code 1"),
        "{}",
        reasons[0].message
    );
    let w = l.log_lines(0, "effective priority weight changed");
    assert!(
        w.iter()
            .any(|x| x.fields.get("weight").and_then(|v| v.as_i64()) == Some(-100)),
        "priority lowered by the service weight"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        catalogds().0,
        0,
        "no catalogd left on proxy1 once it is backup"
    );
}

#[test]
fn kill_9_of_hapair_leaves_no_service_child() {
    if !require_root("services_no_orphans") {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut l = lab(opts());
    assert!(l.wait_for(Duration::from_secs(5), |l| catalogd_healthy(l, 0)));
    let before: Vec<u32> = pids("proxy1-catalogd")
        .into_iter()
        .chain(pids("proxy1-statestored"))
        .collect();
    assert_eq!(before.len(), 2);
    l.kill9(0).unwrap();
    let gone = l.wait_for(Duration::from_secs(2), |_| {
        before.iter().all(|p| {
            !std::path::Path::new(&format!("/proc/{p}")).exists()
                || std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ")
        })
    });
    assert!(
        gone,
        "service children of the killed hapair are gone: {before:?}"
    );
}
