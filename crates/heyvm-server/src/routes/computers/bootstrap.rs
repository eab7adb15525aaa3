//! Bootstrapping an agent's computer (`POST /api/agents/from-template`),
//! watching it (`GET …/computer/bootstrap/stream`, SSE ending in `ready` or
//! `error`) and the exec stream on the result (`POST …/computer/exec`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream;
use heyvm_core::agent::ExecEvent;
use heyvm_core::computers::ComputerConfig;
use heyvm_core::text::Utf8Chunker;
use heyvm_types::{CreateSandboxRequest, ExecRequest};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{heyvm_config, not_ready, sandbox_err, sandbox_name, Computers};
use crate::error::{ApiResult, AppError};
use crate::extract::ApiJson;
use crate::AppState;

/// One agent's bootstrap: its events so far; the watch counts them.
struct Run {
    events: Mutex<Vec<(String, Value)>>,
    count: watch::Sender<usize>,
}

impl Run {
    fn push(&self, name: &str, data: Value) {
        let mut ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
        ev.push((name.to_string(), data));
        self.count.send_replace(ev.len());
    }

    fn finished(&self) -> bool {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).last().is_some_and(|(n, _)| n == "ready" || n == "error")
    }
}

#[derive(Default)]
pub struct Bootstraps {
    runs: Mutex<HashMap<String, Arc<Run>>>,
}

impl Bootstraps {
    fn get(&self, agent: &str) -> Option<Arc<Run>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner()).get(agent).cloned()
    }

    /// `none`, `running`, `ready` or `error`.
    pub fn state(&self, agent: &str) -> &'static str {
        match self.get(agent) {
            None => "none",
            Some(r) => match r.events.lock().unwrap_or_else(|e| e.into_inner()).last().map(|(n, _)| n.as_str()) {
                Some("ready") => "ready",
                Some("error") => "error",
                _ => "running",
            },
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FromTemplate {
    agent_id: String,
    /// Recorded in the bootstrap's events; the computer is the same for all.
    #[serde(default)]
    template: Option<Value>,
}

/// The agent's bootstrapped sandbox id, if it still exists.
pub(super) fn agent_sandbox(s: &AppState, agent: &str) -> Result<Option<String>, AppError> {
    let bound = s.computers.store.sandbox(agent, "").map_err(sandbox_err)?;
    Ok(bound.filter(|b| s.mgr.resolve(&b.sandbox_id).is_ok()).map(|b| b.sandbox_id))
}

pub async fn from_template(State(s): State<AppState>, ApiJson(req): ApiJson<FromTemplate>) -> ApiResult<(StatusCode, Json<Value>)> {
    let agent = req.agent_id;
    if agent.is_empty() || agent.len() > 128 || agent.chars().any(|c| c.is_control() || c == '/') {
        return Err(AppError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "agentId must be 1 to 128 printable characters without '/'"));
    }
    // An agent the server has not seen gets a persistent heyvm computer.
    if s.computers.store.config(&agent).map_err(sandbox_err)?.is_none() {
        s.computers.store.put_config(&agent, &ComputerConfig::heyvm_persistent()).map_err(sandbox_err)?;
    }
    let cfg = heyvm_config(&s.computers, &agent)?;
    let stream_url = format!("/api/agents/{agent}/computer/bootstrap/stream");
    if let Some(id) = agent_sandbox(&s, &agent)? {
        return Ok((StatusCode::OK, Json(json!({"agentId": agent, "status": "ready", "sandboxId": id, "streamUrl": stream_url}))));
    }
    let run = {
        let mut runs = s.computers.bootstraps.runs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = runs.get(&agent).filter(|r| !r.finished()) {
            let _ = r;
            return Ok((StatusCode::ACCEPTED, Json(json!({"agentId": agent, "status": "bootstrapping", "streamUrl": stream_url}))));
        }
        let run = Arc::new(Run { events: Mutex::default(), count: watch::Sender::new(0) });
        runs.insert(agent.clone(), run.clone());
        run
    };
    tokio::spawn(bootstrap(s.clone(), agent.clone(), cfg, req.template, run));
    Ok((StatusCode::ACCEPTED, Json(json!({"agentId": agent, "status": "bootstrapping", "streamUrl": stream_url}))))
}

/// Creates the agent-scoped sandbox and checks it answers.
async fn bootstrap(s: AppState, agent: String, cfg: ComputerConfig, template: Option<Value>, run: Arc<Run>) {
    let c: &Arc<Computers> = &s.computers;
    run.push("progress", json!({"step": "create", "message": "creating the agent's sandbox", "template": template}));
    let req = CreateSandboxRequest {
        name: Some(sandbox_name("agent", &agent)),
        size_class: cfg.size_class.parse().ok(),
        idle_timeout_seconds: Some(c.idle_secs),
        ..Default::default()
    };
    let info = match s.mgr.create(req).await {
        Ok(i) => i,
        Err(e) => {
            let e = sandbox_err(e);
            return run.push("error", json!({"code": e.code, "message": e.message}));
        }
    };
    run.push("progress", json!({"step": "created", "message": format!("sandbox {} is {}", info.id, info.status), "sandboxId": info.id}));
    let check = ExecRequest { command: "uname -a".into(), ..Default::default() };
    match s.mgr.exec(&info.id, &check).await {
        Ok(r) if r.exit_code == 0 => run.push("progress", json!({"step": "check", "message": r.stdout.trim()})),
        Ok(r) => return run.push("error", json!({"code": "SANDBOX_UNREACHABLE", "message": format!("check failed: {}", r.stderr.trim())})),
        Err(e) => {
            let e = sandbox_err(e);
            return run.push("error", json!({"code": e.code, "message": e.message}));
        }
    }
    if let Err(e) = c.store.bind(&agent, "", &info.id) {
        return run.push("error", json!({"code": "SANDBOX_UNREACHABLE", "message": e.to_string()}));
    }
    run.push("ready", json!({"agentId": agent, "sandboxId": info.id}));
}

fn sse(events: impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

fn event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// Replays the bootstrap's events and follows it to `ready` or `error`.
pub async fn stream(State(s): State<AppState>, Path(agent): Path<String>) -> ApiResult<Response> {
    heyvm_config(&s.computers, &agent)?;
    let Some(run) = s.computers.bootstraps.get(&agent) else {
        // Bootstrapped by an earlier daemon: already ready.
        return match agent_sandbox(&s, &agent)? {
            Some(id) => Ok(sse(stream::iter([Ok(event("ready", &json!({"agentId": agent, "sandboxId": id})))]))),
            None => Err(not_ready(&agent)),
        };
    };
    let rx = run.count.subscribe();
    let events = stream::unfold((run, rx, 0usize, false), |(run, mut rx, next, done)| async move {
        if done {
            return None;
        }
        loop {
            let item = run.events.lock().unwrap_or_else(|e| e.into_inner()).get(next).cloned();
            if let Some((name, data)) = item {
                let last = name == "ready" || name == "error";
                return Some((Ok(event(&name, &data)), (run, rx, next + 1, last)));
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    });
    Ok(sse(events))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComputerExec {
    command: String,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    env: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    timeout_secs: Option<f64>,
    #[serde(default)]
    stdin: Option<String>,
}

/// `POST /api/agents/:id/computer/exec`: SSE `exec_started`, `stdout`,
/// `stderr`, `exit`. Never creates a sandbox: 409 `SANDBOX_NOT_READY`
/// before the bootstrap. A computer stopped for idleness resumes.
pub async fn exec(State(s): State<AppState>, Path(agent): Path<String>, ApiJson(req): ApiJson<ComputerExec>) -> ApiResult<Response> {
    heyvm_config(&s.computers, &agent)?;
    let id = agent_sandbox(&s, &agent)?.ok_or_else(|| not_ready(&agent))?;
    let ereq = ExecRequest {
        command: "/bin/sh".into(),
        args: vec!["-c".into(), req.command],
        cwd: req.cwd,
        env: req.env,
        timeout_secs: req.timeout_secs,
        stdin: req.stdin,
        ..Default::default()
    };
    let run = s.mgr.start_exec(&id, &ereq).await.map_err(sandbox_err)?;
    let st = (run, Utf8Chunker::default(), Utf8Chunker::default(), false);
    let events = stream::unfold(st, |(mut run, mut out, mut err, done)| async move {
        if done {
            return None;
        }
        let (ev, last) = match run.agent.next().await {
            Ok(ExecEvent::Started { pid }) => (event("exec_started", &json!({"pid": pid})), false),
            Ok(ExecEvent::Stdout(d)) => (event("stdout", &json!({"data": out.push(&d)})), false),
            Ok(ExecEvent::Stderr(d)) => (event("stderr", &json!({"data": err.push(&d)})), false),
            Ok(ExecEvent::Exit(x)) => (
                event("exit", &json!({"exitCode": x.code, "exit_code": x.code, "timedOut": x.timed_out, "durationMs": x.duration_ms})),
                true,
            ),
            Err(e) => (event("error", &json!({"code": "SANDBOX_UNREACHABLE", "message": e.to_string()})), true),
        };
        Some((Ok(ev), (run, out, err, last)))
    });
    Ok(sse(events))
}
