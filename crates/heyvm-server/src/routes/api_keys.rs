//! `POST /api-keys`, `GET /api-keys`, `DELETE /api-keys/:id`.
//!
//! The key is in the create answer only; the server stores its hash. With
//! `JWT_SECRET` set a key works as `Authorization: Bearer <key>` anywhere a
//! JWT does (see `auth.rs`); without it the API is open and keys are only
//! kept for when auth is turned on.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use heyvm_types::{ApiKeyCreated, ApiKeyInfo, CreateApiKeyRequest};
use serde_json::{json, Value};

use crate::error::{ApiResult, AppError};
use crate::extract::ApiJson;
use crate::AppState;

pub async fn create(State(s): State<AppState>, ApiJson(req): ApiJson<CreateApiKeyRequest>) -> ApiResult<(StatusCode, Json<ApiKeyCreated>)> {
    Ok((StatusCode::CREATED, Json(s.keys.create(&req.name, req.ttl_seconds)?)))
}

pub async fn list(State(s): State<AppState>) -> ApiResult<Json<Vec<ApiKeyInfo>>> {
    Ok(Json(s.keys.list()?))
}

pub async fn revoke(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    if !s.keys.revoke(&id)? {
        return Err(AppError::new(StatusCode::NOT_FOUND, "api_key_not_found", format!("API key '{id}' not found")));
    }
    Ok(Json(json!({ "id": id, "revoked": true })))
}
