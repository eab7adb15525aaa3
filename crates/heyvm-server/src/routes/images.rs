//! Image routes: `GET /images`, `POST /images/pull` (SSE progress with
//! `Accept: text/event-stream`), `GET|DELETE /images/:ref` (`:ref` is one
//! percent-encoded segment), `POST /images/tag|prune|login`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use heyvm_core::images::{ImageError, PullEvent};
use heyvm_core::CoreError;
use heyvm_types::{ImageDetails, ImageInfo, PruneImagesResponse, PullImageRequest, RegistryLoginRequest, TagImageRequest};
use serde_json::json;

use crate::error::ApiResult;
use crate::extract::ApiJson;
use crate::AppState;

pub async fn list(State(s): State<AppState>) -> ApiResult<Json<Vec<ImageInfo>>> {
    let mgr = s.mgr.clone();
    Ok(Json(tokio::task::spawn_blocking(move || mgr.list_images()).await.unwrap_or_default()))
}

pub async fn get(State(s): State<AppState>, Path(reference): Path<String>) -> ApiResult<Json<ImageDetails>> {
    Ok(Json(s.mgr.image_details(&reference)?))
}

/// 409 `image_in_use` names the sandboxes in the body, as heyo-sdk reads it.
pub async fn delete(State(s): State<AppState>, Path(reference): Path<String>) -> ApiResult<Response> {
    match s.mgr.remove_image(&reference) {
        Ok(img) => Ok(Json(json!({ "removed": reference, "digest": img.digest })).into_response()),
        Err(CoreError::Image(e @ ImageError::InUse { .. })) => {
            let ImageError::InUse { sandboxes, .. } = &e else { unreachable!() };
            let body = json!({ "error": e.code(), "message": e.to_string(), "sandboxes": sandboxes });
            Ok((StatusCode::CONFLICT, Json(body)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn tag(State(s): State<AppState>, ApiJson(req): ApiJson<TagImageRequest>) -> ApiResult<(StatusCode, Json<ImageInfo>)> {
    Ok((StatusCode::CREATED, Json(s.mgr.tag_image(&req.source, &req.target)?)))
}

pub async fn prune(State(s): State<AppState>) -> ApiResult<Json<PruneImagesResponse>> {
    let mgr = s.mgr.clone();
    let r = tokio::task::spawn_blocking(move || mgr.prune_images())
        .await
        .map_err(|e| CoreError::Backend(heyvm_core::backend::BackendError::Failed(format!("prune panicked: {e}"))))??;
    Ok(Json(PruneImagesResponse { blobs_removed: r.blobs_removed, layers_removed: r.layers_removed, bytes_freed: r.bytes_freed }))
}

pub async fn login(State(s): State<AppState>, ApiJson(req): ApiJson<RegistryLoginRequest>) -> ApiResult<Json<serde_json::Value>> {
    s.mgr.registry_login(&req.registry, &req.username, &req.password)?;
    Ok(Json(json!({ "registry": req.registry, "logged_in": true })))
}

fn wants_events(headers: &HeaderMap) -> bool {
    headers.get("accept").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"))
}

/// Pulls an image. With `Accept: text/event-stream` the answer is a stream
/// of `progress` events (`resolved`, `progress`, `layer_done`), then `done`
/// with the image or `error` with `{error, message}`.
pub async fn pull(State(s): State<AppState>, headers: HeaderMap, ApiJson(req): ApiJson<PullImageRequest>) -> ApiResult<Response> {
    if !wants_events(&headers) {
        let info = s.mgr.pull_image(&req.reference, heyvm_core::images::no_progress()).await?;
        return Ok(Json(info).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let ptx = tx.clone();
    let progress: heyvm_core::images::ProgressFn = Arc::new(move |ev: PullEvent| {
        let _ = ptx.send(Event::default().event("progress").data(serde_json::to_string(&ev).unwrap_or_default()));
    });
    let mgr = s.mgr.clone();
    tokio::spawn(async move {
        let ev = match mgr.pull_image(&req.reference, progress).await {
            Ok(info) => Event::default().event("done").data(serde_json::to_string(&info).unwrap_or_default()),
            Err(e) => Event::default().event("error").data(json!({ "error": e.code(), "message": e.to_string() }).to_string()),
        };
        let _ = tx.send(ev);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}
