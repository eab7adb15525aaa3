//! Deploy archives: uploaded once (`POST /archives`, stored as
//! `archives/ar-<8hex>.tar.gz` in the data dir), unpacked into a new
//! sandbox's `/workspace` before its setup hooks run.

use std::path::PathBuf;

use heyvm_types::ArchiveInfo;

use super::SandboxManager;
use crate::archive;
use crate::error::{CoreError, Result};
use crate::ids;
use crate::record::SandboxRecord;

/// `ar-` + 8 lowercase hex digits.
pub fn valid_archive_id(s: &str) -> bool {
    s.len() == 11 && s.starts_with("ar-") && s[3..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An upload in progress: write the body to `path`, then [`SandboxManager::commit_archive`].
pub struct ArchiveUpload {
    pub id: String,
    pub path: PathBuf,
}

impl SandboxManager {
    fn archives_dir(&self) -> PathBuf {
        self.data.root().join("archives")
    }

    fn archive_path(&self, id: &str) -> Result<PathBuf> {
        if !valid_archive_id(id) {
            return Err(CoreError::ArchiveNotFound(id.to_string()));
        }
        let p = self.archives_dir().join(format!("{id}.tar.gz"));
        if !p.is_file() {
            return Err(CoreError::ArchiveNotFound(id.to_string()));
        }
        Ok(p)
    }

    /// A fresh id and a temporary file for the upload body.
    pub fn begin_archive(&self) -> Result<ArchiveUpload> {
        let dir = self.archives_dir();
        std::fs::create_dir_all(&dir)?;
        let id = format!("ar-{}", ids::random_hex(4));
        Ok(ArchiveUpload { path: dir.join(format!(".{id}.upload")), id })
    }

    /// Checks the uploaded archive (blocking: reads it whole) and keeps it.
    pub fn commit_archive(&self, up: ArchiveUpload) -> Result<ArchiveInfo> {
        let size = std::fs::metadata(&up.path)?.len();
        let sum = match archive::validate(&up.path) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&up.path);
                return Err(e);
            }
        };
        std::fs::rename(&up.path, self.archives_dir().join(format!("{}.tar.gz", up.id)))?;
        Ok(ArchiveInfo { archive_id: up.id, size, files: sum.files as u64, unpacked_bytes: sum.bytes })
    }

    /// Fails with `archive_not_found` unless the archive exists.
    pub fn check_archive(&self, id: &str) -> Result<()> {
        self.archive_path(id).map(|_| ())
    }

    /// Deletes archives (and abandoned uploads) older than `max_age`: an
    /// archive is needed only until the sandboxes made from it are created.
    pub(super) fn expire_archives(&self, max_age: std::time::Duration) {
        let Ok(dir) = std::fs::read_dir(self.archives_dir()) else { return };
        for entry in dir.flatten() {
            let old = entry.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > max_age);
            if old {
                tracing::info!(archive = %entry.file_name().to_string_lossy(), "deleting an expired archive");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Unpacks the record's archive into its workspace (blocking).
    pub(super) fn unpack_archive(&self, rec: &SandboxRecord, id: &str) -> Result<()> {
        let path = self.archive_path(id)?;
        let backend = self.backend_for(rec)?;
        let sum = if backend.files_on_host() {
            let workspace = self.data.sandbox(&rec.id).workspace();
            let sum = archive::extract(&path, &workspace)?;
            // Unpacked as the daemon: the files become the sandbox root's.
            if self.sandbox_root_ids(rec).is_some() {
                if let Some(range) = self.spec(rec).ids {
                    crate::id_ranges::shift_tree(&workspace, &range)?;
                }
            }
            sum
        } else {
            self.import_archive(rec, &path, backend.as_ref())?
        };
        self.log_system(rec, &format!("archive {id} unpacked into /workspace ({} files, {} bytes)", sum.files, sum.bytes));
        Ok(())
    }

    /// For a backend whose `/workspace` is not a host directory (a VM's
    /// disk): the same confined extraction into a staging directory beside
    /// the sandbox's files (never inside the sandbox), which the backend
    /// then makes the workspace from. Owned by the daemon, i.e. by root
    /// inside a VM.
    fn import_archive(
        &self,
        rec: &SandboxRecord,
        path: &std::path::Path,
        backend: &dyn crate::backend::Backend,
    ) -> Result<archive::Summary> {
        let sum = archive::validate(path)?;
        let disk = self.spec(rec).limits.disk_bytes;
        if disk > 0 && sum.bytes > disk {
            return Err(CoreError::InvalidArchive(format!(
                "it unpacks to {} MiB, more than the sandbox's {} MiB disk (deploy with a larger disk_size_gb)",
                sum.bytes.div_ceil(1 << 20),
                disk >> 20
            )));
        }
        let staging = self.data.sandbox(&rec.id).dir.join("archive.unpack");
        crate::backend::remove_tree(&staging);
        std::fs::create_dir(&staging)?;
        let done = archive::extract(path, &staging).and_then(|sum| {
            backend.import_workspace(&self.spec(rec), &staging)?;
            Ok(sum)
        });
        crate::backend::remove_tree(&staging);
        done
    }
}

/// `US` or `EU` (any case), stored upper-case.
pub(super) fn region(r: Option<&str>) -> Result<Option<String>> {
    match r.map(|s| s.trim().to_ascii_uppercase()) {
        None => Ok(None),
        Some(s) if s == "US" || s == "EU" => Ok(Some(s)),
        Some(s) => Err(CoreError::invalid(format!("unknown region '{s}' (expected US or EU)"))),
    }
}
