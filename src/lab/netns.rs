//! Network namespaces for the lab and the namespace tests.
//!
//! - [`Netns`] is a guard: `Netns::new("a")` creates `hp<pid>-a` with `lo` up, and dropping it
//!   (also while unwinding from a panic) kills the processes spawned into it and deletes it.
//! - [`Lab`] adds a switch: a namespace holding a bridge, with [`Lab::attach`] plugging a host
//!   namespace into it through a veth pair. The switch-side end is the cable: set it down to
//!   pull it, or isolate it so two ports stop reaching each other while both still reach
//!   the rest.
//! - [`in_netns`], [`spawn_in_netns`] and [`Netns::block_on`] run Rust code (a client loop,
//!   a tokio runtime) inside a namespace on a fresh thread after `setns(2)`.
//!
//! No interface is ever created in the caller's namespace: veth pairs are created inside the
//! switch namespace and their peer is moved straight into the host namespace. The test
//! process's pid is in every name, so parallel runs never collide, and [`cleanup_stale`]
//! removes what a killed run left behind.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/run/netns";
/// The bridge in every lab's switch namespace.
pub const BRIDGE: &str = "br0";

/// Lab ids, so several labs in one process (parallel tests) get distinct names.
static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// The prefix of every namespace this process creates: `hp<pid>-`.
pub fn prefix() -> String {
    format!("hp{}-", std::process::id())
}

/// True when running as root. Otherwise prints why `test` is skipped and returns false, or
/// panics when `CI=true`: in CI a skipped namespace test is a failure.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: namespace tests need root, and CI=true forbids skipping");
    }
    // Written to the real stderr, not through eprintln!, which the test harness captures and
    // hides for passing tests: a skip must be seen.
    use std::io::Write;
    let _ = writeln!(io::stderr(), "{test}: SKIPPED: namespace tests need root");
    false
}

/// Run `program args`, returning its stdout, or an error with its stderr if it failed.
pub fn cmd<I, S>(program: &str, args: I) -> io::Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    checked(c)
}

fn checked(mut c: Command) -> io::Result<String> {
    let out = c.output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{:?} failed ({}): {}",
            c,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The handle file of namespace `name`.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Whether namespace `name` exists.
pub fn exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// The namespaces that exist now whose name starts with `prefix`.
pub fn list(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Delete namespaces named `hp<pid>-*` whose pid is no longer alive (left by a killed run).
/// Returns the names it deleted. Namespaces of live processes, ours included, are left alone.
pub fn cleanup_stale() -> Vec<String> {
    let mut deleted = Vec::new();
    for name in list("hp") {
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match cmd("ip", ["netns", "del", name.as_str()]) {
            Ok(_) => deleted.push(name),
            Err(e) => eprintln!("cleanup_stale: {e}"),
        }
    }
    deleted
}

/// Makes SIGINT, SIGTERM and SIGHUP end this process the way a finished lab run ends: every
/// namespace it made is deleted, its children die (they have PR_SET_PDEATHSIG), and it exits
/// with 128 + the signal. Without this, Ctrl-C on `hapair lab demo` left the namespaces
/// behind until the next run's [`cleanup_stale`].
///
/// A handler writes the signal's number into a pipe that a thread of its own reads (the
/// self-pipe trick). Not a blocked mask and sigwait: a blocked mask is inherited by every
/// child, and the lab's daemons then ignored the SIGTERM of the graceful drill. Handlers,
/// unlike the mask, are reset to the default by exec.
pub fn clean_up_on_signal() -> io::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these fds; each is owned once.
    let (r, w) = unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    SIGNAL_PIPE.store(w.into_raw_fd(), Ordering::SeqCst);
    std::thread::Builder::new()
        .name("lab-signals".into())
        .spawn(move || {
            let mut r = r;
            let mut b = [0u8; 1];
            // read(2) retries EINTR itself; EOF cannot come (the write end is never closed).
            if io::Read::read_exact(&mut r, &mut b).is_err() {
                return;
            }
            STOPPING.store(true, Ordering::SeqCst);
            // Held until exit: no namespace is made after the list below.
            std::mem::forget(lock(&CREATING));
            let names = list(&prefix());
            let sig = Signal::try_from(b[0] as i32).map_or("signal", |s| s.as_str());
            eprintln!(
                "hapair lab: {sig}: deleting {} namespace(s) and ending its processes",
                names.len()
            );
            for name in names {
                if let Err(e) = cmd("ip", ["netns", "del", name.as_str()]) {
                    eprintln!("hapair lab: {e}");
                }
            }
            std::process::exit(128 + b[0] as i32);
        })?;
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: on_signal only makes an async-signal-safe write(2).
        unsafe { sigaction(sig, &act) }.map_err(io::Error::from)?;
    }
    Ok(())
}

/// The write end of [`clean_up_on_signal`]'s pipe.
static SIGNAL_PIPE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let b = sig as u8;
    // SAFETY: write(2) is async-signal-safe; the fd stays open for the process's life.
    unsafe {
        libc::write(
            SIGNAL_PIPE.load(Ordering::SeqCst),
            (&b as *const u8).cast(),
            1,
        )
    };
}

/// Set once a signal has arrived: the lab command is being ended by [`clean_up_on_signal`],
/// whatever its own thread returns meanwhile (a Ctrl-C also reaches its children, so it may
/// be failing).
pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

static STOPPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Held while a namespace is being made, so the signal thread's list misses none.
static CREATING: Mutex<()> = Mutex::new(());

/// In a child between fork and exec: SIGKILL it when the spawning thread ends. Only makes
/// an async-signal-safe prctl(2).
fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and nothing else.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The pid in a name of the form `hp<pid>-<suffix>`.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("hp")?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

/// Move the calling thread into the network namespace behind `ns`.
fn enter(ns: &File) -> io::Result<()> {
    // SAFETY: setns on a valid descriptor of a namespace file.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Run `f` on a fresh thread inside namespace `name`, and wait for it. A panic in `f` is
/// resumed in the caller.
pub fn in_netns<F, T>(name: &str, f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let ns = File::open(netns_path(name))?;
    std::thread::scope(|s| {
        let h = s.spawn(move || -> io::Result<T> {
            enter(&ns)?;
            Ok(f())
        });
        match h.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Start `f` on a fresh thread inside namespace `name`, and return once the thread is inside.
pub fn spawn_in_netns<F, T>(name: &str, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let ns = File::open(netns_path(name))?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
    let h = std::thread::Builder::new()
        .name(format!("ns:{name}"))
        .spawn(move || {
            let entered = enter(&ns);
            let ok = entered.is_ok();
            let _ = tx.send(entered);
            if !ok {
                // The caller got the error; nothing ran here.
                std::panic::resume_unwind(Box::new("setns failed"));
            }
            f()
        })?;
    match rx.recv() {
        Ok(Ok(())) => Ok(h),
        Ok(Err(e)) => {
            let _ = h.join();
            Err(e)
        }
        Err(_) => Err(io::Error::other("namespace thread died before setns")),
    }
}

/// A network namespace that is deleted on drop, with the processes spawned into it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// Every process spawned into the namespace, so drop can kill those still running. Shared
    /// with the [`Proc`] handles; `Child` never signals a pid it has already reaped.
    children: Mutex<Vec<Arc<Mutex<Child>>>>,
}

impl Netns {
    /// Create namespace `hp<pid>-<suffix>` and set its `lo` up. Fails if it already exists.
    pub fn new(suffix: &str) -> io::Result<Netns> {
        let name = format!("{}{suffix}", prefix());
        {
            let _creating = lock(&CREATING);
            cmd("ip", ["netns", "add", name.as_str()])?;
        }
        // From here on, drop deletes the namespace even if setting it up fails.
        let ns = Netns {
            name,
            children: Mutex::new(Vec::new()),
        };
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> args...`: stdout, or an error with stderr.
    pub fn ip<I, S>(&self, args: I) -> io::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("ip");
        c.arg("-n").arg(&self.name).args(args);
        checked(c)
    }

    /// `ip netns exec <ns> args...`: the whole output, whatever the exit status. The
    /// program (a wrk or iperf3 run) dies with this process.
    pub fn run<I, S>(&self, args: I) -> io::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        // SAFETY: die_with_parent is async-signal-safe. PDEATHSIG survives the exec of `ip`
        // and its exec of the program.
        unsafe {
            c.pre_exec(die_with_parent);
        }
        c.output()
    }

    /// `ip netns exec <ns> args...`: stdout, or an error with stderr if it failed.
    pub fn exec<I, S>(&self, args: I) -> io::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        checked(c)
    }

    /// Spawn `cmd` inside the namespace. The child is tracked: dropping the [`Proc`] or this
    /// namespace kills it (SIGKILL, by pid) and reaps it.
    ///
    /// The child also gets PR_SET_PDEATHSIG=SIGKILL, so it dies if this process dies. The
    /// kernel ties that signal to the *thread* that spawned it: spawn from a thread that lives
    /// as long as the child should (the main thread, a test's thread), not from a pool thread.
    pub fn spawn(&self, mut cmd: Command) -> io::Result<Proc> {
        let ns = File::open(netns_path(&self.name))?;
        let fd = ns.as_raw_fd();
        // SAFETY: the closure only makes async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                die_with_parent()
            });
        }
        let child = cmd.spawn()?;
        drop(ns);
        let pid = child.id();
        let child = Arc::new(Mutex::new(child));
        lock(&self.children).push(child.clone());
        Ok(Proc { pid, child })
    }

    /// Run `f` on a fresh thread inside this namespace and wait for it (see [`in_netns`]).
    pub fn in_ns<F, T>(&self, f: F) -> io::Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        in_netns(&self.name, f)
    }

    /// Start `f` on a fresh thread inside this namespace (see [`spawn_in_netns`]).
    pub fn spawn_thread<F, T>(&self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        spawn_in_netns(&self.name, f)
    }

    /// Run the future that `f` makes on a current-thread tokio runtime inside this namespace.
    /// Sockets and netlink handles made in the future live in the namespace.
    pub fn block_on<F, Fut>(&self, f: F) -> io::Result<Fut::Output>
    where
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future,
        Fut::Output: Send,
    {
        self.in_ns(move || -> io::Result<Fut::Output> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(f()))
        })?
    }

    /// Set `ifname` in this namespace up or down.
    pub fn set_link(&self, ifname: &str, up: bool) -> io::Result<()> {
        self.ip(["link", "set", "dev", ifname, if up { "up" } else { "down" }])
            .map(drop)
    }

    /// Add a blackhole route for `dest` (an address or a CIDR): packets to it are dropped and
    /// sending to it fails at once with EINVAL.
    pub fn blackhole(&self, dest: &str) -> io::Result<()> {
        self.ip(["route", "add", "blackhole", dest]).map(drop)
    }

    /// The MAC of `ifname` in this namespace, as `ip` prints it (`aa:bb:..`).
    pub fn mac(&self, ifname: &str) -> io::Result<String> {
        let out = self.ip(["-o", "link", "show", "dev", ifname])?;
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(str::to_string)
            .ok_or_else(|| io::Error::other(format!("no MAC in: {out}")))
    }

    /// The link-layer address of `addr` in this namespace's neighbour table, if any.
    pub fn neigh(&self, addr: &str) -> io::Result<Option<String>> {
        let out = self.ip(["neigh", "show", "to", addr])?;
        Ok(out
            .split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .map(str::to_string))
    }

    fn kill_children(&self) {
        for child in lock(&self.children).drain(..) {
            let mut c = lock(&child);
            // Child::kill does nothing once the child has been reaped, so no stray pid is hit.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_children();
        if let Err(e) = cmd("ip", ["netns", "del", self.name.as_str()]) {
            // After a signal, the signal thread may have deleted it first.
            if !stopping() {
                eprintln!("netns {}: delete failed: {e}", self.name);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A process spawned into a namespace. Dropping it kills (SIGKILL) and reaps it.
#[derive(Debug)]
#[must_use = "dropping a Proc kills the process"]
pub struct Proc {
    pid: u32,
    /// Shared with the namespace, which kills it on drop if this handle did not.
    child: Arc<Mutex<Child>>,
}

impl Proc {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Send `signal` (e.g. `libc::SIGTERM`) if the process has not been reaped yet.
    /// Returns false if it had already exited.
    pub fn signal(&self, signal: i32) -> io::Result<bool> {
        let mut c = lock(&self.child);
        if c.try_wait()?.is_some() {
            return Ok(false);
        }
        // SAFETY: the pid is our unreaped child (we hold the only handle that reaps it).
        if unsafe { libc::kill(self.pid as libc::pid_t, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(true)
    }

    /// Wait for the process to exit.
    pub fn wait(&self) -> io::Result<ExitStatus> {
        lock(&self.child).wait()
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        lock(&self.child).try_wait()
    }

    /// SIGKILL and reap.
    pub fn kill(&self) -> io::Result<ExitStatus> {
        let mut c = lock(&self.child);
        c.kill()?;
        c.wait()
    }

    /// The child's stdout, if it was piped and not taken yet.
    pub fn take_stdout(&self) -> Option<ChildStdout> {
        lock(&self.child).stdout.take()
    }

    /// The child's stderr, if it was piped and not taken yet.
    pub fn take_stderr(&self) -> Option<ChildStderr> {
        lock(&self.child).stderr.take()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let mut c = lock(&self.child);
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A switch namespace with a bridge, into which host namespaces are plugged.
///
/// Namespaces of one lab are named `hp<pid>-<lab>-<suffix>`, so several labs in one process
/// (parallel tests) never collide.
#[derive(Debug)]
pub struct Lab {
    /// `<lab>`: this lab's number within the process.
    id: u32,
    /// The switch: holds [`BRIDGE`] and the switch-side end of every cable.
    switch: Netns,
    /// Next switch port number (`p1`, `p2`, ...).
    ports: AtomicU32,
}

impl Lab {
    /// Create the switch namespace `hp<pid>-<lab>-sw` with bridge `br0` up.
    pub fn new() -> io::Result<Lab> {
        let id = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        let switch = Netns::new(&format!("{id}-sw"))?;
        // The switch is a switch, not a host: no IPv6 chatter of its own.
        switch.exec(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
        switch.exec(["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
        switch.ip([
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        switch.set_link(BRIDGE, true)?;
        Ok(Lab {
            id,
            switch,
            ports: AtomicU32::new(1),
        })
    }

    /// A new host namespace of this lab, `hp<pid>-<lab>-<name>`.
    pub fn host(&self, name: &str) -> io::Result<Netns> {
        Netns::new(&format!("{}-{name}", self.id))
    }

    /// The switch namespace.
    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// The prefix of every namespace of this lab, `hp<pid>-<lab>-`.
    pub fn prefix(&self) -> String {
        format!("{}{}-", prefix(), self.id)
    }

    /// Plug `ns` into the switch: a veth pair whose host end is `ifname` in `ns` (up, with
    /// `addrs` added; IPv6 ones without DAD) and whose switch end is a bridge port. Returns
    /// the switch-side port name, the "cable" for [`Lab::set_port`] and [`Lab::isolate`].
    pub fn attach(&self, ns: &Netns, ifname: &str, addrs: &[&str]) -> io::Result<String> {
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::Relaxed));
        self.switch.ip([
            "link",
            "add",
            port.as_str(),
            "type",
            "veth",
            "peer",
            "name",
            ifname,
            "netns",
            ns.name(),
        ])?;
        self.switch
            .ip(["link", "set", "dev", port.as_str(), "master", BRIDGE])?;
        self.switch.set_link(&port, true)?;
        for addr in addrs {
            if addr.contains(':') {
                ns.ip(["addr", "add", addr, "dev", ifname, "nodad"])?;
            } else {
                ns.ip(["addr", "add", addr, "dev", ifname])?;
            }
        }
        ns.set_link(ifname, true)?;
        Ok(port)
    }

    /// Plug the cable of `port` in (`true`) or pull it (`false`): sets the switch-side end of
    /// the veth up or down, so the host end loses carrier.
    pub fn set_port(&self, port: &str, up: bool) -> io::Result<()> {
        self.switch.set_link(port, up)
    }

    /// Isolate `port` (`on`) or not. Isolated ports cannot reach each other but still reach
    /// every non-isolated port: isolating both proxies cuts the pair link while clients and
    /// witnesses still reach each proxy.
    pub fn isolate(&self, port: &str, on: bool) -> io::Result<()> {
        self.switch
            .exec([
                "bridge",
                "link",
                "set",
                "dev",
                port,
                "isolated",
                if on { "on" } else { "off" },
            ])
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_our_names() {
        assert_eq!(owner_pid("hp1234-0a"), Some(1234));
        assert_eq!(owner_pid("hp1234-"), Some(1234));
        assert_eq!(owner_pid("hpx-0a"), None);
        assert_eq!(owner_pid("other"), None);
        assert_eq!(owner_pid("hp12"), None);
    }

    #[test]
    fn prefix_has_our_pid() {
        assert_eq!(prefix(), format!("hp{}-", std::process::id()));
    }
}
