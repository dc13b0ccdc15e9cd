//! `hapair run`: load and validate everything, bind, then serve until SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::balancer::Balancer;
use crate::config::{self, Host};
use crate::driver::{self, Request};
use crate::events::EventLog;
use crate::pair::Role;
use crate::supervisor::Supervisor;
use crate::wire::KeyRing;

/// Exit code for a bad config, as linkerd and sysexits(3) use.
pub const EX_CONFIG: u8 = 64;

/// Load the config and its key ring, printing every problem.
pub fn load_all(path: &Path, host: Host) -> Result<(config::Config, KeyRing), String> {
    let loaded = config::load(path, host).map_err(|d| d.to_string().trim_end().to_string())?;
    for w in &loaded.warnings {
        warn!("{w}");
    }
    let keys = KeyRing::load(&loaded.config.pair.auth_key_file)
        .map_err(|e| format!("{}: auth_key_file: {e}", path.display()))?;
    Ok((loaded.config, keys))
}

pub fn run(path: PathBuf) -> ExitCode {
    let (cfg, keys) = match load_all(&path, Host::Strict) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            error!("invalid config: not starting");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("hapair-main")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(serve(path, cfg, keys))
}

async fn serve(path: PathBuf, cfg: config::Config, keys: KeyRing) -> ExitCode {
    let events = EventLog::default();
    events.push(
        "start",
        format!(
            "hapair {} starting as {}",
            env!("CARGO_PKG_VERSION"),
            cfg.node.name
        ),
    );
    // Listeners are bound before the pair starts: a node claims the VIP only
    // once it can serve it.
    let balancer = match Balancer::start(cfg.listen.clone()).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("cannot start the balancer: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Admin (1/2): bind before the pair starts, so a taken admin port stops the start-up
    // before this node can claim anything.
    let admin_sock = match crate::admin::bind(cfg.node.admin).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "cannot bind the admin address {} (node.admin): {e}",
                cfg.node.admin
            );
            return ExitCode::FAILURE;
        }
    };
    // Services follow the pair through the gate the pair thread opens.
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
    let supervisor = Supervisor::start(cfg.services.clone(), gate_rx, events.clone());
    let links = driver::Links {
        gate: gate_tx,
        service_weight: supervisor.weight(),
        master_running: supervisor.master_running(),
        balancer: Some(balancer.clone()),
        idle: None,
    };
    let (role_tx, role_rx) = tokio::sync::watch::channel(Role::Init);
    let (pair, pair_thread) = match driver::spawn(&cfg, keys, events.clone(), role_tx, links) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("cannot start the pair: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // ZooKeeper discovery follows the role; its own task, so ZooKeeper never blocks the pair.
    let registrar = cfg.zookeeper.clone().map(|z| {
        let vips = cfg.pair.vips.iter().map(|v| v.addr()).collect();
        crate::zk::Registrar::start(z, vips, role_rx.clone(), balancer.clone(), events.clone())
    });
    // Admin (2/2): serve once the balancer and the pair are up. The token is read once here;
    // node.admin and the token file need a restart to change.
    let admin_stop = tokio_util::sync::CancellationToken::new();
    let admin = crate::admin::Admin::new(
        cfg.node.name.clone(),
        pair.clone(),
        balancer.clone(),
        supervisor.clone(),
        events.clone(),
        crate::admin::Token::load(cfg.node.admin_token_file.as_deref()),
    );
    if let Some(r) = &registrar {
        admin.set_zookeeper(r.clone());
    }
    tokio::spawn(crate::admin::serve(admin_sock, admin, admin_stop.clone()));

    sd_notify("READY=1");
    info!(config = %path.display(), "ready");

    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                sd_notify("RELOADING=1");
                // Loading resolves server names (blocking DNS): keep it off
                // the runtime's workers, which carry the proxied traffic.
                let p = path.clone();
                let loaded = tokio::task::spawn_blocking(move || load_all(&p, Host::Strict))
                    .await
                    .unwrap_or_else(|e| Err(format!("config loader failed: {e}")));
                match loaded {
                    Ok((new, keys)) => {
                        info!("reload: config valid, applying");
                        events.push("reload", "config reloaded");
                        if let Err(e) = balancer.reload(new.listen.clone()).await {
                            error!("reload: balancer kept its old listeners: {e}");
                        }
                        supervisor.reload(new.services.clone());
                        if new.zookeeper != cfg.zookeeper {
                            warn!("reload: [zookeeper] changed; restart hapair to apply it");
                        }
                        let _ = pair.tx.send(Request::Reload(Box::new(new), keys));
                    }
                    Err(e) => {
                        error!("reload rejected, the old config keeps running:\n{e}");
                        events.push("reload", format!("rejected: {}", e.lines().next().unwrap_or("")));
                    }
                }
                sd_notify("READY=1");
            }
        }
    }
    info!("shutting down: handing over to the peer if it is alive");
    sd_notify("STOPPING=1");
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let _ = pair.tx.send(Request::Shutdown(done_tx));
    let grace = (cfg.pair.advert_interval * cfg.pair.dead_after).max(Duration::from_secs(1)) * 2;
    if tokio::time::timeout(grace, done_rx).await.is_err() {
        warn!("handover did not finish within {grace:?}; exiting");
    }
    admin_stop.cancel();
    drop(pair);
    let _ = tokio::task::spawn_blocking(move || pair_thread.join()).await;
    if let Some(r) = &registrar {
        r.shutdown(Duration::from_secs(2)).await;
    }
    supervisor.shutdown().await;
    // Connections through this node end when the VIP moves; a short drain
    // serves those that reached our own address.
    balancer.shutdown(Duration::from_secs(2)).await;
    info!("stopped");
    ExitCode::SUCCESS
}

/// Tell systemd (Type=notify) about our state; a no-op without systemd.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(_) => return,
    };
    let p = path.to_string_lossy();
    let r = if let Some(abs) = p.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abs.as_bytes())
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &*p)
    };
    if let Err(e) = r {
        warn!(error = %e, "sd_notify failed");
    }
}
