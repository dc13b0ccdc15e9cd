//! The Vagrant lab (vagrant/) as far as it can be proven on a machine that cannot boot VMs:
//! the scripts parse, the configs they render pass `hapair check`, and `vagrant validate`
//! accepts the Vagrantfile. The drills themselves are proven in the namespace lab
//! (`hapair lab drill`, tests/pair_ns.rs).
//!
//! CI installs Vagrant with `apt-get install -y --no-install-recommends vagrant`. Without a
//! provider (VirtualBox, libvirt) `vagrant validate` refuses to run ("No usable default provider
//! could be found"); the test then says so and validates with `--ignore-provider`, which checks
//! everything but the provider blocks. Under CI=true a missing `vagrant` is a failure unless
//! HAPAIR_VAGRANT_UNAVAILABLE says why the package could not be installed.

use std::path::{Path, PathBuf};
use std::process::Command;

fn vagrant_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vagrant")
}

fn scripts() -> Vec<PathBuf> {
    let mut v = vec![];
    for dir in [vagrant_dir(), vagrant_dir().join("provision")] {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "sh") {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

#[test]
fn scripts_parse_and_are_executable() {
    use std::os::unix::fs::PermissionsExt;
    let s = scripts();
    assert!(s.len() >= 6, "{s:?}");
    for p in &s {
        let out = Command::new("bash").arg("-n").arg(p).output().unwrap();
        assert!(
            out.status.success(),
            "bash -n {}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let mode = std::fs::metadata(p).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{} is not executable", p.display());
    }
}

#[test]
fn rendered_proxy_configs_pass_check() {
    let dir = tempfile::tempdir().unwrap();
    let etc = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc");
    for (name, peer) in [("proxy1", "192.168.56.12"), ("proxy2", "192.168.56.11")] {
        let out = Command::new("bash")
            .arg(vagrant_dir().join("provision/render-config.sh"))
            .args([etc.to_str().unwrap(), name, peer, "192.168.56.100/24"])
            .args(["192.168.56.61", "192.168.56.62", "192.168.56.63"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(&format!("peer = \"{peer}\"")), "{text}");
        assert!(text.contains("vips = [\"192.168.56.100/24\"]"), "{text}");
        assert!(
            !text.contains("198.51.100.") && !text.contains("hadoop464"),
            "{text}"
        );
        let p = dir.path().join(format!("{name}.toml"));
        std::fs::write(&p, &text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_hapair"))
            .args(["check", "-c", p.to_str().unwrap()])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("listen impala_hs2 on 0.0.0.0:21050 balance leastconn (3 servers)"),
            "{stdout}"
        );
    }
}

fn vagrant(args: &[&str], dotfile: &Path) -> Option<(bool, String)> {
    let out = Command::new("vagrant")
        .args(args)
        .current_dir(vagrant_dir())
        // Keep the machine state out of the source tree.
        .env("VAGRANT_DOTFILE_PATH", dotfile)
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

#[test]
fn vagrant_validate_passes() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let dot = tempfile::tempdir().unwrap();
    let Some((ok, out)) = vagrant(&["validate"], dot.path()) else {
        let why = "vagrant is not installed; install it with \
                   `apt-get install -y --no-install-recommends vagrant`";
        match std::env::var("HAPAIR_VAGRANT_UNAVAILABLE") {
            Ok(reason) => {
                eprintln!(
                    "SKIP vagrant validate: {why}; the package could not be installed: {reason}"
                );
                return;
            }
            Err(_) if ci => panic!(
                "{why}. If the Debian package cannot be installed here, set \
                 HAPAIR_VAGRANT_UNAVAILABLE to the reason"
            ),
            Err(_) => {
                eprintln!("SKIP vagrant validate: {why}");
                return;
            }
        }
    };
    if ok {
        assert!(out.contains("Vagrantfile validated successfully"), "{out}");
        return;
    }
    assert!(
        out.contains("No usable default provider could be found"),
        "vagrant validate failed:\n{out}"
    );
    eprintln!(
        "vagrant validate cannot run with a provider here: \"No usable default provider could \
         be found for your system\" (no VirtualBox or libvirt on this machine). Validating with \
         --ignore-provider, which checks everything except the provider blocks."
    );
    let (ok, out) = vagrant(&["validate", "--ignore-provider"], dot.path()).unwrap();
    assert!(ok, "vagrant validate --ignore-provider failed:\n{out}");
    assert!(out.contains("Vagrantfile validated successfully"), "{out}");
}
