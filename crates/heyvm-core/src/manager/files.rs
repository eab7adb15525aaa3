//! A sandbox's mounts: which one a file request names, its host directory
//! (for backends whose files the host can reach), adding and removing
//! mounts. The file operations themselves are in `file_io.rs`.

use heyvm_types::{MountSpec, WORKSPACE_PATH};

use super::{validate, SandboxManager};
use crate::error::{CoreError, Result};
use crate::record::SandboxRecord;
use crate::safe_fs::Confined;

/// A mount's host directory, opened for confined access.
pub struct MountRoot {
    pub mount_path: String,
    pub read_only: bool,
    pub dir: Confined,
}

/// The mount a file request names: its sandbox path, whether it is
/// read-only, and the user mount behind it (None: the sandbox's own
/// /workspace).
pub(super) struct MountChoice {
    pub mount_path: String,
    pub read_only: bool,
    pub user_mount: Option<MountSpec>,
}

impl SandboxManager {
    pub(super) fn choose_mount(&self, rec: &SandboxRecord, mount_path: Option<&str>) -> Result<MountChoice> {
        let mp = match mount_path.filter(|m| !m.is_empty()) {
            Some(m) => validate::sandbox_path(m, "mount_path").map_err(|e| CoreError::InvalidPath(e.to_string()))?,
            None => WORKSPACE_PATH.to_string(),
        };
        let user_mount = self.resolved_mounts(rec).into_iter().find(|m| m.sandbox_path == mp);
        if mp != WORKSPACE_PATH && user_mount.is_none() {
            let known: Vec<String> = self.mounts_of(rec).into_iter().map(|m| m.sandbox_path).collect();
            return Err(CoreError::invalid(format!("no mount at '{mp}'; mounts are: {}", known.join(", "))));
        }
        let read_only = user_mount.as_ref().is_some_and(|m| m.read_only);
        Ok(MountChoice { mount_path: mp, read_only, user_mount })
    }

    pub(super) fn mount_root(&self, rec: &SandboxRecord, mount_path: Option<&str>) -> Result<MountRoot> {
        let choice = self.choose_mount(rec, mount_path)?;
        match choice.user_mount {
            None => {
                let dir = Confined::open(&self.data.sandbox(&rec.id).workspace())?.owned_by(self.sandbox_root_ids(rec));
                Ok(MountRoot { mount_path: choice.mount_path, read_only: false, dir })
            }
            Some(m) => {
                let host = std::path::Path::new(&m.host_path);
                // As inside: a root daemon writes as the directory's owner.
                let owner = std::fs::metadata(host).ok().filter(|_| crate::id_ranges::daemon_is_root()).map(|md| {
                    use std::os::unix::fs::MetadataExt;
                    (md.uid(), md.gid())
                });
                Ok(MountRoot { mount_path: choice.mount_path, read_only: m.read_only, dir: Confined::open(host)?.owned_by(owner) })
            }
        }
    }

    /// The workspace (unless a user mount replaces it) plus the user's mounts.
    pub(super) fn mounts_of(&self, rec: &SandboxRecord) -> Vec<MountSpec> {
        let ws = MountSpec::host(self.data.sandbox(&rec.id).workspace().display().to_string(), WORKSPACE_PATH, false);
        let replaced = rec.mounts.iter().any(|m| m.sandbox_path == WORKSPACE_PATH);
        (!replaced).then_some(ws).into_iter().chain(self.resolved_mounts(rec)).collect()
    }

    pub fn list_mounts(&self, key: &str) -> Result<Vec<MountSpec>> {
        Ok(self.mounts_of(&self.store.resolve(key)?))
    }

    /// Adds a mount. Bind mounts are set up at launch, so on a running
    /// sandbox it takes effect at the next start or restart.
    pub async fn add_mount(&self, key: &str, m: MountSpec) -> Result<Vec<MountSpec>> {
        let id = self.store.resolve(key)?.id;
        let lock = self.lock_for(&id);
        let _g = lock.lock().await;
        let mut rec = self.store.resolve(&id)?;
        let m = validate::mount(&m)?;
        validate::outside_data_dir(&m, self.data.root())?;
        if rec.mounts.iter().any(|o| o.sandbox_path == m.sandbox_path) {
            return Err(CoreError::Conflict(format!("a mount at '{}' already exists", m.sandbox_path)));
        }
        rec.mounts.push(m);
        validate::backend_mounts(self.backend_for(&rec)?.as_ref(), &rec.mounts)?;
        self.store.update(&rec)?;
        Ok(self.mounts_of(&rec))
    }

    pub async fn remove_mount(&self, key: &str, sandbox_path: &str) -> Result<Vec<MountSpec>> {
        let id = self.store.resolve(key)?.id;
        let lock = self.lock_for(&id);
        let _g = lock.lock().await;
        let mut rec = self.store.resolve(&id)?;
        let p = validate::sandbox_path(sandbox_path, "mount path")?;
        if p == WORKSPACE_PATH && !rec.mounts.iter().any(|m| m.sandbox_path == p) {
            return Err(CoreError::invalid("the /workspace mount cannot be removed"));
        }
        let before = rec.mounts.len();
        rec.mounts.retain(|m| m.sandbox_path != p);
        if rec.mounts.len() == before {
            return Err(CoreError::FileNotFound(format!("mount {p}")));
        }
        // A file mount may ride on the directory mount being removed.
        validate::backend_mounts(self.backend_for(&rec)?.as_ref(), &rec.mounts)?;
        self.store.update(&rec)?;
        Ok(self.mounts_of(&rec))
    }
}
