//! The supervisor with real child processes: stand-in statestored/catalogd
//! (`hapair lab standin ...`) on 127.0.0.1, each test on its own free ports.

use std::io::BufRead;
use std::time::{Duration, Instant};

use hapair::events::{Event, EventLog};
use hapair::supervisor::config::{validate_all, RawService};
use hapair::supervisor::{ServiceConfig, ServiceState, Supervisor, SupervisorError};
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_hapair");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `[[service]]` block running a stand-in, with an http check on its /healthz.
/// `args`: extra stand-in flags; `keys`: extra TOML lines.
fn standin(name: &str, role: &str, args: &str, keys: &str) -> String {
    let (web, listen) = (free_port(), free_port());
    let mut cmd = vec![
        BIN.to_string(),
        "lab".into(),
        "standin".into(),
        role.into(),
        "--web".into(),
        format!("127.0.0.1:{web}"),
        "--listen".into(),
        format!("127.0.0.1:{listen}"),
        "--name".into(),
        format!("{name}-{}", std::process::id()),
    ];
    cmd.extend(args.split_whitespace().map(String::from));
    let cmd: Vec<String> = cmd.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "[[service]]\nname = \"{name}\"\ncommand = [{}]\ncheck = {{ type = \"http\", url = \"http://127.0.0.1:{web}/healthz\", interval = \"1s\", fall = 3 }}\n{keys}\n",
        cmd.join(", ")
    )
}

fn parse(text: &str) -> Vec<ServiceConfig> {
    #[derive(serde::Deserialize)]
    struct File {
        service: Vec<RawService>,
    }
    let f: File = toml::from_str(text).expect("toml");
    validate_all(&f.service, true).expect("valid services")
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

async fn until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !f() {
        assert!(
            Instant::now() < end,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn row(s: &Supervisor, name: &str) -> hapair::supervisor::ServiceStatus {
    s.snapshot()
        .into_iter()
        .find(|r| r.name == name)
        .expect("service row")
}

fn event_at(events: &[Event], prefix: &str) -> u64 {
    events
        .iter()
        .find(|e| e.message.starts_with(prefix))
        .unwrap_or_else(|| panic!("no event {prefix:?} in {events:#?}"))
        .at_ms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_starts_catalogd_after_statestored_and_stops_it() {
    let text = standin(
        "statestored",
        "statestored",
        "--ready-after 500ms",
        "run = \"always\"",
    ) + &standin(
        "catalogd",
        "catalogd",
        "",
        "run = \"master\"\nafter = [\"statestored\"]\nstop_timeout = \"2s\"",
    );
    let events = EventLog::default();
    let (gate_tx, gate) = watch::channel(true);
    let t0 = Instant::now();
    let sup = Supervisor::start(parse(&text), gate, events.clone());
    let mut master = sup.master_running();
    until("catalogd healthy", Duration::from_secs(5), || {
        row(&sup, "catalogd").state == ServiceState::Healthy
    })
    .await;
    eprintln!("cold start to catalogd healthy: {:?}", t0.elapsed());
    let ev = events.last(100);
    let ss_started = event_at(&ev, "statestored: started");
    let ss_healthy = event_at(&ev, "statestored: healthy");
    let cat_started = event_at(&ev, "catalogd: started");
    eprintln!(
        "statestored healthy {} ms after its start; catalogd started {} ms after that",
        ss_healthy - ss_started,
        cat_started - ss_healthy
    );
    assert!(
        cat_started >= ss_healthy,
        "catalogd started before statestored passed its check"
    );
    assert!(
        cat_started - ss_started >= 500,
        "catalogd started before statestored was ready"
    );
    assert!(*master.borrow_and_update());

    // Gate closed: catalogd stops, and master_running turns false only once it is reaped.
    let pid = row(&sup, "catalogd").pid.unwrap();
    gate_tx.send(false).unwrap();
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), master.wait_for(|m| !*m))
        .await
        .expect("master_running turns false")
        .unwrap();
    assert!(
        !alive(pid),
        "catalogd pid {pid} alive after master_running turned false"
    );
    eprintln!("gate false to catalogd reaped: {:?}", t.elapsed());
    assert_eq!(row(&sup, "catalogd").state, ServiceState::Stopped);
    assert_eq!(row(&sup, "statestored").state, ServiceState::Healthy);

    // Promotion with statestored already healthy: gate true → catalogd healthy.
    let mut took = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        gate_tx.send(true).unwrap();
        until("catalogd healthy again", Duration::from_secs(5), || {
            row(&sup, "catalogd").state == ServiceState::Healthy
        })
        .await;
        took.push(t.elapsed());
        gate_tx.send(false).unwrap();
        tokio::time::timeout(Duration::from_secs(5), master.wait_for(|m| !*m))
            .await
            .unwrap()
            .unwrap();
    }
    eprintln!("gate true to catalogd healthy (stand-in, ready at once): {took:?}");
    assert!(took.iter().all(|d| *d < Duration::from_secs(1)), "{took:?}");

    // Shutdown stops in reverse `after` order.
    gate_tx.send(true).unwrap();
    until("catalogd healthy", Duration::from_secs(5), || {
        row(&sup, "catalogd").state == ServiceState::Healthy
    })
    .await;
    let pids = [
        row(&sup, "catalogd").pid.unwrap(),
        row(&sup, "statestored").pid.unwrap(),
    ];
    sup.shutdown().await;
    assert!(pids.iter().all(|p| !alive(*p)));
    let ev = events.last(200);
    let stops: Vec<&str> = ev
        .iter()
        .filter(|e| e.message.contains(": stopped (stopping)"))
        .map(|e| e.message.split(':').next().unwrap())
        .collect();
    assert_eq!(
        stops.last_chunk::<2>(),
        Some(&["catalogd", "statestored"]),
        "{ev:#?}"
    );
}

/// Live processes whose command line contains `token`.
fn pids_with(token: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(token) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toggling_the_gate_never_leaves_two_catalogds() {
    let text = standin(
        "catalogd",
        "catalogd",
        "",
        "run = \"master\"\nstop_timeout = \"2s\"",
    );
    let token = format!("catalogd-{}", std::process::id());
    let (gate_tx, gate) = watch::channel(false);
    let sup = Supervisor::start(parse(&text), gate, EventLog::default());
    let master = sup.master_running();
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = {
        let (token, stop, master) = (token.clone(), stop.clone(), master.clone());
        tokio::task::spawn_blocking(move || {
            let (mut samples, mut max) = (0u32, 0usize);
            while !stop.is_cancelled() {
                let before = *master.borrow();
                let n = pids_with(&token).len();
                let after = *master.borrow();
                assert!(n <= 1, "{n} catalogds alive at once");
                assert!(
                    !(n > 0 && !before && !after),
                    "a catalogd is alive while master_running is false"
                );
                max = max.max(n);
                samples += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            (samples, max)
        })
    };
    let waits = [
        0u64, 30, 400, 10, 150, 300, 0, 60, 500, 20, 250, 5, 350, 100, 450, 0,
    ];
    for (i, w) in waits.iter().enumerate() {
        gate_tx.send(i % 2 == 0).unwrap();
        tokio::time::sleep(Duration::from_millis(*w)).await;
    }
    gate_tx.send(false).unwrap();
    let mut m = master.clone();
    tokio::time::timeout(Duration::from_secs(5), m.wait_for(|m| !*m))
        .await
        .unwrap()
        .unwrap();
    assert!(pids_with(&token).is_empty());
    stop.cancel();
    let (samples, max) = watcher.await.expect("watcher assertions");
    eprintln!(
        "{samples} samples, at most {max} catalogd alive, {} restarts",
        row(&sup, "catalogd").restarts
    );
    assert_eq!(max, 1, "catalogd never ran");
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_backs_off_and_lowers_the_priority() {
    let text = standin(
        "crashy",
        "catalogd",
        "--crash-after 50ms",
        "weight = -100\nrun = \"master\"",
    );
    let events = EventLog::default();
    let (gate_tx, gate) = watch::channel(true);
    let sup = Supervisor::start(parse(&text), gate, events.clone());
    let mut weight = sup.weight();
    let t0 = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), weight.wait_for(|w| *w == -100))
        .await
        .expect("weight while crash-looping")
        .unwrap();
    // Every later change of the weight: a copy that passes one check before it crashes
    // must not lift it (the priority would flap with every restart).
    let changes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let lifted = {
        let (mut w, changes) = (weight.clone(), changes.clone());
        tokio::spawn(async move {
            while w.changed().await.is_ok() {
                changes.lock().unwrap().push(*w.borrow_and_update());
            }
        })
    };
    let starts = |ev: &[Event]| {
        ev.iter()
            .filter(|e| e.message.starts_with("crashy: started"))
            .count()
    };
    until("4 starts", Duration::from_secs(9), || {
        starts(&events.last(100)) >= 4
    })
    .await;
    let elapsed = t0.elapsed();
    let ev = events.last(100);
    // Gap from each crash to the next start.
    let mut gaps = Vec::new();
    let mut crashed_at = None;
    for e in &ev {
        if e.message.contains("exit code 1") {
            crashed_at = Some(e.at_ms);
        } else if e.message.starts_with("crashy: started") {
            if let Some(c) = crashed_at.take() {
                gaps.push(e.at_ms - c);
            }
        }
    }
    eprintln!("crash → restart gaps (ms): {gaps:?}; 4 starts in {elapsed:?}");
    let crash = ev
        .iter()
        .find(|e| e.message.contains("exit code 1"))
        .unwrap();
    eprintln!("event: {}", crash.message);
    assert!(
        crash.message.contains("restarting in 1.0s"),
        "{}",
        crash.message
    );
    assert_eq!(gaps.len(), 3, "{ev:#?}");
    for (g, want) in gaps.iter().zip([1000u64, 2000, 4000]) {
        assert!(
            (want..want + 500).contains(g),
            "gap {g} ms, want ~{want} ms: {gaps:?}"
        );
    }
    assert_eq!(*weight.borrow(), -100);
    lifted.abort();
    let changes = changes.lock().unwrap().clone();
    assert!(
        changes.iter().all(|&w| w == -100),
        "weight lifted during the crash loop: {changes:?}"
    );
    let r = row(&sup, "crashy");
    assert_eq!(r.last_exit.as_deref(), Some("exit code 1"));
    assert!(r.restarts >= 3 && r.failing);
    // Closing the gate stops it, but the failure is remembered: this node
    // must not preempt back into the same crash loop.
    gate_tx.send(false).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(row(&sup, "crashy").state, ServiceState::Stopped);
    assert_eq!(
        *weight.borrow(),
        -100,
        "a stopped crash-looper still counts"
    );
    // An operator's restart clears it.
    assert!(sup.restart("crashy").await.is_err(), "not running here");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        *weight.borrow(),
        0,
        "restart cleared the remembered failure"
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_crash_keeps_the_weight_until_the_restart_has_stayed_up() {
    // The first run exits at once; the restart (after 1 s) stays healthy.
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran-once");
    let inner = standin("statestored", "statestored", "", "weight = -30");
    let argv = inner
        .split_once("command = [")
        .and_then(|(_, r)| r.split_once("]\n"))
        .unwrap()
        .0
        .to_string();
    let script = format!(
        "if [ -e {f} ]; then exec \"$@\"; else touch {f}; exit 1; fi",
        f = ran.display()
    );
    let text = inner.replace(
        &format!("command = [{argv}]"),
        &format!("command = [\"/bin/sh\", \"-c\", {script:?}, \"sh\", {argv}]"),
    );
    let events = EventLog::default();
    let (_gate_tx, gate) = watch::channel(true);
    let sup = Supervisor::start(parse(&text), gate, events.clone());
    let mut weight = sup.weight();
    tokio::time::timeout(Duration::from_secs(3), weight.wait_for(|w| *w == -30))
        .await
        .expect("weight after the crash")
        .unwrap();
    until("healthy again", Duration::from_secs(5), || {
        row(&sup, "statestored").state == ServiceState::Healthy
    })
    .await;
    let healthy = Instant::now();
    assert_eq!(
        *weight.borrow(),
        -30,
        "healthy, but not yet for its probation"
    );
    tokio::time::timeout(Duration::from_secs(3), weight.wait_for(|w| *w == 0))
        .await
        .expect("weight removed once the restart stayed up")
        .unwrap();
    let held = healthy.elapsed();
    eprintln!("weight held {held:?} after the restart became healthy");
    let ev = events.last(50);
    let restarted = ev
        .iter()
        .rfind(|e| e.message.starts_with("statestored: started"))
        .unwrap()
        .at_ms;
    let lifted = event_at(
        &ev,
        "statestored: up for 1.0s after a crash; its weight is removed",
    );
    assert!(lifted - restarted >= 1000, "{ev:#?}");
    let r = row(&sup, "statestored");
    assert_eq!((r.restarts, r.failing), (1, false));
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_check_adds_the_weight_until_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("unhealthy");
    let text = standin(
        "statestored",
        "statestored",
        &format!("--unhealthy-file {}", flag.display()),
        "weight = -50",
    )
    .replace(
        "interval = \"1s\", fall = 3",
        "interval = \"100ms\", fall = 2, rise = 2",
    );
    let (_gate_tx, gate) = watch::channel(false);
    let sup = Supervisor::start(parse(&text), gate, EventLog::default());
    let mut weight = sup.weight();
    until("healthy", Duration::from_secs(5), || {
        row(&sup, "statestored").state == ServiceState::Healthy
    })
    .await;
    assert_eq!(*weight.borrow_and_update(), 0);
    std::fs::write(&flag, b"").unwrap();
    let t = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), weight.wait_for(|w| *w == -50))
        .await
        .unwrap()
        .unwrap();
    eprintln!("check failing → weight -50 after {:?}", t.elapsed());
    let r = row(&sup, "statestored");
    assert_eq!(r.state, ServiceState::Unhealthy);
    assert_eq!(
        r.last_check.as_ref().map(|c| c.detail.as_str()),
        Some("HTTP 503")
    );
    std::fs::remove_file(&flag).unwrap();
    tokio::time::timeout(Duration::from_secs(3), weight.wait_for(|w| *w == 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row(&sup, "statestored").state, ServiceState::Healthy);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_ignoring_sigterm_is_killed_after_stop_timeout() {
    let text = standin(
        "catalogd",
        "catalogd",
        "--ignore-sigterm",
        "run = \"master\"\nstop_timeout = \"500ms\"",
    );
    let events = EventLog::default();
    let (gate_tx, gate) = watch::channel(true);
    let sup = Supervisor::start(parse(&text), gate, events.clone());
    let master = sup.master_running();
    until("healthy", Duration::from_secs(5), || {
        row(&sup, "catalogd").state == ServiceState::Healthy
    })
    .await;
    let pid = row(&sup, "catalogd").pid.unwrap();
    gate_tx.send(false).unwrap();
    let t = Instant::now();
    let mut master_false_while_alive = false;
    while alive(pid) {
        master_false_while_alive |= !*master.borrow();
        assert!(t.elapsed() < Duration::from_secs(3), "still alive");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let died = t.elapsed();
    eprintln!("SIGTERM ignored; killed {died:?} after the gate closed (stop_timeout 500ms)");
    assert!(
        died >= Duration::from_millis(480),
        "died too early: {died:?}"
    );
    assert!(
        died < Duration::from_millis(1200),
        "died too late: {died:?}"
    );
    assert!(
        !master_false_while_alive,
        "master_running false before the kill"
    );
    let ev = events.last(50);
    assert!(
        ev.iter().any(|e| e.message.contains("sending SIGKILL")),
        "{ev:#?}"
    );
    let mut m = master.clone();
    tokio::time::timeout(Duration::from_secs(2), m.wait_for(|m| !*m))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row(&sup, "catalogd").last_exit.as_deref(),
        Some("killed by SIGKILL")
    );
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reload_and_native_ha_observation() {
    let a = standin(
        "a",
        "catalogd",
        "--active false",
        "", // active_check added below once the web port is known
    );
    let web = a
        .split("http://127.0.0.1:")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let a = a + &format!(
        "active_check = {{ url = \"http://127.0.0.1:{web}/jsonmetrics?metric=catalog-server.active-status\", interval = \"200ms\" }}\n"
    );
    let m = standin("m", "catalogd", "", "run = \"master\"");
    let (_gate_tx, gate) = watch::channel(false);
    let events = EventLog::default();
    let sup = Supervisor::start(parse(&(a.clone() + &m)), gate, events.clone());
    until(
        "a healthy and observed standby",
        Duration::from_secs(5),
        || {
            let r = row(&sup, "a");
            r.state == ServiceState::Healthy && r.active == Some(false)
        },
    )
    .await;
    let pid1 = row(&sup, "a").pid.unwrap();

    sup.restart("a").await.unwrap();
    let r = row(&sup, "a");
    assert_ne!(r.pid, Some(pid1));
    assert_eq!(r.restarts, 1);
    assert!(!alive(pid1));
    assert_eq!(
        sup.restart("zzz").await,
        Err(SupervisorError::UnknownService("zzz".into()))
    );
    assert_eq!(
        sup.restart("m").await,
        Err(SupervisorError::NotRunningHere("m".into()))
    );

    // Reload: `a` unchanged keeps its pid, `m` removed, `b` added.
    let pid2 = row(&sup, "a").pid.unwrap();
    let b = standin("b", "statestored", "", "");
    sup.reload(parse(&(a.clone() + &b)));
    until("b healthy, m gone", Duration::from_secs(5), || {
        let s = sup.snapshot();
        s.iter()
            .any(|r| r.name == "b" && r.state == ServiceState::Healthy)
            && !s.iter().any(|r| r.name == "m")
    })
    .await;
    assert_eq!(row(&sup, "a").pid, Some(pid2));
    // A weight change applies in place; a command change respawns.
    sup.reload(parse(
        &(a.replace("[[service]]", "[[service]]\nweight = -7") + &b),
    ));
    until("weight applied", Duration::from_secs(2), || {
        row(&sup, "a").weight == -7
    })
    .await;
    assert_eq!(row(&sup, "a").pid, Some(pid2));
    sup.reload(parse(
        &(a.replace("--active\", \"false\"", "--active\", \"true\"") + &b),
    ));
    until("a respawned and active", Duration::from_secs(5), || {
        let r = row(&sup, "a");
        r.pid != Some(pid2) && r.active == Some(true)
    })
    .await;
    assert!(!alive(pid2));
    let json = serde_json::to_string(&sup.snapshot()).unwrap();
    assert!(
        json.contains("\"state\":\"healthy\"") && json.contains("\"run\":\"always\""),
        "{json}"
    );
    sup.shutdown().await;
    assert!(sup
        .snapshot()
        .iter()
        .all(|r| r.state == ServiceState::Stopped && r.pid.is_none()));
}

/// Runs a supervisor in a child process (this test binary, re-executed), kills that process
/// with SIGKILL and checks the service child dies with it (PR_SET_PDEATHSIG).
#[test]
fn kill_9_of_the_supervisor_leaves_no_child() {
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "supervisor_helper_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HAPAIR_SUPERVISOR_HELPER", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(helper.stdout.take().unwrap());
    let mut pid = None;
    for line in out.lines() {
        let line = line.unwrap();
        // The harness prints "test NAME ... " on the same line.
        if let Some((_, p)) = line.split_once("SERVICE_PID ") {
            pid = Some(p.trim().parse::<u32>().unwrap());
            break;
        }
    }
    let pid = pid.expect("the helper reports its service pid");
    assert!(alive(pid));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    helper.wait().unwrap();
    let t = Instant::now();
    while alive(pid) {
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "service pid {pid} outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "service pid {pid} gone {:?} after kill -9 of the supervisor",
        t.elapsed()
    );
}

/// Not a test on its own: the process body for `kill_9_of_the_supervisor_leaves_no_child`.
#[test]
fn supervisor_helper_process() {
    if std::env::var_os("HAPAIR_SUPERVISOR_HELPER").is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let text = standin("orphan", "catalogd", "", "run = \"master\"");
        let (_gate_tx, gate) = watch::channel(true);
        let sup = Supervisor::start(parse(&text), gate, EventLog::default());
        until("running", Duration::from_secs(5), || {
            row(&sup, "orphan").pid.is_some()
        })
        .await;
        println!("SERVICE_PID {}", row(&sup, "orphan").pid.unwrap());
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
}
