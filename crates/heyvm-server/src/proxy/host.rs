//! Host-header routing on the API listener (with `API_HOSTNAME`): each new
//! connection's first request head is read; `Host: <subdomain>.<API_HOSTNAME>`
//! sends the whole connection to that endpoint, anything else goes to the
//! API router with the head replayed.
//!
//! Routing is per connection: later requests on a kept-alive connection go
//! where the first one went (private endpoints force `Connection: close`,
//! so each of their requests is checked).

use std::sync::Arc;

use axum::Router;
use heyvm_core::manager::is_subdomain;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::head::{read_head, respond_error};
use super::splice::{serve_endpoint, Prefixed};
use super::ProxyHub;
use crate::guard::accept::{accept_loop, serve_http};
use crate::guard::{GuardConfig, Peer};

/// Accepts on the API listener under the connection cap and routes each
/// connection by its first request's `Host`.
pub async fn accept_routed(listener: TcpListener, permits: Arc<Semaphore>, hub: Arc<ProxyHub>, app: Router, guard: Arc<GuardConfig>) {
    accept_loop(listener, permits, |stream, peer, permit| {
        let (hub, app, guard) = (hub.clone(), app.clone(), guard.clone());
        tokio::spawn(async move {
            classify(hub, stream, peer, app, guard).await;
            drop(permit);
        });
    })
    .await
}

/// `abc123.example.com` with suffix `example.com` → `abc123`.
fn subdomain_of<'a>(host: &'a str, suffix: &str) -> Option<&'a str> {
    let sub = host.strip_suffix(suffix)?.strip_suffix('.')?;
    is_subdomain(sub).then_some(sub)
}

async fn classify(hub: Arc<ProxyHub>, mut stream: TcpStream, peer: Peer, app: Router, guard: Arc<GuardConfig>) {
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
    serve_http(Prefixed::new(head.buf, stream), peer, app, guard).await;
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
