//! `hapair lab bench failover`: hapair and keepalived side by side, in the same lab and the
//! same run, as the client sees them.
//!
//! For each daemon variant a fresh [`PairLab`] is built (switch, proxy1, proxy2, client, the
//! stand-in service on both proxies that answers with its proxy's name). Then, per scenario
//! and trial:
//!
//! 1. settle: proxy1 alone holds the VIP and ten connects in a row are served by proxy1;
//! 2. a fresh client connect loop (10 ms connect timeout, 2 ms pause) and GARP sniffer start;
//! 3. after 300 ms plus a random fraction of one advert interval (so the fault lands at a
//!    random phase of the advert cycle, not always at the same offset after the settle) the
//!    fault is injected on proxy1 at `t0`: the cable pulled at the switch, SIGKILL of the
//!    daemon, or SIGTERM;
//! 4. the run ends 500 ms after proxy2 holds the VIP (bounded);
//! 5. proxy1 is restored (cable plugged, daemon restarted) and the next trial settles first.
//!
//! Per trial it records:
//! - **takeover**: `t0` to the start of the first connect served by proxy2 (the banner);
//! - **outage**: the longest run of failed connects after `t0`, from the last success before
//!   it to the first success after it (0 when no connect failed);
//! - failed connects, and `t0` to the first GARP from proxy2's MAC.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use super::client::{self, Attempt, ConnectLoop};
use super::keepalived::{self, KaOpts, Keepalived};
use super::pairlab::{LabOptions, PairLab, NAMES, SERVICE_PORT, VIP};
use super::sniff::Sighting;
use super::timeline::EventKind;

/// Client-loop run before the fault, so the window starts with successes.
const PRE_ROLL: Duration = Duration::from_millis(300);
/// Kept recording after proxy2 holds the VIP.
const TAIL: Duration = Duration::from_millis(500);
/// Bound on settling (VIP back on proxy1, served by proxy1).
const SETTLE_LIMIT: Duration = Duration::from_secs(20);

/// A fault injected on the master (proxy1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Pull the master's cable at the switch.
    LinkDown,
    /// SIGKILL the master's daemon.
    #[value(name = "kill-9", alias = "kill9")]
    #[serde(rename = "kill-9")]
    Kill9,
    /// SIGTERM the master's daemon (graceful handover).
    Graceful,
}

impl Scenario {
    pub const ALL: [Scenario; 3] = [Scenario::LinkDown, Scenario::Kill9, Scenario::Graceful];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::LinkDown => "link-down",
            Scenario::Kill9 => "kill-9",
            Scenario::Graceful => "graceful",
        }
    }
}

/// The bench's knobs (from the command line).
#[derive(Debug, Clone)]
pub struct BenchOpts {
    pub trials: usize,
    /// Empty = all.
    pub scenarios: Vec<Scenario>,
    /// Variant keys (`hapair`, `hapair-tuned`, `keepalived-v2`, `keepalived-v3`); empty = all.
    pub daemons: Vec<String>,
    /// Write `bench-failover.json` here.
    pub out: Option<PathBuf>,
}

/// Which daemon runs the pair, and with which settings.
#[derive(Debug, Clone)]
enum Daemon {
    /// Extra `[pair]` lines for both nodes.
    Hapair(&'static str),
    Keepalived(KaOpts),
}

#[derive(Debug, Clone)]
struct Variant {
    key: &'static str,
    label: &'static str,
    daemon: Daemon,
    /// The advert interval, to bound how long a takeover may take.
    advert: Duration,
}

fn variants() -> Vec<Variant> {
    vec![
        Variant {
            key: "hapair",
            label: "hapair defaults (100ms x3)",
            daemon: Daemon::Hapair(""),
            advert: Duration::from_millis(100),
        },
        Variant {
            key: "hapair-tuned",
            label: "hapair tuned (30ms x3)",
            daemon: Daemon::Hapair("advert_interval = \"30ms\"\ndead_after = 3\n"),
            advert: Duration::from_millis(30),
        },
        Variant {
            key: "keepalived-v3",
            label: "keepalived v3 (advert_int 0.1)",
            daemon: Daemon::Keepalived(KaOpts {
                vrrp_version: 3,
                advert_int: 0.1,
            }),
            advert: Duration::from_millis(100),
        },
        Variant {
            key: "keepalived-v2",
            label: "keepalived v2 defaults (advert_int 1)",
            daemon: Daemon::Keepalived(KaOpts {
                vrrp_version: 2,
                advert_int: 1.0,
            }),
            advert: Duration::from_secs(1),
        },
    ]
}

/// What the client saw in one trial. Times in ms.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    /// The fault, in ms since the lab's origin.
    pub t0_ms: f64,
    /// `t0` to the first connect served by the backup (proxy2).
    pub takeover_ms: Option<f64>,
    /// The longest run of failed connects after `t0`, last success before to first after.
    pub outage_ms: f64,
    pub failed: usize,
    pub attempts: usize,
    /// Failed connects by reason.
    pub reasons: BTreeMap<String, usize>,
    /// `t0` to the first gratuitous ARP for the VIP from proxy2's MAC.
    pub garp_ms: Option<f64>,
    /// `t0` to proxy2 holding the VIP, as the lab polled it (20 ms resolution).
    pub vip_on_backup_ms: Option<f64>,
}

/// Over the trials of one variant and scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub trials: usize,
    pub takeover_median_ms: Option<f64>,
    pub takeover_max_ms: Option<f64>,
    pub outage_median_ms: f64,
    pub outage_max_ms: f64,
    pub failed_total: usize,
    pub failed_max: usize,
    pub garp_median_ms: Option<f64>,
    /// Trials in which the backup never served the client.
    pub no_takeover: usize,
}

impl Summary {
    fn of(trials: &[Trial]) -> Summary {
        let take: Vec<f64> = trials.iter().filter_map(|t| t.takeover_ms).collect();
        let out: Vec<f64> = trials.iter().map(|t| t.outage_ms).collect();
        let garp: Vec<f64> = trials.iter().filter_map(|t| t.garp_ms).collect();
        Summary {
            trials: trials.len(),
            takeover_median_ms: median(&take),
            takeover_max_ms: max(&take),
            outage_median_ms: median(&out).unwrap_or(0.0),
            outage_max_ms: max(&out).unwrap_or(0.0),
            failed_total: trials.iter().map(|t| t.failed).sum(),
            failed_max: trials.iter().map(|t| t.failed).max().unwrap_or(0),
            garp_median_ms: median(&garp),
            no_takeover: trials.iter().filter(|t| t.takeover_ms.is_none()).count(),
        }
    }

    /// The client-visible figure the ratios compare: how long until the backup serves after a
    /// crash, and how long the service was gone in a graceful handover.
    fn headline(&self, s: Scenario) -> Option<f64> {
        match s {
            Scenario::LinkDown | Scenario::Kill9 => self.takeover_median_ms,
            Scenario::Graceful => Some(self.outage_median_ms),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct ScenarioResult {
    scenario: Scenario,
    trials: Vec<Trial>,
    summary: Summary,
    /// Set if the scenario stopped early.
    error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct VariantResult {
    key: &'static str,
    label: &'static str,
    /// The config of proxy1 and proxy2, as started.
    configs: [String; 2],
    results: Vec<ScenarioResult>,
    error: Option<String>,
}

pub fn run(what: &str, opts: BenchOpts) -> anyhow::Result<()> {
    if what != "failover" {
        bail!("bench {what}: unknown (known: failover)");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench failover builds network namespaces: run it as root");
    }
    if opts.trials == 0 {
        bail!("--trials must be at least 1");
    }
    let bin = std::env::current_exe().context("find the hapair binary")?;
    let scenarios = if opts.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        opts.scenarios.clone()
    };
    let all = variants();
    for d in &opts.daemons {
        if !all.iter().any(|v| v.key == d) {
            let keys: Vec<_> = all.iter().map(|v| v.key).collect();
            bail!("unknown daemon {d:?} (known: {})", keys.join(", "));
        }
    }
    let chosen: Vec<Variant> = all
        .into_iter()
        .filter(|v| opts.daemons.is_empty() || opts.daemons.iter().any(|d| d == v.key))
        .collect();
    if chosen
        .iter()
        .any(|v| matches!(v.daemon, Daemon::Keepalived(_)))
        && !keepalived::installed()
    {
        bail!("keepalived is not installed (apt-get install -y keepalived)");
    }
    let started = Instant::now();
    let load_before = loadavg();
    let mut results = vec![];
    for v in &chosen {
        eprintln!("bench: {} ...", v.label);
        results.push(run_variant(&bin, v, &scenarios, opts.trials));
    }
    let table = render(&results, &scenarios, opts.trials);
    print!("{table}");
    println!("({} s in all)", started.elapsed().as_secs());
    if let Some(dir) = &opts.out {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("bench-failover.json");
        let json = serde_json::json!({
            "bench": "failover",
            "trials": opts.trials,
            "scenarios": scenarios,
            "keepalived_version": keepalived_version(),
            "loadavg": {"before": load_before, "after": loadavg()},
            "client": {
                "connect_timeout_ms": 10,
                "pause_ms": 2,
                "pre_roll_ms": PRE_ROLL.as_millis() as u64,
                "fault_phase": "uniform in [0, advert interval) after the pre-roll",
            },
            "variants": results,
            "ratios": ratios(&results, &scenarios),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
        println!("wrote {}", path.display());
    }
    if let Some(e) = results.iter().find_map(|r| r.error.clone()) {
        bail!("a variant failed: {e}");
    }
    Ok(())
}

/// `/proc/loadavg`: the bench shares its cores, so the JSON says how busy they were.
fn loadavg() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.trim().to_string())
}

fn keepalived_version() -> Option<String> {
    let out = std::process::Command::new(keepalived::BIN)
        .arg("--version")
        .output()
        .ok()?;
    // keepalived prints its version on stderr.
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|l| l.trim().to_string())
}

fn run_variant(bin: &Path, v: &Variant, scenarios: &[Scenario], trials: usize) -> VariantResult {
    let mut r = VariantResult {
        key: v.key,
        label: v.label,
        configs: [String::new(), String::new()],
        results: vec![],
        error: None,
    };
    let mut bed = match Bed::new(bin, v) {
        Ok(b) => b,
        Err(e) => {
            r.error = Some(format!("{}: {e:#}", v.key));
            return r;
        }
    };
    r.configs = [bed.config(0), bed.config(1)];
    for &s in scenarios {
        let mut sr = ScenarioResult {
            scenario: s,
            trials: vec![],
            summary: Summary::of(&[]),
            error: None,
        };
        for n in 0..trials {
            match trial(&mut bed, s) {
                Ok(t) => {
                    eprintln!(
                        "bench: {} {} trial {}/{trials}: takeover {} ms, outage {:.1} ms, {} failed of {}",
                        v.key,
                        s.name(),
                        n + 1,
                        opt_ms(t.takeover_ms),
                        t.outage_ms,
                        t.failed,
                        t.attempts
                    );
                    sr.trials.push(t);
                }
                Err(e) => {
                    let msg = format!("{} {} trial {}: {e:#}", v.key, s.name(), n + 1);
                    eprintln!("bench: {msg}");
                    sr.error = Some(msg.clone());
                    r.error.get_or_insert(msg);
                    break;
                }
            }
        }
        sr.summary = Summary::of(&sr.trials);
        let failed = sr.error.is_some();
        r.results.push(sr);
        if failed {
            break;
        }
    }
    r
}

/// One lab with one daemon variant on both proxies.
struct Bed {
    // Field order matters for drop: keepalived before the lab's namespaces.
    ka: [Option<Keepalived>; 2],
    /// Starts of keepalived so far, to keep each start's pid files and log apart.
    ka_starts: usize,
    daemon: Daemon,
    /// How long proxy2 may take to hold the VIP after a fault.
    takeover_limit: Duration,
    /// The variant's advert interval: the range of the random phase of each fault.
    advert: Duration,
    lab: PairLab,
}

impl Bed {
    fn new(bin: &Path, v: &Variant) -> anyhow::Result<Bed> {
        let pair_extra = match v.daemon {
            Daemon::Hapair(extra) => extra.to_string(),
            Daemon::Keepalived(_) => String::new(),
        };
        let lab = PairLab::new(
            bin,
            LabOptions {
                pair_extra,
                ..LabOptions::default()
            },
        )?;
        let mut bed = Bed {
            ka: [None, None],
            ka_starts: 0,
            daemon: v.daemon.clone(),
            takeover_limit: (v.advert * 4 + Duration::from_secs(2)).max(Duration::from_secs(5)),
            advert: v.advert,
            lab,
        };
        bed.start(0)?;
        bed.start(1)?;
        Ok(bed)
    }

    fn config(&self, i: usize) -> String {
        match &self.daemon {
            Daemon::Hapair(_) => self.lab.config_text(i),
            Daemon::Keepalived(o) => keepalived::config_text(i, *o, self.lab.opts.priorities),
        }
    }

    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        match &self.daemon {
            Daemon::Hapair(_) => self.lab.start(i),
            Daemon::Keepalived(o) => {
                self.ka_starts += 1;
                let k = Keepalived::start(
                    &self.lab.proxies[i],
                    self.lab.dir.path(),
                    i,
                    self.ka_starts,
                    *o,
                    self.lab.opts.priorities,
                )?;
                k.wait_ready(Duration::from_secs(5))?;
                self.ka[i] = Some(k);
                Ok(())
            }
        }
    }

    fn kill9(&mut self, i: usize) -> anyhow::Result<()> {
        match &self.daemon {
            Daemon::Hapair(_) => self.lab.kill9(i),
            Daemon::Keepalived(_) => self.ka[i]
                .take()
                .context("keepalived is not running")?
                .kill9(),
        }
    }

    fn terminate(&mut self, i: usize) -> anyhow::Result<()> {
        let within = Duration::from_secs(5);
        match &self.daemon {
            Daemon::Hapair(_) => self.lab.terminate(i, within),
            Daemon::Keepalived(_) => self.ka[i]
                .take()
                .context("keepalived is not running")?
                .terminate(within),
        }
    }

    /// Poll (every 20 ms: each poll runs `ip`) until `pred` holds or `limit` passes.
    fn poll(&self, limit: Duration, mut pred: impl FnMut(&PairLab) -> bool) -> bool {
        let until = Instant::now() + limit;
        loop {
            if pred(&self.lab) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Back to the start position: proxy1 alone holds the VIP, and the client is served by
    /// proxy1 ten times in a row.
    fn settle(&self) -> anyhow::Result<()> {
        let t = Instant::now();
        if !self.poll(SETTLE_LIMIT, |l| l.holds_vip(0) && !l.holds_vip(1)) {
            bail!(
                "did not settle within {SETTLE_LIMIT:?}: VIP on proxy1 {}, on proxy2 {}",
                self.lab.holds_vip(0),
                self.lab.holds_vip(1)
            );
        }
        // Let announcement bursts of the last transition pass.
        std::thread::sleep(Duration::from_millis(200));
        let left = SETTLE_LIMIT
            .saturating_sub(t.elapsed())
            .max(Duration::from_secs(2));
        let target = SocketAddr::new(VIP.parse()?, SERVICE_PORT);
        let origin = self.lab.origin;
        let served = self.lab.client.in_ns(move || {
            let c = ConnectLoop::new(target)
                .attempt_timeout(Duration::from_millis(50))
                .read_banner(true)
                .abort_close(true);
            let until = Instant::now() + left;
            let mut streak = 0;
            while Instant::now() < until {
                if c.attempt(origin).host() == Some(NAMES[0]) {
                    streak += 1;
                    if streak == 10 {
                        return true;
                    }
                } else {
                    streak = 0;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })?;
        if !served {
            bail!("the client was not served by proxy1 within {SETTLE_LIMIT:?} of the restore");
        }
        Ok(())
    }
}

fn trial(bed: &mut Bed, s: Scenario) -> anyhow::Result<Trial> {
    bed.settle()?;
    let backup_mac: super::sniff::Mac = bed
        .lab
        .mac(1)?
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let run = bed.lab.start_client()?;
    std::thread::sleep(PRE_ROLL + random_below(bed.advert));
    bed.lab
        .note("lab", EventKind::DrillStart(s.name().to_string()));
    let t0 = bed.lab.now_ms();
    match s {
        Scenario::LinkDown => bed.lab.set_link(0, false)?,
        Scenario::Kill9 => bed.kill9(0)?,
        Scenario::Graceful => bed.terminate(0)?,
    }
    let limit = bed.takeover_limit;
    let vip_on_backup_ms = bed
        .poll(limit, |l| l.holds_vip(1))
        .then(|| bed.lab.now_ms() - t0);
    std::thread::sleep(TAIL);
    let (attempts, sightings) = run.finish();
    bed.lab
        .note("lab", EventKind::DrillEnd(s.name().to_string()));
    match s {
        Scenario::LinkDown => bed.lab.set_link(0, true)?,
        Scenario::Kill9 | Scenario::Graceful => bed.start(0)?,
    }
    Ok(analyse(
        &attempts,
        &sightings,
        t0,
        backup_mac,
        vip_on_backup_ms,
    ))
}

/// The trial's figures from the client's records; `t0` is the fault.
fn analyse(
    attempts: &[Attempt],
    sightings: &[Sighting],
    t0: f64,
    backup_mac: super::sniff::Mac,
    vip_on_backup_ms: Option<f64>,
) -> Trial {
    let after: Vec<&Attempt> = attempts.iter().filter(|a| a.at_ms >= t0).collect();
    let mut reasons = BTreeMap::new();
    for r in after.iter().filter_map(|a| a.reason()) {
        *reasons.entry(r.to_string()).or_insert(0) += 1;
    }
    let outage_ms = client::outages(attempts)
        .iter()
        .filter(|o| o.last_failed_ms >= t0)
        .map(|o| o.duration_ms)
        .fold(0.0, f64::max);
    Trial {
        t0_ms: t0,
        takeover_ms: after
            .iter()
            .find(|a| a.host() == Some(NAMES[1]))
            .map(|a| a.at_ms - t0),
        outage_ms,
        failed: after.iter().filter(|a| !a.is_ok()).count(),
        attempts: after.len(),
        reasons,
        garp_ms: sightings
            .iter()
            .find(|g| g.at_ms >= t0 && g.announcement.mac == backup_mac)
            .map(|g| g.at_ms - t0),
        vip_on_backup_ms,
    }
}

/// A uniformly random duration in `[0, d)` (0 if the OS has no randomness to give).
fn random_below(d: Duration) -> Duration {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() || d.is_zero() {
        return Duration::ZERO;
    }
    let micros = d.as_micros().max(1) as u64;
    Duration::from_micros(u64::from_le_bytes(b) % micros)
}

/// The median of `v` (mean of the middle two for an even count).
pub(crate) fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::max)
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.1}"))
}

/// One comparison: keepalived variant vs hapair variant, per scenario.
#[derive(Debug, Clone, Serialize)]
struct Ratio {
    what: &'static str,
    keepalived: &'static str,
    hapair: &'static str,
    scenario: Scenario,
    /// The compared figure: takeover for crashes, outage for graceful.
    metric: &'static str,
    keepalived_ms: Option<f64>,
    hapair_ms: Option<f64>,
    /// keepalived / hapair; None when hapair's figure is 0 or missing.
    ratio: Option<f64>,
    keepalived_failed: usize,
    hapair_failed: usize,
}

const PAIRS: [(&str, &str, &str); 3] = [
    ("defaults", "keepalived-v2", "hapair"),
    ("same advert 100ms", "keepalived-v3", "hapair"),
    ("v3 vs hapair tuned", "keepalived-v3", "hapair-tuned"),
];

fn ratios(results: &[VariantResult], scenarios: &[Scenario]) -> Vec<Ratio> {
    let find = |key: &str, s: Scenario| {
        results
            .iter()
            .find(|r| r.key == key)
            .and_then(|r| r.results.iter().find(|x| x.scenario == s))
            .filter(|x| !x.trials.is_empty())
    };
    let mut out = vec![];
    for &(what, ka, hp) in &PAIRS {
        for &s in scenarios {
            let (Some(k), Some(h)) = (find(ka, s), find(hp, s)) else {
                continue;
            };
            let (kv, hv) = (k.summary.headline(s), h.summary.headline(s));
            out.push(Ratio {
                what,
                keepalived: ka,
                hapair: hp,
                scenario: s,
                metric: match s {
                    Scenario::Graceful => "outage",
                    _ => "takeover",
                },
                keepalived_ms: kv,
                hapair_ms: hv,
                ratio: match (kv, hv) {
                    (Some(k), Some(h)) if h > 0.0 => Some(k / h),
                    _ => None,
                },
                keepalived_failed: k.summary.failed_total,
                hapair_failed: h.summary.failed_total,
            });
        }
    }
    out
}

/// The table: one row per variant and scenario, then the ratios.
fn render(results: &[VariantResult], scenarios: &[Scenario], trials: usize) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\nFailover, client-visible ({trials} trial(s) each; ms; takeover = fault -> first connect served by the backup;\n\
         outage = last ok -> next ok around failed connects, 0 if none failed)\n"
    );
    let _ = writeln!(
        t,
        "{:<38}  {:<9}  {:>6}  {:>17}  {:>17}  {:>13}  {:>10}",
        "daemon",
        "scenario",
        "trials",
        "takeover med/max",
        "outage med/max",
        "failed (max)",
        "GARP med"
    );
    for r in results {
        if let Some(e) = r.error.as_ref().filter(|_| r.results.is_empty()) {
            let _ = writeln!(t, "{:<38}  error: {e}", r.label);
        }
        for sr in &r.results {
            let s = &sr.summary;
            let _ = writeln!(
                t,
                "{:<38}  {:<9}  {:>6}  {:>17}  {:>17}  {:>13}  {:>10}",
                r.label,
                sr.scenario.name(),
                s.trials,
                format!(
                    "{} / {}",
                    opt_ms(s.takeover_median_ms),
                    opt_ms(s.takeover_max_ms)
                ),
                format!("{:.1} / {:.1}", s.outage_median_ms, s.outage_max_ms),
                format!("{} ({})", s.failed_total, s.failed_max),
                opt_ms(s.garp_median_ms),
            );
            if let Some(e) = &sr.error {
                let _ = writeln!(t, "{:<38}  error: {e}", "");
            }
        }
    }
    let rs = ratios(results, scenarios);
    if !rs.is_empty() {
        let _ = writeln!(
            t,
            "\nkeepalived / hapair (median takeover for crashes, median outage for graceful):"
        );
        for r in rs {
            let ratio = match r.ratio {
                Some(x) => format!("{x:.1}x"),
                None => "n/a (hapair 0 ms)".to_string(),
            };
            let _ = writeln!(
                t,
                "  {:<19} {:<9}  {:<13} {:>8} ms ({:>3} failed)  vs {:<12} {:>8} ms ({:>3} failed)  = {ratio}",
                r.what,
                r.scenario.name(),
                r.keepalived,
                opt_ms(r.keepalived_ms),
                r.keepalived_failed,
                r.hapair,
                opt_ms(r.hapair_ms),
                r.hapair_failed,
            );
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::client::{FailReason, Outcome};
    use crate::lab::sniff::{AnnounceKind, Announcement, Mac};

    fn at(ms: f64, host: Option<&str>) -> Attempt {
        Attempt {
            at_ms: ms,
            took_ms: 1.0,
            outcome: match host {
                Some(h) => Outcome::Ok {
                    host: Some(h.to_string()),
                },
                None => Outcome::Fail {
                    reason: FailReason::Timeout,
                },
            },
        }
    }

    #[test]
    fn analyse_link_down() {
        // proxy1 serves until 1000; fault at 1005; failures until proxy2 serves at 1300.
        let mut a = vec![at(990.0, Some("proxy1")), at(1000.0, Some("proxy1"))];
        a.extend((0..24).map(|k| at(1010.0 + 12.0 * k as f64, None)));
        a.push(at(1300.0, Some("proxy2")));
        a.push(at(1310.0, Some("proxy2")));
        let mac = Mac([2, 0, 0, 0, 0, 2]);
        let g = Sighting {
            at_ms: 1290.0,
            announcement: Announcement {
                kind: AnnounceKind::GarpRequest,
                mac,
                ip: VIP.parse().unwrap(),
                eth_src: mac,
            },
        };
        let t = analyse(&a, &[g], 1005.0, mac, Some(280.0));
        assert_eq!(t.takeover_ms, Some(295.0));
        assert_eq!(t.outage_ms, 300.0);
        assert_eq!(t.failed, 24);
        assert_eq!(t.reasons.get("timeout"), Some(&24));
        assert_eq!(t.garp_ms, Some(285.0));
    }

    #[test]
    fn analyse_graceful_without_failures() {
        let a = vec![
            at(990.0, Some("proxy1")),
            at(1010.0, Some("proxy1")),
            at(1020.0, Some("proxy2")),
        ];
        let t = analyse(&a, &[], 1000.0, Mac::default(), None);
        assert_eq!(t.outage_ms, 0.0);
        assert_eq!(t.failed, 0);
        assert_eq!(t.takeover_ms, Some(20.0));
        assert_eq!(t.garp_ms, None);
    }

    #[test]
    fn an_outage_before_the_fault_is_not_counted() {
        let a = vec![
            at(900.0, Some("proxy1")),
            at(910.0, None),
            at(950.0, Some("proxy1")),
        ];
        let t = analyse(&a, &[], 1000.0, Mac::default(), None);
        assert_eq!(t.outage_ms, 0.0);
        assert_eq!(t.takeover_ms, None);
    }

    #[test]
    fn random_phase_stays_below_the_interval() {
        let d = Duration::from_millis(100);
        assert!((0..100).all(|_| random_below(d) < d));
        assert_eq!(random_below(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(max(&[4.0, 1.0]), Some(4.0));
    }

    #[test]
    fn summary_and_ratio_headline() {
        let t = |take: f64, out: f64, failed: usize| Trial {
            t0_ms: 0.0,
            takeover_ms: Some(take),
            outage_ms: out,
            failed,
            attempts: 100,
            reasons: BTreeMap::new(),
            garp_ms: None,
            vip_on_backup_ms: None,
        };
        let s = Summary::of(&[t(300.0, 310.0, 20), t(320.0, 330.0, 22), t(310.0, 0.0, 0)]);
        assert_eq!(s.takeover_median_ms, Some(310.0));
        assert_eq!(s.takeover_max_ms, Some(320.0));
        assert_eq!(s.outage_median_ms, 310.0);
        assert_eq!(s.failed_total, 42);
        assert_eq!(s.failed_max, 22);
        assert_eq!(s.headline(Scenario::LinkDown), Some(310.0));
        assert_eq!(s.headline(Scenario::Graceful), Some(310.0));
    }
}
