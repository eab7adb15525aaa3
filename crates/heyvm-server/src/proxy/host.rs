//! Host-header routing on the API listener (with `API_HOSTNAME`): each new
//! connection's first request head is read; `Host: <subdomain>.<API_HOSTNAME>`
//! sends the whole connection to that endpoint, anything else goes to the
//! API router with the head replayed.
//!
//! Routing is per connection: later requests on a kept-alive connection go
//! where the first one went (private endpoints force `Connection: close`,
//! so each of their requests is checked).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use heyvm_core::manager::is_subdomain;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::head::{read_head, respond_error};
use super::splice::{serve_endpoint, Prefixed};
use super::ProxyHub;

pub struct RoutingListener {
    rx: mpsc::Receiver<(Prefixed<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl RoutingListener {
    /// Takes over `listener`; needs a tokio runtime.
    pub fn new(listener: TcpListener, hub: Arc<ProxyHub>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, addr) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(classify(hub.clone(), stream, addr, tx.clone()));
            }
        });
        Ok(RoutingListener { rx, local })
    }
}

/// `abc123.example.com` with suffix `example.com` → `abc123`.
fn subdomain_of<'a>(host: &'a str, suffix: &str) -> Option<&'a str> {
    let sub = host.strip_suffix(suffix)?.strip_suffix('.')?;
    is_subdomain(sub).then_some(sub)
}

async fn classify(hub: Arc<ProxyHub>, mut stream: TcpStream, addr: SocketAddr, api: mpsc::Sender<(Prefixed<TcpStream>, SocketAddr)>) {
    let head = read_head(&mut stream).await;
    let suffix = hub.api_hostname().unwrap_or_default();
    let host = head.host();
    if let Some(sub) = host.as_deref().and_then(|h| subdomain_of(h, suffix)) {
        match hub.lookup(sub) {
            Some(ep) => serve_endpoint(&hub, &ep, stream, Some(head)).await,
            None => respond_error(&mut stream, 404, "endpoint_not_found", &format!("no proxy endpoint '{sub}'")).await,
        }
        return;
    }
    let _ = api.send((Prefixed::new(head.buf, stream), addr)).await;
}

impl axum::serve::Listener for RoutingListener {
    type Io = Prefixed<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task never ends while the process runs.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::subdomain_of;

    #[test]
    fn matches_only_our_subdomains() {
        assert_eq!(subdomain_of("abc123.test.local", "test.local"), Some("abc123"));
        assert_eq!(subdomain_of("test.local", "test.local"), None);
        assert_eq!(subdomain_of("x.abc123.test.local", "test.local"), None);
        assert_eq!(subdomain_of("abc123.eviltest.local", "test.local"), None);
        assert_eq!(subdomain_of("abc123.test.local.other", "test.local"), None);
    }
}
