use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use heyvm_types::{CreateSandboxRequest, SandboxInfo, SandboxStatus, UpdateSandboxRequest};
use serde::Deserialize;

use crate::error::{ApiResult, AppError};
use crate::extract::{ApiJson, ApiQuery};
use crate::guard::mounts::Caller;
use crate::AppState;

#[derive(Deserialize)]
pub struct ListQuery {
    status: Option<String>,
}

pub async fn list(State(s): State<AppState>, ApiQuery(q): ApiQuery<ListQuery>) -> ApiResult<Json<Vec<SandboxInfo>>> {
    let status = match q.status.as_deref() {
        None | Some("") | Some("all") => None,
        Some(v) => Some(v.parse::<SandboxStatus>().map_err(|e| AppError::bad_request("invalid_query", e))?),
    };
    Ok(Json(s.mgr.list_measured(status).await?))
}

pub async fn create(
    State(s): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateSandboxRequest>,
) -> ApiResult<(StatusCode, Json<SandboxInfo>)> {
    caller.authorize(req.mounts.as_deref().unwrap_or_default())?;
    let info = s.mgr.create(req).await?;
    if let Err(e) = bind_open_ports(&s, &info) {
        // No half-made sandbox: the create failed as a whole.
        let _ = s.mgr.delete(&info.id).await;
        return Err(e);
    }
    Ok((StatusCode::CREATED, Json(s.mgr.get(&info.id)?)))
}

/// Each of `open_ports` gets a public proxy endpoint (unless one exists),
/// so the sandbox's `urls` list them as the seed's create example expects.
fn bind_open_ports(s: &AppState, info: &SandboxInfo) -> ApiResult<()> {
    let bound: Vec<u16> = s.proxy.list(&info.id)?.iter().map(|e| e.port).collect();
    for &port in info.open_ports.iter().filter(|p| !bound.contains(p)) {
        s.proxy.create(&info.id, port, true)?;
    }
    Ok(())
}

pub async fn get(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<SandboxInfo>> {
    Ok(Json(s.mgr.get_measured(&id).await?))
}

pub async fn update(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateSandboxRequest>,
) -> ApiResult<Json<SandboxInfo>> {
    let binds_ports = req.open_ports.is_some();
    let info = s.mgr.update(&id, req).await?;
    if !binds_ports {
        return Ok(Json(info));
    }
    bind_open_ports(&s, &info)?;
    Ok(Json(s.mgr.get(&info.id)?))
}

pub async fn delete(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let info = s.mgr.delete(&id).await?;
    Ok(Json(serde_json::json!({ "id": info.id, "name": info.name, "deleted": true })))
}

pub async fn start(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<SandboxInfo>> {
    Ok(Json(s.mgr.start(&id).await?))
}

pub async fn stop(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<SandboxInfo>> {
    Ok(Json(s.mgr.stop(&id, false).await?))
}

pub async fn force_stop(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<SandboxInfo>> {
    Ok(Json(s.mgr.stop(&id, true).await?))
}

pub async fn restart(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<SandboxInfo>> {
    Ok(Json(s.mgr.restart(&id).await?))
}
