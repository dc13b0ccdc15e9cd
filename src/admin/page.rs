//! The HTML status page: a haproxy-style stats page with the pair on top.
//!
//! - No JavaScript at all: `<meta http-equiv="refresh">` reloads it every 2 s, and the
//!   response's Content-Security-Policy forbids scripts.
//! - Every piece of text goes through [`esc`]: server names, event messages and check details
//!   may come from a config or a peer.
//! - Stable hooks for tests and scrapers: `id="role"` with `data-role`, `id="vips"`,
//!   `li.vip[data-vip][data-held]`, `tr.server[data-listener][data-server][data-state]`,
//!   `#peer[data-alive]`, `#services`, `tr.event[data-kind]`.

use std::fmt::Write;

use super::status::{age, timestamp, Status};

/// Seconds between automatic reloads.
pub const REFRESH_S: u32 = 2;

/// Escape text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:13px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222}\
h1{font-size:18px;margin:0 0 .5em}h2{font-size:15px;margin:1.2em 0 .3em}\
table{border-collapse:collapse;margin:.2em 0}th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}\
th{background:#eee}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.role{font-weight:bold;padding:1px 6px;border-radius:3px}\
.role-master{background:#8e8;}.role-backup{background:#adf}.role-fault{background:#f88}.role-init{background:#ddd}\
tr[data-state=up] td.state{background:#8e8}tr[data-state=down] td.state{background:#f88}\
tr[data-state=drain] td.state{background:#fd8}tr[data-state=maint] td.state{background:#ccc}\
.muted{color:#777}.bad{color:#b00}";

/// Render the whole page.
pub fn render(s: &Status) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let p = &s.pair;
    let role = p.role.to_lowercase();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\
         <title>hapair {node}: {role}</title><style>{STYLE}</style></head><body>\n",
        node = esc(&s.node),
        role = esc(&role),
    );
    let _ = write!(
        h,
        "<h1>hapair <span id=\"node\">{node}</span> is \
         <span id=\"role\" class=\"role role-{role}\" data-role=\"{role}\">{ROLE}</span></h1>\n\
         <p class=\"muted\">version {ver} · snapshot {at} · refreshes every {REFRESH_S} s · \
         <a href=\"/status\">/status</a> · <a href=\"/metrics\">/metrics</a></p>\n",
        node = esc(&s.node),
        role = esc(&role),
        ROLE = esc(&p.role.to_uppercase()),
        ver = esc(&s.version),
        at = timestamp(s.now_ms),
    );
    pair_section(&mut h, s);
    for l in &s.listeners {
        listener_section(&mut h, s, l);
    }
    if s.listeners.is_empty() {
        h.push_str("<h2>Listeners</h2><p class=\"muted\">no listeners configured</p>\n");
    }
    services_section(&mut h, s);
    if let Some(z) = &s.zookeeper {
        zookeeper_section(&mut h, s, z);
    }
    events_section(&mut h, s);
    h.push_str("</body></html>\n");
    h
}

fn pair_section(h: &mut String, s: &Status) {
    let p = &s.pair;
    let since = if p.role_since_ms > 0 {
        format!(
            "{} ({} ago)",
            timestamp(p.role_since_ms),
            age(s.now_ms.saturating_sub(p.role_since_ms))
        )
    } else {
        "start".into()
    };
    let _ = write!(
        h,
        "<h2>Pair</h2>\n<table id=\"pair\"><tr><th>role since</th><td id=\"role-since\">{since}</td></tr>\
         <tr><th>priority</th><td id=\"priority\" data-priority=\"{prio}\">{prio}</td></tr>\
         <tr><th>why</th><td id=\"priority-why\">{why}</td></tr>\
         <tr><th>interface</th><td>{ifc}</td></tr>\
         <tr><th>heartbeats</th><td>sent {sent} · received {recv} · late {late} (max {maxlate} ms) · failovers {fo}</td></tr>\
         <tr><th>dropped</th><td id=\"dropped\">{dropped}</td></tr></table>\n",
        since = esc(&since),
        prio = p.priority,
        why = esc(&s.priority_reason()),
        ifc = esc(&p.interface),
        sent = p.sent,
        recv = p.received,
        late = p.late_adverts,
        maxlate = p.max_late_ms,
        fo = p.failovers,
        dropped = if p.dropped.is_empty() {
            "none".to_string()
        } else {
            esc(&p
                .dropped
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(" · "))
        },
    );
    h.push_str("<h2>Peer</h2>\n");
    match &p.peer {
        None => h.push_str(
            "<p id=\"peer\" data-alive=\"false\" class=\"bad\">no peer heard since start</p>\n",
        ),
        Some(peer) => {
            let _ = writeln!(
                h,
                "<table id=\"peer\" data-alive=\"{alive}\"><tr><th>name</th><th>address</th><th>role</th>\
                 <th>priority</th><th>last heartbeat</th><th>alive</th></tr>\
                 <tr><td id=\"peer-name\">{name}</td><td>{addr}</td><td id=\"peer-role\">{role}</td>\
                 <td class=\"n\">{prio}</td><td class=\"n\">{heard} ago</td><td class=\"{cls}\">{alive_s}</td></tr></table>",
                alive = peer.alive,
                name = esc(&peer.name),
                addr = esc(&peer.addr),
                role = esc(&peer.role),
                prio = peer.priority,
                heard = age(peer.last_heard_ms_ago),
                cls = if peer.alive { "" } else { "bad" },
                alive_s = if peer.alive { "yes" } else { "NO" },
            );
        }
    }
    let _ = write!(
        h,
        "<h2>VIPs</h2>\n<ul id=\"vips\" data-held=\"{}\">",
        p.vips_held
    );
    for v in &p.vips {
        let _ = write!(
            h,
            "<li class=\"vip\" data-vip=\"{v}\" data-held=\"{held}\">{v} — {what}</li>",
            v = esc(v),
            held = p.vips_held,
            what = if p.vips_held {
                "held here"
            } else {
                "not held here"
            },
        );
    }
    h.push_str("</ul>\n");
}

fn listener_section(h: &mut String, s: &Status, l: &crate::balancer::ListenerStatus) {
    let _ = write!(
        h,
        "<h2>Listener <span class=\"listener-name\">{name}</span></h2>\n\
         <p class=\"listener\" data-listener=\"{name}\">bind {bind} · balance {bal} · maxconn {maxconn} · \
         active {active} · total {total} · in {bin} B · out {bout} B · connect failures {cf} · \
         retries {retries} · no server {ns}</p>\n\
         <table class=\"servers\" data-listener=\"{name}\"><tr><th>server</th><th>address</th>\
         <th>weight</th><th>state</th><th>since</th><th>active</th><th>total</th><th>bytes in</th>\
         <th>bytes out</th><th>connect failures</th><th>retries</th><th>last check</th></tr>\n",
        name = esc(&l.name),
        bind = esc(&l.bind),
        bal = esc(l.balance.as_str()),
        maxconn = l.maxconn,
        active = l.active,
        total = l.total,
        bin = l.bytes_in,
        bout = l.bytes_out,
        cf = l.connect_failures,
        retries = l.retries,
        ns = l.no_server,
    );
    for sv in &l.servers {
        let state = server_state(sv);
        let check = match &sv.last_check {
            None => "<span class=\"muted\">no check</span>".to_string(),
            Some(c) if c.ok => format!("ok, {} ago", age(s.now_ms.saturating_sub(c.at_unix_ms))),
            Some(c) => format!(
                "<span class=\"bad\">failed: {}</span>, {} ago",
                esc(&c.detail),
                age(s.now_ms.saturating_sub(c.at_unix_ms))
            ),
        };
        let since = if sv.last_change_unix_ms > 0 {
            age(s.now_ms.saturating_sub(sv.last_change_unix_ms))
        } else {
            "start".into()
        };
        let _ = writeln!(
            h,
            "<tr class=\"server\" data-listener=\"{lname}\" data-server=\"{name}\" data-state=\"{state}\">\
             <td>{name}{backup}</td><td>{addr}</td><td class=\"n\">{w}</td><td class=\"state\">{state}</td>\
             <td class=\"n\">{since}</td><td class=\"n active\">{active}</td><td class=\"n total\">{total}</td>\
             <td class=\"n\">{bin}</td><td class=\"n\">{bout}</td><td class=\"n\">{cf}</td><td class=\"n\">{re}</td>\
             <td class=\"check\">{check}</td></tr>",
            lname = esc(&l.name),
            name = esc(&sv.name),
            backup = if sv.backup { " (backup)" } else { "" },
            addr = esc(&sv.addr),
            w = sv.weight,
            state = esc(state),
            active = sv.active,
            total = sv.total,
            bin = sv.bytes_in,
            bout = sv.bytes_out,
            cf = sv.connect_failures,
            re = sv.retries,
        );
    }
    h.push_str("</table>\n");
}

/// The lowercase state name as `/status` spells it.
pub fn server_state(s: &crate::balancer::ServerStatus) -> &'static str {
    use crate::balancer::ServerState::*;
    match s.state {
        Up => "up",
        Down => "down",
        Drain => "drain",
        Maint => "maint",
    }
}

fn services_section(h: &mut String, s: &Status) {
    h.push_str("<h2>Services</h2>\n<div id=\"services\">");
    if s.services.is_empty() {
        h.push_str("<p class=\"muted\">no supervised services</p>");
    } else {
        h.push_str(
            "<table><tr><th>service</th><th>state</th><th>pid</th><th>restarts</th><th>active</th></tr>",
        );
        for sv in &s.services {
            let f = |k: &str| match sv.get(k) {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(x)) => esc(x),
                Some(v) => esc(&v.to_string()),
            };
            let _ = write!(
                h,
                "<tr class=\"service\" data-service=\"{n}\" data-state=\"{st}\"><td>{n}</td><td>{st}</td>\
                 <td class=\"n\">{pid}</td><td class=\"n\">{r}</td><td>{a}</td></tr>",
                n = f("name"),
                st = f("state"),
                pid = f("pid"),
                r = f("restarts"),
                a = f("active"),
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</div>\n");
}

/// Hooks: `#zookeeper[data-state]`, `tr.znode[data-path]`.
fn zookeeper_section(h: &mut String, s: &Status, z: &crate::zk::ZkStatus) {
    let _ = write!(
        h,
        "<h2>ZooKeeper</h2>\n<div id=\"zookeeper\" data-state=\"{st}\"><p>{q} · namespace {ns} · register {r} · \
         <b>{st}</b> for {age}{sess} · sessions {n} · expired {x} · errors {e}{last}</p>",
        st = esc(&z.state),
        q = esc(&z.quorum),
        ns = esc(&z.namespace),
        r = esc(&z.register),
        age = age(s.now_ms.saturating_sub(z.state_since_unix_ms)),
        sess = z
            .session_id
            .as_ref()
            .map(|id| format!(" · session {}", esc(id)))
            .unwrap_or_default(),
        n = z.sessions,
        x = z.expirations,
        e = z.errors,
        last = z
            .last_error
            .as_ref()
            .map(|m| format!(" · <span class=\"bad\">last error: {}</span>", esc(m)))
            .unwrap_or_default(),
    );
    if z.znodes.is_empty() {
        h.push_str("<p class=\"muted\">no znodes registered by this node</p>");
    } else {
        h.push_str("<table><tr><th>znode</th><th>listener</th><th>server</th><th>transport</th><th>age</th></tr>");
        for n in &z.znodes {
            let _ = write!(
                h,
                "<tr class=\"znode\" data-path=\"{p}\"><td>{p}</td><td>{l}</td><td>{sv}</td><td>{t}</td><td>{a}</td></tr>",
                p = esc(&n.path),
                l = esc(&n.listener),
                sv = esc(n.server.as_deref().unwrap_or("(vip)")),
                t = n.transport,
                a = age(s.now_ms.saturating_sub(n.since_unix_ms)),
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</div>\n");
}

fn events_section(h: &mut String, s: &Status) {
    let _ = write!(
        h,
        "<h2>Events (last {})</h2>\n<table id=\"events\"><tr><th>time (UTC)</th><th>kind</th><th>what</th></tr>\n",
        super::status::EVENTS
    );
    // Newest first: that is what an operator reads.
    for e in s.events.iter().rev() {
        let _ = writeln!(
            h,
            "<tr class=\"event\" data-kind=\"{k}\"><td>{t}</td><td>{k}</td><td>{m}</td></tr>",
            t = timestamp(e.at_ms),
            k = esc(e.kind),
            m = esc(&e.message),
        );
    }
    h.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::PairStatus;
    use crate::events::Event;

    #[test]
    fn escapes_everything_that_matters() {
        assert_eq!(
            esc("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn page_escapes_event_text_and_has_hooks() {
        let s = Status {
            version: "0.1.0".into(),
            node: "proxy<1>".into(),
            now_ms: 10_000,
            pair: PairStatus {
                role: "master".into(),
                vips: vec!["192.0.2.100/24".into()],
                vips_held: true,
                priority: 150,
                configured_priority: 150,
                ..Default::default()
            },
            listeners: vec![],
            services: vec![],
            zookeeper: None,
            control_enabled: false,
            events: vec![Event {
                at_ms: 9_000,
                kind: "warn",
                message: "<img src=x onerror=alert(1)>".into(),
            }],
        };
        let h = render(&s);
        assert!(h.contains("id=\"role\" class=\"role role-master\" data-role=\"master\""));
        assert!(h.contains("data-vip=\"192.0.2.100/24\" data-held=\"true\""));
        assert!(h.contains("proxy&lt;1&gt;"));
        assert!(!h.contains("<img"), "unescaped event text");
        assert!(!h.contains("<script"), "no script on the page");
    }
}
