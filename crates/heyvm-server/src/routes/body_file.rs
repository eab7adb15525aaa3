//! A request body streamed into a file, the one loop behind deploy
//! archives, build contexts and image uploads: a size limit (413), an
//! optional drain past it so the client reads the 413 rather than a reset
//! connection, an optional SHA-256 check, an empty body refused, and the
//! file removed on any failure.

use std::path::Path;

use axum::body::Body;
use axum::http::StatusCode;
use futures_util::StreamExt;
use heyvm_core::CoreError;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::AppError;

pub struct BodyFile<'a> {
    /// What the body is, for "reading {what}: …".
    pub what: &'a str,
    pub max: u64,
    /// How much past `max` is read and dropped before giving up (0: stop at once).
    pub drain: u64,
    /// The 413's message.
    pub too_large: String,
    /// The error for an empty body.
    pub empty: AppError,
    /// The header that carried a hex SHA-256 and its value: the body must
    /// have it (`checksum_mismatch` otherwise).
    pub sha256: Option<(&'a str, String)>,
    /// fsync before answering (the file outlives the request).
    pub sync: bool,
}

impl BodyFile<'_> {
    /// Writes `body` to `path`; returns its length. On error nothing is left at `path`.
    pub async fn write(self, body: Body, path: &Path) -> Result<u64, AppError> {
        let r = self.write_inner(body, path).await;
        if r.is_err() {
            let _ = tokio::fs::remove_file(path).await;
        }
        r
    }

    async fn write_inner(self, body: Body, path: &Path) -> Result<u64, AppError> {
        let too_large = || AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", self.too_large.clone());
        let mut file = tokio::fs::File::create(path).await.map_err(CoreError::from)?;
        let mut stream = body.into_data_stream();
        let mut hasher = self.sha256.as_ref().map(|_| Sha256::new());
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| AppError::bad_request("invalid_body", format!("reading {}: {e}", self.what)))?;
            total += chunk.len() as u64;
            if total > self.max {
                if total > self.max.saturating_add(self.drain) {
                    return Err(too_large());
                }
                continue;
            }
            if let Some(h) = &mut hasher {
                h.update(&chunk);
            }
            file.write_all(&chunk).await.map_err(CoreError::from)?;
        }
        if total > self.max {
            return Err(too_large());
        }
        if self.sync {
            file.sync_all().await.map_err(CoreError::from)?;
        } else {
            file.flush().await.map_err(CoreError::from)?;
        }
        if total == 0 {
            return Err(self.empty);
        }
        if let (Some((header, want)), Some(h)) = (self.sha256, hasher) {
            let got: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            if want != got {
                return Err(AppError::bad_request("checksum_mismatch", format!("the body's sha256 is {got}, {header} says {want}")));
            }
        }
        Ok(total)
    }
}
