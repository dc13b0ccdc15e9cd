//! `hapair import` as an operator runs it: on the seed article's haproxy config (with a
//! keepalived.conf of the kind it ran next to), on Impala's documented sample haproxy.cfg, and on
//! a config with frontend/backend and ACLs. Each output must pass `hapair check`, and every
//! directive that was not converted must be named, with its line, on stderr.

use std::path::{Path, PathBuf};
use std::process::Command;

fn hapair(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hapair"))
        .args(args)
        .output()
        .expect("run hapair");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// Imports, writes the TOML to `dir/out.toml`, and returns (its path, its text, stderr).
fn import(dir: &Path, args: &[&str]) -> (String, String, String) {
    let out = dir.join("out.toml");
    let out_s = out.to_string_lossy().into_owned();
    let mut a = vec!["import"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", &out_s, "--force"]);
    let (code, _, err) = hapair(&a);
    assert_eq!(code, 0, "import failed: {err}");
    let text = std::fs::read_to_string(&out).unwrap();
    (out_s, text, err)
}

/// A copy of a haproxy config with host names replaced by documentation addresses, since the
/// names of the samples do not resolve here and `hapair check` resolves every server.
fn with_ips(dir: &Path, src: &str, names: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(src).unwrap();
    for (name, ip) in names {
        text = text.replace(name, ip);
    }
    let p: PathBuf = dir.join(Path::new(src).file_name().unwrap());
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn assert_has(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "missing:\n  {needle}\nin:\n{haystack}"
    );
}

const SEED_HOSTS: [(&str, &str); 5] = [
    ("hadoop461.lt.server.org", "198.51.100.61"),
    ("hadoop462.lt.server.org", "198.51.100.62"),
    ("hadoop463.lt.server.org", "198.51.100.63"),
    ("hadoop464.lt.server.org", "198.51.100.64"),
    ("hadoop465.lt.server.org", "198.51.100.65"),
];

#[test]
fn seed_article_config_with_keepalived_imports_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let h = data("seed-haproxy.cfg");
    let k = data("seed-keepalived.conf");
    let (out, toml, err) = import(dir.path(), &["--haproxy", &h, "--keepalived", &k]);

    // The seed haproxy config converts completely.
    assert!(!err.contains(&format!("{h}:")), "{err}");
    assert_has(&toml, "name = \"impala_ha\"\nbind = \"0.0.0.0:8006\"\nbalance = \"roundrobin\"\ncheck = { type = \"tcp\" }\n");
    for (i, (host, _)) in SEED_HOSTS.iter().enumerate() {
        assert_has(
            &toml,
            &format!("{{ name = \"impala{}\", addr = \"{host}:21050\" }}", i + 1),
        );
    }
    // keepalived: converted, and what was not, by line.
    for line in [
        "[node]\nname = \"proxy1\"\npriority = 150\n",
        "interface = \"eth1\"\nrouter_id = 51\npeer = \"192.0.2.12\"\n",
        "advert_interval = \"1s\"\npreempt = false\n",
        "vips = [\"192.0.2.100/24\"]\ngarp_count = 5\ngarp_repeat_after = \"5s\"\n",
        "notify = \"/etc/keepalived/notify.sh\"\n",
        "auth_key_file = \"/etc/hapair/pair.key\"",
    ] {
        assert_has(&toml, line);
    }
    for w in [
        format!("{k}:8: warning: 'vrrp_script chk_haproxy {{ ... }}' is not supported"),
        format!("{k}:21: warning: 'unicast_src_ip 192.0.2.11' is not supported"),
        format!("{k}:25: warning: 'authentication {{ auth_type PASS ... }}' is replaced by HMAC-SHA256: a new key file is needed"),
        format!("{k}:30: warning: VIP options 'dev eth1 label eth1:vip' are not supported; dropped"),
        format!("{k}:34: warning: 'track_script {{ ... }}' is not supported"),
    ] {
        assert_has(&err, &w);
        // ...and the same in the output, as a comment.
        let comment = w.replacen(&format!("{k}:"), "", 1);
        let (line, rest) = comment.split_once(": warning: ").unwrap();
        assert_has(&toml, &format!("# unsupported: {k}:{line}: {rest}"));
    }
    assert!(
        !toml.contains("s3cret"),
        "the VRRP password leaked:\n{toml}"
    );

    // The host names of the article do not resolve here: `check` (run off
    // the proxies) passes and warns about each; `run` would refuse them.
    let (code, _, cerr) = hapair(&["check", "-c", &out]);
    assert_eq!(code, 0, "{cerr}");
    let unresolved: Vec<&str> = cerr
        .lines()
        .filter(|l| l.contains("warning: server addr: cannot resolve \"hadoop46"))
        .collect();
    assert_eq!(unresolved.len(), 5, "{cerr}");

    // With addresses the same import passes check.
    let h_ip = with_ips(dir.path(), &h, &SEED_HOSTS);
    let (out, toml, _) = import(dir.path(), &["--haproxy", &h_ip, "--keepalived", &k]);
    assert_has(&toml, "addr = \"198.51.100.65:21050\"");
    let (code, sum, cerr) = hapair(&["check", "-c", &out]);
    assert_eq!(code, 0, "{cerr}\n{toml}");
    assert_has(
        &sum,
        "listen impala_ha on 0.0.0.0:8006 balance roundrobin (5 servers)",
    );
    assert_has(&sum, "node proxy1 priority 150");
}

#[test]
fn impala_documented_sample_imports_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let h = data("impala-docs-haproxy.cfg");
    let (_, toml, err) = import(dir.path(), &["--haproxy", &h]);
    for w in [
        "20: warning: 'log 127.0.0.1 local0' is not supported (hapair logs to stderr or the journal); dropped",
        "22: warning: 'chroot /var/lib/haproxy' is not supported (the systemd unit covers process settings); dropped",
        "27: warning: 'daemon' is not supported",
        "41: warning: 'option httplog' is not supported",
        "43: warning: 'option http-server-close' is not supported (hapair is layer 4); dropped",
        "44: warning: 'option forwardfor except 127.0.0.0/8' is not supported (hapair is layer 4); dropped",
        "48: note: 'contimeout 5000' is haproxy 1.4 syntax (removed in 2.1); read as 'timeout connect'",
        "55: warning: listen 'stats' has no servers (a stats page? hapair serves one on node.admin); section dropped",
        "58: warning: 'stats enable' is not supported (hapair serves a status page on node.admin); dropped",
        "59: warning: 'stats auth username:password' is not supported",
        "67: warning: 'option tcplog' is not supported",
        "82: warning: 'option tcplog' is not supported",
    ] {
        assert_has(&err, &format!("{h}:{w}"));
    }
    // global maxconn (line 24) is read; defaults' maxconn 3000 wins for each listener.
    assert!(!err.contains(&format!("{h}:24:")), "{err}");
    assert_has(&toml, "name = \"impala\"\nbind = \"0.0.0.0:25003\"\nbalance = \"leastconn\"\nmaxconn = 3000\nconnect_timeout = \"5s\"\nclient_timeout = \"50s\"\nserver_timeout = \"50s\"\nretries = 3\nservers = [\n");
    assert_has(
        &toml,
        "name = \"impalajdbc\"\nbind = \"0.0.0.0:21051\"\nbalance = \"source\"\n",
    );
    assert_has(
        &toml,
        "{ name = \"symbolic_name_8\", addr = \"impala-host-4.example.com:21050\" }",
    );
    assert!(!toml.contains("name = \"stats\""), "{toml}");
    // The skeleton [pair] says what to fill in.
    assert_has(&toml, "peer = \"192.0.2.12\"                # TODO");
    // The sample's short timeouts and missing checks earn hints.
    assert_has(&toml, "# hint: Impala queries run long");
    assert_has(&toml, "# hint: impalad answers GET /healthz");

    let names: Vec<(String, String)> = (1..=4)
        .map(|i| {
            (
                format!("impala-host-{i}.example.com"),
                format!("198.51.100.6{i}"),
            )
        })
        .collect();
    let names: Vec<(&str, &str)> = names
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let h_ip = with_ips(dir.path(), &h, &names);
    let (out, toml, _) = import(dir.path(), &["--haproxy", &h_ip]);
    let (code, sum, cerr) = hapair(&["check", "-c", &out]);
    assert_eq!(code, 0, "{cerr}\n{toml}");
    assert_has(
        &sum,
        "listen impala on 0.0.0.0:25003 balance leastconn (4 servers)",
    );
    assert_has(
        &sum,
        "listen impalajdbc on 0.0.0.0:21051 balance source (4 servers)",
    );
}

#[test]
fn frontend_backend_acls_and_server_options() {
    let dir = tempfile::tempdir().unwrap();
    let h = data("mixed-haproxy.cfg");
    let (out, toml, err) = import(dir.path(), &["--haproxy", &h]);
    for w in [
        "17: warning: 'acl is_api path_beg /api' is not supported (hapair is layer 4); dropped",
        "18: warning: 'use_backend api if is_api' is not supported (hapair is layer 4); dropped",
        "29: warning: server option 'cookie h3' is not supported",
        "29: warning: server option 'maxconn 100' is not supported",
        "32: warning: backend 'api' is used by no frontend (without ACLs); dropped",
        "36: warning: bind options 'ssl crt /etc/ssl/hue.pem' are not supported",
        "42: warning: 'stick-table type ip size 200k expire 30m' is not supported",
        "44: warning: server 'hadoop462' has no 'check', but hapair checks every server of a listen",
    ] {
        assert_has(&err, &format!("{h}:{w}"));
    }
    // Reported once, although two listeners come from that backend.
    assert_eq!(err.matches(&format!("{h}:44:")).count(), 1, "{err}");
    assert_has(
        &toml,
        "name = \"hs2\"\nbind = \"0.0.0.0:21050\"\nbalance = \"leastconn\"\nmaxconn = 8000\n",
    );
    assert_has(&toml, "check = { type = \"http\", port = 25000, path = \"/healthz\", expect = 200, interval = \"1s\", timeout = \"500ms\", fall = 2, rise = 2 }");
    assert_has(
        &toml,
        "{ name = \"hadoop462\", addr = \"198.51.100.62:21050\", weight = 2 }",
    );
    assert_has(
        &toml,
        "{ name = \"spare\", addr = \"198.51.100.69:21050\", backup = true }",
    );
    // One listener per bind address; global maxconn as the per-listener limit.
    assert_has(
        &toml,
        "name = \"hue_28000\"\nbind = \"0.0.0.0:28000\"\nbalance = \"source\"\nmaxconn = 20000\n",
    );
    assert_has(&toml, "name = \"hue_28001\"\nbind = \"0.0.0.0:28001\"");
    assert_has(&toml, "redispatch = false\n");
    let (code, _, cerr) = hapair(&["check", "-c", &out]);
    assert_eq!(code, 0, "{cerr}\n{toml}");
}

#[test]
fn import_refuses_to_overwrite_and_needs_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hapair.toml");
    std::fs::write(&out, "keep me").unwrap();
    let (code, _, err) = hapair(&[
        "import",
        "--haproxy",
        &data("seed-haproxy.cfg"),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert_has(&err, "exists; pass --force to overwrite it");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me");
    let (code, _, _) = hapair(&["import"]);
    assert_ne!(code, 0);
    let (code, _, err) = hapair(&["import", "--haproxy", "/nonexistent/haproxy.cfg"]);
    assert_eq!(code, 1);
    assert_has(&err, "cannot read /nonexistent/haproxy.cfg");
}
