//! Checkpoints of a sandbox: `POST/GET /sandboxes/:id/checkpoints`,
//! `DELETE /sandboxes/:id/checkpoints/:name`, `POST /sandboxes/:id/restore`,
//! `POST /sandboxes/:id/fork`.

use serde::{Deserialize, Serialize};

/// One checkpoint. `memory` says whether running processes are in it (a
/// VM's memory) or only files (bubblewrap: the writable layer and
/// `/workspace`; processes are restarted on restore).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckpointInfo {
    pub name: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub size_bytes: u64,
    pub memory: bool,
}

/// `POST /sandboxes/:id/checkpoints`; a name is generated when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckpointRequest {
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /sandboxes/:id/restore`; the latest checkpoint when `name` is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestoreRequest {
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /sandboxes/:id/fork`: a new sandbox from a checkpoint (the latest
/// when `checkpoint` is absent; a fresh one when the sandbox has none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ForkRequest {
    #[serde(default)]
    pub checkpoint: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// What happened to the sandbox's processes on restore or fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProcessFate {
    /// Resumed from memory with the same pids (a VM).
    Kept,
    /// Files restored; processes started afresh (bubblewrap).
    Restarted,
}

/// Answer to restore and fork.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestoreResponse {
    pub sandbox: crate::SandboxInfo,
    pub checkpoint: CheckpointInfo,
    pub processes: ProcessFate,
}
