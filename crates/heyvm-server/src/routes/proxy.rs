//! `/sandboxes/:id/proxy` (create, list, delete endpoints) and
//! `/sandboxes/:id/wait-for` (readiness of a sandbox port).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use heyvm_types::{CreateProxyRequest, DeleteProxyQuery, ProxyEndpoint, ProxyList, WaitForRequest, WaitForResponse};

use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery};
use crate::AppState;

pub async fn create(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CreateProxyRequest>,
) -> ApiResult<(StatusCode, Json<ProxyEndpoint>)> {
    Ok((StatusCode::CREATED, Json(s.proxy.create(&id, req.port, req.is_public)?)))
}

/// `{"proxies": [...]}`: the shape heyo-sdk's `Daemon::list_binds` reads.
pub async fn list(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<ProxyList>> {
    Ok(Json(ProxyList { proxies: s.proxy.list(&id)? }))
}

pub async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeleteProxyQuery>,
) -> ApiResult<Json<ProxyEndpoint>> {
    Ok(Json(s.proxy.remove(&id, &q.subdomain)?))
}

pub async fn wait_for(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<WaitForRequest>,
) -> ApiResult<Json<WaitForResponse>> {
    Ok(Json(crate::proxy::wait_for(&s.mgr, &id, &req).await?))
}
