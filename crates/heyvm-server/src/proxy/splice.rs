//! One proxied client connection: authorise (private endpoints), open a
//! stream to the sandbox port through its agent, then copy bytes both ways
//! until both sides are done. WebSockets and streaming responses need
//! nothing special: after the first request head nothing is interpreted.

use std::pin::Pin;
use std::task::{Context, Poll};

use heyvm_core::manager::Endpoint;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::head::{read_head, respond_error, Head};
use super::ProxyHub;

const COPY_BUF: usize = 64 * 1024;

/// `head` is what was already read from the client (None: nothing yet).
pub async fn serve_endpoint<S>(hub: &ProxyHub, ep: &Endpoint, mut client: S, head: Option<Head>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let prefix = if ep.is_public {
        head.map(|h| h.buf).unwrap_or_default()
    } else {
        let head = match head {
            Some(h) => h,
            None => read_head(&mut client).await,
        };
        if head.head_len.is_none() {
            return respond_error(&mut client, 400, "bad_request", "a private endpoint accepts HTTP requests only").await;
        }
        let Some(auth) = hub.auth.as_deref() else {
            let msg = "this endpoint is private but the server has no JWT_SECRET, so no token can be accepted";
            return respond_error(&mut client, 401, "auth_not_configured", msg).await;
        };
        match auth.verify_bearer(head.header("authorization")) {
            Err(e) => return respond_error(&mut client, 401, e.code(), &e.to_string()).await,
            // A scoped token (a shell stream's) opens its own stream only.
            Ok(c) if crate::routes::shell::is_scoped(&c) => {
                let msg = "this token is only valid for one sandbox's shell stream";
                return respond_error(&mut client, 401, "invalid_token", msg).await;
            }
            Ok(_) => {}
        }
        head.private_bytes()
    };
    // Proxy traffic is use: it resumes an idle-stopped sandbox and keeps
    // the sandbox from idling while the connection is open.
    let _ = hub.mgr.prepare_use(&ep.sandbox_id).await;
    let _busy = hub.mgr.busy_guard(&ep.sandbox_id);
    let mut upstream = match hub.mgr.connect_port(&ep.sandbox_id, ep.port).await {
        Ok(s) => s,
        // The sandbox was deleted and the listeners have not caught up
        // yet (they follow the endpoint table asynchronously): its
        // endpoints are gone, as they will be a moment later.
        Err(e) if e.code() == "sandbox_not_found" => {
            let msg = format!("no proxy endpoint '{}': its sandbox was deleted", ep.subdomain);
            return respond_error(&mut client, 404, "endpoint_not_found", &msg).await;
        }
        Err(e) => {
            let msg = format!("cannot reach port {} of sandbox {}: {e}", ep.port, ep.sandbox_id);
            return respond_error(&mut client, 502, e.code(), &msg).await;
        }
    };
    if !prefix.is_empty() && upstream.write_all(&prefix).await.is_err() {
        return;
    }
    // Larger buffers than the 8 KiB default: bulk transfers run several
    // times faster with fewer wakeups per byte.
    let _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, COPY_BUF, COPY_BUF).await;
}

/// A stream that replays bytes already read from it before reading more;
/// lets the API server see a connection whose head was inspected.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed { prefix, pos: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
