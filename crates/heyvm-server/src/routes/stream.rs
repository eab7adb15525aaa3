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

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use heyvm_core::agent_client::ExecEvent;
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
                let oom = x.signal == Some(libc::SIGKILL) && !x.timed_out && st.run.oom_killed_since_start();
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

struct FollowState {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    queue: VecDeque<Event>,
    source: Option<String>,
    level: Option<String>,
}

impl FollowState {
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
                    self.queue.push_back(Event::default().event("log").data(serde_json::to_string(&l).unwrap_or_default()));
                }
            }
        }
        Ok(())
    }
}

/// `GET /sandboxes/:id/logs/stream?backlog=N`: the last N entries, then new
/// ones as they are written (`log` events); `end` when the sandbox is gone.
pub async fn logs_stream(State(s): State<AppState>, Path(id): Path<String>, ApiQuery(q): ApiQuery<FollowQuery>) -> ApiResult<Response> {
    let rec = s.mgr.resolve(&id)?;
    let backlog = q.backlog.unwrap_or(100);
    let query = LogQuery { limit: Some(backlog), tail: true, source: q.source.clone(), level: q.level.clone(), ..Default::default() };
    let initial = s.mgr.logs(&rec.id, &query)?;
    let path = s.mgr.data_dir().sandbox(&rec.id).log_file();
    let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let queue = initial
        .logs
        .into_iter()
        .map(|l| Event::default().event("log").data(serde_json::to_string(&l).unwrap_or_default()))
        .collect();
    let st = FollowState { path, offset, partial: Vec::new(), queue, source: q.source, level: q.level };
    let mgr = s.mgr.clone();
    let sandbox_id = rec.id;
    let events = stream::unfold(Some(st), move |st| {
        let mgr = mgr.clone();
        let sandbox_id = sandbox_id.clone();
        async move {
            let mut st = st?;
            loop {
                if let Some(ev) = st.queue.pop_front() {
                    return Some((Ok(ev), Some(st)));
                }
                if mgr.resolve(&sandbox_id).is_err() {
                    return Some((Ok(event("end", json!({ "reason": "sandbox deleted" }))), None));
                }
                let _ = st.poll();
                if st.queue.is_empty() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    Ok(sse(events))
}
