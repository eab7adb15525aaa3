use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use heyvm_types::{ExecOperation, ExecOperationRequest};

use crate::error::ApiResult;
use crate::extract::ApiJson;
use crate::AppState;

/// 202 for a new operation, 200 when an identical one already exists.
pub async fn create(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExecOperationRequest>,
) -> ApiResult<(StatusCode, Json<ExecOperation>)> {
    let (op, created) = s.mgr.start_operation(&id, req).await?;
    Ok((if created { StatusCode::ACCEPTED } else { StatusCode::OK }, Json(op)))
}

pub async fn get(State(s): State<AppState>, Path((id, op)): Path<(String, String)>) -> ApiResult<Json<ExecOperation>> {
    Ok(Json(s.mgr.get_operation(&id, &op)?))
}
