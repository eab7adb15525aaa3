//! Server-sent event streams: exec output as it happens, and log follow.
//!
//! Both pull from their source only when the client is ready for more, so
//! output of any size streams with bounded daemon memory. Dropping the
//! response (client gone) drops the agent connection, which kills the
//! command unless it was started with `background: true`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use heyvm_core::agent::ExecEvent;
use heyvm_core::manager::{LogQuery, RunningExec};
use heyvm_core::text::Utf8Chunker;
use heyvm_protocol::LogLine;
use heyvm_types::ExecRequest;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiQuery};
use crate::AppState;

fn sse(events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

fn event(name: &str, data: serde_json::Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

struct ExecState {
    run: RunningExec,
    out: Utf8Chunker,
    err: Utf8Chunker,
    done: bool,
}

/// `POST /sandboxes/:id/exec/stream`: `exec_started {pid}`, `stdout`/`stderr`
/// `{data}` in order, then `exit {exit_code, duration_ms, …}` or `error`.
pub async fn exec_stream(State(s): State<AppState>, Path(id): Path<String>, ApiJson(req): ApiJson<ExecRequest>) -> ApiResult<Response> {
    let run = s.mgr.start_exec(&id, &req).await?;
    let st = ExecState { run, out: Utf8Chunker::default(), err: Utf8Chunker::default(), done: false };
    let events = stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let ev = match st.run.agent.next().await {
            Ok(ExecEvent::Started { pid }) => event("exec_started", json!({ "pid": pid })),
            Ok(ExecEvent::Stdout(d)) => event("stdout", json!({ "data": st.out.push(&d) })),
            Ok(ExecEvent::Stderr(d)) => event("stderr", json!({ "data": st.err.push(&d) })),
            Ok(ExecEvent::Exit(x)) => {
                st.done = true;
                let oom = st.run.oom_killed(&x);
                event(
                    "exit",
                    json!({ "exit_code": x.code, "duration_ms": x.duration_ms, "timed_out": x.timed_out, "oom_killed": oom, "signal": x.signal }),
                )
            }
            Err(e) => {
                st.done = true;
                event("error", json!({ "message": e.to_string() }))
            }
        };
        Some((Ok(ev), st))
    });
    Ok(sse(events))
}

#[derive(Deserialize)]
pub struct FollowQuery {
    backlog: Option<usize>,
    source: Option<String>,
    level: Option<String>,
}

/// Tails the log file: the backlog first, then lines as they are appended.
struct LogFollower {
    mgr: std::sync::Arc<heyvm_core::SandboxManager>,
    sandbox_id: String,
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    /// JSON-encoded entries ready to send.
    queue: VecDeque<String>,
    source: Option<String>,
    level: Option<String>,
}

impl LogFollower {
    fn open(s: &AppState, id: &str, q: FollowQuery) -> ApiResult<Self> {
        let rec = s.mgr.resolve(id)?;
        let query = LogQuery {
            limit: Some(q.backlog.unwrap_or(100)),
            tail: true,
            source: q.source.clone(),
            level: q.level.clone(),
            ..Default::default()
        };
        let path = s.mgr.data_dir().sandbox(&rec.id).log_file();
        // Measure the file before reading the backlog so nothing falls between.
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let backlog = s.mgr.logs(&rec.id, &query)?;
        let queue = backlog.logs.iter().map(|l| serde_json::to_string(l).unwrap_or_default()).collect();
        Ok(LogFollower {
            mgr: s.mgr.clone(),
            sandbox_id: rec.id,
            path,
            offset,
            partial: Vec::new(),
            queue,
            source: q.source,
            level: q.level,
        })
    }

    fn wanted(&self, l: &LogLine) -> bool {
        self.source.as_deref().is_none_or(|s| s == l.source) && self.level.as_deref().is_none_or(|v| v == l.level)
    }

    /// Reads whatever was appended since the last poll.
    fn poll(&mut self) -> std::io::Result<()> {
        let mut f = std::fs::File::open(&self.path)?;
        let len = f.metadata()?.len();
        if len < self.offset {
            self.offset = 0; // truncated: start over
        }
        if len == self.offset {
            return Ok(());
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::with_capacity((len - self.offset).min(1 << 20) as usize);
        f.take(1 << 20).read_to_end(&mut buf)?;
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            if let Ok(l) = serde_json::from_slice::<LogLine>(&line) {
                if self.wanted(&l) {
                    self.queue.push_back(serde_json::to_string(&l).unwrap_or_default());
                }
            }
        }
        Ok(())
    }

    /// The next entry as JSON, waiting for one; None once the sandbox is gone.
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(line) = self.queue.pop_front() {
                return Some(line);
            }
            if self.mgr.resolve(&self.sandbox_id).is_err() {
                return None;
            }
            let _ = self.poll();
            if self.queue.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// `GET /sandboxes/:id/logs/stream?backlog=N`: the last N entries, then new
/// ones as they are written. Over SSE (`log` events, then `end` when the
/// sandbox is deleted) or, if the client asks for a WebSocket upgrade, one
/// JSON text frame per entry.
pub async fn logs_stream(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<FollowQuery>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let follower = LogFollower::open(&s, &id, q)?;
    if let Ok(ws) = ws {
        return Ok(ws.on_upgrade(move |socket| follow_over_websocket(socket, follower)));
    }
    let events = stream::unfold(Some(follower), |f| async move {
        let mut f = f?;
        match f.next().await {
            Some(line) => Some((Ok(Event::default().event("log").data(line)), Some(f))),
            None => Some((Ok(event("end", json!({ "reason": "sandbox deleted" }))), None)),
        }
    });
    Ok(sse(events))
}

async fn follow_over_websocket(mut socket: WebSocket, mut f: LogFollower) {
    loop {
        tokio::select! {
            line = f.next() => match line {
                Some(line) => {
                    if socket.send(Message::Text(line.into())).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            },
            msg = socket.recv() => {
                if matches!(msg, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) {
                    return;
                }
            }
        }
    }
}
