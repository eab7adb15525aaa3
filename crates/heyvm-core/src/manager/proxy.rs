//! Proxy endpoints: a port inside a sandbox exposed under a random
//! subdomain. The manager persists endpoints (they survive daemon restarts)
//! and opens byte streams to sandbox ports through the agent, which works
//! whether or not the sandbox has a network of its own. The HTTP layer owns
//! the listeners and decides what the URLs look like.

use heyvm_types::UrlInfo;

use super::SandboxManager;
use crate::agent::MuxStream;
use crate::error::{CoreError, Result};
use crate::record::now_secs;
pub use crate::record::Endpoint;

const SUBDOMAIN_LEN: usize = 6;
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// 6 characters of `[a-z0-9]`, uniformly drawn.
pub fn new_subdomain() -> String {
    let mut out = String::with_capacity(SUBDOMAIN_LEN);
    while out.len() < SUBDOMAIN_LEN {
        let mut buf = [0u8; 16];
        getrandom::getrandom(&mut buf).expect("the OS random source is available");
        // 252 = 7 * 36: rejecting larger bytes keeps the draw uniform.
        out.extend(buf.iter().filter(|&&b| b < 252).map(|&b| ALPHABET[(b % 36) as usize] as char).take(SUBDOMAIN_LEN - out.len()));
    }
    out
}

pub fn is_subdomain(s: &str) -> bool {
    s.len() == SUBDOMAIN_LEN && s.bytes().all(|b| ALPHABET.contains(&b))
}

impl SandboxManager {
    /// Records a new endpoint for `key`'s `port`.
    pub fn add_endpoint(&self, key: &str, port: u16, is_public: bool) -> Result<Endpoint> {
        if port == 0 {
            return Err(CoreError::invalid("port must be between 1 and 65535"));
        }
        let rec = self.store.resolve(key)?;
        let mut last = None;
        for _ in 0..8 {
            let e = Endpoint {
                subdomain: new_subdomain(),
                sandbox_id: rec.id.clone(),
                port,
                is_public,
                local_port: None,
                created_at: now_secs(),
            };
            match self.store.insert_endpoint(&e) {
                Ok(()) => {
                    self.endpoints_changed();
                    return Ok(e);
                }
                Err(CoreError::Conflict(m)) => last = Some(m),
                Err(other) => return Err(other),
            }
        }
        Err(CoreError::Conflict(last.unwrap_or_default()))
    }

    /// Saves a changed endpoint (its local port).
    pub fn save_endpoint(&self, e: &Endpoint) -> Result<()> {
        self.store.update_endpoint(e)
    }

    /// One sandbox's endpoints.
    pub fn endpoints(&self, key: &str) -> Result<Vec<Endpoint>> {
        let rec = self.store.resolve(key)?;
        self.store.endpoints(Some(&rec.id))
    }

    /// Every sandbox's endpoints. Rows left behind by a sandbox whose
    /// deletion was cut short (a crash between the two deletes) are dropped.
    pub fn all_endpoints(&self) -> Result<Vec<Endpoint>> {
        let (live, orphans): (Vec<Endpoint>, Vec<Endpoint>) = self
            .store
            .endpoints(None)?
            .into_iter()
            .partition(|e| !matches!(self.store.resolve(&e.sandbox_id), Err(CoreError::NotFound(_))));
        for e in orphans {
            self.store.delete_endpoint(&e.subdomain)?;
        }
        Ok(live)
    }

    /// Removes one of `key`'s endpoints.
    pub fn remove_endpoint(&self, key: &str, subdomain: &str) -> Result<Endpoint> {
        let rec = self.store.resolve(key)?;
        let found = self.store.endpoints(Some(&rec.id))?.into_iter().find(|e| e.subdomain == subdomain);
        let Some(e) = found else {
            return Err(CoreError::EndpointNotFound(format!("sandbox '{key}' has no proxy endpoint '{subdomain}'")));
        };
        self.store.delete_endpoint(subdomain)?;
        self.endpoints_changed();
        Ok(e)
    }

    /// Drops a deleted sandbox's endpoints.
    pub(crate) fn forget_endpoints(&self, sandbox_id: &str) {
        if let Err(e) = self.store.delete_endpoints_of(sandbox_id) {
            tracing::warn!(sandbox = sandbox_id, error = %e, "could not delete proxy endpoints");
        }
        self.urls.lock().unwrap_or_else(|e| e.into_inner()).remove(sandbox_id);
        self.endpoints_changed();
    }

    /// Ticks whenever an endpoint is added or removed (including by sandbox
    /// deletion), so listeners can be opened and closed to match.
    pub fn watch_endpoints(&self) -> tokio::sync::watch::Receiver<u64> {
        self.endpoint_gen.subscribe()
    }

    fn endpoints_changed(&self) {
        self.endpoint_gen.send_modify(|g| *g += 1);
    }

    /// Sets the `urls` shown in a sandbox's info.
    pub fn set_endpoint_urls(&self, sandbox_id: &str, urls: Vec<UrlInfo>) {
        self.set_urls(sandbox_id, urls);
    }

    /// A byte stream to `127.0.0.1:port` inside a running sandbox.
    pub async fn connect_port(&self, key: &str, port: u16) -> Result<MuxStream> {
        let rec = self.require_running(key, "connect")?;
        match self.agent(&rec).await?.connect_port(port).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(refusal)) => Err(CoreError::PortUnreachable(refusal.0)),
            Err(e) => Err(CoreError::AgentUnreachable(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains_are_six_lowercase_alnum_and_vary() {
        let a: Vec<String> = (0..50).map(|_| new_subdomain()).collect();
        assert!(a.iter().all(|s| is_subdomain(s)), "{a:?}");
        assert!(a.iter().collect::<std::collections::HashSet<_>>().len() > 45);
        assert!(!is_subdomain("ABCDEF") && !is_subdomain("abc") && !is_subdomain("abc-de"));
    }

    #[test]
    fn endpoints_persist_per_sandbox_with_unique_subdomains() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let ep = |sub: &str, sb: &str| Endpoint {
            subdomain: sub.into(),
            sandbox_id: sb.into(),
            port: 80,
            is_public: true,
            local_port: None,
            created_at: 1,
        };
        {
            let s = crate::store::Store::open(&db).unwrap();
            s.insert_endpoint(&ep("aaaaaa", "sb-00000001")).unwrap();
            s.insert_endpoint(&ep("bbbbbb", "sb-00000002")).unwrap();
            assert!(matches!(s.insert_endpoint(&ep("aaaaaa", "sb-00000002")), Err(CoreError::Conflict(_))));
            let mut moved = ep("bbbbbb", "sb-00000002");
            moved.local_port = Some(4242);
            s.update_endpoint(&moved).unwrap();
        }
        let s = crate::store::Store::open(&db).unwrap();
        assert_eq!(s.endpoints(None).unwrap().len(), 2);
        assert_eq!(s.endpoints(Some("sb-00000002")).unwrap()[0].local_port, Some(4242));
        s.delete_endpoints_of("sb-00000001").unwrap();
        assert_eq!(s.endpoints(None).unwrap().iter().map(|e| e.subdomain.as_str()).collect::<Vec<_>>(), ["bbbbbb"]);
        assert!(s.delete_endpoint("bbbbbb").unwrap());
        assert!(!s.delete_endpoint("bbbbbb").unwrap());
    }
}
