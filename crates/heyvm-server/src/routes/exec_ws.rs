//! `GET /sandboxes/:id/exec/ws`: one command over a WebSocket, stdin in and
//! output out, as it happens.
//!
//! Client → server: the first message is a text frame holding the exec
//! request (`{"command", "args"?, "cwd"?, "env"?, "timeout_secs"?,
//! "stdin"?, "stdin_encoding"?}`; its `stdin` is sent first). Then binary
//! frames are stdin bytes, text `{"type":"stdin_eof"}` closes stdin, and
//! closing the socket kills the command.
//!
//! Server → client: text `{"type":"started","pid"}`; binary frames whose
//! first byte is `1` (stdout) or `2` (stderr) followed by the bytes; finally
//! text `{"type":"exit","exit_code","timed_out","oom_killed","signal",
//! "duration_ms"}` (or `{"type":"error","error","message"}`) and a close.
//!
//! Output is read by its own task so that stdin waiting for room (the
//! command not reading) never stops output from flowing, and the WebSocket
//! is read only while stdin has room, which pushes back on a fast sender.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use heyvm_core::agent::ExecEvent;
use heyvm_types::ExecRequest;
use serde_json::json;
use tokio::sync::mpsc;

use crate::error::AppError;
use crate::AppState;

/// Stdin frames buffered between the WebSocket and the agent.
const STDIN_QUEUE: usize = 16;
/// Output events buffered between the agent and the WebSocket.
const OUTPUT_QUEUE: usize = 16;

/// A plain HTTP request (no upgrade) gets the usual error JSON, not
/// axum's text rejection.
pub async fn exec_ws(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match ws {
        Ok(ws) => ws.on_upgrade(move |socket| run(s, id, socket)),
        Err(r) => {
            let status = if r.status() == StatusCode::UPGRADE_REQUIRED { StatusCode::UPGRADE_REQUIRED } else { StatusCode::BAD_REQUEST };
            AppError::new(status, "websocket_required", format!("this route speaks WebSocket: {}", r.body_text())).into_response()
        }
    }
}

fn error_frame(code: &str, message: &str) -> Message {
    Message::Text(json!({ "type": "error", "error": code, "message": message }).to_string().into())
}

async fn run(s: AppState, id: String, mut socket: WebSocket) {
    let req: ExecRequest = loop {
        match socket.recv().await {
            Some(Ok(Message::Text(t))) => match serde_json::from_str(&t) {
                Ok(r) => break r,
                Err(e) => {
                    let _ = socket.send(error_frame("invalid_json", &format!("the first message must be an exec request: {e}"))).await;
                    return;
                }
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => return,
        }
    };
    let (mut exec, mut stdin, first) = match s.mgr.start_exec_interactive(&id, &req).await {
        Ok(x) => x,
        Err(e) => {
            let e = AppError::from(e);
            let _ = socket.send(error_frame(e.code, &e.message)).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    };
    // Stdin writer task: bytes, then None for EOF.
    let (in_tx, mut in_rx) = mpsc::channel::<Option<Vec<u8>>>(STDIN_QUEUE);
    let writer = tokio::spawn(async move {
        if !first.is_empty() && stdin.send(&first).await.is_err() {
            return;
        }
        while let Some(item) = in_rx.recv().await {
            let res = match item {
                Some(data) => stdin.send(&data).await,
                None => stdin.close().await,
            };
            if res.is_err() {
                return;
            }
        }
        // Keep the stream open until the exec ends (dropping it kills it).
        std::future::pending::<()>().await;
    });
    let (out_tx, mut out_rx) = mpsc::channel(OUTPUT_QUEUE);
    let reader = tokio::spawn(async move {
        loop {
            let ev = exec.agent.next().await;
            let end = !matches!(ev, Ok(ExecEvent::Started { .. } | ExecEvent::Stdout(_) | ExecEvent::Stderr(_)));
            let ev = ev.map(|e| match e {
                ExecEvent::Exit(x) => {
                    let oom = exec.oom_killed(&x);
                    (ExecEvent::Exit(x), oom)
                }
                other => (other, false),
            });
            if out_tx.send(ev).await.is_err() || end {
                break;
            }
        }
        // Hold the exec until the socket side is done with it (aborted).
        std::future::pending::<()>().await;
    });
    let mut pending: Option<Option<Vec<u8>>> = None;
    let mut stdin_open = true;
    loop {
        tokio::select! {
            ev = out_rx.recv() => {
                let Some(ev) = ev else { break };
                let (msg, last) = match ev {
                    Ok((ExecEvent::Started { pid }, _)) => (Message::Text(json!({"type": "started", "pid": pid}).to_string().into()), false),
                    Ok((ExecEvent::Stdout(d), _)) => (Message::Binary(tagged(1, &d).into()), false),
                    Ok((ExecEvent::Stderr(d), _)) => (Message::Binary(tagged(2, &d).into()), false),
                    Ok((ExecEvent::Exit(x), oom)) => (Message::Text(json!({
                        "type": "exit", "exit_code": x.code, "timed_out": x.timed_out, "oom_killed": oom,
                        "signal": x.signal, "duration_ms": x.duration_ms,
                    }).to_string().into()), true),
                    Err(e) => {
                        let code = if e.kind() == std::io::ErrorKind::InvalidInput { "invalid_request" } else { "agent_unreachable" };
                        (error_frame(code, &e.to_string()), true)
                    }
                };
                if socket.send(msg).await.is_err() {
                    break;
                }
                if last {
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
            }
            permit = in_tx.reserve(), if pending.is_some() => {
                if let Ok(p) = permit {
                    p.send(pending.take().flatten());
                } else {
                    pending = None;
                }
            }
            msg = socket.recv(), if pending.is_none() => match msg {
                Some(Ok(Message::Binary(b))) if stdin_open => pending = Some(Some(b.to_vec())),
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                    if v["type"] == "stdin_eof" && stdin_open {
                        stdin_open = false;
                        pending = Some(None);
                    }
                }
                Some(Ok(_)) => {}
                // Client gone: dropping the exec kills the command.
                None | Some(Err(_)) => break,
            },
        }
    }
    // Dropping the exec (with the reader task) kills a command still running.
    reader.abort();
    writer.abort();
}

fn tagged(tag: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(tag);
    v.extend_from_slice(data);
    v
}
