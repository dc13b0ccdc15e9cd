use super::*;

fn run(h: &str, k: Option<&str>) -> Imported {
    import(
        Some(Source {
            name: "haproxy.cfg",
            text: h,
        }),
        k.map(|text| Source {
            name: "keepalived.conf",
            text,
        }),
    )
}

fn warnings(i: &Imported) -> Vec<String> {
    i.diags.iter().map(|d| d.to_string()).collect()
}

#[test]
fn the_brief_example_warning() {
    let i = run(
        "frontend f\n  bind :80\n  default_backend b\n\n\n\n\n\n\n\n\n  acl is_api path_beg /api\nbackend b\n  server s 127.0.0.1:81\n",
        None,
    );
    assert_eq!(
        warnings(&i),
        ["haproxy.cfg:12: warning: 'acl is_api path_beg /api' is not supported (hapair is layer 4); dropped"]
    );
    assert!(i.toml.contains(
        "# unsupported: haproxy.cfg:12: 'acl is_api path_beg /api' is not supported (hapair is layer 4); dropped\n"
    ));
}

#[test]
fn output_is_a_valid_config() {
    let i = run(
        "global\n maxconn 100\ndefaults\n mode tcp\n timeout client 1h\nlisten a\n bind :21050\n balance leastconn\n option httpchk GET /healthz\n server x 127.0.0.1:21050 check port 25000 inter 1s fall 2 rise 3\n",
        Some("vrrp_instance V {\n interface lo\n virtual_router_id 9\n priority 255\n advert_int 0.1\n unicast_peer {\n  192.0.2.12\n }\n virtual_ipaddress {\n  192.0.2.100\n }\n}\nvrrp_instance W {\n}\n"),
    );
    let w = warnings(&i);
    assert!(
        w.iter()
            .any(|w| w.starts_with("keepalived.conf:13: warning: 'vrrp_instance W { ... }'")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.starts_with("keepalived.conf:4: note: 'priority 255'")),
        "{w:?}"
    );
    assert!(i.toml.contains("vips = [\"192.0.2.100/32\"]"), "{}", i.toml);
    assert!(i.toml.contains("priority = 254\n"), "{}", i.toml);
    assert!(
        i.toml.contains("advert_interval = \"100ms\"\n"),
        "{}",
        i.toml
    );
    let loaded = crate::config::parse(
        std::path::Path::new("/tmp/import-test.toml"),
        &i.toml,
        crate::config::Host::Lenient,
    )
    .unwrap_or_else(|d| panic!("{d}\n{}", i.toml));
    let l = &loaded.config.listen[0];
    assert_eq!(l.maxconn, 100);
    let c = l.check.as_ref().unwrap();
    assert_eq!((c.port, c.fall, c.rise), (Some(25000), 2, 3));
    assert_eq!(l.client_timeout, Duration::from_secs(3600));
    assert_eq!(loaded.config.pair.router_id, 9);
}

#[test]
fn strings_are_escaped() {
    let i = run("listen \"a\\\"b\" :1\n server s 127.0.0.1:2\n", None);
    let v: toml::Value = toml::from_str(&i.toml).unwrap();
    assert_eq!(v["listen"][0]["name"].as_str(), Some("a\"b"), "{}", i.toml);
}
