//! The route table (seed 002 plus heyvm-compatible additions).

mod api_keys;
mod archives;
mod body_file;
pub(crate) mod checkpoints;
mod compat;
pub(crate) mod computers;
mod exec;
mod exec_ws;
mod files;
mod images;
mod images_build;
mod images_files;
mod json_upload;
mod logs;
mod mounts;
mod operations;
mod proxy;
mod sandboxes;
pub(crate) mod shell;
mod stream;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use heyvm_types::{Health, PoolStatus};

use crate::error::AppError;
use crate::AppState;

pub fn router(state: AppState) -> Router {
    // Exec bodies may carry `stdin` (base64: 4/3 of the bytes).
    let exec_limit = heyvm_core::manager::MAX_STDIN_BYTES / 3 * 4 + 64 * 1024;
    Router::new()
        .route("/health", get(|| async { Json(Health { status: "ok".into() }) }))
        .route("/openapi.json", get(crate::openapi::serve))
        .route(
            "/system/pool",
            get(|State(s): State<AppState>| async move {
                Json(PoolStatus {
                    warm: s.mgr.warm_pool_len(),
                    size: s.mgr.config().pool_size,
                    target: s.mgr.pool_target(),
                    max: s.mgr.config().pool_max,
                })
            }),
        )
        .route("/sandboxes", get(sandboxes::list).post(sandboxes::create))
        .route("/api-keys", get(api_keys::list).post(api_keys::create))
        .route("/api-keys/{id}", axum::routing::delete(api_keys::revoke))
        .route("/images", get(images::list))
        .route("/images/pull", post(images::pull))
        .route("/images/tag", post(images::tag))
        .route("/images/prune", post(images::prune))
        .route("/images/login", post(images::login))
        .route("/images/push", post(images_build::push))
        .route("/images/build", post(images_build::build).layer(DefaultBodyLimit::disable()))
        .route("/images/{reference}", get(images::get).delete(images::delete).put(images_files::upload).layer(DefaultBodyLimit::disable()))
        .route("/images/{reference}/archive", get(images_files::archive))
        .route("/archives", post(archives::upload).layer(DefaultBodyLimit::disable()))
        .route("/sandboxes/{id}", get(sandboxes::get).patch(sandboxes::update).delete(sandboxes::delete))
        .route("/sandboxes/{id}/start", post(sandboxes::start))
        .route("/sandboxes/{id}/stop", post(sandboxes::stop))
        .route("/sandboxes/{id}/restart", post(sandboxes::restart))
        .route("/sandboxes/{id}/force-stop", post(sandboxes::force_stop))
        .route("/sandboxes/{id}/execute", post(exec::execute).layer(DefaultBodyLimit::max(exec_limit)))
        .route("/sandboxes/{id}/exec/stream", post(stream::exec_stream).layer(DefaultBodyLimit::max(exec_limit)))
        .route("/sandboxes/{id}/exec/ws", get(exec_ws::exec_ws))
        .route("/sandboxes/{id}/exec-operations", post(operations::create))
        .route("/sandboxes/{id}/exec-operations/{op}", get(operations::get))
        .route("/sandboxes/{id}/logs/stream", get(stream::logs_stream))
        .route("/sandboxes/{id}/files", get(files::list).post(files::upload_multipart).layer(DefaultBodyLimit::disable()))
        .route("/sandboxes/{id}/files/upload", post(files::upload_json))
        .route("/sandboxes/{id}/files/{*path}", get(files::download).delete(files::delete))
        .route("/sandboxes/{id}/logs", get(logs::get))
        .route("/sandboxes/{id}/shell-stream", get(shell::stream))
        .route("/sandboxes/{id}/shell-session", post(shell::create_session))
        // heyo-sdk's `Sandbox::shell` dials the deployed-sandbox path.
        .route("/deployed-sandboxes/{id}/shell-stream", get(shell::stream))
        .route("/sandboxes/{id}/mounts", get(mounts::list).post(mounts::add))
        .route("/sandboxes/{id}/mounts/{*path}", axum::routing::delete(mounts::remove))
        .route("/sandboxes/{id}/proxy", get(proxy::list).post(proxy::create).delete(proxy::delete))
        .route("/sandboxes/{id}/wait-for", post(proxy::wait_for))
        .route("/sandboxes/{id}/checkpoints", get(checkpoints::list).post(checkpoints::create))
        .route("/sandboxes/{id}/checkpoints/{name}", axum::routing::delete(checkpoints::delete))
        .route("/sandboxes/{id}/restore", post(checkpoints::restore))
        .route("/sandboxes/{id}/fork", post(checkpoints::fork))
        .route("/system/backends", get(checkpoints::backends))
        // heyo-sdk's cloud dialect (/sandbox-deploy, /deployed-sandboxes, /sandbox/:id/…).
        .merge(compat::routes())
        .merge(computers::routes())
        // MCP over streamable HTTP: the tools of `heyvm mcp` (see mcp.rs).
        .nest_service("/mcp", crate::mcp::service(state.mgr.clone(), state.proxy.clone(), state.auth.is_some()))
        .fallback(|| async { AppError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            AppError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        })
        // Outermost, so unknown routes are hidden from unauthenticated callers too.
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::require_auth))
        // Without auth: loopback Host names and our own Origin only.
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::guard::origin::check_host_and_origin))
        .with_state(state)
}
