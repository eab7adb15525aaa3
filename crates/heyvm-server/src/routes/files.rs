//! File routes. Paths are relative to `mount_path` (default /workspace) and
//! confined to it; uploads are atomic (temp file + rename) and bounded.

use axum::body::Body;
use axum::extract::{Multipart, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use heyvm_types::{DeleteFileResponse, FileList, UploadResponse};
use serde::Deserialize;

use crate::error::{ApiResult, AppError};
use crate::extract::ApiQuery;
use crate::AppState;

#[derive(Deserialize)]
pub struct FileQuery {
    mount_path: Option<String>,
    path: Option<String>,
    #[serde(default)]
    recursive: bool,
}

pub async fn list(State(s): State<AppState>, Path(id): Path<String>, ApiQuery(q): ApiQuery<FileQuery>) -> ApiResult<Json<FileList>> {
    s.mgr.prepare_use(&id).await?;
    Ok(Json(s.mgr.list_files(&id, q.mount_path.as_deref(), q.path.as_deref().unwrap_or(""))?))
}

fn too_large(max: u64) -> AppError {
    AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("file exceeds the upload limit of {max} bytes"))
}

pub async fn upload_json(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<UploadResponse>)> {
    let max = s.mgr.config().max_upload_bytes;
    let up = super::json_upload::receive(&headers, body, json_body_limit(max), max).await?;
    let file_path = up.required("file_path")?.to_string();
    let mount_path = up.field("mount_path").unwrap_or(heyvm_types::WORKSPACE_PATH).to_string();
    let (mount_path, size) = commit_spooled(&s, id, Some(mount_path), file_path.clone(), up).await?;
    Ok((StatusCode::CREATED, Json(UploadResponse { mount_path, file_path, size })))
}

/// A JSON upload's body: base64 (4/3 of the file) plus a little framing.
pub fn json_body_limit(max: u64) -> u64 {
    (max / 3 * 4).saturating_add(64 * 1024)
}

/// Copies a spooled upload into place atomically, off the async runtime.
pub async fn commit_spooled(
    s: &AppState,
    id: String,
    mount_path: Option<String>,
    file_path: String,
    up: super::json_upload::JsonUpload,
) -> ApiResult<(String, u64)> {
    s.mgr.prepare_use(&id).await?;
    let mgr = s.mgr.clone();
    tokio::task::spawn_blocking(move || -> ApiResult<(String, u64)> {
        use std::io::Read;
        let (mut file, mp) = mgr.begin_upload(&id, mount_path.as_deref(), &file_path)?;
        let mut src = up.content;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = src.read(&mut buf).map_err(heyvm_core::CoreError::from)?;
            if n == 0 {
                break;
            }
            file.write(&buf[..n])?;
        }
        Ok((mp, file.commit()?))
    })
    .await
    .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", e.to_string()))?
}

/// Multipart form: `mount_path`, `file_path` (defaults to the file part's
/// file name) and `file`. The file streams to disk; nothing is visible until
/// it is complete.
pub async fn upload_multipart(
    State(s): State<AppState>,
    Path(id): Path<String>,
    mut form: Multipart,
) -> ApiResult<(StatusCode, Json<UploadResponse>)> {
    let bad = |e: axum::extract::multipart::MultipartError| AppError::bad_request("invalid_multipart", e.body_text());
    s.mgr.prepare_use(&id).await?;
    let max = s.mgr.config().max_upload_bytes;
    let (mut mount_path, mut file_path) = (None::<String>, None::<String>);
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        match field.name().unwrap_or("") {
            "mount_path" => mount_path = Some(field.text().await.map_err(bad)?),
            "file_path" => file_path = Some(field.text().await.map_err(bad)?),
            "file" => {
                let path = file_path
                    .clone()
                    .or_else(|| field.file_name().map(str::to_string))
                    .ok_or_else(|| AppError::bad_request("invalid_request", "file_path is required"))?;
                let (mut file, mp) = s.mgr.begin_upload(&id, mount_path.as_deref(), &path)?;
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    if file.written() + chunk.len() as u64 > max {
                        return Err(too_large(max));
                    }
                    file.write(&chunk)?;
                }
                let size = file.commit()?;
                return Ok((StatusCode::CREATED, Json(UploadResponse { mount_path: mp, file_path: path, size })));
            }
            _ => {}
        }
    }
    Err(AppError::bad_request("invalid_request", "multipart form has no 'file' field"))
}

pub async fn download(
    State(s): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<FileQuery>,
) -> ApiResult<Response> {
    s.mgr.prepare_use(&id).await?;
    // Opening walks the sandbox's directories: off the async runtime.
    let mgr = s.mgr.clone();
    let (file, size) = tokio::task::spawn_blocking(move || mgr.open_file(&id, q.mount_path.as_deref(), &path))
        .await
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", e.to_string()))??;
    let stream = tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 256 * 1024);
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream".to_string()), (header::CONTENT_LENGTH, size.to_string())],
        Body::from_stream(stream),
    )
        .into_response())
}

pub async fn delete(
    State(s): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<FileQuery>,
) -> ApiResult<Json<DeleteFileResponse>> {
    s.mgr.prepare_use(&id).await?;
    let mount_path = s.mgr.delete_file(&id, q.mount_path.as_deref(), &path, q.recursive)?;
    Ok(Json(DeleteFileResponse { mount_path, file_path: path, deleted: true }))
}
