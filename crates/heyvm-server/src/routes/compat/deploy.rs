//! `POST /sandbox-deploy` and `/deployed-sandboxes…`.
//!
//! Deploy-body mapping: `driver` is the backend (refused with
//! `backend_unavailable` unless this daemon runs it, rather than silently
//! giving weaker isolation than asked for); `size_class`, `image`,
//! `start_command`, `working_directory`, `env_vars`, `setup_hooks`,
//! `open_ports`, `ttl_seconds` (0 = none), `region`, `archive_id` (an
//! archive uploaded with `POST /archives`, unpacked into /workspace),
//! `disk_size_gb` and host-path `mounts` map directly. S3 archive keys and uploaded trees do
//! not exist here and are refused (`unsupported`), since ignoring them would
//! start an empty workspace. Everything else (`cpus`, `memory`,
//! `account_id`, …) is accepted, noted in the sandbox log and echoed in
//! `ignored_fields`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use heyvm_types::compat::{DeployRequest, DeployedSandbox, ResizeRequest, TtlRequest};
use heyvm_types::{CreateSandboxRequest, MountSpec, SandboxStatus, UpdateSandboxRequest};
use serde::Deserialize;

use super::convert::deployed;
use crate::error::{ApiResult, AppError};
use crate::extract::{ApiJson, ApiQuery};
use crate::guard::mounts::Caller;
use crate::AppState;

fn unsupported(what: &str) -> AppError {
    AppError::bad_request("unsupported", format!("{what} is not supported by this daemon"))
}

pub async fn deploy(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<DeployRequest>,
) -> ApiResult<(StatusCode, Json<DeployedSandbox>)> {
    if req.s3_archive_key.is_some() {
        return Err(unsupported("a workspace archive by S3 key (s3_archive_key; upload it with POST /archives and pass archive_id)"));
    }
    let mut mounts = Vec::new();
    for m in req.mounts.unwrap_or_default() {
        match (m.host_path, m.tree_id) {
            (Some(host_path), None) => mounts.push(MountSpec::host(host_path, m.sandbox_path, m.read_only)),
            (None, Some(_)) => return Err(unsupported("a mount from an uploaded tree (tree_id)")),
            _ => return Err(AppError::bad_request("invalid_request", "each mount needs exactly one of host_path or tree_id")),
        }
    }
    caller.authorize(&mounts)?;
    let mut ignored: Vec<String> = req.extra.keys().cloned().collect();
    ignored.sort();
    let create = CreateSandboxRequest {
        name: req.name,
        sandbox_type: req.sandbox_type,
        image: req.image,
        backend_type: req.driver,
        size_class: req.size_class,
        ttl_seconds: req.ttl_seconds.filter(|&t| t > 0),
        start_command: req.start_command,
        working_directory: req.working_directory,
        open_ports: req.open_ports,
        env_vars: req.env_vars,
        setup_hooks: req.setup_hooks,
        mounts: Some(mounts),
        archive_id: req.archive_id,
        region: req.region,
        disk_size_gb: req.disk_size_gb,
        ..Default::default()
    };
    let info = s.mgr.create(create).await?;
    if !ignored.is_empty() {
        if let Ok(rec) = s.mgr.resolve(&info.id) {
            s.mgr.append_log(&rec, "system", &format!("deploy fields accepted but not used by this daemon: {}", ignored.join(", ")));
        }
    }
    let mut out = deployed(&s.mgr, info);
    out.ignored_fields = ignored;
    Ok((StatusCode::CREATED, Json(out)))
}

#[derive(Deserialize)]
pub struct ListQuery {
    /// Exact display name.
    name: Option<String>,
    status: Option<String>,
}

pub async fn list(State(s): State<AppState>, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult<Json<Vec<DeployedSandbox>>> {
    let status = match q.status.as_deref() {
        None | Some("") | Some("all") => None,
        Some(v) => Some(v.parse::<SandboxStatus>().map_err(|e| AppError::bad_request("invalid_query", e))?),
    };
    let all = s.mgr.list(status)?;
    let items = all.into_iter().filter(|i| q.name.as_deref().is_none_or(|n| i.name == n));
    Ok(Json(items.map(|i| deployed(&s.mgr, i)).collect()))
}

pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<DeployedSandbox>> {
    Ok(Json(deployed(&s.mgr, s.mgr.get(&id)?)))
}

pub async fn delete(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let info = s.mgr.delete(&id).await?;
    Ok(Json(serde_json::json!({ "id": info.id, "name": info.name, "deleted": true })))
}

pub async fn restart(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<DeployedSandbox>> {
    Ok(Json(deployed(&s.mgr, s.mgr.restart(&id).await?)))
}

pub async fn ttl(State(s): State<AppState>, Path(id): Path<String>, ApiJson(req): ApiJson<TtlRequest>) -> ApiResult<Json<DeployedSandbox>> {
    let update = match req.ttl_seconds {
        0 => UpdateSandboxRequest { clear_ttl: Some(true), ..Default::default() },
        t => UpdateSandboxRequest { ttl_seconds: Some(t), ..Default::default() },
    };
    Ok(Json(deployed(&s.mgr, s.mgr.update(&id, update).await?)))
}

/// `size_class` changes the limits (live, on a running sandbox);
/// `disk_size_gb` grows the disk (at once where the host allows, else at the
/// next start; a disk never shrinks).
pub async fn resize(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ResizeRequest>,
) -> ApiResult<Json<DeployedSandbox>> {
    if req.size_class.is_none() && req.disk_size_gb.is_none() {
        return Err(AppError::bad_request("invalid_request", "resize needs size_class or disk_size_gb"));
    }
    let update = UpdateSandboxRequest { size_class: req.size_class, disk_size_gb: req.disk_size_gb, ..Default::default() };
    Ok(Json(deployed(&s.mgr, s.mgr.update(&id, update).await?)))
}
