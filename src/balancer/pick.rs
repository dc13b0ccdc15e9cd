//! The balance algorithms, pure: they see candidates, never sockets or clocks.
//!
//! A caller builds the candidate list from the servers that may take traffic now (see
//! [`eligible`]), then asks one algorithm for an index into that list.

use std::net::IpAddr;

/// A server as the algorithms see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cand {
    /// The server's slot in its pool; keys per-server algorithm state.
    pub slot: usize,
    /// Effective weight, at least 1 (see [`eligible`]).
    pub weight: u32,
    /// Active connections.
    pub active: u64,
    /// A stable hash of the server's name, for `source` (see [`name_key`]).
    pub key: u64,
}

/// What the pool knows about one server when it picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerView {
    pub slot: usize,
    pub weight: u32,
    pub backup: bool,
    /// Healthy and administratively ready.
    pub usable: bool,
    pub active: u64,
    pub key: u64,
}

/// The candidates: usable servers with weight > 0 that are not backups; if there are none,
/// the usable backup and weight-0 servers (weight 0 counts as 1 among them).
pub fn eligible(servers: impl Iterator<Item = ServerView> + Clone, out: &mut Vec<Cand>) {
    out.clear();
    let cand = |s: ServerView| Cand {
        slot: s.slot,
        weight: s.weight.max(1),
        active: s.active,
        key: s.key,
    };
    out.extend(
        servers
            .clone()
            .filter(|s| s.usable && s.weight > 0 && !s.backup)
            .map(cand),
    );
    if out.is_empty() {
        out.extend(servers.filter(|s| s.usable).map(cand));
    }
}

/// Smooth weighted round-robin (nginx): every pick adds each weight to its server's current
/// value, takes the largest, and subtracts the total from it. Over `sum(weights)` picks each
/// server is picked exactly `weight` times, interleaved. `current` is indexed by slot and
/// grows as needed.
pub fn smooth_wrr(cands: &[Cand], current: &mut Vec<i64>) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut total: i64 = 0;
    for (i, c) in cands.iter().enumerate() {
        if current.len() <= c.slot {
            current.resize(c.slot + 1, 0);
        }
        current[c.slot] += i64::from(c.weight);
        total += i64::from(c.weight);
        if best.map_or(true, |b| current[c.slot] > current[cands[b].slot]) {
            best = Some(i);
        }
    }
    let b = best?;
    current[cands[b].slot] -= total;
    Some(b)
}

/// Least connections relative to weight; ties go round-robin, to the first tied slot after
/// `*last` (wrapping). Updates `*last` to the chosen slot.
pub fn leastconn(cands: &[Cand], last: &mut usize) -> Option<usize> {
    // a.active / a.weight < b.active / b.weight, without division.
    let less = |a: &Cand, b: &Cand| {
        u128::from(a.active) * u128::from(b.weight) < u128::from(b.active) * u128::from(a.weight)
    };
    let min = cands.iter().fold(None::<&Cand>, |m, c| match m {
        Some(m) if !less(c, m) => Some(m),
        _ => Some(c),
    })?;
    let tied = cands.iter().enumerate().filter(|(_, c)| !less(min, c));
    let after = tied
        .clone()
        .filter(|(_, c)| c.slot > *last)
        .min_by_key(|(_, c)| c.slot);
    let (i, c) = after.or_else(|| tied.min_by_key(|(_, c)| c.slot))?;
    *last = c.slot;
    Some(i)
}

/// Weighted rendezvous (highest random weight) hashing of the client address: each server
/// scores `-weight / ln(u)` with `u` a uniform hash of (client, server name), and the best
/// score wins. Removing one of N servers moves only the clients that were on it (~1/N);
/// the hash is fixed, so both nodes of the pair agree on the mapping.
pub fn source(cands: &[Cand], client: IpAddr) -> Option<usize> {
    let ck = ip_key(client);
    let score = |c: &Cand| {
        let h = mix(ck ^ c.key.rotate_left(17)).wrapping_add(c.key);
        let h = mix(h);
        // u in (0, 1): 53 random bits, never 0.
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        -f64::from(c.weight) / u.ln()
    };
    cands
        .iter()
        .enumerate()
        .map(|(i, c)| (i, score(c)))
        .fold(None::<(usize, f64)>, |best, (i, s)| match best {
            Some((_, bs)) if bs >= s => best,
            _ => Some((i, s)),
        })
        .map(|(i, _)| i)
}

/// A stable 64-bit key for a server name (FNV-1a, then mixed).
pub fn name_key(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn ip_key(ip: IpAddr) -> u64 {
    let v6 = match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    };
    let n = u128::from(v6);
    mix((n as u64) ^ mix((n >> 64) as u64))
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn cands(weights: &[u32]) -> Vec<Cand> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Cand {
                slot: i,
                weight: w,
                active: 0,
                key: name_key(&format!("s{i}")),
            })
            .collect()
    }

    #[test]
    fn smooth_wrr_honours_weights_within_5_percent_over_10000() {
        let cs = cands(&[1, 2, 5, 3]);
        let mut cur = Vec::new();
        let mut n = [0u32; 4];
        for _ in 0..10_000 {
            n[cands(&[1, 2, 5, 3])[smooth_wrr(&cs, &mut cur).unwrap()].slot] += 1;
        }
        let total: u32 = 11;
        for (i, w) in [1u32, 2, 5, 3].iter().enumerate() {
            let want = 10_000.0 * f64::from(*w) / f64::from(total);
            assert!(
                (f64::from(n[i]) - want).abs() <= want * 0.05,
                "server {i}: {} vs {want}",
                n[i]
            );
        }
    }

    #[test]
    fn smooth_wrr_does_not_burst() {
        // nginx's example: weights 5,1,1 give a a b a c a a, never five a's in a row.
        let cs = cands(&[5, 1, 1]);
        let mut cur = Vec::new();
        let seq: Vec<usize> = (0..7).map(|_| smooth_wrr(&cs, &mut cur).unwrap()).collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn leastconn_picks_least_loaded_and_breaks_ties_round_robin() {
        let mut cs = cands(&[1, 1, 1]);
        cs[0].active = 3;
        cs[1].active = 1;
        cs[2].active = 2;
        let mut last = 0;
        assert_eq!(leastconn(&cs, &mut last), Some(1));
        for c in cs.iter_mut() {
            c.active = 0;
        }
        let mut last = usize::MAX;
        let seq: Vec<usize> = (0..6).map(|_| leastconn(&cs, &mut last).unwrap()).collect();
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 2]);
        // Relative to weight: 4 active on weight 4 beats 2 active on weight 1.
        let mut cs = cands(&[4, 1]);
        cs[0].active = 4;
        cs[1].active = 2;
        assert_eq!(leastconn(&cs, &mut 0), Some(0));
    }

    #[test]
    fn eligible_uses_backups_only_when_nothing_else_is_up() {
        let v = |slot, weight, backup, usable| ServerView {
            slot,
            weight,
            backup,
            usable,
            active: 0,
            key: 0,
        };
        let mut out = Vec::new();
        let all = [
            v(0, 1, false, true),
            v(1, 0, false, true),
            v(2, 1, true, true),
        ];
        eligible(all.iter().copied(), &mut out);
        assert_eq!(out.iter().map(|c| c.slot).collect::<Vec<_>>(), vec![0]);
        let all = [
            v(0, 1, false, false),
            v(1, 0, false, true),
            v(2, 3, true, true),
        ];
        eligible(all.iter().copied(), &mut out);
        assert_eq!(
            out.iter().map(|c| (c.slot, c.weight)).collect::<Vec<_>>(),
            vec![(1, 1), (2, 3)]
        );
        let all = [v(0, 1, false, false), v(2, 3, true, false)];
        eligible(all.iter().copied(), &mut out);
        assert!(out.is_empty());
    }

    fn client(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i * 7919))
    }

    #[test]
    fn source_is_sticky_and_spreads() {
        let cs = cands(&[1, 1, 1, 1]);
        let mut n = [0u32; 4];
        for i in 0..10_000 {
            let a = source(&cs, client(i)).unwrap();
            assert_eq!(source(&cs, client(i)), Some(a));
            n[a] += 1;
        }
        for c in n {
            assert!((2250..=2750).contains(&c), "{n:?}");
        }
    }

    #[test]
    fn source_removing_one_of_n_moves_only_its_clients() {
        let cs = cands(&[1, 1, 1, 1, 1]);
        let fewer: Vec<Cand> = cs.iter().copied().filter(|c| c.slot != 2).collect();
        let mut moved = 0;
        for i in 0..10_000 {
            let before = cs[source(&cs, client(i)).unwrap()].slot;
            let after = fewer[source(&fewer, client(i)).unwrap()].slot;
            if before != 2 {
                assert_eq!(before, after, "a client not on the removed server moved");
            } else {
                moved += 1;
            }
        }
        assert!(
            (1700..=2300).contains(&moved),
            "moved {moved}, expected ~1/5 of 10000"
        );
    }

    #[test]
    fn source_honours_weights() {
        let cs = cands(&[1, 3]);
        let n1 = (0..10_000)
            .filter(|&i| source(&cs, client(i)) == Some(1))
            .count();
        assert!((7200..=7800).contains(&n1), "{n1}");
    }
}
