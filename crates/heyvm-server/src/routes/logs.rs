use axum::extract::{Path, State};
use axum::Json;
use heyvm_core::manager::LogQuery;
use heyvm_types::LogsResponse;
use serde::Deserialize;

use crate::error::ApiResult;
use crate::extract::ApiQuery;
use crate::AppState;

#[derive(Deserialize)]
pub struct Query {
    limit: Option<usize>,
    offset: Option<usize>,
    #[serde(default)]
    tail: bool,
    source: Option<String>,
    level: Option<String>,
}

pub async fn get(State(s): State<AppState>, Path(id): Path<String>, ApiQuery(q): ApiQuery<Query>) -> ApiResult<Json<LogsResponse>> {
    let q = LogQuery { limit: q.limit, offset: q.offset, tail: q.tail, source: q.source, level: q.level };
    Ok(Json(s.mgr.logs(&id, &q)?))
}
