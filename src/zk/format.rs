//! The HiveServer2 dynamic-discovery format: znode names, znode data, and the reader's rules.
//!
//! A znode is `/<namespace>/serverUri=<host>:<port>;version=<v>;sequence=<10 digits>`; the
//! registrar creates it EPHEMERAL_SEQUENTIAL with the path up to `sequence=` and ZooKeeper
//! appends the digits. Its data is a `;`-separated list of `key=value` pairs that the Hive JDBC
//! driver (`ZooKeeperHiveClientHelper`) reads.

/// One thing to publish: a host and port, binary or HTTP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// The `[[listen]]` it comes from.
    pub listener: String,
    /// The server's name in `servers` mode; `None` in `vip` mode.
    pub server: Option<String>,
    pub host: String,
    pub port: u16,
    pub http: bool,
}

/// What is written into the data besides host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    pub version: &'a str,
    pub authentication: &'a str,
    pub principal: Option<&'a str>,
    pub http_path: &'a str,
}

/// `host:port`, with brackets around an IPv6 literal.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The node name up to and including `sequence=`; ZooKeeper appends the 10-digit suffix.
pub fn name_prefix(e: &Entry, version: &str) -> String {
    format!(
        "serverUri={};version={version};sequence=",
        host_port(&e.host, e.port)
    )
}

/// The node's data, in the order HiveServer2 writes it.
pub fn data(e: &Entry, p: &Publish<'_>) -> String {
    let mut s = format!("hive.server2.thrift.bind.host={}", e.host);
    if e.http {
        s += &format!(
            ";hive.server2.transport.mode=http;hive.server2.thrift.http.port={};hive.server2.thrift.http.path={}",
            e.port, p.http_path
        );
    } else {
        s += &format!(
            ";hive.server2.thrift.port={};hive.server2.transport.mode=binary",
            e.port
        );
    }
    s += &format!(";hive.server2.authentication={}", p.authentication);
    if let Some(pr) = p.principal {
        s += &format!(";hive.server2.authentication.kerberos.principal={pr}");
    }
    s
}

/// Splits a created node name into its prefix (up to `sequence=`) and the sequence digits.
pub fn split_sequence(name: &str) -> Option<(&str, &str)> {
    let i = name.rfind("sequence=")? + "sequence=".len();
    let (prefix, seq) = name.split_at(i);
    (!seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit())).then_some((prefix, seq))
}

/// What a Hive JDBC client makes of one znode.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HiveServer {
    pub host: String,
    pub port: u16,
    /// `binary` or `http`; empty when the data does not say.
    pub transport_mode: String,
    pub http_path: Option<String>,
    pub authentication: Option<String>,
    pub principal: Option<String>,
}

/// Parses znode data with the Hive driver's rules: `key=value` pairs split on `;`;
/// `hive.server2.thrift.port` always sets the port, `hive.server2.thrift.http.port` only when
/// no port is set yet. Data without any `=` is the old `host:port` form.
pub fn parse_hive(data: &str) -> Option<HiveServer> {
    if !data.contains('=') {
        let (host, port) = data.trim().rsplit_once(':')?;
        return Some(HiveServer {
            host: host.trim_matches(['[', ']']).to_string(),
            port: port.parse().ok()?,
            ..HiveServer::default()
        });
    }
    let mut s = HiveServer::default();
    for kv in data.split(';') {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        match k {
            "hive.server2.thrift.bind.host" => s.host = v.to_string(),
            "hive.server2.transport.mode" => s.transport_mode = v.to_string(),
            "hive.server2.thrift.http.path" => s.http_path = Some(v.to_string()),
            "hive.server2.authentication" => s.authentication = Some(v.to_string()),
            "hive.server2.authentication.kerberos.principal" => s.principal = Some(v.to_string()),
            "hive.server2.thrift.port" => s.port = v.parse().ok()?,
            "hive.server2.thrift.http.port" if s.port == 0 => s.port = v.parse().ok()?,
            _ => {}
        }
    }
    (!s.host.is_empty() && s.port != 0).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(http: bool) -> Entry {
        Entry {
            listener: "hs2".into(),
            server: Some("impala1".into()),
            host: "hadoop461.example.org".into(),
            port: if http { 28000 } else { 21050 },
            http,
        }
    }

    const P: Publish<'static> = Publish {
        version: "0.1.0",
        authentication: "NONE",
        principal: None,
        http_path: "cliservice",
    };

    #[test]
    fn binary_format_is_exact() {
        let e = entry(false);
        assert_eq!(
            name_prefix(&e, "0.1.0"),
            "serverUri=hadoop461.example.org:21050;version=0.1.0;sequence="
        );
        assert_eq!(
            data(&e, &P),
            "hive.server2.thrift.bind.host=hadoop461.example.org;hive.server2.thrift.port=21050;\
             hive.server2.transport.mode=binary;hive.server2.authentication=NONE"
        );
    }

    #[test]
    fn http_format_leaves_the_thrift_port_out() {
        let d = data(
            &entry(true),
            &Publish {
                authentication: "KERBEROS",
                principal: Some("impala/_HOST@EXAMPLE.ORG"),
                ..P
            },
        );
        assert_eq!(
            d,
            "hive.server2.thrift.bind.host=hadoop461.example.org;hive.server2.transport.mode=http;\
             hive.server2.thrift.http.port=28000;hive.server2.thrift.http.path=cliservice;\
             hive.server2.authentication=KERBEROS;\
             hive.server2.authentication.kerberos.principal=impala/_HOST@EXAMPLE.ORG"
        );
        assert!(!d.contains("hive.server2.thrift.port="));
        let h = parse_hive(&d).unwrap();
        assert_eq!((h.port, h.transport_mode.as_str()), (28000, "http"));
        assert_eq!(h.principal.as_deref(), Some("impala/_HOST@EXAMPLE.ORG"));
    }

    #[test]
    fn reader_follows_hive_rules() {
        let h = parse_hive(&data(&entry(false), &P)).unwrap();
        assert_eq!(h.host, "hadoop461.example.org");
        assert_eq!(h.port, 21050);
        // thrift.port overrides an earlier http.port; http.port does not override.
        let h = parse_hive("hive.server2.thrift.bind.host=h;hive.server2.thrift.http.port=1;hive.server2.thrift.port=2").unwrap();
        assert_eq!(h.port, 2);
        let h = parse_hive("hive.server2.thrift.bind.host=h;hive.server2.thrift.port=2;hive.server2.thrift.http.port=1").unwrap();
        assert_eq!(h.port, 2);
        assert_eq!(parse_hive("h1:21050").unwrap().port, 21050);
        assert_eq!(parse_hive("hive.server2.thrift.port=2"), None);
    }

    #[test]
    fn sequence_split() {
        assert_eq!(
            split_sequence("serverUri=h:1;version=v;sequence=0000000007"),
            Some(("serverUri=h:1;version=v;sequence=", "0000000007"))
        );
        assert_eq!(split_sequence("serverUri=h:1;version=v;sequence="), None);
    }

    #[test]
    fn ipv6_is_bracketed_in_the_name() {
        let e = Entry {
            host: "2001:db8::1".into(),
            ..entry(false)
        };
        assert!(name_prefix(&e, "v").starts_with("serverUri=[2001:db8::1]:21050;"));
    }
}
