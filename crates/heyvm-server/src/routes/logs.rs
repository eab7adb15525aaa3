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
    /// Seconds since the Unix epoch; entries before it are left out.
    since: Option<i64>,
    /// Seconds since the Unix epoch; entries after it are left out.
    until: Option<i64>,
}

pub async fn get(State(s): State<AppState>, Path(id): Path<String>, ApiQuery(q): ApiQuery<Query>) -> ApiResult<Json<LogsResponse>> {
    let q = LogQuery { limit: q.limit, offset: q.offset, tail: q.tail, source: q.source, level: q.level, since: q.since, until: q.until };
    Ok(Json(s.mgr.logs(&id, &q)?))
}
