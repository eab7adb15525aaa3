//! `POST /sandbox/:id/read-file` and `write-file`: whole files as base64
//! JSON, relative to `mount_path` (default and always available:
//! `/workspace`) and confined to it. Large files belong on the streaming
//! native routes (`/sandboxes/:id/files…`), so reads here are capped.

use std::io::Read;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use heyvm_types::compat::{ReadFileRequest, ReadFileResponse, WriteFileRequest};
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
    let (file, size) = s.mgr.open_file(&id, mount, &req.file_path)?;
    if size > MAX_READ_BYTES {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("file is {size} bytes; read-file returns at most {MAX_READ_BYTES}, use GET /sandboxes/{id}/files/<path>"),
        ));
    }
    let data = tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(size as usize);
        file.take(MAX_READ_BYTES).read_to_end(&mut buf).map(|_| buf)
    })
    .await
    .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(heyvm_core::CoreError::from)?;
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
    ApiJson(req): ApiJson<WriteFileRequest>,
) -> ApiResult<Json<UploadResponse>> {
    let data = base64::engine::general_purpose::STANDARD
        .decode(req.content.as_bytes())
        .map_err(|e| AppError::bad_request("invalid_base64", format!("content is not valid base64: {e}")))?;
    let max = s.mgr.config().max_upload_bytes;
    if data.len() as u64 > max {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("file exceeds the upload limit of {max} bytes"),
        ));
    }
    s.mgr.prepare_use(&id).await?;
    let (mut file, mount_path) = s.mgr.begin_upload(&id, req.mount_path.as_deref(), &req.file_path)?;
    file.write(&data)?;
    let size = file.commit()?;
    Ok(Json(UploadResponse { mount_path, file_path: req.file_path, size }))
}
