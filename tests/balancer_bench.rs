//! Throughput of the two data paths on loopback: `cargo test --release --test balancer_bench
//! -- --ignored --nocapture`. Ignored by default: it measures, it does not assert.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hapair::balancer::{Balance, Balancer, ListenConfig, Mode, Options, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOTAL: usize = 1 << 30;

async fn sink() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1 << 20];
                let mut n = 0u64;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k as u64,
                    }
                }
                let _ = s.write_all(&n.to_le_bytes()).await;
            });
        }
    });
    addr
}

async fn push(addr: SocketAddr) -> Duration {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.set_nodelay(true).unwrap();
    let buf = vec![0x5au8; 1 << 20];
    let t0 = Instant::now();
    for _ in 0..TOTAL / buf.len() {
        c.write_all(&buf).await.unwrap();
    }
    c.shutdown().await.unwrap();
    let mut n = [0u8; 8];
    c.read_exact(&mut n).await.unwrap();
    assert_eq!(u64::from_le_bytes(n), TOTAL as u64);
    t0.elapsed()
}

fn gbit(d: Duration) -> f64 {
    (TOTAL as f64 * 8.0) / d.as_secs_f64() / 1e9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn splice_vs_copy_one_gib() {
    let backend = sink().await;
    let cfg = ListenConfig {
        name: "bench".into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        balance: Balance::RoundRobin,
        maxconn: 16,
        backlog: 16,
        connect_timeout: Duration::from_secs(1),
        client_timeout: Duration::from_secs(60),
        server_timeout: Duration::from_secs(60),
        retries: 0,
        redispatch: true,
        check: None,
        servers: vec![ServerConfig {
            name: "s".into(),
            addr_text: backend.to_string(),
            addr: backend,
            weight: 1,
            backup: false,
        }],
    };
    let splice = Balancer::start_with(vec![cfg.clone()], Options { mode: Mode::Splice })
        .await
        .unwrap();
    let copy = Balancer::start_with(vec![cfg], Options { mode: Mode::Copy })
        .await
        .unwrap();
    let (sa, ca) = (
        splice.local_addr("bench").unwrap(),
        copy.local_addr("bench").unwrap(),
    );
    let mut all: [Vec<f64>; 3] = Default::default();
    for round in 0..9 {
        for (i, (name, addr)) in [("direct", backend), ("splice", sa), ("copy", ca)]
            .into_iter()
            .enumerate()
        {
            let d = push(addr).await;
            all[i].push(d.as_secs_f64());
            eprintln!(
                "round {round} {name:>6}: 1 GiB in {d:>10.3?} = {:6.2} Gbit/s",
                gbit(d)
            );
        }
    }
    for (i, name) in ["direct", "splice", "copy"].into_iter().enumerate() {
        all[i].sort_by(f64::total_cmp);
        let (best, median) = (all[i][0], all[i][all[i].len() / 2]);
        eprintln!(
            "{name:>6}: best {:6.2} Gbit/s, median {:6.2} Gbit/s",
            gbit(Duration::from_secs_f64(best)),
            gbit(Duration::from_secs_f64(median))
        );
    }
}
