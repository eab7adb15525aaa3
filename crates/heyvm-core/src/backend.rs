//! The isolation backend seam. A backend turns a [`LaunchSpec`] into running,
//! isolated processes with an agent listening on `agent_socket`, and can
//! kill them and report their resource usage. Everything above (exec, files,
//! logs, lifecycle rules) is backend-independent and lives in the manager.

use std::path::PathBuf;

use async_trait::async_trait;
use heyvm_types::{Limits, MountSpec, NetworkMode};

use crate::error::Result;
use crate::paths::SandboxPaths;

/// Everything a backend needs to launch one sandbox.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub id: String,
    pub hostname: String,
    pub paths: SandboxPaths,
    pub limits: Limits,
    pub mounts: Vec<MountSpec>,
    pub network: NetworkSpec,
}

/// The sandbox's network: mode and egress policy (validated entries:
/// CIDRs, addresses or domain names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkSpec {
    pub mode: NetworkMode,
    pub allow_out: Vec<String>,
    pub deny_out: Vec<String>,
}

/// Resource usage read from the sandbox's cgroups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_ns: u64,
    pub memory_bytes: u64,
    pub pids: u64,
    /// How many times the kernel OOM-killed a process of this sandbox.
    pub oom_kills: u64,
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Name as used in `backend_type`.
    fn name(&self) -> &'static str;

    /// Creates the on-disk skeleton of a new sandbox.
    fn prepare(&self, spec: &LaunchSpec) -> Result<()>;

    /// Starts the sandbox's processes; returns once they are spawned. The
    /// manager then waits for the agent to answer on [`Self::agent_socket`].
    async fn launch(&self, spec: &LaunchSpec) -> Result<()>;

    /// Whether the sandbox's supervisor process is alive.
    fn is_alive(&self, spec: &LaunchSpec) -> bool;

    /// Why the last launch died, if the backend knows (e.g. its error log).
    fn failure_reason(&self, spec: &LaunchSpec) -> Option<String>;

    /// SIGKILLs every process of the sandbox and releases runtime resources
    /// (cgroups, mounts). Files stay. Idempotent.
    async fn kill(&self, spec: &LaunchSpec) -> Result<()>;

    /// Applies new limits to a running sandbox.
    fn set_limits(&self, spec: &LaunchSpec) -> Result<()>;

    fn usage(&self, spec: &LaunchSpec) -> Usage;

    /// Whether resource limits are actually enforced on this host.
    fn limits_enforced(&self) -> bool;

    fn agent_socket(&self, spec: &LaunchSpec) -> PathBuf {
        spec.paths.agent_socket()
    }

    /// Host pids of the sandbox's processes; empty when the backend cannot tell.
    fn pids(&self, _spec: &LaunchSpec) -> Vec<u32> {
        Vec::new()
    }

    /// The sandbox's address on its network, while it has one.
    fn guest_ip(&self, _spec: &LaunchSpec) -> Option<String> {
        None
    }

    /// Whether [`Self::set_hostname`] works, so a running sandbox can take a
    /// new name (what the warm pool needs).
    fn supports_rename(&self) -> bool {
        false
    }

    /// Sets the hostname of a running sandbox to `spec.hostname`.
    fn set_hostname(&self, _spec: &LaunchSpec) -> Result<()> {
        Err(crate::CoreError::Backend("this backend cannot rename a running sandbox".into()))
    }

    /// Why the sandbox will not get the network it asked for, if so.
    fn network_warning(&self, _spec: &LaunchSpec) -> Option<String> {
        None
    }
}
