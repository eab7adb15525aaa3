use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use heyvm_types::MountSpec;

use crate::error::ApiResult;
use crate::extract::ApiJson;
use crate::guard::mounts::Caller;
use crate::AppState;

pub async fn list(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Vec<MountSpec>>> {
    Ok(Json(s.mgr.list_mounts(&id)?))
}

/// Bind mounts are set up at launch: a mount added to a running sandbox
/// applies from its next start or restart (`applies_on_restart`).
pub async fn add(
    State(s): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
    ApiJson(m): ApiJson<MountSpec>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    caller.authorize(std::slice::from_ref(&m))?;
    let running = s.mgr.get(&id)?.status == heyvm_types::SandboxStatus::Running;
    let mounts = s.mgr.add_mount(&id, m).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "mounts": mounts, "applies_on_restart": running }))))
}

pub async fn remove(State(s): State<AppState>, Path((id, path)): Path<(String, String)>) -> ApiResult<Json<serde_json::Value>> {
    let running = s.mgr.get(&id)?.status == heyvm_types::SandboxStatus::Running;
    let mounts = s.mgr.remove_mount(&id, &format!("/{}", path.trim_start_matches('/'))).await?;
    Ok(Json(serde_json::json!({ "mounts": mounts, "applies_on_restart": running })))
}
