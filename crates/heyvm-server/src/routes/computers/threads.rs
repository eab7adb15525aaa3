//! Thread scope: a sandbox per `(agentId, threadId)`, created by the first
//! `POST /api/agents/:id/threads/:thread/computer/{run,read-file,write-file}`
//! and destroyed by `DELETE /api/agents/:id/threads/:thread`. (With `scope:
//! agent` the thread routes use the agent's bootstrapped sandbox instead.)

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use heyvm_mcp::files;
use heyvm_types::{CreateSandboxRequest, ExecRequest};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{heyvm_config, not_ready, sandbox_err, sandbox_name};
use crate::error::{ApiResult, AppError};
use crate::extract::ApiJson;
use crate::AppState;

/// Thread sandboxes are deleted after this much running time even if the
/// thread never ends (a day).
const THREAD_TTL_SECS: u64 = 86_400;

fn invalid(msg: impl Into<String>) -> AppError {
    AppError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", msg)
}

/// The sandbox this thread's tools act on, created on first use.
async fn thread_sandbox(s: &AppState, agent: &str, thread: &str) -> Result<String, AppError> {
    let cfg = heyvm_config(&s.computers, agent)?;
    if thread.is_empty() || thread.len() > 128 {
        return Err(invalid("thread ids are 1 to 128 characters"));
    }
    if cfg.scope == "agent" || cfg.mode == "persistent" {
        return super::bootstrap::agent_sandbox(s, agent)?.ok_or_else(|| not_ready(agent));
    }
    // One creation at a time, so two first calls do not make two sandboxes.
    let _guard = s.computers.create_lock.lock().await;
    if let Some(b) = s.computers.store.sandbox(agent, thread).map_err(sandbox_err)? {
        if s.mgr.resolve(&b.sandbox_id).is_ok() {
            return Ok(b.sandbox_id);
        }
    }
    let req = CreateSandboxRequest {
        name: Some(sandbox_name("thread", agent)),
        size_class: cfg.size_class.parse().ok(),
        ttl_seconds: Some(THREAD_TTL_SECS),
        idle_timeout_seconds: Some(s.computers.idle_secs),
        ..Default::default()
    };
    let info = s.mgr.create(req).await.map_err(sandbox_err)?;
    s.computers.store.bind(agent, thread, &info.id).map_err(sandbox_err)?;
    Ok(info.id)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunBody {
    command: String,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    timeout_secs: Option<f64>,
    #[serde(default)]
    stdin: Option<String>,
}

/// `{stdout, stderr, exitCode, timedOut, sandboxId}`.
pub async fn run(
    State(s): State<AppState>,
    Path((agent, thread)): Path<(String, String)>,
    ApiJson(b): ApiJson<RunBody>,
) -> ApiResult<Json<Value>> {
    let id = thread_sandbox(&s, &agent, &thread).await?;
    let req = ExecRequest {
        command: "/bin/sh".into(),
        args: vec!["-c".into(), b.command],
        cwd: b.cwd,
        env: b.env,
        timeout_secs: b.timeout_secs,
        stdin: b.stdin,
        ..Default::default()
    };
    let r = s.mgr.exec(&id, &req).await.map_err(sandbox_err)?;
    Ok(Json(json!({"stdout": r.stdout, "stderr": r.stderr, "exitCode": r.exit_code, "timedOut": r.timed_out, "sandboxId": id})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WriteBody {
    path: String,
    content: String,
    /// `utf8` (default) or `base64`.
    #[serde(default)]
    encoding: Option<String>,
}

pub async fn write_file(
    State(s): State<AppState>,
    Path((agent, thread)): Path<(String, String)>,
    ApiJson(b): ApiJson<WriteBody>,
) -> ApiResult<Json<Value>> {
    let bytes = match b.encoding.as_deref().unwrap_or("utf8") {
        "utf8" => b.content.into_bytes(),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(b.content.trim())
            .map_err(|e| invalid(format!("content is not valid base64: {e}")))?,
        other => return Err(invalid(format!("encoding must be utf8 or base64, got '{other}'"))),
    };
    let id = thread_sandbox(&s, &agent, &thread).await?;
    let size = s.mgr.write_path(&id, &b.path, &bytes).await.map_err(|e| file_err(&b.path, "write", e))?;
    Ok(Json(json!({"path": b.path, "size": size, "sandboxId": id})))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadBody {
    path: String,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
}

/// `{path, size, offset, content, encoding}` (`utf8`, or `base64` for binary).
pub async fn read_file(
    State(s): State<AppState>,
    Path((agent, thread)): Path<(String, String)>,
    ApiJson(b): ApiJson<ReadBody>,
) -> ApiResult<Json<Value>> {
    let id = thread_sandbox(&s, &agent, &thread).await?;
    let offset = b.offset.unwrap_or(0);
    let (size, bytes) =
        s.mgr.read_path(&id, &b.path, offset, files::read_limit(b.limit)).await.map_err(|e| file_err(&b.path, "read", e))?;
    let (content, encoding) = files::shown(bytes);
    Ok(Json(json!({"path": b.path, "size": size, "offset": offset, "content": content, "encoding": encoding})))
}

/// A file failure in the seed's dialect: `FILE_NOT_FOUND` 404 for a
/// missing file, the sandbox errors as elsewhere, else 400 with why.
fn file_err(path: &str, what: &str, e: heyvm_core::CoreError) -> AppError {
    match e.code() {
        "file_not_found" => AppError::new(StatusCode::NOT_FOUND, "FILE_NOT_FOUND", format!("could not {what} {path}: {e}")),
        "invalid_path" | "invalid_request" | "permission_denied" | "read_only_mount" | "conflict" | "no_space" => {
            invalid(format!("could not {what} {path}: {e}"))
        }
        _ => sandbox_err(e),
    }
}

/// Ends a thread: its sandbox (thread scope) is deleted with its files.
pub async fn end_thread(State(s): State<AppState>, Path((agent, thread)): Path<(String, String)>) -> ApiResult<Json<Value>> {
    heyvm_config(&s.computers, &agent)?;
    let bound = s.computers.store.sandbox(&agent, &thread).map_err(sandbox_err)?;
    let mut deleted = None;
    if let Some(b) = bound {
        match s.mgr.delete(&b.sandbox_id).await {
            Ok(_) | Err(heyvm_core::CoreError::NotFound(_)) => deleted = Some(b.sandbox_id),
            Err(e) => return Err(sandbox_err(e)),
        }
        s.computers.store.unbind(&agent, &thread).map_err(sandbox_err)?;
    }
    Ok(Json(json!({"agentId": agent, "threadId": thread, "deletedSandboxId": deleted})))
}
