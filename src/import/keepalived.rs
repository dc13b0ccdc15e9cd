//! keepalived.conf `vrrp_instance` → `[node]` and `[pair]`.

use std::time::Duration;

use super::emit::Pair;
use super::{Diag, Severity, Source};

/// One statement: its words, its line, and its `{ ... }` block if it has one.
struct Node {
    line: usize,
    words: Vec<String>,
    block: Option<Vec<Node>>,
}

impl Node {
    fn text(&self) -> String {
        let mut t = self.words.join(" ");
        if self.block.is_some() {
            t.push_str(" { ... }");
        }
        t
    }
}

/// Words with their line: `#` and `!` start comments, `"` groups, braces are words of their own.
fn tokens(text: &str) -> Vec<(usize, String)> {
    let mut out = vec![];
    for (i, raw) in text.lines().enumerate() {
        let mut cur = String::new();
        let mut in_word = false;
        let mut quoted = false;
        for c in raw.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    in_word = true;
                }
                '#' | '!' if !quoted => break,
                '{' | '}' if !quoted => {
                    if in_word {
                        out.push((i + 1, std::mem::take(&mut cur)));
                        in_word = false;
                    }
                    out.push((i + 1, c.to_string()));
                }
                c if c.is_whitespace() && !quoted => {
                    if in_word {
                        out.push((i + 1, std::mem::take(&mut cur)));
                        in_word = false;
                    }
                }
                c => {
                    cur.push(c);
                    in_word = true;
                }
            }
        }
        if in_word {
            out.push((i + 1, cur));
        }
    }
    out
}

/// Statements until the closing brace (or the end).
fn block(toks: &[(usize, String)], i: &mut usize) -> Vec<Node> {
    let mut out = vec![];
    while *i < toks.len() {
        let line = toks[*i].0;
        if toks[*i].1 == "}" {
            *i += 1;
            return out;
        }
        let mut words = vec![];
        while *i < toks.len() && toks[*i].0 == line && toks[*i].1 != "{" && toks[*i].1 != "}" {
            words.push(toks[*i].1.clone());
            *i += 1;
        }
        let inner = if *i < toks.len() && toks[*i].1 == "{" {
            *i += 1;
            Some(block(toks, i))
        } else {
            None
        };
        out.push(Node {
            line,
            words,
            block: inner,
        });
    }
    out
}

struct Report<'a> {
    file: &'a str,
    diags: &'a mut Vec<Diag>,
}

impl Report<'_> {
    fn push(&mut self, severity: Severity, line: usize, message: String) {
        self.diags.push(Diag {
            file: self.file.to_string(),
            line,
            severity,
            message,
        });
    }
    fn unsupported(&mut self, n: &Node, why: &str) {
        self.push(
            Severity::Warning,
            n.line,
            format!("'{}' is not supported{why}; dropped", n.text()),
        );
    }
}

/// keepalived seconds (`1`, `0.1`) → a duration.
fn secs(s: &str) -> Option<Duration> {
    let f: f64 = s.parse().ok()?;
    (f.is_finite() && f >= 0.0).then(|| Duration::from_millis((f * 1000.0).round() as u64))
}

pub(super) fn convert(src: &Source<'_>, diags: &mut Vec<Diag>) -> Pair {
    let mut r = Report {
        file: src.name,
        diags,
    };
    let toks = tokens(src.text);
    let mut i = 0;
    let mut top = vec![];
    while i < toks.len() {
        top.extend(block(&toks, &mut i));
    }
    let mut pair = Pair {
        file: src.name.to_string(),
        ..Pair::default()
    };
    let mut seen_instance = false;
    for n in &top {
        let w0 = n.words.first().map(String::as_str).unwrap_or("");
        match (w0, &n.block) {
            ("global_defs", Some(b)) => global_defs(b, &mut pair, &mut r),
            ("vrrp_instance", Some(b)) if !seen_instance => {
                seen_instance = true;
                instance(b, &mut pair, &mut r);
            }
            ("vrrp_instance", Some(_)) => r.unsupported(
                n,
                " (hapair holds one set of VIPs per pair; add its VIPs to pair.vips if both instances share a master)",
            ),
            ("vrrp_script", _) => r.unsupported(
                n,
                " (supervise the daemon as a [[service]] with a check and a weight, or rely on the balancer's checks)",
            ),
            ("vrrp_sync_group", _) => r.unsupported(n, " (hapair's VIPs always move together)"),
            ("virtual_server" | "virtual_server_group", _) => {
                r.unsupported(n, " (LVS; use a [[listen]] section)")
            }
            _ => r.unsupported(n, " (no hapair equivalent)"),
        }
    }
    if !seen_instance {
        r.push(
            Severity::Warning,
            1,
            "no vrrp_instance found: [pair] is a skeleton with TODO values".into(),
        );
    }
    pair
}

fn global_defs(b: &[Node], pair: &mut Pair, r: &mut Report<'_>) {
    for n in b {
        match (n.words.first().map(String::as_str), n.words.get(1)) {
            (Some("router_id"), Some(id)) if n.words.len() == 2 => {
                pair.node_name = Some(id.clone());
                r.push(
                    Severity::Note,
                    n.line,
                    format!("'{}' is written as node.name", n.text()),
                );
            }
            _ => r.unsupported(n, " (no hapair equivalent)"),
        }
    }
}

fn instance(b: &[Node], p: &mut Pair, r: &mut Report<'_>) {
    for n in b {
        let w: Vec<&str> = n.words.iter().map(String::as_str).collect();
        let arg = w.get(1).copied();
        let num = arg.and_then(|a| a.parse::<u64>().ok());
        match (w.first().copied().unwrap_or(""), arg) {
            ("state", Some(s)) => r.push(
                Severity::Note,
                n.line,
                format!("'state {s}': hapair elects by priority (and preempt); there is no initial state"),
            ),
            ("interface", Some(i)) => p.interface = Some(i.to_string()),
            ("virtual_router_id", _) if num.is_some_and(|n| (1..=255).contains(&n)) => {
                p.router_id = num
            }
            ("priority", _) if num.is_some_and(|n| (1..=255).contains(&n)) => {
                let n_ = num.unwrap_or(100);
                if n_ == 255 {
                    r.push(
                        Severity::Note,
                        n.line,
                        "'priority 255' (address owner) is written as 254, hapair's highest".into(),
                    );
                }
                p.priority = Some(n_.min(254));
            }
            ("advert_int", Some(a)) if secs(a).is_some() => {
                let d = secs(a).unwrap_or_default();
                let clamped = d.clamp(Duration::from_millis(10), Duration::from_secs(10));
                if clamped != d {
                    r.push(
                        Severity::Note,
                        n.line,
                        format!("'{}' is outside hapair's 10ms..=10s; clamped", n.text()),
                    );
                }
                p.advert_interval = Some(clamped);
            }
            ("nopreempt", None) => p.preempt = Some(false),
            ("preempt", None) => p.preempt = Some(true),
            ("preempt_delay", Some(a)) if secs(a).is_some() => p.preempt_delay = secs(a),
            ("garp_master_delay", Some(a)) if secs(a).is_some() => p.garp_repeat_after = secs(a),
            ("garp_master_repeat", _) if num.is_some_and(|n| (1..=100).contains(&n)) => {
                p.garp_count = num
            }
            ("garp_master_refresh", Some(a)) if secs(a).is_some() => {
                let d = secs(a).unwrap_or_default();
                p.garp_refresh = Some(if d.is_zero() || d >= Duration::from_secs(1) {
                    d
                } else {
                    Duration::from_secs(1)
                });
            }
            ("unicast_src_ip", Some(_)) => r.unsupported(
                n,
                " (hapair sends heartbeats from pair.interface's address)",
            ),
            ("unicast_peer", None) => match &n.block {
                Some(peers) => {
                    for peer in peers {
                        match peer.words.first() {
                            Some(a) if a.parse::<std::net::IpAddr>().is_ok() => {
                                p.peers.push(a.clone());
                                if peer.words.len() > 1 {
                                    r.push(
                                        Severity::Warning,
                                        peer.line,
                                        format!("unicast_peer options '{}' are not supported; dropped", peer.words[1..].join(" ")),
                                    );
                                }
                            }
                            _ => r.unsupported(peer, " (not an IP address)"),
                        }
                    }
                    if p.peers.len() > 1 {
                        r.push(
                            Severity::Warning,
                            n.line,
                            "several unicast peers: hapair pairs exactly two nodes, and reads a list of peers as redundant links to the same node".into(),
                        );
                    }
                }
                None => r.unsupported(n, ""),
            },
            ("virtual_ipaddress" | "virtual_ipaddress_excluded", None) => {
                let Some(vips) = &n.block else {
                    r.unsupported(n, "");
                    continue;
                };
                if w[0] == "virtual_ipaddress_excluded" {
                    r.push(
                        Severity::Note,
                        n.line,
                        "virtual_ipaddress_excluded is merged into pair.vips".into(),
                    );
                }
                for v in vips {
                    vip(v, p, r);
                }
            }
            ("notify", Some(s)) if w.len() == 2 => {
                r.push(
                    Severity::Note,
                    n.line,
                    "hapair runs the notify script with <new-role> <node-name>, not keepalived's arguments: adapt the script".into(),
                );
                p.notify = Some(s.to_string());
            }
            ("notify_master" | "notify_backup" | "notify_fault" | "notify_stop", _) => r
                .unsupported(
                    n,
                    " (hapair has one pair.notify script, run as: notify <new-role> <node-name>)",
                ),
            ("authentication", None) if n.block.is_some() => {
                p.had_auth = true;
                let kind = n
                    .block
                    .iter()
                    .flatten()
                    .find(|a| a.words.first().map(String::as_str) == Some("auth_type"))
                    .and_then(|a| a.words.get(1).cloned())
                    .unwrap_or_else(|| "?".into());
                r.push(
                    Severity::Warning,
                    n.line,
                    format!("'authentication {{ auth_type {kind} ... }}' is replaced by HMAC-SHA256: a new key file is needed (hapair keygen /etc/hapair/pair.key); the password is not carried over"),
                );
            }
            ("track_script", _) => r.unsupported(
                n,
                " (supervise the daemon as a [[service]] with a check and a weight)",
            ),
            ("track_interface", _) => r.unsupported(
                n,
                " (hapair enters fault when pair.interface goes down; other interfaces are not tracked)",
            ),
            _ => r.unsupported(n, " (no hapair equivalent)"),
        }
    }
}

/// `192.0.2.100/24 dev eth1 label eth1:1` → `192.0.2.100/24`.
fn vip(v: &Node, p: &mut Pair, r: &mut Report<'_>) {
    let Some(addr) = v.words.first() else { return };
    let ok = addr.parse::<ipnet::IpNet>().is_ok() || addr.parse::<std::net::IpAddr>().is_ok();
    if !ok {
        r.unsupported(v, " (not an address)");
        return;
    }
    let with_prefix = if addr.contains('/') {
        addr.clone()
    } else {
        // keepalived's default prefix for a bare address.
        let bits = if addr.contains(':') { 128 } else { 32 };
        format!("{addr}/{bits}")
    };
    let rest = &v.words[1..];
    let other_dev = rest
        .windows(2)
        .find(|x| x[0] == "dev")
        .map(|x| x[1].as_str())
        .filter(|d| p.interface.as_deref().is_some_and(|i| i != *d));
    if let Some(d) = other_dev {
        r.push(
            Severity::Warning,
            v.line,
            format!("VIP {addr} on another interface ('dev {d}') is not supported: hapair adds every VIP on pair.interface"),
        );
    } else if !(rest.is_empty() || rest.len() == 2 && rest[0] == "dev") {
        r.push(
            Severity::Warning,
            v.line,
            format!(
                "VIP options '{}' are not supported; dropped",
                rest.join(" ")
            ),
        );
    }
    if !p.vips.contains(&with_prefix) {
        p.vips.push(with_prefix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_nest_with_braces_anywhere() {
        let t = tokens("vrrp_instance VI_1 {\n  unicast_peer {\n 192.0.2.12 }\n}\nvrrp_script x\n{\n script \"/bin/a b\" # c\n}\n");
        let mut i = 0;
        let top = block(&t, &mut i);
        assert_eq!(top.len(), 2);
        let inner = top[0].block.as_ref().unwrap();
        assert_eq!(inner[0].words, ["unicast_peer"]);
        assert_eq!(inner[0].block.as_ref().unwrap()[0].words, ["192.0.2.12"]);
        assert_eq!(top[1].line, 5);
        assert_eq!(
            top[1].block.as_ref().unwrap()[0].words,
            ["script", "/bin/a b"]
        );
    }

    #[test]
    fn seconds() {
        assert_eq!(secs("1"), Some(Duration::from_secs(1)));
        assert_eq!(secs("0.1"), Some(Duration::from_millis(100)));
        assert_eq!(secs("x"), None);
    }
}
