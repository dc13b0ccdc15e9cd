//! The command line as an operator sees it: `check`, `keygen`, and `run`
//! refusing a bad config before it binds anything.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
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

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const GOOD: &str = r#"[node]
name = "proxy1"
priority = 150

[pair]
interface = "lo"
router_id = 51
peer = "192.0.2.12"
auth_key_file = "pair.key"
vips = ["192.0.2.100/24"]
"#;

#[test]
fn check_accepts_the_example_configs() {
    for f in ["etc/proxy1.toml", "etc/proxy2.toml"] {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
        let (code, out, err) = hapair(&["check", "-c", p.to_str().unwrap()]);
        assert_eq!(code, 0, "{f}: {err}");
        assert!(out.contains("config is valid"), "{out}");
        assert!(
            out.contains("listen impala_hs2 on 0.0.0.0:21050 balance leastconn (5 servers)"),
            "{out}"
        );
    }
}

#[test]
fn check_reports_every_error_with_file_line_col_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = GOOD.replace("priority = 150", "priority = 999").replace(
        "vips = [\"192.0.2.100/24\"]",
        "vips = [\"192.0.2.100/24\"]\nadvert_interval = \"soon\"",
    );
    let p = write(dir.path(), "bad.toml", &bad);
    let (code, _out, err) = hapair(&["check", "-c", &p]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{p}:3:12: priority = 999 is out of range 1..=254")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{p}:11:19: advert_interval: `soon` is not a duration"
        )),
        "{err}"
    );
}

#[test]
fn check_refuses_a_random_bind_port_and_a_timeout_past_haproxys_limit() {
    let dir = tempfile::tempdir().unwrap();
    let bad = format!(
        "{GOOD}\n[[listen]]\nname = \"hs2\"\nbind = \"0.0.0.0:0\"\n\
         client_timeout = \"300000000000y\"\nserver_timeout = \"30d\"\n\
         servers = [{{ name = \"impala1\", addr = \"127.0.0.1:21050\" }}]\n"
    );
    let p = write(dir.path(), "bad.toml", &bad);
    let (code, _out, err) = hapair(&["check", "-c", &p]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("{p}:14:8: bind: \"0.0.0.0:0\" has port 0")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{p}:15:18: client_timeout: `300000000000y` is longer than the limit of 24.8 days"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}:16:18: server_timeout: `30d` is longer")),
        "{err}"
    );
}

#[test]
fn check_reports_toml_syntax_errors_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "syntax.toml",
        "[node]\nname = \"x\"\npriority = = 3\n",
    );
    let (code, _, err) = hapair(&["check", "-c", &p]);
    assert_eq!(code, 1);
    assert!(err.starts_with(&format!("{p}:3:")), "{err}");
}

#[test]
fn run_refuses_a_bad_config_with_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "bad.toml",
        &GOOD.replace("router_id = 51", "router_id = 51\nbogus = true"),
    );
    let (code, _, err) = hapair(&["run", "-c", &p]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains(":8:1: unknown field `bogus`"), "{err}");
}

#[test]
fn keygen_writes_0600_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("pair.key");
    let (code, _, err) = hapair(&["keygen", key.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = std::fs::read(&key).unwrap();
    let (code, _, err) = hapair(&["keygen", key.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), before, "the old key is kept");
}

#[test]
fn world_readable_or_empty_key_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("pair.key");
    let (code, _, _) = hapair(&["keygen", key.to_str().unwrap()]);
    assert_eq!(code, 0);
    let cfg = write(dir.path(), "c.toml", GOOD);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = hapair(&["check", "-c", &cfg]);
    assert_eq!(code, 1);
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::write(&key, "").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, err) = hapair(&["check", "-c", &cfg]);
    assert_eq!(code, 1);
    assert!(err.contains("holds no key"), "{err}");
}

/// Logs written to a pipe or a file (journald, a log file) carry no colour codes.
#[test]
fn logs_to_a_pipe_are_plain_text() {
    // A stand-in logs through the same set-up as `hapair run` and ends on its own.
    let out = Command::new(env!("CARGO_BIN_EXE_hapair"))
        .env_remove("HAPAIR_LOG")
        .args([
            "lab",
            "standin",
            "impalad",
            "--listen",
            "127.0.0.1:0",
            "--web",
            "127.0.0.1:0",
            "--crash-after",
            "200ms",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("INFO"), "no log line: {err}");
    assert!(!err.contains('\u{1b}'), "escape codes in: {err:?}");
}
