//! Child processes: spawn (own process group, `PR_SET_PDEATHSIG`, optional user drop),
//! signal the group, wait without blocking a thread, and log output line by line.
//!
//! **Why a spawner thread.** `PR_SET_PDEATHSIG` fires when the *thread* that forked the child
//! exits, not the process. Tokio's blocking-pool threads exit after 10 s idle, and a
//! runtime's workers can come and go with the runtime. So every child is forked by one
//! dedicated std thread (`hapair-spawner`) that lives as long as the process: the child gets
//! SIGKILL exactly when hapair dies, including on `kill -9`.
//!
//! **Waiting.** The spawned `std::process::Child` is watched through a pidfd (Linux 5.3+)
//! registered with tokio; without pidfd it is polled every 50 ms. When the leader has exited
//! (still a zombie, so its pid and process-group id cannot be reused), the rest of its
//! process group is killed, then the leader is reaped.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

/// What to run; borrowed from the service config.
pub struct Spec<'a> {
    pub name: &'a str,
    pub command: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub user: Option<&'a str>,
}

struct SpawnReq {
    cmd: std::process::Command,
    reply: oneshot::Sender<io::Result<std::process::Child>>,
}

/// The spawner thread's queue. The sender lives in a static, so the thread never ends.
fn spawner() -> &'static std_mpsc::Sender<SpawnReq> {
    static TX: OnceLock<std_mpsc::Sender<SpawnReq>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<SpawnReq>();
        std::thread::Builder::new()
            .name("hapair-spawner".into())
            .spawn(move || {
                while let Ok(mut req) = rx.recv() {
                    let _ = req.reply.send(req.cmd.spawn());
                }
            })
            .expect("cannot start the spawner thread");
        tx
    })
}

/// Credentials to switch to in the child, resolved before the fork (NSS is not safe after).
struct Creds {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    home: String,
    name: String,
}

fn creds(user: &str) -> io::Result<Creds> {
    let u = nix::unistd::User::from_name(user)
        .map_err(io::Error::from)?
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("user `{user}` does not exist"),
            )
        })?;
    let cname =
        std::ffi::CString::new(user).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let groups = nix::unistd::getgrouplist(&cname, u.gid)
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![u.gid.as_raw()]);
    Ok(Creds {
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        groups,
        home: u.dir.to_string_lossy().into_owned(),
        name: u.name,
    })
}

/// A running (or exited, not yet reaped) child, leader of its own process group.
pub struct Child {
    pid: u32,
    /// `None` once reaped.
    child: Option<std::process::Child>,
    /// Readable when the child exits; `None` where pidfd_open is missing.
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

/// Spawn `spec` from the spawner thread; stdout and stderr go to the log, tagged with the
/// service name.
pub async fn spawn(spec: &Spec<'_>) -> io::Result<Child> {
    let (prog, args) = spec
        .command
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let creds = match spec.user {
        Some(u) => {
            let u = u.to_string();
            Some(
                tokio::task::spawn_blocking(move || creds(&u))
                    .await
                    .map_err(io::Error::other)??,
            )
        }
        None => None,
    };
    if let Some(c) = &creds {
        cmd.env("HOME", &c.home)
            .env("USER", &c.name)
            .env("LOGNAME", &c.name);
    }
    cmd.envs(spec.env);
    let parent = std::process::id() as libc::pid_t;
    let drop_to = creds.map(|c| (c.uid, c.gid, c.groups));
    // SAFETY: between fork and exec only async-signal-safe calls: setgroups, setgid,
    // setuid, prctl, getppid. Nothing allocates (io::Error from an errno does not).
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid, groups)) = &drop_to {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(*gid) != 0
                    || libc::setuid(*uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            // After setuid: a credential change clears the parent-death signal.
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // hapair died between fork and prctl: do not run as an orphan.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (tx, rx) = oneshot::channel();
    spawner()
        .send(SpawnReq { cmd, reply: tx })
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    let mut child = rx
        .await
        .map_err(|_| io::Error::other("spawner thread is gone"))??;
    let pid = child.id();
    let name: Arc<str> = Arc::from(spec.name);
    if let Some(out) = child.stdout.take() {
        log_stream(name.clone(), "stdout", OwnedFd::from(out));
    }
    if let Some(err) = child.stderr.take() {
        log_stream(name, "stderr", OwnedFd::from(err));
    }
    // SAFETY: an `OwnedFd` stays open and is the same descriptor for as long as it lives.
    let pidfd = pidfd_open(pid).and_then(|fd| unsafe {
        AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE).ok()
    });
    Ok(Child {
        pid,
        child: Some(child),
        pidfd,
        status: None,
    })
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: plain syscall; on success the fd is new and ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl Child {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Send `sig` to the child's whole process group (no-op once reaped).
    pub fn signal(&self, sig: Signal) {
        if self.child.is_some() {
            let _ = killpg(Pid::from_raw(self.pid as i32), sig);
        }
    }

    /// True once the leader has exited (zombie or reaped), without reaping it.
    fn exited(&self) -> bool {
        if self.child.is_none() {
            return true;
        }
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        !matches!(
            waitid(Id::Pid(Pid::from_raw(self.pid as i32)), flags),
            Ok(nix::sys::wait::WaitStatus::StillAlive)
        )
    }

    /// Wait for the leader to exit, kill what is left of its group, reap it. Cancel-safe.
    pub async fn wait(&mut self) -> ExitStatus {
        loop {
            if let Some(st) = self.status {
                return st;
            }
            if self.exited() {
                // The zombie leader still holds the group id: stragglers cannot be confused
                // with a new process.
                let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
                if let Some(mut c) = self.child.take() {
                    let st = c.wait().unwrap_or_else(|_| ExitStatus::from_raw(0xff00));
                    self.status = Some(st);
                    return st;
                }
            }
            match &self.pidfd {
                Some(fd) => match fd.readable().await {
                    Ok(mut g) => g.clear_ready(),
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for Child {
    /// A child dropped while running (a task cancelled) is killed with its group and reaped
    /// on a short-lived thread, so it neither survives nor stays a zombie.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
            let _ = std::thread::Builder::new()
                .name("hapair-reap".into())
                .spawn(move || c.wait());
        }
    }
}

/// "exit code 1", "killed by SIGKILL", "killed by SIGSEGV (core dumped)".
pub fn describe(st: ExitStatus) -> String {
    if let Some(c) = st.code() {
        return format!("exit code {c}");
    }
    let Some(sig) = st.signal() else {
        return format!("{st}");
    };
    let name = Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"));
    if st.core_dumped() {
        format!("killed by {name} (core dumped)")
    } else {
        format!("killed by {name}")
    }
}

/// Longest line logged as one; longer output is split.
const MAX_LINE: usize = 8192;

fn log_stream(name: Arc<str>, stream: &'static str, fd: OwnedFd) {
    let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        tracing::warn!(service = %name, stream, "cannot read the child's output");
        return;
    };
    tokio::spawn(async move {
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = match rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                emit(&name, stream, &pending[..i]);
                pending.drain(..=i);
            }
            if pending.len() >= MAX_LINE {
                emit(&name, stream, &pending);
                pending.clear();
            }
        }
        if !pending.is_empty() {
            emit(&name, stream, &pending);
        }
    });
}

fn emit(name: &str, stream: &'static str, line: &[u8]) {
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end_matches('\r');
    tracing::info!(target: "hapair::service", service = %name, stream, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    async fn run(script: &str) -> (Child, ExitStatus) {
        let cmd = sh(script);
        let env = BTreeMap::from([("HAPAIR_X".to_string(), "42".to_string())]);
        let mut c = spawn(&Spec {
            name: "t",
            command: &cmd,
            env: &env,
            user: None,
        })
        .await
        .unwrap();
        let st = tokio::time::timeout(Duration::from_secs(5), c.wait())
            .await
            .unwrap();
        (c, st)
    }

    #[tokio::test]
    async fn exit_codes_env_and_group() {
        let (_, st) = run("exit 3").await;
        assert_eq!(describe(st), "exit code 3");
        let (_, st) = run("test \"$HAPAIR_X\" = 42").await;
        assert!(st.success());
        // Own process group: pgid == pid.
        let (_, st) = run("test \"$(ps -o pgid= -p $$ | tr -d ' ')\" = $$").await;
        assert!(st.success(), "not a group leader");
        let (_, st) = run("kill -9 $$").await;
        assert_eq!(describe(st), "killed by SIGKILL");
    }

    #[tokio::test]
    async fn stragglers_in_the_group_die_with_the_leader() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pid");
        let (_, st) = run(&format!("sleep 30 & echo $! > {}; exit 0", f.display())).await;
        assert!(st.success());
        let pid: i32 = std::fs::read_to_string(&f).unwrap().trim().parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "straggler {pid} survived"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn signal_reaches_the_group() {
        let cmd = sh("trap 'exit 7' TERM; while :; do sleep 0.05; done");
        let env = BTreeMap::new();
        let mut c = spawn(&Spec {
            name: "t",
            command: &cmd,
            env: &env,
            user: None,
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.signal(Signal::SIGTERM);
        let st = tokio::time::timeout(Duration::from_secs(5), c.wait())
            .await
            .unwrap();
        assert_eq!(describe(st), "exit code 7");
    }

    #[tokio::test]
    async fn user_drop() {
        if !nix::unistd::geteuid().is_root()
            || nix::unistd::User::from_name("nobody")
                .ok()
                .flatten()
                .is_none()
        {
            eprintln!("skipped: needs root and user nobody");
            return;
        }
        let cmd = sh("test \"$(id -u)\" = \"$(id -u nobody)\" && test \"$USER\" = nobody");
        let env = BTreeMap::new();
        let mut c = spawn(&Spec {
            name: "t",
            command: &cmd,
            env: &env,
            user: Some("nobody"),
        })
        .await
        .unwrap();
        assert!(c.wait().await.success());
        let missing = spawn(&Spec {
            name: "t",
            command: &cmd,
            env: &env,
            user: Some("no-such-user-hapair"),
        })
        .await;
        assert!(missing.is_err());
    }

    #[tokio::test]
    async fn missing_program_is_an_error() {
        let cmd = vec!["/nonexistent/hapair-test".to_string()];
        let env = BTreeMap::new();
        let e = spawn(&Spec {
            name: "t",
            command: &cmd,
            env: &env,
            user: None,
        })
        .await
        .err()
        .unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    /// Alive and not a zombie.
    pub(crate) fn alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(s) => !s
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with(['Z', 'X'])),
            Err(_) => false,
        }
    }
}
