//! A small, bounded HTTP/1.1 server side: one request per connection, then close.
//!
//! The admin port serves a page, two documents and a handful of POSTs whose arguments are in
//! the query string. That needs no keep-alive, no chunked bodies and no HTTP/2, so the server
//! reads one request head (at most [`MAX_HEAD`] bytes, parsed by `httparse`), discards a small
//! body if one is sent, answers with `Content-Length` and `Connection: close`, and closes.
//! Every read and write runs under a deadline, so a slow client holds its connection slot for
//! a bounded time only.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest request body accepted (and discarded: arguments go in the query string).
pub const MAX_BODY: usize = 4 * 1024;
/// Most headers in one request.
const MAX_HEADERS: usize = 32;

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// Query parameters, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

impl Request {
    /// The first value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A response; always sent with `Connection: close`.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra headers, e.g. `WWW-Authenticate`.
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Response {
        let mut b = body.into();
        if !b.ends_with('\n') {
            b.push('\n');
        }
        Response::new(status, "text/plain; charset=utf-8", b)
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The bytes on the wire. `head_only` drops the body (HEAD) but keeps its length.
    pub fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (k, v) in &self.headers {
            // Values are ours, never client text; still, no header injection.
            let v: String = v.chars().filter(|c| !c.is_control()).collect();
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Why no request could be read. Each maps to the answer sent before closing, if any.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("client closed the connection")]
    Closed,
    #[error("timed out reading the request")]
    Timeout,
    #[error("request head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("request body larger than {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("bad request: {0}")]
    Bad(String),
    #[error("read: {0}")]
    Io(String),
}

impl ReadError {
    /// The response to send, when the client can still be told.
    pub fn response(&self) -> Option<Response> {
        let status = match self {
            ReadError::Closed | ReadError::Io(_) => return None,
            ReadError::Timeout => 408,
            ReadError::HeadTooLarge => 431,
            ReadError::BodyTooLarge => 413,
            ReadError::Bad(_) => 400,
        };
        Some(Response::text(status, self.to_string()))
    }
}

/// Parse a complete request head. `Ok(None)` means more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<(usize, Request, usize)>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ReadError::Bad(format!("more than {MAX_HEADERS} headers")))
        }
        Err(e) => return Err(ReadError::Bad(e.to_string())),
    };
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    let mut authorization = None;
    let mut body_len = 0usize;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(String::from_utf8_lossy(h.value).trim().to_string());
        } else if h.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| ReadError::Bad("bad Content-Length".into()))?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ReadError::Bad(
                "chunked bodies are not accepted: arguments go in the query string".into(),
            ));
        }
    }
    if body_len > MAX_BODY {
        return Err(ReadError::BodyTooLarge);
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    };
    let path = percent_decode(path).ok_or_else(|| ReadError::Bad("bad path encoding".into()))?;
    let query = parse_query(query).ok_or_else(|| ReadError::Bad("bad query encoding".into()))?;
    Ok(Some((
        head_len,
        Request {
            method,
            path,
            query,
            authorization,
        },
        body_len,
    )))
}

/// Read one request from `s`; the whole read must finish within `timeout`.
pub async fn read_request(s: &mut TcpStream, timeout: Duration) -> Result<Request, ReadError> {
    match tokio::time::timeout(timeout, read_inner(s)).await {
        Ok(r) => r,
        Err(_) => Err(ReadError::Timeout),
    }
}

async fn read_inner(s: &mut TcpStream) -> Result<Request, ReadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| ReadError::Io(e.to_string()))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                ReadError::Closed
            } else {
                ReadError::Bad("connection closed inside the request head".into())
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((head_len, req, body_len)) = parse_head(&buf)? {
            // Discard the (small) body so the client does not see a reset.
            let mut have = buf.len() - head_len;
            while have < body_len {
                let n = s
                    .read(&mut chunk)
                    .await
                    .map_err(|e| ReadError::Io(e.to_string()))?;
                if n == 0 {
                    break;
                }
                have += n;
            }
            return Ok(req);
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::HeadTooLarge);
        }
    }
}

/// Write `resp` and close, within `timeout`.
pub async fn write_response(
    s: &mut TcpStream,
    resp: &Response,
    head_only: bool,
    timeout: Duration,
) {
    let bytes = resp.encode(head_only);
    let _ = tokio::time::timeout(timeout, async {
        s.write_all(&bytes).await?;
        s.shutdown().await
    })
    .await;
}

/// `a=1&b=x%20y` → pairs; `+` is a space, as HTML forms send it.
pub fn parse_query(q: &str) -> Option<Vec<(String, String)>> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((
                percent_decode(&k.replace('+', " "))?,
                percent_decode(&v.replace('+', " "))?,
            ))
        })
        .collect()
}

/// Decode `%XX` escapes; `None` on a broken escape or invalid UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Encode a query value: everything but unreserved characters is escaped.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_control_request() {
        let raw = b"POST /control/drain?server=impala%201&listener=hs2 HTTP/1.1\r\nHost: x\r\n\
                    Authorization: Bearer abc \r\nContent-Length: 0\r\n\r\n";
        let (n, r, body) = parse_head(raw).unwrap().unwrap();
        assert_eq!(n, raw.len());
        assert_eq!(body, 0);
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/control/drain");
        assert_eq!(r.param("server"), Some("impala 1"));
        assert_eq!(r.param("listener"), Some("hs2"));
        assert_eq!(r.authorization.as_deref(), Some("Bearer abc"));
    }

    #[test]
    fn partial_head_needs_more() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap(), None);
    }

    #[test]
    fn refuses_big_bodies_chunked_and_garbage() {
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(
            parse_head(big.as_bytes()).unwrap_err(),
            ReadError::BodyTooLarge
        );
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse_head(chunked), Err(ReadError::Bad(_))));
        assert!(matches!(
            parse_head(b"\x00\x01 nonsense\r\n\r\n"),
            Err(ReadError::Bad(_))
        ));
        let cl = b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n";
        assert!(matches!(parse_head(cl), Err(ReadError::Bad(_))));
    }

    #[test]
    fn percent_coding_round_trips() {
        for s in ["impala1", "a b&c=d", "ü/%"] {
            assert_eq!(percent_decode(&percent_encode(s)).as_deref(), Some(s));
        }
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None, "invalid UTF-8");
    }

    #[test]
    fn response_has_length_and_close() {
        let r = Response::text(401, "no").with_header("WWW-Authenticate", "Bearer\r\nX: y");
        let s = String::from_utf8(r.encode(false)).unwrap();
        assert!(s.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{s}");
        assert!(s.contains("Content-Length: 3\r\n"), "{s}");
        assert!(s.contains("Connection: close\r\n"), "{s}");
        assert!(s.contains("WWW-Authenticate: BearerX: y\r\n"), "{s}");
        assert!(s.ends_with("\r\n\r\nno\n"), "{s}");
        let h = String::from_utf8(r.encode(true)).unwrap();
        assert!(h.ends_with("\r\n\r\n"), "{h}");
    }
}
