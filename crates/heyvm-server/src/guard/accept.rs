//! Accepting and serving connections under a cap. A permit is taken before
//! `accept()`, so once the cap is reached new connections stay in the
//! kernel's accept queue (they are neither accepted nor reset) until a
//! served one ends. Request heads have a deadline, so idle connections
//! cannot hold permits for long.

use std::convert::Infallible;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use super::{peer, GuardConfig, Peer};
use crate::error::AppError;

/// The kernel's accept queue length we ask for (capped by
/// `net.core.somaxconn`): where connections beyond the cap wait.
const BACKLOG: i32 = 65535;

/// Deepens the listen backlog of an already listening socket.
pub fn deepen_backlog(listener: &TcpListener) {
    // SAFETY: listen(2) again on a listening socket only updates its backlog.
    unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) };
}

/// Accepts forever, calling `handle` with each connection, who it is from
/// and the permit to hold for as long as it is open.
pub async fn accept_loop<F>(listener: TcpListener, permits: Arc<Semaphore>, handle: F)
where
    F: Fn(TcpStream, Peer, OwnedSemaphorePermit),
{
    loop {
        let permit = permits.clone().acquire_owned().await.expect("the connection semaphore is never closed");
        let (stream, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else { continue };
        let uid = if remote.ip().to_canonical().is_loopback() {
            peer::uid_of(remote, local).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot identify a loopback caller");
                None
            })
        } else {
            None
        };
        handle(stream, Peer { remote, local, uid }, permit);
    }
}

/// Serves HTTP/1 (with upgrades, for WebSockets) on one connection.
pub async fn serve_http<Io>(io: Io, peer: Peer, app: Router, cfg: Arc<GuardConfig>)
where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = cfg.header_timeout;
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let (app, peer, cfg) = (app.clone(), peer.clone(), cfg.clone());
        async move {
            if let Err(why) = cfg.admit(&peer) {
                tracing::debug!(uid = ?peer.uid, "refused a local caller");
                return Ok::<_, Infallible>(AppError::new(StatusCode::FORBIDDEN, "forbidden_user", why).into_response());
            }
            req.extensions_mut().insert(peer);
            app.oneshot(req).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
    if let Err(e) = builder.serve_connection(TokioIo::new(io), svc).with_upgrades().await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
