//! The isolation backend seam.
//!
//! A [`Backend`] knows how to make sandboxes of one kind (bubblewrap, a
//! microVM): it prepares a sandbox's files, launches it, and re-attaches to
//! one that kept running while the daemon was down. Each launch or attach
//! yields an [`Instance`], the handle for that one running sandbox: kill it,
//! read its usage, change its limits, and open the byte stream to its agent.
//! Everything above (exec, files, logs, lifecycle rules) is
//! backend-independent and lives in the manager.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use heyvm_types::{Limits, MountSpec, NetworkMode};

use crate::agent::AgentTransport;
use crate::paths::SandboxPaths;

/// What a backend reports when it fails.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot do this at all (e.g. rename a running VM).
    #[error("the {backend} backend does not support {what}")]
    Unsupported { backend: &'static str, what: &'static str },
    /// The sandbox is not running (no process, no VM).
    #[error("the sandbox is not running")]
    NotRunning,
    #[error("{0}")]
    Failed(String),
    /// The request conflicts with the sandbox's state (409 `conflict`).
    #[error("{0}")]
    Conflict(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
}

impl BackendError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        BackendError::Io { context: context.into(), source }
    }
}

pub type BackendResult<T> = std::result::Result<T, BackendError>;

/// Everything a backend needs to launch one sandbox.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub id: String,
    pub hostname: String,
    pub paths: SandboxPaths,
    pub limits: Limits,
    pub mounts: Vec<MountSpec>,
    pub network: NetworkSpec,
    /// The image's unpacked layers, bottom first; empty means the host's
    /// system directories (only filled for a launch).
    pub image_layers: Vec<PathBuf>,
    /// The sandbox's own host uid/gid range (root inside is its first id);
    /// backends that map ids need it, None only if none could be allocated.
    pub ids: Option<crate::sandbox_ids::IdRange>,
}

/// The sandbox's network: mode and egress policy (validated entries:
/// CIDRs, addresses or domain names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkSpec {
    pub mode: NetworkMode,
    pub allow_out: Vec<String>,
    pub deny_out: Vec<String>,
}

/// Resource usage of one sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_ns: u64,
    pub memory_bytes: u64,
    pub pids: u64,
    /// How many times the kernel OOM-killed a process of this sandbox.
    pub oom_kills: u64,
}

/// A sandbox disk's enforced size and how much of it is in use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    pub used_bytes: u64,
    pub limit_bytes: u64,
}

/// Whether a sandbox's processes are alive. `Unknown` (the check itself
/// failed: out of descriptors, a timeout) must never be taken for dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
    Unknown,
}

/// What `heyvm backends` reports about one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    pub name: &'static str,
    pub available: bool,
    pub reason: Option<String>,
    /// The accelerator a VM backend uses (`kvm` or `tcg`).
    pub accel: Option<String>,
}

/// How a disk grew ([`Backend::grow_disk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskGrowth {
    /// The new size applies now.
    Done,
    /// At the sandbox's next start.
    NextStart,
    /// The block device under the sandbox path `mount` is `bytes` large
    /// now; the file system on it is grown from inside (a running VM's
    /// agent), else at the next start.
    InGuest { mount: String, bytes: u64 },
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Name as used in `backend_type`.
    fn name(&self) -> &'static str;

    /// Other names clients use for this backend (e.g. `bwrap`).
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    fn status(&self) -> BackendStatus {
        BackendStatus { name: self.name(), available: true, reason: None, accel: None }
    }

    /// Whether resource limits are actually enforced on this host.
    fn limits_enforced(&self) -> bool;

    /// Whether a running sandbox launched with `running` limits can take
    /// `wanted` ones (what adopting a warm sandbox does). Cgroups change
    /// at any time; a VM's vCPUs and RAM are fixed at boot.
    fn can_adopt_limits(&self, _running: &Limits, _wanted: &Limits) -> bool {
        true
    }

    /// Whether each sandbox is a virtual machine with its own guest RAM,
    /// counted against the running-VM quota (`HEYVM_MAX_RUNNING_VMS`).
    fn is_vm(&self) -> bool {
        false
    }

    /// Whether a sandbox of this backend can have these host mounts (all
    /// of a sandbox's, S3-backed ones aside, validated and canonical):
    /// asked at create and whenever the mounts change, so a mount the
    /// backend cannot set up is refused (400 `invalid_mount`, with this
    /// reason) before anything is made rather than failing its start.
    fn check_mounts(&self, _mounts: &[MountSpec]) -> std::result::Result<(), String> {
        Ok(())
    }

    /// Whether the host reaches the sandbox's mounts as host directories
    /// (bubblewrap); otherwise the file routes go through the agent and
    /// need the sandbox running (a VM's disks).
    fn files_on_host(&self) -> bool {
        true
    }

    /// The daemon opened its data directory (`sandboxes` is its sandboxes
    /// dir) and reconciled what runs: clean up what a killed daemon left
    /// and pre-provision whatever makes launches faster.
    async fn open(&self, _sandboxes: &std::path::Path) {}

    /// The daemon is shutting down: release what [`Backend::open`]
    /// pre-provisioned. Running sandboxes are left alone.
    async fn close(&self) {}

    /// How long a launch may take to answer the agent handshake, when the
    /// manager's default is too short (a VM booting under TCG).
    fn start_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// Takes checkpoint `name` of a sandbox (`running` says whether it is).
    async fn checkpoint(&self, _spec: &LaunchSpec, _running: bool, _name: &str) -> BackendResult<heyvm_types::CheckpointInfo> {
        Err(BackendError::Unsupported { backend: self.name(), what: "checkpoints" })
    }

    /// The sandbox's checkpoints, oldest first.
    fn checkpoints(&self, _spec: &LaunchSpec) -> Vec<heyvm_types::CheckpointInfo> {
        Vec::new()
    }

    fn delete_checkpoint(&self, _spec: &LaunchSpec, _name: &str) -> BackendResult<()> {
        Err(BackendError::Unsupported { backend: self.name(), what: "checkpoints" })
    }

    /// Puts checkpoint `name` of `from` in place as the files of `to` (the
    /// same sandbox for a restore, a new one for a fork); both are stopped.
    /// The next launch of `to` resumes it; the answer says whether its
    /// processes come back (memory) or start afresh.
    async fn stage_checkpoint(&self, _from: &LaunchSpec, _name: &str, _to: &LaunchSpec) -> BackendResult<heyvm_types::ProcessFate> {
        Err(BackendError::Unsupported { backend: self.name(), what: "checkpoints" })
    }

    /// Why the sandbox will not get the network it asked for, if so.
    fn network_warning(&self, _spec: &LaunchSpec) -> Option<String> {
        None
    }

    /// Whether sandboxes on OCI images (`LaunchSpec::image_layers`) run
    /// here; creates asking for an image elsewhere get 501 `unsupported`.
    fn supports_images(&self) -> bool {
        false
    }

    /// What a sandbox created without an OCI image boots here, as
    /// `SandboxInfo::image` names it (and a create may name it back);
    /// `None`: the host's own system directories, reported as `host`.
    fn default_image(&self) -> Option<&'static str> {
        None
    }

    /// Makes whatever this backend needs to boot an image with these
    /// unpacked layers (bottom first) ahead of the first sandbox on it
    /// (`heyvm images build --backend-type`). Blocking.
    fn prepare_image(&self, _layers: &[PathBuf]) -> BackendResult<()> {
        Ok(())
    }

    /// Removes cached per-image artefacts (a VM's base disks) that no
    /// sandbox and no image with the layers of `keep` needs; the host
    /// bytes freed. After `images rm` and `images prune`.
    fn prune_image_cache(&self, _keep: &[Vec<PathBuf>]) -> u64 {
        0
    }

    /// The host directory holding a sandbox's own changes to its image
    /// root (overlay upper layer), which an image build turns into a layer.
    /// `None`: this backend keeps no such directory, so cannot build.
    fn image_writable_layer(&self, _paths: &SandboxPaths) -> Option<PathBuf> {
        None
    }

    /// Creates the on-disk skeleton of a new sandbox.
    fn prepare(&self, spec: &LaunchSpec) -> BackendResult<()>;

    /// Fills a new, never started sandbox's `/workspace` with the tree in
    /// `dir` (a deploy archive the daemon has already unpacked, confined,
    /// on the host). Only asked of backends whose `/workspace` is not a
    /// host directory ([`Backend::files_on_host`] false); the others get
    /// the archive unpacked straight into it. Blocking.
    fn import_workspace(&self, _spec: &LaunchSpec, _dir: &std::path::Path) -> BackendResult<()> {
        Err(BackendError::Unsupported { backend: self.name(), what: "deploying an archive" })
    }

    /// Starts the sandbox; returns once its processes are spawned. The
    /// manager then connects to the agent through the instance.
    async fn launch(&self, spec: &LaunchSpec) -> BackendResult<Arc<dyn Instance>>;

    /// The running instance of a sandbox launched by an earlier daemon, if
    /// any of it is still there.
    async fn attach(&self, spec: &LaunchSpec) -> BackendResult<Option<Arc<dyn Instance>>>;

    /// Kills whatever is left of a sandbox that has no instance (after a
    /// crash) and releases its runtime resources. Files stay. Idempotent.
    async fn cleanup(&self, spec: &LaunchSpec) -> BackendResult<()>;

    /// Makes a sandbox's files reachable from the host again (e.g. mounts
    /// its disk after a host reboot). Called for every sandbox when the
    /// daemon starts. Idempotent.
    fn open_storage(&self, _spec: &LaunchSpec) -> BackendResult<()> {
        Ok(())
    }

    /// Deletes a sandbox's files once nothing of it runs.
    fn remove_files(&self, spec: &LaunchSpec) -> BackendResult<()> {
        remove_tree(&spec.paths.dir);
        Ok(())
    }

    /// The sandbox disk's use and enforced size, as the host sees it; None
    /// when its disk is not limited.
    fn disk_usage(&self, _spec: &LaunchSpec) -> Option<DiskUsage> {
        None
    }

    /// The sandbox path of a disk whose use only the sandbox's own kernel
    /// knows while it runs (a VM's `/workspace`: the host's copy of the
    /// disk lags the guest's caches and journal). The manager then asks the
    /// agent and hands its figure to [`Backend::disk_usage_measured`].
    fn disk_measured_inside(&self) -> Option<&'static str> {
        None
    }

    /// [`Backend::disk_usage`] of a running sandbox whose agent found
    /// `used_bytes` in use on [`Backend::disk_measured_inside`].
    fn disk_usage_measured(&self, spec: &LaunchSpec, _used_bytes: u64) -> Option<DiskUsage> {
        self.disk_usage(spec)
    }

    /// Grows the sandbox's disk to `spec.limits.disk_bytes`.
    fn grow_disk(&self, _spec: &LaunchSpec) -> BackendResult<DiskGrowth> {
        Err(BackendError::Unsupported { backend: self.name(), what: "growing a sandbox disk" })
    }

    /// Why the sandbox's disk will not be limited, if so.
    fn storage_warning(&self, _spec: &LaunchSpec) -> Option<String> {
        None
    }
}

/// Deletes a sandbox directory. Files created inside the sandbox may be
/// read-only directories; make them writable first.
pub fn remove_tree(dir: &std::path::Path) {
    if std::fs::remove_dir_all(dir).is_ok() || !dir.exists() {
        return;
    }
    let _ = std::process::Command::new("chmod").arg("-R").arg("u+rwx").arg(dir).status();
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove sandbox directory");
    }
}

/// One running sandbox.
#[async_trait]
pub trait Instance: Send + Sync + 'static {
    fn liveness(&self) -> Liveness;

    /// SIGKILLs everything and releases runtime resources (cgroups, mounts,
    /// network). Files stay. Idempotent.
    async fn kill(&self) -> BackendResult<()>;

    fn usage(&self) -> Usage;

    /// How many times the OOM killer struck in the sandbox so far: read
    /// before and after every exec, so a backend may answer it cheaper
    /// than the whole [`Instance::usage`].
    fn oom_kills(&self) -> u64 {
        self.usage().oom_kills
    }

    /// Applies new limits while running.
    fn set_limits(&self, limits: &Limits) -> BackendResult<()>;

    /// A fresh byte stream to the sandbox's agent. Never a path the sandbox
    /// could have replaced.
    async fn connect_agent(&self) -> BackendResult<AgentTransport>;

    /// Why the sandbox died, if the backend knows (e.g. its error log).
    fn failure_reason(&self) -> Option<String>;

    /// The sandbox's address on its network, while it has one.
    fn guest_ip(&self) -> Option<String> {
        None
    }

    /// Host pids of the sandbox's processes; empty when they are not host
    /// processes (a VM) or cannot be told.
    fn pids(&self) -> Vec<u32> {
        Vec::new()
    }

    /// Gives the running sandbox a new hostname (what the warm pool needs).
    fn set_hostname(&self, _hostname: &str) -> BackendResult<()> {
        Err(BackendError::Unsupported { backend: "this", what: "renaming a running sandbox" })
    }

    fn supports_rename(&self) -> bool {
        false
    }

    /// Whether the guest agent renames the running sandbox instead
    /// ([`crate::agent::AgentClient::reset_identity`]: a VM's own kernel
    /// holds its hostname, out of the host's reach).
    fn renames_in_guest(&self) -> bool {
        false
    }
}

/// Where the static agent binary is: `HEYVM_AGENT_BIN`, else `heyvm-agent`
/// beside the running executable. `None` when neither exists.
pub fn static_agent_path() -> Option<PathBuf> {
    if let Some(p) = crate::config::agent_bin() {
        return Some(p);
    }
    let exe = std::env::current_exe().ok()?;
    let beside = exe.parent()?.join("heyvm-agent");
    beside.is_file().then_some(beside)
}
