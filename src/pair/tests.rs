//! Timeline tests of the pair machine on simulated time.

use std::time::Duration;

use super::machine::{Command, Reason};
use super::sim::{ms, settings, Sim, A, B};
use super::types::Role;

/// proxy1 (priority 150) and proxy2 (100), 100 ms adverts, dead after 3.
fn pair() -> Sim {
    Sim::new(settings("proxy1", 11, 150), settings("proxy2", 12, 100))
}

/// A master, B backup, settled.
fn settled() -> Sim {
    let mut s = pair();
    s.start(A);
    s.start(B);
    s.run_for(ms(1000));
    assert_eq!(s.role(A), Some(Role::Master));
    assert_eq!(s.role(B), Some(Role::Backup));
    s
}

#[test]
fn both_start_together_higher_wins_within_one_round_trip() {
    let mut s = pair();
    s.start(A);
    s.start(B);
    // Queries cross after 1 ms; each side decides on the other's query.
    let t = s
        .run_until_true(ms(50), |s| {
            s.role(A) == Some(Role::Master) && s.role(B) == Some(Role::Backup)
        })
        .expect("roles settle within one round trip");
    assert!(t <= ms(2), "settled at {t:?}");
    s.run_for(ms(5000));
    assert_eq!(s.nodes[A].claims.len(), 1, "A claimed once");
    assert!(s.nodes[B].claims.is_empty(), "B never claimed");
}

#[test]
fn node_joining_a_running_master_learns_its_role_in_one_round_trip() {
    let mut s = pair();
    s.start(A);
    s.run_for(ms(1000));
    assert_eq!(s.role(A), Some(Role::Master));
    s.start(B);
    let t0 = s.now;
    let t = s
        .run_until_true(ms(100), |s| s.role(B) == Some(Role::Backup))
        .expect("B backs off");
    assert!(t - t0 <= ms(2), "B knew its role after {:?}", t - t0);
    s.run_for(ms(3000));
    assert!(s.nodes[B].claims.is_empty(), "B never claimed the VIPs");
}

#[test]
fn lone_node_claims_after_dead_after_adverts() {
    let mut s = pair();
    s.start(A);
    let t = s
        .run_until_true(ms(1000), |s| s.nodes[A].holds_vips)
        .expect("A claims alone");
    assert_eq!(t, ms(300), "claims after 3 × 100 ms");
    assert_eq!(s.nodes[A].roles[0].2, Reason::NoPeerAtStartup);
}

#[test]
fn crash_of_master_backup_claims_within_dead_interval() {
    let mut s = settled();
    let t0 = s.now;
    s.crash(A);
    let t = s
        .run_until_true(ms(2000), |s| s.nodes[B].holds_vips)
        .expect("B takes over");
    let took = t - t0;
    assert!(took <= ms(300), "took {took:?}");
    assert_eq!(s.nodes[B].roles.last().unwrap().2, Reason::PeerDead);
    // Announced at once and again after garp_repeat_after (5 s).
    s.run_for(ms(6000));
    let ann: Vec<_> = s.nodes[B].announces.iter().map(|t| *t - t0).collect();
    assert_eq!(ann.len(), 2, "{ann:?}");
    assert_eq!(ann[1] - ann[0], Duration::from_secs(5));
}

#[test]
fn link_pulled_on_master_fault_then_backup_takes_over() {
    let mut s = settled();
    let t0 = s.now;
    s.link[A] = false;
    s.link[B] = false;
    s.command(A, Command::LinkDown);
    assert_eq!(s.role(A), Some(Role::Fault));
    assert!(!s.nodes[A].holds_vips, "fault releases the VIPs");
    let t = s
        .run_until_true(ms(1000), |s| s.nodes[B].holds_vips)
        .unwrap();
    assert!(t - t0 <= ms(300));
    // Link back: A asks, learns B is master, preempts (higher, preempt on).
    s.link = [true, true];
    s.command(A, Command::LinkUp);
    s.run_for(ms(50));
    assert_eq!(s.role(A), Some(Role::Master));
    assert_eq!(s.role(B), Some(Role::Backup));
    assert!(s.gaps.iter().all(|(a, _)| *a < t), "no gap on preempt back");
}

#[test]
fn preempt_false_keeps_the_current_master() {
    let mut a = settings("proxy1", 11, 150);
    a.preempt = false;
    let mut s = Sim::new(a, settings("proxy2", 12, 100));
    s.start(B);
    s.run_for(ms(1000));
    assert_eq!(s.role(B), Some(Role::Master));
    s.start(A);
    s.run_for(ms(5000));
    assert_eq!(
        s.role(A),
        Some(Role::Backup),
        "higher node does not preempt"
    );
    assert_eq!(s.role(B), Some(Role::Master));
}

#[test]
fn preempt_delay_is_honoured() {
    let mut a = settings("proxy1", 11, 150);
    a.preempt_delay = Duration::from_secs(2);
    let mut s = Sim::new(a, settings("proxy2", 12, 100));
    s.start(B);
    s.run_for(ms(1000));
    s.start(A);
    let t0 = s.now;
    s.run_for(ms(1900));
    assert_eq!(s.role(A), Some(Role::Backup), "still waiting at 1.9 s");
    let t = s
        .run_until_true(ms(500), |s| s.role(A) == Some(Role::Master))
        .unwrap();
    assert!(t - t0 >= Duration::from_secs(2) && t - t0 <= ms(2010));
    s.run_for(ms(100));
    assert_eq!(s.role(B), Some(Role::Backup), "old master yielded");
    assert!(
        s.gaps.is_empty(),
        "make-before-break on preempt: {:?}",
        s.gaps
    );
}

#[test]
fn step_down_is_make_before_break_and_does_not_preempt_back() {
    let mut s = settled();
    s.command(A, Command::StepDown);
    assert!(s.nodes[A].holds_vips, "A keeps the VIPs until acked");
    s.run_for(ms(150));
    assert_eq!(s.role(B), Some(Role::Master));
    assert_eq!(s.role(A), Some(Role::Backup));
    let b_claim = *s.nodes[B].claims.last().unwrap();
    let a_release = *s.nodes[A].releases.last().unwrap();
    assert!(
        b_claim < a_release,
        "claim {b_claim:?} before release {a_release:?}"
    );
    assert!(s.gaps.is_empty(), "never a moment with no VIP holder");
    // Both hold the VIPs only for the linger after the ack (100 ms).
    assert!(s.both_held <= ms(103), "overlap {:?}", s.both_held);
    s.run_for(ms(10_000));
    assert_eq!(
        s.role(B),
        Some(Role::Master),
        "no preempt back after step-down"
    );
}

#[test]
fn shutdown_hands_over_then_reports_done() {
    let mut s = settled();
    s.command(A, Command::Shutdown);
    assert!(!s.nodes[A].done);
    s.run_for(ms(50));
    assert!(!s.nodes[A].done, "lingers 100 ms holding the VIPs");
    assert!(s.nodes[A].holds_vips);
    s.run_for(ms(100));
    assert!(s.nodes[A].done);
    assert!(!s.nodes[A].holds_vips);
    assert!(s.nodes[B].holds_vips);
    assert!(s.gaps.is_empty());
}

#[test]
fn shutdown_without_peer_releases_at_once() {
    let mut s = pair();
    s.start(A);
    s.run_for(ms(1000));
    s.command(A, Command::Shutdown);
    assert!(s.nodes[A].done);
    assert!(!s.nodes[A].holds_vips);
}

#[test]
fn shutdown_when_peer_never_acks_releases_after_deadline() {
    let mut s = settled();
    s.link[B] = false; // B hears A but A never hears B's ack
    s.command(A, Command::Shutdown);
    s.run_for(ms(200));
    assert!(!s.nodes[A].done);
    s.run_for(ms(1000));
    assert!(s.nodes[A].done, "gave up after the deadline");
    assert!(!s.nodes[A].holds_vips);
}

#[test]
fn step_down_without_live_peer_is_refused() {
    let mut s = pair();
    s.start(A);
    s.run_for(ms(1000));
    s.command(A, Command::StepDown);
    assert_eq!(s.role(A), Some(Role::Master));
    assert!(s.nodes[A]
        .warnings
        .iter()
        .any(|w| w.contains("no live peer")));
}

#[test]
fn dual_master_after_partition_heals_at_once() {
    let mut s = settled();
    s.link = [false, false];
    s.run_for(ms(1000));
    assert_eq!(s.masters(), 2, "split brain without a witness");
    s.link = [true, true];
    let t0 = s.now;
    let t = s
        .run_until_true(ms(500), |s| s.masters() == 1)
        .expect("resolves");
    assert!(t - t0 <= ms(101), "resolved in {:?}", t - t0);
    assert_eq!(s.role(A), Some(Role::Master));
    s.run_for(ms(200));
    let last_ann = *s.nodes[A].announces.last().unwrap();
    assert!(last_ann >= t0, "winner re-announces");
}

#[test]
fn witness_guards_split_brain() {
    let mut a = settings("proxy1", 11, 150);
    a.witness = true;
    let mut b = settings("proxy2", 12, 100);
    b.witness = true;
    let mut s = Sim::new(a, b);
    s.start(A);
    s.start(B);
    s.run_for(ms(1000));
    // Cut the link between the proxies; only B reaches the witness.
    s.nodes[A].witness_ok = false;
    s.link = [false, false];
    s.run_for(ms(2000));
    assert_eq!(s.role(B), Some(Role::Master));
    assert!(s.nodes[B].holds_vips);
    assert!(!s.nodes[A].holds_vips, "A released: alone and no witness");
    assert_eq!(s.nodes[A].roles.last().unwrap().2, Reason::WitnessLost);
}

#[test]
fn witness_unreachable_backup_does_not_claim() {
    let mut a = settings("proxy1", 11, 150);
    a.witness = true;
    let mut b = settings("proxy2", 12, 100);
    b.witness = true;
    let mut s = Sim::new(a, b);
    s.start(A);
    s.start(B);
    s.run_for(ms(1000));
    s.nodes[B].witness_ok = false;
    s.link = [false, false];
    s.run_for(ms(3000));
    assert!(s.nodes[B].claims.is_empty());
    assert!(s.nodes[A].holds_vips, "A keeps them: its witness answers");
}

#[test]
fn failing_check_weight_hands_master_to_healthy_peer() {
    let mut s = settled();
    s.command(A, Command::SetWeight(-100));
    assert_eq!(s.machine(A).priority(), 50);
    s.run_for(ms(10));
    assert_eq!(s.role(B), Some(Role::Master));
    assert_eq!(s.role(A), Some(Role::Backup));
    assert!(s.gaps.is_empty());
    // Recovered: A preempts back.
    s.command(A, Command::SetWeight(0));
    s.run_for(ms(10));
    assert_eq!(s.role(A), Some(Role::Master));
}

#[test]
fn a_few_lost_adverts_do_not_flap() {
    let mut s = settled();
    s.loss_every = 7; // ~14% loss, never 3 in a row
    s.run_for(Duration::from_secs(60));
    assert_eq!(s.nodes[A].claims.len(), 1);
    assert!(s.nodes[B].claims.is_empty(), "no false failover");
}

#[test]
fn vip_set_mismatch_is_warned_once() {
    let mut b = settings("proxy2", 12, 100);
    b.vip_digest = [0xcd; 8];
    let mut s = Sim::new(settings("proxy1", 11, 150), b);
    s.start(A);
    s.start(B);
    s.run_for(ms(2000));
    let w: Vec<_> = s.nodes[A]
        .warnings
        .iter()
        .filter(|w| w.contains("different VIP set"))
        .collect();
    assert_eq!(w.len(), 1, "{w:?}");
}

#[test]
fn restarted_master_rejoins_without_gap() {
    let mut s = settled();
    s.crash(A);
    s.run_for(ms(1000));
    assert_eq!(s.role(B), Some(Role::Master));
    let gaps_before = s.gaps.len();
    s.start(A);
    s.run_for(ms(100));
    assert_eq!(s.role(A), Some(Role::Master), "preempts back");
    assert_eq!(s.role(B), Some(Role::Backup));
    assert_eq!(s.gaps.len(), gaps_before, "no new gap when preempting back");
}

#[test]
fn tie_goes_to_higher_address() {
    let mut s = Sim::new(settings("p1", 11, 100), settings("p2", 12, 100));
    s.start(A);
    s.start(B);
    s.run_for(ms(500));
    assert_eq!(s.role(B), Some(Role::Master));
    assert_eq!(s.role(A), Some(Role::Backup));
}

#[test]
fn reload_with_same_priority_changes_nothing() {
    let mut s = settled();
    let mut cfg = s.machine(A).settings().clone();
    cfg.garp_refresh = Duration::from_secs(10);
    let now = s.now;
    s.nodes[A].m.as_mut().unwrap().reconfigure(now, cfg);
    s.run_for(ms(2000));
    assert_eq!(s.nodes[A].roles.len(), 1, "no role change on reload");
    assert_eq!(s.role(A), Some(Role::Master));
}

#[test]
fn reload_that_lowers_priority_hands_over() {
    let mut s = settled();
    let mut cfg = s.machine(A).settings().clone();
    cfg.priority = 50;
    let now = s.now;
    s.nodes[A].m.as_mut().unwrap().reconfigure(now, cfg);
    s.run_for(ms(20));
    assert_eq!(s.role(B), Some(Role::Master));
    assert!(s.gaps.is_empty());
}
