//! `PUT/GET /api/agents/:id/computer` and `GET …/computer/status`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use heyvm_core::computers::ComputerConfig;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{err, sandbox_err};
use crate::error::{ApiResult, AppError};
use crate::extract::ApiJson;
use crate::AppState;

const PROVIDERS: [&str; 4] = ["tensorlake", "vercel", "heyvm", "custom"];

/// Body of the PUT: every field optional; absent ones keep their current
/// value (or the seed's default for a new agent).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComputerUpdate {
    enabled: Option<bool>,
    provider: Option<String>,
    mode: Option<String>,
    scope: Option<String>,
    size_class: Option<String>,
    settings: Option<Value>,
}

fn invalid(msg: String) -> AppError {
    err(StatusCode::BAD_REQUEST, "INVALID_REQUEST", msg)
}

fn check_agent_id(id: &str) -> Result<(), AppError> {
    if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control() || c == '/') {
        return Err(invalid("agent ids are 1 to 128 printable characters without '/'".into()));
    }
    Ok(())
}

pub async fn put(State(s): State<AppState>, Path(agent): Path<String>, ApiJson(u): ApiJson<ComputerUpdate>) -> ApiResult<Json<Value>> {
    check_agent_id(&agent)?;
    let current = s.computers.store.config(&agent).map_err(sandbox_err)?;
    let mut c = current.unwrap_or(ComputerConfig {
        enabled: true,
        provider: "tensorlake".into(),
        mode: "ephemeral".into(),
        scope: "thread".into(),
        size_class: "small".into(),
        settings: json!({}),
    });
    if let Some(e) = u.enabled {
        c.enabled = e;
    }
    if let Some(p) = u.provider {
        if !PROVIDERS.contains(&p.as_str()) {
            return Err(invalid(format!("provider must be one of {}, got '{p}'", PROVIDERS.join(", "))));
        }
        c.provider = p;
    }
    if let Some(m) = u.mode {
        if !["ephemeral", "persistent", "custom"].contains(&m.as_str()) {
            return Err(invalid(format!("mode must be ephemeral, persistent or custom, got '{m}'")));
        }
        c.mode = m;
    }
    if let Some(sc) = u.scope {
        if !["thread", "agent"].contains(&sc.as_str()) {
            return Err(invalid(format!("scope must be thread or agent, got '{sc}'")));
        }
        c.scope = sc;
    }
    if let Some(z) = u.size_class {
        z.parse::<heyvm_types::SizeClass>().map_err(invalid)?;
        c.size_class = z;
    }
    if let Some(v) = u.settings {
        if !v.is_object() {
            return Err(invalid("settings must be an object".into()));
        }
        c.settings = v;
    }
    if c.mode == "persistent" && c.provider != "heyvm" {
        return Err(invalid(format!("mode 'persistent' requires provider 'heyvm' (the provider is '{}')", c.provider)));
    }
    s.computers.store.put_config(&agent, &c).map_err(sandbox_err)?;
    Ok(Json(view(&agent, &c)))
}

fn view(agent: &str, c: &ComputerConfig) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    v["agentId"] = json!(agent);
    v
}

pub async fn get(State(s): State<AppState>, Path(agent): Path<String>) -> ApiResult<Json<Value>> {
    match s.computers.store.config(&agent).map_err(sandbox_err)? {
        Some(c) => Ok(Json(view(&agent, &c))),
        None => Err(err(StatusCode::NOT_FOUND, "AGENT_NOT_FOUND", format!("agent '{agent}' has no computer configuration"))),
    }
}

/// `{agentId, provider, mode, scope, ready, bootstrap, sandboxId, sandboxStatus, stopReason, lastUsedAt}`.
pub async fn status(State(s): State<AppState>, Path(agent): Path<String>) -> ApiResult<Json<Value>> {
    let c = super::heyvm_config(&s.computers, &agent)?;
    let bound = s.computers.store.sandbox(&agent, "").map_err(sandbox_err)?;
    let info = bound.as_ref().and_then(|b| s.mgr.get(&b.sandbox_id).ok());
    Ok(Json(json!({
        "agentId": agent,
        "provider": c.provider,
        "mode": c.mode,
        "scope": c.scope,
        "ready": info.is_some(),
        "bootstrap": s.computers.bootstraps.state(&agent),
        "sandboxId": info.as_ref().map(|i| i.id.clone()),
        "sandboxStatus": info.as_ref().map(|i| i.status.to_string()),
        "stopReason": info.as_ref().and_then(|i| i.stop_reason.clone()),
        "lastUsedAt": info.as_ref().and_then(|i| i.last_used_at),
        "idleTimeoutSeconds": info.as_ref().and_then(|i| i.idle_timeout_seconds),
    })))
}
