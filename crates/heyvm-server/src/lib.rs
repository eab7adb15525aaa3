//! heyvm's HTTP API. Handlers only parse requests and call
//! [`heyvm_core::SandboxManager`]; every error leaves as
//! `{"error": "<stable_code>", "message": "…"}` with a fitting status.

pub mod auth;
mod error;
mod extract;
pub mod guard;
mod mcp;
pub mod openapi;
pub mod proxy;
#[cfg(test)]
mod router_tests;
mod routes;
mod serve;

pub use error::AppError;
pub use routes::router;
pub use serve::{serve, ServeOptions};

use std::sync::Arc;

use heyvm_core::SandboxManager;

/// Shared by all handlers.
#[derive(Clone)]
pub struct AppState {
    pub mgr: Arc<SandboxManager>,
    /// Bearer-token auth (`JWT_SECRET`); None leaves the API open.
    pub auth: Option<Arc<auth::AuthConfig>>,
    /// Proxy endpoint listeners and routing.
    pub proxy: Arc<proxy::ProxyHub>,
    /// API keys (`/api-keys`), also consulted by `auth`.
    pub keys: Arc<heyvm_core::api_keys::ApiKeyStore>,
    /// Agent computers (`/api/agents/…`).
    pub computers: Arc<routes::computers::Computers>,
}
