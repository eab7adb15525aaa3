//! `GET /sandboxes/inactive`, `GET /system/usage` and `GET /public-images`.

use axum::extract::State;
use axum::Json;
use heyvm_types::compat::{HostUsage, InactivePage, SandboxUsage, SystemUsage, UsageSnapshot};
use heyvm_types::SandboxStatus;
use serde::Deserialize;
use serde_json::json;

use super::convert::deployed;
use crate::error::{ApiResult, AppError};
use crate::extract::ApiQuery;
use crate::AppState;

#[derive(Deserialize)]
pub struct ImagesQuery {
    backend: Option<String>,
}

/// The images a deploy body's `image` can name, per backend that works
/// here (default backend first; `?backend=` one, by name or alias): what
/// it boots without an OCI image (`host` on bubblewrap, the VM image on
/// kvm), then the store's tagged images on the backends that boot them.
/// heyo-sdk's `list_public_images` reads `{images: [{id, name, …}]}`.
pub async fn public_images(State(s): State<AppState>, ApiQuery(q): ApiQuery<ImagesQuery>) -> Json<serde_json::Value> {
    let bases = s.mgr.base_images(q.backend.as_deref().filter(|b| !b.is_empty()));
    let stored = if bases.iter().any(|b| b.oci) { s.mgr.list_images() } else { Vec::new() };
    let mut images = Vec::new();
    for b in &bases {
        let (description, format) = if b.image == heyvm_core::manager::HOST_IMAGE {
            ("the host's /usr, /etc, /var and /opt, copy-on-write per sandbox", "host")
        } else {
            ("the microVM's default Debian image (scripts/vm-assets.sh), copy-on-write per VM", "vm")
        };
        images.push(json!({
            "id": b.image, "name": b.image, "description": description,
            "backend_type": b.backend, "format": format, "size_bytes": 0, "created_at": "",
        }));
        for i in stored.iter().filter(|_| b.oci) {
            images.push(json!({
                "id": i.reference, "name": i.name, "description": format!("OCI image {} from this daemon's store", i.digest),
                "backend_type": b.backend, "format": "oci", "size_bytes": i.size_bytes,
                "created_at": heyvm_types::compat::rfc3339(i.modified_at as i64),
            }));
        }
    }
    Json(json!({ "images": images }))
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

#[derive(Deserialize)]
pub struct InactiveQuery {
    count: Option<usize>,
    /// First id of the page (a previous page's `next_cursor`).
    cursor: Option<String>,
}

/// Sandboxes that exist but are not running (stopped, failed, paused), in
/// id order, `count` at a time.
pub async fn inactive(State(s): State<AppState>, ApiQuery(q): ApiQuery<InactiveQuery>) -> ApiResult<Json<InactivePage>> {
    let count = q.count.unwrap_or(DEFAULT_PAGE);
    if count == 0 || count > MAX_PAGE {
        return Err(AppError::bad_request("invalid_query", format!("count must be between 1 and {MAX_PAGE}")));
    }
    let mut items: Vec<_> = s
        .mgr
        .list(None)?
        .into_iter()
        .filter(|i| !matches!(i.status, SandboxStatus::Running | SandboxStatus::Provisioning))
        .filter(|i| q.cursor.as_deref().is_none_or(|c| i.id.as_str() >= c))
        .collect();
    items.sort_by(|a, b| a.id.cmp(&b.id));
    let next_cursor = items.get(count).map(|i| i.id.clone());
    items.truncate(count);
    Ok(Json(InactivePage { sandboxes: items.into_iter().map(|i| deployed(&s.mgr, i)).collect(), cursor: q.cursor, next_cursor }))
}

/// Host CPU/memory and each running sandbox's CPU, memory and pids. When
/// the host cannot be read, `available: false` (the SDK's "no sample yet").
pub async fn system_usage(State(s): State<AppState>) -> ApiResult<Json<SystemUsage>> {
    let report = match s.mgr.system_usage().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot sample system usage");
            return Ok(Json(SystemUsage { available: false, snapshot: None }));
        }
    };
    let h = report.host;
    let snapshot = UsageSnapshot {
        sampled_at_ms: report.sampled_at_ms,
        host: HostUsage {
            cpu_percent: h.cpu_percent,
            cpu_count: h.cpu_count,
            memory_total_bytes: h.memory_total_bytes,
            memory_used_bytes: h.memory_used_bytes,
            memory_available_bytes: h.memory_available_bytes,
            memory_reserve_bytes: 0,
        },
        sandboxes: report
            .sandboxes
            .into_iter()
            .map(|sb| SandboxUsage {
                sandbox_id: sb.info.id,
                name: sb.info.name,
                cpu_percent: sb.info.cpu_usage,
                memory_bytes: sb.info.memory_usage,
                memory_limit_bytes: sb.memory_limit_bytes,
                pids: sb.pids,
            })
            .collect(),
    };
    Ok(Json(SystemUsage { available: true, snapshot: Some(snapshot) }))
}
