//! The admin API of a real `hapair run` in a network namespace (see `admin_lab`): control is
//! locked, drain works through the CLI, `/metrics` parses as Prometheus text and its counters
//! move with traffic, and `hapair status` prints the pair and the servers.
//!
//! As root it runs; otherwise it skips with a message, unless `CI=true`, where a skip fails.

mod admin_lab;

use std::collections::HashMap;

use admin_lab::{state_of, AdminLab, SERVERS, TOKEN, VIP};
use hapair::lab::netns::require_root;

/// Parse `/metrics` with a Prometheus text parser and check that nothing was skipped: every
/// sample line became a sample, and every sample has a declared type.
fn scrape(lab: &AdminLab) -> Vec<prometheus_parse::Sample> {
    let (code, body) = lab.request("GET", "/metrics", None);
    assert_eq!(code, 200, "{body}");
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("metrics parse as Prometheus text");
    let sample_lines = body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(
        parsed.samples.len(),
        sample_lines,
        "some lines did not parse:\n{body}"
    );
    for s in &parsed.samples {
        assert!(
            !matches!(s.value, prometheus_parse::Value::Untyped(_)),
            "{} has no # TYPE line:\n{body}",
            s.metric
        );
    }
    parsed.samples
}

fn value(v: &prometheus_parse::Value) -> f64 {
    match v {
        prometheus_parse::Value::Counter(x)
        | prometheus_parse::Value::Gauge(x)
        | prometheus_parse::Value::Untyped(x) => *x,
        _ => f64::NAN,
    }
}

/// `metric{labels}` → value, for the samples whose labels include all of `want`.
fn find(samples: &[prometheus_parse::Sample], metric: &str, want: &[(&str, &str)]) -> Vec<f64> {
    samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| want.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| value(&s.value))
        .collect()
}

fn one(samples: &[prometheus_parse::Sample], metric: &str, want: &[(&str, &str)]) -> f64 {
    let v = find(samples, metric, want);
    assert_eq!(v.len(), 1, "{metric}{want:?}: {v:?}");
    v[0]
}

fn states(lab: &AdminLab) -> HashMap<(String, String), String> {
    let s = lab.status();
    let mut m = HashMap::new();
    for l in s["listeners"].as_array().unwrap() {
        for sv in l["servers"].as_array().unwrap() {
            m.insert(
                (
                    l["name"].as_str().unwrap().to_string(),
                    sv["name"].as_str().unwrap().to_string(),
                ),
                sv["state"].as_str().unwrap().to_string(),
            );
        }
    }
    m
}

#[test]
fn admin_of_a_running_daemon() {
    if !require_root("admin_of_a_running_daemon") {
        return;
    }
    let lab = AdminLab::start();

    // /status: the documented top-level keys, and the pair as the daemon sees it.
    let s = lab.status();
    for k in [
        "version",
        "node",
        "now_ms",
        "pair",
        "listeners",
        "services",
        "control_enabled",
        "events",
    ] {
        assert!(s.get(k).is_some(), "/status lacks {k}: {s:#}");
    }
    assert_eq!(s["node"], "proxy1");
    assert_eq!(s["pair"]["role"], "master");
    assert_eq!(s["pair"]["vips"][0], VIP);
    assert_eq!(s["services"], serde_json::json!([]));
    assert_eq!(s["control_enabled"], true);
    assert!(
        s["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "role"),
        "no role change in the events: {s:#}"
    );

    // Control is locked: no token, a wrong token, another scheme → 401, nothing changes.
    let before = states(&lab);
    for token in [None, Some("wrong"), Some(&TOKEN[1..])] {
        for target in [
            "/control/drain?server=impala1",
            "/control/disable?server=impala2&listener=hs2",
            "/control/step-down",
        ] {
            let (code, body) = lab.request("POST", target, token);
            assert_eq!(code, 401, "{token:?} {target}: {body}");
            assert!(body.contains("\"ok\": false"), "{body}");
        }
    }
    assert_eq!(states(&lab), before, "a refused request changed something");
    assert_eq!(lab.status()["pair"]["role"], "master");
    // The CLI with a wrong token file says what is wrong.
    let wrong = lab.dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let cfg = lab.config.to_str().unwrap().to_string();
    let out = lab.cli(&[
        "ctl",
        "-c",
        &cfg,
        "--token-file",
        wrong.to_str().unwrap(),
        "drain",
        "impala1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("401: wrong admin token"), "{err}");
    assert_eq!(states(&lab), before);

    // Metrics parse, and the counters move with traffic.
    let m0 = scrape(&lab);
    assert_eq!(one(&m0, "hapair_role", &[("role", "master")]), 1.0);
    assert_eq!(one(&m0, "hapair_role", &[("role", "backup")]), 0.0);
    assert_eq!(one(&m0, "hapair_priority", &[]), 150.0);
    assert_eq!(one(&m0, "hapair_vips_held", &[]), 1.0);
    assert!(one(&m0, "hapair_heartbeats_sent_total", &[]) > 0.0);
    for sv in SERVERS {
        assert_eq!(
            one(
                &m0,
                "hapair_server_up",
                &[("listener", "hs2"), ("server", sv)]
            ),
            1.0
        );
    }
    let total = |m: &[prometheus_parse::Sample], metric: &str| -> f64 {
        find(m, metric, &[("listener", "hs2")]).iter().sum()
    };
    let conns0 = total(&m0, "hapair_server_connections_total");
    let bytes0 = total(&m0, "hapair_server_bytes_in_total");
    let banners = lab.connect_through(6);
    // At least two advert intervals (100 ms) pass, so heartbeats were sent.
    std::thread::sleep(std::time::Duration::from_millis(250));
    let m1 = scrape(&lab);
    assert_eq!(
        total(&m1, "hapair_server_connections_total") - conns0,
        6.0,
        "connections counted: {banners:?}"
    );
    assert!(total(&m1, "hapair_server_bytes_in_total") - bytes0 >= 6.0 * 8.0);
    assert_eq!(
        one(
            &m1,
            "hapair_listener_connections_total",
            &[("listener", "hs2")]
        ),
        6.0
    );
    assert!(
        one(&m1, "hapair_heartbeats_sent_total", &[])
            > one(&m0, "hapair_heartbeats_sent_total", &[])
    );

    // Drain through the CLI with the right token: /status, metrics and traffic follow.
    let out = lab.cli(&["ctl", "-c", &cfg, "--listener", "hs2", "drain", "impala2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = lab.status();
    assert_eq!(state_of(&s, "hs2", "impala2"), "drain");
    assert_eq!(state_of(&s, "beeswax", "impala2"), "up");
    let m2 = scrape(&lab);
    assert_eq!(
        one(
            &m2,
            "hapair_server_state",
            &[
                ("listener", "hs2"),
                ("server", "impala2"),
                ("state", "drain")
            ]
        ),
        1.0
    );
    let banners = lab.connect_through(4);
    assert!(
        !banners.iter().any(|b| b == "impala2"),
        "a drained server got new connections: {banners:?}"
    );

    // `hapair status` prints the table; `--json` the document.
    let out = lab.cli(&["status", "-c", &cfg]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("hapair status:\n{table}");
    for want in [
        "proxy1",
        "MASTER",
        VIP,
        "held here",
        "impala2",
        "drain",
        "services",
    ] {
        assert!(table.contains(want), "{want} missing from:\n{table}");
    }
    let out = lab.cli(&["status", "-c", &cfg, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
    assert_eq!(v["pair"]["role"], "master");

    // Enable again; restart of a service that does not exist is a clear 404.
    let out = lab.cli(&["ctl", "-c", &cfg, "enable", "impala2"]);
    assert!(out.status.success());
    assert_eq!(state_of(&lab.status(), "hs2", "impala2"), "up");
    let out = lab.cli(&["ctl", "-c", &cfg, "restart", "catalogd"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such service"));

    // A CLI pointed at a port nobody listens on says what to do.
    let out = lab.cli(&["status", "-c", &cfg, "--admin", "127.0.0.1:9"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is hapair running? admin at 127.0.0.1:9 refused"),
        "{err}"
    );
}
