//! keepalived (the apt package) as the baseline in the lab: configs that mirror hapair's
//! (unicast adverts between the two proxies, one VIP on `eth1`), and a handle on one running
//! instance inside a proxy namespace.
//!
//! Every instance writes its pid files and its log into the lab's temp dir, so it never touches
//! a system keepalived. keepalived forks a VRRP child even with `--dont-fork`; [`Keepalived`]
//! knows both pids and signals only those (the child's pid is checked to be the parent's child
//! before anything is sent to it).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::netns::{Netns, Proc};
use super::pairlab::{IFACE, NAMES, PROXY, VIP};

/// Where the binary lives on Debian.
pub const BIN: &str = "keepalived";

/// The VRRP settings of one keepalived variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KaOpts {
    /// 2 (RFC 3768: whole seconds) or 3 (RFC 5798: centiseconds, so 0.1 s works).
    pub vrrp_version: u8,
    /// `advert_int` in seconds.
    pub advert_int: f64,
}

/// Is keepalived installed (on PATH)?
pub fn installed() -> bool {
    Command::new(BIN)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The config of proxy `i` (0 = proxy1, the intended master).
///
/// Settings are keepalived's defaults except where the lab needs them: unicast adverts (as
/// hapair sends them), the priorities hapair's lab uses (150/100), the version and
/// `advert_int`. No authentication: VRRPv3 has none and v2's PASS is not a real one.
pub fn config_text(i: usize, o: KaOpts, priorities: [u8; 2]) -> String {
    let version = if o.vrrp_version == 3 {
        "    vrrp_version 3\n"
    } else {
        ""
    };
    let state = if i == 0 { "MASTER" } else { "BACKUP" };
    format!(
        "global_defs {{\n    router_id {name}\n{version}}}\n\n\
         vrrp_instance VI_1 {{\n    state {state}\n    interface {IFACE}\n    virtual_router_id 51\n    \
         priority {prio}\n    advert_int {adv}\n    unicast_src_ip {me}\n    unicast_peer {{\n        {peer}\n    }}\n    \
         virtual_ipaddress {{\n        {VIP}/24 dev {IFACE}\n    }}\n}}\n",
        name = NAMES[i],
        prio = priorities[i],
        adv = o.advert_int,
        me = PROXY[i],
        peer = PROXY[1 - i],
    )
}

/// One keepalived running in a proxy namespace.
pub struct Keepalived {
    /// The process we spawned (`--dont-fork`): the keepalived parent.
    parent: Proc,
    /// Where `-r` makes the VRRP child write its pid.
    vrrp_pidfile: PathBuf,
    pub log: PathBuf,
}

impl Keepalived {
    /// Write the config of proxy `i` into `dir` and start keepalived in `ns`. Run number `run`
    /// keeps each start's files apart.
    pub fn start(
        ns: &Netns,
        dir: &Path,
        i: usize,
        run: usize,
        o: KaOpts,
        priorities: [u8; 2],
    ) -> anyhow::Result<Keepalived> {
        let conf = dir.join(format!("keepalived-{}.conf", NAMES[i]));
        std::fs::write(&conf, config_text(i, o, priorities))?;
        let base = dir.join(format!("ka-{}-{run}", NAMES[i]));
        let log = base.with_extension("log");
        let vrrp_pidfile = base.with_extension("vrrp.pid");
        let out = File::create(&log)?;
        let mut cmd = Command::new(BIN);
        cmd.arg("--dont-fork")
            .arg("--log-console")
            .arg("--log-detail")
            .arg("--no-syslog")
            .arg("--vrrp")
            .arg("-f")
            .arg(&conf)
            .arg("-p")
            .arg(base.with_extension("pid"))
            .arg("-r")
            .arg(&vrrp_pidfile)
            .arg("-c")
            .arg(base.with_extension("checkers.pid"))
            .arg("-b")
            .arg(base.with_extension("bfd.pid"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let parent = ns
            .spawn(cmd)
            .context("start keepalived (apt-get install -y keepalived)")?;
        Ok(Keepalived {
            parent,
            vrrp_pidfile,
            log,
        })
    }

    pub fn running(&self) -> bool {
        matches!(self.parent.try_wait(), Ok(None))
    }

    /// The VRRP child's pid, if it wrote its pid file and really is our parent's child.
    pub fn vrrp_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(&self.vrrp_pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (ppid(pid)? == self.parent.pid() as i32).then_some(pid)
    }

    /// Wait (bounded) until the VRRP child is up.
    pub fn wait_ready(&self, limit: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + limit;
        while self.vrrp_pid().is_none() {
            if !self.running() {
                bail!("keepalived exited at start; see {}", self.log.display());
            }
            if Instant::now() >= until {
                bail!(
                    "keepalived's VRRP process did not start within {limit:?}; see {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// The daemon dies without a word, as kill -9 (or the OOM killer) does it: the parent is
    /// stopped first so it can neither respawn the VRRP child nor pass it a SIGTERM, then both
    /// get SIGKILL. The VIP stays on the interface.
    pub fn kill9(self) -> anyhow::Result<()> {
        self.parent.signal(libc::SIGSTOP)?;
        if let Some(child) = self.vrrp_pid() {
            // SAFETY: kill(2) on a pid just checked to be our keepalived's child.
            unsafe { libc::kill(child, libc::SIGKILL) };
        }
        self.parent.kill()?;
        Ok(())
    }

    /// SIGTERM: keepalived sends priority 0, removes the VIP and exits. Waits (bounded).
    pub fn terminate(self, within: Duration) -> anyhow::Result<()> {
        let child = self.vrrp_pid();
        self.parent.signal(libc::SIGTERM)?;
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.parent.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill_child(child);
        self.parent.kill()?;
        bail!("keepalived did not exit within {within:?} of SIGTERM")
    }

    fn kill_child(&self, child: Option<i32>) {
        if let Some(c) = child.filter(|&c| ppid(c) == Some(self.parent.pid() as i32)) {
            // SAFETY: kill(2) on a pid just checked to be our keepalived's child.
            unsafe { libc::kill(c, libc::SIGKILL) };
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        // The child would outlive a killed parent (and keep the namespace's VIP alive).
        let child = self.vrrp_pid();
        let _ = self.parent.signal(libc::SIGSTOP);
        self.kill_child(child);
        // Dropping `parent` kills and reaps it.
    }
}

/// The parent pid of `pid`, from /proc.
fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v3_config_has_version_and_fractional_advert() {
        let c = config_text(
            1,
            KaOpts {
                vrrp_version: 3,
                advert_int: 0.1,
            },
            [150, 100],
        );
        assert!(c.contains("vrrp_version 3"), "{c}");
        assert!(c.contains("advert_int 0.1\n"), "{c}");
        assert!(c.contains("state BACKUP"), "{c}");
        assert!(c.contains("unicast_src_ip 192.0.2.12"), "{c}");
        assert!(c.contains("        192.0.2.11\n"), "{c}");
        assert!(c.contains("priority 100"), "{c}");
    }

    #[test]
    fn v2_config_is_whole_seconds() {
        let c = config_text(
            0,
            KaOpts {
                vrrp_version: 2,
                advert_int: 1.0,
            },
            [150, 100],
        );
        assert!(!c.contains("vrrp_version"), "{c}");
        assert!(c.contains("advert_int 1\n"), "{c}");
        assert!(c.contains("state MASTER"), "{c}");
    }

    #[test]
    fn ppid_of_self() {
        let me = std::process::id() as i32;
        let parent = ppid(me).unwrap();
        assert!(parent > 0);
    }
}
