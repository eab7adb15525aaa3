//! `POST /proxy-endpoints/for-deployed`: heyo-sdk's `Sandbox::bind_port`,
//! the native `POST /sandboxes/:id/proxy` with the id in the body.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use heyvm_types::compat::BindPortRequest;
use heyvm_types::ProxyEndpoint;

use crate::error::ApiResult;
use crate::extract::ApiJson;
use crate::AppState;

pub async fn bind_port(State(s): State<AppState>, ApiJson(req): ApiJson<BindPortRequest>) -> ApiResult<(StatusCode, Json<ProxyEndpoint>)> {
    let endpoint = s.proxy.create(&req.sandbox_id, req.port, req.is_public.unwrap_or(true))?;
    Ok((StatusCode::CREATED, Json(endpoint)))
}
