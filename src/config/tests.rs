//! Every invalid config gives its own message at its own line and column.

use std::path::Path;

use super::{parse, Host};

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

fn errors(text: &str) -> Vec<String> {
    match parse(Path::new("t.toml"), text, Host::Lenient) {
        Ok(_) => vec![],
        Err(d) => d.errors().map(|d| d.to_string()).collect(),
    }
}

#[test]
fn good_config_parses_with_defaults() {
    let l = parse(Path::new("t.toml"), GOOD, Host::Lenient).expect("valid");
    let c = l.config;
    assert_eq!(c.node.name, "proxy1");
    assert_eq!(c.node.priority, 150);
    assert_eq!(c.pair.port, 5405);
    assert_eq!(c.pair.advert_interval.as_millis(), 100);
    assert_eq!(c.pair.dead_after, 3);
    assert!(c.pair.preempt);
    assert_eq!(c.pair.garp_count, 5);
    assert_eq!(c.pair.garp_repeat_after.as_secs(), 5);
    assert!(c.summary().contains("vips 192.0.2.100/24"));
}

#[test]
fn table_of_bad_configs() {
    // (edit: replace `from` with `to` in GOOD, expected "line:col: message part")
    let cases: &[(&str, &str, &str)] = &[
        (
            "priority = 150",
            "priority = 300",
            "t.toml:3:12: priority = 300 is out of range 1..=254",
        ),
        (
            "router_id = 51",
            "router_id = 0",
            "t.toml:7:13: router_id = 0 is out of range",
        ),
        (
            "router_id = 51",
            "router_id = 51\nroter = 1",
            "t.toml:8:1: unknown field `roter`",
        ),
        (
            "peer = \"192.0.2.12\"",
            "peer = \"192.0.2.x\"",
            "t.toml:8:8: peer must be an IP address",
        ),
        (
            "peer = \"192.0.2.12\"",
            "peer = \"127.0.0.1\"",
            "t.toml:8:8: peer 127.0.0.1 is one of this host's own addresses",
        ),
        (
            "peer = \"192.0.2.12\"",
            "peer = \"192.0.2.100\"",
            "t.toml:8:8: peer 192.0.2.100 is also a VIP",
        ),
        (
            "[\"192.0.2.100/24\"]",
            "[\"192.0.2.300/24\"]",
            "t.toml:10:9: `192.0.2.300/24` is not an address with prefix",
        ),
        (
            "[\"192.0.2.100/24\"]",
            "[\"192.0.2.100/24\", \"192.0.2.100/32\"]",
            "t.toml:10:27: VIP 192.0.2.100 is listed twice",
        ),
        (
            "[\"192.0.2.100/24\"]",
            "[]",
            "t.toml:10:8: vips must list at least one address",
        ),
        (
            "router_id = 51",
            "router_id = 51\nadvert_interval = \"fast\"",
            "t.toml:8:19: advert_interval: `fast` is not a duration",
        ),
        (
            "router_id = 51",
            "router_id = 51\nadvert_interval = \"1ms\"",
            "t.toml:8:19: advert_interval = \"1ms\" is out of range",
        ),
        (
            "router_id = 51",
            "router_id = 51\ndead_after = 1",
            "t.toml:8:14: dead_after = 1 is out of range 2..=100",
        ),
        (
            "router_id = 51",
            "router_id = 51\npreempt = \"yes\"",
            "t.toml:8:11: invalid type: string \"yes\", expected a boolean",
        ),
        (
            "router_id = 51",
            "router_id = 51\nwitness = [\"gw\"]",
            "t.toml:8:12: witness `gw` is not an IP address",
        ),
        (
            "auth_key_file = \"pair.key\"\n",
            "",
            "t.toml:5:1: [pair] needs `auth_key_file",
        ),
        ("[node]", "[node\n", "t.toml:1:6"),
        (
            "name = \"proxy1\"",
            "name = \"\"",
            "t.toml:2:8: name must be 1 to 64 bytes",
        ),
        (
            "priority = 150",
            "priority = 150\nadmin = \"localhost\"",
            "t.toml:4:9: admin = \"localhost\" is not an address:port",
        ),
    ];
    for (from, to, want) in cases {
        assert!(GOOD.contains(from), "case source {from}");
        let text = GOOD.replacen(from, to, 1);
        let errs = errors(&text);
        assert!(
            errs.iter().any(|e| e.starts_with(want) || e.contains(want)),
            "for {to:?} wanted {want:?}, got {errs:?}"
        );
    }
}

#[test]
fn all_errors_are_reported_at_once() {
    let text = GOOD
        .replace("priority = 150", "priority = 0")
        .replace("router_id = 51", "router_id = 999");
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{errs:?}");
}

#[test]
fn missing_interface_is_an_error_only_when_running() {
    let text = GOOD.replace("interface = \"lo\"", "interface = \"nosuch0\"");
    assert!(parse(Path::new("t.toml"), &text, Host::Lenient).is_ok());
    let err = parse(Path::new("t.toml"), &text, Host::Strict)
        .err()
        .expect("strict fails");
    assert!(
        err.to_string()
            .contains("t.toml:6:13: interface `nosuch0` does not exist"),
        "{err}"
    );
}
