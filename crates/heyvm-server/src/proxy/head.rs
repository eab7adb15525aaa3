//! Just enough HTTP/1 to route and authorise a proxied connection: read the
//! first request's head, look at two headers, and write small error
//! responses. Everything after the head is passed through untouched.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head accepted before giving up on parsing it.
pub const MAX_HEAD: usize = 64 * 1024;
/// How long a client may take to send its request head.
pub const HEAD_TIMEOUT: Duration = crate::guard::DEFAULT_HEADER_TIMEOUT;

/// The bytes read so far; `head_len` is set when a full head (up to and
/// including the blank line) is among them.
pub struct Head {
    pub buf: Vec<u8>,
    pub head_len: Option<usize>,
}

impl Head {
    /// Header lines (after the request line), as `(name, value)`.
    fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        let head = self.head_len.map(|n| &self.buf[..n]).unwrap_or(&[]);
        std::str::from_utf8(head).unwrap_or("").split("\r\n").skip(1).filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim(), v.trim()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// The Host header without its port, lowercased.
    pub fn host(&self) -> Option<String> {
        let h = self.header("host")?.to_ascii_lowercase();
        if h.starts_with('[') {
            // An IPv6 literal is never one of our subdomains.
            return Some(h);
        }
        let name = match h.rsplit_once(':') {
            Some((n, p)) if p.bytes().all(|b| b.is_ascii_digit()) => n.to_string(),
            _ => h,
        };
        Some(name.trim_end_matches('.').to_string())
    }

    fn is_upgrade(&self) -> bool {
        self.header("connection").is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
    }

    /// The buffered bytes as they should reach a private endpoint: without
    /// the caller's `Authorization` (the sandbox must not learn the API
    /// token) and, unless this is a WebSocket/upgrade, with
    /// `Connection: close`, so every request arrives on a fresh, re-checked
    /// connection.
    pub fn private_bytes(&self) -> Vec<u8> {
        let Some(n) = self.head_len else { return self.buf.clone() };
        let text = String::from_utf8_lossy(&self.buf[..n]);
        let upgrade = self.is_upgrade();
        let mut out = String::with_capacity(n + 32);
        for (i, line) in text.split("\r\n").enumerate() {
            if line.is_empty() {
                continue;
            }
            let name = line.split_once(':').map(|(k, _)| k.trim()).unwrap_or("");
            if i > 0 && (name.eq_ignore_ascii_case("authorization") || (!upgrade && name.eq_ignore_ascii_case("connection"))) {
                continue;
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
        if !upgrade {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.buf[n..]);
        bytes
    }
}

/// Reads until the end of the first request head, end of stream, the size
/// limit or the timeout; whatever arrived is kept either way.
pub async fn read_head(r: &mut (impl AsyncRead + Unpin)) -> Head {
    let mut head = Head { buf: Vec::with_capacity(1024), head_len: None };
    let _ = tokio::time::timeout(HEAD_TIMEOUT, async {
        let mut chunk = [0u8; 4096];
        while head.buf.len() < MAX_HEAD {
            let n = match r.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let scan_from = head.buf.len().saturating_sub(3);
            head.buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = head.buf[scan_from..].windows(4).position(|w| w == b"\r\n\r\n") {
                head.head_len = Some(scan_from + i + 4);
                return;
            }
        }
    })
    .await;
    head
}

/// Writes a complete JSON error response and closes our side.
pub async fn respond_error(w: &mut (impl AsyncWrite + Unpin), status: u16, code: &str, message: &str) {
    let reason = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        502 => "Bad Gateway",
        _ => "Error",
    };
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let extra = if status == 401 { "WWW-Authenticate: Bearer\r\n" } else { "" };
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = w.write_all(resp.as_bytes()).await;
    let _ = w.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn head_of(raw: &[u8]) -> Head {
        let mut r = raw;
        read_head(&mut r).await
    }

    #[tokio::test]
    async fn parses_host_and_headers() {
        let h = head_of(b"GET / HTTP/1.1\r\nHost: Abc123.Test.Local:8080\r\nAuthorization: Bearer x\r\n\r\nbody").await;
        assert_eq!(h.host().as_deref(), Some("abc123.test.local"));
        assert_eq!(h.header("AUTHORIZATION"), Some("Bearer x"));
        assert_eq!(h.head_len, Some(h.buf.len() - 4));
        assert_eq!(head_of(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n").await.host().as_deref(), Some("[::1]:80"));
        assert!(head_of(b"GET / HTTP/1.1\r\nHost: x").await.head_len.is_none());
    }

    #[tokio::test]
    async fn private_bytes_strip_token_and_close() {
        let h = head_of(b"POST /a HTTP/1.1\r\nHost: h\r\nauthorization: Bearer t\r\nConnection: keep-alive\r\n\r\nxyz").await;
        let out = String::from_utf8(h.private_bytes()).unwrap();
        assert_eq!(out, "POST /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nxyz");
        let ws =
            head_of(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nAuthorization: Bearer t\r\n\r\n").await;
        let out = String::from_utf8(ws.private_bytes()).unwrap();
        assert_eq!(out, "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    }
}
