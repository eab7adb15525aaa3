//! Filesystem checkpoints of bubblewrap sandboxes (`memory: false`): the
//! sandbox's writable layer and `/workspace`, which as root live together on
//! its own ext4 disk ([`crate::disk`]). A checkpoint is a sparse copy of that
//! disk image (a reflink where the host file system has them), taken with
//! the file system frozen (`FIFREEZE`: writers in the sandbox block for the
//! copy, everything written so far is on the image). Restore and fork put a
//! copy back in place as the (target's) disk; processes are restarted.
//!
//! Copying the image rather than the tree is also the defence against a
//! hostile sandbox: symlinks, hardlinks, FIFOs and device nodes it planted
//! are bytes in an image the host never walks, so the copy cannot follow
//! them out of the sandbox, block on a FIFO or read a device. The only walk
//! is a fork's ownership move into its own uid range, which never follows
//! links and stays on the disk's file system (`heyvm_core::id_ranges`).
//!
//! Sandboxes without a disk of their own (a daemon without root or loop
//! devices) answer 409 `checkpoint_unsupported`. Host mounts are not part of
//! a checkpoint: they are the host's files.
//!
//! Layout: `sandboxes/<id>/checkpoints/<name>/{disk.img,meta.json}` in the
//! sandbox directory, which is never mounted inside.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use heyvm_core::backend::{BackendError, BackendResult};
use heyvm_core::paths::SandboxPaths;
use heyvm_core::LaunchSpec;
use heyvm_types::CheckpointInfo;

const DISK: &str = "disk.img";
const META: &str = "meta.json";
/// `_IOWR('X', 119, int)` / `_IOWR('X', 120, int)`.
const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

const NO_DISK: &str = "checkpoints of a sandbox without a disk of its own (the daemon needs root and loop devices to give sandboxes disks)";

fn checkpoints_dir(p: &SandboxPaths) -> PathBuf {
    p.dir.join("checkpoints")
}

fn dir_of(p: &SandboxPaths, name: &str) -> PathBuf {
    checkpoints_dir(p).join(name)
}

fn failed(what: impl Into<String>, e: impl std::fmt::Display) -> BackendError {
    BackendError::Failed(format!("{}: {e}", what.into()))
}

/// Takes checkpoint `name` of the sandbox, running or not.
pub(super) fn take(spec: &LaunchSpec, name: &str) -> BackendResult<CheckpointInfo> {
    let p = &spec.paths;
    if !CheckpointInfo::valid_name(name) {
        return Err(BackendError::Failed(format!("invalid checkpoint name {name:?} (1-64 of letters, digits, '.', '_', '-')")));
    }
    if !p.disk_image().is_file() {
        return Err(BackendError::Unsupported { backend: "bubblewrap", what: NO_DISK });
    }
    let dir = dir_of(p, name);
    if dir.exists() {
        return Err(BackendError::Failed(format!("checkpoint {name} already exists")));
    }
    let tmp = checkpoints_dir(p).join(format!(".{name}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| BackendError::io(format!("creating {}", tmp.display()), e))?;
    let copied = (|| {
        // Frozen while copied: a consistent file system, every write so far
        // on the image. The guard thaws it whatever happens.
        let _frozen = if crate::disk::is_mounted(p) { Some(Frozen::new(&p.disk_mount())?) } else { None };
        sparse_copy(&p.disk_image(), &tmp.join(DISK))
    })();
    let saved = copied.and_then(|()| {
        let meta = CheckpointInfo {
            name: name.to_string(),
            created_at: CheckpointInfo::now_timestamp(),
            size_bytes: allocated(&tmp.join(DISK)),
            memory: false,
        };
        fs::write(tmp.join(META), serde_json::to_vec_pretty(&meta).unwrap_or_default())?;
        fs::rename(&tmp, &dir)?;
        Ok(meta)
    });
    saved.map_err(|e| {
        let _ = fs::remove_dir_all(&tmp);
        failed(format!("taking checkpoint {name}"), e)
    })
}

/// Every checkpoint of the sandbox, oldest first.
pub(super) fn list(p: &SandboxPaths) -> Vec<CheckpointInfo> {
    let Ok(rd) = fs::read_dir(checkpoints_dir(p)) else { return Vec::new() };
    let mut out: Vec<CheckpointInfo> = rd
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| serde_json::from_slice(&fs::read(e.path().join(META)).ok()?).ok())
        .collect();
    out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
    out
}

pub(super) fn remove(p: &SandboxPaths, name: &str) -> BackendResult<()> {
    let dir = dir_of(p, name);
    if !CheckpointInfo::valid_name(name) || !dir.join(META).exists() {
        return Err(BackendError::Failed(format!("no checkpoint named {name:?}")));
    }
    fs::remove_dir_all(&dir).map_err(|e| BackendError::io(format!("removing checkpoint {name}"), e))
}

/// Puts checkpoint `name` of `from` in place as the disk of `to` (itself
/// for a restore, a new sandbox for a fork); `to` must not be running.
/// A fork's files move into its own uid range.
pub(super) fn stage(from: &LaunchSpec, name: &str, to: &LaunchSpec, maps_ids: bool) -> BackendResult<()> {
    let src = dir_of(&from.paths, name);
    if !CheckpointInfo::valid_name(name) || !src.join(META).exists() {
        return Err(BackendError::Failed(format!("no checkpoint named {name:?}")));
    }
    let q = &to.paths;
    if !q.disk_image().is_file() {
        return Err(BackendError::Unsupported { backend: "bubblewrap", what: NO_DISK });
    }
    // The old disk goes: unmounted, replaced (a new file, so a loop device
    // some namespace may still hold keeps the old one), mounted again.
    crate::disk::unmount(q);
    let staged = sparse_copy(&src.join(DISK), &q.disk_image()).and_then(|()| crate::disk::mount(q));
    staged.map_err(|e| failed(format!("restoring checkpoint {name}"), e))?;
    if let (true, Some(old)) = (maps_ids, from.ids) {
        super::ownership::moved(to, &old, to.ids.as_ref()).map_err(|e| failed("moving the fork's files into its uid range", e))?;
    }
    Ok(())
}

/// A frozen file system (`FIFREEZE`), thawed on drop.
struct Frozen(fs::File);

impl Frozen {
    fn new(mount: &Path) -> io::Result<Self> {
        let dir = fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC).open(mount)?;
        // SAFETY: FIFREEZE on a valid descriptor of the file system's root; its argument is ignored.
        if unsafe { libc::ioctl(dir.as_raw_fd(), FIFREEZE as _, 0) } != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("freezing {}: {e}", mount.display())));
        }
        Ok(Frozen(dir))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: FITHAW on the descriptor FIFREEZE succeeded on.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), FITHAW as _, 0) } != 0 {
            tracing::error!(error = %io::Error::last_os_error(), "cannot thaw a sandbox disk after a checkpoint");
        }
    }
}

/// Copies an image keeping its holes (a reflink where possible), through a
/// temporary name, so `dst` is either the old file or the whole copy.
fn sparse_copy(src: &Path, dst: &Path) -> io::Result<()> {
    let tmp = dst.with_extension("copying");
    let out = Command::new("cp").args(["--sparse=always", "--reflink=auto", "--"]).arg(src).arg(&tmp).output()?;
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        return Err(io::Error::other(format!("copying {}: {}", src.display(), String::from_utf8_lossy(&out.stderr).trim())));
    }
    fs::rename(&tmp, dst)
}

/// Bytes a file really occupies (the image is sparse).
fn allocated(p: &Path) -> u64 {
    fs::metadata(p).map(|m| m.blocks() * 512).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path) -> LaunchSpec {
        LaunchSpec {
            id: "sb-00000001".into(),
            hostname: "h".into(),
            paths: SandboxPaths { dir: dir.to_path_buf() },
            limits: heyvm_types::SizeClass::Small.limits(),
            mounts: vec![],
            network: Default::default(),
            image_layers: vec![],
            ids: None,
        }
    }

    #[test]
    fn without_a_disk_checkpoints_are_unsupported_and_names_are_checked() {
        let t = tempfile::tempdir().unwrap();
        let s = spec(t.path());
        assert!(matches!(take(&s, "one"), Err(BackendError::Unsupported { .. })));
        assert!(matches!(take(&s, "../x"), Err(BackendError::Failed(_))));
        assert!(list(&s.paths).is_empty());
        assert!(remove(&s.paths, "one").is_err());
    }

    #[test]
    fn an_unmounted_disk_is_copied_listed_and_removed() {
        let t = tempfile::tempdir().unwrap();
        let s = spec(&t.path().join("a"));
        fs::create_dir_all(&s.paths.dir).unwrap();
        fs::write(s.paths.disk_image(), b"first").unwrap();
        let ck = take(&s, "one").unwrap();
        assert!(!ck.memory);
        assert!(matches!(take(&s, "one"), Err(BackendError::Failed(m)) if m.contains("exists")));
        assert_eq!(fs::read(dir_of(&s.paths, "one").join(DISK)).unwrap(), b"first");
        assert_eq!(list(&s.paths), vec![ck]);
        assert!(stage(&s, "two", &s, false).is_err());
        remove(&s.paths, "one").unwrap();
        assert!(list(&s.paths).is_empty());
    }
}
