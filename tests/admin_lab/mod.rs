//! A one-node lab for the admin tests: the real `hapair run` in a network namespace, proving
//! the daemon's wiring of the admin server to the pair, the balancer and the event log.
//!
//! ```text
//!   namespace hp<pid>-<lab>-p1 (plugged into the lab's switch)
//!     eth1 192.0.2.11/24       heartbeats to peer 192.0.2.12 (absent: the node becomes master
//!                              after dead_after adverts and holds VIP 192.0.2.100)
//!     hapair run               admin 127.0.0.1:9180, listeners hs2 127.0.0.1:21050 and
//!                              beeswax 127.0.0.1:21000
//!     stand-in impalads        impala1..3 on 127.0.0.2..4, port 21050, /healthz on 25000
//! ```
//!
//! Everything lives in the test's own namespaces; dropping the lab kills the daemon (by pid),
//! stops the stand-ins and deletes the namespaces, also on panic.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hapair::admin::client;
use hapair::lab::netns::{Lab, Netns, Proc};
use hapair::lab::standin::{StandinOpts, StandinRole};
use serde_json::Value;

pub const ADMIN: &str = "127.0.0.1:9180";
pub const VIP: &str = "192.0.2.100/24";
pub const HS2: &str = "127.0.0.1:21050";
pub const SERVERS: [&str; 3] = ["impala1", "impala2", "impala3"];
pub const TOKEN: &str = "admin-test-token-0123456789";

pub fn admin_addr() -> SocketAddr {
    ADMIN.parse().unwrap()
}

pub struct AdminLab {
    // Field order is drop order: the daemon, then the stand-ins, then the namespaces.
    proc: Option<Proc>,
    reader: Option<JoinHandle<()>>,
    standins: Vec<(Arc<AtomicBool>, JoinHandle<()>)>,
    /// The daemon's stderr, for failure messages.
    pub log: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub bin: PathBuf,
    pub host: Netns,
    pub lab: Lab,
}

impl Drop for AdminLab {
    fn drop(&mut self) {
        if let Some(p) = self.proc.take() {
            let _ = p.kill();
        }
        for (stop, _) in &self.standins {
            stop.store(true, Ordering::Relaxed);
        }
        for (_, h) in self.standins.drain(..) {
            let _ = h.join();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl AdminLab {
    /// Build the namespaces, stand-ins and config, start `hapair run`, and wait until it is
    /// master with every server up.
    pub fn start() -> AdminLab {
        let lab = Lab::new().expect("switch namespace");
        let host = lab.host("p1").expect("host namespace");
        lab.attach(&host, "eth1", &["192.0.2.11/24"])
            .expect("plug the host in");
        let dir = tempfile::Builder::new()
            .prefix("hapair-admin")
            .tempdir()
            .unwrap();
        hapair::wire::keygen(dir.path().join("pair.key")).unwrap();
        let token = dir.path().join("admin.token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        let config = dir.path().join("hapair.toml");
        std::fs::write(&config, config_text()).unwrap();
        let mut me = AdminLab {
            proc: None,
            reader: None,
            standins: Vec::new(),
            log: Arc::default(),
            dir,
            config,
            bin: PathBuf::from(env!("CARGO_BIN_EXE_hapair")),
            host,
            lab,
        };
        for (i, name) in SERVERS.iter().enumerate() {
            me.start_standin(name, i as u8 + 2);
        }
        me.start_daemon();
        me.wait_for(
            "master with every server up",
            Duration::from_secs(20),
            |s| {
                s["pair"]["role"] == "master"
                    && s["pair"]["vips_held"] == true
                    && s["listeners"]
                        .as_array()
                        .is_some_and(|ls| ls.iter().all(all_up))
            },
        );
        me
    }

    fn start_standin(&mut self, name: &str, last_octet: u8) {
        let ip = std::net::IpAddr::from([127, 0, 0, last_octet]);
        let mut opts = StandinOpts::new(StandinRole::Impalad);
        opts.name = Some(name.to_string());
        opts.listen = vec![SocketAddr::new(ip, 21050)];
        opts.web = Some(SocketAddr::new(ip, 25000));
        let (stop, h) =
            hapair::lab::pairlab::standin_thread(&self.host, opts).expect("stand-in start");
        self.standins.push((stop, h));
    }

    fn start_daemon(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("run")
            .arg("-c")
            .arg(&self.config)
            .env("HAPAIR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let proc = self.host.spawn(cmd).expect("spawn hapair run");
        let stderr = proc.take_stderr().unwrap();
        let log = self.log.clone();
        self.reader = Some(std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        }));
        self.proc = Some(proc);
    }

    /// The daemon's log so far, for assertion messages.
    pub fn logs(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// One admin request from inside the namespace.
    pub fn request(&self, method: &str, target: &str, token: Option<&str>) -> (u16, String) {
        let (m, t, tok) = (
            method.to_string(),
            target.to_string(),
            token.map(str::to_string),
        );
        self.host
            .in_ns(move || client::request(admin_addr(), &m, &t, tok.as_deref()))
            .unwrap()
            .unwrap_or_else(|e| panic!("{method} {target}: {e}\n{}", self.logs()))
    }

    pub fn status(&self) -> Value {
        let (code, body) = self.request("GET", "/status", None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Poll `/status` until `pred` holds; panic with the daemon's log after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let r = self
                .host
                .in_ns(|| client::fetch_status(admin_addr()))
                .unwrap();
            if let Ok(s) = r {
                if pred(&s) {
                    return s;
                }
                last = s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; last /status:\n{last:#}\nhapair log:\n{}",
            self.logs()
        );
    }

    /// `hapair ARGS...` run inside the namespace.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut v: Vec<std::ffi::OsString> = vec![self.bin.clone().into()];
        v.extend(args.iter().map(Into::into));
        self.host.run(v).expect("run the hapair CLI")
    }

    /// `n` client connections through the hs2 listener: read the banner (the server's name),
    /// send a line, read it echoed, close. Returns the banners.
    pub fn connect_through(&self, n: usize) -> Vec<String> {
        self.host
            .in_ns(move || {
                (0..n)
                    .map(|i| {
                        let mut s = TcpStream::connect(HS2).expect("connect to hs2");
                        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        let mut r = BufReader::new(s.try_clone().unwrap());
                        let mut banner = String::new();
                        r.read_line(&mut banner).unwrap();
                        let msg = format!("hello {i}\n");
                        s.write_all(msg.as_bytes()).unwrap();
                        let mut echo = String::new();
                        r.read_line(&mut echo).unwrap();
                        assert_eq!(echo, msg);
                        s.shutdown(std::net::Shutdown::Write).unwrap();
                        let mut rest = Vec::new();
                        let _ = r.read_to_end(&mut rest);
                        banner.trim().to_string()
                    })
                    .collect()
            })
            .unwrap()
    }
}

pub fn all_up(listener: &Value) -> bool {
    listener["servers"]
        .as_array()
        .is_some_and(|ss| !ss.is_empty() && ss.iter().all(|s| s["state"] == "up"))
}

/// The state of `server` in `listener` from a `/status` document.
pub fn state_of<'a>(status: &'a Value, listener: &str, server: &str) -> &'a str {
    status["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["name"] == listener)
        .flat_map(|l| l["servers"].as_array().into_iter().flatten())
        .find(|s| s["name"] == server)
        .and_then(|s| s["state"].as_str())
        .unwrap_or("absent")
}

fn config_text() -> String {
    let servers = SERVERS
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "  {{ name = \"{n}\", addr = \"127.0.0.{}:21050\" }},\n",
                i + 2
            )
        })
        .collect::<String>();
    let check = "check = { type = \"http\", port = 25000, path = \"/healthz\", interval = \"200ms\", timeout = \"200ms\", fall = 2, rise = 1 }";
    format!(
        "[node]\nname = \"proxy1\"\npriority = 150\nadmin = \"{ADMIN}\"\nadmin_token_file = \"admin.token\"\n\n\
         [pair]\ninterface = \"eth1\"\nrouter_id = 51\npeer = \"192.0.2.12\"\nauth_key_file = \"pair.key\"\n\
         vips = [\"{VIP}\"]\nadvert_interval = \"50ms\"\ndead_after = 3\n\n\
         [[listen]]\nname = \"hs2\"\nbind = \"{HS2}\"\nbalance = \"roundrobin\"\n{check}\nservers = [\n{servers}]\n\n\
         [[listen]]\nname = \"beeswax\"\nbind = \"127.0.0.1:21000\"\nbalance = \"leastconn\"\n{check}\nservers = [\n{servers}]\n"
    )
}
