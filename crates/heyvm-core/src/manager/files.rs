//! Files of a sandbox's mounts, accessed from the host side so they work
//! whether the sandbox is running or not.

use std::fs::File;

use heyvm_types::{FileEntry, FileList, MountSpec, WORKSPACE_PATH};

use super::{validate, SandboxManager};
use crate::error::{CoreError, Result};
use crate::record::SandboxRecord;
use crate::safe_fs::{clean_relative, AtomicFile, Confined};

/// A mount's host directory, opened for confined access.
pub struct MountRoot {
    pub mount_path: String,
    pub read_only: bool,
    pub dir: Confined,
}

impl SandboxManager {
    fn mount_root(&self, rec: &SandboxRecord, mount_path: Option<&str>) -> Result<MountRoot> {
        let mp = match mount_path.filter(|m| !m.is_empty()) {
            Some(m) => validate::sandbox_path(m, "mount_path").map_err(|e| CoreError::InvalidPath(e.to_string()))?,
            None => WORKSPACE_PATH.to_string(),
        };
        let user_mount = rec.mounts.iter().find(|m| m.sandbox_path == mp);
        if mp == WORKSPACE_PATH && user_mount.is_none() {
            let dir = Confined::open(&self.data.sandbox(&rec.id).workspace())?.owned_by(self.sandbox_root_ids(rec));
            return Ok(MountRoot { mount_path: mp, read_only: false, dir });
        }
        match user_mount {
            Some(m) => {
                let host = std::path::Path::new(&m.host_path);
                // As inside: a root daemon writes as the directory's owner.
                let owner = std::fs::metadata(host).ok().filter(|_| crate::id_ranges::daemon_is_root()).map(|md| {
                    use std::os::unix::fs::MetadataExt;
                    (md.uid(), md.gid())
                });
                Ok(MountRoot { mount_path: mp, read_only: m.read_only, dir: Confined::open(host)?.owned_by(owner) })
            }
            None => {
                let known: Vec<String> = self.mounts_of(rec).into_iter().map(|m| m.sandbox_path).collect();
                Err(CoreError::invalid(format!("no mount at '{mp}'; mounts are: {}", known.join(", "))))
            }
        }
    }

    /// The workspace (unless a user mount replaces it) plus the user's mounts.
    pub(super) fn mounts_of(&self, rec: &SandboxRecord) -> Vec<MountSpec> {
        let ws = MountSpec {
            host_path: self.data.sandbox(&rec.id).workspace().display().to_string(),
            sandbox_path: WORKSPACE_PATH.into(),
            read_only: false,
        };
        let replaced = rec.mounts.iter().any(|m| m.sandbox_path == WORKSPACE_PATH);
        (!replaced).then_some(ws).into_iter().chain(rec.mounts.iter().cloned()).collect()
    }

    pub fn list_files(&self, key: &str, mount_path: Option<&str>, path: &str) -> Result<FileList> {
        let rec = self.store.resolve(key)?;
        let root = self.mount_root(&rec, mount_path)?;
        let rel = clean_relative(path)?;
        let files: Vec<FileEntry> = root.dir.list(&rel)?;
        Ok(FileList { mount_path: root.mount_path, path: rel.display().to_string(), files })
    }

    pub fn open_file(&self, key: &str, mount_path: Option<&str>, path: &str) -> Result<(File, u64)> {
        let rec = self.store.resolve(key)?;
        let root = self.mount_root(&rec, mount_path)?;
        root.dir.open_read(&clean_relative(path)?)
    }

    /// Begins an atomic upload; the caller writes and commits it, checking
    /// size against `config().max_upload_bytes`.
    pub fn begin_upload(&self, key: &str, mount_path: Option<&str>, path: &str) -> Result<(AtomicFile, String)> {
        let rec = self.store.resolve(key)?;
        let root = self.mount_root(&rec, mount_path)?;
        let rel = clean_relative(path)?;
        if rel.as_os_str().is_empty() {
            return Err(CoreError::InvalidPath("file_path is required".into()));
        }
        if root.read_only {
            return Err(CoreError::ReadOnlyMount(root.mount_path));
        }
        Ok((root.dir.create(&rel)?, root.mount_path))
    }

    pub fn delete_file(&self, key: &str, mount_path: Option<&str>, path: &str, recursive: bool) -> Result<String> {
        let rec = self.store.resolve(key)?;
        let root = self.mount_root(&rec, mount_path)?;
        if root.read_only {
            return Err(CoreError::ReadOnlyMount(root.mount_path));
        }
        root.dir.remove(&clean_relative(path)?, recursive)?;
        Ok(root.mount_path)
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
        self.store.update(&rec)?;
        Ok(self.mounts_of(&rec))
    }
}
