//! The persisted state of one sandbox.

use std::collections::BTreeMap;

use heyvm_types::{Limits, MountSpec, NetworkMode, SandboxStatus, SizeClass};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub status: SandboxStatus,
    pub sandbox_type: String,
    pub image: String,
    pub backend_type: String,
    pub size_class: SizeClass,
    pub ttl_seconds: Option<u64>,
    /// Seconds of TTL consumed by earlier running periods.
    pub ttl_used_secs: u64,
    /// Unix time the current running period began.
    pub running_since: Option<i64>,
    pub created_at: i64,
    pub start_command: Option<String>,
    pub working_directory: String,
    pub env_vars: BTreeMap<String, String>,
    pub setup_hooks: Vec<String>,
    pub mounts: Vec<MountSpec>,
    pub open_ports: Vec<u16>,
    pub error_message: Option<String>,
    /// Setup hooks run once per sandbox, on its first start.
    pub hooks_done: bool,
    /// Records from before networking existed mean `none` (loopback only).
    #[serde(default)]
    pub network: NetworkMode,
    #[serde(default)]
    pub allow_out: Vec<String>,
    #[serde(default)]
    pub deny_out: Vec<String>,
    /// Deploy archive unpacked into /workspace at creation.
    #[serde(default)]
    pub archive_id: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    /// Seconds without use after which the sandbox is stopped (0 = never;
    /// None = the daemon's default). See `manager/idle.rs`.
    #[serde(default)]
    pub idle_timeout_seconds: Option<u64>,
    /// Start a stopped sandbox on its next use, however it was stopped.
    #[serde(default)]
    pub auto_resume: bool,
    /// Why the sandbox is stopped: `idle` or `user`.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// Last use (exec, files, shell, proxy) as of the last stop.
    #[serde(default)]
    pub last_used_at: Option<i64>,
    /// Manifest digest of the OCI image the sandbox runs on (None: host rootfs).
    #[serde(default)]
    pub image_digest: Option<String>,
    /// The image config's `User`, the default for commands.
    #[serde(default)]
    pub image_user: Option<String>,
    /// Disk size in GiB when it differs from the size class's (asked for at
    /// create, or grown since).
    #[serde(default)]
    pub disk_size_gb: Option<u64>,
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl SandboxRecord {
    /// A stopped sandbox named `name` with every setting at its default
    /// (small, host image, no TTL, no mounts, network `none`).
    pub fn with_defaults(id: String, name: &str) -> Self {
        SandboxRecord {
            id,
            name: name.to_string(),
            slug: crate::ids::slugify(name),
            status: SandboxStatus::Stopped,
            sandbox_type: "shell".into(),
            image: "host".into(),
            backend_type: "bubblewrap".into(),
            size_class: SizeClass::default(),
            ttl_seconds: None,
            ttl_used_secs: 0,
            running_since: None,
            created_at: now_secs(),
            start_command: None,
            working_directory: heyvm_types::WORKSPACE_PATH.into(),
            env_vars: BTreeMap::new(),
            setup_hooks: vec![],
            mounts: vec![],
            open_ports: vec![],
            error_message: None,
            hooks_done: false,
            network: NetworkMode::default(),
            allow_out: vec![],
            deny_out: vec![],
            archive_id: None,
            region: None,
            idle_timeout_seconds: None,
            auto_resume: false,
            stop_reason: None,
            last_used_at: None,
            image_digest: None,
            image_user: None,
            disk_size_gb: None,
        }
    }

    /// The disk size in GiB: the override, else the size class's.
    pub fn disk_gb(&self) -> u64 {
        self.disk_size_gb.unwrap_or_else(|| self.size_class.disk_gb())
    }

    /// The size class's limits with this sandbox's disk size.
    pub fn limits(&self) -> Limits {
        Limits { disk_bytes: self.disk_gb() * heyvm_types::GIB, ..self.size_class.limits() }
    }

    /// TTL seconds consumed so far, counting the current running period.
    pub fn ttl_consumed(&self, now: i64) -> u64 {
        self.ttl_used_secs + self.running_since.map(|s| (now - s).max(0) as u64).unwrap_or(0)
    }

    pub fn ttl_remaining(&self, now: i64) -> Option<u64> {
        self.ttl_seconds.map(|t| t.saturating_sub(self.ttl_consumed(now)))
    }

    /// Closes the current running period, folding it into `ttl_used_secs`.
    pub fn end_running_period(&mut self, now: i64) {
        self.ttl_used_secs = self.ttl_consumed(now);
        self.running_since = None;
    }
}

/// A proxy endpoint: a sandbox port reachable through the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub subdomain: String,
    pub sandbox_id: String,
    /// The port inside the sandbox.
    pub port: u16,
    pub is_public: bool,
    /// The loopback port the daemon listens on for this endpoint; kept so a
    /// restarted daemon binds the same one when it is still free.
    #[serde(default)]
    pub local_port: Option<u16>,
    pub created_at: i64,
}
