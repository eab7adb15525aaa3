//! Checkpoints, restore and fork (`/sandboxes/:id/checkpoints`, `/restore`,
//! `/fork`) and `GET /system/backends`. Mapping only; the rules live in the
//! manager.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use heyvm_types::{BackendInfo, CheckpointInfo, CheckpointRequest, ForkRequest, RestoreRequest, RestoreResponse};

use crate::error::{ApiResult, AppError};
use crate::AppState;

/// These bodies are optional (`heyvm checkpoint ID` sends none): an empty
/// body means the defaults, anything else must be valid JSON.
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| AppError::bad_request("invalid_json", format!("invalid JSON body: {e}")))
}

pub async fn create(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<CheckpointInfo>)> {
    let req: CheckpointRequest = optional_json(&body)?;
    Ok((StatusCode::CREATED, Json(s.mgr.checkpoint(&id, req.name).await?)))
}

pub async fn list(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Vec<CheckpointInfo>>> {
    Ok(Json(s.mgr.checkpoints(&id).await?))
}

pub async fn delete(State(s): State<AppState>, Path((id, name)): Path<(String, String)>) -> ApiResult<Json<serde_json::Value>> {
    s.mgr.delete_checkpoint(&id, &name).await?;
    Ok(Json(serde_json::json!({ "name": name, "deleted": true })))
}

pub async fn restore(State(s): State<AppState>, Path(id): Path<String>, body: axum::body::Bytes) -> ApiResult<Json<RestoreResponse>> {
    let req: RestoreRequest = optional_json(&body)?;
    Ok(Json(s.mgr.restore(&id, req.name.as_deref()).await?))
}

pub async fn fork(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<RestoreResponse>)> {
    let req: ForkRequest = optional_json(&body)?;
    Ok((StatusCode::CREATED, Json(s.mgr.fork(&id, req).await?)))
}

pub async fn backends(State(s): State<AppState>) -> Json<Vec<BackendInfo>> {
    Json(s.mgr.backends())
}
