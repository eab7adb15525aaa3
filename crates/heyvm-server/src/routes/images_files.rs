//! Images as files: heyo-sdk's `PUT /images/:name` (the body is an OCI
//! image archive, tar or tar.gz, or an ext4 root filesystem; optional
//! `x-heyo-sha256` header with the body's hex SHA-256; `?grow_gb=N` is
//! accepted and has no effect, layered images have no fixed size) and
//! `GET /images/:ref/archive` (the image as an OCI image archive).
//!
//! The body is streamed into a temp file of the image store, bounded by
//! `HEYVM_MAX_IMAGE_UPLOAD_BYTES` and checked against the checksum before
//! anything reads it; the store then verifies every blob. Nothing is
//! tagged unless all of it is in place.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use heyvm_core::CoreError;

use super::body_file::BodyFile;
use crate::error::{ApiResult, AppError};
use crate::AppState;

/// How much of a body past the size limit is read (and dropped) so the
/// client sees the 413.
const DRAIN_BYTES: u64 = 64 << 20;

/// The checksum header heyo-sdk sends.
pub const SHA256_HEADER: &str = "x-heyo-sha256";

fn grow_gb(q: Option<&str>) -> Result<Option<u64>, AppError> {
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        if let Some(v) = pair.strip_prefix("grow_gb=") {
            return match v.parse::<u64>() {
                Ok(n) if n <= 65536 => Ok(Some(n)),
                _ => Err(AppError::bad_request("invalid_request", format!("grow_gb must be a number of GiB (0..=65536), got '{v}'"))),
            };
        }
    }
    Ok(None)
}

fn expected_sha(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let Some(v) = headers.get(SHA256_HEADER) else { return Ok(None) };
    let v = v.to_str().unwrap_or_default().trim().to_ascii_lowercase();
    if v.len() != 64 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AppError::bad_request("invalid_request", format!("{SHA256_HEADER} must be 64 hex digits")));
    }
    Ok(Some(v))
}

pub async fn upload(
    State(s): State<AppState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    heyvm_core::images::ImageRef::parse(&name).map_err(CoreError::from)?;
    if grow_gb(q.as_deref())?.is_some() {
        tracing::info!(image = %name, "upload: grow_gb ignored (layered images have no fixed size)");
    }
    let want_sha = expected_sha(&headers)?;
    let max = s.mgr.config().max_image_upload_bytes;
    // Past the limit the rest of the body is read and dropped (up to
    // DRAIN_BYTES), so the client gets to read the 413 instead of a
    // connection reset mid-upload; a body declared larger than that is
    // refused at once.
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max.saturating_add(DRAIN_BYTES)) {
        return Err(AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("image uploads are limited to {max} bytes")));
    }
    let store = s.mgr.images().clone();
    // The temp file is spared by a concurrent prune while this runs.
    let _op = store.begin();
    let path = store.temp_path("upload");
    BodyFile {
        what: "the upload",
        max,
        drain: DRAIN_BYTES,
        too_large: format!("image uploads are limited to {max} bytes"),
        empty: AppError::bad_request("invalid_image_archive", "empty body: send an OCI image archive or an ext4 filesystem"),
        sha256: want_sha.map(|w| (SHA256_HEADER, w)),
        sync: false,
    }
    .write(body, &path)
    .await?;
    let info = s.mgr.import_image_file(path, &name).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

pub async fn archive(State(s): State<AppState>, Path(reference): Path<String>) -> ApiResult<Response> {
    let path = s.mgr.export_image_file(&reference).await?;
    let file = tokio::fs::File::open(&path).await.map_err(CoreError::from);
    // Open, then unlinked: the stream reads it and nothing is left behind.
    let _ = tokio::fs::remove_file(&path).await;
    let file = file?;
    let size = file.metadata().await.map_err(CoreError::from)?.len();
    let file_name: String = reference.chars().map(|c| if c.is_ascii_alphanumeric() || ".-_".contains(c) { c } else { '_' }).collect();
    let headers = [
        (header::CONTENT_TYPE, "application/x-tar".to_string()),
        (header::CONTENT_LENGTH, size.to_string()),
        (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{file_name}.tar\"")),
    ];
    Ok((headers, Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024))).into_response())
}
