//! What can go wrong in the microVM tier, as typed errors: [`QmpError`] for
//! QEMU's control socket and [`VmError`] for everything else (host setup,
//! disks, the guest's network, checkpoints). At the seam each becomes a
//! [`BackendError`]: what the backend cannot do is `Unsupported` (501, or
//! 409 `checkpoint_unsupported` for checkpoints), a stopped VM is
//! `NotRunning`, the rest `Failed` with the message (500 `backend_error`),
//! the same stable codes the `String` errors had.

use std::io;
use std::path::PathBuf;

use heyvm_backends::net::NetError;
use heyvm_core::backend::BackendError;

/// QEMU's QMP socket: connecting, the greeting, commands, migrations.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket {}: {source}", path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error("QMP: {0}")]
    Io(#[from] io::Error),
    #[error("QMP connection closed")]
    Closed,
    #[error("QMP sent bad JSON: {0}")]
    BadJson(#[source] serde_json::Error),
    #[error("not a QMP greeting: {0}")]
    Greeting(String),
    /// QEMU answered the command with an error.
    #[error("QMP {command}: {desc}")]
    Command { command: String, desc: String },
    #[error("migration failed: {0}")]
    MigrationFailed(String),
    #[error("loading the checkpoint failed")]
    IncomingFailed,
    /// `what` did not complete in time.
    #[error("{0} did not complete in time")]
    Timeout(&'static str),
}

/// Everything else the VM backend reports.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{0} is not installed (apt-get install qemu-system-x86 qemu-utils)")]
    QemuMissing(String),
    /// Kernel, modules or VM image files not built (`scripts/vm-assets.sh`).
    #[error("{0}")]
    AssetsMissing(String),
    #[error("the static heyvm-agent binary was not found (HEYVM_AGENT_BIN, or beside heyvm)")]
    AgentMissing,
    #[error("building the guest initramfs: {0}")]
    Initramfs(#[source] io::Error),
    /// A host file operation (disks, checkpoint files), with what it was for.
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("an image without layers has no root file system to boot")]
    ImageWithoutLayers,
    #[error("building the VM disk of the image: {0}")]
    ImageDisk(#[source] io::Error),
    #[error("mount path {0:?} cannot be shared into a VM (absolute, no spaces, ':' or '..')")]
    GuestPath(String),
    #[error(
        "host mount {0} is a file: a VM's host mounts are 9p shares, which share directories (mount its directory, or a directory mount that holds it)"
    )]
    FileMount(String),
    #[error("network 'nat' for a VM needs a root daemon (use --network none)")]
    NatNeedsRoot,
    /// The shared sandbox network (namespace, veth, address pool).
    #[error(transparent)]
    Net(#[from] NetError),
    /// The namespace the shared network code made lacks what a VM needs.
    #[error("the sandbox network {0}")]
    NetShape(&'static str),
    #[error("routing the guest through the sandbox namespace: {0}")]
    Route(#[source] NetError),
    #[error("loading the egress policy: {0}")]
    Policy(#[source] NetError),
    #[error("network settings of the sandbox: {0}")]
    Sysctl(#[source] NetError),
    /// A root daemon runs QEMU as the sandbox's own ids, never as root.
    #[error("the sandbox has no uid/gid range recorded, and QEMU must not run as host root")]
    NoIdRange,
    #[error("starting QEMU: {0}")]
    Spawn(#[source] io::Error),
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error("restoring the checkpoint: {0}")]
    Restore(#[source] QmpError),
    #[error("a VM with host mounts cannot be restored from a checkpoint")]
    RestoreWithMounts,
    #[error("invalid checkpoint name {0:?} (1-64 of letters, digits, '.', '_', '-')")]
    CheckpointName(String),
    #[error("no checkpoint named {0:?}")]
    CheckpointNotFound(String),
    #[error("checkpoint {0} already exists")]
    CheckpointExists(String),
    /// The sandbox's size class changed since the checkpoint.
    #[error(
        "checkpoint '{name}' holds a VM of {was}, and this sandbox boots with {now} (its size class changed since): set the size class back to restore it"
    )]
    CheckpointMachine { name: String, was: crate::snapshot::Machine, now: crate::snapshot::Machine },
    /// The root overlay is past its cap ([`crate::rootcap`]).
    #[error("{0}")]
    RootDiskFull(String),
    #[error("the VM is running: its /workspace disk cannot be replaced")]
    WorkspaceInUse,
    /// A blocking task of the backend panicked or was cancelled.
    #[error("VM task: {0}")]
    Task(String),
}

impl VmError {
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        VmError::Io { what: what.into(), source }
    }
}

impl From<tokio::task::JoinError> for VmError {
    fn from(e: tokio::task::JoinError) -> Self {
        VmError::Task(e.to_string())
    }
}

impl From<VmError> for BackendError {
    fn from(e: VmError) -> Self {
        match e {
            VmError::CheckpointMachine { .. } => BackendError::Conflict(e.to_string()),
            e => BackendError::Failed(e.to_string()),
        }
    }
}

pub type VmResult<T> = Result<T, VmError>;
pub type QmpResult<T> = Result<T, QmpError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_context() {
        let e = VmError::Restore(QmpError::Command { command: "cont".into(), desc: "boom".into() });
        assert_eq!(e.to_string(), "restoring the checkpoint: QMP cont: boom");
        let b: BackendError = VmError::CheckpointName("a/b".into()).into();
        assert!(matches!(b, BackendError::Failed(m) if m.contains("invalid checkpoint name")));
    }
}
