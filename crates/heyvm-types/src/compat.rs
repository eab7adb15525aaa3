//! Wire types of the heyvm product's cloud dialect, as spoken by its Rust
//! client `heyo-sdk` 0.1.15 (`Sandbox`, `Commands`, `Files`, `Daemon`):
//! `POST /sandbox-deploy`, `/deployed-sandboxes…`, `/sandbox/:id/…`,
//! `GET /sandboxes/inactive` and `GET /system/usage`.
//!
//! Field names and casing are the SDK's. Where the SDK deserialises a field
//! without a default (`id`, `status`, `status_changed_at`) we always send it;
//! where it expects a string (`created_at`) we send RFC 3339, not the native
//! API's Unix seconds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{MountSpec, SandboxStatus, SizeClass, UrlInfo};

/// Body of `POST /sandbox-deploy`. Every field is optional; what this daemon
/// cannot honour is either refused (see the server) or reported back in
/// [`DeployedSandbox::ignored_fields`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeployRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The cloud's word for backend (`libvirt`, `firecracker`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_class: Option<SizeClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_hooks: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_ports: Option<Vec<u16>>,
    /// `0` means no TTL, as in the cloud's `set_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size_gb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_archive_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<DeployMount>>,
    /// Anything else the caller sent (`cpus`, `memory`, `account_id`, …).
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A mount in a deploy body: a host directory, or an uploaded tree.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployMount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_id: Option<String>,
    pub sandbox_path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// A port forward from the host (always empty here: bubblewrap sandboxes
/// have no network of their own to forward to).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host: u16,
    pub container: u16,
}

/// One sandbox in the cloud dialect (`GET /deployed-sandboxes[/:id]`, the
/// deploy answer, and the entries of `GET /sandboxes/inactive`). A superset
/// of heyo-sdk's `SandboxInfo` and `InactiveSandbox`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployedSandbox {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub status: SandboxStatus,
    pub image: String,
    pub region: Option<String>,
    /// The archive unpacked into /workspace at creation, if any.
    pub archive_id: Option<String>,
    pub start_command: Option<String>,
    pub working_directory: Option<String>,
    pub size_class: Option<String>,
    pub disk_size_gb: Option<u64>,
    pub env_vars: Option<BTreeMap<String, String>>,
    pub setup_hooks: Option<Vec<String>>,
    pub uptime_secs: u64,
    pub ttl_seconds: Option<u64>,
    pub is_deployed: bool,
    pub error_message: Option<String>,
    /// RFC 3339.
    pub status_changed_at: String,
    /// Always an array, never null.
    pub urls: Vec<UrlInfo>,
    pub guest_ip: Option<String>,
    pub port_mappings: Vec<PortMapping>,
    pub metadata: Option<serde_json::Value>,
    pub account_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// Whole vCPUs; null for fractional size classes (see `vcpus`).
    pub cpus: Option<u32>,
    pub vcpus: f64,
    /// Memory limit in bytes.
    pub memory: u64,
    pub backend_type: String,
    pub sandbox_type: String,
    pub cpu_usage: f64,
    pub memory_usage: u64,
    pub mounts: Vec<MountSpec>,
    pub open_ports: Vec<u16>,
    /// Deploy-body fields this daemon accepted but does not act on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_fields: Vec<String>,
}

/// Body of `POST /sandbox/:id/exec`. Without `args`, `command` runs under
/// `sh -c`; with them, `command` is the program and `args` its arguments.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompatExecRequest {
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<f64>,
}

/// Body of `POST /sandbox/:id/read-file`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFileRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    pub file_path: String,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFileResponse {
    pub mount_path: String,
    pub file_path: String,
    /// Base64 (standard alphabet).
    pub content: String,
    pub size: u64,
}

/// Body of `POST /sandbox/:id/write-file`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFileRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<String>,
    pub file_path: String,
    /// Base64 (standard alphabet).
    pub content: String,
}

/// Body of `POST /proxy-endpoints/for-deployed` (heyo-sdk's `bind_port`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindPortRequest {
    pub sandbox_id: String,
    pub port: u16,
    /// Defaults to public, as in the cloud.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_public: Option<bool>,
}

/// Body of `POST /deployed-sandboxes/:id/ttl`. `0` removes the TTL.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtlRequest {
    pub ttl_seconds: u64,
}

/// Body of `POST /deployed-sandboxes/:id/resize`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_class: Option<SizeClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size_gb: Option<u64>,
}

/// `GET /sandboxes/inactive?count=&cursor=`: sandboxes that exist but are
/// not running, in id order. `next_cursor` is the first id of the next page.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InactivePage {
    pub sandboxes: Vec<DeployedSandbox>,
    pub cursor: Option<String>,
    pub next_cursor: Option<String>,
}

/// `GET /system/usage`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemUsage {
    pub available: bool,
    pub snapshot: Option<UsageSnapshot>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageSnapshot {
    pub sampled_at_ms: u64,
    pub host: HostUsage,
    pub sandboxes: Vec<SandboxUsage>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostUsage {
    /// Busy share of all CPUs, 0–100.
    pub cpu_percent: f64,
    pub cpu_count: u32,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub memory_available_bytes: u64,
    pub memory_reserve_bytes: u64,
}

/// One running sandbox. `cpu_percent` is percent of one core (200 = two
/// cores busy); `pids` are host pids of its processes.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxUsage {
    pub sandbox_id: String,
    pub name: String,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub pids: Vec<u32>,
}

/// Unix seconds as RFC 3339 UTC (`2026-11-25T14:27:06Z`).
pub fn rfc3339(secs: i64) -> String {
    let t = UtcTime::from_unix(secs);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", t.year, t.month, t.day, t.hour, t.minute, t.second)
}

/// A Unix time as a UTC calendar date and time of day, for the few places
/// that must print one without a date crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
}

impl UtcTime {
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        // Civil-from-days (proleptic Gregorian), after Howard Hinnant.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        UtcTime { year, month, day, hour: rem / 3600, minute: rem % 3600 / 60, second: rem % 60 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_616_826), "2026-11-25T14:27:06Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn deploy_body_from_the_sdk_parses_and_keeps_unknown_fields() {
        let body = serde_json::json!({
            "name": "n", "region": "US", "image": "ubuntu:24.04", "size_class": "small",
            "open_ports": [], "driver": "firecracker", "cpus": 2, "account_id": "acct",
            "mounts": [{"tree_id": "t1", "sandbox_path": "/data"}]
        });
        let req: DeployRequest = serde_json::from_value(body).unwrap();
        assert_eq!(req.size_class, Some(SizeClass::Small));
        assert_eq!(req.mounts.unwrap()[0].tree_id.as_deref(), Some("t1"));
        assert_eq!(req.extra.keys().collect::<Vec<_>>(), ["account_id", "cpus"]);
    }
}
