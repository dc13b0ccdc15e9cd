//! The status page of a real `hapair run` (see `admin_lab`), rendered by headless Chromium:
//! the role, the VIP and every server's state are in the rendered DOM, and the page changes
//! after a drain through the control API.
//!
//! Needs root (namespaces) and Debian's `chromium` (`apt-get install -y chromium`). Without
//! either it skips with a message, unless `CI=true`, where a skip fails.

mod admin_lab;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use admin_lab::{AdminLab, ADMIN, SERVERS, TOKEN, VIP};
use hapair::lab::netns::require_root;

const CHROMIUM: &str = "/usr/bin/chromium";

fn require_chromium(test: &str) -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {CHROMIUM} is missing (apt-get install -y chromium), and CI=true forbids skipping");
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{test}: SKIPPED: {CHROMIUM} is missing (apt-get install -y chromium)"
    );
    false
}

/// Load `url` in headless Chromium inside the lab's namespace and return the rendered DOM.
fn dump_dom(lab: &AdminLab, url: &str) -> String {
    chromium(lab, &["--dump-dom", url])
}

/// Run headless Chromium with `args` inside the lab's namespace; returns its stdout.
fn chromium(lab: &AdminLab, args: &[&str]) -> String {
    let profile = tempfile::Builder::new()
        .prefix("hapair-chromium")
        .tempdir()
        .unwrap();
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(args)
    .env("HOME", profile.path())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let proc = lab.host.spawn(cmd).expect("start chromium");
    let mut stdout = proc.take_stdout().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match proc.try_wait().unwrap() {
            Some(st) => {
                let dom = reader.join().unwrap();
                assert!(
                    st.success(),
                    "chromium exited with {st}; DOM so far:\n{dom}"
                );
                return dom;
            }
            None if Instant::now() > deadline => {
                let _ = proc.kill();
                panic!("chromium did not finish within 90 s");
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn status_page_in_headless_chromium() {
    if !require_root("status_page_in_headless_chromium")
        || !require_chromium("status_page_in_headless_chromium")
    {
        return;
    }
    let lab = AdminLab::start();
    let url = format!("http://{ADMIN}/");

    let dom = dump_dom(&lab, &url);
    assert!(
        dom.contains("id=\"role\" class=\"role role-master\" data-role=\"master\">MASTER<"),
        "role not rendered:\n{dom}"
    );
    assert!(
        dom.contains(&format!("data-vip=\"{VIP}\" data-held=\"true\"")),
        "VIP not rendered:\n{dom}"
    );
    for l in ["hs2", "beeswax"] {
        for s in SERVERS {
            let want = format!("data-listener=\"{l}\" data-server=\"{s}\" data-state=\"up\"");
            assert!(dom.contains(&want), "{want} not rendered:\n{dom}");
        }
    }
    assert!(dom.contains("id=\"services\""), "{dom}");
    assert!(dom.contains("class=\"event\" data-kind=\"role\""), "{dom}");
    assert!(
        !dom.contains("<script"),
        "the page must not need JavaScript"
    );

    // Drain impala1 everywhere through the control API; the next render shows it.
    let (code, body) = lab.request("POST", "/control/drain?server=impala1", Some(TOKEN));
    assert_eq!(code, 200, "{body}");
    let dom = dump_dom(&lab, &url);
    for l in ["hs2", "beeswax"] {
        let want = format!("data-listener=\"{l}\" data-server=\"impala1\" data-state=\"drain\"");
        assert!(
            dom.contains(&want),
            "{want} not rendered after drain:\n{dom}"
        );
        let still = format!("data-listener=\"{l}\" data-server=\"impala2\" data-state=\"up\"");
        assert!(dom.contains(&still), "{still}:\n{dom}");
    }
    assert!(
        dom.contains("drain impala1 in every listener"),
        "the drain is not in the events:\n{dom}"
    );
    // For a person to look at: HAPAIR_SCREENSHOT=/tmp/page.png cargo test --test admin_browser
    if let Some(png) = std::env::var_os("HAPAIR_SCREENSHOT") {
        let shot = format!("--screenshot={}", png.to_string_lossy());
        chromium(&lab, &[&shot, "--window-size=1280,1100", &url]);
    }
}
