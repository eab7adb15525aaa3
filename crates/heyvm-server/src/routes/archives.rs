//! `POST /archives`: a deploy archive (tar.gz) as the raw request body.
//! It streams to disk under the data dir, is checked entry by entry
//! (`invalid_archive` otherwise) and gets an `ar-…` id to pass as
//! `archive_id` to `POST /sandboxes`.

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use futures_util::StreamExt;
use heyvm_types::ArchiveInfo;
use tokio::io::AsyncWriteExt;

use crate::error::{ApiResult, AppError};
use crate::AppState;

pub async fn upload(State(s): State<AppState>, body: Body) -> ApiResult<(StatusCode, Json<ArchiveInfo>)> {
    let max = s.mgr.config().max_upload_bytes;
    let up = s.mgr.begin_archive()?;
    let path = up.path.clone();
    let written = async {
        let mut file = tokio::fs::File::create(&path).await.map_err(heyvm_core::CoreError::from)?;
        let mut stream = body.into_data_stream();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| AppError::bad_request("invalid_body", format!("reading the upload: {e}")))?;
            total += chunk.len() as u64;
            if total > max {
                return Err(AppError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("archive exceeds the upload limit of {max} bytes"),
                ));
            }
            file.write_all(&chunk).await.map_err(heyvm_core::CoreError::from)?;
        }
        file.sync_all().await.map_err(heyvm_core::CoreError::from)?;
        if total == 0 {
            return Err(AppError::bad_request("invalid_archive", "empty body: send a tar.gz archive"));
        }
        Ok(())
    }
    .await;
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e);
    }
    let mgr = s.mgr.clone();
    let info = tokio::task::spawn_blocking(move || mgr.commit_archive(up))
        .await
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", e.to_string()))??;
    Ok((StatusCode::CREATED, Json(info)))
}
