//! Proxy endpoints on the server side: the loopback listener of each
//! endpoint (local mode), Host-header routing on the API listener (with
//! `API_HOSTNAME`), bearer checks for private endpoints, URLs, and the
//! readiness probe behind `wait-for`.
//!
//! Endpoints themselves live in the manager (SQLite); [`ProxyHub::sync`]
//! makes the open listeners match them, on start, after every change and
//! when a sandbox is deleted (the manager's endpoint watch ticks).

mod head;
mod host;
mod local;
mod splice;
mod wait;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use heyvm_core::manager::Endpoint;
use heyvm_core::{Result, SandboxManager};
use heyvm_types::{ProxyEndpoint, UrlInfo};
use tokio::task::AbortHandle;

use crate::auth::AuthConfig;

pub use host::accept_routed;
pub use wait::wait_for;

pub struct ProxyHub {
    pub(crate) mgr: Arc<SandboxManager>,
    pub(crate) auth: Option<Arc<AuthConfig>>,
    /// `API_HOSTNAME`: endpoints are reached as `<subdomain>.<this>`.
    api_hostname: Option<String>,
    api_port: u16,
    open: Mutex<HashMap<String, Open>>,
    /// Sandboxes whose `urls` were set, so emptied ones get cleared.
    with_urls: Mutex<HashSet<String>>,
}

struct Open {
    endpoint: Endpoint,
    listener: Option<AbortHandle>,
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(h) = &self.listener {
            h.abort();
        }
    }
}

impl ProxyHub {
    pub fn new(mgr: Arc<SandboxManager>, auth: Option<Arc<AuthConfig>>, api_hostname: Option<String>, api_port: u16) -> Arc<Self> {
        let api_hostname = api_hostname.map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase()).filter(|h| !h.is_empty());
        Arc::new(ProxyHub { mgr, auth, api_hostname, api_port, open: Mutex::default(), with_urls: Mutex::default() })
    }

    pub fn api_hostname(&self) -> Option<&str> {
        self.api_hostname.as_deref()
    }

    /// Opens listeners for the stored endpoints and follows later changes.
    /// Needs a tokio runtime.
    pub fn start(self: &Arc<Self>) {
        self.sync();
        let hub = self.clone();
        let mut rx = self.mgr.watch_endpoints();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                hub.sync();
            }
        });
    }

    /// Makes the open listeners and the sandboxes' `urls` match the store.
    /// Holds the `open` lock throughout, so concurrent syncs apply in
    /// order and a later one never loses to an earlier snapshot.
    pub fn sync(self: &Arc<Self>) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let all = match self.mgr.all_endpoints() {
            Ok(v) => v,
            Err(e) => return tracing::warn!(error = %e, "cannot load proxy endpoints"),
        };
        let wanted: HashSet<&str> = all.iter().map(|e| e.subdomain.as_str()).collect();
        open.retain(|sub, _| wanted.contains(sub.as_str()));
        let mut urls: BTreeMap<String, Vec<UrlInfo>> = BTreeMap::new();
        for e in &all {
            if !open.contains_key(&e.subdomain) {
                let o = self.open_listener(e.clone());
                open.insert(e.subdomain.clone(), o);
            }
            let info = self.describe(&open[&e.subdomain].endpoint);
            urls.entry(e.sandbox_id.clone()).or_default().push(UrlInfo {
                subdomain: info.subdomain,
                hostname: info.hostname,
                url: info.url,
                port: info.port,
                is_public: info.is_public,
            });
        }
        let mut with_urls = self.with_urls.lock().unwrap_or_else(|e| e.into_inner());
        for gone in with_urls.iter().filter(|id| !urls.contains_key(*id)) {
            // A deleted sandbox must not get an entry back.
            if self.mgr.resolve(gone).is_ok() {
                self.mgr.set_endpoint_urls(gone, Vec::new());
            }
        }
        *with_urls = urls.keys().cloned().collect();
        for (id, list) in urls {
            self.mgr.set_endpoint_urls(&id, list);
        }
    }

    /// Binds the endpoint's loopback port (the one it had before a restart
    /// when still free) and starts accepting on it.
    fn open_listener(self: &Arc<Self>, mut endpoint: Endpoint) -> Open {
        let bound = endpoint
            .local_port
            .and_then(|p| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, p)).ok())
            .map(Ok)
            .unwrap_or_else(|| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .and_then(|l| {
                l.set_nonblocking(true)?;
                let port = l.local_addr()?.port();
                Ok((tokio::net::TcpListener::from_std(l)?, port))
            });
        match bound {
            Ok((listener, port)) => {
                if endpoint.local_port != Some(port) {
                    endpoint.local_port = Some(port);
                    if let Err(e) = self.mgr.save_endpoint(&endpoint) {
                        tracing::warn!(error = %e, subdomain = endpoint.subdomain, "cannot save endpoint port");
                    }
                }
                let task = tokio::spawn(local::accept_loop(self.clone(), endpoint.subdomain.clone(), listener));
                Open { endpoint, listener: Some(task.abort_handle()) }
            }
            Err(e) => {
                tracing::warn!(error = %e, subdomain = endpoint.subdomain, "cannot bind a loopback port for endpoint");
                Open { endpoint, listener: None }
            }
        }
    }

    /// The endpoint serving `subdomain`, if any.
    pub(crate) fn lookup(&self, subdomain: &str) -> Option<Endpoint> {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).get(subdomain).map(|o| o.endpoint.clone())
    }

    /// The wire shape of an endpoint: its Host-header URL with
    /// `API_HOSTNAME`, else its loopback port.
    pub fn describe(&self, e: &Endpoint) -> ProxyEndpoint {
        let (hostname, url) = match &self.api_hostname {
            Some(h) => {
                let host = format!("{}.{h}", e.subdomain);
                let port = if self.api_port == 80 { String::new() } else { format!(":{}", self.api_port) };
                (host.clone(), format!("http://{host}{port}"))
            }
            None => ("localhost".to_string(), format!("http://{}", SocketAddr::from((Ipv4Addr::LOCALHOST, e.local_port.unwrap_or(0))))),
        };
        let local_url = e.local_port.map(|p| format!("http://{}", SocketAddr::from((Ipv4Addr::LOCALHOST, p))));
        ProxyEndpoint {
            subdomain: e.subdomain.clone(),
            hostname,
            url,
            port: e.port,
            is_public: e.is_public,
            sandbox_id: e.sandbox_id.clone(),
            local_url,
        }
    }

    pub fn create(self: &Arc<Self>, key: &str, port: u16, is_public: bool) -> Result<ProxyEndpoint> {
        let e = self.mgr.add_endpoint(key, port, is_public)?;
        self.sync();
        let e = self.lookup(&e.subdomain).unwrap_or(e);
        Ok(self.describe(&e))
    }

    pub fn list(&self, key: &str) -> Result<Vec<ProxyEndpoint>> {
        Ok(self
            .mgr
            .endpoints(key)?
            .iter()
            .map(|e| self.lookup(&e.subdomain).unwrap_or_else(|| e.clone()))
            .map(|e| self.describe(&e))
            .collect())
    }

    pub fn remove(self: &Arc<Self>, key: &str, subdomain: &str) -> Result<ProxyEndpoint> {
        let e = self.lookup(subdomain);
        let removed = self.mgr.remove_endpoint(key, subdomain)?;
        self.sync();
        Ok(self.describe(&e.unwrap_or(removed)))
    }
}
