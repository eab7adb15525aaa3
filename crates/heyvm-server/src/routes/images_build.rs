//! `POST /images/build` (the body is the context as tar.gz; query: `t`
//! (repeatable), `dockerfile`, `target`, `no_cache`, `build_arg=K=V`
//! (repeatable)) and `POST /images/push`. With `Accept: text/event-stream`
//! both answer with progress events, then `done` or `error`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use heyvm_core::manager::{ArchiveBuild, BuildEvent};
use heyvm_core::CoreError;
use heyvm_types::PushImageRequest;
use serde_json::json;

use super::body_file::BodyFile;
use crate::error::{ApiResult, AppError};
use crate::extract::ApiJson;
use crate::AppState;

fn wants_events(headers: &HeaderMap) -> bool {
    headers.get("accept").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"))
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(v) => {
                    out.push(v);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: Option<String>) -> Result<ArchiveBuild, AppError> {
    let mut b = ArchiveBuild {
        dockerfile: "Dockerfile".into(),
        tags: vec![],
        build_args: BTreeMap::new(),
        target: None,
        no_cache: false,
        backend_type: None,
    };
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v);
        match k {
            "t" | "tag" | "name" => b.tags.push(v),
            "dockerfile" | "file" => b.dockerfile = v,
            "target" => b.target = Some(v).filter(|t| !t.is_empty()),
            "backend_type" | "backend" => b.backend_type = Some(v).filter(|t| !t.is_empty()),
            "no_cache" | "nocache" => b.no_cache = matches!(v.as_str(), "1" | "true" | "yes"),
            "build_arg" | "buildarg" => {
                let (bk, bv) = v
                    .split_once('=')
                    .ok_or_else(|| AppError::bad_request("invalid_request", format!("build_arg '{v}' is not KEY=VALUE")))?;
                b.build_args.insert(bk.to_string(), bv.to_string());
            }
            _ => {}
        }
    }
    Ok(b)
}

type Sender = Arc<dyn Fn(Event) + Send + Sync>;
type Events = (tokio::sync::mpsc::UnboundedSender<Event>, tokio::sync::mpsc::UnboundedReceiver<Event>);

/// A progress sink that forwards events only when the client asked for them.
fn sink(events: bool) -> (Sender, Events) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let ptx = tx.clone();
    let send: Sender = Arc::new(move |e| {
        if events {
            let _ = ptx.send(e);
        }
    });
    (send, (tx, rx))
}

/// Sends progress events and a final `done`/`error` as SSE, or only the
/// result as JSON.
async fn respond<F>(events: bool, chan: Events, fut: F) -> ApiResult<Response>
where
    F: std::future::Future<Output = Result<serde_json::Value, CoreError>> + Send + 'static,
{
    if !events {
        return Ok(Json(fut.await?).into_response());
    }
    let (tx, rx) = chan;
    tokio::spawn(async move {
        let ev = match fut.await {
            Ok(v) => Event::default().event("done").data(v.to_string()),
            Err(e) => Event::default().event("error").data(json!({ "error": e.code(), "message": e.to_string() }).to_string()),
        };
        let _ = tx.send(ev);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

pub async fn build(State(s): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery, body: Body) -> ApiResult<Response> {
    let params = parse_query(q)?;
    let max = s.mgr.config().max_upload_bytes;
    let path = s.mgr.build_upload_path()?;
    BodyFile {
        what: "the context",
        max,
        drain: 0,
        too_large: format!("context exceeds {max} bytes"),
        empty: AppError::bad_request("invalid_archive", "empty body: send the build context as tar.gz"),
        sha256: None,
        sync: false,
    }
    .write(body, &path)
    .await?;
    let mgr = s.mgr.clone();
    let events = wants_events(&headers);
    let (send, chan) = sink(events);
    let log: heyvm_core::manager::BuildLog = Arc::new(move |ev: BuildEvent| {
        let name = match ev {
            BuildEvent::Step { .. } => "step",
            BuildEvent::Output { .. } => "output",
        };
        send(Event::default().event(name).data(serde_json::to_string(&ev).unwrap_or_default()));
    });
    let fut = async move {
        let out = mgr.build_from_archive(path, params, log).await?;
        Ok(serde_json::to_value(out).unwrap_or_default())
    };
    respond(events, chan, fut).await
}

pub async fn push(State(s): State<AppState>, headers: HeaderMap, ApiJson(req): ApiJson<PushImageRequest>) -> ApiResult<Response> {
    let mgr = s.mgr.clone();
    let events = wants_events(&headers);
    let (send, chan) = sink(events);
    let progress: heyvm_core::images::ProgressFn =
        Arc::new(move |ev| send(Event::default().event("progress").data(serde_json::to_string(&ev).unwrap_or_default())));
    let fut = async move {
        let digest = mgr.images().push(&req.reference, progress).await?;
        Ok(json!({ "reference": req.reference, "digest": digest }))
    };
    respond(events, chan, fut).await
}
