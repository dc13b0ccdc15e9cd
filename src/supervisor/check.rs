//! Small probes for service checks: HTTP GET (status code and a bounded body), TCP connect,
//! and exec (exit code). Each is bounded by its timeout. (`src/health/` will have the shared
//! versions; these stay small on purpose.)

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::config::{HttpUrl, Probe};

/// Longest response read from a check URL.
const MAX_BODY: u64 = 64 * 1024;

/// The outcome of one check: passed or not, and a short human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    pub detail: String,
}

pub async fn run(probe: &Probe, timeout: Duration) -> Outcome {
    let r = match probe {
        Probe::Http(url) => http_get(url, timeout).await.map(|(code, _)| {
            // haproxy's rule: 2xx and 3xx pass.
            ((200..400).contains(&code), format!("HTTP {code}"))
        }),
        Probe::Tcp(addr) => tcp_connect(addr, timeout)
            .await
            .map(|()| (true, "connected".into())),
        Probe::Exec(cmd) => exec(cmd, timeout).await.map(|code| match code {
            Some(0) => (true, "exit 0".to_string()),
            Some(c) => (false, format!("exit {c}")),
            None => (false, "killed by a signal".to_string()),
        }),
    };
    match r {
        Ok((ok, detail)) => Outcome { ok, detail },
        Err(e) => Outcome {
            ok: false,
            detail: e,
        },
    }
}

/// `GET url` with `Connection: close`; the status code and up to 64 KiB of body.
pub async fn http_get(url: &HttpUrl, timeout: Duration) -> Result<(u16, String), String> {
    let fut = async {
        let mut s = TcpStream::connect(&url.authority)
            .await
            .map_err(|e| format!("connect {}: {e}", url.authority))?;
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hapair\r\nConnection: close\r\n\r\n",
            url.path, url.authority
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = Vec::new();
        s.take(MAX_BODY)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<_, String>(buf)
    };
    let buf = tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("timed out after {timeout:?}"))??;
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or("");
    let mut parts = status.split(' ');
    let (Some(v), Some(code)) = (parts.next(), parts.next()) else {
        return Err("bad HTTP response".into());
    };
    if !v.starts_with("HTTP/1.") {
        return Err("bad HTTP response".into());
    }
    let code = code.parse().map_err(|_| format!("bad status `{code}`"))?;
    Ok((code, body.to_string()))
}

pub async fn tcp_connect(addr: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("connect {addr}: {e}")),
        Err(_) => Err(format!("connect {addr}: timed out after {timeout:?}")),
    }
}

/// Run `cmd` with no input or output; its exit code (`None`: killed by a signal). A
/// command still running at the timeout is killed with its process group.
pub async fn exec(cmd: &[String], timeout: Duration) -> Result<Option<i32>, String> {
    let Some((prog, args)) = cmd.split_first() else {
        return Err("empty command".into());
    };
    let mut child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{prog}: {e}"))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) => Ok(st.code()),
        Ok(Err(e)) => Err(format!("{prog}: {e}")),
        Err(_) => {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            Err(format!("{prog}: timed out after {timeout:?}"))
        }
    }
}

/// The value of an `*active-status` metric in a `/jsonmetrics` answer: the key named by
/// `metric=` in the URL, or else the only key ending in `active-status`.
pub fn active_status(url: &HttpUrl, body: &str) -> Option<bool> {
    let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    let obj = v.as_object()?;
    let named = url
        .path
        .split_once('?')
        .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("metric=")));
    if let Some(m) = named {
        if let Some(b) = obj.get(m).and_then(|v| v.as_bool()) {
            return Some(b);
        }
    }
    let mut found = obj.iter().filter(|(k, _)| k.ends_with("active-status"));
    let (_, v) = found.next()?;
    if found.next().is_some() {
        return None;
    }
    v.as_bool()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> HttpUrl {
        HttpUrl::parse(s).unwrap()
    }

    #[test]
    fn responses() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nOK"),
            Ok((200, "OK".into()))
        );
        assert_eq!(
            parse_response(b"HTTP/1.0 503 Not Available\r\n\r\n")
                .unwrap()
                .0,
            503
        );
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_response(b"").is_err());
    }

    #[test]
    fn active_metric() {
        let u = url("http://h:25020/jsonmetrics?metric=catalog-server.active-status");
        assert_eq!(
            active_status(&u, r#"{"catalog-server.active-status": true}"#),
            Some(true)
        );
        assert_eq!(
            active_status(&u, r#"{"catalog-server.active-status": false}"#),
            Some(false)
        );
        assert_eq!(active_status(&u, r#"{}"#), None);
        assert_eq!(active_status(&u, "<html>"), None);
        let u = url("http://h:25010/jsonmetrics");
        assert_eq!(
            active_status(&u, r#"{"statestore.active-status": true, "x": 1}"#),
            Some(true)
        );
    }

    #[tokio::test]
    async fn probes_against_loopback() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for _ in 0..2 {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b).await;
                let _ = s.write_all(b"HTTP/1.1 503 Not Available\r\n\r\nno").await;
            }
        });
        let t = Duration::from_secs(2);
        let o = run(&Probe::Http(url(&format!("http://{addr}/healthz"))), t).await;
        assert_eq!(
            o,
            Outcome {
                ok: false,
                detail: "HTTP 503".into()
            }
        );
        assert!(run(&Probe::Tcp(addr.to_string()), t).await.ok);
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(!run(&Probe::Tcp(closed.to_string()), t).await.ok);
        let sh = |s: &str| Probe::Exec(vec!["sh".into(), "-c".into(), s.into()]);
        assert!(run(&sh("exit 0"), t).await.ok);
        assert_eq!(run(&sh("exit 3"), t).await.detail, "exit 3");
        let slow = run(&sh("sleep 5"), Duration::from_millis(100)).await;
        assert!(!slow.ok && slow.detail.contains("timed out"), "{slow:?}");
    }
}
