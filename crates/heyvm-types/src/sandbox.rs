use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Lifecycle states. Lowercase on the wire.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxStatus {
    Provisioning,
    Running,
    Stopped,
    Paused,
    Failed,
}

impl SandboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Paused => "paused",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for SandboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SandboxStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "provisioning" => Self::Provisioning,
            "running" => Self::Running,
            "stopped" => Self::Stopped,
            "paused" => Self::Paused,
            "failed" => Self::Failed,
            other => return Err(format!("unknown status '{other}'")),
        })
    }
}

/// Size classes: enforced as CPU, memory, pids, open-file and disk limits.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SizeClass {
    Micro,
    Mini,
    #[default]
    Small,
    Medium,
    Large,
    Xlarge,
}

/// Resource limits derived from a size class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU in thousandths of a core (250 = a quarter core).
    pub millicpu: u32,
    pub memory_bytes: u64,
    pub pids: u32,
    /// Size of the sandbox's disk (writable layer and /workspace).
    pub disk_bytes: u64,
    /// Open files per process (RLIMIT_NOFILE, soft and hard).
    pub open_files: u64,
}

const MIB: u64 = 1024 * 1024;
pub const GIB: u64 = 1024 * MIB;
/// Largest `disk_size_gb` accepted.
pub const MAX_DISK_GB: u64 = 1024;

impl SizeClass {
    pub const ALL: [SizeClass; 6] = [Self::Micro, Self::Mini, Self::Small, Self::Medium, Self::Large, Self::Xlarge];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Micro => "micro",
            Self::Mini => "mini",
            Self::Small => "small",
            Self::Medium => "medium",
            Self::Large => "large",
            Self::Xlarge => "xlarge",
        }
    }

    pub fn limits(self) -> Limits {
        let (millicpu, mem_mib, pids) = match self {
            Self::Micro => (250, 512, 256),
            Self::Mini => (500, 1024, 512),
            Self::Small => (1000, 2048, 1024),
            Self::Medium => (2000, 4096, 2048),
            Self::Large => (4000, 8192, 4096),
            Self::Xlarge => (8000, 16384, 8192),
        };
        Limits {
            millicpu,
            memory_bytes: mem_mib * MIB,
            pids,
            disk_bytes: self.disk_gb() * GIB,
            open_files: OPEN_FILES_PER_PID * u64::from(pids),
        }
    }

    /// The disk size of the class, in GiB (`disk_size_gb` overrides it).
    pub fn disk_gb(self) -> u64 {
        match self {
            Self::Micro => 2,
            Self::Mini => 5,
            Self::Small => 10,
            Self::Medium => 20,
            Self::Large => 40,
            Self::Xlarge => 80,
        }
    }
}

/// RLIMIT_NOFILE (soft and hard) of a sandbox's processes per allowed
/// process: micro 4096 … xlarge 131072. A hard ceiling the sandbox cannot
/// raise (that needs CAP_SYS_RESOURCE on the host); with the pids limit it
/// bounds the files a sandbox holds open, and their kernel memory is
/// charged to its memory limit.
pub const OPEN_FILES_PER_PID: u64 = 16;

impl fmt::Display for SizeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SizeClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s.to_ascii_lowercase())
            .ok_or_else(|| format!("unknown size class '{s}' (expected micro, mini, small, medium, large or xlarge)"))
    }
}

/// A host directory bound into the sandbox, or (with `s3_prefix`) a
/// directory whose files live in the server's S3 bucket under that prefix:
/// restored when the sandbox starts, saved when it stops.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MountSpec {
    /// The host directory; empty for an S3-backed mount.
    #[serde(default)]
    pub host_path: String,
    pub sandbox_path: String,
    #[serde(default)]
    pub read_only: bool,
    /// S3-backed mount: the key prefix in `S3_BUCKET` (the server needs
    /// `S3_ENABLED`). One sandbox at a time may mount a prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_prefix: Option<String>,
    /// S3-backed mount: also save every this many seconds while running
    /// (default: only at stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_sync_seconds: Option<u64>,
}

impl MountSpec {
    /// A host directory mount.
    pub fn host(host_path: impl Into<String>, sandbox_path: impl Into<String>, read_only: bool) -> Self {
        MountSpec { host_path: host_path.into(), sandbox_path: sandbox_path.into(), read_only, ..Default::default() }
    }
}

/// A proxy endpoint reaching a port inside the sandbox.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlInfo {
    pub subdomain: String,
    pub hostname: String,
    pub url: String,
    pub port: u16,
    pub is_public: bool,
}

/// Same shape as Rust's `std::time::Duration` serialisation, which the
/// existing product emits.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Uptime {
    pub secs: u64,
    pub nanos: u32,
}

/// What `GET /sandboxes/:id` returns.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub status: SandboxStatus,
    pub sandbox_type: String,
    pub image: String,
    pub backend_type: String,
    pub size_class: SizeClass,
    pub uptime: Uptime,
    /// Percent of one core, averaged since the previous sample.
    pub cpu_usage: f64,
    /// Bytes currently charged to the sandbox.
    pub memory_usage: u64,
    pub mounts: Vec<MountSpec>,
    pub open_ports: Vec<u16>,
    pub ttl_seconds: Option<u64>,
    /// Seconds of TTL left (TTL counts only while running).
    pub ttl_remaining_seconds: Option<u64>,
    pub created_at: i64,
    pub guest_ip: Option<String>,
    /// Always an array, never null.
    pub urls: Vec<UrlInfo>,
    pub start_command: Option<String>,
    pub working_directory: String,
    pub env_vars: BTreeMap<String, String>,
    pub setup_hooks: Vec<String>,
    pub error_message: Option<String>,
    pub is_deployed: bool,
    /// The archive unpacked into /workspace at creation (`deploy`).
    #[serde(default)]
    pub archive_id: Option<String>,
    /// Region recorded at creation (`US`, `EU`); local servers run everything here.
    #[serde(default)]
    pub region: Option<String>,
    /// `nat` or `none`.
    #[serde(default = "default_network_name")]
    pub network: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_out: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_out: Vec<String>,
    /// Seconds without use after which the sandbox is stopped (None = never).
    #[serde(default)]
    pub idle_timeout_seconds: Option<u64>,
    /// Whether a stopped sandbox starts again on its next use, however it
    /// was stopped (one stopped for idleness always does).
    #[serde(default)]
    pub auto_resume: bool,
    /// Why a stopped sandbox is stopped: `idle` or `user` (None otherwise).
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// Unix time of the last exec, file call, shell or proxy connection.
    #[serde(default)]
    pub last_used_at: Option<i64>,
    /// The disk size asked for, in GiB: `disk_size_gb` at create or later
    /// growth, else the size class's.
    #[serde(default)]
    pub disk_size_gb: u64,
    /// Bytes in use on the sandbox's disk (writable layer and /workspace);
    /// null when the disk is not limited (see `disk_limit`).
    #[serde(default)]
    pub disk_usage: Option<u64>,
    /// The enforced size of the sandbox's disk in bytes; null when this
    /// host does not limit it (no root, or a sandbox from before limits).
    #[serde(default)]
    pub disk_limit: Option<u64>,
    /// For VM backends: the accelerator the sandbox runs with (`kvm` or
    /// `tcg`, software emulation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
}

fn default_network_name() -> String {
    NetworkMode::None.as_str().to_string()
}

/// How a sandbox reaches the network.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Only loopback. Also what records written before networking existed mean.
    #[default]
    None,
    /// Own network namespace with outbound access through the host (NAT).
    Nat,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Nat => "nat",
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NetworkMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "nat" => Ok(Self::Nat),
            "none" => Ok(Self::None),
            _ => Err(format!("unknown network '{s}' (expected nat or none)")),
        }
    }
}

/// Body of `POST /sandboxes`. Every field is optional.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSandboxRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_class: Option<SizeClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_ports: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_hooks: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mounts: Option<Vec<MountSpec>>,
    /// Create the sandbox without starting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_start: Option<bool>,
    /// An uploaded archive (`POST /archives`) unpacked into /workspace
    /// before the setup hooks run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_id: Option<String>,
    /// `US` or `EU`: recorded on the sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// `"nat"` (default: outbound access through the host) or `"none"`
    /// (loopback only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Egress allow list: CIDRs, addresses or domain names (resolved when
    /// the sandbox starts). When non-empty, only these are reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_out: Option<Vec<String>>,
    /// Egress deny list (same forms); always blocked, even if allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_out: Option<Vec<String>>,
    /// Stop the sandbox after this many seconds without use (0 = never;
    /// default `HEYVM_IDLE_TIMEOUT_SECS`, else never). Its next use starts it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<u64>,
    /// Start the sandbox on its next use even when it was stopped by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_resume: Option<bool>,
    /// Disk size in GiB (writable layer and /workspace), instead of the
    /// size class's (micro 2, mini 5, small 10, medium 20, large 40, xlarge 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size_gb: Option<u64>,
}

/// Body of `PATCH /sandboxes/:id`. Absent fields are left unchanged;
/// `ttl_seconds: null` is not distinguishable from absent, so use
/// `clear_ttl: true` to remove a TTL.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateSandboxRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_ports: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_ttl: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_class: Option<SizeClass>,
    /// Seconds without use before an idle stop (0 = never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_resume: Option<bool>,
    /// Grows the disk to this many GiB (disks never shrink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_size_gb: Option<u64>,
}

/// What `stop`/`start`-style actions return to the CLI.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub id: String,
    pub status: SandboxStatus,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
}

/// What `GET /system/pool` returns: the warm pool's state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Warm sandboxes ready now.
    pub warm: usize,
    /// How many the daemon keeps at least (`HEYVM_POOL_SIZE`; 0 = off).
    pub size: usize,
    /// How many it aims for now: the pool-shaped creates of the last two
    /// minutes, between `size` and `max`.
    #[serde(default)]
    pub target: usize,
    /// The most it ever keeps (`HEYVM_POOL_MAX`, the memory budget).
    #[serde(default)]
    pub max: usize,
}
