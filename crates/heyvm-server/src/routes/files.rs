//! File routes. Paths are relative to `mount_path` (default /workspace) and
//! confined to it; uploads are atomic (temp file + rename) and bounded.

use axum::body::Body;
use axum::extract::{Multipart, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use heyvm_types::{DeleteFileResponse, FileList, UploadJsonRequest, UploadResponse};
use serde::Deserialize;

use crate::error::{ApiResult, AppError};
use crate::extract::{ApiJson, ApiQuery};
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
    ApiJson(req): ApiJson<UploadJsonRequest>,
) -> ApiResult<(StatusCode, Json<UploadResponse>)> {
    let data = base64::engine::general_purpose::STANDARD
        .decode(req.content.as_bytes())
        .map_err(|e| AppError::bad_request("invalid_base64", format!("content is not valid base64: {e}")))?;
    let max = s.mgr.config().max_upload_bytes;
    s.mgr.prepare_use(&id).await?;
    if data.len() as u64 > max {
        return Err(too_large(max));
    }
    let (mut file, mount_path) = s.mgr.begin_upload(&id, Some(&req.mount_path), &req.file_path)?;
    file.write(&data)?;
    let size = file.commit()?;
    Ok((StatusCode::CREATED, Json(UploadResponse { mount_path, file_path: req.file_path, size })))
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
