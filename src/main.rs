//! hapair: a thin clap dispatcher. The work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use hapair::config::{self, Host};

#[derive(Parser)]
#[command(
    name = "hapair",
    version,
    about = "HA pair for Impala proxies: VIP, L4 balancer, service supervision"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon in the foreground.
    Run {
        #[arg(short, long, default_value = "/etc/hapair/hapair.toml")]
        config: PathBuf,
        #[arg(long, value_enum, default_value = "human")]
        log_format: LogFormat,
    },
    /// Validate a config like `haproxy -c`: exit 0, or 1 with file:line:col errors.
    Check {
        #[arg(short, long, default_value = "/etc/hapair/hapair.toml")]
        config: PathBuf,
    },
    /// Write a new random pair key (mode 0600).
    Keygen { file: PathBuf },
    /// Ask the running daemon for role, priority, peer, VIPs, servers and services.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the raw /status JSON.
        #[arg(long)]
        json: bool,
    },
    /// Runtime control through the admin API (needs the admin token).
    Ctl {
        #[command(flatten)]
        admin: AdminArgs,
        /// Only in this listener (drain, enable, disable) [default: every listener].
        #[arg(long, global = true)]
        listener: Option<String>,
        #[command(subcommand)]
        action: CtlCmd,
    },
    /// Convert an existing haproxy.cfg (and keepalived.conf) into a hapair config.
    Import {
        /// haproxy config: listen, frontend/backend, defaults, global maxconn.
        #[arg(long, required_unless_present = "keepalived")]
        haproxy: Option<PathBuf>,
        /// keepalived config: its vrrp_instance becomes [node] and [pair].
        #[arg(long)]
        keepalived: Option<PathBuf>,
        /// Write the config here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Overwrite the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// The namespace lab: demo, drills and benchmarks (root).
    Lab {
        #[command(subcommand)]
        cmd: hapair::lab::cli::LabCmd,
    },
}

/// Where `status` and `ctl` find the admin API.
#[derive(clap::Args)]
struct AdminArgs {
    #[arg(short, long, default_value = "/etc/hapair/hapair.toml")]
    config: PathBuf,
    /// Admin address [default: node.admin from the config].
    #[arg(long)]
    admin: Option<std::net::SocketAddr>,
    /// Admin token file [default: node.admin_token_file from the config].
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum CtlCmd {
    /// Hand the VIPs to the peer (make-before-break).
    StepDown,
    /// No new connections to SERVER; open ones finish.
    Drain { server: String },
    /// Put SERVER back in rotation (if its checks pass).
    Enable { server: String },
    /// Maintenance: no new connections to SERVER; checks keep running.
    Disable { server: String },
    /// Restart a supervised service.
    Restart { service: String },
}

fn admin_target(a: &AdminArgs) -> Option<hapair::admin::client::Target> {
    match hapair::admin::client::Target::resolve(&a.config, a.admin, a.token_file.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

/// What is logged when `HAPAIR_LOG` is not set.
const DEFAULT_LOG: &str = "info,hapair::conn=warn";

fn init_logs(format: LogFormat) {
    // netlink-packet-route warns every second about kernel attributes newer
    // than it knows; that is noise, whatever HAPAIR_LOG says.
    // `Targets` ("info", "hapair::balancer=debug,warn"): static filtering, no regex
    // engine resident in the daemon.
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    // The per-connection lines (`hapair::conn` at info) are opt-in: `HAPAIR_LOG=info`. On by
    // default, a busy listener would write one line per connection into journald, whose
    // default rate limit (10 000 lines in 30 s) would then drop the role changes too.
    let base = std::env::var("HAPAIR_LOG").unwrap_or_else(|_| DEFAULT_LOG.into());
    let filter =
        match format!("{base},netlink_packet_route=error,netlink_proto=error").parse::<Targets>() {
            Ok(f) => f,
            Err(e) => {
                eprintln!("HAPAIR_LOG={base:?}: {e}; logging with the default, {DEFAULT_LOG:?}");
                format!("{DEFAULT_LOG},netlink_packet_route=error,netlink_proto=error")
                    .parse()
                    .expect("a valid filter")
            }
        };
    // Colours only on a terminal: journald and log files get plain text.
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(tty)
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Human => registry.with(fmt).init(),
        LogFormat::Json => registry.with(fmt.json()).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config, log_format } => {
            init_logs(log_format);
            hapair::daemon::run(config)
        }
        Cmd::Check { config } => check(&config),
        Cmd::Keygen { file } => match hapair::wire::keygen(&file) {
            Ok(()) => {
                println!(
                    "wrote a new pair key to {} (mode 0600); copy it to the peer",
                    file.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hapair keygen: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Status { admin, json } => match admin_target(&admin) {
            Some(t) => hapair::admin::client::status(&t, json),
            None => ExitCode::FAILURE,
        },
        Cmd::Ctl {
            admin,
            listener,
            action,
        } => {
            use hapair::admin::client::Action;
            let action = match action {
                CtlCmd::StepDown => Action::StepDown,
                CtlCmd::Drain { server } => Action::Drain(server),
                CtlCmd::Enable { server } => Action::Enable(server),
                CtlCmd::Disable { server } => Action::Disable(server),
                CtlCmd::Restart { service } => Action::Restart(service),
            };
            match admin_target(&admin) {
                Some(t) => hapair::admin::client::ctl(&t, &action, listener.as_deref()),
                None => ExitCode::FAILURE,
            }
        }
        Cmd::Import {
            haproxy,
            keepalived,
            output,
            force,
        } => hapair::import::cli(
            haproxy.as_deref(),
            keepalived.as_deref(),
            output.as_deref(),
            force,
        ),
        Cmd::Lab { cmd } => {
            init_logs(LogFormat::Human);
            hapair::lab::cli::run(cmd)
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path, Host::Lenient) {
        Err(d) => {
            eprint!("{d}");
            ExitCode::FAILURE
        }
        Ok(l) => {
            for w in &l.warnings {
                eprintln!("{w}");
            }
            let mut ok = true;
            match hapair::wire::KeyRing::load(&l.config.pair.auth_key_file) {
                Ok(_) => {}
                // Checking a config on another machine: the key lives on the proxies.
                Err(e @ hapair::wire::KeyError::Missing { .. }) => {
                    eprintln!("{}: warning: auth_key_file: {e}", path.display())
                }
                Err(e) => {
                    eprintln!("{}: auth_key_file: {e}", path.display());
                    ok = false;
                }
            }
            print!("{}", l.config.summary());
            if ok {
                println!("{}: config is valid", path.display());
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::filter::Targets;

    #[test]
    fn by_default_connections_log_only_their_failures() {
        let f: Targets = super::DEFAULT_LOG.parse().unwrap();
        assert!(f.would_enable("hapair::pair", &Level::INFO));
        assert!(!f.would_enable("hapair::conn", &Level::INFO));
        assert!(f.would_enable("hapair::conn", &Level::WARN));
        let on: Targets = "info".parse().unwrap();
        assert!(on.would_enable("hapair::conn", &Level::INFO));
    }
}
