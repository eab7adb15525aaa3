//! VM checkpoints: memory and disks, taken while the VM is paused so they
//! agree. Memory is QEMU's migration stream written to a file (QMP
//! `migrate` to `exec:cat`); the disks are sparse copies of the root overlay
//! and the `/workspace` disk. A restore (or a fork, into another sandbox's
//! directory) puts the disk copies in place and marks the next launch to
//! start QEMU with `-incoming` from the memory file, so processes keep
//! running with the same pids.
//!
//! Layout: `vm/checkpoints/<name>/{memory,root.qcow2,workspace.ext4,meta.json}`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::qmp::Qmp;
use crate::vmproc::VmLayout;

/// What the API returns for one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub name: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub size_bytes: u64,
    /// Whether memory (running processes) is included.
    pub memory: bool,
}

/// Checkpoint names become directory names: 1-64 of `[A-Za-z0-9._-]`, not
/// starting with a dot.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn dir_of(layout: &VmLayout, name: &str) -> PathBuf {
    layout.checkpoints().join(name)
}

/// The marker a launch consumes: restore from this checkpoint directory.
fn restore_marker(layout: &VmLayout) -> PathBuf {
    layout.dir.join("restore-from")
}

/// Takes a checkpoint of a running VM. The VM is paused for the memory
/// write and the disk copies, then resumed.
pub fn take(layout: &VmLayout, name: &str) -> io::Result<CheckpointMeta> {
    if !valid_name(name) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid checkpoint name {name:?}")));
    }
    let dir = dir_of(layout, name);
    if dir.exists() {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("checkpoint {name} already exists")));
    }
    let tmp = layout.checkpoints().join(format!(".{name}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let result = (|| {
        let mut qmp = Qmp::connect(&layout.qmp_socket(), Duration::from_secs(10))?;
        // Pausing flushes the block layer, so disk copies match memory.
        qmp.execute("stop", serde_json::json!({}))?;
        let saved = (|| {
            qmp.migrate_to_file(&tmp.join("memory"), Duration::from_secs(120))?;
            sparse_copy(&layout.overlay(), &tmp.join("root.qcow2"))?;
            sparse_copy(&layout.workspace_disk(), &tmp.join("workspace.ext4"))
        })();
        let resumed = qmp.execute("cont", serde_json::json!({}));
        saved?;
        resumed.map(|_| ())
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let meta = CheckpointMeta { name: name.to_string(), created_at: rfc3339_now(), size_bytes: disk_usage(&tmp), memory: true };
    fs::write(tmp.join("meta.json"), serde_json::to_vec_pretty(&meta).unwrap_or_default())?;
    fs::rename(&tmp, &dir)?;
    Ok(meta)
}

/// Every checkpoint, oldest first.
pub fn list(layout: &VmLayout) -> Vec<CheckpointMeta> {
    let Ok(rd) = fs::read_dir(layout.checkpoints()) else { return Vec::new() };
    let mut out: Vec<CheckpointMeta> = rd
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| serde_json::from_slice(&fs::read(e.path().join("meta.json")).ok()?).ok())
        .collect();
    out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
    out
}

pub fn remove(layout: &VmLayout, name: &str) -> io::Result<()> {
    if !valid_name(name) || !dir_of(layout, name).exists() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("no checkpoint named {name:?}")));
    }
    fs::remove_dir_all(dir_of(layout, name))
}

/// Puts checkpoint `name` of `from` in place as `to`'s disks and marks
/// `to`'s next launch to load its memory. `from == to` is a restore; the VM
/// must be stopped. For a fork, `to` is a new sandbox's layout.
pub fn stage(from: &VmLayout, name: &str, to: &VmLayout) -> io::Result<()> {
    let src = dir_of(from, name);
    if !valid_name(name) || !src.join("meta.json").exists() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("no checkpoint named {name:?}")));
    }
    fs::create_dir_all(&to.dir)?;
    sparse_copy(&src.join("root.qcow2"), &to.overlay())?;
    sparse_copy(&src.join("workspace.ext4"), &to.workspace_disk())?;
    fs::write(restore_marker(to), src.join("memory").to_string_lossy().as_bytes())
}

/// The memory file the next launch must load, consuming the marker.
pub fn take_restore_marker(layout: &VmLayout) -> Option<PathBuf> {
    let p = fs::read_to_string(restore_marker(layout)).ok()?;
    let _ = fs::remove_file(restore_marker(layout));
    let p = PathBuf::from(p.trim());
    p.exists().then_some(p)
}

/// Copies a disk image keeping holes (the workspace disk is mostly holes).
fn sparse_copy(src: &Path, dst: &Path) -> io::Result<()> {
    let tmp = dst.with_extension("copying");
    let out = Command::new("cp").arg("--sparse=always").arg("--reflink=auto").arg(src).arg(&tmp).output()?;
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        return Err(io::Error::other(format!("copying {}: {}", src.display(), String::from_utf8_lossy(&out.stderr).trim())));
    }
    fs::rename(&tmp, dst)
}

/// Bytes actually used on disk by the files of a directory.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::read_dir(dir).map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).map(|m| m.blocks() * 512).sum()).unwrap_or(0)
}

fn rfc3339_now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let t = heyvm_types::compat::UtcTime::from_unix(d.as_secs() as i64);
    let (y, mo, day, h, mi, sec, ms) = (t.year, t.month, t.day, t.hour, t.minute, t.second, d.subsec_millis());
    format!("{y:04}-{mo:02}-{day:02}T{h:02}:{mi:02}:{sec:02}.{ms:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "ck-1", "v1.2_x"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".x", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn stage_and_marker_and_list() {
        let t = tempfile::tempdir().unwrap();
        let from = VmLayout::new(&t.path().join("a"));
        let ck = from.checkpoints().join("one");
        fs::create_dir_all(&ck).unwrap();
        for f in ["memory", "root.qcow2", "workspace.ext4"] {
            fs::write(ck.join(f), f).unwrap();
        }
        let meta = CheckpointMeta { name: "one".into(), created_at: rfc3339_now(), size_bytes: 1, memory: true };
        fs::write(ck.join("meta.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
        assert_eq!(list(&from), vec![meta]);
        let to = VmLayout::new(&t.path().join("b"));
        assert!(stage(&from, "nope", &to).is_err());
        stage(&from, "one", &to).unwrap();
        assert_eq!(fs::read_to_string(to.overlay()).unwrap(), "root.qcow2");
        assert_eq!(take_restore_marker(&to), Some(ck.join("memory")));
        assert_eq!(take_restore_marker(&to), None);
        remove(&from, "one").unwrap();
        assert!(list(&from).is_empty());
        assert!(remove(&from, "../a").is_err());
    }

    #[test]
    fn timestamp_shape() {
        let s = rfc3339_now();
        assert_eq!(s.len(), 24, "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z'));
    }
}
