//! Proxy endpoints (`/sandboxes/:id/proxy`) and readiness waits
//! (`/sandboxes/:id/wait-for`).

use serde::{Deserialize, Serialize};

fn yes() -> bool {
    true
}

/// `POST /sandboxes/:id/proxy`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateProxyRequest {
    /// The port inside the sandbox.
    pub port: u16,
    /// `false` requires `Authorization: Bearer <token>` on proxied requests.
    #[serde(default = "yes")]
    pub is_public: bool,
}

/// One proxy endpoint, as created and listed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyEndpoint {
    pub subdomain: String,
    pub hostname: String,
    pub url: String,
    pub port: u16,
    pub is_public: bool,
    pub sandbox_id: String,
    /// The endpoint's loopback port on the server machine (also in
    /// `API_HOSTNAME` mode, where `url` is the Host-header one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_url: Option<String>,
}

/// `DELETE /sandboxes/:id/proxy?subdomain=…`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteProxyQuery {
    pub subdomain: String,
}

/// `POST /sandboxes/:id/wait-for`: wait until `port` accepts connections
/// inside the sandbox (and, with `path`, answers an HTTP GET with 2xx/3xx).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitForRequest {
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Default 60, at most 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitForResponse {
    pub ready: bool,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub elapsed_ms: u64,
    /// Why the last probe failed (when not ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What `GET /sandboxes/:id/proxy` returns.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyList {
    pub proxies: Vec<ProxyEndpoint>,
}
