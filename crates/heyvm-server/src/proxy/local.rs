//! Local mode: each endpoint's own loopback TCP port. Public endpoints are
//! spliced as raw TCP (any protocol works); private ones read the HTTP head
//! first to check the token.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::{splice, ProxyHub};

pub async fn accept_loop(hub: Arc<ProxyHub>, subdomain: String, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, subdomain, "proxy accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(ep) = hub.lookup(&subdomain) else { return };
        let _ = stream.set_nodelay(true);
        let hub = hub.clone();
        tokio::spawn(async move { splice::serve_endpoint(&hub, &ep, stream, None).await });
    }
}
