//! `hapair lab demo | drill | bench | standin`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;

use super::pairlab::{LabOptions, PairLab, NAMES};
use super::standin::StandinOpts;
use super::timeline::{EventKind, Timeline};

#[derive(Subcommand, Debug)]
pub enum LabCmd {
    /// Build the lab, start the pair, pull the master's link, restore it, step
    /// the master down; print the timeline; tear everything down.
    Demo,
    /// Run the failover drills and write the timeline as JSON and SVG.
    Drill {
        /// Directory for drill.json and drill.svg.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Extra [pair] settings, e.g. 'advert_interval = "30ms"'.
        #[arg(long, default_value = "")]
        pair: String,
    },
    /// Benchmarks: `failover` (hapair vs keepalived), `balancer` (hapair vs haproxy).
    Bench {
        #[arg(default_value = "failover")]
        what: String,
        /// Trials per scenario (default: 5 for failover, 3 for balancer).
        #[arg(long)]
        trials: Option<usize>,
        /// Failover scenarios to run (default: all).
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<super::bench::Scenario>,
        /// Failover daemon variants: hapair, hapair-tuned, keepalived-v3, keepalived-v2
        /// (default: all).
        #[arg(long, value_delimiter = ',')]
        daemons: Vec<String>,
        /// Write the figures as JSON into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// balancer: keep the lab up this many seconds before the trials, for measuring
        /// by hand (prints the namespace and the ports).
        #[arg(long, hide = true)]
        hold: Option<u64>,
    },
    /// A stand-in Impala daemon (used by the lab and the tests).
    #[command(hide = true)]
    Standin(StandinOpts),
}

pub fn run(cmd: LabCmd) -> ExitCode {
    if !matches!(cmd, LabCmd::Standin(_)) {
        if let Err(e) = super::netns::clean_up_on_signal() {
            eprintln!("hapair lab: cannot watch for Ctrl-C: {e}");
        }
    }
    let r = match cmd {
        LabCmd::Demo => demo().map(|t| {
            println!("{}", t.render());
            println!("Drills (client-visible):");
            print!("{}", t.render_summary());
        }),
        LabCmd::Drill { out, pair } => drill_to_files(&out, &pair),
        LabCmd::Bench {
            what,
            trials,
            scenarios,
            daemons,
            out,
            hold,
        } => match what.as_str() {
            "balancer" => super::lbbench::run(
                trials.unwrap_or(super::lbbench::DEFAULT_TRIALS),
                out.as_deref(),
                hold,
            ),
            _ => super::bench::run(
                &what,
                super::bench::BenchOpts {
                    trials: trials.unwrap_or(5),
                    scenarios,
                    daemons,
                    out,
                },
            ),
        },
        LabCmd::Standin(opts) => standin(opts),
    };
    if r.is_err() && !super::netns::stopping() {
        // A Ctrl-C that also reached the children may be why it failed: give the signal
        // thread a moment to say so.
        std::thread::sleep(Duration::from_millis(200));
    }
    if super::netns::stopping() {
        // A signal is ending the run (its Ctrl-C may also be why `r` failed): the signal
        // thread deletes the namespaces and exits with its code.
        loop {
            std::thread::park();
        }
    }
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hapair lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn standin(opts: StandinOpts) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(super::standin::run_standin(opts))
}

fn me() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("find the hapair binary")
}

pub fn demo() -> anyhow::Result<Timeline> {
    let opts = LabOptions {
        full_stack: true,
        ..LabOptions::default()
    };
    run_drills(&me()?, opts, true)
}

fn drill_to_files(out: &std::path::Path, pair: &str) -> anyhow::Result<()> {
    let opts = LabOptions {
        pair_extra: pair.to_string(),
        ..LabOptions::default()
    };
    let t = run_drills(&me()?, opts, true)?;
    std::fs::create_dir_all(out)?;
    let json = out.join("drill.json");
    let svg = out.join("drill.svg");
    std::fs::write(&json, t.to_json())?;
    std::fs::write(
        &svg,
        super::plot::svg(&t, &super::plot::PlotOpts::default()),
    )?;
    println!("{}", t.render());
    print!("{}", t.render_summary());
    println!("wrote {} and {}", json.display(), svg.display());
    Ok(())
}

fn say(verbose: bool, lab: &PairLab, msg: &str) {
    if verbose {
        eprintln!("[{:>8.1} ms] {msg}", lab.now_ms());
    }
}

/// The drills: cold start, link pulled on the master, link restored (the
/// master preempts back), graceful step-down (SIGTERM) and restart, kill -9.
pub fn run_drills(
    bin: &std::path::Path,
    opts: LabOptions,
    verbose: bool,
) -> anyhow::Result<Timeline> {
    let mut lab = PairLab::new(bin, opts)?;
    say(
        verbose,
        &lab,
        "lab built: switch, proxy1, proxy2, client (namespaces)",
    );
    lab.note("lab", EventKind::DrillStart("cold start".into()));
    lab.start(0)?;
    lab.start(1)?;
    let t0 = Instant::now();
    if !lab.wait_for(Duration::from_secs(5), |l| l.holds_vip(0)) {
        anyhow::bail!("proxy1 did not take the VIP within 5 s");
    }
    say(
        verbose,
        &lab,
        &format!("proxy1 holds the VIP after {} ms", t0.elapsed().as_millis()),
    );
    lab.note("lab", EventKind::DrillEnd("cold start".into()));
    let client = lab.start_client()?;
    std::thread::sleep(Duration::from_millis(500));

    let drill = |lab: &PairLab,
                 name: &str,
                 f: &mut dyn FnMut() -> anyhow::Result<()>,
                 settle: u64|
     -> anyhow::Result<()> {
        say(verbose, lab, name);
        lab.note("lab", EventKind::DrillStart(name.to_string()));
        f()?;
        std::thread::sleep(Duration::from_millis(settle));
        lab.note("lab", EventKind::DrillEnd(name.to_string()));
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    };
    drill(
        &lab,
        "link pulled on proxy1",
        &mut || lab.set_link(0, false),
        1500,
    )?;
    drill(
        &lab,
        "link restored on proxy1",
        &mut || lab.set_link(0, true),
        1500,
    )?;
    {
        let lab_ref = &mut lab;
        say(verbose, lab_ref, "graceful step-down of proxy1 (SIGTERM)");
        lab_ref.note(
            "lab",
            EventKind::DrillStart("step-down (SIGTERM) proxy1".into()),
        );
        lab_ref.terminate(0, Duration::from_secs(10))?;
        std::thread::sleep(Duration::from_millis(1000));
        lab_ref.note(
            "lab",
            EventKind::DrillEnd("step-down (SIGTERM) proxy1".into()),
        );
        say(verbose, lab_ref, "restart proxy1 (it preempts back)");
        lab_ref.note("lab", EventKind::DrillStart("restart proxy1".into()));
        lab_ref.start(0)?;
        std::thread::sleep(Duration::from_millis(1500));
        lab_ref.note("lab", EventKind::DrillEnd("restart proxy1".into()));
        say(verbose, lab_ref, "kill -9 of proxy1's hapair");
        lab_ref.note("lab", EventKind::DrillStart("kill -9 proxy1".into()));
        lab_ref.kill9(0)?;
        std::thread::sleep(Duration::from_millis(1500));
        lab_ref.note("lab", EventKind::DrillEnd("kill -9 proxy1".into()));
    }
    let (attempts, sightings) = client.finish();
    let mut t = lab.timeline();
    t.add_attempts("client", &attempts);
    t.add_sightings("client", &sightings);
    say(
        verbose,
        &lab,
        &format!(
            "{} connects, {} announcements seen; tearing down",
            attempts.len(),
            sightings.len()
        ),
    );
    drop(lab);
    let _ = NAMES;
    Ok(t)
}
