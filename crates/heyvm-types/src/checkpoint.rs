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

impl CheckpointInfo {
    /// Checkpoint names become directory names in every backend: 1-64 of
    /// `[A-Za-z0-9._-]`, not starting with a dot.
    pub fn valid_name(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    }

    /// `created_at` for a checkpoint taken now: RFC 3339 UTC with
    /// milliseconds (checkpoints are listed in this order).
    pub fn now_timestamp() -> String {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let t = crate::compat::UtcTime::from_unix(d.as_secs() as i64);
        let (y, mo, day, h, mi, sec, ms) = (t.year, t.month, t.day, t.hour, t.minute, t.second, d.subsec_millis());
        format!("{y:04}-{mo:02}-{day:02}T{h:02}:{mi:02}:{sec:02}.{ms:03}Z")
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_timestamps() {
        for ok in ["a", "ck-1", "v1.2_x"] {
            assert!(CheckpointInfo::valid_name(ok), "{ok}");
        }
        for bad in ["", ".x", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(!CheckpointInfo::valid_name(bad), "{bad}");
        }
        let s = CheckpointInfo::now_timestamp();
        assert_eq!(s.len(), 24, "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z'));
    }
}
