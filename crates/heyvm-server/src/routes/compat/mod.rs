//! The heyvm product's cloud dialect, as its Rust client `heyo-sdk` 0.1.15
//! speaks it (`Sandbox`, `Commands`, `Files` and `Daemon` in local-daemon
//! mode). Thin adapters over [`heyvm_core::SandboxManager`]: no lifecycle
//! logic lives here, only request and response mapping.
//!
//! Identity: the cloud calls its sandboxes "deployed" (`dep-…` ids); this
//! daemon has only local sandboxes, and the SDK treats ids as opaque
//! strings, so every local sandbox is listed as a deployed one under its own
//! `sb-…` id (`is_deployed: false`, as the product's local daemon reports).
//! Every `:id` also accepts the slug or the name, as on the native routes.
//! `GET /deployed-sandboxes` lists stopped and failed sandboxes too; the
//! SDK's `Sandbox::get` contract is that a stopped sandbox still resolves.

mod actions;
mod convert;
mod deploy;
mod files;
mod host;
mod proxy;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

use crate::error::AppError;
use crate::AppState;

/// SDK calls with no local equivalent: a clear 501 rather than "no such route".
async fn not_here() -> AppError {
    AppError::new(StatusCode::NOT_IMPLEMENTED, "unsupported", "replace-mount and TCP tunnels are not available on this daemon")
}

/// The compatibility routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sandbox-deploy", post(deploy::deploy))
        .route("/deployed-sandboxes", get(deploy::list))
        .route("/deployed-sandboxes/{id}", get(deploy::get).delete(deploy::delete))
        .route("/deployed-sandboxes/{id}/restart", post(deploy::restart))
        .route("/deployed-sandboxes/{id}/ttl", post(deploy::ttl))
        .route("/deployed-sandboxes/{id}/resize", post(deploy::resize))
        .route("/sandbox/{id}/exec", post(actions::exec))
        .route("/sandbox/{id}/start", post(actions::start))
        .route("/sandbox/{id}/stop", post(actions::stop))
        .route("/sandbox/{id}/read-file", post(files::read_file))
        .route("/sandbox/{id}/write-file", post(files::write_file))
        .route("/sandboxes/inactive", get(host::inactive))
        .route("/system/usage", get(host::system_usage))
        .route("/proxy-endpoints/for-deployed", post(proxy::bind_port))
        .route("/public-images", get(host::public_images))
        // The compat checkpoint/restore act on the latest checkpoint.
        .route("/deployed-sandboxes/{id}/checkpoint", post(super::checkpoints::create))
        .route("/deployed-sandboxes/{id}/restore", post(super::checkpoints::restore))
        .route("/deployed-sandboxes/{id}/replace-mount", post(not_here))
        .route("/sandboxes/{id}/tcp-tunnel", post(not_here))
}
