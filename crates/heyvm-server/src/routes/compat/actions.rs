//! `POST /sandbox/:id/{exec,start,stop}`.
//!
//! Unlike the native routes, start on a running sandbox and stop on a
//! stopped one succeed without doing anything (the SDK's `start()`/`stop()`
//! mean "make it so"); stop on a failed sandbox cleans it up as a
//! force-stop.

use axum::extract::{Path, State};
use axum::Json;
use heyvm_types::compat::{CompatExecRequest, DeployedSandbox};
use heyvm_types::{ExecRequest, ExecResponse, SandboxStatus};

use super::convert::deployed;
use crate::error::{ApiResult, AppError};
use crate::extract::ApiJson;
use crate::AppState;

/// Without `args` the command is a shell line (`sh -c`), as the SDK
/// documents; with them it is the program to run.
pub async fn exec(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CompatExecRequest>,
) -> ApiResult<Json<ExecResponse>> {
    if req.command.trim().is_empty() {
        return Err(AppError::bad_request("invalid_request", "command is required"));
    }
    let (command, args) = match req.args.filter(|a| !a.is_empty()) {
        Some(args) => (req.command, args),
        None => ("/bin/sh".to_string(), vec!["-c".to_string(), req.command]),
    };
    let native = ExecRequest { command, args, cwd: req.cwd, env: req.env, timeout_secs: req.timeout_secs, ..Default::default() };
    Ok(Json(s.mgr.exec(&id, &native).await?))
}

pub async fn start(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<DeployedSandbox>> {
    let info = s.mgr.get(&id)?;
    let info = match info.status {
        SandboxStatus::Running => info,
        _ => s.mgr.start(&id).await?,
    };
    Ok(Json(deployed(&s.mgr, info)))
}

pub async fn stop(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<DeployedSandbox>> {
    let info = s.mgr.get(&id)?;
    let info = match info.status {
        SandboxStatus::Stopped => info,
        SandboxStatus::Failed => s.mgr.stop(&id, true).await?,
        _ => s.mgr.stop(&id, false).await?,
    };
    Ok(Json(deployed(&s.mgr, info)))
}
