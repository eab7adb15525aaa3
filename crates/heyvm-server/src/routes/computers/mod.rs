//! Agent computers (seed 000), for the `heyvm` provider:
//! `PUT/GET /api/agents/:id/computer`, `POST /api/agents/from-template`,
//! `GET …/computer/bootstrap/stream`, `POST …/computer/exec`,
//! `GET …/computer/status`, and the thread-scope routes in `threads.rs`.
//!
//! Errors are `{error, message}` with the seed's codes: `SANDBOX_NOT_READY`
//! (409, no bootstrapped sandbox), `PROVIDER_UNAVAILABLE` (400, the agent's
//! provider is not heyvm), `SANDBOX_UNREACHABLE` (502), `SANDBOX_AUTH_FAILED`
//! (401, from the auth layer), plus `AGENT_NOT_FOUND` and `INVALID_REQUEST`.

mod bootstrap;
mod config;
mod threads;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::Router;
use heyvm_core::computers::{ComputerConfig, ComputerStore};
use heyvm_core::CoreError;

use crate::error::AppError;
use crate::AppState;

pub use bootstrap::Bootstraps;

/// State of the agent-computer routes.
pub struct Computers {
    pub store: ComputerStore,
    pub bootstraps: Bootstraps,
    /// Idle timeout of computer sandboxes (`HEYVM_COMPUTER_IDLE_SECS`, default 2 h).
    pub idle_secs: u64,
    /// Serialises creating thread sandboxes.
    pub create_lock: tokio::sync::Mutex<()>,
}

impl Computers {
    pub fn open(db: &std::path::Path) -> heyvm_core::Result<Self> {
        let idle_secs = heyvm_core::config::parse(heyvm_core::config::COMPUTER_IDLE_SECS).unwrap_or(7200);
        Ok(Computers { store: ComputerStore::open(db)?, bootstraps: Bootstraps::default(), idle_secs, create_lock: Default::default() })
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/agents/from-template", post(bootstrap::from_template))
        .route("/api/agents/{id}/computer", put(config::put).get(config::get))
        .route("/api/agents/{id}/computer/status", get(config::status))
        .route("/api/agents/{id}/computer/bootstrap/stream", get(bootstrap::stream))
        .route("/api/agents/{id}/computer/exec", post(bootstrap::exec))
        .route("/api/agents/{id}/threads/{thread}/computer/run", post(threads::run))
        .route("/api/agents/{id}/threads/{thread}/computer/read-file", post(threads::read_file))
        .route("/api/agents/{id}/threads/{thread}/computer/write-file", post(threads::write_file))
        .route("/api/agents/{id}/threads/{thread}", delete(threads::end_thread))
}

fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> AppError {
    AppError::new(status, code, message)
}

pub(super) fn not_ready(agent: &str) -> AppError {
    err(
        StatusCode::CONFLICT,
        "SANDBOX_NOT_READY",
        format!(
            "agent '{agent}' has no bootstrapped computer: call POST /api/agents/from-template first (or wait for the running bootstrap)"
        ),
    )
}

/// A sandbox failure as the seed's codes: the daemon's own trouble is
/// `SANDBOX_UNREACHABLE`, bad input stays the caller's.
pub(super) fn sandbox_err(e: CoreError) -> AppError {
    match e.status() {
        s if s >= 500 => err(StatusCode::BAD_GATEWAY, "SANDBOX_UNREACHABLE", e.to_string()),
        400 | 413 => err(StatusCode::BAD_REQUEST, "INVALID_REQUEST", e.to_string()),
        _ => AppError::from(e),
    }
}

/// The agent's config, which must exist and use the heyvm provider.
pub(super) fn heyvm_config(c: &Arc<Computers>, agent: &str) -> Result<ComputerConfig, AppError> {
    let cfg = c
        .store
        .config(agent)
        .map_err(sandbox_err)?
        .ok_or_else(|| err(StatusCode::NOT_FOUND, "AGENT_NOT_FOUND", format!("agent '{agent}' has no computer configuration")))?;
    if cfg.provider != "heyvm" {
        return Err(err(
            StatusCode::BAD_REQUEST,
            "PROVIDER_UNAVAILABLE",
            format!("agent '{agent}' uses the '{}' provider; this server provides 'heyvm' computers only", cfg.provider),
        ));
    }
    Ok(cfg)
}

/// A sandbox name for an agent's or thread's computer: recognisable, valid
/// (`[A-Za-z0-9._-]`, ≤ 63) and unlikely to collide (random suffix).
pub(super) fn sandbox_name(kind: &str, agent: &str) -> String {
    let clean: String = agent.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).take(36).collect();
    format!("{kind}-{}-{}", clean.trim_matches(|c| c == '-' || c == '.'), heyvm_core::ids::random_hex(3))
}
