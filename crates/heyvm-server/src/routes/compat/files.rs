//! `POST /sandbox/:id/read-file` and `write-file`: whole files as base64
//! JSON, relative to `mount_path` (default and always available:
//! `/workspace`) and confined to it. Large files belong on the streaming
//! native routes (`/sandboxes/:id/files…`), so reads here are capped.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine;
use heyvm_types::compat::{ReadFileRequest, ReadFileResponse};
use heyvm_types::UploadResponse;

use crate::error::{ApiResult, AppError};
use crate::extract::ApiJson;
use crate::AppState;

/// Largest file `read-file` returns (its base64 is held in memory).
const MAX_READ_BYTES: u64 = 256 * 1024 * 1024;

pub async fn read_file(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReadFileRequest>,
) -> ApiResult<Json<ReadFileResponse>> {
    let mount = req.mount_path.as_deref();
    s.mgr.prepare_use(&id).await?;
    let opened = s.mgr.open_file(&id, mount, &req.file_path).await?;
    let size = opened.size;
    if size > MAX_READ_BYTES {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("file is {size} bytes; read-file returns at most {MAX_READ_BYTES}, use GET /sandboxes/{id}/files/<path>"),
        ));
    }
    let data = opened.read_to_vec(MAX_READ_BYTES).await?;
    let mount_path = req.mount_path.filter(|m| !m.is_empty()).unwrap_or_else(|| heyvm_types::WORKSPACE_PATH.to_string());
    Ok(Json(ReadFileResponse {
        mount_path,
        file_path: req.file_path,
        size: data.len() as u64,
        content: base64::engine::general_purpose::STANDARD.encode(&data),
    }))
}

pub async fn write_file(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<UploadResponse>> {
    let max = s.mgr.config().max_upload_bytes;
    let up = crate::routes::json_upload::receive(&headers, body, crate::routes::files::json_body_limit(max), max).await?;
    let file_path = up.required("file_path")?.to_string();
    let mount = up.field("mount_path").filter(|m| !m.is_empty()).map(str::to_string);
    let (mount_path, size) = crate::routes::files::commit_spooled(&s, id, mount, file_path.clone(), up).await?;
    Ok(Json(UploadResponse { mount_path, file_path, size }))
}
