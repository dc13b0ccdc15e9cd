//! A real ZooKeeper server for tests and the lab: Debian's `zookeeper` package, run as a
//! child process on one address, with a small tick so sessions expire quickly.
//!
//! Install: `apt-get install -y --no-install-recommends zookeeper` (it brings a JRE).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::lab::netns::{Netns, Proc};

/// Where Debian puts the server's jar.
pub const JAR: &str = "/usr/share/java/zookeeper.jar";
/// ZooKeeper's tick in the test config: sessions may be as short as 2 ticks.
pub const TICK_MS: u64 = 200;

/// Why ZooKeeper cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    if !Path::new(JAR).exists() {
        return Some(format!(
            "{JAR} is missing (apt-get install -y --no-install-recommends zookeeper)"
        ));
    }
    let java = Command::new("java")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match java {
        Ok(s) if s.success() => None,
        _ => Some("java is missing (the zookeeper package depends on default-jre)".into()),
    }
}

/// True when ZooKeeper can run. Otherwise prints why `test` is skipped and returns false, or
/// panics when `CI=true`: in CI a skipped ZooKeeper test is a failure.
pub fn require(test: &str) -> bool {
    let Some(why) = missing() else { return true };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {why}; CI=true forbids skipping");
    }
    let _ = writeln!(io::stderr(), "{test}: SKIPPED: {why}");
    false
}

/// A free TCP port on loopback (bound and released; good enough for tests).
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

enum Running {
    Local(Child),
    Ns(Proc),
}

/// One standalone ZooKeeper server. Dropping it kills the process (by its pid).
pub struct ZkServer {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    running: Option<Running>,
}

impl ZkServer {
    /// Writes `zoo.cfg` for `addr` in a new temporary directory. Nothing runs yet.
    pub fn new(addr: SocketAddr) -> io::Result<ZkServer> {
        let dir = tempfile::Builder::new().prefix("hapair-zk").tempdir()?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let cfg = format!(
            "tickTime={TICK_MS}\ninitLimit=10\nsyncLimit=5\ndataDir={data}\nclientPort={port}\n\
             clientPortAddress={ip}\nadmin.enableServer=false\nminSessionTimeout={min}\n\
             maxSessionTimeout=60000\n4lw.commands.whitelist=ruok,srvr\n",
            data = data.display(),
            port = addr.port(),
            ip = addr.ip(),
            min = 2 * TICK_MS,
        );
        std::fs::write(dir.path().join("zoo.cfg"), cfg)?;
        Ok(ZkServer {
            addr,
            dir,
            running: None,
        })
    }

    /// `zoo.cfg` in this server's directory.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("zoo.cfg")
    }

    /// The server's log (stdout and stderr), for a failing test to print.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("zookeeper.log")).unwrap_or_default()
    }

    fn command(&self) -> io::Result<Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("zookeeper.log"))?;
        let mut cmd = Command::new("java");
        // A small heap and the client compiler: it starts faster and costs less CPU.
        cmd.args([
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-cp",
            &format!("{JAR}:/usr/share/java/*"),
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
        ])
        .arg(self.config_path())
        .current_dir(self.dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
        Ok(cmd)
    }

    /// Starts the server here (loopback tests). The child dies with this thread's process.
    pub fn start(&mut self) -> io::Result<()> {
        self.stop();
        let mut cmd = self.command()?;
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.running = Some(Running::Local(cmd.spawn()?));
        Ok(())
    }

    /// Starts the server inside a lab namespace.
    pub fn start_in(&mut self, ns: &Netns) -> io::Result<()> {
        self.stop();
        let cmd = self.command()?;
        self.running = Some(Running::Ns(ns.spawn(cmd)?));
        Ok(())
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        match &self.running {
            Some(Running::Local(c)) => Some(c.id()),
            Some(Running::Ns(p)) => Some(p.pid()),
            None => None,
        }
    }

    /// Kills the server (SIGKILL to its pid) and reaps it. Its data stays, so a restart
    /// keeps the sessions that have not expired.
    pub fn stop(&mut self) {
        match self.running.take() {
            Some(Running::Local(mut c)) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Some(Running::Ns(p)) => {
                let _ = p.kill();
            }
            None => {}
        }
    }

    /// Waits until the server answers `ruok` with `imok` (from this thread's namespace).
    pub fn wait_ready(&self, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if ruok(self.addr) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// ZooKeeper's `ruok` four-letter command.
pub fn ruok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"ruok").is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"imok"
}
