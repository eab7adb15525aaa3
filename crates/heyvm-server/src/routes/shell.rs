//! Interactive shells over WebSocket: `GET /sandboxes/:id/shell-stream`
//! and `POST /sandboxes/:id/shell-session` (which returns the stream's URL).
//!
//! Frame protocol (heyvm-compatible): the client's first frame is JSON
//! `{type:"init", cols, rows, env?, cwd?, user?, sessionId?, lastSeq?}`; the server
//! answers `{type:"ready", sessionId, lastSeq}`. Binary frames: stdin
//! `0x01 + bytes`, output `0x02 + u64 big-endian seq + bytes` (seq counts
//! output frames from 1). JSON control frames: client `resize{cols,rows}`,
//! `ack{seq}`, `close`; server `exit{code}`, `error{code, message}`.
//!
//! Resuming: `init` with `sessionId` re-attaches to a live session and
//! replays output after `lastSeq` (or after the last `ack` when absent).
//! Sessions, their 1 MiB output bound and expiry: see `heyvm_core::shell`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use heyvm_core::manager::{terminal_size, ShellRequest};
use heyvm_core::shell::{Attachment, Input, ShellEnd, ShellSession, OUTPUT_BUFFER_BYTES};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiResult, AppError};
use crate::AppState;

const FRAME_STDIN: u8 = 0x01;
const FRAME_STDOUT: u8 = 0x02;
/// How long a new connection may take to send `init`.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Keeps idle connections (and proxies) alive; heyo-sdk gives up on a
/// connection after 60 s of silence.
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// Output sent per burst before checking the client's input again.
const BURST_BYTES: usize = 256 * 1024;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientFrame {
    Init {
        cols: u64,
        rows: u64,
        #[serde(default)]
        env: Option<BTreeMap<String, String>>,
        #[serde(default)]
        cwd: Option<String>,
        /// Sandbox user for a new session (default: the image's `User`).
        #[serde(default)]
        user: Option<String>,
        #[serde(default, rename = "sessionId")]
        session_id: Option<String>,
        #[serde(default, rename = "lastSeq")]
        last_seq: Option<u64>,
    },
    Resize {
        cols: u64,
        rows: u64,
    },
    Ack {
        seq: u64,
    },
    Close,
}

/// `POST /sandboxes/:id/shell-session` → `{connection_url, sandbox_id}`.
pub async fn create_session(State(s): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let rec = s.mgr.require_running(&id, "open a shell")?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
        .ok_or_else(|| AppError::bad_request("invalid_host", "the request has no usable Host header to build the stream URL from"))?;
    let secure = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https");
    let scheme = if secure { "wss" } else { "ws" };
    let mut url = format!("{scheme}://{host}/sandboxes/{}/shell-stream", rec.id);
    if let Some(token) = stream_token(&s, &rec.id) {
        url.push_str("?token=");
        url.push_str(&token);
    }
    Ok(Json(json!({ "connection_url": url, "sandbox_id": rec.id })))
}

/// Lifetime of the token in a `connection_url`.
pub const STREAM_TOKEN_TTL_SECS: i64 = 60;
/// With `JWT_SECRET` set, the URL carries a short-lived token that only
/// opens this sandbox's shell stream, for clients that cannot send an
/// `Authorization` header on a WebSocket (browsers). It may be used until
/// it expires.
fn stream_token(state: &AppState, sandbox_id: &str) -> Option<String> {
    let auth = state.auth.as_deref()?;
    Some(auth.mint(&format!("{}{sandbox_id}", crate::auth::STREAM_SCOPE), STREAM_TOKEN_TTL_SECS))
}

/// Whether a token is limited to one purpose (a stream token): such tokens
/// open nothing beyond their stream, private proxy endpoints included.
pub(crate) fn is_scoped(claims: &crate::auth::Claims) -> bool {
    claims.sub.as_deref().is_some_and(|s| s.starts_with(crate::auth::STREAM_SCOPE))
}

/// `GET /sandboxes/:id/shell-stream` (WebSocket).
pub async fn stream(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let rec = s.mgr.resolve(&id)?;
    let ws = ws.map_err(|r| {
        let status = if r.status() == StatusCode::UPGRADE_REQUIRED { StatusCode::UPGRADE_REQUIRED } else { StatusCode::BAD_REQUEST };
        AppError::new(status, "websocket_required", format!("this route speaks WebSocket: {}", r.body_text()))
    })?;
    Ok(ws.on_upgrade(move |socket| serve(s, rec.id, socket)))
}

async fn send_json(ws: &mut WebSocket, v: Value) -> bool {
    ws.send(Message::Text(v.to_string().into())).await.is_ok()
}

async fn fail(mut ws: WebSocket, code: &str, message: impl Into<String>) {
    let _ = send_json(&mut ws, json!({"type": "error", "code": code, "message": message.into()})).await;
    let _ = ws.send(Message::Close(None)).await;
}

async fn serve(s: AppState, sandbox_id: String, mut ws: WebSocket) {
    let first = match tokio::time::timeout(INIT_TIMEOUT, ws.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<ClientFrame>(&t).map_err(|e| e.to_string()),
        Ok(Some(Ok(_))) => Err("the first frame must be a JSON text frame".into()),
        Ok(_) => return,
        Err(_) => Err(format!("no init frame within {}s", INIT_TIMEOUT.as_secs())),
    };
    let (cols, rows, env, cwd, user, session_id, last_seq) = match first {
        Ok(ClientFrame::Init { cols, rows, env, cwd, user, session_id, last_seq }) => (cols, rows, env, cwd, user, session_id, last_seq),
        Ok(_) => return fail(ws, "invalid_frame", "the first frame must be {\"type\":\"init\", …}").await,
        Err(e) => return fail(ws, "invalid_frame", format!("bad init frame: {e}")).await,
    };
    let (cols, rows) = match terminal_size(cols, rows) {
        Ok(size) => size,
        Err(e) => return fail(ws, e.code(), e.to_string()).await,
    };
    // Marks the sandbox used; one stopped for idleness starts again.
    let sandbox_id = match s.mgr.prepare_use(&sandbox_id).await {
        Ok(rec) => rec.id,
        Err(e) => return fail(ws, e.code(), e.to_string()).await,
    };
    let (session, from, resumed) = match session_id {
        Some(sid) => match s.mgr.find_shell(&sandbox_id, &sid) {
            Ok(Some(session)) => {
                // A position beyond what exists would silently skip output.
                let from = last_seq.unwrap_or_else(|| session.acked()).min(session.last_seq());
                (session, from, true)
            }
            Ok(None) => return fail(ws, "session_expired", format!("shell session '{sid}' does not exist or has expired")).await,
            Err(e) => return fail(ws, e.code(), e.to_string()).await,
        },
        None => {
            let req = ShellRequest { cols, rows, env, cwd, argv: None, user };
            match s.mgr.open_shell(&sandbox_id, &req).await {
                Ok(session) => (session, 0, false),
                Err(e) => return fail(ws, e.code(), e.to_string()).await,
            }
        }
    };
    let attachment = session.attach(from);
    let _busy = s.mgr.busy_guard(&sandbox_id);
    if resumed && !attachment.input(Input::Resize { cols, rows }).await {
        tracing::debug!(session = %session.id, "resize on resume: shell already gone");
    }
    let ready = json!({"type": "ready", "sessionId": session.id, "lastSeq": session.last_seq()});
    if !send_json(&mut ws, ready).await {
        return;
    }
    bridge(&s, ws, attachment, from).await;
}

/// Shuttles frames between one client and its session until either ends.
async fn bridge(s: &AppState, mut ws: WebSocket, mut att: Attachment, mut seq: u64) {
    let session: std::sync::Arc<ShellSession> = att.session.clone();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    loop {
        let pending = att.pending(seq, BURST_BYTES);
        if pending.superseded {
            return fail(ws, "superseded", "another client attached to this shell session").await;
        }
        if pending.lost > 0 {
            let message = format!(
                "{} output frames were dropped while no client was attached (the session keeps {} KiB)",
                pending.lost,
                OUTPUT_BUFFER_BYTES >> 10
            );
            if !send_json(&mut ws, json!({"type": "error", "code": "output_lost", "message": message})).await {
                return;
            }
            seq += pending.lost;
        }
        for (n, data) in &pending.chunks {
            let mut frame = Vec::with_capacity(9 + data.len());
            frame.push(FRAME_STDOUT);
            frame.extend_from_slice(&n.to_be_bytes());
            frame.extend_from_slice(data);
            if ws.send(Message::Binary(frame.into())).await.is_err() {
                return;
            }
            seq = *n;
        }
        att.sent(seq);
        if let Some(end) = pending.end {
            let frame = match end {
                ShellEnd::Exited { code } => json!({"type": "exit", "code": code}),
                ShellEnd::Failed(message) => json!({"type": "error", "code": "shell_failed", "message": message}),
            };
            if send_json(&mut ws, frame).await {
                // The client knows how it ended: nothing left to resume.
                s.mgr.shell_sessions().remove(&session.id);
            }
            let _ = ws.send(Message::Close(None)).await;
            return;
        }
        if pending.more {
            // Let the client's input in between bursts of output.
            if let Some(msg) = poll_now(&mut ws).await {
                if !handle_client(&mut ws, &att, msg).await {
                    return;
                }
            }
            continue;
        }
        tokio::select! {
            _ = att.changed() => {}
            msg = ws.recv() => {
                if !handle_client(&mut ws, &att, msg).await {
                    return;
                }
            }
            _ = ping.tick() => {
                if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A client frame if one is ready right now.
async fn poll_now(ws: &mut WebSocket) -> Option<Option<Result<Message, axum::Error>>> {
    tokio::select! {
        biased;
        msg = ws.recv() => Some(msg),
        _ = std::future::ready(()) => None,
    }
}

/// Applies one client frame; false when the connection is over.
async fn handle_client(ws: &mut WebSocket, att: &Attachment, msg: Option<Result<Message, axum::Error>>) -> bool {
    match msg {
        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => false,
        Some(Ok(Message::Binary(b))) => match b.split_first() {
            Some((&FRAME_STDIN, data)) => {
                att.input(Input::Stdin(data.to_vec())).await;
                true
            }
            _ => send_json(
                ws,
                json!({"type": "error", "code": "invalid_frame", "message": "binary frames from the client must start with 0x01 (stdin)"}),
            )
            .await,
        },
        Some(Ok(Message::Text(t))) => match serde_json::from_str::<ClientFrame>(&t) {
            Ok(ClientFrame::Resize { cols, rows }) => match terminal_size(cols, rows) {
                Ok((cols, rows)) => {
                    att.input(Input::Resize { cols, rows }).await;
                    true
                }
                Err(e) => send_json(ws, json!({"type": "error", "code": e.code(), "message": e.to_string()})).await,
            },
            Ok(ClientFrame::Ack { seq }) => {
                att.ack(seq);
                true
            }
            Ok(ClientFrame::Close) => {
                // The exit frame follows once the shell has hung up.
                att.input(Input::HangUp).await;
                true
            }
            Ok(ClientFrame::Init { .. }) => {
                send_json(ws, json!({"type": "error", "code": "invalid_frame", "message": "init is only valid as the first frame"})).await
            }
            Err(e) => send_json(ws, json!({"type": "error", "code": "invalid_frame", "message": format!("bad control frame: {e}")})).await,
        },
        Some(Ok(_)) => true,
    }
}
