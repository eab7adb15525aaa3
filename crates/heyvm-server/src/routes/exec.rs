use axum::extract::{Path, State};
use axum::Json;
use heyvm_types::{ExecRequest, ExecResponse};

use crate::error::ApiResult;
use crate::extract::ApiJson;
use crate::AppState;

pub async fn execute(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> ApiResult<Json<ExecResponse>> {
    Ok(Json(s.mgr.exec(&id, &req).await?))
}
