//! The pair lab: a switch, two proxies running hapair, a client and a
//! witness, all in network namespaces of this process.
//!
//! ```text
//!   client 192.0.2.50 ─┐
//!   witness 192.0.2.1 ─┤ br0 (switch ns)
//!   proxy1 192.0.2.11 ─┤   VIP 192.0.2.100 on the master's eth1
//!   proxy2 192.0.2.12 ─┘
//! ```
//!
//! Used by `hapair lab demo|drill|bench` and by the namespace tests.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::client::{Attempt, ConnectLoop};
use super::netns::{Lab, Netns, Proc};
use super::sniff::{Sighting, Sniffer};
use super::standin::{Standin, StandinOpts, StandinRole};
use super::timeline::{EventKind, Timeline};

pub const VIP: &str = "192.0.2.100";
pub const WITNESS: &str = "192.0.2.1";
pub const CLIENT: &str = "192.0.2.50";
pub const PROXY: [&str; 2] = ["192.0.2.11", "192.0.2.12"];
pub const NAMES: [&str; 2] = ["proxy1", "proxy2"];
pub const SERVICE_PORT: u16 = 21050;
/// Stand-in impalad coordinators behind the balancer (full-stack labs).
pub const IMPALADS: [(&str, &str); 2] = [("impala1", "192.0.2.61"), ("impala2", "192.0.2.62")];
pub const IFACE: &str = "eth1";

/// Knobs of one lab run.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Extra lines for `[pair]` on both nodes (e.g. `advert_interval = "30ms"`).
    pub pair_extra: String,
    /// Per-node extra `[pair]` lines.
    pub node_extra: [String; 2],
    pub priorities: [u8; 2],
    /// Add a witness host at 192.0.2.1 and configure it on both nodes.
    pub witness: bool,
    /// Run a stand-in service on each proxy at SERVICE_PORT that answers with
    /// its proxy's name.
    pub service: bool,
    /// Supervise stand-in statestored (always) and catalogd (master only).
    pub impala_services: bool,
    /// Extra arguments for node i's catalogd stand-in (e.g. `--crash-after 10ms`).
    pub catalogd_args: [Vec<String>; 2],
    /// The whole deployment: two stand-in impalads on their own hosts behind
    /// hapair's balancer (`[[listen]]` on :21050 on both proxies), plus the
    /// supervised statestored and catalogd. The client's banner then names
    /// the impalad that answered.
    pub full_stack: bool,
    /// Appended to both nodes' configs (e.g. `[[listen]]` and `[zookeeper]` sections).
    pub extra_config: String,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            pair_extra: String::new(),
            node_extra: [String::new(), String::new()],
            priorities: [150, 100],
            witness: false,
            service: true,
            impala_services: false,
            catalogd_args: [vec![], vec![]],
            full_stack: false,
            extra_config: String::new(),
        }
    }
}

/// Something a hapair process said, seen in its JSON log.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub at_ms: f64,
    pub node: usize,
    pub level: String,
    pub message: String,
    pub fields: serde_json::Value,
}

pub struct PairLab {
    pub origin: Instant,
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub opts: LabOptions,
    // Field order matters for drop: processes and threads before namespaces.
    procs: [Option<Proc>; 2],
    readers: Vec<JoinHandle<()>>,
    services: Vec<(Arc<AtomicBool>, JoinHandle<()>)>,
    pub logs: Arc<Mutex<Vec<LogLine>>>,
    pub timeline: Arc<Mutex<Timeline>>,
    pub proxies: [Netns; 2],
    pub client: Netns,
    pub witness: Option<Netns>,
    /// Stand-in impalad hosts (full-stack labs).
    pub impalads: Vec<Netns>,
    /// Switch-side ports ("cables") of proxy1, proxy2, client, witness.
    pub ports: [String; 2],
    pub client_port: String,
    pub witness_port: Option<String>,
    pub lab: Lab,
}

impl PairLab {
    /// Build the namespaces, keys and configs. Nothing runs yet.
    pub fn new(bin: &Path, opts: LabOptions) -> anyhow::Result<PairLab> {
        let lab = Lab::new().context("create the switch namespace (are you root?)")?;
        let p1 = lab.host("p1")?;
        let p2 = lab.host("p2")?;
        let client = lab.host("cl")?;
        let port1 = lab.attach(&p1, IFACE, &[&format!("{}/24", PROXY[0])])?;
        let port2 = lab.attach(&p2, IFACE, &[&format!("{}/24", PROXY[1])])?;
        let client_port = lab.attach(&client, IFACE, &[&format!("{CLIENT}/24")])?;
        let (witness, witness_port) = if opts.witness {
            let w = lab.host("wi")?;
            let port = lab.attach(&w, IFACE, &[&format!("{WITNESS}/24")])?;
            (Some(w), Some(port))
        } else {
            (None, None)
        };
        let mut impalads = vec![];
        if opts.full_stack {
            for (i, (_, addr)) in IMPALADS.iter().enumerate() {
                let h = lab.host(&format!("i{}", i + 1))?;
                lab.attach(&h, IFACE, &[&format!("{addr}/24")])?;
                impalads.push(h);
            }
        }
        let dir = tempfile::Builder::new().prefix("hapair-lab").tempdir()?;
        let key = dir.path().join("pair.key");
        crate::wire::keygen(&key).context("write the lab's pair key")?;
        let mut lab = PairLab {
            origin: Instant::now(),
            dir,
            bin: bin.to_path_buf(),
            procs: [None, None],
            readers: vec![],
            services: vec![],
            logs: Arc::default(),
            timeline: Arc::new(Mutex::new(Timeline::new())),
            proxies: [p1, p2],
            client,
            witness,
            impalads,
            ports: [port1, port2],
            client_port,
            witness_port,
            lab,
            opts,
        };
        for i in 0..2 {
            std::fs::write(lab.config_path(i), lab.config_text(i))?;
        }
        let mut hosts: Vec<(&Netns, &str)> = vec![];
        if lab.opts.full_stack {
            hosts.extend(lab.impalads.iter().zip(IMPALADS.iter().map(|x| x.0)));
        } else if lab.opts.service {
            hosts.extend(lab.proxies.iter().zip(NAMES));
        }
        lab.services = lab.start_standins(&hosts)?;
        Ok(lab)
    }

    pub fn config_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.toml", NAMES[i]))
    }

    pub fn config_text(&self, i: usize) -> String {
        let witness = if self.opts.witness {
            format!("witness = [\"{WITNESS}\"]\n")
        } else {
            String::new()
        };
        let mut services = if self.opts.impala_services || self.opts.full_stack {
            self.services_text(i)
        } else {
            String::new()
        };
        if self.opts.full_stack {
            services += &listen_text();
        }
        let pair = self.pair_text(i, &witness);
        pair + &services + &self.opts.extra_config
    }

    /// statestored runs on both nodes (warm); catalogd only on the master.
    fn services_text(&self, i: usize) -> String {
        let bin = self.bin.display();
        let q = |v: &[String]| v.iter().map(|a| format!(", \"{a}\"")).collect::<String>();
        format!(
            "\n[[service]]\nname = \"statestored\"\n\
             command = [\"{bin}\", \"lab\", \"standin\", \"statestored\", \"--name\", \"{n}-statestored\", \"--listen\", \"127.0.0.1:24000\", \"--web\", \"127.0.0.1:25010\"]\n\
             run = \"always\"\n\
             check = {{ type = \"http\", url = \"http://127.0.0.1:25010/healthz\", interval = \"200ms\", fall = 2 }}\n\
             weight = -100\n\n\
             [[service]]\nname = \"catalogd\"\n\
             command = [\"{bin}\", \"lab\", \"standin\", \"catalogd\", \"--name\", \"{n}-catalogd\", \"--listen\", \"127.0.0.1:26000\", \"--web\", \"127.0.0.1:25020\"{extra}]\n\
             run = \"master\"\nafter = [\"statestored\"]\n\
             check = {{ type = \"http\", url = \"http://127.0.0.1:25020/healthz\", interval = \"200ms\", fall = 2 }}\n\
             stop_timeout = \"2s\"\nweight = -100\n",
            n = NAMES[i],
            extra = q(&self.opts.catalogd_args[i]),
        )
    }

    fn pair_text(&self, i: usize, witness: &str) -> String {
        format!(
            "[node]\nname = \"{name}\"\npriority = {prio}\nadmin = \"127.0.0.1:9180\"\n\n\
             [pair]\ninterface = \"{IFACE}\"\nrouter_id = 51\npeer = \"{peer}\"\n\
             auth_key_file = \"pair.key\"\nvips = [\"{VIP}/24\"]\n{witness}{extra}\n{node_extra}\n",
            name = NAMES[i],
            prio = self.opts.priorities[i],
            peer = PROXY[1 - i],
            extra = self.opts.pair_extra,
            node_extra = self.opts.node_extra[i],
        )
    }

    pub fn now_ms(&self) -> f64 {
        self.origin.elapsed().as_secs_f64() * 1000.0
    }

    pub fn note(&self, source: &str, kind: EventKind) {
        let at = self.now_ms();
        self.timeline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(at, source, kind);
    }

    /// Stand-in impalads (banner = `name`, then echo; /healthz on :25000) as
    /// threads inside the given namespaces.
    #[allow(clippy::type_complexity)]
    fn start_standins(
        &self,
        hosts: &[(&Netns, &str)],
    ) -> anyhow::Result<Vec<(Arc<AtomicBool>, JoinHandle<()>)>> {
        let mut svcs = vec![];
        for &(ns, name) in hosts {
            let mut opts = StandinOpts::new(StandinRole::Impalad);
            opts.name = Some(name.to_string());
            opts.listen = vec![SocketAddr::new([0, 0, 0, 0].into(), SERVICE_PORT)];
            opts.web = Some(SocketAddr::new([0, 0, 0, 0].into(), 25000));
            svcs.push(standin_thread(ns, opts)?);
        }
        Ok(svcs)
    }

    /// Start hapair on node `i`.
    pub fn start(&mut self, i: usize) -> anyhow::Result<()> {
        if self.procs[i]
            .as_ref()
            .is_some_and(|p| matches!(p.try_wait(), Ok(None)))
        {
            bail!("{} is already running", NAMES[i]);
        }
        let mut cmd = Command::new(&self.bin);
        cmd.arg("run")
            .arg("-c")
            .arg(self.config_path(i))
            .arg("--log-format")
            .arg("json")
            .env("HAPAIR_LOG", "info,hapair::conn=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let proc = self.proxies[i].spawn(cmd)?;
        let stderr = proc.take_stderr().context("hapair stderr")?;
        let logs = self.logs.clone();
        let timeline = self.timeline.clone();
        let origin = self.origin;
        let echo = std::env::var_os("HAPAIR_LAB_ECHO").is_some();
        self.readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let at_ms = origin.elapsed().as_secs_f64() * 1000.0;
                if echo {
                    eprintln!("[{}] {line}", NAMES[i]);
                }
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                let fields = v.get("fields").cloned().unwrap_or_default();
                let message = fields
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("")
                    .to_string();
                if let (Some(from), Some(to)) = (
                    fields.get("from").and_then(|x| x.as_str()),
                    fields.get("to").and_then(|x| x.as_str()),
                ) {
                    timeline.lock().unwrap_or_else(|p| p.into_inner()).push(
                        at_ms,
                        NAMES[i],
                        EventKind::RoleChange {
                            from: from.to_string(),
                            to: to.to_string(),
                        },
                    );
                }
                // Service promotions and demotions belong on the timeline too.
                let service = fields.get("service").and_then(|x| x.as_str());
                let target = v.get("target").and_then(|x| x.as_str()).unwrap_or("");
                if let (Some(svc), true) = (service, target.starts_with("hapair::supervisor")) {
                    let what = if message.starts_with("started") {
                        Some("started")
                    } else if message.starts_with("stopping") {
                        Some("stopping")
                    } else {
                        None
                    };
                    if let Some(what) = what {
                        timeline.lock().unwrap_or_else(|p| p.into_inner()).push(
                            at_ms,
                            NAMES[i],
                            EventKind::Note(format!("{svc} {what}")),
                        );
                    }
                }
                logs.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(LogLine {
                        at_ms,
                        node: i,
                        level: v
                            .get("level")
                            .and_then(|x| x.as_str())
                            .unwrap_or("")
                            .to_string(),
                        message,
                        fields,
                    });
            }
        }));
        self.procs[i] = Some(proc);
        Ok(())
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.procs[i].as_ref().map(|p| p.pid())
    }

    pub fn running(&self, i: usize) -> bool {
        self.procs[i]
            .as_ref()
            .is_some_and(|p| matches!(p.try_wait(), Ok(None)))
    }

    /// kill -9 the hapair of node `i`.
    pub fn kill9(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(p) = self.procs[i].take() {
            p.kill()?;
        }
        Ok(())
    }

    /// SIGTERM node `i` and wait (bounded) for it to exit.
    pub fn terminate(&mut self, i: usize, within: Duration) -> anyhow::Result<()> {
        let Some(p) = self.procs[i].take() else {
            return Ok(());
        };
        p.signal(libc::SIGTERM)?;
        let until = Instant::now() + within;
        while Instant::now() < until {
            if p.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        p.kill()?;
        bail!("{} did not exit within {within:?} of SIGTERM", NAMES[i])
    }

    /// Send SIGHUP (reload) to node `i`.
    pub fn reload(&self, i: usize) -> anyhow::Result<()> {
        if let Some(p) = &self.procs[i] {
            p.signal(libc::SIGHUP)?;
        }
        Ok(())
    }

    /// Pull (false) or plug (true) node `i`'s cable at the switch.
    pub fn set_link(&self, i: usize, up: bool) -> anyhow::Result<()> {
        self.note(
            "switch",
            if up {
                EventKind::LinkUp
            } else {
                EventKind::LinkDown
            },
        );
        self.lab.set_port(&self.ports[i], up)?;
        Ok(())
    }

    /// Does node `i` hold the VIP on its interface (as `ip addr` shows)?
    pub fn holds_vip(&self, i: usize) -> bool {
        self.proxies[i]
            .ip(["-o", "addr", "show", "dev", IFACE])
            .map(|s| s.contains(&format!(" {VIP}/")))
            .unwrap_or(false)
    }

    /// The role node `i` last logged ("master", "backup", ...).
    pub fn last_role(&self, i: usize) -> Option<String> {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.iter().rev().filter(|l| l.node == i).find_map(|l| {
            l.fields
                .get("to")
                .and_then(|t| t.as_str())
                .map(String::from)
        })
    }

    /// Wait until `pred` holds, polling every 5 ms, up to `limit`.
    pub fn wait_for(&self, limit: Duration, mut pred: impl FnMut(&PairLab) -> bool) -> bool {
        let until = Instant::now() + limit;
        loop {
            if pred(self) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait until node `i` logs `role`.
    pub fn wait_role(&self, i: usize, role: &str, limit: Duration) -> bool {
        self.wait_for(limit, |l| l.last_role(i).as_deref() == Some(role))
    }

    /// Log lines of node `i` whose message contains `needle`.
    pub fn log_lines(&self, i: usize, needle: &str) -> Vec<LogLine> {
        let logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        logs.iter()
            .filter(|l| l.node == i && l.message.contains(needle))
            .cloned()
            .collect()
    }

    /// The MAC of node `i`'s interface.
    pub fn mac(&self, i: usize) -> anyhow::Result<String> {
        Ok(self.proxies[i].mac(IFACE)?)
    }

    /// The client's neighbour entry for the VIP.
    pub fn client_neigh_vip(&self) -> Option<String> {
        self.client.neigh(VIP).ok().flatten()
    }

    /// Start the client's connect loop to VIP:SERVICE_PORT and the GARP sniffer.
    pub fn start_client(&self) -> anyhow::Result<ClientRun> {
        let stop = Arc::new(AtomicBool::new(false));
        let target = SocketAddr::new(VIP.parse()?, SERVICE_PORT);
        let origin = self.origin;
        let s1 = stop.clone();
        let deadline = Some(Instant::now() + Duration::from_secs(600));
        let client = self.client.spawn_thread(move || {
            ConnectLoop::new(target)
                .attempt_timeout(Duration::from_millis(10))
                .pause(Duration::from_millis(2))
                .read_banner(true)
                .abort_close(true)
                .run(origin, &s1, deadline)
        })?;
        let s2 = stop.clone();
        let vip: IpAddr = VIP.parse()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let sniff = self
            .client
            .spawn_thread(move || match Sniffer::open(IFACE, vec![vip]) {
                Ok(mut s) => {
                    let _ = tx.send(Ok(()));
                    s.run(origin, &s2, deadline)
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    vec![]
                }
            })?;
        rx.recv().context("sniffer thread")??;
        Ok(ClientRun {
            stop,
            client: Some(client),
            sniff: Some(sniff),
        })
    }

    /// Cut (true) or restore the link between the two proxies only: both still
    /// reach the client and the witness (bridge port isolation).
    pub fn partition(&self, on: bool) -> anyhow::Result<()> {
        for p in &self.ports {
            self.lab.isolate(p, on)?;
        }
        self.note(
            "switch",
            EventKind::Note(format!(
                "proxies {}",
                if on { "partitioned" } else { "rejoined" }
            )),
        );
        Ok(())
    }

    pub fn timeline(&self) -> Timeline {
        self.timeline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Run a stand-in on a thread inside `ns` until the returned flag is set;
/// returns once it listens. Join the handle after setting the flag.
pub fn standin_thread(
    ns: &Netns,
    opts: StandinOpts,
) -> anyhow::Result<(Arc<AtomicBool>, JoinHandle<()>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = ns.spawn_thread(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(anyhow::anyhow!(e)));
                return;
            }
        };
        rt.block_on(async move {
            match Standin::start(opts).await {
                Ok(s) => {
                    let _ = tx.send(Ok(()));
                    while !stop2.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    s.stop();
                    let _ = s.wait().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    })?;
    rx.recv().context("stand-in thread")??;
    Ok((stop, h))
}

/// hapair's balancer in front of the stand-in impalads, as users configure HS2.
fn listen_text() -> String {
    let servers: Vec<String> = IMPALADS
        .iter()
        .map(|(n, a)| format!("{{ name = \"{n}\", addr = \"{a}:{SERVICE_PORT}\" }}"))
        .collect();
    format!(
        "\n[[listen]]\nname = \"impala_hs2\"\nbind = \"0.0.0.0:{SERVICE_PORT}\"\nbalance = \"leastconn\"\n\
         connect_timeout = \"200ms\"\n\
         check = {{ type = \"http\", port = 25000, path = \"/healthz\", interval = \"500ms\", timeout = \"300ms\", fall = 2, rise = 1 }}\n\
         servers = [{}]\n",
        servers.join(", ")
    )
}

impl Drop for PairLab {
    fn drop(&mut self) {
        for p in self.procs.iter_mut().filter_map(|p| p.take()) {
            let _ = p.kill();
        }
        for (stop, _) in &self.services {
            stop.store(true, Ordering::Relaxed);
        }
        for (_, h) in self.services.drain(..) {
            let _ = h.join();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// A running client loop and sniffer in the client namespace.
pub struct ClientRun {
    stop: Arc<AtomicBool>,
    client: Option<JoinHandle<Vec<Attempt>>>,
    sniff: Option<JoinHandle<Vec<Sighting>>>,
}

impl ClientRun {
    pub fn finish(mut self) -> (Vec<Attempt>, Vec<Sighting>) {
        self.stop.store(true, Ordering::Relaxed);
        let a = self
            .client
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let s = self
            .sniff
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (a, s)
    }
}

impl Drop for ClientRun {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
