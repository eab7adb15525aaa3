//! `POST /archives`: a deploy archive (tar.gz) as the raw request body.
//! It streams to disk under the data dir, is checked entry by entry
//! (`invalid_archive` otherwise) and gets an `ar-…` id to pass as
//! `archive_id` to `POST /sandboxes`.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use heyvm_types::ArchiveInfo;

use super::body_file::BodyFile;
use crate::error::{ApiResult, AppError};
use crate::AppState;

pub async fn upload(State(s): State<AppState>, body: Body) -> ApiResult<(StatusCode, Json<ArchiveInfo>)> {
    let max = s.mgr.config().max_upload_bytes;
    let up = s.mgr.begin_archive()?;
    BodyFile {
        what: "the upload",
        max,
        drain: 0,
        too_large: format!("archive exceeds the upload limit of {max} bytes"),
        empty: AppError::bad_request("invalid_archive", "empty body: send a tar.gz archive"),
        sha256: None,
        sync: true,
    }
    .write(body, &up.path)
    .await?;
    let mgr = s.mgr.clone();
    let info = tokio::task::spawn_blocking(move || mgr.commit_archive(up))
        .await
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", e.to_string()))??;
    Ok((StatusCode::CREATED, Json(info)))
}
