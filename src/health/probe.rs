//! The probes: one check each, bounded by a timeout. They never panic on what a peer sends.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect: {0}")]
    Connect(String),
    #[error("i/o: {0}")]
    Io(String),
    #[error("bad http response: {0}")]
    BadResponse(String),
    #[error("http status {got}, expected {expected}")]
    Status { got: u16, expected: u16 },
    #[error("command failed: {0}")]
    Exec(String),
}

/// One kind of check, with its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The TCP handshake completes.
    Tcp { addr: SocketAddr },
    /// `GET path` on `host:port` answers with status `expect`. `host` is a name or an address;
    /// a name is resolved at every probe.
    Http {
        host: String,
        port: u16,
        path: String,
        expect: u16,
    },
    /// The command (argv, no shell) exits 0.
    Exec { argv: Vec<String> },
}

impl Probe {
    /// An HTTP probe from a URL such as `http://127.0.0.1:25010/healthz`. Only `http` is
    /// supported; the port defaults to 80 and the path to `/`.
    pub fn from_url(url: &str, expect: u16) -> Result<Probe, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{url:?}: the path must not contain spaces"));
        }
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            // [v6]:port
            let (h, p) = h
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed '['"))?;
            (h, p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("{url:?}: bad port {p:?}"))?,
        };
        Ok(Probe::Http {
            host: host.to_string(),
            port,
            path: path.to_string(),
            expect,
        })
    }

    /// Runs the probe once, bounded by `timeout`.
    pub async fn run(&self, timeout: Duration) -> Result<(), ProbeError> {
        match self {
            Probe::Tcp { addr } => probe_tcp(*addr, timeout).await,
            Probe::Http {
                host,
                port,
                path,
                expect,
            } => probe_http(host, *port, path, *expect, timeout).await,
            Probe::Exec { argv } => probe_exec(argv, timeout).await,
        }
    }
}

/// Succeeds when a TCP connection to `addr` is established within `timeout`.
pub async fn probe_tcp(addr: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => Err(ProbeError::Timeout(timeout)),
        Ok(Err(e)) => Err(ProbeError::Connect(e.to_string())),
        Ok(Ok(s)) => {
            // Close with RST-free FIN; nothing was sent.
            drop(s);
            Ok(())
        }
    }
}

/// Succeeds when `GET path` on `host:port` answers with status `expect` within `timeout`.
pub async fn probe_http(
    host: &str,
    port: u16,
    path: &str,
    expect: u16,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let work = async {
        let stream = if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            TcpStream::connect(SocketAddr::new(ip, port)).await
        } else {
            TcpStream::connect((host, port)).await
        };
        let mut s = stream.map_err(|e| ProbeError::Connect(e.to_string()))?;
        let host_hdr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host_hdr}\r\nUser-Agent: hapair-check\r\nAccept: */*\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| ProbeError::Io(e.to_string()))?;
        // Only the status line matters; read until its end (bounded).
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.windows(2).any(|w| w == b"\r\n") {
            if buf.len() > 4096 {
                return Err(ProbeError::BadResponse(
                    "status line longer than 4 KiB".into(),
                ));
            }
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| ProbeError::Io(e.to_string()))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let got = parse_status(&buf)?;
        if got != expect {
            return Err(ProbeError::Status {
                got,
                expected: expect,
            });
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Err(ProbeError::Timeout(timeout)),
        Ok(r) => r,
    }
}

/// Parses `HTTP/1.x NNN ...` at the start of `buf`.
fn parse_status(buf: &[u8]) -> Result<u16, ProbeError> {
    let line_end = buf
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(buf.len());
    let line = String::from_utf8_lossy(&buf[..line_end]);
    let mut parts = line.split(' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(ProbeError::BadResponse(format!(
            "{:?}",
            line.chars().take(64).collect::<String>()
        )));
    }
    parts
        .next()
        .and_then(|c| (c.len() == 3).then(|| c.parse::<u16>().ok()).flatten())
        .ok_or_else(|| {
            ProbeError::BadResponse(format!("{:?}", line.chars().take(64).collect::<String>()))
        })
}

/// Succeeds when `argv` exits 0 within `timeout`. The child is killed if it runs longer.
pub async fn probe_exec(argv: &[String], timeout: Duration) -> Result<(), ProbeError> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(ProbeError::Exec("empty command".into()));
    };
    let mut child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ProbeError::Exec(format!("{prog}: {e}")))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Err(_) => {
            let _ = child.kill().await;
            Err(ProbeError::Timeout(timeout))
        }
        Ok(Err(e)) => Err(ProbeError::Exec(e.to_string())),
        Ok(Ok(st)) if st.success() => Ok(()),
        Ok(Ok(st)) => Err(ProbeError::Exec(st.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parsing() {
        assert_eq!(
            Probe::from_url("http://127.0.0.1:25010/healthz", 200).unwrap(),
            Probe::Http {
                host: "127.0.0.1".into(),
                port: 25010,
                path: "/healthz".into(),
                expect: 200
            }
        );
        assert_eq!(
            Probe::from_url("http://[::1]:8080", 204).unwrap(),
            Probe::Http {
                host: "::1".into(),
                port: 8080,
                path: "/".into(),
                expect: 204
            }
        );
        assert!(Probe::from_url("https://x/", 200).is_err());
        assert!(Probe::from_url("http://x:99999/", 200).is_err());
    }

    #[test]
    fn status_line_parsing() {
        assert_eq!(
            parse_status(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Ok(503)
        );
        assert_eq!(parse_status(b"HTTP/1.0 200 OK\r\n"), Ok(200));
        assert!(parse_status(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_status(b"HTTP/1.1 2000 OK\r\n").is_err());
        assert!(parse_status(b"").is_err());
    }

    #[tokio::test]
    async fn exec_exit_status() {
        assert_eq!(
            probe_exec(&["true".into()], Duration::from_secs(5)).await,
            Ok(())
        );
        assert!(probe_exec(&["false".into()], Duration::from_secs(5))
            .await
            .is_err());
        assert!(probe_exec(&[], Duration::from_secs(5)).await.is_err());
    }
}
