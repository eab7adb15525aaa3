//! File routes. Paths are relative to `mount_path` (default /workspace) and
//! confined to it, or, absolute with no `mount_path`, anywhere in the
//! (running) sandbox; uploads are atomic (temp file + rename) and bounded.
//! The manager picks the route (host directory or in-sandbox agent); the
//! answers are the same either way.

use axum::body::Body;
use axum::extract::{Multipart, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use heyvm_core::agent::AgentFileReader;
use heyvm_core::manager::FileSource;
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
    /// Download only: first byte and most bytes to send (default: all).
    offset: Option<u64>,
    limit: Option<u64>,
}

pub async fn list(State(s): State<AppState>, Path(id): Path<String>, ApiQuery(q): ApiQuery<FileQuery>) -> ApiResult<Json<FileList>> {
    s.mgr.prepare_use(&id).await?;
    Ok(Json(s.mgr.list_files(&id, q.mount_path.as_deref(), q.path.as_deref().unwrap_or("")).await?))
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
    let mount_path = up.field("mount_path").map(str::to_string);
    let (mount_path, size) = commit_spooled(&s, id, mount_path, file_path.clone(), up).await?;
    Ok((StatusCode::CREATED, Json(UploadResponse { mount_path, file_path, size })))
}

/// A JSON upload's body: base64 (4/3 of the file) plus a little framing.
pub fn json_body_limit(max: u64) -> u64 {
    (max / 3 * 4).saturating_add(64 * 1024)
}

/// Copies a spooled upload into place atomically.
pub async fn commit_spooled(
    s: &AppState,
    id: String,
    mount_path: Option<String>,
    file_path: String,
    up: super::json_upload::JsonUpload,
) -> ApiResult<(String, u64)> {
    s.mgr.prepare_use(&id).await?;
    let (sink, mp) = s.mgr.begin_upload(&id, mount_path.as_deref(), &file_path).await?;
    Ok((mp, sink.copy_from(up.content).await?))
}

/// Multipart form: `mount_path`, `file_path` (defaults to the file part's
/// file name) and `file`. The file streams to disk; nothing is visible until
/// it is complete.
pub async fn upload_multipart(
    State(s): State<AppState>,
    Path(id): Path<String>,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<(StatusCode, Json<UploadResponse>)> {
    let bad = |e: axum::extract::multipart::MultipartError| AppError::bad_request("invalid_multipart", e.body_text());
    // A missing or malformed multipart Content-Type is the error JSON too.
    let mut form = form.map_err(|r| AppError::bad_request("invalid_multipart", r.body_text()))?;
    s.mgr.prepare_use(&id).await?;
    let max = s.mgr.config().max_upload_bytes;
    let (mut mount_path, mut file_path) = (None::<String>, None::<String>);
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        match field.name().unwrap_or("") {
            // A field given twice would leave the target ambiguous.
            "mount_path" if mount_path.is_some() => return Err(AppError::bad_request("invalid_multipart", "mount_path is given twice")),
            "file_path" if file_path.is_some() => return Err(AppError::bad_request("invalid_multipart", "file_path is given twice")),
            "mount_path" => mount_path = Some(field.text().await.map_err(bad)?),
            "file_path" => file_path = Some(field.text().await.map_err(bad)?),
            "file" => {
                let path = file_path
                    .clone()
                    .or_else(|| field.file_name().map(str::to_string))
                    .ok_or_else(|| AppError::bad_request("invalid_request", "file_path is required"))?;
                let (mut file, mp) = match s.mgr.begin_upload(&id, mount_path.as_deref(), &path).await {
                    Ok(opened) => opened,
                    Err(e) => {
                        drain(field, max).await;
                        return Err(e.into());
                    }
                };
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    if file.written() + chunk.len() as u64 > max {
                        return Err(too_large(max));
                    }
                    file.write(&chunk).await?;
                }
                // Fields after the file part would have been ignored (the
                // file is already placed): refuse them instead, uncommitted.
                // The file part must be released before the form reads on.
                drop(field);
                if let Some(late) = form.next_field().await.map_err(bad)? {
                    let name = late.name().unwrap_or("").to_string();
                    return Err(AppError::bad_request(
                        "invalid_multipart",
                        format!("field '{name}' comes after the file part; send mount_path and file_path first"),
                    ));
                }
                let size = file.commit().await?;
                return Ok((StatusCode::CREATED, Json(UploadResponse { mount_path: mp, file_path: path, size })));
            }
            _ => {}
        }
    }
    Err(AppError::bad_request("invalid_request", "multipart form has no 'file' field"))
}

/// Reads and drops the rest of a refused upload (up to the upload limit),
/// so the client, still sending, reads our answer instead of a reset
/// connection ("Broken pipe").
async fn drain(mut field: axum::extract::multipart::Field<'_>, max: u64) {
    let mut seen = 0u64;
    while let Ok(Some(chunk)) = field.chunk().await {
        seen += chunk.len() as u64;
        if seen > max {
            break;
        }
    }
}

pub async fn download(
    State(s): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<FileQuery>,
) -> ApiResult<Response> {
    s.mgr.prepare_use(&id).await?;
    let opened = s.mgr.open_range(&id, q.mount_path.as_deref(), &path, q.offset.unwrap_or(0), q.limit).await?;
    let body = match opened.source {
        FileSource::Host(file) => {
            let file = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), opened.size);
            Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024))
        }
        FileSource::Agent(reader) => Body::from_stream(agent_stream(reader)),
    };
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (header::CONTENT_LENGTH, opened.size.to_string()),
        (header::HeaderName::from_static(FILE_SIZE_HEADER), opened.total.to_string()),
    ];
    Ok((headers, body).into_response())
}

/// The whole file's size, next to the Content-Length of a ranged download.
pub const FILE_SIZE_HEADER: &str = "x-file-size";

/// The agent's chunks as a body stream; an error ends the body early, so
/// the client sees a truncated transfer, never a silently short file.
fn agent_stream(reader: AgentFileReader) -> impl futures_util::Stream<Item = std::io::Result<axum::body::Bytes>> {
    futures_util::stream::unfold(Some(reader), |state| async move {
        let mut reader = state?;
        match reader.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok(axum::body::Bytes::from(chunk)), Some(reader))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    })
}

pub async fn delete(
    State(s): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<FileQuery>,
) -> ApiResult<Json<DeleteFileResponse>> {
    s.mgr.prepare_use(&id).await?;
    let mount_path = s.mgr.delete_file(&id, q.mount_path.as_deref(), &path, q.recursive).await?;
    Ok(Json(DeleteFileResponse { mount_path, file_path: path, deleted: true }))
}
